"""DaemonSet controller: exactly one pod per eligible node, rolled to new templates node by node.

Eligibility is upstream's NodeShouldRunDaemonPod: nodeSelector, required node affinity, and the
node's NoSchedule/NoExecute taints against the template's tolerations plus the tolerations every
daemon pod gets automatically. Pods are created already bound (spec.nodeName, plus the matchFields
affinity upstream uses), because at the edge the scheduler may not run at all.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube import CONTROLLERREVISIONS, DAEMONSETS, NODES, PODS, NotFound, Obj

from .framework import (
    Controller,
    Expectations,
    Key,
    controller_of,
    key_of,
    owned_pod_handler,
    owner_key,
    uid_of,
)
from .history import (
    REVISION_HASH_LABEL,
    new_pod,
    revision_hash,
    scaled_value,
    sync_revision,
    truncate_history,
)
from .podtemplate import (
    OWNER_UID_INDEX,
    controller_ref,
    is_terminating,
    labels_of,
    now_utc,
    owner_uid_index,
    pod_phase,
    seconds_until_available,
)

log = logging.getLogger(__name__)

# Upstream AddOrUpdateDaemonPodTolerations: daemons keep running through node problems.
AUTO_TOLERATIONS: tuple[tuple[str, str], ...] = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
HOST_NETWORK_TOLERATION = ("node.kubernetes.io/network-unavailable", "NoSchedule")
# A daemon pod that keeps failing on a node is replaced after an exponential delay, not in a hot loop.
FAILED_POD_BACKOFF_BASE = 1.0
FAILED_POD_BACKOFF_CAP = 300.0
CREATE_BATCH_START = 1  # slow start: 1, 2, 4, ... creations, stopping at the first failing batch


# -------------------------------------------------------------------------------------------------
# node eligibility (pure)


def tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    op = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if key != (taint.get("key") or "") and not (not key and op == "Exists"):
        return False
    if op == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def daemon_tolerations(spec: Obj) -> list[Obj]:
    """The template's tolerations plus the automatic daemon ones it does not already have."""
    out = [dict(t) for t in spec.get("tolerations") or () if isinstance(t, dict)]
    wanted = list(AUTO_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(HOST_NETWORK_TOLERATION)
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect for t in out):
            out.append({"key": key, "operator": "Exists", "effect": effect})
    return out


def _expression_matches(req: Obj, value: str | None) -> bool:
    op, values = req.get("operator"), [str(v) for v in req.get("values") or ()]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_term_matches(term: Obj, node: Obj) -> bool:
    """A NodeSelectorTerm: all its expressions and fields must hold; an empty term matches nothing."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = labels_of(node)
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    return all(_expression_matches(e, labels.get(e.get("key", ""))) for e in exprs) and all(
        _expression_matches(f, node_fields.get(f.get("key", ""))) for f in fields
    )


def node_matches(spec: Obj, node: Obj) -> bool:
    """nodeSelector and required node affinity (terms are ORed)."""
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or None
    if required is None:
        return True
    return any(node_term_matches(t, node) for t in required.get("nodeSelectorTerms") or ())


def node_should_run(spec: Obj, node: Obj) -> tuple[bool, bool]:
    """(should_run, should_continue_running) for a daemon pod with this spec on this node.

    An untolerated NoSchedule taint stops new pods but keeps existing ones; NoExecute evicts."""
    name = (node.get("metadata") or {}).get("name")
    if spec.get("nodeName") and spec["nodeName"] != name:
        return False, False
    if not node_matches(spec, node):
        return False, False
    tolerations = daemon_tolerations(spec)
    should_run = True
    for taint in (node.get("spec") or {}).get("taints") or ():
        effect = taint.get("effect")
        if effect not in ("NoSchedule", "NoExecute") or any(tolerates(t, taint) for t in tolerations):
            continue
        if effect == "NoExecute":
            return False, False
        should_run = False
    return should_run, True


def daemon_pod(ds: Obj, node_name: str, hash_: str) -> Obj:
    """The pod for one node: bound directly, pinned by node affinity, with the daemon tolerations."""
    template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
    pod = new_pod(
        template,
        controller_ref(ds, "apps/v1", "DaemonSet"),
        ds["metadata"]["namespace"],
        labels={REVISION_HASH_LABEL: hash_},
    )
    spec = pod["spec"]
    spec["nodeName"] = node_name
    spec["tolerations"] = daemon_tolerations(spec)
    node_affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }
    return pod


def pod_node(pod: Obj) -> str:
    """The node a daemon pod belongs to: its nodeName, else the node its affinity pins it to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or ():
        for f in term.get("matchFields") or ():
            if (
                f.get("key") == "metadata.name"
                and f.get("operator") == "In"
                and len(f.get("values") or []) == 1
            ):
                return str(f["values"][0])
    return ""


def _created(pod: Obj) -> tuple[str, str]:
    md = pod.get("metadata") or {}
    return str(md.get("creationTimestamp") or ""), str(md.get("name") or "")


# -------------------------------------------------------------------------------------------------
# planning (pure): what to create and delete for one DaemonSet


@dataclass
class NodeState:
    name: str
    should_run: bool
    new: Obj | None = None  # the live pod of the current revision
    old: Obj | None = None  # a live pod of an older revision


@dataclass
class Plan:
    create: list[str] = field(default_factory=list)  # node names
    delete: list[Obj] = field(default_factory=list)
    force_delete: list[Obj] = field(default_factory=list)  # pods of vanished nodes: no kubelet to wait for
    failed: list[tuple[str, Obj]] = field(default_factory=list)  # (node, failed pod) to replace
    states: list[NodeState] = field(default_factory=list)
    recheck: float | None = None  # seconds until a pod becomes available (minReadySeconds)

    def later(self, delay: float) -> None:
        self.recheck = delay if self.recheck is None else min(self.recheck, delay)


def plan_nodes(
    template_spec: Obj, nodes: dict[str, Obj], pods_by_node: dict[str, list[Obj]], cur_hash: str
) -> Plan:
    """Placement: create on eligible empty nodes, delete misplaced, duplicate and failed pods."""
    plan = Plan()
    for node_name in sorted(set(nodes) | set(pods_by_node)):
        pods = pods_by_node.get(node_name, [])
        live = [p for p in pods if not is_terminating(p)]
        node = nodes.get(node_name)
        if node is None:
            plan.force_delete += live
            continue
        should_run, should_continue = node_should_run(template_spec, node)
        if not should_continue:
            plan.delete += live
            continue
        broken = [p for p in live if pod_phase(p) in ("Failed", "Succeeded")]
        plan.failed += [(node_name, p) for p in broken]
        live = [p for p in live if p not in broken]
        state = NodeState(node_name, should_run)
        new = sorted((p for p in live if labels_of(p).get(REVISION_HASH_LABEL) == cur_hash), key=_created)
        old = sorted((p for p in live if labels_of(p).get(REVISION_HASH_LABEL) != cur_hash), key=_created)
        # Never more than one pod per revision on a node: keep the oldest of each.
        plan.delete += new[1:] + old[1:]
        state.new = new[0] if new else None
        state.old = old[0] if old else None
        if should_run and not live and len(pods) == 0:
            plan.create.append(node_name)
        if should_run:
            plan.states.append(state)
    return plan


def plan_rolling_update(plan: Plan, strategy: Obj, desired: int, min_ready: int, now: dt.datetime) -> None:
    """Replace old-revision pods within maxUnavailable (delete first) or maxSurge (create first)."""
    rolling = strategy.get("rollingUpdate") or {}
    max_surge = scaled_value(rolling.get("maxSurge", 0), desired, True)
    max_unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, True)
    if max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1

    def available(pod: Obj | None) -> bool:
        if pod is None:
            return False
        wait = seconds_until_available(pod, min_ready, now)
        if wait is not None and wait > 0:
            plan.later(wait)
        return wait == 0.0

    if max_surge > 0:
        _surge(plan, max_surge, available)
        return
    unavailable = sum(1 for s in plan.states if not available(s.new or s.old))
    candidates: list[Obj] = []
    for s in plan.states:
        if s.old is None:
            continue
        if s.new is not None or not available(s.old):
            plan.delete.append(s.old)  # already replaced, or not serving anyway
        else:
            candidates.append(s.old)
    plan.delete += candidates[: max(0, max_unavailable - unavailable)]


def _surge(plan: Plan, max_surge: int, available: Any) -> None:
    in_flight = sum(
        1 for s in plan.states if s.old is not None and s.new is not None and not available(s.new)
    )
    for s in plan.states:
        if s.old is None:
            continue
        if s.new is not None:
            if available(s.new):
                plan.delete.append(s.old)
        elif not available(s.old):
            plan.create.append(s.name)  # the old pod serves nothing: replace it without using surge
        elif in_flight < max_surge:
            plan.create.append(s.name)
            in_flight += 1


def daemon_status(
    ds: Obj, nodes: dict[str, Obj], pods_by_node: dict[str, list[Obj]], cur_hash: str, now: dt.datetime
) -> Obj:
    spec = (ds.get("spec") or {}).get("template", {}).get("spec") or {}
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
    desired = current = misscheduled = ready = available = updated = 0
    for name, node in nodes.items():
        should_run, _ = node_should_run(spec, node)
        pods = [p for p in pods_by_node.get(name, []) if not is_terminating(p)]
        if should_run:
            desired += 1
            if pods:
                current += 1
                if any(seconds_until_available(p, 0, now) == 0.0 for p in pods):
                    ready += 1
                if any(seconds_until_available(p, min_ready, now) == 0.0 for p in pods):
                    available += 1
                if any(labels_of(p).get(REVISION_HASH_LABEL) == cur_hash for p in pods):
                    updated += 1
        elif pods:
            misscheduled += 1
    status: Obj = {
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "updatedNumberScheduled": updated,
        "numberUnavailable": desired - available,
        "observedGeneration": (ds.get("metadata") or {}).get("generation", 0),
    }
    return status


# -------------------------------------------------------------------------------------------------
# the controller


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.expectations = Expectations()
        # (daemonset key, node) -> (not before, current delay) for replacing failed pods
        self._failed_backoff: dict[tuple[str, str], tuple[float, float]] = {}

    def setup(self) -> None:
        self.dsets = self.informers.get(DAEMONSETS)
        self.pods = self.informers.get(PODS)
        self.nodes = self.informers.get(NODES)
        self.revisions = self.informers.get(CONTROLLERREVISIONS)
        self.pods.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.revisions.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.dsets.add_handler(self._on_ds)
        self.pods.add_handler(owned_pod_handler("DaemonSet", self.expectations, self.queue.add))
        self.nodes.add_handler(self._on_node)
        self.revisions.add_handler(self._on_revision)

    # -- event handlers: quick, they only enqueue ------------------------------------------------

    def _on_ds(self, old: Obj | None, new: Obj | None) -> None:
        self.queue.add(key_of(new or old or {}))

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None:
            relevant = (labels_of(old), (old.get("spec") or {}).get("taints")) != (
                labels_of(new),
                (new.get("spec") or {}).get("taints"),
            )
            if not relevant:
                return  # heartbeats and status updates do not change eligibility
        for ds in self.dsets.list():
            self.queue.add(key_of(ds))

    def _on_revision(self, old: Obj | None, new: Obj | None) -> None:
        ref = controller_of(new or old or {})
        if ref is not None and ref.get("kind") == "DaemonSet":
            self.queue.add(((new or old or {}).get("metadata", {}).get("namespace", ""), ref.get("name", "")))

    # -- reconcile -------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        dkey = owner_key(ns, name)
        ds = self.dsets.get(ns, name)
        if ds is None:
            self.expectations.forget(dkey)
            self._failed_backoff = {k: v for k, v in self._failed_backoff.items() if k[0] != dkey}
            return None
        if is_terminating(ds):
            return None  # the garbage collector removes the pods
        uid = uid_of(ds)
        ref = controller_ref(ds, "apps/v1", "DaemonSet")
        revisions = self.revisions.by_index(OWNER_UID_INDEX, uid)
        collisions = int((ds.get("status") or {}).get("collisionCount") or 0)
        cur_rev, collisions = await sync_revision(self.kc, ds, ref, revisions, collisions)
        cur_hash = revision_hash(cur_rev)
        recheck: float | None = None
        if self.expectations.satisfied(dkey):
            recheck = await self._manage(ds, dkey, cur_hash)
        pods_by_node = self._pods_by_node(uid)
        in_use = {
            h for ps in pods_by_node.values() for p in ps if (h := labels_of(p).get(REVISION_HASH_LABEL))
        }
        keep = {r["metadata"]["name"] for r in revisions if revision_hash(r) in in_use}
        keep.add(cur_rev["metadata"]["name"])
        limit = int((ds.get("spec") or {}).get("revisionHistoryLimit", 10) or 0)
        await truncate_history(self.kc, revisions, keep, limit)
        await self._write_status(ds, pods_by_node, cur_hash, collisions)
        return recheck

    def _pods_by_node(self, uid: str) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for pod in self.pods.by_index(OWNER_UID_INDEX, uid):
            out.setdefault(pod_node(pod), []).append(pod)
        return out

    def _node_map(self) -> dict[str, Obj]:
        return {n["metadata"]["name"]: n for n in self.nodes.list()}

    async def _manage(self, ds: Obj, dkey: str, cur_hash: str) -> float | None:
        spec = ds.get("spec") or {}
        template_spec = (spec.get("template") or {}).get("spec") or {}
        nodes = self._node_map()
        plan = plan_nodes(template_spec, nodes, self._pods_by_node(uid_of(ds)), cur_hash)
        strategy = spec.get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
            desired = sum(1 for s in plan.states)
            plan_rolling_update(plan, strategy, desired, int(spec.get("minReadySeconds") or 0), now_utc())
        retry = self._replace_failed(dkey, plan)
        await self._delete(dkey, plan.force_delete, force=True)
        await self._delete(dkey, plan.delete, force=False)
        await self._create(ds, dkey, plan.create, cur_hash)
        for delay in (retry, plan.recheck):
            if delay is not None:
                plan.later(delay)
        return plan.recheck

    def _replace_failed(self, dkey: str, plan: Plan) -> float | None:
        """Failed pods are deleted (then recreated) with a per-node exponential delay."""
        now = time.monotonic()
        wait: float | None = None
        for node, pod in plan.failed:
            not_before, delay = self._failed_backoff.get((dkey, node), (0.0, 0.0))
            if now < not_before:
                wait = min(wait or not_before - now, not_before - now)
                continue
            delay = min(FAILED_POD_BACKOFF_CAP, max(FAILED_POD_BACKOFF_BASE, delay * 2))
            self._failed_backoff[(dkey, node)] = (now + delay, delay)
            log.info("daemonset %s: pod %s on %s failed; replacing it", dkey, pod["metadata"]["name"], node)
            plan.delete.append(pod)
        return wait

    async def _delete(self, dkey: str, pods: list[Obj], *, force: bool) -> None:
        if not pods:
            return
        self.expectations.expect_deletions(dkey, [uid_of(p) for p in pods])

        async def one(pod: Obj) -> None:
            md = pod["metadata"]
            try:
                await self.kc.delete(
                    PODS,
                    md["name"],
                    md["namespace"],
                    grace_period_seconds=0 if force else None,
                    preconditions={"uid": md["uid"]},
                )
            except NotFound:
                self.expectations.deletion_observed(dkey, md["uid"])
            except Exception:
                self.expectations.deletion_observed(dkey, md["uid"])
                raise

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _create(self, ds: Obj, dkey: str, node_names: list[str], cur_hash: str) -> None:
        """Create in doubling batches so a systematic failure (quota, invalid template) costs one call."""
        batch = CREATE_BATCH_START
        pending = list(node_names)
        while pending:
            chunk, pending = pending[:batch], pending[batch:]
            self.expectations.expect_creations(dkey, len(chunk))
            results = await asyncio.gather(
                *(
                    self.kc.create(PODS, daemon_pod(ds, n, cur_hash), ds["metadata"]["namespace"])
                    for n in chunk
                ),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            for _ in errors:
                self.expectations.creation_failed(dkey)
            if errors:
                raise errors[0]
            batch *= 2

    async def _write_status(
        self, ds: Obj, pods_by_node: dict[str, list[Obj]], cur_hash: str, collisions: int
    ) -> None:
        status = daemon_status(ds, self._node_map(), pods_by_node, cur_hash, now_utc())
        if collisions:
            status["collisionCount"] = collisions
        current = ds.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        md = ds["metadata"]
        try:
            await self.kc.patch(
                DAEMONSETS, md["name"], {"status": status}, md["namespace"], subresource="status"
            )
        except NotFound:
            pass
