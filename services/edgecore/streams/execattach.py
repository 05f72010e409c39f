"""exec and attach: CRI Exec/Attach give a URL on the runtime's streaming server; we speak SPDY to it
(remotecommand protocol v4) and relay its streams as channel-framed messages through the tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final
from urllib.parse import urlsplit

from kubeedge.edgecore.edged.cri import CriClient, CriError
from kubeedge.streaming import channels as ch
from kubeedge.streaming.spdy import SpdyConnection, SpdyError, SpdyStream
from kubeedge.streaming.tunnel import StreamError, TunnelStream

log = logging.getLogger(__name__)

# The runtime's streaming server must answer the upgrade within this.
UPGRADE_TIMEOUT_S: Final = 15.0
MAX_RESPONSE_HEAD: Final = 16 * 1024
PROTOCOL: Final = "v4.channel.k8s.io"


async def upgrade(url: str, protocol: str = PROTOCOL) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a runtime streaming URL and switch the connection to SPDY/3.1 speaking `protocol`."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise StreamError(502, f"unsupported runtime streaming URL {url!r}")
    host, port = u.hostname, u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    async with asyncio.timeout(UPGRADE_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade\r\n"
                f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in f"{status} ":
        body = b""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                body = await reader.read(MAX_RESPONSE_HEAD)
        writer.close()
        raise StreamError(502, f"the runtime refused the stream: {status} {body.decode(errors='replace')}")
    return reader, writer


async def serve(
    stream: TunnelStream, cri: CriClient, container_id: str, req: dict[str, Any], attach: bool
) -> None:
    tty, stdin = bool(req.get("tty")), bool(req.get("stdin"))
    stdout, stderr = bool(req.get("stdout", True)), bool(req.get("stderr", True)) and not tty
    try:
        if attach:
            url = await cri.attach(container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        else:
            command = [str(c) for c in req.get("command") or []]
            if not command:
                raise StreamError(400, "you must specify at least one command for the container")
            url = await cri.exec(container_id, command, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
    except CriError as e:
        raise StreamError(
            500, f"the runtime refused the {'attach' if attach else 'exec'}: {e.details}"
        ) from None
    reader, writer = await upgrade(url)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    conn = SpdyConnection(reader, write, server=False)
    pump = asyncio.create_task(conn.run(), name="spdy-reader")
    try:
        wanted = [("error", ch.ERROR)]
        wanted += [("stdin", ch.STDIN)] if stdin else []
        wanted += [("stdout", ch.STDOUT)] if stdout else []
        wanted += [("stderr", ch.STDERR)] if stderr else []
        wanted += [("resize", ch.RESIZE)] if tty else []
        opened: dict[int, SpdyStream] = {}
        for kind, channel in wanted:
            opened[channel] = await conn.open_stream({"streamType": kind})
        await stream.accept()
        outputs = [
            asyncio.create_task(_to_tunnel(opened[c], c, stream))
            for c in (ch.STDOUT, ch.STDERR, ch.ERROR)
            if c in opened
        ]
        inputs: asyncio.Future[None] = asyncio.ensure_future(_from_tunnel(stream, opened))
        finished: asyncio.Future[list[None]] = asyncio.gather(*outputs)
        waits: list[asyncio.Future[Any]] = [finished, inputs]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            # The cloud side went away first (kubectl interrupted): stop the runtime's streams.
            finished.cancel()
            for s in opened.values():
                await s.send_reset()
        inputs.cancel()
        await asyncio.gather(finished, inputs, return_exceptions=True)
    except (SpdyError, TimeoutError, ConnectionError) as e:
        raise StreamError(502, f"the runtime's stream failed: {e}") from None
    finally:
        pump.cancel()
        writer.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def _to_tunnel(src: SpdyStream, channel: int, dst: TunnelStream) -> None:
    while (data := await src.read()) is not None:
        await dst.send(ch.frame(channel, data))


async def _from_tunnel(src: TunnelStream, streams: dict[int, SpdyStream]) -> None:
    while (msg := await src.recv()) is not None:
        if not msg:
            continue
        channel, data = msg[0], msg[1:]
        if channel == ch.CLOSE and data and data[0] in streams:
            await streams[data[0]].close_write()
        elif channel in (ch.STDIN, ch.RESIZE) and channel in streams:
            await streams[channel].write(data)
