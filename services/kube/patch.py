"""Patch builders, so controllers send minimal patches instead of whole objects.

A minimal patch touches only the fields a controller changed, which avoids clobbering concurrent
writers' fields and the resourceVersion conflicts a full PUT would run into.
"""

from __future__ import annotations

import copy
from typing import Any

from .types import Obj


def merge_patch_for(old: Obj, new: Obj, *, with_resource_version: bool = False) -> Obj:
    """The RFC 7386 JSON merge patch that turns `old` into `new`.

    Removed keys become null, nested objects are diffed recursively, everything else (lists
    included: merge patch cannot address list elements) is replaced whole. A null *value* in `new`
    is indistinguishable from removal in a merge patch, so it is sent as null (= delete).

    With `with_resource_version`, old's metadata.resourceVersion is included: the API server then
    rejects the patch with 409 Conflict if the object changed since `old` was read, turning the patch
    into a compare-and-swap.
    """
    patch = _diff(old, new)
    if with_resource_version:
        rv = (old.get("metadata") or {}).get("resourceVersion")
        if rv:
            md = patch.setdefault("metadata", {})
            if isinstance(md, dict):
                md["resourceVersion"] = rv
    return patch


def _diff(old: Obj, new: Obj) -> Obj:
    out: Obj = {}
    for k in old:
        if k not in new:
            out[k] = None
    for k, nv in new.items():
        if k not in old:
            out[k] = copy.deepcopy(nv)
            continue
        ov = old[k]
        if isinstance(ov, dict) and isinstance(nv, dict):
            sub = _diff(ov, nv)
            if sub:
                out[k] = sub
        elif ov != nv or type(ov) is not type(nv):
            # `1 == 1.0 == True` in Python but not in JSON: compare types too.
            out[k] = copy.deepcopy(nv)
    return out


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 application (returns a new value; inputs are not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = apply_merge_patch(result.get(k), v)
    return result


def json_pointer(*segments: str | int) -> str:
    """RFC 6901 pointer from raw path segments ("~" and "/" escaped)."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def json_patch_test_and_set(path: str, old: Any, new: Any) -> list[Obj]:
    """A JSON patch that replaces `path` only if it still holds `old` (fails with 422 otherwise).

    Useful for compare-and-swap on a single field without sending a resourceVersion, e.g. claiming
    an object by setting an annotation only if it still has the value we saw. JSON patch cannot
    test for absence, so for `old=None` this degrades to an unguarded "add"; when absence matters,
    use a resourceVersion precondition (`merge_patch_for(..., with_resource_version=True)`) instead.
    """
    if old is None:
        return [{"op": "add", "path": path, "value": new}]
    ops: list[Obj] = [{"op": "test", "path": path, "value": old}]
    if new is None:
        ops.append({"op": "remove", "path": path})
    else:
        ops.append({"op": "replace", "path": path, "value": new})
    return ops
