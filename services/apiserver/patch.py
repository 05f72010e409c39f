"""The PATCH engine of the API server: JSON patch, JSON merge patch, strategic merge patch and
server-side apply, plus managedFields bookkeeping. Everything here is a pure function over JSON-like
values (dicts, lists, scalars); the HTTP layer does the I/O.

Strategic merge patch needs per-field knowledge that upstream takes from Go struct tags
(`patchStrategy`, `patchMergeKey`); here it is a table of dotted field paths per built-in kind.
Server-side apply reuses the same table to decide which lists are associative (merged by key), which
are sets, and which are atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from kubeedge.apiserver.resources import Obj

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_YAML = "application/apply-patch+yaml"
APPLY_CBOR = "application/apply-patch+cbor"

# Kubernetes refuses more JSON patch operations than this in one request.
MAX_JSON_PATCH_OPERATIONS = 10000

__all__ = [
    "APPLY_CBOR",
    "APPLY_YAML",
    "JSON_PATCH",
    "MERGE",
    "STRATEGIC",
    "PatchError",
    "apply_patch",
    "decode_apply_body",
    "json_merge_patch",
    "json_patch",
    "patch_types_for",
    "server_side_apply",
    "strategic_merge_patch",
    "update_managed_fields",
]


class PatchError(Exception):
    """A patch that cannot be applied.

    `code` is the HTTP status (400 bad body, 409 conflict, 413 too large, 415 unsupported media type,
    422 invalid result), `reason` the matching Kubernetes StatusReason and `causes` a list of
    `{"reason", "message", "field"}` dicts for the Status details.
    """

    def __init__(self, code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes: list[dict[str, str]] = causes or []


def _bad_request(message: str) -> PatchError:
    return PatchError(400, "BadRequest", message)


def _invalid(message: str) -> PatchError:
    return PatchError(422, "Invalid", message)


# --------------------------------------------------------------------------------------------------
# JSON value helpers


def _clone(v: Any) -> Any:
    # Much faster than copy.deepcopy for plain JSON trees, which is all we ever handle.
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    return v


def _json_equal(a: Any, b: Any) -> bool:
    """Equality with JSON semantics: 1 == 1.0, but True != 1 (Python conflates bool and int)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return False
        return all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        return all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _hkey(v: Any) -> str:
    """A hashable identity for a JSON value (merge-key values, set members)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


# --------------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch. Returns a new value; neither argument is modified."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result: dict[str, Any] = _clone(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = json_merge_patch(result.get(k), v)
    return result


# --------------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)


def _parse_pointer(pointer: Any, what: str) -> list[str]:
    if not isinstance(pointer, str):
        raise _invalid(f"{what} must be a JSON pointer string, got {_type_name(pointer)}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _invalid(f"invalid JSON pointer {pointer!r}: must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for t in tokens:
        # A '~' not followed by 0 or 1 is malformed per RFC 6901.
        stripped = t.replace("~0", "").replace("~1", "")
        if "~" in stripped:
            raise _invalid(f"invalid JSON pointer {pointer!r}: bad escape in {t!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _array_index(token: str, length: int, pointer: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise _invalid(f"invalid array index {token!r} in path {pointer!r}")
    idx = int(token)
    limit = length if allow_end else length - 1
    if idx > limit:
        raise _invalid(f"array index {idx} out of bounds (length {length}) in path {pointer!r}")
    return idx


def _walk(doc: Any, tokens: list[str], pointer: str) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise _invalid(f"path {pointer!r} not found: missing key {t!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_array_index(t, len(cur), pointer, allow_end=False)]
        else:
            raise _invalid(f"path {pointer!r} not found: cannot index into {_type_name(cur)}")
    return cur


class _Doc:
    """The document under JSON patch; a holder so that operations on path "" can replace the root."""

    def __init__(self, root: Any):
        self.root = root

    def get(self, tokens: list[str], pointer: str) -> Any:
        return _walk(self.root, tokens, pointer)

    def add(self, tokens: list[str], value: Any, pointer: str) -> None:
        if not tokens:
            self.root = value
            return
        parent = _walk(self.root, tokens[:-1], pointer)
        last = tokens[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list):
            parent.insert(_array_index(last, len(parent), pointer, allow_end=True), value)
        else:
            raise _invalid(f"cannot add at {pointer!r}: parent is {_type_name(parent)}")

    def remove(self, tokens: list[str], pointer: str) -> Any:
        if not tokens:
            raise _invalid("cannot remove the whole document")
        parent = _walk(self.root, tokens[:-1], pointer)
        last = tokens[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise _invalid(f"cannot remove {pointer!r}: missing key {last!r}")
            return parent.pop(last)
        if isinstance(parent, list):
            return parent.pop(_array_index(last, len(parent), pointer, allow_end=False))
        raise _invalid(f"cannot remove {pointer!r}: parent is {_type_name(parent)}")

    def replace(self, tokens: list[str], value: Any, pointer: str) -> None:
        if not tokens:
            self.root = value
            return
        parent = _walk(self.root, tokens[:-1], pointer)
        last = tokens[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise _invalid(f"cannot replace {pointer!r}: missing key {last!r}")
            parent[last] = value
        elif isinstance(parent, list):
            parent[_array_index(last, len(parent), pointer, allow_end=False)] = value
        else:
            raise _invalid(f"cannot replace {pointer!r}: parent is {_type_name(parent)}")


_MISSING: Any = object()


def _op_value(op: Mapping[str, Any], i: int) -> Any:
    if "value" not in op:
        raise _invalid(f"operation {i} ({op.get('op')}) is missing 'value'")
    return _clone(op["value"])


def json_patch(target: Obj, ops: Any) -> Obj:
    """Apply an RFC 6902 JSON patch to a copy of `target`.

    A body that is not a list of objects is a 400 (like Kubernetes' decode step); an operation that
    cannot be applied (missing path, failed test, unknown op) is a 422.
    """
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise _bad_request("a JSON patch must be a JSON array of operation objects")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            413,
            "RequestEntityTooLarge",
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}",
        )
    doc = _Doc(_clone(target))
    for i, op in enumerate(ops):
        kind = op.get("op")
        if "path" not in op:
            raise _invalid(f"operation {i} ({kind}) is missing 'path'")
        pointer = op["path"]
        path = _parse_pointer(pointer, "path")
        if kind == "add":
            doc.add(path, _op_value(op, i), pointer)
        elif kind == "remove":
            doc.remove(path, pointer)
        elif kind == "replace":
            doc.replace(path, _op_value(op, i), pointer)
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise _invalid(f"operation {i} ({kind}) is missing 'from'")
            src = _parse_pointer(op["from"], "from")
            if kind == "move":
                if src == path:
                    continue
                if path[: len(src)] == src:
                    raise _invalid(f"cannot move {op['from']!r} into its own child {pointer!r}")
                doc.add(path, doc.remove(src, op["from"]), pointer)
            else:
                doc.add(path, _clone(doc.get(src, op["from"])), pointer)
        elif kind == "test":
            expected = op["value"] if "value" in op else _MISSING
            if expected is _MISSING:
                raise _invalid(f"operation {i} (test) is missing 'value'")
            actual = doc.get(path, pointer)
            if not _json_equal(actual, expected):
                raise _invalid(
                    f"testing value {pointer} failed: expected {json.dumps(expected)}, "
                    f"found {json.dumps(actual)}"
                )
        else:
            raise _invalid(f"operation {i}: unknown or missing op {kind!r}")
    if not isinstance(doc.root, dict):
        raise _invalid(f"the patched document must be a JSON object, got {_type_name(doc.root)}")
    return doc.root


# --------------------------------------------------------------------------------------------------
# Field metadata of the built-in types.
#
# Keys are dotted field paths (list positions are not part of the path). Values:
#   "merge:<key>"          patchStrategy merge, patchMergeKey <key>  (list of objects)
#   "merge"                patchStrategy merge on a list of scalars  (set union)
#   "merge,retainKeys:<k>" as merge:<k>; elements honour $retainKeys (schema-independent here)
#   "retainKeys"           an object field whose patches carry $retainKeys
# Lists not listed are replaced wholesale (atomic). Tags follow k8s.io/api core/v1, apps/v1, batch/v1.


@dataclass(frozen=True)
class _Field:
    merge: bool
    key: str | None
    # Server-side apply: None -> atomic list, () -> set of scalars, else the list-map keys.
    ssa_keys: tuple[str, ...] | None


def _field(spec: str, ssa: tuple[str, ...] | str | None = "") -> _Field:
    strategy, _, key = spec.partition(":")
    merge = "merge" in strategy.split(",")
    if ssa == "":
        keys: tuple[str, ...] | None = (key,) if key else (() if merge else None)
    elif ssa == "atomic":
        keys = None
    else:
        keys = ssa if isinstance(ssa, tuple) else None
    return _Field(merge=merge, key=key or None, ssa_keys=keys)


_OBJECT_META: dict[str, _Field] = {
    "finalizers": _field("merge"),
    "ownerReferences": _field("merge:uid"),
}

_CONTAINER: dict[str, _Field] = {
    # SSA keys ports by (containerPort, protocol): the same port may be exposed over TCP and UDP.
    "ports": _field("merge:containerPort", ("containerPort", "protocol")),
    "env": _field("merge:name"),
    "volumeMounts": _field("merge:mountPath"),
    "volumeDevices": _field("merge:devicePath"),
    # envFrom, resizePolicy, command, args: no strategy -> atomic.
}

_POD_SPEC: dict[str, _Field] = {
    "volumes": _field("merge,retainKeys:name"),
    "containers": _field("merge:name"),
    "initContainers": _field("merge:name"),
    "ephemeralContainers": _field("merge:name"),
    "imagePullSecrets": _field("merge:name"),
    "hostAliases": _field("merge:ip"),
    "topologySpreadConstraints": _field("merge:topologyKey", ("topologyKey", "whenUnsatisfiable")),
    "schedulingGates": _field("merge:name"),
    "resourceClaims": _field("merge,retainKeys:name"),
    # tolerations, readinessGates: no strategy -> atomic.
}
for _c in ("containers", "initContainers", "ephemeralContainers"):
    _POD_SPEC.update({f"{_c}.{k}": v for k, v in _CONTAINER.items()})

_POD_STATUS: dict[str, _Field] = {
    "conditions": _field("merge:type"),
    "podIPs": _field("merge:ip"),
    "hostIPs": _field("merge:ip"),
    "resourceClaimStatuses": _field("merge,retainKeys:name"),
    # containerStatuses & co: no strategy -> atomic.
}

_CONDITIONS: dict[str, _Field] = {"conditions": _field("merge:type")}


def _prefixed(prefix: str, table: Mapping[str, _Field]) -> dict[str, _Field]:
    return {f"{prefix}.{k}": v for k, v in table.items()}


def _pod_template(prefix: str) -> dict[str, _Field]:
    return {**_prefixed(f"{prefix}.metadata", _OBJECT_META), **_prefixed(f"{prefix}.spec", _POD_SPEC)}


def _kind_table(*parts: Mapping[str, _Field]) -> dict[str, _Field]:
    out: dict[str, _Field] = _prefixed("metadata", _OBJECT_META)
    for p in parts:
        out.update(p)
    return out


_WORKLOAD_STATUS = _prefixed("status", _CONDITIONS)

_TABLES: dict[str, dict[str, _Field]] = {
    "Pod": _kind_table(_prefixed("spec", _POD_SPEC), _prefixed("status", _POD_STATUS)),
    "PodTemplate": _kind_table(_pod_template("template")),
    "Deployment": _kind_table(
        _pod_template("spec.template"), _WORKLOAD_STATUS, {"spec.strategy": _field("retainKeys")}
    ),
    "ReplicaSet": _kind_table(_pod_template("spec.template"), _WORKLOAD_STATUS),
    "DaemonSet": _kind_table(_pod_template("spec.template"), _WORKLOAD_STATUS),
    "StatefulSet": _kind_table(
        _pod_template("spec.template"),
        _WORKLOAD_STATUS,
        _prefixed("spec.volumeClaimTemplates.metadata", _OBJECT_META),
    ),
    # Job conditions are patch-merged by type but declared listType=atomic for apply.
    "Job": _kind_table(_pod_template("spec.template"), {"status.conditions": _field("merge:type", "atomic")}),
    "CronJob": _kind_table(_pod_template("spec.jobTemplate.spec.template")),
    "Service": _kind_table({"spec.ports": _field("merge:port", ("port", "protocol"))}, _WORKLOAD_STATUS),
    "Node": _kind_table(
        {
            "spec.podCIDRs": _field("merge"),
            # taints: no strategy -> replaced.
            "status.conditions": _field("merge:type"),
            "status.addresses": _field("merge:type"),
        }
    ),
    "Namespace": _kind_table(_WORKLOAD_STATUS),
    "PersistentVolumeClaim": _kind_table(_WORKLOAD_STATUS),
    "ServiceAccount": _kind_table({"secrets": _field("merge:name")}),
    # No merge lists beyond ObjectMeta: Endpoints.subsets, EndpointSlice.endpoints/ports are atomic.
    "ConfigMap": _kind_table(),
    "Secret": _kind_table(),
    "Endpoints": _kind_table(),
    "EndpointSlice": _kind_table(),
    "Event": _kind_table(),
    "Lease": _kind_table(),
    "ControllerRevision": _kind_table(),
    "CustomResourceDefinition": _kind_table(),
}

# SSA list-map key fields that may be omitted and then take the API default.
_KEY_DEFAULTS: dict[str, Any] = {"protocol": "TCP"}


def _table(kind: str) -> dict[str, _Field]:
    # Unknown kinds (custom resources) still get ObjectMeta's strategies.
    return _TABLES.get(kind) or _TABLES["ConfigMap"]


def patch_types_for(builtin: bool) -> list[str]:
    """The PATCH content types the server accepts for a resource, in Kubernetes' order."""
    if builtin:
        return [JSON_PATCH, MERGE, STRATEGIC, APPLY_YAML]
    return [JSON_PATCH, MERGE, APPLY_YAML]


# --------------------------------------------------------------------------------------------------
# Strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


class _Strategic:
    def __init__(self, table: Mapping[str, _Field], allow_dollar_keys: bool):
        self.table = table
        # CRD schemas legitimately contain "$ref"/"$schema" keys, so only there are unknown
        # "$" keys treated as data.
        self.allow_dollar_keys = allow_dollar_keys

    def field(self, names: tuple[str, ...]) -> _Field | None:
        return self.table.get(".".join(names))

    def value(self, original: Any, patch: Any, names: tuple[str, ...]) -> Any:
        """Merge one patch value into the original value (which may be _MISSING)."""
        if isinstance(patch, dict):
            return self.map(original if isinstance(original, dict) else None, patch, names)
        if isinstance(patch, list):
            return self.list(original if isinstance(original, list) else [], patch, names)
        return patch

    def map(
        self, original: dict[str, Any] | None, patch: dict[str, Any], names: tuple[str, ...]
    ) -> dict[str, Any]:
        patch = dict(patch)
        if _DIRECTIVE in patch:
            directive = patch.pop(_DIRECTIVE)
            if directive == "replace":
                return self.map(None, patch, names)
            if directive == "delete":
                # Upstream leaves an empty object behind rather than removing the key.
                return {}
            if directive != "merge":
                raise _bad_request(f"Unknown patch type: {directive!r} in map: {_hkey(patch)}")
        out: dict[str, Any] = original if original is not None else {}

        if _RETAIN_KEYS in patch:
            retain = patch.pop(_RETAIN_KEYS)
            if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
                raise _bad_request("invalid patch: $retainKeys must be a list of strings")
            keep = set(retain)
            for k, v in patch.items():
                if v is None or k.startswith((_SET_ORDER, _DELETE_PRIMITIVE)):
                    continue
                if k not in keep:
                    raise _bad_request(
                        f"doesn't satisfy retainKeys directive: field {k!r} is in the patch "
                        f"but not in $retainKeys {retain}"
                    )
            for k in list(out):
                if k not in keep:
                    del out[k]

        orders: dict[str, Any] = {}
        deletions: dict[str, Any] = {}
        regular: dict[str, Any] = {}
        for k, v in patch.items():
            if k.startswith(_SET_ORDER):
                orders[k[len(_SET_ORDER) :]] = v
            elif k.startswith(_DELETE_PRIMITIVE):
                deletions[k[len(_DELETE_PRIMITIVE) :]] = v
            elif k.startswith("$") and not self.allow_dollar_keys:
                raise _bad_request(f"unknown strategic merge patch directive {k!r}")
            else:
                regular[k] = v

        for k, drop in deletions.items():
            if not isinstance(drop, list):
                raise _bad_request(f"invalid patch: {_DELETE_PRIMITIVE}{k} must be a list")
            current = out.get(k)
            if isinstance(current, list):
                out[k] = [x for x in current if not any(_json_equal(x, d) for d in drop)]

        for k, v in regular.items():
            if v is None:
                out.pop(k, None)
                continue
            if k in orders:
                continue
            out[k] = self.value(out.get(k, _MISSING), v, (*names, k))

        for k, order in orders.items():
            if not isinstance(order, list):
                raise _bad_request(f"invalid patch: {_SET_ORDER}{k} must be a list")
            plist = regular.get(k)
            if plist is not None and not isinstance(plist, list):
                raise _bad_request(f"invalid patch: {_SET_ORDER}{k} given for non-list field {k!r}")
            current = out.get(k)
            if current is None and plist is None:
                continue
            out[k] = self.list(current if isinstance(current, list) else [], plist or [], (*names, k), order)
        return out

    def list(
        self, original: list[Any], patch: list[Any], names: tuple[str, ...], order: list[Any] | None = None
    ) -> list[Any]:
        meta = self.field(names)
        if meta is None or not meta.merge:
            # Replace strategy: list-level directives are meaningless here, drop them.
            result = [
                self.value(_MISSING, e, names) for e in patch if not (isinstance(e, dict) and _DIRECTIVE in e)
            ]
            if order is not None:
                key = meta.key if meta else None
                result = _normalize_order(result, order, original, key)
            return result
        key = meta.key
        replace = False
        items: list[Any] = []
        for e in patch:
            if isinstance(e, dict) and _DIRECTIVE in e:
                directive = e[_DIRECTIVE]
                if directive == "delete":
                    if key is None or key not in e:
                        raise _bad_request(f"map: {_hkey(e)} does not contain declared merge key: {key}")
                    original = [
                        o for o in original if not (isinstance(o, dict) and _json_equal(o.get(key), e[key]))
                    ]
                elif directive == "replace":
                    replace = True
                elif directive == "merge":
                    pass  # the default for this list anyway
                else:
                    raise _bad_request(f"Unknown patch type: {directive!r} in list element {_hkey(e)}")
            else:
                items.append(e)
        if replace:
            return [self.value(_MISSING, e, names) for e in items]

        merged: list[Any]
        if key is None:
            if any(isinstance(e, dict | list) for e in items):
                raise _bad_request(f"cannot merge lists without merge key for {'.'.join(names)}")
            merged = []
            for x in [*original, *items]:
                if not any(_json_equal(x, y) for y in merged):
                    merged.append(x)
        else:
            merged = list(original)
            positions = {_hkey(o.get(key)): i for i, o in enumerate(merged) if isinstance(o, dict)}
            for e in items:
                if not isinstance(e, dict) or key not in e:
                    raise _bad_request(f"map: {_hkey(e)} does not contain declared merge key: {key}")
                h = _hkey(e[key])
                if h in positions:
                    merged[positions[h]] = self.map(merged[positions[h]], e, names)
                else:
                    positions[h] = len(merged)
                    merged.append(self.map(None, e, names))
        if order is not None:
            _check_order(items, order, key)
        return _normalize_order(merged, order if order is not None else items, original, key)


def _check_order(items: list[Any], order: list[Any], key: str | None) -> None:
    """The patch list must be a subsequence of its $setElementOrder list (upstream rule)."""

    def ident(x: Any) -> str:
        if key is not None:
            if not isinstance(x, dict) or key not in x:
                raise _bad_request(f"$setElementOrder item {_hkey(x)} does not contain merge key {key}")
            return _hkey(x[key])
        return _hkey(x)

    wanted = [ident(o) for o in order]
    pos = 0
    for it in items:
        h = ident(it)
        while pos < len(wanted) and wanted[pos] != h:
            pos += 1
        if pos == len(wanted):
            raise _bad_request(
                f"invalid patch: the order in the patch list {_hkey(items)} doesn't match the "
                f"$setElementOrder list {_hkey(order)}"
            )
        pos += 1


def _normalize_order(merged: list[Any], order: list[Any], server: list[Any], key: str | None) -> list[Any]:
    """Upstream's element ordering: items named by the patch (or $setElementOrder) come in that order;
    server-only items keep their server order and are interleaved where the server had them."""

    def ident(x: Any) -> str | None:
        if key is None:
            return None if isinstance(x, dict | list) else _hkey(x)
        return _hkey(x[key]) if isinstance(x, dict) and key in x else None

    order_index: dict[str, int] = {}
    for i, o in enumerate(order):
        h = ident(o)
        if h is not None:
            order_index.setdefault(h, i)
    server_index: dict[str, int] = {}
    for i, s in enumerate(server):
        h = ident(s)
        if h is not None:
            server_index.setdefault(h, i)

    patch_items: list[tuple[int, Any, int | None]] = []
    server_only: list[tuple[int, Any, int | None]] = []
    for x in merged:
        h = ident(x)
        sidx = server_index.get(h) if h is not None else None
        if h is not None and h in order_index:
            patch_items.append((order_index[h], x, sidx))
        else:
            server_only.append((sidx if sidx is not None else -1, x, sidx))
    patch_items.sort(key=lambda t: t[0])
    server_only.sort(key=lambda t: t[0])

    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j][1])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i][1])
            i += 1
        else:
            li, ri = server_only[i][2], patch_items[j][2]
            # Upstream places a server-only item first only when both are known to the server and it
            # came earlier there; new items therefore go before the remaining server-only ones.
            if li is not None and ri is not None and li < ri:
                out.append(server_only[i][1])
                i += 1
            else:
                out.append(patch_items[j][1])
                j += 1
    return out


def strategic_merge_patch(target: Obj, patch: Obj, kind: str) -> Obj:
    """Apply a strategic merge patch to a copy of `target`, using the field table of `kind`."""
    if not isinstance(patch, dict):
        raise _bad_request("a strategic merge patch must be a JSON object")
    smp = _Strategic(_table(kind), allow_dollar_keys=kind == "CustomResourceDefinition")
    result: Obj = smp.map(_clone(target), patch, ())
    return result


# --------------------------------------------------------------------------------------------------
# Body decoding and dispatch


def _decode_json(body: bytes | str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    try:
        return json.loads(body, parse_constant=reject)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad_request(f"error decoding patch: {e}") from None


class _ApplyLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it: timestamps stay strings (PyYAML would build datetimes)."""


_ApplyLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _stringify_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {
            (k if isinstance(k, str) else json.dumps(k) if isinstance(k, bool) or k is None else str(k)): (
                _stringify_keys(x)
            )
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [_stringify_keys(x) for x in v]
    if isinstance(v, bytes):
        raise _bad_request("binary values are not allowed in an apply patch")
    return v


def decode_apply_body(body: bytes | str) -> Obj:
    """Decode an application/apply-patch+yaml body (YAML, or JSON which YAML contains)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as e:
        raise _bad_request(f"error decoding patch: {e}") from None
    stripped = text.lstrip()
    value: Any
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = _MISSING
    else:
        value = _MISSING
    if value is _MISSING:
        try:
            value = yaml.load(text, Loader=_ApplyLoader)
        except yaml.YAMLError as e:
            raise _bad_request(f"error decoding YAML: {e}") from None
    value = _stringify_keys(value)
    if not isinstance(value, dict):
        raise _bad_request(f"an apply patch must be an object, got {_type_name(value)}")
    return value


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def apply_patch(
    content_type: str,
    current: Obj | None,
    body: bytes,
    kind: str,
    builtin: bool,
    *,
    manager: str = "",
    force: bool = False,
    now: str = "",
) -> Obj:
    """Apply a PATCH request body to `current` according to its content type. Never mutates `current`.

    Apply patches (server-side apply) additionally need `manager` (the fieldManager query parameter),
    `force` and `now`; `current` may then be None (apply creates the object).
    """
    media = _media_type(content_type)
    accepted = patch_types_for(builtin)
    if media not in accepted:
        raise PatchError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(accepted),
        )
    if media == APPLY_YAML:
        if not manager:
            raise _bad_request("fieldManager is required for apply requests")
        return server_side_apply(current, decode_apply_body(body), kind, manager, force, now or _now())
    if current is None:
        raise PatchError(404, "NotFound", "the object to patch does not exist")
    patch = _decode_json(body)
    if media == JSON_PATCH:
        return json_patch(current, patch)
    if not isinstance(patch, dict):
        raise _bad_request(f"a {media} body must be a JSON object, got {_type_name(patch)}")
    if media == MERGE:
        result = json_merge_patch(current, patch)
        assert isinstance(result, dict)
        return result
    return strategic_merge_patch(current, patch, kind)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------
# Field sets (managedFields' FieldsV1).
#
# A path is a tuple of FieldsV1 tokens: 'f:<name>' (object field), 'k:<json>' (associative list item
# by its key fields), 'v:<json>' (set member). A field set is a set of such paths, each a "member".

Path = tuple[str, ...]

# Fields the field manager never tracks (upstream's stripMeta).
_STRIPPED: tuple[Path, ...] = (
    ("f:apiVersion",),
    ("f:kind",),
    ("f:metadata", "f:name"),
    ("f:metadata", "f:namespace"),
    ("f:metadata", "f:creationTimestamp"),
    ("f:metadata", "f:selfLink"),
    ("f:metadata", "f:uid"),
    ("f:metadata", "f:clusterName"),
    ("f:metadata", "f:generation"),
    ("f:metadata", "f:managedFields"),
    ("f:metadata", "f:resourceVersion"),
)
# Top-level objects that always exist on a typed object, so they are never owned by themselves.
_ROOT_OBJECTS: frozenset[Path] = frozenset({("f:metadata",), ("f:spec",), ("f:status",)})


def _strip(paths: set[Path]) -> set[Path]:
    return {p for p in paths if p not in _ROOT_OBJECTS and not any(p[: len(s)] == s for s in _STRIPPED)}


class _Schema:
    """Which lists of a kind are associative / sets for server-side apply."""

    def __init__(self, kind: str):
        self.table = _table(kind)

    def list_keys(self, path: Path) -> tuple[str, ...] | None:
        names = ".".join(t[2:] for t in path if t.startswith("f:"))
        meta = self.table.get(names)
        return meta.ssa_keys if meta else None

    def item_token(self, item: Any, keys: tuple[str, ...]) -> str | None:
        if not isinstance(item, dict):
            return None
        kv: dict[str, Any] = {}
        for k in keys:
            if k in item and item[k] is not None:
                kv[k] = item[k]
            elif k in _KEY_DEFAULTS:
                kv[k] = _KEY_DEFAULTS[k]
        if not kv:
            return None
        return "k:" + _hkey(kv)

    def index(self, items: list[Any], path: Path) -> dict[str, int] | None:
        """Item token -> position for an associative list or set; None when the list is atomic here."""
        keys = self.list_keys(path)
        if keys is None:
            return None
        out: dict[str, int] = {}
        for i, item in enumerate(items):
            if keys:
                tok = self.item_token(item, keys)
            else:
                tok = None if isinstance(item, dict | list) else "v:" + _hkey(item)
            # Unkeyable or duplicate items make the list unusable as a map; treat it as atomic.
            if tok is None or tok in out:
                return None
            out[tok] = i
        return out

    def subtree(self, value: Any, path: Path, out: set[Path], include_self: bool = True) -> None:
        """All paths of `value`, including every intermediate object and list item."""
        if include_self and path:
            out.add(path)
        if isinstance(value, dict):
            for k, v in value.items():
                if v is not None:
                    self.subtree(v, (*path, "f:" + k), out)
        elif isinstance(value, list):
            idx = self.index(value, path)
            if idx is not None:
                for tok, i in idx.items():
                    self.subtree(value[i], (*path, tok), out)

    def leaves(self, value: Any, path: Path, out: set[Path]) -> None:
        """The field set an apply configuration claims: leaves, list items and empty objects."""
        if isinstance(value, dict):
            children = {k: v for k, v in value.items() if v is not None}
            if not children and path:
                out.add(path)
            for k, v in children.items():
                self.leaves(v, (*path, "f:" + k), out)
        elif isinstance(value, list):
            idx = self.index(value, path)
            if idx is None or not value:
                out.add(path)
                return
            for tok, i in idx.items():
                out.add((*path, tok))
                if tok.startswith("k:"):
                    self.leaves(value[i], (*path, tok), out)
        else:
            out.add(path)

    def compare(
        self, old: Any, new: Any, path: Path, added: set[Path], modified: set[Path], removed: set[Path]
    ) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for k in old.keys() | new.keys():
                o, n = old.get(k), new.get(k)
                sub = (*path, "f:" + k)
                if n is None and o is not None:
                    self.subtree(o, sub, removed)
                elif o is None and n is not None:
                    self.subtree(n, sub, added)
                elif o is not None:
                    self.compare(o, n, sub, added, modified, removed)
            return
        if isinstance(old, list) and isinstance(new, list):
            oi, ni = self.index(old, path), self.index(new, path)
            if oi is not None and ni is not None:
                for tok in oi.keys() | ni.keys():
                    sub = (*path, tok)
                    if tok not in ni:
                        self.subtree(old[oi[tok]], sub, removed)
                    elif tok not in oi:
                        self.subtree(new[ni[tok]], sub, added)
                    elif tok.startswith("k:"):
                        self.compare(old[oi[tok]], new[ni[tok]], sub, added, modified, removed)
                return
        if not _json_equal(old, new):
            modified.add(path)
            # A change of shape (e.g. object -> scalar) also drops/creates the nested fields.
            if isinstance(old, dict | list):
                self.subtree(old, path, removed, include_self=False)
            if isinstance(new, dict | list):
                self.subtree(new, path, added, include_self=False)

    # -- applying configurations -------------------------------------------------------------------

    def merge(self, live: Any, config: Any, path: Path) -> Any:
        """Server-side apply merge: objects field by field, associative lists and sets by item."""
        if isinstance(live, dict) and isinstance(config, dict):
            out = dict(live)
            for k, v in config.items():
                if v is None:
                    continue
                sub = (*path, "f:" + k)
                out[k] = self.merge(live[k], v, sub) if k in live else _drop_nulls(v)
            return out
        if isinstance(live, list) and isinstance(config, list):
            li, ci = self.index(live, path), self.index(config, path)
            if li is not None and ci is not None:
                return self._merge_items(live, config, li, ci, path)
        return _drop_nulls(config)

    def _merge_items(
        self, live: list[Any], config: list[Any], li: dict[str, int], ci: dict[str, int], path: Path
    ) -> list[Any]:
        # Live-only items stay where they were relative to the configured ones; configured items
        # follow the configuration's order.
        live_tokens = sorted(li, key=li.__getitem__)
        cfg_tokens = sorted(ci, key=ci.__getitem__)
        out: list[Any] = []
        done: set[str] = set()
        i = j = 0
        while i < len(live_tokens) or j < len(cfg_tokens):
            if i < len(live_tokens) and live_tokens[i] in done:
                i += 1
            elif i < len(live_tokens) and live_tokens[i] not in ci:
                out.append(live[li[live_tokens[i]]])
                done.add(live_tokens[i])
                i += 1
            elif j < len(cfg_tokens):
                tok = cfg_tokens[j]
                item = config[ci[tok]]
                out.append(self.merge(live[li[tok]], item, (*path, tok)) if tok in li else _drop_nulls(item))
                done.add(tok)
                j += 1
            else:
                i += 1
        return out

    def remove(self, obj: Any, path: Path) -> bool:
        """Delete the member at `path` from `obj` in place; also drops objects the removal empties."""
        if not path:
            return False
        parent = self._locate(obj, path[:-1])
        if parent is None:
            return False
        tok = path[-1]
        if tok.startswith("f:") and isinstance(parent, dict):
            if tok[2:] not in parent:
                return False
            del parent[tok[2:]]
        elif isinstance(parent, list):
            idx = self.index(parent, path[:-1])
            if idx is None or tok not in idx:
                return False
            del parent[idx[tok]]
        else:
            return False
        # An object emptied by pruning (e.g. labels after their last key) goes too, like upstream.
        if isinstance(parent, dict) and not parent and len(path) > 2 and path[-2].startswith("f:"):
            self.remove(obj, path[:-1])
        return True

    def _locate(self, obj: Any, path: Path) -> Any:
        cur = obj
        for i, tok in enumerate(path):
            if tok.startswith("f:") and isinstance(cur, dict):
                cur = cur.get(tok[2:])
            elif tok.startswith("k:") and isinstance(cur, list):
                idx = self.index(cur, path[:i])
                if idx is None or tok not in idx:
                    return None
                cur = cur[idx[tok]]
            else:
                return None
            if cur is None:
                return None
        return cur


def _drop_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def _to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    members = set(paths)
    tree: dict[str, Any] = {}
    for p in members:
        node = tree
        for tok in p:
            node = node.setdefault(tok, {})

    def render(node: dict[str, Any], prefix: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # A member that also has children is marked with "." (listed first, as upstream sorts it).
        if node and prefix in members:
            out["."] = {}
        for tok in sorted(node):
            out[tok] = render(node[tok], (*prefix, tok))
        return out

    return render(tree, ())


def _from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    if prefix and (not tree or "." in tree):
        out.add(prefix)
    for tok, sub in tree.items():
        if tok != ".":
            out |= _from_fields_v1(sub, (*prefix, tok))
    return out


def _path_string(path: Path) -> str:
    """Render a path as structured-merge-diff does in conflict messages: .spec.containers[name="c"]."""
    parts: list[str] = []
    for tok in path:
        kind, body = tok[:2], tok[2:]
        if kind == "f:":
            parts.append("." + body)
        elif kind == "k:":
            try:
                kv = json.loads(body)
                parts.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]")
            except ValueError:
                parts.append(f"[{body}]")
        elif kind == "v:":
            parts.append(f"[={body}]")
        else:
            parts.append(f"[{tok}]")
    return "".join(parts)


@dataclass
class _Manager:
    """One managedFields entry with its field set decoded."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[Path]
    subresource: str = ""

    @property
    def ident(self) -> tuple[str, str, str, str]:
        # Upstream identifies appliers by name alone and updaters also by API version.
        version = self.api_version if self.operation != "Apply" else ""
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        s = json.dumps(self.manager)
        if self.subresource:
            s += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            s += f" using {self.api_version}"
        return s

    def entry(self) -> Obj:
        e: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(sorted(self.fields)),
        }
        if self.subresource:
            e["subresource"] = self.subresource
        return e


def _managers_of(obj: Obj | None) -> list[_Manager]:
    if not obj:
        return []
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    out: list[_Manager] = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        out.append(
            _Manager(
                manager=str(e.get("manager") or ""),
                operation=str(e.get("operation") or "Update"),
                api_version=str(e.get("apiVersion") or ""),
                time=str(e.get("time") or ""),
                fields=_from_fields_v1(e.get("fieldsV1") or {}),
                subresource=str(e.get("subresource") or ""),
            )
        )
    return out


def _store_managers(obj: Obj, managers: list[_Manager]) -> None:
    live = sorted(
        (m for m in managers if m.fields),
        key=lambda m: (m.operation, m.time, m.manager, m.api_version, m.subresource),
    )
    meta = obj.setdefault("metadata", {})
    if live:
        meta["managedFields"] = [m.entry() for m in live]
    else:
        meta.pop("managedFields", None)


# Metadata the server owns: an apply configuration cannot change it on an existing object.
_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def _without_managed_fields(obj: Obj) -> Obj:
    out = dict(obj)
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k != "managedFields"}
    return out


def server_side_apply(
    current: Obj | None, applied: Obj, kind: str, manager: str, force: bool, now: str
) -> Obj:
    """Server-side apply of the configuration `applied` by field manager `manager`.

    Returns the new object (a fresh value; `current` is not modified) with metadata.managedFields
    updated. Raises PatchError 409 when the apply would change fields owned by another manager and
    `force` is false.
    """
    if not isinstance(applied, dict):
        raise _bad_request("an apply patch must be an object")
    if not manager:
        raise _bad_request("fieldManager is required for apply requests")
    schema = _Schema(kind)
    config = _without_managed_fields(_drop_nulls(applied))
    api_version = str(config.get("apiVersion") or (current or {}).get("apiVersion") or "")
    applied_set = set[Path]()
    schema.leaves(config, (), applied_set)
    applied_set = _strip(applied_set)
    _validate_config(schema, config, ())

    if current is None:
        result = _clone(config)
        me = _Manager(manager, "Apply", api_version, now, applied_set)
        _store_managers(result, [me])
        return result

    live = _without_managed_fields(_clone(current))
    managers = _managers_of(current)
    if not managers:
        # Upstream attributes everything already on an untracked object to a pseudo-manager, so
        # the first apply cannot silently take over values somebody else set.
        existing: set[Path] = set()
        schema.subtree(live, (), existing, include_self=False)
        existing = _strip(existing)
        if existing:
            managers = [_Manager("before-first-apply", "Update", api_version, now, existing)]

    me_ident = ("Apply", manager)
    mine = next((m for m in managers if (m.operation, m.manager) == me_ident and not m.subresource), None)
    others = [m for m in managers if m is not mine]

    merged = schema.merge(live, config, ())
    # Keep server-owned metadata no matter what the configuration says.
    if isinstance(live.get("metadata"), dict):
        meta = merged.setdefault("metadata", {})
        for k in _SERVER_META:
            if k in live["metadata"]:
                meta[k] = live["metadata"][k]
            else:
                meta.pop(k, None)

    if mine is not None:
        _prune(schema, merged, mine.fields - applied_set, applied_set, others)

    added: set[Path] = set()
    modified: set[Path] = set()
    removed: set[Path] = set()
    schema.compare(live, merged, (), added, modified, removed)
    changed = _strip(added | modified)
    removed = _strip(removed)

    conflicts: list[tuple[_Manager, Path]] = []
    for m in others:
        for p in sorted(m.fields & changed):
            conflicts.append((m, p))
    if conflicts and not force:
        raise _conflict_error(conflicts)

    for m in others:
        m.fields = m.fields - changed - removed
    unchanged = not changed and not removed and mine is not None and mine.fields == applied_set
    if unchanged and current is not None:
        return _clone(current)
    me = _Manager(manager, "Apply", api_version, now, applied_set)
    _store_managers(merged, [*(m for m in others if m.fields), me])
    return merged


def _validate_config(schema: _Schema, value: Any, path: Path) -> None:
    """Associative lists in an apply configuration need their key fields and unique keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            _validate_config(schema, v, (*path, "f:" + k))
    elif isinstance(value, list):
        keys = schema.list_keys(path)
        seen: set[str] = set()
        for i, item in enumerate(value):
            if keys:
                tok = schema.item_token(item, keys)
                if tok is None or not all(k in item or k in _KEY_DEFAULTS for k in keys):
                    missing = [k for k in keys if not isinstance(item, dict) or k not in item]
                    raise _invalid(
                        f"{_path_string(path)}: element {i}: associative list with keys has an element "
                        f"that omits key field {json.dumps(missing[0] if missing else keys[0])}"
                    )
                if tok in seen:
                    raise _invalid(f"{_path_string(path)}: duplicate entries for key {tok[2:]}")
                seen.add(tok)
                _validate_config(schema, item, (*path, tok))


def _prune(schema: _Schema, obj: Obj, dropped: set[Path], applied: set[Path], others: list[_Manager]) -> None:
    """Remove fields the applier owned before but no longer applies, unless somebody still owns them
    (or something beneath them)."""
    owned = set(applied)
    for m in others:
        owned |= m.fields
    prefixes: set[Path] = set()
    for p in owned:
        for i in range(1, len(p)):
            prefixes.add(p[:i])
    # Deepest first, so an item's leaves go before the item itself.
    for p in sorted(dropped - owned, key=len, reverse=True):
        if p in prefixes:
            continue
        if _is_key_field(schema, p):
            continue
        schema.remove(obj, p)


def _is_key_field(schema: _Schema, path: Path) -> bool:
    """A list item's key field goes with the item, never on its own."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    try:
        keys = json.loads(path[-2][2:])
    except ValueError:
        return False
    return isinstance(keys, dict) and path[-1][2:] in keys


def _conflict_error(conflicts: list[tuple[_Manager, Path]]) -> PatchError:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {m.describe()}",
            "field": _path_string(p),
        }
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {m.describe()}: {_path_string(p)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for m, p in conflicts:
            by_manager.setdefault(m.describe(), []).append(_path_string(p))
        lines: list[str] = []
        for name in sorted(by_manager):
            lines.append(f"conflicts with {name}:")
            lines.extend(f"- {p}" for p in by_manager[name])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return PatchError(409, "Conflict", message, causes)


def update_managed_fields(old: Obj | None, new: Obj, manager: str, operation: str, now: str) -> None:
    """Record a non-apply write (create/update/patch) by `manager` in `new`'s metadata.managedFields.

    Fields that changed between `old` and `new` become owned by `manager` and are taken away from
    every other manager. If `new` carries managedFields of its own they are used as the starting
    point (an explicit empty list resets tracking), otherwise `old`'s are.
    """
    schema = _Schema(str(new.get("kind") or (old or {}).get("kind") or ""))
    new_meta = new.get("metadata")
    if isinstance(new_meta, dict) and new_meta.get("managedFields") is not None:
        managers = _managers_of(new)
    else:
        managers = _managers_of(old)
    api_version = str(new.get("apiVersion") or "")

    added: set[Path] = set()
    modified: set[Path] = set()
    removed: set[Path] = set()
    schema.compare(
        _without_managed_fields(old or {}), _without_managed_fields(new), (), added, modified, removed
    )
    changed = _strip(added | modified)
    removed = _strip(removed)

    ident = (manager, operation, api_version if operation != "Apply" else "", "")
    mine = next((m for m in managers if m.ident == ident), None)
    for m in managers:
        if m is not mine:
            m.fields = m.fields - changed - removed
    if mine is None:
        mine = _Manager(manager, operation, api_version, now, set())
        managers.append(mine)
    before = set(mine.fields)
    mine.fields = (mine.fields - removed) | changed
    if mine.fields != before:
        mine.time = now
    _store_managers(new, managers)
