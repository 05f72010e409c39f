"""The EdgeMesh agent: one asyncio process per node wiring the parts together.

    source (MetaServer at the edge, a kubeconfig in cloud mode) → ServiceTable → DNS server + proxy
    Node watch + configured peers → tunnel peers;  tunnel ← proxy (userspace path) / → local endpoints
    optional RelayServer;  /metrics, /healthz, /status

Start order follows dependencies (the table is filled before the proxy replaces a previous run's
rules, so a restart never empties them); stop runs the same steps backwards, removing our rules and,
if configured, the DNS interface. Each part supervises its own loops; the agent supervises what it
adds (peer discovery, address publishing, systemd's watchdog and STATUS=) with kubeedge's Supervisor.
Under systemd (Type=notify) READY=1 is sent once the first complete service list is served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeedge import systemd
from kubeedge.runtime import Supervisor

from .config import DEFAULT_RELAY_PORT, AgentConfig, parse_host_port
from .discovery import NodePeers, ServedEndpoints, publish_address
from .dns import DNSServer, iface
from .dns.setup import dns_from_config
from .model import ServiceTable
from .observe import MetricsServer, StatsCollector, relay_families, tunnel_families
from .proxy import DirectDialer, Proxy, ProxyConfig
from .source import ServiceSource, kube_client_for
from .tunnel import Identity, RelayServer, Tunnel, TunnelConfig

log = logging.getLogger(__name__)

# How long start() waits for the first complete list before bringing up the proxy anyway (with an
# empty table the proxy would remove a previous run's rules; waiting keeps them through a restart).
INITIAL_SYNC_WAIT = 30.0


def systemd_notify(*, ready: bool = False, status: str = "", stopping: bool = False) -> None:
    """READY=1 / STATUS= / STOPPING=1 to the service manager (no-ops when not run by systemd)."""
    try:
        if ready:
            systemd.ready(status or None)
        elif stopping:
            systemd.stopping(status or None)
        elif status:
            systemd.status(status)
    except Exception:  # notification is best effort: never let it take the agent down
        log.debug("systemd notification failed", exc_info=True)


def node_name_of(cfg: AgentConfig) -> str:
    return cfg.common_config.node_name or socket.gethostname().lower()


class Agent:
    def __init__(self, cfg: AgentConfig, notify: Callable[..., None] = systemd_notify) -> None:
        self.cfg = cfg
        self.node_name = node_name_of(cfg)
        self.notify = notify
        self.table = ServiceTable()
        self.kc = kube_client_for(cfg.kube_api_config)
        self.source = ServiceSource(self.kc, self.table)
        self.dns: DNSServer | None = None
        self.tunnel: Tunnel | None = None
        self.relay: RelayServer | None = None
        self.proxy: Proxy | None = None
        self.peers: NodePeers | None = None
        self.metrics: MetricsServer | None = None
        self.registry = CollectorRegistry()
        self.ready = asyncio.Event()
        self.sup = Supervisor("edgemesh")
        self._teardown: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self.ready.clear()
        await self.sup.stop()
        while self._teardown:
            name, step = self._teardown.pop()
            try:
                await step()
            except Exception:
                log.exception("edgemesh: stopping %s failed", name)
        log.info("edgemesh agent %s stopped", self.node_name)

    async def _start(self) -> None:
        cfg = self.cfg
        self.notify(status="connecting to " + self.kc.server)
        await self.kc.open()
        self._teardown.append(("kube client", self.kc.close))
        await self.source.start()
        self._teardown.append(("service source", self.source.stop))
        if cfg.dns.enable:
            await self._start_dns()
        identity = Identity(*cfg.tls_files()) if cfg.tunnel.enable or cfg.relay.enable else None
        if identity is not None and cfg.relay.enable:
            await self._start_relay(identity)
        if identity is not None and cfg.tunnel.enable:
            await self._start_tunnel(identity)
        try:
            await self.source.wait_synced(INITIAL_SYNC_WAIT)
        except TimeoutError:
            log.warning(
                "edgemesh: no complete service list from %s within %.0fs; starting the proxy anyway",
                self.kc.server,
                INITIAL_SYNC_WAIT,
            )
        if cfg.proxy.enable:
            await self._start_proxy()
        self._register_metrics()
        if cfg.common_config.metrics_port:
            m = MetricsServer(
                cfg.common_config.metrics_address,
                cfg.common_config.metrics_port,
                self.registry,
                self.health,
                self.status,
            )
            await m.start()
            self.metrics = m
            self._teardown.append(("metrics", m.stop))
        self.sup.spawn(self._announce_ready, "ready", restart=False)
        systemd.spawn_watchdog(self.sup)
        systemd.spawn_status(self.sup, self._status_line)
        log.info(
            "edgemesh agent %s up (%s, source %s)", self.node_name, cfg.common_config.mode, self.kc.server
        )

    async def _start_dns(self) -> None:
        cfg = self.cfg
        host, port = cfg.dns_listen
        if cfg.dns.manage_interface:
            name = cfg.common_config.bridge_device_name
            await iface.ensure(name, host)
            if cfg.dns.remove_interface_on_exit:
                self._teardown.append(("dns interface", lambda: iface.remove(name)))
        dns = dns_from_config(cfg, self.table)
        await dns.start()
        self.dns = dns
        self._teardown.append(("dns", dns.stop))
        log.info("edgemesh: DNS on %s:%d for %s", host, port, cfg.dns.cluster_domain)

    async def _start_relay(self, identity: Identity) -> None:
        r = self.cfg.relay
        t = self.cfg.tunnel
        relay = RelayServer(
            identity,
            r.listen_address,
            r.listen_port,
            keepalive_interval=t.keepalive_interval,
            keepalive_timeout=t.keepalive_timeout,
        )
        await relay.start()
        self.relay = relay
        self._teardown.append(("relay", relay.stop))

    async def _start_tunnel(self, identity: Identity) -> None:
        t = self.cfg.tunnel
        relays = tuple(
            parse_host_port(a, DEFAULT_RELAY_PORT, "relayNodes")
            for r in t.relay_nodes
            for a in r.advertise_address
        )
        tunnel = Tunnel(
            TunnelConfig(
                node_name=self.node_name,
                identity=identity,
                listen_host=t.listen_address,
                listen_port=t.listen_port,
                relays=relays,
                keepalive_interval=t.keepalive_interval,
                keepalive_timeout=t.keepalive_timeout,
                dial_timeout=t.dial_timeout,
                upgrade_interval=t.upgrade_interval,
                holepunch=t.enable_hole_punch,
            ),
            serves=ServedEndpoints(self.table, self.node_name),
        )
        await tunnel.start()
        self.tunnel = tunnel
        self._teardown.append(("tunnel", tunnel.stop))
        self.peers = NodePeers(self.kc, tunnel, self.cfg, self.node_name)
        self.sup.spawn(self.peers.run, "node peers")
        if t.advertise_address:
            addrs = t.advertise_address
            self.sup.spawn(
                lambda: publish_address(self.kc, self.node_name, addrs), "publish address", restart=False
            )

    async def _start_proxy(self) -> None:
        p = self.cfg.proxy
        proxy = Proxy(
            self.table,
            ProxyConfig(
                node_name=self.node_name,
                backend=p.mode,
                userspace_bind=p.listen_address,
                min_sync_interval_s=p.min_sync_interval,
                resync_interval_s=p.resync_interval,
                tcp_idle_timeout_s=p.tcp_idle_timeout,
                udp_idle_timeout_s=p.udp_idle_timeout,
            ),
            # Without a tunnel (disabled), endpoints behind a gateway are dialled and routing decides.
            tunnel=self.tunnel if self.tunnel is not None else DirectDialer(),
        )
        await proxy.start()
        self.proxy = proxy
        self._teardown.append(("proxy (removing its rules)", lambda: proxy.stop(cleanup=True)))

    async def _announce_ready(self) -> None:
        await self.source.synced.wait()
        self.ready.set()
        self.notify(ready=True, status=f"serving {len(self.table)} services")
        log.info("edgemesh agent %s ready: %d services", self.node_name, len(self.table))

    # ---- observation -------------------------------------------------------------------------

    async def _status_line(self) -> str:
        """systemd's STATUS=: what `systemctl status edgemesh` shows."""
        parts = [f"{len(self.table)} services" + ("" if self.source.synced.is_set() else " (syncing)")]
        if self.dns is not None:
            parts.append("DNS {}:{}".format(*self.cfg.dns_listen))
        if self.tunnel is not None:
            paths = list(self.tunnel.paths().values())
            by = ", ".join(f"{paths.count(p)} {p}" for p in ("direct", "holepunch", "relay") if p in paths)
            relays = self.tunnel.stats()["relays_connected"]
            parts.append(f"peers: {by or 'none'}; relays {relays}/{len(self.tunnel.config.relays)}")
        return "; ".join(parts)

    async def health(self) -> dict[str, bool]:
        parts = {"source": self.source.synced.is_set()}
        if self.cfg.dns.enable:
            parts["dns"] = self.dns is not None
        if self.cfg.proxy.enable:
            parts["proxy"] = self.proxy is not None and self.proxy.metrics.syncs > 0
        if self.cfg.tunnel.enable:
            parts["tunnel"] = self.tunnel is not None
        if self.cfg.relay.enable:
            parts["relay"] = self.relay is not None
        return parts

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node_name,
            "mode": self.cfg.common_config.mode,
            "source": {
                "server": self.kc.server,
                "synced": self.source.synced.is_set(),
                "events": self.source.events,
            },
            "services": len(self.table),
        }
        if self.dns is not None:
            out["dns"] = "{}:{}".format(*self.cfg.dns_listen)
        if self.proxy is not None:
            backend = self.proxy.backend.name if self.proxy.backend else ""
            out["proxy"] = {"backend": backend, "paths": self.proxy.paths(), **self.proxy.metrics.snapshot()}
        if self.tunnel is not None:
            out["tunnel"] = {"port": self.tunnel.port, "paths": self.tunnel.paths(), **self.tunnel.stats()}
        if self.relay is not None:
            out["relay"] = {"port": self.relay.port, **self.relay.stats()}
        return out

    def _register_metrics(self) -> None:
        self.registry.register(StatsCollector(self._agent_families))
        if self.proxy is not None:
            self.registry.register(StatsCollector(self.proxy.metrics.collect))
        if self.tunnel is not None:
            tunnel = self.tunnel
            self.registry.register(StatsCollector(lambda: tunnel_families(tunnel.stats(), tunnel.paths())))
        if self.relay is not None:
            relay = self.relay
            self.registry.register(StatsCollector(lambda: relay_families(relay.stats())))

    def _agent_families(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "edgemesh_agent_services", "Services in the mesh's table", value=len(self.table)
        )
        yield GaugeMetricFamily(
            "edgemesh_agent_synced",
            "1 once the first complete service list arrived",
            value=self.source.synced.is_set(),
        )
        yield CounterMetricFamily(
            "edgemesh_agent_source_events",
            "Service/EndpointSlice watch events applied",
            value=self.source.events,
        )


async def run(cfg: AgentConfig, stop: asyncio.Event) -> None:
    """Start, serve until `stop` is set, stop (rules removed)."""
    agent = Agent(cfg)
    await agent.start()
    try:
        await stop.wait()
    finally:
        agent.notify(stopping=True, status="removing rules")
        await agent.stop()
