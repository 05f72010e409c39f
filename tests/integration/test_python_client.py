"""The official `kubernetes` Python client, unchanged, against our API server.

Every response goes through the client's strict (pydantic) models: a missing required field or a
wrongly typed one fails the call, so these tests also prove the wire format of every verb."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.apiserver_proc import ApiServerProc

# API-level tests: only the controllers that finish deletions (namespaces, cascades) run.
APISERVER_CONTROLLERS = "namespace,garbagecollector"

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


# ---- fixtures and helpers ----------------------------------------------------------------------


def make_api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture(scope="module")
def api(apiserver: ApiServerProc) -> Iterator[client.ApiClient]:
    c = make_api_client(apiserver.kubeconfig)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def v1(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(v1: client.CoreV1Api) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    v1.create_namespace({"metadata": {"name": name}})
    return name


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_model(api: client.ApiClient, data: Any, model: str) -> Any:
    """Deserialize a plain response (methods typed `object`) through the strict model as well."""
    return api.deserialize(json.dumps(data), model, "application/json")


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def api_error(fn: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as ei:
        fn()
    e = ei.value
    body = json.loads(e.body) if e.body else {}
    return int(e.status), body


def pod_body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
    }


def template(app: str, restart: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "nginx:1.27"}]},
    }


NODE_INFO = {
    "machineID": "m-1",
    "systemUUID": "s-1",
    "bootID": "b-1",
    "kernelVersion": "6.1.0",
    "osImage": "Debian GNU/Linux 12",
    "containerRuntimeVersion": "containerd://1.7.0",
    "kubeletVersion": "v1.37.0-kubeedge",
    "kubeProxyVersion": "v1.37.0-kubeedge",
    "operatingSystem": "linux",
    "architecture": "amd64",
}


def node_body(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": "", "test": "yes"}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "7Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "EdgeReady",
                    "message": "edge node is posting ready status",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
            "nodeInfo": NODE_INFO,
        },
    }


# ---- CRUD of built-in resources --------------------------------------------------------------


def test_namespace_crud(v1: client.CoreV1Api, api: client.ApiClient) -> None:
    name = uniq("nscrud")
    created = v1.create_namespace({"metadata": {"name": name, "labels": {"team": "a"}}})
    assert isinstance(created, client.V1Namespace)
    assert created.metadata.uid and created.metadata.resource_version
    assert created.status.phase == "Active"
    got = v1.read_namespace(name)
    assert got.metadata.labels["team"] == "a"
    assert got.metadata.labels["kubernetes.io/metadata.name"] == name
    lst = v1.list_namespace(label_selector="team=a")
    assert name in [n.metadata.name for n in lst.items]
    patched = v1.patch_namespace(name, {"metadata": {"labels": {"team": "b"}}})
    assert patched.metadata.labels["team"] == "b"
    deleted = v1.delete_namespace(name)
    assert deleted["kind"] == "Namespace" and deleted["metadata"]["name"] == name
    as_model(api, deleted, "V1Namespace")

    def gone() -> bool:
        try:
            v1.read_namespace(name)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, what="namespace deletion")


def test_configmap_crud(v1: client.CoreV1Api, api: client.ApiClient, ns: str) -> None:
    cm = v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm1"}, "data": {"a": "1"}})
    assert isinstance(cm, client.V1ConfigMap) and cm.data == {"a": "1"}
    cm.data["b"] = "2"
    replaced = v1.replace_namespaced_config_map("cm1", ns, cm)
    assert replaced.data == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(cm.metadata.resource_version)
    # A stale resourceVersion is a conflict.
    status, body = api_error(lambda: v1.replace_namespaced_config_map("cm1", ns, cm))
    assert status == 409 and body["reason"] == "Conflict"
    lst = v1.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in lst.items] == ["cm1"]
    assert lst.metadata.resource_version
    deleted = v1.delete_namespaced_config_map("cm1", ns)
    assert deleted["kind"] == "ConfigMap" and deleted["metadata"]["name"] == "cm1"
    assert as_model(api, deleted, "V1ConfigMap").data == {"a": "1", "b": "2"}
    assert v1.list_namespaced_config_map(ns).items == []


def test_secret_crud(v1: client.CoreV1Api, api: client.ApiClient, ns: str) -> None:
    raw = base64.b64encode(b"hunter2").decode()
    s = v1.create_namespaced_secret(
        ns, {"metadata": {"name": "s1"}, "type": "Opaque", "data": {"password": raw}}
    )
    assert isinstance(s, client.V1Secret)
    assert s.data["password"] == raw and s.type == "Opaque"
    got = v1.read_namespaced_secret("s1", ns)
    assert base64.b64decode(got.data["password"]) == b"hunter2"
    patched = v1.patch_namespaced_secret("s1", ns, {"data": {"user": base64.b64encode(b"bob").decode()}})
    assert set(patched.data) == {"password", "user"}
    assert v1.list_namespaced_secret(ns).items[0].metadata.name == "s1"
    deleted = v1.delete_namespaced_secret("s1", ns)
    assert as_model(api, deleted, "V1Secret").metadata.name == "s1"


def test_pod_crud(v1: client.CoreV1Api, ns: str) -> None:
    pod = v1.create_namespaced_pod(ns, pod_body("p1", {"app": "web"}))
    assert isinstance(pod, client.V1Pod)
    assert pod.status.phase == "Pending"
    assert pod.spec.containers[0].image == "nginx:1.27"
    got = v1.read_namespaced_pod("p1", ns)
    assert got.metadata.uid == pod.metadata.uid
    patched = v1.patch_namespaced_pod("p1", ns, {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    st = v1.read_namespaced_pod_status("p1", ns)
    assert st.status.phase == "Pending"
    all_pods = v1.list_pod_for_all_namespaces(label_selector="app=web")
    assert (ns, "p1") in [(p.metadata.namespace, p.metadata.name) for p in all_pods.items]
    deleted = v1.delete_namespaced_pod("p1", ns)
    assert isinstance(deleted, client.V1Pod) and deleted.metadata.name == "p1"
    assert v1.list_namespaced_pod(ns).items == []


def test_service_gets_cluster_ip(v1: client.CoreV1Api, ns: str) -> None:
    import ipaddress

    svc = v1.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert isinstance(svc, client.V1Service)
    ip = svc.spec.cluster_ip
    assert ip and ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12")
    assert svc.spec.cluster_ips == [ip]
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP"
    np = v1.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "np"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert np.spec.cluster_ip != ip
    assert 30000 <= np.spec.ports[0].node_port <= 32767
    # An update that leaves the allocation out keeps it.
    replaced = v1.replace_namespaced_service(
        "web",
        ns,
        {
            "metadata": {"name": "web", "resourceVersion": svc.metadata.resource_version},
            "spec": {"selector": {"app": "web2"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert replaced.spec.cluster_ip == ip and replaced.spec.selector == {"app": "web2"}
    assert {s.metadata.name for s in v1.list_namespaced_service(ns).items} == {"web", "np"}
    deleted = v1.delete_namespaced_service("web", ns)
    assert isinstance(deleted, client.V1Service) and deleted.spec.cluster_ip == ip
    v1.delete_namespaced_service("np", ns)


def test_deployment_scale_and_status(apps: client.AppsV1Api, api: client.ApiClient, ns: str) -> None:
    dep = apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "d1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d1"}}, "template": template("d1")},
        },
    )
    assert isinstance(dep, client.V1Deployment)
    assert dep.metadata.generation == 1
    assert dep.spec.strategy.type == "RollingUpdate"

    scale = apps.read_namespaced_deployment_scale("d1", ns)
    assert isinstance(scale, client.V1Scale)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=d1"
    scale = apps.patch_namespaced_deployment_scale("d1", ns, {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    scale.spec.replicas = 5
    scale = apps.replace_namespaced_deployment_scale("d1", ns, scale)
    assert scale.spec.replicas == 5
    dep = apps.read_namespaced_deployment("d1", ns)
    assert dep.spec.replicas == 5 and dep.metadata.generation == 3

    # Status writes change status only; spec writes leave status alone.
    st = apps.patch_namespaced_deployment_status(
        "d1", ns, {"spec": {"replicas": 9}, "status": {"replicas": 5, "readyReplicas": 3}}
    )
    assert st.status.ready_replicas == 3 and st.spec.replicas == 5
    assert st.metadata.generation == 3
    st.status.observed_generation = 3
    st.spec.replicas = 7
    st = apps.replace_namespaced_deployment_status("d1", ns, st)
    assert st.status.observed_generation == 3 and st.spec.replicas == 5
    dep = apps.patch_namespaced_deployment("d1", ns, {"spec": {"paused": True}, "status": {"replicas": 0}})
    assert dep.spec.paused is True and dep.status.replicas == 5 and dep.metadata.generation == 4
    assert apps.read_namespaced_deployment_status("d1", ns).status.ready_replicas == 3
    lst = apps.list_namespaced_deployment(ns)
    assert isinstance(lst, client.V1DeploymentList) and len(lst.items) == 1
    deleted = apps.delete_namespaced_deployment("d1", ns)
    assert as_model(api, deleted, "V1Deployment").metadata.name == "d1"


def test_daemonset_statefulset_job(api: client.ApiClient, apps: client.AppsV1Api, ns: str) -> None:
    batch = client.BatchV1Api(api)
    ds = apps.create_namespaced_daemon_set(
        ns,
        {
            "metadata": {"name": "ds"},
            "spec": {"selector": {"matchLabels": {"app": "ds"}}, "template": template("ds")},
        },
    )
    assert isinstance(ds, client.V1DaemonSet) and ds.spec.update_strategy.type == "RollingUpdate"
    ds = apps.patch_namespaced_daemon_set("ds", ns, {"metadata": {"labels": {"x": "y"}}})
    assert ds.metadata.labels == {"x": "y"}
    assert apps.read_namespaced_daemon_set_status("ds", ns).metadata.name == "ds"
    assert [d.metadata.name for d in apps.list_namespaced_daemon_set(ns).items] == ["ds"]
    assert as_model(api, apps.delete_namespaced_daemon_set("ds", ns), "V1DaemonSet").metadata.name == "ds"

    sts = apps.create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "replicas": 3,
                "selector": {"matchLabels": {"app": "db"}},
                "template": template("db"),
            },
        },
    )
    assert isinstance(sts, client.V1StatefulSet) and sts.spec.replicas == 3
    sc = apps.patch_namespaced_stateful_set_scale("db", ns, {"spec": {"replicas": 1}})
    assert sc.spec.replicas == 1
    assert apps.read_namespaced_stateful_set("db", ns).spec.replicas == 1
    assert [
        s.metadata.name
        for s in apps.list_stateful_set_for_all_namespaces().items
        if s.metadata.namespace == ns
    ] == ["db"]
    assert as_model(api, apps.delete_namespaced_stateful_set("db", ns), "V1StatefulSet").metadata.name == "db"

    job = batch.create_namespaced_job(
        ns, {"metadata": {"name": "j"}, "spec": {"template": template("j", restart="Never")}}
    )
    assert isinstance(job, client.V1Job)
    assert job.spec.backoff_limit == 6 and job.spec.completions == 1
    job = batch.patch_namespaced_job_status("j", ns, {"status": {"active": 1}})
    assert job.status.active == 1
    assert [j.metadata.name for j in batch.list_namespaced_job(ns).items] == ["j"]
    deleted = batch.delete_namespaced_job("j", ns, propagation_policy="Background")
    assert as_model(api, deleted, "V1Job").metadata.name == "j"


def test_endpointslice_lease_event_serviceaccount(
    api: client.ApiClient, v1: client.CoreV1Api, ns: str
) -> None:
    disc = client.DiscoveryV1Api(api)
    eps = disc.create_namespaced_endpoint_slice(
        ns,
        {
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
    )
    assert isinstance(eps, client.V1EndpointSlice) and eps.endpoints[0].addresses == ["10.244.1.5"]
    lst = disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=web")
    assert [e.metadata.name for e in lst.items] == ["web-abc"]
    assert (
        as_model(api, disc.delete_namespaced_endpoint_slice("web-abc", ns), "V1EndpointSlice").address_type
        == "IPv4"
    )

    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease(
        ns,
        {
            "metadata": {"name": "leader"},
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:00.000000Z",
            },
        },
    )
    assert isinstance(lease, client.V1Lease) and lease.spec.holder_identity == "a"
    lease.spec.holder_identity = "b"
    lease = coord.replace_namespaced_lease("leader", ns, lease)
    assert lease.spec.holder_identity == "b"
    assert lease.spec.renew_time is not None
    assert as_model(api, coord.delete_namespaced_lease("leader", ns), "V1Lease").metadata.name == "leader"

    ev = v1.create_namespaced_event(
        ns,
        {
            "metadata": {"name": "ev1"},
            "involvedObject": {"kind": "Pod", "name": "p1", "namespace": ns},
            "reason": "Started",
            "message": "started container",
            "type": "Normal",
            "count": 1,
            "source": {"component": "edged"},
        },
    )
    assert isinstance(ev, client.CoreV1Event) and ev.reason == "Started"
    evs = v1.list_namespaced_event(ns, field_selector="involvedObject.name=p1")
    assert [e.metadata.name for e in evs.items] == ["ev1"]
    assert v1.list_namespaced_event(ns, field_selector="involvedObject.name=other").items == []
    assert as_model(api, v1.delete_namespaced_event("ev1", ns), "CoreV1Event").reason == "Started"

    sa = v1.create_namespaced_service_account(ns, {"metadata": {"name": "robot"}})
    assert isinstance(sa, client.V1ServiceAccount)
    sa = v1.patch_namespaced_service_account("robot", ns, {"automountServiceAccountToken": False})
    assert sa.automount_service_account_token is False
    assert "robot" in [s.metadata.name for s in v1.list_namespaced_service_account(ns).items]
    deleted = v1.delete_namespaced_service_account("robot", ns)
    assert isinstance(deleted, client.V1ServiceAccount) and deleted.metadata.name == "robot"


def test_node_with_full_status(v1: client.CoreV1Api, api: client.ApiClient) -> None:
    name = uniq("edge")
    node = v1.create_node(node_body(name))
    assert isinstance(node, client.V1Node)
    assert node.status.node_info.kubelet_version == "v1.37.0-kubeedge"
    assert node.status.conditions[0].type == "Ready"
    assert node.status.daemon_endpoints.kubelet_endpoint.port == 10350
    lst = v1.list_node(label_selector="test=yes")
    assert name in [n.metadata.name for n in lst.items]
    lst = v1.list_node(field_selector=f"metadata.name={name}")
    assert [n.metadata.name for n in lst.items] == [name]
    st = v1.patch_node_status(
        name,
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Lost", "message": "gone quiet"}
                ]
            }
        },
    )
    assert st.status.conditions[0].status == "False"
    assert st.status.node_info.machine_id == "m-1"
    node = v1.patch_node(name, {"spec": {"unschedulable": True}})
    assert node.spec.unschedulable is True and node.status.conditions[0].status == "False"
    assert v1.read_node_status(name).status.capacity["cpu"] == "4"
    deleted = v1.delete_node(name)
    assert as_model(api, deleted, "V1Node").metadata.name == name


# ---- selectors and pagination ------------------------------------------------------------------


def test_label_and_field_selectors(v1: client.CoreV1Api, ns: str) -> None:
    for i in range(6):
        v1.create_namespaced_config_map(
            ns,
            {
                "metadata": {
                    "name": f"c{i}",
                    "labels": {"parity": "even" if i % 2 == 0 else "odd", "i": str(i)},
                }
            },
        )
    names = lambda lst: sorted(c.metadata.name for c in lst.items)  # noqa: E731
    assert names(v1.list_namespaced_config_map(ns, label_selector="parity=even")) == ["c0", "c2", "c4"]
    assert names(v1.list_namespaced_config_map(ns, label_selector="parity!=even")) == ["c1", "c3", "c5"]
    assert names(v1.list_namespaced_config_map(ns, label_selector="i in (1,2,3),parity=odd")) == ["c1", "c3"]
    assert names(v1.list_namespaced_config_map(ns, label_selector="!nope")) == [f"c{i}" for i in range(6)]
    assert names(v1.list_namespaced_config_map(ns, field_selector="metadata.name=c4")) == ["c4"]
    assert names(
        v1.list_namespaced_config_map(ns, field_selector="metadata.name!=c4", label_selector="parity=even")
    ) == ["c0", "c2"]
    v1.create_namespaced_pod(ns, pod_body("p"))
    assert names(v1.list_namespaced_pod(ns, field_selector="status.phase=Pending")) == ["p"]
    assert names(v1.list_namespaced_pod(ns, field_selector="spec.nodeName=")) == ["p"]
    assert names(v1.list_namespaced_pod(ns, field_selector="status.phase=Running")) == []
    status, body = api_error(lambda: v1.list_namespaced_config_map(ns, field_selector="data.k=v"))
    assert status == 400 and body["reason"] == "BadRequest"
    status, body = api_error(lambda: v1.list_namespaced_config_map(ns, label_selector="a in (b"))
    assert status == 400


def test_pagination_is_a_consistent_snapshot(v1: client.CoreV1Api, ns: str) -> None:
    total = 23
    for i in range(total):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i:03d}", "labels": {"page": "y"}}})
    first = v1.list_namespaced_config_map(ns, limit=5)
    assert len(first.items) == 5 and first.metadata.var_continue
    snapshot_rv = first.metadata.resource_version
    seen = [c.metadata.name for c in first.items]
    # Changes between pages: a late object must not show up, a deleted one still does.
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm-999-late"}})
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm-000-early"}})
    v1.delete_namespaced_config_map("cm-020", ns)
    v1.patch_namespaced_config_map("cm-015", ns, {"data": {"changed": "yes"}})
    cont = first.metadata.var_continue
    pages = 1
    while cont:
        page = v1.list_namespaced_config_map(ns, limit=5, _continue=cont)
        assert page.metadata.resource_version == snapshot_rv
        assert len(page.items) <= 5
        seen += [c.metadata.name for c in page.items]
        for c in page.items:
            if c.metadata.name == "cm-015":
                assert c.data is None  # as of the snapshot
        cont = page.metadata.var_continue
        pages += 1
    assert pages == 5
    assert seen == [f"cm-{i:03d}" for i in range(total)]
    # Label selectors page too, and a fresh list sees the changes.
    sel = []
    cont = None
    while True:
        kw = {"_continue": cont} if cont else {}
        page = v1.list_namespaced_config_map(ns, limit=4, label_selector="page=y", **kw)
        sel += [c.metadata.name for c in page.items]
        cont = page.metadata.var_continue
        if not cont:
            break
    assert sel == [f"cm-{i:03d}" for i in range(total) if i != 20]
    now = [c.metadata.name for c in v1.list_namespaced_config_map(ns).items]
    assert "cm-999-late" in now and "cm-020" not in now and len(now) == total + 1
    status, _ = api_error(lambda: v1.list_namespaced_config_map(ns, limit=5, _continue="!!garbage"))
    assert status == 400


# ---- watch -------------------------------------------------------------------------------------


def test_watch_without_resource_version(api: client.ApiClient, v1: client.CoreV1Api, ns: str) -> None:
    for n in ("a", "b"):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": n}})
    writer = client.CoreV1Api(api)
    w = watch.Watch()
    events: list[tuple[str, str]] = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, timeout_seconds=10):
        obj = ev["object"]
        assert isinstance(obj, client.V1ConfigMap)
        events.append((ev["type"], obj.metadata.name))
        if len(events) == 2:
            # Synthetic ADDED for the current state came first; now live changes.
            writer.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
            writer.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
            writer.delete_namespaced_config_map("b", ns)
        if len(events) == 5:
            w.stop()
    assert sorted(events[:2]) == [("ADDED", "a"), ("ADDED", "b")]
    assert events[2:] == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_from_list_resource_version(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "old"}})
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "new"}})
    v1.delete_namespaced_config_map("old", ns)
    w = watch.Watch()
    events = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 2:
            w.stop()
    assert events == [("ADDED", "new"), ("DELETED", "old")]


def test_watch_timeout_seconds_ends_stream(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "only"}})
    started = time.monotonic()
    events = [
        (ev["type"], ev["object"].metadata.name)
        for ev in watch.Watch().stream(
            v1.list_namespaced_config_map, ns, timeout_seconds=1, allow_watch_bookmarks=True
        )
    ]
    assert events == [("ADDED", "only")]
    assert time.monotonic() - started < 5


def test_watch_resume_sees_every_change(v1: client.CoreV1Api, ns: str) -> None:
    rv0 = v1.list_namespaced_config_map(ns).metadata.resource_version
    want = []
    for i in range(5):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": f"r{i}"}})
        want.append(("ADDED", f"r{i}"))
    for i in (1, 3):
        v1.patch_namespaced_config_map(f"r{i}", ns, {"data": {"v": str(i)}})
        want.append(("MODIFIED", f"r{i}"))
    v1.delete_namespaced_config_map("r0", ns)
    want.append(("DELETED", "r0"))
    w = watch.Watch()
    got = []
    rvs = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv0, timeout_seconds=10):
        got.append((ev["type"], ev["object"].metadata.name))
        rvs.append(int(ev["object"].metadata.resource_version))
        if len(got) == len(want):
            w.stop()
    assert got == want
    assert rvs == sorted(rvs) and rvs[0] > int(rv0)
    # Resuming from the middle replays only the rest.
    mid = str(rvs[4])
    w = watch.Watch()
    rest = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=mid, timeout_seconds=10):
        rest.append((ev["type"], ev["object"].metadata.name))
        if len(rest) == 3:
            w.stop()
    assert rest == want[5:]


def test_watch_all_namespaces_with_selector(v1: client.CoreV1Api, ns: str) -> None:
    rv = v1.list_config_map_for_all_namespaces().metadata.resource_version
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "skip"}})
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "pick", "labels": {"w": "1"}}})
    w = watch.Watch()
    for ev in w.stream(
        v1.list_config_map_for_all_namespaces, label_selector="w=1", resource_version=rv, timeout_seconds=10
    ):
        assert (ev["type"], ev["object"].metadata.namespace, ev["object"].metadata.name) == (
            "ADDED",
            ns,
            "pick",
        )
        w.stop()


def test_watch_selector_transitions(v1: client.CoreV1Api, ns: str) -> None:
    """An object that stops matching a watch's selector is DELETED for it; matching again, ADDED."""
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "s", "labels": {"x": "1"}}})
    rv = v1.list_namespaced_config_map(ns, label_selector="x=1").metadata.resource_version
    v1.patch_namespaced_config_map("s", ns, {"metadata": {"labels": {"x": "2"}}})
    v1.patch_namespaced_config_map("s", ns, {"metadata": {"labels": {"y": "1"}}})
    v1.patch_namespaced_config_map("s", ns, {"metadata": {"labels": {"x": "1"}}})
    w = watch.Watch()
    got = []
    for ev in w.stream(
        v1.list_namespaced_config_map, ns, label_selector="x=1", resource_version=rv, timeout_seconds=10
    ):
        got.append((ev["type"], ev["object"].metadata.labels.get("x")))
        if len(got) == 2:
            w.stop()
    assert got == [("DELETED", "2"), ("ADDED", "1")]


# ---- a server with a tiny history: bookmarks and 410 -------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProc]:
    d = tmp_path_factory.mktemp("small")
    cfg = d / "config.yaml"
    cfg.write_text("bookmark_interval: 0.3\nstore: {history_limit: 5, compact_interval: 0.2}\n")
    srv = ApiServerProc(d / "data", extra_args=["--config", str(cfg)]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def small_v1(small: ApiServerProc) -> Iterator[client.CoreV1Api]:
    c = make_api_client(small.kubeconfig)
    try:
        yield client.CoreV1Api(c)
    finally:
        c.close()


def test_bookmarks_do_not_break_watch(small_v1: client.CoreV1Api) -> None:
    v1 = small_v1
    ns = uniq("bm")
    v1.create_namespace({"metadata": {"name": ns}})
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    w = watch.Watch()
    types: list[str] = []
    created = False
    for ev in w.stream(
        v1.list_namespaced_config_map, ns, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=10
    ):
        types.append(ev["type"])
        if ev["type"] == "BOOKMARK":
            assert int(ev["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
            if not created:
                v1.create_namespaced_config_map(ns, {"metadata": {"name": "after-bookmark"}})
                created = True
        else:
            assert ev["type"] == "ADDED" and ev["object"].metadata.name == "after-bookmark"
            w.stop()
    assert types[0] == "BOOKMARK" and types[-1] == "ADDED"
    # The client tracks the bookmark's revision for resuming.
    assert w.resource_version is not None and int(w.resource_version) >= int(rv)


def test_too_old_resource_version_is_410_and_relist_recovers(small_v1: client.CoreV1Api) -> None:
    v1 = small_v1
    ns = uniq("gone")
    v1.create_namespace({"metadata": {"name": ns}})
    old_rv = v1.create_namespaced_config_map(ns, {"metadata": {"name": "first"}}).metadata.resource_version
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "second"}})
    page = v1.list_namespaced_config_map(ns, limit=1)
    token, token_rv = page.metadata.var_continue, page.metadata.resource_version
    assert token and int(token_rv) > int(old_rv)
    for i in range(20):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": f"fill-{i}"}})

    # Wait on the newer of the two revisions: the compactor runs on its own clock and can have
    # passed old_rv while the token's snapshot is still kept.
    def expired() -> bool:
        try:
            for ev in watch.Watch().stream(
                v1.list_namespaced_config_map, ns, resource_version=token_rv, timeout_seconds=1
            ):
                if ev["type"] == "ERROR":  # pragma: no cover - the client raises instead
                    return ev["raw_object"]["code"] == 410
        except ApiException as e:
            assert e.status == 410, e
            return True
        return False

    wait_for(expired, timeout=15, what="the old resourceVersion to be compacted away")
    # A paginated list pinned to a compacted revision is 410 as well.
    status, body = api_error(
        lambda: v1.list_namespaced_config_map(ns, resource_version=old_rv, resource_version_match="Exact")
    )
    assert status == 410 and body["reason"] in ("Expired", "Gone")
    # So is continuing a paginated list whose snapshot is gone.
    status, body = api_error(lambda: v1.list_namespaced_config_map(ns, limit=1, _continue=token))
    assert status == 410 and body["kind"] == "Status"
    # Recovery, as informers do it: re-list, then watch from the list's revision.
    lst = v1.list_namespaced_config_map(ns)
    assert len(lst.items) == 22
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "after-relist"}})
    w = watch.Watch()
    for ev in w.stream(
        v1.list_namespaced_config_map, ns, resource_version=lst.metadata.resource_version, timeout_seconds=10
    ):
        assert (ev["type"], ev["object"].metadata.name) == ("ADDED", "after-relist")
        w.stop()


# ---- patches, dry run ---------------------------------------------------------------------------


def test_every_patch_type(v1: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web", "labels": {"a": "1"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "main", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                            {"name": "side", "image": "busybox:1"},
                        ]
                    },
                },
            },
        },
    )
    # dict body: strategic merge (containers merge by name).
    d = apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}}
    )
    cs = {c.name: c for c in d.spec.template.spec.containers}
    assert cs["main"].image == "nginx:2" and cs["main"].env[0].name == "A" and "side" in cs
    # merge patch: lists are replaced wholesale, null deletes.
    d = apps.patch_namespaced_deployment(
        "web",
        ns,
        {
            "metadata": {"labels": {"a": None, "b": "2"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "nginx:3"}]}}},
        },
        _content_type=MERGE,
    )
    assert d.metadata.labels == {"b": "2"}
    assert [c.name for c in d.spec.template.spec.containers] == ["only"]
    # list body: JSON patch, including a failing test op.
    d = apps.patch_namespaced_deployment(
        "web",
        ns,
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/annotations", "value": {"note": "json"}},
        ],
    )
    assert d.spec.replicas == 3 and d.metadata.annotations == {"note": "json"}
    status, body = api_error(
        lambda: apps.patch_namespaced_deployment(
            "web", ns, [{"op": "test", "path": "/spec/replicas", "value": 1}]
        )
    )
    assert status in (409, 422) and body["kind"] == "Status"
    # server-side apply: creates, then updates; conflicts with another manager unless forced.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v1"}}
    got = v1.patch_namespaced_config_map("applied", ns, cm, field_manager="tool-a", _content_type=APPLY)
    assert got.data == {"k": "v1"}
    assert [m.manager for m in got.metadata.managed_fields] == ["tool-a"]
    assert got.metadata.managed_fields[0].operation == "Apply"
    cm["data"] = {"k": "v2", "extra": "x"}
    got = v1.patch_namespaced_config_map("applied", ns, cm, field_manager="tool-a", _content_type=APPLY)
    assert got.data == {"k": "v2", "extra": "x"}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "b"}}
    status, body = api_error(
        lambda: v1.patch_namespaced_config_map(
            "applied", ns, other, field_manager="tool-b", _content_type=APPLY
        )
    )
    assert status == 409 and body["reason"] == "Conflict"
    got = v1.patch_namespaced_config_map(
        "applied", ns, other, field_manager="tool-b", force=True, _content_type=APPLY
    )
    assert got.data == {"k": "b", "extra": "x"}
    # Dropping a field from tool-a's applied config removes it (tool-a no longer owns k).
    got = v1.patch_namespaced_config_map(
        "applied",
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {}},
        field_manager="tool-a",
        _content_type=APPLY,
    )
    assert got.data == {"k": "b"}
    status, _ = api_error(lambda: v1.patch_namespaced_config_map("applied", ns, cm, _content_type=APPLY))
    assert status == 400  # apply needs a field manager


def test_dry_run_creates_nothing(v1: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    cm = v1.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}, "data": {"a": "1"}}, dry_run="All")
    assert cm.metadata.name == "dry" and cm.metadata.uid
    svc = v1.create_namespaced_service(
        ns, {"metadata": {"name": "dry"}, "spec": {"ports": [{"port": 80}]}}, dry_run="All"
    )
    assert svc.metadata.name == "dry"
    assert v1.list_namespaced_config_map(ns).items == []
    assert v1.list_namespaced_service(ns).items == []
    status, _ = api_error(lambda: v1.read_namespaced_config_map("dry", ns))
    assert status == 404
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "real"}, "data": {"a": "1"}})
    p = v1.patch_namespaced_config_map("real", ns, {"data": {"a": "2"}}, dry_run="All")
    assert p.data == {"a": "2"}
    assert v1.read_namespaced_config_map("real", ns).data == {"a": "1"}
    deleted = v1.delete_namespaced_config_map("real", ns, dry_run="All")
    assert deleted["metadata"]["name"] == "real"
    assert v1.read_namespaced_config_map("real", ns).data == {"a": "1"}
    status, body = api_error(
        lambda: v1.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}}, dry_run="All")
    )
    assert status == 422 and body["reason"] == "Invalid"


# ---- errors --------------------------------------------------------------------------------------


def test_error_mapping(v1: client.CoreV1Api, ns: str) -> None:
    status, body = api_error(lambda: v1.read_namespaced_config_map("missing", ns))
    assert status == 404
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"]["name"] == "missing" and body["details"]["kind"] == "configmaps"
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    status, body = api_error(lambda: v1.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}}))
    assert status == 409 and body["reason"] == "AlreadyExists"
    status, body = api_error(
        lambda: v1.create_namespaced_config_map(ns, {"metadata": {"name": "Not_A_DNS_Name"}})
    )
    assert status == 422 and body["reason"] == "Invalid"
    assert any(c.get("field") == "metadata.name" for c in body["details"]["causes"])
    status, body = api_error(
        lambda: v1.create_namespaced_pod(ns, {"metadata": {"name": "nospec"}, "spec": {"containers": []}})
    )
    assert status == 422 and body["reason"] == "Invalid"
    status, body = api_error(lambda: v1.read_namespaced_config_map("x", "no-such-namespace"))
    assert status == 404 and body["reason"] == "NotFound"
    status, body = api_error(
        lambda: v1.create_namespaced_config_map("no-such-namespace", {"metadata": {"name": "x"}})
    )
    assert status == 404 and body["reason"] == "NotFound"
    # Forbidden: creating in a namespace that is being deleted (a finalizer keeps it terminating).
    term = uniq("term")
    v1.create_namespace({"metadata": {"name": term}})
    v1.create_namespaced_config_map(term, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    v1.delete_namespace(term)
    status, body = api_error(lambda: v1.create_namespaced_config_map(term, {"metadata": {"name": "late"}}))
    assert status == 403 and body["reason"] == "Forbidden"
    v1.patch_namespaced_config_map("held", term, {"metadata": {"finalizers": None}}, _content_type=MERGE)


def test_forbidden_for_unprivileged_token(apiserver: ApiServerProc, v1: client.CoreV1Api) -> None:
    """A node's credentials (the node authorizer) cannot read another namespace's secrets."""
    from kubeedge.pki import certs

    pki = apiserver.data_dir / "pki"
    ca = certs.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    node = certs.issue(ca, "system:node:stranger", organizations=["system:nodes"], client=True)
    d = apiserver.data_dir / "stranger"
    d.mkdir(exist_ok=True)
    (d / "c.crt").write_bytes(node.cert_pem)
    (d / "c.key").write_bytes(node.key_pem)
    cfg = client.Configuration()
    cfg.host = apiserver.url
    cfg.ssl_ca_cert = str(apiserver.ca_file)
    cfg.cert_file = str(d / "c.crt")
    cfg.key_file = str(d / "c.key")
    with client.ApiClient(cfg) as c:
        status, body = api_error(lambda: client.CoreV1Api(c).list_secret_for_all_namespaces())
    assert status == 403 and body["reason"] == "Forbidden" and body["kind"] == "Status"


# ---- custom resources through the DynamicClient ------------------------------------------------


@pytest.fixture(scope="module")
def dyn(api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api)


def test_dynamic_client_devices(dyn: dynamic.DynamicClient, ns: str) -> None:
    devices = dyn.resources.get(api_version="devices.kubeedge.io/v1beta1", kind="Device")
    assert devices.namespaced and devices.name == "devices"
    body = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "thermo", "labels": {"room": "1"}},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": "edge-1"},
    }
    created = devices.create(body=body, namespace=ns)
    assert created.metadata.name == "thermo" and created.spec.nodeName == "edge-1"
    got = devices.get(name="thermo", namespace=ns)
    assert got.metadata.uid == created.metadata.uid
    lst = devices.get(namespace=ns, label_selector="room=1")
    assert [i.metadata.name for i in lst.items] == ["thermo"]
    patched = devices.patch(
        name="thermo", namespace=ns, body={"spec": {"nodeName": "edge-2"}}, content_type=MERGE
    )
    assert patched.spec.nodeName == "edge-2"
    patched = devices.patch(
        name="thermo",
        namespace=ns,
        body=[{"op": "add", "path": "/metadata/labels/room", "value": "2"}],
        content_type="application/json-patch+json",
    )
    assert patched.metadata.labels.room == "2"
    # The status subresource: a status write leaves spec alone.
    st = devices.status.patch(
        name="thermo",
        namespace=ns,
        body={"spec": {"nodeName": "ignored"}, "status": {"state": "online"}},
        content_type=MERGE,
    )
    assert st.status.state == "online" and st.spec.nodeName == "edge-2"
    assert devices.get(name="thermo", namespace=ns).status.state == "online"
    # Printer columns through the Table representation.
    table = devices.get(namespace=ns, header_params={"Accept": TABLE})
    cols = [c["name"] for c in table.columnDefinitions]
    assert cols[:5] == ["Name", "Model", "Node", "State", "Age"]
    assert table.rows[0]["cells"][:4] == ["thermo", "thermometer", "edge-2", "online"]
    # Watch through the dynamic client: the current state first, then changes.
    w = watch.Watch()
    seen = []
    for ev in devices.watch(namespace=ns, timeout=10, watcher=w):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 1:
            devices.patch(
                name="thermo", namespace=ns, body={"metadata": {"labels": {"w": "1"}}}, content_type=MERGE
            )
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "thermo"), ("MODIFIED", "thermo")]
    deleted = devices.delete(name="thermo", namespace=ns)
    assert deleted.metadata.name == "thermo"
    assert devices.get(namespace=ns).items == []


def _crd(group: str, plural: str, kind: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }


def _wait_established(ext: client.ApiextensionsV1Api, name: str) -> None:
    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    wait_for(established, what=f"CRD {name} established")


@pytest.mark.parametrize("scope", ["Namespaced", "Cluster"])
def test_new_crd_served_without_restart(
    api: client.ApiClient, dyn: dynamic.DynamicClient, ns: str, scope: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    group = f"{uuid.uuid4().hex[:6]}.example.com"
    kind = "Widget" if scope == "Namespaced" else "Gadget"
    plural = kind.lower() + "s"
    crd = ext.create_custom_resource_definition(_crd(group, plural, kind, scope))
    assert isinstance(crd, client.V1CustomResourceDefinition)
    _wait_established(ext, crd.metadata.name)
    assert plural in [c.metadata.name.split(".")[0] for c in ext.list_custom_resource_definition().items]

    dyn.resources.invalidate_cache()
    res = dyn.resources.get(api_version=f"{group}/v1", kind=kind)
    assert res.namespaced == (scope == "Namespaced")
    where = {"namespace": ns} if scope == "Namespaced" else {}
    obj = {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w1"}, "spec": {"size": 3}}
    created = res.create(body=obj, **where)
    assert created.spec.size == 3 and created.metadata.generation == 1
    assert "status" not in created.to_dict()  # status is only written through /status
    st = res.status.patch(
        name="w1", body={"spec": {"size": 99}, "status": {"phase": "Ready"}}, content_type=MERGE, **where
    )
    assert st.status.phase == "Ready" and st.spec.size == 3 and st.metadata.generation == 1
    up = res.patch(
        name="w1", body={"spec": {"size": 4}, "status": {"phase": "Lost"}}, content_type=MERGE, **where
    )
    assert up.spec.size == 4 and up.status.phase == "Ready" and up.metadata.generation == 2
    # Replace on /status too.
    cur = res.get(name="w1", **where).to_dict()
    cur["status"] = {"phase": "Done"}
    cur["spec"] = {"size": 50}
    st = res.status.replace(body=cur, **where)
    assert st.status.phase == "Done" and st.spec.size == 4
    table = res.get(header_params={"Accept": TABLE}, **where)
    assert [c["name"] for c in table.columnDefinitions][:3] == ["Name", "Size", "Phase"]
    assert table.rows[0]["cells"][:3] == ["w1", 4, "Done"]
    res.create(body={**obj, "metadata": {"name": "w2"}}, **where)
    assert len(res.get(**where).items) == 2

    # Deleting the CRD stops serving it and removes its objects.
    ext.delete_custom_resource_definition(crd.metadata.name)
    custom = client.CustomObjectsApi(api)

    def unserved() -> bool:
        try:
            if scope == "Namespaced":
                custom.list_namespaced_custom_object(group, "v1", ns, plural)
            else:
                custom.list_cluster_custom_object(group, "v1", plural)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(unserved, what="CRD deletion")

    # Recreating the CRD shows no leftovers of the old objects.
    crd = ext.create_custom_resource_definition(_crd(group, plural, kind, scope))
    _wait_established(ext, crd.metadata.name)

    def empty() -> bool:
        try:
            if scope == "Namespaced":
                lst = custom.list_namespaced_custom_object(group, "v1", ns, plural)
            else:
                lst = custom.list_cluster_custom_object(group, "v1", plural)
        except ApiException:
            return False
        return lst["items"] == []

    wait_for(empty, what="old custom objects purged")
    ext.delete_custom_resource_definition(crd.metadata.name)


def test_custom_objects_api_device_roundtrip(api: client.ApiClient, ns: str) -> None:
    custom = client.CustomObjectsApi(api)
    g, v, p = "devices.kubeedge.io", "v1beta1", "devices"
    custom.create_namespaced_custom_object(
        g, v, ns, p, {"apiVersion": f"{g}/{v}", "kind": "Device", "metadata": {"name": "d"}, "spec": {}}
    )
    obj = custom.patch_namespaced_custom_object_status(g, v, ns, p, "d", {"status": {"state": "offline"}})
    assert obj["status"]["state"] == "offline"
    deleted = custom.delete_namespaced_custom_object(g, v, ns, p, "d")
    assert deleted["metadata"]["name"] == "d"


def test_concurrent_clients_share_the_server(api: client.ApiClient, ns: str) -> None:
    """The client's thread-pooled use (several threads, one ApiClient) works."""
    v1 = client.CoreV1Api(api)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                v1.create_namespaced_config_map(ns, {"metadata": {"name": f"t{i}-{j}"}})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(v1.list_namespaced_config_map(ns).items) == 20
