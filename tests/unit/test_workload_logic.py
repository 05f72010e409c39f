"""Pure logic of the DaemonSet, StatefulSet and Job controllers: node eligibility, placement and
rolling-update plans, ordinals, and job accounting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeedge.controllers import daemonset as dsm
from kubeedge.controllers import job as jm
from kubeedge.controllers import statefulset as ssm
from kubeedge.controllers.history import (
    REVISION_HASH_LABEL,
    revision_data,
    scaled_value,
    template_of,
)

Obj = dict[str, Any]
NOW = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
STAMP = "2030-01-01T11:00:00Z"  # an hour before NOW


def node(name: str, labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


def pod(
    name: str,
    *,
    phase: str = "Running",
    ready: bool = True,
    labels: dict[str, str] | None = None,
    node_name: str = "",
    deleting: bool = False,
    created: str = STAMP,
    annotations: dict[str, str] | None = None,
) -> Obj:
    md: Obj = {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "labels": labels or {},
        "creationTimestamp": created,
    }
    if annotations:
        md["annotations"] = annotations
    if deleting:
        md["deletionTimestamp"] = STAMP
    status: Obj = {"phase": phase}
    if phase == "Running":
        status["conditions"] = [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": STAMP}
        ]
    return {"metadata": md, "spec": {"nodeName": node_name}, "status": status}


# -------------------------------------------------------------------------------------------------
# DaemonSet: eligibility


def test_toleration_matching() -> None:
    taint = {"key": "dedicated", "value": "edge", "effect": "NoSchedule"}
    assert dsm.tolerates({"key": "dedicated", "operator": "Equal", "value": "edge"}, taint)
    assert dsm.tolerates({"key": "dedicated", "value": "edge", "effect": "NoSchedule"}, taint)
    assert not dsm.tolerates({"key": "dedicated", "value": "cloud"}, taint)
    assert not dsm.tolerates({"key": "dedicated", "value": "edge", "effect": "NoExecute"}, taint)
    assert dsm.tolerates({"key": "dedicated", "operator": "Exists"}, taint)
    assert dsm.tolerates({"operator": "Exists"}, taint)  # empty key + Exists tolerates everything
    assert not dsm.tolerates({"key": "other", "operator": "Exists"}, taint)


def test_node_selector_and_required_affinity() -> None:
    edge = node("e1", {"role": "edge", "gen": "5"})
    cloud = node("c1", {"role": "cloud"})
    assert dsm.node_should_run({"nodeSelector": {"role": "edge"}}, edge) == (True, True)
    assert dsm.node_should_run({"nodeSelector": {"role": "edge"}}, cloud) == (False, False)

    def affinity(*terms: Obj) -> Obj:
        return {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
                }
            }
        }

    gt4 = affinity({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]})
    assert dsm.node_matches(gt4, edge) and not dsm.node_matches(gt4, cloud)
    not_cloud = affinity({"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["cloud"]}]})
    assert dsm.node_matches(not_cloud, edge) and not dsm.node_matches(not_cloud, cloud)
    by_name = affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c1"]}]})
    assert dsm.node_matches(by_name, cloud) and not dsm.node_matches(by_name, edge)
    either = affinity(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c1"]}]},
        {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
    )
    assert dsm.node_matches(either, cloud) and dsm.node_matches(either, edge)
    assert not dsm.node_matches(affinity({}), edge)  # an empty term matches nothing
    assert not dsm.node_should_run({"nodeName": "c1"}, edge)[0]


def test_taints_decide_run_and_continue() -> None:
    no_schedule = node("n", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}])
    no_execute = node("n", taints=[{"key": "k", "value": "v", "effect": "NoExecute"}])
    prefer = node("n", taints=[{"key": "k", "value": "v", "effect": "PreferNoSchedule"}])
    assert dsm.node_should_run({}, no_schedule) == (False, True)  # existing pods stay
    assert dsm.node_should_run({}, no_execute) == (False, False)  # evicted
    assert dsm.node_should_run({}, prefer) == (True, True)
    tolerant = {"tolerations": [{"key": "k", "operator": "Exists"}]}
    assert dsm.node_should_run(tolerant, no_execute) == (True, True)


def test_daemon_pods_tolerate_node_problems_automatically() -> None:
    for key, effect in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ]:
        assert dsm.node_should_run({}, node("n", taints=[{"key": key, "effect": effect}])) == (True, True), (
            key
        )
    unavailable = node(
        "n", taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]
    )
    assert dsm.node_should_run({}, unavailable) == (False, True)
    assert dsm.node_should_run({"hostNetwork": True}, unavailable) == (True, True)
    # The user's own toleration for a key is kept rather than duplicated.
    own = [
        {
            "key": "node.kubernetes.io/not-ready",
            "effect": "NoExecute",
            "operator": "Exists",
            "tolerationSeconds": 5,
        }
    ]
    tols = dsm.daemon_tolerations({"tolerations": own})
    assert [t for t in tols if t["key"] == "node.kubernetes.io/not-ready"] == own


def test_daemon_pod_is_bound_and_pinned() -> None:
    ds: Obj = {
        "metadata": {"name": "agent", "namespace": "ns", "uid": "u1"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c"}]}}
        },
    }
    p = dsm.daemon_pod(ds, "edge-1", "abc")
    assert p["spec"]["nodeName"] == "edge-1"
    term = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}
        ]
    }
    assert p["metadata"]["labels"] == {"app": "agent", REVISION_HASH_LABEL: "abc"}
    assert p["metadata"]["generateName"] == "agent-"
    ref = p["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("DaemonSet", "u1", True)
    assert dsm.pod_node(p) == "edge-1"
    p["spec"]["nodeName"] = ""
    assert dsm.pod_node(p) == "edge-1"  # the affinity pin still tells the node
    assert "nodeName" not in ds["spec"]["template"]["spec"]  # the template is not mutated


# -------------------------------------------------------------------------------------------------
# DaemonSet: placement and rolling update


def h(rev: str) -> dict[str, str]:
    return {REVISION_HASH_LABEL: rev}


def test_plan_creates_deletes_and_never_doubles() -> None:
    nodes = {n: node(n, {"role": "edge"} if n != "cloud" else {}) for n in ("a", "b", "c", "d", "cloud")}
    pods = {
        "b": [pod("b1", labels=h("new"), node_name="b")],
        "c": [pod("c1", deleting=True, labels=h("new"), node_name="c")],  # terminating: wait for it
        "d": [
            pod("d1", labels=h("new"), node_name="d"),
            pod("d2", labels=h("new"), node_name="d", created="2030-01-01T11:30:00Z"),
        ],
        "cloud": [pod("x1", labels=h("new"), node_name="cloud")],
        "gone": [pod("g1", labels=h("new"), node_name="gone")],
    }
    plan = dsm.plan_nodes({"nodeSelector": {"role": "edge"}}, nodes, pods, "new")
    assert plan.create == ["a"]
    assert sorted(p["metadata"]["name"] for p in plan.delete) == ["d2", "x1"]  # duplicate (newest), misplaced
    assert [p["metadata"]["name"] for p in plan.force_delete] == ["g1"]  # node deleted: nobody to wait for
    assert plan.failed == []


def test_plan_replaces_failed_pod() -> None:
    plan = dsm.plan_nodes({}, {"a": node("a")}, {"a": [pod("a1", phase="Failed", labels=h("new"))]}, "new")
    assert [p["metadata"]["name"] for _, p in plan.failed] == ["a1"]
    assert plan.create == []  # only after the failed pod is gone


def _states(n: int, *, old_ready: bool = True) -> dsm.Plan:
    nodes = {f"n{i}": node(f"n{i}") for i in range(n)}
    pods = {f"n{i}": [pod(f"p{i}", labels=h("old"), ready=old_ready, node_name=f"n{i}")] for i in range(n)}
    return dsm.plan_nodes({}, nodes, pods, "new")


def test_rolling_update_respects_max_unavailable() -> None:
    plan = _states(4)
    dsm.plan_rolling_update(plan, {"rollingUpdate": {"maxUnavailable": 1}}, 4, 0, NOW)
    assert len(plan.delete) == 1 and plan.create == []
    plan = _states(4)
    dsm.plan_rolling_update(plan, {"rollingUpdate": {"maxUnavailable": "50%"}}, 4, 0, NOW)
    assert len(plan.delete) == 2
    # Old pods that are not ready serve nothing: they go regardless of the budget.
    plan = _states(3, old_ready=False)
    dsm.plan_rolling_update(plan, {"rollingUpdate": {"maxUnavailable": 1}}, 3, 0, NOW)
    assert len(plan.delete) == 3


def test_rolling_update_with_surge_creates_first() -> None:
    plan = _states(3)
    dsm.plan_rolling_update(plan, {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 3, 0, NOW)
    assert plan.delete == [] and len(plan.create) == 1
    # Once the surge pod is available the old pod on its node goes.
    nodes = {"n0": node("n0")}
    both = {"n0": [pod("old", labels=h("old"), node_name="n0"), pod("new", labels=h("new"), node_name="n0")]}
    plan = dsm.plan_nodes({}, nodes, both, "new")
    dsm.plan_rolling_update(plan, {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 1, 0, NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["old"] and plan.create == []


def test_daemon_status_counts() -> None:
    ds = {"metadata": {"generation": 3}, "spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}
    nodes = {"a": node("a", {"role": "edge"}), "b": node("b", {"role": "edge"}), "c": node("c")}
    pods = {
        "a": [pod("a1", labels=h("new"))],
        "b": [pod("b1", labels=h("old"), ready=False)],
        "c": [pod("c1", labels=h("new"))],
    }
    st = dsm.daemon_status(ds, nodes, pods, "new", NOW)
    assert st == {
        "desiredNumberScheduled": 2,
        "currentNumberScheduled": 2,
        "numberMisscheduled": 1,
        "numberReady": 1,
        "numberAvailable": 1,
        "updatedNumberScheduled": 1,
        "numberUnavailable": 1,
        "observedGeneration": 3,
    }


# -------------------------------------------------------------------------------------------------
# StatefulSet


def sts(replicas: int = 3, policy: str = "OrderedReady", **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "su", "generation": 1},
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": policy,
            "serviceName": "web-svc",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            **spec,
        },
    }


def spod(i: int, rev: str = "r1", **kw: Any) -> Obj:
    return pod(f"web-{i}", labels=h(rev), **kw)


def test_ordinals() -> None:
    assert ssm.ordinal_of("web", "web-0") == 0
    assert ssm.ordinal_of("web", "web-12") == 12
    assert ssm.ordinal_of("web", "web-01") is None
    assert ssm.ordinal_of("web", "web-x") is None
    assert ssm.ordinal_of("web", "webx-1") is None
    assert ssm.ordinal_of("web", "web-api-1") is None


def test_ordered_creation_waits_for_ready() -> None:
    assert ssm.plan_set(sts(), [], "r1", NOW).create == [0]
    assert ssm.plan_set(sts(), [spod(0, ready=False)], "r1", NOW).create == []
    assert ssm.plan_set(sts(), [spod(0, phase="Pending")], "r1", NOW).create == []
    assert ssm.plan_set(sts(), [spod(0)], "r1", NOW).create == [1]
    assert ssm.plan_set(sts(), [spod(0), spod(2)], "r1", NOW).create == [1]  # a hole is filled first
    assert ssm.plan_set(sts(policy="Parallel"), [spod(1, ready=False)], "r1", NOW).create == [0, 2]


def test_min_ready_seconds_delays_next_ordinal() -> None:
    fresh = spod(0)
    fresh["status"]["conditions"][0]["lastTransitionTime"] = "2030-01-01T11:59:55Z"  # 5s before NOW
    step = ssm.plan_set(sts(minReadySeconds=10), [fresh], "r1", NOW)
    assert step.create == [] and step.recheck is not None and 4 < step.recheck <= 5


def test_scale_down_from_highest_one_at_a_time() -> None:
    pods = [spod(i) for i in range(5)]
    step = ssm.plan_set(sts(2), pods, "r1", NOW)
    assert [p["metadata"]["name"] for p in step.delete] == ["web-4"]
    # While web-4 terminates, nothing else is deleted.
    pods[4] = spod(4, deleting=True)
    assert ssm.plan_set(sts(2), pods, "r1", NOW).delete == []
    # Not while a remaining pod is unhealthy either.
    assert ssm.plan_set(sts(2), [spod(0, ready=False), spod(1), spod(2)], "r1", NOW).delete == []
    parallel = ssm.plan_set(sts(2, "Parallel"), [spod(i) for i in range(5)], "r1", NOW)
    assert [p["metadata"]["name"] for p in parallel.delete] == ["web-4", "web-3", "web-2"]


def test_scale_down_deletes_claims_when_asked() -> None:
    retention: dict[str, Any] = {
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"}
    }
    step = ssm.plan_set(sts(1, **retention), [spod(0), spod(1)], "r1", NOW)
    assert step.delete_claims_of == [1]
    assert ssm.plan_set(sts(1), [spod(0), spod(1)], "r1", NOW).delete_claims_of == []


def test_rolling_update_reverse_order_with_partition() -> None:
    pods = [spod(i, "r1") for i in range(3)]
    step = ssm.plan_set(sts(), pods, "r2", NOW)
    assert [p["metadata"]["name"] for p in step.delete] == ["web-2"]
    pods[2] = spod(2, "r2", ready=False)  # replaced, not ready yet: wait
    assert ssm.plan_set(sts(), pods, "r2", NOW).delete == []
    pods[2] = spod(2, "r2")
    assert [p["metadata"]["name"] for p in ssm.plan_set(sts(), pods, "r2", NOW).delete] == ["web-1"]
    partitioned = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    assert ssm.plan_set(partitioned, pods, "r2", NOW).delete == []  # ordinals < 2 stay on r1
    on_delete = sts(updateStrategy={"type": "OnDelete"})
    assert ssm.plan_set(on_delete, [spod(i, "r1") for i in range(3)], "r2", NOW).delete == []


def test_failed_pod_is_replaced() -> None:
    step = ssm.plan_set(sts(), [spod(0, phase="Failed")], "r1", NOW)
    assert [p["metadata"]["name"] for p in step.delete] == ["web-0"]


def test_stateful_pod_identity_and_claims() -> None:
    s = sts(volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}])
    p = ssm.stateful_pod(s, s["spec"]["template"], 2, "web-r1")
    assert p["metadata"]["name"] == "web-2" and "generateName" not in p["metadata"]
    assert p["spec"]["hostname"] == "web-2" and p["spec"]["subdomain"] == "web-svc"
    labels = p["metadata"]["labels"]
    assert labels[ssm.POD_NAME_LABEL] == "web-2" and labels[ssm.POD_INDEX_LABEL] == "2"
    assert labels[REVISION_HASH_LABEL] == "web-r1" and labels["app"] == "web"
    assert p["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}]
    claim = ssm.stateful_claim(s, s["spec"]["volumeClaimTemplates"][0], 2)
    assert claim["metadata"]["name"] == "data-web-2"
    assert claim["metadata"]["labels"] == {"app": "web"}
    assert "ownerReferences" not in claim["metadata"]  # whenDeleted defaults to Retain
    s["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete"}
    owned = ssm.stateful_claim(s, s["spec"]["volumeClaimTemplates"][0], 2)
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "su"


def test_set_status_completes_rollout() -> None:
    s = sts(2)
    mid = ssm.set_status(s, [spod(0, "r1"), spod(1, "r2")], "r1", "r2", NOW)
    assert (mid["replicas"], mid["readyReplicas"], mid["currentReplicas"], mid["updatedReplicas"]) == (
        2,
        2,
        1,
        1,
    )
    assert mid["currentRevision"] == "r1"
    done = ssm.set_status(s, [spod(0, "r2"), spod(1, "r2")], "r1", "r2", NOW)
    assert done["currentRevision"] == "r2" and done["currentReplicas"] == 2


# -------------------------------------------------------------------------------------------------
# Job


def job(**spec: Any) -> Obj:
    base = {"parallelism": 2, "completions": 3, "backoffLimit": 2, "completionMode": "NonIndexed"}
    template = {
        "metadata": {"labels": {"app": "j"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]},
    }
    return {
        "metadata": {"name": "pi", "namespace": "ns", "uid": "ju"},
        "spec": {**base, "template": template, **spec},
        "status": {},
    }


def test_job_accounting() -> None:
    pods = [
        pod("a", phase="Succeeded"),
        pod("b", phase="Failed"),
        pod("c"),
        pod("d", ready=False),
        pod("e", deleting=True),
    ]
    c = jm.count_pods(job(), pods)
    assert (c.succeeded, c.failed, len(c.active), c.ready, c.terminating) == (1, 1, 2, 1, 1)
    assert jm.want_active(job(), c) == 2
    assert not jm.succeeded(job(), c)
    # Counters never go backwards when finished pods disappear.
    j = job()
    j["status"] = {"succeeded": 2, "failed": 1}
    c = jm.count_pods(j, [pod("c")])
    assert (c.succeeded, c.failed) == (2, 1)
    assert jm.want_active(j, c) == 1  # one completion left
    c = jm.count_pods(
        j, [pod("x", phase="Succeeded"), pod("y", phase="Succeeded"), pod("z", phase="Succeeded")]
    )
    assert jm.succeeded(j, c) and jm.want_active(j, c) == 0


def test_work_queue_job() -> None:
    j = job(completions=None, parallelism=3)
    c = jm.count_pods(j, [])
    assert jm.want_active(j, c) == 3 and not jm.succeeded(j, c)
    c = jm.count_pods(j, [pod("a", phase="Succeeded"), pod("b")])
    assert jm.want_active(j, c) == 1 and not jm.succeeded(j, c)  # no new pods once one succeeded
    c = jm.count_pods(j, [pod("a", phase="Succeeded")])
    assert jm.succeeded(j, c)


def test_job_failure_reasons() -> None:
    j = job(backoffLimit=1)
    one = jm.count_pods(j, [pod("a", phase="Failed")])
    assert jm.failure_of(j, one, NOW, NOW) is None
    two = jm.count_pods(j, [pod("a", phase="Failed"), pod("b", phase="Failed")])
    assert jm.failure_of(j, two, NOW, NOW) == jm.BACKOFF_LIMIT_EXCEEDED
    dl = job(activeDeadlineSeconds=60)
    c = jm.count_pods(dl, [])
    assert jm.failure_of(dl, c, NOW - dt.timedelta(seconds=59), NOW) is None
    assert jm.failure_of(dl, c, NOW - dt.timedelta(seconds=60), NOW) == jm.DEADLINE_EXCEEDED
    on_failure = job(backoffLimit=2)
    on_failure["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    restarting = pod("r")
    restarting["status"]["containerStatuses"] = [{"name": "c", "restartCount": 2}]
    assert (
        jm.failure_of(on_failure, jm.count_pods(on_failure, [restarting]), NOW, NOW)
        == jm.BACKOFF_LIMIT_EXCEEDED
    )


def test_failure_backoff_doubles() -> None:
    j = job()
    failed = pod("a", phase="Failed")
    failed["status"]["containerStatuses"] = [
        {"name": "c", "state": {"terminated": {"exitCode": 1, "finishedAt": "2030-01-01T11:59:58Z"}}}
    ]
    c = jm.count_pods(j, [failed])
    assert c.last_failure == NOW - dt.timedelta(seconds=2)
    assert jm.backoff_remaining(c, NOW) == pytest.approx(8.0)
    c.failed = 3
    assert jm.backoff_remaining(c, NOW) == pytest.approx(38.0)
    assert jm.backoff_remaining(jm.count_pods(j, []), NOW) == 0.0


def test_indexed_job() -> None:
    assert jm.parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert jm.format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert jm.format_indexes(set()) == ""
    j = job(completionMode="Indexed", completions=4, parallelism=2)
    idx = {jm.COMPLETION_INDEX: "1"}
    c = jm.count_pods(
        j, [pod("a", phase="Succeeded", annotations=idx), pod("b", annotations={jm.COMPLETION_INDEX: "0"})]
    )
    assert c.completed_indexes == {1}
    assert jm.indexes_to_create(j, c, jm.want_active(j, c) - len(c.active)) == [2]
    p = jm.job_pod(j, 3)
    assert p["metadata"]["annotations"][jm.COMPLETION_INDEX] == "3"
    assert p["metadata"]["labels"][jm.COMPLETION_INDEX] == "3"
    assert p["metadata"]["generateName"] == "pi-3-"
    assert p["spec"]["hostname"] == "pi-3"
    env = p["spec"]["containers"][0]["env"]
    assert env[0]["name"] == "JOB_COMPLETION_INDEX"
    # A second pod for an index that already completed is excess.
    j["status"]["completedIndexes"] = "1"
    dup = [pod("c", annotations=idx)]
    assert [x["metadata"]["name"] for x in jm.excess_pods(j, jm.count_pods(j, dup))] == ["c"]


def test_job_pod_labels() -> None:
    p = jm.job_pod(job(), None)
    labels = p["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == "ju" and labels["controller-uid"] == "ju"
    assert labels["batch.kubernetes.io/job-name"] == "pi" and labels["job-name"] == "pi"
    assert p["metadata"]["ownerReferences"][0]["kind"] == "Job"
    manual = jm.job_pod(job(manualSelector=True), None)
    assert manual["metadata"]["labels"] == {"app": "j"}


def test_conditions_are_stable() -> None:
    conds: list[Obj] = []
    jm.set_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", "t1")
    jm.set_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", "t2")
    assert conds[0]["lastProbeTime"] == "t1"  # no rewrite, so no hot loop of status writes
    jm.set_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", "t3")
    assert conds[0]["lastTransitionTime"] == "t3" and conds[0]["status"] == "False"


# -------------------------------------------------------------------------------------------------
# history helpers


def test_revision_round_trip_and_scaling() -> None:
    tpl = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    data = revision_data(tpl)
    assert data["spec"]["template"]["$patch"] == "replace"
    assert template_of({"data": data}) == tpl
    assert scaled_value("25%", 10, True) == 3 and scaled_value("25%", 10, False) == 2
    assert scaled_value(2, 10, True) == 2 and scaled_value("3", 10, True) == 3
