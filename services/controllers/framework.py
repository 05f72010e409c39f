"""The controller toolkit: shared informers, a deduplicating work queue, expectations, and the
Controller base that reconciles keys. Everything reaches cluster state through the API client."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kubeedge.kube import KubeClient, ListWatch, Res
from kubeedge.kube.types import Obj

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
Handler = Callable[[Obj | None, Obj | None], None]  # (old, new): add = (None, new), delete = (old, None)
IndexFn = Callable[[Obj], Iterable[str]]

# Keys waiting in one controller's queue; beyond this, adds wait (backpressure on event handlers
# is not possible, so the queue drops duplicates and keeps at most this many distinct keys).
QUEUE_LIMIT = 100_000
# Failed reconciles are retried after base * 2^failures seconds, capped.
RETRY_BASE = 0.05
RETRY_CAP = 60.0


def key_of(obj: Obj) -> Key:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "", md.get("name") or ""


def uid_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference marked controller=true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_key(ns: str, name: str) -> str:
    """The expectations key of a namespaced owner (DaemonSet, StatefulSet, Job)."""
    return f"{ns}/{name}"


def owned_pod_handler(kind: str, expectations: Expectations, enqueue: Callable[[Key], None]) -> Handler:
    """The pod event handler of a controller that owns pods directly: record the creations and
    deletions its expectations wait for, then enqueue the owner. A pod that starts terminating counts
    as deleted (as upstream): its replacement waits for it to go."""

    def handle(old: Obj | None, new: Obj | None) -> None:
        pod = new or old or {}
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != kind:
            return
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        name = ref.get("name", "")
        key = owner_key(ns, name)
        if old is None and new is not None:
            expectations.creation_observed(key)
        if new is None or (_terminating(new) and not (old is not None and _terminating(old))):
            expectations.deletion_observed(key, uid_of(pod))
        enqueue((ns, name))

    return handle


def _terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class Informer:
    """A cached, indexed view of one resource kept current by list-watch; handlers run on every
    change with the previous and new object. Share one informer per resource between controllers."""

    def __init__(
        self,
        kc: KubeClient,
        res: Res,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.kc = kc
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache: dict[Key, Obj] = {}
        self._handlers: list[Handler] = []
        self._index_fns: dict[str, IndexFn] = {}
        self._indexes: dict[str, dict[str, dict[Key, Obj]]] = {}
        self.synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        """Handlers must be quick (enqueue keys); they also see the current cache once synced."""
        self._handlers.append(handler)
        for obj in list(self.cache.values()):
            handler(None, obj)

    def add_index(self, name: str, fn: IndexFn) -> None:
        self._index_fns[name] = fn
        idx: dict[str, dict[Key, Obj]] = collections.defaultdict(dict)
        for k, obj in self.cache.items():
            for v in fn(obj):
                idx[v][k] = obj
        self._indexes[name] = idx

    def by_index(self, name: str, value: str) -> list[Obj]:
        return list(self._indexes[name].get(value, {}).values())

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get((namespace, name))

    def list(self, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            return list(self.cache.values())
        return [o for (ns, _), o in self.cache.items() if ns == namespace]

    async def wait_synced(self) -> None:
        await self.synced.wait()

    def _reindex(self, k: Key, old: Obj | None, new: Obj | None) -> None:
        for name, fn in self._index_fns.items():
            idx = self._indexes[name]
            if old is not None:
                for v in fn(old):
                    bucket = idx.get(v)
                    if bucket is not None:
                        bucket.pop(k, None)
                        if not bucket:
                            del idx[v]
            if new is not None:
                for v in fn(new):
                    idx.setdefault(v, {})[k] = new

    def _apply(self, etype: str, obj: Obj) -> None:
        k = key_of(obj)
        old = self.cache.get(k)
        new: Obj | None
        if etype == "DELETED":
            if old is None:
                return
            del self.cache[k]
            new = None
        else:
            self.cache[k] = new = obj
        self._reindex(k, old, new)
        for h in self._handlers:
            try:
                h(old, new)
            except Exception:
                log.exception("informer handler for %s failed", self.res.plural)

    async def run(self) -> None:
        async with ListWatch(
            self.kc,
            self.res,
            self.namespace,
            self.label_selector,
            self.field_selector,
        ) as lw:
            async for ev in lw:
                if ev.type == "SYNC":
                    # After a re-list the SYNC marks consistency again; objects that vanished were
                    # delivered as DELETED before it.
                    self.synced.set()
                    continue
                if ev.type in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(ev.type, ev.object)


class WorkQueue:
    """Keys to reconcile: deduplicated, delayable, with per-key exponential retry. A key is never
    handed to two workers at once (a key changed while being processed is re-queued after)."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self._ready: collections.deque[Any] = collections.deque()
        self._queued: set[Any] = set()
        self._processing: set[Any] = set()
        self._dirty: set[Any] = set()
        self._delayed: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._failures: dict[Any, int] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queued) + len(self._delayed)

    def add(self, key: Any) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        if len(self._queued) >= self.limit:
            self.dropped += 1
            log.error("work queue full (%d keys); dropping %r", self.limit, key)
            return
        self._queued.add(key)
        self._ready.append(key)
        self._wake.set()

    def add_after(self, key: Any, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        self._seq += 1
        heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
        self._arm()

    def retry(self, key: Any) -> float:
        """Schedule a failed key again with backoff; returns the delay."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(RETRY_CAP, RETRY_BASE * (2**n)) * random.uniform(0.8, 1.2)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Any) -> None:
        self._failures.pop(key, None)

    def _arm(self) -> None:
        if not self._delayed:
            return
        loop = asyncio.get_running_loop()
        when = self._delayed[0][0]
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, when - time.monotonic()), self._promote)

    def _promote(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self.add(key)
        self._timer = None
        self._arm()

    async def get(self) -> Any:
        while not self._ready:
            self._wake.clear()
            await self._wake.wait()
        key = self._ready.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Any) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class Expectations:
    """Creations/deletions a controller has asked for but not yet seen through its informer, so
    a reconcile on a stale cache does not create (or delete) the same pods twice."""

    TTL = 300.0  # forget expectations that never came true (a lost watch event, a failed write)

    def __init__(self) -> None:
        self._adds: dict[str, int] = collections.defaultdict(int)
        self._dels: dict[str, set[str]] = collections.defaultdict(set)
        self._since: dict[str, float] = {}

    def expect_creations(self, owner: str, n: int) -> None:
        self._adds[owner] += n
        self._since[owner] = time.monotonic()

    def expect_deletions(self, owner: str, uids: Iterable[str]) -> None:
        self._dels[owner].update(uids)
        self._since[owner] = time.monotonic()

    def creation_observed(self, owner: str) -> None:
        if self._adds.get(owner, 0) > 0:
            self._adds[owner] -= 1

    def creation_failed(self, owner: str) -> None:
        self.creation_observed(owner)

    def deletion_observed(self, owner: str, uid: str) -> None:
        s = self._dels.get(owner)
        if s is not None:
            s.discard(uid)

    def satisfied(self, owner: str) -> bool:
        pending = self._adds.get(owner, 0) > 0 or bool(self._dels.get(owner))
        if pending and time.monotonic() - self._since.get(owner, 0) > self.TTL:
            log.warning("expectations for %s expired unmet; resyncing", owner)
            self.forget(owner)
            return True
        return not pending

    def forget(self, owner: str) -> None:
        self._adds.pop(owner, None)
        self._dels.pop(owner, None)
        self._since.pop(owner, None)


class Controller:
    """A reconcile loop over keys. Subclasses set `name`, wire informers in `setup`, and
    implement `reconcile(key)`; returning a number re-queues the key after that many seconds."""

    name = "controller"
    workers = 2

    def __init__(self, kc: KubeClient, informers: InformerFactory) -> None:
        self.kc = kc
        self.informers = informers
        self.queue = WorkQueue()

    def setup(self) -> None:
        """Register informer handlers and indexes (called before informers start)."""

    async def reconcile(self, key: Any) -> float | None:
        raise NotImplementedError

    async def run(self) -> None:
        await self.informers.wait_synced()
        log.info("controller %s started", self.name)
        workers = [asyncio.create_task(self._worker(i), name=f"{self.name}-{i}") for i in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            self.queue.close()

    async def _worker(self, i: int) -> None:
        while True:
            key = await self.queue.get()
            try:
                again = await self.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                raise
            except Exception as e:
                delay = self.queue.retry(key)
                log.warning(
                    "%s: reconcile %s failed (%s: %s); retry in %.2fs",
                    self.name,
                    key,
                    type(e).__name__,
                    e,
                    delay,
                )
            else:
                self.queue.forget(key)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                self.queue.done(key)


class InformerFactory:
    """One informer per (resource, namespace, selectors), shared by all controllers of a manager."""

    def __init__(self, kc: KubeClient) -> None:
        self.kc = kc
        self._informers: dict[tuple[Any, ...], Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def get(
        self,
        res: Res,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        k = (res, namespace, label_selector, field_selector)
        inf = self._informers.get(k)
        if inf is None:
            inf = Informer(
                self.kc,
                res,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
            )
            self._informers[k] = inf
        return inf

    def start(self, spawn: Callable[[Callable[[], Awaitable[None]], str], object]) -> None:
        for inf in self._informers.values():
            spawn(inf.run, f"informer-{inf.res.plural}")

    async def wait_synced(self) -> None:
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers.values()))


async def ignore_not_found(aw: Awaitable[Any]) -> Any:
    from kubeedge.kube.errors import NotFound

    with contextlib.suppress(NotFound):
        return await aw
    return None
