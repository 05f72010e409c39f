"""One multiplexed stream as an asyncio Transport, so StreamReader/StreamWriter and TLS (start_tls)
work over it unchanged. Credit-based flow control: the receiver grants bytes, the sender never
sends more than granted, and both buffers stay bounded."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .frames import MAX_FRAME

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

# Credit every stream starts with in each direction; a receiver configured for more grants the
# difference with a WINDOW frame right after OPEN/OPENED, so no negotiation is needed.
INITIAL_WINDOW = 256 * 1024
# The app's writes past this pause it (StreamWriter.drain waits) until the buffer falls below LOW.
SEND_HIGH_WATER = 256 * 1024
SEND_LOW_WATER = 64 * 1024
# A writer that ignores drain() and buffers past this loses its stream instead of our memory.
MAX_SEND_BUFFER = 8 * 1024 * 1024


class StreamRefused(ConnectionError):
    """The remote side reset the stream before it was open (target refused, not served, ...)."""


def deliver(proto: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand bytes to a protocol, whether it reads with data_received or into its own buffer."""
    if isinstance(proto, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = memoryview(proto.get_buffer(len(view)))
            n = min(len(buf), len(view))
            if n == 0:
                raise RuntimeError("protocol offered an empty buffer")
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]
    elif isinstance(proto, asyncio.Protocol):
        proto.data_received(data)


class MuxStream(asyncio.Transport):
    # loop.start_tls refuses transports that do not declare this: it is how nested TLS over a
    # relayed stream works.
    _start_tls_compatible = True

    def __init__(self, session: Session, sid: int, extra: dict[str, Any] | None = None) -> None:
        super().__init__(extra)
        self._session = session
        self.sid = sid
        self._loop = asyncio.get_running_loop()
        self._protocol: asyncio.BaseProtocol | None = None
        self.opened: asyncio.Future[None] = self._loop.create_future()
        # Streams the peer opened have nobody awaiting `opened`; a refusal must not log as unretrieved.
        self.opened.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        # receive side
        self._recv: deque[bytes] = deque()
        self._recv_paused = False
        self._granted = INITIAL_WINDOW  # bytes the peer may still send
        self._consumed = 0  # delivered to the protocol and not yet credited back
        self._window = INITIAL_WINDOW
        self._eof_in = False  # peer sent CLOSE
        self._eof_delivered = False
        # send side
        self._send: deque[bytes] = deque()
        self._send_size = 0
        self.credit = INITIAL_WINDOW  # bytes we may send
        self._eof_out = False  # app asked for write_eof/close
        self._close_sent = False
        self._write_paused = False
        self._closing = False  # close() called by the app
        self._lost = False
        self._reset_draining = False  # session gone after the peer's CLOSE: buffered bytes still go up
        self.reset_reason: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # ---- wiring ----------------------------------------------------------------------------
    def set_window(self, window: int) -> None:
        """Grant the peer more than INITIAL_WINDOW (call right after accepting/opening)."""
        if window > self._window:
            extra = window - self._window
            self._window = window
            self._granted += extra
            self._session.send_window(self.sid, extra)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        if not self._recv_paused:
            self._loop.call_soon(self._flush_recv)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def streams(self, limit: int = 2 * MAX_FRAME) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Wrap this stream as the (reader, writer) pair asyncio.open_connection would return."""
        reader = asyncio.StreamReader(limit=limit, loop=self._loop)
        proto = asyncio.StreamReaderProtocol(reader, loop=self._loop)
        self.set_protocol(proto)
        proto.connection_made(self)
        return reader, asyncio.StreamWriter(self, proto, reader, self._loop)

    # ---- receive ---------------------------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        if self._lost:
            return
        if len(data) > self._granted:
            self._session.reset(self.sid, "flow control violation: sent past the granted window")
            return
        self._granted -= len(data)
        self.bytes_in += len(data)
        if self._closing:  # the app closed its end: drop, but keep the sender's credit flowing
            self._credit_back(len(data))
            return
        if self._recv_paused or self._protocol is None or self._recv:
            self._recv.append(data)
            return
        self._hand_over(data)

    def on_eof(self) -> None:
        self._eof_in = True
        if not self._recv:
            self._deliver_eof()

    def _hand_over(self, data: bytes) -> None:
        assert self._protocol is not None
        try:
            deliver(self._protocol, data)
        except Exception as e:
            # The protocol (nested TLS on a relayed stream, say) failed on this stream's bytes: that
            # ends this stream, never the session under it that carries everyone else's.
            log.warning("stream %d: protocol failed on received data: %s: %s", self.sid, type(e).__name__, e)
            self._session.reset(self.sid, f"receiver failed: {type(e).__name__}")
            return
        self._credit_back(len(data))

    def _credit_back(self, n: int) -> None:
        self._consumed += n
        # Batch WINDOW frames: one per half window keeps the sender busy without a frame per DATA.
        if self._consumed >= self._window // 2 and not self._lost:
            self._granted += self._consumed
            self._session.send_window(self.sid, self._consumed)
            self._consumed = 0

    def _flush_recv(self) -> None:
        while self._recv and not self._recv_paused and self._protocol is not None and not self._lost:
            self._hand_over(self._recv.popleft())
        if not self._recv and self._eof_in:
            self._deliver_eof()

    def _deliver_eof(self) -> None:
        if self._eof_delivered or self._lost or self._protocol is None:
            return
        self._eof_delivered = True
        keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        if self._reset_draining:
            self._closing = True
            self._lost = True
            self._loop.call_soon(self._connection_lost, None)
            return
        if not keep_open:
            self.close()
        self._maybe_finished()

    def pause_reading(self) -> None:
        self._recv_paused = True

    def resume_reading(self) -> None:
        if self._recv_paused:
            self._recv_paused = False
            self._loop.call_soon(self._flush_recv)

    def is_reading(self) -> bool:
        return not self._recv_paused and not self._lost

    # ---- send ------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or self._eof_out or self._reset_draining:
            if self.reset_reason is not None:
                raise ConnectionResetError(self.reset_reason)
            return
        if not data:
            return
        data = bytes(data)
        self._send.append(data)
        self._send_size += len(data)
        if self._send_size > MAX_SEND_BUFFER:
            self._session.reset(self.sid, f"send buffer over {MAX_SEND_BUFFER} bytes (writer ignores drain)")
            return
        self._session.want_send(self)
        if self._send_size > SEND_HIGH_WATER and not self._write_paused:
            self._write_paused = True
            self._protocol_call("pause_writing")

    def take(self, budget: int) -> list[bytes]:
        """Pop up to min(budget, credit) bytes as frame-sized chunks (the session's sender calls this)."""
        out: list[bytes] = []
        room = min(budget, self.credit)
        while self._send and room > 0:
            chunk = self._send[0]
            n = min(len(chunk), room, MAX_FRAME)
            if n == len(chunk):
                self._send.popleft()
            else:
                self._send[0] = chunk[n:]
                chunk = chunk[:n]
            out.append(chunk)
            room -= n
            self.credit -= n
            self._send_size -= n
            self.bytes_out += n
        if self._write_paused and self._send_size <= SEND_LOW_WATER:
            self._write_paused = False
            self._protocol_call("resume_writing")
        return out

    def has_sendable(self) -> bool:
        return bool(self._send) and self.credit > 0

    def wants_close_frame(self) -> bool:
        return self._eof_out and not self._send and not self._close_sent and not self._lost

    def close_frame_sent(self) -> None:
        self._close_sent = True
        self._maybe_finished()

    def on_window(self, n: int) -> None:
        self.credit += n
        if self._send:
            self._session.want_send(self)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._eof_out and not self._lost:
            self._eof_out = True
            self._session.want_send(self)

    def get_write_buffer_size(self) -> int:
        return self._send_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return SEND_LOW_WATER, SEND_HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the limits are the stream's, chosen with its window; callers cannot raise them

    # ---- lifecycle -------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._recv.clear()
        self.write_eof()
        self._loop.call_soon(self._connection_lost, None)
        self._maybe_finished()

    def abort(self) -> None:
        if not self._lost:
            self._session.reset(self.sid, "aborted by the application")

    def _force_close(self, exc: BaseException | None) -> None:
        # asyncio's TLS layer (start_tls over this stream) calls this on a fatal TLS error.
        self.abort()

    def on_reset(self, reason: str) -> None:
        """The stream is gone (peer RESET, local reset, or session death)."""
        if self._lost or self._reset_draining:
            return
        self.reset_reason = reason
        if self._eof_in and not self._closing and not self._eof_delivered and self._protocol is not None:
            # The peer's CLOSE is already here, so all it sent is buffered: the app still reads it
            # and then EOF (a session that drains and closes must not cut the tail off a response).
            self._reset_draining = True
            self._send.clear()
            self._send_size = 0
            self._session.forget(self.sid)
            self._loop.call_soon(self._flush_recv)
            return
        self._lost = True
        self._recv.clear()
        self._send.clear()
        self._send_size = 0
        if not self.opened.done():
            self.opened.set_exception(StreamRefused(reason))
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._connection_lost, ConnectionResetError(reason))
        self._session.forget(self.sid)

    def _maybe_finished(self) -> None:
        # Both directions done: our CLOSE is out and the peer's was delivered (or the app closed).
        if self._close_sent and (self._eof_delivered or self._closing) and not self._lost:
            self._lost = True
            self._session.forget(self.sid)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._protocol is not None:
            proto, self._protocol = self._protocol, None
            proto.connection_lost(exc)

    def _protocol_call(self, name: str) -> None:
        if self._protocol is None:
            return
        try:
            getattr(self._protocol, name)()
        except Exception:
            log.exception("protocol.%s failed on stream %d", name, self.sid)
