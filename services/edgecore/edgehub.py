"""edgehub: the edge's one websocket to cloudhub — mTLS dial, keepalives, reconnect forever.

The hub owns the connection and nothing else: frames in become Messages for ``on_message`` (in
arrival order), ``send`` writes a Message or says False when offline (callers keep what must not be
lost, e.g. the upstream queue). Every close is logged with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from kubeedge.beehive import MAX_FRAME_BYTES, DecodeError, EncodeError, Message, decode, encode
from kubeedge.beehive.message import CONTENT_PING, CONTROL_OPERATIONS, GROUP_RESOURCE, OP_KEEPALIVE, RT_NODE
from kubeedge.pki.certs import KeyPair, load_cert_chain

log = logging.getLogger(__name__)

DEFAULT_PROJECT_ID: Final = "e632aba927ea4ac2b575ec1603d56f10"
DEFAULT_PORT: Final = 10000
SOURCE: Final = "edgehub"

OnMessage = Callable[[Message], Awaitable[None]]
OnEvent = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class EdgeHubConfig:
    server: str  # wss://<cloud>:10000/<projectID>/<nodeName>/events
    node_name: str
    project_id: str = DEFAULT_PROJECT_ID
    # KubeEdge's edge sends a keepalive every 15 s; the cloud drops a session silent for 30 s.
    heartbeat: float = 15.0
    # Reconnect delay: uniform in [0, min(cap, base * 2**attempt)] ("full jitter"), so a cloud restart
    # does not get every node back in the same instant.
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    # A connection that lived this long resets the backoff: the next outage starts from base again.
    stable_after: float = 30.0
    # TLS + websocket upgrade must finish within this.
    handshake_timeout: float = 10.0
    # Bigger frames are refused by the websocket layer (and by the codec).
    max_frame_bytes: int = MAX_FRAME_BYTES
    # A send blocked longer than this (peer not reading) fails and drops the connection.
    send_timeout: float = 10.0
    # permessage-deflate toward the cloud (zlib window bits 9..15; 0 = off). An idle node's uplink is
    # near-identical lease renewals, which a shared window shrinks ~8x; the cloud inflates but does
    # not compress back, so it keeps no deflate state per node.
    compress_window_bits: int = 12

    def __post_init__(self) -> None:
        u = urlsplit(self.server)
        if u.scheme != "wss" or not u.hostname:
            raise ValueError(f"edgehub config: server {self.server!r} is not a wss:// URL with a host")
        if not self.node_name or "/" in self.node_name:
            raise ValueError(f"edgehub config: node_name {self.node_name!r} is empty or contains '/'")
        if not self.project_id or "/" in self.project_id:
            raise ValueError("edgehub config: project_id is empty or contains '/'")
        for f in ("heartbeat", "backoff_base", "backoff_cap", "handshake_timeout", "send_timeout"):
            if getattr(self, f) <= 0:
                raise ValueError(f"edgehub config: {f} must be positive")
        if self.backoff_cap < self.backoff_base:
            raise ValueError("edgehub config: backoff_cap must be at least backoff_base")
        if self.stable_after < 0:
            raise ValueError("edgehub config: stable_after must not be negative")
        if self.max_frame_bytes < 1024:
            raise ValueError("edgehub config: max_frame_bytes must be at least 1024")
        if self.compress_window_bits and not 9 <= self.compress_window_bits <= 15:
            raise ValueError("edgehub config: compress_window_bits must be 0 (off) or 9..15")

    @classmethod
    def for_cloud(cls, host: str, node_name: str, *, port: int = DEFAULT_PORT, **kw: object) -> EdgeHubConfig:
        """The KubeEdge URL for ``host:port`` (the path is informational; identity is cert + headers)."""
        project = str(kw.get("project_id", DEFAULT_PROJECT_ID))
        url = f"wss://{host}:{port}/{project}/{node_name}/events"
        return cls(server=url, node_name=node_name, **kw)  # type: ignore[arg-type]

    def backoff(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 62)))


def keepalive_message(node_name: str) -> Message:
    """KubeEdge's edge keepalive: group resource, resource ``node``, operation keepalive, "ping"."""
    return Message.new(SOURCE, GROUP_RESOURCE, OP_KEEPALIVE, RT_NODE, CONTENT_PING)


async def _noop() -> None:
    return None


class EdgeHub:
    def __init__(
        self,
        config: EdgeHubConfig,
        ca_pem: bytes,
        cert: KeyPair,
        on_message: OnMessage,
        on_connected: OnEvent | None = None,
        on_disconnected: OnEvent | None = None,
    ) -> None:
        self.config = config
        self._ca_pem = ca_pem
        self._cert = cert
        self._on_message = on_message
        self._on_connected = on_connected or _noop
        self._on_disconnected = on_disconnected or _noop
        self.connected_event = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.stats = {"dials": 0, "connects": 0, "sent": 0, "received": 0, "bad_frames": 0}
        self._last_send = 0.0  # monotonic time of the last frame written
        self.last_close_reason = ""

    # ---- public API ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.connected_event.is_set()

    def use_certificate(self, pair: KeyPair) -> None:
        """Use ``pair`` from the next dial on (rotation: the live connection keeps its old identity)."""
        self._cert = pair

    async def send(self, msg: Message) -> bool:
        """Write ``msg``; False when offline or the write failed (the connection is then dropped)."""
        ws = self._ws
        if ws is None or ws.closed or not self.connected:
            return False
        try:
            frame = encode(msg).decode()
        except EncodeError:
            log.exception("edgehub: cannot encode %s %s", msg.operation, msg.resource)
            return False
        try:
            async with self._send_lock, asyncio.timeout(self.config.send_timeout):
                await ws.send_str(frame)
        except (OSError, aiohttp.ClientError, TimeoutError, ConnectionError, RuntimeError) as e:
            log.warning("edgehub: send failed (%s); dropping the connection", e or type(e).__name__)
            self.connected_event.clear()
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"send failed")
            return False
        self.stats["sent"] += 1
        self._last_send = time.monotonic()
        return True

    def stop(self) -> None:
        """Make ``run`` close the connection (reason "stopped") and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Dial, serve the connection, back off, repeat — until ``stop``. For the Supervisor."""
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while not self._stopping.is_set():
                started = time.monotonic()
                up = await self._connect_once(session)
                if self._stopping.is_set():
                    return
                if up and time.monotonic() - started >= self.config.stable_after:
                    attempt = 0
                delay = self.config.backoff(attempt)
                attempt += 1
                log.info("edgehub: reconnecting in %.2fs (attempt %d)", delay, attempt)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()

    # ---- one connection ------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        load_cert_chain(ctx, self._cert)
        return ctx

    async def _connect_once(self, session: aiohttp.ClientSession) -> bool:
        """One connection's life; True if it got connected at all."""
        cfg = self.config
        self.stats["dials"] += 1
        headers = {"node_id": cfg.node_name, "project_id": cfg.project_id}
        try:
            ctx = self._ssl_context()
            async with asyncio.timeout(cfg.handshake_timeout):
                ws = await session.ws_connect(
                    cfg.server,
                    ssl=ctx,
                    headers=headers,
                    max_msg_size=cfg.max_frame_bytes,
                    autoping=True,
                    # Websocket-level pings detect a cloud that vanished without closing TCP (the
                    # KubeEdge keepalive message is one-way); a missing pong closes the connection.
                    heartbeat=cfg.heartbeat,
                    compress=cfg.compress_window_bits,
                )
        except (OSError, aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError) as e:
            reason = f"dial failed: {type(e).__name__}: {e}"
            self.last_close_reason = reason
            log.warning("edgehub: %s %s", cfg.server, reason)
            return False
        self._ws = ws
        self.stats["connects"] += 1
        self.connected_event.set()
        log.info("edgehub: connected to %s as %s", cfg.server, cfg.node_name)
        reason = "closed"
        tasks: list[asyncio.Task[None]] = []
        try:
            # on_connected may send (inventory) and wait for replies, which only the reader delivers:
            # it runs beside the reader, not before it.
            tasks.append(asyncio.create_task(self._guard(self._on_connected, "on_connected")))
            tasks.append(asyncio.create_task(self._keepalive(ws)))
            tasks.append(asyncio.create_task(self._close_on_stop(ws)))
            reason = await self._read(ws)
        finally:
            self.connected_event.clear()
            self._ws = None
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            self.last_close_reason = reason
            log.warning("edgehub: connection to %s closed: %s", cfg.server, reason)
            await self._guard(self._on_disconnected, "on_disconnected")
        return True

    async def _guard(self, fn: OnEvent, what: str) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("edgehub: %s callback failed", what)

    async def _close_on_stop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await self._stopping.wait()
        await ws.close(message=b"edgehub stopping")

    async def _keepalive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The KubeEdge keepalive, sent only when nothing else went up for a heartbeat: the cloud
        counts any frame as a sign of life, and lease renewals (every 10 s) usually are one."""
        period = self.config.heartbeat
        while not ws.closed:
            idle = time.monotonic() - self._last_send
            if idle >= period:
                if not await self.send(keepalive_message(self.config.node_name)):
                    return
                idle = 0.0
            await asyncio.sleep(period - idle)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Deliver frames until the socket closes; returns the close reason."""
        while True:
            frame = await ws.receive()
            if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._deliver(frame.data)
                continue
            if self._stopping.is_set():
                return "stopped"
            if frame.type == aiohttp.WSMsgType.CLOSE:
                return f"closed by peer (code {frame.data}, reason {frame.extra!r})"
            if frame.type == aiohttp.WSMsgType.ERROR:
                return f"error: {frame.data!r}"
            if frame.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                exc = ws.exception()
                return f"connection lost (code {ws.close_code}{f', {exc!r}' if exc else ''})"

    async def _deliver(self, data: str | bytes) -> None:
        try:
            msg = decode(data, max_size=self.config.max_frame_bytes)
        except DecodeError as e:
            self.stats["bad_frames"] += 1
            log.warning("edgehub: dropping undecodable frame: %s", e.reason)
            return
        self.stats["received"] += 1
        if msg.operation in CONTROL_OPERATIONS:
            return  # connection-level chatter, never a module's business
        try:
            await self._on_message(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("edgehub: on_message failed for %s %s", msg.operation, msg.resource)
