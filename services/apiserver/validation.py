"""Object validation with kube-apiserver's field paths, reasons and messages.

Each check returns a list of causes (`{"reason", "message", "field"}`) ready for a 422 Invalid Status's
`details.causes`; `status_message` renders the Status `message` the way upstream does. Callers apply
defaults first (as kube-apiserver does), so validation sees defaulted objects.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any

from kubeedge.apiserver.defaults import parse_quantity
from kubeedge.apiserver.resources import Obj, ResourceInfo
from kubeedge.apiserver.selectors import (
    LabelSelector,
    SelectorError,
    dns1123_subdomain_errors,
    label_value_errors,
    qualified_name_errors,
)

__all__ = [
    "Cause",
    "status_message",
    "validate_create",
    "validate_name",
    "validate_update",
]

Cause = dict[str, str]

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
NOT_FOUND = "FieldValueNotFound"

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
MAX_CONFIG_SIZE = 1024 * 1024  # ConfigMap and Secret payload limit
IMMUTABLE = "field is immutable"


# --------------------------------------------------------------------------------------------------
# causes


def _fmt(value: Any) -> str:
    """A value as Go's field errors print it: strings quoted, numbers bare, structures as JSON."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def required(field: str, detail: str = "") -> Cause:
    return {
        "reason": REQUIRED,
        "message": "Required value" + (f": {detail}" if detail else ""),
        "field": field,
    }


def invalid(field: str, value: Any, detail: str) -> Cause:
    return {"reason": INVALID, "message": f"Invalid value: {_fmt(value)}: {detail}", "field": field}


def not_supported(field: str, value: Any, supported: Iterable[str]) -> Cause:
    choices = ", ".join(json.dumps(s) for s in sorted(supported))
    msg = f"Unsupported value: {_fmt(value)}: supported values: {choices}"
    return {"reason": NOT_SUPPORTED, "message": msg, "field": field}


def duplicate(field: str, value: Any) -> Cause:
    return {"reason": DUPLICATE, "message": f"Duplicate value: {_fmt(value)}", "field": field}


def forbidden(field: str, detail: str) -> Cause:
    return {"reason": FORBIDDEN, "message": f"Forbidden: {detail}", "field": field}


def too_long(field: str, limit: int) -> Cause:
    return {"reason": TOO_LONG, "message": f"Too long: must have at most {limit} bytes", "field": field}


def not_found(field: str, value: Any) -> Cause:
    return {"reason": NOT_FOUND, "message": f"Not found: {_fmt(value)}", "field": field}


def status_message(kind: str, name: str, causes: list[Cause]) -> str:
    """The 422 Status message: `Pod "x" is invalid: <field>: <msg>` or a bracketed list for several."""
    errs = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    body = errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
    return f'{kind} "{name}" is invalid: {body}'


# --------------------------------------------------------------------------------------------------
# names and syntax

_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC_NAME_RE = re.compile(r"^[-a-z0-9]+$")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def dns1123_label_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(DNS1123_LABEL_MSG)
    return errs


def dns1035_label_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(DNS1035_LABEL_MSG)
    return errs


def path_segment_errors(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in value]


def config_key_errors(key: str) -> list[str]:
    errs = []
    if len(key) > 253:
        errs.append("must be no more than 253 characters")
    if not _CONFIG_KEY_RE.match(key):
        errs.append(CONFIG_KEY_MSG)
    if key in (".", ".."):
        errs.append(f"must not be '{key}'")
    elif key.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def port_name_errors(name: str) -> list[str]:
    """IANA service name rules for named container/target ports."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME_RE.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    if not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    return errs


def _each(field: str, value: Any, errs: Iterable[str]) -> list[Cause]:
    return [invalid(field, value, e) for e in errs]


_LABEL_NAMED_KINDS = {"Namespace"}
_DNS1035_NAMED_KINDS = {"Service"}
_PATH_SEGMENT_NAMED_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def _name_errors(kind: str, name: str) -> list[str]:
    if kind in _LABEL_NAMED_KINDS:
        return dns1123_label_errors(name)
    if kind in _DNS1035_NAMED_KINDS:
        return dns1035_label_errors(name)
    if kind in _PATH_SEGMENT_NAMED_KINDS:
        return path_segment_errors(name)
    return dns1123_subdomain_errors(name)


def validate_name(kind: str, name: str, field: str = "metadata.name") -> list[Cause]:
    """Upstream's per-kind name rule: DNS-1123 label (Namespace), DNS-1035 label (Service),
    path segment (RBAC kinds), DNS-1123 subdomain (everything else, custom resources included)."""
    return _each(field, name, _name_errors(kind, name))


def _valid_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _port_causes(field: str, value: Any, *, allow_zero: bool = False) -> list[Cause]:
    if value is None:
        return [required(field)]
    if allow_zero and value == 0:
        return []
    if not _valid_port(value):
        return [invalid(field, value, "must be between 1 and 65535, inclusive")]
    return []


def _protocol_causes(field: str, value: Any) -> list[Cause]:
    supported = ("SCTP", "TCP", "UDP")
    return [] if value in supported else [not_supported(field, value, supported)]


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _non_negative(field: str, value: Any) -> list[Cause]:
    if value is None or (isinstance(value, int) and value >= 0):
        return []
    return [invalid(field, value, "must be greater than or equal to 0")]


def _items(parent: Any, key: str) -> list[Obj]:
    if not isinstance(parent, dict):
        return []
    return [i for i in parent.get(key) or [] if isinstance(i, dict)]


# --------------------------------------------------------------------------------------------------
# metadata


def _validate_labels(field: str, labels: Any) -> list[Cause]:
    if not isinstance(labels, dict):
        return (
            []
            if labels is None
            else [invalid(field, labels, "must be a map of string keys to string values")]
        )
    causes: list[Cause] = []
    for key, value in labels.items():
        causes += _each(field, key, qualified_name_errors(key))
        if not isinstance(value, str):
            causes.append(invalid(field, value, "label values must be strings"))
        else:
            causes += _each(field, value, label_value_errors(value))
    return causes


def _validate_annotations(field: str, annotations: Any) -> list[Cause]:
    if not isinstance(annotations, dict):
        return [] if annotations is None else [invalid(field, annotations, "must be a map of strings")]
    causes: list[Cause] = []
    size = 0
    for key, value in annotations.items():
        causes += _each(field, key, qualified_name_errors(key.lower()))
        size += len(key) + len(str(value))
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT))
    return causes


def _validate_owner_references(refs: list[Obj]) -> list[Cause]:
    causes: list[Cause] = []
    for i, ref in enumerate(refs):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(required(f"metadata.ownerReferences[{i}].{key}"))
    if sum(1 for r in refs if r.get("controller")) > 1:
        causes.append(
            invalid("metadata.ownerReferences", refs, "Only one reference can have Controller set to true")
        )
    return causes


def _validate_metadata(info: ResourceInfo, meta: Obj, path: str = "metadata") -> list[Cause]:
    causes: list[Cause] = []
    name, generate_name = meta.get("name"), meta.get("generateName")
    if name:
        causes += validate_name(info.kind, str(name), f"{path}.name")
    elif generate_name:
        # A trailing '-' is fine in a prefix: the random suffix follows it.
        prefix = str(generate_name)
        causes += _each(f"{path}.generateName", prefix, _name_errors(info.kind, prefix.rstrip("-") + "a"))
    else:
        causes.append(required(f"{path}.name", "name or generateName is required"))
    namespace = meta.get("namespace")
    if info.namespaced and namespace:
        causes += _each(f"{path}.namespace", namespace, dns1123_label_errors(str(namespace)))
    causes += _validate_labels(f"{path}.labels", meta.get("labels"))
    causes += _validate_annotations(f"{path}.annotations", meta.get("annotations"))
    causes += _validate_owner_references(_items(meta, "ownerReferences"))
    for i, fin in enumerate(meta.get("finalizers") or []):
        causes += _each(f"{path}.finalizers[{i}]", fin, qualified_name_errors(str(fin)))
    return causes


# --------------------------------------------------------------------------------------------------
# pods


def _validate_container_ports(c: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, port in enumerate(_items(c, "ports")):
        p = f"{path}.ports[{i}]"
        causes += _port_causes(f"{p}.containerPort", port.get("containerPort"))
        if port.get("hostPort") not in (None, 0):
            causes += _port_causes(f"{p}.hostPort", port.get("hostPort"))
        causes += _protocol_causes(f"{p}.protocol", port.get("protocol", "TCP"))
        name = port.get("name")
        if name:
            causes += _each(f"{p}.name", name, port_name_errors(str(name)))
            if name in seen:
                causes.append(duplicate(f"{p}.name", name))
            seen.add(name)
    return causes


def _validate_resources(c: Obj, path: str) -> list[Cause]:
    resources = c.get("resources") or {}
    causes: list[Cause] = []
    parsed: dict[str, dict[str, Any]] = {}
    for kind in ("limits", "requests"):
        parsed[kind] = {}
        for res, qty in (resources.get(kind) or {}).items():
            value = parse_quantity(qty)
            if value is None:
                regex = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
                causes.append(
                    invalid(
                        f"{path}.resources.{kind}[{res}]",
                        qty,
                        f"quantities must match the regular expression '{regex}'",
                    )
                )
            elif value < 0:
                causes.append(
                    invalid(f"{path}.resources.{kind}[{res}]", qty, "must be greater than or equal to 0")
                )
            else:
                parsed[kind][res] = value
    for res, req in parsed["requests"].items():
        limit = parsed["limits"].get(res)
        if limit is not None and req > limit:
            raw_limit = resources["limits"][res]
            causes.append(
                invalid(
                    f"{path}.resources.requests",
                    resources["requests"][res],
                    f"must be less than or equal to {res} limit of {raw_limit}",
                )
            )
    return causes


def _validate_container(c: Obj, path: str, volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = c.get("name")
    if not name:
        causes.append(required(f"{path}.name"))
    else:
        causes += _each(f"{path}.name", name, dns1123_label_errors(str(name)))
    image = c.get("image")
    if not image:
        causes.append(required(f"{path}.image"))
    elif str(image) != str(image).strip():
        causes.append(invalid(f"{path}.image", image, "must not have leading or trailing whitespace"))
    causes += _validate_container_ports(c, path)
    for i, env in enumerate(_items(c, "env")):
        if not env.get("name"):
            causes.append(required(f"{path}.env[{i}].name"))
    for i, mount in enumerate(_items(c, "volumeMounts")):
        mp = f"{path}.volumeMounts[{i}]"
        if not mount.get("name"):
            causes.append(required(f"{mp}.name"))
        elif mount["name"] not in volumes:
            causes.append(not_found(f"{mp}.name", mount["name"]))
        if not mount.get("mountPath"):
            causes.append(required(f"{mp}.mountPath"))
    pull = c.get("imagePullPolicy")
    if pull is not None and pull not in ("Always", "IfNotPresent", "Never"):
        causes.append(not_supported(f"{path}.imagePullPolicy", pull, ("Always", "IfNotPresent", "Never")))
    return causes + _validate_resources(c, path)


def _validate_volumes(spec: Obj, path: str) -> tuple[list[Cause], set[str]]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, vol in enumerate(_items(spec, "volumes")):
        name = vol.get("name")
        if not name:
            causes.append(required(f"{path}.volumes[{i}].name"))
            continue
        causes += _each(f"{path}.volumes[{i}].name", name, dns1123_label_errors(str(name)))
        if name in names:
            causes.append(duplicate(f"{path}.volumes[{i}].name", name))
        names.add(name)
    return causes, names


def _validate_tolerations(spec: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, t in enumerate(_items(spec, "tolerations")):
        p = f"{path}.tolerations[{i}]"
        operator = t.get("operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            causes.append(not_supported(f"{p}.operator", operator, ("Equal", "Exists")))
        if operator == "Exists" and t.get("value"):
            causes.append(
                invalid(f"{p}.operator", t.get("value"), "value must be empty when `operator` is 'Exists'")
            )
        if not t.get("key") and operator != "Exists":
            causes.append(invalid(f"{p}.operator", operator, "operator must be Exists when `key` is empty"))
        effect = t.get("effect")
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(
                not_supported(f"{p}.effect", effect, ("NoExecute", "NoSchedule", "PreferNoSchedule"))
            )
    return causes


_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")


def _validate_pod_spec(spec: Any, path: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required(path)]
    causes, volumes = _validate_volumes(spec, path)
    containers = _items(spec, "containers")
    if not containers:
        causes.append(required(f"{path}.containers"))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(_items(spec, key)):
            cp = f"{path}.{key}[{i}]"
            causes += _validate_container(c, cp, volumes)
            name = c.get("name")
            if name and name in seen:
                causes.append(duplicate(f"{cp}.name", name))
            if name:
                seen.add(name)
    restart = spec.get("restartPolicy")
    if restart is not None and restart not in _RESTART_POLICIES:
        causes.append(not_supported(f"{path}.restartPolicy", restart, _RESTART_POLICIES))
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in _DNS_POLICIES:
        causes.append(not_supported(f"{path}.dnsPolicy", dns, _DNS_POLICIES))
    causes += _non_negative(
        f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds")
    )
    return causes + _validate_tolerations(spec, path)


def _validate_pod(obj: Obj) -> list[Cause]:
    return _validate_pod_spec(obj.get("spec"), "spec")


# --------------------------------------------------------------------------------------------------
# workloads


def _validate_selector(sel: Any, path: str) -> tuple[list[Cause], LabelSelector | None]:
    if not isinstance(sel, dict):
        return [invalid(path, sel, "must be a label selector object")], None
    causes = _validate_labels(f"{path}.matchLabels", sel.get("matchLabels"))
    for i, expr in enumerate(_items(sel, "matchExpressions")):
        ep = f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator"), expr.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(not_supported(f"{ep}.operator", op, ("DoesNotExist", "Exists", "In", "NotIn")))
        elif op in ("In", "NotIn") and not values:
            causes.append(required(f"{ep}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and values:
            causes.append(
                forbidden(
                    f"{ep}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                )
            )
        causes += _each(f"{ep}.key", expr.get("key"), qualified_name_errors(str(expr.get("key") or "")))
    if causes:
        return causes, None
    try:
        return [], LabelSelector.from_api(sel)
    except SelectorError as e:
        return [invalid(path, sel, str(e))], None


def _validate_template(
    spec: Obj, selector: LabelSelector | None, restart: tuple[str, ...], path: str = "spec"
) -> list[Cause]:
    """The pod template at `<path>.template` (path is "spec", or e.g. a CronJob's job template spec)."""
    template = spec.get("template")
    tp = f"{path}.template"
    if not isinstance(template, dict):
        return [required(tp)]
    meta = template.get("metadata") or {}
    labels = meta.get("labels") or {}
    causes = _validate_labels(f"{tp}.metadata.labels", meta.get("labels"))
    causes += _validate_annotations(f"{tp}.metadata.annotations", meta.get("annotations"))
    if selector is not None and not selector.matches(labels):
        causes.append(invalid(f"{tp}.metadata.labels", labels, "`selector` does not match template `labels`"))
    causes += _validate_pod_spec(template.get("spec"), f"{tp}.spec")
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy is not None and policy not in restart:
        causes.append(not_supported(f"{tp}.spec.restartPolicy", policy, restart))
    return causes


def _validate_apps_workload(obj: Obj, kind: str) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes = _non_negative("spec.replicas", spec.get("replicas"))
    causes += _non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    selector: LabelSelector | None = None
    raw = spec.get("selector")
    if raw is None:
        causes.append(required("spec.selector"))
    else:
        sel_causes, selector = _validate_selector(raw, "spec.selector")
        causes += sel_causes
        if selector is not None and selector.empty():
            causes.append(invalid("spec.selector", raw, f"empty selector is invalid for {kind.lower()}"))
            selector = None
    causes += _validate_template(spec, selector, ("Always",))
    return causes + _KIND_SPEC_CHECKS.get(kind, _no_checks)(spec)


def _no_checks(_: Obj) -> list[Cause]:
    return []


def _deployment_spec(spec: Obj) -> list[Cause]:
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type", "RollingUpdate")
    if stype not in ("RollingUpdate", "Recreate"):
        return [not_supported("spec.strategy.type", stype, ("Recreate", "RollingUpdate"))]
    if stype == "Recreate" and strategy.get("rollingUpdate") is not None:
        return [
            forbidden(
                "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
            )
        ]
    return []


def _daemonset_spec(spec: Obj) -> list[Cause]:
    stype = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if stype not in ("RollingUpdate", "OnDelete"):
        return [not_supported("spec.updateStrategy.type", stype, ("OnDelete", "RollingUpdate"))]
    return []


def _statefulset_spec(spec: Obj) -> list[Cause]:
    causes: list[Cause] = []
    policy = spec.get("podManagementPolicy", "OrderedReady")
    if policy not in ("OrderedReady", "Parallel"):
        causes.append(not_supported("spec.podManagementPolicy", policy, ("OrderedReady", "Parallel")))
    stype = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if stype not in ("RollingUpdate", "OnDelete"):
        causes.append(not_supported("spec.updateStrategy.type", stype, ("OnDelete", "RollingUpdate")))
    return causes


_KIND_SPEC_CHECKS: dict[str, Callable[[Obj], list[Cause]]] = {
    "Deployment": _deployment_spec,
    "DaemonSet": _daemonset_spec,
    "StatefulSet": _statefulset_spec,
}


def _validate_job(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    return _validate_job_spec(spec, "spec")


def _validate_job_spec(spec: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        causes += _non_negative(f"{path}.{key}", spec.get(key))
    selector: LabelSelector | None = None
    # Without manualSelector the selector is generated from the job's uid (not here), so only a manual
    # selector can be checked against the template.
    if spec.get("manualSelector"):
        if spec.get("selector") is None:
            causes.append(required(f"{path}.selector"))
        else:
            sel_causes, selector = _validate_selector(spec["selector"], f"{path}.selector")
            causes += sel_causes
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        causes.append(not_supported(f"{path}.completionMode", mode, ("Indexed", "NonIndexed")))
    return causes + _validate_template(spec, selector, ("OnFailure", "Never"), path)


# --------------------------------------------------------------------------------------------------
# services and endpoints

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _validate_service_port(port: Obj, p: str, svc_type: str, multi: bool) -> list[Cause]:
    causes = _port_causes(f"{p}.port", port.get("port"))
    name = port.get("name")
    if not name:
        if multi:
            causes.append(required(f"{p}.name"))
    else:
        causes += _each(f"{p}.name", name, dns1123_label_errors(str(name)))
    causes += _protocol_causes(f"{p}.protocol", port.get("protocol", "TCP"))
    target = port.get("targetPort")
    if isinstance(target, str):
        causes += _each(f"{p}.targetPort", target, port_name_errors(target))
    elif target is not None:
        causes += _port_causes(f"{p}.targetPort", target)
    node_port = port.get("nodePort")
    if node_port not in (None, 0):
        if svc_type == "ClusterIP":
            causes.append(forbidden(f"{p}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        else:
            causes += _port_causes(f"{p}.nodePort", node_port)
    return causes


def _validate_service_ports(spec: Obj, svc_type: str) -> list[Cause]:
    ports = _items(spec, "ports")
    headless = spec.get("clusterIP") == "None"
    if not ports and svc_type != "ExternalName" and not headless:
        return [required("spec.ports")]
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"spec.ports[{i}]"
        causes += _validate_service_port(port, p, svc_type, len(ports) > 1)
        name = port.get("name")
        if name and name in names:
            causes.append(duplicate(f"{p}.name", name))
        if name:
            names.add(name)
    return causes


def _validate_cluster_ip(spec: Obj, svc_type: str) -> list[Cause]:
    ip = spec.get("clusterIP")
    if not ip:
        return []
    if svc_type == "ExternalName":
        return [forbidden("spec.clusterIP", "may not be set for ExternalName services")]
    if ip == "None":
        if svc_type in ("NodePort", "LoadBalancer"):
            return [invalid("spec.clusterIP", ip, f"may not be set to 'None' for {svc_type} services")]
        return []
    if not _is_ip(ip):
        return [
            invalid("spec.clusterIP", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        ]
    return []


def _validate_service(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in _SERVICE_TYPES:
        return [not_supported("spec.type", svc_type, _SERVICE_TYPES)]
    causes: list[Cause] = []
    if svc_type == "ExternalName":
        ext = spec.get("externalName")
        if not ext:
            causes.append(required("spec.externalName"))
        else:
            causes += _each("spec.externalName", ext, dns1123_subdomain_errors(str(ext).rstrip(".")))
    affinity = spec.get("sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        causes.append(not_supported("spec.sessionAffinity", affinity, ("ClientIP", "None")))
    causes += _validate_cluster_ip(spec, svc_type)
    causes += _validate_labels("spec.selector", spec.get("selector"))
    return causes + _validate_service_ports(spec, svc_type)


def _validate_endpoints(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, subset in enumerate(_items(obj, "subsets")):
        sp = f"subsets[{i}]"
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_items(subset, key)):
                if not _is_ip(addr.get("ip")):
                    causes.append(
                        invalid(f"{sp}.{key}[{j}].ip", addr.get("ip"), "must be a valid IP address")
                    )
        for j, port in enumerate(_items(subset, "ports")):
            causes += _port_causes(f"{sp}.ports[{j}].port", port.get("port"))
            causes += _protocol_causes(f"{sp}.ports[{j}].protocol", port.get("protocol", "TCP"))
    return causes


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


def _address_causes(field: str, address: Any, address_type: str) -> list[Cause]:
    if address_type == "FQDN":
        return _each(field, address, dns1123_subdomain_errors(str(address)))
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        return [invalid(field, address, "must be a valid IP address")]
    want = 4 if address_type == "IPv4" else 6
    return [] if parsed.version == want else [invalid(field, address, f"must be an {address_type} address")]


def _validate_endpointslice(obj: Obj) -> list[Cause]:
    address_type = obj.get("addressType")
    if not address_type:
        return [required("addressType")]
    if address_type not in _ADDRESS_TYPES:
        return [not_supported("addressType", address_type, _ADDRESS_TYPES)]
    causes: list[Cause] = []
    for i, ep in enumerate(_items(obj, "endpoints")):
        addresses = ep.get("addresses") or []
        if not addresses:
            causes.append(required(f"endpoints[{i}].addresses", "must contain at least 1 address"))
        elif len(addresses) > 100:
            causes.append(too_long(f"endpoints[{i}].addresses", 100))
        for j, addr in enumerate(addresses):
            causes += _address_causes(f"endpoints[{i}].addresses[{j}]", addr, address_type)
    for i, port in enumerate(_items(obj, "ports")):
        if port.get("port") is not None:
            causes += _port_causes(f"ports[{i}].port", port["port"], allow_zero=True)
        causes += _protocol_causes(f"ports[{i}].protocol", port.get("protocol", "TCP"))
    return causes


# --------------------------------------------------------------------------------------------------
# config and other core kinds


def _validate_data_keys(obj: Obj, keys: tuple[str, ...]) -> list[Cause]:
    causes: list[Cause] = []
    seen: dict[str, str] = {}
    for field in keys:
        data = obj.get(field)
        if data is None:
            continue
        if not isinstance(data, dict):
            causes.append(invalid(field, data, "must be a map"))
            continue
        for key in data:
            causes += _each(f"{field}[{key}]", key, config_key_errors(str(key)))
            if key in seen:
                causes.append(invalid(f"{field}[{key}]", key, f"duplicate of key present in {seen[key]}"))
            seen[key] = field
    return causes


def _payload_size(obj: Obj, keys: tuple[str, ...]) -> int:
    return sum(len(k) + len(str(v)) for key in keys for k, v in (obj.get(key) or {}).items())


def _validate_configmap(obj: Obj) -> list[Cause]:
    causes = _validate_data_keys(obj, ("data", "binaryData"))
    if _payload_size(obj, ("data", "binaryData")) > MAX_CONFIG_SIZE:
        causes.append(too_long("", MAX_CONFIG_SIZE))
    return causes


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
}


def _validate_secret(obj: Obj) -> list[Cause]:
    causes = _validate_data_keys(obj, ("data",))
    raw = obj.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            causes.append(invalid(f"data[{key}]", "<secret contents redacted>", "must be base64-encoded"))
    for key in _SECRET_REQUIRED_KEYS.get(obj.get("type") or "Opaque", ()):
        if key not in data:
            causes.append(required(f"data[{key}]"))
    if obj.get("type") == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            causes.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    if _payload_size(obj, ("data",)) > MAX_CONFIG_SIZE:
        causes.append(too_long("data", MAX_CONFIG_SIZE))
    return causes


def _validate_namespace(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, fin in enumerate((obj.get("spec") or {}).get("finalizers") or []):
        causes += _each(f"spec.finalizers[{i}]", fin, qualified_name_errors(str(fin)))
    return causes


def _validate_node(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    for i, taint in enumerate(_items(spec, "taints")):
        tp = f"spec.taints[{i}]"
        if not taint.get("key"):
            causes.append(required(f"{tp}.key"))
        else:
            causes += _each(f"{tp}.key", taint["key"], qualified_name_errors(str(taint["key"])))
        effect = taint.get("effect")
        if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(
                not_supported(f"{tp}.effect", effect, ("NoExecute", "NoSchedule", "PreferNoSchedule"))
            )
    cidr = spec.get("podCIDR")
    if cidr:
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            causes.append(
                invalid(
                    "spec.podCIDR", cidr, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
                )
            )
    return causes


def _validate_lease(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        causes.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    return causes + _non_negative("spec.leaseTransitions", spec.get("leaseTransitions"))


def _validate_event(obj: Obj) -> list[Cause]:
    involved = obj.get("involvedObject")
    if not isinstance(involved, dict):
        return [required("involvedObject")]
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    involved_ns = involved.get("namespace") or ""
    # Events about cluster-scoped objects live in "default" (or nowhere); others in the object's namespace.
    if (not involved_ns and ns not in ("", "default")) or (involved_ns and ns != involved_ns):
        return [invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")]
    return []


def _validate_pvc(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    if not spec.get("accessModes"):
        causes.append(required("spec.accessModes", "at least 1 access mode is required"))
    requests = (spec.get("resources") or {}).get("requests") or {}
    if "storage" not in requests:
        causes.append(required("spec.resources[storage]"))
    return causes


# --------------------------------------------------------------------------------------------------
# CustomResourceDefinition


def _validate_crd_names(names: Any) -> list[Cause]:
    if not isinstance(names, dict):
        return [required("spec.names")]
    causes: list[Cause] = []
    plural = names.get("plural")
    if not plural:
        causes.append(required("spec.names.plural"))
    else:
        causes += _each("spec.names.plural", plural, dns1123_label_errors(str(plural)))
    if names.get("singular"):
        causes += _each(
            "spec.names.singular", names["singular"], dns1123_label_errors(str(names["singular"]))
        )
    if not names.get("kind"):
        causes.append(required("spec.names.kind"))
    return causes


def _validate_crd_versions(versions: list[Obj]) -> list[Cause]:
    if not versions:
        return [required("spec.versions", "must have exactly one version marked as storage version")]
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, v in enumerate(versions):
        name = v.get("name")
        if not name:
            causes.append(required(f"spec.versions[{i}].name"))
            continue
        causes += _each(f"spec.versions[{i}].name", name, dns1035_label_errors(str(name)))
        if name in seen:
            causes.append(duplicate(f"spec.versions[{i}].name", name))
        seen.add(name)
    storage = sum(1 for v in versions if v.get("storage") is True)
    if storage != 1:
        causes.append(
            invalid("spec.versions", versions, "must have exactly one version marked as storage version")
        )
    if not any(v.get("served") for v in versions):
        causes.append(invalid("spec.versions", versions, "must have at least one version marked as served"))
    return causes


def _validate_crd(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    group = spec.get("group")
    if not group:
        causes.append(required("spec.group"))
    else:
        causes += _each("spec.group", group, dns1123_subdomain_errors(str(group)))
        if "." not in str(group):
            causes.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    causes += _validate_crd_names(spec.get("names"))
    scope = spec.get("scope")
    if scope not in ("Cluster", "Namespaced"):
        causes.append(not_supported("spec.scope", scope, ("Cluster", "Namespaced")))
    causes += _validate_crd_versions(_items(spec, "versions"))
    plural = (spec.get("names") or {}).get("plural")
    name = (obj.get("metadata") or {}).get("name")
    if plural and group and name != f"{plural}.{group}":
        causes.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    return causes


# --------------------------------------------------------------------------------------------------
# cron schedules (robfig/cron's ParseStandard, which kube-apiserver uses for CronJob.spec.schedule)

_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (name, min, max, names) for minute, hour, day of month, month, day of week.
_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 6, _DAYS),
)
_GO_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


class CronError(ValueError):
    """A schedule robfig/cron would refuse; the message is the one it gives."""


def _cron_number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise CronError(
            f"failed to parse int from {text}: strconv.Atoi: parsing {json.dumps(text)}: invalid syntax"
        )
    return int(text)


def _cron_range(expr: str, low: int, high: int, names: dict[str, int]) -> None:
    range_and_step = expr.split("/")
    if len(range_and_step) > 2:
        raise CronError(f"too many slashes: {expr}")
    bounds = range_and_step[0].split("-")
    if len(bounds) > 2:
        raise CronError(f"too many hyphens: {expr}")
    if bounds[0] in ("*", "?"):
        if len(bounds) > 1:
            raise CronError(f"too many hyphens: {expr}")
        start, end = low, high
    else:
        start = _cron_number(bounds[0], names)
        end = _cron_number(bounds[1], names) if len(bounds) == 2 else start
    if len(range_and_step) == 2:
        step = _cron_number(range_and_step[1], {})
        if step <= 0:
            raise CronError(f"step of range should be a positive number: {expr}")
        if len(bounds) == 1 and bounds[0] not in ("*", "?"):
            end = high  # "N/step" means "from N to the maximum, every step"
    if start < low:
        raise CronError(f"beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise CronError(f"end of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")


def parse_cron(schedule: str) -> None:
    """Raise CronError unless `schedule` is a standard 5-field cron line or a descriptor (@daily, @every 1h)."""
    spec = schedule.strip()
    if spec.startswith("TZ=") or spec.startswith("CRON_TZ="):
        spec = spec.partition(" ")[2].strip()
    if spec.startswith("@"):
        if spec.startswith("@every "):
            duration = spec.removeprefix("@every ").strip()
            if not _GO_DURATION_RE.match(duration):
                raise CronError(
                    f"failed to parse duration {spec}: time: invalid duration {json.dumps(duration)}"
                )
            return
        if spec not in _CRON_MACROS:
            raise CronError(f"unrecognized descriptor: {spec}")
        return
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    for text, (low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for expr in text.split(","):
            _cron_range(expr, low, high, names)


# --------------------------------------------------------------------------------------------------
# batch/v1 CronJob, core/v1 ReplicationController and PodTemplate

_CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
CRONJOB_NAME_MAX = 52  # the controller appends an 11-character suffix to name its Jobs


def _validate_schedule(schedule: Any) -> list[Cause]:
    if not schedule:
        return [required("spec.schedule")]
    if not isinstance(schedule, str):
        return [invalid("spec.schedule", schedule, "must be a string")]
    if "TZ" in schedule:
        return [
            invalid(
                "spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            )
        ]
    try:
        parse_cron(schedule)
    except CronError as e:
        return [invalid("spec.schedule", schedule, str(e))]
    return []


def _validate_time_zone(tz: Any) -> list[Cause]:
    if tz is None:
        return []
    try:
        zoneinfo.ZoneInfo(str(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [invalid("spec.timeZone", tz, f"unknown time zone {tz}")]
    return []


def _validate_cronjob(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    name = (obj.get("metadata") or {}).get("name") or ""
    if len(name) > CRONJOB_NAME_MAX:
        causes.append(invalid("metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX} characters"))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*causes, required("spec")]
    causes += _validate_schedule(spec.get("schedule"))
    causes += _validate_time_zone(spec.get("timeZone"))
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in _CONCURRENCY_POLICIES:
        causes.append(not_supported("spec.concurrencyPolicy", policy, _CONCURRENCY_POLICIES))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        causes += _non_negative(f"spec.{key}", spec.get(key))
    job_template = spec.get("jobTemplate")
    if not isinstance(job_template, dict) or not isinstance(job_template.get("spec"), dict):
        return [*causes, required("spec.jobTemplate")]
    return causes + _validate_job_spec(job_template["spec"], "spec.jobTemplate.spec")


def _validate_replicationcontroller(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes = _non_negative("spec.replicas", spec.get("replicas"))
    raw = spec.get("selector")
    selector: LabelSelector | None = None
    if not raw:
        causes.append(required("spec.selector"))
    elif not isinstance(raw, dict):
        causes.append(invalid("spec.selector", raw, "must be a map of labels"))
    else:
        causes += _validate_labels("spec.selector", raw)
        selector = LabelSelector.from_api({"matchLabels": raw}) if not causes else None
    return causes + _validate_template(spec, selector, ("Always",))


def _validate_podtemplate(obj: Obj) -> list[Cause]:
    template = obj.get("template")
    if not isinstance(template, dict):
        return [required("template")]
    meta = template.get("metadata") or {}
    causes = _validate_labels("template.metadata.labels", meta.get("labels"))
    return causes + _validate_pod_spec(template.get("spec"), "template.spec")


# --------------------------------------------------------------------------------------------------
# rbac.authorization.k8s.io/v1

RBAC_GROUP = "rbac.authorization.k8s.io"
_SUBJECT_KINDS = ("Group", "ServiceAccount", "User")


def _validate_policy_rules(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(_items(obj, "rules")):
        p = f"rules[{i}]"
        if not rule.get("verbs"):
            causes.append(required(f"{p}.verbs", "verbs must contain at least one value"))
        urls, resources = rule.get("nonResourceURLs"), rule.get("resources")
        if urls and resources:
            causes.append(
                invalid(
                    f"{p}.nonResourceURLs",
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        elif not urls and not resources:
            causes.append(required(f"{p}.resources", "resource rules must supply at least one api group"))
        elif resources and not rule.get("apiGroups"):
            causes.append(required(f"{p}.apiGroups", "resource rules must supply at least one api group"))
    return causes


def _validate_role(obj: Obj) -> list[Cause]:
    return _validate_policy_rules(obj)


def _validate_subject(subject: Obj, p: str, cluster: bool) -> list[Cause]:
    causes: list[Cause] = []
    name, kind = subject.get("name"), subject.get("kind")
    if not name:
        causes.append(required(f"{p}.name"))
    if kind == "ServiceAccount":
        if subject.get("apiGroup"):
            causes.append(not_supported(f"{p}.apiGroup", subject["apiGroup"], ("",)))
        if cluster and not subject.get("namespace"):
            causes.append(required(f"{p}.namespace"))
    elif kind in ("User", "Group"):
        if subject.get("apiGroup") != RBAC_GROUP:
            causes.append(not_supported(f"{p}.apiGroup", subject.get("apiGroup"), (RBAC_GROUP,)))
    else:
        causes.append(not_supported(f"{p}.kind", kind, _SUBJECT_KINDS))
    return causes


def _validate_role_binding(obj: Obj, cluster: bool) -> list[Cause]:
    causes: list[Cause] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict) or not ref:
        causes.append(required("roleRef"))
    else:
        if ref.get("apiGroup") != RBAC_GROUP:
            causes.append(not_supported("roleRef.apiGroup", ref.get("apiGroup"), (RBAC_GROUP,)))
        kinds = ("ClusterRole",) if cluster else ("ClusterRole", "Role")
        if ref.get("kind") not in kinds:
            causes.append(not_supported("roleRef.kind", ref.get("kind"), kinds))
        if not ref.get("name"):
            causes.append(required("roleRef.name"))
        else:
            causes += _each("roleRef.name", ref["name"], path_segment_errors(str(ref["name"])))
    for i, subject in enumerate(_items(obj, "subjects")):
        causes += _validate_subject(subject, f"subjects[{i}]", cluster)
    return causes


# --------------------------------------------------------------------------------------------------
# scheduling, policy, networking, autoscaling, storage, admission

HIGHEST_USER_PRIORITY = 1_000_000_000
_PREEMPTION_POLICIES = ("Never", "PreemptLowerPriority")


def _validate_priorityclass(obj: Obj) -> list[Cause]:
    value = obj.get("value")
    causes: list[Cause] = []
    name = (obj.get("metadata") or {}).get("name") or ""
    if value is None:
        causes.append(required("value"))
    elif not isinstance(value, int) or isinstance(value, bool):
        causes.append(invalid("value", value, "must be an integer"))
    elif value > HIGHEST_USER_PRIORITY and not name.startswith("system-"):
        causes.append(
            forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}")
        )
    policy = obj.get("preemptionPolicy")
    if policy is not None and policy not in _PREEMPTION_POLICIES:
        causes.append(not_supported("preemptionPolicy", policy, _PREEMPTION_POLICIES))
    return causes


_PERCENT_RE = re.compile(r"^[0-9]+%$")


def _int_or_percent(field: str, value: Any) -> list[Cause]:
    if isinstance(value, bool):
        return [invalid(field, value, "must be an integer or percentage (e.g '5%')")]
    if isinstance(value, int):
        return _non_negative(field, value)
    if isinstance(value, str) and _PERCENT_RE.match(value):
        if int(value[:-1]) > 100:
            return [invalid(field, value, "must not be greater than 100%")]
        return []
    return [
        invalid(field, value, "a valid percent string must be a numeric string followed by an ending '%'")
    ]


def _validate_pdb(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if min_available is not None and max_unavailable is not None:
        causes.append(invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
    if min_available is not None:
        causes += _int_or_percent("spec.minAvailable", min_available)
    if max_unavailable is not None:
        causes += _int_or_percent("spec.maxUnavailable", max_unavailable)
    if spec.get("selector") is not None:
        causes += _validate_selector(spec["selector"], "spec.selector")[0]
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in ("AlwaysAllow", "IfHealthyBudget"):
        causes.append(
            not_supported("spec.unhealthyPodEvictionPolicy", policy, ("AlwaysAllow", "IfHealthyBudget"))
        )
    return causes


_PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")


def _validate_ingress_backend(backend: Any, p: str) -> list[Cause]:
    if not isinstance(backend, dict) or not (backend.get("service") or backend.get("resource")):
        return [required(p, "one of `service` or `resource` must be specified")]
    if backend.get("service") and backend.get("resource"):
        return [invalid(p, backend, "cannot set both resource and service backends")]
    service = backend.get("service")
    if not isinstance(service, dict):
        return []
    causes: list[Cause] = []
    if not service.get("name"):
        causes.append(required(f"{p}.service.name"))
    port = service.get("port") or {}
    if port.get("name") and port.get("number"):
        causes.append(invalid(f"{p}.service.port", port, "cannot set both port name & port number"))
    elif port.get("name"):
        causes += _each(f"{p}.service.port.name", port["name"], port_name_errors(str(port["name"])))
    elif port.get("number") is not None:
        causes += _port_causes(f"{p}.service.port.number", port["number"])
    else:
        causes.append(required(f"{p}.service.port", "port name or number is required"))
    return causes


def _validate_ingress_path(path: Obj, p: str) -> list[Cause]:
    causes: list[Cause] = []
    path_type, value = path.get("pathType"), path.get("path")
    if path_type is None:
        causes.append(required(f"{p}.pathType", "pathType must be specified"))
    elif path_type not in _PATH_TYPES:
        causes.append(not_supported(f"{p}.pathType", path_type, _PATH_TYPES))
    elif path_type in ("Exact", "Prefix") and not str(value or "").startswith("/"):
        causes.append(invalid(f"{p}.path", value or "", "must be an absolute path"))
    return causes + _validate_ingress_backend(path.get("backend"), f"{p}.backend")


def _validate_ingress(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    rules = _items(spec, "rules")
    if spec.get("defaultBackend") is not None:
        causes += _validate_ingress_backend(spec["defaultBackend"], "spec.defaultBackend")
    elif not rules:
        causes.append(invalid("spec.rules", [], "either `defaultBackend` or `rules` must be specified"))
    for i, rule in enumerate(rules):
        host = rule.get("host")
        if host:
            bare = str(host).removeprefix("*.")
            causes += _each(f"spec.rules[{i}].host", host, dns1123_subdomain_errors(bare))
        http = rule.get("http")
        if http is None:
            continue
        paths = _items(http, "paths")
        if not paths:
            causes.append(required(f"spec.rules[{i}].http.paths"))
        for j, path in enumerate(paths):
            causes += _validate_ingress_path(path, f"spec.rules[{i}].http.paths[{j}]")
    return causes


def _validate_ingressclass(obj: Obj) -> list[Cause]:
    controller = (obj.get("spec") or {}).get("controller")
    if not controller:
        return [required("spec.controller")]
    return []


_POLICY_TYPES = ("Egress", "Ingress")


def _validate_networkpolicy(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes = _validate_selector(spec.get("podSelector") or {}, "spec.podSelector")[0]
    types = spec.get("policyTypes") or []
    for i, t in enumerate(types):
        if t not in _POLICY_TYPES:
            causes.append(not_supported(f"spec.policyTypes[{i}]", t, _POLICY_TYPES))
    for direction in ("ingress", "egress"):
        for i, rule in enumerate(_items(spec, direction)):
            for j, port in enumerate(_items(rule, "ports")):
                causes += _protocol_causes(
                    f"spec.{direction}[{i}].ports[{j}].protocol", port.get("protocol", "TCP")
                )
    return causes


def _validate_hpa(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict) or not ref:
        causes.append(required("spec.scaleTargetRef"))
    else:
        for key in ("kind", "name"):
            if not ref.get(key):
                causes.append(required(f"spec.scaleTargetRef.{key}"))
    min_replicas = spec.get("minReplicas", 1)
    max_replicas = spec.get("maxReplicas")
    if isinstance(min_replicas, int) and min_replicas < 1:
        causes.append(invalid("spec.minReplicas", min_replicas, "must be greater than or equal to 1"))
    if max_replicas is None:
        causes.append(required("spec.maxReplicas"))
    elif not isinstance(max_replicas, int) or max_replicas < 1:
        causes.append(invalid("spec.maxReplicas", max_replicas, "must be greater than 0"))
    elif isinstance(min_replicas, int) and max_replicas < min_replicas:
        causes.append(
            invalid("spec.maxReplicas", max_replicas, "must be greater than or equal to `minReplicas`")
        )
    return causes


_RECLAIM_POLICIES = ("Delete", "Recycle", "Retain")
_BINDING_MODES = ("Immediate", "WaitForFirstConsumer")


def _validate_storageclass(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    if not obj.get("provisioner"):
        causes.append(required("provisioner"))
    policy = obj.get("reclaimPolicy")
    if policy is not None and policy not in ("Delete", "Retain"):
        causes.append(not_supported("reclaimPolicy", policy, ("Delete", "Retain")))
    mode = obj.get("volumeBindingMode")
    if mode is not None and mode not in _BINDING_MODES:
        causes.append(not_supported("volumeBindingMode", mode, _BINDING_MODES))
    return causes


_PV_SOURCES = (
    "gcePersistentDisk awsElasticBlockStore hostPath glusterfs nfs rbd iscsi cinder cephfs fc flocker flexVolume"
    " azureFile vsphereVolume quobyte azureDisk photonPersistentDisk portworxVolume scaleIO local storageos csi"
).split()


def _validate_pv(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    if not spec.get("accessModes"):
        causes.append(required("spec.accessModes"))
    if not (spec.get("capacity") or {}).get("storage"):
        causes.append(required("spec.capacity"))
    sources = [k for k in _PV_SOURCES if spec.get(k) is not None]
    if len(sources) != 1:
        causes.append(
            required("spec", "must specify a volume type")
            if not sources
            else forbidden(f"spec.{sources[1]}", "may not specify more than 1 volume type")
        )
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy is not None and policy not in _RECLAIM_POLICIES:
        causes.append(not_supported("spec.persistentVolumeReclaimPolicy", policy, _RECLAIM_POLICIES))
    return causes


def _validate_resourcequota(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for name, qty in ((obj.get("spec") or {}).get("hard") or {}).items():
        q = parse_quantity(qty)
        if q is None:
            causes.append(invalid(f"spec.hard[{name}]", qty, "must be a valid quantity"))
        elif q < 0:
            causes.append(invalid(f"spec.hard[{name}]", qty, "must be greater than or equal to 0"))
    return causes


_LIMIT_TYPES = ("Container", "PersistentVolumeClaim", "Pod")


def _validate_limitrange(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, item in enumerate(_items(obj.get("spec"), "limits")):
        t = item.get("type")
        if t not in _LIMIT_TYPES:
            causes.append(not_supported(f"spec.limits[{i}].type", t, _LIMIT_TYPES))
    return causes


def _validate_webhooks(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, hook in enumerate(_items(obj, "webhooks")):
        p = f"webhooks[{i}]"
        name = hook.get("name")
        if not name:
            causes.append(required(f"{p}.name"))
        elif name in names:
            causes.append(duplicate(f"{p}.name", name))
        else:
            causes += _each(f"{p}.name", name, dns1123_subdomain_errors(str(name)))
            names.add(str(name))
        if hook.get("sideEffects") is None:
            causes.append(required(f"{p}.sideEffects"))
        if not hook.get("admissionReviewVersions"):
            causes.append(required(f"{p}.admissionReviewVersions", "must specify one of v1, v1beta1"))
        config = hook.get("clientConfig") or {}
        if bool(config.get("url")) == bool(config.get("service")):
            causes.append(required(f"{p}.clientConfig", "exactly one of url or service is required"))
    return causes


# --------------------------------------------------------------------------------------------------
# entry points

_VALIDATORS: dict[str, Callable[[Obj], list[Cause]]] = {
    "Pod": _validate_pod,
    "Deployment": lambda o: _validate_apps_workload(o, "Deployment"),
    "ReplicaSet": lambda o: _validate_apps_workload(o, "ReplicaSet"),
    "DaemonSet": lambda o: _validate_apps_workload(o, "DaemonSet"),
    "StatefulSet": lambda o: _validate_apps_workload(o, "StatefulSet"),
    "Job": _validate_job,
    "Service": _validate_service,
    "Endpoints": _validate_endpoints,
    "EndpointSlice": _validate_endpointslice,
    "ConfigMap": _validate_configmap,
    "Secret": _validate_secret,
    "Namespace": _validate_namespace,
    "Node": _validate_node,
    "Lease": _validate_lease,
    "Event": _validate_event,
    "PersistentVolumeClaim": _validate_pvc,
    "CustomResourceDefinition": _validate_crd,
    "CronJob": _validate_cronjob,
    "ReplicationController": _validate_replicationcontroller,
    "PodTemplate": _validate_podtemplate,
    "Role": _validate_role,
    "ClusterRole": _validate_role,
    "RoleBinding": lambda o: _validate_role_binding(o, cluster=False),
    "ClusterRoleBinding": lambda o: _validate_role_binding(o, cluster=True),
    "PriorityClass": _validate_priorityclass,
    "PodDisruptionBudget": _validate_pdb,
    "Ingress": _validate_ingress,
    "IngressClass": _validate_ingressclass,
    "NetworkPolicy": _validate_networkpolicy,
    "HorizontalPodAutoscaler": _validate_hpa,
    "StorageClass": _validate_storageclass,
    "PersistentVolume": _validate_pv,
    "ResourceQuota": _validate_resourcequota,
    "LimitRange": _validate_limitrange,
    "ValidatingWebhookConfiguration": _validate_webhooks,
    "MutatingWebhookConfiguration": _validate_webhooks,
}


def validate_create(info: ResourceInfo, obj: Obj) -> list[Cause]:
    """All causes that make `obj` invalid as a new object of `info`'s kind (empty list: valid).

    Custom resources get metadata checks only; schema validation belongs to the CRD machinery.
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [required("metadata")]
    causes = _validate_metadata(info, meta)
    validator = None if info.crd else _VALIDATORS.get(info.kind)
    if validator is not None:
        causes += validator(obj)
    return causes


# --- updates


def _immutable(field: str, new: Any, old: Any) -> list[Cause]:
    return [] if new == old else [invalid(field, new, IMMUTABLE)]


def _validate_metadata_update(new: Obj, old: Obj) -> list[Cause]:
    nm, om = new.get("metadata") or {}, old.get("metadata") or {}
    causes = _immutable("metadata.name", nm.get("name") or "", om.get("name") or "")
    causes += _immutable("metadata.namespace", nm.get("namespace") or "", om.get("namespace") or "")
    # System fields the client left out are restored by the caller; only a different value is an error.
    for key in ("uid", "creationTimestamp"):
        if nm.get(key) and om.get(key):
            causes += _immutable(f"metadata.{key}", nm[key], om[key])
    return causes


POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _copy_images(new_spec: Obj, old_spec: Obj, key: str) -> None:
    new_cs, old_cs = _items(new_spec, key), _items(old_spec, key)
    if len(new_cs) == len(old_cs):
        for n, o in zip(new_cs, old_cs, strict=True):
            if "image" in o:
                n["image"] = o["image"]


def _validate_pod_update(new: Obj, old: Obj) -> list[Cause]:
    old_spec = old.get("spec") or {}
    munged = copy.deepcopy(new.get("spec") or {})
    # Blank out every change that is allowed, then require the rest to be identical.
    _copy_images(munged, old_spec, "containers")
    _copy_images(munged, old_spec, "initContainers")
    for key in ("activeDeadlineSeconds", "ephemeralContainers"):
        munged.pop(key, None)
        if key in old_spec:
            munged[key] = old_spec[key]
    old_tolerations = old_spec.get("tolerations") or []
    new_tolerations = munged.get("tolerations") or []
    if all(t in new_tolerations for t in old_tolerations):
        munged.pop("tolerations", None)
        if "tolerations" in old_spec:
            munged["tolerations"] = old_spec["tolerations"]
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        munged.pop("terminationGracePeriodSeconds", None)
        if "terminationGracePeriodSeconds" in old_spec:
            munged["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"]
    if munged != old_spec:
        return [forbidden("spec", POD_UPDATE_MESSAGE)]
    return []


def _spec_field(obj: Obj, key: str) -> Any:
    return (obj.get("spec") or {}).get(key)


def _validate_selector_update(new: Obj, old: Obj) -> list[Cause]:
    return _immutable("spec.selector", _spec_field(new, "selector"), _spec_field(old, "selector"))


_STS_MUTABLE = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
}


def _validate_statefulset_update(new: Obj, old: Obj) -> list[Cause]:
    def frozen(o: Obj) -> Obj:
        return {k: v for k, v in (o.get("spec") or {}).items() if k not in _STS_MUTABLE}

    if frozen(new) != frozen(old):
        return [
            forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )
        ]
    return []


def _validate_job_update(new: Obj, old: Obj) -> list[Cause]:
    causes = _validate_selector_update(new, old)
    return causes + _immutable("spec.template", _spec_field(new, "template"), _spec_field(old, "template"))


def _validate_service_update(new: Obj, old: Obj) -> list[Cause]:
    new_ip, old_ip = _spec_field(new, "clusterIP"), _spec_field(old, "clusterIP")
    types = {_spec_field(new, "type"), _spec_field(old, "type")}
    # An empty clusterIP in the update means "keep the allocated one"; ExternalName services have none.
    if new_ip and old_ip and new_ip != old_ip and "ExternalName" not in types:
        return [invalid("spec.clusterIP", new_ip, IMMUTABLE)]
    return []


def _validate_immutable_data(new: Obj, old: Obj) -> list[Cause]:
    if not old.get("immutable"):
        return []
    detail = "field is immutable when `immutable` is set"
    causes: list[Cause] = []
    if new.get("immutable") is not True:
        causes.append(forbidden("immutable", detail))
    for key in ("data", "binaryData"):
        if (new.get(key) or {}) != (old.get(key) or {}):
            causes.append(forbidden(key, detail))
    return causes


def _validate_crd_update(new: Obj, old: Obj) -> list[Cause]:
    return _immutable("spec.scope", _spec_field(new, "scope"), _spec_field(old, "scope"))


def _validate_role_ref_update(new: Obj, old: Obj) -> list[Cause]:
    # Changing what a binding grants must be a delete + create, so it can be authorized as such.
    if new.get("roleRef") != old.get("roleRef"):
        return [invalid("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


def _validate_priorityclass_update(new: Obj, old: Obj) -> list[Cause]:
    if new.get("value") != old.get("value"):
        return [forbidden("value", "may not be changed in an update.")]
    return []


_UPDATE_VALIDATORS: dict[str, Callable[[Obj, Obj], list[Cause]]] = {
    "Pod": _validate_pod_update,
    "Deployment": _validate_selector_update,
    "ReplicaSet": _validate_selector_update,
    "DaemonSet": _validate_selector_update,
    "StatefulSet": _validate_statefulset_update,
    "Job": _validate_job_update,
    "Service": _validate_service_update,
    "Secret": _validate_immutable_data,
    "ConfigMap": _validate_immutable_data,
    "CustomResourceDefinition": _validate_crd_update,
    "RoleBinding": _validate_role_ref_update,
    "ClusterRoleBinding": _validate_role_ref_update,
    "PriorityClass": _validate_priorityclass_update,
}


def validate_update(info: ResourceInfo, new: Obj, old: Obj) -> list[Cause]:
    """validate_create(new) plus the fields that may not change between `old` and `new`."""
    causes = validate_create(info, new)
    causes += _validate_metadata_update(new, old)
    checker = None if info.crd else _UPDATE_VALIDATORS.get(info.kind)
    if checker is not None:
        causes += checker(new, old)
    return causes
