"""DaemonSet controller against the real API server: one pod per matching node as nodes come, go,
change labels and taints; rolling updates; failed pods replaced; never two pods on a node.

No edge agent runs: a FakeKubelet in the test marks bound pods Running/Ready and confirms the
termination of pods being deleted, as a kubelet would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubeedge.kube import (
    CONTROLLERREVISIONS,
    DAEMONSETS,
    NODES,
    PODS,
    KubeClient,
    ListWatch,
    NotFound,
)
from tests.cluster import condition_true, now_micro, register_node, wait_for

Obj = dict[str, Any]
T = TypeVar("T")
HASH = "controller-revision-hash"


async def until(
    check: Callable[[], Awaitable[T | None]], *, what: str, deadline_s: float = 30.0, interval: float = 0.1
) -> T:
    """wait_for, typed for checks that return the awaited thing or None."""
    result = await wait_for(check, deadline_s=deadline_s, interval=interval, what=what)
    assert result is not None
    return result


# Only these controllers run (see tests/conftest.py: `server`, `kc` and `ns` come from there).
APISERVER_CONTROLLERS = "daemonset,statefulset,job"


def ready_status(ready: bool = True) -> Obj:
    now = now_micro()[:19] + "Z"
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}],
        "containerStatuses": [
            {
                "name": "c",
                "ready": ready,
                "restartCount": 0,
                "image": "x",
                "imageID": "",
                "state": {"running": {}},
            }
        ],
    }


class FakeKubelet:
    """Plays the kubelet of every node for one namespace. Pods start Running and Ready unless their
    name is in `hold` (or `bound_only` and they have no node); pods being deleted are removed. It
    also records, for every node, the most live pods ever seen there at once."""

    def __init__(self, kc: KubeClient, ns: str, *, bound_only: bool = True) -> None:
        self.kc, self.ns, self.bound_only = kc, ns, bound_only
        self.hold: set[str] = set()
        self.live: dict[str, Obj] = {}
        self.max_per_node: dict[str, int] = {}
        self.deleting_order: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeKubelet:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def release(self, name: str) -> None:
        self.hold.discard(name)
        with contextlib.suppress(NotFound):
            await self.kc.patch(PODS, name, {"status": ready_status()}, self.ns, subresource="status")

    def _track(self, etype: str, pod: Obj) -> None:
        md = pod["metadata"]
        if etype == "DELETED" or md.get("deletionTimestamp"):
            if md["name"] in self.live:
                self.deleting_order.append(md["name"])
            self.live.pop(md["name"], None)
            return
        self.live[md["name"]] = pod
        node = pod["spec"].get("nodeName") or ""
        if node:
            n = sum(1 for p in self.live.values() if p["spec"].get("nodeName") == node)
            self.max_per_node[node] = max(self.max_per_node.get(node, 0), n)

    async def _run(self) -> None:
        async with ListWatch(self.kc, PODS, namespace=self.ns) as lw:
            async for ev in lw:
                if ev.type not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                pod = ev.object
                self._track(ev.type, pod)
                if ev.type == "DELETED":
                    continue
                md, spec = pod["metadata"], pod.get("spec") or {}
                with contextlib.suppress(NotFound):
                    if md.get("deletionTimestamp"):
                        await self.kc.delete(PODS, md["name"], self.ns, grace_period_seconds=0)
                    elif (
                        (pod.get("status") or {}).get("phase", "Pending") == "Pending"
                        and md["name"] not in self.hold
                        and (spec.get("nodeName") or not self.bound_only)
                    ):
                        await self.kc.patch(
                            PODS, md["name"], {"status": ready_status()}, self.ns, subresource="status"
                        )


def daemonset(name: str, selector_label: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {selector_label: "yes"},
                    "containers": [{"name": "c", "image": "agent:1"}],
                },
            },
            **spec,
        },
    }


async def pods_by_node(kc: KubeClient, ns: str) -> dict[str, list[Obj]]:
    items, _ = await kc.list(PODS, ns)
    out: dict[str, list[Obj]] = {}
    for p in items:
        if not p["metadata"].get("deletionTimestamp"):
            out.setdefault(p["spec"].get("nodeName", ""), []).append(p)
    return out


async def placed_on(kc: KubeClient, ns: str, expected: set[str]) -> dict[str, list[Obj]] | None:
    by_node = await pods_by_node(kc, ns)
    if set(by_node) == expected and all(len(v) == 1 for v in by_node.values()):
        return by_node
    return None


async def test_one_pod_per_matching_node_follows_nodes(kc: KubeClient, ns: str) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    lbl = f"example.com/{tag}"
    a, b, c, d, e = (f"{tag}-{x}" for x in "abcde")
    await register_node(kc, a, labels={lbl: "yes"})
    await register_node(kc, b, labels={lbl: "yes"})
    await register_node(kc, c, labels={lbl: "no"})
    await register_node(
        kc, d, labels={lbl: "yes"}, taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    )
    # Node problems are tolerated automatically: an unreachable-tainted node still runs its daemons.
    # (The node itself reports Ready, so a node-lifecycle controller, if running, leaves its pods alone.)
    await register_node(
        kc, e, labels={lbl: "yes"}, taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
    )
    async with FakeKubelet(kc, ns) as kubelet:
        await kc.create(DAEMONSETS, daemonset("agent", lbl), ns)
        by_node = await until(lambda: placed_on(kc, ns, {a, b, e}), what="pods on a, b, e")
        pod = by_node[a][0]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
        assert pod["metadata"]["labels"][HASH]
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [a]
        tol_keys = {t.get("key") for t in pod["spec"]["tolerations"]}
        assert {"node.kubernetes.io/not-ready", "node.kubernetes.io/unschedulable"} <= tol_keys

        async def status_ok() -> Obj | None:
            st = (await kc.get(DAEMONSETS, "agent", ns)).get("status") or {}
            want = {
                "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3,
                "numberReady": 3,
                "updatedNumberScheduled": 3,
            }
            return st if all(st.get(k) == v for k, v in want.items()) else None

        st = await until(status_ok, what="daemonset status")
        assert st["numberMisscheduled"] == 0 and st["observedGeneration"] == 1

        # A new matching node gets a pod; a relabelled one gains or loses it.
        await register_node(kc, f"{tag}-f", labels={lbl: "yes"})
        await wait_for(lambda: placed_on(kc, ns, {a, b, e, f"{tag}-f"}), what="pod on new node")
        await kc.patch(NODES, c, {"metadata": {"labels": {lbl: "yes"}}})
        await kc.patch(NODES, a, {"metadata": {"labels": {lbl: "no"}}})
        await wait_for(lambda: placed_on(kc, ns, {b, c, e, f"{tag}-f"}), what="pods follow relabelling")
        # Untolerated NoExecute taint evicts; tolerating it (the taint removed) brings it back.
        await kc.patch(
            NODES, b, {"spec": {"taints": [{"key": "evict", "value": "y", "effect": "NoExecute"}]}}
        )
        await wait_for(lambda: placed_on(kc, ns, {c, e, f"{tag}-f"}), what="pod evicted by NoExecute taint")
        await kc.patch(NODES, b, {"spec": {"taints": []}})
        await wait_for(lambda: placed_on(kc, ns, {b, c, e, f"{tag}-f"}), what="pod back after untaint")
        # A deleted node's pod goes with it.
        await kc.delete(NODES, f"{tag}-f")
        await wait_for(lambda: placed_on(kc, ns, {b, c, e}), what="pod of deleted node removed")
        assert max(kubelet.max_per_node.values()) == 1, kubelet.max_per_node


async def test_failed_pod_is_replaced_on_same_node(kc: KubeClient, ns: str) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    lbl = f"example.com/{tag}"
    node = f"{tag}-a"
    await register_node(kc, node, labels={lbl: "yes"})
    async with FakeKubelet(kc, ns) as kubelet:
        await kc.create(DAEMONSETS, daemonset("agent", lbl), ns)
        first = (await until(lambda: placed_on(kc, ns, {node}), what="daemon pod"))[node][0]

        async def running() -> bool:
            pod = await kc.get(PODS, first["metadata"]["name"], ns)
            return (pod.get("status") or {}).get("phase") == "Running"

        # Fail it only after the fake kubelet has started it, or its late "Running" would undo ours.
        await until(running, what="daemon pod running")
        await kc.patch(
            PODS, first["metadata"]["name"], {"status": {"phase": "Failed"}}, ns, subresource="status"
        )

        async def replaced() -> Obj | None:
            by = await placed_on(kc, ns, {node})
            if by and by[node][0]["metadata"]["uid"] != first["metadata"]["uid"]:
                return by[node][0]
            return None

        second = await until(replaced, what="replacement pod")
        assert second["spec"]["nodeName"] == node
        assert max(kubelet.max_per_node.values()) == 1


async def _hashes(kc: KubeClient, ns: str) -> dict[str, str]:
    return {n: ps[0]["metadata"]["labels"][HASH] for n, ps in (await pods_by_node(kc, ns)).items()}


async def test_rolling_update_replaces_pods_within_budget(kc: KubeClient, ns: str) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    lbl = f"example.com/{tag}"
    nodes = {f"{tag}-{i}" for i in range(4)}
    for n in nodes:
        await register_node(kc, n, labels={lbl: "yes"})
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    async with FakeKubelet(kc, ns) as kubelet:
        await kc.create(DAEMONSETS, daemonset("agent", lbl, updateStrategy=strategy), ns)
        await wait_for(lambda: placed_on(kc, ns, nodes), what="initial pods")

        async def all_available() -> bool:
            st = (await kc.get(DAEMONSETS, "agent", ns)).get("status") or {}
            return st.get("numberAvailable") == 4

        await wait_for(all_available, what="initial pods available")
        old = set((await _hashes(kc, ns)).values())
        assert len(old) == 1

        # Watch availability while rolling: never more than maxUnavailable nodes without a ready pod.
        worst = 0

        def unavailable() -> int:
            ready_nodes = {p["spec"]["nodeName"] for p in kubelet.live.values() if condition_true(p)}
            return len(nodes - ready_nodes)

        async def rolled() -> bool:
            nonlocal worst
            worst = max(worst, unavailable())
            hashes = await _hashes(kc, ns)
            return set(hashes) == nodes and len(set(hashes.values())) == 1 and set(hashes.values()) != old

        patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}}
        await kc.patch(DAEMONSETS, "agent", patch, ns, patch_type="strategic")
        await wait_for(rolled, interval=0.02, what="all pods on the new revision")
        assert worst <= 1, worst
        assert max(kubelet.max_per_node.values()) == 1

        async def updated() -> Obj | None:
            st = (await kc.get(DAEMONSETS, "agent", ns)).get("status") or {}
            return st if st.get("updatedNumberScheduled") == 4 and st.get("numberAvailable") == 4 else None

        st = await until(updated, what="status after rollout")
        assert st["observedGeneration"] == 2
        revs, _ = await kc.list(CONTROLLERREVISIONS, ns)
        assert sorted(r["revision"] for r in revs) == [1, 2]
        assert {r["metadata"]["labels"][HASH] for r in revs} == old | set((await _hashes(kc, ns)).values())


async def test_surge_update_and_on_delete(kc: KubeClient, ns: str) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    lbl = f"example.com/{tag}"
    nodes = {f"{tag}-{i}" for i in range(2)}
    for n in nodes:
        await register_node(kc, n, labels={lbl: "yes"})
    async with FakeKubelet(kc, ns):
        surge = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        await kc.create(DAEMONSETS, daemonset("surge", lbl, updateStrategy=surge), ns)
        await wait_for(lambda: placed_on(kc, ns, nodes), what="initial surge pods")
        old = set((await _hashes(kc, ns)).values())
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}}
        await kc.patch(DAEMONSETS, "surge", patch, ns, patch_type="strategic")

        async def rolled() -> bool:
            by = await placed_on(kc, ns, nodes)
            return by is not None and not ({p[0]["metadata"]["labels"][HASH] for p in by.values()} & old)

        await wait_for(rolled, what="surge rollout")

        await kc.patch(
            DAEMONSETS, "surge", {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}, ns
        )
        before = await _hashes(kc, ns)
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:3"}]}}}}
        await kc.patch(DAEMONSETS, "surge", patch, ns, patch_type="strategic")

        async def observed() -> bool:
            ds = await kc.get(DAEMONSETS, "surge", ns)
            return (ds.get("status") or {}).get("observedGeneration") == ds["metadata"]["generation"]

        await wait_for(observed, what="OnDelete change observed")
        assert await _hashes(kc, ns) == before  # OnDelete: nothing replaced by itself
        victim = sorted(nodes)[0]
        pod = (await pods_by_node(kc, ns))[victim][0]
        await kc.delete(PODS, pod["metadata"]["name"], ns)

        async def recreated() -> bool:
            h = await _hashes(kc, ns)
            return (
                set(h) == nodes
                and h[victim] != before[victim]
                and h[sorted(nodes)[1]] == before[sorted(nodes)[1]]
            )

        await wait_for(recreated, what="deleted pod recreated on the new revision")
