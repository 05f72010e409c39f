"""The cloudcore process: API (embedded or external), CA, token, cloudhub, bootstrap, edgecontroller
and metrics, started in dependency order and stopped in reverse.

One CA for everything: in embedded mode it is the API server's own CA (``<dataDir>/apiserver/pki``),
so node certificates issued by the bootstrap server are accepted by the API server as well; with an
external cluster (kubeAPIConfig.kubeConfig) cloudcore keeps its own CA in ``<dataDir>/pki``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry

from kubeedge import systemd
from kubeedge.apiserver.config import ApiServerConfig
from kubeedge.apiserver.server import ApiServer
from kubeedge.beehive import Message
from kubeedge.controllers.manager import ControllerManager
from kubeedge.kube import KubeClient, KubeConfig
from kubeedge.pki import certs
from kubeedge.pki.bootstrap import BootstrapConfig, BootstrapServer
from kubeedge.pki.tokens import TokenStore
from kubeedge.runtime import Supervisor
from kubeedge.runtime.hostaddrs import host_addresses
from kubeedge.runtime.tlsbuffers import set_tls_read_buffer

from .cloudhub import CloudHub, CloudHubConfig
from .config import CloudCoreConfig
from .edgecontroller import EdgeController, EdgeControllerConfig
from .metrics import CloudCoreCollector, MetricsServer, ObservedEvents, new_registry
from .sync import NodeSync, SyncConfig

log = logging.getLogger(__name__)

# The API health probe must answer quickly; a slow API is reported unhealthy, not waited for.
HEALTH_PROBE_TIMEOUT: Final = 2.0
# Informers must have listed once before edges are let in (else the first inventory diff would
# delete everything a reconnecting node holds).
SYNC_TIMEOUT: Final = 60.0
SERVING_CERT_CN: Final = "kubeedge-cloudhub"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def advertised(config: CloudCoreConfig) -> tuple[str, ...]:
    """The configured advertiseAddress, else every address this host has now (an appliance learns
    its address at boot; the certificate is issued at each start, so a restart follows a change)."""
    configured = config.modules.cloud_hub.advertise_address
    return configured or tuple(host_addresses())


def serving_sans(config: CloudCoreConfig) -> tuple[list[str], list[str]]:
    """(dns, ips) of cloudhub's serving certificate: advertise addresses, listen addresses, loopback."""
    hub = config.modules.cloud_hub
    names = {"localhost", *advertised(config)}
    for addr in (hub.websocket.address, hub.https.address):
        if addr not in ("0.0.0.0", "::"):
            names.add(addr)
    dns = sorted(n for n in names if not _is_ip(n))
    ips = sorted({n for n in names if _is_ip(n)} | {"127.0.0.1", "::1"})
    return dns, ips


def _load_or_create_ca(pki_dir: Path) -> certs.KeyPair:
    crt, key = pki_dir / "ca.crt", pki_dir / "ca.key"
    if crt.exists() and key.exists():
        return certs.KeyPair.load(crt, key)
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca = certs.create_ca("kubeedge-ca")
    ca.save(crt, key)
    log.info("created the cloud CA in %s", pki_dir)
    return ca


class CloudCore:
    def __init__(self, config: CloudCoreConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.sup = Supervisor("cloudcore")
        self.apiserver: ApiServer | None = None
        self.controllers: ControllerManager | None = None
        self.kc: KubeClient | None = None
        self.ca: certs.KeyPair | None = None
        self.tokens: TokenStore | None = None
        self.hub: CloudHub | None = None
        self.edgecontroller: EdgeController | None = None
        self.bootstrap: BootstrapServer | None = None
        self.metrics: MetricsServer | None = None
        self.events: ObservedEvents | None = None
        self.cloudstream: Any = None  # cloudstream.CloudStream when modules.cloudStream.enable
        # Listeners currently serving (for /healthz); emptied as soon as stop() begins.
        self._serving: set[str] = set()
        # Teardown steps in start order; stop() runs them reversed, each even if another failed.
        self._teardown: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    # ---- paths -------------------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        if self.config.embedded_api:
            return self.data_dir / "apiserver" / "admin.kubeconfig"
        return Path(self.config.kube_api.kube_config).expanduser()

    @property
    def token_path(self) -> Path:
        assert self.tokens is not None
        return self.tokens.path

    @property
    def ca_path(self) -> Path:
        if self.config.embedded_api:
            return self.data_dir / "apiserver" / "pki" / "ca.crt"
        return self.data_dir / "pki" / "ca.crt"

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        hubcfg = cfg.modules.cloud_hub
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if cfg.embedded_api:
            api = ApiServer(
                ApiServerConfig(
                    data_dir=self.data_dir / "apiserver",
                    listen=cfg.embedded.listen,
                    controllers=cfg.embedded.controllers,
                    log_level=cfg.log_level.upper(),
                    node_stream_url=_stream_url(cfg),
                )
            )
            self.apiserver = api
            await api.start()
            self._teardown.append(("apiserver", api.stop))
            self.ca = certs.KeyPair.load(self.ca_path, self.ca_path.with_suffix(".key"))
        else:
            self.ca = _load_or_create_ca(self.data_dir / "pki")
        kc = KubeClient(KubeConfig.from_file(self.kubeconfig_path))
        await kc.open()
        self.kc = kc
        self._teardown.append(("kube client", kc.close))
        if cfg.embedded_api and cfg.embedded.controllers != "none":
            mgr = ControllerManager(kc, cfg.embedded.controllers.split(","))
            await mgr.start()
            self.controllers = mgr
            self._teardown.append(("controllers", mgr.stop))

        tokens = TokenStore(
            self.ca, self.data_dir, ttl=2 * hubcfg.token_refresh, refresh_interval=hubcfg.token_refresh
        )
        tokens.current()  # written to disk now: `keadm gettoken` reads it
        self.tokens = tokens
        self.sup.spawn(tokens.run, "token-refresh")
        self._teardown.append(("supervised tasks", self.sup.stop))

        dns, ips = serving_sans(cfg)
        if not hubcfg.advertise_address:
            log.info(
                "no modules.cloudHub.advertiseAddress: edges may dial %s (this host's addresses now)",
                ", ".join(ips),
            )
        serving = certs.issue(
            self.ca,
            SERVING_CERT_CN,
            dns_names=dns,
            ip_addresses=ips,
            server=True,
            # Not edgeCertSigningDuration: that is for node certificates (short ones mean frequent
            # rotation), while this one is reissued only at start and must outlive the process.
            validity=certs.CERT_VALIDITY,
        )
        registry, handshake = new_registry()
        # The hub needs its events sink and the edgecontroller needs the hub: the wrapper breaks the cycle.
        events = ObservedEvents(_NoEvents(), handshake, hubcfg.node_limit)
        self.events = events
        hub = CloudHub(
            CloudHubConfig(
                host=hubcfg.websocket.address,
                port=hubcfg.websocket.port,
                keepalive_timeout=hubcfg.keepalive_interval,
                send_timeout=hubcfg.write_timeout,
                send_queue_limit=hubcfg.send_queue_limit,
                node_limit=hubcfg.node_limit,
            ),
            self.ca,
            serving,
            events,
        )
        self.hub = hub
        ecs = cfg.modules.edge_controller
        ec = EdgeController(
            kc,
            hub,
            EdgeControllerConfig(
                sync=SyncConfig(
                    resend_base=ecs.resend_base,
                    resend_cap=ecs.resend_cap,
                    max_in_flight=ecs.max_in_flight,
                    inventory_timeout=ecs.inventory_timeout,
                )
            ),
        )
        self.edgecontroller = ec
        events.inner = ec
        ec.start()
        self._teardown.append(("edgecontroller", ec.stop))
        async with asyncio.timeout(SYNC_TIMEOUT):
            await ec.wait_synced()

        await hub.start()
        self._teardown.append(("cloudhub", hub.stop))
        self._serving.add("cloudhub")
        boot = BootstrapServer(
            BootstrapConfig(
                host=hubcfg.https.address,
                port=hubcfg.https.port,
                advertise_addresses=advertised(cfg),
                cert_validity=hubcfg.cert_validity,
            ),
            self.ca,
            serving=serving,
        )
        await boot.start()
        self.bootstrap = boot
        self._teardown.append(("bootstrap", boot.stop))
        self._serving.add("bootstrap")

        if cfg.modules.cloud_stream.enable:
            await self._start_cloudstream(serving, registry)
        if cfg.modules.edge_mesh_relay.enable:
            await self._start_mesh_relay(serving, registry)

        registry.register(CloudCoreCollector(hub.stats, self._syncs))
        metrics = MetricsServer(cfg.metrics.host, cfg.metrics.port, registry, self.health)
        await metrics.start()
        self.metrics = metrics
        self._teardown.append(("metrics", metrics.stop))

    async def _start_cloudstream(self, serving: certs.KeyPair, registry: CollectorRegistry) -> None:
        from .cloudstream import CloudStream, CloudStreamConfig

        assert self.ca is not None
        cs = self.config.modules.cloud_stream
        stream = CloudStream(
            CloudStreamConfig(
                tunnel_host=cs.tunnel_address,
                tunnel_port=cs.tunnel_port,
                stream_host=cs.stream_address,
                stream_port=cs.stream_port,
                max_streams_per_node=cs.max_streams_per_node,
            ),
            self.ca,
            serving,
            registry,
        )
        await stream.start()
        self.cloudstream = stream
        self._teardown.append(("cloudstream", stream.stop))
        self._serving.add("cloudstream")

    async def _start_mesh_relay(self, serving: certs.KeyPair, registry: CollectorRegistry) -> None:
        # Imported here: cloudcore without the relay never loads the mesh.
        from edgemesh.observe import StatsCollector, relay_families
        from edgemesh.tunnel import Identity, RelayServer

        mr = self.config.modules.edge_mesh_relay
        # The relay proves itself with the serving certificate (agents accept any from our CA).
        d = self.data_dir / "edgemesh"
        d.mkdir(parents=True, exist_ok=True)
        serving.save(d / "relay.crt", d / "relay.key")
        relay = RelayServer(Identity(d / "relay.crt", d / "relay.key", self.ca_path), mr.address, mr.port)
        await relay.start()
        self._teardown.append(("edgemesh relay", relay.stop))
        registry.register(StatsCollector(lambda: relay_families(relay.stats())))
        self._serving.add("edgemesh-relay")

    async def stop(self) -> None:
        self._serving.clear()
        if not self._teardown:
            return
        while self._teardown:
            name, step = self._teardown.pop()
            try:
                await step()
            except Exception:
                log.exception("cloudcore: stopping %s failed", name)
        log.info("cloudcore stopped")

    # ---- observation -------------------------------------------------------------------------------

    def _syncs(self) -> list[NodeSync]:
        if self.edgecontroller is None or self.events is None:
            return []
        found = (self.edgecontroller.node_sync(n) for n in sorted(self.events.seen))
        return [s for s in found if s is not None]

    async def health(self) -> dict[str, bool]:
        return {
            "cloudhub": "cloudhub" in self._serving,
            "bootstrap": "bootstrap" in self._serving,
            "api": await self._api_ok(),
        }

    async def _api_ok(self) -> bool:
        if self.kc is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT):
                await self.kc.raw("GET", "/healthz")
        except Exception as e:  # any failure means "not serving"; the reason goes to the log
            log.info("health: API probe failed: %s", e)
            return False
        return True

    async def status_line(self) -> str:
        """systemd's STATUS=: where cloudhub serves, how many edges are connected, API health."""
        hub = self.hub
        port = hub.port if hub is not None else self.config.modules.cloud_hub.websocket.port
        nodes = len(hub.nodes()) if hub is not None else 0
        return systemd.cloud_status(f":{port}", nodes, await self._api_ok())

    def describe(self) -> list[str]:
        """Human lines saying where everything serves (printed by __main__)."""
        assert self.hub is not None and self.bootstrap is not None and self.metrics is not None
        hubcfg = self.config.modules.cloud_hub
        api = self.apiserver.url if self.apiserver is not None else f"kubeconfig {self.kubeconfig_path}"
        return [
            f"cloudhub websocket on {hubcfg.websocket.address}:{self.hub.port} (mTLS)",
            f"bootstrap (ca.crt, edge.crt) on {hubcfg.https.address}:{self.bootstrap.port}",
            f"metrics on http://{self.metrics.host}:{self.metrics.port}/metrics (and /healthz)",
            f"Kubernetes API: {api} (admin kubeconfig: {self.kubeconfig_path})",
            f"bootstrap token in {self.token_path} (print it with: keadm gettoken --data-dir {self.data_dir})",
        ]


def _stream_url(config: CloudCoreConfig) -> str:
    """Where the embedded API server reaches cloudstream's stream server ('' when it is off)."""
    cs = config.modules.cloud_stream
    if not cs.enable:
        return ""
    host = "127.0.0.1" if cs.stream_address in ("0.0.0.0", "::") else cs.stream_address
    return f"https://{host if ':' not in host else f'[{host}]'}:{cs.stream_port}"


class _NoEvents:
    """Placeholder sink until the edgecontroller exists (cloudhub does not serve before then)."""

    async def node_connected(self, node: str) -> None:
        return None

    async def node_disconnected(self, node: str) -> None:
        return None

    async def message_from(self, node: str, msg: Message) -> None:
        return None


async def run(config: CloudCoreConfig, ready: Callable[[CloudCore], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT (or cancellation); shut down cleanly."""
    set_tls_read_buffer()  # thousands of idle node connections: see runtime/tlsbuffers.py
    core = CloudCore(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await core.start()
        if ready is not None:
            ready(core)
        # start() returns once cloudhub, bootstrap and metrics listen over a synced API: serving.
        systemd.ready(await core.status_line())
        systemd.spawn_watchdog(core.sup)
        systemd.spawn_status(core.sup, core.status_line)
        await stop.wait()
        log.info("cloudcore shutting down")
        systemd.stopping("stopping: closing edge connections")
    finally:
        await core.stop()
