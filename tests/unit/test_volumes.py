"""Volumes on disk: the atomic writer's layout and swap, every volume type, refresh, tmpfs, cleanup.

Runs as root (tests mount tmpfs, as edged does); every test cleans up its own mounts."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeedge.edgecore.edged.atomicwriter import DATA_DIR, AtomicWriter, FileProjection, PayloadError
from kubeedge.edgecore.edged.podspec import ContainerConfigError, PodContext, termination_log_path
from kubeedge.edgecore.edged.volumes import VolumeManager, mounts_under


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def fp(text: str, mode: int = 0o644) -> FileProjection:
    return FileProjection(text.encode(), mode)


# ---- atomic writer -------------------------------------------------------------------------------------


def test_layout(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path / "vol")
    assert w.write({"a": fp("1"), "sub/b": fp("2", 0o600)}) is True
    target = tmp_path / "vol"
    data = os.readlink(target / DATA_DIR)
    assert data.startswith("..") and (target / data).is_dir()
    assert os.readlink(target / "a") == "..data/a" and os.readlink(target / "sub") == "..data/sub"
    assert (target / "a").read_text() == "1" and (target / "sub" / "b").read_text() == "2"
    assert stat.S_IMODE((target / "sub" / "b").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / data).stat().st_mode) == 0o755
    assert w.read() == {"a": fp("1"), "sub/b": fp("2", 0o600)}


def test_unchanged_payload_touches_nothing(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path)
    w.write({"a": fp("1")})
    before = os.readlink(tmp_path / DATA_DIR)
    assert w.write({"a": fp("1")}) is False
    assert os.readlink(tmp_path / DATA_DIR) == before
    # A mode change alone is a change.
    assert w.write({"a": fp("1", 0o400)}) is True
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o400


def test_update_removes_old_keys_and_old_dir(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path)
    w.write({"a": fp("1"), "gone": fp("x"), "d/x": fp("y")})
    old = os.readlink(tmp_path / DATA_DIR)
    assert w.write({"a": fp("2"), "new": fp("n")}) is True
    names = sorted(os.listdir(tmp_path))
    current = os.readlink(tmp_path / DATA_DIR)
    assert names == sorted([DATA_DIR, current, "a", "new"])
    assert old not in names
    assert (tmp_path / "a").read_text() == "2"


def test_old_content_stays_readable_until_the_swap(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Spy(AtomicWriter):
        def _swap(self, new_name: str) -> None:
            # The new dir is complete, yet readers still get the old content through the visible link.
            seen["before"] = (tmp_path / "k").read_text()
            seen["new_dir"] = (tmp_path / new_name / "k").read_text()
            super()._swap(new_name)
            seen["after"] = (tmp_path / "k").read_text()

    AtomicWriter(tmp_path).write({"k": fp("old")})
    Spy(tmp_path).write({"k": fp("new")})
    assert seen == {"before": "old", "new_dir": "new", "after": "new"}


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    class Broken(AtomicWriter):
        def _swap(self, new_name: str) -> None:
            raise OSError("disk full")

    AtomicWriter(tmp_path).write({"k": fp("old")})
    with pytest.raises(OSError, match="disk full"):
        Broken(tmp_path).write({"k": fp("new")})
    assert (tmp_path / "k").read_text() == "old"
    assert [n for n in os.listdir(tmp_path) if n.startswith("..") and n != DATA_DIR] == [
        os.readlink(tmp_path / DATA_DIR)
    ]


def test_concurrent_reader_never_sees_a_mix(tmp_path: Path) -> None:
    """Two files always change together: a reader must never see one from each version."""
    w = AtomicWriter(tmp_path)
    w.write({"a": fp("0"), "b": fp("0")})
    stop = threading.Event()
    bad: list[tuple[str, str]] = []
    valid = {str(i) for i in range(200)}
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            # Resolve ..data once, as a process reading a consistent set would via a dir handle.
            try:
                base = tmp_path / os.readlink(tmp_path / DATA_DIR)
                a, b = (base / "a").read_text(), (base / "b").read_text()
            except FileNotFoundError:
                continue  # the old dir was removed after we resolved it: retry, not a mix
            reads += 1
            if a != b:
                bad.append((a, b))
            # Through the user-visible link a file is always complete (it may vanish only if the old dir
            # is removed between resolving ..data and opening, as with the kubelet's writer).
            try:
                whole = (tmp_path / "a").read_text()
            except FileNotFoundError:
                continue
            if whole not in valid:
                bad.append((whole, "partial"))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 200):
            w.write({"a": fp(str(i)), "b": fp(str(i))})
    finally:
        stop.set()
        t.join()
    assert not bad and reads > 0


@pytest.mark.parametrize("path", ["/abs", "a/../b", "..", "..hidden", "", "x" * 256])
def test_bad_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(PayloadError):
        AtomicWriter(tmp_path).write({path: fp("x")})


# ---- volume manager ------------------------------------------------------------------------------------


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VolumeManager]:
    mgr = VolumeManager(tmp_path / "edged")
    yield mgr
    # Whatever a test left mounted must not outlive it.
    for point in mounts_under(tmp_path):
        os.system(f"umount -l {point}")


def make_pod(volumes: list[dict[str, Any]], uid: str = "uid-1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": uid,
            "labels": {"app": "web"},
            "annotations": {"v": "1"},
        },
        "spec": {
            "containers": [{"name": "app", "resources": {"limits": {"memory": "64Mi"}}}],
            "volumes": volumes,
            **spec,
        },
    }


CMS = {
    "cfg": {
        "metadata": {"name": "cfg"},
        "data": {"app.conf": "v=1\n", "other": "o"},
        "binaryData": {"blob": b64("\x00\x01")},
    }
}
SECRETS = {"creds": {"metadata": {"name": "creds"}, "data": {"password": b64("s3cret"), "user": b64("bob")}}}


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def size_of(p: Path) -> int:
    return p.stat().st_size


def mounted(p: Path, root: Path) -> int:
    """How many times p is a mount point (mountinfo lists resolved paths)."""
    return mounts_under(root).count(Path(os.path.realpath(p)))


async def test_configmap_and_secret_volumes(vm: VolumeManager) -> None:
    pod = make_pod(
        [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {
                "name": "picked",
                "configMap": {"name": "cfg", "items": [{"key": "other", "path": "x/y", "mode": 0o600}]},
            },
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        ]
    )
    paths = await vm.prepare(pod, CMS, SECRETS)
    cfg, picked, creds = (Path(paths[n]) for n in ("cfg", "picked", "creds"))
    assert cfg == vm.pod_dir("uid-1") / "volumes" / "kubernetes.io~configmap" / "cfg"
    assert sorted(p.name for p in cfg.iterdir() if not p.name.startswith("..")) == [
        "app.conf",
        "blob",
        "other",
    ]
    assert (cfg / "app.conf").read_text() == "v=1\n" and (cfg / "blob").read_bytes() == b"\x00\x01"
    assert mode_of(cfg / "app.conf") == 0o644 and mode_of(cfg) == 0o755
    assert (picked / "x" / "y").read_text() == "o" and mode_of(picked / "x" / "y") == 0o600
    assert not (picked / "other").exists()
    assert (creds / "password").read_text() == "s3cret" and mode_of(creds / "password") == 0o400
    # Secrets live on tmpfs, never on disk.
    assert mounted(creds, vm.root) == 1
    assert mounted(cfg, vm.root) == 0
    # Preparing again is idempotent (no second mount).
    assert await vm.prepare(pod, CMS, SECRETS) == paths
    assert mounted(creds, vm.root) == 1
    await vm.cleanup("uid-1")
    assert not vm.pod_dir("uid-1").exists() and mounts_under(vm.root) == []


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
        (
            {"configMap": {"name": "cfg", "items": [{"key": "nokey", "path": "p"}]}},
            "non-existent configmap key",
        ),
        ({"secret": {"secretName": "nope"}}, 'secret "nope" not found'),
        (
            {"secret": {"secretName": "creds", "items": [{"key": "nokey", "path": "p"}]}},
            "non-existent secret key",
        ),
        ({"projected": {"sources": [{"configMap": {"name": "nope"}}]}}, 'configmap "nope" not found'),
        ({"persistentVolumeClaim": {"claimName": "c"}}, "unsupported volume type persistentVolumeClaim"),
        ({"emptyDir": {"medium": "HugePages"}}, "unsupported medium"),
        (
            {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "../escape"}]}},
            "must not contain",
        ),
    ],
)
async def test_missing_sources_fail_before_anything_is_written(
    vm: VolumeManager, volume: dict[str, Any], message: str
) -> None:
    pod = make_pod([{"name": "ok", "configMap": {"name": "cfg"}}, {"name": "bad", **volume}])
    with pytest.raises(ContainerConfigError, match=message) as err:
        await vm.prepare(pod, CMS, SECRETS)
    assert err.value.reason == "CreateContainerConfigError"
    if "escape" not in message and "must not" not in message:
        assert not vm.pod_dir("uid-1").exists()
    await vm.cleanup("uid-1")


async def test_optional_sources(vm: VolumeManager) -> None:
    pod = make_pod(
        [
            {"name": "a", "configMap": {"name": "nope", "optional": True}},
            {"name": "b", "secret": {"secretName": "nope", "optional": True}},
            {
                "name": "c",
                "configMap": {"name": "cfg", "optional": True, "items": [{"key": "nokey", "path": "p"}]},
            },
        ]
    )
    paths = await vm.prepare(pod, CMS, SECRETS)
    for name in "abc":
        assert [p for p in os.listdir(paths[name]) if not p.startswith("..")] == []
    await vm.cleanup("uid-1")


async def test_refresh_rewrites_only_changes(vm: VolumeManager) -> None:
    pod = make_pod(
        [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {
                "name": "meta",
                "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
            },
        ]
    )
    paths = await vm.prepare(pod, CMS, SECRETS)
    cfg = Path(paths["cfg"])
    data_before = os.readlink(cfg / DATA_DIR)
    assert await vm.refresh(pod, CMS, SECRETS) is False
    assert os.readlink(cfg / DATA_DIR) == data_before

    updated = {"cfg": {**CMS["cfg"], "data": {"app.conf": "v=2\n"}}}
    assert await vm.refresh(pod, updated, SECRETS) is True
    assert (cfg / "app.conf").read_text() == "v=2\n" and not (cfg / "other").exists()

    # Labels change: the downwardAPI file follows.
    relabeled = make_pod(pod["spec"]["volumes"])
    relabeled["metadata"]["labels"] = {"app": "web", "v": "2"}
    assert await vm.refresh(relabeled, updated, SECRETS) is True
    assert (Path(paths["meta"]) / "labels").read_text() == 'app="web"\nv="2"'

    # A non-optional source that vanished keeps its last content.
    assert await vm.refresh(relabeled, {}, {}) is False
    assert (cfg / "app.conf").read_text() == "v=2\n"
    assert (Path(paths["creds"]) / "password").read_text() == "s3cret"
    await vm.cleanup("uid-1")


async def test_downward_api_and_projected(vm: VolumeManager) -> None:
    pod = make_pod(
        [
            {
                "name": "meta",
                "downwardAPI": {
                    "defaultMode": 0o440,
                    "items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "ann", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o400},
                        {
                            "path": "mem",
                            "resourceFieldRef": {
                                "containerName": "app",
                                "resource": "limits.memory",
                                "divisor": "1Mi",
                            },
                        },
                    ],
                },
            },
            {
                "name": "all",
                "projected": {
                    "sources": [
                        {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "cfg/other"}]}},
                        {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
                        {
                            "downwardAPI": {
                                "items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                            }
                        },
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    ]
                },
            },
        ]
    )
    paths = await vm.prepare(pod, CMS, SECRETS, sa_token="tok-123")
    meta, proj = Path(paths["meta"]), Path(paths["all"])
    assert (meta / "name").read_text() == "web" and mode_of(meta / "name") == 0o440
    assert (meta / "ann").read_text() == 'v="1"' and mode_of(meta / "ann") == 0o400
    assert (meta / "mem").read_text() == "64"
    assert (proj / "cfg" / "other").read_text() == "o"
    assert (proj / "user").read_text() == "bob"
    assert (proj / "ns").read_text() == "shop"
    assert (proj / "token").read_text() == "tok-123"
    assert mounted(proj, vm.root) == 1
    # Without a token the rest is still written, the token is not.
    pod2 = make_pod(pod["spec"]["volumes"], uid="uid-2")
    paths2 = await vm.prepare(pod2, CMS, SECRETS)
    assert not (Path(paths2["all"]) / "token").exists() and (Path(paths2["all"]) / "user").exists()
    # Status fields are not available to volumes.
    bad = make_pod(
        [
            {
                "name": "m",
                "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]},
            }
        ],
        uid="uid-3",
    )
    with pytest.raises(ContainerConfigError, match="fieldPath"):
        await vm.prepare(bad, {}, {})
    for uid in ("uid-1", "uid-2", "uid-3"):
        await vm.cleanup(uid)


async def test_empty_dirs(vm: VolumeManager) -> None:
    pod = make_pod(
        [
            {"name": "scratch", "emptyDir": {}},
            {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ]
    )
    paths = await vm.prepare(pod, {}, {})
    scratch, ram = Path(paths["scratch"]), Path(paths["ram"])
    assert mode_of(scratch) == 0o777 and mode_of(ram) == 0o777
    assert mounted(scratch, vm.root) == 0
    assert mounted(ram, vm.root) == 1
    st = os.statvfs(ram)
    assert st.f_blocks * st.f_frsize == 16 * 2**20
    (ram / "f").write_text("in memory")
    # Preparing again keeps the data (a restarted container keeps its emptyDir).
    await vm.prepare(pod, {}, {})
    assert (ram / "f").read_text() == "in memory"
    await vm.cleanup("uid-1")
    assert mounts_under(vm.root) == [] and not vm.pod_dir("uid-1").exists()


async def test_host_path_types(vm: VolumeManager, tmp_path: Path) -> None:
    d, f = tmp_path / "d", tmp_path / "f"
    d.mkdir()
    f.write_text("x")
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        ok = [
            {"name": "a", "hostPath": {"path": str(d), "type": "Directory"}},
            {"name": "b", "hostPath": {"path": str(tmp_path / "new" / "dir"), "type": "DirectoryOrCreate"}},
            {"name": "c", "hostPath": {"path": str(f), "type": "File"}},
            {"name": "e", "hostPath": {"path": str(tmp_path / "newfile"), "type": "FileOrCreate"}},
            {"name": "g", "hostPath": {"path": str(sock_path), "type": "Socket"}},
            {"name": "h", "hostPath": {"path": "/dev/null", "type": "CharDevice"}},
            {"name": "i", "hostPath": {"path": str(tmp_path / "anything")}},
        ]
        paths = await vm.prepare(make_pod(ok), {}, {})
        assert paths["a"] == str(d) and (tmp_path / "new" / "dir").is_dir()
        assert (tmp_path / "newfile").is_file() and mode_of(tmp_path / "newfile") == 0o644
        assert not (tmp_path / "anything").exists()
        for vol, msg in [
            ({"path": str(f), "type": "Directory"}, "is not a directory"),
            ({"path": str(tmp_path / "missing"), "type": "Directory"}, "is not a directory"),
            ({"path": str(d), "type": "File"}, "is not a file"),
            ({"path": str(f), "type": "FileOrCreate"}, None),
            ({"path": str(d), "type": "FileOrCreate"}, "is not a file"),
            ({"path": str(f), "type": "DirectoryOrCreate"}, "is not a directory"),
            ({"path": str(f), "type": "Socket"}, "is not a socket file"),
            ({"path": str(f), "type": "CharDevice"}, "is not a character device"),
            ({"path": "/dev/null", "type": "BlockDevice"}, "is not a block device"),
            ({"path": str(f), "type": "Weird"}, "unknown type"),
            ({"path": "relative", "type": ""}, "must be absolute"),
        ]:
            pod = make_pod([{"name": "v", "hostPath": vol}], uid="uid-h")
            if msg is None:
                await vm.prepare(pod, {}, {})
            else:
                with pytest.raises(ContainerConfigError, match=msg):
                    await vm.prepare(pod, {}, {})
        await vm.cleanup("uid-1")
        await vm.cleanup("uid-h")
        assert d.is_dir() and f.read_text() == "x"  # cleanup never touches hostPath targets
    finally:
        sock.close()


async def test_container_files_and_orphans(vm: VolumeManager) -> None:
    pod = make_pod([], hostname="h")
    ctx = PodContext(
        node_name="n",
        node_ip="192.0.2.1",
        pod_ip="10.0.0.9",
        pod_ips=("10.0.0.9",),
        configmaps={},
        secrets={},
        volume_paths={},
        pod_dir=str(vm.pod_dir("uid-1")),
    )
    await vm.prepare_container(pod, pod["spec"]["containers"][0], ctx, attempt=0)
    hosts = vm.pod_dir("uid-1") / "etc-hosts"
    assert "10.0.0.9\th" in hosts.read_text().splitlines()
    term = Path(termination_log_path(ctx.pod_dir, "app", 0))
    assert size_of(term) == 0 and mode_of(term) == 0o666
    os.truncate(term, 4)
    inode = hosts.stat().st_ino
    await vm.prepare_container(pod, pod["spec"]["containers"][0], ctx, attempt=1)
    assert hosts.stat().st_ino == inode  # in place: running containers keep seeing it
    assert size_of(Path(termination_log_path(ctx.pod_dir, "app", 1))) == 0
    assert size_of(term) == 4  # the previous attempt's message is kept

    await vm.prepare(make_pod([{"name": "s", "emptyDir": {}}], uid="uid-2"), {}, {})
    assert vm.orphans({"uid-1"}) == ["uid-2"]
    assert vm.orphans({"uid-1", "uid-2"}) == []
    await asyncio.gather(vm.cleanup("uid-1"), vm.cleanup("uid-2"))
    assert vm.orphans(set()) == []
    await vm.cleanup("uid-never-existed")
