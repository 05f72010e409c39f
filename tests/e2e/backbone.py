"""Helpers shared by the backbone end-to-end modules: edges as OS processes and their configs (the
cloud's harness is tests.cloudcore_proc, re-exported here), and reads of an edge's store through its
MetaServer."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeedge.kube import LEASES, NAMESPACES, KubeClient, KubeConfig, NotFound, watch
from tests.cloudcore_proc import HOST, STARTUP_S, CloudCore, Proc, http_ok
from tests.cluster import wait_for

__all__ = ["HOST", "STARTUP_S", "CloudCore", "Proc", "http_ok"]  # with what follows: the e2e harness

DEADLINE_S = 30.0


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


def edge_doc(cloud: CloudCore, name: str, data_dir: Path, meta_port: int) -> dict[str, Any]:
    """edge_config_doc for an edge of ``cloud``."""
    return edge_config_doc(
        name, data_dir, meta_port, ws=cloud.ws_server, https=cloud.https_server, token=cloud.token
    )


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
