"""Namespace termination: empty a Terminating namespace, then release its `kubernetes` finalizer.

Runs in the API server process in embedded mode (kube-controller-manager's job in Kubernetes).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from kubeedge.store import DELETED, Closed, Expired, NotFound, TooSlow

from .errors import ApiError

if TYPE_CHECKING:
    from .rest import ResourceApi

log = logging.getLogger(__name__)

Obj = dict[str, Any]
FINALIZER = "kubernetes"
# A namespace whose content is still going away (pods in their grace period) is checked again after this.
RECHECK_SECONDS = 2.0


class NamespaceFinalizer:
    def __init__(self, api: ResourceApi) -> None:
        self.api = api
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        store = self.api.store
        while True:
            snap = await store.list("namespaces")
            for r in snap.items:
                self._note(r.obj)
            watcher = store.watch("namespaces", from_rv=snap.rv)
            worker = asyncio.create_task(self._work(), name="namespace-finalizer-worker")
            try:
                async for batch in watcher:
                    for etype, rec in batch:
                        if etype == DELETED:
                            self._pending.discard(rec.obj["metadata"]["name"])
                        else:
                            self._note(rec.obj)
            except (Expired, TooSlow) as e:
                log.warning("namespace watch restarted: %s", e)
            except Closed:
                return
            finally:
                watcher.close()
                worker.cancel()

    def _note(self, ns: Obj) -> None:
        md = ns.get("metadata") or {}
        if md.get("deletionTimestamp") and FINALIZER in ((ns.get("spec") or {}).get("finalizers") or ()):
            self._pending.add(md["name"])
            self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for name in sorted(self._pending):
                try:
                    if await self.finalize(name):
                        self._pending.discard(name)
                except Exception:
                    log.exception("finalizing namespace %s failed; will retry", name)
            if self._pending:
                # Content in its grace period (pods on nodes) has to be waited out.
                await asyncio.sleep(RECHECK_SECONDS)
                self._wake.set()

    async def finalize(self, name: str) -> bool:
        """Delete everything in the namespace; once empty, drop the finalizer. True when done."""
        api = self.api
        remaining = 0
        for info in api.registry.all():
            if not info.namespaced or info.key == "events":
                continue
            res = await api.store.list(info.key, name)
            for r in res.items:
                remaining += 1
                md = r.obj["metadata"]
                if md.get("deletionTimestamp"):
                    continue
                try:
                    await api.delete_object(info, name, md["name"], {"propagationPolicy": "Background"})
                except ApiError as e:
                    if e.code != 404:
                        raise
        events = await api.store.list("events", name)
        for r in events.items:
            try:
                await api.store.delete("events", name, r.obj["metadata"]["name"])
            except NotFound:
                pass
        if remaining:
            left = 0
            for info in api.registry.all():
                if info.namespaced:
                    left += len((await api.store.list(info.key, name, limit=1)).items)
            if left:
                return False

        def drop(ns: Obj) -> Obj | None:
            fins = [f for f in (ns.get("spec") or {}).get("finalizers") or () if f != FINALIZER]
            ns.setdefault("spec", {})["finalizers"] = fins
            return ns

        try:
            rec = await api.store.guaranteed_update("namespaces", "", name, drop)
        except NotFound:
            return True
        md = rec.obj["metadata"]
        if not md.get("finalizers") and not (rec.obj.get("spec") or {}).get("finalizers"):
            try:
                await api.store.delete("namespaces", "", name, expect_rv=rec.rv)
            except NotFound:
                pass
            log.info("namespace %s finalized and removed", name)
        return True
