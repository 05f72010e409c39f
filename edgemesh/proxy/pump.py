"""Move bytes both ways between a client and an endpoint: splice(2) when both ends are plain sockets
(the payload never enters Python), otherwise bounded asyncio stream copies. Half-close is passed on
(EOF one way shuts down writing on the other side); a connection idle both ways for `idle_s` ends.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

CHUNK = 65536  # bytes per read/splice: one pipe's default capacity
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAVE_SPLICE = hasattr(os, "splice")


class IdleTimeout(Exception):
    pass


class Idle:
    """Shared by both directions: a download with a silent upload is not idle."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def remaining(self) -> float:
        return self.last + self.idle_s - time.monotonic()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait_fd(fd: int, write: bool, idle: Idle) -> None:
    loop = asyncio.get_running_loop()
    while True:
        left = idle.remaining()
        if left <= 0:
            raise IdleTimeout
        fut: asyncio.Future[None] = loop.create_future()
        (loop.add_writer if write else loop.add_reader)(fd, _resolve, fut)
        try:
            async with asyncio.timeout(left):
                await fut
            return
        except TimeoutError:
            continue  # re-check: the other direction may have moved bytes meanwhile
        finally:
            (loop.remove_writer if write else loop.remove_reader)(fd)


async def _splice_one(
    src: socket.socket, dst: socket.socket, idle: Idle, count: Callable[[int], None]
) -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while True:
            try:
                n = os.splice(src.fileno(), w, CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await _wait_fd(src.fileno(), False, idle)
                continue
            if n == 0:
                _shutdown_write(dst)
                return
            idle.touch()
            count(n)
            while n:
                try:
                    n -= os.splice(r, dst.fileno(), n, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _wait_fd(dst.fileno(), True, idle)
            idle.touch()
    finally:
        os.close(r)
        os.close(w)


def _shutdown_write(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def splice_pair(
    client: socket.socket,
    upstream: socket.socket,
    idle_s: float,
    up: Callable[[int], None],
    down: Callable[[int], None],
) -> None:
    """Until both directions hit EOF (or an error, or idleness). Does not close the sockets."""
    idle = Idle(idle_s)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_splice_one(client, upstream, idle, up))
        tg.create_task(_splice_one(upstream, client, idle, down))


async def _copy_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: Idle, count: Callable[[int], None]
) -> None:
    while True:
        left = idle.remaining()
        if left <= 0:
            raise IdleTimeout
        try:
            async with asyncio.timeout(left):
                data = await reader.read(CHUNK)
        except TimeoutError:
            continue
        if not data:
            if writer.can_write_eof():
                writer.write_eof()
            return
        idle.touch()
        count(len(data))
        writer.write(data)
        await writer.drain()  # bounded: waits while the transport holds more than its high-water mark


async def stream_pair(
    c_reader: asyncio.StreamReader,
    c_writer: asyncio.StreamWriter,
    u_reader: asyncio.StreamReader,
    u_writer: asyncio.StreamWriter,
    idle_s: float,
    up: Callable[[int], None],
    down: Callable[[int], None],
) -> None:
    idle = Idle(idle_s)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_copy_one(c_reader, u_writer, idle, up))
        tg.create_task(_copy_one(u_reader, c_writer, idle, down))
