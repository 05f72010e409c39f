"""The project's daemons as OS processes for tests: `Proc` (a command line, its log, its process) and
`CloudCore` (cloudcore with its config file, ports, state, bootstrap token, admin kubeconfig and health)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from kubeedge.kube import KubeClient, KubeConfig
from kubeedge.pki import tokens
from tests.apiserver_proc import ROOT, free_port
from tests.cluster import wait_for

HOST = "127.0.0.1"
STARTUP_S = 30.0
STOP_S = 15.0
PORT_NAMES = ("api", "ws", "https", "metrics")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Proc:
    """One daemon: its command line, log file and process handle."""

    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STOP_S)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_S)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, mappings merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def cloudcore_doc(
    data_dir: Path,
    ports: Mapping[str, int],
    *,
    hub_ip: str = HOST,
    advertise: Sequence[str] | None = None,
    kube_config: Path | None = None,
    controllers: str = "all",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """cloudcore.yaml for a test cloud: cloudhub on ``hub_ip``, metrics and (unless ``kube_config``
    names an outside API server) the embedded API on loopback, quick resends; ``extra`` laid over it."""
    doc: dict[str, Any] = {
        "apiVersion": "cloudcore.config.kubeedge.io/v1alpha2",
        "kind": "CloudCore",
        "dataDir": str(data_dir),
        "metrics": {"address": f"{HOST}:{ports['metrics']}"},
        "modules": {
            "cloudHub": {
                "advertiseAddress": list(advertise if advertise is not None else [hub_ip]),
                "websocket": {"address": hub_ip, "port": ports["ws"]},
                "https": {"address": hub_ip, "port": ports["https"]},
            },
            "edgeController": {"resendBase": 1.0},
        },
    }
    if kube_config is None:
        doc["embedded"] = {"listen": f"{HOST}:{ports['api']}", "controllers": controllers}
    else:
        doc["kubeAPIConfig"] = {"kubeConfig": str(kube_config)}
    return merged(doc, extra or {})


@dataclass
class CloudCore:
    """cloudcore as a restartable process, and what edges and admins need of it."""

    ports: dict[str, int]
    daemon: Proc
    data_dir: Path
    kubeconfig: Path
    config: Path
    hub_ip: str = HOST

    @classmethod
    def create(
        cls,
        base: Path,
        *,
        data_dir: Path | None = None,
        hub_ip: str = HOST,
        advertise: Sequence[str] | None = None,
        kube_config: Path | None = None,
        controllers: str = "all",
        extra: Mapping[str, Any] | None = None,
        ports: Mapping[str, int] | None = None,
        argv_tail: Sequence[str] = (),
    ) -> Self:
        """Config written under ``base``, not started. Ports not given are chosen (``ports`` may carry
        more, for ``extra`` to use); ``argv_tail`` follows ``--config`` (a test of ``--set``)."""
        data = data_dir or base / "cloud"
        ports = {**{k: free_port() for k in PORT_NAMES}, **(ports or {})}
        doc = cloudcore_doc(
            data, ports, hub_ip=hub_ip, advertise=advertise, kube_config=kube_config,
            controllers=controllers, extra=extra,
        )  # fmt: skip
        config = base / "cloudcore.yaml"
        config.write_text(yaml.safe_dump(doc))
        argv = [sys.executable, "-m", "kubeedge.cloudcore", "--config", str(config), *argv_tail]
        admin = kube_config or data / "apiserver" / "admin.kubeconfig"
        return cls(ports, Proc(argv, base / "cloudcore.log"), data, admin, config, hub_ip)

    @property
    def token(self) -> str:
        return (self.data_dir / tokens.TOKEN_FILE).read_text().strip()

    @property
    def ws_server(self) -> str:
        return f"{self.hub_ip}:{self.ports['ws']}"

    @property
    def https_server(self) -> str:
        return f"https://{self.hub_ip}:{self.ports['https']}"

    def http(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the metrics listener (/healthz, /metrics)."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.ports['metrics']}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    async def wait_healthy(self) -> None:
        url = f"http://{HOST}:{self.ports['metrics']}/healthz"

        async def healthy() -> bool:
            assert self.daemon.alive(), f"cloudcore exited:\n{self.daemon.tail()}"
            return await asyncio.to_thread(http_ok, url)

        await wait_for(healthy, deadline_s=STARTUP_S, what="cloudcore /healthz")

    async def ensure_running(self) -> None:
        """Each test may run alone: start cloudcore if an earlier test left it stopped."""
        if not self.daemon.alive():
            self.daemon.start()
        await self.wait_healthy()

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[KubeClient]:
        async with KubeClient(KubeConfig.from_file(str(self.kubeconfig))) as kc:
            yield kc
