"""Finding the pod and container a stream request names, from the edge store and the runtime."""

from __future__ import annotations

from typing import Any

from kubeedge.edgecore.edged import runtime as rt
from kubeedge.edgecore.edged.cri import CriClient, CriError
from kubeedge.edgecore.edged.status import RUNNING, ContainerView
from kubeedge.store import NotFound, Store
from kubeedge.streaming.tunnel import StreamError

Obj = dict[str, Any]


def pod_of(store: Store, node: str, ns: str, name: str) -> Obj:
    try:
        pod: Obj = store.get_now("pods", ns, name).obj
    except NotFound:
        raise StreamError(404, f'pods "{name}" not found on node {node}') from None
    if (pod.get("spec") or {}).get("nodeName") != node:
        raise StreamError(404, f'pod "{name}" is not bound to node {node}')
    return pod


async def instances(cri: CriClient, pod: Obj, container: str) -> list[ContainerView]:
    """The container's instances in the runtime, newest first."""
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    try:
        prt = await rt.inspect_pod(cri, uid)
    except CriError as e:
        raise StreamError(503, f"the container runtime is not available: {e.details or e}") from None
    return prt.by_name().get(container, [])


async def running_container(cri: CriClient, pod: Obj, container: str) -> str:
    name = (pod.get("metadata") or {}).get("name")
    found = await instances(cri, pod, container)
    if not found:
        raise StreamError(400, f'container "{container}" in pod "{name}" is waiting to start')
    if found[0].state != RUNNING:
        raise StreamError(400, f'container "{container}" in pod "{name}" is not running ({found[0].state})')
    return found[0].id
