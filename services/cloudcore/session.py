"""One edge node's websocket session: reader (decode, pace, dispatch in order), writer (drains the bounded
send queue), watchdog (keepalive timeout). cloudhub owns the registry of sessions; this module owns one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

from kubeedge.beehive import DecodeError, EncodeError, Message, decode, encode
from kubeedge.beehive.message import CONTENT_ACK, CONTROL_OPERATIONS, OP_ERROR, OP_KEEPALIVE

if TYPE_CHECKING:
    from .cloudhub import CloudHubConfig
    from .hubapi import NodeEvents

log = logging.getLogger(__name__)

# Close codes. 4000-4999 are private to the application; standard codes where one fits.
CLOSE_REPLACED: Final = 4000
CLOSE_KEEPALIVE_TIMEOUT: Final = 4001
CLOSE_GOING_AWAY: Final = int(WSCloseCode.GOING_AWAY)
CLOSE_BAD_FRAMES: Final = int(WSCloseCode.INVALID_TEXT)  # 1007: data inconsistent with the message type
CLOSE_RATE_LIMIT: Final = int(WSCloseCode.POLICY_VIOLATION)
CLOSE_TOO_BIG: Final = int(WSCloseCode.MESSAGE_TOO_BIG)
CLOSE_INTERNAL: Final = int(WSCloseCode.INTERNAL_ERROR)

REASON_REPLACED: Final = "replaced by a newer connection"
REASON_KEEPALIVE: Final = "keepalive timeout"
REASON_RATE_LIMIT: Final = "rate limit exceeded"
REASON_SHUTDOWN: Final = "cloudhub shutting down"

# A close frame's payload is at most 125 bytes, two of which are the code.
_MAX_REASON_BYTES: Final = 123
# Name the hub uses as the source of the replies it writes itself (acks, decode errors).
HUB_SOURCE: Final = "cloudhub"


def close_reason_bytes(reason: str) -> bytes:
    return reason.encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")


class HubWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversize frame with 1009 and no reason; give the peer the reason."""

    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_frame_bytes, **kwargs)
        self._too_big_reason = close_reason_bytes(f"frame exceeds the limit of {max_frame_bytes} bytes")

    def _pre_start(self, request: BaseRequest) -> tuple[str | None, WebSocketWriter]:
        # Accept permessage-deflate from the edge (it shrinks the uplink several times) but never
        # compress downstream: a deflate context is ~270 KB, times thousands of nodes. RFC 7692 lets
        # either side send any message uncompressed.
        protocol, writer = super()._pre_start(request)
        writer.compress = 0
        return protocol, writer

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_TOO_BIG and not message:
            message = self._too_big_reason
        return await super().close(code=code, message=message, drain=drain)


class TokenBucket:
    """Upstream pacing: ``take`` says how long the caller must wait before its message may proceed."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        # Tokens go negative by the debt the caller then sleeps off, so waits queue up fairly.
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


@dataclass
class Counters:
    messages_in: int = 0
    messages_out: int = 0
    # Messages lost: send timed out on a full queue, could not be encoded, or were still queued at close.
    dropped: int = 0
    bad_frames: int = 0

    def add(self, other: Counters) -> None:
        self.messages_in += other.messages_in
        self.messages_out += other.messages_out
        self.dropped += other.dropped
        self.bad_frames += other.bad_frames


def _salvage_msg_id(data: str | bytes) -> str:
    """The msg_id of a frame that failed to decode, if it has a recognisable one (to address the error)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ""
    header = obj.get("header") if isinstance(obj, dict) else None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) else ""


class Session:
    """Serves one node's websocket until it ends. ``serve`` reports connect/disconnect to ``events``."""

    def __init__(
        self,
        node: str,
        ws: HubWebSocket,
        peer: str,
        transport: asyncio.Transport | None,
        config: CloudHubConfig,
        events: NodeEvents,
        on_closing: Callable[[Session], None],
    ) -> None:
        self.node = node
        self.peer = peer
        self.ws = ws
        self._transport = transport
        self.counters = Counters()
        self.finished = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self._config = config
        self._events = events
        self._on_closing = on_closing
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=config.send_queue_limit)
        self._closing = asyncio.Event()
        self._close_started = False
        self._close_done = asyncio.Event()
        self._bucket = TokenBucket(config.rate_limit_qps, config.rate_limit_burst)
        self._throttled_since: float | None = None
        self._bad_streak = 0
        self._last_seen = time.monotonic()
        # True while the reader is busy on our side (pacing, a module handling a message): the peer is
        # not silent then, its frames are waiting on us.
        self._busy = False

    # ---- state -------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # ---- sending -----------------------------------------------------------------------------------

    async def send(self, msg: Message) -> bool:
        """Queue ``msg``; waits up to ``send_timeout`` while the queue is full, then drops it (False)."""
        if self.closing:
            return False
        try:
            self._queue.put_nowait(msg)
            return True
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self._queue.put(msg))
        closed = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait(
                {put, closed}, timeout=self._config.send_timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            closed.cancel()
            # cancel() is False only when the put already completed: then the message is queued.
            queued = not put.cancel()
        if queued:
            return True
        if self.closing:
            return False
        self.counters.dropped += 1
        log.warning(
            "cloudhub: node %s: send queue full (%d) for %.1fs; dropped %s %s",
            self.node,
            self._config.send_queue_limit,
            self._config.send_timeout,
            msg.operation,
            msg.resource,
        )
        return False

    def _reply_nowait(self, msg: Message) -> None:
        # Replies the hub writes itself never wait: a node that does not read its acks loses them.
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.counters.dropped += 1

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket with ``code``/``reason`` (the first reason given wins)."""
        if not self.closing:
            self.close_code, self.close_reason = code, reason
            self._closing.set()
            self._on_closing(self)
            log.info("cloudhub: closing node %s (%s): %d %s", self.node, self.peer, code, reason)
        if self.ws.closed:
            return
        self._close_started = True
        try:
            # The close frame itself can stall behind unread data; never let that hold us.
            async with asyncio.timeout(self._config.close_timeout):
                await self.ws.close(code=code, message=close_reason_bytes(reason))
        except TimeoutError:
            log.info("cloudhub: node %s did not complete the close handshake; dropping it", self.node)
            self._abort()
        finally:
            self._close_done.set()

    def _abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def serve(self) -> None:
        """Announce the node, run reader/writer/watchdog until the websocket ends, announce the end."""
        await self._notify("node_connected", self._events.node_connected(self.node))
        tasks = [
            asyncio.create_task(self._guard(self._write_loop, "writer"), name=f"cloudhub/{self.node}/writer"),
            asyncio.create_task(
                self._guard(self._watchdog, "watchdog"), name=f"cloudhub/{self.node}/watchdog"
            ),
        ]
        try:
            await self._guard(self._read_loop, "reader")
        finally:
            if not self.closing:
                # The peer ended the session (close frame, reset) or the reader failed.
                code = self.ws.close_code if self.ws.close_code is not None else CLOSE_GOING_AWAY
                self.close_code, self.close_reason = code, "connection closed"
                self._closing.set()
                self._on_closing(self)
            if self._close_started:
                # Another task (watchdog, the hub) is completing the close handshake: let it finish
                # so the peer reads the close reason before the transport goes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.close_timeout):
                        await self._close_done.wait()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if not self.ws.closed:
                await self.close(self.close_code or CLOSE_GOING_AWAY, self.close_reason)
            self.counters.dropped += self._queue.qsize()
            log.info(
                "cloudhub: node %s (%s) disconnected: %s %s",
                self.node,
                self.peer,
                self.close_code,
                self.close_reason,
            )
            await self._notify("node_disconnected", self._events.node_disconnected(self.node))

    async def _notify(self, what: str, call: Awaitable[None]) -> None:
        # A module's failure must not take the session (or the hub) down with it.
        try:
            await call
        except Exception:
            log.exception("cloudhub: %s(%s) failed in the events handler", what, self.node)

    async def _guard(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Supervision for the session's tasks: they live exactly as long as the session; a crash is
        logged and ends the session (the edge reconnects) rather than leaving it half-served."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as e:
            log.info("cloudhub: node %s: %s stopped: connection lost (%s)", self.node, name, e)
            self._abort()
        except Exception:
            log.exception("cloudhub: node %s: %s failed", self.node, name)
            await self.close(CLOSE_INTERNAL, f"internal error in {name}")

    # ---- reader ------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            frame = await self.ws.receive()
            if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self._last_seen = time.monotonic()
                if not await self._pace():
                    return
                await self._handle_frame(frame.data)
                if self.closing:
                    return
            elif frame.type is WSMsgType.PING:
                self._last_seen = time.monotonic()
                await self.ws.pong(frame.data)
            elif frame.type is WSMsgType.PONG:
                self._last_seen = time.monotonic()
            elif frame.type is WSMsgType.ERROR:
                self.counters.bad_frames += 1
                # aiohttp already closed the websocket (1009 for an oversize frame, 1002 for a
                # protocol error); record why.
                code = self.ws.close_code or CLOSE_INTERNAL
                reason = str(frame.data)
                log.warning(
                    "cloudhub: node %s (%s): websocket error, closed %d: %s",
                    self.node,
                    self.peer,
                    code,
                    reason,
                )
                if not self.closing:
                    self.close_code, self.close_reason = code, reason
                    self._closing.set()
                    self._on_closing(self)
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _pace(self) -> bool:
        """Delay the reader to the node's rate limit; False (after closing) when the node floods."""
        wait = self._bucket.take()
        if wait <= 0:
            self._throttled_since = None
            return True
        now = time.monotonic()
        if self._throttled_since is None:
            self._throttled_since = now
        elif now - self._throttled_since > self._config.rate_limit_flood_seconds:
            log.warning(
                "cloudhub: node %s (%s) stayed above %.0f msg/s for %.1fs; closing",
                self.node,
                self.peer,
                self._config.rate_limit_qps,
                self._config.rate_limit_flood_seconds,
            )
            await self.close(CLOSE_RATE_LIMIT, REASON_RATE_LIMIT)
            return False
        self._busy = True
        try:
            await asyncio.sleep(wait)  # pacing, not synchronisation: this is the rate limit itself
        finally:
            self._busy = False
            self._last_seen = time.monotonic()
        return True

    async def _handle_frame(self, data: str | bytes) -> None:
        try:
            msg = decode(data, max_size=self._config.max_frame_bytes)
        except DecodeError as e:
            await self._bad_frame(data, e.reason)
            return
        self._bad_streak = 0
        self.counters.messages_in += 1
        op = msg.operation
        if op == OP_KEEPALIVE:
            return  # liveness only (already refreshed); KubeEdge's cloud sends nothing back
        if op in CONTROL_OPERATIONS:
            self._reply_nowait(msg.response(CONTENT_ACK))
            return
        self._busy = True
        try:
            # Awaited here, one at a time, so a module sees each node's messages in wire order.
            await self._events.message_from(self.node, msg)
        except Exception:
            log.exception("cloudhub: node %s: message_from failed for %s %s", self.node, op, msg.resource)
        finally:
            self._busy = False
            self._last_seen = time.monotonic()

    async def _bad_frame(self, data: str | bytes, reason: str) -> None:
        self.counters.bad_frames += 1
        self._bad_streak += 1
        log.warning("cloudhub: node %s (%s) sent an undecodable frame: %s", self.node, self.peer, reason)
        msg_id = _salvage_msg_id(data)
        if msg_id:
            self._reply_nowait(
                Message.new(HUB_SOURCE, "", OP_ERROR, "", f"undecodable frame: {reason}", parent=msg_id)
            )
        if self._bad_streak >= self._config.max_bad_frames:
            await self.close(
                CLOSE_BAD_FRAMES, f"{self._bad_streak} undecodable frames in a row; last: {reason}"
            )

    # ---- writer and watchdog -----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                data = encode(msg)
            except EncodeError as e:
                self.counters.dropped += 1
                log.error("cloudhub: node %s: dropped a message that cannot be encoded: %s", self.node, e)
                continue
            # KubeEdge peers expect one message per *text* frame; the codec already produced UTF-8.
            await self.ws.send_frame(data, WSMsgType.TEXT)
            self.counters.messages_out += 1

    async def _watchdog(self) -> None:
        timeout = self._config.keepalive_timeout
        while True:
            idle = time.monotonic() - self._last_seen
            if idle >= timeout and not self._busy:
                log.warning("cloudhub: node %s (%s) silent for %.1fs", self.node, self.peer, idle)
                await self.close(CLOSE_KEEPALIVE_TIMEOUT, REASON_KEEPALIVE)
                return
            await asyncio.sleep(max(timeout - idle, timeout / 10))
