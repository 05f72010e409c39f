"""Object lifecycle rules shared by every write: metadata stamping, generation, status, deletion."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from typing import Any

from .crds import accept as accept_crd
from .errors import ApiError, bad_request, invalid
from .resources import ResourceInfo

Obj = dict[str, Any]

# Kubernetes' alphabet for generateName suffixes: no vowels (no words), no look-alike digits.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Resources whose status a client may set on create (nodes register with their status).
CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
_KEEP_STATUS_ON_CREATE = frozenset({"nodes", "events", "leases.coordination.k8s.io"})


_stamp: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current second in RFC 3339 (formatted once per second: it is stamped on every write)."""
    global _stamp
    sec = int(time.time())
    if _stamp[0] != sec:
        _stamp = (sec, dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp[1]


def generate_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def spec_part(obj: Obj) -> Obj:
    """Everything generation tracks: the object without metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def check_identity(info: ResourceInfo, obj: Obj, namespace: str, name: str | None) -> None:
    """The body must be this resource's kind, in the URL's namespace, with the URL's name."""
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON or YAML object")
    kind = obj.get("kind")
    if kind and kind != info.kind:
        raise bad_request(
            f"the kind of the provided object ({kind}) does not match the resource ({info.kind})"
        )
    av = obj.get("apiVersion")
    if av and av != info.api_version:
        raise bad_request(f"the apiVersion {av} does not match the request ({info.api_version})")
    md = obj.get("metadata")
    if md is None:
        md = obj["metadata"] = {}
    if not isinstance(md, dict):
        raise bad_request("metadata must be an object")
    body_ns = md.get("namespace")
    if info.namespaced:
        if body_ns and body_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
    if name is not None and md.get("name") and md["name"] != name:
        raise bad_request("the name of the object does not match the name on the URL")


def prepare_create(info: ResourceInfo, obj: Obj, namespace: str) -> Obj:
    # Defaulting and validation are write-path only: a read-only server never loads them.
    from . import defaults, schema, validation

    md = obj["metadata"]
    if not md.get("name"):
        if md.get("generateName"):
            md["name"] = generate_name(str(md["generateName"]))
        else:
            raise invalid(
                info,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value: name or generateName is required",
                        "field": "metadata.name",
                    }
                ],
            )
    if info.namespaced:
        md["namespace"] = namespace
    else:
        md.pop("namespace", None)
    for f in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
        md.pop(f, None)
    md["uid"] = str(uuid.uuid4())
    md["creationTimestamp"] = now_rfc3339()
    if info.has_generation:
        md["generation"] = 1
    else:
        md.pop("generation", None)
    obj["apiVersion"] = info.api_version
    obj["kind"] = info.kind
    if info.has_status and info.key not in _KEEP_STATUS_ON_CREATE:
        obj.pop("status", None)
    defaults.apply_defaults(info.kind, obj)
    if info.key == CRD_KEY:
        accept_crd(obj)
    # Custom resources: structural pruning, schema defaults and OpenAPI validation (no-op otherwise).
    _, schema_causes, _ = schema.prune_default_validate(info, obj)
    causes = validation.validate_create(info, obj) + schema_causes
    if causes:
        raise invalid(info, md["name"], causes)
    return obj


def prepare_update(info: ResourceInfo, new: Obj, cur: Obj, subresource: str = "") -> Obj:
    """Merge the request's object with what only the server may set; validate; bump generation."""
    # Defaulting and validation are write-path only: a read-only server never loads them.
    from . import defaults, schema, validation

    nmd, cmd = new.setdefault("metadata", {}), cur["metadata"]
    for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"):
        if f in cmd:
            nmd[f] = cmd[f]
        else:
            nmd.pop(f, None)
    nmd["name"] = cmd["name"]
    new["apiVersion"] = info.api_version
    new["kind"] = info.kind
    if subresource == "status":
        # A status write changes status only (labels/annotations included in upstream; keep it simple).
        merged = dict(cur)
        if "status" in new:
            merged["status"] = new["status"]
        else:
            merged.pop("status", None)
        merged["metadata"] = dict(cmd)
        new = merged
    elif info.has_status:
        if "status" in cur:
            new["status"] = cur["status"]
        else:
            new.pop("status", None)
    if info.key == "services":
        _keep_allocations(new, cur)
    defaults.apply_defaults(info.kind, new)
    if info.key == CRD_KEY:
        accept_crd(new)
    _, schema_causes, _ = schema.prune_default_validate(info, new)
    causes = validation.validate_update(info, new, cur) + schema_causes
    if causes:
        raise invalid(info, cmd["name"], causes)
    if info.has_generation:
        gen = int(cmd.get("generation") or 1)
        if spec_part(new) != spec_part(cur):
            gen += 1
        new["metadata"]["generation"] = gen
    return new


def _keep_allocations(new: Obj, cur: Obj) -> None:
    # Like kube-apiserver: an update that leaves allocated values unspecified keeps them.
    ns, cs = new.setdefault("spec", {}), cur.get("spec") or {}
    if isinstance(ns, dict):
        for f in ("clusterIP", "clusterIPs"):
            if not ns.get(f) and cs.get(f):
                ns[f] = cs[f]
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in cs.get("ports") or ()}
        for p in ns.get("ports") or ():
            old = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if (
                old
                and old.get("nodePort")
                and not p.get("nodePort")
                and ns.get("type")
                in (
                    "NodePort",
                    "LoadBalancer",
                )
            ):
                p["nodePort"] = old["nodePort"]


def unchanged(new: Obj, cur: Obj) -> bool:
    """True when a write would change nothing but the resourceVersion (so it is skipped)."""
    a = dict(new)
    b = dict(cur)
    a["metadata"] = {k: v for k, v in (new.get("metadata") or {}).items() if k != "resourceVersion"}
    b["metadata"] = {k: v for k, v in (cur.get("metadata") or {}).items() if k != "resourceVersion"}
    return a == b


def check_precondition(info: ResourceInfo, new: Obj, cur: Obj) -> None:
    want = (new.get("metadata") or {}).get("resourceVersion")
    have = cur["metadata"].get("resourceVersion")
    if want and want != have:
        from .errors import conflict

        raise conflict(
            info,
            cur["metadata"]["name"],
            "the object has been modified; please apply your changes to the latest version and try again",
        )


def ready_to_vanish(obj: Obj) -> bool:
    """A deleting object with no finalizers left goes away (pods wait for their node's grace 0)."""
    md = obj.get("metadata") or {}
    if not md.get("deletionTimestamp") or md.get("finalizers"):
        return False
    if obj.get("kind") == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
        return False
    if obj.get("kind") == "Pod":
        return int(md.get("deletionGracePeriodSeconds") or 0) == 0
    return True


def require_dict(value: Any, what: str) -> Obj:
    if not isinstance(value, dict):
        raise ApiError(400, "BadRequest", f"{what} must be an object")
    return value
