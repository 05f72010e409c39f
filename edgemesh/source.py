"""Feeds the ServiceTable from list-watches of Services, EndpointSlices and (when the API serves
them) Istio DestinationRules, through the local MetaServer (edge, works offline) or a Kubernetes API.

`ListWatch` already resumes watches and re-lists on 410 Gone, emitting the difference; this module maps
its events onto table mutations, holds subscriber notifications until the first complete list, and
supervises the watch tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubeedge.kube import (
    ENDPOINTSLICES,
    SERVICES,
    KubeClient,
    KubeConfig,
    ListWatch,
    NotFound,
    Res,
    load_kubeconfig,
)
from kubeedge.kube import in_cluster as kube_in_cluster
from kubeedge.kube.watch import ADDED, DELETED, MODIFIED, SYNC, WatchEvent

from .config import KubeAPISection
from .model import ServiceTable, destination_rule_target

log = logging.getLogger(__name__)

DESTINATION_RULES = (
    Res("networking.istio.io", "v1beta1", "destinationrules", True, "DestinationRule"),
    Res("networking.istio.io", "v1alpha3", "destinationrules", True, "DestinationRule"),
)
# How often to look again for the DestinationRule API when it is not served (Istio's CRDs may be
# installed later); a missing API costs one cheap request per interval, not a failing watch loop.
DR_PROBE_INTERVAL = 60.0
# A watch loop that crashed on something unexpected is restarted after this long (doubling, capped).
RESTART_BASE = 1.0
RESTART_CAP = 30.0


def kube_client_for(cfg: KubeAPISection) -> KubeClient:
    """Cloud mode when a kubeconfig is given ("in-cluster" for a service account), else MetaServer."""
    if cfg.kube_config:
        kc = kube_in_cluster() if cfg.kube_config == "in-cluster" else load_kubeconfig(cfg.kube_config)
        if cfg.master:
            kc.server = cfg.master.rstrip("/")
    else:
        kc = KubeConfig(server=cfg.master or cfg.meta_server)
    return KubeClient(kc)


class ServiceSource:
    """Keeps `table` equal to the API's Services/EndpointSlices/DestinationRules until stopped."""

    def __init__(
        self,
        kc: KubeClient,
        table: ServiceTable,
        *,
        destination_rules: bool = True,
        watch_timeout: float | None = None,
        dr_probe_interval: float = DR_PROBE_INTERVAL,
    ) -> None:
        self.kc = kc
        self.table = table
        self.destination_rules = destination_rules
        self.watch_timeout = watch_timeout
        self.dr_probe_interval = dr_probe_interval
        self.synced = asyncio.Event()
        self.events = 0  # applied watch events, for metrics and tests
        self.dr_api: Res | None = None  # the DestinationRule version found, if any
        self._pending_sync = {"services", "endpointslices"}
        self._tasks: list[asyncio.Task[None]] = []
        self._lws: list[ListWatch] = []

    async def start(self) -> None:
        # Subscribers hear nothing until the first complete picture, then once ("everything").
        self.table.hold()
        self._spawn("services", SERVICES, self._on_service)
        self._spawn("endpointslices", ENDPOINTSLICES, self._on_slice)
        if self.destination_rules:
            self._tasks.append(asyncio.create_task(self._destination_rules(), name="edgemesh dr"))

    async def stop(self) -> None:
        for lw in self._lws:
            lw.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lw in self._lws:
            await lw.aclose()
        self._tasks.clear()
        self._lws.clear()
        if not self.synced.is_set():
            self.table.release()

    async def wait_synced(self, within: float) -> None:
        """Wait (at most `within` seconds) for the first complete list of services and slices."""
        await asyncio.wait_for(self.synced.wait(), within)

    # -- supervision ----------------------------------------------------------------------------

    def _spawn(self, what: str, res: Res, handler: Callable[[WatchEvent], None]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(what, res, handler), name=f"edgemesh {what}"))

    async def _supervise(self, what: str, res: Res, handler: Callable[[WatchEvent], None]) -> None:
        delay = RESTART_BASE
        while True:
            lw = ListWatch(self.kc, res, watch_timeout=self.watch_timeout)
            self._lws.append(lw)
            try:
                async for ev in lw:
                    self._apply(what, ev, handler)
                    delay = RESTART_BASE
                return  # stopped
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("edgemesh: %s watch crashed; restarting in %.0fs", what, delay)
            finally:
                self._lws.remove(lw)
                await lw.aclose()
            await asyncio.sleep(delay)
            delay = min(RESTART_CAP, delay * 2)

    def _apply(self, what: str, ev: WatchEvent, handler: Callable[[WatchEvent], None]) -> None:
        if ev.type == SYNC:
            self._mark_synced(what)
            return
        if ev.type not in (ADDED, MODIFIED, DELETED):
            return
        self.events += 1
        try:
            handler(ev)
        except Exception:
            # One malformed object must not stop the mesh from seeing every other change.
            md = ev.object.get("metadata") or {}
            log.exception("edgemesh: cannot apply %s %s/%s", what, md.get("namespace"), md.get("name"))

    def _mark_synced(self, what: str) -> None:
        if what in self._pending_sync:
            self._pending_sync.discard(what)
            if not self._pending_sync:
                self.table.synced = True
                self.synced.set()
                self.table.release(everything=True)
                log.info("edgemesh: %d services synced from %s", len(self.table), self.kc.server)

    # -- handlers -------------------------------------------------------------------------------

    def _on_service(self, ev: WatchEvent) -> None:
        ns, name = ev.key
        if ev.type == DELETED:
            self.table.delete_service(ns, name)
        else:
            self.table.upsert_service(ev.object)

    def _on_slice(self, ev: WatchEvent) -> None:
        ns, name = ev.key
        if ev.type == DELETED:
            self.table.delete_slice(ns, name)
        else:
            self.table.upsert_slice(ns, name, ev.object)

    def _on_rule(self, ev: WatchEvent) -> None:
        ns, name = ev.key
        if ev.type == DELETED:
            self.table.delete_destination_rule(ns, name)
        else:
            target, policy = destination_rule_target(ev.object)
            self.table.set_destination_rule(ns, name, target, policy)

    async def _destination_rules(self) -> None:
        """Find a served DestinationRule version (tolerating 404), then watch it like the others."""
        while self.dr_api is None:
            for res in DESTINATION_RULES:
                try:
                    await self.kc.list(res, limit=1)
                except NotFound:
                    continue
                except Exception as e:
                    log.debug("edgemesh: probing %s failed: %s", res.api_version, e)
                    continue
                self.dr_api = res
                break
            if self.dr_api is None:
                await asyncio.sleep(self.dr_probe_interval)
        log.info("edgemesh: watching DestinationRules (%s)", self.dr_api.api_version)
        await self._supervise("destinationrules", self.dr_api, self._on_rule)
