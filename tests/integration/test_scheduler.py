"""The scheduler against a real API server running only the scheduler controller."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kubeedge.kube import EVENTS, NODES, PODS, REPLICASETS, Conflict, KubeClient
from tests.cluster import node_manifest, register_node, wait_for

Obj = dict[str, Any]


# Only these controllers run (see tests/conftest.py: `server`, `kc` and `ns` come from there).
APISERVER_CONTROLLERS = "scheduler"


def pod_body(
    name: str,
    *,
    selector: dict[str, str] | None = None,
    cpu: str = "100m",
    tolerations: list[Obj] | None = None,
    owner: Obj | None = None,
) -> Obj:
    md: Obj = {"name": name, "labels": {"app": name.rsplit("-", 1)[0]}}
    if owner is not None:
        md["ownerReferences"] = [owner]
    spec: Obj = {
        "containers": [
            {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
        ],
        "nodeSelector": selector or {},
    }
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


async def bound_nodes(kc: KubeClient, ns: str, names: list[str]) -> dict[str, str]:
    """Pod name -> node once all of `names` are bound, else empty."""
    out: dict[str, str] = {}
    for n in names:
        p = await kc.get(PODS, n, ns)
        node = p["spec"].get("nodeName")
        if not node:
            return {}
        out[n] = node
    return out


async def events_for(kc: KubeClient, ns: str, pod: str, reason: str) -> list[Obj]:
    items, _ = await kc.list(EVENTS, ns)
    return [e for e in items if e["involvedObject"].get("name") == pod and e.get("reason") == reason]


async def test_binds_respecting_selector_taints_and_resources(kc: KubeClient, ns: str) -> None:
    await register_node(kc, "fit-big", labels={"pool": "fit", "disk": "ssd"}, cpu="2")
    await register_node(kc, "fit-small", labels={"pool": "fit"}, cpu="1")
    await register_node(
        kc,
        "fit-tainted",
        labels={"pool": "fit"},
        cpu="8",
        taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
    )
    # Only fit-big has 1.5 CPU free (fit-tainted has more but is not tolerated).
    await kc.create(PODS, pod_body("big-0", selector={"pool": "fit"}, cpu="1500m"), ns)
    await kc.create(PODS, pod_body("ssd-0", selector={"disk": "ssd"}), ns)
    tol = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    await kc.create(
        PODS, pod_body("gpu-0", selector={"kubernetes.io/hostname": "fit-tainted"}, tolerations=tol), ns
    )
    plain = [f"plain-{i}" for i in range(6)]
    for n in plain:
        await kc.create(PODS, pod_body(n, selector={"pool": "fit"}), ns)
    names = ["big-0", "ssd-0", "gpu-0", *plain]
    where = await wait_for(lambda: bound_nodes(kc, ns, names), deadline_s=20, what="all pods bound")
    assert where["big-0"] == "fit-big"
    assert where["ssd-0"] == "fit-big"
    assert where["gpu-0"] == "fit-tainted"
    assert all(where[n] in ("fit-big", "fit-small") for n in plain)
    # Bound through pods/binding: the server marked them scheduled.
    pod = await kc.get(PODS, "big-0", ns)
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "True"
    ev = await wait_for(
        lambda: events_for(kc, ns, "big-0", "Scheduled"), deadline_s=10, what="Scheduled event"
    )
    assert ev[0]["type"] == "Normal"
    assert ev[0]["message"] == f"Successfully assigned {ns}/big-0 to fit-big"
    assert ev[0]["source"]["component"] == "default-scheduler"


async def test_unschedulable_pod_reports_and_binds_when_a_node_fits(kc: KubeClient, ns: str) -> None:
    await register_node(kc, "late-small", labels={"pool": "late"}, cpu="1")
    await kc.create(PODS, pod_body("wants-2-0", selector={"pool": "late"}, cpu="2"), ns)

    async def unschedulable() -> Obj:
        p = await kc.get(PODS, "wants-2-0", ns)
        for c in (p.get("status") or {}).get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return dict(c)
        return {}

    cond = await wait_for(unschedulable, deadline_s=15, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    msg = cond["message"]
    assert msg.startswith("0/") and " nodes are available: " in msg, msg
    assert "1 Insufficient cpu" in msg
    assert "node(s) didn't match Pod's node affinity/selector" in msg
    events = await wait_for(
        lambda: events_for(kc, ns, "wants-2-0", "FailedScheduling"), deadline_s=10, what="FailedScheduling"
    )
    ev = events[0]
    assert ev["type"] == "Warning"
    assert ev["message"] == msg
    assert ev["source"]["component"] == "default-scheduler"
    assert ev["involvedObject"]["kind"] == "Pod" and ev["involvedObject"]["namespace"] == ns
    assert ev["count"] >= 1 and ev["firstTimestamp"] and ev["lastTimestamp"]
    assert (await kc.get(PODS, "wants-2-0", ns))["spec"].get("nodeName") is None

    await register_node(kc, "late-big", labels={"pool": "late"}, cpu="4")
    where = await wait_for(
        lambda: bound_nodes(kc, ns, ["wants-2-0"]), deadline_s=20, what="bound after node added"
    )
    assert where["wants-2-0"] == "late-big"


async def test_not_ready_and_cordoned_nodes_are_skipped(kc: KubeClient, ns: str) -> None:
    cordoned = node_manifest("skip-cordoned", labels={"pool": "skip"})
    cordoned["spec"]["unschedulable"] = True
    await kc.create(NODES, cordoned)
    await register_node(kc, "skip-notready", labels={"pool": "skip"}, ready=False)
    await register_node(kc, "skip-ok", labels={"pool": "skip"}, cpu="1")
    names = [f"skip-{i}" for i in range(4)]
    for n in names:
        await kc.create(PODS, pod_body(n, selector={"pool": "skip"}), ns)
    where = await wait_for(lambda: bound_nodes(kc, ns, names), deadline_s=20, what="pods bound")
    assert set(where.values()) == {"skip-ok"}
    # Too big for skip-ok: the message names every reason.
    await kc.create(PODS, pod_body("huge-0", selector={"pool": "skip"}, cpu="3"), ns)

    async def message() -> str:
        p = await kc.get(PODS, "huge-0", ns)
        for c in (p.get("status") or {}).get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return str(c["message"])
        return ""

    msg = await wait_for(message, deadline_s=15, what="unschedulable message")
    assert "1 Insufficient cpu" in msg
    assert "1 node(s) were unschedulable" in msg
    assert "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }" in msg


async def test_replicaset_pods_spread_two_two_one(kc: KubeClient, ns: str) -> None:
    for i in range(3):
        await register_node(kc, f"spread-{i}", labels={"pool": "spread"}, cpu="8", memory="16Gi")
    rs = await kc.create(
        REPLICASETS,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        },
        ns,
    )
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web",
        "uid": rs["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    names = [f"web-{i}" for i in range(5)]
    for n in names:
        await kc.create(PODS, pod_body(n, selector={"pool": "spread"}, owner=owner), ns)
    where = await wait_for(lambda: bound_nodes(kc, ns, names), deadline_s=20, what="replicas bound")
    assert sorted(Counter(where.values()).values()) == [1, 2, 2]


async def test_deleting_a_pod_frees_room_for_a_pending_one(kc: KubeClient, ns: str) -> None:
    await register_node(kc, "room-0", labels={"pool": "room"}, cpu="1")
    await kc.create(PODS, pod_body("first-0", selector={"pool": "room"}, cpu="800m"), ns)
    await wait_for(lambda: bound_nodes(kc, ns, ["first-0"]), deadline_s=15, what="first bound")
    await kc.create(PODS, pod_body("second-0", selector={"pool": "room"}, cpu="800m"), ns)
    await wait_for(
        lambda: events_for(kc, ns, "second-0", "FailedScheduling"), deadline_s=15, what="second unschedulable"
    )
    await kc.delete(PODS, "first-0", ns, grace_period_seconds=0)
    where = await wait_for(lambda: bound_nodes(kc, ns, ["second-0"]), deadline_s=20, what="second bound")
    assert where["second-0"] == "room-0"


async def test_other_schedulers_pods_are_left_alone(kc: KubeClient, ns: str) -> None:
    await register_node(kc, "other-0", labels={"pool": "other"})
    body = pod_body("mine-0", selector={"pool": "other"})
    theirs = pod_body("theirs-0", selector={"pool": "other"})
    theirs["spec"]["schedulerName"] = "someone-else"
    await kc.create(PODS, theirs, ns)
    await kc.create(PODS, body, ns)
    await wait_for(lambda: bound_nodes(kc, ns, ["mine-0"]), deadline_s=15, what="mine bound")
    assert (await kc.get(PODS, "theirs-0", ns))["spec"].get("nodeName") is None


async def test_binding_for_a_recreated_pod_is_refused(kc: KubeClient, ns: str) -> None:
    """pods/binding honours metadata.uid, so a late bind never lands on a same-named new pod."""
    body = pod_body("stale-0")
    body["spec"]["schedulerName"] = "manual"  # keep our scheduler out of it
    await kc.create(PODS, body, ns)
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "stale-0", "namespace": ns, "uid": "not-the-pods-uid"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "anywhere"},
    }
    with pytest.raises(Conflict):
        await kc.create_subresource(PODS, "stale-0", "binding", binding, ns)
    assert (await kc.get(PODS, "stale-0", ns))["spec"].get("nodeName") is None
