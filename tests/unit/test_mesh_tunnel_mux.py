"""Tunnel framing, multiplexing and flow control over in-memory transports (socketpairs, and a
session nested inside a stream as on the relay path). No TLS, no network."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from edgemesh.tunnel.frames import (
    HEADER_SIZE,
    MAX_FRAME,
    FrameType,
    Open,
    OpenKind,
    ProtocolError,
    frame,
    parse_header,
)
from edgemesh.tunnel.session import Session
from edgemesh.tunnel.splice import splice
from edgemesh.tunnel.stream import INITIAL_WINDOW, SEND_HIGH_WATER, SEND_LOW_WATER, MuxStream, StreamRefused
from tests.cluster import wait_for

Pipe = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def pipe_pair() -> tuple[Pipe, Pipe]:
    a, b = socket.socketpair()
    return await asyncio.open_connection(sock=a, limit=2 * MAX_FRAME), await asyncio.open_connection(
        sock=b, limit=2 * MAX_FRAME
    )


async def echo(session: Session, stream: MuxStream, o: Open) -> None:
    if o.target == "refuse":
        raise StreamRefused("10.9.9.9:80/TCP is not an endpoint served by node b")
    session.accept(stream)
    r, w = stream.streams()
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.write_eof()


async def session_pair(on_open=echo, **kw) -> tuple[Session, Session]:
    (ra, wa), (rb, wb) = await pipe_pair()
    a = Session(ra, wa, initiator=True, peer="b", path="direct", **kw)
    b = Session(rb, wb, initiator=False, peer="a", path="direct", on_open=on_open, **kw)
    a.start()
    b.start()
    return a, b


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[tuple[Session, Session]]:
    a, b = await session_pair()
    yield a, b
    a.close("test over")
    b.close("test over")


CONNECT = Open(OpenKind.CONNECT, "TCP", 80, "10.0.0.1")


def test_frame_codec_round_trip_and_limits() -> None:
    raw = frame(FrameType.DATA, 7, b"xyz")
    assert parse_header(raw[:HEADER_SIZE]) == (FrameType.DATA, 7, 3)
    o = Open(OpenKind.RELAY_TO, "UDP", 53, "node-a")
    assert Open.decode(o.encode()) == o
    with pytest.raises(ProtocolError):
        parse_header(bytes([3, 0, 0, 0, 1]) + (MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        parse_header(bytes([99, 0, 0, 0, 1, 0, 0, 0, 0]))
    for bad in (b"", b"\x00\x09\x00\x50x", b"\x07\x00\x00\x50x", b"\x00\x00\x00\x50" + b"x" * 300):
        with pytest.raises(ProtocolError):
            Open.decode(bad)


async def test_streams_carry_bytes_intact_both_ways_with_half_close(pair: tuple[Session, Session]) -> None:
    a, _ = pair
    payload = os.urandom(5 * 1024 * 1024 + 17)
    streams = [(await a.open(CONNECT)).streams() for _ in range(3)]

    async def roundtrip(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
        async def send() -> None:
            for i in range(0, len(payload), 100_000):
                w.write(payload[i : i + 100_000])
                await w.drain()
            w.write_eof()

        sender = asyncio.ensure_future(send())
        got = await r.read(-1)  # until the echo side's CLOSE
        await sender
        return got

    results = await asyncio.gather(*(roundtrip(r, w) for r, w in streams))
    for got in results:
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    await wait_for(lambda: _async(a.stream_count == 0), what="streams forgotten after both closes")


async def test_refused_open_carries_the_reason(pair: tuple[Session, Session]) -> None:
    a, _ = pair
    with pytest.raises(StreamRefused, match="not an endpoint served by node b"):
        await a.open(Open(OpenKind.CONNECT, "TCP", 80, "refuse"))
    # the session is unaffected
    r, w = (await a.open(CONNECT)).streams()
    w.write(b"still here")
    w.write_eof()
    assert await r.read(-1) == b"still here"


async def test_a_reader_that_stops_reading_stops_the_writer_within_bounded_buffers() -> None:
    held: dict[str, MuxStream] = {}
    accepted = asyncio.Event()

    async def sink(session: Session, stream: MuxStream, o: Open) -> None:
        session.accept(stream)
        held["s"] = stream
        accepted.set()

    a, b = await session_pair(on_open=sink)
    try:
        s = await a.open(CONNECT)
        await accepted.wait()
        far = held["s"]
        reader = asyncio.StreamReader(limit=64 * 1024)
        proto = asyncio.StreamReaderProtocol(reader)
        far.set_protocol(proto)
        proto.connection_made(far)
        _r, w = s.streams()
        total = 8 * 1024 * 1024
        chunk = os.urandom(64 * 1024)

        async def send() -> None:
            for _ in range(total // len(chunk)):
                w.write(chunk)
                await w.drain()
            w.write_eof()

        sender = asyncio.ensure_future(send())
        # Nobody reads: the sender runs out of credit and its drain() blocks with a bounded buffer.
        await wait_for(
            lambda: _async(s.credit == 0 and s.get_write_buffer_size() > SEND_LOW_WATER),
            what="sender blocked on credit",
        )
        assert not sender.done()
        # What sits at the receiver is at most the granted window plus the StreamReader's own pause mark.
        at_receiver = len(reader._buffer) + sum(len(x) for x in far._recv)  # type: ignore[attr-defined]
        assert at_receiver <= a.window + 2 * 64 * 1024 + MAX_FRAME
        assert s.get_write_buffer_size() <= SEND_HIGH_WATER + len(chunk)
        got = 0
        while data := await reader.read(1 << 20):
            got += len(data)
        await sender
        assert got == total
    finally:
        a.close("test over")
        b.close("test over")


async def test_sending_past_the_window_resets_the_stream() -> None:
    (_ra, wa), (rb, wb) = await pipe_pair()
    opened = asyncio.Event()
    seen: list[MuxStream] = []

    async def accept(session: Session, stream: MuxStream, o: Open) -> None:
        session.accept(stream)
        seen.append(stream)
        opened.set()

    b = Session(rb, wb, initiator=False, peer="rogue", path="direct", on_open=accept)
    b.start()
    try:
        wa.write(frame(FrameType.OPEN, 1, CONNECT.encode()))
        await opened.wait()
        # A raw peer that ignores credit: more than the initial window in one go.
        for _ in range(INITIAL_WINDOW // MAX_FRAME + 2):
            wa.write(frame(FrameType.DATA, 1, bytes(MAX_FRAME)))
        await wa.drain()
        await wait_for(lambda: _async(seen[0].reset_reason is not None), what="stream reset")
        assert "flow control violation" in (seen[0].reset_reason or "")
        assert not b.closed.done()  # only the stream pays, not the session
    finally:
        b.close("test over")
        wa.close()


async def test_protocol_garbage_closes_only_that_session() -> None:
    (_ra, wa), (rb, wb) = await pipe_pair()
    b = Session(rb, wb, initiator=False, peer="rogue", path="direct", on_open=echo)
    b.start()
    wa.write(b"\xff" * 64)
    reason = await asyncio.wait_for(b.closed, 5)
    assert "ProtocolError" in reason
    wa.close()


async def test_silent_peer_fails_its_streams_within_the_keepalive_timeout() -> None:
    (ra, wa), (rb, wb) = await pipe_pair()
    a = Session(
        ra, wa, initiator=True, peer="ghost", path="direct", keepalive_interval=0.1, keepalive_timeout=0.5
    )
    a.start()
    # The far end answers the OPEN then goes silent (a hung or vanished node: no FIN, no RST).
    opening = asyncio.ensure_future(a.open(CONNECT))
    hdr = await rb.readexactly(HEADER_SIZE)
    _, sid, n = parse_header(hdr)
    await rb.readexactly(n)
    wb.write(frame(FrameType.OPENED, sid))
    r, _w = (await opening).streams()
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionResetError, match="keepalive timeout"):
        await r.read(100)
    assert asyncio.get_running_loop().time() - t0 < 0.5 + 0.1 + 1.0
    assert "keepalive timeout" in a.closed.result()
    with pytest.raises(ConnectionError):
        await a.open(CONNECT)
    wb.close()


async def test_peer_death_resets_streams_with_a_reason(pair: tuple[Session, Session]) -> None:
    a, b = pair
    r, _w = (await a.open(CONNECT)).streams()
    b.close("node b shut down")
    with pytest.raises(ConnectionResetError, match="tunnel to b lost"):
        while await r.read(100):
            pass


async def test_session_nested_in_a_stream_like_the_relay_path(pair: tuple[Session, Session]) -> None:
    """A stream (A→relay) spliced with another (relay→B) carries a whole inner session."""
    outer_a, outer_relay = pair  # echo handler replaced below for the relay side
    inner_done: asyncio.Future[Session] = asyncio.get_running_loop().create_future()

    relay_b, b_relay = await session_pair(on_open=None)

    async def b_side(session: Session, stream: MuxStream, o: Open) -> None:
        session.accept(stream)
        r, w = stream.streams()
        inner = Session(r, w, initiator=False, peer="a", path="relay", on_open=echo)
        inner.start()
        inner_done.set_result(inner)

    b_relay._on_open = b_side

    async def relay(session: Session, stream: MuxStream, o: Open) -> None:
        out = await relay_b.open(Open(OpenKind.RELAYED_FROM, "TCP", 0, "a"))
        session.accept(stream)
        await splice(stream.streams(), out.streams())

    outer_relay._on_open = relay
    try:
        carrier = await outer_a.open(Open(OpenKind.RELAY_TO, "TCP", 0, "b"))
        r, w = carrier.streams()
        inner_a = Session(r, w, initiator=True, peer="b", path="relay")
        inner_a.start()
        payload = os.urandom(2 * 1024 * 1024)
        ir, iw = (await inner_a.open(CONNECT)).streams()
        iw.write(payload)
        iw.write_eof()
        assert await ir.read(-1) == payload
        inner_b = await inner_done
        # The relay vanishing fails the inner session too.
        relay_b.close("relay lost b")
        reason = await asyncio.wait_for(inner_a.closed, 5)
        assert "lost" in reason
        inner_b.close("test over")
    finally:
        relay_b.close("test over")
        b_relay.close("test over")


async def _async(v: object) -> object:
    return v
