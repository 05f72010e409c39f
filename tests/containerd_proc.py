"""A real, project-owned containerd for tests: started in a tmp dir with the busybox image imported.

`containerd_fixture()` makes a module-scoped async fixture; modules using it run their tests in the
module's event loop (`pytestmark = pytest.mark.asyncio(loop_scope="module")`). Nothing is skipped: a
machine without containerd fails with a hint to run `make test`, which installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kubeedge.edgecore.edged.containerd import Containerd, ContainerdConfig
from kubeedge.edgecore.edged.cri import CriClient, CriError
from kubeedge.edgecore.edged.ociimage import BuiltImage, OciImageSpec, build_image

CGROUP_ROOT = Path("/sys/fs/cgroup")
REQUIRED = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/bin/busybox": "busybox-static",
    "iptables": "iptables",
}


@dataclass
class RunningContainerd:
    containerd: Containerd
    image: BuiltImage
    cri: CriClient
    subnet: str

    @property
    def endpoint(self) -> str:
        return self.containerd.endpoint


def check_prerequisites() -> None:
    missing = sorted(
        f"{what} (Debian package {pkg})"
        for what, pkg in REQUIRED.items()
        if not (Path(what).exists() if what.startswith("/") else shutil.which(what))
    )
    if missing:
        pytest.fail(
            "real containerd tests need: " + ", ".join(missing) + ". Run `make test` (it installs them), "
            "or `apt-get install containerd runc containernetworking-plugins busybox-static iptables iproute2`.",
            pytrace=False,
        )


def _network_for(key: str) -> tuple[str, str, str]:
    """A subnet, bridge and network name per test module, so modules (and `make run`) never share one."""
    n = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return f"10.{200 + n % 40}.{(n >> 8) % 256}.0/24", f"ket{n % 10**8:08d}", f"kubeedge-test-{n % 10**8:08d}"


def cgroup_dirs(parent: str) -> list[Path]:
    """Where a cgroupfs-style parent lives: one dir per v1 hierarchy, or the single v2 dir."""
    rel = parent.strip("/")
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / rel]
    return [h / rel for h in sorted(CGROUP_ROOT.iterdir()) if h.is_dir() and not h.is_symlink()]


def remove_cgroup(parent: str) -> None:
    """rmdir the pod cgroup parent (containerd leaves it behind), children first."""
    for top in cgroup_dirs(parent):
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            _rmdir_cgroup(dirpath)


def _rmdir_cgroup(path: str, within: float = 10.0) -> None:
    """A cgroup whose last task is still exiting refuses rmdir (EBUSY) for a moment: retry until the
    deadline (the kernel empties it; nothing else to wait on)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def remove_all_pods(cri: CriClient) -> None:
    """Stop and remove every sandbox (and so every container), ignoring ones already gone."""
    for sandbox in await cri.list_pod_sandbox():
        with contextlib.suppress(CriError):
            await cri.stop_pod_sandbox(sandbox.id)
        with contextlib.suppress(CriError):
            await cri.remove_pod_sandbox(sandbox.id)


def containerd_fixture(name: str = "containerd", *, image: OciImageSpec | None = None) -> Callable[..., Any]:
    """A module-scoped fixture yielding `RunningContainerd`; teardown removes all pods and the bridge."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module", name=name)
    async def _fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[RunningContainerd]:
        check_prerequisites()
        subnet, bridge, network = _network_for(request.module.__name__)
        base = tmp_path_factory.mktemp("ctrd")
        built = build_image(base / "busybox.tar", image)
        cfg = ContainerdConfig(
            base_dir=base, sandbox_image=built.name, subnet=subnet, bridge=bridge, network_name=network
        )
        ctrd = Containerd(cfg)
        await ctrd.start()
        cri = CriClient(ctrd.endpoint)
        try:
            await ctrd.import_image(built.path)
            yield RunningContainerd(containerd=ctrd, image=built, cri=cri, subnet=subnet)
        finally:
            try:
                await remove_all_pods(cri)
            finally:
                await cri.close()
                await ctrd.stop()
                # CNI's bridge plugin never deletes the bridge; leave the host as we found it.
                ip = await asyncio.create_subprocess_exec(
                    "ip",
                    "link",
                    "del",
                    bridge,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await ip.wait()

    return _fixture
