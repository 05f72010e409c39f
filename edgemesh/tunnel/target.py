"""The receiving end of a CONNECT stream: check the target is one this node serves, connect to it,
and relay bytes (TCP) or length-prefixed datagrams (UDP)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from .frames import Open
from .splice import splice
from .stream import MuxStream, StreamRefused

log = logging.getLogger(__name__)

# Is (ip, port, protocol) an endpoint this node serves? The agent answers from its service table.
Serves = Callable[[str, int, str], bool]

CONNECT_TIMEOUT = 5.0
# UDP through the tunnel: each datagram is a u16 big-endian length and the bytes.
DGRAM_LEN = struct.Struct("!H")
# Datagrams queued toward the tunnel beyond this are dropped, as a congested UDP path would.
UDP_QUEUE_BYTES = 512 * 1024


async def connect_target(
    stream: MuxStream, o: Open, serves: Serves, node_name: str, accept: Callable[[MuxStream], None]
) -> tuple[int, int]:
    """Serve one CONNECT stream to completion; StreamRefused (→ RESET with the reason) if refused."""
    where = f"{o.target}:{o.port}/{o.protocol}"
    if not serves(o.target, o.port, o.protocol):
        raise StreamRefused(f"{where} is not an endpoint served by node {node_name}")
    if o.protocol == "TCP":
        try:
            tr, tw = await asyncio.wait_for(asyncio.open_connection(o.target, o.port), CONNECT_TIMEOUT)
        except TimeoutError:
            raise StreamRefused(f"connect to {where} timed out on node {node_name}") from None
        except OSError as e:
            raise StreamRefused(f"connect to {where} failed on node {node_name}: {e.strerror or e}") from None
        accept(stream)
        return await splice(stream.streams(), (tr, tw))
    if o.protocol == "UDP":
        return await _udp(stream, o, accept)
    raise StreamRefused(f"{o.protocol} is not carried by the tunnel")


class _UdpOut(asyncio.DatagramProtocol):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.received = 0
        self.dropped = 0
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.writer.transport.get_write_buffer_size() > UDP_QUEUE_BYTES:
            self.dropped += 1
            return
        self.received += len(data)
        self.writer.write(DGRAM_LEN.pack(len(data)) + data)

    def error_received(self, exc: Exception) -> None:
        self.error = exc  # ICMP port unreachable and the like; UDP carries on


async def _udp(stream: MuxStream, o: Open, accept: Callable[[MuxStream], None]) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    accept(stream)
    reader, writer = stream.streams()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _UdpOut(writer), remote_addr=(o.target, o.port)
    )
    sent = 0
    try:
        while True:
            try:
                (n,) = DGRAM_LEN.unpack(await reader.readexactly(DGRAM_LEN.size))
                data = await reader.readexactly(n)
            except asyncio.IncompleteReadError:
                break
            transport.sendto(data)
            sent += n
    finally:
        transport.close()
        writer.close()
    return sent, proto.received
