"""cloudcore's /metrics and /healthz.

Values are pulled from cloudhub and edgecontroller at scrape time by a custom collector, so the hot
paths (every frame, every send) carry no instrumentation. The one thing nothing records is how long
the inventory handshake takes, so ``ObservedEvents`` wraps the edgecontroller's NodeEvents and times
connect → inventory answered (once per connection, not per message)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeedge.beehive import Message

from .cloudhub import HubStats
from .hubapi import OP_INVENTORY, NodeEvents
from .sync import NodeSync

log = logging.getLogger(__name__)

PREFIX: Final = "cloudcore"
# Handshakes are one round trip plus the diff; anything past the inventory timeout (10 s) is a fallback.
HANDSHAKE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Connections whose handshake is being timed; bounded so a flood of connects cannot grow it forever.
MAX_PENDING_HANDSHAKES: Final = 100_000

HealthCheck = Callable[[], Awaitable[dict[str, bool]]]


class ObservedEvents:
    """NodeEvents in front of the real module: times the inventory handshake, remembers which nodes
    ever connected (so per-node counters can be summed after they leave) and warns past node_limit."""

    def __init__(self, inner: NodeEvents, handshake: Histogram, node_limit: int) -> None:
        self.inner = inner
        self.handshake = handshake
        self.node_limit = node_limit
        self.seen: set[str] = set()
        self._connected: set[str] = set()
        self._started: dict[str, float] = {}

    async def node_connected(self, node: str) -> None:
        self.seen.add(node)
        self._connected.add(node)
        if len(self._connected) > self.node_limit:
            log.warning("%d nodes connected, more than nodeLimit %d", len(self._connected), self.node_limit)
        if len(self._started) < MAX_PENDING_HANDSHAKES:
            self._started[node] = time.monotonic()
        await self.inner.node_connected(node)

    async def node_disconnected(self, node: str) -> None:
        self._connected.discard(node)
        self._started.pop(node, None)
        await self.inner.node_disconnected(node)

    async def message_from(self, node: str, msg: Message) -> None:
        await self.inner.message_from(node, msg)
        if msg.operation == OP_INVENTORY:
            started = self._started.pop(node, None)
            if started is not None:
                self.handshake.observe(time.monotonic() - started)


class CloudCoreCollector(Collector):
    def __init__(self, hub_stats: Callable[[], HubStats], syncs: Callable[[], Iterable[NodeSync]]) -> None:
        self.hub_stats = hub_stats
        self.syncs = syncs

    def collect(self) -> Iterable[Metric]:
        st = self.hub_stats()
        yield GaugeMetricFamily(f"{PREFIX}_connected_nodes", "Edge nodes with a live session.", st.connected)
        depth = GaugeMetricFamily(
            f"{PREFIX}_node_queue_depth",
            "Messages waiting in a connected node's send queue.",
            labels=["node"],
        )
        for node, ns in sorted(st.nodes.items()):
            depth.add_metric([node], ns.queue_depth)
        yield depth
        for name, value, text in (
            ("messages_in", st.messages_in, "Messages received from edge nodes."),
            ("messages_out", st.messages_out, "Messages sent to edge nodes."),
            ("messages_dropped", st.dropped, "Messages dropped on full node queues (resent later)."),
            ("bad_frames", st.bad_frames, "Frames from edge nodes that could not be decoded."),
            ("connections_refused", st.refused, "Connections refused before the websocket upgrade."),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value)
        syncs = list(self.syncs())
        yield CounterMetricFamily(
            f"{PREFIX}_resends",
            "Downstream messages resent for lack of an ACK.",
            sum(s.resends for s in syncs),
        )
        inflight = GaugeMetricFamily(
            f"{PREFIX}_node_in_flight", "Messages awaiting a connected node's ACK.", labels=["node"]
        )
        for s in syncs:
            if s.node in st.nodes:
                inflight.add_metric([s.node], s.in_flight)
        yield inflight


def new_registry() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=False)
    handshake = Histogram(
        f"{PREFIX}_inventory_handshake_seconds",
        "From a node's connect to its inventory answered with the difference.",
        buckets=HANDSHAKE_BUCKETS,
        registry=registry,
    )
    return registry, handshake


class MetricsServer:
    """Plain HTTP: /metrics (Prometheus text) and /healthz (200 when every check passes, else 503)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthCheck) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        for addr in self._runner.addresses:
            self.port = int(addr[1])
            break
        log.info("metrics serving on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        checks = await self.health()
        failed = sorted(k for k, ok in checks.items() if not ok)
        if failed:
            return web.Response(status=503, text="not serving: " + ", ".join(failed) + "\n")
        return web.Response(text="ok\n")
