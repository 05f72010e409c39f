"""Runs a set of controllers over shared informers in one process, supervised."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Iterable

from kubeedge.kube import KubeClient
from kubeedge.runtime import Supervisor

from .framework import Controller, InformerFactory

log = logging.getLogger(__name__)

# name -> "module:Class"; modules are imported only when their controller is enabled.
CONTROLLERS: dict[str, str] = {
    "endpoints": ".endpoints:EndpointsController",
    "endpointslice": ".endpointslices:EndpointSliceController",
    "serviceaccount": ".serviceaccounts:ServiceAccountsController",
    "scheduler": ".scheduler:Scheduler",
    "garbagecollector": ".garbagecollector:GarbageCollector",
    "namespace": ".namespace:NamespaceController",
    "nodelifecycle": ".nodelifecycle:NodeLifecycleController",
    "daemonset": ".daemonset:DaemonSetController",
    "statefulset": ".statefulset:StatefulSetController",
    "job": ".job:JobController",
    "cronjob": ".cronjob:CronJobController",
    "replicaset": ".replicaset:ReplicaSetController",
    "deployment": ".deployment:DeploymentController",
}


def known() -> list[str]:
    return sorted(CONTROLLERS)


def resolve(names: Iterable[str] | None) -> list[str]:
    """Controller names from a --controllers value: None/"all"/"*" means all; "-x" removes x."""
    wanted = list(names or ["all"])
    chosen: list[str] = []
    for n in wanted:
        n = n.strip()
        if not n:
            continue
        if n in ("all", "*"):
            chosen += [c for c in known() if c not in chosen]
        elif n.startswith("-"):
            if n[1:] not in CONTROLLERS:
                raise ValueError(f"unknown controller {n[1:]!r} (known: {', '.join(known())})")
            chosen = [c for c in chosen if c != n[1:]]
        elif n in CONTROLLERS:
            if n not in chosen:
                chosen.append(n)
        elif n == "none":
            chosen = []
        else:
            raise ValueError(f"unknown controller {n!r} (known: {', '.join(known())})")
    return chosen


class ControllerManager:
    def __init__(self, kc: KubeClient, names: Iterable[str] | None = None) -> None:
        self.kc = kc
        self.informers = InformerFactory(kc)
        self.supervisor = Supervisor("controllers")
        self.controllers: list[Controller] = []
        for name in resolve(names):
            module, _, cls_name = CONTROLLERS[name].partition(":")
            cls = getattr(importlib.import_module(module, __package__), cls_name)
            self.controllers.append(cls(kc, self.informers))

    async def start(self) -> None:
        for c in self.controllers:
            c.setup()
        self.informers.start(lambda make, name: self.supervisor.spawn(make, name))
        for c in self.controllers:
            self.supervisor.spawn(c.run, c.name)
        log.info("controllers running: %s", ", ".join(c.name for c in self.controllers) or "none")

    async def wait_synced(self) -> None:
        await self.informers.wait_synced()

    async def stop(self) -> None:
        await self.supervisor.stop()

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
