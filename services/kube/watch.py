"""Watches and `ListWatch`, the list-then-watch loop (an informer without the handler plumbing).

`watch()` is one watch request: newline-delimited JSON events, parsed from arbitrary chunk
boundaries with a bounded line buffer.

`ListWatch` keeps a consistent view of a collection for as long as it runs: it lists, watches from
the list's resourceVersion, resumes from the last seen resourceVersion (bookmarks included) when a
watch ends, and on 410 Gone re-lists and emits the difference against its cache, so consumers see
one uninterrupted event stream and never miss a deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from .client import Backoff, KubeClient
from .errors import ApiError, Gone, error_from_status
from .types import Obj, Res, obj_key, resource_version_of

log = logging.getLogger(__name__)

# Largest single watch event accepted. Objects are capped around 1.5 MiB by etcd on a real cluster,
# so 16 MiB leaves room for any real object while bounding memory against a runaway stream.
WATCH_LINE_LIMIT = 16 * 1024 * 1024
# Server-side watch timeout chosen at random in this range (as client-go does) so that the watches
# of many clients do not all expire and re-connect in the same instant.
WATCH_TIMEOUT_RANGE = (300.0, 600.0)
# Extra silence tolerated beyond the server-side timeout before the connection is presumed dead.
WATCH_READ_MARGIN = 30.0
# A watch that ends this quickly without delivering anything counts as a failure for backoff.
MIN_HEALTHY_WATCH_SECONDS = 1.0
LISTWATCH_BACKOFF_BASE = 0.5
LISTWATCH_BACKOFF_CAP = 30.0
LISTWATCH_BUFFER = 1024  # events produced ahead of the consumer before the watch stops reading
LIST_PAGE_SIZE = 500

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"
SYNC = "SYNC"  # synthetic (ListWatch only): the cache now holds a complete, consistent list


class WatchDecodeError(Exception):
    """The watch stream carried something that is not a watch event (or an over-long line)."""


@dataclass(frozen=True)
class WatchEvent:
    type: str
    object: Obj
    resource_version: str

    @property
    def key(self) -> tuple[str, str]:
        return obj_key(self.object)


async def iter_lines(chunks: AsyncIterable[bytes], limit: int = WATCH_LINE_LIMIT) -> AsyncIterator[bytes]:
    """Split a byte stream into lines whatever the chunking; a final unterminated line is yielded."""
    buf = bytearray()
    scanned = 0  # bytes of buf already known to contain no newline: large events stay O(n)
    async for chunk in chunks:
        buf += chunk
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, scanned))
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            scanned = start
            if line.strip():
                yield line
        if start:
            del buf[:start]
        scanned = len(buf)
        if len(buf) > limit:
            raise WatchDecodeError(f"watch event larger than {limit} bytes")
    if buf.strip():
        yield bytes(buf)


def parse_event(line: bytes) -> WatchEvent:
    """Decode one watch line. ERROR events are raised (Gone for 410), never returned."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise WatchDecodeError(f"invalid JSON in watch stream: {e}") from e
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("type"), str)
        or not isinstance(raw.get("object"), dict)
    ):
        raise WatchDecodeError("watch line is not a {type, object} event")
    obj: Obj = raw["object"]
    if raw["type"] == ERROR:
        raise error_from_status(int(obj.get("code") or 500), obj)
    return WatchEvent(raw["type"], obj, resource_version_of(obj))


async def watch(
    kc: KubeClient,
    res: Res,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    resource_version: str | None = None,
    allow_bookmarks: bool = True,
    timeout_seconds: int | None = None,
    *,
    read_timeout: float | None = None,
    line_limit: int = WATCH_LINE_LIMIT,
) -> AsyncGenerator[WatchEvent, None]:
    """One watch request, as events. Ends when the server closes the stream.

    BOOKMARK events are yielded (their object only carries metadata.resourceVersion). Raises `Gone`
    if the resourceVersion is too old. `read_timeout` defaults to timeout_seconds plus a margin
    (unbounded without timeout_seconds). Close it promptly with `contextlib.aclosing()` if you stop
    iterating early: that releases the connection.
    """
    params: dict[str, str] = {"watch": "true"}
    if resource_version:
        params["resourceVersion"] = resource_version
    if allow_bookmarks:
        params["allowWatchBookmarks"] = "true"
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    if timeout_seconds is not None:
        params["timeoutSeconds"] = str(int(timeout_seconds))
        if read_timeout is None:
            read_timeout = timeout_seconds + WATCH_READ_MARGIN
    path = res.path(namespace if res.namespaced else None)
    resp = await kc.open_stream(path, params=params, read_timeout=read_timeout)
    async with resp:
        async for line in iter_lines(resp.content.iter_any(), line_limit):
            yield parse_event(line)


EventHandler = Callable[[WatchEvent], Awaitable[None] | None]

# Errors after which ListWatch backs off and tries again; anything else is a bug and propagates.
_RETRYABLE = (ApiError, aiohttp.ClientError, TimeoutError, OSError, WatchDecodeError)


class ListWatch:
    """List, then watch, forever; iterate it for events and read `.cache` for current state.

        async with ListWatch(kc, PODS, namespace="ns") as lw:
            async for ev in lw:          # ADDED*, SYNC, then live ADDED/MODIFIED/DELETED
                ...

    Event order: ADDED for each listed object, then SYNC; then watch events. After a 410 the
    re-list is diffed against the cache: ADDED for new, MODIFIED for changed (by resourceVersion),
    DELETED (carrying the last known object) for vanished objects, then SYNC again.

    `cache` maps (namespace, name) -> object and is already updated when an event is delivered.
    Errors are logged (with resource and server) and retried with exponential backoff; unexpected
    exceptions end the iteration by being raised to the consumer. `stop()` ends iteration promptly.
    """

    def __init__(
        self,
        kc: KubeClient,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        page_size: int = LIST_PAGE_SIZE,
        watch_timeout: float | None = None,
        backoff_base: float = LISTWATCH_BACKOFF_BASE,
        backoff_cap: float = LISTWATCH_BACKOFF_CAP,
        buffer: int = LISTWATCH_BUFFER,
    ) -> None:
        self.kc = kc
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.cache: dict[tuple[str, str], Obj] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._buffer_max = max(1, buffer)
        self._buf: deque[WatchEvent] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._error: BaseException | None = None
        self.lists = 0  # completed lists, for observability and tests
        self.watches = 0  # watch requests opened

    def __repr__(self) -> str:
        return f"ListWatch({self.describe()})"

    def describe(self) -> str:
        what = f"{self.res.plural}.{self.res.group}" if self.res.group else self.res.plural
        if self.namespace:
            what += f" in {self.namespace}"
        if self.label_selector:
            what += f" [{self.label_selector}]"
        if self.field_selector:
            what += f" [{self.field_selector}]"
        return f"{what} on {self.kc.server}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._run(), name=f"listwatch {self.describe()}")

    def stop(self) -> None:
        """End the iteration (buffered events are dropped) and cancel the list/watch."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
        self._readable.set()
        self._writable.set()

    async def aclose(self) -> None:
        self.stop()
        if self._task is not None and not self._task.done():
            # Wait until the connection is released. asyncio.wait neither raises the task's own
            # (already reported) outcome nor swallows a cancellation of the caller.
            await asyncio.wait({self._task})

    async def __aenter__(self) -> ListWatch:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def wait_synced(self) -> None:
        """Wait for the first complete list (bound it with asyncio.wait_for / asyncio.timeout)."""
        self.start()
        await self.synced.wait()

    @property
    def has_synced(self) -> bool:
        return self.synced.is_set()

    # -- consumer side ---------------------------------------------------------------------------

    def __aiter__(self) -> ListWatch:
        self.start()
        return self

    async def __anext__(self) -> WatchEvent:
        self.start()
        while True:
            if self._stopped:
                raise StopAsyncIteration
            if self._buf:
                ev = self._buf.popleft()
                self._writable.set()
                return ev
            if self._error is not None:
                err, self._error = self._error, None
                self._stopped = True
                raise err
            if self._task is not None and self._task.done():
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    async def run(self, on_event: EventHandler) -> None:
        """Feed every event to `on_event` (sync or async) until stopped; handler errors propagate."""
        try:
            async for ev in self:
                r = on_event(ev)
                if inspect.isawaitable(r):
                    await r
        finally:
            await self.aclose()

    # -- producer side ---------------------------------------------------------------------------

    async def _emit(self, ev: WatchEvent) -> None:
        # Backpressure: while the consumer lags, stop reading the socket (TCP flow control then
        # slows the server) instead of buffering without bound.
        while len(self._buf) >= self._buffer_max and not self._stopped:
            self._writable.clear()
            await self._writable.wait()
        self._buf.append(ev)
        self._readable.set()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("listwatch %s crashed", self.describe())
            self._error = e
        finally:
            self._readable.set()

    async def _loop(self) -> None:
        need_list = True
        gone_streak = 0
        while True:
            phase = "list" if need_list else "watch"
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    continue  # no backoff reset yet: a list followed by an instant 410 must not spin
                delivered, seconds = await self._watch_once()
                if delivered or seconds >= MIN_HEALTHY_WATCH_SECONDS:
                    # A watch that worked (even a quiet one the server timed out) proves recovery.
                    self._backoff.reset()
                    gone_streak = 0
                else:
                    delay = self._backoff.next_delay()
                    log.info(
                        "listwatch %s: watch closed after %.2fs with nothing delivered; again in %.1fs",
                        self.describe(),
                        seconds,
                        delay,
                    )
                    await asyncio.sleep(delay)
            except Gone as e:
                gone_streak += 1
                log.info(
                    "listwatch %s: resourceVersion %s expired (%s); re-listing",
                    self.describe(),
                    self.resource_version or "-",
                    e.message or e.reason,
                )
                need_list = True
                if gone_streak > 1:
                    await self._backoff.sleep()
            except _RETRYABLE as e:
                delay = self._backoff.next_delay()
                log.warning(
                    "listwatch %s: %s failed: %s; retrying in %.1fs",
                    self.describe(),
                    phase,
                    _describe_error(e),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        items, rv = await self.kc.list(
            self.res, self.namespace, self.label_selector, self.field_selector, limit=self.page_size
        )
        fresh = {obj_key(o): o for o in items}
        events: list[WatchEvent] = []
        first = self.lists == 0
        for key, obj in fresh.items():
            old = self.cache.get(key)
            if old is None:
                events.append(WatchEvent(ADDED, obj, resource_version_of(obj)))
            elif not first and resource_version_of(old) != resource_version_of(obj):
                events.append(WatchEvent(MODIFIED, obj, resource_version_of(obj)))
        for key, old in self.cache.items():
            if key not in fresh:
                events.append(WatchEvent(DELETED, old, resource_version_of(old)))
        # Swap the snapshot in atomically (no await in between) so readers of `cache` always see a
        # consistent list; the same dict object is kept because consumers may hold a reference.
        self.cache.clear()
        self.cache.update(fresh)
        self.resource_version = rv
        self.lists += 1
        log.debug("listwatch %s: listed %d objects at resourceVersion %s", self.describe(), len(fresh), rv)
        for ev in events:
            await self._emit(ev)
        await self._emit(WatchEvent(SYNC, {}, rv))
        self.synced.set()

    async def _watch_once(self) -> tuple[int, float]:
        """One watch from `resource_version`; returns (events incl. bookmarks, seconds it lasted)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout = (
            self.watch_timeout if self.watch_timeout is not None else random.uniform(*WATCH_TIMEOUT_RANGE)
        )
        delivered = 0
        self.watches += 1
        stream = watch(
            self.kc,
            self.res,
            self.namespace,
            self.label_selector,
            self.field_selector,
            resource_version=self.resource_version,
            allow_bookmarks=True,
            timeout_seconds=max(1, int(timeout)),
        )
        async with contextlib.aclosing(stream):
            async for ev in stream:
                delivered += 1
                if ev.type == BOOKMARK:
                    # Nothing changed, but resuming from here avoids replaying (or a 410 for) history.
                    if ev.resource_version:
                        self.resource_version = ev.resource_version
                    continue
                key = obj_key(ev.object)
                if ev.type in (ADDED, MODIFIED):
                    self.cache[key] = ev.object
                elif ev.type == DELETED:
                    self.cache.pop(key, None)
                else:
                    log.warning("listwatch %s: ignoring unknown event type %r", self.describe(), ev.type)
                    continue
                if ev.resource_version:
                    self.resource_version = ev.resource_version
                await self._emit(ev)
        return delivered, loop.time() - started


async def list_watch(
    kc: KubeClient,
    res: Res,
    on_event: EventHandler,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    **kwargs: Any,
) -> None:
    """Run a `ListWatch` feeding `on_event` until cancelled (or the handler raises)."""
    await ListWatch(kc, res, namespace, label_selector, field_selector, **kwargs).run(on_event)


def _describe_error(e: BaseException) -> str:
    if isinstance(e, ApiError):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
