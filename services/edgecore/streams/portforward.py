"""port-forward: one tunnel stream per forwarded connection, relayed through the runtime's CRI PortForward.

The runtime connects inside the pod's network namespace (to the pod's localhost), as the kubelet's port-
forward does, so a server bound only to the pod's 127.0.0.1 is reachable; dialling the pod IP from the
node would miss it. One SPDY session (`portforward.k8s.io`) per connection: an error stream and a data
stream. Tunnel messages are channel-framed: channel 0 carries bytes, `[255, 0]` a half-close, channel 1
the runtime's error text (say, nothing listens on the port).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from kubeedge.edgecore.edged.cri import CriClient, CriError, api
from kubeedge.edgecore.edged.podspec import LABEL_POD_UID
from kubeedge.streaming import channels as ch
from kubeedge.streaming.spdy import SpdyConnection, SpdyError, SpdyStream
from kubeedge.streaming.tunnel import StreamError, TunnelStream

from .execattach import upgrade

PROTOCOL: Final = "portforward.k8s.io"
# Only one connection per SPDY session here, so every session's only pair has the same id.
REQUEST_ID: Final = "0"


async def ready_sandbox(cri: CriClient, pod: dict[str, Any]) -> str:
    md = pod.get("metadata") or {}
    try:
        found = await cri.list_pod_sandbox(
            labels={LABEL_POD_UID: str(md.get("uid") or "")}, state=api.SANDBOX_READY
        )
    except CriError as e:
        raise StreamError(503, f"the container runtime is not available: {e.details or e}") from None
    if not found:
        raise StreamError(400, f'pod "{md.get("name")}" has no running sandbox')
    return str(found[0].id)


async def serve(stream: TunnelStream, cri: CriClient, sandbox_id: str, port: int) -> None:
    try:
        url = await cri.port_forward(sandbox_id, [port])
    except CriError as e:
        raise StreamError(500, f"the runtime refused the port-forward: {e.details}") from None
    reader, writer = await upgrade(url, PROTOCOL)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    conn = SpdyConnection(reader, write, server=False)
    pump = asyncio.create_task(conn.run(), name="spdy-portforward")
    try:
        headers = {"port": str(port), "requestID": REQUEST_ID}
        error = await conn.open_stream({**headers, "streamType": "error"})
        data = await conn.open_stream({**headers, "streamType": "data"})
        await stream.accept()
        await _relay(stream, data, error)
    except (SpdyError, TimeoutError, ConnectionError) as e:
        raise StreamError(502, f"the runtime's port-forward stream failed: {e}") from None
    finally:
        pump.cancel()
        writer.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def _relay(stream: TunnelStream, data: SpdyStream, error: SpdyStream) -> None:
    async def from_pod() -> None:
        while (chunk := await data.read()) is not None:
            await stream.send(ch.frame(ch.PF_DATA, chunk))
        await stream.send(ch.close_frame(ch.PF_DATA))

    async def errors() -> None:
        while (text := await error.read()) is not None:
            await stream.send(ch.frame(ch.PF_ERROR, text))

    async def to_pod() -> None:
        while (msg := await stream.recv()) is not None:
            if msg[:1] == bytes((ch.PF_DATA,)) and len(msg) > 1:
                await data.write(msg[1:])
            elif msg == ch.close_frame(ch.PF_DATA):
                await data.close_write()

    pod_side: asyncio.Future[tuple[None, None]] = asyncio.gather(from_pod(), errors())
    cloud_side: asyncio.Future[None] = asyncio.ensure_future(to_pod())
    waits: list[asyncio.Future[Any]] = [pod_side, cloud_side]
    try:
        # The runtime ends both of its streams only once the connection in the pod is over (both ways);
        # the cloud side ending first (kubectl gone) ends it from here.
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if pod_side.done():
            pod_side.result()  # its failure is the stream's
        else:
            await data.send_reset()
            await error.send_reset()
    finally:
        pod_side.cancel()
        cloud_side.cancel()
        await asyncio.gather(pod_side, cloud_side, return_exceptions=True)
