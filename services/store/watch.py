"""In-process fan-out of committed changes to watchers, each with a bounded buffer."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from .errors import Closed, TooSlow
from .records import ADDED, DELETED, MODIFIED, Event, Obj, Record

log = logging.getLogger(__name__)

Predicate = Callable[[Obj], bool]
# (delivered type, record): the type can differ from the stored one when a filter is involved,
# e.g. an update that makes an object match a selector reaches that watcher as ADDED.
Delivery = tuple[str, Record]
Replay = Callable[[int, int], Awaitable[list[Event]]]


def filtered(ev: Event, predicate: Predicate | None) -> str | None:
    """The event type a filtered watcher sees for `ev`, or None if it sees nothing."""
    if predicate is None:
        return ev.type
    now = predicate(ev.obj)
    if ev.type != MODIFIED:
        return ev.type if now else None
    before = ev.prev is not None and predicate(ev.prev.obj)
    if now:
        return MODIFIED if before else ADDED
    return DELETED if before else None


class Watcher:
    """A consumer's view of the change stream for one resource (optionally one namespace)."""

    def __init__(
        self,
        hub: Hub,
        key: str,
        namespace: str | None,
        predicate: Predicate | None,
        from_rv: int,
        registered_rv: int,
        buffer_limit: int,
        replay: Replay,
    ) -> None:
        self._hub = hub
        self.key = key
        self.namespace = namespace
        self.predicate = predicate
        self.buffer_limit = buffer_limit
        # Everything up to last_rv has been delivered (or was filtered out); never deliver it again.
        self.last_rv = from_rv
        # Highest revision this watcher is known to be complete up to: safe for a bookmark.
        self.progress_rv = from_rv
        self._registered_rv = registered_rv
        self._replay: Replay | None = replay
        self._buf: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._poked = False

    def offer(self, events: list[Event]) -> None:
        """Called on the event loop for each committed batch touching this watcher's resource."""
        if self._closed:
            return
        for ev in events:
            if self.namespace is not None and ev.namespace != self.namespace:
                continue
            self._buf.append(ev)
        if len(self._buf) > self.buffer_limit:
            self.fail(TooSlow(f"watcher fell more than {self.buffer_limit} events behind"))
            return
        self._wake.set()

    def fail(self, err: BaseException) -> None:
        self._error = err
        self._buf.clear()
        self._close()

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub.remove(self)
            self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next(self, max_wait: float | None = None) -> list[Delivery]:
        """The next deliveries, in revision order; [] on timeout (check progress_rv for bookmarks).

        Raises the watcher's error (TooSlow, Expired) or Closed when the stream has ended.
        """
        if self._replay is not None:
            replay, self._replay = self._replay, None
            if self._registered_rv > self.last_rv:
                out = self._deliver(await replay(self.last_rv, self._registered_rv))
                self.progress_rv = max(self.progress_rv, self._registered_rv)
                if out:
                    return out
        while True:
            if self._error is not None:
                raise self._error
            if self._buf:
                evs = list(self._buf)
                self._buf.clear()
                # The hub publishes synchronously: an empty buffer means complete up to hub.rv.
                self.progress_rv = max(self.progress_rv, self._hub.rv)
                out = self._deliver(evs)
                if out:
                    return out
                continue
            if self._closed:
                raise Closed("watch closed")
            self.progress_rv = max(self.progress_rv, self._hub.rv)
            if self._poked:
                self._poked = False
                return []
            self._wake.clear()
            if max_wait is None:
                await self._wake.wait()
                continue
            # asyncio.timeout arms one timer handle; wait_for would spawn a task per wakeup.
            try:
                async with asyncio.timeout(max_wait):
                    await self._wake.wait()
            except TimeoutError:
                if not self._buf:
                    self.progress_rv = max(self.progress_rv, self._hub.rv)
                return []

    def poke(self) -> None:
        """Make a pending or the next `next()` return (with [] if nothing is buffered): timers of
        the consumer (bookmarks, deadlines) use this instead of arming a timeout per wait."""
        self._poked = True
        self._wake.set()

    def drain(self) -> list[Delivery]:
        """Whatever is buffered now, without waiting (used to coalesce bursts into one write)."""
        if self._error is not None or self._replay is not None or not self._buf:
            return []
        evs = list(self._buf)
        self._buf.clear()
        self.progress_rv = max(self.progress_rv, self._hub.rv)
        return self._deliver(evs)

    def _deliver(self, events: list[Event]) -> list[Delivery]:
        out: list[Delivery] = []
        for ev in events:
            if ev.rv <= self.last_rv:
                continue
            self.last_rv = ev.rv
            t = filtered(ev, self.predicate)
            if t is not None:
                out.append((t, ev))
        if self.last_rv > self.progress_rv:
            self.progress_rv = self.last_rv
        return out

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> list[Delivery]:
        try:
            return await self.next()
        except Closed:
            raise StopAsyncIteration from None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Hub:
    """Routes committed batches to the watchers of each resource key."""

    def __init__(self) -> None:
        self.rv = 0  # the last published revision
        self._tick: asyncio.Future[None] | None = None
        # Synchronous observers of every committed batch (indexes that must never lag the store).
        self.listeners: list[Callable[[list[Event]], None]] = []
        self._by_key: dict[str, set[Watcher]] = collections.defaultdict(set)

    def add(self, w: Watcher) -> None:
        self._by_key[w.key].add(w)

    def tick(self, period: float) -> asyncio.Future[None]:
        """A future that resolves within `period`, shared by everyone who asks meanwhile: watchers
        coalescing bursts all wait on one timer instead of arming one each."""
        fut = self._tick
        if fut is None or fut.done():
            loop = asyncio.get_running_loop()
            fut = self._tick = loop.create_future()
            loop.call_later(period, _resolve, fut)
        return fut

    def remove(self, w: Watcher) -> None:
        ws = self._by_key.get(w.key)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._by_key[w.key]

    def publish(self, events: list[Event], rv: int) -> None:
        self.rv = rv
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                log.exception("store listener %r failed on a batch ending at revision %d", listener, rv)
        by_key: dict[str, list[Event]] = collections.defaultdict(list)
        for ev in events:
            by_key[ev.key].append(ev)
        for key, evs in by_key.items():
            for w in list(self._by_key.get(key, ())):
                w.offer(evs)

    def close_all(self, err: BaseException | None = None) -> None:
        for ws in list(self._by_key.values()):
            for w in list(ws):
                if err is not None:
                    w.fail(err)
                else:
                    w.close()

    def count(self) -> int:
        return sum(len(ws) for ws in self._by_key.values())


__all__ = ["ADDED", "DELETED", "MODIFIED", "Delivery", "Hub", "Predicate", "Watcher", "filtered"]
