"""port-forward: one tunnel stream per forwarded connection, relayed to the pod's IP and port.

The node reaches its pods' IPs directly (they are on its CNI bridge), which is what the runtime's own
port-forward does inside the pod's network namespace for a pod listening on all addresses; it spares
a SPDY session per connection. Data is channel-framed: channel 0 carries bytes, `[255, 0]` a half-close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from kubeedge.streaming import channels as ch
from kubeedge.streaming.tunnel import StreamError, TunnelStream

CONNECT_TIMEOUT_S: Final = 10.0
READ_CHUNK: Final = 32 * 1024


async def serve(stream: TunnelStream, ip: str, port: int) -> None:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(ip, port)
    except (OSError, TimeoutError) as e:
        raise StreamError(502, f"failed to connect to {ip}:{port} in the pod: {e}") from None
    await stream.accept()

    async def upstream() -> None:  # pod → tunnel
        while data := await reader.read(READ_CHUNK):
            await stream.send(ch.frame(ch.PF_DATA, data))
        await stream.send(ch.close_frame(ch.PF_DATA))

    async def downstream() -> None:  # tunnel → pod
        while (msg := await stream.recv()) is not None:
            if msg[:1] == bytes((ch.PF_DATA,)):
                writer.write(msg[1:])
                await writer.drain()
            elif msg == ch.close_frame(ch.PF_DATA) and writer.can_write_eof():
                writer.write_eof()

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        # Done when the pod closed its side and the cloud side ended the stream (or either failed).
        await asyncio.wait([up, down], return_when=asyncio.FIRST_EXCEPTION)
        if not down.done():
            await asyncio.wait([down])
    finally:
        up.cancel()
        down.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
