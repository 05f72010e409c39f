"""The scheduler's pure logic: quantities, every filter and score, and ClusterState accounting."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest

from kubeedge.controllers.scheduling import (
    ClusterState,
    NodeInfo,
    count_intolerable_prefer,
    failure_message,
    fit_reasons,
    fits,
    host_ports,
    least_requested,
    match_expression,
    match_field,
    match_term,
    match_terms,
    milli,
    normalize,
    num_feasible_to_find,
    parse_quantity,
    pod_requests,
    ports_conflict,
    profile_of,
    scan,
    spread_score,
    static_reason,
    tolerates,
    workload_of,
)

Obj = dict[str, Any]
Gi = 2**30
Mi = 2**20


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    ready: str | None = "True",
    unschedulable: bool = False,
    extra: dict[str, str] | None = None,
) -> Obj:
    conds = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})},
            "conditions": conds,
        },
    }


def pod(
    name: str = "p",
    *,
    ns: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    requests: dict[str, str] | None = None,
    spec: Obj | None = None,
    labels: dict[str, str] | None = None,
    owner_uid: str | None = None,
) -> Obj:
    req = dict(requests or {})
    if cpu:
        req["cpu"] = cpu
    if memory:
        req["memory"] = memory
    md: Obj = {"name": name, "namespace": ns, "labels": labels or {}}
    if owner_uid:
        md["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "rs",
                "uid": owner_uid,
                "controller": True,
            }
        ]
    s: Obj = {"containers": [{"name": "c", "image": "x", "resources": {"requests": req}}]}
    s.update(spec or {})
    return {"metadata": md, "spec": s}


def info(n: Obj) -> NodeInfo:
    ni = NodeInfo(n["metadata"]["name"])
    ni.set_node(n)
    return ni


# ---- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("1.5", Fraction(3, 2)),
        ("1Gi", Fraction(Gi)),
        ("500Mi", Fraction(500 * Mi)),
        ("1e3", Fraction(1000)),
        ("2k", Fraction(2000)),
        ("1E", Fraction(10**18)),
        ("1.5e-3", Fraction(3, 2000)),
        ("5n", Fraction(5, 10**9)),
        ("0.5Ki", Fraction(512)),
        (".5", Fraction(1, 2)),
        ("3M", Fraction(3 * 10**6)),
        (2, Fraction(2)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_parse_quantity(text: str | int | float, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "1Gb", "m", "--1"])
def test_parse_quantity_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_milli_rounds_up() -> None:
    assert milli("100m") == 100
    assert milli("1") == 1000
    assert milli("1n") == 1  # like MilliValue: never rounds a non-zero request down to nothing
    assert milli("1Gi") == Gi * 1000


# ---- requests --------------------------------------------------------------------------------


def test_requests_sum_containers_and_overhead() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}},
        ],
        "overhead": {"cpu": "10m"},
    }
    r = pod_requests(spec)
    assert r == {"cpu": 310, "memory": 64 * Mi * 1000, "example.com/gpu": 1000}


def test_requests_init_containers_take_the_max() -> None:
    spec = {
        "initContainers": [
            {"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
        ],
        "containers": [
            {"resources": {"requests": {"cpu": "300m", "memory": "100Mi"}}},
            {"resources": {"requests": {"cpu": "300m", "memory": "100Mi"}}},
        ],
    }
    r = pod_requests(spec)
    assert r["cpu"] == 2000  # the biggest init container beats the 600m of the containers
    assert r["memory"] == Gi * 1000


def test_requests_sidecar_init_containers_add_up() -> None:
    spec: Obj = {
        "initContainers": [
            {"restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
            {"resources": {"requests": {"cpu": "1"}}},  # runs next to the sidecar: 1.1 at peak
        ],
        "containers": [{"resources": {"requests": {"cpu": "200m"}}}],
    }
    assert pod_requests(spec)["cpu"] == 1100
    spec["initContainers"][1]["resources"]["requests"]["cpu"] = "50m"
    assert pod_requests(spec)["cpu"] == 300  # sidecar keeps running next to the containers


def test_nonzero_requests_for_scoring() -> None:
    r = pod_requests({"containers": [{}, {"resources": {"requests": {"cpu": "1"}}}]}, nonzero=True)
    assert r["cpu"] == 1100
    assert r["memory"] == 2 * 200 * Mi * 1000


def test_fits_resources_against_allocatable_minus_requested() -> None:
    ni = info(node("n", cpu="1", memory="1Gi", extra={"ephemeral-storage": "10Gi"}))
    ni.add(profile_of(pod("a", cpu="600m", memory="512Mi")))
    assert fits(ni, profile_of(pod("b", cpu="400m", memory="512Mi")))
    big = profile_of(pod("c", cpu="500m", memory="600Mi"))
    assert not fits(ni, big)
    assert fit_reasons(ni, big) == ["Insufficient cpu", "Insufficient memory"]
    eph = profile_of(pod("d", requests={"ephemeral-storage": "11Gi"}))
    assert fit_reasons(ni, eph) == ["Insufficient ephemeral-storage"]
    gpu = profile_of(pod("e", requests={"nvidia.com/gpu": "1"}))
    assert not fits(ni, gpu)
    assert fit_reasons(ni, gpu) == ["Insufficient nvidia.com/gpu"]


def test_fits_init_container_peak() -> None:
    ni = info(node("n", cpu="1"))
    p = pod("a", spec={"initContainers": [{"resources": {"requests": {"cpu": "1500m"}}}]})
    assert fit_reasons(ni, profile_of(p)) == ["Insufficient cpu"]


def test_fits_max_pods() -> None:
    ni = info(node("n", pods="2"))
    ni.add(profile_of(pod("a")))
    assert fits(ni, profile_of(pod("b")))
    ni.add(profile_of(pod("b")))
    assert fit_reasons(ni, profile_of(pod("c"))) == ["Too many pods"]


def test_best_effort_pod_fits_full_node() -> None:
    ni = info(node("n", cpu="1"))
    ni.add(profile_of(pod("a", cpu="1")))
    assert fits(ni, profile_of(pod("b")))


# ---- host ports ------------------------------------------------------------------------------


def ports_spec(*ports: Obj) -> Obj:
    return {"containers": [{"name": "c", "ports": list(ports)}]}


def test_host_ports_defaults() -> None:
    spec = ports_spec({"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP"})
    assert host_ports(spec) == (("TCP", 8080, "0.0.0.0"),)


@pytest.mark.parametrize(
    ("used_ip", "used_proto", "want_ip", "want_proto", "conflict"),
    [
        ("0.0.0.0", "TCP", "0.0.0.0", "TCP", True),
        ("0.0.0.0", "TCP", "10.0.0.1", "TCP", True),
        ("10.0.0.1", "TCP", "0.0.0.0", "TCP", True),
        ("10.0.0.1", "TCP", "10.0.0.1", "TCP", True),
        ("10.0.0.1", "TCP", "10.0.0.2", "TCP", False),
        ("0.0.0.0", "TCP", "0.0.0.0", "UDP", False),
    ],
)
def test_host_port_conflicts(
    used_ip: str, used_proto: str, want_ip: str, want_proto: str, conflict: bool
) -> None:
    ni = info(node("n"))
    used = ports_spec({"containerPort": 1, "hostPort": 8080, "hostIP": used_ip, "protocol": used_proto})
    ni.add(profile_of(pod("a", spec=used)))
    want = ports_spec({"containerPort": 1, "hostPort": 8080, "hostIP": want_ip, "protocol": want_proto})
    p = profile_of(pod("b", spec=want))
    assert fits(ni, p) is not conflict
    if conflict:
        assert fit_reasons(ni, p) == ["node(s) didn't have free ports for the requested pod ports"]


def test_host_ports_freed_on_remove() -> None:
    ni = info(node("n"))
    a = profile_of(pod("a", spec=ports_spec({"containerPort": 1, "hostPort": 80})))
    ni.add(a)
    assert ports_conflict(ni.ports, a.ports)
    ni.remove(a)
    assert ni.ports == {}
    assert fits(ni, a)


# ---- node affinity ---------------------------------------------------------------------------

LABELS = {"zone": "a", "disk": "ssd", "cores": "8"}


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, True),
        ({"key": "zone", "operator": "In", "values": ["b"]}, False),
        ({"key": "nope", "operator": "In", "values": ["a"]}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["b"]}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, False),
        ({"key": "nope", "operator": "NotIn", "values": ["a"]}, True),
        ({"key": "disk", "operator": "Exists"}, True),
        ({"key": "nope", "operator": "Exists"}, False),
        ({"key": "nope", "operator": "DoesNotExist"}, True),
        ({"key": "disk", "operator": "DoesNotExist"}, False),
        ({"key": "cores", "operator": "Gt", "values": ["4"]}, True),
        ({"key": "cores", "operator": "Gt", "values": ["8"]}, False),
        ({"key": "cores", "operator": "Lt", "values": ["16"]}, True),
        ({"key": "cores", "operator": "Lt", "values": ["8"]}, False),
        ({"key": "zone", "operator": "Gt", "values": ["1"]}, False),  # not an integer label
        ({"key": "nope", "operator": "Lt", "values": ["1"]}, False),
        ({"key": "zone", "operator": "Bogus", "values": ["a"]}, False),
    ],
)
def test_match_expression(expr: Obj, ok: bool) -> None:
    assert match_expression(expr, LABELS) is ok


def test_match_fields_and_terms() -> None:
    assert match_field({"key": "metadata.name", "operator": "In", "values": ["n1"]}, "n1")
    assert not match_field({"key": "metadata.name", "operator": "In", "values": ["n2"]}, "n1")
    assert match_field({"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}, "n1")
    assert not match_field({"key": "metadata.uid", "operator": "In", "values": ["n1"]}, "n1")
    both = {
        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
    }
    assert match_term(both, LABELS, "n1")
    assert not match_term(both, LABELS, "n2")  # ANDed
    assert not match_term({}, LABELS, "n1")  # an empty term matches nothing
    other = {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}
    assert match_terms([other, both], LABELS, "n1")  # ORed
    assert not match_terms([other], LABELS, "n1")
    assert not match_terms([], LABELS, "n1")


def affinity(*terms: Obj) -> Obj:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def test_static_filter_selector_and_required_affinity() -> None:
    ni = info(node("n1", labels=LABELS))
    assert static_reason(ni, profile_of(pod(spec={"nodeSelector": {"zone": "a"}}))) is None
    reason = "node(s) didn't match Pod's node affinity/selector"
    assert static_reason(ni, profile_of(pod(spec={"nodeSelector": {"zone": "b"}}))) == reason
    term = {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}
    assert static_reason(ni, profile_of(pod(spec=affinity(term)))) == reason
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    assert static_reason(ni, profile_of(pod(spec=affinity(term)))) is None


# ---- taints ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tol", "ok"),
    [
        ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "v"}, True),  # Equal is the default; empty effect matches all
        ({"key": "k", "operator": "Equal", "value": "w"}, False),
        ({"key": "k", "operator": "Exists"}, True),
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
        ({"operator": "Exists", "effect": "NoExecute"}, False),
        ({"value": "v"}, False),  # empty key needs Exists
    ],
)
def test_tolerates(tol: Obj, ok: bool) -> None:
    assert tolerates(tol, {"key": "k", "value": "v", "effect": "NoSchedule"}) is ok


def test_taint_filter_effects() -> None:
    taints = [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "soft", "value": "x", "effect": "PreferNoSchedule"},
    ]
    ni = info(node("n", taints=taints))
    assert static_reason(ni, profile_of(pod())) == "node(s) had untolerated taint {dedicated: gpu}"
    tol = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert static_reason(ni, profile_of(pod(spec={"tolerations": tol}))) is None  # PreferNoSchedule ignored
    ni = info(node("n", taints=[{"key": "evict", "effect": "NoExecute"}]))
    assert static_reason(ni, profile_of(pod())) == "node(s) had untolerated taint {evict: }"


def test_not_ready_and_cordoned_nodes() -> None:
    assert static_reason(info(node("n", ready="False")), profile_of(pod())) is not None
    assert static_reason(info(node("n", ready="Unknown")), profile_of(pod())) is not None
    assert static_reason(info(node("n", ready=None)), profile_of(pod())) is not None
    # The default NoExecute tolerations the API server adds do not cover the NoSchedule form.
    default_tols = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]
    assert static_reason(info(node("n", ready="False")), profile_of(pod(spec={"tolerations": default_tols})))
    cordoned = info(node("n", unschedulable=True))
    assert static_reason(cordoned, profile_of(pod())) == "node(s) were unschedulable"
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert static_reason(cordoned, profile_of(pod(spec={"tolerations": tol}))) is None


def test_prefer_no_schedule_count() -> None:
    taints = [{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]
    assert count_intolerable_prefer(taints, []) == 2
    assert count_intolerable_prefer(taints, [{"key": "a", "operator": "Exists"}]) == 1
    # A toleration for another effect does not soften a PreferNoSchedule taint.
    assert count_intolerable_prefer(taints, [{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]) == 2


# ---- scores ----------------------------------------------------------------------------------


def test_least_requested() -> None:
    ni = info(node("n", cpu="1", memory="1000Mi"))
    assert least_requested(ni, profile_of(pod(cpu="500m", memory="500Mi"))) == 50
    ni.add(profile_of(pod("a", cpu="500m", memory="500Mi")))
    assert least_requested(ni, profile_of(pod(cpu="250m", memory="250Mi"))) == 25
    assert least_requested(ni, profile_of(pod(cpu="2", memory="2Gi"))) == 0  # over capacity


def test_normalize_and_spread_score() -> None:
    assert normalize(5, 10) == 50
    assert normalize(0, 0) == 0
    assert normalize(0, 0, reverse=True) == 100
    assert normalize(10, 10, reverse=True) == 0
    assert spread_score(0, 2) == 100
    assert spread_score(2, 2) == 0
    assert spread_score(1, 2) == 50


def test_ties_are_broken_randomly() -> None:
    st = cluster(node("a"), node("b"), node("c"), node("d", cpu="2"))
    picks = Counter(st.schedule(profile_of(pod(f"p{i}"))).node for i in range(300))
    assert set(picks) == {"a", "b", "c"}  # d is always less free
    assert min(picks.values()) > 60


def test_fast_loops_agree_with_the_reference_filters_and_scores() -> None:
    rng = random.Random(7)
    nodes = []
    for i in range(200):
        ni = info(
            node(
                f"n{i}",
                cpu=str(rng.randint(1, 8)),
                memory=f"{rng.randint(1, 16)}Gi",
                pods=str(rng.randint(1, 20)),
            )
        )
        for j in range(rng.randint(0, 10)):
            ni.add(
                profile_of(pod(f"x{i}-{j}", cpu=f"{rng.randint(0, 900)}m", memory=f"{rng.randint(0, 900)}Mi"))
            )
        nodes.append(ni)
    for k in range(50):
        p = profile_of(pod(f"p{k}", cpu=f"{rng.randint(0, 3000)}m", memory=f"{rng.randint(0, 3000)}Mi"))
        for _ in range(2):  # computed, then memoised
            feasible, scores, examined = scan(nodes, p, len(nodes), k)
            assert examined == len(nodes)
            assert feasible == [ni for ni in nodes if fits(ni, p)]
            assert scores == [least_requested(ni, p) for ni in feasible]


def test_workload_keys() -> None:
    assert workload_of(pod(owner_uid="u1")) == "uid:u1"
    assert workload_of(pod(labels={"app": "x"})) == workload_of(pod("other", labels={"app": "x"}))
    assert workload_of(pod(labels={"app": "x"})) != workload_of(pod(labels={"app": "y"}))
    assert workload_of(pod()) is None


def test_num_feasible_to_find() -> None:
    assert num_feasible_to_find(50) == 50
    assert num_feasible_to_find(1000) == 420  # 50% - 1000/125 %
    assert num_feasible_to_find(5000) == 500  # 10%
    assert num_feasible_to_find(100_000) == 5000  # floor of 5%
    assert num_feasible_to_find(150) == 100  # never fewer than 100
    assert num_feasible_to_find(1000, 100) == 1000
    assert num_feasible_to_find(1000, 20) == 200


def test_failure_message_like_upstream() -> None:
    msg = failure_message(3, {"node(s) didn't match Pod's node affinity/selector": 1, "Insufficient cpu": 2})
    assert (
        msg
        == "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
    )
    assert failure_message(0, {}) == "no nodes available to schedule pods"


# ---- ClusterState ----------------------------------------------------------------------------


def cluster(*nodes: Obj, seed: int = 1) -> ClusterState:
    st = ClusterState(rng=random.Random(seed))
    for n in nodes:
        st.set_node(n)
    return st


def schedule_and_place(st: ClusterState, p: Obj) -> str | None:
    prof = profile_of(p)
    d = st.schedule(prof)
    if d.node is not None:
        st.place(prof, d.node, assumed=True)
    return d.node


@pytest.mark.parametrize("seed", range(10))
def test_spread_five_replicas_two_two_one(seed: int) -> None:
    st = cluster(node("n1"), node("n2"), node("n3"), seed=seed)
    chosen = [schedule_and_place(st, pod(f"p{i}", owner_uid="rs-1", cpu="10m")) for i in range(5)]
    assert sorted(Counter(chosen).values()) == [1, 2, 2]


def test_spread_bare_pods_by_labels() -> None:
    st = cluster(node("n1"), node("n2"), node("n3"))
    chosen = [schedule_and_place(st, pod(f"p{i}", labels={"app": "web"})) for i in range(6)]
    assert sorted(Counter(chosen).values()) == [2, 2, 2]


def test_resources_decide_and_message() -> None:
    st = cluster(node("small", cpu="1"), node("big", cpu="8"), node("other", labels={"pool": "b"}, cpu="8"))
    p = pod("p", cpu="2", spec={"nodeSelector": {"kubernetes.io/hostname": "small"}})
    d = st.schedule(profile_of(p))
    assert d.node is None
    assert d.message == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
    )
    assert schedule_and_place(st, pod("q", cpu="6")) in ("big", "other")


def test_assumed_pods_count_immediately() -> None:
    st = cluster(node("n1", cpu="1"), node("n2", cpu="1"))
    placed = [schedule_and_place(st, pod(f"p{i}", cpu="600m")) for i in range(3)]
    assert sorted(str(n) for n in placed[:2]) == [
        "n1",
        "n2",
    ]  # the first assumption already counts for the second
    assert placed[2] is None


def test_forget_and_confirm() -> None:
    st = cluster(node("n1", cpu="1"))
    prof = profile_of(pod("p", cpu="1"))
    st.place(prof, "n1", assumed=True)
    assert st.schedule(profile_of(pod("q", cpu="1"))).node is None
    assert st.forget_assumed(prof.key)
    assert st.schedule(profile_of(pod("q", cpu="1"))).node == "n1"
    st.place(prof, "n1", assumed=True)
    assert st.confirm(prof.key, "n1")
    assert not st.forget_assumed(prof.key)  # confirmed by the informer: stays
    assert st.nodes["n1"].req_cpu == 1000
    st.place(prof, "n1", assumed=False)  # the informer repeating itself does not double count
    assert st.nodes["n1"].npods == 1
    assert st.unplace(prof.key) is not None
    assert st.nodes["n1"].req_cpu == 0


def test_pods_on_unknown_node_are_kept_for_when_it_appears() -> None:
    st = cluster()
    st.place(profile_of(pod("p", cpu="3")), "late", assumed=False)
    assert st.schedule(profile_of(pod("q"))).message == "no nodes available to schedule pods"
    st.set_node(node("late", cpu="4"))
    assert st.schedule(profile_of(pod("q", cpu="2"))).node is None
    assert st.schedule(profile_of(pod("q", cpu="1"))).node == "late"


def test_static_cache_follows_node_changes() -> None:
    st = cluster(node("n1", labels={"pool": "a"}))
    p = profile_of(pod(spec={"nodeSelector": {"pool": "b"}}))
    assert st.schedule(p).node is None
    assert st.set_node(node("n1", labels={"pool": "b"}))
    assert st.schedule(p).node == "n1"
    epoch = st.epoch
    assert not st.set_node(node("n1", labels={"pool": "b"}))  # a heartbeat changes nothing
    assert st.epoch == epoch
    st.set_node(node("n1", labels={"pool": "b"}, unschedulable=True))
    assert st.schedule(p).node is None
    st.remove_node("n1")
    assert st.node_list() == []


def test_preferred_affinity_and_prefer_no_schedule_steer() -> None:
    st = cluster(node("n1", labels={"disk": "ssd"}), node("n2"), node("n3"))
    pref = {
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "preference": {
                            "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
                        },
                    }
                ]
            }
        }
    }
    assert all(st.schedule(profile_of(pod(spec=pref))).node == "n1" for _ in range(20))
    st = cluster(
        node("n1", taints=[{"key": "meh", "effect": "PreferNoSchedule"}]),
        node("n2", taints=[{"key": "meh", "effect": "PreferNoSchedule"}]),
        node("n3"),
    )
    assert all(st.schedule(profile_of(pod())).node == "n3" for _ in range(20))


def test_sampling_rotates_over_all_nodes() -> None:
    st = cluster(*(node(f"n{i:04d}") for i in range(1000)))
    seen: set[str] = set()
    for i in range(50):
        d = st.schedule(profile_of(pod(f"p{i}")))
        assert d.node is not None
        assert d.evaluated == 420
        seen.add(d.node)
    assert len(seen) > 40


def test_fast_path_chooses_among_the_reference_best() -> None:
    """The slice-based fast path picks a node the straightforward scan + score ranks best."""
    rng = random.Random(3)
    st = cluster(
        *(node(f"n{i:03d}", cpu=str(rng.randint(1, 4)), pods=str(rng.randint(1, 3))) for i in range(300))
    )
    for k in range(400):
        prof = profile_of(pod(f"p{k}", cpu=f"{rng.choice([0, 100, 250])}m", owner_uid=f"w{k % 7}"))
        entry = st._static_entry(prof)
        nodes = entry.nodes
        start = entry.next_start
        want = num_feasible_to_find(len(nodes))
        feasible, scores, examined = scan(nodes[start:] + nodes[:start], prof, want, st._shape(prof))
        d = st.schedule(prof)
        assert d.evaluated == examined
        if not feasible:
            assert d.node is None
            continue
        scores = st.score(feasible, scores, prof)
        best = {ni.name for s, ni in zip(scores, feasible, strict=True) if s == max(scores)}
        assert d.node in best
        st.place(prof, d.node, assumed=True)
        if k % 5 == 0:  # pods go away too
            victim = rng.choice(list(st.placed))
            st.unplace(victim)
