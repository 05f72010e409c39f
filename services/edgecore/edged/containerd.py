"""A project-owned containerd: its own config, root, state, socket and CNI network, started and stopped here.

Used by `make run` (when no usable runtime exists) and by the tests. Two settings matter on our machines
(see shared/reference/containerd-here.md): `restrict_oom_score_adj = true`, because the sandbox asks for a
negative oom_score_adj that root without CAP_SYS_RESOURCE cannot set, and a local `sandbox_image`, because
no registry is reachable to pull `pause`. Images come in as OCI archives through `ctr images import`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from .cri import CriClient, CriError
from .ociimage import DEFAULT_IMAGE

log = logging.getLogger(__name__)

# CRI's own namespace in containerd: images must land here to be visible through CRI.
CRI_NAMESPACE = "k8s.io"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
IMPORT_TIMEOUT_S = 120.0
# How often start() asks the socket for Version while containerd comes up.
READY_POLL_S = 0.05
# Bytes of containerd's log quoted in a start failure.
LOG_TAIL_BYTES = 4000
# Snapshotters and plugins that cannot work here or that we never use; disabling them keeps startup
# quick and the log free of their warnings.
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


class ContainerdError(RuntimeError):
    pass


@dataclass
class ContainerdConfig:
    """Everything lives under `base_dir` unless set; `socket` must stay short (unix paths max 107 bytes)."""

    base_dir: Path
    socket: Path | None = None
    containerd_bin: str = "containerd"
    ctr_bin: str = "ctr"
    sandbox_image: str = DEFAULT_IMAGE
    cni_bin_dir: Path = Path("/usr/lib/cni")
    # The pod network: one bridge per containerd instance, so several can run side by side.
    subnet: str = "10.88.0.0/16"
    network_name: str = "kubeedge-pods"
    bridge: str = "kubeedge0"
    # portmap adds iptables DNAT rules for hostPort mappings; it does nothing for pods without them.
    host_ports: bool = True
    systemd_cgroup: bool = False
    snapshotter: str = "overlayfs"
    log_level: str = "info"

    @property
    def root(self) -> Path:
        return self.base_dir / "root"

    @property
    def state(self) -> Path:
        return self.base_dir / "state"

    @property
    def address(self) -> Path:
        return self.socket or self.base_dir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.address}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.base_dir / "cni" / "networks"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "containerd.log"


def _toml_str(value: str | Path) -> str:
    # json string escaping is a subset of TOML basic-string escaping.
    return json.dumps(str(value))


def render_config(cfg: ContainerdConfig) -> str:
    """containerd 1.6 config (version 2) for this instance."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    disabled = ", ".join(_toml_str(p) for p in DISABLED_PLUGINS)
    return f"""\
version = 2
root = {_toml_str(cfg.root)}
state = {_toml_str(cfg.state)}
disabled_plugins = [{disabled}]

[grpc]
  address = {_toml_str(cfg.address)}

[ttrpc]
  address = ""

[debug]
  level = {_toml_str(cfg.log_level)}

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {_toml_str(cfg.root / "opt")}

[{cri}]
  sandbox_image = {_toml_str(cfg.sandbox_image)}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.cni]
  bin_dir = {_toml_str(cfg.cni_bin_dir)}
  conf_dir = {_toml_str(cfg.cni_conf_dir)}
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = {_toml_str(cfg.snapshotter)}
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = {"true" if cfg.systemd_cgroup else "false"}
"""


def render_cni_conflist(cfg: ContainerdConfig) -> str:
    """bridge (host-local IPAM) [+ portmap]; containerd brings up each pod's `lo` itself with the
    `loopback` plugin from the same bin dir, so it is not part of this chain."""
    net = ipaddress.ip_network(cfg.subnet)
    plugins: list[dict[str, object]] = [
        {
            "type": "bridge",
            "bridge": cfg.bridge,
            "isGateway": True,
            # No masquerade: pods talk to the node and to each other; the edge node is not a NAT router.
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(cfg.cni_ipam_dir),
                "ranges": [[{"subnet": str(net)}]],
                "routes": [{"dst": "0.0.0.0/0" if net.version == 4 else "::/0"}],
            },
        }
    ]
    if cfg.host_ports:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return json.dumps({"cniVersion": "0.4.0", "name": cfg.network_name, "plugins": plugins}, indent=2)


def write_config(cfg: ContainerdConfig) -> None:
    for d in (cfg.base_dir, cfg.root, cfg.state, cfg.cni_conf_dir, cfg.cni_ipam_dir):
        d.mkdir(parents=True, exist_ok=True)
    cfg.config_file.write_text(render_config(cfg))
    (cfg.cni_conf_dir / "10-kubeedge.conflist").write_text(render_cni_conflist(cfg))


class Containerd:
    """One containerd process. `await start()` returns once CRI answers Version; `await stop()` ends it.

    Stopping containerd does not stop pods: their shims live on (that is what lets pods survive a runtime
    restart). Remove sandboxes through CRI first when everything must go."""

    def __init__(self, cfg: ContainerdConfig) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.version: str = ""

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint

    def _log_tail(self) -> str:
        try:
            data = self.cfg.log_file.read_bytes()
        except OSError:
            return ""
        return data[-LOG_TAIL_BYTES:].decode(errors="replace")

    async def start(self, deadline_s: float = START_TIMEOUT_S) -> None:
        binary = shutil.which(self.cfg.containerd_bin)
        if binary is None:
            raise ContainerdError(
                f"{self.cfg.containerd_bin!r} not found: install Debian's containerd, runc and "
                "containernetworking-plugins (`make deps` does)"
            )
        write_config(self.cfg)
        with contextlib.suppress(FileNotFoundError):
            self.cfg.address.unlink()  # a stale socket from a crashed run would refuse the bind
        with self.cfg.log_file.open("ab") as logf:
            self.proc = await asyncio.create_subprocess_exec(
                binary,
                "--config",
                str(self.cfg.config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                # Own session: Ctrl-C in a terminal reaches us, and we stop containerd in order.
                start_new_session=True,
            )
        try:
            await self._wait_ready(deadline_s)
        except BaseException:
            await self.stop()
            raise
        log.info("containerd %s up on %s (pid %d)", self.version, self.cfg.address, self.proc.pid)

    async def _wait_ready(self, deadline_s: float) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        last: Exception | None = None
        async with CriClient(self.endpoint, timeout=1.0) as cri:
            while True:
                if self.proc.returncode is not None:
                    raise ContainerdError(
                        f"containerd exited with {self.proc.returncode} during startup:\n{self._log_tail()}"
                    )
                if self.cfg.address.exists():
                    try:
                        self.version = (await cri.version()).runtime_version
                        return
                    except CriError as e:
                        last = e
                if loop.time() > deadline:
                    raise ContainerdError(
                        f"containerd did not answer CRI Version within {deadline_s}s ({last}):\n{self._log_tail()}"
                    )
                await asyncio.sleep(READY_POLL_S)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `grace_s` seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            log.warning("containerd pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, grace_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def import_image(self, archive: Path, deadline_s: float = IMPORT_TIMEOUT_S) -> str:
        """Import an OCI/docker archive into CRI's namespace; returns ctr's output (the image names)."""
        return await import_image(self.cfg.address, archive, ctr_bin=self.cfg.ctr_bin, deadline_s=deadline_s)


async def import_image(
    socket: Path | str, archive: Path, *, ctr_bin: str = "ctr", deadline_s: float = IMPORT_TIMEOUT_S
) -> str:
    """`ctr -a SOCK -n k8s.io images import ARCHIVE` against any containerd (not only ours)."""
    address = str(socket).removeprefix("unix://")
    proc = await asyncio.create_subprocess_exec(
        ctr_bin,
        "-a",
        address,
        "-n",
        CRI_NAMESPACE,
        "images",
        "import",
        str(archive),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CONTAINERD_NAMESPACE": CRI_NAMESPACE},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), deadline_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ContainerdError(f"ctr images import {archive} took longer than {deadline_s}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise ContainerdError(f"ctr images import {archive} failed ({proc.returncode}): {text.strip()}")
    return text
