"""A forwarding HTTP proxy for the test hosts' apt: the hosts sit in private network namespaces with no
route out, and reach the Debian mirrors only through this process (plain HTTP, allow-listed hosts).

One request per client connection (``Connection: close`` both ways) keeps it small; apt reconnects for
the next file. Run: ``python -m tests.ansible.aptproxy --listen IP:PORT --allow deb.debian.org``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Final
from urllib.parse import urlsplit

HEAD_LIMIT: Final = 64 * 1024  # request line + headers; apt's are < 1 KiB
CHUNK: Final = 256 * 1024
CONNECT_TIMEOUT: Final = 30.0
# A stalled mirror must not pin a connection (and its apt) forever.
IDLE_TIMEOUT: Final = 120.0
MAX_CLIENTS: Final = 64


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT):
        writer.write(data)
        await writer.drain()


async def _reply(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    await writer.drain()


async def handle(
    allow: frozenset[str],
    slots: asyncio.Semaphore,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    async with slots:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            url = urlsplit(target)
            if url.scheme != "http" or url.hostname is None:
                raise ValueError(target)
        except ValueError:
            await _reply(writer, "400 Bad Request", "absolute http:// URLs only\n")
            writer.close()
            return
        if url.hostname not in allow:
            await _reply(writer, "403 Forbidden", f"{url.hostname} is not on this proxy's allow list\n")
            writer.close()
            return
        headers = [
            h for h in lines[1:] if h and not h.lower().startswith(("connection:", "proxy-", "keep-alive:"))
        ]
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        request = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(url.hostname, url.port or 80), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as e:
            await _reply(writer, "502 Bad Gateway", f"{url.hostname}: {e}\n")
            writer.close()
            return
        try:
            up_w.write(request.encode("latin-1"))
            await up_w.drain()
            await _pipe(up_r, writer)
        except (OSError, TimeoutError):
            pass
        finally:
            up_w.close()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(host: str, port: int, allow: frozenset[str]) -> None:
    slots = asyncio.Semaphore(MAX_CLIENTS)
    server = await asyncio.start_server(lambda r, w: handle(allow, slots, r, w), host, port, limit=HEAD_LIMIT)
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, metavar="IP:PORT")
    p.add_argument("--allow", action="append", default=[], metavar="HOST")
    a = p.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), frozenset(a.allow)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
