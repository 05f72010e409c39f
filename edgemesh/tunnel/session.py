"""A tunnel session: many MuxStreams over one byte pipe (TLS over TCP, or TLS over a relayed
stream). Owns three supervised tasks — frame reader, frame sender, keepalive — and when any of them
ends, the session ends and every stream on it is reset with the reason."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .frames import (
    HEADER_SIZE,
    WINDOW_PAYLOAD,
    FrameType,
    Open,
    ProtocolError,
    frame,
    header,
    parse_header,
)
from .stream import INITIAL_WINDOW, MuxStream, StreamRefused

log = logging.getLogger(__name__)

# Streams one session carries at once; OPEN beyond this is reset ("too many streams").
MAX_STREAMS = 1024
# Bytes one stream may send before the sender moves to the next ready stream (fairness).
SEND_QUANTUM = 512 * 1024
# The sender waits for the socket to drain once this much is queued in the transport.
TRANSPORT_HIGH_WATER = 1024 * 1024
# Reasons travel in RESET/GOAWAY frames; longer ones are cut.
MAX_REASON = 200

OpenHandler = Callable[["Session", MuxStream, Open], Awaitable[None]]


class Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        initiator: bool,
        peer: str,
        path: str,
        on_open: OpenHandler | None = None,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 15.0,
        window: int = INITIAL_WINDOW,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self._r, self._w = reader, writer
        self.initiator = initiator
        self.peer, self.path = peer, path
        self._on_open = on_open
        self._interval, self._timeout = keepalive_interval, keepalive_timeout
        self.window = window
        self.max_streams = max_streams
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, MuxStream] = {}
        self._next_sid = 1 if initiator else 2
        self._ctrl: deque[bytes] = deque()
        self._ready: deque[MuxStream] = deque()
        self._queued: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self.draining = False  # we or the peer sent GOAWAY: no new streams
        self.last_rx = self._loop.time()
        self.rtt: float | None = None
        self._ping_sent: dict[bytes, float] = {}
        self.bytes_in = 0
        self.bytes_out = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for name, coro in (
            ("reader", self._reader()),
            ("sender", self._sender()),
            ("keepalive", self._keepalive()),
        ):
            t = self._loop.create_task(coro, name=f"tunnel-{self.peer}-{name}")
            self._tasks.add(t)
            t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if t.cancelled():
            self.close("cancelled")
            return
        exc = t.exception()
        if isinstance(exc, asyncio.IncompleteReadError | ConnectionError | OSError):
            self.close(f"connection to {self.peer} lost ({type(exc).__name__}: {exc})")
        elif exc is not None:
            if not isinstance(exc, ProtocolError):
                log.error("tunnel session %s: %s failed", self.peer, t.get_name(), exc_info=exc)
            self.close(f"{type(exc).__name__}: {exc}")
        else:
            self.close("session ended")

    @property
    def usable(self) -> bool:
        return not self.closed.done() and not self.draining

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def close(self, reason: str, *, graceful: bool = False) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        for s in list(self._streams.values()):
            s.on_reset(f"tunnel to {self.peer} lost: {reason}")
        for t in list(self._tasks) + list(self._handlers):
            t.cancel()
        if graceful:
            self._w.write(frame(FrameType.GOAWAY, 0, reason.encode()[:MAX_REASON]))
            self._w.close()
        else:
            self._w.transport.abort()

    def goaway(self, reason: str) -> None:
        """Take no new streams; close once the ones running finish."""
        if self.closed.done() or self.draining:
            return
        self.draining = True
        self._send_ctrl(frame(FrameType.GOAWAY, 0, reason.encode()[:MAX_REASON]))
        if not self._streams:
            self.close(reason, graceful=True)

    # ---- streams ---------------------------------------------------------------------------
    async def open(self, o: Open, *, deadline_s: float = 10.0) -> MuxStream:
        """Open a stream and wait until the far side accepted it; StreamRefused with its reason if not."""
        if not self.usable:
            raise ConnectionError(f"tunnel to {self.peer} is closing")
        if len(self._streams) >= self.max_streams:
            raise StreamRefused(f"too many streams to {self.peer} ({self.max_streams})")
        sid = self._next_sid
        self._next_sid += 2
        s = self._new_stream(sid)
        self._send_ctrl(frame(FrameType.OPEN, sid, o.encode()))
        s.set_window(self.window)
        try:
            await asyncio.wait_for(asyncio.shield(s.opened), deadline_s)
        except TimeoutError:
            self.reset(sid, f"open timed out after {deadline_s}s")
            raise StreamRefused(f"{self.peer} did not answer OPEN within {deadline_s}s") from None
        return s

    def accept(self, s: MuxStream) -> None:
        self._send_ctrl(frame(FrameType.OPENED, s.sid))
        s.set_window(self.window)
        if not s.opened.done():
            s.opened.set_result(None)

    def reset(self, sid: int, reason: str) -> None:
        self._send_ctrl(frame(FrameType.RESET, sid, reason.encode()[:MAX_REASON]))
        s = self._streams.get(sid)
        if s is not None:
            s.on_reset(reason)

    def forget(self, sid: int) -> None:
        self._streams.pop(sid, None)
        if self.draining and not self._streams and not self.closed.done():
            self.close("drained", graceful=True)

    def send_window(self, sid: int, n: int) -> None:
        self._send_ctrl(frame(FrameType.WINDOW, sid, WINDOW_PAYLOAD.pack(n)))

    def want_send(self, s: MuxStream) -> None:
        if s.sid not in self._queued:
            self._queued.add(s.sid)
            self._ready.append(s)
        self._wake.set()

    def _new_stream(self, sid: int) -> MuxStream:
        s = MuxStream(self, sid, {"tunnel_peer": self.peer, "tunnel_path": self.path, "peername": None})
        self._streams[sid] = s
        return s

    def _send_ctrl(self, data: bytes) -> None:
        if not self.closed.done():
            self._ctrl.append(data)
            self._wake.set()

    # ---- tasks -----------------------------------------------------------------------------
    async def _reader(self) -> None:
        r = self._r
        while True:
            ftype, sid, n = parse_header(await r.readexactly(HEADER_SIZE))
            payload = await r.readexactly(n) if n else b""
            self.last_rx = self._loop.time()
            if ftype is FrameType.DATA:
                self.bytes_in += n
                s = self._streams.get(sid)
                if s is not None:
                    s.on_data(payload)
                else:  # the stream is gone here; tell the sender once so it stops
                    self._send_ctrl(frame(FrameType.RESET, sid, b"stream closed"))
            elif ftype is FrameType.WINDOW:
                if n != WINDOW_PAYLOAD.size:
                    raise ProtocolError("WINDOW frame with a bad payload")
                s = self._streams.get(sid)
                if s is not None:
                    s.on_window(WINDOW_PAYLOAD.unpack(payload)[0])
            elif ftype is FrameType.OPEN:
                self._on_open_frame(sid, payload)
            elif ftype is FrameType.OPENED:
                s = self._streams.get(sid)
                if s is not None and not s.opened.done():
                    s.opened.set_result(None)
            elif ftype is FrameType.CLOSE:
                s = self._streams.get(sid)
                if s is not None:
                    s.on_eof()
            elif ftype is FrameType.RESET:
                s = self._streams.get(sid)
                if s is not None:
                    s.on_reset(payload.decode(errors="replace") or "reset by peer")
            elif ftype is FrameType.PING:
                self._send_ctrl(frame(FrameType.PONG, 0, payload))
            elif ftype is FrameType.PONG:
                sent = self._ping_sent.pop(payload, None)
                if sent is not None:
                    self.rtt = self._loop.time() - sent
            elif ftype is FrameType.GOAWAY:
                self.draining = True
                if not self._streams:
                    self.close(f"peer said goodbye: {payload.decode(errors='replace')}", graceful=True)

    def _on_open_frame(self, sid: int, payload: bytes) -> None:
        o = Open.decode(payload)
        if sid == 0 or (sid % 2 == 1) == self.initiator or sid in self._streams:
            raise ProtocolError(f"OPEN with stream id {sid} the peer may not use")
        if self.draining or self._on_open is None:
            self._send_ctrl(frame(FrameType.RESET, sid, b"session is closing"))
            return
        if len(self._streams) >= self.max_streams:
            self._send_ctrl(frame(FrameType.RESET, sid, f"too many streams ({self.max_streams})".encode()))
            return
        s = self._new_stream(sid)
        t = self._loop.create_task(self._handle_open(s, o), name=f"tunnel-{self.peer}-open-{sid}")
        self._handlers.add(t)
        t.add_done_callback(self._handlers.discard)

    async def _handle_open(self, s: MuxStream, o: Open) -> None:
        assert self._on_open is not None
        try:
            await self._on_open(self, s, o)
        except StreamRefused as e:
            self.reset(s.sid, str(e))
        except Exception as e:
            log.exception("tunnel: handling OPEN %s from %s failed", o, self.peer)
            self.reset(s.sid, f"internal error: {type(e).__name__}")

    async def _sender(self) -> None:
        w = self._w
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ctrl or self._ready:
                if self._ctrl:
                    w.writelines(list(self._ctrl))
                    self._ctrl.clear()
                if self._ready:
                    s = self._ready.popleft()
                    self._queued.discard(s.sid)
                    out: list[bytes] = []
                    for chunk in s.take(SEND_QUANTUM):
                        out.append(header(FrameType.DATA, s.sid, len(chunk)))
                        out.append(chunk)
                        self.bytes_out += len(chunk)
                    closing = s.wants_close_frame()
                    if closing:
                        out.append(frame(FrameType.CLOSE, s.sid))
                    if out:
                        w.writelines(out)
                    if closing:
                        # Only now: a finished stream may drain the session, which closes the
                        # writer, so the frames must be in it first.
                        s.close_frame_sent()
                    if s.has_sendable() and s.sid not in self._queued:
                        self._queued.add(s.sid)
                        self._ready.append(s)
                if w.transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER:
                    await w.drain()
            await w.drain()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a timer, not synchronisation: pings are periodic
            idle = self._loop.time() - self.last_rx
            if idle > self._timeout:
                self.close(f"no frame from {self.peer} for {idle:.1f}s (keepalive timeout {self._timeout}s)")
                return
            nonce = os.urandom(8)
            self._ping_sent = {nonce: self._loop.time()}  # only the latest ping is timed
            self._send_ctrl(frame(FrameType.PING, 0, nonce))
