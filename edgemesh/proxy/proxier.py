"""The service proxy: keeps kernel rules and the userspace path in step with the ServiceTable.

Every table change marks the state dirty; one supervised loop syncs (at most once per
`min_sync_interval_s`, so a burst of watch events becomes one kernel transaction), and resyncs every
`resync_interval_s` anyway to repair tampering and pick up route changes. A failed sync is retried
with backoff. `stop()` removes all our rules; a crash leaves them, and the next start replaces them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgemesh.model import ServiceTable
from edgemesh.proxy.metrics import ProxyMetrics
from edgemesh.proxy.nft import Marks
from edgemesh.proxy.plan import KERNEL, MIXED, USERSPACE, Plan, build_plan, endpoint_ips
from edgemesh.proxy.reach import Reachability
from edgemesh.proxy.rules import Backend, select_backend
from edgemesh.proxy.userspace import Dialer, UserspaceProxy

log = logging.getLogger(__name__)

MAX_RETRY_BACKOFF_S = 30.0


@dataclass
class ProxyConfig:
    node_name: str
    backend: str = "auto"  # auto | nftables | iptables
    nft_cmd: tuple[str, ...] = ("nft",)
    iptables_variant: str = ""  # "" | legacy | nft
    ip_cmd: tuple[str, ...] = ("ip",)
    userspace_bind: str = "0.0.0.0"
    userspace_tcp_port: int = 0  # 0 = any free port
    min_sync_interval_s: float = 0.1
    resync_interval_s: float = 60.0
    counters_interval_s: float = 10.0
    route_cache_ttl_s: float = 30.0
    tcp_idle_timeout_s: float = 600.0
    udp_idle_timeout_s: float = 60.0
    masq_mark: int = 0x00100000
    conn_mark: int = 0x00100000


class Proxy:
    def __init__(
        self,
        table: ServiceTable,
        config: ProxyConfig,
        tunnel: Dialer | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.table = table
        self.config = config
        self.metrics = metrics or ProxyMetrics()
        self.reach = Reachability(config.node_name, config.ip_cmd, config.route_cache_ttl_s)
        self.userspace = UserspaceProxy(
            tunnel,
            self.metrics,
            config.userspace_bind,
            config.userspace_tcp_port,
            config.tcp_idle_timeout_s,
            config.udp_idle_timeout_s,
        )
        self.backend: Backend | None = None
        self.plan = Plan(())
        self.udp_ports: dict[tuple[str, int, str], int] = {}
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._listeners: list[Callable[[Plan], None]] = []
        self._lock = asyncio.Lock()

    def on_sync(self, fn: Callable[[Plan], None]) -> None:
        self._listeners.append(fn)

    async def start(self) -> None:
        marks = Marks(self.config.masq_mark, self.config.conn_mark)
        self.backend, others = await select_backend(
            self.config.backend, self.config.nft_cmd, self.config.iptables_variant, marks
        )
        for other in others:
            await other.cleanup()  # ours from a run with the other backend: stale by definition
        await self.userspace.start()
        self._unsubscribe = self.table.subscribe(lambda _key: self._dirty.set())
        try:
            await self.sync()
        except Exception:
            log.exception("initial proxy sync failed; retrying in the background")
            self._dirty.set()
        self._tasks.append(asyncio.create_task(self._supervise("sync", self._sync_loop)))
        self._tasks.append(asyncio.create_task(self._supervise("counters", self._counters_loop)))
        log.info(
            "service proxy up: backend %s, userspace tcp port %d", self.backend.name, self.userspace.tcp_port
        )

    async def stop(self, cleanup: bool = True) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if cleanup and self.backend is not None:
            async with self._lock:
                await self.backend.cleanup()
        await self.userspace.stop()

    async def sync(self) -> Plan:
        """Reconcile now: plan from the table, userspace routes, then kernel rules."""
        assert self.backend is not None
        async with self._lock:
            try:
                await self.reach.refresh(endpoint_ips(self.table))
                plan = build_plan(
                    self.table, self.reach.is_direct, self.config.node_name, self.backend.kernel_source_hash
                )
                userspace = [p for p in plan.ports if p.mode in (MIXED, USERSPACE)]
                self.udp_ports = self.userspace.set_routes(userspace)
                await self.backend.apply(plan, self.userspace.tcp_port, self.udp_ports)
            except Exception:
                self.metrics.sync_failures += 1
                raise
            self.plan = plan
            self.metrics.syncs += 1
            self.metrics.ports_kernel = sum(1 for p in plan.ports if p.mode == KERNEL)
            self.metrics.ports_userspace = len(userspace)
        for fn in self._listeners:
            try:
                fn(plan)
            except Exception:
                log.exception("proxy sync listener failed")
        return plan

    async def refresh_counters(self) -> None:
        if self.backend is not None:
            async with self._lock:
                self.metrics.kernel_forwarded, self.metrics.kernel_bytes = await self.backend.counters()

    def paths(self) -> dict[str, str]:
        """Service port label → kernel / mixed / userspace / reject (for status and debugging)."""
        return {f"{p.label}@{p.cluster_ip}": p.mode for p in self.plan.ports}

    async def _sync_loop(self) -> None:
        last = 0.0
        backoff = 0.5
        while True:
            try:
                async with asyncio.timeout(self.config.resync_interval_s):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            # Rate limit, not synchronisation: changes arriving meanwhile join this sync.
            await asyncio.sleep(max(0.0, last + self.config.min_sync_interval_s - time.monotonic()))
            self._dirty.clear()
            last = time.monotonic()
            try:
                await self.sync()
                backoff = 0.5
            except Exception:
                log.exception("proxy sync failed; retrying in %.1fs", backoff)
                self._dirty.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RETRY_BACKOFF_S)

    async def _counters_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.counters_interval_s)
            await self.refresh_counters()

    async def _supervise(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        backoff = 0.5
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proxy %s loop crashed; restarting in %.1fs", name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RETRY_BACKOFF_S)
