"""Pure decisions of the garbage collector, the namespace controller and the node lifecycle controller."""

from __future__ import annotations

from typing import Any

import pytest

from kubeedge.controllers.framework import InformerFactory
from kubeedge.controllers.garbagecollector import (
    GarbageCollector,
    OwnerState,
    _resources_of,
    decide,
    owner_state,
)
from kubeedge.controllers.namespace import Sweep, conditions_for, merge_conditions, terminating
from kubeedge.controllers.nodelifecycle import (
    NOT_READY,
    UNKNOWN_REASON,
    UNREACHABLE,
    NodeHealth,
    desired_taints,
    eviction_delay,
    eviction_enabled,
    grace_period,
    heartbeat,
    parse_time,
    restored_conditions,
    tolerates,
    unknown_conditions,
)
from kubeedge.kube import CONFIGMAPS, KubeClient, KubeConfig

Obj = dict[str, Any]
S, W, D, U = OwnerState.SOLID, OwnerState.WAITING, OwnerState.DANGLING, OwnerState.UNKNOWN

# ---- garbage collector ---------------------------------------------------------------------------


def test_owner_state_from_live_get() -> None:
    assert owner_state(None, "u1") is D
    assert owner_state({"metadata": {"uid": "other"}}, "u1") is D  # same name, another object
    assert owner_state({"metadata": {"uid": "u1"}}, "u1") is S
    deleting = {"deletionTimestamp": "2024-01-01T00:00:00Z"}
    assert (
        owner_state({"metadata": {"uid": "u1", **deleting, "finalizers": ["foregroundDeletion"]}}, "u1") is W
    )
    # Being deleted in the background or orphaning: still an owner until it is gone.
    assert owner_state({"metadata": {"uid": "u1", **deleting, "finalizers": ["orphan"]}}, "u1") is S


@pytest.mark.parametrize(
    ("states", "has_deps", "fins", "kind", "policy", "uids"),
    [
        ([("a", S)], False, [], "none", "", ()),
        ([("a", S), ("b", D)], False, [], "drop_refs", "", ("b",)),  # another live owner keeps it
        ([("a", S), ("b", W)], False, [], "drop_refs", "", ("b",)),  # ... and unblocks the waiting one
        ([("a", D)], False, [], "delete", "Background", ()),
        ([("a", D), ("b", D)], False, [], "delete", "Background", ()),
        ([("a", D)], False, ["orphan"], "delete", "Orphan", ()),
        ([("a", D)], False, ["foregroundDeletion"], "delete", "Foreground", ()),
        ([("a", W)], False, [], "delete", "Background", ()),
        ([("a", W)], True, [], "delete", "Foreground", ()),  # our own dependents go first
        ([("a", D), ("b", U)], False, [], "retry", "", ()),  # never delete on an unknown kind
        ([("a", S), ("b", U)], False, [], "none", "", ()),
    ],
)
def test_decide(
    states: list[tuple[str, OwnerState]],
    has_deps: bool,
    fins: list[str],
    kind: str,
    policy: str,
    uids: tuple[str, ...],
) -> None:
    a = decide(states, has_deps, fins)
    assert (a.kind, a.policy, a.uids) == (kind, policy, uids)


def test_discovery_skips_subresources() -> None:
    doc = {
        "resources": [
            {"name": "pods", "namespaced": True, "kind": "Pod", "verbs": ["list", "watch", "delete"]},
            {"name": "pods/status", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        ]
    }
    (only,) = _resources_of("v1", doc)
    assert (only.res.group, only.res.version, only.res.plural, only.res.kind) == ("", "v1", "pods", "Pod")
    assert only.can("list", "watch", "delete") and not only.can("deletecollection")
    (dev,) = _resources_of("devices.kubeedge.io/v1beta1", {"resources": [{**doc["resources"][0]}]})
    assert dev.res.group == "devices.kubeedge.io" and dev.res.version == "v1beta1"


def cm(name: str, uid: str, owners: tuple[str, ...] = (), **md: Any) -> Obj:
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": f"n-{o}", "uid": o} for o in owners]
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": refs, **md}}


def drain(gc: GarbageCollector) -> set[str]:
    out = set(gc.queue._queued)
    gc.queue._queued.clear()
    gc.queue._ready.clear()
    return out


def test_graph_index_and_what_gets_queued() -> None:
    kc = KubeClient(KubeConfig(server="https://127.0.0.1:1"))
    gc = GarbageCollector(kc, InformerFactory(kc))
    on = gc._handler(CONFIGMAPS)
    on(None, cm("n-o", "o"))
    assert drain(gc) == set()  # no owners: nothing to check
    on(None, cm("d1", "d1", ("o",)))
    on(None, cm("d2", "d2", ("o", "p")))
    assert gc.dependents["o"] == {"d1", "d2"} and gc.dependents["p"] == {"d2"}
    assert drain(gc) == {"d1", "d2"}  # new dependents are checked (their owners may be absent)
    on(cm("d1", "d1", ("o",)), cm("d1", "d1", ("o",), labels={"x": "y"}))
    assert drain(gc) == set()  # unrelated changes cost nothing
    # The owner goes: its dependents are reconsidered.
    on(cm("n-o", "o"), None)
    assert drain(gc) == {"d1", "d2"}
    assert ("o", "ns") in gc.absent
    # A dependent dropping its reference leaves the index.
    on(cm("d2", "d2", ("o", "p")), cm("d2", "d2", ("p",)))
    assert gc.dependents["o"] == {"d1"}


def test_graph_queues_foreground_owner_and_its_dependents() -> None:
    kc = KubeClient(KubeConfig(server="https://127.0.0.1:1"))
    gc = GarbageCollector(kc, InformerFactory(kc))
    on = gc._handler(CONFIGMAPS)
    on(None, cm("n-o", "o"))
    on(None, cm("d1", "d1", ("o",)))
    drain(gc)
    deleting = cm("n-o", "o", deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["foregroundDeletion"])
    on(cm("n-o", "o"), deleting)
    assert drain(gc) == {"o", "d1"}
    # The dependent vanishing wakes the waiting owner.
    on(cm("d1", "d1", ("o",)), None)
    assert drain(gc) == {"o"}


# ---- namespace controller ------------------------------------------------------------------------


def test_namespace_terminating() -> None:
    assert terminating({"metadata": {"deletionTimestamp": "x"}, "spec": {"finalizers": ["kubernetes"]}})
    assert not terminating({"metadata": {"deletionTimestamp": "x"}, "spec": {"finalizers": []}})
    assert not terminating({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}})
    assert not terminating(None)


def test_namespace_conditions() -> None:
    sweep = Sweep(remaining={"pods": 2}, finalizers={"example.com/f": 1})
    conds = {c["type"]: c for c in conditions_for(sweep, "t0")}
    assert conds["NamespaceContentRemaining"]["status"] == "True"
    assert (
        conds["NamespaceContentRemaining"]["message"]
        == "Some resources are remaining: pods has 2 resource instances"
    )
    assert conds["NamespaceFinalizersRemaining"]["status"] == "True"
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    merged = merge_conditions([], conditions_for(sweep, "t0"))
    assert merged is not None
    # Same content later: nothing to write; transition times are kept when the status holds.
    assert merge_conditions(merged, conditions_for(sweep, "t1")) is None
    later = merge_conditions(merged, conditions_for(Sweep(remaining={"pods": 1}), "t2"))
    assert later is not None
    by_type = {c["type"]: c for c in later}
    assert by_type["NamespaceContentRemaining"]["lastTransitionTime"] == "t0"
    assert by_type["NamespaceFinalizersRemaining"]["lastTransitionTime"] == "t2"


# ---- node lifecycle ------------------------------------------------------------------------------


def node(
    labels: Obj | None = None, annotations: Obj | None = None, ready: str = "True", beat: str = ""
) -> Obj:
    cond = {"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": beat or None}
    return {
        "metadata": {"name": "n", "labels": labels or {}, "annotations": annotations or {}},
        "status": {"conditions": [cond, {"type": "MemoryPressure", "status": "False"}]},
    }


def test_heartbeat_is_the_later_of_lease_and_ready() -> None:
    n = node(beat="2024-01-01T00:00:10Z")
    lease = {"spec": {"renewTime": "2024-01-01T00:00:05.500000Z"}}
    assert heartbeat(n, lease) == parse_time("2024-01-01T00:00:10Z")
    lease = {"spec": {"renewTime": "2024-01-01T00:00:20.250000Z"}}
    assert heartbeat(n, lease) == parse_time("2024-01-01T00:00:20.25Z")
    assert heartbeat(node(), None) is None


def test_lease_staleness_uses_our_clock() -> None:
    h = NodeHealth(beat=100.0, observed_at=1000.0)
    assert not h.stale(1030.0, 40.0)
    assert h.stale(1041.0, 40.0)
    assert h.time_left(1030.0, 40.0) == 10.0
    assert not h.observe(100.0, 1050.0)  # the same heartbeat again is no sign of life
    assert h.stale(1050.0, 40.0)
    assert not h.observe(90.0, 1050.0)  # nor is an older one
    assert h.observe(101.0, 1050.0)
    assert not h.stale(1080.0, 40.0)


def test_grace_period_annotation() -> None:
    assert grace_period(node(), 40.0) == 40.0
    assert grace_period(node(annotations={"node.kubeedge.io/grace-period-seconds": "2"}), 40.0) == 2.0
    assert grace_period(node(annotations={"node.kubeedge.io/grace-period-seconds": "x"}), 40.0) == 40.0
    assert grace_period(node(annotations={"node.kubeedge.io/grace-period-seconds": "0"}), 40.0) == 0.5


def test_eviction_enabled_edge_vs_not() -> None:
    edge = {"node-role.kubernetes.io/edge": ""}
    assert not eviction_enabled(node(labels=edge), evict_edge_pods=False)
    assert eviction_enabled(node(labels=edge), evict_edge_pods=True)
    assert eviction_enabled(node(), evict_edge_pods=False)
    opt_in = {"node.kubeedge.io/eviction": "true"}
    opt_out = {"node.kubeedge.io/eviction": "false"}
    assert eviction_enabled(node(labels=edge, annotations=opt_in), evict_edge_pods=False)
    assert not eviction_enabled(node(annotations=opt_out), evict_edge_pods=False)


TAINT = {"key": UNREACHABLE, "effect": "NoExecute"}


def pod(*tolerations: Obj) -> Obj:
    return {"spec": {"tolerations": list(tolerations)}}


def test_tolerates() -> None:
    assert tolerates({"key": UNREACHABLE, "operator": "Exists"}, TAINT)
    assert tolerates({"operator": "Exists"}, TAINT)  # empty key + Exists: everything
    assert not tolerates({"operator": "Equal"}, TAINT)
    assert not tolerates({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}, TAINT)
    assert not tolerates({"key": NOT_READY, "operator": "Exists"}, TAINT)
    valued = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert tolerates({"key": "k", "value": "v"}, valued)
    assert not tolerates({"key": "k", "value": "w"}, valued)


def test_eviction_delay_per_toleration() -> None:
    added, now = 1000.0, 1001.0
    taints = [(TAINT, added)]
    assert eviction_delay(pod(), taints, now) == 0.0  # not tolerated: now
    assert eviction_delay(pod({"key": UNREACHABLE, "operator": "Exists"}), taints, now) is None  # forever
    timed = {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300}
    assert eviction_delay(pod(timed), taints, now) == 299.0  # counted from when the taint was added
    assert eviction_delay(pod(timed), taints, added + 400) == 0.0
    zero = {**timed, "tolerationSeconds": 0}
    assert eviction_delay(pod(zero), taints, now) == 0.0
    # Upstream's rule: the shortest bounded toleration in use wins over an unbounded one.
    assert eviction_delay(pod({"operator": "Exists"}, timed), taints, now) == 299.0
    # A second NoExecute taint the pod does not tolerate evicts at once.
    other = {"key": "dedicated", "effect": "NoExecute"}
    assert eviction_delay(pod(timed), [*taints, (other, added)], now) == 0.0
    # NoSchedule taints never evict.
    assert eviction_delay(pod(), [({"key": UNREACHABLE, "effect": "NoSchedule"}, added)], now) is None


def test_desired_taints() -> None:
    custom = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    t = desired_taints([custom], "Unknown", 0.0)
    assert t is not None
    assert [(x["key"], x["effect"]) for x in t] == [
        ("dedicated", "NoSchedule"),
        (UNREACHABLE, "NoExecute"),
        (UNREACHABLE, "NoSchedule"),
    ]
    assert next(x for x in t if x["effect"] == "NoExecute")["timeAdded"] == "1970-01-01T00:00:00Z"
    assert desired_taints(t, "Unknown", 5.0) is None  # kept as is (timeAdded too)
    back = desired_taints(t, "True", 9.0)
    assert back == [custom]
    not_ready = desired_taints(t, "False", 9.0)
    assert not_ready is not None
    assert {(x["key"], x["effect"]) for x in not_ready} == {
        ("dedicated", "NoSchedule"),
        (NOT_READY, "NoExecute"),
        (NOT_READY, "NoSchedule"),
    }


def test_unknown_and_restored_conditions() -> None:
    n = node(beat="2024-01-01T00:00:00Z")
    conds = unknown_conditions(n, 0.0)
    assert conds is not None
    assert all(c["status"] == "Unknown" and c["reason"] == UNKNOWN_REASON for c in conds)
    ready = next(c for c in conds if c["type"] == "Ready")
    assert ready["message"] == "Kubelet stopped posting node status."
    assert ready["lastHeartbeatTime"] == "2024-01-01T00:00:00Z"  # not a heartbeat of ours
    n["status"]["conditions"] = conds
    assert unknown_conditions(n, 1.0) is None
    restored = restored_conditions(n, 2.0)
    assert restored is not None
    assert {c["type"]: c["status"] for c in restored} == {"Ready": "True", "MemoryPressure": "False"}
    # Only an Unknown this controller wrote is undone; the node's own statuses stand.
    assert restored_conditions(node(ready="Unknown"), 3.0) is None
    assert restored_conditions(node(ready="False"), 3.0) is None
