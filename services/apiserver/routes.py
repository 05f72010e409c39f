"""Routing, discovery and OpenAPI shared by the API server and the edge's MetaServer.

Kept apart from `server` (TLS, PKI, service-account tokens, bootstrap) so that the MetaServer, which
serves reads only, does not load the write and signing machinery at the edge.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from . import discovery
from .auth import Identity
from .errors import ApiError, internal, not_found
from .resources import Registry
from .rest import ResourceApi, Target, json_response

log = logging.getLogger(__name__)

Obj = dict[str, Any]
VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-kubeedge",
    "gitCommit": "kubeedge-py",
    "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": f"linux/{'arm64' if platform.machine() in ('aarch64', 'arm64') else 'amd64'}",
}
AGGREGATED = "apidiscovery.k8s.io"


class ApiRoutes:
    """Routing, discovery and OpenAPI over a Registry and a ResourceApi. Subclasses say who is asking
    (`_identity`); the API server and the edge's MetaServer both serve through it."""

    registry: Registry
    api: ResourceApi
    _discovery_cache: dict[str, tuple[int, bytes]]

    def _identity(self, request: web.Request) -> Identity | None:
        raise NotImplementedError

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            resp = await handler(request)
        except ApiError as e:
            if e.code >= 500:
                log.warning("%s %s from %s: %s", request.method, request.path, request.remote, e.message)
            resp = web.Response(
                body=e.body(), status=e.code, content_type="application/json", headers=e.headers
            )
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:
            log.exception("%s %s from %s failed", request.method, request.path, request.remote)
            err = internal(f"internal error: {type(e).__name__}")
            resp = web.Response(body=err.body(), status=500, content_type="application/json")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %s in %.1fms",
                request.method,
                request.path_qs,
                resp.status,
                (time.perf_counter() - started) * 1000,
            )
        return resp

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        ident = self._identity(request)
        if ident is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return json_response(VERSION)
        if path == "/api":
            return self._discovery(request, "api")
        if path == "/apis":
            return self._discovery(request, "apis")
        if path.startswith("/openapi/"):
            return self._openapi(path)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                g = discovery.api_group(self.registry, parts[1])
                if g is None:
                    raise ApiError(
                        404, "NotFound", f"the server could not find the requested resource ({path})"
                    )
                return json_response(g)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            doc = discovery.api_resource_list(self.registry, group, version)
            if doc is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return json_response(doc)
        target = self._target(group, version, rest)
        return await self._resource(request, target, ident)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        def info_for(plural: str) -> Any:
            info = self.registry.get(group, version, plural)
            if info is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return info

        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            ns = rest[1]
            info = info_for(rest[2])
            if not info.namespaced:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            name = rest[3] if len(rest) > 3 else ""
            sub = rest[4] if len(rest) > 4 else ""
            if len(rest) > 5:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return Target(info, ns, name, sub)
        info = info_for(rest[0])
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (info.namespaced and name):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(info, "", name, sub)

    async def _resource(self, request: web.Request, t: Target, ident: Identity) -> web.StreamResponse:
        m = request.method
        api = self.api
        if t.subresource and t.subresource not in t.info.subresources:
            raise not_found(t.info, t.name)
        if not t.name:
            if m == "GET":
                return await api.list_or_watch(t, request, ident)
            if m == "POST":
                return await api.create(t, request, ident)
            if m == "DELETE":
                return await api.delete_collection(t, request, ident)
            raise ApiError(405, "MethodNotAllowed", f"{m} is not supported on a collection")
        if m == "GET":
            return await api.get(t, request, ident)
        if m == "PUT":
            return await api.replace(t, request, ident)
        if m == "PATCH":
            return await api.patch(t, request, ident)
        if m == "DELETE":
            return await api.delete(t, request, ident)
        if m == "POST" and t.subresource:
            return await api.create(t, request, ident)
        raise ApiError(405, "MethodNotAllowed", f"{m} is not supported on {t.info.plural}")

    def _discovery(self, request: web.Request, which: str) -> web.Response:
        accept = request.headers.get("Accept", "")
        aggregated = False
        for part in accept.split(","):
            if AGGREGATED in part and "APIGroupDiscoveryList" in part:
                aggregated = True
                break
            if part.split(";")[0].strip() in ("application/json", "*/*"):
                break
        key = f"{which}:{aggregated}"
        cached = self._discovery_cache.get(key)
        if cached is None or cached[0] != self.registry.generation:
            if aggregated:
                doc = discovery.aggregated_discovery(self.registry, core=which == "api")
            elif which == "api":
                doc = discovery.api_versions()
            else:
                doc = discovery.api_group_list(self.registry)
            cached = (self.registry.generation, orjson.dumps(doc))
            self._discovery_cache[key] = cached
        ctype = "application/json"
        if aggregated:
            ctype = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        return web.Response(body=cached[1], headers={"Content-Type": ctype})

    def _openapi(self, path: str) -> web.Response:
        # The OpenAPI builder is only needed once a client asks for it (kubectl explain, apply).
        from . import openapi

        if path == "/openapi/v3":
            key = "openapi-index"
            cached = self._discovery_cache.get(key)
            if cached is None or cached[0] != self.registry.generation:
                cached = (self.registry.generation, orjson.dumps(openapi.openapi_v3_index(self.registry)))
                self._discovery_cache[key] = cached
            return web.Response(body=cached[1], content_type="application/json")
        if path.startswith("/openapi/v3/"):
            sub = path[len("/openapi/v3/") :]
            key = f"openapi:{sub}"
            cached = self._discovery_cache.get(key)
            if cached is None or cached[0] != self.registry.generation:
                doc = openapi.openapi_v3_document(self.registry, sub)
                if doc is None:
                    raise ApiError(404, "NotFound", f"no OpenAPI document for {sub}")
                cached = (self.registry.generation, orjson.dumps(doc))
                self._discovery_cache[key] = cached
            return web.Response(body=cached[1], content_type="application/json")
        raise ApiError(404, "NotFound", "the server serves OpenAPI v3 only (/openapi/v3)")


def manifests(mdir: Path | None) -> list[tuple[Path, Obj]]:
    """Documents of the manifests to apply at start (default: the project's manifests/crds)."""
    if mdir is None:
        cand = Path(__file__).resolve().parents[2] / "manifests" / "crds"
        mdir = cand if cand.is_dir() else None
    if mdir is None or not mdir.is_dir():
        return []
    return [
        (f, doc)
        for f in sorted(mdir.glob("*.y*ml"))
        for doc in yaml.safe_load_all(f.read_text())
        if isinstance(doc, dict)
    ]


__all__ = ["AGGREGATED", "VERSION", "ApiRoutes", "manifests"]
