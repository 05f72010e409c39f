from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubeedge.apiserver.resources import BUILTIN, PrinterColumn, Registry, ResourceInfo
from kubeedge.apiserver.tables import (
    column_definitions,
    human_duration,
    jsonpath,
    row_cells,
    to_table,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
REG = Registry(BUILTIN)


def info(group: str, plural: str) -> ResourceInfo:
    r = REG.get(group, "v1", plural)
    assert r is not None
    return r


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cells(group: str, plural: str, obj: dict) -> dict:
    """Cells keyed by column name, so assertions read like kubectl's output."""
    r = info(group, plural)
    names = [c["name"] for c in column_definitions(r)]
    values = row_cells(r, obj, NOW)
    assert len(names) == len(values)
    return dict(zip(names, values, strict=True))


# --- age ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=-5), "<invalid>"),
        (timedelta(milliseconds=-500), "0s"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(seconds=200), "3m20s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(minutes=10, seconds=30), "10m"),
        (timedelta(minutes=179), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=47), "47h"),
        (timedelta(days=2, hours=3), "2d3h"),
        (timedelta(days=7), "7d"),
        (timedelta(days=300), "300d"),
        (timedelta(days=365 * 2 + 10), "2y10d"),
        (timedelta(days=365 * 4), "4y"),
        (timedelta(days=365 * 9 + 100), "9y"),
    ],
)
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


# --- pods -----------------------------------------------------------------------------------------


def pod(status: dict, *, containers: int = 1, init: list[dict] | None = None, **meta: object) -> dict:
    spec: dict = {"containers": [{"name": f"c{i}", "image": "nginx"} for i in range(containers)]}
    if init is not None:
        spec["initContainers"] = init
    return {
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(minutes=5), **meta},
        "spec": spec,
        "status": status,
    }


def running(name: str = "c0", ready: bool = True, restarts: int = 0) -> dict:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {}}}


def test_running_pod_has_all_wide_cells() -> None:
    p = pod(
        {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}], "containerStatuses": [running()]},
    )
    p["spec"]["nodeName"] = "edge-1"
    c = cells("", "pods", p)
    assert c == {
        "Name": "web-1",
        "Ready": "1/1",
        "Status": "Running",
        "Restarts": "0",
        "Age": "5m",
        "IP": "10.0.0.7",
        "Node": "edge-1",
        "Nominated Node": "<none>",
        "Readiness Gates": "<none>",
    }


def test_pending_pod_without_status_shows_phase_and_none_placeholders() -> None:
    c = cells("", "pods", pod({"phase": "Pending"}, containers=2))
    assert (c["Ready"], c["Status"], c["IP"], c["Node"]) == ("0/2", "Pending", "<none>", "<none>")


def test_waiting_reasons_win_over_phase() -> None:
    waiting = {
        "name": "c0",
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}},
    }
    assert (
        cells("", "pods", pod({"phase": "Pending", "containerStatuses": [waiting]}))["Status"]
        == "ContainerCreating"
    )


def test_crash_loop_shows_restarts_with_time_of_last_restart() -> None:
    cs = {
        "name": "c0",
        "ready": False,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=45)}},
    }
    c = cells("", "pods", pod({"phase": "Running", "containerStatuses": [cs]}))
    assert (c["Status"], c["Restarts"], c["Ready"]) == ("CrashLoopBackOff", "4 (45s ago)", "0/1")


def test_completed_and_exit_code_pods() -> None:
    done = {"name": "c0", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    p = pod({"phase": "Succeeded", "containerStatuses": [done]})
    assert cells("", "pods", p)["Status"] == "Completed"
    row = to_table(info("", "pods"), [p], resource_version="1", now=NOW)["rows"][0]
    assert row["conditions"][0]["type"] == "Completed"

    killed = {"name": "c0", "ready": False, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
    assert cells("", "pods", pod({"phase": "Failed", "containerStatuses": [killed]}))["Status"] == "Signal:9"
    failed = {"name": "c0", "ready": False, "state": {"terminated": {"exitCode": 2}}}
    assert (
        cells("", "pods", pod({"phase": "Failed", "containerStatuses": [failed]}))["Status"] == "ExitCode:2"
    )


def test_completed_container_next_to_running_one_reports_running_or_notready() -> None:
    done = {"name": "c1", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    status = {"phase": "Running", "containerStatuses": [running("c0"), done]}
    assert cells("", "pods", pod(dict(status), containers=2))["Status"] == "NotReady"
    status["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cells("", "pods", pod(status, containers=2))["Status"] == "Running"


def test_terminating_pod() -> None:
    p = pod({"phase": "Running", "containerStatuses": [running()]}, deletionTimestamp=ago(seconds=1))
    assert cells("", "pods", p)["Status"] == "Terminating"
    p["status"] = {"phase": "Running", "reason": "NodeLost"}
    assert cells("", "pods", p)["Status"] == "Unknown"
    p["status"] = {"phase": "Succeeded"}
    assert cells("", "pods", p)["Status"] == "Succeeded"


def test_init_container_progress_and_failures() -> None:
    init = [{"name": "i0", "image": "busybox"}, {"name": "i1", "image": "busybox"}]
    ok = {"name": "i0", "state": {"terminated": {"exitCode": 0}}}
    pending = {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}
    p = pod({"phase": "Pending", "initContainerStatuses": [ok, pending]}, init=init)
    assert cells("", "pods", p)["Status"] == "Init:1/2"

    crashing = {"name": "i0", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    p = pod({"phase": "Pending", "initContainerStatuses": [crashing]}, init=init)
    c = cells("", "pods", p)
    assert (c["Status"], c["Restarts"]) == ("Init:CrashLoopBackOff", "3")

    failed = {"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
    assert cells("", "pods", pod({"phase": "Pending", "initContainerStatuses": [failed]}, init=init))[
        "Status"
    ] == ("Init:Error")


def test_sidecar_init_containers_count_towards_ready() -> None:
    init = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    side = {"name": "proxy", "ready": True, "started": True, "state": {"running": {}}}
    status = {
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [side],
        "containerStatuses": [running()],
    }
    c = cells("", "pods", pod(status, init=init))
    assert (c["Ready"], c["Status"]) == ("2/2", "Running")


def test_scheduling_gated_and_readiness_gates() -> None:
    p = pod({"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]})
    p["spec"]["readinessGates"] = [{"conditionType": "lb/ok"}, {"conditionType": "other"}]
    p["status"]["conditions"].append({"type": "lb/ok", "status": "True"})
    c = cells("", "pods", p)
    assert (c["Status"], c["Readiness Gates"]) == ("SchedulingGated", "1/2")


# --- nodes ----------------------------------------------------------------------------------------


def node(ready: str | None, labels: dict | None = None, unschedulable: bool = False) -> dict:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": "edge-1", "labels": labels or {}, "creationTimestamp": ago(days=3)},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, *conditions],
            "addresses": [
                {"type": "Hostname", "address": "edge-1"},
                {"type": "InternalIP", "address": "10.1.0.5"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-kubeedge",
                "osImage": "Debian",
                "containerRuntimeVersion": "",
            },
        },
    }


def test_node_status_strings() -> None:
    assert cells("", "nodes", node("True"))["Status"] == "Ready"
    assert cells("", "nodes", node("False"))["Status"] == "NotReady"
    assert cells("", "nodes", node("Unknown"))["Status"] == "NotReady"
    assert cells("", "nodes", node(None))["Status"] == "Unknown"
    assert cells("", "nodes", node("True", unschedulable=True))["Status"] == "Ready,SchedulingDisabled"


def test_node_roles_and_wide_cells() -> None:
    labels = {
        "node-role.kubernetes.io/edge": "",
        "node-role.kubernetes.io/agent": "",
        "kubernetes.io/role": "worker",
        "other": "x",
    }
    c = cells("", "nodes", node("True", labels))
    assert c["Roles"] == "agent,edge,worker"
    assert cells("", "nodes", node("True"))["Roles"] == "<none>"
    assert (c["Age"], c["Version"]) == ("3d", "v1.31.0-kubeedge")
    assert (c["Internal-IP"], c["External-IP"]) == ("10.1.0.5", "<none>")
    assert (c["OS-Image"], c["Kernel-Version"], c["Container-Runtime"]) == (
        "Debian",
        "<unknown>",
        "<unknown>",
    )
    widths = {d["name"]: d["priority"] for d in column_definitions(info("", "nodes"))}
    assert widths["Version"] == 0 and widths["Internal-IP"] == 1


# --- services, endpoints, slices ------------------------------------------------------------------


def test_service_cells() -> None:
    svc = {
        "metadata": {"name": "web", "creationTimestamp": ago(hours=2)},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
            "selector": {"app": "web", "tier": "fe"},
        },
    }
    c = cells("", "services", svc)
    assert c == {
        "Name": "web",
        "Type": "NodePort",
        "Cluster-IP": "10.96.0.10",
        "External-IP": "<none>",
        "Port(s)": "80/TCP,443:30443/TCP",
        "Age": "120m",
        "Selector": "app=web,tier=fe",
    }


def test_service_external_ips() -> None:
    lb = {
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]},
    }
    c = cells("", "services", lb)
    assert (c["External-IP"], c["Port(s)"], c["Cluster-IP"], c["Age"]) == (
        "<pending>",
        "53/UDP",
        "<none>",
        "<unknown>",
    )
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}}
    assert cells("", "services", lb)["External-IP"] == "1.2.3.4,lb.example"
    ext = {"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example"}}
    assert cells("", "services", ext)["External-IP"] == "db.example"
    assert cells("", "services", ext)["Port(s)"] == "<none>"


def test_endpoints_truncate_after_three() -> None:
    addrs = [{"ip": f"10.0.0.{i}"} for i in range(1, 6)]
    ep = {"metadata": {"name": "web"}, "subsets": [{"addresses": addrs, "ports": [{"port": 80}]}]}
    assert cells("", "endpoints", ep)["Endpoints"] == "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
    ep["subsets"] = [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]
    assert cells("", "endpoints", ep)["Endpoints"] == "[fd00::1]:80"
    assert cells("", "endpoints", {"metadata": {"name": "e"}})["Endpoints"] == "<none>"


def test_endpointslice_cells() -> None:
    es = {
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"port": 80, "name": "http"}, {"name": "dyn"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    }
    c = cells("discovery.k8s.io", "endpointslices", es)
    assert (c["AddressType"], c["Ports"], c["Endpoints"]) == ("IPv4", "80,dyn", "10.0.0.1,10.0.0.2")
    assert cells("discovery.k8s.io", "endpointslices", {"metadata": {"name": "e"}})["Endpoints"] == "<unset>"


# --- workloads ------------------------------------------------------------------------------------


TEMPLATE = {
    "spec": {
        "containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "busybox"}],
        "nodeSelector": {"node-role.kubernetes.io/edge": ""},
    }
}
SELECTOR = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}],
}


def test_deployment_cells() -> None:
    d = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    c = cells("apps", "deployments", d)
    assert (c["Ready"], c["Up-to-date"], c["Available"]) == ("2/3", 3, 2)
    assert (c["Containers"], c["Images"]) == ("app,log", "nginx:1,busybox")
    assert c["Selector"] == "app=web,env in (a,b)"


def test_replicaset_daemonset_statefulset_cells() -> None:
    rs = {
        "metadata": {"name": "web-1"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    c = cells("apps", "replicasets", rs)
    assert (c["Desired"], c["Current"], c["Ready"], c["Selector"]) == (2, 2, 1, "<none>")
    ds = {
        "metadata": {"name": "agent"},
        "spec": {"template": TEMPLATE},
        "status": {"desiredNumberScheduled": 3, "numberReady": 2, "numberAvailable": 1},
    }
    c = cells("apps", "daemonsets", ds)
    assert (c["Desired"], c["Ready"], c["Available"]) == (3, 2, 1)
    assert c["Node Selector"] == "node-role.kubernetes.io/edge="
    sts = {"metadata": {"name": "db"}, "spec": {"template": TEMPLATE}, "status": {"readyReplicas": 1}}
    assert cells("apps", "statefulsets", sts)["Ready"] == "1/1"


def test_job_cells() -> None:
    job = {
        "metadata": {"name": "pi"},
        "spec": {"completions": 3},
        "status": {
            "succeeded": 3,
            "startTime": ago(minutes=10),
            "completionTime": ago(minutes=8),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    c = cells("batch", "jobs", job)
    assert (c["Status"], c["Completions"], c["Duration"]) == ("Complete", "3/3", "2m")
    running_job = {
        "metadata": {"name": "pi"},
        "spec": {"parallelism": 2},
        "status": {"startTime": ago(seconds=30)},
    }
    c = cells("batch", "jobs", running_job)
    assert (c["Status"], c["Completions"], c["Duration"]) == ("Running", "0/1 of 2", "30s")
    assert cells("batch", "jobs", {"metadata": {"name": "j"}})["Duration"] == ""


# --- misc kinds -----------------------------------------------------------------------------------


def test_event_cells() -> None:
    ev = {
        "metadata": {"name": "web-1.17a"},
        "type": "Warning",
        "reason": "BackOff",
        "message": " Back-off restarting failed container \n",
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{c0}"},
        "source": {"component": "kubelet", "host": "edge-1"},
        "firstTimestamp": ago(minutes=3),
        "lastTimestamp": ago(seconds=20),
        "count": 4,
    }
    c = cells("", "events", ev)
    assert (c["Last Seen"], c["Type"], c["Reason"], c["Object"]) == ("20s", "Warning", "BackOff", "pod/web-1")
    assert (c["Message"], c["Source"], c["First Seen"], c["Count"]) == (
        "Back-off restarting failed container",
        "kubelet, edge-1",
        "3m",
        4,
    )
    new_style = {"metadata": {"name": "e"}, "eventTime": "2024-06-01T11:59:00.000000Z", "involvedObject": {}}
    c = cells("", "events", new_style)
    assert (c["Last Seen"], c["Count"], c["Object"]) == ("60s", 1, "")


def test_small_kinds() -> None:
    assert cells("", "configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}})[
        "Data"
    ] == (2)
    s = cells(
        "", "secrets", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"a": "", "b": ""}}
    )
    assert (s["Type"], s["Data"]) == ("kubernetes.io/tls", 2)
    assert cells("", "serviceaccounts", {"metadata": {"name": "default"}})["Secrets"] == 0
    assert cells("", "namespaces", {"metadata": {"name": "default"}, "status": {"phase": "Active"}})[
        "Status"
    ] == ("Active")
    lease = {"metadata": {"name": "edge-1"}, "spec": {"holderIdentity": "edge-1"}}
    assert cells("coordination.k8s.io", "leases", lease)["Holder"] == "edge-1"
    crd = {"metadata": {"name": "devices.devices.kubeedge.io", "creationTimestamp": "2024-05-01T08:00:00Z"}}
    assert cells("apiextensions.k8s.io", "customresourcedefinitions", crd) == {
        "Name": "devices.devices.kubeedge.io",
        "Created At": "2024-05-01T08:00:00Z",
    }
    rev = {
        "metadata": {
            "name": "agent-5d",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}
            ],
        },
        "revision": 2,
    }
    c = cells("apps", "controllerrevisions", rev)
    assert (c["Controller"], c["Revision"]) == ("daemonset.apps/agent", 2)
    pvc = {
        "metadata": {"name": "data"},
        "spec": {"volumeName": "pv-1", "storageClassName": "local"},
        "status": {
            "phase": "Bound",
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        },
    }
    c = cells("", "persistentvolumeclaims", pvc)
    assert (c["Status"], c["Capacity"], c["Access Modes"], c["StorageClass"]) == (
        "Bound",
        "1Gi",
        "RWO,RWX",
        "local",
    )


def test_unknown_resource_gets_name_and_age() -> None:
    r = ResourceInfo("example.com", "v1", "widgets", "Widget", True)
    assert [c["name"] for c in column_definitions(r)] == ["Name", "Age"]
    assert row_cells(r, {"metadata": {"name": "w", "creationTimestamp": ago(seconds=9)}}, NOW) == ["w", "9s"]


# --- CRD printer columns --------------------------------------------------------------------------


DEVICE = {
    "metadata": {"name": "sensor", "creationTimestamp": ago(hours=1)},
    "spec": {"replicas": 3, "model": {"name": "thermo"}, "ports": [{"port": 1}, {"port": 2}], "on": True},
    "status": {
        "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}],
        "lastSeen": ago(minutes=4),
        "ratio": 0.5,
    },
}


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (".spec.replicas", [3]),
        ("{.spec.model.name}", ["thermo"]),
        (".spec.ports[1].port", [2]),
        (".spec.ports[-1].port", [2]),
        (".spec.ports[*].port", [1, 2]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type=='Synced')].status", ["False"]),
        (".status.conditions[?(@.type!='Synced')].type", ["Ready"]),
        (".metadata['name']", ["sensor"]),
        (".spec.missing", []),
        (".spec.ports[9]", []),
        ("not a path", []),
    ],
)
def test_jsonpath(path: str, found: list) -> None:
    assert jsonpath(DEVICE, path) == found


def crd_info(*cols: PrinterColumn) -> ResourceInfo:
    return ResourceInfo(
        "devices.kubeedge.io", "v1beta1", "devices", "Device", True, printer_columns=cols, crd=True
    )


def test_crd_printer_columns_with_typed_cells_and_age() -> None:
    r = crd_info(
        PrinterColumn("Replicas", "integer", ".spec.replicas"),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Model", "string", ".spec.model", priority=1),
        PrinterColumn("Ratio", "number", ".status.ratio"),
        PrinterColumn("On", "boolean", ".spec.on"),
        PrinterColumn("Seen", "date", ".status.lastSeen"),
        PrinterColumn("Wrong", "integer", ".spec.model.name"),
        PrinterColumn("Missing", "string", ".spec.nothing"),
    )
    defs = column_definitions(r)
    assert [d["name"] for d in defs] == [
        "Name",
        "Replicas",
        "Ready",
        "Model",
        "Ratio",
        "On",
        "Seen",
        "Wrong",
        "Missing",
        "Age",
    ]
    assert defs[0]["format"] == "name" and defs[3]["priority"] == 1 and defs[-1]["type"] == "date"
    assert row_cells(r, DEVICE, NOW) == [
        "sensor",
        3,
        "True",
        '{"name":"thermo"}',
        0.5,
        True,
        "4m",
        None,
        None,
        "60m",
    ]


def test_crd_columns_keep_explicit_age() -> None:
    r = crd_info(PrinterColumn("Age", "date", ".metadata.creationTimestamp"))
    assert [d["name"] for d in column_definitions(r)] == ["Name", "Age"]


# --- the Table envelope ---------------------------------------------------------------------------


def test_table_envelope_and_include_object() -> None:
    r = info("", "configmaps")
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "uid": "u1"}, "data": {"k": "v"}}
    t = to_table(r, [cm], resource_version="42", continue_token="abc", remaining=7, now=NOW)
    assert (t["kind"], t["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert t["metadata"] == {"resourceVersion": "42", "continue": "abc", "remainingItemCount": 7}
    assert t["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": t["columnDefinitions"][0]["description"],
        "priority": 0,
    }
    assert t["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "c", "uid": "u1"},
    }
    assert to_table(r, [cm], resource_version="1", include_object="Object")["rows"][0]["object"] is cm
    bare = to_table(r, [cm], resource_version="1", include_object="None", with_headers=False)
    assert "object" not in bare["rows"][0] and "columnDefinitions" not in bare
    assert bare["metadata"] == {"resourceVersion": "1"}
    assert to_table(r, [], resource_version="3")["rows"] == []


def test_every_builtin_has_matching_definitions_and_cells() -> None:
    for r in BUILTIN:
        defs = column_definitions(r)
        assert defs and all(set(d) == {"name", "type", "format", "description", "priority"} for d in defs)
        assert len(row_cells(r, {"metadata": {"name": "x"}}, NOW)) == len(defs), r.plural


# --- kinds that are stored and served, not enforced -------------------------------------------------


def cells_v(group: str, version: str, plural: str, obj: dict) -> dict:
    r = REG.get(group, version, plural)
    assert r is not None
    names = [c["name"] for c in column_definitions(r)]
    values = row_cells(r, obj, NOW)
    assert len(names) == len(values)
    return dict(zip(names, values, strict=True))


def test_cronjob_cells() -> None:
    cj = {
        "metadata": {"name": "backup", "creationTimestamp": ago(hours=4)},
        "spec": {
            "schedule": "@hourly",
            "suspend": False,
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}
            },
        },
        "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(minutes=5)},
    }
    assert cells("batch", "cronjobs", cj) == {
        "Name": "backup",
        "Schedule": "@hourly",
        "Timezone": "<none>",
        "Suspend": "False",
        "Active": 1,
        "Last Schedule": "5m",
        "Age": "4h",
        "Containers": "b",
        "Images": "busybox",
        "Selector": "<none>",
    }
    never = {"metadata": {"name": "x"}, "spec": {"schedule": "* * * * *", "timeZone": "Etc/UTC"}}
    row = cells("batch", "cronjobs", never)
    assert (row["Timezone"], row["Suspend"], row["Last Schedule"]) == ("Etc/UTC", "<unset>", "<none>")


def test_pdb_ingress_networkpolicy_cells() -> None:
    pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 2}}
    row = cells("policy", "poddisruptionbudgets", pdb)
    assert (row["Min Available"], row["Max Unavailable"], row["Allowed Disruptions"]) == ("50%", "N/A", 2)
    ing = {
        "metadata": {"name": "web"},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["a.example.com"]}],
            "rules": [{"host": f"h{i}.example.com"} for i in range(5)],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]}},
    }
    row = cells("networking.k8s.io", "ingresses", ing)
    assert row["Class"] == "nginx"
    assert row["Hosts"] == "h0.example.com,h1.example.com,h2.example.com + 2 more..."
    assert (row["Address"], row["Ports"]) == ("10.0.0.1,lb.example.com", "80, 443")
    bare = cells("networking.k8s.io", "ingresses", {"metadata": {"name": "x"}, "spec": {"rules": [{}]}})
    assert (bare["Class"], bare["Hosts"], bare["Address"], bare["Ports"]) == ("<none>", "*", "", "80")
    ic = {
        "metadata": {"name": "n"},
        "spec": {
            "controller": "k8s.io/nginx",
            "parameters": {"kind": "Cfg", "apiGroup": "x.io", "name": "p"},
        },
    }
    assert cells("networking.k8s.io", "ingressclasses", ic)["Parameters"] == "Cfg.x.io/p"
    np_all = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}
    assert cells("networking.k8s.io", "networkpolicies", np_all)["Pod-Selector"] == "<none>"
    np_web = {"metadata": {"name": "web"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    assert cells("networking.k8s.io", "networkpolicies", np_web)["Pod-Selector"] == "app=web"


def test_hpa_cells() -> None:
    hpa = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "qps"},
                        "target": {"type": "AverageValue", "averageValue": "1k"},
                    },
                },
                {
                    "type": "External",
                    "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "5"}},
                },
            ],
        },
        "status": {
            "currentReplicas": 3,
            "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}
            ],
        },
    }
    row = cells_v("autoscaling", "v2", "horizontalpodautoscalers", hpa)
    assert row["Reference"] == "Deployment/web"
    assert row["Targets"] == "cpu: 45%/80%, <unknown>/1k + 1 more..."
    assert (row["MinPods"], row["MaxPods"], row["Replicas"]) == ("2", 10, 3)
    bare = {"metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}}}
    assert cells_v("autoscaling", "v2", "horizontalpodautoscalers", bare)["Targets"] == "<none>"


def test_priority_storage_and_volume_cells() -> None:
    pc = {"metadata": {"name": "high"}, "value": 1000, "globalDefault": True}
    row = cells("scheduling.k8s.io", "priorityclasses", pc)
    assert (row["Value"], row["Global-Default"], row["Preemption Policy"]) == (1000, True, "<unset>")
    sc = {
        "metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "example.com/disk",
        "allowVolumeExpansion": True,
    }
    assert cells("storage.k8s.io", "storageclasses", sc) | {"Age": ""} == {
        "Name": "fast (default)",
        "Provisioner": "example.com/disk",
        "ReclaimPolicy": "Delete",
        "VolumeBindingMode": "Immediate",
        "AllowVolumeExpansion": True,
        "Age": "",
    }
    pv = {
        "metadata": {"name": "pv1", "creationTimestamp": ago(days=3)},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"},
            "storageClassName": "fast",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound"},
    }
    assert cells("", "persistentvolumes", pv) == {
        "Name": "pv1",
        "Capacity": "5Gi",
        "Access Modes": "RWO,RWX",
        "Reclaim Policy": "Retain",
        "Status": "Bound",
        "Claim": "default/data",
        "StorageClass": "fast",
        "VolumeAttributesClass": "<unset>",
        "Reason": "",
        "Age": "3d",
        "VolumeMode": "Filesystem",
    }
    va = {
        "metadata": {"name": "va"},
        "spec": {"attacher": "csi.x", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}},
    }
    row = cells("storage.k8s.io", "volumeattachments", va)
    assert (row["Attacher"], row["PV"], row["Node"], row["Attached"]) == ("csi.x", "pv1", "n1", False)
    drv = {"metadata": {"name": "csi.x"}, "spec": {"volumeLifecycleModes": ["Persistent", "Ephemeral"]}}
    row = cells("storage.k8s.io", "csidrivers", drv)
    assert (row["AttachRequired"], row["TokenRequests"], row["Modes"]) == (
        True,
        "<unset>",
        "Persistent,Ephemeral",
    )


def test_quota_rbac_webhook_rc_podtemplate_cells() -> None:
    quota = {
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"}},
        "status": {
            "used": {"pods": "3"},
            "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"},
        },
    }
    row = cells("", "resourcequotas", quota)
    assert (row["Request"], row["Limit"]) == ("pods: 3/10, requests.cpu: 0/2", "limits.memory: 0/4Gi")
    created = "2024-05-01T10:00:00Z"
    role = {"metadata": {"name": "reader", "creationTimestamp": created}}
    assert cells("rbac.authorization.k8s.io", "clusterroles", role) == {
        "Name": "reader",
        "Created At": created,
    }
    assert cells("", "limitranges", role)["Created At"] == created
    rb = {
        "metadata": {"name": "rb"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "User", "name": "bob"},
            {"kind": "Group", "name": "ops"},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "kube-system"},
        ],
    }
    row = cells("rbac.authorization.k8s.io", "rolebindings", rb)
    assert (row["Role"], row["Users"], row["Groups"], row["ServiceAccounts"]) == (
        "ClusterRole/view",
        "alice, bob",
        "ops",
        "kube-system/sa",
    )
    hooks = {"metadata": {"name": "w"}, "webhooks": [{}, {}]}
    assert cells("admissionregistration.k8s.io", "validatingwebhookconfigurations", hooks)["Webhooks"] == 2
    rc = {
        "metadata": {"name": "rc"},
        "spec": {
            "replicas": 3,
            "selector": {"app": "web"},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    row = cells("", "replicationcontrollers", rc)
    assert (row["Desired"], row["Current"], row["Ready"], row["Selector"]) == (3, 2, 1, "app=web")
    pt = {
        "metadata": {"name": "pt"},
        "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
    }
    assert cells("", "podtemplates", pt) == {
        "Template": "pt",
        "Containers": "c",
        "Images": "nginx",
        "Pod Labels": "a=b",
    }
