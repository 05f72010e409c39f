"""Server-side defaulting (checked against the official client's models) and validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client as k8s

from kubeedge.apiserver.defaults import apply_defaults, parse_quantity, pod_qos_class
from kubeedge.apiserver.resources import BUILTIN, ResourceInfo
from kubeedge.apiserver.validation import (
    FORBIDDEN,
    INVALID,
    REQUIRED,
    status_message,
    validate_create,
    validate_name,
    validate_update,
)

INFO = {r.kind: r for r in BUILTIN}


def meta(name: str, namespace: str | None = "default", **extra: Any) -> dict:
    m: dict[str, Any] = {"name": name, **extra}
    if namespace:
        m["namespace"] = namespace
    return m


def pod_spec(image: str = "nginx") -> dict:
    return {"containers": [{"name": "app", "image": image}]}


def template(labels: dict[str, str]) -> dict:
    return {"metadata": {"labels": labels}, "spec": pod_spec()}


SEL = {"matchLabels": {"app": "web"}}
WEBHOOK = {
    "name": "check.example.com",
    "clientConfig": {"url": "https://hooks.example.com/check"},
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
}

# Minimal valid objects, with the client model each must deserialize into once defaulted.
MINIMAL: dict[str, tuple[str, dict]] = {
    "Pod": ("V1Pod", {"metadata": meta("p"), "spec": pod_spec()}),
    "Deployment": (
        "V1Deployment",
        {"metadata": meta("d"), "spec": {"selector": SEL, "template": template({"app": "web"})}},
    ),
    "ReplicaSet": (
        "V1ReplicaSet",
        {"metadata": meta("r"), "spec": {"selector": SEL, "template": template({"app": "web"})}},
    ),
    "DaemonSet": (
        "V1DaemonSet",
        {"metadata": meta("ds"), "spec": {"selector": SEL, "template": template({"app": "web"})}},
    ),
    "StatefulSet": (
        "V1StatefulSet",
        {
            "metadata": meta("s"),
            "spec": {
                "selector": SEL,
                "serviceName": "s",
                "template": template({"app": "web"}),
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    ),
    "Job": (
        "V1Job",
        {"metadata": meta("j"), "spec": {"template": {"spec": {**pod_spec(), "restartPolicy": "Never"}}}},
    ),
    "Service": (
        "V1Service",
        {"metadata": meta("svc"), "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}},
    ),
    "ConfigMap": ("V1ConfigMap", {"metadata": meta("cm"), "data": {"k": "v"}}),
    "Secret": ("V1Secret", {"metadata": meta("sec"), "stringData": {"password": "hunter2"}}),
    "Namespace": ("V1Namespace", {"metadata": meta("ns", None)}),
    "Node": (
        "V1Node",
        {"metadata": meta("edge-1", None), "status": {"nodeInfo": {"kubeletVersion": "v1.30"}}},
    ),
    "Event": (
        "CoreV1Event",
        {"metadata": meta("p.1"), "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}},
    ),
    "Endpoints": (
        "V1Endpoints",
        {"metadata": meta("svc"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
    ),
    "EndpointSlice": (
        "V1EndpointSlice",
        {
            "metadata": meta("svc-abc"),
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
            "ports": [{"port": 80}],
        },
    ),
    "ServiceAccount": ("V1ServiceAccount", {"metadata": meta("default")}),
    "PersistentVolumeClaim": (
        "V1PersistentVolumeClaim",
        {
            "metadata": meta("pvc"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    ),
    "Lease": (
        "V1Lease",
        {"metadata": meta("l"), "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
    ),
    "ControllerRevision": ("V1ControllerRevision", {"metadata": meta("cr"), "revision": 1, "data": {}}),
    "CustomResourceDefinition": (
        "V1CustomResourceDefinition",
        {
            "metadata": meta("widgets.example.com", None),
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True}],
            },
        },
    ),
    # --- stored and served, not enforced
    "PersistentVolume": (
        "V1PersistentVolume",
        {
            "metadata": meta("pv", None),
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/data"},
            },
        },
    ),
    "LimitRange": (
        "V1LimitRange",
        {"metadata": meta("lr"), "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}},
    ),
    "ResourceQuota": ("V1ResourceQuota", {"metadata": meta("q"), "spec": {"hard": {"pods": "10"}}}),
    "PodTemplate": ("V1PodTemplate", {"metadata": meta("pt"), "template": template({"app": "web"})}),
    "ReplicationController": (
        "V1ReplicationController",
        {"metadata": meta("rc"), "spec": {"template": template({"app": "web"})}},
    ),
    "CronJob": (
        "V1CronJob",
        {
            "metadata": meta("cj"),
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {"spec": {"template": {"spec": {**pod_spec(), "restartPolicy": "OnFailure"}}}},
            },
        },
    ),
    "PodDisruptionBudget": (
        "V1PodDisruptionBudget",
        {"metadata": meta("pdb"), "spec": {"minAvailable": 1, "selector": SEL}},
    ),
    "Ingress": (
        "V1Ingress",
        {
            "metadata": meta("ing"),
            "spec": {
                "rules": [
                    {
                        "host": "example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ),
    "IngressClass": (
        "V1IngressClass",
        {"metadata": meta("nginx", None), "spec": {"controller": "k8s.io/ingress-nginx"}},
    ),
    "NetworkPolicy": (
        "V1NetworkPolicy",
        {"metadata": meta("np"), "spec": {"podSelector": SEL, "ingress": [{"ports": [{"port": 80}]}]}},
    ),
    "HorizontalPodAutoscaler": (
        "V2HorizontalPodAutoscaler",
        {
            "metadata": meta("hpa"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 5,
            },
        },
    ),
    "PriorityClass": ("V1PriorityClass", {"metadata": meta("high", None), "value": 1000}),
    "StorageClass": ("V1StorageClass", {"metadata": meta("fast", None), "provisioner": "example.com/disk"}),
    "CSIDriver": ("V1CSIDriver", {"metadata": meta("csi.example.com", None), "spec": {}}),
    "VolumeAttachment": (
        "V1VolumeAttachment",
        {
            "metadata": meta("va", None),
            "spec": {
                "attacher": "csi.example.com",
                "nodeName": "edge-1",
                "source": {"persistentVolumeName": "pv"},
            },
        },
    ),
    "Role": (
        "V1Role",
        {"metadata": meta("reader"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    ),
    "ClusterRole": (
        "V1ClusterRole",
        {"metadata": meta("reader", None), "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]},
    ),
    "RoleBinding": (
        "V1RoleBinding",
        {
            "metadata": meta("rb"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default"}],
        },
    ),
    "ClusterRoleBinding": (
        "V1ClusterRoleBinding",
        {
            "metadata": meta("crb", None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
        },
    ),
    "ValidatingWebhookConfiguration": (
        "V1ValidatingWebhookConfiguration",
        {"metadata": meta("vwc", None), "webhooks": [dict(WEBHOOK)]},
    ),
    "MutatingWebhookConfiguration": (
        "V1MutatingWebhookConfiguration",
        {"metadata": meta("mwc", None), "webhooks": [dict(WEBHOOK)]},
    ),
}


def deserialize(obj: dict, model: str) -> Any:
    return k8s.ApiClient().deserialize(json.dumps(obj), model, "application/json")


def defaulted(kind: str, obj: dict | None = None) -> dict:
    obj = copy.deepcopy(obj if obj is not None else MINIMAL[kind][1])
    apply_defaults(kind, obj)
    return obj


def fields(causes: list[dict[str, str]]) -> list[str]:
    return [c["field"] for c in causes]


# --------------------------------------------------------------------------------------------------
# defaults


def test_every_builtin_kind_has_a_minimal_object() -> None:
    assert set(MINIMAL) == set(INFO)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_defaulted_minimal_object_is_valid_and_client_accepts_it(kind: str) -> None:
    model, obj = MINIMAL[kind]
    out = defaulted(kind, obj)
    assert validate_create(INFO[kind], out) == []
    assert deserialize(out, model) is not None


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_defaults_are_idempotent(kind: str) -> None:
    once = defaulted(kind)
    twice = copy.deepcopy(once)
    apply_defaults(kind, twice)
    assert twice == once


def test_pod_defaults() -> None:
    pod = defaulted(
        "Pod",
        {
            "metadata": meta("p"),
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "registry:5000/app",
                        "ports": [{"containerPort": 80}],
                        "livenessProbe": {"httpGet": {"port": 80}},
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    },
                    {"name": "side", "image": "busybox:1.36"},
                ],
                "initContainers": [{"name": "init", "image": "busybox@sha256:abc"}],
                "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch"}],
            },
        },
    )
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["priority"] == 0 and spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    app, side = spec["containers"]
    assert app["imagePullPolicy"] == "Always"  # registry port is not a tag
    assert side["imagePullPolicy"] == "IfNotPresent"
    assert spec["initContainers"][0]["imagePullPolicy"] == "IfNotPresent"  # digest
    assert app["terminationMessagePath"] == "/dev/termination-log"
    assert app["terminationMessagePolicy"] == "File"
    assert app["resources"] == {}
    assert app["ports"][0]["protocol"] == "TCP"
    assert app["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert app["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert spec["volumes"] == [
        {"name": "cfg", "configMap": {"name": "c", "defaultMode": 420}},
        {"name": "scratch", "emptyDir": {}},
    ]
    assert [(t["key"], t["tolerationSeconds"]) for t in spec["tolerations"]] == [
        ("node.kubernetes.io/not-ready", 300),
        ("node.kubernetes.io/unreachable", 300),
    ]
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert deserialize(pod, "V1Pod").spec.containers[0].liveness_probe.http_get.scheme == "HTTP"


def test_pod_existing_toleration_suppresses_default() -> None:
    pod = defaulted(
        "Pod",
        {
            "metadata": meta("p"),
            "spec": {**pod_spec(), "tolerations": [{"operator": "Exists"}]},
        },
    )
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_pod_service_account_alias_and_priority_class() -> None:
    pod = defaulted(
        "Pod",
        {
            "metadata": meta("p"),
            "spec": {**pod_spec(), "serviceAccount": "robot", "priorityClassName": "system-node-critical"},
        },
    )
    assert pod["spec"]["serviceAccountName"] == "robot"
    assert pod["spec"]["priority"] == 2000001000
    mirror = defaulted(
        "Pod", {"metadata": meta("p", annotations={"kubernetes.io/config.mirror": "x"}), "spec": pod_spec()}
    )
    assert "serviceAccountName" not in mirror["spec"]  # static pods may not use service accounts


def test_qos_classes_and_requests_from_limits() -> None:
    guaranteed = defaulted(
        "Pod",
        {
            "metadata": meta("p"),
            "spec": {
                "containers": [
                    {"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                    {
                        "name": "b",
                        "image": "x:1",
                        "resources": {
                            "limits": {"cpu": "1", "memory": "1Gi"},
                            "requests": {"cpu": "1000m", "memory": "1024Mi"},
                        },
                    },
                ]
            },
        },
    )
    assert guaranteed["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "64Mi"}
    assert guaranteed["status"]["qosClass"] == "Guaranteed"
    burstable = {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}
    assert pod_qos_class(burstable) == "Burstable"
    assert pod_qos_class({"containers": [{"name": "a"}]}) == "BestEffort"


def test_parse_quantity() -> None:
    assert parse_quantity("100m") == parse_quantity("0.1")
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("2k") == 2000
    assert parse_quantity("1e3") == 1000
    assert parse_quantity(3) == 3
    assert parse_quantity("abc") is None


def test_workload_defaults() -> None:
    deploy = defaulted("Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert deploy["spec"]["revisionHistoryLimit"] == 10
    assert deploy["spec"]["progressDeadlineSeconds"] == 600
    tmpl = deploy["spec"]["template"]["spec"]
    assert tmpl["restartPolicy"] == "Always" and tmpl["containers"][0]["imagePullPolicy"] == "Always"
    # Admission-plugin effects apply to Pods only, not to templates.
    assert "tolerations" not in tmpl and "serviceAccountName" not in tmpl

    ds = defaulted("DaemonSet")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["status"]["desiredNumberScheduled"] == 0

    sts = defaulted("StatefulSet")
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"

    assert defaulted("ReplicaSet")["status"] == {"replicas": 0}

    recreate = defaulted(
        "Deployment",
        {
            "metadata": meta("d"),
            "spec": {"selector": SEL, "template": template({"app": "web"}), "strategy": {"type": "Recreate"}},
        },
    )
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}


def test_job_defaults() -> None:
    job = defaulted("Job")["spec"]
    assert (job["parallelism"], job["completions"], job["backoffLimit"]) == (1, 1, 6)
    assert job["completionMode"] == "NonIndexed" and job["suspend"] is False
    assert "manualSelector" not in job and "selector" not in job
    work_queue = defaulted("Job", {"metadata": meta("j"), "spec": {"parallelism": 3, "template": {}}})["spec"]
    assert work_queue["parallelism"] == 3 and "completions" not in work_queue


def test_service_defaults() -> None:
    svc = defaulted(
        "Service",
        {
            "metadata": meta("s"),
            "spec": {
                "type": "NodePort",
                "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
            },
        },
    )
    spec = svc["spec"]
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert spec["ports"][1]["targetPort"] == "dns"
    assert spec["externalTrafficPolicy"] == "Cluster" and spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert "clusterIP" not in spec  # allocation is the registry's job
    assert deserialize(svc, "V1Service").spec.ports[1].target_port == "dns"
    plain = defaulted("Service")["spec"]
    assert plain["type"] == "ClusterIP" and "externalTrafficPolicy" not in plain
    external = defaulted(
        "Service", {"metadata": meta("s"), "spec": {"type": "ExternalName", "externalName": "a.b"}}
    )
    assert "ipFamilies" not in external["spec"]


def test_secret_namespace_node_crd_defaults() -> None:
    secret = defaulted("Secret")
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"password": "aHVudGVyMg=="} and "stringData" not in secret

    ns = defaulted("Namespace")
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "ns"

    node = defaulted("Node", {"metadata": meta("n", None), "status": {"capacity": {"cpu": "4"}}})
    assert node["status"]["nodeInfo"]["machineID"] == "" and node["status"]["allocatable"] == {"cpu": "4"}
    assert node["status"]["nodeInfo"] == defaulted("Node", node)["status"]["nodeInfo"]
    assert defaulted("Node")["status"]["nodeInfo"]["kubeletVersion"] == "v1.30"
    deserialize(node, "V1Node")

    crd = defaulted("CustomResourceDefinition")
    assert crd["spec"]["conversion"] == {"strategy": "None"}


def test_event_and_endpoint_defaults() -> None:
    event = defaulted("Event", {"metadata": meta("e")})
    assert event["involvedObject"] == {}
    deserialize(event, "CoreV1Event")
    assert defaulted("EndpointSlice")["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]
    assert defaulted("Endpoints")["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]


def test_unknown_kind_only_gets_metadata() -> None:
    obj: dict = {"spec": {"x": 1}}
    apply_defaults("Widget", obj)
    assert obj == {"metadata": {}, "spec": {"x": 1}}


# --------------------------------------------------------------------------------------------------
# validation


def test_validate_name_rules() -> None:
    (cause,) = validate_name("Pod", "Foo_1")
    assert cause["reason"] == INVALID and cause["field"] == "metadata.name"
    assert cause["message"].startswith(
        'Invalid value: "Foo_1": a lowercase RFC 1123 subdomain must consist of'
    )
    assert "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]" in cause["message"]
    assert validate_name("Pod", "a.b-c") == []
    assert validate_name("Namespace", "a.b")  # DNS-1123 label: no dots
    assert validate_name("Namespace", "a" * 64)
    assert validate_name("Service", "1abc")  # DNS-1035: must start with a letter
    assert validate_name("Service", "abc-1") == []
    assert validate_name("Node", "edge-1.example.com") == []
    assert validate_name("Role", "system:controller") == []
    assert validate_name("Role", "a/b")


def test_metadata_validation() -> None:
    info = INFO["ConfigMap"]
    assert fields(validate_create(info, {"metadata": {}})) == ["metadata.name"]
    assert (
        validate_create(info, {"metadata": {}})[0]["message"]
        == "Required value: name or generateName is required"
    )
    assert validate_create(info, {"metadata": {"generateName": "web-"}}) == []
    bad = {
        "metadata": {
            "name": "c",
            "labels": {"ok": "yes", "bad key!": "v", "k": "-x"},
            "annotations": {"big": "x" * (256 * 1024)},
        }
    }
    causes = validate_create(info, bad)
    assert fields(causes) == ["metadata.labels", "metadata.labels", "metadata.annotations"]
    assert causes[-1]["reason"] == "FieldValueTooLong"


def test_pod_missing_containers_and_bad_containers() -> None:
    info = INFO["Pod"]
    causes = validate_create(info, {"metadata": meta("p"), "spec": {"containers": []}})
    assert causes == [{"reason": REQUIRED, "message": "Required value", "field": "spec.containers"}]
    spec = {
        "containers": [
            {"name": "app", "image": "x", "ports": [{"containerPort": 70000, "protocol": "ICMP"}]},
            {"name": "app", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
            {"image": "x"},
        ]
    }
    causes = validate_create(info, {"metadata": meta("p"), "spec": spec})
    by_field = {c["field"]: c for c in causes}
    assert by_field["spec.containers[0].ports[0].containerPort"]["message"] == (
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    )
    assert by_field["spec.containers[0].ports[0].protocol"]["message"] == (
        'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'
    )
    assert by_field["spec.containers[1].name"]["reason"] == "FieldValueDuplicate"
    assert by_field["spec.containers[1].image"]["reason"] == REQUIRED
    assert by_field["spec.containers[1].volumeMounts[0].name"]["reason"] == "FieldValueNotFound"
    assert by_field["spec.containers[2].name"]["reason"] == REQUIRED


def test_pod_resources_request_above_limit() -> None:
    spec = {
        "containers": [
            {"name": "a", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
        ]
    }
    (cause,) = validate_create(INFO["Pod"], {"metadata": meta("p"), "spec": spec})
    assert cause["field"] == "spec.containers[0].resources.requests"
    assert "must be less than or equal to cpu limit of 1" in cause["message"]


def test_workload_selector_rules() -> None:
    info = INFO["Deployment"]
    mismatch = {"metadata": meta("d"), "spec": {"selector": SEL, "template": template({"app": "db"})}}
    (cause,) = validate_create(info, mismatch)
    assert cause["field"] == "spec.template.metadata.labels"
    assert cause["message"] == 'Invalid value: {"app":"db"}: `selector` does not match template `labels`'
    missing = {"metadata": meta("d"), "spec": {"template": template({"app": "web"})}}
    assert fields(validate_create(info, missing)) == ["spec.selector"]
    empty = {"metadata": meta("d"), "spec": {"selector": {}, "template": template({"app": "web"})}}
    assert "empty selector is invalid for deployment" in validate_create(info, empty)[0]["message"]
    bad_op = {
        "metadata": meta("d"),
        "spec": {
            "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
            "template": template({"app": "web"}),
        },
    }
    assert fields(validate_create(info, bad_op)) == ["spec.selector.matchExpressions[0].values"]
    never = defaulted("DaemonSet")
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert fields(validate_create(INFO["DaemonSet"], never)) == ["spec.template.spec.restartPolicy"]
    job = defaulted("Job")
    job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert fields(validate_create(INFO["Job"], job)) == ["spec.template.spec.restartPolicy"]


def test_service_validation() -> None:
    info = INFO["Service"]

    def svc(spec: dict) -> list[str]:
        return fields(validate_create(info, {"metadata": meta("s"), "spec": spec}))

    assert svc({"ports": []}) == ["spec.ports"]
    assert svc({"clusterIP": "None"}) == []  # headless without ports
    assert svc({"type": "ExternalName", "externalName": "db.example.com"}) == []
    assert svc({"type": "ExternalName"}) == ["spec.externalName"]
    assert svc({"type": "Magic", "ports": [{"port": 1}]}) == ["spec.type"]
    assert svc({"ports": [{"port": 0}]}) == ["spec.ports[0].port"]
    assert svc({"ports": [{"port": 80}, {"port": 81}]}) == ["spec.ports[0].name", "spec.ports[1].name"]
    assert svc({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}) == ["spec.ports[1].name"]
    assert svc({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}) == ["spec.clusterIP"]
    assert svc({"clusterIP": "fd00::10", "ports": [{"port": 80}]}) == []
    assert validate_name("Service", "Web")[0]["message"].startswith('Invalid value: "Web": a DNS-1035 label')


def test_config_and_secret_validation() -> None:
    cm = {"metadata": meta("c"), "data": {"ok.key": "v", "bad/key": "v"}, "binaryData": {"ok.key": "AA=="}}
    causes = validate_create(INFO["ConfigMap"], cm)
    assert fields(causes) == ["data[bad/key]", "binaryData[ok.key]"]
    assert "a valid config key must consist of alphanumeric characters" in causes[0]["message"]
    secret = {"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "not base64!"}}
    assert fields(validate_create(INFO["Secret"], secret)) == ["data[tls.crt]", "data[tls.key]"]


def test_other_kinds_validation() -> None:
    slice_ = defaulted("EndpointSlice")
    slice_["addressType"] = "IPX"
    assert fields(validate_create(INFO["EndpointSlice"], slice_)) == ["addressType"]
    slice_["addressType"] = "IPv6"
    assert fields(validate_create(INFO["EndpointSlice"], slice_)) == ["endpoints[0].addresses[0]"]
    lease = {"metadata": meta("l"), "spec": {"leaseDurationSeconds": 0}}
    assert fields(validate_create(INFO["Lease"], lease)) == ["spec.leaseDurationSeconds"]
    event = {
        "metadata": meta("e", "other"),
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
    }
    assert fields(validate_create(INFO["Event"], event)) == ["involvedObject.namespace"]
    node = {"metadata": meta("n", None), "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}
    assert fields(validate_create(INFO["Node"], node)) == ["spec.taints[0].effect"]
    assert fields(validate_create(INFO["Namespace"], {"metadata": meta("Bad_NS", None)})) == ["metadata.name"]


def test_crd_validation() -> None:
    info = INFO["CustomResourceDefinition"]
    crd = defaulted("CustomResourceDefinition")
    crd["metadata"]["name"] = "widgets.other.com"
    crd["spec"]["scope"] = "Galaxy"
    crd["spec"]["versions"].append({"name": "v2", "served": True, "storage": True})
    causes = validate_create(info, crd)
    assert fields(causes) == ["spec.scope", "spec.versions", "metadata.name"]
    assert causes[1]["message"].endswith("must have exactly one version marked as storage version")
    nogroup = defaulted("CustomResourceDefinition")
    nogroup["spec"]["group"] = "local"
    nogroup["metadata"]["name"] = "widgets.local"
    assert fields(validate_create(info, nogroup)) == ["spec.group"]


def test_custom_resources_get_metadata_checks_only() -> None:
    info = ResourceInfo(
        group="example.com", version="v1", plural="widgets", kind="Widget", namespaced=True, crd=True
    )
    assert validate_create(info, {"metadata": meta("w"), "spec": {"anything": 1}}) == []
    assert fields(validate_create(info, {"metadata": meta("W_1")})) == ["metadata.name"]


# --- updates


def test_metadata_immutable() -> None:
    old = defaulted("ConfigMap")
    old["metadata"].update(uid="u1", creationTimestamp="2024-01-01T00:00:00Z")
    new = copy.deepcopy(old)
    new["metadata"].update(name="other", uid="u2")
    causes = validate_update(INFO["ConfigMap"], new, old)
    assert fields(causes) == ["metadata.name", "metadata.uid"]
    assert causes[0]["message"] == 'Invalid value: "other": field is immutable'
    restored = copy.deepcopy(old)
    del restored["metadata"]["uid"]  # a client leaving out system fields is not changing them
    assert validate_update(INFO["ConfigMap"], restored, old) == []


def test_pod_update_rules() -> None:
    info = INFO["Pod"]
    old = defaulted("Pod")
    allowed = copy.deepcopy(old)
    allowed["spec"]["containers"][0]["image"] = "nginx:1.27"
    allowed["spec"]["activeDeadlineSeconds"] = 60
    allowed["spec"]["tolerations"].append({"key": "x", "operator": "Exists"})
    allowed["metadata"]["labels"] = {"new": "label"}
    assert validate_update(info, allowed, old) == []

    for mutate in (
        lambda s: s.update(nodeName="elsewhere"),
        lambda s: s["containers"][0].update(command=["sh"]),
        lambda s: s.update(tolerations=[]),  # removing tolerations is not allowed
        lambda s: s.update(terminationGracePeriodSeconds=5),
    ):
        new = copy.deepcopy(old)
        mutate(new["spec"])
        (cause,) = validate_update(info, new, old)
        assert cause["reason"] == FORBIDDEN and cause["field"] == "spec"
        assert cause["message"].startswith("Forbidden: pod updates may not change fields other than")

    deleting = copy.deepcopy(old)
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    deleting["spec"]["terminationGracePeriodSeconds"] = 5
    assert validate_update(info, deleting, old) == []


def test_workload_update_rules() -> None:
    old = defaulted("Deployment")
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    causes = validate_update(INFO["Deployment"], new, old)
    assert fields(causes) == ["spec.selector"] and causes[0]["message"].endswith("field is immutable")
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert validate_update(INFO["Deployment"], scaled, old) == []

    job = defaulted("Job")
    changed = copy.deepcopy(job)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert fields(validate_update(INFO["Job"], changed, job)) == ["spec.template"]

    sts = defaulted("StatefulSet")
    renamed = copy.deepcopy(sts)
    renamed["spec"]["serviceName"] = "other"
    assert validate_update(INFO["StatefulSet"], renamed, sts)[0]["reason"] == FORBIDDEN
    resized = copy.deepcopy(sts)
    resized["spec"]["replicas"] = 3
    assert validate_update(INFO["StatefulSet"], resized, sts) == []


def test_service_cluster_ip_immutable() -> None:
    old = defaulted("Service")
    old["spec"]["clusterIP"] = "10.96.0.10"
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.11"
    assert fields(validate_update(INFO["Service"], new, old)) == ["spec.clusterIP"]
    unset = copy.deepcopy(old)
    unset["spec"]["clusterIP"] = ""  # "keep the allocated one"
    assert validate_update(INFO["Service"], unset, old) == []
    fresh = defaulted("Service")
    assigned = copy.deepcopy(fresh)
    assigned["spec"]["clusterIP"] = "10.96.0.12"
    assert validate_update(INFO["Service"], assigned, fresh) == []


def test_immutable_configmap_and_secret() -> None:
    old: dict[str, Any] = {"metadata": meta("c"), "data": {"k": "v"}, "immutable": True}
    new = copy.deepcopy(old)
    new["data"]["k"] = "w"
    new["immutable"] = False
    causes = validate_update(INFO["ConfigMap"], new, old)
    assert fields(causes) == ["immutable", "data"]
    assert causes[1]["message"] == "Forbidden: field is immutable when `immutable` is set"
    mutable_old = {**old, "immutable": False}
    assert validate_update(INFO["ConfigMap"], {**new, "immutable": True}, mutable_old) == []


def test_crd_scope_immutable() -> None:
    old = defaulted("CustomResourceDefinition")
    new = copy.deepcopy(old)
    new["spec"]["scope"] = "Cluster"
    assert fields(validate_update(INFO["CustomResourceDefinition"], new, old)) == ["spec.scope"]


def test_status_message() -> None:
    causes = validate_create(INFO["Pod"], {"metadata": meta("p"), "spec": {"containers": []}})
    assert status_message("Pod", "p", causes) == 'Pod "p" is invalid: spec.containers: Required value'
    two = [*causes, *causes]
    assert status_message("Pod", "p", two) == (
        'Pod "p" is invalid: [spec.containers: Required value, spec.containers: Required value]'
    )


# --- kinds that are stored and served, not enforced


def test_cronjob_defaults_and_job_template_defaults() -> None:
    cj = defaulted("CronJob")
    spec = cj["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Allow", False)
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    job_spec = spec["jobTemplate"]["spec"]
    assert (job_spec["completions"], job_spec["parallelism"], job_spec["backoffLimit"]) == (1, 1, 6)
    assert "selector" not in job_spec  # generated per Job by the cronjob controller's Job, not here
    pod = job_spec["template"]["spec"]
    assert (pod["dnsPolicy"], pod["containers"][0]["imagePullPolicy"]) == ("ClusterFirst", "Always")


def test_other_new_kind_defaults() -> None:
    rc = defaulted("ReplicationController")
    assert rc["spec"]["selector"] == {"app": "web"} and rc["metadata"]["labels"] == {"app": "web"}
    assert rc["spec"]["replicas"] == 1 and rc["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert defaulted("PodTemplate")["template"]["spec"]["schedulerName"] == "default-scheduler"
    pv = defaulted("PersistentVolume")
    assert (pv["spec"]["persistentVolumeReclaimPolicy"], pv["spec"]["volumeMode"]) == ("Retain", "Filesystem")
    assert pv["status"]["phase"] == "Pending"
    assert defaulted("HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1
    assert defaulted("PriorityClass")["preemptionPolicy"] == "PreemptLowerPriority"
    sc = defaulted("StorageClass")
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")
    rb = defaulted("RoleBinding")
    assert [s["apiGroup"] for s in rb["subjects"]] == ["rbac.authorization.k8s.io", ""]
    ingress_only = defaulted("NetworkPolicy")
    assert ingress_only["spec"]["policyTypes"] == ["Ingress"]
    assert ingress_only["spec"]["ingress"][0]["ports"][0]["protocol"] == "TCP"
    both = defaulted("NetworkPolicy", {"metadata": meta("np"), "spec": {"egress": [{}]}})
    assert both["spec"]["policyTypes"] == ["Ingress", "Egress"] and both["spec"]["podSelector"] == {}
    explicit = defaulted("NetworkPolicy", {"metadata": meta("np"), "spec": {"policyTypes": ["Egress"]}})
    assert explicit["spec"]["policyTypes"] == ["Egress"]
    ing = defaulted("Ingress")
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Prefix"  # no default, kept


@pytest.mark.parametrize(
    "schedule",
    [
        "* * * * *",
        "@hourly",
        "@daily",
        "@every 1h30m",
        "0 0 1 JAN,jul MON-fri",
        "*/15 0-23/2 1-31 * ?",
        "5/10 * * * *",
    ],
)
def test_cron_schedules_accepted(schedule: str) -> None:
    cj = defaulted("CronJob")
    cj["spec"]["schedule"] = schedule
    assert validate_create(INFO["CronJob"], cj) == []


@pytest.mark.parametrize(
    ("schedule", "detail"),
    [
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("60 * * * *", "end of range (60) above maximum (59): 60"),
        ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("* * * * 7", "end of range (7) above maximum (6): 7"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("* * * foo *", "failed to parse int from foo"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
        ("TZ=UTC * * * * *", "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
    ],
)
def test_cron_schedules_refused(schedule: str, detail: str) -> None:
    cj = defaulted("CronJob")
    cj["spec"]["schedule"] = schedule
    (cause,) = validate_create(INFO["CronJob"], cj)
    assert (cause["field"], cause["reason"]) == ("spec.schedule", INVALID)
    assert detail in cause["message"]


def test_cronjob_validation() -> None:
    info = INFO["CronJob"]
    cj = defaulted("CronJob")
    del cj["spec"]["schedule"]
    cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    cj["spec"]["timeZone"] = "Mars/Olympus"
    assert fields(validate_create(info, cj)) == [
        "spec.schedule",
        "spec.timeZone",
        "spec.jobTemplate.spec.template.spec.restartPolicy",
    ]
    no_template = {"metadata": meta("cj"), "spec": {"schedule": "@daily"}}
    assert fields(validate_create(info, no_template)) == ["spec.jobTemplate"]
    long_name = defaulted("CronJob")
    long_name["metadata"]["name"] = "c" * 53
    assert fields(validate_create(info, long_name)) == ["metadata.name"]


def test_rbac_validation_and_role_ref_immutable() -> None:
    rb = defaulted("RoleBinding")
    del rb["roleRef"]
    assert fields(validate_create(INFO["RoleBinding"], rb)) == ["roleRef"]
    crb = defaulted("ClusterRoleBinding")
    crb["roleRef"]["kind"] = "Role"
    crb["subjects"][0].pop("namespace")
    assert fields(validate_create(INFO["ClusterRoleBinding"], crb)) == [
        "roleRef.kind",
        "subjects[0].namespace",
    ]
    role = {"metadata": meta("r"), "rules": [{"resources": ["pods"], "apiGroups": [""]}]}
    assert fields(validate_create(INFO["Role"], role)) == ["rules[0].verbs"]
    old = defaulted("ClusterRoleBinding")
    new = copy.deepcopy(old)
    new["roleRef"]["name"] = "admin"
    (cause,) = validate_update(INFO["ClusterRoleBinding"], new, old)
    assert cause["field"] == "roleRef" and cause["message"].endswith("cannot change roleRef")
    more_subjects = copy.deepcopy(old)
    more_subjects["subjects"].append(
        {"kind": "Group", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}
    )
    assert validate_update(INFO["ClusterRoleBinding"], more_subjects, old) == []


def test_priorityclass_pdb_hpa_validation() -> None:
    info = INFO["PriorityClass"]
    assert fields(validate_create(info, {"metadata": meta("p", None)})) == ["value"]
    assert fields(validate_create(info, {"metadata": meta("p", None), "value": 2_000_000_000})) == ["value"]
    old = defaulted("PriorityClass")
    changed = {**old, "value": 5}
    assert validate_update(info, changed, old)[0]["reason"] == FORBIDDEN

    pdb = defaulted("PodDisruptionBudget")
    pdb["spec"]["maxUnavailable"] = "10%"
    (cause,) = validate_create(INFO["PodDisruptionBudget"], pdb)
    assert cause["field"] == "spec" and "cannot be both set" in cause["message"]
    pdb["spec"] = {"maxUnavailable": "150%"}
    assert fields(validate_create(INFO["PodDisruptionBudget"], pdb)) == ["spec.maxUnavailable"]

    hpa = defaulted("HorizontalPodAutoscaler")
    hpa["spec"].update(minReplicas=3, maxReplicas=2)
    assert fields(validate_create(INFO["HorizontalPodAutoscaler"], hpa)) == ["spec.maxReplicas"]
    hpa["spec"].update(minReplicas=0, maxReplicas=2, scaleTargetRef={"kind": "Deployment"})
    assert fields(validate_create(INFO["HorizontalPodAutoscaler"], hpa)) == [
        "spec.scaleTargetRef.name",
        "spec.minReplicas",
    ]
    hpa["spec"].pop("scaleTargetRef")
    assert "spec.scaleTargetRef" in fields(validate_create(INFO["HorizontalPodAutoscaler"], hpa))


def test_ingress_and_rc_validation() -> None:
    info = INFO["Ingress"]
    ing = defaulted("Ingress")
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    del path["pathType"]
    (cause,) = validate_create(info, ing)
    assert (cause["field"], cause["reason"]) == ("spec.rules[0].http.paths[0].pathType", REQUIRED)
    path["pathType"] = "Regex"
    assert fields(validate_create(info, ing)) == ["spec.rules[0].http.paths[0].pathType"]
    path.update(pathType="Exact", path="relative", backend={})
    assert fields(validate_create(info, ing)) == [
        "spec.rules[0].http.paths[0].path",
        "spec.rules[0].http.paths[0].backend",
    ]
    assert fields(validate_create(info, {"metadata": meta("i"), "spec": {}})) == ["spec.rules"]

    rc = defaulted("ReplicationController")
    rc["spec"]["selector"] = {"app": "db"}
    assert fields(validate_create(INFO["ReplicationController"], rc)) == ["spec.template.metadata.labels"]


def test_storage_validation() -> None:
    assert fields(validate_create(INFO["StorageClass"], {"metadata": meta("s", None)})) == ["provisioner"]
    pv = defaulted("PersistentVolume")
    pv["spec"]["nfs"] = {"server": "nfs", "path": "/"}
    pv["spec"]["persistentVolumeReclaimPolicy"] = "Shred"
    assert fields(validate_create(INFO["PersistentVolume"], pv)) == [
        "spec.nfs",
        "spec.persistentVolumeReclaimPolicy",
    ]
    netpol = defaulted("NetworkPolicy")
    netpol["spec"]["policyTypes"] = ["Sideways"]
    assert fields(validate_create(INFO["NetworkPolicy"], netpol)) == ["spec.policyTypes[0]"]
