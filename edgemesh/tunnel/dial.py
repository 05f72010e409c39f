"""Establishing the authenticated byte pipe a Session runs over: TLS over TCP (direct), and TLS
over a relayed stream (nested TLS: the relay sees only ciphertext and cannot impersonate a peer)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from .frames import MAX_FRAME
from .identity import PeerRejected, Verifier

HANDSHAKE_TIMEOUT = 10.0
READ_LIMIT = 2 * MAX_FRAME

Pipe = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def fmt_addr(a: Any) -> str:
    return f"{a[0]}:{a[1]}" if isinstance(a, tuple) and len(a) >= 2 else str(a)


def peer_certificate(writer: asyncio.StreamWriter) -> bytes | None:
    obj = writer.get_extra_info("ssl_object")
    return obj.getpeercert(binary_form=True) if obj is not None else None


def check_peer(writer: asyncio.StreamWriter, verifier: Verifier, expect: str | None) -> str:
    """The peer's node name; PeerRejected if it is not the node we meant to reach."""
    name = verifier.check(peer_certificate(writer))
    if expect is not None and name != expect:
        raise PeerRejected(f"expected node {expect}, the certificate says {name}")
    return name


async def dial_tls(host: str, port: int, ctx: ssl.SSLContext, deadline_s: float) -> Pipe:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, limit=READ_LIMIT, ssl_handshake_timeout=deadline_s),
        deadline_s,
    )


async def tls_over(transport: asyncio.Transport, ctx: ssl.SSLContext, *, server_side: bool) -> Pipe:
    """Run TLS over a transport (a multiplexed stream, or a freshly accepted TCP connection) and
    return it as a (reader, writer) pair."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
    proto = asyncio.StreamReaderProtocol(reader, loop=loop)
    tls = await loop.start_tls(
        transport, proto, ctx, server_side=server_side, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
    )
    if tls is None:
        raise ConnectionError("stream closed during the TLS handshake")
    proto.connection_made(tls)
    return reader, asyncio.StreamWriter(tls, proto, reader, loop)


# TLS handshakes in progress on one listener; connections beyond this are closed at once.
MAX_HANDSHAKES = 256

Accepted = Callable[[asyncio.Transport, Any], Coroutine[Any, Any, None]]


class _Paused(asyncio.Protocol):
    """Holds an accepted connection with reading paused from the first moment, so the ClientHello
    stays in the kernel until TLS takes the transport over (a StreamReader would swallow it)."""

    def __init__(self, on_accept: Accepted, pending: set[asyncio.Task[None]]) -> None:
        self._on_accept = on_accept
        self._pending = pending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        if len(self._pending) >= MAX_HANDSHAKES:
            transport.abort()
            return
        t = asyncio.get_running_loop().create_task(
            self._on_accept(transport, transport.get_extra_info("peername"))
        )
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)


async def listen(host: str, port: int, on_accept: Accepted) -> asyncio.Server:
    """A TCP listener that hands each raw connection (reading paused) to on_accept."""
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Paused(on_accept, pending), host, port, reuse_address=True)
