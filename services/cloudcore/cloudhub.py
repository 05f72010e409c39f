"""cloudhub: the websocket server edge nodes dial (mTLS, one session per node), implementing ``Hub``.

Identity comes from the client certificate (CN ``system:node:<name>``, O ``system:nodes``, signed by our
CA) and must equal the ``node_id`` header; the path is ignored (KubeEdge dials
``/<projectID>/<nodeName>/events``). Every refusal is an HTTP 403 with a text reason, before upgrading.

Replacement: a second connection for a node closes the first (code 4000, "replaced by a newer
connection"); modules then see ``node_disconnected`` for the old session *before* ``node_connected`` for
the new one, so every connect is paired with exactly one disconnect, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509

from kubeedge.beehive import MAX_FRAME_BYTES, Message
from kubeedge.pki import certs
from kubeedge.pki.bootstrap import NODE_CN_PREFIX, NODES_GROUP, is_dns1123_subdomain

from .hubapi import NodeEvents
from .session import (
    CLOSE_GOING_AWAY,
    CLOSE_REPLACED,
    REASON_REPLACED,
    REASON_SHUTDOWN,
    Counters,
    HubWebSocket,
    Session,
)

log = logging.getLogger(__name__)

NODE_ID_HEADER = "node_id"


@dataclass(frozen=True)
class CloudHubConfig:
    host: str = "0.0.0.0"
    port: int = 10000
    # The edge sends a keepalive every 15 s; two missed ones and the session is dead (KubeEdge: 30 s).
    keepalive_timeout: float = 30.0
    # Per-node downstream queue; a node that does not read fills it and senders wait, then drop.
    send_queue_limit: int = 1000
    send_timeout: float = 5.0
    # Upstream pacing per node. A KubeEdge edge limits itself to 30 qps burst 60, so this never slows a
    # well-behaved node; above it messages are delayed, and a node kept above it for
    # rate_limit_flood_seconds is closed.
    rate_limit_qps: float = 50.0
    rate_limit_burst: int = 100
    rate_limit_flood_seconds: float = 10.0
    max_frame_bytes: int = 8 * 1024 * 1024
    # Consecutive undecodable frames tolerated before the session is closed with 1007.
    max_bad_frames: int = 10
    # TLS handshake deadline for a new connection (slow or stalled clients do not hold a slot).
    handshake_timeout: float = 10.0
    # How long a close handshake may take before the transport is dropped.
    close_timeout: float = 5.0
    backlog: int = 1024
    # KubeEdge's nodeLimit: connections from further nodes are refused (a reconnecting node that
    # already has a session always gets through). 0 = no limit.
    node_limit: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 0..65535")
        for name in (
            "keepalive_timeout",
            "send_timeout",
            "rate_limit_qps",
            "rate_limit_flood_seconds",
            "handshake_timeout",
            "close_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("send_queue_limit", "rate_limit_burst", "max_bad_frames", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.node_limit < 0:
            raise ValueError("node_limit must be >= 0 (0 = no limit)")
        if not 1024 <= self.max_frame_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"max_frame_bytes must be within 1024..{MAX_FRAME_BYTES}")


@dataclass(frozen=True)
class NodeStats:
    queue_depth: int
    messages_in: int
    messages_out: int
    dropped: int
    bad_frames: int


@dataclass(frozen=True)
class HubStats:
    connected: int
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    # Totals over the hub's lifetime, ended sessions included.
    messages_in: int = 0
    messages_out: int = 0
    dropped: int = 0
    bad_frames: int = 0
    refused: int = 0


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def node_from_request(request: web.Request) -> str:
    """The node this (TLS-verified) request speaks for, or Refused saying why not."""
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:  # not reachable with CERT_REQUIRED; kept so a config change cannot open the door
        raise Refused("no client certificate")
    user, groups = certs.subject_identity(x509.load_der_x509_certificate(der))
    if not user.startswith(NODE_CN_PREFIX):
        raise Refused(f"client certificate CN {user[:64]!r} is not a node identity ({NODE_CN_PREFIX}<name>)")
    if NODES_GROUP not in groups:
        raise Refused(f"client certificate is not in the group (O) {NODES_GROUP}")
    node = user[len(NODE_CN_PREFIX) :]
    if not is_dns1123_subdomain(node):
        raise Refused(f"client certificate node name {node[:64]!r} is not a valid DNS-1123 subdomain")
    header = request.headers.get(NODE_ID_HEADER, "")
    if not header:
        raise Refused(f"missing {NODE_ID_HEADER} header")
    if header != node:
        raise Refused(
            f"{NODE_ID_HEADER} header {header[:64]!r} does not match the client certificate's node {node!r}"
        )
    return node


class CloudHub:
    """The ``Hub``: serves edge websockets, one ``Session`` per node."""

    def __init__(
        self, config: CloudHubConfig, ca: certs.KeyPair, serving: certs.KeyPair, events: NodeEvents
    ) -> None:
        self.config = config
        self.ca = ca
        self.serving = serving
        self.events = events
        self.port = config.port
        self._sessions: dict[str, Session] = {}
        # Every session still running its handler, the replaced and closing ones too (for stop()).
        self._live: set[Session] = set()
        self._retired = Counters()
        self._refused = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        certs.load_cert_chain(ctx, self.serving)
        ctx.load_verify_locations(cadata=self.ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED  # only nodes holding a certificate from our CA get in
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5)
        await self._runner.setup()
        assert self._runner.server is not None
        # Our own listener instead of a TCPSite: TCPSite cannot set the TLS handshake deadline.
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server,
            self.config.host,
            self.config.port,
            ssl=self._ssl_context(),
            ssl_handshake_timeout=self.config.handshake_timeout,
            backlog=self.config.backlog,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("cloudhub serving on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections
        live = list(self._live)
        await asyncio.gather(*(s.close(CLOSE_GOING_AWAY, REASON_SHUTDOWN) for s in live))
        for s in live:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.close_timeout):
                    await s.finished.wait()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("cloudhub stopped")

    # ---- Hub ---------------------------------------------------------------------------------------

    def connected(self, node: str) -> bool:
        s = self._sessions.get(node)
        return s is not None and not s.closing

    async def send(self, node: str, msg: Message) -> bool:
        """Queue ``msg`` for ``node``: False when it is not connected, or when its queue stayed full
        for ``send_timeout`` (dropped; the caller keeps it for a resend either way)."""
        s = self._sessions.get(node)
        if s is None or s.closing:
            return False
        return await s.send(msg)

    def nodes(self) -> list[str]:
        return sorted(n for n, s in self._sessions.items() if not s.closing)

    def stats(self) -> HubStats:
        totals = Counters()
        totals.add(self._retired)
        for s in self._live:
            totals.add(s.counters)
        per_node = {
            n: NodeStats(
                queue_depth=s.queue_depth,
                messages_in=s.counters.messages_in,
                messages_out=s.counters.messages_out,
                dropped=s.counters.dropped,
                bad_frames=s.counters.bad_frames,
            )
            for n, s in self._sessions.items()
        }
        return HubStats(
            connected=len(self.nodes()),
            nodes=per_node,
            messages_in=totals.messages_in,
            messages_out=totals.messages_out,
            dropped=totals.dropped,
            bad_frames=totals.bad_frames,
            refused=self._refused,
        )

    # ---- connections -------------------------------------------------------------------------------

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        self._refused += 1
        log.warning("cloudhub: refused %s from %s: %s", request.path, request.remote, reason)
        return web.Response(status=status, text=reason + "\n")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            node = node_from_request(request)
        except Refused as e:
            return self._refuse(request, 403, e.reason)
        ws = HubWebSocket(
            max_frame_bytes=self.config.max_frame_bytes,
            autoping=False,  # protocol pings are answered by the session, and count as liveness
            timeout=self.config.close_timeout,
        )
        if not ws.can_prepare(request).ok:
            return self._refuse(request, 400, "a websocket upgrade is required")
        limit = self.config.node_limit
        if limit and node not in self._sessions and len(self._sessions) >= limit:
            return self._refuse(
                request, 503, f"node limit {limit} reached (cloudcore: raise modules.cloudHub.nodeLimit)"
            )
        await ws.prepare(request)
        session = Session(
            node, ws, str(request.remote), request.transport, self.config, self.events, self._session_closing
        )
        old = self._sessions.get(node)
        self._sessions[node] = session
        self._live.add(session)
        log.info("cloudhub: node %s connected from %s", node, request.remote)
        try:
            if old is not None:
                await old.close(CLOSE_REPLACED, REASON_REPLACED)
                await old.finished.wait()  # its disconnect is reported before our connect
            if not session.closing:  # not replaced in turn while waiting
                await session.serve()
        finally:
            if self._sessions.get(node) is session:
                del self._sessions[node]
            self._live.discard(session)
            self._retired.add(session.counters)
            session.finished.set()
        return ws

    def _session_closing(self, session: Session) -> None:
        # connected() turns False before node_disconnected is reported; a newer session stays put.
        if self._sessions.get(session.node) is session:
            del self._sessions[session.node]
