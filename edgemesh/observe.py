"""The agent's Prometheus /metrics and /healthz (plain HTTP, loopback by default), and collectors that
turn the tunnel's and relay's plain counters into metric families at scrape time."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

Health = Callable[[], Awaitable[dict[str, bool]]]


class StatsCollector:
    """Metric families from a `stats()` callable, read at scrape time (no copies kept in between)."""

    def __init__(self, render: Callable[[], Iterator[Metric]]) -> None:
        self._render = render

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._render()
        except Exception:  # a scrape must not fail because one part is half torn down
            log.exception("edgemesh: metrics collection failed")


def tunnel_families(stats: dict[str, Any], paths: dict[str, str]) -> Iterator[Metric]:
    opened = CounterMetricFamily("edgemesh_tunnel_streams_opened", "Streams opened to peers", labels=["path"])
    for path, n in stats["streams_opened"].items():
        opened.add_metric([path], n)
    yield opened
    for name, key, doc in (
        ("edgemesh_tunnel_streams_failed", "streams_failed", "Stream opens that failed"),
        ("edgemesh_tunnel_streams_accepted", "streams_accepted", "Inbound streams served"),
        ("edgemesh_tunnel_streams_refused", "streams_refused", "Inbound streams refused"),
        ("edgemesh_tunnel_handshakes_refused", "handshakes_refused", "TLS/identity failures"),
    ):
        yield CounterMetricFamily(name, doc, value=stats[key])
    b = CounterMetricFamily("edgemesh_tunnel_bytes", "Tunnel bytes", labels=["path", "direction"])
    for path, n in stats["bytes_in"].items():
        b.add_metric([path, "in"], n)
    for path, n in stats["bytes_out"].items():
        b.add_metric([path, "out"], n)
    yield b
    by_path = GaugeMetricFamily("edgemesh_tunnel_peers", "Peers with a session, by path", labels=["path"])
    for path, n in stats["peers_by_path"].items():
        by_path.add_metric([path], n)
    yield by_path
    # One series per connected peer (bounded by the node count): which path it takes right now.
    peer = GaugeMetricFamily(
        "edgemesh_tunnel_peer_path", "1 for the path each connected peer uses", labels=["peer", "path"]
    )
    for node, path in sorted(paths.items()):
        peer.add_metric([node, path], 1)
    yield peer
    yield GaugeMetricFamily(
        "edgemesh_tunnel_relays_connected",
        "Relays this agent holds a session to",
        value=stats["relays_connected"],
    )


def relay_families(stats: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "edgemesh_relay_nodes_connected",
        "Nodes holding a session to this relay",
        value=len(stats["nodes_connected"]),
    )
    yield CounterMetricFamily(
        "edgemesh_relay_streams_spliced", "Streams relayed", value=stats["spliced_streams"]
    )
    yield CounterMetricFamily(
        "edgemesh_relay_streams_refused", "Streams refused", value=stats["refused_streams"]
    )
    yield CounterMetricFamily(
        "edgemesh_relay_handshakes_refused",
        "Connections refused at TLS/identity",
        value=stats["handshakes_refused"],
    )
    yield CounterMetricFamily(
        "edgemesh_relay_bytes", "Bytes relayed (finished streams)", value=stats["bytes_relayed"]
    )


class MetricsServer:
    """/metrics: the process-wide registry (DNS counters) plus this agent's own collectors;
    /healthz: 200 "ok" when every part reports serving, else 503 naming the parts that do not;
    /status: a JSON document for humans and tests (paths, counters)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.host, self._port = host, port
        self.registry = registry
        self.health = health
        self.status = status
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        assert self._runner is not None
        for addr in self._runner.addresses:
            return int(addr[1])
        raise RuntimeError("metrics server not listening")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY) + generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        parts = await self.health()
        failed = sorted(k for k, ok in parts.items() if not ok)
        if failed:
            return web.Response(status=503, text="not serving: " + ", ".join(failed) + "\n")
        return web.Response(text="ok\n")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.status(), sort_keys=True), content_type="application/json")
