"""UDP service ports on the userspace path: one socket per ClusterIP:port, one session per client.

A session holds one upstream (a connected UDP socket to a directly reachable endpoint, or a tunnel
stream carrying length-prefixed datagrams) and ends after `idle_s` without traffic. Replies leave from
the address the client's datagram was redirected to (IP_PKTINFO), which is what conntrack expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING

from edgemesh.proxy.pump import Idle

if TYPE_CHECKING:
    from edgemesh.proxy.userspace import UserspaceProxy

log = logging.getLogger(__name__)

MAX_UDP_SESSIONS = 4096  # per service port; the least recently used is dropped
UDP_SESSION_QUEUE = 256  # datagrams waiting for a session's upstream (then dropped, as UDP may)
UDP_READ_BATCH = 64  # datagrams read per wake-up, so one busy port cannot starve the loop
MAX_DATAGRAM = 65535
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


class UdpPort:
    def __init__(self, owner: UserspaceProxy, key: tuple[str, int, str], bind: str, idle_s: float) -> None:
        self.owner = owner
        self.key = key
        self.idle_s = idle_s
        self.v6 = ":" in bind
        s = socket.socket(socket.AF_INET6 if self.v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.v6:
                s.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            else:
                s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            s.bind((bind, 0))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s
        self.port: int = s.getsockname()[1]
        self.sessions: OrderedDict[tuple[str, int], _Session] = OrderedDict()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(s.fileno(), self._readable)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        for sess in list(self.sessions.values()):
            sess.close()
        self.sessions.clear()
        self.sock.close()

    def _readable(self) -> None:
        for _ in range(UDP_READ_BATCH):
            try:
                data, anc, _flags, addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(32))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("udp recv on %s: %s", self.key, e)
                return
            client = (addr[0], addr[1])
            sess = self.sessions.get(client)
            if sess is None:
                route = self.owner.route(self.key)
                if route is None:
                    self.owner.metrics.userspace_failed += 1
                    continue
                while len(self.sessions) >= MAX_UDP_SESSIONS:
                    self.sessions.popitem(last=False)[1].close()
                sess = _Session(self, client, _pktinfo_reply(anc, self.v6))
                self.sessions[client] = sess
            else:
                self.sessions.move_to_end(client)
            sess.push(data)

    def reply(self, sess: _Session, data: bytes) -> None:
        try:
            self.sock.sendmsg([data], sess.anc, 0, sess.client)
        except (BlockingIOError, InterruptedError):
            pass  # the client is not reading; UDP may drop
        except OSError as e:
            log.debug("udp reply to %s: %s", sess.client, e)


def _pktinfo_reply(anc: list[tuple[int, int, bytes]], v6: bool) -> list[tuple[int, int, bytes]]:
    """Ancillary data that makes the reply's source the address the client's datagram arrived at."""
    for level, kind, data in anc:
        if not v6 and level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            _ifindex, _spec, addr = struct.unpack_from("=I4s4s", data)
            return [(socket.IPPROTO_IP, _IP_PKTINFO, struct.pack("=I4s4s", 0, addr, b"\0" * 4))]
        if v6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            addr6 = data[:16]
            return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("=16sI", addr6, 0))]
    return []


class _Session:
    def __init__(self, port: UdpPort, client: tuple[str, int], anc: list[tuple[int, int, bytes]]) -> None:
        self.port = port
        self.client = client
        self.anc = anc
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(UDP_SESSION_QUEUE)
        self.idle = Idle(port.idle_s)
        self.task = asyncio.ensure_future(self._run())
        self.task.add_done_callback(self._done)

    def push(self, data: bytes) -> None:
        self.idle.touch()
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            pass

    def close(self) -> None:
        self.task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        if self.port.sessions.get(self.client) is self:
            del self.port.sessions[self.client]
        if not task.cancelled() and task.exception() is not None:
            log.debug("udp session %s ended: %s", self.client, task.exception())

    async def _run(self) -> None:
        owner = self.port.owner
        route = owner.route(self.port.key)
        if route is None:
            return
        try:
            conn = await owner.connect(route, self.client[0], "UDP")
        except (OSError, TimeoutError):
            owner.metrics.userspace_failed += 1
            return
        owner.metrics.userspace_forwarded += 1
        try:
            async with asyncio.TaskGroup() as tg:
                if isinstance(conn, socket.socket):
                    tg.create_task(self._up_socket(conn))
                    tg.create_task(self._down_socket(conn))
                else:
                    tg.create_task(self._up_stream(conn[1]))
                    tg.create_task(self._down_stream(conn[0]))
        except* (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if isinstance(conn, socket.socket):
                conn.close()
            else:
                conn[1].close()

    async def _next(self) -> bytes:
        while True:
            left = self.idle.remaining()
            if left <= 0:
                raise TimeoutError
            try:
                async with asyncio.timeout(left):
                    return await self.queue.get()
            except TimeoutError:
                continue

    async def _up_socket(self, s: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self._next()
            await loop.sock_sendall(s, data)
            self.port.owner.metrics.userspace_bytes_up += len(data)

    async def _down_socket(self, s: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            left = self.idle.remaining()
            if left <= 0:
                raise TimeoutError
            try:
                async with asyncio.timeout(left):
                    data = await loop.sock_recv(s, MAX_DATAGRAM)
            except TimeoutError:
                continue
            self.idle.touch()
            self.port.owner.metrics.userspace_bytes_down += len(data)
            self.port.reply(self, data)

    async def _up_stream(self, w: asyncio.StreamWriter) -> None:
        while True:
            data = await self._next()
            w.write(struct.pack("!H", len(data)) + data)
            await w.drain()
            self.port.owner.metrics.userspace_bytes_up += len(data)

    async def _down_stream(self, r: asyncio.StreamReader) -> None:
        while True:
            left = self.idle.remaining()
            if left <= 0:
                raise TimeoutError
            try:
                async with asyncio.timeout(left):
                    head = await r.readexactly(2)
            except TimeoutError:
                continue
            # Not under the idle timeout: giving up mid-frame would desynchronise the stream.
            data = await r.readexactly(struct.unpack("!H", head)[0])
            self.idle.touch()
            self.port.owner.metrics.userspace_bytes_down += len(data)
            self.port.reply(self, data)
