"""The SPDY/3.1 subset Kubernetes streaming uses (moby/spdystream's behaviour), both roles.

kubectl port-forward speaks it inside a websocket (`SPDY/3.1+portforward.k8s.io`), and the container
runtime's streaming server (CRI Exec/Attach URLs) speaks it over HTTP upgrade: only SPDY lets the edge
half-close stdin toward containerd, which `echo x | kubectl exec -i ... -- cat` needs.

Implemented: SYN_STREAM, SYN_REPLY, DATA (with FIN), RST_STREAM, PING (echoed), GOAWAY; HEADERS is
decompressed (the zlib context is shared by every header block) and ignored, as are SETTINGS and
WINDOW_UPDATE — spdystream does not do flow control either. Header blocks are zlib-compressed with the
protocol's fixed dictionary, one compression context per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

VERSION: Final = 3
SYN_STREAM: Final = 1
SYN_REPLY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PING: Final = 6
GOAWAY: Final = 7
HEADERS: Final = 8
WINDOW_UPDATE: Final = 9
FLAG_FIN: Final = 0x01
RST_CANCEL: Final = 5
RST_REFUSED: Final = 3

# Frames bigger than this are a protocol error (the wire allows 16 MiB; nobody here sends that).
MAX_FRAME: Final = 1 << 20
# DATA frames we send carry at most this much.
MAX_DATA_CHUNK: Final = 32 * 1024
# Frames buffered per stream before the connection's reader waits for that stream's consumer.
STREAM_QUEUE_FRAMES: Final = 64
# How long open_stream waits for the peer's SYN_REPLY.
REPLY_TIMEOUT_S: Final = 30.0
# Header block size after decompression (a few short headers in practice).
MAX_HEADER_BLOCK: Final = 64 * 1024

_WORDS: Final = [
    *(
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date etag "
        "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
        "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split(),
    *("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"),
]
_TAIL: Final = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The spec's header-compression dictionary: length-prefixed words, then a run of common strings.
DICTIONARY: Final = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
assert len(DICTIONARY) == 1423, len(DICTIONARY)


class SpdyError(Exception):
    pass


class ByteReader(Protocol):
    async def readexactly(self, n: int) -> bytes: ...


Write = Callable[[bytes], Awaitable[None]]


def encode_headers(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for k, v in headers.items():
        kb, vb = k.lower().encode(), v.encode()
        out += [struct.pack(">I", len(kb)), kb, struct.pack(">I", len(vb)), vb]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, str]:
    try:
        (n,) = struct.unpack_from(">I", block, 0)
        pos, out = 4, {}
        for _ in range(n):
            (ln,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4 : pos + 4 + ln].decode().lower()
            pos += 4 + ln
            (lv,) = struct.unpack_from(">I", block, pos)
            out[name] = block[pos + 4 : pos + 4 + lv].decode().split("\x00")[0]
            pos += 4 + lv
        return out
    except (struct.error, UnicodeDecodeError) as e:
        raise SpdyError(f"bad header block: {e}") from None


def control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_frame(sid: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class SpdyStream:
    def __init__(self, conn: SpdyConnection, sid: int, headers: dict[str, str]) -> None:
        self.conn = conn
        self.id = sid
        self.headers = headers
        self.replied = asyncio.Event()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE_FRAMES)
        self.remote_done = False
        self.local_done = False
        self.reset = False

    async def read(self) -> bytes | None:
        """Next data; None once the peer finished (FIN) or reset the stream."""
        if self.remote_done and self._inbox.empty():
            return None
        data = await self._inbox.get()
        if data is None:
            self.remote_done = True
        return data

    async def write(self, data: bytes) -> None:
        if self.local_done or self.reset:
            raise SpdyError(f"stream {self.id} is closed for writing")
        for i in range(0, len(data), MAX_DATA_CHUNK):
            await self.conn.write(data_frame(self.id, 0, data[i : i + MAX_DATA_CHUNK]))

    async def close_write(self) -> None:
        """FIN: we send nothing more on this stream."""
        if self.local_done or self.reset:
            return
        self.local_done = True
        with contextlib.suppress(ConnectionError, SpdyError):
            await self.conn.write(data_frame(self.id, FLAG_FIN, b""))

    async def send_reset(self, status: int = RST_CANCEL) -> None:
        if self.reset:
            return
        self.reset = True
        with contextlib.suppress(ConnectionError, SpdyError):
            await self.conn.write(control(RST_STREAM, 0, struct.pack(">II", self.id, status)))

    async def reply(self) -> None:
        """Server side: accept the peer's stream."""
        await self.conn.write(control(SYN_REPLY, 0, struct.pack(">I", self.id) + self.conn.compress({})))
        self.replied.set()

    async def _deliver(self, item: bytes | None) -> None:
        await self._inbox.put(item)


OnStream = Callable[[SpdyStream], Awaitable[None]]


class SpdyConnection:
    """One SPDY session over a byte stream. `run()` reads frames until the transport ends; incoming
    SYN_STREAMs go to `on_stream` (awaited in the reader: it must only record the stream)."""

    def __init__(self, reader: ByteReader, write: Write, *, server: bool, on_stream: OnStream | None = None):
        self._reader = reader
        self._write = write
        self._wlock = asyncio.Lock()
        self.on_stream = on_stream
        self._next_id = 2 if server else 1
        self.streams: dict[int, SpdyStream] = {}
        self._deflate = zlib.compressobj(9, zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.closed = asyncio.Event()

    def compress(self, headers: dict[str, str]) -> bytes:
        return self._deflate.compress(encode_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _decompress(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise SpdyError(f"header decompression failed: {e}") from None
        return decode_headers(raw)

    async def write(self, frame: bytes) -> None:
        if self.closed.is_set():
            raise ConnectionError("SPDY connection closed")
        async with self._wlock:
            await self._write(frame)

    async def open_stream(self, headers: dict[str, str]) -> SpdyStream:
        """Client side: SYN_STREAM, then wait for the SYN_REPLY (spdystream drops data sent before it)."""
        sid = self._next_id
        self._next_id += 2
        stream = SpdyStream(self, sid, headers)
        self.streams[sid] = stream
        async with self._wlock:  # ids must reach the wire in increasing order
            payload = struct.pack(">IIBB", sid, 0, 0, 0) + self.compress(headers)
            await self._write(control(SYN_STREAM, 0, payload))
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await self.replied_or_closed(stream)
        if stream.reset or not stream.replied.is_set():
            raise SpdyError(f"stream {headers} was refused")
        return stream

    async def replied_or_closed(self, stream: SpdyStream) -> None:
        waits = [asyncio.ensure_future(stream.replied.wait()), asyncio.ensure_future(self.closed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def goaway(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.write(control(GOAWAY, 0, struct.pack(">II", 0, 0)))

    async def run(self) -> None:
        try:
            while True:
                head = await self._reader.readexactly(8)
                w1, w2 = struct.unpack(">II", head)
                flags, length = w2 >> 24, w2 & 0xFFFFFF
                if length > MAX_FRAME:
                    raise SpdyError(f"frame of {length} bytes is too large")
                payload = await self._reader.readexactly(length) if length else b""
                if w1 & 0x80000000:
                    await self._control((w1 >> 16) & 0x7FFF, w1 & 0xFFFF, flags, payload)
                else:
                    await self._data(w1 & 0x7FFFFFFF, flags, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for s in list(self.streams.values()):
                s.reset = True
                with contextlib.suppress(asyncio.QueueFull):
                    s._inbox.put_nowait(None)
                s.replied.set()

    async def _data(self, sid: int, flags: int, payload: bytes) -> None:
        s = self.streams.get(sid)
        if s is None or s.remote_done:
            return
        if payload:
            await s._deliver(payload)
        if flags & FLAG_FIN:
            await s._deliver(None)

    async def _control(self, version: int, ftype: int, flags: int, payload: bytes) -> None:
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        if ftype == SYN_STREAM:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            stream = SpdyStream(self, sid, self._decompress(payload[10:]))
            self.streams[sid] = stream
            if self.on_stream is None:
                await stream.send_reset(RST_REFUSED)
            else:
                await self.on_stream(stream)
            if flags & FLAG_FIN:
                await stream._deliver(None)
        elif ftype == SYN_REPLY:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            self._decompress(payload[4:])
            s = self.streams.get(sid)
            if s is not None:
                s.replied.set()
                if flags & FLAG_FIN:
                    await s._deliver(None)
        elif ftype == HEADERS:
            self._decompress(payload[4:])
        elif ftype == RST_STREAM:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            s = self.streams.pop(sid, None)
            if s is not None:
                s.reset = True
                s.replied.set()
                if not s.remote_done:
                    with contextlib.suppress(asyncio.QueueFull):
                        s._inbox.put_nowait(None)
        elif ftype == PING:
            await self.write(control(PING, 0, payload[:4]))
        elif ftype == GOAWAY:
            return
        # SETTINGS, WINDOW_UPDATE and unknown types are ignored, as spdystream does.
