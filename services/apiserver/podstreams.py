"""pods/log, pods/exec, pods/attach and pods/portforward, proxied to the node stream server.

Authorization is the API's own (log is `get`, the others `create`: they run code in the pod, as
kube-apiserver now requires for websocket requests too); then the pod's node is looked up and the
request is passed to the stream server (cloudcore's cloudstream), which reaches the node through its
tunnel. Toward kubectl: logs are streamed text; exec/attach answer the websocket upgrade themselves
(`v5.channel.k8s.io`, `v4.channel.k8s.io`) and relay channel-framed messages; port-forward answers
`SPDY/3.1+portforward.k8s.io` and runs the SPDY session inside the websocket, one stream-server
websocket per forwarded connection. SPDY over plain HTTP upgrade is refused with a clear message;
kubectl only falls back to it after a websocket upgrade failed, so it shows that failure's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import WSMsgType, web

from kubeedge.streaming import channels as ch
from kubeedge.streaming.spdy import SpdyConnection, SpdyError, SpdyStream

from .auth import Attributes, Identity
from .errors import ApiError, bad_request, service_unavailable

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NODE_HEADER: Final = "Kubeedge-Node"
# The stream server repeats a refusal's message here: a failed websocket handshake loses the body.
ERROR_HEADER: Final = "Kubeedge-Stream-Error"
PORTFORWARD_PROTOCOL: Final = "SPDY/3.1+portforward.k8s.io"
CLIENT_CN: Final = "kube-apiserver-kubelet-client"
CONNECT_TIMEOUT_S: Final = 10.0
NOT_CONFIGURED: Final = (
    "{sub} for pod {pod} is not available: this API server has no node stream server configured "
    "(node_stream_url; cloudcore sets it when modules.cloudStream.enable is true)"
)
SPDY_REFUSED: Final = "SPDY is not supported by this API server: use a websocket client (kubectl 1.30 and later does by default)"
_URL_KIND: Final = {"exec": "exec", "attach": "attach", "portforward": "portForward", "log": "containerLogs"}


class WsReader:
    """A websocket's binary messages as one byte stream (SPDY tunnelled in a websocket)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.buf = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                self.buf += msg.data
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                raise ConnectionError("websocket closed")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class PodStreams:
    def __init__(self, api: Any, config: Any) -> None:
        self.api = api
        self.url: str = str(getattr(config, "node_stream_url", "") or "").rstrip("/")
        self.config = config
        self._ssl: ssl.SSLContext | None = None

    # ---- entry -----------------------------------------------------------------------------------

    async def serve(self, t: Any, request: web.Request, ident: Identity | None) -> web.StreamResponse:
        sub = t.subresource
        verb = "get" if sub == "log" else "create"
        self.api.authorize(ident, Attributes(verb, t.info, t.namespace, t.name, sub))
        pod = self.api._load(t).obj
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if not node:
            raise bad_request(f'pod "{t.name}" does not have a host assigned')
        container = "" if sub == "portforward" else _container(pod, request.query.get("container", ""))
        if not self.url:
            raise service_unavailable(NOT_CONFIGURED.format(sub=f"pods/{sub}", pod=t.name))
        path = f"/{_URL_KIND[sub]}/{quote(t.namespace)}/{quote(t.name)}"
        if container:
            path += f"/{quote(container)}"
        if sub == "log":
            return await self._logs(request, path, node)
        if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
            await self._check_connected(node)
            raise bad_request(SPDY_REFUSED)
        if sub == "portforward":
            return await self._portforward(request, path, node)
        return await self._exec(request, path, node)

    # ---- upstream --------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is not None:
            return self._ssl
        cfg = self.config
        pki = Path(cfg.data_dir) / "pki"
        ca = getattr(cfg, "node_stream_ca", None) or pki / "ca.crt"
        crt, key = getattr(cfg, "node_stream_cert", None), getattr(cfg, "node_stream_key", None)
        if crt is None or key is None:
            crt, key = _own_client_cert(pki)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(crt), str(key))
        self._ssl = ctx
        return ctx

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=self._ssl_context()))

    async def _check_connected(self, node: str) -> None:
        async with self._session() as http:
            try:
                async with http.get(f"{self.url}/connected/{quote(node)}") as r:
                    if r.status != 200:
                        raise await _upstream_error(r)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise service_unavailable(f"the node stream server is not reachable: {e}") from None

    async def _logs(self, request: web.Request, path: str, node: str) -> web.StreamResponse:
        q = {k: v for k, v in request.query.items() if k != "container"}
        url = f"{self.url}{path}" + (f"?{urlencode(q)}" if q else "")
        async with self._session() as http:
            try:
                upstream = await http.get(url, headers={NODE_HEADER: node})
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise service_unavailable(f"the node stream server is not reachable: {e}") from None
            async with upstream:
                if upstream.status != 200:
                    raise await _upstream_error(upstream)
                resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

    async def _exec(self, request: web.Request, path: str, node: str) -> web.StreamResponse:
        q = [(k, v) for k, v in request.query.items() if k != "container"]
        url = f"{self.url}{path}?{urlencode(q)}"
        async with self._session() as http:
            upstream = await self._dial(http, url, node)
            ws = web.WebSocketResponse(protocols=ch.EXEC_PROTOCOLS)
            await ws.prepare(request)
            await _relay(ws, upstream)
            return ws

    async def _dial(
        self, http: aiohttp.ClientSession, url: str, node: str
    ) -> aiohttp.ClientWebSocketResponse:
        try:
            return await http.ws_connect(url, headers={NODE_HEADER: node}, protocols=(ch.V5,))
        except aiohttp.WSServerHandshakeError as e:
            why = (e.headers.get(ERROR_HEADER, "") if e.headers else "") or e.message or "refused"
            raise ApiError(e.status, _reason(e.status), why) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise service_unavailable(f"the node stream server is not reachable: {e}") from None

    # ---- port-forward ----------------------------------------------------------------------------

    async def _portforward(self, request: web.Request, path: str, node: str) -> web.StreamResponse:
        await self._check_connected(node)
        ws = web.WebSocketResponse(protocols=(PORTFORWARD_PROTOCOL,))
        await ws.prepare(request)
        if ws.ws_protocol != PORTFORWARD_PROTOCOL:
            await ws.close(message=b"port-forward needs the SPDY/3.1+portforward.k8s.io subprotocol")
            return ws
        pairs: dict[str, dict[str, SpdyStream]] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def on_stream(s: SpdyStream) -> None:
            await s.reply()
            pair = pairs.setdefault(s.headers.get("requestid", ""), {})
            pair[s.headers.get("streamtype", "")] = s
            if "data" in pair and "error" in pair:
                del pairs[s.headers.get("requestid", "")]
                task = asyncio.create_task(self._forward(http, path, node, pair["data"], pair["error"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        async def write(data: bytes) -> None:
            await ws.send_bytes(data)

        async with self._session() as http:
            conn = SpdyConnection(WsReader(ws), write, server=True, on_stream=on_stream)
            try:
                await conn.run()
            finally:
                for t in list(tasks):
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _forward(
        self, http: aiohttp.ClientSession, path: str, node: str, data: SpdyStream, error: SpdyStream
    ) -> None:
        port = data.headers.get("port", "")
        try:
            upstream = await self._dial(http, f"{self.url}{path}?{urlencode({'port': port})}", node)
        except ApiError as e:
            with contextlib.suppress(SpdyError, ConnectionError):
                await error.write(f"error forwarding port {port}: {e.message}".encode())
                await error.close_write()
                await data.close_write()
            return

        async def to_pod() -> None:
            while (chunk := await data.read()) is not None:
                await upstream.send_bytes(ch.frame(ch.PF_DATA, chunk))
            await upstream.send_bytes(ch.close_frame(ch.PF_DATA))

        async def from_pod() -> None:
            async for msg in upstream:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                if msg.data[0] == ch.PF_DATA:
                    await data.write(msg.data[1:])
                elif msg.data == ch.close_frame(ch.PF_DATA):
                    await data.close_write()
                elif msg.data[0] == ch.PF_ERROR:  # the runtime's reason, for kubectl to print
                    await error.write(msg.data[1:])

        a, b = asyncio.create_task(to_pod()), asyncio.create_task(from_pod())
        try:
            await asyncio.wait([b])  # the pod side ends the connection (after kubectl's side ended it)
        finally:
            a.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            await upstream.close()
            with contextlib.suppress(SpdyError, ConnectionError):
                await data.close_write()
                await error.close_write()


async def _relay(ws: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def down() -> None:  # kubectl → node
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                # base64 channel protocols are not offered; text frames cannot happen with v4/v5
                continue

    async def up() -> None:  # node → kubectl
        async for msg in upstream:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)

    a, b = asyncio.create_task(down()), asyncio.create_task(up())
    try:
        await asyncio.wait([a, b], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (a, b):
            t.cancel()
        await asyncio.gather(a, b, return_exceptions=True)
        await upstream.close()
        await ws.close()


def _container(pod: Obj, name: str) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    others = [c.get("name", "") for k in ("initContainers", "ephemeralContainers") for c in spec.get(k) or []]
    pod_name = (pod.get("metadata") or {}).get("name", "")
    if not name:
        if len(names) == 1:
            return names[0]
        raise bad_request(f"a container name must be specified for pod {pod_name}, choose one of: {names}")
    if name not in names + others:
        raise bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


def _reason(code: int) -> str:
    return {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        429: "TooManyRequests",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(code, "InternalError")


async def _upstream_error(r: aiohttp.ClientResponse) -> ApiError:
    message = ""
    with contextlib.suppress(Exception):
        body = await r.json(content_type=None)
        message = str(body.get("message", ""))
    if not message:
        message = (await r.text())[:500] or f"the node stream server answered {r.status}"
    return ApiError(r.status, _reason(r.status), message)


def _own_client_cert(pki: Path) -> tuple[Path, Path]:
    """A client certificate for the stream server, issued by this server's CA (kept with it)."""
    from kubeedge.pki import certs

    crt, key = pki / "stream-client.crt", pki / "stream-client.key"
    if not (crt.exists() and key.exists()):
        ca = certs.KeyPair.load(pki / "ca.crt", pki / "ca.key")
        pair = certs.issue(ca, CLIENT_CN, client=True)
        certs.write_private(key, pair.key_pem)
        crt.write_bytes(pair.cert_pem)
    return crt, key


__all__ = ["PodStreams"]
