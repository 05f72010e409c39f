"""edgemesh-agent configuration: YAML shaped like KubeEdge's edgemesh-agent config
(`agent.edgemesh.config.kubeedge.io/v1alpha1`), as frozen dataclasses with defaults and validation.

Keys are camelCase in YAML and snake_case here. An unknown key is an error naming it, so a typo never
silently falls back to a default. Sections other modules own (proxy, tunnel) start minimal; extend them
by adding fields — the loader picks new fields up from their annotations.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kubeedge.runtime.configtable import ConfigError, apply_overrides, build, camel, read_document

__all__ = ["ConfigError", "apply_overrides"]  # with the section classes below: the config's API

API_VERSION: Final = "agent.edgemesh.config.kubeedge.io/v1alpha1"
KIND: Final = "EdgeMeshAgent"
DEFAULT_DNS_IP: Final = "169.254.96.16"  # KubeEdge's link-local default
DEFAULT_TUNNEL_PORT: Final = 20006
DEFAULT_METASERVER: Final = "http://127.0.0.1:10550"
DEFAULT_RELAY_PORT: Final = 20007  # a RelayServer (agent-hosted, `edgemesh relay`, or cloudcore's)
DEFAULT_EDGECORE_DATA_DIR: Final = "/var/lib/kubeedge/edge"  # edgecore's dataDir: certs/, ca/
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class KubeAPISection:
    # Edge mode: the local MetaServer (plain HTTP on loopback, answers while the cloud is away).
    meta_server: str = DEFAULT_METASERVER
    # Cloud mode: a kubeconfig (or "in-cluster"); when set it wins over meta_server.
    kube_config: str = ""
    master: str = ""  # overrides the kubeconfig's server, like KubeEdge's kubeAPIConfig.master


@dataclass(frozen=True)
class CommonSection:
    node_name: str = ""  # default: this host's name, lower-cased (as edgecore does)
    # "EdgeMode" (agent on an edge node) or "CloudMode" (cloud nodes and relays).
    mode: str = "EdgeMode"
    bridge_device_name: str = "edgemesh0"  # the dummy interface that carries the DNS address
    bridge_device_ip: str = DEFAULT_DNS_IP
    metrics_port: int = 10551  # Prometheus /metrics and /healthz on loopback; 0 = off
    metrics_address: str = "127.0.0.1"
    # The node's edgecore state: its node certificate and CA (certs/server.*, ca/rootCA.crt) are the
    # tunnel's identity unless modules.edgeTunnel names other files, so joined nodes need no extra PKI.
    edgecore_data_dir: str = DEFAULT_EDGECORE_DATA_DIR


@dataclass(frozen=True)
class DNSSection:
    enable: bool = True
    listen_address: str = ""  # default: commonConfig.bridgeDeviceIP
    listen_port: int = 53
    manage_interface: bool = True  # create bridge_device_name with the listen address on it
    cluster_domain: str = "cluster.local"
    ttl: int = 30  # answers about the cluster (KubeEdge EdgeMesh uses 30)
    upstream_resolv_conf: str = "/etc/resolv.conf"
    upstream_servers: tuple[str, ...] = ()  # "ip" or "ip:port"; overrides the resolv.conf
    upstream_timeout: float = 2.0  # per upstream attempt
    cache_size: int = 10000  # forwarded answers kept (LRU)
    cache_max_ttl: int = 3600  # forwarded answers are cached no longer than this ...
    cache_min_ttl: int = 0  # ... and no shorter than this
    negative_ttl: int = 30  # cap for NXDOMAIN/NODATA caching (RFC 2308 uses the SOA minimum)
    max_tcp_clients: int = 256
    max_inflight: int = 1024  # forwarded queries awaiting upstream at once
    # On a clean stop: delete the DNS interface (false keeps it, so resolvers pointed at the address
    # get "connection refused" at once rather than a route to nowhere, and a restart changes nothing).
    remove_interface_on_exit: bool = False


@dataclass(frozen=True)
class ProxySection:
    enable: bool = True
    mode: str = "auto"  # "auto" | "nftables" | "iptables" (kernel rules; auto prefers nftables)
    # Userspace listeners (endpoints only the tunnel reaches). The kernel *redirects* ClusterIP traffic
    # to them, which targets the receiving interface's address: a loopback-only bind would miss pods.
    listen_address: str = "0.0.0.0"
    min_sync_interval: float = 0.1  # seconds; a burst of watch events becomes one rule transaction
    resync_interval: float = 60.0  # seconds; full re-apply (repairs tampering, picks up route changes)
    tcp_idle_timeout: float = 600.0
    udp_idle_timeout: float = 60.0


@dataclass(frozen=True)
class RelayNode:
    node_name: str = ""  # informational (cloudcore, or the node hosting the relay)
    advertise_address: tuple[str, ...] = ()  # "host[:port]" of its RelayServer (port default 20007)


@dataclass(frozen=True)
class StaticPeer:
    node_name: str = ""
    address: tuple[str, ...] = ()  # "host[:port]" of its tunnel listener (port default 20006)


@dataclass(frozen=True)
class TunnelSection:
    enable: bool = True
    listen_address: str = "0.0.0.0"
    listen_port: int = DEFAULT_TUNNEL_PORT
    # Where other agents can dial this one ("host[:port]"); published on this node's Node object as
    # edgemesh.kubeedge.io/tunnel-address so cloud-mode agents can dial it directly.
    advertise_address: tuple[str, ...] = ()
    relay_nodes: tuple[RelayNode, ...] = ()
    # Peers known by configuration. Edge-mode agents see no other Node objects (the MetaServer holds
    # only this node's), so without these every peer is reached through a relay first.
    peers: tuple[StaticPeer, ...] = ()
    enable_hole_punch: bool = True
    # Node certificate (from our CA) for mutual TLS between agents; "" = edgecore's (see
    # commonConfig.edgecoreDataDir).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 15.0
    dial_timeout: float = 3.0
    upgrade_interval: float = 30.0  # a relayed peer with known addresses is retried direct this often


@dataclass(frozen=True)
class RelaySection:
    """A RelayServer hosted by this agent (a node with a public address), or run by `edgemesh relay`."""

    enable: bool = False
    listen_address: str = "0.0.0.0"
    listen_port: int = DEFAULT_RELAY_PORT


@dataclass(frozen=True)
class Modules:
    edge_dns: DNSSection = field(default_factory=DNSSection)
    edge_proxy: ProxySection = field(default_factory=ProxySection)
    edge_tunnel: TunnelSection = field(default_factory=TunnelSection)
    edge_relay: RelaySection = field(default_factory=RelaySection)


@dataclass(frozen=True)
class AgentConfig:
    kube_api_config: KubeAPISection = field(default_factory=KubeAPISection)
    common_config: CommonSection = field(default_factory=CommonSection)
    modules: Modules = field(default_factory=Modules)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def dns(self) -> DNSSection:
        return self.modules.edge_dns

    @property
    def proxy(self) -> ProxySection:
        return self.modules.edge_proxy

    @property
    def tunnel(self) -> TunnelSection:
        return self.modules.edge_tunnel

    @property
    def relay(self) -> RelaySection:
        return self.modules.edge_relay

    @property
    def cloud_mode(self) -> bool:
        return self.common_config.mode == "CloudMode"

    def tls_files(self) -> tuple[Path, Path, Path]:
        """(cert, key, ca) of this node's tunnel identity: configured, else edgecore's."""
        t, base = self.tunnel, Path(self.common_config.edgecore_data_dir)
        return (
            Path(t.tls_cert_file or base / "certs" / "server.crt"),
            Path(t.tls_private_key_file or base / "certs" / "server.key"),
            Path(t.tls_ca_file or base / "ca" / "rootCA.crt"),
        )

    @property
    def dns_listen(self) -> tuple[str, int]:
        return (self.dns.listen_address or self.common_config.bridge_device_ip, self.dns.listen_port)


def _ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IP address") from None


def _port(value: int, where: str, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= value <= 65535:
        raise ConfigError(f"{where}: port {value} out of range")


def validate(c: AgentConfig) -> None:
    cc, d, p, t = c.common_config, c.modules.edge_dns, c.modules.edge_proxy, c.modules.edge_tunnel
    if cc.mode not in ("EdgeMode", "CloudMode"):
        raise ConfigError(f"commonConfig.mode: {cc.mode!r} is not EdgeMode or CloudMode")
    if cc.node_name and not _DNS1123.match(cc.node_name):
        raise ConfigError(f"commonConfig.nodeName: {cc.node_name!r} is not a DNS-1123 name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", cc.bridge_device_name):
        raise ConfigError(
            f"commonConfig.bridgeDeviceName: {cc.bridge_device_name!r} is not an interface name"
        )
    _ip(cc.bridge_device_ip, "commonConfig.bridgeDeviceIP")
    _ip(cc.metrics_address, "commonConfig.metricsAddress")
    _port(cc.metrics_port, "commonConfig.metricsPort", zero_ok=True)
    if d.listen_address:
        _ip(d.listen_address, "modules.edgeDNS.listenAddress")
    _port(d.listen_port, "modules.edgeDNS.listenPort", zero_ok=True)
    if not d.cluster_domain or not _DNS1123.match(d.cluster_domain.rstrip(".")):
        raise ConfigError(f"modules.edgeDNS.clusterDomain: {d.cluster_domain!r} is not a domain name")
    for name in ("ttl", "cache_max_ttl", "cache_min_ttl", "negative_ttl"):
        if getattr(d, name) < 0:
            raise ConfigError(f"modules.edgeDNS.{camel(name)}: must not be negative")
    if d.cache_min_ttl > d.cache_max_ttl:
        raise ConfigError("modules.edgeDNS.cacheMinTTL: larger than cacheMaxTTL")
    for name in ("cache_size", "max_tcp_clients", "max_inflight"):
        if getattr(d, name) < 1:
            raise ConfigError(f"modules.edgeDNS.{camel(name)}: must be at least 1")
    if d.upstream_timeout <= 0:
        raise ConfigError("modules.edgeDNS.upstreamTimeout: must be positive")
    for s in d.upstream_servers:
        parse_server(s, "modules.edgeDNS.upstreamServers")
    if p.mode not in ("auto", "nftables", "iptables"):
        raise ConfigError(f"modules.edgeProxy.mode: {p.mode!r} is not auto/nftables/iptables")
    _ip(p.listen_address, "modules.edgeProxy.listenAddress")
    for name in ("min_sync_interval", "resync_interval", "tcp_idle_timeout", "udp_idle_timeout"):
        if not getattr(p, name) > 0:
            raise ConfigError(f"modules.edgeProxy.{camel(name)}: must be positive")
    _ip(t.listen_address, "modules.edgeTunnel.listenAddress")
    _port(t.listen_port, "modules.edgeTunnel.listenPort", zero_ok=True)
    for name in ("keepalive_interval", "keepalive_timeout", "dial_timeout", "upgrade_interval"):
        if not getattr(t, name) > 0:
            raise ConfigError(f"modules.edgeTunnel.{camel(name)}: must be positive")
    if t.keepalive_timeout <= t.keepalive_interval:
        raise ConfigError("modules.edgeTunnel.keepaliveTimeout: must exceed keepaliveInterval")
    for a in t.advertise_address:
        parse_host_port(a, DEFAULT_TUNNEL_PORT, "modules.edgeTunnel.advertiseAddress")
    for r in t.relay_nodes:
        if not r.node_name:
            raise ConfigError("modules.edgeTunnel.relayNodes: every relay needs a nodeName")
        if not r.advertise_address:
            raise ConfigError(f"modules.edgeTunnel.relayNodes[{r.node_name}]: needs an advertiseAddress")
        for a in r.advertise_address:
            parse_host_port(a, DEFAULT_RELAY_PORT, "modules.edgeTunnel.relayNodes.advertiseAddress")
    for sp in t.peers:
        if not sp.node_name or not _DNS1123.match(sp.node_name):
            raise ConfigError(f"modules.edgeTunnel.peers: {sp.node_name!r} is not a node name")
        for a in sp.address:
            parse_host_port(a, DEFAULT_TUNNEL_PORT, "modules.edgeTunnel.peers.address")
    _ip(c.relay.listen_address, "modules.edgeRelay.listenAddress")
    _port(c.relay.listen_port, "modules.edgeRelay.listenPort", zero_ok=True)


def parse_host_port(value: str, default_port: int, where: str) -> tuple[str, int]:
    """ "host", "host:port", "[v6]:port" or a bare IPv6 → (host, port); host may be a DNS name."""
    v = value.strip()
    host, port = v, default_port
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ConfigError(f"{where}: bad address {value!r}")
            port = int(rest[1:])
    elif v.count(":") == 1:
        host, _, p = v.partition(":")
        if not p.isdigit():
            raise ConfigError(f"{where}: bad port in {value!r}")
        port = int(p)
    if not host:
        raise ConfigError(f"{where}: empty host in {value!r}")
    _port(port, where)
    return host, port


def parse_server(value: str, where: str = "server") -> tuple[str, int]:
    """ "ip", "ip:port", "[v6]:port" or a bare IPv6 → (ip, port); port defaults to 53."""
    host, port = parse_host_port(value, 53, where)
    _ip(host, where)
    return host, port


def from_dict(doc: Any) -> AgentConfig:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("config: expected a mapping at the top level")
    doc = dict(doc)
    api = doc.pop("apiVersion", API_VERSION)
    kind = doc.pop("kind", KIND)
    if api != API_VERSION or kind != KIND:
        raise ConfigError(f"apiVersion/kind: expected {API_VERSION} {KIND}, got {api} {kind}")
    return build(AgentConfig, doc)


def load(path: str | Path | None, overrides: Sequence[str] = ()) -> AgentConfig:
    """The file (None: all defaults) with `--set` overrides applied, validated."""
    doc = read_document(Path(path)) if path is not None else {}
    if overrides:
        doc = apply_overrides(doc, overrides)
    return from_dict(doc)
