"""Garbage collector: deletes objects whose owners are gone, by ownerReferences, through the API.

Like kube-controller-manager's GC it keeps a graph of every object of every kind that can be
listed, watched and deleted (found by discovery, custom resources included, re-discovered when CRDs
change): uid -> object identity and owners, and owner uid -> dependent uids. It implements

- Background: an owner is gone -> its dependents whose every owner is gone are deleted (a dependent
  with another live owner only loses the reference to the gone one);
- Foreground: an owner with a deletionTimestamp and the `foregroundDeletion` finalizer gets its
  dependents deleted; once no dependent with blockOwnerDeletion is left the finalizer is removed, so
  the API server lets the owner go;
- Orphan: an owner with the `orphan` finalizer has its references removed from its dependents, then
  the finalizer removed;
- dangling references (the owner never existed, or exists with another uid) count as gone, but only
  after a live GET confirms it: the graph alone may simply lag behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from kubeedge.kube import (
    CONFIGMAPS,
    CONTROLLERREVISIONS,
    CRDS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    JOBS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    STATEFULSETS,
    ApiError,
    KubeClient,
    Obj,
    Res,
)
from kubeedge.kube.errors import Conflict, NotFound
from kubeedge.runtime import Supervisor

from .framework import Controller, Handler, Informer, InformerFactory

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# Events are never owners worth tracking and are by far the most numerous objects (upstream ignores
# them too).
IGNORED: frozenset[tuple[str, str]] = frozenset({("", "events"), ("events.k8s.io", "events")})
# Built-in resources every cluster serves: their informers are shared with the other controllers.
SHARED: tuple[Res, ...] = (
    PODS,
    CONFIGMAPS,
    SECRETS,
    SERVICES,
    ENDPOINTS,
    SERVICEACCOUNTS,
    NODES,
    NAMESPACES,
    ENDPOINTSLICES,
    LEASES,
    DEPLOYMENTS,
    REPLICASETS,
    DAEMONSETS,
    STATEFULSETS,
    CONTROLLERREVISIONS,
    JOBS,
    CRDS,
)
# Discovery runs again this often even without CRD changes (aggregated APIs, missed events).
REDISCOVER_SECONDS = 30.0
# Waiting for a freshly discovered resource's first list is bounded: one broken resource must not
# stop collection of all the others (absence is confirmed by a live GET anyway).
SYNC_TIMEOUT = 30.0
# Uids confirmed absent; uids are never reused, so remembering them is always correct.
ABSENT_CACHE_SIZE = 10_000
# A reference to a kind discovery does not know is looked at again after this long.
UNKNOWN_KIND_RETRY = 60.0
# Writes racing other writers (Conflict) are retried this often before the worker's backoff takes over.
CONFLICT_RETRIES = 5


# ---- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiResource:
    res: Res
    verbs: frozenset[str]

    def can(self, *verbs: str) -> bool:
        return all(v in self.verbs for v in verbs)


@dataclass
class Discovery:
    resources: list[ApiResource]
    # Group versions whose resource lists could not be read: keep what was known about them.
    failed: set[str]


def _resources_of(group_version: str, doc: object) -> list[ApiResource]:
    out: list[ApiResource] = []
    if not isinstance(doc, dict):
        return out
    for r in doc.get("resources") or ():
        name = str(r.get("name") or "")
        if not name or "/" in name:
            continue  # subresources are not collections
        res = Res.of(group_version, name, bool(r.get("namespaced")), str(r.get("kind") or ""))
        out.append(ApiResource(res, frozenset(r.get("verbs") or ())))
    return out


async def discover(kc: KubeClient) -> Discovery:
    """Every top-level resource of the core group and of each group's preferred version."""
    failed: set[str] = set()
    resources = _resources_of("v1", await kc.raw("GET", "/api/v1"))
    groups = await kc.raw("GET", "/apis")
    for g in (groups.get("groups") if isinstance(groups, dict) else None) or ():
        gv = str((g.get("preferredVersion") or {}).get("groupVersion") or "")
        if not gv:
            versions = g.get("versions") or ()
            gv = str(versions[0].get("groupVersion") or "") if versions else ""
        if not gv:
            continue
        try:
            resources += _resources_of(gv, await kc.raw("GET", f"/apis/{gv}"))
        except ApiError as e:
            # A CRD being removed, an aggregated API down: skip it this round, keep the rest going.
            log.info("discovery of %s failed: %s", gv, e)
            failed.add(gv)
    return Discovery(resources, failed)


# ---- pure decisions ----------------------------------------------------------------------------


class OwnerState(enum.Enum):
    SOLID = "solid"  # exists and is not waiting for its dependents
    WAITING = "waiting"  # exists, deleting in the foreground: its dependents must go
    DANGLING = "dangling"  # confirmed absent (or present with another uid)
    UNKNOWN = "unknown"  # a kind discovery does not know: leave the dependent alone


@dataclass(frozen=True)
class Action:
    kind: str  # "none" | "drop_refs" | "delete" | "retry"
    policy: str = ""  # for delete
    uids: tuple[str, ...] = ()  # for drop_refs: the owner uids whose references go


def owner_state(owner: Obj | None, ref_uid: str) -> OwnerState:
    """Classify an owner from what a live GET returned (None: not found)."""
    if owner is None:
        return OwnerState.DANGLING
    md = owner.get("metadata") or {}
    if md.get("uid") != ref_uid:
        return OwnerState.DANGLING
    if md.get("deletionTimestamp") and FOREGROUND in (md.get("finalizers") or ()):
        return OwnerState.WAITING
    return OwnerState.SOLID


def decide(states: list[tuple[str, OwnerState]], has_dependents: bool, finalizers: Iterable[str]) -> Action:
    """What to do with a dependent, given the state of each owner (by uid) - upstream's attemptToDelete."""
    solid = [u for u, s in states if s is OwnerState.SOLID]
    dangling = [u for u, s in states if s is OwnerState.DANGLING]
    waiting = [u for u, s in states if s is OwnerState.WAITING]
    unknown = [u for u, s in states if s is OwnerState.UNKNOWN]
    if solid:
        # A live owner keeps the object; references to owners that are gone (or that wait for their
        # dependents) are dropped so they no longer block anything.
        gone = tuple(dangling + waiting)
        return Action("drop_refs", uids=gone) if gone else Action("none")
    if unknown:
        return Action("retry")
    if not states:
        return Action("none")
    if waiting and has_dependents:
        # Our own dependents must go before us, so that the waiting owner waits for them too.
        return Action("delete", policy="Foreground")
    fins = set(finalizers)
    if ORPHAN in fins:
        return Action("delete", policy="Orphan")
    if FOREGROUND in fins:
        return Action("delete", policy="Foreground")
    return Action("delete", policy="Background")


# ---- the graph ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    uid: str
    res: Res
    namespace: str
    name: str
    owners: tuple[Obj, ...]
    deleting: bool
    finalizers: tuple[str, ...]

    @property
    def owner_uids(self) -> frozenset[str]:
        return frozenset(str(r.get("uid") or "") for r in self.owners)

    @property
    def deleting_dependents(self) -> bool:
        return self.deleting and FOREGROUND in self.finalizers

    @property
    def orphaning(self) -> bool:
        return self.deleting and ORPHAN in self.finalizers

    def ref_to(self, owner_uid: str) -> Obj | None:
        for r in self.owners:
            if r.get("uid") == owner_uid:
                return r
        return None


def graph_node(res: Res, obj: Obj) -> GraphNode:
    md = obj.get("metadata") or {}
    return GraphNode(
        uid=str(md.get("uid") or ""),
        res=res,
        namespace=str(md.get("namespace") or ""),
        name=str(md.get("name") or ""),
        owners=tuple(r for r in md.get("ownerReferences") or () if isinstance(r, dict) and r.get("uid")),
        deleting=bool(md.get("deletionTimestamp")),
        finalizers=tuple(md.get("finalizers") or ()),
    )


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 4

    def __init__(self, kc: KubeClient, informers: InformerFactory) -> None:
        super().__init__(kc, informers)
        self.nodes: dict[str, GraphNode] = {}
        self.dependents: dict[str, set[str]] = {}
        self.kinds: dict[tuple[str, str], Res] = {(r.group, r.kind): r for r in SHARED}
        self.absent: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._own: dict[tuple[str, str], tuple[Informer, asyncio.Task[None]]] = {}
        self._shared = {(r.group, r.plural) for r in SHARED}
        self._rediscover = asyncio.Event()
        self._unknown_kind: set[str] = set()  # uids waiting for discovery to learn an owner's kind
        self._tasks = Supervisor("garbagecollector")
        self.discovered = asyncio.Event()

    # ---- wiring --------------------------------------------------------------------------------

    def setup(self) -> None:
        for res in SHARED:
            inf = self.informers.get(res)
            inf.add_handler(self._handler(res))
        # A CRD created, established or removed changes what has to be watched.
        self.informers.get(CRDS).add_handler(lambda old, new: self._rediscover.set())

    def _handler(self, res: Res) -> Handler:
        def on_change(old: Obj | None, new: Obj | None) -> None:
            if new is not None:
                self._observe(res, new)
            elif old is not None:
                self._forget(old)

        return on_change

    async def run(self) -> None:
        self._tasks.spawn(self._discovery_loop, "discovery")
        try:
            await self.discovered.wait()
            await super().run()
        finally:
            await self._tasks.stop()

    async def _discovery_loop(self) -> None:
        while True:
            self._rediscover.clear()
            try:
                await self._sync_resources(await discover(self.kc))
            except Exception as e:  # the next round (or a CRD change) tries again
                log.warning("garbagecollector: discovery failed: %s: %s", type(e).__name__, e)
            self.discovered.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rediscover.wait(), REDISCOVER_SECONDS)
            await asyncio.sleep(0.2)  # a CRD goes through several writes when created: batch them

    async def _sync_resources(self, d: Discovery) -> None:
        """Start informers for new deletable kinds, stop those for kinds no longer served."""
        wanted: dict[tuple[str, str], Res] = {}
        learned = False
        for ar in d.resources:
            key = (ar.res.group, ar.res.plural)
            if key in IGNORED or not ar.can("list", "watch", "delete"):
                continue
            learned |= self.kinds.get((ar.res.group, ar.res.kind)) != ar.res
            self.kinds[(ar.res.group, ar.res.kind)] = ar.res
            if key not in self._shared:
                wanted[key] = ar.res
        started: list[Informer] = []
        for key, res in wanted.items():
            if key not in self._own:
                started.append(self._start_informer(key, res))
        unsure = {gv.rpartition("/")[0] for gv in d.failed}  # groups we could not read this time
        for key in list(self._own):
            if key not in wanted and key[0] not in unsure:
                self._stop_informer(key)
        if started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in started)), SYNC_TIMEOUT)
        if learned:
            # Objects whose owners were of a kind we did not know yet can be judged now.
            for uid in self._unknown_kind:
                self.queue.add(uid)
            self._unknown_kind.clear()

    def _start_informer(self, key: tuple[str, str], res: Res) -> Informer:
        inf = Informer(self.kc, res)
        inf.add_handler(self._handler(res))
        task = self._tasks.spawn(inf.run, f"informer-{res.plural}.{res.group}")
        self._own[key] = (inf, task)
        log.info("garbagecollector: watching %s.%s", res.plural, res.group or "core")
        return inf

    def _stop_informer(self, key: tuple[str, str]) -> None:
        inf, task = self._own.pop(key)
        task.cancel()
        log.info("garbagecollector: %s.%s no longer served", key[1], key[0] or "core")
        # The resource is gone, and with it every object of it: their dependents must be reconsidered.
        # Not remembered as absent: a resource missing from one discovery round may come back, so
        # the dependents' owners are confirmed gone by a live GET before anything is deleted.
        for obj in list(inf.cache.values()):
            self._forget(obj, confirmed=False)
        inf.cache.clear()

    # ---- graph maintenance (informer handlers: quick, no I/O) ------------------------------------

    def _observe(self, res: Res, obj: Obj) -> None:
        node = graph_node(res, obj)
        if not node.uid:
            return
        prev = self.nodes.get(node.uid)
        self.nodes[node.uid] = node
        old_owners = prev.owner_uids if prev else frozenset()
        for o in old_owners - node.owner_uids:
            self._unlink(o, node.uid)
        for o in node.owner_uids - old_owners:
            self.dependents.setdefault(o, set()).add(node.uid)
        if prev is None or prev.owners != node.owners:
            if node.owners and not node.deleting:
                self.queue.add(node.uid)
            # A waiting owner may have just lost (or stopped being blocked by) this dependent.
            self._kick_waiting_owners(old_owners | node.owner_uids)
        if (node.deleting_dependents or node.orphaning) and (
            prev is None or prev.finalizers != node.finalizers or not prev.deleting
        ):
            self.queue.add(node.uid)
            if node.deleting_dependents:
                # Upstream: every dependent of a foreground-deleting owner is attempted.
                for d in self.dependents.get(node.uid, ()):
                    self.queue.add(d)
        if prev is not None and prev.deleting != node.deleting:
            self._kick_waiting_owners(node.owner_uids)

    def _forget(self, obj: Obj, confirmed: bool = True) -> None:
        """`obj` left the graph; `confirmed`: the server reported it deleted."""
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        node = self.nodes.pop(uid, None)
        if node is None:
            return
        self._unknown_kind.discard(uid)
        if confirmed:
            self._remember_absent(uid, node.namespace if node.res.namespaced else "")
        for o in node.owner_uids:
            self._unlink(o, uid)
        # Our dependents may now have no owner left.
        for d in self.dependents.get(uid, ()):
            self.queue.add(d)
        self._kick_waiting_owners(node.owner_uids)

    def _unlink(self, owner_uid: str, dep_uid: str) -> None:
        deps = self.dependents.get(owner_uid)
        if deps is not None:
            deps.discard(dep_uid)
            if not deps and owner_uid not in self.nodes:
                del self.dependents[owner_uid]

    def _kick_waiting_owners(self, uids: Iterable[str]) -> None:
        for u in uids:
            owner = self.nodes.get(u)
            if owner is not None and owner.deleting_dependents:
                self.queue.add(u)

    def _remember_absent(self, uid: str, namespace: str) -> None:
        self.absent[(uid, namespace)] = None
        self.absent.move_to_end((uid, namespace))
        while len(self.absent) > ABSENT_CACHE_SIZE:
            self.absent.popitem(last=False)

    # ---- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        node = self.nodes.get(key)
        if node is None:
            return None
        if node.orphaning:
            await self._orphan_dependents(node)
            return None
        if node.deleting_dependents:
            await self._process_deleting_dependents(node)
            return None
        if node.deleting or not node.owners:
            return None
        return await self._attempt_delete(node)

    def _graph_state(self, dep: GraphNode, ref: Obj) -> OwnerState | None:
        """The owner's state from the graph alone, or None when only a live lookup can tell."""
        uid = str(ref.get("uid") or "")
        owner = self.nodes.get(uid)
        if owner is None:
            return None
        if owner.name != ref.get("name") or owner.res.kind != ref.get("kind"):
            return None  # a reference with the right uid but wrong coordinates: ask the server
        if owner.res.namespaced and owner.namespace != dep.namespace:
            return None
        return OwnerState.WAITING if owner.deleting_dependents else OwnerState.SOLID

    async def _live_state(self, dep: GraphNode, ref: Obj) -> OwnerState:
        uid = str(ref.get("uid") or "")
        res = self.kinds.get((_group_of(str(ref.get("apiVersion") or "")), str(ref.get("kind") or "")))
        if res is None:
            return OwnerState.UNKNOWN
        if res.namespaced and not dep.namespace:
            # A cluster-scoped object cannot have a namespaced owner; leave such objects alone
            # rather than guess which namespace was meant.
            return OwnerState.UNKNOWN
        ns = dep.namespace if res.namespaced else ""
        if (uid, ns) in self.absent:
            return OwnerState.DANGLING
        try:
            owner: Obj | None = await self.kc.get(res, str(ref.get("name") or ""), ns or None)
        except NotFound:
            owner = None
        state = owner_state(owner, uid)
        if state is OwnerState.DANGLING:
            self._remember_absent(uid, ns)
        return state

    async def _attempt_delete(self, node: GraphNode) -> float | None:
        states = [self._graph_state(node, r) for r in node.owners]
        if all(s is OwnerState.SOLID for s in states):
            return None  # the common case: every owner is alive, nothing to ask the server
        latest = await self._latest(node)
        if latest is None or latest.deleting or not latest.owners:
            return None
        live: list[tuple[str, OwnerState]] = []
        for ref in latest.owners:
            s = self._graph_state(latest, ref) or await self._live_state(latest, ref)
            live.append((str(ref["uid"]), s))
        action = decide(live, bool(self.dependents.get(node.uid)), latest.finalizers)
        if action.kind == "drop_refs":
            await self._drop_refs(latest, set(action.uids))
        elif action.kind == "delete":
            await self._delete(latest, action.policy)
        elif action.kind == "retry":
            self._unknown_kind.add(node.uid)
            self._rediscover.set()  # perhaps a CRD discovery has not caught up with yet
            return UNKNOWN_KIND_RETRY
        return None

    async def _latest(self, node: GraphNode) -> GraphNode | None:
        """The object as the server has it now (the graph may lag); None if it is gone or replaced."""
        try:
            obj = await self.kc.get(node.res, node.name, node.namespace or None)
        except NotFound:
            return None
        latest = graph_node(node.res, obj)
        return latest if latest.uid == node.uid else None

    async def _delete(self, node: GraphNode, policy: str) -> None:
        log.info("garbagecollector: deleting %s %s/%s (%s)", node.res.kind, node.namespace, node.name, policy)
        with contextlib.suppress(NotFound, Conflict):  # Conflict: the uid precondition failed
            await self.kc.delete(
                node.res,
                node.name,
                node.namespace or None,
                propagation_policy=policy,
                preconditions={"uid": node.uid},
            )

    async def _process_deleting_dependents(self, owner: GraphNode) -> None:
        """Foreground: wait until no blocking dependent is left, then let the owner go."""
        blocking = []
        for d in self.dependents.get(owner.uid, ()):
            dep = self.nodes.get(d)
            ref = dep.ref_to(owner.uid) if dep else None
            if dep is None or ref is None:
                continue
            if ref.get("blockOwnerDeletion"):
                blocking.append(dep)
            if not dep.deleting:
                self.queue.add(dep.uid)
        if not blocking:
            await self._remove_finalizer(owner, FOREGROUND)

    async def _orphan_dependents(self, owner: GraphNode) -> None:
        for d in list(self.dependents.get(owner.uid, ())):
            dep = self.nodes.get(d)
            if dep is not None and dep.ref_to(owner.uid) is not None:
                await self._drop_refs(dep, {owner.uid})
        await self._remove_finalizer(owner, ORPHAN)

    # ---- writes (optimistic concurrency: resourceVersion preconditions, retried on Conflict) ----

    async def _drop_refs(self, node: GraphNode, owner_uids: set[str]) -> None:
        for _ in range(CONFLICT_RETRIES):
            try:
                obj = await self.kc.get(node.res, node.name, node.namespace or None)
            except NotFound:
                return
            md = obj.get("metadata") or {}
            refs = md.get("ownerReferences") or []
            if md.get("uid") != node.uid or not any(r.get("uid") in owner_uids for r in refs):
                return
            keep = [r for r in refs if r.get("uid") not in owner_uids]
            patch = {
                "metadata": {"resourceVersion": md.get("resourceVersion"), "ownerReferences": keep or None}
            }
            try:
                await self.kc.patch(node.res, node.name, patch, node.namespace or None)
                return
            except NotFound:
                return
            except Conflict:
                continue
        raise Conflict(409, "Conflict", f"{node.res.plural} {node.name} kept changing")

    async def _remove_finalizer(self, node: GraphNode, finalizer: str) -> None:
        for _ in range(CONFLICT_RETRIES):
            try:
                obj = await self.kc.get(node.res, node.name, node.namespace or None)
            except NotFound:
                return
            md = obj.get("metadata") or {}
            fins = list(md.get("finalizers") or [])
            if md.get("uid") != node.uid or finalizer not in fins:
                return
            patch = {
                "metadata": {
                    "resourceVersion": md.get("resourceVersion"),
                    "finalizers": [f for f in fins if f != finalizer],
                }
            }
            try:
                await self.kc.patch(node.res, node.name, patch, node.namespace or None)
                log.info(
                    "garbagecollector: removed %s from %s %s/%s",
                    finalizer,
                    node.res.kind,
                    node.namespace,
                    node.name,
                )
                return
            except NotFound:
                return
            except Conflict:
                continue
        raise Conflict(409, "Conflict", f"{node.res.plural} {node.name} kept changing")
