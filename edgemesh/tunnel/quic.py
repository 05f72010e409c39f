"""One QUIC connection over the tunnel's shared UDP socket, driven by hand (aioquic is sans-I/O):
mutual TLS 1.3 with the node certificates, judged by the same Verifier as the TCP path, and one
bidirectional stream exposed as an asyncio Transport so a tunnel Session runs over it unchanged
(its frames, per-stream windows and keepalives — the keepalives also hold the NAT mapping open)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicErrorCode
from cryptography.hazmat.primitives.serialization import Encoding

from .dial import READ_LIMIT
from .identity import Identity, PeerRejected, Verifier
from .udp import Addr, UdpEndpoint

log = logging.getLogger(__name__)

ALPN = "edgemesh-tunnel/1"
SESSION_STREAM = 0  # the client's first bidirectional stream carries the session
# QUIC payload per datagram: fits a 1500-byte path with IPv6 and tunnel headers to spare (aioquic
# does no path-MTU discovery, so a too-large value would silently lose every full packet).
DATAGRAM_SIZE = 1350
# Session bytes not yet handed to the network before the session's writer is paused / resumed.
PIPE_HIGH_WATER = 1024 * 1024
PIPE_LOW_WATER = 256 * 1024
# Bytes held for a session whose reader paused us. The session reader drains promptly (its
# streams have their own windows), so more than this means a peer ignoring those windows.
RECV_BACKLOG_MAX = 16 * 1024 * 1024
# A graceful close waits this long for the peer to acknowledge the last bytes (the GOAWAY).
CLOSE_LINGER = 2.0


class _MutualTLS(QuicConnection):
    """aioquic asks for a client certificate only through a flag of its TLS context, which exists
    from the first datagram on; without it the server would not learn who its client is."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True


def configuration(identity: Identity, *, client: bool, idle_timeout: float) -> QuicConfiguration:
    cfg = QuicConfiguration(
        is_client=client,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_datagram_size=DATAGRAM_SIZE,
        congestion_control_algorithm="cubic",
        # Node certificates carry only the clientAuth usage; the Verifier judges them after the
        # handshake, before any session byte, on both sides (see identity.py).
        verify_mode=ssl.CERT_NONE,
    )
    cfg.load_cert_chain(identity.cert, identity.key)
    return cfg


def new_connection(cfg: QuicConfiguration, original_dcid: bytes | None = None) -> QuicConnection:
    return _MutualTLS(configuration=cfg, original_destination_connection_id=original_dcid)


class QuicLink:
    """A QUIC connection to one peer address; `ready` resolves to the verified peer node name."""

    def __init__(
        self,
        conn: QuicConnection,
        addr: Addr,
        udp: UdpEndpoint,
        verifier: Verifier,
        expect: str,
        on_closed: Callable[[QuicLink], None],
    ) -> None:
        self.conn, self.addr, self._udp = conn, addr, udp
        self._verifier, self.expect = verifier, expect
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[str] = self._loop.create_future()
        self.ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.pipe = QuicPipe(self)
        self._timer: asyncio.TimerHandle | None = None
        self._transmit_scheduled = False
        self._closing_after_flush = False
        self.closed = False
        self.close_reason = ""

    def connect(self) -> None:
        self.conn.connect(self.addr, self._loop.time())
        self._process()

    def datagram(self, data: bytes, addr: Addr) -> None:
        if self.closed:
            return
        self.conn.receive_datagram(data, addr, self._loop.time())
        self._process()

    # ---- driving aioquic -------------------------------------------------------------------
    def _process(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            self._on_event(ev)
            if self.closed:
                return
        if self._closing_after_flush and self._flushed():
            self.close("session closed", graceful=True)
            return
        self.transmit_soon()

    def _on_event(self, ev: events.QuicEvent) -> None:
        if isinstance(ev, events.HandshakeCompleted):
            self._verify()
        elif isinstance(ev, events.StreamDataReceived):
            if ev.stream_id != SESSION_STREAM or not self.ready.done() or self.ready.exception():
                self.close(f"unexpected data on QUIC stream {ev.stream_id}", error=True)
                return
            self.pipe.feed(ev.data, ev.end_stream)
        elif isinstance(ev, events.StreamReset):
            self.close(f"peer reset the session stream (code {ev.error_code})", error=True)
        elif isinstance(ev, events.ConnectionTerminated):
            self._terminated(ev.reason_phrase or f"QUIC error {ev.error_code}")

    def _verify(self) -> None:
        # aioquic keeps the peer certificate on its TLS context only.
        cert = getattr(self.conn.tls, "_peer_certificate", None)
        der = cert.public_bytes(Encoding.DER) if cert is not None else None
        try:
            name = self._verifier.check(der)
            if name != self.expect:
                raise PeerRejected(f"expected node {self.expect}, the certificate says {name}")
        except PeerRejected as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            self.close(str(e), error=True)
            return
        if not self.ready.done():
            self.ready.set_result(name)

    def transmit_soon(self) -> None:
        # Many writes and datagrams in one loop iteration become one pass over the connection.
        if not self._transmit_scheduled and not self.closed:
            self._transmit_scheduled = True
            self._loop.call_soon(self.transmit)

    def transmit(self) -> None:
        self._transmit_scheduled = False
        if self.closed or self._udp.paused:
            return
        for data, addr in self.conn.datagrams_to_send(self._loop.time()):
            self._udp.sendto(data, addr)
        self.pipe.check_writable()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.conn.get_timer()
        if at is not None and not self.closed:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        self.conn.handle_timer(self._loop.time())
        self._process()

    def unsent(self) -> int:
        """Session bytes written to QUIC and not yet sent once."""
        stream = self.conn._streams.get(SESSION_STREAM)  # aioquic has no public view of this
        return self.pipe.written - (stream.sender.highest_offset if stream is not None else 0)

    def _flushed(self) -> bool:
        stream = self.conn._streams.get(SESSION_STREAM)
        return stream is None or stream.sender.is_finished

    # ---- closing ---------------------------------------------------------------------------
    def close_after_flush(self) -> None:
        if self.closed or self._closing_after_flush:
            return
        self._closing_after_flush = True
        self._loop.call_later(CLOSE_LINGER, self.close, "session closed (linger expired)")
        self._process()

    def close(self, reason: str, *, error: bool = False, graceful: bool = False) -> None:
        """Send CONNECTION_CLOSE with the reason and forget the connection."""
        if self.closed:
            return
        code = QuicErrorCode.APPLICATION_ERROR if error else QuicErrorCode.NO_ERROR
        self.conn.close(error_code=code, reason_phrase=reason[:200])
        if not self._udp.paused:
            for data, addr in self.conn.datagrams_to_send(self._loop.time()):
                self._udp.sendto(data, addr)
        self._terminated(reason)

    def _terminated(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"QUIC to {self.addr[0]}:{self.addr[1]}: {reason}"))
        self.pipe.lost(ConnectionResetError(f"QUIC connection closed: {reason}"))
        self._on_closed(self)


class QuicPipe(asyncio.Transport):
    """The session stream of a QuicLink as a Transport for StreamReader/StreamWriter."""

    def __init__(self, link: QuicLink) -> None:
        super().__init__({"peername": link.addr, "tunnel_path": "holepunch"})
        self._link = link
        self._protocol: asyncio.BaseProtocol | None = None
        self._loop = asyncio.get_running_loop()
        self.written = 0
        self._write_paused = False
        self._eof_sent = False
        self._closing = False
        self._read_paused = False
        self._backlog: deque[bytes] = deque()
        self._backlog_size = 0
        self._eof_in = False
        self._lost = False

    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader = asyncio.StreamReader(limit=READ_LIMIT, loop=self._loop)
        proto = asyncio.StreamReaderProtocol(reader, loop=self._loop)
        self._protocol = proto
        proto.connection_made(self)
        self._loop.call_soon(self._flush)
        return reader, asyncio.StreamWriter(self, proto, reader, self._loop)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # ---- receive ---------------------------------------------------------------------------
    def feed(self, data: bytes, end: bool) -> None:
        if self._lost:
            return
        if data:
            if self._read_paused or self._protocol is None or self._backlog:
                self._backlog.append(data)
                self._backlog_size += len(data)
                if self._backlog_size > RECV_BACKLOG_MAX:
                    self._link.close(f"receive backlog over {RECV_BACKLOG_MAX} bytes", error=True)
                    return
            else:
                self._deliver(data)
        if end:
            self._eof_in = True
            if not self._backlog and self._protocol is not None:
                self._deliver_eof()

    def _deliver(self, data: bytes) -> None:
        assert self._protocol is not None
        self._protocol.data_received(data)  # type: ignore[attr-defined]

    def _deliver_eof(self) -> None:
        if self._protocol is not None and not self._lost:
            self._protocol.eof_received()  # type: ignore[attr-defined]

    def _flush(self) -> None:
        while self._backlog and not self._read_paused and self._protocol is not None and not self._lost:
            data = self._backlog.popleft()
            self._backlog_size -= len(data)
            self._deliver(data)
        if not self._backlog and self._eof_in:
            self._deliver_eof()

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            self._loop.call_soon(self._flush)

    def is_reading(self) -> bool:
        return not self._read_paused and not self._lost

    # ---- send ------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or self._eof_sent or not data:
            return
        self._link.conn.send_stream_data(SESSION_STREAM, bytes(data))
        self.written += len(data)
        self._link.transmit_soon()
        if not self._write_paused and self._link.unsent() > PIPE_HIGH_WATER:
            self._write_paused = True
            self._protocol_call("pause_writing")

    def check_writable(self) -> None:
        if self._write_paused and self._link.unsent() <= PIPE_LOW_WATER:
            self._write_paused = False
            self._protocol_call("resume_writing")

    def get_write_buffer_size(self) -> int:
        return max(0, self._link.unsent())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return PIPE_LOW_WATER, PIPE_HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # fixed: sized for the session's sender (see PIPE_HIGH_WATER)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._eof_sent and not self._lost:
            self._eof_sent = True
            self._link.conn.send_stream_data(SESSION_STREAM, b"", end_stream=True)
            self._link.transmit_soon()

    # ---- lifecycle -------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self.write_eof()
        self._link.close_after_flush()

    def abort(self) -> None:
        self._link.close("session aborted", error=True)

    def lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._backlog.clear()
        if self._protocol is not None:
            proto, self._protocol = self._protocol, None
            self._loop.call_soon(proto.connection_lost, exc)

    def _protocol_call(self, name: str) -> None:
        if self._protocol is None:
            return
        try:
            getattr(self._protocol, name)()
        except Exception:
            log.exception("protocol.%s failed on a QUIC pipe", name)


def link_summary(link: QuicLink) -> dict[str, Any]:
    return {"addr": f"{link.addr[0]}:{link.addr[1]}", "peer": link.expect, "closed": link.closed}
