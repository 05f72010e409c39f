"""The default scheduler: binds pending pods (spec.schedulerName "default-scheduler") to nodes.

Decisions are taken one at a time against `ClusterState` (per-node aggregates kept from the pods
and nodes informers plus our own assumptions), so accounting is always consistent; the binds they
produce run concurrently (bounded), and Events and status patches run in the background so that
neither ever holds up the next decision. A pod is assumed on its node as soon as it is chosen —
before the informer shows it bound — exactly like kube-scheduler's assume cache."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubeedge.kube import EVENTS, NODES, PODS, KubeClient
from kubeedge.kube.errors import ApiError, Conflict, NotFound
from kubeedge.kube.types import Obj

from .framework import Controller, Key, key_of
from .scheduling import ClusterState, profile_of

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
BIND_CONCURRENCY = 64
# Pods that did not fit: a cluster change (node added/changed, pod deleted) retries them, but not
# sooner than their backoff (1 s doubling to 10 s, as upstream); without any change they are
# retried anyway after 5 s doubling to 60 s, in case an event was missed.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
RETRY_BASE = 5.0
RETRY_CAP = 60.0
# Background writes (Events, PodScheduled=False patches).
SIDE_EFFECT_WORKERS = 4
SIDE_EFFECT_BACKLOG = 500  # beyond this, "Scheduled" Events are dropped rather than queued
SCHEDULED_EVENTS_PER_S = 50.0  # like upstream's event rate limiting: bulk scheduling skips most
SCHEDULED_EVENTS_BURST = 200.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ours(pod: Obj) -> bool:
    return (pod.get("spec") or {}).get("schedulerName") in (None, "", SCHEDULER_NAME)


def needs_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and is_ours(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and not _is_terminal(pod)
    )


def _scheduling_inputs(pod: Obj) -> tuple[Any, Any]:
    md = pod.get("metadata") or {}
    return pod.get("spec"), (md.get("labels"), md.get("ownerReferences"))


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Background:
    """Fire-and-forget writes run by a few workers, so they never block scheduling."""

    def __init__(self, workers: int = SIDE_EFFECT_WORKERS) -> None:
        self.workers = workers
        self._jobs: collections.deque[Callable[[], Awaitable[Any]]] = collections.deque()
        self._wake = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, job: Callable[[], Awaitable[Any]], *, droppable: bool = False) -> bool:
        if droppable and len(self._jobs) >= SIDE_EFFECT_BACKLOG:
            self.dropped += 1
            return False
        self._jobs.append(job)
        self._wake.set()
        return True

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            while not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            job = self._jobs.popleft()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("scheduler: background write failed: %s: %s", type(e).__name__, e)


@dataclass(slots=True)
class _Unschedulable:
    attempts: int = 0
    not_before: float = 0.0  # backoff: no retry before this (monotonic)
    retry_at: float = 0.0  # the timer-driven retry
    moved: bool = False  # a cluster change asked for a retry (at not_before)


@dataclass(slots=True)
class _FailedEvent:
    name: str
    message: str
    count: int
    first: str


class Scheduler(Controller):
    name = "scheduler"
    workers = 1  # decisions are sequential; binds run concurrently behind them
    bind_concurrency = BIND_CONCURRENCY

    def setup(self) -> None:
        self.state = ClusterState()
        self.pods = self.informers.get(PODS)
        self.nodes = self.informers.get(NODES)
        self.unschedulable: dict[Key, _Unschedulable] = {}
        self._failed_events: dict[Key, _FailedEvent] = {}
        self._bind_slots = asyncio.Semaphore(self.bind_concurrency)
        self._binds: set[asyncio.Task[None]] = set()
        self._bind_kc = self.kc
        self.background = Background()
        self._scheduled_events = TokenBucket(SCHEDULED_EVENTS_PER_S, SCHEDULED_EVENTS_BURST)
        self.bound = 0
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)

    async def run(self) -> None:
        # Binds get their own connection pool: the shared client's pool also carries the watches
        # and the other controllers' requests, and binds are the scheduler's throughput.
        async with KubeClient(self.kc.config, pool_limit=self.bind_concurrency) as bind_kc:
            self._bind_kc = bind_kc
            bg = asyncio.create_task(self.background.run(), name="scheduler-background")
            try:
                await super().run()
            finally:
                bg.cancel()
                for t in list(self._binds):
                    t.cancel()

    # -- informer handlers (quick, synchronous) ---------------------------------------------------

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            assert old is not None
            self.state.remove_node(key_of(old)[1])
            return
        if self.state.set_node(new):
            self._move_all()

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            assert old is not None
            key = key_of(old)
            self._drop_pending(key)
            if self.state.unplace(key) is not None:
                self._move_all()  # its resources are free again
            return
        key = key_of(new)
        node = (new.get("spec") or {}).get("nodeName")
        if node:
            self._on_assigned(key, new, node)
            return
        if not needs_scheduling(new):
            self._drop_pending(key)
            return
        st = self.unschedulable.get(key)
        if st is not None:
            # Our own status patch (and any status-only change) must not cause a retry storm.
            if old is not None and _scheduling_inputs(old) == _scheduling_inputs(new):
                return
            st.moved = True
            st.not_before = 0.0
        self.queue.add(key)

    def _on_assigned(self, key: Key, pod: Obj, node: str) -> None:
        self._drop_pending(key)
        if _is_terminal(pod):
            if self.state.unplace(key) is not None:
                self._move_all()
            return
        if self.state.confirm(key, node):
            return
        try:
            profile = profile_of(pod)
        except ValueError as e:
            log.warning("scheduler: pod %s/%s has invalid requests (%s); not accounted", *key, e)
            return
        self.state.place(profile, node, assumed=False)

    def _drop_pending(self, key: Key) -> None:
        self.unschedulable.pop(key, None)
        self._failed_events.pop(key, None)

    def _move_all(self) -> None:
        """Something changed that may let unschedulable pods fit: retry each after its backoff."""
        if not self.unschedulable:
            return
        now = time.monotonic()
        for key, st in self.unschedulable.items():
            if not st.moved:
                st.moved = True
                self.queue.add_after(key, max(0.0, st.not_before - now))

    # -- deciding ---------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        pod = self.pods.get(*key)
        if pod is None or not needs_scheduling(pod):
            self._drop_pending(key)
            return None
        if key in self.state.placed:
            return None  # assumed: its bind is in flight
        now = time.monotonic()
        st = self.unschedulable.get(key)
        if st is not None and (now < st.not_before or (not st.moved and now < st.retry_at - 0.01)):
            return None  # a stale timer, or a retry too early: the pending timer will come
        try:
            profile = profile_of(pod)
        except ValueError as e:
            self._unschedulable(key, pod, f"invalid pod: {e}", now)
            return None
        decision = self.state.schedule(profile)
        if decision.node is None:
            self._unschedulable(key, pod, decision.message, now)
            return None
        self.state.place(profile, decision.node, assumed=True)
        self.unschedulable.pop(key, None)
        await self._bind_slots.acquire()
        task = asyncio.create_task(self._bind(key, pod, decision.node))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)
        return None

    async def _bind(self, key: Key, pod: Obj, node: str) -> None:
        ns, name = key
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            # The uid makes a binding meant for a pod that was deleted and re-created fail.
            "metadata": {"name": name, "namespace": ns, "uid": (pod.get("metadata") or {}).get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self._bind_kc.create_subresource(PODS, name, "binding", body, ns)
        except Conflict:
            # Already bound (or being deleted): the informer tells where; not an error.
            self.state.forget_assumed(key)
        except NotFound:
            self.state.forget_assumed(key)
        except asyncio.CancelledError:
            self.state.forget_assumed(key)
            raise
        except Exception as e:
            self.state.forget_assumed(key)
            delay = self.queue.retry(key)
            log.warning(
                "scheduler: binding %s/%s to %s failed (%s); retry in %.2fs", ns, name, node, e, delay
            )
        else:
            self.bound += 1
            self._scheduled_event(pod, node)
        finally:
            self._bind_slots.release()

    # -- unschedulable pods -----------------------------------------------------------------------

    def _unschedulable(self, key: Key, pod: Obj, message: str, now: float) -> None:
        st = self.unschedulable.get(key)
        if st is None:
            st = self.unschedulable[key] = _Unschedulable()
        st.attempts += 1
        st.not_before = now + min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** (st.attempts - 1))
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** (st.attempts - 1))
        st.retry_at = now + delay
        st.moved = False
        self.queue.add_after(key, delay)
        log.debug("scheduler: %s/%s is unschedulable: %s", key[0], key[1], message)
        self.background.submit(lambda: self._mark_unschedulable(key, message))
        self.background.submit(lambda: self._failed_event(key, pod, message))

    async def _mark_unschedulable(self, key: Key, message: str) -> None:
        """Set PodScheduled=False, conditional on the pod's resourceVersion so that a late patch
        can never overwrite the PodScheduled=True a binding set meanwhile."""
        for _ in range(3):
            pod = self.pods.get(*key)
            if pod is None or not needs_scheduling(pod) or key in self.state.placed:
                return
            conds = (pod.get("status") or {}).get("conditions") or []
            cur = next((c for c in conds if c.get("type") == "PodScheduled"), None)
            if cur and (cur.get("status"), cur.get("reason"), cur.get("message")) == (
                "False",
                "Unschedulable",
                message,
            ):
                return
            since = cur.get("lastTransitionTime") if cur and cur.get("status") == "False" else None
            cond = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": since or _now(),
            }
            patch = {
                "metadata": {"resourceVersion": pod["metadata"].get("resourceVersion")},
                "status": {"conditions": [cond]},
            }
            try:
                await self.kc.patch(PODS, key[1], patch, key[0], patch_type="strategic", subresource="status")
                return
            except NotFound:
                return
            except Conflict:
                await asyncio.sleep(0.2)  # the informer is behind; look again
        log.debug("scheduler: gave up setting PodScheduled=False on %s/%s", *key)

    async def _failed_event(self, key: Key, pod: Obj, message: str) -> None:
        """FailedScheduling, aggregated as upstream: the same message bumps count/lastTimestamp."""
        if self.pods.get(*key) is None or key in self.state.placed:
            return
        prev = self._failed_events.get(key)
        now = _now()
        if prev is not None and prev.message == message:
            prev.count += 1
            try:
                await self.kc.patch(
                    EVENTS, prev.name, {"count": prev.count, "lastTimestamp": now}, namespace=key[0]
                )
                return
            except NotFound:
                pass  # expired or deleted: start a new one
        ev = self._event(pod, "Warning", "FailedScheduling", message, now)
        self._failed_events[key] = _FailedEvent(ev["metadata"]["name"], message, 1, now)
        await self._create_event(ev)

    def _scheduled_event(self, pod: Obj, node: str) -> None:
        # Under bulk scheduling most of these are skipped: they would double the API writes.
        if not self._scheduled_events.take():
            self.background.dropped += 1
            return
        ns, name = key_of(pod)
        msg = f"Successfully assigned {ns}/{name} to {node}"
        ev = self._event(pod, "Normal", "Scheduled", msg, _now())
        self.background.submit(lambda: self._create_event(ev), droppable=True)

    async def _create_event(self, ev: Obj) -> None:
        try:
            await self.kc.create(EVENTS, ev, namespace=ev["metadata"]["namespace"])
        except NotFound:
            pass  # the namespace is going away
        except ApiError as e:
            log.debug("scheduler: event not recorded: %s", e)

    @staticmethod
    def _event(pod: Obj, etype: str, reason: str, message: str, now: str) -> Obj:
        md = pod.get("metadata") or {}
        ns, name = md.get("namespace") or "default", md.get("name") or ""
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": ns,
                "name": name,
                "uid": md.get("uid"),
                "resourceVersion": md.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "source": {"component": SCHEDULER_NAME},
            "reportingComponent": SCHEDULER_NAME,
            "reportingInstance": SCHEDULER_NAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
