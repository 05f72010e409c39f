"""keadm's commands: ``init`` (write cloudcore.yaml, start cloudcore), ``gettoken``, ``join`` (write
edgecore.yaml, obtain the node certificate, start edgecore), ``reset`` (stop, remove state) and
``dev-run`` (what ``make run`` runs; see devrun.py) and ``image import`` (an OCI/docker archive into the
node's containerd, for air-gapped devices).

Daemons run in one of three ways: in this process (``--foreground``), as a systemd unit when systemd is
PID 1, or detached with ``<data-dir>/<daemon>.log`` and ``<data-dir>/<daemon>.pid``. Every failure is
one line saying what is wrong and what to do next: exit 1, or 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge import systemd
from kubeedge.cloudcore import config as cc_config
from kubeedge.edgecore import config as ec_config
from kubeedge.pki import tokens
from kubeedge.pki.bootstrap import is_dns1123_subdomain
from kubeedge.pki.client import BootstrapError, PinError
from kubeedge.runtime.overrides import Override

CLOUD_DATA_DIR: Final = Path("/var/lib/kubeedge/cloud")
EDGE_DATA_DIR: Final = Path("/var/lib/kubeedge/edge")
SYSTEMD_DIR: Final = Path("/etc/systemd/system")
SYSTEMD_RUNTIME: Final = Path("/run/systemd/system")
SYSTEM_UNIT_DIRS: Final = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
DEFAULT_CERT_PORT: Final = 10002
DEFAULT_META_SERVER: Final = "127.0.0.1:10550"
# cloudcore starts the embedded API server and syncs its informers before healthz passes.
HEALTH_TIMEOUT: Final = 90.0
# edgecore logs "started" once its modules run (its credentials were obtained by join already).
EDGE_START_TIMEOUT: Final = 30.0
# A daemon asked to stop (SIGTERM) gets this long before SIGKILL.
STOP_TIMEOUT: Final = 20.0
POLL_INTERVAL: Final = 0.2
EDGECORE_CONFIG: Final = Path("/etc/kubeedge/config/edgecore.yaml")
DEFAULT_RUNTIME_ENDPOINT: Final = "unix:///run/containerd/containerd.sock"
# Where edgecore configs name the CRI socket: ours, then KubeEdge's (v1.15+, then older releases).
RUNTIME_ENDPOINT_KEYS: Final = (
    ("modules", "edged", "runtimeEndpoint"),
    ("modules", "edged", "containerRuntimeEndpoint"),
    ("modules", "edged", "tailoredKubeletConfig", "containerRuntimeEndpoint"),
    ("modules", "edged", "tailoredKubeletFlag", "remoteRuntimeEndpoint"),
    ("modules", "edged", "remoteRuntimeEndpoint"),
)
IMAGE_IMPORT_TIMEOUT: Final = 600.0
SOCKET_CHECK_TIMEOUT: Final = 3.0


class KeadmError(Exception):
    """A failure the user can act on; the message says what to do next (exit 1)."""


class UsageError(KeadmError):
    """Bad flags or values (exit 2)."""


@dataclass(frozen=True)
class Daemon:
    """One of the two daemons keadm installs; its files live in its data directory."""

    name: str  # cloudcore | edgecore
    data_dir: Path

    @property
    def config(self) -> Path:
        return self.data_dir / f"{self.name}.yaml"

    @property
    def log(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def unit(self) -> Path:
        return SYSTEMD_DIR / f"{self.name}.service"

    @property
    def dropin(self) -> Path:
        """keadm's settings on top of the packaged unit: this interpreter, this config."""
        return SYSTEMD_DIR / f"{self.name}.service.d" / "keadm.conf"

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"kubeedge.{self.name}", "--config", str(self.config)]


# ---- small helpers ---------------------------------------------------------------------------------


def systemd_is_init() -> bool:
    """sd_booted(3): systemd is the service manager iff it created /run/systemd/system."""
    return SYSTEMD_RUNTIME.is_dir()


def primary_ip() -> str:
    """The address other machines most likely reach this one at (the default route's source)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it only picks a route
        return str(s.getsockname()[0])
    return "127.0.0.1"


def node_name_from_hostname() -> str:
    """The hostname as a DNS-1123 node name (lower-cased, anything else replaced by '-')."""
    raw = socket.gethostname().lower()
    name = "".join(c if c.isalnum() or c in "-." else "-" for c in raw).strip("-.")
    return name or "edge-node"


def check_port_free(address: str, setting: str) -> None:
    """Fail early, naming the --set key to change, when ``address`` (HOST:PORT) is already taken."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Same option the daemons' servers set, so a port in TIME_WAIT is not reported as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise KeadmError(
                    f"{address} is already in use; pick another with --set {setting}=<value>"
                ) from None
            raise KeadmError(f"cannot listen on {address} ({setting}): {e.strerror}") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) still answers signal 0.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def running_pid(d: Daemon) -> int | None:
    """The pid from the pid file if that process is alive and still runs this daemon."""
    try:
        pid = int(d.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if f"kubeedge.{d.name}".encode() not in cmdline:
            return None  # the pid was reused by something else
    return pid


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def write_private(path: Path, text: str) -> None:
    """Configs carry the bootstrap token: owner-only from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def healthz_url(config: cc_config.CloudCoreConfig) -> str:
    host = config.metrics.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{config.metrics.port}/healthz"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except (OSError, urllib.error.URLError):
        return False


# ---- starting and stopping daemons ------------------------------------------------------------------


def start_daemon(d: Daemon, *, foreground: bool, detach: bool) -> str:
    """Start ``d`` the chosen way; returns how it runs (for the summary). Foreground never returns."""
    if foreground:
        sys.stdout.flush()
        os.execv(sys.executable, d.command())
    if not detach and systemd_is_init():
        return _start_unit(d)
    return _start_detached(d)


def unit_dropin(d: Daemon) -> str:
    """Points the packaged unit (Type=notify, watchdog, hardening) at this install's interpreter and
    config; the packaged ExecStart and condition are for the appliance image's paths."""
    lines = [
        "# written by keadm; removed by keadm reset",
        "[Unit]",
        "ConditionPathExists=",
        f"ConditionPathExists={d.config}",
        "[Service]",
        "ExecStart=",
        f"ExecStart={' '.join(d.command())}",
    ]
    if d.name == "cloudcore":
        # cloudcore's unit makes the file system read-only but for /var/lib/kubeedge.
        lines.append(f"ReadWritePaths={d.data_dir}")
    return "\n".join(lines) + "\n"


def _start_unit(d: Daemon) -> str:
    # A pid file left by an earlier detached run would make the start-up wait think the unit died.
    d.pidfile.unlink(missing_ok=True)
    try:
        if not any((lib / d.unit.name).exists() for lib in SYSTEM_UNIT_DIRS):  # else the OS ships it
            d.unit.write_text(systemd.unit_text(d.unit.name))
        d.dropin.parent.mkdir(parents=True, exist_ok=True)
        d.dropin.write_text(unit_dropin(d))
        # Type=notify: `enable --now` returns once the daemon said READY=1 (it serves), or fails.
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", d.name]):
            subprocess.run(cmd, check=True, capture_output=True, text=True)
    except OSError as e:
        raise KeadmError(f"cannot install {d.unit}: {e.strerror} (run as root, or pass --detach)") from None
    except subprocess.CalledProcessError as e:
        raise KeadmError(
            f"{' '.join(e.cmd)} failed: {e.stderr.strip()}; see `journalctl -u {d.name}`"
        ) from None
    return f"systemd unit {d.unit.name} (logs: journalctl -u {d.name}; stop: keadm reset)"


def _start_detached(d: Daemon) -> str:
    with d.log.open("ab") as out:
        proc = subprocess.Popen(
            d.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this shell and its Ctrl-C
            cwd="/",
        )
    d.pidfile.write_text(f"{proc.pid}\n")
    return (
        f"background process {proc.pid} (log: {d.log}; stop: keadm reset --data-dir {d.data_dir}, "
        f"or kill {proc.pid})"
    )


def wait_until(probe: Any, d: Daemon, what: str, within: float) -> None:
    """Poll ``probe()`` until true; fail early if the detached daemon died, with its last log lines."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if probe():
            return
        if d.pidfile.exists() and running_pid(d) is None:
            raise KeadmError(f"{d.name} exited during start-up: {log_tail(d.log)} (full log: {d.log})")
        time.sleep(POLL_INTERVAL)
    raise KeadmError(f"{d.name} did not become {what} within {within:.0f}s; check {d.log} or its journal")


def stop_daemon(d: Daemon) -> list[str]:
    """Stop ``d`` however keadm started it; returns what was done."""
    done: list[str] = []
    if d.dropin.exists() and str(d.config) in d.dropin.read_text():
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            subprocess.run(["systemctl", "disable", "--now", d.name], check=True, capture_output=True)
        d.dropin.unlink()
        with contextlib.suppress(OSError):
            d.dropin.parent.rmdir()
        with contextlib.suppress(OSError, KeyError):
            if d.unit.read_text() == systemd.unit_text(d.unit.name):  # the copy keadm wrote, unchanged
                d.unit.unlink()
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            subprocess.run(["systemctl", "daemon-reload"], check=True, capture_output=True)
        done.append(f"stopped and removed systemd unit {d.unit}")
    pid = running_pid(d)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL / 2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed {d.name} (pid {pid}; it ignored SIGTERM for {STOP_TIMEOUT:.0f}s)")
        else:
            done.append(f"stopped {d.name} (pid {pid})")
    return done


# ---- configuration documents --------------------------------------------------------------------


def cloudcore_config(
    data_dir: Path, advertise: Sequence[str], kube_config: str, overrides: Sequence[Override]
) -> cc_config.CloudCoreConfig:
    doc = cc_config.CloudCoreConfig(data_dir=data_dir).to_document()
    doc["modules"]["cloudHub"]["advertiseAddress"] = list(advertise)
    # kubectl logs/exec/port-forward to edge pods: on for clusters keadm sets up (KubeEdge's own
    # default is off, and its users then have to find the switch).
    doc["modules"]["cloudStream"]["enable"] = True
    doc["kubeAPIConfig"]["kubeConfig"] = kube_config
    try:
        doc = cc_config.apply_overrides(doc, overrides)
        return cc_config.CloudCoreConfig.from_document(doc)
    except cc_config.ConfigError as e:
        raise UsageError(f"cloudcore configuration: {e}") from None


def edgecore_document(
    *,
    data_dir: Path,
    cloud_host: str,
    hub_port: int,
    cert_port: int,
    token: str,
    node_name: str,
    labels: dict[str, str],
    runtime_endpoint: str = DEFAULT_RUNTIME_ENDPOINT,
) -> dict[str, Any]:
    host = f"[{cloud_host}]" if ":" in cloud_host else cloud_host
    return {
        "apiVersion": ec_config.API_VERSION,
        "kind": ec_config.KIND,
        "dataDir": str(data_dir),
        "database": {"dataSource": str(data_dir / "edgecore.db")},
        "modules": {
            "edgeHub": {
                "httpServer": f"https://{host}:{cert_port}",
                "websocket": {"server": f"{host}:{hub_port}"},
                "token": token,
            },
            "edged": {
                "enable": True,
                "hostnameOverride": node_name,
                "nodeLabels": labels,
                "runtimeEndpoint": runtime_endpoint,
            },
            "metaManager": {"metaServer": {"enable": True, "server": DEFAULT_META_SERVER}},
            # The stream tunnel for kubectl logs/exec (to <cloud>:10004 unless --set otherwise).
            "edgeStream": {"enable": True},
        },
    }


def edgecore_config(
    doc: dict[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], ec_config.EdgeCoreConfig]:
    try:
        doc = ec_config.apply_overrides(doc, list(overrides))
        return doc, ec_config.from_dict(doc)
    except ec_config.ConfigError as e:
        raise UsageError(f"edgecore configuration: {e}") from None


def join_command(host: str, hub_port: int, cert_port: int, token: str) -> str:
    line = f"keadm join --cloudcore-ipport {host}:{hub_port} --token {token} --edgenode-name <name>"
    if cert_port != DEFAULT_CERT_PORT:
        line += f" --certport {cert_port}"
    return line


# ---- commands ---------------------------------------------------------------------------------------


def cmd_init(a: argparse.Namespace) -> int:
    data_dir = Path(a.data_dir).resolve()
    advertise = list(a.advertise_address) or [primary_ip()]
    config = cloudcore_config(data_dir, advertise, a.kube_config or "", a.set)
    d = Daemon("cloudcore", data_dir)
    pid = running_pid(d)
    if pid is not None:
        raise KeadmError(f"cloudcore already runs from {data_dir} (pid {pid}); `keadm reset` it first")
    hub = config.modules.cloud_hub
    ports = [
        (f"{hub.websocket.address}:{hub.websocket.port}", "modules.cloudHub.websocket.port"),
        (f"{hub.https.address}:{hub.https.port}", "modules.cloudHub.https.port"),
        (config.metrics.address, "metrics.address"),
    ]
    cs = config.modules.cloud_stream
    if cs.enable:
        ports.append((f"{cs.tunnel_address}:{cs.tunnel_port}", "modules.cloudStream.tunnelPort"))
        ports.append((f"{cs.stream_address}:{cs.stream_port}", "modules.cloudStream.streamPort"))
    if config.embedded_api:
        ports.append((config.embedded.listen, "embedded.listen"))
    for address, setting in ports:
        check_port_free(address, setting)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_private(d.config, yaml.safe_dump(config.to_document(), sort_keys=False))
    print(f"wrote {d.config}", flush=True)
    if a.foreground:
        # exec replaces this process: say now what cloudcore's own "ready" lines do not.
        print(f"once cloudcore is ready: keadm gettoken --data-dir {data_dir}, then on each edge node:")
        print("  " + join_command(advertise[0], hub.websocket.port, hub.https.port, "<token>"), flush=True)
    how = start_daemon(d, foreground=a.foreground, detach=a.detach)
    print(f"cloudcore started as {how}", flush=True)
    url = healthz_url(config)
    wait_until(lambda: healthy(url), d, "healthy", HEALTH_TIMEOUT)
    token = read_token(data_dir)
    kubeconfig = (
        data_dir / "apiserver" / "admin.kubeconfig"
        if config.embedded_api
        else Path(config.kube_api.kube_config)
    )
    print(f"cloudcore is healthy ({url})")
    print(f"admin kubeconfig: {kubeconfig}")
    print(f"print the join token again with: keadm gettoken --data-dir {data_dir}")
    print("join an edge node with:")
    print("  " + join_command(advertise[0], hub.websocket.port, hub.https.port, token))
    return 0


def read_token(data_dir: Path) -> str:
    path = data_dir / tokens.TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise KeadmError(
            f"no bootstrap token in {data_dir}: cloudcore has not been initialised there; "
            f"run `keadm init --data-dir {data_dir}` first"
        ) from None
    except OSError as e:
        raise KeadmError(f"cannot read {path}: {e.strerror} (run keadm as root?)") from None
    try:
        _, jwt = tokens.split_token(token)
        expired = tokens.jwt_expiry(jwt) <= time.time()
    except tokens.TokenError as e:
        raise KeadmError(f"{path} is damaged ({e}); restart cloudcore to write a fresh one") from None
    if expired:
        raise KeadmError(
            f"the token in {path} has expired: cloudcore is not running (it refreshes the token); "
            f"start it with `keadm init --data-dir {data_dir}`"
        )
    return token


def cmd_gettoken(a: argparse.Namespace) -> int:
    data_dir = Path(a.data_dir).resolve()
    d = Daemon("cloudcore", data_dir)
    if d.config.exists():
        try:
            config = cc_config.load_config(d.config)
        except cc_config.ConfigError as e:
            raise KeadmError(f"{d.config}: {e}; fix it or run `keadm init` again") from None
        if not healthy(healthz_url(config)):
            raise KeadmError(
                f"cloudcore from {data_dir} is not running ({healthz_url(config)} does not answer); "
                f"start it with `keadm init --data-dir {data_dir}`"
            )
    print(read_token(data_dir))
    return 0


def _parse_labels(raw: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--labels: {item!r} is not key=value")
        labels[k] = v
    return labels


def _parse_ipport(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--cloudcore-ipport {raw!r}: expected IP:PORT, e.g. 192.168.1.10:10000")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return host, int(port)
    if not is_dns1123_subdomain(host):
        raise UsageError(f"--cloudcore-ipport {raw!r}: {host!r} is neither an IP address nor a DNS name")
    return host, int(port)


def cmd_join(a: argparse.Namespace) -> int:
    from kubeedge.edgecore.app import CredentialsError, ensure_credentials

    host, hub_port = _parse_ipport(a.cloudcore_ipport)
    if not 0 < a.certport < 65536:
        raise UsageError(f"--certport {a.certport}: not a port number")
    try:
        tokens.split_token(a.token)
    except tokens.TokenError as e:
        raise UsageError(f"--token: {e}; get the current one on the cloud with `keadm gettoken`") from None
    name = a.edgenode_name or node_name_from_hostname()
    if not is_dns1123_subdomain(name):
        raise UsageError(
            f"--edgenode-name {name!r} is not a DNS-1123 name (lower-case letters, digits, '-', '.')"
        )
    unix_socket_path(a.runtime_endpoint)  # a usage error now, not a config error in the daemon's log
    data_dir = Path(a.data_dir).resolve()
    d = Daemon("edgecore", data_dir)
    pid = running_pid(d)
    if pid is not None:
        raise KeadmError(f"edgecore already runs from {data_dir} (pid {pid}); `keadm reset` it first")
    doc = edgecore_document(
        data_dir=data_dir,
        cloud_host=host,
        hub_port=hub_port,
        cert_port=a.certport,
        token=a.token.strip(),
        node_name=name,
        labels=_parse_labels(a.labels or ""),
        runtime_endpoint=a.runtime_endpoint,
    )
    doc, config = edgecore_config(doc, a.set)
    if config.meta_server.enable:
        check_port_free(config.meta_server.server, "modules.metaManager.metaServer.server")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Credentials now, so a wrong token or address is reported here rather than in a daemon's log.
    try:
        asyncio.run(ensure_credentials(config))
    except PinError as e:
        raise KeadmError(
            f"{e}; the token is from another cloud or was altered: get the current one with `keadm gettoken`"
        ) from None
    except BootstrapError as e:
        raise KeadmError(
            f"{e}; check --cloudcore-ipport/--certport and that the token is current (`keadm gettoken`)"
        ) from None
    except (CredentialsError, tokens.TokenError, OSError) as e:
        raise KeadmError(f"cannot obtain the node certificate: {e}") from None
    print(f"node {name}: certificate obtained ({config.cert_file})", flush=True)
    write_private(d.config, yaml.safe_dump(doc, sort_keys=False))
    print(f"wrote {d.config}", flush=True)
    how = start_daemon(d, foreground=a.foreground, detach=a.detach)
    print(f"edgecore started as {how}", flush=True)
    if d.pidfile.exists():
        wait_until(lambda: "started" in log_tail(d.log, 20), d, "started", EDGE_START_TIMEOUT)
    print(f"node {name} joins the cloud at {host}:{hub_port}; check it there with `kubectl get node {name}`")
    return 0


def cmd_reset(a: argparse.Namespace) -> int:
    dirs = [Path(p).resolve() for p in a.data_dir] or [
        p for p in (CLOUD_DATA_DIR, EDGE_DATA_DIR) if p.exists()
    ]
    found = [
        Daemon(name, p) for p in dirs for name in ("cloudcore", "edgecore") if (p / f"{name}.yaml").exists()
    ]
    if not found:
        where = ", ".join(map(str, dirs)) or f"{CLOUD_DATA_DIR} or {EDGE_DATA_DIR}"
        raise KeadmError(f"nothing keadm set up in {where}; pass the --data-dir given to init/join")
    if not a.force:
        if not sys.stdin.isatty():
            raise KeadmError("reset removes state and needs confirmation; pass --force to skip it")
        listing = ", ".join(str(d.data_dir) for d in found)
        if (
            input(f"stop {'/'.join(d.name for d in found)} and delete {listing}? [y/N] ").strip().lower()
            != "y"
        ):
            print("nothing changed")
            return 1
    for d in found:
        for line in stop_daemon(d) or [f"{d.name} was not running"]:
            print(line)
        shutil.rmtree(d.data_dir, ignore_errors=True)
        print(f"removed {d.data_dir}")
    return 0


def runtime_endpoint_from(config: Path) -> str | None:
    """The CRI endpoint an edgecore config names, if it names one."""
    try:
        doc = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for keys in RUNTIME_ENDPOINT_KEYS:
        node: Any = doc
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            return node
    return None


def default_runtime_endpoint(data_dir: Path) -> tuple[str, str]:
    """(endpoint, where it came from): the local edge node's configured runtime, else containerd's default."""
    for config in (Daemon("edgecore", data_dir).config, EDGECORE_CONFIG):
        endpoint = runtime_endpoint_from(config)
        if endpoint:
            return endpoint, str(config)
    return DEFAULT_RUNTIME_ENDPOINT, "default"


def unix_socket_path(endpoint: str) -> str:
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://") :]
    if endpoint.startswith("unix:"):
        return endpoint[len("unix:") :]
    if endpoint.startswith("/"):
        return endpoint
    raise UsageError(f"--runtime-endpoint {endpoint!r}: expected a unix socket (unix:///path or /path)")


def check_socket_answers(path: str, where: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(SOCKET_CHECK_TIMEOUT)
        try:
            s.connect(path)
        except OSError as e:
            raise KeadmError(
                f"the container runtime does not answer on {path} ({e.strerror or e}; endpoint from {where}): "
                "start containerd, or pass --runtime-endpoint unix:///path/to/containerd.sock"
            ) from None


def cmd_image_import(a: argparse.Namespace) -> int:
    archive = Path(a.archive)
    if not archive.is_file():
        raise UsageError(f"{archive}: no such file (expected an OCI or docker image archive, a .tar)")
    if a.runtime_endpoint:
        endpoint, where = a.runtime_endpoint, "--runtime-endpoint"
    else:
        endpoint, where = default_runtime_endpoint(Path(a.data_dir))
    path = unix_socket_path(endpoint)
    ctr = shutil.which("ctr")
    if ctr is None:
        raise KeadmError(
            "`ctr` not found: image import drives containerd through ctr; install containerd "
            "(Debian package containerd) or put ctr on PATH"
        )
    check_socket_answers(path, where)
    cmd = [ctr, "-a", path, "-n", a.namespace, "images", "import", str(archive.resolve())]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=IMAGE_IMPORT_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise KeadmError(f"ctr images import did not finish within {IMAGE_IMPORT_TIMEOUT:.0f}s") from None
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise KeadmError(f"ctr images import {archive} into {path} failed: {out or done.returncode}")
    if out:
        print(out)
    print(f"imported {archive} into {path} (namespace {a.namespace}; endpoint from {where})")
    return 0


# ---- argument parsing -------------------------------------------------------------------------------


def _add_run_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--foreground", action="store_true", help="run the daemon in this process")
    p.add_argument(
        "--detach",
        action="store_true",
        help="run as a background process with a pid file even when systemd is available",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a setting (repeatable)"
    )


def parser() -> argparse.ArgumentParser:
    from . import cloudboot, devrun, firstboot

    p = argparse.ArgumentParser(prog="keadm", description="set up KubeEdge clouds and edge nodes")
    sub = p.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="configure and start cloudcore on this machine")
    init.add_argument("--data-dir", default=str(CLOUD_DATA_DIR), help=f"state directory ({CLOUD_DATA_DIR})")
    init.add_argument(
        "--advertise-address",
        action="append",
        default=[],
        metavar="IP",
        help="address edges dial (repeatable; default: this host's primary IP)",
    )
    init.add_argument("--kube-config", help="use this cluster instead of the embedded API server")
    _add_run_mode(init)
    init.set_defaults(func=cmd_init)

    gt = sub.add_parser("gettoken", help="print the current bootstrap token")
    gt.add_argument("--data-dir", default=str(CLOUD_DATA_DIR), help=f"cloudcore's state ({CLOUD_DATA_DIR})")
    gt.set_defaults(func=cmd_gettoken)

    join = sub.add_parser("join", help="join this machine to a cloud as an edge node")
    join.add_argument(
        "--cloudcore-ipport", required=True, metavar="IP:PORT", help="cloudhub, e.g. 10.0.0.1:10000"
    )
    join.add_argument("--token", required=True, help="from `keadm gettoken` on the cloud")
    join.add_argument("--edgenode-name", help="node name (default: this host's name)")
    join.add_argument("--labels", default="", metavar="K=V,...", help="node labels")
    join.add_argument("--certport", type=int, default=DEFAULT_CERT_PORT, help="bootstrap port (10002)")
    join.add_argument("--data-dir", default=str(EDGE_DATA_DIR), help=f"state directory ({EDGE_DATA_DIR})")
    join.add_argument(
        "--runtime-endpoint",
        default=DEFAULT_RUNTIME_ENDPOINT,
        help=f"the CRI socket edged runs pods through ({DEFAULT_RUNTIME_ENDPOINT})",
    )
    _add_run_mode(join)
    join.set_defaults(func=cmd_join)

    reset = sub.add_parser("reset", help="stop what init/join started and delete its state")
    reset.add_argument(
        "--data-dir", action="append", default=[], help="state directory (repeatable; default: both defaults)"
    )
    reset.add_argument("--force", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)

    image = sub.add_parser("image", help="manage the edge node's container images")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    imp = image_sub.add_parser("import", help="import an OCI/docker image archive into containerd")
    imp.add_argument("archive", help="the image archive (.tar), e.g. from `docker save` or an OCI layout")
    imp.add_argument(
        "--runtime-endpoint",
        help="containerd socket (default: the edge node's configured runtime, else "
        f"{DEFAULT_RUNTIME_ENDPOINT})",
    )
    imp.add_argument("--namespace", default="k8s.io", help="containerd namespace; CRI sees only k8s.io")
    imp.add_argument(
        "--data-dir",
        default=str(EDGE_DATA_DIR),
        help=f"the edge node's state, for its config ({EDGE_DATA_DIR})",
    )
    imp.set_defaults(func=cmd_image_import)

    devrun.add_parser(sub)
    firstboot.add_parser(sub)
    cloudboot.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    try:
        return int(a.func(a))
    except UsageError as e:
        print(f"keadm {a.command}: {e}", file=sys.stderr)
        return 2
    except KeadmError as e:
        print(f"keadm {a.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
