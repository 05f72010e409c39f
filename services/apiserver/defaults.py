"""Server-side defaulting, so stored objects look like kube-apiserver's.

Covers upstream's SetDefaults_* functions for the served kinds plus the effects of the admission plugins
every cluster runs (ServiceAccount, DefaultTolerationSeconds, Priority) and the registry strategies'
PrepareForCreate (initial statuses). Go also serialises some non-pointer structs and non-omitempty fields
even when zero (e.g. `status.replicas: 0`, `nodeInfo.*: ""`); the official Python client's models reject
objects without them, so they are filled in here too.

`apply_defaults` mutates in place and is idempotent: it only fills what is missing.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from kubeedge.apiserver.resources import Obj
from kubeedge.kube.quantity import try_parse_quantity

__all__ = ["apply_defaults", "default_pod_spec", "parse_quantity", "pod_qos_class"]

DEFAULT_TOLERATION_SECONDS = 300
# Priority admission resolves these built-in classes without a PriorityClass object.
SYSTEM_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
NODE_INFO_FIELDS = (
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
)
_VOLUME_MODE_SOURCES = ("secret", "configMap", "downwardAPI", "projected")
_FILE_MODE_0644 = 420


def apply_defaults(kind: str, obj: Obj) -> None:
    """Fill in the fields kube-apiserver would default for `kind`; unknown kinds (CRs) are left alone."""
    _dict(obj, "metadata")
    defaulter = _DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj)


# --------------------------------------------------------------------------------------------------
# small helpers


def _dict(parent: Obj, key: str) -> Obj:
    """parent[key] as a dict, created (or replacing an explicit null) when missing."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _items(parent: Obj | None, key: str) -> Iterator[Obj]:
    """The dict entries of the list parent[key], tolerating a missing or null list."""
    if not isinstance(parent, dict):
        return
    for item in parent.get(key) or ():
        if isinstance(item, dict):
            yield item


def _default(parent: Obj, key: str, value: Any) -> None:
    """setdefault that also replaces an explicit null, which Go decodes as "unset"."""
    if parent.get(key) is None:
        parent[key] = value


# --------------------------------------------------------------------------------------------------
# quantities and QoS


def parse_quantity(value: Any) -> Fraction | None:
    """A resource.Quantity ("100m", "1Gi", "2e3", 3) as an exact number; None when malformed."""
    return try_parse_quantity(value)


def _same_quantity(a: Any, b: Any) -> bool:
    qa, qb = parse_quantity(a), parse_quantity(b)
    return qa == qb if qa is not None and qb is not None else str(a) == str(b)


def pod_qos_class(spec: Obj) -> str:
    """BestEffort / Burstable / Guaranteed, as upstream's qos.GetPodQOS (cpu and memory only)."""
    any_set = False
    guaranteed = True
    for c in [*_items(spec, "containers"), *_items(spec, "initContainers")]:
        resources = c.get("resources") or {}
        requests = {k: v for k, v in (resources.get("requests") or {}).items() if k in ("cpu", "memory")}
        limits = {k: v for k, v in (resources.get("limits") or {}).items() if k in ("cpu", "memory")}
        nonzero = [v for v in [*requests.values(), *limits.values()] if parse_quantity(v) != 0]
        any_set = any_set or bool(nonzero)
        if set(limits) != {"cpu", "memory"}:
            guaranteed = False
        elif any(not _same_quantity(requests.get(k, limits[k]), limits[k]) for k in limits):
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# --------------------------------------------------------------------------------------------------
# pod spec


def _image_pull_policy(image: str) -> str:
    # Only the last path component can carry a tag ("registry:5000/app" has none); a digest pins the
    # image, so it is not "latest" either.
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ("" if digest else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_http_get(handler: Obj | None) -> None:
    if isinstance(handler, dict) and isinstance(handler.get("httpGet"), dict):
        http_get = handler["httpGet"]
        _default(http_get, "path", "/")
        _default(http_get, "scheme", "HTTP")


def _default_probe(probe: Obj | None) -> None:
    if not isinstance(probe, dict):
        return
    _default(probe, "timeoutSeconds", 1)
    _default(probe, "periodSeconds", 10)
    _default(probe, "successThreshold", 1)
    _default(probe, "failureThreshold", 3)
    _default_http_get(probe)


def _default_container(c: Obj, host_network: bool) -> None:
    _default(c, "terminationMessagePath", "/dev/termination-log")
    _default(c, "terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str):
        _default(c, "imagePullPolicy", _image_pull_policy(c["image"]))
    _dict(c, "resources")
    for port in _items(c, "ports"):
        _default(port, "protocol", "TCP")
        # With host networking the container port *is* the host port.
        if host_network and port.get("containerPort") is not None:
            _default(port, "hostPort", port["containerPort"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        _default_http_get(lifecycle.get("postStart"))
        _default_http_get(lifecycle.get("preStop"))
    for env in _items(c, "env"):
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            _default(field_ref, "apiVersion", "v1")


def _default_volume(v: Obj) -> None:
    if set(v) <= {"name"}:
        v["emptyDir"] = {}  # a volume with no source is an emptyDir
    for source in _VOLUME_MODE_SOURCES:
        if isinstance(v.get(source), dict):
            _default(v[source], "defaultMode", _FILE_MODE_0644)
    if isinstance(v.get("hostPath"), dict):
        _default(v["hostPath"], "type", "")


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and friends: applies to Pods and to every pod template."""
    _default(spec, "restartPolicy", "Always")
    _default(spec, "dnsPolicy", "ClusterFirst")
    _default(spec, "schedulerName", "default-scheduler")
    _default(spec, "terminationGracePeriodSeconds", 30)
    _dict(spec, "securityContext")
    host_network = bool(spec.get("hostNetwork"))
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in _items(spec, key):
            _default_container(c, host_network)
    for v in _items(spec, "volumes"):
        _default_volume(v)


def _default_requests_from_limits(spec: Obj) -> None:
    # A limit without a request means "request exactly the limit" (SetDefaults_Pod, not for templates).
    for c in [*_items(spec, "containers"), *_items(spec, "initContainers")]:
        resources = _dict(c, "resources")
        limits = resources.get("limits") or {}
        if limits:
            requests = _dict(resources, "requests")
            for name, qty in limits.items():
                requests.setdefault(name, qty)


def _tolerates(tolerations: list[Obj], key: str) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", "NoExecute"):
            continue
        if t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"):
            return True
    return False


def _default_tolerations(spec: Obj) -> None:
    """DefaultTolerationSeconds admission: evict 5 minutes after the node goes not-ready/unreachable."""
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    added = False
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not _tolerates(tolerations, key):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
                }
            )
            added = True
    if added:
        spec["tolerations"] = tolerations


def _default_service_account(pod: Obj, spec: Obj) -> None:
    # Mirror pods (static pods reported by a kubelet/edged) may not use service accounts upstream.
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if "kubernetes.io/config.mirror" in annotations:
        return
    # `serviceAccount` is the deprecated alias; the v1 conversion keeps both in sync.
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = name
    spec["serviceAccount"] = name


def _default_pod(pod: Obj) -> None:
    spec = _dict(pod, "spec")
    _default_requests_from_limits(spec)
    default_pod_spec(spec)
    _default(spec, "enableServiceLinks", True)
    _default_service_account(pod, spec)
    _default_tolerations(spec)
    _default(spec, "priority", SYSTEM_PRIORITIES.get(spec.get("priorityClassName") or "", 0))
    _default(spec, "preemptionPolicy", "PreemptLowerPriority")
    status = _dict(pod, "status")
    _default(status, "phase", "Pending")
    _default(status, "qosClass", pod_qos_class(spec))


def _default_template(spec: Obj) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        default_pod_spec(_dict(template, "spec"))


# --------------------------------------------------------------------------------------------------
# workloads


def _default_deployment(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "replicas", 1)
    strategy = _dict(spec, "strategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", "25%")
        _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    _default_template(spec)
    _dict(obj, "status")


def _default_replicaset(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "replicas", 1)
    _default_template(spec)
    _default(_dict(obj, "status"), "replicas", 0)


def _default_daemonset(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    strategy = _dict(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", 1)
        _default(rolling, "maxSurge", 0)
    _default(spec, "revisionHistoryLimit", 10)
    _default_template(spec)
    status = _dict(obj, "status")
    for key in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"):
        _default(status, key, 0)


def _default_pvc(pvc: Obj) -> None:
    _default(_dict(pvc, "spec"), "volumeMode", "Filesystem")
    _default(_dict(pvc, "status"), "phase", "Pending")


def _default_statefulset(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "replicas", 1)
    _default(spec, "podManagementPolicy", "OrderedReady")
    strategy = _dict(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _default(_dict(strategy, "rollingUpdate"), "partition", 0)
    _default(spec, "revisionHistoryLimit", 10)
    retention = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    _default(retention, "whenDeleted", "Retain")
    _default(retention, "whenScaled", "Retain")
    for claim in _items(spec, "volumeClaimTemplates"):
        _default_pvc(claim)
    _default_template(spec)
    status = _dict(obj, "status")
    _default(status, "replicas", 0)
    _default(status, "availableReplicas", 0)


def _default_job(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default_job_spec(spec)
    _generate_job_selector(obj, spec)
    _dict(obj, "status")


def _default_job_spec(spec: Obj) -> None:
    """SetDefaults_Job's spec part; CronJob job templates get it too (but no generated selector)."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _default(spec, "parallelism", 1)
    # With per-index limits the global limit is effectively off (MaxInt32) upstream.
    _default(spec, "backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    _default(spec, "completionMode", "NonIndexed")
    _default(spec, "suspend", False)
    _default(
        spec, "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    _default_template(spec)


def _generate_job_selector(obj: Obj, spec: Obj) -> None:
    """The Job strategy's generateSelector: unless manualSelector, pods are selected by the job's uid."""
    md = obj.get("metadata") or {}
    uid, name = md.get("uid"), md.get("name") or ""
    template = spec.get("template")
    if spec.get("manualSelector") is True or not uid or not isinstance(template, dict):
        return
    labels = _dict(_dict(template, "metadata"), "labels")
    labels.setdefault("batch.kubernetes.io/controller-uid", uid)
    labels.setdefault("controller-uid", uid)
    if len(name) <= 63:  # a label value's limit
        labels.setdefault("batch.kubernetes.io/job-name", name)
        labels.setdefault("job-name", name)
    _default(spec, "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})


# --------------------------------------------------------------------------------------------------
# core kinds


def _looks_ipv6(ip: Any) -> bool:
    return isinstance(ip, str) and ":" in ip


def _default_service(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "type", "ClusterIP")
    _default(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        client_ip = _dict(_dict(spec, "sessionAffinityConfig"), "clientIP")
        _default(client_ip, "timeoutSeconds", 10800)
    for port in _items(spec, "ports"):
        _default(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, "") and port.get("port") is not None:
            port["targetPort"] = port["port"]
    svc_type = spec["type"]
    if svc_type in ("NodePort", "LoadBalancer"):
        _default(spec, "externalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        _default(spec, "allocateLoadBalancerNodePorts", True)
    if svc_type != "ExternalName":
        _default(spec, "internalTrafficPolicy", "Cluster")
        # Single-stack cluster: the family follows an explicitly requested clusterIP, else IPv4.
        _default(spec, "ipFamilies", ["IPv6" if _looks_ipv6(spec.get("clusterIP")) else "IPv4"])
        _default(spec, "ipFamilyPolicy", "SingleStack")
    _dict(_dict(obj, "status"), "loadBalancer")


def _default_secret(obj: Obj) -> None:
    _default(obj, "type", "Opaque")
    # stringData is write-only: kube-apiserver merges it into data (winning over data) and drops it.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _dict(obj, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_namespace(obj: Obj) -> None:
    metadata = _dict(obj, "metadata")
    if metadata.get("name"):
        _dict(metadata, "labels")["kubernetes.io/metadata.name"] = metadata["name"]
    _default(_dict(obj, "spec"), "finalizers", ["kubernetes"])
    _default(_dict(obj, "status"), "phase", "Active")


def _default_node(obj: Obj) -> None:
    status = _dict(obj, "status")
    node_info = _dict(status, "nodeInfo")
    for key in NODE_INFO_FIELDS:
        _default(node_info, key, "")
    _default(_dict(_dict(status, "daemonEndpoints"), "kubeletEndpoint"), "Port", 0)
    if status.get("capacity") and status.get("allocatable") is None:
        status["allocatable"] = dict(status["capacity"])


def _default_event(obj: Obj) -> None:
    _dict(obj, "involvedObject")
    # Non-omitempty strings in Go, so always present in kube-apiserver's output.
    _default(obj, "reportingComponent", "")
    _default(obj, "reportingInstance", "")


def _default_endpoint_ports(ports_owner: Obj) -> None:
    for port in _items(ports_owner, "ports"):
        _default(port, "protocol", "TCP")


def _default_endpoints(obj: Obj) -> None:
    for subset in _items(obj, "subsets"):
        _default_endpoint_ports(subset)


def _default_endpointslice(obj: Obj) -> None:
    for port in _items(obj, "ports"):
        _default(port, "name", "")
        _default(port, "protocol", "TCP")


def _default_crd(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(_dict(spec, "conversion"), "strategy", "None")
    # served/storage are plain bools in Go, so they read as false rather than being absent.
    for version in _items(spec, "versions"):
        _default(version, "served", False)
        _default(version, "storage", False)


# --------------------------------------------------------------------------------------------------
# kinds that are stored and served but not enforced


def _default_cronjob(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "concurrencyPolicy", "Allow")
    _default(spec, "suspend", False)
    _default(spec, "successfulJobsHistoryLimit", 3)
    _default(spec, "failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict):
        _default_job_spec(_dict(job_template, "spec"))
    _dict(obj, "status")


def _default_replicationcontroller(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "replicas", 1)
    template = spec.get("template")
    labels = ((template or {}).get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    # SetDefaults_ReplicationController: an empty selector means "the template's labels", and labels
    # default to the template's too.
    if not spec.get("selector") and labels:
        spec["selector"] = dict(labels)
    metadata = _dict(obj, "metadata")
    if not metadata.get("labels") and labels:
        metadata["labels"] = dict(labels)
    _default_template(spec)
    _default(_dict(obj, "status"), "replicas", 0)


def _default_podtemplate(obj: Obj) -> None:
    template = obj.get("template")
    if isinstance(template, dict):
        default_pod_spec(_dict(template, "spec"))


def _default_pv(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "persistentVolumeReclaimPolicy", "Retain")
    _default(spec, "volumeMode", "Filesystem")
    if isinstance(spec.get("hostPath"), dict):
        _default(spec["hostPath"], "type", "")
    _default(_dict(obj, "status"), "phase", "Pending")


def _default_hpa(obj: Obj) -> None:
    _default(_dict(obj, "spec"), "minReplicas", 1)
    # desiredReplicas is a non-omitempty int32 in Go, so it always reads back (as 0 before the first sync).
    _default(_dict(obj, "status"), "desiredReplicas", 0)


def _default_priorityclass(obj: Obj) -> None:
    _default(obj, "preemptionPolicy", "PreemptLowerPriority")


def _default_storageclass(obj: Obj) -> None:
    _default(obj, "reclaimPolicy", "Delete")
    _default(obj, "volumeBindingMode", "Immediate")


_RBAC_GROUP = "rbac.authorization.k8s.io"


def _default_binding(obj: Obj) -> None:
    for subject in _items(obj, "subjects"):
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            _default(subject, "apiGroup", "")
        elif kind in ("User", "Group"):
            _default(subject, "apiGroup", _RBAC_GROUP)
    role_ref = obj.get("roleRef")
    if isinstance(role_ref, dict):
        _default(role_ref, "apiGroup", _RBAC_GROUP)


def _default_networkpolicy(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _dict(spec, "podSelector")
    for rule in [*_items(spec, "ingress"), *_items(spec, "egress")]:
        for port in _items(rule, "ports"):
            _default(port, "protocol", "TCP")
    # Every policy affects ingress; it affects egress only when it has egress rules (SetDefaults_NetworkPolicy).
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _default_ingress(obj: Obj) -> None:
    # pathType has no default in networking/v1: validation requires it.
    _dict(_dict(obj, "status"), "loadBalancer")


def _default_pdb(obj: Obj) -> None:
    _dict(obj, "spec")
    status = _dict(obj, "status")
    for key in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
        _default(status, key, 0)


def _default_resourcequota(obj: Obj) -> None:
    _dict(obj, "spec")
    _dict(obj, "status")


def _default_limitrange(obj: Obj) -> None:
    _dict(obj, "spec")


def _default_webhooks(obj: Obj) -> None:
    for hook in _items(obj, "webhooks"):
        _default(hook, "failurePolicy", "Fail")
        _default(hook, "matchPolicy", "Equivalent")
        _default(hook, "timeoutSeconds", 10)
        _dict(hook, "namespaceSelector")
        _dict(hook, "objectSelector")
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict):
            _default(service, "port", 443)
        for rule in _items(hook, "rules"):
            _default(rule, "scope", "*")


def _default_mutating_webhooks(obj: Obj) -> None:
    _default_webhooks(obj)
    for hook in _items(obj, "webhooks"):
        _default(hook, "reinvocationPolicy", "Never")


def _default_ingressclass(obj: Obj) -> None:
    parameters = _dict(obj, "spec").get("parameters")
    if isinstance(parameters, dict):
        _default(parameters, "scope", "Cluster")


def _default_csidriver(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    _default(spec, "attachRequired", True)
    _default(spec, "podInfoOnMount", False)
    _default(spec, "storageCapacity", False)
    _default(spec, "fsGroupPolicy", "ReadWriteOnceWithFSType")
    _default(spec, "requiresRepublish", False)
    _default(spec, "seLinuxMount", False)
    _default(spec, "volumeLifecycleModes", ["Persistent"])


_DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": _default_pod,
    "Deployment": _default_deployment,
    "ReplicaSet": _default_replicaset,
    "DaemonSet": _default_daemonset,
    "StatefulSet": _default_statefulset,
    "Job": _default_job,
    "Service": _default_service,
    "Secret": _default_secret,
    "Namespace": _default_namespace,
    "Node": _default_node,
    "Event": _default_event,
    "Endpoints": _default_endpoints,
    "EndpointSlice": _default_endpointslice,
    "PersistentVolumeClaim": _default_pvc,
    "CustomResourceDefinition": _default_crd,
    "CronJob": _default_cronjob,
    "ReplicationController": _default_replicationcontroller,
    "PodTemplate": _default_podtemplate,
    "PersistentVolume": _default_pv,
    "HorizontalPodAutoscaler": _default_hpa,
    "PriorityClass": _default_priorityclass,
    "StorageClass": _default_storageclass,
    "RoleBinding": _default_binding,
    "ClusterRoleBinding": _default_binding,
    "NetworkPolicy": _default_networkpolicy,
    "Ingress": _default_ingress,
    "IngressClass": _default_ingressclass,
    "PodDisruptionBudget": _default_pdb,
    "ResourceQuota": _default_resourcequota,
    "LimitRange": _default_limitrange,
    "ValidatingWebhookConfiguration": _default_webhooks,
    "MutatingWebhookConfiguration": _default_mutating_webhooks,
    "CSIDriver": _default_csidriver,
}
