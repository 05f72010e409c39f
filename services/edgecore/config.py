"""edgecore configuration: KubeEdge's edgecore.yaml (edgecore.config.kubeedge.io/v1alpha2) as one
frozen dataclass with defaults and validation.

Only the keys this edgecore acts on are accepted; anything else is an error naming the key, so a typo
never silently falls back to a default. Unlike cloudcore's and the mesh agent's tables (loaded by
kubeedge.runtime.configtable) the document is read key by key: KubeEdge spells several settings in more
than one place across its versions (the CRI endpoint in five), and the flat sections here take any."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from kubeedge.runtime.configtable import ConfigError, apply_overrides, read_document

__all__ = ["ConfigError", "apply_overrides"]  # with the sections below: the config's API

API_VERSION: Final = "edgecore.config.kubeedge.io/v1alpha2"
KIND: Final = "EdgeCore"
DEFAULT_DATA_DIR: Final = "/var/lib/kubeedge/edge"
DEFAULT_PROJECT_ID: Final = "e632aba927ea4ac2b575ec1603d56f10"
# How often the certificate's age is checked against the rotation threshold.
DEFAULT_ROTATION_CHECK: Final = 3600.0

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class EdgeHubSection:
    http_server: str = ""  # https://<cloud>:10002 — certificate bootstrap and rotation
    websocket_server: str = ""  # <cloud>:10000
    handshake_timeout: float = 30.0
    write_deadline: float = 15.0
    # The websocket layer's ping/pong (one per heartbeat) detects a dead peer; a separate read
    # deadline is accepted for edgecore.yaml compatibility.
    read_deadline: float = 15.0
    heartbeat: float = 15.0
    compress_window_bits: int = 12  # permessage-deflate toward the cloud; 0 = off
    project_id: str = DEFAULT_PROJECT_ID
    token: str = ""  # only used to obtain the first certificate
    tls_ca_file: str = ""  # default <dataDir>/ca/rootCA.crt
    tls_cert_file: str = ""  # default <dataDir>/certs/server.crt
    tls_private_key_file: str = ""  # default <dataDir>/certs/server.key
    rotate_certificates: bool = True
    rotation_check_interval: float = DEFAULT_ROTATION_CHECK


@dataclass(frozen=True)
class EdgedSection:
    hostname_override: str = ""  # the node name; default: this host's name, lower-cased
    node_ip: str = ""  # InternalIP; default: the host's first non-loopback IPv4
    node_status_update_frequency: float = 10.0
    # An unchanged status is re-sent this often (kubelet's nodeStatusReportFrequency); the Lease is
    # the liveness signal in between.
    node_status_report_frequency: float = 300.0
    node_labels: dict[str, str] = field(default_factory=dict)
    register_node: bool = True
    # The Lease is renewed every quarter of its duration (kubelet's rule: 40 s → every 10 s).
    node_lease_duration_seconds: int = 40
    # Running pods through CRI (KubeEdge's default: on). A node without a container runtime sets it
    # false: the node then reports NotReady otherwise, and the gRPC client costs ~15 MB of RSS.
    enable: bool = True
    runtime_endpoint: str = "unix:///run/containerd/containerd.sock"
    root_directory: str = ""  # default <dataDir>/edged (pods' volumes)
    pod_logs_dir: str = "/var/log/pods"
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    cgroup_root: str = "/kubeedge"  # pods' cgroups live below it (cgroupfs)
    # Quantities by resource name; allocatable = capacity minus both (kubelet's systemReserved/kubeReserved).
    system_reserved: dict[str, str] = field(default_factory=dict)
    kube_reserved: dict[str, str] = field(default_factory=dict)
    # Image GC: collect at this disk usage (percent) down to the low mark; KubeEdge's defaults.
    image_gc_high_threshold: int = 80
    image_gc_low_threshold: int = 40


@dataclass(frozen=True)
class MetaServerSection:
    enable: bool = True
    server: str = "127.0.0.1:10550"


@dataclass(frozen=True)
class EdgeStreamSection:
    """The stream tunnel to cloudstream for kubectl logs/exec/attach/port-forward (KubeEdge's edgeStream)."""

    enable: bool = False
    server: str = ""  # <cloud>:10004; default: the edgeHub websocket host, port 10004
    handshake_timeout: float = 30.0


@dataclass(frozen=True)
class EdgeCoreConfig:
    data_dir: str = DEFAULT_DATA_DIR
    data_source: str = ""  # default <dataDir>/edgecore.db
    edge_hub: EdgeHubSection = field(default_factory=EdgeHubSection)
    edged: EdgedSection = field(default_factory=EdgedSection)
    meta_server: MetaServerSection = field(default_factory=MetaServerSection)
    edge_stream: EdgeStreamSection = field(default_factory=EdgeStreamSection)

    def __post_init__(self) -> None:
        hub, ed = self.edge_hub, self.edged
        if not self.data_dir:
            raise ConfigError("dataDir must not be empty")
        if hub.compress_window_bits and not 9 <= hub.compress_window_bits <= 15:
            raise ConfigError("modules.edgeHub.websocket.compressWindowBits must be 0 (off) or 9..15")
        if not hub.websocket_server:
            raise ConfigError("modules.edgeHub.websocket.server is required (<cloud>:10000)")
        _host_port(hub.websocket_server, "modules.edgeHub.websocket.server")
        if hub.http_server:
            u = urlsplit(hub.http_server)
            if u.scheme != "https" or not u.hostname:
                raise ConfigError(f"modules.edgeHub.httpServer {hub.http_server!r} is not an https:// URL")
        if hub.token and not hub.http_server:
            raise ConfigError("modules.edgeHub.token needs modules.edgeHub.httpServer to join with")
        if hub.token and hub.token.count(".") != 3:
            raise ConfigError("modules.edgeHub.token is not a bootstrap token (<ca hash>.<jwt>)")
        for name in ("handshake_timeout", "write_deadline", "read_deadline", "heartbeat"):
            if getattr(hub, name) <= 0:
                raise ConfigError(f"modules.edgeHub {name} must be positive")
        if hub.rotation_check_interval <= 0:
            raise ConfigError("modules.edgeHub.rotationCheckInterval must be positive")
        if not hub.project_id or "/" in hub.project_id:
            raise ConfigError("modules.edgeHub.projectID must be non-empty without '/'")
        if not _DNS1123.match(self.node_name) or len(self.node_name) > 253:
            raise ConfigError(f"modules.edged.hostnameOverride {self.node_name!r} is not a DNS-1123 name")
        if ed.node_lease_duration_seconds < 1:
            raise ConfigError("modules.edged.nodeLeaseDurationSeconds must be at least 1")
        if ed.node_status_update_frequency <= 0:
            raise ConfigError("modules.edged.nodeStatusUpdateFrequency must be positive")
        if ed.node_status_report_frequency < ed.node_status_update_frequency:
            raise ConfigError(
                "modules.edged.nodeStatusReportFrequency must be at least nodeStatusUpdateFrequency"
            )
        if ed.enable and not ed.runtime_endpoint.startswith(("unix:", "/")):
            raise ConfigError(f"modules.edged.runtimeEndpoint {ed.runtime_endpoint!r} is not a unix socket")
        if not 0 <= ed.image_gc_low_threshold <= ed.image_gc_high_threshold <= 100:
            raise ConfigError(
                "modules.edged image GC thresholds: need 0 <= imageGCLowThreshold <= imageGCHighThreshold <= 100"
            )
        for which, reserved in (("systemReserved", ed.system_reserved), ("kubeReserved", ed.kube_reserved)):
            if reserved:
                _check_quantities(reserved, f"modules.edged.tailoredKubeletConfig.{which}")
        for k, v in ed.node_labels.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise ConfigError(f"modules.edged.nodeLabels: {k!r}: {v!r} is not a string label")
        if self.meta_server.enable:
            _host_port(self.meta_server.server, "modules.metaManager.metaServer.server")
        if self.edge_stream.enable:
            _host_port(self.stream_server, "modules.edgeStream.server")
            if self.edge_stream.handshake_timeout <= 0:
                raise ConfigError("modules.edgeStream.handshakeTimeout must be positive")

    # ---- derived values ------------------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self.edged.hostname_override or socket.gethostname().lower()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database(self) -> Path:
        return Path(self.data_source) if self.data_source else self.data_path / "edgecore.db"

    @property
    def edged_root(self) -> Path:
        return Path(self.edged.root_directory) if self.edged.root_directory else self.data_path / "edged"

    @property
    def upstream_db(self) -> Path:
        return self.data_path / "upstream.db"

    @property
    def ca_file(self) -> Path:
        return Path(self.edge_hub.tls_ca_file or self.data_path / "ca" / "rootCA.crt")

    @property
    def cert_file(self) -> Path:
        return Path(self.edge_hub.tls_cert_file or self.data_path / "certs" / "server.crt")

    @property
    def key_file(self) -> Path:
        return Path(self.edge_hub.tls_private_key_file or self.data_path / "certs" / "server.key")

    @property
    def cloud_ws(self) -> tuple[str, int]:
        return _host_port(self.edge_hub.websocket_server, "modules.edgeHub.websocket.server")

    @property
    def stream_server(self) -> str:
        """cloudstream's tunnel address: configured, or the edgeHub websocket host on port 10004."""
        if self.edge_stream.server:
            return self.edge_stream.server
        host = self.cloud_ws[0]
        return f"[{host}]:10004" if ":" in host else f"{host}:10004"

    @property
    def cloud_http(self) -> tuple[str, int] | None:
        if not self.edge_hub.http_server:
            return None
        u = urlsplit(self.edge_hub.http_server)
        assert u.hostname is not None
        return u.hostname, u.port or 10002


def _check_quantities(values: dict[str, str], where: str) -> None:
    # Imported only when something is reserved: most edge nodes never need the quantity parser.
    from kubeedge.kube.quantity import parse_quantity

    for name, q in values.items():
        try:
            if parse_quantity(q) < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{where}.{name}: {q!r} is not a non-negative quantity") from None


def _host_port(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where} {value!r} is not <host>:<port>")
    return host, int(port)


# ---- YAML → config ---------------------------------------------------------------------------------


class _Section:
    """One mapping of the document: typed reads, and an error for any key nobody read."""

    def __init__(self, doc: Any, where: str) -> None:
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{where or 'the document'} must be a mapping")
        self.doc: dict[str, Any] = doc
        self.where = where
        self.seen: set[str] = set()

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.doc or self.doc[key] is None:
            return default
        v = self.doc[key]
        # YAML booleans are ints to Python; a bool where a number belongs is a mistake.
        if isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"{self._path(key)}: expected {_names(kind)}, got a boolean")
        if not isinstance(v, kind):
            raise ConfigError(f"{self._path(key)}: expected {_names(kind)}, got {type(v).__name__}")
        return v

    def num(self, key: str, default: float) -> float:
        return float(self.get(key, (int, float), default))

    def sub(self, key: str) -> _Section:
        self.seen.add(key)
        return _Section(self.doc.get(key), self._path(key))

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.seen)
        if unknown:
            raise ConfigError(f"unknown key(s) in {self.where or 'the document'}: {', '.join(unknown)}")


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def from_dict(doc: Any) -> EdgeCoreConfig:
    root = _Section(doc, "")
    api = root.get("apiVersion", str, API_VERSION)
    if api != API_VERSION:
        raise ConfigError(f"apiVersion {api!r} is not supported (want {API_VERSION})")
    kind = root.get("kind", str, KIND)
    if kind != KIND:
        raise ConfigError(f"kind {kind!r} is not supported (want {KIND})")
    data_dir = root.get("dataDir", str, DEFAULT_DATA_DIR)
    db = root.sub("database")
    data_source = db.get("dataSource", str, "")
    db.get("driverName", str, "sqlite3")
    db.get("aliasName", str, "default")
    db.done()

    modules = root.sub("modules")
    hub = modules.sub("edgeHub")
    hub.get("enable", bool, True)
    ws = hub.sub("websocket")
    ws.get("enable", bool, True)
    d = EdgeHubSection()
    edge_hub = EdgeHubSection(
        http_server=hub.get("httpServer", str, d.http_server),
        websocket_server=ws.get("server", str, d.websocket_server),
        handshake_timeout=ws.num("handshakeTimeout", d.handshake_timeout),
        write_deadline=ws.num("writeDeadline", d.write_deadline),
        read_deadline=ws.num("readDeadline", d.read_deadline),
        heartbeat=hub.num("heartbeat", d.heartbeat),
        compress_window_bits=ws.get("compressWindowBits", int, d.compress_window_bits),
        project_id=hub.get("projectID", str, d.project_id),
        token=hub.get("token", str, d.token),
        tls_ca_file=hub.get("tlsCaFile", str, d.tls_ca_file),
        tls_cert_file=hub.get("tlsCertFile", str, d.tls_cert_file),
        tls_private_key_file=hub.get("tlsPrivateKeyFile", str, d.tls_private_key_file),
        rotate_certificates=hub.get("rotateCertificates", bool, d.rotate_certificates),
        rotation_check_interval=hub.num("rotationCheckInterval", d.rotation_check_interval),
    )
    ws.done()
    hub.done()

    ed = modules.sub("edged")
    de = EdgedSection()
    labels = ed.get("nodeLabels", dict, {})
    # KubeEdge names the CRI socket and DNS settings inside tailoredKubeletConfig (and, before v1.15,
    # tailoredKubeletFlag / remoteRuntimeEndpoint); ours is the plain runtimeEndpoint.
    kubelet = ed.sub("tailoredKubeletConfig")
    flags = ed.sub("tailoredKubeletFlag")
    # Every spelling is read (so none counts as an unknown key); the first one set wins.
    spellings = [
        ed.get("runtimeEndpoint", str, ""),
        ed.get("containerRuntimeEndpoint", str, ""),
        kubelet.get("containerRuntimeEndpoint", str, ""),
        flags.get("remoteRuntimeEndpoint", str, ""),
        ed.get("remoteRuntimeEndpoint", str, ""),
    ]
    endpoint = next((e for e in spellings if e), de.runtime_endpoint)
    cluster_dns = kubelet.get("clusterDNS", list, ed.get("clusterDNS", list, []))
    if not all(isinstance(x, str) for x in cluster_dns):
        raise ConfigError("modules.edged.tailoredKubeletConfig.clusterDNS must be a list of addresses")
    cluster_domain = kubelet.get("clusterDomain", str, ed.get("clusterDomain", str, de.cluster_domain))
    cgroup_root = kubelet.get("cgroupRoot", str, de.cgroup_root) or de.cgroup_root
    pod_logs_dir = kubelet.get("podLogsDir", str, de.pod_logs_dir)
    system_reserved = kubelet.get("systemReserved", dict, {})
    kube_reserved = kubelet.get("kubeReserved", dict, {})
    # KubeEdge >= 1.15 spells these as the kubelet does; older edgecore.yaml had them on edged itself.
    gc_high = kubelet.get(
        "imageGCHighThresholdPercent", int, ed.get("imageGCHighThreshold", int, de.image_gc_high_threshold)
    )
    gc_low = kubelet.get(
        "imageGCLowThresholdPercent", int, ed.get("imageGCLowThreshold", int, de.image_gc_low_threshold)
    )
    for which, reserved in (("systemReserved", system_reserved), ("kubeReserved", kube_reserved)):
        for k, v in reserved.items():
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise ConfigError(f"modules.edged.tailoredKubeletConfig.{which}.{k}: {v!r} is not a quantity")
    kubelet.done()
    flags.done()
    edged = EdgedSection(
        hostname_override=ed.get("hostnameOverride", str, de.hostname_override),
        node_ip=ed.get("nodeIP", str, de.node_ip),
        node_status_update_frequency=ed.num("nodeStatusUpdateFrequency", de.node_status_update_frequency),
        node_status_report_frequency=ed.num("nodeStatusReportFrequency", de.node_status_report_frequency),
        node_labels=dict(labels),
        register_node=ed.get("registerNode", bool, de.register_node),
        node_lease_duration_seconds=ed.get("nodeLeaseDurationSeconds", int, de.node_lease_duration_seconds),
        enable=ed.get("enable", bool, de.enable),
        runtime_endpoint=endpoint,
        root_directory=ed.get("rootDirectory", str, de.root_directory),
        pod_logs_dir=pod_logs_dir,
        cluster_dns=tuple(cluster_dns),
        cluster_domain=cluster_domain,
        cgroup_root=cgroup_root,
        system_reserved={str(k): str(v) for k, v in system_reserved.items()},
        kube_reserved={str(k): str(v) for k, v in kube_reserved.items()},
        image_gc_high_threshold=gc_high,
        image_gc_low_threshold=gc_low,
    )
    ed.done()

    mm = modules.sub("metaManager")
    mm.get("enable", bool, True)
    ms = mm.sub("metaServer")
    dm = MetaServerSection()
    meta_server = MetaServerSection(
        enable=ms.get("enable", bool, dm.enable), server=ms.get("server", str, dm.server)
    )
    ms.done()
    mm.done()
    es = modules.sub("edgeStream")
    des = EdgeStreamSection()
    edge_stream = EdgeStreamSection(
        enable=es.get("enable", bool, des.enable),
        server=es.get("server", str, des.server),
        handshake_timeout=es.num("handshakeTimeout", des.handshake_timeout),
    )
    es.done()
    modules.done()
    root.done()
    return EdgeCoreConfig(
        data_dir=data_dir,
        data_source=data_source,
        edge_hub=edge_hub,
        edged=edged,
        meta_server=meta_server,
        edge_stream=edge_stream,
    )


def load(path: str | Path, overrides: list[str] | None = None) -> EdgeCoreConfig:
    return from_dict(apply_overrides(read_document(Path(path)), overrides or []))
