"""Pure logic of the ReplicaSet and Deployment controllers: template hashing, surge/unavailable
arithmetic, rollout steps, proportional scaling, revisions, status and conditions."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from typing import Any

import pytest

from kubeedge.controllers import deployment as dp
from kubeedge.controllers import podtemplate as pt
from kubeedge.controllers import replicaset as rsc

Obj = dict[str, Any]
NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def template(image: str = "nginx:1", **labels: str) -> Obj:
    return {
        "metadata": {"labels": {"app": "web", **labels}},
        "spec": {"containers": [{"name": "nginx", "image": image}]},
    }


def deployment(replicas: int = 10, surge: Any = "25%", unavailable: Any = "25%", **spec: Any) -> Obj:
    strategy: Obj = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1, "annotations": {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(),
            "strategy": spec.pop("strategy", strategy),
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            **spec,
        },
        "status": {},
    }


def rs(
    name: str,
    replicas: int,
    available: int | None = None,
    *,
    actual: int | None = None,
    created: str = "2025-01-01T00:00:00Z",
    revision: int | None = None,
    ann: dict[str, str] | None = None,
) -> Obj:
    annotations = dict(ann or {})
    if revision is not None:
        annotations[dp.REVISION] = str(revision)
    return {
        "metadata": {
            "name": name,
            "uid": f"{name}-uid",
            "creationTimestamp": created,
            "annotations": annotations,
        },
        "spec": {"replicas": replicas, "template": template()},
        "status": {
            "replicas": replicas if actual is None else actual,
            "availableReplicas": replicas if available is None else available,
            "readyReplicas": replicas if available is None else available,
        },
    }


# ---- hashing ------------------------------------------------------------------------------------


def test_template_hash_is_stable_safe_and_sensitive() -> None:
    h = pt.template_hash(template())
    assert h == pt.template_hash(template())
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    assert pt.template_hash(template("nginx:2")) != h
    assert pt.template_hash(template(), 1) != pt.template_hash(template(), 2) != h
    # nil and empty are the same template (upstream semantic equality), key order is irrelevant.
    t = template()
    t["metadata"]["annotations"] = {}
    t["metadata"]["creationTimestamp"] = None
    t["spec"] = dict(reversed(list(t["spec"].items())))
    assert pt.template_hash(t) == h


def test_template_hash_same_in_another_process() -> None:
    code = (
        "from kubeedge.controllers.podtemplate import template_hash;"
        "print(template_hash({'metadata': {'labels': {'app': 'web'}},"
        " 'spec': {'containers': [{'name': 'nginx', 'image': 'nginx:1'}]}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == pt.template_hash(template())


def test_safe_encode_matches_upstream_alphabet() -> None:
    # upstream: each decimal digit's byte value modulo 27 into "bcdfghjklmnpqrstvwxz2456789"
    assert pt.safe_encode("0123456789") == "456789bcdf"


def test_equal_ignoring_hash_label() -> None:
    a = template(**{dp.HASH_LABEL: "abc"})
    assert pt.templates_equal_ignoring(a, template(), dp.HASH_LABEL)
    assert not pt.templates_equal_ignoring(a, template("nginx:2"), dp.HASH_LABEL)


def test_new_replicaset_shape() -> None:
    d = deployment()
    body = dp.new_replicaset(d, None)
    h = pt.template_hash(d["spec"]["template"])
    assert body["metadata"]["name"] == f"web-{h}"
    assert body["metadata"]["labels"] == {"app": "web", dp.HASH_LABEL: h}
    assert body["spec"]["selector"]["matchLabels"] == {"app": "web", dp.HASH_LABEL: h}
    assert body["spec"]["template"]["metadata"]["labels"][dp.HASH_LABEL] == h
    ref = body["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "Deployment",
        "d-uid",
        True,
        True,
    )
    assert dp.HASH_LABEL not in d["spec"]["template"]["metadata"]["labels"], "the deployment is not modified"


# ---- surge / unavailable ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),  # surge rounds up, unavailable down
        ("25%", "25%", 5, (2, 1)),
        ("25%", "25%", 1, (1, 0)),
        (0, 0, 10, (0, 1)),  # both zero would never progress
        ("0%", "0%", 3, (0, 1)),
        (1, "50%", 3, (1, 1)),
        ("100%", 0, 4, (4, 0)),
    ],
)
def test_resolve_fenceposts(surge: Any, unavailable: Any, desired: int, expected: tuple[int, int]) -> None:
    assert dp.resolve_fenceposts(surge, unavailable, desired) == expected


def test_scaled_value_rejects_non_percent_strings() -> None:
    with pytest.raises(ValueError):
        dp.scaled_value("3", 10, True)


def test_max_unavailable_capped_and_zero_for_recreate() -> None:
    assert dp.max_unavailable(deployment(2, 0, "200%")) == 2
    assert dp.max_unavailable(deployment(0)) == 0
    assert dp.max_unavailable(deployment(5, strategy={"type": "Recreate"})) == 0
    assert dp.max_surge(deployment(5, strategy={"type": "Recreate"})) == 0


# ---- rollout steps ------------------------------------------------------------------------------


def test_new_rs_scales_up_by_surge() -> None:
    d = deployment(10)  # surge 3
    old, new = rs("old", 10), rs("new", 0)
    assert dp.new_rs_new_replicas(d, [old, new], new) == 3
    # Already at replicas + surge: no more.
    assert dp.new_rs_new_replicas(d, [rs("old", 10), rs("new", 3)], rs("new", 3)) == 3
    # Never above the desired count.
    assert dp.new_rs_new_replicas(d, [rs("old", 0), rs("new", 9)], rs("new", 9)) == 10


def test_new_rs_waits_for_old_pods_to_be_deleted() -> None:
    # The old ReplicaSet was scaled to 7 but still has 10 pods: no room to surge yet.
    d = deployment(10)
    old, new = rs("old", 7, actual=10), rs("new", 3)
    assert dp.new_rs_new_replicas(d, [old, new], new) == 3
    old = rs("old", 7, actual=7)
    assert dp.new_rs_new_replicas(d, [old, new], new) == 6


def test_recreate_new_rs_gets_everything() -> None:
    d = deployment(4, strategy={"type": "Recreate"})
    assert dp.new_rs_new_replicas(d, [rs("new", 0)], rs("new", 0)) == 4


def test_old_scale_down_keeps_minimum_available() -> None:
    d = deployment(10)  # min available 8
    old, new = rs("old", 10), rs("new", 3, available=0)
    # 13 pods, 3 new unavailable: 13 - 8 - 3 = 2 may go.
    assert dp.old_rs_scale_down(d, [old, new], [old], new) == {"old": 8}
    new = rs("new", 3, available=3)
    old = rs("old", 8)
    # 11 pods all available: 11 - 8 = 3 may go.
    assert dp.old_rs_scale_down(d, [old, new], [old], new) == {"old": 5}


def test_old_scale_down_unhealthy_first_and_respects_budget() -> None:
    d = deployment(10)
    old = rs("old", 10, available=6)  # 4 unhealthy
    new = rs("new", 3, available=0)
    # max scaled down = 13 - 8 - 3 = 2: only unhealthy pods, availability 6 already below 8.
    assert dp.old_rs_scale_down(d, [old, new], [old], new) == {"old": 8}


def test_old_scale_down_trusts_no_more_available_than_spec() -> None:
    # Status still says 10 available although we already scaled it to 8.
    d = deployment(10)
    old, new = rs("old", 8, available=10), rs("new", 3, available=0)
    assert dp.old_rs_scale_down(d, [old, new], [old], new) == {}


def test_old_scale_down_oldest_first() -> None:
    d = deployment(10, 0, 2)
    a = rs("a", 3, created="2025-01-01T00:00:01Z")
    b = rs("b", 7, created="2025-01-01T00:00:02Z")
    new = rs("new", 0)
    assert dp.old_rs_scale_down(d, [a, b, new], [a, b], new) == {"a": 1}


def test_rollout_simulation_respects_bounds() -> None:
    """Drive the rolling-update steps with instantly-available pods: bounds hold, it completes."""
    d = deployment(10, "30%", 1)  # surge 3, unavailable 1
    old, new = rs("old", 10), rs("new", 0)
    for _ in range(50):
        want_new = dp.new_rs_new_replicas(d, [old, new], new)
        new = rs("new", want_new)
        plan = dp.old_rs_scale_down(d, [old, new], [old], new)
        if "old" in plan:
            old = rs("old", plan["old"])
        total = dp.spec_replicas(old) + dp.spec_replicas(new)
        assert total <= 13
        assert dp.available_of(old) + dp.available_of(new) >= 9
        if dp.spec_replicas(new) == 10 and dp.spec_replicas(old) == 0:
            break
    else:
        pytest.fail("rollout did not complete")


# ---- proportional scaling -----------------------------------------------------------------------


def test_scale_single_active_rs_takes_all() -> None:
    d = deployment(7)
    assert dp.scale_plan(d, rs("new", 5), [rs("old", 0)]) == {"new": 7}
    assert dp.scale_plan(d, rs("new", 7), []) == {}


def test_scale_proportionally_mid_rollout() -> None:
    # Mid rollout of 10 (surge 3 -> max 13), scaled to 20 (surge 5 -> 25): +12 spread by size.
    ann = {dp.MAX_REPLICAS: "13", dp.DESIRED_REPLICAS: "10"}
    old = rs("old", 8, created="2025-01-01T00:00:01Z", ann=ann)
    new = rs("new", 5, created="2025-01-01T00:00:02Z", ann=ann)
    plan = dp.scale_plan(deployment(20), new, [old])
    assert plan == {"old": 15, "new": 10}
    assert sum(plan.values()) == 25


def test_scale_down_proportionally() -> None:
    ann = {dp.MAX_REPLICAS: "13", dp.DESIRED_REPLICAS: "10"}
    old = rs("old", 8, created="2025-01-01T00:00:01Z", ann=ann)
    new = rs("new", 5, created="2025-01-01T00:00:02Z", ann=ann)
    plan = dp.scale_plan(deployment(5), new, [old])  # surge 2 -> 7
    assert sum(plan.values()) == 7
    assert plan["old"] > plan["new"]


def test_scaling_event_detection() -> None:
    ann = {dp.DESIRED_REPLICAS: "10"}
    assert dp.is_scaling_event(deployment(12), rs("new", 10, ann=ann), [])
    assert not dp.is_scaling_event(deployment(10), rs("new", 10, ann=ann), [])
    assert not dp.is_scaling_event(deployment(12), rs("new", 0, ann=ann), [])


# ---- revisions ----------------------------------------------------------------------------------


def test_new_rs_annotations_copy_and_revision() -> None:
    d = deployment(5)
    d["metadata"]["annotations"] = {
        "kubernetes.io/change-cause": "x",
        dp.LAST_APPLIED: "{}",
        dp.REVISION: "4",
    }
    body = dp.new_replicaset(d, None)
    assert dp.set_new_rs_annotations(d, body, 5, exists=False)
    ann = body["metadata"]["annotations"]
    assert ann == {
        "kubernetes.io/change-cause": "x",
        dp.REVISION: "5",
        dp.DESIRED_REPLICAS: "5",
        dp.MAX_REPLICAS: "7",
    }
    assert not dp.set_new_rs_annotations(d, body, 5, exists=True)


def test_reused_rs_remembers_revision_history() -> None:
    d = deployment(5)
    old = rs("old", 0, revision=1)
    assert dp.set_new_rs_annotations(d, old, 3, exists=True)
    assert old["metadata"]["annotations"][dp.REVISION] == "3"
    assert old["metadata"]["annotations"][dp.REVISION_HISTORY] == "1"
    dp.set_new_rs_annotations(d, old, 5, exists=True)
    assert old["metadata"]["annotations"][dp.REVISION_HISTORY] == "1,3"


def test_find_new_rs_oldest_equal_template() -> None:
    d = deployment()
    a = rs("a", 1, created="2025-01-01T00:00:02Z")
    b = rs("b", 1, created="2025-01-01T00:00:01Z")
    c = rs("c", 1)
    c["spec"]["template"] = template("nginx:9")
    assert dp.find_new_rs(d, [a, b, c]) is b
    assert dp.find_new_rs(d, [c]) is None


def test_history_cleanup_only_settled_scaled_down_oldest() -> None:
    d = deployment()
    d["spec"]["revisionHistoryLimit"] = 1
    olds = [rs(f"r{i}", 0, revision=i) for i in (3, 1, 2)]
    for o in olds:
        o["metadata"]["generation"] = 1
        o["status"]["observedGeneration"] = 1
    olds[2]["status"]["replicas"] = 1  # r2 still has a pod: kept for now
    assert [o["metadata"]["name"] for o in dp.history_to_delete(d, olds)] == ["r1"]
    d["spec"].pop("revisionHistoryLimit")
    assert dp.history_to_delete(d, olds) == []


# ---- status and conditions ----------------------------------------------------------------------


def test_rollout_status_progression() -> None:
    d = deployment(4)
    new = rs("new", 4, available=2, actual=4)
    old = rs("old", 1, available=1)
    st = dp.rollout_status(d, [old, new], new, NOW)
    assert (st["replicas"], st["updatedReplicas"], st["availableReplicas"], st["unavailableReplicas"]) == (
        5,
        4,
        3,
        2,
    )
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["reason"] == dp.MIN_AVAILABLE  # 3 >= 4 - 1
    assert conds["Progressing"]["reason"] == dp.RS_UPDATED
    d["status"] = st
    done = dp.rollout_status(d, [rs("old", 0, available=0), rs("new", 4)], rs("new", 4), NOW)
    prog = next(c for c in done["conditions"] if c["type"] == "Progressing")
    assert (prog["reason"], prog["status"]) == (dp.NEW_RS_AVAILABLE, "True")
    assert dp.deployment_complete(d, done)


def test_progress_deadline_times_out_and_requeues() -> None:
    d = deployment(2, progressDeadlineSeconds=30)
    d["status"] = {
        "replicas": 2,
        "updatedReplicas": 1,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [dp.new_condition("Progressing", "True", dp.RS_UPDATED, "x", NOW)],
    }
    new, old = rs("new", 1, available=1, actual=1), rs("old", 1)
    assert dp.stuck_requeue(d, dp.rollout_status(d, [old, new], new, NOW), NOW) == pytest.approx(31)
    later = NOW + dt.timedelta(seconds=31)
    st = dp.rollout_status(d, [old, new], new, later)
    prog = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert (prog["reason"], prog["status"]) == (dp.TIMED_OUT, "False")


def test_set_condition_keeps_transition_time() -> None:
    status: Obj = {}
    dp.set_condition(status, dp.new_condition("Progressing", "True", dp.NEW_RS_CREATED, "a", NOW))
    later = NOW + dt.timedelta(seconds=5)
    dp.set_condition(status, dp.new_condition("Progressing", "True", dp.RS_UPDATED, "b", later))
    (c,) = status["conditions"]
    assert (c["reason"], c["lastTransitionTime"], c["lastUpdateTime"]) == (
        dp.RS_UPDATED,
        "2025-01-01T12:00:00Z",
        "2025-01-01T12:00:05Z",
    )


def test_replica_failure_surfaces_on_deployment() -> None:
    d = deployment(1)
    new = rs("new", 1, available=0, actual=0)
    new["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": "quota",
            "lastTransitionTime": "t",
        }
    ]
    st = dp.rollout_status(d, [new], new, NOW)
    fail = next(c for c in st["conditions"] if c["type"] == "ReplicaFailure")
    assert (fail["reason"], fail["message"]) == ("FailedCreate", "quota")


def test_recreate_waits_for_old_pods() -> None:
    new, old = rs("new", 0), rs("old", 0, actual=0)
    running = {"phase": "Running"}
    assert dp.old_pods_running(new, [old], {"old-uid": [{"status": running}]})
    assert not dp.old_pods_running(
        new, [old], {"old-uid": [{"status": {"phase": "Succeeded"}}], "new-uid": [{}]}
    )
    assert dp.old_pods_running(new, [rs("old", 0, actual=1)], {})


# ---- ReplicaSet controller logic ----------------------------------------------------------------


def test_slow_start_batches() -> None:
    assert rsc.slow_start_batches(10) == [1, 2, 4, 3]
    assert rsc.slow_start_batches(500) == [1, 2, 4, 8, 16, 32, 64, 128, 245]
    assert rsc.slow_start_batches(0) == []


async def test_slow_start_stops_after_a_failing_batch() -> None:
    calls = 0

    async def fail() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("quota")

    done, err = await rsc.slow_start(100, fail)
    assert (done, calls, str(err)) == (0, 1, "quota")

    async def ok() -> None:
        pass

    assert await rsc.slow_start(7, ok) == (7, None)


def pod(
    name: str,
    *,
    node: str = "",
    phase: str = "Running",
    ready: bool | None = True,
    created: str = "2025-01-01T00:00:00Z",
) -> Obj:
    conds = [] if ready is None else [{"type": "Ready", "status": str(ready), "lastTransitionTime": created}]
    return {
        "metadata": {"name": name, "uid": name, "creationTimestamp": created, "labels": {"app": "web"}},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "conditions": conds},
    }


def test_pods_to_delete_ranking() -> None:
    pods = [
        pod("old-ready", node="n1", created="2025-01-01T00:00:00Z"),
        pod("new-ready", node="n2", created="2025-01-01T00:00:05Z"),
        pod("not-ready", node="n3", ready=False),
        pod("pending", node="n4", phase="Pending", ready=None),
        pod("unscheduled", phase="Pending", ready=None),
    ]
    order = [p["metadata"]["name"] for p in rsc.pods_to_delete(pods, pods, 4, NOW)]
    assert order == ["unscheduled", "pending", "not-ready", "new-ready"]


def test_pods_to_delete_prefers_doubled_up_nodes() -> None:
    a, b, c = pod("a", node="n1"), pod("b", node="n1"), pod("c", node="n2")
    assert {p["metadata"]["name"] for p in rsc.pods_to_delete([a, c], [a, b, c], 1, NOW)} == {"a"}


def test_replicaset_status_counts() -> None:
    r = {
        "metadata": {"generation": 3},
        "spec": {"minReadySeconds": 10, "template": {"metadata": {"labels": {"app": "web", "x": "y"}}}},
        "status": {},
    }
    pods = [
        pod("a", created="2025-01-01T11:00:00Z"),  # ready for an hour: available
        pod("b", created="2025-01-01T11:59:55Z"),  # ready 5 s: not yet available
        pod("c", ready=False),
    ]
    pods[0]["metadata"]["labels"]["x"] = "y"
    st = rsc.replicaset_status(r, pods, NOW, None)
    assert st == {
        "replicas": 3,
        "fullyLabeledReplicas": 1,
        "readyReplicas": 2,
        "availableReplicas": 1,
        "observedGeneration": 3,
    }
    assert rsc.next_available_check(pods, 10, NOW) == pytest.approx(5.05)
    failed = rsc.replicaset_status(r, pods, NOW, ("FailedCreate", "quota exceeded"))
    (cond,) = failed["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("ReplicaFailure", "True", "FailedCreate")
    r["status"] = failed
    assert "conditions" not in rsc.replicaset_status(r, pods, NOW, None)


def test_selector_matching() -> None:
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
    }
    assert pt.selector_matches(sel, {"app": "web", "tier": "a"})
    assert not pt.selector_matches(sel, {"app": "web", "tier": "c"})
    assert not pt.selector_matches({}, {"app": "web"}), "an empty selector claims nothing"
    assert not pt.selector_matches(None, {"app": "web"})


def test_pod_from_template() -> None:
    t = template()
    t["metadata"]["annotations"] = {"a": "b"}
    ref = pt.controller_ref({"metadata": {"name": "web-abc", "uid": "u"}}, "apps/v1", "ReplicaSet")
    p = pt.pod_from_template(t, ref, pt.generate_name_prefix("web-abc"), "ns")
    assert p["metadata"]["generateName"] == "web-abc-"
    assert p["metadata"]["labels"] == {"app": "web"} and p["metadata"]["annotations"] == {"a": "b"}
    assert p["metadata"]["ownerReferences"] == [ref]
    p["spec"]["containers"][0]["image"] = "changed"
    assert t["spec"]["containers"][0]["image"] == "nginx:1", "the template is copied, not shared"
