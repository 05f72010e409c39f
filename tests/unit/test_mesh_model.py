"""ServiceTable and the parsing of Services, EndpointSlices and DestinationRules."""

from __future__ import annotations

from edgemesh.model import (
    CONSISTENT_HASH,
    LB_ANNOTATION,
    RANDOM,
    ROUND_ROBIN,
    SKIP_LABEL,
    LbPolicy,
    Service,
    ServiceKey,
    ServiceTable,
    destination_rule_target,
    parse_lb_annotation,
    service_from_obj,
)

WEB = ServiceKey("default", "web")


def get(t: ServiceTable, key: ServiceKey = WEB) -> Service:
    s = t.service(key)
    assert s is not None
    return s


def svc(name="web", ns="default", cluster_ip="10.96.0.10", ports=None, labels=None, annotations=None, **spec):
    s = {
        "clusterIP": cluster_ip,
        "ports": ports or [{"name": "http", "port": 80, "targetPort": "http"}],
        **spec,
    }
    md = {"namespace": ns, "name": name, "labels": labels or {}, "annotations": annotations or {}}
    return {"metadata": md, "spec": s}


def eps_slice(service="web", ports=None, endpoints=()):
    return {
        "metadata": {"labels": {"kubernetes.io/service-name": service}},
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def ep(ip, ready=True, node="n1", hostname=None):
    e = {"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}
    if hostname:
        e["hostname"] = hostname
    return e


def test_service_parsing_defaults_and_ports():
    s = service_from_obj(
        svc(ports=[{"port": 53, "protocol": "UDP"}, {"name": "x", "port": 80, "targetPort": 9090}])
    )
    assert s is not None
    assert s.cluster_ips == ("10.96.0.10",)
    assert not s.headless and s.type == "ClusterIP" and s.lb_policy.kind == ROUND_ROBIN
    assert s.ports[0].name == "" and s.ports[0].protocol == "UDP" and s.ports[0].target_port == 53
    assert s.ports[1].target_port == 9090


def test_headless_external_name_and_dual_stack():
    h = service_from_obj(svc(cluster_ip="None"))
    assert h is not None and h.headless and h.cluster_ips == ()
    x = service_from_obj(svc(cluster_ip=None, type="ExternalName", externalName="db.example.com."))
    assert x is not None and x.external_name == "db.example.com" and not x.headless
    d = service_from_obj(svc(clusterIPs=["10.96.0.10", "fd00:0::a"]))
    assert d is not None and d.cluster_ips == ("10.96.0.10", "fd00::a")


def test_skip_label_removes_service():
    t = ServiceTable()
    t.upsert_service(svc())
    assert t.service(WEB) is not None
    assert t.upsert_service(svc(labels={SKIP_LABEL: "other"})) is None
    assert t.service(WEB) is None and t.by_cluster_ip("10.96.0.10") is None


def test_endpoints_resolved_ready_first_and_deduplicated():
    t = ServiceTable()
    t.upsert_service(svc())
    t.upsert_slice("default", "web-a", eps_slice(endpoints=[ep("10.1.0.9", ready=False), ep("10.1.0.3")]))
    # The same address in a second slice (controller moving it): ready wins, listed once.
    t.upsert_slice(
        "default", "web-b", eps_slice(endpoints=[ep("10.1.0.9", ready=True), ep("10.1.0.2", False)])
    )
    got = t.endpoints(WEB, "http")
    assert [(e.ip, e.port, e.ready) for e in got] == [
        ("10.1.0.3", 8080, True),
        ("10.1.0.9", 8080, True),
        ("10.1.0.2", 8080, False),
    ]
    assert t.endpoints(WEB, "nope") == []
    t.delete_slice("default", "web-b")
    assert [(e.ip, e.ready) for e in t.endpoints(WEB, "http")] == [("10.1.0.3", True), ("10.1.0.9", False)]


def test_nil_ready_is_ready_and_nil_port_means_service_target():
    t = ServiceTable()
    t.upsert_service(svc(ports=[{"name": "", "port": 80, "targetPort": 8081}]))
    t.upsert_slice(
        "default", "web-a", eps_slice(ports=[{"name": ""}], endpoints=[{"addresses": ["10.1.0.1"]}])
    )
    (e,) = t.endpoints(WEB, "")
    assert e.ready and e.port == 8081


def test_subscribers_hear_changes_and_batches_coalesce():
    t = ServiceTable()
    heard: list[ServiceKey | None] = []
    unsubscribe = t.subscribe(heard.append)
    t.upsert_service(svc())
    t.upsert_service(svc())  # identical: nothing changed
    assert heard == [WEB]
    t.upsert_slice("default", "web-a", eps_slice(endpoints=[ep("10.1.0.1")]))
    assert heard == [WEB, WEB]
    with t.batch():
        t.upsert_service(svc(name="a"))
        t.upsert_service(svc(name="b", cluster_ip="10.96.0.11"))
        assert heard == [WEB, WEB]
    assert heard == [WEB, WEB, None]
    unsubscribe()
    t.delete_service("default", "web")
    assert len(heard) == 3


def test_failing_subscriber_does_not_stop_others():
    t = ServiceTable()
    heard: list[ServiceKey | None] = []

    def boom(_key):
        raise RuntimeError("subscriber bug")

    t.subscribe(boom)
    t.subscribe(heard.append)
    t.upsert_service(svc())
    assert heard == [WEB]


def test_indices_follow_changes():
    t = ServiceTable()
    t.upsert_service(svc())
    assert (s := t.by_cluster_ip("10.96.0.10")) is not None and s.key == WEB
    t.upsert_service(svc(cluster_ip="10.96.0.99"))
    assert (
        t.by_cluster_ip("10.96.0.10") is None
        and (s := t.by_cluster_ip("10.96.0.99")) is not None
        and s.key == WEB
    )
    t.upsert_slice("default", "web-a", eps_slice(endpoints=[ep("10.1.0.1", hostname="web-0")]))
    (ref,) = t.pods_by_ip("10.1.0.1")
    assert ref.service == WEB and ref.hostname == "web-0"
    t.delete_service("default", "web")
    assert t.pods_by_ip("10.1.0.1") == [] and t.by_cluster_ip("10.96.0.99") is None
    t.upsert_service(svc())  # the slice was kept: the service's endpoints come back with it
    assert [e.ip for e in t.endpoints(WEB, "http")] == ["10.1.0.1"]


def test_lb_annotation_and_destination_rule_precedence():
    assert parse_lb_annotation("random") == LbPolicy(RANDOM)
    assert parse_lb_annotation("CONSISTENT_HASH:header=X-User") == LbPolicy(
        CONSISTENT_HASH, hash_header="X-User"
    )
    assert parse_lb_annotation("consistent_hash:source-ip") == LbPolicy(CONSISTENT_HASH, hash_source_ip=True)
    assert parse_lb_annotation("LEAST_CONN") is None
    t = ServiceTable()
    t.upsert_service(svc(annotations={LB_ANNOTATION: "RANDOM"}))
    assert get(t).lb_policy.kind == RANDOM
    dr = {
        "metadata": {"namespace": "default", "name": "web-dr"},
        "spec": {
            "host": "web",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-id"}}},
        },
    }
    target, policy = destination_rule_target(dr)
    assert target == WEB and policy == LbPolicy(CONSISTENT_HASH, hash_header="x-id")
    heard: list[ServiceKey | None] = []
    t.subscribe(heard.append)
    t.set_destination_rule("default", "web-dr", target, policy)
    assert get(t).lb_policy == policy and heard == [WEB]
    t.delete_destination_rule("default", "web-dr")
    assert get(t).lb_policy.kind == RANDOM


def test_destination_rule_hosts():
    def host(h, ns="shop"):
        return destination_rule_target({"metadata": {"namespace": ns}, "spec": {"host": h}})[0]

    assert host("orders") == ServiceKey("shop", "orders")
    assert host("orders.other") == ServiceKey("other", "orders")
    assert host("orders.other.svc.cluster.local") == ServiceKey("other", "orders")
    assert host("api.example.com") is None and host("*.shop.svc.cluster.local") is None
    simple = {"spec": {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}, "metadata": {}}
    assert destination_rule_target(simple) == (ServiceKey("default", "a"), LbPolicy(RANDOM))
