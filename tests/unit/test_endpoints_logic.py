"""Endpoint computation (Endpoints subsets, EndpointSlice packing and reuse) and service-account
token signing, without a server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from kubeedge.apiserver.satokens import ServiceAccountTokens, SigningKey
from kubeedge.controllers.endpoints import (
    POD_LABEL_INDEX,
    SERVICE_SELECTOR_INDEX,
    compute_subsets,
    desired_endpoints,
    endpoints_up_to_date,
    normalize_subsets,
    pod_label_pairs,
    pods_for_service,
    service_selector_pairs,
    services_for_pod,
)
from kubeedge.controllers.endpointslices import (
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    SliceTracker,
    desired_groups,
    plan_slices,
)
from kubeedge.controllers.framework import Informer
from kubeedge.kube import PODS, SERVICES, KubeClient

Obj = dict[str, Any]
NS = "shop"


def svc(name: str = "web", **spec: Any) -> Obj:
    base: Obj = {
        "selector": {"app": "web"},
        "clusterIP": "10.96.0.10",
        "ipFamilies": ["IPv4"],
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    }
    base.update(spec)
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": {"tier": "front"}},
        "spec": base,
    }


def pod(
    name: str,
    ip: str | None = "10.0.0.1",
    *,
    ready: bool = True,
    node: str = "n1",
    labels: dict[str, str] | None = None,
    ports: list[Obj] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> Obj:
    status: Obj = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    md: Obj = {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels or {"app": "web"}}
    if deleting:
        md["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {
        "metadata": md,
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}], **spec},
        "status": status,
    }


def ips(addrs: list[Obj] | None) -> list[str]:
    return [a["ip"] for a in addrs or []]


# ---- Endpoints ---------------------------------------------------------------------------------


def test_ready_and_not_ready_pods_split_and_carry_node_and_target() -> None:
    subsets = compute_subsets(svc(), [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", ready=False, node="n2")])
    assert len(subsets) == 1
    s = subsets[0]
    assert ips(s["addresses"]) == ["10.0.0.1"] and ips(s["notReadyAddresses"]) == ["10.0.0.2"]
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    a = s["addresses"][0]
    assert a["nodeName"] == "n1"
    assert a["targetRef"] == {"kind": "Pod", "namespace": NS, "name": "a", "uid": "uid-a"}
    assert s["notReadyAddresses"][0]["nodeName"] == "n2"


def test_pods_without_ip_terminating_or_finished_are_left_out() -> None:
    finished = pod("done", "10.0.0.4", restartPolicy="Never")
    finished["status"]["phase"] = "Succeeded"
    subsets = compute_subsets(
        svc(), [pod("noip", None), pod("bye", "10.0.0.3", deleting=True), finished, pod("ok", "10.0.0.5")]
    )
    assert [ips(s.get("addresses")) for s in subsets] == [["10.0.0.5"]]


def test_named_port_resolving_differently_splits_subsets_like_upstream() -> None:
    service = svc(
        ports=[
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
        ]
    )
    a = pod("a", "10.0.0.1", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}])
    b = pod("b", "10.0.0.2", ports=[{"name": "web", "containerPort": 8081, "protocol": "TCP"}])
    c = pod("c", "10.0.0.3", ports=[])  # no port named "web": only the numeric metrics port
    subsets = compute_subsets(service, [a, b, c])
    by_ports = {tuple((p["name"], p["port"]) for p in s["ports"]): ips(s.get("addresses")) for s in subsets}
    # Upstream repacking: ports served by exactly the same addresses share a subset.
    assert by_ports == {
        (("http", 8080),): ["10.0.0.1"],
        (("http", 8081),): ["10.0.0.2"],
        (("metrics", 9090),): ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    }


def test_same_named_port_numbers_share_one_subset() -> None:
    service = svc(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}])
    web = [{"name": "web", "containerPort": 8080, "protocol": "TCP"}]
    subsets = compute_subsets(service, [pod("a", "10.0.0.1", ports=web), pod("b", "10.0.0.2", ports=web)])
    assert len(subsets) == 1 and ips(subsets[0]["addresses"]) == ["10.0.0.1", "10.0.0.2"]
    assert subsets[0]["ports"][0]["port"] == 8080


def test_publish_not_ready_addresses_puts_everyone_in_addresses() -> None:
    subsets = compute_subsets(
        svc(publishNotReadyAddresses=True), [pod("a", "10.0.0.1", ready=False), pod("b", "10.0.0.2")]
    )
    assert ips(subsets[0]["addresses"]) == ["10.0.0.1", "10.0.0.2"]
    assert "notReadyAddresses" not in subsets[0]


def test_headless_service_without_ports_lists_addresses_and_hostnames() -> None:
    service = svc(clusterIP="None", ports=[])
    p = pod("db-0", "10.0.0.7", hostname="db-0", subdomain="web")
    subsets = compute_subsets(service, [p, pod("other", "10.0.0.8", hostname="x", subdomain="elsewhere")])
    assert len(subsets) == 1 and "ports" not in subsets[0]
    by_ip = {a["ip"]: a for a in subsets[0]["addresses"]}
    assert by_ip["10.0.0.7"]["hostname"] == "db-0"
    assert "hostname" not in by_ip["10.0.0.8"]


def test_normalized_subsets_ignore_order_and_defaults() -> None:
    subsets = compute_subsets(svc(), [pod("a", "10.0.0.1"), pod("b", "10.0.0.2")])
    stored = [
        {
            "addresses": list(reversed(subsets[0]["addresses"])),
            "ports": [{"name": "http", "port": 8080}],  # protocol defaulted by the reader
        }
    ]
    assert normalize_subsets(stored) == normalize_subsets(subsets)


def test_only_real_changes_need_a_write() -> None:
    service = svc()
    pods = [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", ready=False)]
    want = desired_endpoints(service, pods)
    assert want["metadata"]["labels"] == {"tier": "front"}
    # What the server hands back: reordered, defaulted, with metadata of its own.
    current = {
        "metadata": {"name": "web", "labels": {"tier": "front"}, "resourceVersion": "9", "uid": "u"},
        "subsets": [
            {
                "notReadyAddresses": want["subsets"][0]["notReadyAddresses"],
                "addresses": want["subsets"][0]["addresses"],
                "ports": [{"port": 8080, "name": "http", "protocol": "TCP"}],
            }
        ],
    }
    assert endpoints_up_to_date(current, want)
    pods[1]["status"]["conditions"][0]["status"] = "True"
    assert not endpoints_up_to_date(current, desired_endpoints(service, pods))
    relabelled = svc()
    relabelled["metadata"]["labels"]["tier"] = "back"
    assert not endpoints_up_to_date(
        current, desired_endpoints(relabelled, [*pods[:1], pod("b", "10.0.0.2", ready=False)])
    )


def test_selector_index_finds_matching_services_only() -> None:
    services = Informer(cast(KubeClient, None), SERVICES)
    services.add_index(SERVICE_SELECTOR_INDEX, service_selector_pairs)
    services._apply("ADDED", svc("web"))
    services._apply("ADDED", svc("api", selector={"app": "web", "role": "api"}))
    services._apply("ADDED", svc("manual", selector=None))
    assert services_for_pod(services, pod("a")) == {(NS, "web")}
    assert services_for_pod(services, pod("b", labels={"app": "web", "role": "api"})) == {
        (NS, "web"),
        (NS, "api"),
    }
    other_ns = pod("c")
    other_ns["metadata"]["namespace"] = "elsewhere"
    assert services_for_pod(services, other_ns) == set()

    pods = Informer(cast(KubeClient, None), PODS)
    pods.add_index(POD_LABEL_INDEX, pod_label_pairs)
    for p in (pod("a"), pod("b", labels={"app": "web", "role": "api"}), pod("z", labels={"app": "db"})):
        pods._apply("ADDED", p)
    assert sorted(
        p["metadata"]["name"]
        for p in pods_for_service(pods, svc("api", selector={"app": "web", "role": "api"}))
    ) == ["b"]


# ---- EndpointSlices ----------------------------------------------------------------------------


def many_pods(n: int, start: int = 0) -> list[Obj]:
    return [pod(f"p{i:03d}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(start, start + n)]


def stored(plan_objs: list[Obj], first_rv: int = 1) -> list[Obj]:
    """Slices as the server would return them after creation."""
    out = []
    for i, o in enumerate(plan_objs):
        o = {**o, "metadata": {**o["metadata"]}}
        o["metadata"]["name"] = o["metadata"].pop("generateName", "") + f"s{i}"
        o["metadata"]["resourceVersion"] = str(first_rv + i)
        out.append(o)
    return out


def test_slices_pack_at_most_100_endpoints_with_labels_and_owner() -> None:
    service = svc()
    plan = plan_slices(service, [], desired_groups(service, many_pods(250)))
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]
    assert not plan.update and not plan.delete
    s = plan.create[0]
    assert s["addressType"] == "IPv4" and s["metadata"]["generateName"] == "web-"
    assert s["metadata"]["labels"][SERVICE_NAME_LABEL] == "web"
    assert s["metadata"]["labels"][MANAGED_BY_LABEL] == "endpointslice-controller.k8s.io"
    assert s["metadata"]["labels"]["tier"] == "front"
    assert s["metadata"]["ownerReferences"][0]["uid"] == "uid-web"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    ep = s["endpoints"][0]
    assert ep["nodeName"] == "n1" and ep["conditions"] == {
        "ready": True,
        "serving": True,
        "terminating": False,
    }


def test_slices_are_reused_not_churned() -> None:
    service = svc()
    existing = stored(plan_slices(service, [], desired_groups(service, many_pods(150))).create)
    # Nothing changed: nothing to write.
    assert plan_slices(service, existing, desired_groups(service, many_pods(150))).empty()
    # One pod gone, one pod became not ready, two new pods: only the touched slices change,
    # the new pods fill the free room instead of a new slice.
    pods = many_pods(150)
    gone = pods.pop(3)
    pods[10]["status"]["conditions"][0]["status"] = "False"
    pods += many_pods(2, start=150)
    plan = plan_slices(service, existing, desired_groups(service, pods))
    assert not plan.create and not plan.delete
    names = {s["metadata"]["name"] for s in plan.update}
    assert 1 <= len(names) <= 2
    after = {
        e["targetRef"]["name"]: e
        for s in [*plan.update, *[x for x in existing if x["metadata"]["name"] not in names]]
        for e in s["endpoints"]
    }
    assert len(after) == 151 and gone["metadata"]["name"] not in after
    assert after[pods[10]["metadata"]["name"]]["conditions"]["ready"] is False
    assert all(len(s["endpoints"]) <= 100 for s in plan.update)


def test_emptied_slice_is_deleted_and_no_endpoints_leaves_a_placeholder() -> None:
    service = svc()
    existing = stored(plan_slices(service, [], desired_groups(service, many_pods(150))).create)
    plan = plan_slices(service, existing, desired_groups(service, many_pods(50)))
    assert len(plan.delete) + len(plan.update) >= 1 and not plan.create
    remaining = [s for s in existing if s not in plan.delete]
    assert len(remaining) == 1
    empty = plan_slices(service, [], {})
    assert len(empty.create) == 1 and empty.create[0]["endpoints"] == [] and empty.create[0]["ports"] == []
    placeholder = stored(empty.create)
    assert plan_slices(service, placeholder, {}).empty()


def test_terminating_and_ipv6_pods() -> None:
    service = svc(ipFamilies=["IPv4", "IPv6"])
    dual = pod("dual", "10.0.0.1")
    dual["status"]["podIPs"] = [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]
    leaving = pod("leaving", "10.0.0.2", deleting=True)
    groups = desired_groups(service, [dual, leaving], zone_of=lambda n: "zone-a")
    plan = plan_slices(service, [], groups)
    by_type = {s["addressType"]: s for s in plan.create}
    assert set(by_type) == {"IPv4", "IPv6"}
    assert [e["addresses"] for e in by_type["IPv6"]["endpoints"]] == [["fd00::1"]]
    v4 = {e["targetRef"]["name"]: e for e in by_type["IPv4"]["endpoints"]}
    assert v4["leaving"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert v4["dual"]["zone"] == "zone-a"


def test_named_ports_resolving_differently_get_their_own_slices() -> None:
    service = svc(ports=[{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}])
    a = pod("a", "10.0.0.1", ports=[{"name": "web", "containerPort": 8080, "protocol": "TCP"}])
    b = pod("b", "10.0.0.2", ports=[{"name": "web", "containerPort": 8081, "protocol": "TCP"}])
    plan = plan_slices(service, [], desired_groups(service, [a, b]))
    assert sorted(s["ports"][0]["port"] for s in plan.create) == [8080, 8081]


def test_tracker_waits_for_own_writes() -> None:
    t = SliceTracker()
    key = (NS, "web")
    t.wrote(key, {"metadata": {"name": "web-abc", "resourceVersion": "7"}})
    assert t.stale(key)
    assert not t.observe(key, "web-abc", {"metadata": {"name": "web-abc", "resourceVersion": "6"}})
    assert t.observe(key, "web-abc", {"metadata": {"name": "web-abc", "resourceVersion": "7"}})
    assert not t.stale(key)
    t.deleted(key, "web-old")
    assert t.stale(key) and t.observe(key, "web-old", None) and not t.stale(key)


# ---- service-account tokens --------------------------------------------------------------------


class _Rec:
    def __init__(self, obj: Obj) -> None:
        self.obj = obj


class _Objects:
    """A stand-in for the store's point reads (the integration tests use the real server)."""

    def __init__(self) -> None:
        self.objs: dict[tuple[str, str, str], Obj] = {}

    def get_now(self, key: str, ns: str, name: str) -> _Rec:
        from kubeedge.store import NotFound

        try:
            return _Rec(self.objs[(key, ns, name)])
        except KeyError:
            raise NotFound(key) from None


def test_signing_key_round_trip_and_tampering(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "sa.key"
    key = SigningKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load_or_create(path).kid == key.kid  # created once, then reused
    token = key.sign({"sub": "x", "n": 1})
    assert key.verify(token) == {"sub": "x", "n": 1}
    head, _body, sig = token.split(".")
    forged_body = SigningKey.load_or_create(tmp_path / "other.key").sign({"sub": "admin"}).split(".")[1]
    assert key.verify(f"{head}.{forged_body}.{sig}") is None
    assert key.verify(SigningKey.load_or_create(tmp_path / "other.key").sign({"sub": "x"})) is None
    assert key.verify("not-a-jwt") is None and key.verify("a.b.c") is None


def test_token_authentication_checks_expiry_audience_and_bound_objects(tmp_path: Path) -> None:
    objs = _Objects()
    tokens = ServiceAccountTokens(cast(Any, objs), tmp_path, "cluster.local")
    info = cast(Any, None)
    objs.objs[("serviceaccounts", NS, "default")] = {"metadata": {"name": "default", "uid": "sa-1"}}
    objs.objs[("pods", NS, "a")] = {
        "metadata": {"name": "a", "uid": "pod-1"},
        "spec": {"serviceAccountName": "default", "nodeName": "n1"},
    }
    tr = tokens.token_request(
        info,
        NS,
        "default",
        {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "a"}}},
        None,
    )
    assert tr["spec"]["expirationSeconds"] == 3600
    ident = tokens.authenticate(tr["status"]["token"])
    assert ident is not None and ident.user == f"system:serviceaccount:{NS}:default"
    assert set(ident.groups) == {
        "system:serviceaccounts",
        f"system:serviceaccounts:{NS}",
        "system:authenticated",
    }
    assert ident.extra["authentication.kubernetes.io/pod-name"] == ["a"]

    claims = tokens.key.verify(tr["status"]["token"])
    assert claims is not None
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["kubernetes.io"]["pod"] == {"name": "a", "uid": "pod-1"}
    now = int(time.time())
    expired = tokens.key.sign({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})
    assert tokens.authenticate(expired) is None
    other_aud = tokens.key.sign({**claims, "aud": ["https://vault.example"]})
    assert tokens.authenticate(other_aud) is None

    objs.objs[("pods", NS, "a")]["metadata"]["uid"] = "pod-2"  # the pod was recreated
    assert tokens.authenticate(tr["status"]["token"]) is None
    plain = tokens.token_request(info, NS, "default", {"spec": {"expirationSeconds": 100000000}}, None)
    assert plain["spec"]["expirationSeconds"] == 48 * 3600
    assert tokens.authenticate(plain["status"]["token"]) is not None
    del objs.objs[("serviceaccounts", NS, "default")]
    assert tokens.authenticate(plain["status"]["token"]) is None
