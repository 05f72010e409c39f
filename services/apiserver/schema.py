"""Schema-driven handling of request bodies, as kube-apiserver does it while decoding.

Two jobs:

* Unknown fields (the `fieldValidation` query parameter). Upstream's decoder drops fields that the
  kind does not declare; `Strict` turns them into an error, `Warn` (the default since 1.27) into
  `Warning` response headers, `Ignore` drops them silently. Built-in kinds learn their fields from the
  official client's generated models (`openapi_types` + `attribute_map`), custom resources from their
  CRD's structural schema (pruning).
* Custom resources additionally get the structural-schema pipeline of apiextensions-apiserver:
  pruning, `default:` values, and OpenAPI v3 validation with upstream's field paths and messages.

Every function works on plain JSON values (dicts, lists, scalars) and mutates the object in place,
like the Go decoder it stands in for.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubeedge.apiserver.errors import ApiError
from kubeedge.apiserver.resources import Obj, ResourceInfo
from kubeedge.apiserver.validation import Cause, invalid, required, too_long

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "check_fields",
    "go_value",
    "patch_strict_error",
    "prune_default_validate",
    "strict_error",
    "unknown_fields",
]

MODES = ("Ignore", "Warn", "Strict")
# Since Kubernetes 1.27 (ServerSideFieldValidation GA) an absent fieldValidation means Warn.
DEFAULT_MODE = "Warn"
UNKNOWN = "FieldValueUnknown"  # our cause reason for an unknown field (never sent as a cause itself)
_META_KEYS = ("apiVersion", "kind", "metadata")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------------------------------
# built-in kinds: field trees from the official client's models


@dataclass(frozen=True)
class _Type:
    """One node of a kind's field tree: a leaf, a model (named), or a list/map of `item`."""

    shape: str  # "leaf" | "model" | "list" | "map"
    model: str = ""
    item: _Type | None = None


_LEAF = _Type("leaf")
# Core v1 Event is the one served kind whose model is not named V1<Kind>.
_MODEL_OF_KIND = {"Event": "CoreV1Event"}


@functools.cache
def _models() -> Any:
    # Imported on first use: the generated package costs ~0.2s to load, which tools that never
    # validate a body (CLIs, most unit tests) should not pay.
    return importlib.import_module("kubernetes.client.models")


def _is_model(name: str) -> bool:
    cls = getattr(_models(), name, None)
    return isinstance(cls, type) and hasattr(cls, "attribute_map")


@functools.cache
def _parse(spec: str) -> _Type:
    """A generated type string ('List[V1Container]', 'Dict[str, str]', 'object', ...) as a tree node.

    'object' is how the generator spells free-form values (IntOrString, RawExtension, fieldsV1,
    JSONSchemaProps' items/additionalProperties): leaves, so nothing under them is unknown.
    """
    if spec.startswith("List[") and spec.endswith("]"):
        return _Type("list", item=_parse(spec[5:-1]))
    if spec.startswith("Dict[str, ") and spec.endswith("]"):
        return _Type("map", item=_parse(spec[10:-1]))
    return _Type("model", model=spec) if _is_model(spec) else _LEAF


@functools.cache
def _fields(model: str) -> dict[str, _Type]:
    """JSON field name -> type for one model class, computed once per class."""
    cls = getattr(_models(), model)
    names: dict[str, str] = cls.attribute_map
    return {names[attr]: _parse(spec) for attr, spec in cls.openapi_types.items()}


def _root_model(info: ResourceInfo) -> str | None:
    if info.crd:
        return None
    # The client names models by version: V1Pod, V2HorizontalPodAutoscaler, ...
    name = _MODEL_OF_KIND.get(info.kind, info.version.capitalize() + info.kind)
    return name if _is_model(name) else None


def _drop_unknown(value: Any, t: _Type, path: str, out: list[str]) -> None:
    """Remove (and record the paths of) fields the model tree `t` does not declare."""
    if t.shape == "model" and isinstance(value, dict):
        fields = _fields(t.model)
        for k, v in list(value.items()):
            sub = fields.get(k)
            if sub is None:
                out.append(_key(path, k))
                del value[k]
            elif sub.shape != "leaf":
                _drop_unknown(v, sub, _key(path, k), out)
    elif t.shape == "list" and isinstance(value, list) and t.item is not None:
        for i, v in enumerate(value):
            _drop_unknown(v, t.item, f"{path}[{i}]", out)
    elif t.shape == "map" and isinstance(value, dict) and t.item is not None and t.item.shape != "leaf":
        for k, v in value.items():
            _drop_unknown(v, t.item, _key(path, k), out)


# --------------------------------------------------------------------------------------------------
# custom resources: structural pruning (apiextensions-apiserver pkg/apiserver/schema/pruning)


def _preserves(s: Obj) -> bool:
    return s.get("x-kubernetes-preserve-unknown-fields") is True or s.get("additionalProperties") is True


def _sub_schema(s: Obj, key: str) -> Obj | None:
    prop = (s.get("properties") or {}).get(key)
    if isinstance(prop, dict):
        return prop
    extra = s.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _prune(value: Any, s: Obj, path: str, out: list[str]) -> None:
    if _preserves(s):
        _skip_prune(value, s, path, out)
    elif isinstance(value, dict):
        embedded = s.get("x-kubernetes-embedded-resource") is True
        for k, v in list(value.items()):
            if embedded and k in _META_KEYS:
                continue  # an embedded object's type and metadata are ObjectMeta's business
            sub = _sub_schema(s, k)
            if sub is None:
                out.append(_key(path, k))
                del value[k]
            else:
                _prune(v, sub, _key(path, k), out)
    elif isinstance(value, list) and isinstance(s.get("items"), dict):
        for i, v in enumerate(value):
            _prune(v, s["items"], f"{path}[{i}]", out)


def _skip_prune(value: Any, s: Obj, path: str, out: list[str]) -> None:
    """Under x-kubernetes-preserve-unknown-fields: keep unknown keys, still prune declared ones."""
    if isinstance(value, dict):
        for k, v in value.items():
            if s.get("x-kubernetes-embedded-resource") is True and k in _META_KEYS:
                continue
            sub = _sub_schema(s, k)
            if sub is not None:
                _prune(v, sub, _key(path, k), out)
    elif isinstance(value, list) and isinstance(s.get("items"), dict):
        for i, v in enumerate(value):
            _skip_prune(v, s["items"], f"{path}[{i}]", out)


def _prune_root(info: ResourceInfo, obj: Obj) -> list[str]:
    """Pruned paths of a whole custom resource; apiVersion/kind/metadata are never the schema's."""
    out: list[str] = []
    md = obj.get("metadata")
    if isinstance(md, dict):
        _drop_unknown(md, _Type("model", model="V1ObjectMeta"), "metadata", out)
    schema = info.schema or {}
    if _preserves(schema):
        rest = {k: v for k, v in obj.items() if k not in _META_KEYS}
        _skip_prune(rest, schema, "", out)
        return sorted(out)
    for k, v in list(obj.items()):
        if k in _META_KEYS:
            continue
        sub = _sub_schema(schema, k)
        if sub is None:
            out.append(k)
            del obj[k]
        else:
            _prune(v, sub, k, out)
    # Upstream sorts the pruned paths (Go map order is random); so do we, for stable messages.
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# custom resources: defaulting (pkg/apiserver/schema/defaulting)


def _default(value: Any, s: Obj) -> None:
    if isinstance(value, dict):
        props: Obj = s.get("properties") or {}
        for k, prop in props.items():
            if not isinstance(prop, dict) or "default" not in prop:
                continue
            if k not in value or (value[k] is None and not prop.get("nullable")):
                value[k] = copy.deepcopy(prop["default"])
        for k, v in value.items():
            sub = _sub_schema(s, k)
            if sub is not None:
                _default(v, sub)
    elif isinstance(value, list) and isinstance(s.get("items"), dict):
        for v in value:
            _default(v, s["items"])


def _drop_nulls(value: Any, s: Obj) -> None:
    """Upstream prunes nulls of non-nullable fields that have no default (rather than refusing them)."""
    if isinstance(value, dict):
        for k, v in list(value.items()):
            sub = _sub_schema(s, k)
            if sub is None:
                continue
            if v is None and not sub.get("nullable"):
                del value[k]
            else:
                _drop_nulls(v, sub)
    elif isinstance(value, list) and isinstance(s.get("items"), dict):
        for v in value:
            _drop_nulls(v, s["items"])


# --------------------------------------------------------------------------------------------------
# custom resources: OpenAPI v3 validation (kube-openapi validate + apiextensions error conversion)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _has_type(v: Any, want: str) -> bool:
    got = _json_type(v)
    return got == want or (want == "number" and got == "integer")


def _num(n: Any) -> str:
    """A schema bound as Go's %v prints a float64: no trailing '.0'."""
    return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)


def _type_error(path: str, v: Any, want: str) -> Cause:
    got = _json_type(v)
    return {
        "reason": "FieldValueTypeInvalid",
        "message": f'Invalid value: "{got}": {path} in body must be of type {want}: "{got}"',
        "field": path,
    }


def _too_many(path: str, n: int, limit: int, what: str) -> Cause:
    return {
        "reason": "FieldValueTooMany",
        "message": f"Too many: {n}: must have at most {limit} {what}",
        "field": path,
    }


def _validate(v: Any, s: Obj, path: str, out: list[Cause]) -> None:
    if v is None and s.get("nullable"):
        return
    if s.get("x-kubernetes-int-or-string") is True:
        if not (_has_type(v, "integer") or isinstance(v, str)):
            out.append(_type_error(path, v, "integer-or-string"))
            return
    elif isinstance(s.get("type"), str) and not _has_type(v, s["type"]):
        out.append(_type_error(path, v, s["type"]))
        return
    if "enum" in s and v not in s["enum"]:
        choices = ", ".join(json.dumps(e if isinstance(e, str) else _num(e)) for e in s["enum"])
        out.append(
            {
                "reason": "FieldValueNotSupported",
                "message": f"Unsupported value: {_fmt(v)}: supported values: {choices}",
                "field": path,
            }
        )
    if isinstance(v, int | float) and not isinstance(v, bool):
        _validate_number(v, s, path, out)
    elif isinstance(v, str):
        _validate_string(v, s, path, out)
    elif isinstance(v, list):
        _validate_array(v, s, path, out)
    elif isinstance(v, dict):
        _validate_object(v, s, path, out)
    for sub in s.get("allOf") or ():
        if isinstance(sub, dict):
            _validate(v, sub, path, out)


def _fmt(v: Any) -> str:
    """A value as Go's field errors print it: strings quoted, numbers bare, structures as JSON."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return _num(v)
    return json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _validate_number(v: float, s: Obj, path: str, out: list[Cause]) -> None:
    lo, hi = s.get("minimum"), s.get("maximum")
    if isinstance(lo, int | float):
        if s.get("exclusiveMinimum") and v <= lo:
            out.append(invalid(path, v, f"{path} in body should be greater than {_num(lo)}"))
        elif v < lo:
            out.append(invalid(path, v, f"{path} in body should be greater than or equal to {_num(lo)}"))
    if isinstance(hi, int | float):
        if s.get("exclusiveMaximum") and v >= hi:
            out.append(invalid(path, v, f"{path} in body should be less than {_num(hi)}"))
        elif v > hi:
            out.append(invalid(path, v, f"{path} in body should be less than or equal to {_num(hi)}"))
    step = s.get("multipleOf")
    if isinstance(step, int | float) and step > 0 and not math.isclose(v / step, round(v / step)):
        out.append(invalid(path, v, f"{path} in body should be a multiple of {_num(step)}"))


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # an ECMA-only pattern Python cannot compile: accept, rather than refuse all writes


def _validate_string(v: str, s: Obj, path: str, out: list[Cause]) -> None:
    n = len(v)  # OpenAPI counts characters (runes), as Python's len does
    if isinstance(s.get("maxLength"), int) and n > s["maxLength"]:
        out.append(too_long(path, s["maxLength"]))
    if isinstance(s.get("minLength"), int) and n < s["minLength"]:
        out.append(invalid(path, v, f"{path} in body should be at least {s['minLength']} chars long"))
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        rx = _regex(pattern)
        if rx is not None and rx.search(v) is None:
            out.append(invalid(path, v, f"{path} in body should match '{pattern}'"))


def _validate_array(v: list[Any], s: Obj, path: str, out: list[Cause]) -> None:
    if isinstance(s.get("maxItems"), int) and len(v) > s["maxItems"]:
        out.append(_too_many(path, len(v), s["maxItems"], "items"))
    if isinstance(s.get("minItems"), int) and len(v) < s["minItems"]:
        out.append(invalid(path, v, f"{path} in body should have at least {s['minItems']} items"))
    items = s.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            _validate(item, items, f"{path}[{i}]", out)
    list_type = s.get("x-kubernetes-list-type")
    if list_type == "set":
        out.extend(_duplicates(v, path, lambda x: x, _fmt))
    elif list_type == "map":
        keys = tuple(s.get("x-kubernetes-list-map-keys") or ())
        out.extend(
            _duplicates(
                [x for x in v if isinstance(x, dict)],
                path,
                lambda x: {k: x[k] for k in keys if k in x},
                _go_map,
            )
        )


def _duplicates(
    items: list[Any], path: str, key: Callable[[Any], Any], show: Callable[[Any], str]
) -> Iterator[Cause]:
    """One Duplicate cause per item whose identity (`key`) an earlier item already had."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        k = key(item)
        h = json.dumps(k, sort_keys=True)
        if h in seen:
            yield {
                "reason": "FieldValueDuplicate",
                "message": f"Duplicate value: {show(k)}",
                "field": f"{path}[{i}]",
            }
        seen.add(h)


def _go_map(m: Obj) -> str:
    """A list-map key as Go's %#v prints a map[string]interface{} (sorted keys)."""
    inner = ",".join(f"{json.dumps(k)}:{_fmt(m[k])}" for k in sorted(m))
    return "map[string]interface {}{" + inner + "}"


def _validate_object(v: Obj, s: Obj, path: str, out: list[Cause]) -> None:
    for name in s.get("required") or ():
        if name not in v:
            out.append(required(_key(path, name)))
    if isinstance(s.get("maxProperties"), int) and len(v) > s["maxProperties"]:
        out.append(_too_many(path, len(v), s["maxProperties"], "properties"))
    if isinstance(s.get("minProperties"), int) and len(v) < s["minProperties"]:
        out.append(invalid(path, v, f"{path} in body should have at least {s['minProperties']} properties"))
    for k, item in v.items():
        if s.get("x-kubernetes-embedded-resource") is True and k in _META_KEYS:
            continue
        sub = _sub_schema(s, k)
        if sub is not None:
            _validate(item, sub, _key(path, k), out)


def _validate_root(obj: Obj, schema: Obj) -> list[Cause]:
    out: list[Cause] = []
    for name in schema.get("required") or ():
        if name not in obj and name not in _META_KEYS:
            out.append(required(name))
    for k, v in obj.items():
        sub = None if k in _META_KEYS else _sub_schema(schema, k)
        if sub is not None:
            _validate(v, sub, k, out)
    return out


# --------------------------------------------------------------------------------------------------
# public API


def unknown_fields(info: ResourceInfo, obj: Obj) -> list[str]:
    """Paths of the fields in `obj` that `info`'s kind does not declare (obj is left untouched)."""
    return _find_unknown(info, copy.deepcopy(obj))


def _find_unknown(info: ResourceInfo, obj: Obj) -> list[str]:
    """Drop the undeclared fields of `obj` in place and return their paths (document order)."""
    if info.crd:
        return _prune_root(info, obj) if info.schema is not None else []
    model = _root_model(info)
    out: list[str] = []
    if model is not None:
        _drop_unknown(obj, _Type("model", model=model), "", out)
    return out


def check_fields(
    info: ResourceInfo, obj: dict[str, Any], mode: str, *, current: Obj | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Unknown-field handling for a request body under fieldValidation `mode` ('' means Warn).

    The unknown fields are always removed from `obj` (the Go decoder never keeps them). Returns
    `(causes, warnings)`: under Strict one cause per unknown field (turn them into the error with
    `strict_error` / `patch_strict_error`), under Warn one `unknown field "<path>"` warning per field,
    under Ignore nothing. For a patched object pass the stored object as `current`: unknown fields it
    already had (stored before a schema change) are dropped without being blamed on this request.
    """
    mode = mode or DEFAULT_MODE
    found = _find_unknown(info, obj)
    if found and current is not None:
        old = set(unknown_fields(info, current))
        found = [p for p in found if p not in old]
    if mode == "Ignore" or not found:
        return [], []
    messages = [f'unknown field "{p}"' for p in found]
    if mode == "Strict":
        return [
            {"reason": UNKNOWN, "message": m, "field": p} for m, p in zip(messages, found, strict=True)
        ], []
    return [], messages


def _strict_text(causes: list[dict[str, Any]]) -> str:
    return "strict decoding error: " + ", ".join(str(c["message"]) for c in causes)


def strict_error(info: ResourceInfo, obj: Obj, causes: list[dict[str, Any]]) -> ApiError:
    """The 400 a POST/PUT body with unknown fields gets under Strict (upstream's transformDecodeError)."""
    kind = str(obj.get("kind") or info.kind)
    version = str(obj.get("apiVersion") or info.api_version).rpartition("/")[2]
    return ApiError(
        400,
        "BadRequest",
        f'{kind} in version "{version}" cannot be handled as a {info.kind}: {_strict_text(causes)}',
    )


def patch_strict_error(patch_value: str, causes: list[dict[str, Any]]) -> ApiError:
    """The 422 a PATCH gets under Strict: upstream reports it on the field "patch" of an unnamed,
    kind-less object, quoting the patch (strategic) or the patched object (merge/JSON patch)."""
    msg = f"Invalid value: {json.dumps(patch_value, ensure_ascii=False)}: {_strict_text(causes)}"
    cause = {"reason": "FieldValueInvalid", "message": msg, "field": "patch"}
    return ApiError(422, "Invalid", f' "" is invalid: patch: {msg}', details={"causes": [cause]})


def go_value(v: Any) -> str:
    """A decoded JSON value as Go's %+v prints it (how upstream quotes a strategic merge patch)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_value(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _num(v) if abs(v) < 1e21 else f"{v:e}".replace("e+0", "e+")
    return str(v)


def prune_default_validate(
    info: ResourceInfo, obj: dict[str, Any]
) -> tuple[dict[str, Any], list[Cause], list[str]]:
    """The structural-schema pipeline for a custom resource, in upstream's order.

    Prunes undeclared fields, applies `default:` values (including nested ones, wherever the parent
    object exists), drops non-nullable nulls, then validates. Returns `(obj, causes, pruned)`: the
    same object modified in place, the validation causes for a 422, and the pruned field paths.
    Objects of kinds without a schema pass through unchanged.
    """
    schema = info.schema
    if not info.crd or not isinstance(schema, dict):
        return obj, [], []
    pruned = _prune_root(info, obj)
    _default(obj, schema)
    _drop_nulls(obj, schema)
    return obj, _validate_root(obj, schema), pruned
