"""The agent's Prometheus /metrics and /healthz (plain HTTP, loopback by default), and collectors that
turn the tunnel's and relay's plain counters into metric families at scrape time.

The HTTP side is a few lines on asyncio streams rather than aiohttp.web: three GET routes, one
request per connection, and ~2 MiB less resident in every agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

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


# A request head larger than this, or slower than READ_TIMEOUT_S, is answered 400/dropped; more than
# MAX_CONNECTIONS at once are closed unanswered (scrapers and probes need one or two).
MAX_HEAD_BYTES = 8192
READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
TEXT = "text/plain; charset=utf-8"


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
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metrics server not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEAD_BYTES)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._conns.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            status, ctype, body = await self._route(head)
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self._conns.discard(task)
            writer.close()

    async def _route(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, TEXT, b"bad request\n"
        if parts[0] != b"GET":
            return 405, TEXT, b"only GET\n"
        path = parts[1].split(b"?", 1)[0]
        if path == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY) + generate_latest(self.registry)
        if path == b"/healthz":
            failed = sorted(k for k, ok in (await self.health()).items() if not ok)
            if failed:
                return 503, TEXT, ("not serving: " + ", ".join(failed) + "\n").encode()
            return 200, TEXT, b"ok\n"
        if path == b"/status":
            return 200, "application/json", json.dumps(self.status(), sort_keys=True).encode()
        return 404, TEXT, b"not found\n"
