"""The CRI client against a real, project-owned containerd: images, sandboxes with CNI, containers, exec."""

from __future__ import annotations

import ipaddress
import re
import uuid
from pathlib import Path

import grpc
import pytest

from kubeedge.edgecore.edged.cri import CriError, CriNotFound, api
from tests.cluster import wait_for
from tests.containerd_proc import RunningContainerd, cgroup_dirs, containerd_fixture, remove_cgroup

pytestmark = pytest.mark.asyncio(loop_scope="module")

containerd = containerd_fixture()

# RFC3339Nano timestamp, stream, F(ull)/P(artial) tag, text.
CRI_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) ([FP]) (.*)$"
)


def sandbox_config(name: str, log_dir: Path, cgroup_parent: str) -> api.PodSandboxConfig:
    uid = str(uuid.uuid4())
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
        hostname=name,
        log_directory=str(log_dir),
        dns_config=api.DNSConfig(
            servers=["10.96.0.10"], searches=["default.svc.cluster.local"], options=["ndots:5"]
        ),
        labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.uid": uid, "test": "cri-real"},
        annotations={"kubeedge.io/note": "hello"},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.POD, pid=api.CONTAINER, ipc=api.POD)
            ),
        ),
    )


def container_config(
    ctrd: RunningContainerd, name: str, command: list[str], attempt: int = 0
) -> api.ContainerConfig:
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name, attempt=attempt),
        image=api.ImageSpec(image=ctrd.image.name),
        command=command,
        envs=[api.KeyValue(key="GREETING", value="hi")],
        working_dir="/tmp",
        labels={"io.kubernetes.container.name": name, "test": "cri-real"},
        log_path=f"{name}/{attempt}.log",
        linux=api.LinuxContainerConfig(
            resources=api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 * 1024 * 1024),
            security_context=api.LinuxContainerSecurityContext(
                namespace_options=api.NamespaceOption(pid=api.CONTAINER),
                capabilities=api.Capability(drop_capabilities=["NET_RAW"]),
                no_new_privs=True,
            ),
        ),
    )


async def state_of(ctrd: RunningContainerd, cid: str) -> api.ContainerStatus:
    return (await ctrd.cri.container_status(cid)).status


async def test_version(containerd: RunningContainerd) -> None:
    v = await containerd.cri.version()
    assert v.runtime_name == "containerd"
    assert v.runtime_api_version == "v1"
    status = await containerd.cri.status()
    conditions = {c.type: c.status for c in status.status.conditions}
    assert conditions.get("RuntimeReady") is True
    assert conditions.get("NetworkReady") is True


async def test_images(containerd: RunningContainerd) -> None:
    img = await containerd.cri.image_status(containerd.image.name)
    assert img is not None
    # containerd's image id is the config digest the builder computed.
    assert img.id == containerd.image.config_digest
    assert containerd.image.name in img.repo_tags
    listed = await containerd.cri.list_images()
    assert containerd.image.config_digest in {i.id for i in listed}
    assert await containerd.cri.image_status("kubeedge.local/not-imported:1") is None
    # Usage figures are refreshed by containerd in the background; where it stores images is ours.
    fs = await containerd.cri.image_fs_info()
    mountpoints = [f.fs_id.mountpoint for f in fs.image_filesystems]
    assert mountpoints and all(m.startswith(str(containerd.containerd.cfg.root)) for m in mountpoints)


async def test_missing_objects_map_to_not_found(containerd: RunningContainerd) -> None:
    with pytest.raises(CriNotFound) as err:
        await containerd.cri.container_status("0" * 64)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_pod_lifecycle(containerd: RunningContainerd, tmp_path: Path) -> None:
    cri = containerd.cri
    parent = f"/kubeedge-test/pod{uuid.uuid4().hex[:12]}"
    log_dir = tmp_path / "pods" / "default_web"
    cfg = sandbox_config("web", log_dir, parent)
    sandbox_id = await cri.run_pod_sandbox(cfg)

    status = (await cri.pod_sandbox_status(sandbox_id)).status
    assert status.state == api.SANDBOX_READY
    assert ipaddress.ip_address(status.network.ip) in ipaddress.ip_network(containerd.subnet)
    assert status.annotations["kubeedge.io/note"] == "hello"
    assert [s.id for s in await cri.list_pod_sandbox(labels={"test": "cri-real"})] == [sandbox_id]
    assert await cri.list_pod_sandbox(labels={"test": "something-else"}) == []

    # A long-running container that exits cleanly on SIGTERM.
    script = "trap 'echo bye; exit 0' TERM; echo hello; echo oops >&2; sleep 1000 & wait"
    web = await cri.create_container(
        sandbox_id, container_config(containerd, "web", ["sh", "-c", script]), cfg
    )
    await cri.start_container(web)
    running = await state_of(containerd, web)
    assert running.state == api.CONTAINER_RUNNING
    assert running.started_at > 0 and running.image_ref == containerd.image.config_digest
    assert running.log_path == str(log_dir / "web" / "0.log")

    log_file = log_dir / "web" / "0.log"

    async def logged() -> list[re.Match[str]]:
        lines = log_file.read_text().splitlines() if log_file.exists() else []
        found = [m for m in map(CRI_LOG_LINE.match, lines) if m and m.group(5) in ("hello", "oops")]
        return found if len(found) >= 2 else []  # both streams written (in either order)

    matches = await wait_for(logged, deadline_s=10, what="hello and oops in the CRI log")
    assert {(m.group(3), m.group(4), m.group(5)) for m in matches} == {
        ("stdout", "F", "hello"),
        ("stderr", "F", "oops"),
    }

    # Exec: stdout, stderr and a non-zero exit are results, not errors; the pod's hostname, env, cwd,
    # loopback and DNS config are what we asked for.
    r = await cri.exec_sync(web, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3)
    r = await cri.exec_sync(web, ["sh", "-c", "cat /etc/hostname; echo $GREETING; pwd; ip -o addr show lo"])
    hostname, greeting, cwd, lo = r.stdout.decode().splitlines()[:4]
    assert (hostname, greeting, cwd) == ("web", "hi", "/tmp") and "127.0.0.1" in lo
    r = await cri.exec_sync(web, ["cat", "/etc/resolv.conf"])
    assert "nameserver 10.96.0.10" in r.stdout.decode() and "ndots:5" in r.stdout.decode()

    # A container that exits with an error on its own.
    failing = await cri.create_container(
        sandbox_id, container_config(containerd, "failing", ["sh", "-c", "exit 3"]), cfg
    )
    await cri.start_container(failing)

    async def exited() -> api.ContainerStatus | None:
        st = await state_of(containerd, failing)
        return st if st.state == api.CONTAINER_EXITED else None

    st = await wait_for(exited, deadline_s=10, what="failing container to exit")
    assert st is not None
    assert (
        (st.exit_code, st.reason) == (3, "Error") and st.started_at > 0 and st.finished_at > 0
    )  # containerd may stamp a fast exit a hair before the start

    # A binary that does not exist fails StartContainer with UNKNOWN (edged maps it to RunContainerError).
    missing = await cri.create_container(
        sandbox_id, container_config(containerd, "missing", ["/no/such/binary"]), cfg
    )
    with pytest.raises(CriError) as err:
        await cri.start_container(missing)
    assert err.value.code == grpc.StatusCode.UNKNOWN
    assert "no such file" in err.value.details.lower() or "not found" in err.value.details.lower()

    # Label and state filters.
    by_name = await cri.list_containers(labels={"io.kubernetes.container.name": "web"})
    assert [c.id for c in by_name] == [web]
    running_ids = {
        c.id for c in await cri.list_containers(sandbox_id=sandbox_id, state=api.CONTAINER_RUNNING)
    }
    assert running_ids == {web}
    all_ids = {c.id for c in await cri.list_containers(sandbox_id=sandbox_id)}
    assert all_ids == {web, failing, missing}

    # Graceful stop: the trap runs, so the exit is 0 / Completed, well inside the grace period.
    await cri.stop_container(web, timeout_s=10)
    st = await state_of(containerd, web)
    assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 0, "Completed")
    assert "bye" in log_file.read_text()

    for cid in (web, failing, missing):
        await cri.remove_container(cid)
    assert await cri.list_containers(sandbox_id=sandbox_id) == []
    with pytest.raises(CriNotFound):
        await cri.container_status(web)

    await cri.stop_pod_sandbox(sandbox_id)
    assert (await cri.pod_sandbox_status(sandbox_id)).status.state == api.SANDBOX_NOTREADY
    await cri.remove_pod_sandbox(sandbox_id)
    assert await cri.list_pod_sandbox(sandbox_id=sandbox_id) == []
    # Stop and remove are idempotent, as the kubelet relies on (containerd says NOT_FOUND; the client
    # treats that as done unless asked not to).
    await cri.stop_pod_sandbox(sandbox_id)
    await cri.remove_pod_sandbox(sandbox_id)
    await cri.remove_container(web)
    with pytest.raises(CriNotFound):
        await cri.stop_pod_sandbox(sandbox_id, missing_ok=False)

    # containerd leaves the pod's cgroup parent behind: the kubelet side removes it.
    assert any(d.exists() for d in cgroup_dirs(parent))
    remove_cgroup(parent)
    assert not any(d.exists() for d in cgroup_dirs(parent))
    remove_cgroup("/kubeedge-test")


async def test_stop_timeout_kills_a_container_ignoring_sigterm(
    containerd: RunningContainerd, tmp_path: Path
) -> None:
    cri = containerd.cri
    parent = f"/kubeedge-test/pod{uuid.uuid4().hex[:12]}"
    cfg = sandbox_config("stubborn", tmp_path / "logs", parent)
    sandbox_id = await cri.run_pod_sandbox(cfg)
    try:
        # PID 1 in its namespace without a TERM handler: SIGTERM is ignored, so only SIGKILL ends it.
        cid = await cri.create_container(
            sandbox_id, container_config(containerd, "stubborn", ["sleep", "1000"]), cfg
        )
        await cri.start_container(cid)
        await cri.stop_container(cid, timeout_s=1)
        st = await state_of(containerd, cid)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 137, "Error")
    finally:
        await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)
        remove_cgroup(parent)
        remove_cgroup("/kubeedge-test")
