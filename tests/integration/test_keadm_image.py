"""Images against a real containerd: `keadm image import` (a real keadm process running ctr) makes an archive
visible through CRI, with the endpoint given or taken from the edge node's config, and fails with one clear
line when the runtime or ctr is missing; pull policies (`ensure_image`), image GC, and the node-status facts
(images, runtime version and readiness) read from the real runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeedge.edgecore.edged.images import (
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    ImageGC,
    ImageGCPolicy,
    ImagePullError,
    ensure_image,
)
from kubeedge.edgecore.edged.nodeinfo import NodeFacts
from kubeedge.edgecore.edged.ociimage import OciImageSpec, build_image
from tests.apiserver_proc import ROOT
from tests.containerd_proc import RunningContainerd, containerd_fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")

containerd = containerd_fixture()


def keadm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeedge.keadm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


async def test_import_with_endpoint_then_cri_sees_it(containerd: RunningContainerd, tmp_path: Path) -> None:
    # A different Cmd makes a different config, so a distinct image id from the fixture's busybox.
    built = build_image(
        tmp_path / "imported.tar", OciImageSpec(name="kubeedge.local/imported:1", cmd=("sh", "-c", "true"))
    )
    assert await containerd.cri.image_status(built.name) is None
    r = keadm("image", "import", str(built.path), "--runtime-endpoint", containerd.endpoint)
    assert r.returncode == 0, r.stderr
    assert built.name in r.stdout and "imported" in r.stdout
    img = await containerd.cri.image_status(built.name)
    assert img is not None and img.id == built.config_digest and built.name in img.repo_tags


async def test_import_endpoint_from_edge_config(containerd: RunningContainerd, tmp_path: Path) -> None:
    built = build_image(
        tmp_path / "cfg.tar", OciImageSpec(name="kubeedge.local/from-config:1", cmd=("true",))
    )
    data_dir = tmp_path / "edge"
    data_dir.mkdir()
    doc = {"modules": {"edged": {"tailoredKubeletConfig": {"containerRuntimeEndpoint": containerd.endpoint}}}}
    (data_dir / "edgecore.yaml").write_text(yaml.safe_dump(doc))
    r = keadm("image", "import", str(built.path), "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr
    assert str(data_dir / "edgecore.yaml") in r.stdout
    assert await containerd.cri.image_status(built.name) is not None


async def test_import_errors(containerd: RunningContainerd, tmp_path: Path) -> None:
    archive = containerd.image.path
    dead = tmp_path / "dead.sock"
    r = keadm("image", "import", str(archive), "--runtime-endpoint", f"unix://{dead}")
    assert r.returncode == 1 and "does not answer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = keadm("image", "import", str(tmp_path / "missing.tar"), "--runtime-endpoint", containerd.endpoint)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = keadm("image", "import", str(archive), "--runtime-endpoint", "tcp://10.0.0.1:1")
    assert r.returncode == 2 and "unix socket" in r.stderr
    no_ctr = {**os.environ, "PATH": str(tmp_path)}  # keadm itself runs by absolute path
    r = keadm("image", "import", str(archive), "--runtime-endpoint", containerd.endpoint, env=no_ctr)
    assert r.returncode == 1 and "`ctr` not found" in r.stderr
    (tmp_path / "junk.tar").write_bytes(b"not an archive")
    r = keadm("image", "import", str(tmp_path / "junk.tar"), "--runtime-endpoint", containerd.endpoint)
    assert r.returncode == 1 and "failed" in r.stderr


async def test_pull_policies_on_the_real_runtime(containerd: RunningContainerd) -> None:
    cri, name = containerd.cri, containerd.image.name
    assert await ensure_image(cri, name, "Never") == containerd.image.config_digest
    assert await ensure_image(cri, name, "IfNotPresent") == containerd.image.config_digest
    # No registry is reachable: `:latest` defaults to Always, and the local copy serves.
    assert await ensure_image(cri, name, "") == containerd.image.config_digest
    with pytest.raises(ImagePullError) as err:
        await ensure_image(cri, "kubeedge.local/absent:1", "Never")
    assert err.value.reason == ERR_IMAGE_NEVER_PULL
    # A registry address that refuses at once: containerd's own error comes back as ErrImagePull.
    with pytest.raises(ImagePullError) as err:
        await ensure_image(cri, "127.0.0.1:1/absent:1", "IfNotPresent")
    assert err.value.reason == ERR_IMAGE_PULL and "127.0.0.1:1/absent:1" in err.value.message


async def test_image_gc_removes_unused_but_never_the_sandbox_image(
    containerd: RunningContainerd, tmp_path: Path
) -> None:
    cri = containerd.cri
    built = build_image(tmp_path / "gc.tar", OciImageSpec(name="kubeedge.local/unused:1", cmd=("false",)))
    await containerd.containerd.import_image(built.path)
    assert await cri.image_status(built.name) is not None
    # Thresholds at 0: any usage triggers, and the goal is to free everything that may go.
    gc = ImageGC(
        cri,
        policy=ImageGCPolicy(high_threshold_percent=0, low_threshold_percent=0, min_age_s=0),
        sandbox_image=containerd.image.name,
    )
    r = await gc.collect()
    assert built.config_digest in r.removed and r.freed_bytes > 0
    assert await cri.image_status(built.name) is None
    assert await cri.image_status(containerd.image.name) is not None


async def test_node_facts_from_the_real_runtime(containerd: RunningContainerd) -> None:
    facts = NodeFacts(containerd.cri, nodefs=containerd.containerd.cfg.base_dir)
    snap = await facts()
    assert snap["nodeInfo"]["containerRuntimeVersion"] == f"containerd://{containerd.containerd.version}"
    assert snap["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.")
    [busybox] = [i for i in snap["images"] if containerd.image.name in i["names"]]
    assert busybox["sizeBytes"] > 0
    types = {c["type"]: c["status"] for c in snap["conditions"]}
    assert "Ready" not in types  # the runtime and its network are ready: nothing to override
    assert set(types) == {"MemoryPressure", "DiskPressure", "PIDPressure"}
