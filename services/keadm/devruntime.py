"""The container runtime of ``make run``'s local edge node: a project-owned containerd under
``<data-dir>/containerd`` (own socket, root, state and CNI bridge) with busybox imported, or a runtime the
user names with ``--runtime-endpoint`` (then nothing is started, imported or removed).

Stopping is a node power-off: every pod sandbox is stopped and removed through CRI (so no shim or busybox
outlives ``make run``), the pods' tmpfs volumes are unmounted, containerd stops and its bridge goes. The
pods stay in the edge store and start again on the next ``make run``, as after a reboot. ``--keep-pods``
leaves them running instead (their shims outlive containerd); the next run adopts them without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from kubeedge.edgecore.edged import runtime as rt
from kubeedge.edgecore.edged.config import DEFAULT_CGROUP_PARENT
from kubeedge.edgecore.edged.containerd import Containerd, ContainerdConfig, ContainerdError
from kubeedge.edgecore.edged.cri import CriClient, CriError
from kubeedge.edgecore.edged.ociimage import DEFAULT_IMAGE, OciImageSpec, build_image
from kubeedge.edgecore.edged.podspec import LABEL_POD_UID
from kubeedge.edgecore.edged.volumes import mounts_under

# The image the quickstart's Deployment names, and the sandbox ("pause") image: both busybox, built here
# (no registry is assumed reachable).
APP_IMAGE: Final = "docker.io/library/busybox:latest"
SANDBOX_IMAGE: Final = DEFAULT_IMAGE
# Apart from containerd's and podman's 10.88.0.0/16, Docker's 172.17/16, flannel's 10.244/16 and the
# tests' 10.200-239.x.x/24.
DEFAULT_POD_CIDR: Final = "10.86.0.0/24"
# Unix socket paths are limited to 107 bytes; longer ones move to the temp dir.
MAX_SOCKET_PATH: Final = 100
STOP_POD_TIMEOUT_S: Final = 5
NEEDED: Final = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/bin/busybox": "busybox-static",
}


class DevRuntimeError(Exception):
    """The runtime cannot be brought up; the text says what to install or change."""


def bridge_for(cidr: str) -> str:
    """A bridge name per pod network (at most 15 bytes), so two runs with different CIDRs never share one."""
    return "kedev-" + hashlib.sha256(cidr.encode()).hexdigest()[:6]


def clashing_route(cidr: str, own_bridge: str) -> str | None:
    """A host route that overlaps the pod network (other than our own bridge's), if any."""
    net = ipaddress.ip_network(cidr)
    try:
        out = subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True, timeout=5).stdout
        routes = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # no `ip`: nothing to compare with
    for r in routes:
        dst, dev = str(r.get("dst", "")), str(r.get("dev", ""))
        if dst in ("", "default") or dev == own_bridge:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(net):
                return f"{dst} dev {dev}"
    return None


def unmount_all(root: Path) -> None:
    """Lazily unmount every mount below root (the pods' tmpfs volumes): what a reboot does to them; the
    next start writes secret volumes afresh."""
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10, check=False)


class DevRuntime:
    def __init__(self, base: Path, *, endpoint: str | None, pod_cidr: str, keep_pods: bool) -> None:
        self.external = endpoint
        self.keep_pods = keep_pods
        self.bridge = bridge_for(pod_cidr)
        base_dir = base / "containerd"
        sock = base_dir / "containerd.sock"
        if len(str(sock)) > MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(base_dir).encode()).hexdigest()[:12]
            sock = Path(tempfile.gettempdir()) / f"kubeedge-dev-{digest}.sock"
        self.cfg = ContainerdConfig(
            base_dir=base_dir,
            socket=sock,
            sandbox_image=SANDBOX_IMAGE,
            subnet=pod_cidr,
            bridge=self.bridge,
            network_name="kubeedge-dev",
        )
        self.containerd: Containerd | None = None

    @property
    def endpoint(self) -> str:
        return self.external or self.cfg.endpoint

    async def start(self) -> str:
        """Bring the runtime up; returns a line saying what runs."""
        if self.external:
            return f"using the container runtime at {self.external} (nothing imported into it)"
        await asyncio.to_thread(self._preflight)
        self.containerd = Containerd(self.cfg)
        try:
            await self.containerd.start()
            images = self.cfg.base_dir / "images"
            for spec in (OciImageSpec(name=SANDBOX_IMAGE), OciImageSpec(name=APP_IMAGE, cmd=("sh",))):
                built = await asyncio.to_thread(
                    build_image, images / f"{spec.name.replace('/', '_')}.tar", spec
                )
                await self.containerd.import_image(built.path)
        except ContainerdError as e:
            raise DevRuntimeError(f"containerd: {e}") from None
        return (
            f"containerd {self.containerd.version} on {self.cfg.address} (state {self.cfg.base_dir}, "
            f"pods on {self.cfg.subnet} via bridge {self.bridge}; log {self.cfg.log_file})"
        )

    def _preflight(self) -> None:
        missing = sorted(
            f"{what} (Debian package {pkg})"
            for what, pkg in NEEDED.items()
            if not (Path(what).exists() if what.startswith("/") else shutil.which(what))
        )
        if missing:
            raise DevRuntimeError(
                f"the local edge node needs {', '.join(missing)}: run `make deps`, or pass --runtime-endpoint"
            )
        clash = clashing_route(self.cfg.subnet, self.bridge)
        if clash:
            raise DevRuntimeError(
                f"pod network {self.cfg.subnet} overlaps the host route {clash}; pick another --pod-cidr"
            )

    async def stop(self, edged_root: Path) -> list[str]:
        """Remove the pods (unless kept), unmount their tmpfs volumes, stop containerd; returns notes."""
        if self.containerd is None or not self.containerd.running:
            return []
        notes: list[str] = []
        if self.keep_pods:
            notes.append("pods keep running (--keep-pods); the next `make run` adopts them")
        else:
            removed = await self._remove_pods()
            await asyncio.to_thread(unmount_all, edged_root)
            if removed:
                notes.append(f"removed {removed} pod sandbox(es); they start again with the next `make run`")
        await self.containerd.stop()
        if not self.keep_pods:
            # CNI's bridge plugin never deletes its bridge; with no pod left it is only an address on the host.
            await asyncio.to_thread(
                subprocess.run,
                ["ip", "link", "del", self.bridge],
                capture_output=True,
                timeout=10,
                check=False,
            )
        return notes

    async def _remove_pods(self) -> int:
        count = 0
        async with CriClient(self.endpoint) as cri:
            try:
                sandboxes = await cri.list_pod_sandbox()
                containers = await cri.list_containers()
            except CriError:
                return 0

            async def stop(cid: str) -> None:
                with contextlib.suppress(CriError):
                    await cri.stop_container(cid, timeout_s=STOP_POD_TIMEOUT_S)

            # SIGTERM first, all at once: a pod gets the same few seconds however many there are.
            await asyncio.gather(*(stop(c.id) for c in containers))
            for sb in sandboxes:
                with contextlib.suppress(CriError):
                    await cri.stop_pod_sandbox(sb.id)
                    await cri.remove_pod_sandbox(sb.id)
                    count += 1
                uid = sb.metadata.uid or sb.labels.get(LABEL_POD_UID, "")
                if uid:
                    rt.remove_cgroup(rt.pod_cgroup(DEFAULT_CGROUP_PARENT, uid))
        return count
