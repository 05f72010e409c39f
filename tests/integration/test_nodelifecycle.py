"""Node lifecycle controller against a real API server running only it: nodes registered by the test,
their Leases renewed by the test (`renewing`), a short grace period set per node by annotation."""

from __future__ import annotations

import uuid
from typing import Any

from kubeedge.kube import NODES, PODS, KubeClient
from kubeedge.kube.errors import NotFound
from tests.cluster import register_node, renewing, wait_for

Obj = dict[str, Any]
GRACE = "2"  # seconds, via node.kubeedge.io/grace-period-seconds
UNREACHABLE = "node.kubernetes.io/unreachable"


# Only these controllers run (see tests/conftest.py: `server`, `kc` and `ns` come from there).
APISERVER_CONTROLLERS = "nodelifecycle"


async def node(kc: KubeClient, name: str, *, edge: bool, annotations: dict[str, str] | None = None) -> None:
    await register_node(kc, name, edge=edge)
    ann = {"node.kubeedge.io/grace-period-seconds": GRACE, **(annotations or {})}
    await kc.patch(NODES, name, {"metadata": {"annotations": ann}})


async def bound_pod(
    kc: KubeClient, ns: str, name: str, node: str, tolerations: list[Obj] | None = None
) -> Obj:
    spec: Obj = {
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox"}],
        "tolerations": tolerations or [],
    }
    pod = await kc.create(PODS, {"metadata": {"name": name}, "spec": spec}, namespace=ns)
    # Running and Ready, as the node's agent would report.
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    await kc.patch(PODS, name, {"status": status}, ns, subresource="status")
    return pod


def unreachable(seconds: int | None) -> Obj:
    t: Obj = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    if seconds is not None:
        t["tolerationSeconds"] = seconds
    return t


async def ready_status(kc: KubeClient, name: str) -> str:
    n = await kc.get(NODES, name)
    for c in n["status"].get("conditions") or ():
        if c["type"] == "Ready":
            return str(c["status"])
    return ""


async def taint_keys(kc: KubeClient, name: str) -> set[str]:
    n = await kc.get(NODES, name)
    return {f"{t['key']}:{t['effect']}" for t in n.get("spec", {}).get("taints") or ()}


async def alive(kc: KubeClient, ns: str, name: str) -> Obj | None:
    """The pod if it exists and is not being deleted."""
    try:
        p = await kc.get(PODS, name, ns)
    except NotFound:
        return None
    return None if p["metadata"].get("deletionTimestamp") else p


async def pod_ready(kc: KubeClient, ns: str, name: str) -> str:
    p = await kc.get(PODS, name, ns)
    return next(c["status"] for c in p["status"]["conditions"] if c["type"] == "Ready")


async def test_edge_node_goes_unknown_keeps_pods_and_recovers(kc: KubeClient, ns: str) -> None:
    edge, cloud = f"edge-{uuid.uuid4().hex[:6]}", f"cloud-{uuid.uuid4().hex[:6]}"
    await node(kc, edge, edge=True)
    await node(kc, cloud, edge=False)
    async with renewing(kc, [edge, cloud], every=0.5) as live:
        # On the edge node even a pod that tolerates unreachability for 0 s stays.
        edge_pods = {
            n: (await bound_pod(kc, ns, n, edge, tol))["metadata"]["uid"]
            for n, tol in (("e-plain", None), ("e-zero", [unreachable(0)]))
        }
        await bound_pod(kc, ns, "c-zero", cloud, [unreachable(0)])
        assert await ready_status(kc, edge) == "True"
        live.clear()  # both nodes lose their link

        async def edge_unknown() -> bool:
            return await ready_status(
                kc, edge
            ) == "Unknown" and f"{UNREACHABLE}:NoExecute" in await taint_keys(kc, edge)

        await wait_for(edge_unknown, deadline_s=15, what="the edge node to be Unknown and tainted")
        n = await kc.get(NODES, edge)
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NodeStatusUnknown"
        assert ready["message"] == "Kubelet stopped posting node status."
        assert {f"{UNREACHABLE}:NoSchedule", f"{UNREACHABLE}:NoExecute"} <= await taint_keys(kc, edge)
        # The cloud node's equivalent pod is evicted: by then the edge node was processed as well.
        await wait_for(
            lambda: _is_none(alive(kc, ns, "c-zero")), deadline_s=15, what="the cloud pod to be evicted"
        )

        async def edge_pods_not_ready() -> bool:
            return all([await pod_ready(kc, ns, p) == "False" for p in edge_pods])

        # Pods are marked not ready after the eviction pass over the same node.
        await wait_for(edge_pods_not_ready, deadline_s=10, what="edge pods marked not ready")
        for name, uid in edge_pods.items():
            p = await alive(kc, ns, name)
            assert p is not None and p["metadata"]["uid"] == uid, name

        live.add(edge)  # the link is back

        async def edge_ready() -> bool:
            return await ready_status(kc, edge) == "True" and not {
                t for t in await taint_keys(kc, edge) if t.startswith(UNREACHABLE)
            }

        await wait_for(edge_ready, deadline_s=15, what="the edge node to be Ready and untainted")
    items, _ = await kc.list(PODS, ns, field_selector=f"spec.nodeName={edge}")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in items} == edge_pods


async def _is_none(aw: Any) -> bool:
    return (await aw) is None


async def test_cloud_node_taint_based_eviction(kc: KubeClient, ns: str) -> None:
    cloud = f"cloud-{uuid.uuid4().hex[:6]}"
    await node(kc, cloud, edge=False)
    async with renewing(kc, [cloud], every=0.5) as live:
        await bound_pod(kc, ns, "untolerated", cloud, [unreachable(0)])
        await bound_pod(kc, ns, "two-seconds", cloud, [unreachable(2)])
        await bound_pod(kc, ns, "forever", cloud, [unreachable(None)])
        await bound_pod(kc, ns, "default", cloud)  # the API server's 300 s default toleration
        live.clear()

        async def tainted() -> bool:
            return f"{UNREACHABLE}:NoExecute" in await taint_keys(kc, cloud)

        await wait_for(tainted, deadline_s=15, what="the unreachable taint")
        # Right after the taint the 2 s pod is still there ...
        assert await alive(kc, ns, "two-seconds") is not None
        await wait_for(
            lambda: _is_none(alive(kc, ns, "untolerated")), deadline_s=10, what="the untolerated pod evicted"
        )
        # ... and goes about two seconds after the taint was added.
        await wait_for(
            lambda: _is_none(alive(kc, ns, "two-seconds")), deadline_s=10, what="the 2 s pod evicted"
        )
        n = await kc.get(NODES, cloud)
        added = next(t["timeAdded"] for t in n["spec"]["taints"] if t["effect"] == "NoExecute")
        assert added
        assert await alive(kc, ns, "forever") is not None
        assert await alive(kc, ns, "default") is not None


async def test_eviction_annotation_overrides_edge_default(kc: KubeClient, ns: str) -> None:
    edge = f"edge-ev-{uuid.uuid4().hex[:6]}"
    cloud = f"cloud-noev-{uuid.uuid4().hex[:6]}"
    await node(kc, edge, edge=True, annotations={"node.kubeedge.io/eviction": "true"})
    await node(kc, cloud, edge=False, annotations={"node.kubeedge.io/eviction": "false"})
    async with renewing(kc, [edge, cloud], every=0.5) as live:
        await bound_pod(kc, ns, "on-edge", edge, [unreachable(0)])
        await bound_pod(kc, ns, "on-cloud", cloud, [unreachable(0)])
        live.clear()
        await wait_for(
            lambda: _is_none(alive(kc, ns, "on-edge")), deadline_s=15, what="the opted-in edge pod evicted"
        )

        async def cloud_pod_not_ready() -> bool:
            return await pod_ready(kc, ns, "on-cloud") == "False"

        # Pods are marked not ready after the eviction pass over the same node.
        await wait_for(cloud_pod_not_ready, deadline_s=10, what="the opted-out cloud node's pod not ready")
        assert f"{UNREACHABLE}:NoExecute" in await taint_keys(kc, cloud)
        assert await alive(kc, ns, "on-cloud") is not None
