"""The cloud-edge stream tunnel: many streams multiplexed over one websocket the edge dialled.

Frames follow KubeEdge CloudStream's shape, `uvarint(stream id) uvarint(type) payload`, with its type
numbers for the openings (0 logs, 1 exec, 6 attach) and data (3) and close (5); ours add port-forward (7),
an accept (10) and flow-control credit (11). The cloud opens streams, the edge serves them.

Flow control is per stream and per direction: a sender may have at most `window` unconsumed bytes at the
receiver, which grants more as its consumer reads. Every buffer is therefore bounded (stream inbound
queues by the window, the outbound frame queue by `OUT_QUEUE_FRAMES`), and one slow kubectl holds back
only its own stream, never the others sharing the tunnel.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import aiohttp
import orjson

log = logging.getLogger(__name__)

LOGS: Final = 0
EXEC: Final = 1
DATA: Final = 3
CLOSE: Final = 5
ATTACH: Final = 6
PORTFORWARD: Final = 7
ACCEPT: Final = 10
CREDIT: Final = 11
OPEN_KINDS: Final = {LOGS: "logs", EXEC: "exec", ATTACH: "attach", PORTFORWARD: "portforward"}

# Unconsumed bytes one direction of a stream may have in flight (the receiver's buffer bound).
DEFAULT_WINDOW: Final = 256 * 1024
# A DATA frame carries at most this much; larger sends are split.
MAX_CHUNK: Final = 32 * 1024
# Frames waiting for the websocket writer; senders wait when it is full.
OUT_QUEUE_FRAMES: Final = 256
# Streams open at once per tunnel (per node); more are refused with 429.
DEFAULT_MAX_STREAMS: Final = 64
# The opener's receive window travels in its request under this key.
WINDOW_KEY: Final = "_window"
# The biggest frame a peer may send: a full chunk plus headers, or an opening request.
MAX_FRAME_BYTES: Final = MAX_CHUNK + 1024


class StreamError(Exception):
    """The stream was refused or ended with an error; `code` is HTTP-like (404, 503, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamClosed(Exception):
    """Sending on a stream that was closed (by either side, or with its tunnel)."""


class WebSocketLike(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...
    async def receive(self) -> aiohttp.WSMessage: ...
    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


def put_uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def get_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or oversized varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def _window(payload: bytes) -> int:
    """The receive window an accept announces (older peers send none: the default)."""
    try:
        n = get_uvarint(payload, 0)[0] if payload else DEFAULT_WINDOW
    except ValueError:
        return DEFAULT_WINDOW
    return n if n > 0 else DEFAULT_WINDOW


def encode_frame(stream_id: int, ftype: int, payload: bytes = b"") -> bytes:
    return put_uvarint(stream_id) + put_uvarint(ftype) + payload


def decode_frame(data: bytes) -> tuple[int, int, bytes]:
    sid, pos = get_uvarint(data, 0)
    ftype, pos = get_uvarint(data, pos)
    return sid, ftype, data[pos:]


class TunnelStream:
    def __init__(self, tunnel: Tunnel, sid: int, kind: int, request: dict[str, Any]) -> None:
        self.tunnel = tunnel
        self.id = sid
        self.kind = kind
        self.request = request
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._arrived = asyncio.Event()
        # What we may send before the peer grants more: its receive window, which it announces in
        # its opening request or its accept (the two sides may be configured differently).
        self._credit = 0
        self._credit_changed = asyncio.Event()
        self._consumed = 0
        self.remote_closed = False
        self.local_closed = False
        self.error: StreamError | None = None

    @property
    def closed(self) -> bool:
        return self.remote_closed or self.local_closed

    # ---- receiving ---------------------------------------------------------------------------------

    def _on_data(self, payload: bytes) -> None:
        if self._queued + len(payload) > self.tunnel.window:
            # The peer ignored our window: the only safe answer is to end this stream.
            self.tunnel.spawn_close(self, StreamError(400, "flow-control window exceeded"))
            return
        self._inbox.append(payload)
        self._queued += len(payload)
        self._arrived.set()

    def _on_close(self, error: StreamError | None) -> None:
        self.remote_closed = True
        self.error = self.error or error
        if not self.accepted.done():
            self.accepted.set_exception(error or StreamError(502, "the stream closed before it was accepted"))
            self.accepted.exception()  # retrieved: nobody may be waiting for it
        self._arrived.set()
        self._credit_changed.set()

    async def recv(self) -> bytes | None:
        """The next message from the peer; None once the peer closed (or the tunnel went away)."""
        while not self._inbox:
            if self.remote_closed or self.local_closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        data = self._inbox.popleft()
        self._queued -= len(data)
        self._consumed += len(data)
        if self._consumed >= self.tunnel.window // 2 and not self.closed:
            grant, self._consumed = self._consumed, 0
            with contextlib.suppress(StreamClosed):
                await self.tunnel.send_frame(self.id, CREDIT, put_uvarint(grant))
        return data

    # ---- sending -----------------------------------------------------------------------------------

    def _on_credit(self, n: int) -> None:
        self._credit += n
        self._credit_changed.set()

    async def send(self, data: bytes) -> None:
        """Send one message (split into chunks when large); waits for the peer's credit."""
        view = memoryview(data)
        while True:
            if self.closed:
                raise StreamClosed(f"stream {self.id} is closed")
            if self._credit <= 0:
                self._credit_changed.clear()
                await self._credit_changed.wait()
                continue
            n = min(len(view), MAX_CHUNK, self._credit)
            self._credit -= n
            await self.tunnel.send_frame(self.id, DATA, bytes(view[:n]))
            view = view[n:]
            if not view:
                return

    async def accept(self) -> None:
        await self.tunnel.send_frame(self.id, ACCEPT, put_uvarint(self.tunnel.window))

    async def close(self, error: StreamError | None = None) -> None:
        """Close both directions; the peer sees `error` (or a clean end). Idempotent."""
        if self.local_closed:
            return
        self.local_closed = True
        self._arrived.set()
        self._credit_changed.set()
        if not self.remote_closed:
            payload = orjson.dumps({"code": error.code, "message": error.message}) if error else b""
            with contextlib.suppress(StreamClosed, ConnectionError):
                await self.tunnel.send_frame(self.id, CLOSE, payload)
        self.tunnel.forget(self)


OnOpen = Callable[[TunnelStream], Awaitable[None]]


class Tunnel:
    """One side of the tunnel. `run()` reads and writes until the websocket ends; the side that opens
    streams calls `open()`, the other passes `on_open`, run as one task per incoming stream."""

    def __init__(
        self,
        ws: WebSocketLike,
        *,
        on_open: OnOpen | None = None,
        window: int = DEFAULT_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
        name: str = "tunnel",
    ) -> None:
        self.ws = ws
        self.on_open = on_open
        self.window = window
        self.max_streams = max_streams
        self.name = name
        self._streams: dict[int, TunnelStream] = {}
        self._next_id = 1
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue(OUT_QUEUE_FRAMES)
        self._handlers: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self.opened = 0  # streams opened over this tunnel's life (for metrics)

    def __len__(self) -> int:
        return len(self._streams)

    async def send_frame(self, sid: int, ftype: int, payload: bytes = b"") -> None:
        if self.closed.is_set():
            raise StreamClosed(f"{self.name} is closed")
        await self._out.put(encode_frame(sid, ftype, payload))

    def forget(self, stream: TunnelStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def spawn_close(self, stream: TunnelStream, error: StreamError) -> None:
        stream.error = error
        task = asyncio.create_task(stream.close(error))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def open(self, kind: int, request: dict[str, Any]) -> TunnelStream:
        """Open a stream; the caller awaits `stream.accepted` (StreamError when the edge refuses)."""
        if len(self._streams) >= self.max_streams:
            raise StreamError(429, f"too many concurrent streams to this node (limit {self.max_streams})")
        sid = self._next_id
        self._next_id += 2
        stream = TunnelStream(self, sid, kind, request)
        self._streams[sid] = stream
        self.opened += 1
        await self.send_frame(sid, kind, orjson.dumps({**request, WINDOW_KEY: self.window}))
        return stream

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"{self.name}/writer")
        try:
            await self._read_loop()
        finally:
            self.closed.set()
            writer.cancel()
            for s in list(self._streams.values()):
                s._on_close(StreamError(503, "the node's stream tunnel disconnected"))
            self._streams.clear()
            handlers = list(self._handlers)
            for t in handlers:
                t.cancel()
            await asyncio.gather(writer, *handlers, return_exceptions=True)

    async def close(self, reason: str = "") -> None:
        self.closed.set()
        with contextlib.suppress(Exception):
            await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=reason.encode()[:120])

    async def _write_loop(self) -> None:
        while True:
            frame = await self._out.get()
            if frame is None:
                return
            await self.ws.send_bytes(frame)

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            if msg.type == aiohttp.WSMsgType.ERROR:
                log.info("%s: websocket error: %s", self.name, msg.data)
                return
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                sid, ftype, payload = decode_frame(msg.data)
            except ValueError as e:
                log.warning("%s: bad frame (%s); closing", self.name, e)
                return
            await self._dispatch(sid, ftype, payload)

    async def _dispatch(self, sid: int, ftype: int, payload: bytes) -> None:
        stream = self._streams.get(sid)
        if ftype in OPEN_KINDS:
            await self._incoming(sid, ftype, payload)
        elif stream is None:
            return  # late frames of a stream that already ended
        elif ftype == DATA:
            stream._on_data(payload)
        elif ftype == ACCEPT:
            if not stream.accepted.done():
                stream._on_credit(_window(payload))
                stream.accepted.set_result(None)
        elif ftype == CREDIT:
            with contextlib.suppress(ValueError):
                stream._on_credit(get_uvarint(payload, 0)[0])
        elif ftype == CLOSE:
            err = None
            if payload:
                try:
                    d = orjson.loads(payload)
                    err = StreamError(int(d.get("code", 500)), str(d.get("message", "")))
                except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                    err = StreamError(502, "malformed close from the peer")
            stream._on_close(err)
            self.forget(stream)

    async def _incoming(self, sid: int, kind: int, payload: bytes) -> None:
        if self.on_open is None or sid in self._streams:
            return
        try:
            request = orjson.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (orjson.JSONDecodeError, ValueError):
            await self.send_frame(sid, CLOSE, orjson.dumps({"code": 400, "message": "malformed request"}))
            return
        if len(self._streams) >= self.max_streams:
            msg = f"too many concurrent streams on this node (limit {self.max_streams})"
            await self.send_frame(sid, CLOSE, orjson.dumps({"code": 429, "message": msg}))
            return
        window = request.pop(WINDOW_KEY, DEFAULT_WINDOW)
        stream = TunnelStream(self, sid, kind, request)
        stream._on_credit(window if isinstance(window, int) and window > 0 else DEFAULT_WINDOW)
        self._streams[sid] = stream
        self.opened += 1
        handler = self.on_open

        async def serve() -> None:
            try:
                await handler(stream)
            except StreamError as e:
                await stream.close(e)
            except (StreamClosed, ConnectionError):
                pass
            except Exception as e:
                log.exception("%s: %s stream %d failed", self.name, OPEN_KINDS[kind], sid)
                await stream.close(StreamError(500, f"internal error: {type(e).__name__}: {e}"))
            finally:
                await stream.close()

        task = asyncio.create_task(serve(), name=f"{self.name}/{OPEN_KINDS[kind]}-{sid}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
