"""The API server's one configuration table: every setting, its default, and its validation."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kubeedge.store import StoreConfig

_PATHS = ("data_dir", "manifests_dir", "node_stream_cert", "node_stream_key", "node_stream_ca")


@dataclass(frozen=True)
class ApiServerConfig:
    data_dir: Path = Path("/var/lib/kubeedge/apiserver")
    listen: str = "127.0.0.1:6443"
    # Extra names and addresses the serving certificate is valid for (besides localhost/listen IP).
    cert_sans: tuple[str, ...] = ()
    service_cidr: str = "10.96.0.0/12"
    node_port_range: str = "30000-32767"
    cluster_domain: str = "cluster.local"
    max_body_bytes: int = 3 * 1024 * 1024
    # Seconds between watch bookmarks (clients asked allowWatchBookmarks=true).
    bookmark_interval: float = 30.0
    # A watch that wrote less than this many seconds ago collects further events until the next
    # tick and sends them in one write (0 disables). Idle watches still send at once; busy ones
    # trade up to this much latency for far fewer writes when many watchers follow hot resources.
    watch_linger: float = 0.03
    # A watch ends after this many seconds at most (clients re-watch from their last revision).
    max_watch_seconds: int = 1800
    # List page size cap, so one request cannot build an unbounded response.
    max_list_limit: int = 100_000
    manifests_dir: Path | None = None
    # Controllers run in this process ("all", "none", or a comma-separated list, "-x" to exclude);
    # they reach the state through the API like any client. Run them apart with kubeedge.controllers.
    controllers: str = "all"
    # Events older than this (by their last occurrence) are deleted, as kube-apiserver's --event-ttl.
    event_ttl: float = 3600.0
    log_level: str = "INFO"
    store: StoreConfig = field(default_factory=StoreConfig)
    # Where pods/log, exec, attach and portforward go: a node stream server (cloudcore's cloudstream,
    # https://HOST:10003). Empty: those answer 503. Without node_stream_cert/key the server issues its
    # own client certificate from its CA; node_stream_ca defaults to its CA.
    node_stream_url: str = ""
    node_stream_cert: Path | None = None
    node_stream_key: Path | None = None
    node_stream_ca: Path | None = None

    def __post_init__(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen: expected HOST:PORT, got {self.listen!r}")
        net = ipaddress.ip_network(self.service_cidr, strict=True)
        if net.num_addresses < 16:
            raise ValueError(f"service_cidr {self.service_cidr} is too small")
        lo, _, hi = self.node_port_range.partition("-")
        if not (lo.isdigit() and hi.isdigit() and 0 < int(lo) < int(hi) < 65536):
            raise ValueError(f"node_port_range: expected LOW-HIGH, got {self.node_port_range!r}")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if self.event_ttl <= 0:
            raise ValueError("event_ttl must be positive")
        if not 0 <= self.watch_linger <= 1:
            raise ValueError("watch_linger must be between 0 and 1 second")
        if self.bookmark_interval <= 0 or self.max_watch_seconds <= 0:
            raise ValueError("bookmark_interval and max_watch_seconds must be positive")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level: unknown level {self.log_level!r}")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def node_ports(self) -> tuple[int, int]:
        lo, _, hi = self.node_port_range.partition("-")
        return int(lo), int(hi)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ApiServerConfig:
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in values.items():
            name = k.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown apiserver setting {k!r} (known: {', '.join(sorted(known))})")
            if name == "store":
                kw[name] = StoreConfig(**v)
            elif name in _PATHS and v is not None:
                kw[name] = Path(v)
            elif name == "cert_sans":
                kw[name] = tuple(v)
            else:
                kw[name] = v
        return cls(**kw)


def parse_args(argv: list[str] | None = None) -> ApiServerConfig:
    p = argparse.ArgumentParser(prog="kubeedge-apiserver", description="Kubernetes-compatible API server")
    p.add_argument("--config", type=Path, help="YAML file with settings (flags override it)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--listen", help="HOST:PORT to serve HTTPS on (default 127.0.0.1:6443)")
    p.add_argument("--service-cidr")
    p.add_argument("--node-port-range")
    p.add_argument("--cert-san", action="append", dest="cert_sans", help="extra serving cert name/IP")
    p.add_argument("--manifests-dir", type=Path, help="manifests (CRDs) applied at start")
    p.add_argument("--controllers", help="embedded controllers: all (default), none, or a list")
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    values: dict[str, Any] = {}
    if a.config:
        loaded = yaml.safe_load(a.config.read_text()) or {}
        if not isinstance(loaded, dict):
            p.error(f"{a.config}: expected a mapping of settings")
        values.update(loaded)
    for k in (
        "data_dir",
        "listen",
        "service_cidr",
        "node_port_range",
        "cert_sans",
        "manifests_dir",
        "controllers",
        "log_level",
    ):
        v = getattr(a, k)
        if v is not None:
            values[k] = v
    try:
        return ApiServerConfig.from_mapping(values)
    except (ValueError, TypeError) as e:
        p.error(str(e))
        raise  # unreachable: p.error exits
