"""Container logs from the CRI log files, with the kubelet's options.

A CRI log line is `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`: `P` marks a partial line the runtime
split (its text continues in the next record), `F` a full one. Output is the text, each full line ending
in a newline, optionally prefixed with the time. Following re-reads the file as it grows (a rotated file,
seen as a new inode or a shrink, is read again from its start) until the container stops.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kubeedge.streaming.tunnel import StreamError

# How often a followed file is checked for growth when it has nothing new.
FOLLOW_POLL_S: Final = 0.2
# While following an idle file, whether the container still runs is asked this often.
RUNNING_CHECK_S: Final = 1.0
# Bytes read from the file at a time.
READ_CHUNK: Final = 64 * 1024
# A record longer than this without a newline is cut (containerd splits at 16 KiB; this is a backstop).
MAX_RECORD: Final = 1024 * 1024


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since_ns: int | None = None  # nanoseconds since the epoch
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, q: Mapping[str, str], now_ns: int | None = None) -> LogOptions:
        def flag(name: str) -> bool:
            return q.get(name, "") in ("1", "true", "True")

        def number(name: str, minimum: int) -> int | None:
            v = q.get(name, "")
            if v == "":
                return None
            try:
                n = int(v)
            except ValueError:
                raise StreamError(400, f"{name}: {v!r} is not an integer") from None
            if n < minimum:
                raise StreamError(400, f"{name}: must be at least {minimum}")
            return n

        since: int | None = None
        seconds = number("sinceSeconds", 1)
        if seconds is not None:
            since = (time.time_ns() if now_ns is None else now_ns) - seconds * 1_000_000_000
        elif q.get("sinceTime"):
            since = time_ns(q["sinceTime"])
            if since is None:
                raise StreamError(400, f"sinceTime: {q['sinceTime']!r} is not an RFC 3339 time")
        tail = number("tailLines", 0)
        return cls(
            follow=flag("follow"),
            tail_lines=tail,
            since_ns=since,
            timestamps=flag("timestamps"),
            previous=flag("previous"),
            limit_bytes=number("limitBytes", 1),
        )


def time_ns(text: str) -> int | None:
    """RFC 3339 with up to nanoseconds, as nanoseconds since the epoch (datetime keeps only micro-
    seconds, and `sinceTime` is compared with the log's nanosecond times)."""
    s = text.strip().replace("Z", "+00:00")
    date, dot, rest = s.partition(".")
    nanos = 0
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if not 0 < digits <= 9:
            return None
        nanos = int(rest[:digits].ljust(9, "0"))
        s = date + rest[digits:]
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + nanos


@dataclass(frozen=True)
class Record:
    time: bytes
    partial: bool
    text: bytes


def parse_record(line: bytes) -> Record | None:
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Record(parts[0], parts[2] == b"P", text)


class Formatter:
    """Records → output bytes: the since filter, timestamps, and the byte limit."""

    def __init__(self, opts: LogOptions) -> None:
        self.opts = opts
        self.left = opts.limit_bytes

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0

    def render(self, records: list[Record]) -> bytes:
        out = bytearray()
        for r in records:
            if self.opts.since_ns is not None:
                t = time_ns(r.time.decode(errors="replace"))
                if t is not None and t < self.opts.since_ns:
                    continue
            if self.opts.timestamps:
                out += r.time + b" "
            out += r.text
            if not r.partial:
                out += b"\n"
        if self.left is not None:
            out = out[: self.left]
            self.left -= len(out)
        return bytes(out)


def split_records(buf: bytes) -> tuple[list[Record], bytes]:
    """Complete records in `buf`, and the incomplete rest (no newline yet)."""
    records = []
    *lines, rest = buf.split(b"\n")
    for line in lines:
        r = parse_record(line)
        if r is not None:
            records.append(r)
    if len(rest) > MAX_RECORD:
        r = parse_record(rest)
        records += [Record(r.time, True, r.text)] if r is not None else []
        rest = b""
    return records, rest


def _logical_lines(records: Iterator[Record]) -> Iterator[list[Record]]:
    """Group partial records with the full one that ends them (a `tailLines` line)."""
    line: list[Record] = []
    for r in records:
        line.append(r)
        if not r.partial:
            yield line
            line = []
    if line:
        yield line


def _read_all(path: Path, tail: int | None) -> tuple[list[Record], int, int]:
    """The records to start with (the last `tail` lines, or all) and where the file ends."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())

        def records() -> Iterator[Record]:
            rest = b""
            while chunk := f.read(READ_CHUNK):
                recs, rest = split_records(rest + chunk)
                yield from recs

        if tail is None:
            return list(records()), f.tell(), st.st_ino
        kept: collections.deque[list[Record]] = collections.deque(maxlen=tail)
        for line in _logical_lines(records()):
            kept.append(line)
        return [r for line in kept for r in line], f.tell(), st.st_ino


Send = Callable[[bytes], Awaitable[None]]


async def stream_logs(
    path: Path,
    opts: LogOptions,
    send: Send,
    running: Callable[[], Awaitable[bool]],
    stopped: Callable[[], bool],
) -> None:
    """Send the log at `path` as `opts` asks; with follow, until the container stops or `stopped()`."""
    fmt = Formatter(opts)
    try:
        if opts.tail_lines is None and not opts.follow:
            await _send_whole(path, fmt, send)
            return
        records, pos, inode = await asyncio.to_thread(_read_all, path, opts.tail_lines)
    except FileNotFoundError:
        raise StreamError(404, f"log file {path.name} not found (the container's log was removed)") from None
    if out := fmt.render(records):
        await send(out)
    if not opts.follow or fmt.exhausted:
        return
    await _follow(path, pos, inode, fmt, send, running, stopped)


async def _send_whole(path: Path, fmt: Formatter, send: Send) -> None:
    with path.open("rb") as f:
        rest = b""
        while not fmt.exhausted and (chunk := await asyncio.to_thread(f.read, READ_CHUNK)):
            records, rest = split_records(rest + chunk)
            if out := fmt.render(records):
                await send(out)


async def _follow(
    path: Path,
    pos: int,
    inode: int,
    fmt: Formatter,
    send: Send,
    running: Callable[[], Awaitable[bool]],
    stopped: Callable[[], bool],
) -> None:
    loop = asyncio.get_running_loop()
    f = path.open("rb")
    try:
        f.seek(pos)
        rest = b""
        last_check = loop.time()
        ending = False
        while not stopped() and not fmt.exhausted:
            chunk = f.read(READ_CHUNK)
            if chunk:
                records, rest = split_records(rest + chunk)
                if out := fmt.render(records):
                    await send(out)
                continue
            if ending:
                return  # the container had stopped and its file is read to the end
            try:
                st = os.stat(path)  # a local stat: cheap, not worth a thread hop
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_ino != inode or st.st_size < f.tell()):
                f.close()  # rotated (or truncated): the new file from its start
                f = path.open("rb")
                inode, rest = os.fstat(f.fileno()).st_ino, b""
                continue
            if loop.time() - last_check >= RUNNING_CHECK_S:
                last_check = loop.time()
                ending = not await running()
                if ending:
                    continue  # one more read: lines written just before the exit
            await asyncio.sleep(FOLLOW_POLL_S)
    finally:
        f.close()
