"""MetaServer: the API server's routing and read handlers over the EDGE store, on 127.0.0.1:10550.

Like KubeEdge's MetaServer, local applications and EdgeMesh list/get/watch the objects the
MetaManager holds, with kubectl or any Kubernetes client, while the cloud is unreachable:

- plain HTTP, and only on a loopback address unless ``allow_non_loopback`` is set explicitly
  (there is no authentication: every loopback client gets the read-only LOCAL identity);
- discovery (/api, /apis, aggregated), /version, /healthz, OpenAPI v3, and get/list/watch of every
  resource the registry knows (built-ins plus the CRDs in the project's manifests, e.g. devices), with
  selectors, pagination, watch resume, bookmarks and Table output, exactly as the API server serves them;
- objects are served as the MetaManager stored them. Their ``metadata.resourceVersion`` is the EDGE
  store's revision (not the cloud's, which is in the ``edge.kubeedge.io/cloud-resource-version``
  annotation): list/watch resume and continue tokens work against the edge store's history, so a
  resourceVersion from the cloud API means nothing here, and one from here nothing to the cloud;
- writes (POST/PUT/PATCH/DELETE) are forwarded to the cloud over the node's connection, which performs
  them *as the node* (so the node's rules apply: its own Node, Lease, pod statuses, events...), and the
  cloud's answer is returned as is; the edge store sees the result when the cloud syncs it down. While
  the cloud is unreachable writes get a 503 Status saying so (reads keep working).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from kubeedge.apiserver.allocator import ServiceAllocator
from kubeedge.apiserver.auth import Attributes, Authorizer, Identity
from kubeedge.apiserver.crds import CrdServing
from kubeedge.apiserver.errors import ApiError, forbidden, service_unavailable
from kubeedge.apiserver.nodegraph import NodeGraph
from kubeedge.apiserver.resources import Registry
from kubeedge.apiserver.rest import ResourceApi, Target
from kubeedge.apiserver.routes import ApiRoutes, manifests
from kubeedge.beehive.apirequest import MAX_BODY_BYTES, ApiReply, ApiRequest, ApiRequestError
from kubeedge.store import Store

log = logging.getLogger(__name__)

DEFAULT_SERVER: Final = "127.0.0.1:10550"
READ_ONLY_MESSAGE: Final = (
    "MetaServer is read-only at the edge: write through the cloud API "
    "(forwarding local writes is not configured on this node)"
)
OFFLINE_MESSAGE: Final = (
    "the cloud is unreachable: writes are forwarded to the cloud and cannot be made offline "
    "(reads keep working from the edge store); retry after the node reconnects"
)
# Performs a forwarded write; raises ConnectionError when the cloud is not connected.
Forwarder = Callable[[ApiRequest], Awaitable[ApiReply]]
READ_VERBS: Final = frozenset({"get", "list", "watch"})
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Who every accepted client is: the MetaServer authenticates nobody, so it grants reads only.
LOCAL_IDENTITY: Final = Identity("system:metaserver:local", ("system:authenticated",), "metaserver-local")
# Service allocation is a write-path concern; the ResourceApi wants one, so it gets an idle one.
_UNUSED_SERVICE_CIDR: Final = "10.96.0.0/12"
_UNUSED_NODE_PORTS: Final = (30000, 32767)


class MetaServerError(ValueError):
    """An invalid MetaServer configuration; the text says which setting."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MetaServerConfig:
    host: str = "127.0.0.1"
    port: int = 10550  # 0 picks a free port (tests)
    # Serving unauthenticated reads beyond this host is a deliberate choice, never a default.
    allow_non_loopback: bool = False
    # The ResourceApi's limits, as in ApiServerConfig (bodies are those of forwarded writes).
    max_body_bytes: int = MAX_BODY_BYTES
    max_list_limit: int = 100_000
    max_watch_seconds: int = 1800
    bookmark_interval: float = 30.0
    # Edge watch traffic is small: send each event at once rather than batching for throughput.
    watch_linger: float = 0.0

    def __post_init__(self) -> None:
        if not self.host:
            raise MetaServerError("metaServer: the listen host must not be empty")
        if not 0 <= self.port < 65536:
            raise MetaServerError(f"metaServer: port {self.port} is out of range")
        if not self.allow_non_loopback and not is_loopback(self.host):
            raise MetaServerError(
                f"metaServer: refusing to listen on non-loopback address {self.host!r}: it serves the edge "
                "store without authentication (listen on 127.0.0.1, or allow it explicitly)"
            )
        if self.max_body_bytes < 1024 or self.max_list_limit < 1 or self.max_watch_seconds < 1:
            raise MetaServerError("metaServer: limits must be positive (body at least 1024 bytes)")
        if self.bookmark_interval <= 0 or self.watch_linger < 0:
            raise MetaServerError("metaServer: bookmark_interval must be > 0 and watch_linger >= 0")

    @classmethod
    def from_address(cls, server: str, *, allow_non_loopback: bool = False) -> MetaServerConfig:
        """From edgecore.yaml's ``metaServer.server`` (``<host>:<port>``)."""
        host, sep, port = server.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise MetaServerError(f"metaServer.server {server!r} is not <host>:<port>")
        return cls(host=host, port=int(port), allow_non_loopback=allow_non_loopback)


class ReadOnlyAuthorizer(Authorizer):
    """Reads for the local identity; anything else is forbidden (writes are refused before this)."""

    def __init__(self) -> None:
        super().__init__(NodeGraph())

    def authorize(self, ident: Identity | None, a: Attributes) -> None:
        if ident != LOCAL_IDENTITY or a.verb not in READ_VERBS:
            raise forbidden(f"MetaServer serves only get, list and watch (not {a.verb})", a.info, a.name)


class MetaServer(ApiRoutes):
    def __init__(
        self, store: Store, config: MetaServerConfig | None = None, forward: Forwarder | None = None
    ) -> None:
        self.config = config or MetaServerConfig()
        self.forward = forward
        self.store = store
        self.registry = Registry()
        # Custom resources the edge stores (devices, device models) are served from the project's CRD
        # manifests: the edge store holds their objects but not the CRDs themselves.
        self.crds = CrdServing(self.registry)
        for _, doc in manifests(None):
            if doc.get("kind") == "CustomResourceDefinition":
                self.crds.on_write("create", doc)
        self.api = ResourceApi(
            store,
            self.registry,
            ReadOnlyAuthorizer(),
            ServiceAllocator(_UNUSED_SERVICE_CIDR, _UNUSED_NODE_PORTS),
            self.config,
        )
        self._discovery_cache = {}
        self._runner: web.AppRunner | None = None
        self.port = self.config.port
        self.url = ""

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for addr in runner.addresses:  # the real port when listening on port 0
            self.port = int(addr[1])
            break
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"http://{host}:{self.port}"
        log.info("MetaServer serving the edge store (read-only) on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        """For a Supervisor: serve until cancelled (a failed bind raises, and is retried with backoff)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ---- HTTP ----------------------------------------------------------------------------------

    def _identity(self, request: web.Request) -> Identity | None:
        # Defence in depth: the socket is loopback-only unless allowed, but check the peer as well.
        if self.config.allow_non_loopback or is_loopback(request.remote or ""):
            return LOCAL_IDENTITY
        raise ApiError(403, "Forbidden", "MetaServer serves loopback clients only")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            return await self._forward(request)
        return await super()._dispatch(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self._identity(request)  # loopback check, as for reads
        if self.forward is None:
            raise service_unavailable(READ_ONLY_MESSAGE)
        body = await request.read()  # bounded by client_max_size
        try:
            req = ApiRequest(request.method, request.path_qs, request.content_type or "", body)
        except ApiRequestError as e:
            raise ApiError(400, "BadRequest", f"cannot forward this request: {e}") from None
        try:
            reply = await self.forward(req)
        except (ConnectionError, TimeoutError) as e:
            log.info(
                "MetaServer: %s %s from %s not forwarded: %s", req.method, request.path, request.remote, e
            )
            raise service_unavailable(OFFLINE_MESSAGE) from None
        return web.Response(status=reply.code, body=reply.body, content_type=_mime(reply.content_type))

    async def _resource(self, request: web.Request, t: Target, ident: Identity) -> web.StreamResponse:
        if request.method not in READ_METHODS:  # also refused in _dispatch; kept for subclasses
            raise service_unavailable(READ_ONLY_MESSAGE)
        return await super()._resource(request, t, ident)


def _mime(content_type: str) -> str:
    """aiohttp wants the media type alone (a charset parameter is passed separately)."""
    return content_type.split(";", 1)[0].strip() or "application/json"


__all__ = [
    "DEFAULT_SERVER",
    "LOCAL_IDENTITY",
    "OFFLINE_MESSAGE",
    "READ_ONLY_MESSAGE",
    "Forwarder",
    "MetaServer",
    "MetaServerConfig",
    "MetaServerError",
    "ReadOnlyAuthorizer",
    "is_loopback",
]
