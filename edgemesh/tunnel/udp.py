"""The tunnel's UDP socket, shared by everything that must leave through one NAT mapping:
rendezvous registration, hole-punching probes and QUIC. Our control packets start with a zero
byte, which no QUIC packet has (QUIC sets the fixed bit 0x40 in every first byte), so one socket
tells them apart without a handshake."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

log = logging.getLogger(__name__)

Addr = tuple[str, int]

MAGIC = b"\x00EMT"
CTL_HEADER = struct.Struct("!4sB")
# Control packets carry a token or a punch id; anything longer is not ours and is dropped.
MAX_CTL = 64
QUIC_FIXED_BIT = 0x40


class Ctl(IntEnum):
    REGISTER = 1  # agent → relay: body is the token the relay handed out over TLS
    PROBE = 2  # peer → peer: body is the punch id both learnt from the relay
    PROBE_ACK = 3  # answer to a PROBE: the sender's probes get through


def ctl_packet(kind: Ctl, body: bytes) -> bytes:
    return CTL_HEADER.pack(MAGIC, kind) + body


def parse_ctl(data: bytes) -> tuple[Ctl, bytes] | None:
    if len(data) < CTL_HEADER.size or len(data) > MAX_CTL:
        return None
    magic, kind = CTL_HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    try:
        return Ctl(kind), data[CTL_HEADER.size :]
    except ValueError:
        return None


def addr_key(addr: Any) -> Addr:
    """(host, port) of a socket address (IPv6 ones carry flow info and scope id too)."""
    return str(addr[0]), int(addr[1])


# Datagrams read per wake-up of the socket: a batch is handled before QUIC answers once, which
# is what lets Python keep up (asyncio's datagram transport reads one per loop iteration).
RECV_BATCH = 64
MAX_DATAGRAM = 65535
# Kernel socket buffers: a burst of a congestion window fits; beyond it the kernel drops.
SOCKET_BUFFER = 4 * 1024 * 1024


class UdpEndpoint:
    """A non-blocking UDP socket on the event loop. Sends never queue in user space: when the
    kernel buffer is full the datagram is dropped (QUIC sees a loss and backs off) and senders
    are told once it drains again."""

    def __init__(
        self,
        sock: socket.socket,
        on_ctl: Callable[[Ctl, bytes, Addr], None],
        on_quic: Callable[[bytes, Addr], None],
        on_writable: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._on_ctl, self._on_quic, self._on_writable = on_ctl, on_quic, on_writable
        self._loop = asyncio.get_running_loop()
        self.paused = False
        self.closed = False
        self.dropped = 0  # datagrams received that are neither ours nor QUIC
        self.send_drops = 0  # datagrams not sent because the kernel buffer was full
        self._loop.add_reader(sock.fileno(), self._read_ready)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def sendto(self, data: bytes, addr: Addr) -> None:
        if self.closed:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_drops += 1
            if not self.paused:
                self.paused = True
                self._loop.add_writer(self._sock.fileno(), self._write_ready)
        except OSError as e:  # unreachable network and the like: the datagram is lost, as UDP may
            log.debug("tunnel udp: send to %s failed: %s", addr, e)

    def _write_ready(self) -> None:
        self._loop.remove_writer(self._sock.fileno())
        self.paused = False
        self._on_writable()

    def _read_ready(self) -> None:
        for _ in range(RECV_BATCH):
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error reported on the socket: punching expects some
                log.debug("tunnel udp: %s", e)
                continue
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data:
            return
        try:
            if data[0] & QUIC_FIXED_BIT:
                self._on_quic(data, addr_key(addr))
                return
            ctl = parse_ctl(data)
            if ctl is None:
                self.dropped += 1
                return
            self._on_ctl(ctl[0], ctl[1], addr_key(addr))
        except Exception:  # one bad datagram must not take the socket down
            log.exception("tunnel udp: handling a datagram from %s failed", addr)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self.paused:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()


async def open_udp(
    host: str,
    port: int,
    on_ctl: Callable[[Ctl, bytes, Addr], None],
    on_quic: Callable[[bytes, Addr], None],
    on_writable: Callable[[], None],
) -> UdpEndpoint:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return UdpEndpoint(sock, on_ctl, on_quic, on_writable)


# With port 0 the kernel picks the TCP port; the same UDP port may be taken, so pick again.
BIND_ATTEMPTS = 8


async def bind_same_port(
    port: int,
    tcp: Callable[[int], Awaitable[asyncio.Server]],
    udp: Callable[[int], Awaitable[UdpEndpoint]],
) -> tuple[asyncio.Server, UdpEndpoint]:
    """A TCP listener and a UDP socket on one port number (peers and NATs know one port per node)."""
    for _ in range(BIND_ATTEMPTS):
        server = await tcp(port)
        chosen = int(server.sockets[0].getsockname()[1])
        try:
            return server, await udp(chosen)
        except OSError:
            server.close()
            await server.wait_closed()
            if port != 0:
                raise
    raise OSError(f"no port free for both TCP and UDP after {BIND_ATTEMPTS} tries")
