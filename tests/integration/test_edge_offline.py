"""The whole control plane with edge nodes that lose their link: edge pods stay bound and are not
recreated; non-edge pods are evicted after their toleration and replaced elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kubeedge.kube import DEPLOYMENTS, NAMESPACES, NODES, PODS, KubeClient, KubeConfig, ListWatch
from kubeedge.kube.errors import ApiError
from tests.apiserver_proc import ApiServerProc
from tests.cluster import condition_true, register_node, renewing, wait_for

GRACE = {"node.kubeedge.io/grace-period-seconds": "2"}
RESYNC_SECONDS = 0.5


@contextlib.asynccontextmanager
async def fake_kubelets(kc: KubeClient, ns: str, online: set[str]) -> AsyncIterator[None]:
    """Stand-in for the edge agents of the nodes in `online`: bound pods become Running and Ready,
    graceful deletions are confirmed. Pods of offline nodes are left alone, as a cut-off node would."""

    async def sync(cache: dict) -> None:
        for pod in list(cache.values()):
            node = pod["spec"].get("nodeName")
            if node not in online:
                continue
            md = pod["metadata"]
            with contextlib.suppress(ApiError):
                if md.get("deletionTimestamp"):
                    await kc.delete(PODS, md["name"], ns, grace_period_seconds=0)
                elif not condition_true(pod):
                    await kc.patch(PODS, md["name"], _running(node), namespace=ns, subresource="status")

    async def run() -> None:
        # Like a kubelet: act on every change, and resync periodically (a node that comes back
        # reports its pods again even if nothing changed meanwhile).
        async with ListWatch(kc, PODS, ns) as lw:
            events = aiter(lw)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(anext(events), RESYNC_SECONDS)
                await sync(lw.cache)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _running(node: str) -> dict:
    ip = f"10.244.{abs(hash(node)) % 200}.{abs(hash(node + 'x')) % 200 + 2}"
    return {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
        }
    }


def deployment(name: str, replicas: int, selector: dict[str, str], toleration_s: int | None = None) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "app:1"}], "nodeSelector": selector}
    if toleration_s is not None:
        spec["tolerations"] = [
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": toleration_s,
            }
        ]
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


async def pods_of(kc: KubeClient, ns: str, app: str) -> list[dict]:
    items, _ = await kc.list(PODS, ns, label_selector=f"app={app}")
    return items


def node_state(node: dict) -> tuple[str, set[str]]:
    ready = next((c["status"] for c in node["status"].get("conditions") or () if c["type"] == "Ready"), "")
    taints = {f"{t['key']}:{t['effect']}" for t in node.get("spec", {}).get("taints") or ()}
    return ready, taints


async def test_edge_pods_survive_a_lost_link_and_cloud_pods_are_evicted(apiserver: ApiServerProc) -> None:
    async with KubeClient(KubeConfig.from_file(str(apiserver.kubeconfig))) as kc:
        ns = "offline"
        await kc.create(NAMESPACES, {"metadata": {"name": ns}})
        for name, edge, zone in (
            ("edge-a", True, "edge"),
            ("edge-b", True, "edge"),
            ("cloud-a", False, "cloud"),
        ):
            await register_node(kc, name, edge=edge, labels={"zone": zone})
            await kc.patch(NODES, name, {"metadata": {"annotations": GRACE}})
        await register_node(kc, "cloud-b", labels={"zone": "cloud"})
        await kc.patch(NODES, "cloud-b", {"metadata": {"annotations": GRACE}})
        nodes = ["edge-a", "edge-b", "cloud-a", "cloud-b"]
        async with renewing(kc, nodes, every=0.5) as live:
            online = set(nodes)
            async with fake_kubelets(kc, ns, online):
                await kc.create(DEPLOYMENTS, deployment("edge-app", 4, {"zone": "edge"}), namespace=ns)
                await kc.create(DEPLOYMENTS, deployment("cloud-app", 2, {"zone": "cloud"}, 1), namespace=ns)

                async def all_ready() -> bool:
                    for app, n in (("edge-app", 4), ("cloud-app", 2)):
                        ps = await pods_of(kc, ns, app)
                        if len(ps) != n or not all(
                            condition_true(p) and p["spec"].get("nodeName") for p in ps
                        ):
                            return False
                    return True

                await wait_for(all_ready, deadline_s=30, what="both deployments running")
                edge_before = {
                    p["metadata"]["uid"]: p["spec"]["nodeName"] for p in await pods_of(kc, ns, "edge-app")
                }
                assert set(edge_before.values()) == {"edge-a", "edge-b"}

                # edge-a loses its link: no lease renewals, no agent.
                live.discard("edge-a")
                online.discard("edge-a")

                async def edge_a_unknown() -> bool:
                    ready, taints = node_state(await kc.get(NODES, "edge-a"))
                    return ready == "Unknown" and "node.kubernetes.io/unreachable:NoExecute" in taints

                await wait_for(edge_a_unknown, deadline_s=20, what="edge-a Unknown and tainted")

                async def marked_not_ready() -> bool:
                    ps = await pods_of(kc, ns, "edge-app")
                    on_a = [p for p in ps if p["spec"]["nodeName"] == "edge-a"]
                    dep = await kc.get(DEPLOYMENTS, "edge-app", ns)
                    return (
                        bool(on_a)
                        and not any(condition_true(p) for p in on_a)
                        and dep["status"].get("readyReplicas") == 4 - len(on_a)
                    )

                # Once the controllers have seen the node go (pods marked not ready, deployment status
                # updated), nothing was evicted or recreated.
                await wait_for(marked_not_ready, deadline_s=20, what="edge-a pods marked not ready")
                now = {p["metadata"]["uid"]: p["spec"]["nodeName"] for p in await pods_of(kc, ns, "edge-app")}
                assert now == edge_before
                assert not any(
                    p["metadata"].get("deletionTimestamp") for p in await pods_of(kc, ns, "edge-app")
                )

                # The link comes back: the node is Ready again and the very same pods run.
                live.add("edge-a")
                online.add("edge-a")

                async def edge_a_back() -> bool:
                    ready, taints = node_state(await kc.get(NODES, "edge-a"))
                    ps = await pods_of(kc, ns, "edge-app")
                    return (
                        ready == "True"
                        and not any("unreachable" in t for t in taints)
                        and all(condition_true(p) for p in ps)
                    )

                await wait_for(edge_a_back, deadline_s=20, what="edge-a back with its pods ready")
                after = {
                    p["metadata"]["uid"]: p["spec"]["nodeName"] for p in await pods_of(kc, ns, "edge-app")
                }
                assert after == edge_before

                # A cloud node that goes away has its pods evicted after their 1 s toleration and
                # replaced on the remaining cloud node.
                cloud_before = {
                    p["metadata"]["uid"]: p["spec"]["nodeName"] for p in await pods_of(kc, ns, "cloud-app")
                }
                victims = {u for u, n in cloud_before.items() if n == "cloud-a"}
                live.discard("cloud-a")
                online.discard("cloud-a")

                async def replaced() -> bool:
                    ps = await pods_of(kc, ns, "cloud-app")
                    running = [p for p in ps if not p["metadata"].get("deletionTimestamp")]
                    evicted = all(
                        p["metadata"].get("deletionTimestamp") for p in ps if p["metadata"]["uid"] in victims
                    )
                    return (
                        evicted
                        and len(running) == 2
                        and all(p["spec"].get("nodeName") == "cloud-b" and condition_true(p) for p in running)
                    )

                if victims:
                    await wait_for(
                        replaced, deadline_s=30, what="cloud-a pods evicted and replaced on cloud-b"
                    )
                else:  # the scheduler spread put both on cloud-b; then nothing may move
                    assert all(n == "cloud-b" for n in cloud_before.values())
