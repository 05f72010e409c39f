"""The ReplicaSet controller: keeps spec.replicas active pods matching spec.selector, owned by the
ReplicaSet (adopting orphans, releasing pods that stop matching), and reports status.

As upstream (pkg/controller/replicaset): creations and deletions go through Expectations so a
reconcile on a cache that has not yet seen our own writes never doubles them; creations come in
slow-start batches (1, 2, 4, ...) so a failing create costs one request, not hundreds; surplus pods
are deleted in upstream's order (unscheduled, pending, not ready, ... newest first)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubeedge.kube import PODS, REPLICASETS, Obj
from kubeedge.kube.errors import ApiError, Conflict, NotFound

from . import podtemplate as pt
from .framework import Controller, Expectations, Key, controller_of, key_of, uid_of

log = logging.getLogger(__name__)

# At most this many pods created or deleted in one reconcile (upstream BurstReplicas).
BURST_REPLICAS = 500
# Informer index of ReplicaSets by their own uid (pods name their owner by uid).
UID_INDEX = "replicaset/uid"
# The first slow-start batch; each successful batch doubles the next.
SLOW_START_INITIAL_BATCH = 1


# ---- pure logic (unit-tested) -------------------------------------------------------------------


def slow_start_batches(count: int, initial: int = SLOW_START_INITIAL_BATCH) -> list[int]:
    """Batch sizes for `count` creations: 1, 2, 4, ... (the last one what remains)."""
    out: list[int] = []
    size = max(1, initial)
    left = count
    while left > 0:
        n = min(size, left)
        out.append(n)
        left -= n
        size *= 2
    return out


async def slow_start(
    count: int, fn: Callable[[], Awaitable[Any]], initial: int = SLOW_START_INITIAL_BATCH
) -> tuple[int, BaseException | None]:
    """Call `fn` `count` times in growing concurrent batches, stopping after the first batch with a
    failure; returns how many succeeded and the first error."""
    done = 0
    for size in slow_start_batches(count, initial):
        results = await asyncio.gather(*(fn() for _ in range(size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        done += size - len(errors)
        if errors:
            for e in errors:
                if isinstance(e, asyncio.CancelledError):
                    raise e
            return done, errors[0]
    return done, None


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _restarts(pod: Obj) -> int:
    return max(
        (_int(c.get("restartCount")) for c in (pod.get("status") or {}).get("containerStatuses") or ()),
        default=0,
    )


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj, pods_on_node: int, now: dt.datetime) -> tuple[Any, ...]:
    """Sort key: pods to delete first sort first (upstream controller.ActivePodsWithRanks)."""
    spec, md = pod.get("spec") or {}, pod.get("metadata") or {}
    ready_cond = pt.ready_condition(pod)
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    # Ready for less time first: a later transition time sorts first (negated timestamp).
    ready_since = pt.parse_time(ready_cond.get("lastTransitionTime")) if ready and ready_cond else None
    ready_for = -(ready_since.timestamp()) if ready_since else 0.0
    created = pt.parse_time(md.get("creationTimestamp"))
    return (
        1 if spec.get("nodeName") else 0,  # unscheduled first
        _PHASE_RANK.get(pt.pod_phase(pod), 3),  # pending < unknown < running
        1 if ready else 0,  # not ready first
        _int((md.get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")),
        -pods_on_node,  # doubled-up on a node first
        ready_for,  # ready for a shorter time first
        -_restarts(pod),  # more restarts first
        -(created.timestamp()) if created else float("-inf"),  # newer first (no time = first)
    )


def pods_to_delete(pods: list[Obj], related: list[Obj], count: int, now: dt.datetime) -> list[Obj]:
    """The `count` pods to delete from `pods`; `related` (all active pods of the owner's family)
    decides which nodes are doubled up."""
    if count >= len(pods):
        return list(pods)
    on_node: dict[str, int] = {}
    for p in related:
        node = (p.get("spec") or {}).get("nodeName")
        if node:
            on_node[node] = on_node.get(node, 0) + 1

    def rank(p: Obj) -> tuple[Any, ...]:
        node = (p.get("spec") or {}).get("nodeName")
        return deletion_rank(p, on_node.get(node, 0) if node else 0, now)

    return sorted(pods, key=rank)[:count]


def replicaset_status(rs: Obj, pods: list[Obj], now: dt.datetime, failure: tuple[str, str] | None) -> Obj:
    """The status for `rs` given its active pods; `failure` = (reason, message) of a failed
    create/delete, which sets the ReplicaFailure condition (cleared when None)."""
    spec, md = rs.get("spec") or {}, rs.get("metadata") or {}
    min_ready = _int(spec.get("minReadySeconds"))
    tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    fully = ready = available = 0
    for p in pods:
        labels = pt.labels_of(p)
        if all(labels.get(k) == v for k, v in tlabels.items()):
            fully += 1
        if pt.is_ready(p):
            ready += 1
            if pt.is_available(p, min_ready, now):
                available += 1
    old = rs.get("status") or {}
    conditions = [c for c in old.get("conditions") or () if c.get("type") != "ReplicaFailure"]
    if failure is not None:
        prev = next((c for c in old.get("conditions") or () if c.get("type") == "ReplicaFailure"), None)
        if prev is not None and prev.get("reason") == failure[0]:
            conditions.append(prev)  # keep the first transition time and message
        else:
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": failure[0],
                    "message": failure[1],
                    "lastTransitionTime": pt.format_time(now),
                }
            )
    status: Obj = {
        "replicas": len(pods),
        "fullyLabeledReplicas": fully,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": _int(md.get("generation"), 1),
    }
    if conditions:
        status["conditions"] = conditions
    return status


def next_available_check(pods: list[Obj], min_ready_seconds: int, now: dt.datetime) -> float | None:
    """Seconds until the soonest ready pod becomes available (to requeue then), if any."""
    waits = [pt.seconds_until_available(p, min_ready_seconds, now) for p in pods]
    pending = [w for w in waits if w]
    return min(pending) + 0.05 if pending else None


# ---- the controller -----------------------------------------------------------------------------


class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 4

    def setup(self) -> None:
        self.expectations = Expectations()
        self.rs_informer = self.informers.get(REPLICASETS)
        self.pod_informer = self.informers.get(PODS)
        self.pod_informer.add_index(pt.OWNER_UID_INDEX, pt.owner_uid_index)
        self.pod_informer.add_index(pt.ORPHAN_NS_INDEX, pt.orphan_namespace_index)
        self.rs_informer.add_index(UID_INDEX, _own_uid)
        self.rs_informer.add_handler(self._on_rs)
        self.pod_informer.add_handler(self._on_pod)
        # ReplicaSets whose orphans were looked up live once (see _claim_pods); bounded by the
        # number of ReplicaSets, entries leave with them.
        self._listed_live: set[str] = set()

    # -- event handlers: quick, they only enqueue and record observations --------------------------

    def _on_rs(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        assert obj is not None
        if new is None:
            self.expectations.forget(uid_of(obj))
            self._listed_live.discard(uid_of(obj))
        self.queue.add(key_of(obj))

    def _rs_for_ref(self, pod: Obj, ref: Obj | None) -> Obj | None:
        if ref is None or ref.get("kind") != "ReplicaSet" or not ref.get("uid"):
            return None
        found = self.rs_informer.by_index(UID_INDEX, str(ref["uid"]))
        return found[0] if found else None

    def _matching_rs(self, pod: Obj) -> list[Obj]:
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        labels = pt.labels_of(pod)
        return [
            rs
            for rs in self.rs_informer.list(ns)
            if pt.selector_matches((rs.get("spec") or {}).get("selector"), labels)
        ]

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            assert old is not None
            self._pod_gone(old)
            return
        if old is not None and (old.get("metadata") or {}).get("resourceVersion") == (
            new.get("metadata") or {}
        ).get("resourceVersion"):
            return
        if pt.is_terminating(new):
            # A deletion we asked for shows up as deletionTimestamp first (graceful pods).
            self._pod_gone(new)
            if old is not None and pt.labels_of(old) != pt.labels_of(new):
                self._pod_gone(old)
            return
        new_ref = controller_of(new)
        old_ref = controller_of(old) if old is not None else None
        if old is not None and old_ref is not None and old_ref != new_ref:
            rs = self._rs_for_ref(old, old_ref)
            if rs is not None:
                self.queue.add(key_of(rs))
        if new_ref is not None:
            rs = self._rs_for_ref(new, new_ref)
            if rs is None:
                return
            if old is None:
                self.expectations.creation_observed(uid_of(rs))
            self.queue.add(key_of(rs))
            return
        # An orphan: whoever could adopt it should look (only when something relevant changed).
        if old is None or pt.labels_of(old) != pt.labels_of(new) or old_ref is not None:
            for rs in self._matching_rs(new):
                self.queue.add(key_of(rs))

    def _pod_gone(self, pod: Obj) -> None:
        rs = self._rs_for_ref(pod, controller_of(pod))
        if rs is None:
            return
        self.expectations.deletion_observed(uid_of(rs), uid_of(pod))
        self.queue.add(key_of(rs))

    # -- reconcile --------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        rs = self.rs_informer.get(ns, name)
        if rs is None:
            return None
        uid = uid_of(rs)
        needs_sync = self.expectations.satisfied(uid) and not pt.is_terminating(rs)
        pods = await self._claim_pods(rs)
        active = [p for p in pods if pt.is_active(p)]
        failure: tuple[str, str] | None = None
        deleted: set[str] = set()
        error: BaseException | None = None
        if needs_sync:
            failure, deleted, error = await self._manage(rs, active)
        now = pt.now_utc()
        # Pods we just deleted are gone for the purpose of status, so the deployment controller
        # does not count them as available while the cache catches up.
        counted = [p for p in active if uid_of(p) not in deleted]
        status = replicaset_status(rs, counted, now, failure)
        await self._write_status(rs, status)
        if error is not None:
            raise error
        min_ready = _int((rs.get("spec") or {}).get("minReadySeconds"))
        if min_ready > 0:
            return next_available_check(counted, min_ready, now)
        return None

    async def _claim_pods(self, rs: Obj) -> list[Obj]:
        """Pods this ReplicaSet controls after adopting matching orphans and releasing owned pods that
        no longer match (upstream PodControllerRefManager.ClaimPods)."""
        md = rs["metadata"]
        ns, uid = md.get("namespace") or "", uid_of(rs)
        selector = (rs.get("spec") or {}).get("selector")
        owned: list[Obj] = []
        for pod in self.pod_informer.by_index(pt.OWNER_UID_INDEX, uid):
            if pt.selector_matches(selector, pt.labels_of(pod)):
                owned.append(pod)
            elif not pt.is_terminating(rs):
                await self._release(rs, pod)
        if pt.is_terminating(rs):
            return owned
        candidates = self.pod_informer.by_index(pt.ORPHAN_NS_INDEX, ns)
        if uid not in self._listed_live:
            # The first sync of a ReplicaSet looks for orphans with a live list: pods created just
            # before it may not have reached the informer yet, and creating replacements for them
            # would mean deleting (maybe those very) pods right after.
            candidates = await self._live_orphans(ns, selector, candidates)
            self._listed_live.add(uid)
        orphans = [
            p
            for p in candidates
            if not pt.is_terminating(p) and pt.selector_matches(selector, pt.labels_of(p))
        ]
        if orphans and await self._can_adopt(rs):
            for pod in orphans:
                adopted = await self._adopt(rs, pod)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _live_orphans(self, ns: str, selector: Obj | None, cached: list[Obj]) -> list[Obj]:
        text = pt.selector_string(selector)
        if text is None:
            return cached
        items, _ = await self.kc.list(PODS, ns, label_selector=text)
        by_uid = {uid_of(p): p for p in cached}
        for p in items:  # the live copy is the fresher one
            if controller_of(p) is None:
                by_uid[uid_of(p)] = p
        return list(by_uid.values())

    async def _can_adopt(self, rs: Obj) -> bool:
        # Re-read uncached: never adopt for a ReplicaSet that was deleted (or re-created) meanwhile.
        md = rs["metadata"]
        try:
            fresh = await self.kc.get(REPLICASETS, md["name"], md.get("namespace"))
        except NotFound:
            return False
        return uid_of(fresh) == uid_of(rs) and not pt.is_terminating(fresh)

    async def _adopt(self, rs: Obj, pod: Obj) -> Obj | None:
        md = pod["metadata"]
        refs = [r for r in md.get("ownerReferences") or () if r.get("uid") != uid_of(rs)]
        refs.append(pt.controller_ref(rs, "apps/v1", "ReplicaSet"))
        patch = {"metadata": {"ownerReferences": refs, "resourceVersion": md.get("resourceVersion")}}
        try:
            return await self.kc.patch(PODS, md["name"], patch, namespace=md.get("namespace"))
        except NotFound:
            return None
        except Conflict:
            pass
        # Changed meanwhile (a kubelet status update): decide again on the fresh pod. Counting it out
        # instead would create a replacement, and the next sync would delete a pod to make up.
        try:
            fresh = await self.kc.get(PODS, md["name"], md.get("namespace"))
        except NotFound:
            return None
        selector = (rs.get("spec") or {}).get("selector")
        if controller_of(fresh) is not None or not pt.selector_matches(selector, pt.labels_of(fresh)):
            return None
        patch["metadata"]["resourceVersion"] = fresh["metadata"].get("resourceVersion")
        # A second conflict raises: the reconcile is retried before anything is created.
        return await self.kc.patch(PODS, md["name"], patch, namespace=md.get("namespace"))

    async def _release(self, rs: Obj, pod: Obj) -> None:
        md = pod["metadata"]
        refs = [r for r in md.get("ownerReferences") or () if r.get("uid") != uid_of(rs)]
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": md.get("resourceVersion")}}
        try:
            await self.kc.patch(PODS, md["name"], patch, namespace=md.get("namespace"))
        except (NotFound, Conflict):
            pass

    async def _manage(
        self, rs: Obj, active: list[Obj]
    ) -> tuple[tuple[str, str] | None, set[str], BaseException | None]:
        """Create or delete pods towards spec.replicas; returns (failure condition, uids deleted,
        error to retry with)."""
        want = _int((rs.get("spec") or {}).get("replicas"), 1)
        diff = len(active) - want
        if diff < 0:
            err = await self._create(rs, min(-diff, BURST_REPLICAS))
            if err is not None:
                return ("FailedCreate", _message(err)), set(), err
        elif diff > 0:
            victims = pods_to_delete(active, active, min(diff, BURST_REPLICAS), pt.now_utc())
            deleted, err = await self._delete(rs, victims)
            if err is not None:
                return ("FailedDelete", _message(err)), deleted, err
            return None, deleted, None
        return None, set(), None

    async def _create(self, rs: Obj, count: int) -> BaseException | None:
        md, spec = rs["metadata"], rs.get("spec") or {}
        uid, ns = uid_of(rs), md.get("namespace") or ""
        body = pt.pod_from_template(
            spec.get("template") or {},
            pt.controller_ref(rs, "apps/v1", "ReplicaSet"),
            pt.generate_name_prefix(md["name"]),
            ns,
        )
        self.expectations.expect_creations(uid, count)

        async def create_one() -> None:
            await self.kc.create(PODS, copy.deepcopy(body), namespace=ns)

        done, err = await slow_start(count, create_one)
        # Failed and never-attempted creations will not be observed: lower the expectation for each
        # (upstream does the same after slowStartBatch).
        for _ in range(count - done):
            self.expectations.creation_observed(uid)
        if err is not None:
            log.warning(
                "replicaset %s/%s: creating pods failed after %d of %d: %s", ns, md["name"], done, count, err
            )
        return err

    async def _delete(self, rs: Obj, victims: list[Obj]) -> tuple[set[str], BaseException | None]:
        uid = uid_of(rs)
        self.expectations.expect_deletions(uid, [uid_of(p) for p in victims])

        async def delete_one(pod: Obj) -> str:
            pmd = pod["metadata"]
            try:
                await self.kc.delete(
                    PODS, pmd["name"], pmd.get("namespace"), preconditions={"uid": uid_of(pod)}
                )
            except NotFound:
                pass
            except BaseException:
                self.expectations.deletion_observed(uid, uid_of(pod))
                raise
            return uid_of(pod)

        results = await asyncio.gather(*(delete_one(p) for p in victims), return_exceptions=True)
        deleted = {r for r in results if isinstance(r, str)}
        errors = [r for r in results if isinstance(r, BaseException)]
        for e in errors:
            if isinstance(e, asyncio.CancelledError):
                raise e
        return deleted, errors[0] if errors else None

    async def _write_status(self, rs: Obj, status: Obj) -> None:
        old = rs.get("status") or {}
        if pt.semantic(old) == pt.semantic(status):
            return
        body = copy.deepcopy(rs)
        body["status"] = status
        try:
            await self.kc.update_status(REPLICASETS, body)
        except (Conflict, NotFound):
            # The ReplicaSet changed (or went) since the cache saw it; its event re-queues us.
            pass


def _own_uid(obj: Obj) -> list[str]:
    u = uid_of(obj)
    return [u] if u else []


def _message(err: BaseException) -> str:
    if isinstance(err, ApiError):
        return err.message or str(err)
    return str(err) or type(err).__name__
