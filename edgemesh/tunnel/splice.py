"""Moving bytes between two (reader, writer) pairs, with half-close and reset passed through."""

from __future__ import annotations

import asyncio

COPY_CHUNK = 256 * 1024

Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: list[int]) -> None:
    while data := await src.read(COPY_CHUNK):
        dst.write(data)
        counter[0] += len(data)
        await dst.drain()
    if dst.can_write_eof() and not dst.is_closing():
        dst.write_eof()


async def splice(a: Pair, b: Pair, counters: tuple[list[int], list[int]] | None = None) -> tuple[int, int]:
    """Copy a→b and b→a until both directions end; an error on either side aborts both (so a
    reset travels on as a reset, not as a clean EOF). Returns bytes copied (a→b, b→a); `counters`
    (two one-element lists) lets the caller watch them grow while the copy runs."""
    ab, ba = counters if counters is not None else ([0], [0])
    tasks = [asyncio.ensure_future(_pump(a[0], b[1], ab)), asyncio.ensure_future(_pump(b[0], a[1], ba))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(not t.cancelled() and t.exception() is not None for t in done):
            a[1].transport.abort()
            b[1].transport.abort()
        else:
            await asyncio.wait(tasks)
            if any(not t.cancelled() and t.exception() is not None for t in tasks):
                a[1].transport.abort()
                b[1].transport.abort()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, w in (a, b):
            w.close()
    return ab[0], ba[0]
