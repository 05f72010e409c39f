"""The userspace path: ClusterIP traffic the kernel redirected to us, forwarded through a Dialer.

TCP: one shared listener; the ClusterIP:port a client dialled is recovered with SO_ORIGINAL_DST.
UDP: one socket per service port (a UDP socket cannot ask conntrack per datagram); replies are sent
from the address the datagram was redirected to (IP_PKTINFO) so conntrack maps them back.
Endpoints this node reaches directly are dialled as plain sockets (and spliced); others go through
the tunnel Dialer. A UDP session over a tunnel stream frames each datagram with a 2-byte big-endian
length.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edgemesh.model import Endpoint
from edgemesh.proxy.loadbalance import HEADER_PEEK_LIMIT, Balancer, http_header
from edgemesh.proxy.metrics import ProxyMetrics
from edgemesh.proxy.plan import PortPlan
from edgemesh.proxy.pump import HAVE_SPLICE, IdleTimeout, splice_pair, stream_pair
from edgemesh.proxy.udp import UdpPort

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
MAX_TCP_CONNECTIONS = 4096  # concurrent userspace connections; more are refused
HEADER_PEEK_TIMEOUT_S = 5.0
DIAL_TIMEOUT_S = 10.0
DIAL_TRIES = 3


class Dialer(Protocol):
    async def open(
        self, node_name: str, ip: str, port: int, protocol: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


@runtime_checkable
class SocketDialer(Protocol):
    """A Dialer that can hand over a plain connected socket (enables splice)."""

    async def open_socket(self, node_name: str, ip: str, port: int, protocol: str) -> socket.socket: ...


class DirectDialer:
    """Connect straight to the endpoint (routing decides the path)."""

    async def open_socket(self, node_name: str, ip: str, port: int, protocol: str) -> socket.socket:
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        kind = socket.SOCK_STREAM if protocol.upper() == "TCP" else socket.SOCK_DGRAM
        s = socket.socket(fam, kind)
        s.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(s, (ip, port))
        except BaseException:
            s.close()
            raise
        return s

    async def open(
        self, node_name: str, ip: str, port: int, protocol: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(ip, port)


@dataclass
class Route:
    plan: PortPlan
    balancer: Balancer
    reachable: dict[str, bool]  # endpoint ip → dial directly


def original_dst(sock: socket.socket) -> tuple[str, int]:
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


class UserspaceProxy:
    def __init__(
        self,
        tunnel: Dialer | None,
        metrics: ProxyMetrics,
        bind: str = "0.0.0.0",
        tcp_port: int = 0,
        tcp_idle_s: float = 600.0,
        udp_idle_s: float = 60.0,
        direct: DirectDialer | None = None,
    ) -> None:
        self._tunnel = tunnel
        self._direct = direct or DirectDialer()
        self.metrics = metrics
        self._bind = bind
        self._want_tcp_port = tcp_port
        self.tcp_port = 0
        self._tcp_idle_s = tcp_idle_s
        self._udp_idle_s = udp_idle_s
        self._routes: dict[tuple[str, int, str], Route] = {}
        self._udp: dict[tuple[str, int, str], UdpPort] = {}
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        fam = socket.AF_INET6 if ":" in self._bind else socket.AF_INET
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self._bind, self._want_tcp_port))
        ls.listen(1024)
        ls.setblocking(False)
        self.tcp_port = ls.getsockname()[1]
        self._listeners.append(ls)
        self._spawn(self._accept_loop(ls))

    async def stop(self) -> None:
        for ls in self._listeners:
            ls.close()
        self._listeners.clear()
        for u in list(self._udp.values()):
            u.close()
        self._udp.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("userspace proxy task failed", exc_info=task.exception())

    # -- routes ---------------------------------------------------------------------------------

    def set_routes(self, ports: list[PortPlan]) -> dict[tuple[str, int, str], int]:
        """Serve these (mixed/userspace) ports; returns the local UDP port of each UDP one."""
        new: dict[tuple[str, int, str], Route] = {}
        for p in ports:
            eps = p.userspace_endpoints
            old = self._routes.get(p.key)
            bal = old.balancer if old is not None else Balancer(p.lb, p.affinity_s)
            bal.update(eps, p.lb, p.affinity_s)
            new[p.key] = Route(p, bal, {s.endpoint.ip: s.reachable for s in p.slots})
        self._routes = new
        for key in [k for k in self._udp if k not in new]:
            self._udp.pop(key).close()
        for key in new:
            if key[2] == "udp" and key not in self._udp:
                try:
                    self._udp[key] = UdpPort(self, key, self._bind, self._udp_idle_s)
                except OSError as e:
                    log.error("cannot open a UDP listener for %s: %s", new[key].plan.label, e)
        return {k: u.port for k, u in self._udp.items()}

    def route(self, key: tuple[str, int, str]) -> Route | None:
        return self._routes.get(key)

    # -- dialing --------------------------------------------------------------------------------

    async def _dial(
        self, route: Route, ep: Endpoint, protocol: str
    ) -> socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(DIAL_TIMEOUT_S):
            if route.reachable.get(ep.ip, False):
                return await self._direct.open_socket(ep.node_name, ep.ip, ep.port, protocol)
            if self._tunnel is None:
                raise ConnectionRefusedError(errno.EHOSTUNREACH, "no tunnel to reach this endpoint")
            if isinstance(self._tunnel, SocketDialer):
                return await self._tunnel.open_socket(ep.node_name, ep.ip, ep.port, protocol)
            return await self._tunnel.open(ep.node_name, ep.ip, ep.port, protocol)

    async def connect(
        self, route: Route, client_ip: str, protocol: str, header: str | None = None
    ) -> socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The chosen endpoint, falling back to the next ones when a dial fails."""
        candidates = route.balancer.pick(client_ip, header, DIAL_TRIES)
        if not candidates:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{route.plan.label} has no endpoints")
        last: BaseException | None = None
        for i, ep in enumerate(candidates):
            try:
                conn = await self._dial(route, ep, protocol)
            except (OSError, TimeoutError) as e:
                last = e
                log.info("%s: dialling %s:%d failed: %s", route.plan.label, ep.ip, ep.port, e)
                continue
            if i and route.balancer.affinity is not None:
                route.balancer.affinity.put(client_ip, f"{ep.ip}:{ep.port}")
            return conn
        assert last is not None
        raise last

    # -- TCP ------------------------------------------------------------------------------------

    async def _accept_loop(self, ls: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, addr = await loop.sock_accept(ls)
            except OSError as e:
                if ls.fileno() < 0:
                    return
                log.warning("accept failed: %s", e)
                continue
            if self._conns >= MAX_TCP_CONNECTIONS:
                self.metrics.userspace_failed += 1
                client.close()
                continue
            client.setblocking(False)
            self._spawn(self._handle_tcp(client, addr[0]))

    async def _handle_tcp(self, client: socket.socket, client_ip: str) -> None:
        self._conns += 1
        self.metrics.userspace_active += 1
        upstream: socket.socket | None = None
        writers: list[asyncio.StreamWriter] = []
        client_wrapped = False
        try:
            try:
                dst = original_dst(client)
            except OSError:
                dst = ("", 0)
            route = self._routes.get((dst[0], dst[1], "tcp"))
            if route is None:
                self.metrics.userspace_failed += 1
                return
            peeked = b""
            header = None
            if route.balancer.needs_header:
                peeked = await self._peek(client)
                header = http_header(peeked, route.plan.lb.hash_header)
            try:
                conn = await self.connect(route, client_ip, "TCP", header)
            except (OSError, TimeoutError):
                self.metrics.userspace_failed += 1
                return
            self.metrics.userspace_forwarded += 1
            up, down = self._counters()
            loop = asyncio.get_running_loop()
            if isinstance(conn, socket.socket):
                upstream = conn
                if peeked:
                    await loop.sock_sendall(upstream, peeked)
                    up(len(peeked))
                if HAVE_SPLICE:
                    self.metrics.userspace_spliced += 1
                    await splice_pair(client, upstream, self._tcp_idle_s, up, down)
                    return
                u_reader, u_writer = await asyncio.open_connection(sock=upstream)
                upstream = None  # owned by the transport now
            else:
                u_reader, u_writer = conn
                if peeked:
                    u_writer.write(peeked)
                    up(len(peeked))
            writers.append(u_writer)
            c_reader, c_writer = await asyncio.open_connection(sock=client)
            client_wrapped = True
            writers.append(c_writer)
            await stream_pair(c_reader, c_writer, u_reader, u_writer, self._tcp_idle_s, up, down)
        except* (OSError, IdleTimeout, TimeoutError) as eg:
            log.debug("userspace connection from %s ended: %s", client_ip, eg.exceptions[0])
        finally:
            self._conns -= 1
            self.metrics.userspace_active -= 1
            for w in writers:
                w.close()
            if upstream is not None:
                upstream.close()
            if not client_wrapped:
                client.close()

    async def _peek(self, client: socket.socket) -> bytes:
        """Read the request head (up to HEADER_PEEK_LIMIT) so the hash header can be found."""
        loop = asyncio.get_running_loop()
        buf = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEADER_PEEK_TIMEOUT_S):
                while b"\r\n\r\n" not in buf and len(buf) < HEADER_PEEK_LIMIT:
                    chunk = await loop.sock_recv(client, HEADER_PEEK_LIMIT - len(buf))
                    if not chunk:
                        break
                    buf += chunk
        return buf

    def _counters(self) -> tuple[Callable[[int], None], Callable[[int], None]]:
        m = self.metrics

        def up(n: int) -> None:
            m.userspace_bytes_up += n

        def down(n: int) -> None:
            m.userspace_bytes_down += n

        return up, down
