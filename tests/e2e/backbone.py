"""Helpers shared by the backbone end-to-end modules: daemons as OS processes (cloudcore, edgecore),
their configs, and reads of an edge's store through its MetaServer."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeedge.kube import LEASES, NAMESPACES, KubeClient, KubeConfig, NotFound, watch
from tests.apiserver_proc import ROOT
from tests.cluster import wait_for

HOST = "127.0.0.1"
STARTUP_S = 30.0
DEADLINE_S = 30.0
STOP_S = 15.0


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

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

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


@dataclass
class Edge:
    name: str
    data_dir: Path
    meta_port: int
    daemon: Proc

    @property
    def meta(self) -> KubeConfig:
        return KubeConfig(server=f"http://{HOST}:{self.meta_port}")

    @property
    def cert(self) -> tuple[Path, Path]:
        return self.data_dir / "certs" / "server.crt", self.data_dir / "certs" / "server.key"

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca" / "rootCA.crt"

    async def ensure_running(self) -> None:
        """Each test may run alone: start the edge if an earlier test left it stopped."""
        if not self.daemon.alive():
            self.daemon.start()
        await self.wait_serving()

    async def wait_serving(self) -> None:
        url = f"http://{HOST}:{self.meta_port}/healthz"

        async def up() -> bool:
            assert self.daemon.alive(), f"edgecore {self.name} exited:\n{self.daemon.tail()}"
            return await asyncio.to_thread(http_ok, url)

        await wait_for(up, deadline_s=STARTUP_S, what=f"{self.name}'s MetaServer")


def edge_config_doc(
    name: str, data_dir: Path, meta_port: int, *, ws: str, https: str, token: str
) -> dict[str, Any]:
    """edgecore.yaml for a test edge: fast heartbeats, status and Lease, MetaServer on ``meta_port``."""
    return {
        "dataDir": str(data_dir),
        "modules": {
            "edgeHub": {
                "httpServer": https,
                "websocket": {"server": ws, "handshakeTimeout": 5},
                "heartbeat": 2,
                "token": token,
            },
            "edged": {
                "enable": False,  # no container runtime in these tests
                "hostnameOverride": name,
                "nodeStatusUpdateFrequency": 1,
                "nodeStatusReportFrequency": 1,
                "nodeLeaseDurationSeconds": 4,
            },
            "metaManager": {"metaServer": {"enable": True, "server": f"{HOST}:{meta_port}"}},
        },
    }


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


async def edge_names(e: Edge, res: Any, ns: str) -> set[str]:
    """What ``e`` holds of ``res`` in ``ns``, read through its MetaServer."""
    async with KubeClient(e.meta) as kc:
        return {o["metadata"]["name"] for o in (await kc.list(res, ns))[0]}


async def new_namespace(kc: KubeClient, prefix: str) -> str:
    name = f"{prefix}-{int(time.monotonic() * 1000) % 1_000_000}"
    await kc.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def bound_pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            # No container runtime at these edges confirms a graceful termination: without grace the
            # pod's deletion is immediate, as it would be after such a confirmation.
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "nginx"}],
            **spec,
        },
    }


def ready(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"].get("conditions", []) if c["type"] == "Ready")


async def lease_renew_time(kc: KubeClient, node: str) -> str:
    try:
        return str((await kc.get(LEASES, node, "kube-node-lease"))["spec"].get("renewTime") or "")
    except NotFound:
        return ""


async def collect(e: Edge, res: Any, ns: str, rv: str, into: list[tuple[str, str]]) -> None:
    """Append (type, name) of every event on ``e``'s MetaServer after edge revision ``rv``."""
    async with KubeClient(e.meta) as kc:
        async for ev in watch(kc, res, ns, resource_version=rv, timeout_seconds=int(DEADLINE_S)):
            if ev.type != "BOOKMARK":
                into.append((ev.type, ev.object["metadata"]["name"]))


def mtls(e: Edge, as_cert_of: Edge | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(e.ca))
    crt, key = (as_cert_of or e).cert
    ctx.load_cert_chain(str(crt), str(key))
    return ctx
