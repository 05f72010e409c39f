"""OpenAPI v3 documents (/openapi/v3 and /openapi/v3/<path>) derived from the resource Registry.

kubectl 1.37's default `apply` (validate=strict) reads these to learn that the server accepts
`fieldValidation` on PATCH/POST, and then leaves schema validation to the server.

Strategic merge patches, a deliberate choice: kubectl's apply (patcher.go, gvkSupportsPatchOpenAPIV3)
computes the patch from a v3 schema only when the GVK's PATCH operation lists
`application/strategic-merge-patch+json` in its requestBody. Our built-in schemas are permissive stubs
without `x-kubernetes-patch-merge-key`/`-strategy`, so a patch computed from them would replace whole
lists (containers, env, ports, volumes ...) instead of merging by key. We therefore never advertise
that content type: kubectl then skips v3 (and v2, which we do not serve) and builds the strategic
merge patch from its compiled-in Go types for built-in kinds, which carry the right merge keys, and a
JSON merge patch for kinds it does not know (CRDs), exactly as against a real cluster. The server must
still accept strategic-merge-patch+json bodies; only the advertisement is withheld.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kubeedge.apiserver.discovery import subresource
from kubeedge.apiserver.resources import Obj, Registry, ResourceInfo

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{_META}.ObjectMeta"
LIST_META = f"{_META}.ListMeta"
STATUS = f"{_META}.Status"
DELETE_OPTIONS = f"{_META}.DeleteOptions"
PATCH = f"{_META}.Patch"

# Schema-name prefixes of upstream's Go packages, so names match what users see in `kubectl explain`.
_PACKAGES = {
    "": "io.k8s.api.core",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
    "autoscaling": "io.k8s.api.autoscaling",
    "authentication.k8s.io": "io.k8s.api.authentication",
    "policy": "io.k8s.api.policy",
}

# Connect-style subresources stream rather than exchange objects; upstream documents them with
# separate option kinds, and no client needs them from OpenAPI.
_STREAMING = frozenset({"log", "exec", "attach", "portforward", "proxy"})

JSON_CONTENT = ("application/json", "application/yaml")
# No strategic-merge-patch+json here: see the module docstring.
PATCH_CONTENT = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
)


def schema_name(group: str, version: str, kind: str) -> str:
    if group in _PACKAGES:
        prefix = _PACKAGES[group]
    elif group.endswith(".k8s.io") or "." not in group:
        prefix = f"io.k8s.api.{group.removesuffix('.k8s.io')}"
    else:  # CRD groups, as the apiextensions server names them: reversed domain
        prefix = ".".join(reversed(group.split(".")))
    return f"{prefix}.{version}.{kind}"


def _ref(name: str) -> Obj:
    return {"$ref": f"#/components/schemas/{name}"}


def _gvk(group: str, version: str, kind: str) -> Obj:
    return {"group": group, "version": version, "kind": kind}


def _camel(group: str) -> str:
    if not group:
        return "Core"
    parts = group.removesuffix(".k8s.io").replace("-", ".").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts)


# --- parameters -----------------------------------------------------------------------------------


def _query(name: str, description: str, type_: str = "string") -> Obj:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": type_, "uniqueItems": True},
    }


def _path_param(name: str, description: str) -> Obj:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


DRY_RUN = _query("dryRun", "When present, modifications are not persisted. Valid value: All.")
FIELD_MANAGER = _query("fieldManager", "Name of the actor making the change, used to track field ownership.")
FIELD_VALIDATION = _query(
    "fieldValidation",
    "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
)
FORCE = _query("force", "Force apply requests to take over conflicting fields.", "boolean")
WRITE_PARAMS = (DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION)
LIST_PARAMS = (
    _query("allowWatchBookmarks", "Request BOOKMARK watch events.", "boolean"),
    _query("continue", "Continue token from a previous paginated list."),
    _query("fieldSelector", "Restrict the returned objects by their fields."),
    _query("labelSelector", "Restrict the returned objects by their labels."),
    _query("limit", "Maximum number of objects to return.", "integer"),
    _query("resourceVersion", "Which resource version to serve from."),
    _query("resourceVersionMatch", "How resourceVersion is applied to list calls."),
    _query("sendInitialEvents", "Start a watch with synthetic events for existing objects.", "boolean"),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes instead of listing.", "boolean"),
)
DELETE_PARAMS = (
    DRY_RUN,
    _query("gracePeriodSeconds", "Seconds before the object should be deleted.", "integer"),
    _query("propagationPolicy", "Garbage collection policy: Orphan, Background or Foreground."),
)
NAMESPACE_PARAM = _path_param("namespace", "object name and auth scope, such as for teams and projects")


# --- operations -----------------------------------------------------------------------------------


def _content(schema: Obj, types: tuple[str, ...]) -> Obj:
    return {t: {"schema": schema} for t in types}


def _responses(schema: Obj, *codes: str) -> Obj:
    out: Obj = {code: {"description": "OK", "content": _content(schema, JSON_CONTENT)} for code in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(
    op_id: str, action: str, gvk: Obj, params: tuple[Obj, ...], responses: Obj, body: Obj | None = None
) -> Obj:
    op: Obj = {"operationId": op_id, "parameters": list(params), "responses": responses}
    if body is not None:
        op["requestBody"] = body
    op["x-kubernetes-action"] = action
    op["x-kubernetes-group-version-kind"] = gvk
    return op


def _body(schema: Obj, types: tuple[str, ...] = ("*/*",)) -> Obj:
    return {"content": _content(schema, types), "required": True}


class _Names:
    """Operation-id pieces for one resource, e.g. createAppsV1NamespacedDeployment."""

    def __init__(self, r: ResourceInfo) -> None:
        self.gv = _camel(r.group) + r.version[:1].upper() + r.version[1:]
        self.scope = "Namespaced" if r.namespaced else ""
        self.kind = r.kind

    def op(self, verb: str, suffix: str = "") -> str:
        return f"{verb}{self.gv}{self.scope}{self.kind}{suffix}"


def _collection_path(r: ResourceInfo) -> Obj:
    n, gvk = _Names(r), _gvk(r.group, r.version, r.kind)
    item, lst = (
        _ref(schema_name(r.group, r.version, r.kind)),
        _ref(schema_name(r.group, r.version, r.list_kind)),
    )
    path: Obj = {"parameters": [NAMESPACE_PARAM]} if r.namespaced else {}
    if "list" in r.verbs:
        path["get"] = _operation(n.op("list"), "list", gvk, LIST_PARAMS, _responses(lst, "200"))
    if "create" in r.verbs:
        created = _responses(item, "200", "201", "202")
        path["post"] = _operation(n.op("create"), "post", gvk, WRITE_PARAMS, created, _body(item))
    if "deletecollection" in r.verbs:
        params = DELETE_PARAMS + LIST_PARAMS
        deleted = _responses(_ref(STATUS), "200")
        path["delete"] = _operation(
            n.op("deleteCollection"), "deletecollection", gvk, params, deleted, _body(_ref(DELETE_OPTIONS))
        )
    return path


def _item_path(r: ResourceInfo) -> Obj:
    n, gvk = _Names(r), _gvk(r.group, r.version, r.kind)
    item = _ref(schema_name(r.group, r.version, r.kind))
    name = _path_param("name", f"name of the {r.kind}")
    path: Obj = {"parameters": [name, NAMESPACE_PARAM] if r.namespaced else [name]}
    if "get" in r.verbs:
        path["get"] = _operation(n.op("read"), "get", gvk, (), _responses(item, "200"))
    if "update" in r.verbs:
        path["put"] = _operation(
            n.op("replace"), "put", gvk, WRITE_PARAMS, _responses(item, "200", "201"), _body(item)
        )
    if "patch" in r.verbs:
        path["patch"] = _patch_operation(n.op("patch"), gvk, item)
    if "delete" in r.verbs:
        path["delete"] = _operation(
            n.op("delete"),
            "delete",
            gvk,
            DELETE_PARAMS,
            _responses(item, "200", "202"),
            _body(_ref(DELETE_OPTIONS)),
        )
    return path


def _patch_operation(op_id: str, gvk: Obj, result: Obj) -> Obj:
    body = _body(_ref(PATCH), PATCH_CONTENT)
    return _operation(op_id, "patch", gvk, (*WRITE_PARAMS, FORCE), _responses(result, "200", "201"), body)


def _subresource_path(r: ResourceInfo, sub: str) -> Obj:
    spec, n = subresource(sub), _Names(r)
    group, version, kind = spec.gvk(r)
    gvk, schema = _gvk(group, version, kind), _ref(schema_name(group, version, kind))
    suffix = sub[:1].upper() + sub[1:]
    name = _path_param("name", f"name of the {kind}")
    path: Obj = {"parameters": [name, NAMESPACE_PARAM] if r.namespaced else [name]}
    if "get" in spec.verbs:
        path["get"] = _operation(n.op("read", suffix), "get", gvk, (), _responses(schema, "200"))
    if "update" in spec.verbs:
        replaced = _responses(schema, "200", "201")
        path["put"] = _operation(n.op("replace", suffix), "put", gvk, WRITE_PARAMS, replaced, _body(schema))
    if "patch" in spec.verbs:
        path["patch"] = _patch_operation(n.op("patch", suffix), gvk, schema)
    if "create" in spec.verbs:
        created = _responses(schema, "200", "201", "202")
        path["post"] = _operation(n.op("create", suffix), "post", gvk, WRITE_PARAMS, created, _body(schema))
    return path


def _resource_paths(r: ResourceInfo) -> dict[str, Obj]:
    base = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    scoped = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
    paths = {scoped: _collection_path(r), f"{scoped}/{{name}}": _item_path(r)}
    if r.namespaced and "list" in r.verbs:
        n, lst = _Names(r), _ref(schema_name(r.group, r.version, r.list_kind))
        op_id = f"list{n.gv}{r.kind}ForAllNamespaces"
        gvk = _gvk(r.group, r.version, r.kind)
        paths[f"{base}/{r.plural}"] = {
            "get": _operation(op_id, "list", gvk, LIST_PARAMS, _responses(lst, "200"))
        }
    for sub in r.subresources:
        if sub not in _STREAMING:
            paths[f"{scoped}/{{name}}/{sub}"] = _subresource_path(r, sub)
    return {p: ops for p, ops in paths.items() if ops}


# --- schemas --------------------------------------------------------------------------------------

_OPEN_OBJECT: Obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _meta_schemas() -> dict[str, Obj]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        OBJECT_META: {
            "type": "object",
            "description": "Standard object metadata.",
            "properties": {
                "name": {"type": "string"},
                "generateName": {"type": "string"},
                "namespace": {"type": "string"},
                "uid": {"type": "string"},
                "resourceVersion": {"type": "string"},
                "generation": {"type": "integer", "format": "int64"},
                "creationTimestamp": {"type": "string", "format": "date-time"},
                "deletionTimestamp": {"type": "string", "format": "date-time"},
                "labels": string_map,
                "annotations": string_map,
                "finalizers": {"type": "array", "items": {"type": "string"}},
                "ownerReferences": {"type": "array", "items": _OPEN_OBJECT},
                "managedFields": {"type": "array", "items": _OPEN_OBJECT},
            },
        },
        LIST_META: {
            "type": "object",
            "properties": {
                "resourceVersion": {"type": "string"},
                "continue": {"type": "string"},
                "remainingItemCount": {"type": "integer", "format": "int64"},
            },
        },
        STATUS: _kind_stub("", "v1", "Status", has_spec=False, has_status=False),
        DELETE_OPTIONS: {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        PATCH: {"type": "object", "description": "A patch body in one of the accepted patch formats."},
    }


def _type_meta() -> Obj:
    return {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": _ref(OBJECT_META)}


def _kind_stub(group: str, version: str, kind: str, *, has_spec: bool, has_status: bool) -> Obj:
    """A permissive schema for built-in kinds: the server validates, kubectl only needs the GVK."""
    props = _type_meta()
    if has_spec:
        props["spec"] = dict(_OPEN_OBJECT)
    if has_status:
        props["status"] = dict(_OPEN_OBJECT)
    return {
        "type": "object",
        "description": f"{kind} ({group + '/' if group else ''}{version}).",
        "properties": props,
        # Built-ins carry many more top-level fields (data, subsets, rules ...) than listed here.
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [_gvk(group, version, kind)],
    }


def _crd_schema(r: ResourceInfo, schema: Obj) -> Obj:
    out: Obj = copy.deepcopy(schema)
    out.setdefault("type", "object")
    props = out.setdefault("properties", {})
    # Like apiextensions-apiserver: the CRD cannot redefine type and object metadata.
    props.update(_type_meta())
    out["x-kubernetes-group-version-kind"] = [_gvk(r.group, r.version, r.kind)]
    return out


def _list_schema(r: ResourceInfo) -> Obj:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": _ref(LIST_META),
            "items": {"type": "array", "items": _ref(schema_name(r.group, r.version, r.kind))},
        },
        "x-kubernetes-group-version-kind": [_gvk(r.group, r.version, r.list_kind)],
    }


def _resource_schemas(r: ResourceInfo) -> dict[str, Obj]:
    if r.schema:
        item = _crd_schema(r, r.schema)
    else:
        item = _kind_stub(r.group, r.version, r.kind, has_spec=r.has_generation, has_status=r.has_status)
    out = {
        schema_name(r.group, r.version, r.kind): item,
        schema_name(r.group, r.version, r.list_kind): _list_schema(r),
    }
    for sub in r.subresources:
        group, version, kind = subresource(sub).gvk(r)
        if sub not in _STREAMING and kind != r.kind:
            stub = _kind_stub(group, version, kind, has_spec=True, has_status=True)
            out.setdefault(schema_name(group, version, kind), stub)
    return out


# --- documents ------------------------------------------------------------------------------------


def _document(paths: dict[str, Obj], schemas: dict[str, Obj]) -> Obj:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _discovery_path(op_id: str) -> Obj:
    return {"get": {"operationId": op_id, "responses": _responses(dict(_OPEN_OBJECT), "200")}}


def _discovery_doc(url: str, op_id: str) -> Obj:
    # The discovery endpoints themselves, so every index entry resolves to a valid document.
    return _document({url: _discovery_path(op_id)}, {})


def _group_version_doc(reg: Registry, group: str, version: str) -> Obj | None:
    resources = sorted(reg.in_group_version(group, version), key=lambda r: r.plural)
    if not resources:
        return None
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    gv = _camel(group) + version[:1].upper() + version[1:]
    paths: dict[str, Obj] = {f"{base}/": _discovery_path(f"get{gv}APIResources")}
    schemas = _meta_schemas()
    for r in resources:
        paths.update(_resource_paths(r))
        schemas.update(_resource_schemas(r))
    return _document(paths, schemas)


def openapi_v3_document(reg: Registry, path: str) -> Obj | None:
    """The document for an index path such as "api/v1" or "apis/apps/v1"; None if unknown."""
    parts = path.strip("/").split("/")
    groups = reg.groups()
    if parts == ["api"]:
        return _discovery_doc("/api/", "getCoreAPIVersions") if "" in groups else None
    if parts == ["apis"]:
        return _discovery_doc("/apis/", "getAPIVersions")
    if len(parts) == 2 and parts[0] == "api":
        return _group_version_doc(reg, "", parts[1])
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return _discovery_doc(f"/apis/{parts[1]}/", f"get{_camel(parts[1])}APIGroup")
    if len(parts) == 3 and parts[0] == "apis" and parts[1]:
        return _group_version_doc(reg, parts[1], parts[2])
    return None


def document_hash(doc: Any) -> str:
    """Content hash for serverRelativeURL: clients cache per URL, so it must change with the document."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(data).hexdigest()[:64].upper()


def _index_paths(reg: Registry) -> list[str]:
    out: list[str] = []
    for group, versions in reg.groups().items():
        if not versions:
            continue
        if group:
            out.append(f"apis/{group}")
            out += [f"apis/{group}/{v}" for v in versions]
        else:
            out = ["api", *(f"api/{v}" for v in versions), *out]
    out.append("apis")
    return out


def openapi_v3_index(reg: Registry) -> Obj:
    """/openapi/v3: every document path with a content-hashed URL. Callers may cache on reg.generation."""
    paths: Obj = {}
    for p in _index_paths(reg):
        doc = openapi_v3_document(reg, p)
        if doc is not None:
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={document_hash(doc)}"}
    return {"paths": paths}
