"""The edgecore process: credentials, the edge store, metamanager, the upstream queue, edgehub and the
node agent, wired by one message router and run under one Supervisor.

Router (EdgeHub.on_message, in arrival order):
- ``response``/``error`` → the upstream queue's waiting drain, else a pending local request;
- ``query`` → answered at once from the edge store (MetaManager.query), not queued behind bursts;
- everything else (object insert/update/delete) → MetaManager, which ACKs after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any, Final

import orjson

from kubeedge import systemd
from kubeedge.beehive import Message
from kubeedge.beehive.apirequest import ApiReply, ApiRequest
from kubeedge.beehive.message import OP_ERROR, OP_PATCH, OP_QUERY, RT_NODEPATCH, RT_PODPATCH
from kubeedge.pki import certs, client, tokens
from kubeedge.runtime import Supervisor
from kubeedge.store import Store, StoreError

from .config import EdgeCoreConfig
from .edgehub import EdgeHub, EdgeHubConfig
from .metamanager import MetaManager
from .metaserver import MetaServer, MetaServerConfig
from .nodeagent import NodeAgent, NodeAgentConfig
from .upstream import UpstreamQueue

log = logging.getLogger(__name__)

POD_KEY: Final = "pods"  # the edge store's key for pods (metamanager's storage key)

# Local requests (edge → cloud, awaiting a reply) in flight at once.
MAX_PENDING_REQUESTS: Final = 1024
REQUEST_TIMEOUT: Final = 30.0
METASERVER_SOURCE: Final = "metaserver"


class CredentialsError(Exception):
    """No usable certificate and no way to obtain one; the text says what to configure."""


class PendingRequests:
    """msg_id → future for requests whose reply the router delivers (bounded)."""

    def __init__(self, limit: int = MAX_PENDING_REQUESTS) -> None:
        self.limit = limit
        self._waiting: dict[str, asyncio.Future[Message]] = {}

    def expect(self, msg: Message) -> asyncio.Future[Message]:
        if len(self._waiting) >= self.limit:
            raise RuntimeError(f"too many requests awaiting the cloud ({self.limit})")
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[msg.msg_id] = fut
        return fut

    def forget(self, msg: Message) -> None:
        self._waiting.pop(msg.msg_id, None)

    def deliver(self, reply: Message) -> bool:
        fut = self._waiting.pop(reply.parent_msg_id, None)
        if fut is None or fut.done():
            return False
        fut.set_result(reply)
        return True

    def cancel_all(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()


async def ensure_credentials(config: EdgeCoreConfig) -> tuple[bytes, certs.KeyPair]:
    """The CA and node certificate from the configured files; when missing and a token is configured,
    join: fetch the CA pinned by the token, request a certificate, write both (key 0600)."""
    ca_path, cert_path, key_path = config.ca_file, config.cert_file, config.key_file
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path.read_bytes(), certs.KeyPair.load(cert_path, key_path)
    http = config.cloud_http
    token = config.edge_hub.token
    if not token or http is None:
        missing = [str(p) for p in (ca_path, cert_path, key_path) if not p.exists()]
        raise CredentialsError(
            f"missing {', '.join(missing)} and no modules.edgeHub.token + httpServer to obtain them"
        )
    host, port = http
    pinned, _ = tokens.split_token(token)
    if ca_path.exists():
        ca_pem = ca_path.read_bytes()
    else:
        ca_pem = await client.fetch_ca(host, port, pinned)
        ca_path.parent.mkdir(parents=True, exist_ok=True)
        ca_path.write_bytes(ca_pem)
    pair = await client.request_certificate(host, port, ca_pem, token, config.node_name)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pair.save(cert_path, key_path)
    log.info("joined as node %s: certificate written to %s", config.node_name, cert_path)
    return ca_pem, pair


class EdgeCore:
    def __init__(self, config: EdgeCoreConfig) -> None:
        self.config = config
        self.node_name = config.node_name
        self.sup = Supervisor("edgecore")
        self.pending = PendingRequests()
        self.store: Store | None = None
        self.upstream: UpstreamQueue | None = None
        self.hub: EdgeHub | None = None
        self.meta: MetaManager | None = None
        self.agent: NodeAgent | None = None
        self.metaserver: MetaServer | None = None
        self.edged: Any = None  # edged.manager.Edged when modules.edged.enable (imported only then)
        self.edgestream: Any = None  # edgestream.EdgeStream when modules.edgeStream.enable
        self.cri: Any = None  # edged's CriClient, shared with the node facts and image GC
        self._ca_pem = b""
        self._cert: certs.KeyPair | None = None
        self.stopped = asyncio.Event()
        # Set once the store is open and the MetaServer listens: what systemd's READY=1 means here.
        self.serving = asyncio.Event()
        self._offline = systemd.OfflineClock()

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        # Checked before anything starts: a non-loopback address is refused (it serves unauthenticated).
        ms_cfg = MetaServerConfig.from_address(cfg.meta_server.server) if cfg.meta_server.enable else None
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        self._ca_pem, self._cert = await ensure_credentials(cfg)
        self.store = Store(cfg.database)
        await self.store.open()
        self.upstream = UpstreamQueue(cfg.upstream_db)
        await self.upstream.open()
        host, port = cfg.cloud_ws
        hub_cfg = EdgeHubConfig.for_cloud(
            host,
            self.node_name,
            port=port,
            project_id=cfg.edge_hub.project_id,
            heartbeat=cfg.edge_hub.heartbeat,
            handshake_timeout=cfg.edge_hub.handshake_timeout,
            send_timeout=cfg.edge_hub.write_deadline,
            compress_window_bits=cfg.edge_hub.compress_window_bits,
        )
        self.hub = EdgeHub(hub_cfg, self._ca_pem, self._cert, self._route, on_connected=self._on_connected)
        self.meta = MetaManager(self.store, self.hub, node_name=self.node_name)
        upstream = self.upstream
        node_facts = self._node_facts() if cfg.edged.enable else None
        self.agent = NodeAgent(
            self.node_name,
            cfg.edged.node_labels,
            lambda res, op, content, group: upstream.put(res, op, content, group=group),
            config=NodeAgentConfig(
                status_interval=cfg.edged.node_status_update_frequency,
                status_report_interval=cfg.edged.node_status_report_frequency,
                lease_duration=cfg.edged.node_lease_duration_seconds,
                lease_interval=cfg.edged.node_lease_duration_seconds / 4,
                node_ip=cfg.edged.node_ip,
                data_dir=cfg.data_path,
                register=cfg.edged.register_node,
                system_reserved=cfg.edged.system_reserved,
                kube_reserved=cfg.edged.kube_reserved,
            ),
            extra=node_facts,
        )
        hub, meta, agent = self.hub, self.meta, self.agent
        self.sup.spawn(hub.run, "edgehub")
        self.sup.spawn(meta.run, "metamanager")
        self.sup.spawn(lambda: upstream.run(hub), "upstream")
        self.sup.spawn(agent.run, "nodeagent")
        if cfg.edged.enable:
            self._start_edged()
        if cfg.edge_stream.enable:
            self._start_edgestream()
        if ms_cfg is not None:
            self.metaserver = MetaServer(self.store, ms_cfg, forward=self.forward_write)
            self.sup.spawn(self._serve_metaserver, "metaserver")
        else:
            self.serving.set()
        if cfg.edge_hub.rotate_certificates and cfg.cloud_http is not None:
            self.sup.spawn(self._rotation_loop, "cert-rotation")
        log.info("edgecore %s started (data %s)", self.node_name, cfg.data_dir)

    async def _serve_metaserver(self) -> None:
        """MetaServer.run, plus `serving` set once it listens (a failed bind is retried by the Supervisor)."""
        assert self.metaserver is not None
        await self.metaserver.start()
        self.serving.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self.metaserver.stop()

    async def status_line(self) -> str:
        """systemd's STATUS=: the cloud link and the pods this node serves."""
        assert self.store is not None
        connected = bool(self.hub and self.hub.connected)
        pods = len((await self.store.list(POD_KEY)).items)
        host, port = self.config.cloud_ws
        cloud = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return systemd.edge_status(cloud, connected, pods, self._offline.observe(connected))

    def _node_facts(self) -> Any:
        # Imported here: grpc is most of an idle edgecore's memory, and only pods need it.
        from .edged.cri import CriClient
        from .edged.nodeinfo import NodeFacts

        self.cri = CriClient(self.config.edged.runtime_endpoint)
        return NodeFacts(self.cri, nodefs=self.config.data_path)

    def _start_edged(self) -> None:
        from .edged.config import EdgedConfig
        from .edged.images import ImageGC, ImageGCPolicy
        from .edged.manager import Edged
        from .edged.tokens import TokenManager
        from .edged.volumes import VolumeManager
        from .nodeagent import LinuxHost

        assert self.store is not None and self.upstream is not None and self.cri is not None
        cfg = self.config
        ed = cfg.edged
        volumes = VolumeManager(cfg.edged_root)
        self.edged = Edged(
            self.store,
            self._edged_upstream,
            EdgedConfig(
                node_name=self.node_name,
                runtime_endpoint=ed.runtime_endpoint,
                root_dir=cfg.edged_root,
                pod_log_dir=Path(ed.pod_logs_dir),
                cluster_dns=ed.cluster_dns,
                cluster_domain=ed.cluster_domain,
                cgroup_parent=ed.cgroup_root,
                node_ip=ed.node_ip or next(iter(LinuxHost().ipv4_addresses()), ""),
            ),
            cri=self.cri,
            volumes=volumes,
            tokens=TokenManager(self.forward_write, volumes.pod_dir),
        )
        # Edged waits (and says so in the log) while the runtime is unreachable; the rest keeps serving.
        self.sup.spawn(self.edged.run, "edged")
        gc = ImageGC(
            self.cri,
            policy=ImageGCPolicy(
                high_threshold_percent=ed.image_gc_high_threshold,
                low_threshold_percent=ed.image_gc_low_threshold,
            ),
        )
        self.sup.spawn(gc.run, "image-gc")

    def _start_edgestream(self) -> None:
        from .edgestream import EdgeStream, EdgeStreamConfig

        assert self.store is not None
        cfg = self.config
        stream = EdgeStream(
            EdgeStreamConfig(
                server=cfg.stream_server,
                node_name=self.node_name,
                node_ip=cfg.edged.node_ip,
                handshake_timeout=cfg.edge_stream.handshake_timeout,
            ),
            self._credentials,
            self.store,
            lambda: self.edged.cri if self.edged is not None else None,
        )
        self.edgestream = stream
        self.sup.spawn(stream.run, "edgestream")

    def _credentials(self) -> tuple[bytes, certs.KeyPair]:
        assert self._cert is not None  # the current pair: rotation replaces it for the next dial
        return self._ca_pem, self._cert

    async def _edged_upstream(self, resource: str, op: str, content: Any, group: str) -> object:
        """edged's reports: queued for the cloud, and pod statuses also written to the edge store
        (the MetaServer must show the node's truth, e.g. pod IPs after a restart, while offline)."""
        assert self.upstream is not None and self.meta is not None
        queued = await self.upstream.put(resource, op, content, group=group)
        if op == OP_PATCH and f"/{RT_PODPATCH}/" in resource:
            ns, _, name = resource.partition(f"/{RT_PODPATCH}/")
            try:
                await self.meta.record_pod_status(ns, name, content)
            except (ValueError, StoreError) as e:
                log.warning("edgecore: pod %s/%s status not recorded locally: %s", ns, name, e)
        return queued

    async def stop(self) -> None:
        if self.hub is not None:
            self.hub.stop()
        await self.sup.stop()
        if self.edged is not None:
            await self.edged.stop()
        if self.cri is not None:
            await self.cri.close()
        self.pending.cancel_all()
        if self.upstream is not None:
            await self.upstream.close()
        if self.store is not None:
            await self.store.close()
        self.stopped.set()
        log.info("edgecore %s stopped", self.node_name)

    async def run_until_signalled(self) -> None:
        """start, wait for SIGTERM/SIGINT, stop cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            if await _first_set(self.serving, stop) is self.serving:
                systemd.ready(await self.status_line())
                systemd.spawn_watchdog(self.sup)
                systemd.spawn_status(self.sup, self.status_line)
                await stop.wait()
            log.info("edgecore: signal received, shutting down")
            systemd.stopping("stopping: pods keep running in containerd")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    # ---- router --------------------------------------------------------------------------------

    async def _route(self, msg: Message) -> None:
        assert self.upstream is not None and self.meta is not None and self.hub is not None
        if msg.is_reply:
            if not self.upstream.deliver_reply(msg) and not self.pending.deliver(msg):
                # e.g. the answer to the inventory, or to a status nobody waits for.
                log.debug("reply %s to %s: nobody waiting", msg.operation, msg.parent_msg_id)
            if msg.operation == OP_ERROR:
                log.info("cloud error for %s: %s", msg.resource, msg.content)
                if self.agent is not None and msg.resource == f"null/{RT_NODEPATCH}/{self.node_name}":
                    if str(msg.content).startswith("404"):
                        # The Node was deleted in the cloud (kubectl delete node): register again,
                        # as the kubelet does when its status update finds no Node.
                        log.warning(
                            "edgecore: Node %s is gone in the cloud; registering again", self.node_name
                        )
                        self.agent.request_registration()
            return
        if msg.operation == OP_QUERY:
            await self.hub.send(await self.meta.query(msg))
            return
        await self.meta.handle(msg)

    async def _on_connected(self) -> None:
        assert self.upstream is not None and self.meta is not None
        # Wake the drain first: what piled up offline goes out while the inventory is answered.
        self.upstream.changed.set()
        await self.meta.on_connected()

    async def request(self, msg: Message, within: float = REQUEST_TIMEOUT) -> Message:
        """Send ``msg`` to the cloud and wait for its reply (for local modules asking the cloud)."""
        assert self.hub is not None
        fut = self.pending.expect(msg)
        try:
            if not await self.hub.send(msg):
                raise ConnectionError("edgehub is not connected")
            async with asyncio.timeout(within):
                return await fut
        finally:
            self.pending.forget(msg)

    async def forward_write(self, req: ApiRequest) -> ApiReply:
        """A local app's write at the MetaServer, performed by the cloud as this node."""
        assert self.hub is not None
        if not self.hub.connected:
            raise ConnectionError("the cloud is not connected")
        reply = await self.request(req.message(METASERVER_SOURCE, self.node_name))
        if reply.operation == OP_ERROR:
            # The cloud refused the message itself (not the API call): say why, as a Status.
            text = str(reply.content)
            code = 403 if text.startswith("forbidden") else 400 if text.startswith("bad request") else 503
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": text,
                "code": code,
            }
            return ApiReply(code, "application/json", orjson.dumps(status))
        return ApiReply.from_content(reply.content)

    # ---- certificate rotation ------------------------------------------------------------------

    async def rotate_if_due(self) -> bool:
        """Renew the node certificate once it is due; the new one is used from the next dial."""
        assert self._cert is not None and self.hub is not None
        if not client.needs_rotation(self._cert):
            return False
        http = self.config.cloud_http
        assert http is not None
        pair = await client.rotate_certificate(http[0], http[1], self._ca_pem, self._cert, self.node_name)
        pair.save(self.config.cert_file, self.config.key_file)
        self._cert = pair
        self.hub.use_certificate(pair)
        log.info("node certificate rotated; valid until %s", pair.cert.not_valid_after_utc)
        return True

    async def _rotation_loop(self) -> None:
        while True:
            try:
                await self.rotate_if_due()
            except client.BootstrapError as e:
                # Retried at the next check; the current certificate stays valid meanwhile.
                log.warning("certificate rotation failed: %s", e)
            await asyncio.sleep(self.config.edge_hub.rotation_check_interval)

    def status(self) -> dict[str, Any]:
        hub = self.hub
        return {
            "node": self.node_name,
            "connected": bool(hub and hub.connected),
            "upstreamPending": len(self.upstream) if self.upstream else 0,
            "supervisorFailures": self.sup.failures,
        }


async def _first_set(*events: asyncio.Event) -> asyncio.Event:
    """The first of ``events`` to be set (e.g. SIGTERM while the MetaServer still cannot bind)."""
    waiters = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return waiters[next(iter(done))]


async def run(config: EdgeCoreConfig) -> None:
    core = EdgeCore(config)
    with contextlib.suppress(asyncio.CancelledError):
        await core.run_until_signalled()


__all__ = ["CredentialsError", "EdgeCore", "PendingRequests", "ensure_credentials", "run"]
