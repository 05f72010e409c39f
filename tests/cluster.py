"""Test helpers for a live cluster: nodes registered through the API, their Leases renewed by the
test (the edge agent does not exist yet), and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from kubeedge.kube import LEASES, NODES, KubeClient
from kubeedge.kube.errors import AlreadyExists, NotFound

T = TypeVar("T")
LEASE_NS = "kube-node-lease"


def condition_true(obj: dict[str, Any] | None, kind: str = "Ready") -> bool:
    """Whether a node's or pod's ``kind`` condition is True (a missing object or status is not)."""
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in ((obj or {}).get("status") or {}).get("conditions") or ()
    )


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    taints: list[dict[str, Any]] | None = None,
    ready: bool = True,
    edge: bool = False,
    ip: str = "192.0.2.10",
) -> dict[str, Any]:
    lbl = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
    if edge:
        lbl["node-role.kubernetes.io/edge"] = ""
    now = now_micro()[:19] + "Z"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": lbl},
        "spec": {"taints": taints or []},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "test node",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": "6.1.0",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.6.20",
                "kubeletVersion": "v1.37.0-kubeedge",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


async def register_node(kc: KubeClient, name: str, **kw: Any) -> dict[str, Any]:
    """Create (or replace the status of) a Node and its Lease, as a kubelet would."""
    body = node_manifest(name, **kw)
    try:
        node = await kc.create(NODES, body)
    except AlreadyExists:
        node = await kc.patch(NODES, name, {"status": body["status"]}, subresource="status")
    await renew_lease(kc, name)
    return node


async def renew_lease(kc: KubeClient, node: str, duration: int = 40) -> None:
    spec = {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": now_micro()}
    try:
        await kc.patch(LEASES, node, {"spec": spec}, namespace=LEASE_NS)
    except NotFound:
        await kc.create(LEASES, {"metadata": {"name": node}, "spec": spec}, namespace=LEASE_NS)


@contextlib.asynccontextmanager
async def renewing(kc: KubeClient, nodes: list[str], every: float = 1.0) -> AsyncIterator[set[str]]:
    """Keep renewing the Leases of `nodes` while the block runs; remove a name from the yielded set
    to stop renewing that node (simulating a lost link)."""
    live = set(nodes)

    async def loop() -> None:
        while True:
            for n in list(live):
                with contextlib.suppress(Exception):
                    await renew_lease(kc, n)
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield live
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(
    check: Callable[[], Awaitable[T]],
    *,
    deadline_s: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `deadline_s` seconds."""
    deadline = asyncio.get_running_loop().time() + deadline_s
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
