"""Build the DNS server an agent runs from its configuration (the agent only starts and stops it)."""

from __future__ import annotations

from ..config import AgentConfig, parse_server
from ..model import ServiceTable
from .cache import AnswerCache
from .forward import Forwarder
from .resolvconf import Upstreams
from .server import DNSServer
from .zone import ClusterZone


def dns_from_config(cfg: AgentConfig, table: ServiceTable) -> DNSServer:
    d = cfg.dns
    host, port = cfg.dns_listen
    servers = [parse_server(s) for s in d.upstream_servers] or None
    upstreams = Upstreams(d.upstream_resolv_conf, servers, exclude=[(host, port)])
    forwarder = Forwarder(
        upstreams,
        AnswerCache(d.cache_size),
        timeout=d.upstream_timeout,
        max_inflight=d.max_inflight,
        min_ttl=d.cache_min_ttl,
        max_ttl=d.cache_max_ttl,
        negative_ttl=d.negative_ttl,
    )
    zone = ClusterZone(table, d.cluster_domain, d.ttl, ns_ip=host)
    return DNSServer(
        zone, forwarder, host, port, max_tcp_clients=d.max_tcp_clients, max_pending=d.max_inflight
    )
