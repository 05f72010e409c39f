"""Namespace controller: empties a Terminating namespace, then releases its `kubernetes` finalizer.

A namespace being deleted keeps `kubernetes` in spec.finalizers until everything in it is gone.
This controller deletes all namespaced objects of every resource discovery knows (custom resources
included), waits until they are gone (pods on nodes take their grace period, until the node confirms
- re-checked on pod deletions and with backoff), and then PUTs the namespace to its `finalize`
subresource without the finalizer; the API server then removes the namespace. Progress is reported
in status.conditions as upstream does (NamespaceContentRemaining, NamespaceDeletionContentFailure...).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from kubeedge.kube import NAMESPACES, PODS, ApiError, KubeClient, Obj, Res
from kubeedge.kube.errors import NotFound

from .framework import Controller, InformerFactory
from .garbagecollector import discover

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
RECHECK_MIN = 0.5
RECHECK_MAX = 15.0
CONDITION_TYPES = (
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
)


def terminating(ns: Obj | None) -> bool:
    if ns is None:
        return False
    return bool((ns.get("metadata") or {}).get("deletionTimestamp")) and FINALIZER in (
        (ns.get("spec") or {}).get("finalizers") or ()
    )


@dataclass
class Sweep:
    """What one pass over a namespace's content found."""

    remaining: dict[str, int] = field(default_factory=dict)  # resource -> objects left
    finalizers: dict[str, int] = field(default_factory=dict)  # finalizer -> objects held by it
    errors: list[str] = field(default_factory=list)
    discovery_failed: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not self.remaining and not self.errors and not self.discovery_failed


def _condition(ctype: str, true: bool, reason: str, message: str, now: str) -> Obj:
    return {
        "type": ctype,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def conditions_for(sweep: Sweep, now: str) -> list[Obj]:
    """The deletion conditions upstream's namespace controller reports."""
    remaining = ", ".join(f"{r} has {n} resource instances" for r, n in sorted(sweep.remaining.items()))
    held = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(sweep.finalizers.items()))
    return [
        _condition(
            "NamespaceDeletionDiscoveryFailure",
            bool(sweep.discovery_failed),
            "DiscoveryFailed" if sweep.discovery_failed else "ResourcesDiscovered",
            f"Discovery failed for some groups: {', '.join(sweep.discovery_failed)}"
            if sweep.discovery_failed
            else "All resources successfully discovered",
            now,
        ),
        _condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            False,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
            now,
        ),
        _condition(
            "NamespaceDeletionContentFailure",
            bool(sweep.errors),
            "ContentDeletionFailed" if sweep.errors else "ContentDeleted",
            f"Failed to delete all resource types, {len(sweep.errors)} remaining: {'; '.join(sweep.errors)}"
            if sweep.errors
            else "All content successfully deleted, may be waiting on finalization",
            now,
        ),
        _condition(
            "NamespaceContentRemaining",
            bool(sweep.remaining),
            "SomeResourcesRemain" if sweep.remaining else "ContentRemoved",
            f"Some resources are remaining: {remaining}" if remaining else "All content successfully removed",
            now,
        ),
        _condition(
            "NamespaceFinalizersRemaining",
            bool(sweep.finalizers),
            "SomeFinalizersRemain" if sweep.finalizers else "ContentHasNoFinalizers",
            f"Some content in the namespace has finalizers remaining: {held}"
            if held
            else "All content-preserving finalizers finished",
            now,
        ),
    ]


def merge_conditions(current: list[Obj], wanted: list[Obj]) -> list[Obj] | None:
    """`current` with the deletion conditions set to `wanted` (transition times kept when the status
    did not change); None when nothing would change."""
    by_type = {c.get("type"): c for c in current}
    changed = False
    out = [c for c in current if c.get("type") not in CONDITION_TYPES]
    for w in wanted:
        cur = by_type.get(w["type"])
        if cur is not None and cur.get("status") == w["status"]:
            w = {**w, "lastTransitionTime": cur.get("lastTransitionTime") or w["lastTransitionTime"]}
        if cur is None or any(cur.get(k) != w[k] for k in ("status", "reason", "message")):
            changed = True
        out.append(w)
    return out if changed else None


class NamespaceController(Controller):
    name = "namespace"
    workers = 2

    def __init__(self, kc: KubeClient, informers: InformerFactory) -> None:
        super().__init__(kc, informers)
        self._backoff: dict[str, float] = {}

    def setup(self) -> None:
        self.namespaces = self.informers.get(NAMESPACES)
        self.namespaces.add_handler(self._on_namespace)
        # Pods in their grace period are what a namespace usually waits for: look again when one goes.
        self.informers.get(PODS).add_handler(self._on_pod)

    def _on_namespace(self, old: Obj | None, new: Obj | None) -> None:
        if terminating(new):
            self.queue.add(new["metadata"]["name"])  # type: ignore[index]
        elif new is None and old is not None:
            self._backoff.pop(old["metadata"]["name"], None)

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        if new is None and old is not None:
            ns = (old.get("metadata") or {}).get("namespace") or ""
            if terminating(self.namespaces.get("", ns)):
                self.queue.add(ns)

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.get("", key)
        if not terminating(ns):
            return None
        sweep = await self.sweep(key)
        if sweep.done:
            await self._finalize(key)
            self._backoff.pop(key, None)
            return None
        await self._report(key, sweep)
        delay = min(RECHECK_MAX, self._backoff.get(key, RECHECK_MIN / 2) * 2)
        self._backoff[key] = delay
        log.info("namespace %s: waiting for %s", key, sweep.remaining or sweep.errors)
        return delay

    async def sweep(self, namespace: str) -> Sweep:
        """Delete what is left in the namespace; report what is still there afterwards."""
        sweep = Sweep()
        d = await discover(self.kc)
        sweep.discovery_failed = sorted(d.failed)
        for ar in d.resources:
            if not ar.res.namespaced or not ar.can("list", "delete"):
                continue
            try:
                await self._sweep_resource(ar.res, ar.can("deletecollection"), namespace, sweep)
            except NotFound:
                continue  # the resource went away while we looked (a CRD deleted)
            except ApiError as e:
                sweep.errors.append(f"{ar.res.plural}.{ar.res.group or 'core'}: {e}")
        return sweep

    async def _sweep_resource(self, res: Res, collection: bool, namespace: str, sweep: Sweep) -> None:
        items, _ = await self.kc.list(res, namespace)
        if not items:
            return
        if any(not (o.get("metadata") or {}).get("deletionTimestamp") for o in items):
            await self._delete_all(res, collection, namespace, items)
            items, _ = await self.kc.list(res, namespace)
        if not items:
            return
        what = f"{res.plural}.{res.group}" if res.group else res.plural
        sweep.remaining[what] = len(items)
        for o in items:
            for f in (o.get("metadata") or {}).get("finalizers") or ():
                sweep.finalizers[f] = sweep.finalizers.get(f, 0) + 1

    async def _delete_all(self, res: Res, collection: bool, namespace: str, items: list[Obj]) -> None:
        if collection:
            await self.kc.delete_collection(res, namespace, propagation_policy="Background")
            return
        for o in items:
            md = o.get("metadata") or {}
            if md.get("deletionTimestamp"):
                continue
            try:
                await self.kc.delete(res, md["name"], namespace, propagation_policy="Background")
            except NotFound:
                pass

    async def _report(self, name: str, sweep: Sweep) -> None:
        try:
            ns = await self.kc.get(NAMESPACES, name)
        except NotFound:
            return
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = ns.get("status") or {}
        merged = merge_conditions(list(status.get("conditions") or ()), conditions_for(sweep, now))
        if merged is None:
            return
        patch = {"status": {"conditions": merged}}
        try:
            await self.kc.patch(NAMESPACES, name, patch, subresource="status")
        except ApiError as e:
            log.debug("namespace %s: status not updated: %s", name, e)

    async def _finalize(self, name: str) -> None:
        """PUT the namespace without our finalizer to its finalize subresource."""
        try:
            ns = await self.kc.get(NAMESPACES, name)
        except NotFound:
            return
        fins = list((ns.get("spec") or {}).get("finalizers") or ())
        if FINALIZER not in fins:
            return
        ns.setdefault("spec", {})["finalizers"] = [f for f in fins if f != FINALIZER]
        try:
            await self.kc.raw("PUT", f"/api/v1/namespaces/{name}/finalize", body=ns)
        except NotFound:
            return
        log.info("namespace %s: content removed, finalized", name)
