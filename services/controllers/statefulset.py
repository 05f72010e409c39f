"""StatefulSet controller: pods `<set>-<ordinal>` with stable identity and their own claims.

OrderedReady creates ordinal i only once 0..i-1 are Running and Ready, and scales down from the
highest ordinal one pod at a time; Parallel does both at once. Rolling updates replace pods from the
highest ordinal down to the partition, one at a time, each only after the previous is healthy again.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube import (
    CONTROLLERREVISIONS,
    PERSISTENTVOLUMECLAIMS,
    PODS,
    STATEFULSETS,
    AlreadyExists,
    NotFound,
    Obj,
)

from .framework import (
    Controller,
    Expectations,
    Key,
    controller_of,
    ignore_not_found,
    key_of,
    owned_pod_handler,
    owner_key,
    uid_of,
)
from .history import (
    REVISION_HASH_LABEL,
    is_finished,
    is_running_and_ready,
    new_pod,
    sync_revision,
    template_of,
    truncate_history,
)
from .podtemplate import (
    OWNER_UID_INDEX,
    controller_ref,
    is_terminating,
    labels_of,
    now_utc,
    owner_uid_index,
    seconds_until_available,
)

log = logging.getLogger(__name__)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


# -------------------------------------------------------------------------------------------------
# identity (pure)


def ordinal_of(set_name: str, pod_name: str) -> int | None:
    """The ordinal in `<set>-<ordinal>`, or None for a name that is not one of the set's."""
    prefix = f"{set_name}-"
    if not pod_name.startswith(prefix):
        return None
    rest = pod_name[len(prefix) :]
    if not rest.isdigit() or (len(rest) > 1 and rest[0] == "0"):
        return None
    return int(rest)


def claim_name(claim_template: Obj, set_name: str, ordinal: int) -> str:
    return f"{(claim_template.get('metadata') or {}).get('name', '')}-{set_name}-{ordinal}"


def start_ordinal(sts: Obj) -> int:
    return int(((sts.get("spec") or {}).get("ordinals") or {}).get("start") or 0)


def replica_count(sts: Obj) -> int:
    r = (sts.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def stateful_pod(sts: Obj, template: Obj, ordinal: int, revision_name: str) -> Obj:
    """The pod for one ordinal: fixed name, hostname/subdomain, labels, and its claims mounted."""
    md, spec = sts["metadata"], sts.get("spec") or {}
    name = f"{md['name']}-{ordinal}"
    pod = new_pod(
        template,
        controller_ref(sts, "apps/v1", "StatefulSet"),
        md["namespace"],
        name=name,
        labels={POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal), REVISION_HASH_LABEL: revision_name},
    )
    pspec = pod["spec"]
    pspec["hostname"] = name
    if spec.get("serviceName"):
        pspec["subdomain"] = spec["serviceName"]
    claims = spec.get("volumeClaimTemplates") or []
    if claims:
        names = {(c.get("metadata") or {}).get("name") for c in claims}
        volumes = [v for v in pspec.get("volumes") or [] if v.get("name") not in names]
        for c in claims:
            volumes.append(
                {
                    "name": c["metadata"]["name"],
                    "persistentVolumeClaim": {"claimName": claim_name(c, md["name"], ordinal)},
                }
            )
        pspec["volumes"] = volumes
    return pod


def stateful_claim(sts: Obj, claim_template: Obj, ordinal: int) -> Obj:
    md, spec = sts["metadata"], sts.get("spec") or {}
    cmd = claim_template.get("metadata") or {}
    labels = {**(cmd.get("labels") or {}), **((spec.get("selector") or {}).get("matchLabels") or {})}
    meta: Obj = {"name": claim_name(claim_template, md["name"], ordinal), "namespace": md["namespace"]}
    if labels:
        meta["labels"] = labels
    if cmd.get("annotations"):
        meta["annotations"] = dict(cmd["annotations"])
    retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    if retention.get("whenDeleted") == "Delete":
        # The garbage collector removes the claim together with the set.
        meta["ownerReferences"] = [controller_ref(sts, "apps/v1", "StatefulSet")]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": copy.deepcopy(claim_template.get("spec") or {}),
    }


def pod_revision(pod: Obj) -> str:
    return labels_of(pod).get(REVISION_HASH_LABEL, "")


# -------------------------------------------------------------------------------------------------
# planning (pure)


@dataclass
class Step:
    """What one reconcile does: create these ordinals, delete these pods (and claims)."""

    create: list[int] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    delete_claims_of: list[int] = field(default_factory=list)
    recheck: float | None = None


def split_pods(set_name: str, pods: list[Obj], start: int, replicas: int) -> tuple[dict[int, Obj], list[Obj]]:
    """Pods in the ordinal range by ordinal, and the condemned ones beyond it (highest first)."""
    slots: dict[int, Obj] = {}
    condemned: list[tuple[int, Obj]] = []
    for p in pods:
        o = ordinal_of(set_name, p["metadata"]["name"])
        if o is None:
            continue
        if start <= o < start + replicas:
            slots[o] = p
        else:
            condemned.append((o, p))
    condemned.sort(key=lambda x: -x[0])
    return slots, [p for _, p in condemned]


def plan_set(sts: Obj, pods: list[Obj], update_revision: str, now: dt.datetime) -> Step:
    spec = sts.get("spec") or {}
    set_name = sts["metadata"]["name"]
    start, replicas = start_ordinal(sts), replica_count(sts)
    monotonic = spec.get("podManagementPolicy") != "Parallel"
    min_ready = int(spec.get("minReadySeconds") or 0)
    step = Step()

    def healthy(pod: Obj) -> bool:
        if not is_running_and_ready(pod) or is_terminating(pod):
            return False
        wait = seconds_until_available(pod, min_ready, now)
        if wait:
            step.recheck = wait if step.recheck is None else min(step.recheck, wait)
            return False
        return True

    slots, condemned = split_pods(set_name, pods, start, replicas)
    for o in range(start, start + replicas):
        pod = slots.get(o)
        if pod is None:
            step.create.append(o)
            if monotonic:
                return step
            continue
        if is_finished(pod) and not is_terminating(pod):
            step.delete.append(pod)  # recreated once gone
            if monotonic:
                return step
            continue
        if monotonic and not healthy(pod):
            return step
    if monotonic and any(not healthy(p) for p in slots.values()):
        return step
    retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    for pod in condemned:
        if is_terminating(pod):
            if monotonic:
                return step
            continue
        step.delete.append(pod)
        if retention.get("whenScaled") == "Delete":
            condemned_ordinal = ordinal_of(set_name, pod["metadata"]["name"])
            if condemned_ordinal is not None:
                step.delete_claims_of.append(condemned_ordinal)
        if monotonic:
            return step
    if step.create or step.delete:
        return step
    strategy = spec.get("updateStrategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return step
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    for o in range(start + replicas - 1, start + partition - 1, -1):
        pod = slots[o]
        if pod_revision(pod) != update_revision and not is_terminating(pod):
            step.delete.append(pod)
            return step
        if not healthy(pod):
            return step
    return step


def set_status(
    sts: Obj, pods: list[Obj], current_revision: str, update_revision: str, now: dt.datetime
) -> Obj:
    spec = sts.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    replicas = ready = available = current = updated = 0
    for pod in pods:
        if ordinal_of(sts["metadata"]["name"], pod["metadata"]["name"]) is None:
            continue
        replicas += 1
        if is_running_and_ready(pod):
            ready += 1
            if seconds_until_available(pod, min_ready, now) == 0.0:
                available += 1
        if not is_terminating(pod):
            current += pod_revision(pod) == current_revision
            updated += pod_revision(pod) == update_revision
    strategy_type = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if (
        strategy_type == "RollingUpdate"
        and updated == replicas == ready == replica_count(sts)
        and current_revision != update_revision
    ):
        current_revision, current = update_revision, updated  # the rollout is complete
    return {
        "observedGeneration": (sts.get("metadata") or {}).get("generation", 0),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
    }


# -------------------------------------------------------------------------------------------------
# the controller


class StatefulSetController(Controller):
    name = "statefulset"
    workers = 2

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.expectations = Expectations()

    def setup(self) -> None:
        self.sets = self.informers.get(STATEFULSETS)
        self.pods = self.informers.get(PODS)
        self.revisions = self.informers.get(CONTROLLERREVISIONS)
        self.claims = self.informers.get(PERSISTENTVOLUMECLAIMS)
        self.pods.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.revisions.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.sets.add_handler(lambda old, new: self.queue.add(key_of(new or old or {})))
        self.pods.add_handler(owned_pod_handler("StatefulSet", self.expectations, self.queue.add))
        self.revisions.add_handler(self._on_owned)

    def _on_owned(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old or {}
        ref = controller_of(obj)
        if ref is not None and ref.get("kind") == "StatefulSet":
            self.queue.add(((obj.get("metadata") or {}).get("namespace") or "", ref.get("name", "")))

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        skey = owner_key(ns, name)
        sts = self.sets.get(ns, name)
        if sts is None:
            self.expectations.forget(skey)
            return None
        if is_terminating(sts):
            return None
        uid = uid_of(sts)
        ref = controller_ref(sts, "apps/v1", "StatefulSet")
        revisions = self.revisions.by_index(OWNER_UID_INDEX, uid)
        status = sts.get("status") or {}
        collisions = int(status.get("collisionCount") or 0)
        update_rev, collisions = await sync_revision(self.kc, sts, ref, revisions, collisions)
        by_name = {r["metadata"]["name"]: r for r in revisions}
        by_name[update_rev["metadata"]["name"]] = update_rev
        current_name = status.get("currentRevision")
        if current_name not in by_name:
            current_name = update_rev["metadata"]["name"]
        current_rev = by_name[str(current_name)]
        recheck: float | None = None
        if self.expectations.satisfied(skey):
            recheck = await self._manage(sts, skey, current_rev, update_rev)
        pods = self.pods.by_index(OWNER_UID_INDEX, uid)
        new_status = set_status(
            sts, pods, current_rev["metadata"]["name"], update_rev["metadata"]["name"], now_utc()
        )
        if collisions:
            new_status["collisionCount"] = collisions
        keep = {new_status["currentRevision"], new_status["updateRevision"]} | {pod_revision(p) for p in pods}
        limit = int((sts.get("spec") or {}).get("revisionHistoryLimit", 10) or 0)
        await truncate_history(self.kc, revisions, keep, limit)
        if any(status.get(k) != v for k, v in new_status.items()):
            await ignore_not_found(
                self.kc.patch(STATEFULSETS, name, {"status": new_status}, ns, subresource="status")
            )
        return recheck

    async def _manage(self, sts: Obj, skey: str, current_rev: Obj, update_rev: Obj) -> float | None:
        pods = self.pods.by_index(OWNER_UID_INDEX, uid_of(sts))
        step = plan_set(sts, pods, update_rev["metadata"]["name"], now_utc())
        await self._delete(sts, skey, step)
        spec = sts.get("spec") or {}
        strategy = spec.get("updateStrategy") or {}
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        creates = []
        for o in step.create:
            # Below the partition a recreated pod keeps the current revision (upstream semantics).
            rev = current_rev if rolling and o < start_ordinal(sts) + partition else update_rev
            template = (spec.get("template") or {}) if rev is update_rev else template_of(rev)
            creates.append(stateful_pod(sts, template, o, rev["metadata"]["name"]))
        await self._create(sts, skey, creates, step.create)
        return step.recheck

    async def _delete(self, sts: Obj, skey: str, step: Step) -> None:
        if step.delete:
            self.expectations.expect_deletions(skey, [uid_of(p) for p in step.delete])
        for pod in step.delete:
            md = pod["metadata"]
            try:
                await self.kc.delete(PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})
            except NotFound:
                self.expectations.deletion_observed(skey, md["uid"])
            except Exception:
                self.expectations.deletion_observed(skey, md["uid"])
                raise
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        for o in step.delete_claims_of:
            for c in (sts.get("spec") or {}).get("volumeClaimTemplates") or ():
                await ignore_not_found(self.kc.delete(PERSISTENTVOLUMECLAIMS, claim_name(c, name, o), ns))

    async def _ensure_claims(self, sts: Obj, ordinal: int) -> None:
        ns = sts["metadata"]["namespace"]
        for c in (sts.get("spec") or {}).get("volumeClaimTemplates") or ():
            body = stateful_claim(sts, c, ordinal)
            if self.claims.get(ns, body["metadata"]["name"]) is not None:
                continue
            try:
                await self.kc.create(PERSISTENTVOLUMECLAIMS, body, ns)
            except AlreadyExists:
                pass

    async def _create(self, sts: Obj, skey: str, pods: list[Obj], ordinals: list[int]) -> None:
        if not pods:
            return
        self.expectations.expect_creations(skey, len(pods))

        async def one(pod: Obj, ordinal: int) -> None:
            try:
                await self._ensure_claims(sts, ordinal)
                await self.kc.create(PODS, pod, sts["metadata"]["namespace"])
            except AlreadyExists:
                # Our own pod not yet in the cache, or a stranger holding the name: either way, wait.
                self.expectations.creation_failed(skey)
            except Exception:
                self.expectations.creation_failed(skey)
                raise

        results = await asyncio.gather(
            *(one(p, o) for p, o in zip(pods, ordinals, strict=True)), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
