"""Server-side `meta.k8s.io/v1` Table output, as kube-apiserver's printers produce it for `kubectl get`.

kubectl asks for `as=Table` and prints whatever cells the server computes, so every column users know
(pod STATUS reasons, node ROLES, service PORT(S) ...) has to be derived here. The server always emits
the priority-1 ("wide") cells too; kubectl hides them unless `-o wide` is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeedge.apiserver.resources import Obj, PrinterColumn, ResourceInfo

_NAME_DESC = "Name must be unique within a namespace."
_AGE_DESC = "CreationTimestamp is a timestamp representing the server time when this object was created."
NONE = "<none>"
UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    description: str = ""
    format: str = ""

    def definition(self) -> Obj:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description or self.name,
            "priority": self.priority,
        }


NAME = Column("Name", format="name", description=_NAME_DESC)
AGE = Column("Age", description=_AGE_DESC)
RowFn = Callable[[Obj, datetime], list[Any]]


# --- time -----------------------------------------------------------------------------------------


def human_duration(d: timedelta) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: precision shrinks as the duration grows."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"  # up to a second of clock skew counts as "now"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        h = hours % 24
        return f"{days}d" if h == 0 else f"{days}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        dy = days % 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{years}y"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def since(value: Any, now: datetime) -> str:
    """translateTimestampSince: missing timestamps print as <unknown> rather than failing the row."""
    t = parse_time(value)
    return UNKNOWN if t is None else human_duration(now - t)


def _age(obj: Obj, now: datetime) -> str:
    return since(_meta(obj).get("creationTimestamp"), now)


# --- small accessors (objects come straight from storage, so any field may be missing) ------------


def _meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", ""))


def _dig(obj: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _dict(obj: Any, *keys: str) -> Obj:
    v = _dig(obj, *keys)
    return v if isinstance(v, dict) else {}


def _list(obj: Any, *keys: str) -> list[Any]:
    v = _dig(obj, *keys)
    return v if isinstance(v, list) else []


def _int(obj: Any, *keys: str, default: int = 0) -> int:
    v = _dig(obj, *keys)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _str(obj: Any, *keys: str) -> str:
    v = _dig(obj, *keys)
    return v if isinstance(v, str) else ""


def _condition(obj: Obj, ctype: str) -> Obj | None:
    for c in _list(obj, "status", "conditions"):
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def _condition_true(obj: Obj, ctype: str) -> bool:
    c = _condition(obj, ctype)
    return c is not None and c.get("status") == "True"


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted k=v pairs, <none> when empty."""
    if not isinstance(labels, dict) or not labels:
        return NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_selector(selector: Any) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key."""
    if not isinstance(selector, dict):
        return NONE
    reqs: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in _dict(selector, "matchLabels").items()]
    for expr in _list(selector, "matchExpressions"):
        if isinstance(expr, dict):
            reqs.append((str(expr.get("key", "")), _expression(expr)))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _expression(expr: Obj) -> str:
    key, op = str(expr.get("key", "")), expr.get("operator")
    values = ",".join(sorted(str(v) for v in _list(expr, "values")))
    if op == "In":
        return f"{key} in ({values})"
    if op == "NotIn":
        return f"{key} notin ({values})"
    if op == "DoesNotExist":
        return f"!{key}"
    return key


def _containers(pod_spec: Obj) -> tuple[str, str]:
    cs = [c for c in _list(pod_spec, "containers") if isinstance(c, dict)]
    return ",".join(_str(c, "name") for c in cs), ",".join(_str(c, "image") for c in cs)


def _with_more(items: list[str], total: int, limit: int = 3, empty: str = "<unset>") -> str:
    """listWithMoreString: show the first few entries and count the rest."""
    text = ",".join(items[:limit])
    if total > limit:
        return f"{text} + {total - limit} more..."
    return text or empty


def _host_port(ip: str, port: Any) -> str:
    # net.JoinHostPort brackets IPv6 literals.
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- pods -----------------------------------------------------------------------------------------


@dataclass
class _PodSummary:
    reason: str
    ready: int = 0
    total: int = 0
    restarts: int = 0
    last_restart: datetime | None = None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _last_termination(cs: Obj) -> datetime | None:
    return parse_time(_dig(cs, "lastState", "terminated", "finishedAt"))


def _exit_reason(term: Obj, prefix: str) -> str:
    if term.get("reason"):
        return prefix + str(term["reason"])
    signal = _int(term, "signal")
    if signal:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{_int(term, 'exitCode')}"


def _restartable_init(spec: Obj | None) -> bool:
    # Sidecars (init containers with restartPolicy Always) count as regular containers once started.
    return spec is not None and spec.get("restartPolicy") == "Always"


def _init_containers(pod: Obj, s: _PodSummary) -> tuple[bool, int, datetime | None]:
    """Walks init containers like printPod; returns (initializing, sidecar restarts, last sidecar restart)."""
    specs = {_str(c, "name"): c for c in _list(pod, "spec", "initContainers") if isinstance(c, dict)}
    sidecar_restarts, sidecar_last = 0, None
    statuses = [c for c in _list(pod, "status", "initContainerStatuses") if isinstance(c, dict)]
    for i, cs in enumerate(statuses):
        spec = specs.get(_str(cs, "name"))
        s.restarts += _int(cs, "restartCount")
        s.last_restart = _later(s.last_restart, _last_termination(cs))
        if _restartable_init(spec):
            sidecar_restarts += _int(cs, "restartCount")
            sidecar_last = _later(sidecar_last, _last_termination(cs))
        term, waiting = _dict(cs, "state", "terminated"), _dict(cs, "state", "waiting")
        if term and _int(term, "exitCode") == 0:
            continue
        if _restartable_init(spec) and cs.get("started") is True:
            s.ready += 1 if cs.get("ready") else 0
            continue
        if term:
            s.reason = _exit_reason(term, "Init:")
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            s.reason = f"Init:{waiting['reason']}"
        else:
            s.reason = f"Init:{i}/{len(specs)}"
        return True, sidecar_restarts, sidecar_last
    return False, sidecar_restarts, sidecar_last


def _app_containers(pod: Obj, s: _PodSummary) -> None:
    has_running = False
    statuses = [c for c in _list(pod, "status", "containerStatuses") if isinstance(c, dict)]
    # Walked backwards so the first container's state wins, as upstream does.
    for cs in reversed(statuses):
        s.restarts += _int(cs, "restartCount")
        s.last_restart = _later(s.last_restart, _last_termination(cs))
        waiting, term = _dict(cs, "state", "waiting"), _dict(cs, "state", "terminated")
        if waiting.get("reason"):
            s.reason = str(waiting["reason"])
        elif term:
            s.reason = _exit_reason(term, "")
        elif cs.get("ready") and _dig(cs, "state", "running") is not None:
            has_running = True
            s.ready += 1
    if s.reason == "Completed" and has_running:
        s.reason = "Running" if _condition_true(pod, "Ready") else "NotReady"


def pod_summary(pod: Obj) -> _PodSummary:
    """READY / STATUS / RESTARTS the way kubectl's printPod derives them."""
    status = _dict(pod, "status")
    phase = _str(status, "phase")
    s = _PodSummary(reason=_str(status, "reason") or phase)
    for c in _list(status, "conditions"):
        if isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            s.reason = "SchedulingGated"
    init_specs = [c for c in _list(pod, "spec", "initContainers") if isinstance(c, dict)]
    s.total = len(_list(pod, "spec", "containers")) + sum(1 for c in init_specs if _restartable_init(c))
    initializing, sidecar_restarts, sidecar_last = _init_containers(pod, s)
    if not initializing or _condition_true(pod, "Initialized"):
        s.restarts, s.last_restart = sidecar_restarts, sidecar_last
        _app_containers(pod, s)
    deleting = bool(_meta(pod).get("deletionTimestamp"))
    if deleting and _str(status, "reason") == "NodeLost":
        s.reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        s.reason = "Terminating"
    return s


def _readiness_gates(pod: Obj) -> str:
    gates = [g for g in _list(pod, "spec", "readinessGates") if isinstance(g, dict)]
    if not gates:
        return NONE
    ok = sum(1 for g in gates if _condition_true(pod, _str(g, "conditionType")))
    return f"{ok}/{len(gates)}"


def _pod_cells(pod: Obj, now: datetime) -> list[Any]:
    s = pod_summary(pod)
    restarts = str(s.restarts)
    if s.restarts and s.last_restart is not None:
        restarts += f" ({human_duration(now - s.last_restart)} ago)"
    ips = _list(pod, "status", "podIPs")
    ip = _str(ips[0], "ip") if ips else _str(pod, "status", "podIP")
    return [
        _name(pod),
        f"{s.ready}/{s.total}",
        s.reason,
        restarts,
        _age(pod, now),
        ip or NONE,
        _str(pod, "spec", "nodeName") or NONE,
        _str(pod, "status", "nominatedNodeName") or NONE,
        _readiness_gates(pod),
    ]


def _pod_conditions(pod: Obj) -> list[Obj] | None:
    # Row conditions let clients tell finished pods apart (kubectl used them to hide completed pods).
    phase = _str(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded", "message": ""}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": ""}]
    return None


# --- nodes ----------------------------------------------------------------------------------------


def node_roles(node: Obj) -> list[str]:
    roles: set[str] = set()
    for key, value in _dict(node, "metadata", "labels").items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return sorted(roles)


def node_status(node: Obj) -> str:
    ready = _condition(node, "Ready")
    parts = [] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if not parts:
        parts.append("Unknown")
    if _dig(node, "spec", "unschedulable") is True:
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def _node_address(node: Obj, kind: str) -> str:
    for a in _list(node, "status", "addresses"):
        if isinstance(a, dict) and a.get("type") == kind:
            return _str(a, "address")
    return NONE


def _node_cells(node: Obj, now: datetime) -> list[Any]:
    info = _dict(node, "status", "nodeInfo")
    return [
        _name(node),
        node_status(node),
        ",".join(node_roles(node)) or NONE,
        _age(node, now),
        _str(info, "kubeletVersion"),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        _str(info, "osImage") or UNKNOWN,
        _str(info, "kernelVersion") or UNKNOWN,
        _str(info, "containerRuntimeVersion") or UNKNOWN,
    ]


# --- workloads ------------------------------------------------------------------------------------


def _replicas(obj: Obj) -> int:
    # An undefaulted object still means one replica, as the apps/v1 defaults would make it.
    return _int(obj, "spec", "replicas", default=1)


def _template_cells(obj: Obj, *, selector: bool = True) -> list[Any]:
    names, images = _containers(_dict(obj, "spec", "template", "spec"))
    return [names, images, format_selector(_dig(obj, "spec", "selector"))] if selector else [names, images]


def _deployment_cells(d: Obj, now: datetime) -> list[Any]:
    st = _dict(d, "status")
    ready = f"{_int(st, 'readyReplicas')}/{_replicas(d)}"
    head = [_name(d), ready, _int(st, "updatedReplicas"), _int(st, "availableReplicas"), _age(d, now)]
    return head + _template_cells(d)


def _replicaset_cells(rs: Obj, now: datetime) -> list[Any]:
    st = _dict(rs, "status")
    head = [_name(rs), _replicas(rs), _int(st, "replicas"), _int(st, "readyReplicas"), _age(rs, now)]
    return head + _template_cells(rs)


def _daemonset_cells(ds: Obj, now: datetime) -> list[Any]:
    st = _dict(ds, "status")
    counts = ("desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled")
    node_selector = format_labels(_dig(ds, "spec", "template", "spec", "nodeSelector"))
    head = [_name(ds), *(_int(st, c) for c in counts), _int(st, "numberAvailable"), node_selector]
    return [*head, _age(ds, now), *_template_cells(ds)]


def _statefulset_cells(sts: Obj, now: datetime) -> list[Any]:
    ready = f"{_int(sts, 'status', 'readyReplicas')}/{_replicas(sts)}"
    return [_name(sts), ready, _age(sts, now), *_template_cells(sts, selector=False)]


def job_status(job: Obj) -> str:
    if _condition_true(job, "Complete"):
        return "Complete"
    if _condition_true(job, "Failed"):
        return "Failed"
    if _meta(job).get("deletionTimestamp"):
        return "Terminating"
    for ctype in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _condition_true(job, ctype):
            return ctype
    return "Running"


def _job_completions(job: Obj) -> str:
    succeeded = _int(job, "status", "succeeded")
    completions = _dig(job, "spec", "completions")
    if isinstance(completions, int):
        return f"{succeeded}/{completions}"
    parallelism = _int(job, "spec", "parallelism")
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _job_duration(job: Obj, now: datetime) -> str:
    start = parse_time(_dig(job, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_dig(job, "status", "completionTime")) or now
    return human_duration(end - start)


def _job_cells(job: Obj, now: datetime) -> list[Any]:
    head = [_name(job), job_status(job), _job_completions(job), _job_duration(job, now), _age(job, now)]
    return head + _template_cells(job)


# --- networking -----------------------------------------------------------------------------------


def service_ports(svc: Obj) -> str:
    pieces = []
    for p in _list(svc, "spec", "ports"):
        if not isinstance(p, dict):
            continue
        proto = _str(p, "protocol") or "TCP"
        node_port = _int(p, "nodePort")
        port = _int(p, "port")
        pieces.append(f"{port}:{node_port}/{proto}" if node_port > 0 else f"{port}/{proto}")
    return ",".join(pieces) or NONE


def _load_balancer_ips(svc: Obj) -> list[str]:
    out = []
    for ing in _list(svc, "status", "loadBalancer", "ingress"):
        if isinstance(ing, dict) and (ing.get("ip") or ing.get("hostname")):
            out.append(str(ing.get("ip") or ing.get("hostname")))
    return out


def service_external_ip(svc: Obj) -> str:
    kind = _str(svc, "spec", "type") or "ClusterIP"
    external = [str(ip) for ip in _list(svc, "spec", "externalIPs")]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        return ",".join(_load_balancer_ips(svc) + external) or "<pending>"
    if kind == "ExternalName":
        return _str(svc, "spec", "externalName")
    return UNKNOWN


def _service_cells(svc: Obj, now: datetime) -> list[Any]:
    spec = _dict(svc, "spec")
    cluster_ips = _list(spec, "clusterIPs")
    cluster_ip = str(cluster_ips[0]) if cluster_ips else _str(spec, "clusterIP") or NONE
    return [
        _name(svc),
        _str(spec, "type") or "ClusterIP",
        cluster_ip,
        service_external_ip(svc),
        service_ports(svc),
        _age(svc, now),
        format_labels(spec.get("selector")),
    ]


def format_endpoints(ep: Obj) -> str:
    subsets = [s for s in _list(ep, "subsets") if isinstance(s, dict)]
    if not subsets:
        return NONE
    items: list[str] = []
    total = 0
    for ss in subsets:
        ips = [_str(a, "ip") for a in _list(ss, "addresses") if isinstance(a, dict)]
        ports = [p for p in _list(ss, "ports") if isinstance(p, dict)]
        if not ports:  # headless services without ports list bare addresses
            items += ips
            total += len(ips)
            continue
        for p in ports:
            items += [_host_port(ip, _int(p, "port")) for ip in ips]
            total += len(ips)
    return _with_more(items, total, empty=NONE)


def _endpoints_cells(ep: Obj, now: datetime) -> list[Any]:
    return [_name(ep), format_endpoints(ep), _age(ep, now)]


def _slice_ports(es: Obj) -> str:
    items = []
    for p in _list(es, "ports"):
        if not isinstance(p, dict):
            continue
        port = p.get("port")
        items.append(str(port) if isinstance(port, int) else _str(p, "name") or "*")
    return _with_more(items, len(items))


def _slice_endpoints(es: Obj) -> str:
    addrs = [str(a) for e in _list(es, "endpoints") if isinstance(e, dict) for a in _list(e, "addresses")]
    return _with_more(addrs, len(addrs))


def _endpointslice_cells(es: Obj, now: datetime) -> list[Any]:
    return [_name(es), _str(es, "addressType"), _slice_ports(es), _slice_endpoints(es), _age(es, now)]


# --- events and misc ------------------------------------------------------------------------------


def _event_times(ev: Obj, now: datetime) -> tuple[str, str, int]:
    first_raw = ev.get("firstTimestamp") or ev.get("eventTime")
    first = since(first_raw, now)
    last = since(ev["lastTimestamp"], now) if ev.get("lastTimestamp") else first
    count = _int(ev, "count")
    series = _dict(ev, "series")
    if series:
        last = since(series.get("lastObservedTime"), now)
        count = _int(series, "count")
    elif count == 0:
        count = 1  # events.k8s.io-style singletons carry no count
    return first, last, count


def event_object(ev: Obj) -> str:
    kind = _str(ev, "involvedObject", "kind").lower()
    name = _str(ev, "involvedObject", "name")
    return f"{kind}/{name}" if name else kind


def _event_source(ev: Obj) -> str:
    component = _str(ev, "source", "component") or _str(ev, "reportingComponent")
    instance = _str(ev, "source", "host") or _str(ev, "reportingInstance")
    return f"{component}, {instance}" if instance else component


def _event_cells(ev: Obj, now: datetime) -> list[Any]:
    first, last, count = _event_times(ev, now)
    return [
        last,
        _str(ev, "type"),
        _str(ev, "reason"),
        event_object(ev),
        _str(ev, "involvedObject", "fieldPath"),
        _event_source(ev),
        _str(ev, "message").strip(),
        first,
        count,
        _name(ev),
    ]


def _namespace_cells(ns: Obj, now: datetime) -> list[Any]:
    phase = _str(ns, "status", "phase") or ("Terminating" if _meta(ns).get("deletionTimestamp") else "Active")
    return [_name(ns), phase, _age(ns, now)]


def _configmap_cells(cm: Obj, now: datetime) -> list[Any]:
    return [_name(cm), len(_dict(cm, "data")) + len(_dict(cm, "binaryData")), _age(cm, now)]


def _secret_cells(s: Obj, now: datetime) -> list[Any]:
    return [_name(s), _str(s, "type") or "Opaque", len(_dict(s, "data")), _age(s, now)]


def _serviceaccount_cells(sa: Obj, now: datetime) -> list[Any]:
    return [_name(sa), len(_list(sa, "secrets")), _age(sa, now)]


def _lease_cells(lease: Obj, now: datetime) -> list[Any]:
    return [_name(lease), _str(lease, "spec", "holderIdentity"), _age(lease, now)]


def _crd_cells(crd: Obj, now: datetime) -> list[Any]:
    # The generic apiserver table prints the creation time itself (RFC 3339, UTC), not an age.
    t = parse_time(_meta(crd).get("creationTimestamp"))
    return [_name(crd), t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None]


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def _pvc_cells(pvc: Obj, now: datetime) -> list[Any]:
    phase = "Terminating" if _meta(pvc).get("deletionTimestamp") else _str(pvc, "status", "phase")
    volume = _str(pvc, "spec", "volumeName")
    capacity = access = ""
    if volume:  # capacity and modes are only meaningful once bound
        capacity = str(_dig(pvc, "status", "capacity", "storage") or "")
        modes = [str(m) for m in _list(pvc, "status", "accessModes")]
        access = ",".join(_ACCESS_MODES[m] for m in _ACCESS_MODES if m in modes)
    annotations = _dict(pvc, "metadata", "annotations")
    storage_class = annotations.get("volume.beta.kubernetes.io/storage-class") or _str(
        pvc, "spec", "storageClassName"
    )
    vac = _str(pvc, "spec", "volumeAttributesClassName") or "<unset>"
    mode = _str(pvc, "spec", "volumeMode") or "<unset>"
    return [_name(pvc), phase, volume, capacity, access, storage_class, vac, _age(pvc, now), mode]


def _controller_of(obj: Obj) -> str:
    for ref in _list(obj, "metadata", "ownerReferences"):
        if isinstance(ref, dict) and ref.get("controller") is True:
            api_version = _str(ref, "apiVersion")
            group = api_version.rpartition("/")[0] if "/" in api_version else ""
            kind = _str(ref, "kind") + (f".{group}" if group else "")
            return f"{kind.lower()}/{_str(ref, 'name')}"
    return NONE


def _controllerrevision_cells(cr: Obj, now: datetime) -> list[Any]:
    return [_name(cr), _controller_of(cr), _int(cr, "revision"), _age(cr, now)]


# --- kinds that are stored and served, not enforced ------------------------------------------------


def _bool_ptr(value: Any) -> str:
    """printBoolPtr: True/False, or <unset> for a nil pointer."""
    return "<unset>" if not isinstance(value, bool) else ("True" if value else "False")


def _created_at(obj: Obj, now: datetime) -> list[Any]:
    # Kinds without a printer get the generic table: the creation time itself, not an age.
    return _crd_cells(obj, now)


def _cronjob_cells(cj: Obj, now: datetime) -> list[Any]:
    last = _dig(cj, "status", "lastScheduleTime")
    head = [
        _name(cj),
        _str(cj, "spec", "schedule"),
        _str(cj, "spec", "timeZone") or NONE,
        _bool_ptr(_dig(cj, "spec", "suspend")),
        len(_list(cj, "status", "active")),
        since(last, now) if last else NONE,
        _age(cj, now),
    ]
    names, images = _containers(_dict(cj, "spec", "jobTemplate", "spec", "template", "spec"))
    return [*head, names, images, format_selector(_dig(cj, "spec", "jobTemplate", "spec", "selector"))]


def _replicationcontroller_cells(rc: Obj, now: datetime) -> list[Any]:
    st = _dict(rc, "status")
    head = [_name(rc), _replicas(rc), _int(st, "replicas"), _int(st, "readyReplicas"), _age(rc, now)]
    names, images = _containers(_dict(rc, "spec", "template", "spec"))
    return [*head, names, images, format_labels(_dig(rc, "spec", "selector"))]


def _podtemplate_cells(pt: Obj, now: datetime) -> list[Any]:
    names, images = _containers(_dict(pt, "template", "spec"))
    return [_name(pt), names, images, format_labels(_dig(pt, "template", "metadata", "labels"))]


def _int_or_string(value: Any) -> str:
    return "N/A" if value is None else str(value)


def _pdb_cells(pdb: Obj, now: datetime) -> list[Any]:
    return [
        _name(pdb),
        _int_or_string(_dig(pdb, "spec", "minAvailable")),
        _int_or_string(_dig(pdb, "spec", "maxUnavailable")),
        _int(pdb, "status", "disruptionsAllowed"),
        _age(pdb, now),
    ]


def _ingress_hosts(ing: Obj) -> str:
    """formatHosts: up to three hosts, "*" when no rule names one."""
    rules = [r for r in _list(ing, "spec", "rules") if isinstance(r, dict)]
    hosts = [_str(r, "host") for r in rules[:3] if _str(r, "host")]
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - 3} more..." if len(rules) > 3 else text


def _ingress_cells(ing: Obj, now: datetime) -> list[Any]:
    addresses = []
    for lb in _list(ing, "status", "loadBalancer", "ingress"):
        if isinstance(lb, dict) and (lb.get("ip") or lb.get("hostname")):
            addresses.append(str(lb.get("ip") or lb.get("hostname")))
    ports = "80, 443" if _list(ing, "spec", "tls") else "80"
    klass = _str(ing, "spec", "ingressClassName") or NONE
    return [_name(ing), klass, _ingress_hosts(ing), ",".join(addresses), ports, _age(ing, now)]


def _ingressclass_cells(ic: Obj, now: datetime) -> list[Any]:
    params = _dict(ic, "spec", "parameters")
    text = NONE
    if params:
        group = _str(params, "apiGroup")
        text = _str(params, "kind") + (f".{group}" if group else "") + "/" + _str(params, "name")
    return [_name(ic), _str(ic, "spec", "controller"), text, _age(ic, now)]


def _networkpolicy_cells(np_: Obj, now: datetime) -> list[Any]:
    return [_name(np_), format_selector(_dict(np_, "spec", "podSelector")) or NONE, _age(np_, now)]


def _metric_target(spec: Obj, status: Obj, key: str) -> str:
    """One `current/target` entry of formatHPAMetrics for a Resource or ContainerResource metric."""
    target, current = _dict(spec, key, "target"), _dict(status, key, "current")
    if target.get("averageValue") is not None:
        now_value = str(current.get("averageValue")) if current.get("averageValue") is not None else UNKNOWN
        return f"{_str(spec, key, 'name')}: {now_value}/{target['averageValue']}"
    util = current.get("averageUtilization")
    now_text = f"{util}%" if isinstance(util, int) else UNKNOWN
    goal = target.get("averageUtilization")
    return f"{_str(spec, key, 'name')}: {now_text}/{f'{goal}%' if isinstance(goal, int) else '<auto>'}"


def _hpa_metric(spec: Obj, status: Obj) -> str:
    mtype = _str(spec, "type")
    if mtype in ("Resource", "ContainerResource"):
        return _metric_target(spec, status, "resource" if mtype == "Resource" else "containerResource")
    key = {"Pods": "pods", "Object": "object", "External": "external"}.get(mtype)
    if key is None:
        return "<unknown type>"
    target, current = _dict(spec, key, "target"), _dict(status, key, "current")
    goal = target.get("averageValue") if target.get("averageValue") is not None else target.get("value")
    now_value = (
        current.get("averageValue") if current.get("averageValue") is not None else current.get("value")
    )
    suffix = " (avg)" if mtype != "Pods" and target.get("averageValue") is not None else ""
    return f"{UNKNOWN if now_value is None else now_value}/{goal}{suffix}"


def hpa_targets(hpa: Obj) -> str:
    specs = [m for m in _list(hpa, "spec", "metrics") if isinstance(m, dict)]
    if not specs:
        return NONE
    statuses = _list(hpa, "status", "currentMetrics")
    items = []
    for i, spec in enumerate(specs[:2]):
        status = statuses[i] if i < len(statuses) and isinstance(statuses[i], dict) else {}
        items.append(_hpa_metric(spec, status))
    text = ", ".join(items)
    return f"{text} + {len(specs) - 2} more..." if len(specs) > 2 else text


def _hpa_cells(hpa: Obj, now: datetime) -> list[Any]:
    ref = _dict(hpa, "spec", "scaleTargetRef")
    min_pods = _dig(hpa, "spec", "minReplicas")
    return [
        _name(hpa),
        f"{_str(ref, 'kind')}/{_str(ref, 'name')}",
        hpa_targets(hpa),
        str(min_pods) if isinstance(min_pods, int) else "<unset>",
        _int(hpa, "spec", "maxReplicas"),
        _int(hpa, "status", "currentReplicas"),
        _age(hpa, now),
    ]


def _priorityclass_cells(pc: Obj, now: datetime) -> list[Any]:
    return [
        _name(pc),
        _int(pc, "value"),
        _dig(pc, "globalDefault") is True,
        _str(pc, "preemptionPolicy") or "<unset>",
        _age(pc, now),
    ]


def _storageclass_cells(sc: Obj, now: datetime) -> list[Any]:
    name = _name(sc)
    annotations = _dict(sc, "metadata", "annotations")
    if "true" in (
        annotations.get("storageclass.kubernetes.io/is-default-class"),
        annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
    ):
        name += " (default)"
    return [
        name,
        _str(sc, "provisioner"),
        _str(sc, "reclaimPolicy") or "Delete",
        _str(sc, "volumeBindingMode") or "Immediate",
        _dig(sc, "allowVolumeExpansion") is True,
        _age(sc, now),
    ]


def _access_modes(modes: list[Any]) -> str:
    return ",".join(_ACCESS_MODES[m] for m in _ACCESS_MODES if m in modes)


def _pv_cells(pv: Obj, now: datetime) -> list[Any]:
    ref = _dict(pv, "spec", "claimRef")
    claim = f"{_str(ref, 'namespace')}/{_str(ref, 'name')}" if ref else ""
    phase = "Terminating" if _meta(pv).get("deletionTimestamp") else _str(pv, "status", "phase")
    storage_class = _dict(pv, "metadata", "annotations").get(
        "volume.beta.kubernetes.io/storage-class"
    ) or _str(pv, "spec", "storageClassName")
    return [
        _name(pv),
        str(_dig(pv, "spec", "capacity", "storage") or ""),
        _access_modes(_list(pv, "spec", "accessModes")),
        _str(pv, "spec", "persistentVolumeReclaimPolicy"),
        phase,
        claim,
        storage_class,
        _str(pv, "spec", "volumeAttributesClassName") or "<unset>",
        _str(pv, "status", "reason"),
        _age(pv, now),
        _str(pv, "spec", "volumeMode") or "<unset>",
    ]


def _resourcequota_cells(q: Obj, now: datetime) -> list[Any]:
    used, hard = _dict(q, "status", "used"), _dict(q, "status", "hard")
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(_dict(q, "spec", "hard")):
        # Before the quota controller fills in the status, both sides read as zero, as upstream prints.
        entry = f"{resource}: {used.get(resource, '0')}/{hard.get(resource, '0')}"
        (limits if resource.split(".")[0] == "limits" and "." in resource else requests).append(entry)
    return [_name(q), _age(q, now), ", ".join(requests), ", ".join(limits)]


def _binding_cells(b: Obj, now: datetime) -> list[Any]:
    ref = _dict(b, "roleRef")
    by_kind: dict[str, list[str]] = {"User": [], "Group": [], "ServiceAccount": []}
    for subject in _list(b, "subjects"):
        if not isinstance(subject, dict) or subject.get("kind") not in by_kind:
            continue
        name = _str(subject, "name")
        if subject["kind"] == "ServiceAccount" and _str(subject, "namespace"):
            name = f"{_str(subject, 'namespace')}/{name}"
        by_kind[subject["kind"]].append(name)
    role = f"{_str(ref, 'kind')}/{_str(ref, 'name')}"
    wide = [", ".join(by_kind[k]) for k in ("User", "Group", "ServiceAccount")]
    return [_name(b), role, _age(b, now), *wide]


def _webhooks_cells(w: Obj, now: datetime) -> list[Any]:
    return [_name(w), len(_list(w, "webhooks")), _age(w, now)]


def _csidriver_cells(d: Obj, now: datetime) -> list[Any]:
    spec = _dict(d, "spec")
    audiences = [_str(t, "audience") for t in _list(spec, "tokenRequests") if isinstance(t, dict)]
    modes = [str(m) for m in _list(spec, "volumeLifecycleModes")]
    return [
        _name(d),
        spec.get("attachRequired") is not False,
        spec.get("podInfoOnMount") is True,
        spec.get("storageCapacity") is True,
        ",".join(audiences) or "<unset>",
        spec.get("requiresRepublish") is True,
        ",".join(modes) or NONE,
        _age(d, now),
    ]


def _volumeattachment_cells(va: Obj, now: datetime) -> list[Any]:
    return [
        _name(va),
        _str(va, "spec", "attacher"),
        _str(va, "spec", "source", "persistentVolumeName"),
        _str(va, "spec", "nodeName"),
        _dig(va, "status", "attached") is True,
        _age(va, now),
    ]


def _default_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), _age(obj, now)]


def _c(name: str, type_: str = "string", priority: int = 0, desc: str = "") -> Column:
    return Column(name, type_, priority, desc)


_WIDE_TEMPLATE = (
    _c("Containers", priority=1, desc="Names of each container in the template."),
    _c("Images", priority=1, desc="Images referenced by each container in the template."),
)
_SELECTOR = _c("Selector", priority=1, desc="Label selector for pods.")

# (group, plural) -> columns and the function producing the matching cells, in the same order.
PRINTERS: dict[tuple[str, str], tuple[tuple[Column, ...], RowFn]] = {
    ("", "pods"): (
        (
            NAME,
            _c("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
            _c("Status", desc="The aggregate status of the containers in this pod."),
            _c("Restarts", desc="The number of times the containers in this pod have been restarted."),
            AGE,
            _c("IP", priority=1, desc="IP address allocated to the pod."),
            _c("Node", priority=1, desc="Name of the node the pod is assigned to."),
            _c("Nominated Node", priority=1, desc="Node the pod is nominated to run on."),
            _c("Readiness Gates", priority=1, desc="Pod readiness gates."),
        ),
        _pod_cells,
    ),
    ("", "nodes"): (
        (
            NAME,
            _c("Status", desc="The status of the node"),
            _c("Roles", desc="The roles of the node"),
            AGE,
            _c("Version", desc="Kubelet Version reported by the node."),
            _c("Internal-IP", priority=1, desc="List of internal IPs."),
            _c("External-IP", priority=1, desc="List of external IPs."),
            _c("OS-Image", priority=1, desc="OS image reported by the node."),
            _c("Kernel-Version", priority=1, desc="Kernel version reported by the node."),
            _c("Container-Runtime", priority=1, desc="Container runtime reported by the node."),
        ),
        _node_cells,
    ),
    ("", "namespaces"): ((NAME, _c("Status", desc="The status of the namespace"), AGE), _namespace_cells),
    ("apps", "deployments"): (
        (
            NAME,
            _c("Ready", desc="Number of the pod with ready state"),
            _c(
                "Up-to-date", "integer", desc="Total number of non-terminated pods with the desired template."
            ),
            _c("Available", "integer", desc="Total number of available pods."),
            AGE,
            *_WIDE_TEMPLATE,
            _SELECTOR,
        ),
        _deployment_cells,
    ),
    ("apps", "replicasets"): (
        (
            NAME,
            _c("Desired", "integer", desc="Number of desired pods."),
            _c("Current", "integer", desc="Number of most recently observed actual pods."),
            _c("Ready", "integer", desc="The number of ready pods."),
            AGE,
            *_WIDE_TEMPLATE,
            _SELECTOR,
        ),
        _replicaset_cells,
    ),
    ("apps", "daemonsets"): (
        (
            NAME,
            _c("Desired", "integer", desc="Number of nodes that should run the daemon pod."),
            _c("Current", "integer", desc="Number of nodes running at least one daemon pod."),
            _c("Ready", "integer", desc="Number of nodes with a ready daemon pod."),
            _c("Up-to-date", "integer", desc="Number of nodes running the updated daemon pod."),
            _c("Available", "integer", desc="Number of nodes with an available daemon pod."),
            _c("Node Selector", desc="Node selector of the pod template."),
            AGE,
            *_WIDE_TEMPLATE,
            _SELECTOR,
        ),
        _daemonset_cells,
    ),
    ("apps", "statefulsets"): (
        (NAME, _c("Ready", desc="Number of the pod with ready state"), AGE, *_WIDE_TEMPLATE),
        _statefulset_cells,
    ),
    ("apps", "controllerrevisions"): (
        (
            NAME,
            _c("Controller", desc="Controller of the object."),
            _c("Revision", "integer", desc="Revision represents the revision of the state."),
            AGE,
        ),
        _controllerrevision_cells,
    ),
    ("batch", "jobs"): (
        (
            NAME,
            _c("Status", desc="Status of the job."),
            _c("Completions", desc="The desired number of successfully finished pods the job should run."),
            _c("Duration", desc="Time required to complete the job."),
            AGE,
            *_WIDE_TEMPLATE,
            _SELECTOR,
        ),
        _job_cells,
    ),
    ("", "services"): (
        (
            NAME,
            _c("Type", desc="The type of the service."),
            _c("Cluster-IP", desc="The IP address of the service."),
            _c("External-IP", desc="The external IPs of the service."),
            _c("Port(s)", desc="The ports exposed by the service."),
            AGE,
            _c("Selector", priority=1, desc="Route service traffic to pods with these labels."),
        ),
        _service_cells,
    ),
    ("", "endpoints"): ((NAME, _c("Endpoints", desc="Endpoints of the service."), AGE), _endpoints_cells),
    ("discovery.k8s.io", "endpointslices"): (
        (
            NAME,
            _c("AddressType", desc="Type of address carried by this EndpointSlice."),
            _c("Ports", desc="Ports of this EndpointSlice."),
            _c("Endpoints", desc="Addresses of the endpoints."),
            AGE,
        ),
        _endpointslice_cells,
    ),
    ("", "events"): (
        (
            _c("Last Seen", desc="Time when the most recent occurrence was observed."),
            _c("Type", desc="Type of this event (Normal, Warning)."),
            _c("Reason", desc="Short, machine understandable string for the transition."),
            _c("Object", desc="The object this event is about."),
            _c("Subobject", priority=1, desc="The part of the object the event is about."),
            _c("Source", priority=1, desc="The component reporting this event."),
            _c("Message", desc="A human-readable description of the status of this operation."),
            _c("First Seen", priority=1, desc="Time when this event was first observed."),
            _c("Count", "integer", priority=1, desc="The number of times this event has occurred."),
            Column("Name", priority=1, format="name", description=_NAME_DESC),
        ),
        _event_cells,
    ),
    ("", "configmaps"): (
        (NAME, _c("Data", "integer", desc="Number of data entries."), AGE),
        _configmap_cells,
    ),
    ("", "secrets"): (
        (
            NAME,
            _c("Type", desc="The type of the secret"),
            _c("Data", "integer", desc="The number of entries in the secret"),
            AGE,
        ),
        _secret_cells,
    ),
    ("", "serviceaccounts"): (
        (NAME, _c("Secrets", "integer", desc="Secrets of the service account."), AGE),
        _serviceaccount_cells,
    ),
    ("", "persistentvolumeclaims"): (
        (
            NAME,
            _c("Status", desc="The phase of the claim."),
            _c("Volume", desc="The binding reference to the PersistentVolume."),
            _c("Capacity", desc="The actual resources of the underlying volume."),
            _c("Access Modes", desc="The access modes of the volume."),
            _c("StorageClass", desc="Name of the StorageClass required by the claim."),
            _c("VolumeAttributesClass", desc="Name of the VolumeAttributesClass used by the claim."),
            AGE,
            _c("VolumeMode", priority=1, desc="Whether the volume is a filesystem or a block device."),
        ),
        _pvc_cells,
    ),
    ("coordination.k8s.io", "leases"): (
        (NAME, _c("Holder", desc="The holder of the lease."), AGE),
        _lease_cells,
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        (NAME, _c("Created At", "date", desc=_AGE_DESC)),
        _crd_cells,
    ),
}
_CREATED_AT = (NAME, _c("Created At", "date", desc=_AGE_DESC))
_BINDING_COLUMNS = (
    NAME,
    _c("Role", desc="Role referenced by this binding."),
    AGE,
    _c("Users", priority=1, desc="Users in the binding."),
    _c("Groups", priority=1, desc="Groups in the binding."),
    _c("ServiceAccounts", priority=1, desc="ServiceAccounts in the binding."),
)
_WEBHOOK_COLUMNS = (NAME, _c("Webhooks", "integer", desc="Webhooks indicates the number of webhooks."), AGE)
_RBAC = "rbac.authorization.k8s.io"
_ADMISSION = "admissionregistration.k8s.io"

# Upstream pkg/printers/internalversion/printers.go for the kinds stored and served but not enforced.
PRINTERS.update(
    {
        ("batch", "cronjobs"): (
            (
                NAME,
                _c("Schedule", desc="The schedule in Cron format."),
                _c("Timezone", desc="The time zone the schedule is interpreted in."),
                _c("Suspend", "boolean", desc="Whether subsequent executions are suspended."),
                _c("Active", "integer", desc="Number of currently running jobs."),
                _c("Last Schedule", desc="When the job was last successfully scheduled."),
                AGE,
                *_WIDE_TEMPLATE,
                _SELECTOR,
            ),
            _cronjob_cells,
        ),
        ("", "replicationcontrollers"): (
            (
                NAME,
                _c("Desired", "integer", desc="Number of desired pods."),
                _c("Current", "integer", desc="Number of most recently observed actual pods."),
                _c("Ready", "integer", desc="The number of ready pods."),
                AGE,
                *_WIDE_TEMPLATE,
                _SELECTOR,
            ),
            _replicationcontroller_cells,
        ),
        ("", "podtemplates"): (
            (
                Column("Template", format="name", description=_NAME_DESC),
                _c("Containers", desc="Names of each container in the template."),
                _c("Images", desc="Images referenced by each container in the template."),
                _c("Pod Labels", desc="The labels for the pod template."),
            ),
            _podtemplate_cells,
        ),
        ("policy", "poddisruptionbudgets"): (
            (
                NAME,
                _c("Min Available", desc="The minimum number of pods that must be available."),
                _c("Max Unavailable", desc="The maximum number of pods that may be unavailable."),
                _c("Allowed Disruptions", "integer", desc="Number of pod disruptions currently allowed."),
                AGE,
            ),
            _pdb_cells,
        ),
        ("networking.k8s.io", "ingresses"): (
            (
                NAME,
                _c("Class", desc="The name of the IngressClass resource."),
                _c("Hosts", desc="Hosts that incoming requests are matched against before the ingress rule"),
                _c("Address", desc="Address is a list containing ingress points for the load-balancer"),
                _c("Ports", desc="Ports of TLS configurations that open"),
                AGE,
            ),
            _ingress_cells,
        ),
        ("networking.k8s.io", "ingressclasses"): (
            (
                NAME,
                _c("Controller", desc="Controller that is responsible for handling this class"),
                _c("Parameters", desc="A reference to a resource with additional parameters"),
                AGE,
            ),
            _ingressclass_cells,
        ),
        ("networking.k8s.io", "networkpolicies"): (
            (NAME, _c("Pod-Selector", desc="The pods this network policy applies to."), AGE),
            _networkpolicy_cells,
        ),
        ("autoscaling", "horizontalpodautoscalers"): (
            (
                NAME,
                _c("Reference", desc="Reference to the resource being scaled."),
                _c("Targets", desc="Current and target values of the metrics."),
                _c("MinPods", desc="Lower limit for the number of pods."),
                _c("MaxPods", "integer", desc="Upper limit for the number of pods."),
                _c("Replicas", "integer", desc="Current number of replicas."),
                AGE,
            ),
            _hpa_cells,
        ),
        ("scheduling.k8s.io", "priorityclasses"): (
            (
                NAME,
                _c("Value", "integer", desc="The integer value of this priority class."),
                _c("Global-Default", "boolean", desc="Whether this is the cluster's default priority class."),
                _c("Preemption Policy", desc="The policy for preempting pods with lower priority."),
                AGE,
            ),
            _priorityclass_cells,
        ),
        ("storage.k8s.io", "storageclasses"): (
            (
                NAME,
                _c("Provisioner", desc="The type of the provisioner."),
                _c("ReclaimPolicy", desc="The reclaim policy for dynamically provisioned volumes."),
                _c("VolumeBindingMode", desc="How PersistentVolumeClaims should be provisioned and bound."),
                _c("AllowVolumeExpansion", "boolean", desc="Whether the class allows volume expansion."),
                AGE,
            ),
            _storageclass_cells,
        ),
        ("storage.k8s.io", "csidrivers"): (
            (
                NAME,
                _c("AttachRequired", "boolean", desc="Whether the driver requires an attach operation."),
                _c("PodInfoOnMount", "boolean", desc="Whether pod information is passed on mount."),
                _c(
                    "StorageCapacity", "boolean", desc="Whether storage capacity is considered in scheduling."
                ),
                _c("TokenRequests", desc="Audiences of the service account tokens the driver needs."),
                _c("RequiresRepublish", "boolean", desc="Whether NodePublishVolume is called periodically."),
                _c("Modes", desc="The volume lifecycle modes the driver supports."),
                AGE,
            ),
            _csidriver_cells,
        ),
        ("storage.k8s.io", "volumeattachments"): (
            (
                NAME,
                _c("Attacher", desc="The name of the volume driver handling the request."),
                _c("PV", desc="The persistent volume to attach."),
                _c("Node", desc="The node to attach the volume to."),
                _c("Attached", "boolean", desc="Whether the volume is attached."),
                AGE,
            ),
            _volumeattachment_cells,
        ),
        ("", "persistentvolumes"): (
            (
                NAME,
                _c("Capacity", desc="The storage capacity of the volume."),
                _c("Access Modes", desc="The ways the volume can be mounted."),
                _c("Reclaim Policy", desc="What happens to the volume when released from its claim."),
                _c("Status", desc="The phase of the volume."),
                _c("Claim", desc="The claim bound to the volume."),
                _c("StorageClass", desc="The StorageClass the volume belongs to."),
                _c("VolumeAttributesClass", desc="The VolumeAttributesClass of the volume."),
                _c("Reason", desc="Why the volume is in its phase."),
                AGE,
                _c("VolumeMode", priority=1, desc="Whether the volume is a filesystem or a block device."),
            ),
            _pv_cells,
        ),
        ("", "resourcequotas"): (
            (
                NAME,
                AGE,
                _c(
                    "Request",
                    desc="Request represents a minimum amount of cpu/memory that a container may consume.",
                ),
                _c("Limit", desc="Limits control the maximum amount of cpu/memory that a container may use."),
            ),
            _resourcequota_cells,
        ),
        ("", "limitranges"): (_CREATED_AT, _created_at),
        (_RBAC, "roles"): (_CREATED_AT, _created_at),
        (_RBAC, "clusterroles"): (_CREATED_AT, _created_at),
        (_RBAC, "rolebindings"): (_BINDING_COLUMNS, _binding_cells),
        (_RBAC, "clusterrolebindings"): (_BINDING_COLUMNS, _binding_cells),
        (_ADMISSION, "validatingwebhookconfigurations"): (_WEBHOOK_COLUMNS, _webhooks_cells),
        (_ADMISSION, "mutatingwebhookconfigurations"): (_WEBHOOK_COLUMNS, _webhooks_cells),
    }
)
_DEFAULT: tuple[tuple[Column, ...], RowFn] = ((NAME, AGE), _default_cells)


# --- CRD printer columns: a JSONPath subset -------------------------------------------------------

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$]+)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*\*\s*\]
      | \[\s*'(?P<sq>[^']*)'\s*\] | \[\s*"(?P<dq>[^"]*)"\s*\]
      | \[\s*\?\(\s*@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)
          \s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\s*\]
      | \.\*
    """,
    re.VERBOSE,
)


def _parse_path(path: str) -> list[re.Match[str]] | None:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    if path.startswith("$"):
        path = path[1:]
    tokens, pos = [], 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            return None
        tokens.append(m)
        pos = m.end()
    return tokens


def _literal(raw: str) -> Any:
    if raw[:1] in "\"'":
        return raw[1:-1]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _step(values: Iterable[Any], tok: re.Match[str]) -> list[Any]:
    out: list[Any] = []
    key = tok["field"] or tok["sq"] or tok["dq"]
    for v in values:
        if key is not None:
            if isinstance(v, dict) and key in v:
                out.append(v[key])
        elif tok["index"] is not None:
            i = int(tok["index"])
            if isinstance(v, list) and -len(v) <= i < len(v):
                out.append(v[i])
        elif tok["fpath"] is not None:
            want, equal = _literal(tok["fval"]), tok["op"] == "=="
            items = v if isinstance(v, list) else []
            out += [it for it in items if (_dig(it, *tok["fpath"].split(".")) == want) == equal]
        elif isinstance(v, list):  # [*]
            out += v
        elif isinstance(v, dict):  # .*
            out += list(v.values())
    return out


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluates the simple JSONPath used by additionalPrinterColumns; all matches, in document order."""
    tokens = _parse_path(path)
    if tokens is None:
        return []
    values = [obj]
    for tok in tokens:
        values = _step(values, tok)
    return values


def _text(value: Any) -> str:
    # Mirrors JSONPath text printing: scalars bare, containers as compact JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def typed_cell(type_: str, value: Any, now: datetime) -> Any:
    """cellForJSONValue: a value of the wrong type yields an empty cell rather than an error."""
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "string":
        return _text(value)
    if type_ == "integer" and number:
        return int(value)
    if type_ == "number" and number:
        return float(value)
    if type_ == "boolean" and isinstance(value, bool):
        return value
    if type_ == "date" and isinstance(value, str):
        # The apiserver turns timestamps into ages itself; kubectl prints the cell as given.
        t = parse_time(value)
        return "<invalid>" if t is None else human_duration(now - t)
    return None


def _custom_columns(info: ResourceInfo) -> tuple[PrinterColumn, ...]:
    cols = info.printer_columns
    if any(c.name.lower() == "age" for c in cols):
        return cols
    return (*cols, PrinterColumn("Age", "date", ".metadata.creationTimestamp", _AGE_DESC))


def _custom_cells(info: ResourceInfo, obj: Obj, now: datetime) -> list[Any]:
    cells: list[Any] = [_name(obj)]
    for col in _custom_columns(info):
        found = jsonpath(obj, col.json_path)
        cells.append(typed_cell(col.type, found[0], now) if found else None)
    return cells


# --- public API -----------------------------------------------------------------------------------


def _printer(info: ResourceInfo) -> tuple[tuple[Column, ...], RowFn]:
    return PRINTERS.get((info.group, info.plural), _DEFAULT)


def column_definitions(info: ResourceInfo) -> list[Obj]:
    if info.printer_columns:
        custom = [
            Column(c.name, c.type, c.priority, c.description, c.format).definition()
            for c in _custom_columns(info)
        ]
        return [NAME.definition(), *custom]
    return [c.definition() for c in _printer(info)[0]]


def row_cells(info: ResourceInfo, obj: Obj, now: datetime) -> list[Any]:
    if info.printer_columns:
        return _custom_cells(info, obj, now)
    return _printer(info)[1](obj, now)


def partial_object_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def _row(info: ResourceInfo, obj: Obj, include_object: str, now: datetime) -> Obj:
    row: Obj = {"cells": row_cells(info, obj, now)}
    if info.group == "" and info.plural == "pods":
        conditions = _pod_conditions(obj)
        if conditions:
            row["conditions"] = conditions
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = partial_object_metadata(obj)
    return row


def to_table(
    info: ResourceInfo,
    objs: list[Obj],
    *,
    resource_version: str,
    continue_token: str = "",
    remaining: int | None = None,
    include_object: str = "Metadata",
    now: datetime | None = None,
    with_headers: bool = True,
) -> Obj:
    """A meta.k8s.io/v1 Table; `include_object` is the request's includeObject (None|Metadata|Object)."""
    now = now or datetime.now(UTC)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    if remaining is not None:
        metadata["remainingItemCount"] = remaining
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    if with_headers:
        table["columnDefinitions"] = column_definitions(info)
    table["rows"] = [_row(info, o, include_object, now) for o in objs]
    return table
