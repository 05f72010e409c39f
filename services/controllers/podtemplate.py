"""Pure helpers for controllers that make pods from a template: selector matching, pod readiness and
availability, building a Pod from a template with a controller ownerReference, and the stable
pod-template hash used to name ReplicaSets. No I/O here, so it is unit-testable and reusable."""

from __future__ import annotations

import copy
import datetime as dt
import struct
from typing import Any

import orjson

from kubeedge.kube import Obj

from .framework import controller_of

# Informer index of objects by the uid of their controlling owner.
OWNER_UID_INDEX = "podtemplate/controller-uid"
# Informer index of namespaced objects without a controller (adoption candidates), by namespace.
ORPHAN_NS_INDEX = "podtemplate/orphan-namespace"

# upstream rand.SafeEncodeString: no vowels (no words), no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def owner_uid_index(obj: Obj) -> list[str]:
    ref = controller_of(obj)
    return [str(ref["uid"])] if ref and ref.get("uid") else []


def orphan_namespace_index(obj: Obj) -> list[str]:
    if controller_of(obj) is not None:
        return []
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


# ---- selectors ----------------------------------------------------------------------------------


def _requirement_matches(req: Obj, labels: dict[str, str]) -> bool:
    key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """A metav1.LabelSelector against labels. A missing or empty selector selects nothing here:
    workload controllers must never claim every object of a namespace."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(_requirement_matches(r, labels) for r in selector.get("matchExpressions") or ())


def selector_string(selector: Obj | None) -> str | None:
    """A metav1.LabelSelector as a labelSelector query string; None for one that matches nothing."""
    if not selector:
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for req in selector.get("matchExpressions") or ():
        key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            return None
    return ",".join(parts) or None


def labels_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def annotations_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


# ---- time and pod state -------------------------------------------------------------------------


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def is_terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_active(pod: Obj) -> bool:
    """Counts towards a controller's replicas: not finished and not being deleted."""
    return pod_phase(pod) not in ("Succeeded", "Failed") and not is_terminating(pod)


def ready_condition(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return dict(c)
    return None


def is_ready(pod: Obj) -> bool:
    c = ready_condition(pod)
    return c is not None and c.get("status") == "True"


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> float | None:
    """0 if the pod is available now, the seconds left if it is ready but not for long enough, None
    if it is not ready (upstream podutil.IsPodAvailable)."""
    c = ready_condition(pod)
    if c is None or c.get("status") != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = parse_time(c.get("lastTransitionTime"))
    if since is None:
        return None  # upstream: a zero transition time is never "ready long enough"
    left = min_ready_seconds - (now - since).total_seconds()
    return 0.0 if left < 0 else max(left, 0.001)


def is_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> bool:
    return seconds_until_available(pod, min_ready_seconds, now) == 0.0


# ---- pods from templates ------------------------------------------------------------------------


def controller_ref(owner: Obj, api_version: str, kind: str) -> Obj:
    """The ownerReference a controller puts on what it creates (blocks the owner's foreground
    deletion until the dependent is gone, as upstream)."""
    md = owner.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_from_template(template: Obj, owner_ref: Obj, generate_name: str, namespace: str) -> Obj:
    """A Pod manifest from a pod template (labels, annotations, finalizers, spec), controlled by
    `owner_ref`, named by the server from `generate_name` (upstream controller.GetPodFromTemplate)."""
    tmd = template.get("metadata") or {}
    md: Obj = {"generateName": generate_name, "namespace": namespace, "ownerReferences": [dict(owner_ref)]}
    for field in ("labels", "annotations"):
        if tmd.get(field):
            md[field] = dict(tmd[field])
    if tmd.get("finalizers"):
        md["finalizers"] = list(tmd["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def generate_name_prefix(owner_name: str) -> str:
    # The server appends 5 random characters; a name must stay a valid DNS subdomain (upstream
    # getPodsPrefix drops the dash when the prefix would be too long).
    prefix = f"{owner_name}-"
    return prefix if len(prefix) <= 253 - 5 else owner_name


# ---- template hashing and comparison ------------------------------------------------------------


def semantic(value: Any) -> Any:
    """The value with nulls, empty maps and empty lists dropped, so two templates that upstream's
    semantic equality treats as equal (nil vs empty) also compare and hash equal here."""
    if isinstance(value, dict):
        out = {k: semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [semantic(v) for v in value]
    return value


def without_label(template: Obj, key: str) -> Obj:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(key, None)
    return t


def templates_equal_ignoring(a: Obj, b: Obj, label_key: str) -> bool:
    """Equality of two pod templates ignoring one label (upstream EqualIgnoreHash)."""
    return semantic(without_label(a, label_key)) == semantic(without_label(b, label_key))


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """upstream rand.SafeEncodeString: each byte mapped into a vowel-free alphabet."""
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in s.encode())


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """A short name-safe hash of a pod template, stable across processes and restarts: FNV-1a 32 of
    the canonical JSON (sorted keys, empties dropped), then the collision count as upstream appends
    it, printed in decimal and safe-encoded (like upstream's "7d9c8b6f5")."""
    data = orjson.dumps(semantic(template), option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        data += struct.pack("<I", collision_count & 0xFFFFFFFF)
    return safe_encode(str(fnv32a(data)))


# ---- ordering -----------------------------------------------------------------------------------


def creation_key(obj: Obj) -> tuple[str, str]:
    """Oldest first; ties by name (upstream ...ByCreationTimestamp). RFC 3339 UTC strings sort
    chronologically as text."""
    md = obj.get("metadata") or {}
    return (str(md.get("creationTimestamp") or ""), str(md.get("name") or ""))
