"""The resource endpoints: get, list, watch, create, update, patch, delete and subresources.

Patch, protobuf, field-schema and Table modules are imported by the handlers that use them: the
edge's read-only MetaServer serves through this class and never needs the write machinery.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from aiohttp import web

from kubeedge.store import AlreadyExists, Conflict, Expired, NotFound, Record, Store
from kubeedge.store.watch import Predicate

from .allocator import AllocationError, ServiceAllocator
from .auth import Attributes, Authorizer, Identity
from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    method_not_allowed,
    not_found,
    service_unavailable,
    status_obj,
    too_large,
    unsupported_media,
)
from .objects import (
    check_identity,
    check_precondition,
    now_rfc3339,
    prepare_create,
    prepare_update,
    ready_to_vanish,
    require_dict,
    unchanged,
)
from .resources import Registry, ResourceInfo
from .selectors import FieldSelector, LabelSelector, SelectorError, supported_field_selectors
from .watchstream import serve_watch

if TYPE_CHECKING:
    from .podstreams import PodStreams
    from .satokens import ServiceAccountTokens

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JSON = "application/json"
_NOT_ON_THIS_NODE = (
    "not available here: this API server has no node stream server to reach the node of pod {} "
    "(cloudcore with modules.cloudStream.enable serves one)"
)
_STREAMING_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})
# protobuf.PROTOBUF, spelled here so that recognising the media type does not load the codec.
_PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class Target:
    """What a resource request addresses, parsed from its URL."""

    info: ResourceInfo
    namespace: str  # "" for cluster-scoped or all-namespaces
    name: str
    subresource: str


@dataclass
class Negotiated:
    table: bool = False
    partial: bool = False  # PartialObjectMetadata(List)


def negotiate(accept: str) -> Negotiated:
    """Pick the first representation in the Accept list that we serve."""
    for part in accept.split(","):
        params = {}
        for p in part.split(";")[1:]:
            k, _, v = p.strip().partition("=")
            params[k] = v
        media = part.split(";")[0].strip()
        if media not in ("application/json", "*/*", "application/*", ""):
            continue
        as_ = params.get("as", "")
        if as_ == "Table":
            return Negotiated(table=True)
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return Negotiated(partial=True)
        if not as_:
            return Negotiated()
    return Negotiated()


def json_response(body: bytes | Obj, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, content_type=JSON)


def with_warnings(resp: web.Response, warnings: list[str]) -> web.Response:
    """Add one `Warning: 299 - "<text>"` header per warning (RFC 7234, as kube-apiserver sends them)."""
    for text in warnings:
        resp.headers.add("Warning", f"299 - {json.dumps(text, ensure_ascii=False)}")
    return resp


# Lists bigger than this are streamed in pieces of this size: nothing keeps the whole body alive
# after the handler (aiohttp holds a connection's last Response while it waits for the next request).
LIST_STREAM_BYTES = 1 << 20


async def send_list(request: web.Request, head: bytes, items: list[bytes]) -> web.StreamResponse:
    """A JSON list from a prefix ending in `"items":[` and the items' bytes."""
    size = len(head) + sum(len(i) for i in items) + max(len(items) - 1, 0) + len(b"]}")
    if size <= LIST_STREAM_BYTES:
        return json_response(b"".join((head, b",".join(items), b"]}")))
    resp = web.StreamResponse(headers={"Content-Type": JSON})
    resp.content_length = size
    await resp.prepare(request)
    chunk: list[bytes] = [head]
    pending = len(head)
    for n, item in enumerate(items):
        if n:
            chunk.append(b",")
        chunk.append(item)
        pending += len(item)
        if pending >= LIST_STREAM_BYTES:
            await resp.write(b"".join(chunk))
            chunk, pending = [], 0
    chunk.append(b"]}")
    await resp.write(b"".join(chunk))
    await resp.write_eof()
    return resp


def _int_param(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"{name}: expected an integer, got {v!r}") from None


def _rv_param(v: str | None, what: str = "resourceVersion") -> int | None:
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise bad_request(f"{what}: {v!r} is not a valid resource version") from None
    if n < 0:
        raise bad_request(f"{what}: {v!r} is not a valid resource version")
    return n


def encode_continue(rv: int, after: tuple[str, str]) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": [after[0], after[1]]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = orjson.loads(raw)
        return int(d["rv"]), (str(d["start"][0]), str(d["start"][1]))
    except Exception:
        raise bad_request("continue key is not valid: malformed continue token") from None


class ResourceApi:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        authorizer: Authorizer,
        allocator: ServiceAllocator,
        config: Any,
    ) -> None:
        self.store = store
        self.registry = registry
        self.authz = authorizer
        self.alloc = allocator
        self.config = config
        # Hooks run after a successful write of a resource key (CRD registration, allocator release).
        self.after_write: dict[str, list[Callable[[str, Obj], None]]] = {}
        # Issues serviceaccounts/<name>/token (set by the server, which owns the signing key).
        self.sa_tokens: ServiceAccountTokens | None = None
        # Proxies pods/log, exec, attach and portforward to the nodes (set by the server when configured).
        self.pod_streams: PodStreams | None = None

    # ---- request plumbing -------------------------------------------------------------------

    async def read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise too_large(limit)
        # StreamReader.read(n) returns what is buffered so far, not n bytes: a body arriving in
        # several segments must be read until EOF (it was cut short under load before).
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
        return b"".join(chunks)

    def decode_body(self, body: bytes, content_type: str, expect: tuple[str, str] | None = None) -> Obj:
        """JSON, YAML, or Kubernetes protobuf (kubectl's typed commands); `expect` is the
        (apiVersion, kind) the URL implies, for protobuf envelopes that leave it out."""
        ct = content_type.split(";")[0].strip().lower()
        if not body.strip():
            raise bad_request("the request body is empty")
        try:
            if ct in ("application/yaml", "application/x-yaml", "text/yaml"):
                obj = yaml.safe_load(body)
            elif ct in ("", "application/json", "application/octet-stream", "text/plain", "*/*"):
                # The official Python client sends JSON with no (or a generic) Content-Type.
                obj = orjson.loads(body)
            elif ct == _PROTOBUF:
                from . import protobuf

                av, kind = expect or (None, None)
                try:
                    obj = protobuf.decode(body, kind=kind, api_version=av)
                except protobuf.ProtobufError as e:
                    if "no protobuf schema" in str(e) or "unsupported" in str(e):
                        raise unsupported_media(ct) from None
                    raise bad_request(f"the request body is not valid protobuf: {e}") from None
            else:
                raise unsupported_media(ct)
        except (orjson.JSONDecodeError, yaml.YAMLError) as e:
            raise bad_request(
                f"the request body is not valid {'YAML' if 'yaml' in ct else 'JSON'}: {e}"
            ) from None
        return require_dict(obj, "the request body")

    def authorize(self, ident: Identity | None, a: Attributes) -> None:
        self.authz.authorize(ident, a)

    def check_namespace(self, info: ResourceInfo, ns: str, creating: bool) -> None:
        if not info.namespaced:
            return
        try:
            rec = self.store.get_now("namespaces", "", ns)
        except NotFound:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{ns}" not found',
                details={"name": ns, "kind": "namespaces"},
            ) from None
        if creating and rec.obj.get("metadata", {}).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"{info.plural} is forbidden: unable to create new content in namespace {ns} "
                "because it is being terminated",
                details={"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating"}]},
            )

    def _dump(self, info: ResourceInfo, rec: Record, neg: Negotiated) -> bytes:
        if neg.table:
            from . import tables

            return orjson.dumps(
                tables.to_table(info, [rec.obj], resource_version=str(rec.rv), now=dt.datetime.now(dt.UTC))
            )
        if neg.partial:
            return orjson.dumps(_partial(rec.obj))
        return rec.data

    # ---- reads ------------------------------------------------------------------------------

    async def get(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        if t.info.key == "pods" and t.subresource in _STREAMING_SUBRESOURCES:
            return await self.pod_stream(t, request, ident)
        self.authorize(ident, Attributes("get", t.info, t.namespace, t.name, t.subresource))
        rec = self._load(t)
        if t.subresource == "scale":
            return json_response(_scale_of(t.info, rec.obj))
        if t.subresource not in ("", "status"):
            raise method_not_allowed()
        return json_response(self._dump(t.info, rec, negotiate(request.headers.get("Accept", ""))))

    async def pod_stream(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        """pods/log, exec, attach, portforward: proxied to the pod's node (podstreams.py) when a node
        stream server is configured; the edge's MetaServer has none."""
        if self.pod_streams is not None:
            return await self.pod_streams.serve(t, request, ident)
        verb = "get" if t.subresource == "log" else "create"
        self.authorize(ident, Attributes(verb, t.info, t.namespace, t.name, t.subresource))
        self._load(t)
        raise service_unavailable(_NOT_ON_THIS_NODE.format(t.name))

    def _load(self, t: Target) -> Record:
        try:
            return self.store.get_now(t.info.key, t.namespace, t.name)
        except NotFound:
            raise not_found(t.info, t.name) from None

    def _predicate(self, info: ResourceInfo, q: Any) -> tuple[Predicate | None, FieldSelector | None]:
        try:
            ls = LabelSelector.parse(q.get("labelSelector", ""))
            fs = FieldSelector.parse(q.get("fieldSelector", ""))
            fs.validate_fields(supported_field_selectors(info.kind))
        except SelectorError as e:
            raise bad_request(str(e)) from None
        preds: list[Callable[[Obj], bool]] = []
        if not ls.empty():
            preds.append(lambda o: ls.matches((o.get("metadata") or {}).get("labels")))
        if fs.requirements():
            preds.append(fs.matches)
        if not preds:
            return None, fs
        if len(preds) == 1:
            return preds[0], fs
        return (lambda o: all(p(o) for p in preds)), fs

    async def list_or_watch(
        self, t: Target, request: web.Request, ident: Identity | None
    ) -> web.StreamResponse:
        q = request.query
        predicate, fs = self._predicate(t.info, q)
        watching = q.get("watch", "") in ("1", "true", "True")
        verb = "watch" if watching else "list"
        self.authorize(ident, Attributes(verb, t.info, t.namespace, "", "", field_selector=fs))
        ns = t.namespace or None
        neg = negotiate(request.headers.get("Accept", ""))
        if watching:
            return await serve_watch(self, t.info, ns, predicate, request, neg)
        limit = _int_param(q, "limit") or 0
        limit = min(limit, self.config.max_list_limit) if limit > 0 else 0
        at_rv: int | None = None
        after: tuple[str, str] | None = None
        cont = q.get("continue", "")
        if cont:
            at_rv, after = decode_continue(cont)
        else:
            rv = _rv_param(q.get("resourceVersion"))
            match = q.get("resourceVersionMatch", "")
            if match == "Exact" and rv is not None:
                at_rv = rv
            elif match not in ("", "NotOlderThan", "Exact"):
                raise bad_request(f"resourceVersionMatch: unsupported value {match!r}")
        try:
            res = await self.store.list(
                t.info.key, ns, predicate=predicate, limit=limit, at_rv=at_rv, after=after, decode=neg.table
            )
        except Expired:
            raise gone(
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter."
            ) from None
        token = encode_continue(res.rv, res.next_after) if res.next_after else ""
        if neg.table:
            from . import tables

            now = dt.datetime.now(dt.UTC)
            table = tables.to_table(
                t.info,
                [r.obj for r in res.items],
                resource_version=str(res.rv),
                continue_token=token,
                include_object=q.get("includeObject", "Metadata"),
                now=now,
            )
            return json_response(table)
        meta: Obj = {"resourceVersion": str(res.rv)}
        if token:
            meta["continue"] = token
        if neg.partial:
            body = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": [_partial(r.obj) for r in res.items],
            }
            return json_response(body)
        # Items are spliced in as stored bytes: no decode/encode of the objects on this path.
        head = orjson.dumps({"kind": t.info.list_kind, "apiVersion": t.info.api_version, "metadata": meta})
        return await send_list(request, head[:-1] + b',"items":[', [r.data for r in res.items])

    # ---- writes -----------------------------------------------------------------------------

    async def create(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        if t.info.key == "pods" and t.subresource in _STREAMING_SUBRESOURCES:
            return await self.pod_stream(t, request, ident)  # exec/attach/portforward over SPDY
        body = await self.read_body(request)
        obj = self.decode_body(body, request.content_type if request.body_exists else "", _expect(t))
        q = request.query
        if t.subresource:
            return await self.create_subresource(t, obj, ident, request)
        self.authorize(ident, Attributes("create", t.info, t.namespace, "", obj=obj))
        check_identity(t.info, obj, t.namespace, None)
        self.check_namespace(t.info, t.namespace, creating=True)
        warnings: list[str] = []
        rec = await self.create_object(t.info, t.namespace, obj, q, warnings)
        return with_warnings(json_response(self._dump(t.info, rec, Negotiated()), 201), warnings)

    async def create_object(
        self, info: ResourceInfo, ns: str, obj: Obj, q: Any, warnings: list[str] | None = None
    ) -> Record:
        """Create with all lifecycle rules; dry runs are validated but not stored.

        Unknown fields of `obj` are dropped (refused under fieldValidation=Strict); the warnings a
        fieldValidation=Warn request earns are appended to `warnings`.
        """
        from . import patch as patching

        self._check_field_validation(q)
        self._check_body_fields(info, obj, q, [] if warnings is None else warnings)
        generated = not (obj.get("metadata") or {}).get("name")
        for attempt in range(3):
            candidate = orjson.loads(orjson.dumps(obj)) if generated else obj
            prepare_create(info, candidate, ns)
            manager = q.get("fieldManager", "")
            if manager:
                patching.update_managed_fields(None, candidate, manager, "Update", now_rfc3339())
            self._special_create(info, candidate, dry_run=_dry_run(q))
            name = candidate["metadata"]["name"]
            if _dry_run(q):
                return Record(orjson.dumps(candidate), 0, candidate)
            try:
                rec = await self.store.create(info.key, ns if info.namespaced else "", name, candidate)
            except AlreadyExists:
                self._undo_special(info, candidate)
                if generated and attempt < 2:
                    continue
                raise already_exists(info, name) from None
            except BaseException:
                self._undo_special(info, candidate)
                raise
            self._after(info, "create", rec.obj)
            return rec
        raise AssertionError("unreachable")

    async def ensure(self, info: ResourceInfo, ns: str, doc: Obj) -> Record:
        """Create `doc`, or bring the stored object's spec to it (manifests applied at start)."""
        name = (doc.get("metadata") or {}).get("name", "")
        try:
            self.store.get_now(info.key, ns, name)
        except NotFound:
            return await self.create_object(info, ns, doc, {})
        spec = doc.get("spec")

        def mutate(cur: Obj) -> Obj | None:
            new = orjson.loads(orjson.dumps(cur))
            new["spec"] = orjson.loads(orjson.dumps(spec))
            new = prepare_update(info, new, cur)
            return None if unchanged(new, cur) else new

        return await self._update(Target(info, ns, name, ""), mutate, {})

    def _check_field_validation(self, q: Any) -> None:
        fv = q.get("fieldValidation", "")
        if fv not in ("", "Ignore", "Warn", "Strict"):
            raise bad_request(f"fieldValidation: invalid value {fv!r}, must be Ignore, Warn or Strict")

    def _check_body_fields(self, info: ResourceInfo, obj: Obj, q: Any, warnings: list[str]) -> None:
        """Unknown fields of a request body (checked before any defaulting, as upstream decodes)."""
        from . import schema as fieldschema

        causes, warns = fieldschema.check_fields(info, obj, q.get("fieldValidation", ""))
        if causes:
            raise fieldschema.strict_error(info, obj, causes)
        warnings.extend(warns)

    def _check_patched_fields(
        self, info: ResourceInfo, new: Obj, cur: Obj, q: Any, ct: str, body: bytes, warnings: list[str]
    ) -> None:
        """Unknown fields a merge/strategic/JSON patch brought in: upstream decodes the patched object
        and, under Strict, quotes the patch (strategic) or the whole patched object (the others)."""
        from . import patch as patching
        from . import schema as fieldschema

        mode = q.get("fieldValidation", "")
        shown = ""
        if mode == "Strict" and ct != patching.STRATEGIC:
            shown = orjson.dumps(new, option=orjson.OPT_SORT_KEYS).decode()
        causes, warns = fieldschema.check_fields(info, new, mode, current=cur)
        if causes:
            if ct == patching.STRATEGIC:
                shown = fieldschema.go_value(json.loads(body))
            raise fieldschema.patch_strict_error(shown, causes)
        warnings[:] = warns  # a retried mutate reports its last attempt only

    def _special_create(self, info: ResourceInfo, obj: Obj, dry_run: bool) -> None:
        if info.key == "services":
            self._allocate_service(info, obj, dry_run)

    def _undo_special(self, info: ResourceInfo, obj: Obj) -> None:
        if info.key == "services":
            self.alloc.release(obj)

    def _allocate_service(self, info: ResourceInfo, obj: Obj, dry_run: bool) -> None:
        spec = obj.setdefault("spec", {})
        name = obj["metadata"]["name"]
        try:
            stype = spec.get("type", "ClusterIP")
            if stype != "ExternalName" and spec.get("clusterIP") != "None":
                ip = self.alloc.allocate_ip(spec.get("clusterIP") or None)
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            elif spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            if stype in ("NodePort", "LoadBalancer"):
                for p in spec.get("ports") or ():
                    p["nodePort"] = self.alloc.allocate_port(p.get("nodePort"))
        except AllocationError as e:
            self.alloc.release(obj)
            raise invalid(
                info, name, [{"reason": "FieldValueInvalid", "message": str(e), "field": "spec.clusterIP"}]
            ) from None
        if dry_run:
            self.alloc.release(obj)

    def _after(self, info: ResourceInfo, op: str, obj: Obj) -> None:
        for hook in self.after_write.get(info.key, ()):
            try:
                hook(op, obj)
            except Exception:
                log.exception("after-%s hook for %s failed", op, info.key)

    async def replace(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        from . import patch as patching

        body = await self.read_body(request)
        obj = self.decode_body(body, request.content_type if request.body_exists else "", _expect(t))
        q = request.query
        self._check_field_validation(q)
        if t.subresource == "scale":
            return await self._write_scale(t, ident, lambda scale: obj, q)
        if t.subresource not in ("", "status", "finalize"):
            raise method_not_allowed()
        self.authorize(ident, Attributes("update", t.info, t.namespace, t.name, t.subresource, obj=obj))
        check_identity(t.info, obj, t.namespace, t.name)
        warnings: list[str] = []
        self._check_body_fields(t.info, obj, q, warnings)
        manager = q.get("fieldManager", "")
        sub = t.subresource

        def mutate(cur: Obj) -> Obj | None:
            new = orjson.loads(orjson.dumps(obj))
            check_precondition(t.info, new, cur)
            if sub == "finalize":
                fin = (new.get("spec") or {}).get("finalizers")
                new = orjson.loads(orjson.dumps(cur))
                new.setdefault("spec", {})["finalizers"] = fin or []
                return None if unchanged(new, cur) else new
            new = prepare_update(t.info, new, cur, sub)
            if manager:
                patching.update_managed_fields(cur, new, manager, "Update", now_rfc3339())
            return None if unchanged(new, cur) else new

        rec = await self._update(t, mutate, q)
        return with_warnings(json_response(self._dump(t.info, rec, Negotiated())), warnings)

    async def _update(self, t: Target, mutate: Callable[[Obj], Obj | None], q: Any) -> Record:
        from . import patch as patching

        key, ns = t.info.key, t.namespace
        if _dry_run(q):
            cur = self._load(t)
            new = mutate(cur.copy_obj())
            return cur if new is None else Record(orjson.dumps(new), cur.rv, new)
        try:
            rec = await self.store.guaranteed_update(key, ns, t.name, mutate)
        except NotFound:
            raise not_found(t.info, t.name) from None
        except patching.PatchError as e:
            raise ApiError(
                e.code, e.reason, str(e), details={"causes": e.causes} if e.causes else None
            ) from None
        self._after(t.info, "update", rec.obj)
        if ready_to_vanish(rec.obj):
            return await self._vanish(t.info, ns, t.name, rec)
        return rec

    async def _vanish(self, info: ResourceInfo, ns: str, name: str, rec: Record) -> Record:
        try:
            gone_rec = await self.store.delete(info.key, ns, name, expect_rv=rec.rv)
        except (NotFound, Conflict):
            return rec  # someone else finished (or changed) it; their write decides
        self._after(info, "delete", gone_rec.obj)
        return gone_rec

    async def patch(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        from . import patch as patching

        body = await self.read_body(request)
        ct = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        q = request.query
        self._check_field_validation(q)
        if ct not in (patching.MERGE, patching.STRATEGIC, patching.JSON_PATCH, patching.APPLY_YAML):
            raise unsupported_media(ct or "(none)")
        builtin = not t.info.crd
        if t.subresource == "scale":

            def scale_fn(scale: Obj) -> Obj:
                return patching.apply_patch(ct, scale, body, "Scale", True)

            return await self._write_scale(t, ident, scale_fn, q)
        if t.subresource not in ("", "status"):
            raise method_not_allowed()
        self.authorize(ident, Attributes("patch", t.info, t.namespace, t.name, t.subresource))
        manager = q.get("fieldManager", "")
        force = q.get("force", "") in ("true", "1")
        now = now_rfc3339()
        if ct == patching.APPLY_YAML and not manager:
            raise bad_request("PATCH with apply requires a fieldManager (the fieldManager query parameter)")
        applied: Obj | None = None
        warnings: list[str] = []
        if ct == patching.APPLY_YAML:
            applied = self.decode_body(body, "application/yaml")
            check_identity(t.info, applied, t.namespace, t.name)
            # The applied configuration is the request's whole intent: check it before merging.
            self._check_body_fields(t.info, applied, q, warnings)
        sub = t.subresource

        def mutate(cur: Obj) -> Obj | None:
            if applied is not None:
                new = patching.server_side_apply(cur, applied, t.info.kind, manager, force, now)
            else:
                new = patching.apply_patch(ct, cur, body, t.info.kind, builtin)
                require_dict(new, "the patched object")
                self._check_patched_fields(t.info, new, cur, q, ct, body, warnings)
                if manager:
                    patching.update_managed_fields(cur, new, manager, "Update", now)
            require_dict(new, "the patched object")
            check_precondition(t.info, new, cur)
            new = prepare_update(t.info, new, cur, sub)
            return None if unchanged(new, cur) else new

        try:
            rec = await self._update(t, mutate, q)
        except ApiError as e:
            if e.code == 404 and applied is not None and not sub:
                # Server-side apply creates what does not exist yet.
                self.check_namespace(t.info, t.namespace, creating=True)
                obj = patching.server_side_apply(None, applied, t.info.kind, manager, force, now)
                obj.setdefault("metadata", {})["name"] = t.name
                rec = await self.create_object(t.info, t.namespace, obj, {})
                return with_warnings(json_response(self._dump(t.info, rec, Negotiated()), 201), warnings)
            raise
        return with_warnings(json_response(self._dump(t.info, rec, Negotiated())), warnings)

    async def _write_scale(
        self, t: Target, ident: Identity | None, fn: Callable[[Obj], Obj], q: Any
    ) -> web.StreamResponse:
        if "scale" not in t.info.subresources:
            raise not_found(t.info, t.name)
        self.authorize(ident, Attributes("update", t.info, t.namespace, t.name, "scale"))

        def mutate(cur: Obj) -> Obj | None:
            scale = fn(_scale_of(t.info, cur))
            # Scale.spec.replicas is omitempty: a PUT of 0 replicas arrives without the field.
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or replicas < 0:
                raise invalid(
                    t.info,
                    t.name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "message": "must be a non-negative integer",
                            "field": "spec.replicas",
                        }
                    ],
                )
            want_rv = (scale.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != cur["metadata"].get("resourceVersion"):
                raise conflict(
                    t.info,
                    t.name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            new = orjson.loads(orjson.dumps(cur))
            new.setdefault("spec", {})["replicas"] = replicas
            new = prepare_update(t.info, new, cur)
            return None if unchanged(new, cur) else new

        rec = await self._update(t, mutate, q)
        return json_response(_scale_of(t.info, rec.obj))

    async def delete(self, t: Target, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        opts = await self._delete_options(request)
        if t.subresource:
            raise method_not_allowed()
        self.authorize(ident, Attributes("delete", t.info, t.namespace, t.name))
        rec = await self.delete_object(
            t.info, t.namespace, t.name, opts, _dry_run(request.query) or opts.get("dryRun")
        )
        return json_response(self._dump(t.info, rec, Negotiated()))

    async def _delete_options(self, request: web.Request) -> Obj:
        body = await self.read_body(request)
        opts: Obj = {}
        if body.strip():
            opts = self.decode_body(
                body, request.content_type if request.body_exists else "", ("v1", "DeleteOptions")
            )
        q = request.query
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = _int_param(q, "gracePeriodSeconds")
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("orphanDependents") in ("true", "false"):
            opts["orphanDependents"] = q["orphanDependents"] == "true"
        pol = opts.get("propagationPolicy")
        if pol not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(
                f"propagationPolicy: unsupported value {pol!r} (Background, Foreground, Orphan)"
            )
        return opts

    async def delete_object(
        self, info: ResourceInfo, ns: str, name: str, opts: Obj, dry_run: Any = False
    ) -> Record:
        """Kubernetes deletion: finalizers and graceful pods defer it; otherwise the object goes now."""
        key = info.key
        pre = opts.get("preconditions") or {}
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is True:
            policy = "Orphan"
        grace_opt = opts.get("gracePeriodSeconds")
        try:
            cur = self.store.get_now(key, ns, name)
        except NotFound:
            raise not_found(info, name) from None
        if dry_run:
            return cur
        outright = False

        def mutate(obj: Obj) -> Obj | None:
            nonlocal outright
            md = obj["metadata"]
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise conflict(
                    info,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {md.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
                raise conflict(
                    info, name, "Precondition failed: resourceVersion in precondition does not match"
                )
            fins = list(md.get("finalizers") or [])
            if (
                policy == "Foreground"
                and "foregroundDeletion" not in fins
                and _has_dependents_semantics(info)
            ):
                fins.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in fins and _has_dependents_semantics(info):
                fins.append("orphan")
            grace = _grace(info, obj, grace_opt)
            blocked = bool(fins) or (key == "namespaces" and bool((obj.get("spec") or {}).get("finalizers")))
            outright = not blocked and grace == 0
            if outright:
                return None  # delete outright (below)
            already = md.get("deletionTimestamp")
            if (
                already
                and int(md.get("deletionGracePeriodSeconds") or 0) <= grace
                and not (set(fins) - set(md.get("finalizers") or []))
            ):
                return None  # already deleting, and this request would not shorten it
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
            if not already or grace < int(md.get("deletionGracePeriodSeconds") or 0):
                md["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            md["deletionGracePeriodSeconds"] = grace
            md["finalizers"] = fins
            if not fins:
                md.pop("finalizers")
            if key == "namespaces":
                obj.setdefault("status", {})["phase"] = "Terminating"
            return obj

        try:
            rec = await self.store.guaranteed_update(key, ns, name, mutate)
        except NotFound:
            raise not_found(info, name) from None
        if not outright and not ready_to_vanish(rec.obj):
            self._after(info, "update", rec.obj)
            return rec
        try:
            gone_rec = await self.store.delete(key, ns, name, expect_rv=rec.rv)
        except NotFound:
            raise not_found(info, name) from None
        except Conflict:
            raise conflict(info, name, "the object changed while it was being deleted; try again") from None
        self._after(info, "delete", gone_rec.obj)
        return gone_rec

    async def delete_collection(
        self, t: Target, request: web.Request, ident: Identity | None
    ) -> web.StreamResponse:
        predicate, fs = self._predicate(t.info, request.query)
        self.authorize(ident, Attributes("deletecollection", t.info, t.namespace, "", field_selector=fs))
        opts = await self._delete_options(request)
        res = await self.store.list(t.info.key, t.namespace or None, predicate=predicate)
        done: list[bytes] = []
        for r in res.items:
            md = r.obj["metadata"]
            try:
                rec = await self.delete_object(
                    t.info, md.get("namespace", ""), md["name"], opts, _dry_run(request.query)
                )
            except ApiError as e:
                if e.code == 404:
                    continue
                raise
            done.append(rec.data)
        head = orjson.dumps(
            {
                "kind": t.info.list_kind,
                "apiVersion": t.info.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
            }
        )
        return json_response(b"".join((head[:-1], b',"items":[', b",".join(done), b"]}")))

    # ---- subresources created by POST --------------------------------------------------------

    async def create_subresource(
        self, t: Target, obj: Obj, ident: Identity | None, request: web.Request
    ) -> web.StreamResponse:
        if t.info.key == "pods" and t.subresource == "binding":
            self.authorize(ident, Attributes("create", t.info, t.namespace, t.name, "binding", obj=obj))
            return await self._bind(t, obj)
        if t.info.key == "pods" and t.subresource == "eviction":
            self.authorize(ident, Attributes("create", t.info, t.namespace, t.name, "eviction", obj=obj))
            opts = obj.get("deleteOptions") or {}
            await self.delete_object(t.info, t.namespace, t.name, opts)
            return json_response(status_obj(201, "", "", success=True), 201)
        if t.info.key == "serviceaccounts" and t.subresource == "token" and self.sa_tokens is not None:
            self.authorize(ident, Attributes("create", t.info, t.namespace, t.name, "token", obj=obj))
            tr = self.sa_tokens.token_request(
                t.info, t.namespace, t.name, obj, ident, _dry_run(request.query)
            )
            return json_response(tr, 201)
        raise method_not_allowed(f"the server does not allow POST on {t.info.plural}/{t.subresource}")

    async def _bind(self, t: Target, binding: Obj) -> web.StreamResponse:
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid(
                t.info,
                t.name,
                [{"reason": "FieldValueRequired", "message": "Required value", "field": "target.name"}],
            )
        if target.get("kind", "Node") != "Node":
            raise invalid(
                t.info,
                t.name,
                [{"reason": "FieldValueNotSupported", "message": "must be Node", "field": "target.kind"}],
            )
        now = now_rfc3339()

        def mutate(cur: Obj) -> Obj | None:
            spec = cur.setdefault("spec", {})
            want_uid = (binding.get("metadata") or {}).get("uid")
            if want_uid and want_uid != cur["metadata"].get("uid"):
                raise conflict(t.info, t.name, "the object might have been deleted and then recreated")
            if cur["metadata"].get("deletionTimestamp"):
                raise conflict(t.info, t.name, "pod is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise conflict(
                    t.info, t.name, f'pod {t.name} is already assigned to node "{spec["nodeName"]}"'
                )
            spec["nodeName"] = node
            status = cur.setdefault("status", {})
            conds = [c for c in status.get("conditions") or () if c.get("type") != "PodScheduled"]
            conds.append(
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            )
            status["conditions"] = conds
            return cur

        try:
            await self.store.guaranteed_update(t.info.key, t.namespace, t.name, mutate)
        except NotFound:
            raise not_found(t.info, t.name) from None
        return json_response(status_obj(201, "", "", success=True), 201)


_SUBRESOURCE_KINDS = {
    "binding": ("v1", "Binding"),
    "eviction": ("policy/v1", "Eviction"),
    "scale": ("autoscaling/v1", "Scale"),
    "token": ("authentication.k8s.io/v1", "TokenRequest"),
}


def _expect(t: Target) -> tuple[str, str]:
    """The (apiVersion, kind) a request body for this target should carry."""
    return _SUBRESOURCE_KINDS.get(t.subresource, (t.info.api_version, t.info.kind))


def _dry_run(q: Any) -> bool:
    return bool(q.get("dryRun"))


def _has_dependents_semantics(info: ResourceInfo) -> bool:
    return info.key not in ("events",)


def _grace(info: ResourceInfo, obj: Obj, requested: Any) -> int:
    """Seconds of grace a deletion gets: only pods on a node have any."""
    if info.key != "pods":
        return 0
    spec = obj.get("spec") or {}
    if not spec.get("nodeName"):
        return 0
    if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, int(requested))
    g = spec.get("terminationGracePeriodSeconds")
    return 30 if g is None else max(0, int(g))


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def _scale_of(info: ResourceInfo, obj: Obj) -> Obj:
    md = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
            "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(sel.items())),
        },
    }


__all__ = ["Negotiated", "ResourceApi", "Target", "json_response", "negotiate"]
