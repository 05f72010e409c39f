"""cloudstream (KubeEdge's CloudStream): the tunnel server edges dial (:10004) and a kubelet-style
HTTPS server for the API server (:10003) whose requests become streams through the node's tunnel.

Tunnel: mTLS, the node is the client certificate's CN (`system:node:<name>`, O `system:nodes`); one
tunnel per node, a reconnect replaces the old one. Stream server: mTLS too, and only the API server's
client certificate (or an admin's) is served; the node a request is for comes in `NODE_HEADER`.

Routes: `/containerLogs/{ns}/{pod}/{container}` (plain text, streamed), `/exec/{ns}/{pod}/{container}`
and `/attach/...` (websocket, channel-framed as `v5.channel.k8s.io`), `/portForward/{ns}/{pod}?port=N`
(websocket, one per forwarded connection), `/connected/{node}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSMsgType, web
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge

from kubeedge.pki import certs
from kubeedge.pki.bootstrap import is_dns1123_subdomain
from kubeedge.streaming import channels as ch
from kubeedge.streaming import tunnel as tn
from kubeedge.streaming.tunnel import StreamClosed, StreamError, Tunnel, TunnelStream

log = logging.getLogger(__name__)

CONNECT_PATH: Final = "/v1/kubeedge/connect"
NODE_HEADER: Final = "Kubeedge-Node"
ERROR_HEADER: Final = "Kubeedge-Stream-Error"
HOSTNAME_HEADER: Final = "SessionHostNameOverride"
NODE_CN_PREFIX: Final = "system:node:"
NODES_GROUP: Final = "system:nodes"
ADMIN_GROUP: Final = "system:masters"
# The API server's client certificate for the stream server (kube-apiserver's kubelet-client name).
APISERVER_CLIENT_CN: Final = "kube-apiserver-kubelet-client"
# How long the edge may take to accept a stream (find the pod, ask the runtime).
ACCEPT_TIMEOUT_S: Final = 30.0
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0
WS_HEARTBEAT_S: Final = 15.0
KINDS: Final = {"containerLogs": tn.LOGS, "exec": tn.EXEC, "attach": tn.ATTACH, "portForward": tn.PORTFORWARD}


@dataclass(frozen=True)
class CloudStreamConfig:
    tunnel_host: str = "0.0.0.0"
    tunnel_port: int = 10004
    stream_host: str = "127.0.0.1"
    stream_port: int = 10003
    max_streams_per_node: int = tn.DEFAULT_MAX_STREAMS
    window: int = tn.DEFAULT_WINDOW


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.streams = Counter(
            "cloudcore_streams",
            "Streams to edge nodes by kind and outcome",
            ["kind", "outcome"],
            registry=reg,
        )
        self.active = Gauge("cloudcore_streams_active", "Streams open now", registry=reg)
        self.tunnels = Gauge("cloudcore_stream_tunnels", "Edge nodes with a stream tunnel now", registry=reg)
        self.refused = Counter(
            "cloudcore_stream_tunnels_refused", "Tunnel connections refused (identity)", registry=reg
        )


def _peer(request: web.Request) -> tuple[str, list[str]]:
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return "", []
    return certs.subject_identity(x509.load_der_x509_certificate(der))


def _server_ssl(ca: certs.KeyPair, serving: certs.KeyPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    certs.load_cert_chain(ctx, serving)
    ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _error(code: int, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    }
    # The message is repeated in a header: a client's failed websocket handshake keeps no body.
    header = message.encode("ascii", "replace").decode()[:1000].replace("\r", " ").replace("\n", " ")
    return web.json_response(body, status=code, headers={ERROR_HEADER: header})


class CloudStream:
    def __init__(
        self,
        config: CloudStreamConfig,
        ca: certs.KeyPair,
        serving: certs.KeyPair,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.ca = ca
        self.serving = serving
        self.metrics = StreamMetrics(registry)
        self.tunnels: dict[str, Tunnel] = {}
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.AbstractServer] = []
        self.tunnel_port = config.tunnel_port
        self.stream_port = config.stream_port

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        tunnel_app = web.Application()
        tunnel_app.router.add_get(CONNECT_PATH, self._connect)
        stream_app = web.Application(middlewares=[self._only_apiserver])
        stream_app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        stream_app.router.add_get("/exec/{ns}/{pod}/{container}", self._interactive)
        stream_app.router.add_get("/attach/{ns}/{pod}/{container}", self._interactive)
        stream_app.router.add_get("/portForward/{ns}/{pod}", self._interactive)
        stream_app.router.add_get("/connected/{node}", self._connected)
        ssl_ctx = _server_ssl(self.ca, self.serving)
        c = self.config
        self.tunnel_port = await self._listen(tunnel_app, c.tunnel_host, c.tunnel_port, ssl_ctx)
        self.stream_port = await self._listen(stream_app, c.stream_host, c.stream_port, ssl_ctx)
        log.info(
            "cloudstream: tunnel on %s:%d, stream server on %s:%d",
            c.tunnel_host,
            self.tunnel_port,
            c.stream_host,
            self.stream_port,
        )

    async def _listen(self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext) -> int:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await runner.setup()
        self._runners.append(runner)
        assert runner.server is not None
        server = await asyncio.get_running_loop().create_server(
            runner.server, host, port, ssl=ctx, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self.tunnels.values()):
            await t.close("cloudstream shutting down")
        for r in self._runners:
            await r.cleanup()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()
        self._runners.clear()

    def connected(self, node: str) -> bool:
        t = self.tunnels.get(node)
        return t is not None and not t.closed.is_set()

    # ---- tunnel server -----------------------------------------------------------------------------

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        user, groups = _peer(request)
        node = user[len(NODE_CN_PREFIX) :] if user.startswith(NODE_CN_PREFIX) else ""
        why = ""
        if not node or NODES_GROUP not in groups or not is_dns1123_subdomain(node):
            why = f"client certificate {user[:64]!r} is not a node identity ({NODE_CN_PREFIX}<name>, O {NODES_GROUP})"
        elif request.headers.get(HOSTNAME_HEADER, node) != node:
            why = f"{HOSTNAME_HEADER} does not match the certificate's node {node!r}"
        if why:
            self.metrics.refused.inc()
            log.warning("cloudstream: refused a tunnel from %s: %s", request.remote, why)
            return web.Response(status=403, text=why + "\n")
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=tn.MAX_FRAME_BYTES)
        await ws.prepare(request)
        tunnel = Tunnel(
            ws,
            window=self.config.window,
            max_streams=self.config.max_streams_per_node,
            name=f"cloudstream/{node}",
        )
        old = self.tunnels.get(node)
        self.tunnels[node] = tunnel
        self.metrics.tunnels.set(len(self.tunnels))
        if old is not None:
            await old.close("replaced by a newer tunnel from the same node")
        log.info("cloudstream: node %s connected its tunnel from %s", node, request.remote)
        try:
            await tunnel.run()
        finally:
            if self.tunnels.get(node) is tunnel:
                del self.tunnels[node]
            self.metrics.tunnels.set(len(self.tunnels))
            log.info("cloudstream: node %s's tunnel closed", node)
        return ws

    # ---- stream server -----------------------------------------------------------------------------

    @web.middleware
    async def _only_apiserver(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user, groups = _peer(request)
        if user != APISERVER_CLIENT_CN and ADMIN_GROUP not in groups:
            return _error(
                403, f"user {user[:64]!r} may not use the stream server (API server or admins only)"
            )
        return await handler(request)

    async def _connected(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        if self.connected(node):
            return web.json_response({"node": node, "connected": True})
        return _error(503, self._not_connected(node))

    @staticmethod
    def _not_connected(node: str) -> str:
        return (
            f"node {node} has no stream tunnel to cloudcore (the node is offline, or its "
            "modules.edgeStream is not enabled)"
        )

    async def _open(self, request: web.Request, kind: int) -> TunnelStream:
        node = request.headers.get(NODE_HEADER, "")
        if not node:
            raise StreamError(400, f"missing {NODE_HEADER} header")
        tunnel = self.tunnels.get(node)
        if tunnel is None or tunnel.closed.is_set():
            raise StreamError(503, self._not_connected(node))
        m = request.match_info
        q = request.query
        req: dict[str, Any] = {"namespace": m["ns"], "pod": m["pod"], "container": m.get("container", "")}
        if kind == tn.LOGS:
            req["query"] = dict(q)
        elif kind == tn.PORTFORWARD:
            try:
                req["port"] = int(q.get("port", ""))
            except ValueError:
                raise StreamError(400, "port: expected an integer") from None
        else:
            req.update(
                command=q.getall("command", []),
                stdin=q.get("stdin") in ("1", "true"),
                stdout=q.get("stdout", "true") in ("1", "true"),
                stderr=q.get("stderr", "true") in ("1", "true"),
                tty=q.get("tty") in ("1", "true"),
            )
        stream = await tunnel.open(kind, req)
        try:
            async with asyncio.timeout(ACCEPT_TIMEOUT_S):
                await stream.accepted
        except TimeoutError:
            await stream.close()
            raise StreamError(504, f"node {node} did not answer the stream request in time") from None
        except StreamError:
            await stream.close()
            raise
        return stream

    def _kind(self, request: web.Request) -> tuple[int, str]:
        name = request.path.split("/")[1]
        return KINDS[name], name

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        kind, name = self._kind(request)
        try:
            stream = await self._open(request, kind)
        except StreamError as e:
            self.metrics.streams.labels(name, "refused").inc()
            return _error(e.code, e.message)
        self.metrics.active.inc()
        outcome = "ok"
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            while (data := await stream.recv()) is not None:
                await resp.write(data)
            if stream.error is not None:
                outcome = "error"
            await resp.write_eof()
            return resp
        except (ConnectionError, asyncio.CancelledError):
            outcome = "client-gone"
            raise
        finally:
            await stream.close()
            self.metrics.active.dec()
            self.metrics.streams.labels(name, outcome).inc()

    async def _interactive(self, request: web.Request) -> web.StreamResponse:
        kind, name = self._kind(request)
        ws = web.WebSocketResponse(protocols=(ch.V5,), heartbeat=WS_HEARTBEAT_S)
        if not ws.can_prepare(request).ok:
            return _error(400, "a websocket upgrade is required")
        try:
            stream = await self._open(request, kind)
        except StreamError as e:
            self.metrics.streams.labels(name, "refused").inc()
            return _error(e.code, e.message)
        self.metrics.active.inc()
        try:
            await ws.prepare(request)
            await relay(ws, stream)
        finally:
            await stream.close()
            self.metrics.active.dec()
            self.metrics.streams.labels(name, "ok" if stream.error is None else "error").inc()
        return ws


async def relay(ws: Any, stream: TunnelStream) -> None:
    """Messages both ways between a websocket and a tunnel stream until either side ends."""

    async def from_ws() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await stream.send(msg.data)
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                return

    async def to_ws() -> None:
        while (data := await stream.recv()) is not None:
            await ws.send_bytes(data)

    a, b = asyncio.create_task(from_ws()), asyncio.create_task(to_ws())
    try:
        await asyncio.wait([a, b], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (a, b):
            t.cancel()
        await asyncio.gather(a, b, return_exceptions=True)
        with contextlib.suppress(StreamClosed, ConnectionError):
            await stream.close()
        await ws.close()
