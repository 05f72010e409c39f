"""cloudcore's one configuration: a YAML document shaped like KubeEdge's cloudcore.yaml, loaded into
frozen dataclasses with defaults and validation; ``--set a.b=c`` overrides edit the document first.

Every YAML key maps to a field through ``_key`` metadata (camelCase, as KubeEdge spells it); the
loading (unknown keys are errors naming their dotted path) is kubeedge.runtime.configtable's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kubeedge.controllers.manager import resolve as resolve_controllers
from kubeedge.pki.bootstrap import is_dns1123_subdomain
from kubeedge.runtime.configtable import ConfigError, apply_overrides, build, document, read_document

API_VERSION: Final = "cloudcore.config.kubeedge.io/v1alpha2"
KIND: Final = "CloudCore"
DEFAULT_DATA_DIR: Final = Path("/var/lib/kubeedge/cloud")
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1:10010"


def _key(name: str) -> dict[str, str]:
    return {"key": name}


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} out of range 0..65535")


def _check_address(addr: str, what: str) -> None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(f"{what}: {addr!r} is not an IP address") from None


@dataclass(frozen=True)
class KubeAPIConfig:
    # Empty: run the embedded API server (and controllers) in this process.
    kube_config: str = field(default="", metadata=_key("kubeConfig"))


@dataclass(frozen=True)
class ListenConfig:
    """A listener of cloudhub (websocket, or https for the bootstrap)."""

    enable: bool = field(default=True, metadata=_key("enable"))
    address: str = field(default="0.0.0.0", metadata=_key("address"))
    port: int = field(default=10000, metadata=_key("port"))

    def __post_init__(self) -> None:
        _check_address(self.address, "address")
        _check_port(self.port, "port")


@dataclass(frozen=True)
class CloudHubSettings:
    enable: bool = field(default=True, metadata=_key("enable"))
    # Names/IPs edges dial; they become SANs of the serving certificate.
    advertise_address: tuple[str, ...] = field(default=(), metadata=_key("advertiseAddress"))
    # Most nodes expected; reported when exceeded (cloudhub has no admission hook for it yet).
    node_limit: int = field(default=1000, metadata=_key("nodeLimit"))
    # Seconds of silence after which a session is dead (KubeEdge's cloudHub.keepaliveInterval).
    keepalive_interval: float = field(default=30.0, metadata=_key("keepaliveInterval"))
    # Seconds a send may wait on a full per-node queue before the message is dropped (and resent later).
    write_timeout: float = field(default=5.0, metadata=_key("writeTimeout"))
    # Per-node downstream queue bound.
    send_queue_limit: int = field(default=1000, metadata=_key("sendQueueLimit"))
    # Hours between bootstrap token refreshes; a token lives twice as long, so a copied one stays usable.
    token_refresh_duration: float = field(default=12.0, metadata=_key("tokenRefreshDuration"))
    # Days a node certificate is valid.
    edge_cert_signing_duration: float = field(default=365.0, metadata=_key("edgeCertSigningDuration"))
    websocket: ListenConfig = field(default_factory=ListenConfig, metadata=_key("websocket"))
    https: ListenConfig = field(default_factory=lambda: ListenConfig(port=10002), metadata=_key("https"))

    def __post_init__(self) -> None:
        for a in self.advertise_address:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                if not is_dns1123_subdomain(a):
                    raise ConfigError(
                        f"advertiseAddress {a!r} is neither an IP address nor a DNS name"
                    ) from None
        for name in ("node_limit", "send_queue_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in (
            "keepalive_interval",
            "write_timeout",
            "token_refresh_duration",
            "edge_cert_signing_duration",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        if not self.websocket.enable or not self.https.enable:
            raise ConfigError("cloudHub.websocket and cloudHub.https cannot be disabled (no other transport)")

    @property
    def token_refresh(self) -> dt.timedelta:
        return dt.timedelta(hours=self.token_refresh_duration)

    @property
    def cert_validity(self) -> dt.timedelta:
        return dt.timedelta(days=self.edge_cert_signing_duration)


@dataclass(frozen=True)
class EdgeControllerSettings:
    enable: bool = field(default=True, metadata=_key("enable"))
    resend_base: float = field(default=5.0, metadata=_key("resendBase"))
    resend_cap: float = field(default=60.0, metadata=_key("resendCap"))
    max_in_flight: int = field(default=4096, metadata=_key("maxInFlight"))
    inventory_timeout: float = field(default=10.0, metadata=_key("inventoryTimeout"))

    def __post_init__(self) -> None:
        if not self.enable:
            raise ConfigError("edgeController cannot be disabled (it is what edges talk to)")
        if not 0 < self.resend_base <= self.resend_cap:
            raise ConfigError("edgeController: need 0 < resendBase <= resendCap")
        if self.max_in_flight < 1 or not self.inventory_timeout > 0:
            raise ConfigError("edgeController: maxInFlight must be >= 1 and inventoryTimeout > 0")


@dataclass(frozen=True)
class CloudStreamSettings:
    """kubectl logs/exec/attach/port-forward to edge pods (KubeEdge's modules.cloudStream)."""

    enable: bool = field(default=False, metadata=_key("enable"))
    # Edges dial this (mTLS, node certificates) and keep it open; streams run inside.
    tunnel_address: str = field(default="0.0.0.0", metadata=_key("tunnelAddress"))
    tunnel_port: int = field(default=10004, metadata=_key("tunnelPort"))
    # The kubelet-style server the API server proxies to (mTLS, the API server's client certificate).
    stream_address: str = field(default="127.0.0.1", metadata=_key("streamAddress"))
    stream_port: int = field(default=10003, metadata=_key("streamPort"))
    max_streams_per_node: int = field(default=64, metadata=_key("maxStreamsPerNode"))

    def __post_init__(self) -> None:
        _check_address(self.tunnel_address, "cloudStream.tunnelAddress")
        _check_address(self.stream_address, "cloudStream.streamAddress")
        _check_port(self.tunnel_port, "cloudStream.tunnelPort")
        _check_port(self.stream_port, "cloudStream.streamPort")
        if self.max_streams_per_node < 1:
            raise ConfigError("cloudStream.maxStreamsPerNode must be >= 1")


@dataclass(frozen=True)
class EdgeMeshRelaySettings:
    """An EdgeMesh tunnel relay for agents without a public address (they list it in relayNodes)."""

    enable: bool = field(default=False, metadata=_key("enable"))
    address: str = field(default="0.0.0.0", metadata=_key("address"))
    port: int = field(default=20007, metadata=_key("port"))

    def __post_init__(self) -> None:
        _check_address(self.address, "edgeMeshRelay.address")
        _check_port(self.port, "edgeMeshRelay.port")


@dataclass(frozen=True)
class Modules:
    cloud_hub: CloudHubSettings = field(default_factory=CloudHubSettings, metadata=_key("cloudHub"))
    edge_controller: EdgeControllerSettings = field(
        default_factory=EdgeControllerSettings, metadata=_key("edgeController")
    )
    cloud_stream: CloudStreamSettings = field(
        default_factory=CloudStreamSettings, metadata=_key("cloudStream")
    )
    edge_mesh_relay: EdgeMeshRelaySettings = field(
        default_factory=EdgeMeshRelaySettings, metadata=_key("edgeMeshRelay")
    )


@dataclass(frozen=True)
class EmbeddedConfig:
    """The in-process API server used when kubeAPIConfig.kubeConfig is empty."""

    listen: str = field(default="127.0.0.1:6443", metadata=_key("listen"))
    # "all", "none", or a comma-separated list ("-x" excludes), as kubeedge-apiserver --controllers.
    controllers: str = field(default="all", metadata=_key("controllers"))

    def __post_init__(self) -> None:
        _host_port(self.listen, "embedded.listen")
        try:
            resolve_controllers(self.controllers.split(","))
        except ValueError as e:
            raise ConfigError(f"embedded.controllers: {e}") from None


@dataclass(frozen=True)
class MetricsConfig:
    # Plain HTTP /metrics and /healthz; loopback by default (no authentication on it).
    address: str = field(default=DEFAULT_METRICS_ADDRESS, metadata=_key("address"))

    def __post_init__(self) -> None:
        _host_port(self.address, "metrics.address")

    @property
    def host(self) -> str:
        return _host_port(self.address, "metrics.address")[0]

    @property
    def port(self) -> int:
        return _host_port(self.address, "metrics.address")[1]


@dataclass(frozen=True)
class CloudCoreConfig:
    api_version: str = field(default=API_VERSION, metadata=_key("apiVersion"))
    kind: str = field(default=KIND, metadata=_key("kind"))
    data_dir: Path = field(default=DEFAULT_DATA_DIR, metadata=_key("dataDir"))
    kube_api: KubeAPIConfig = field(default_factory=KubeAPIConfig, metadata=_key("kubeAPIConfig"))
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig, metadata=_key("embedded"))
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata=_key("metrics"))
    modules: Modules = field(default_factory=Modules, metadata=_key("modules"))
    log_level: str = field(default="INFO", metadata=_key("logLevel"))

    def __post_init__(self) -> None:
        if self.api_version != API_VERSION:
            raise ConfigError(f"apiVersion: expected {API_VERSION!r}, got {self.api_version!r}")
        if self.kind != KIND:
            raise ConfigError(f"kind: expected {KIND!r}, got {self.kind!r}")
        if not str(self.data_dir):
            raise ConfigError("dataDir must not be empty")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"logLevel: unknown level {self.log_level!r}")

    @property
    def embedded_api(self) -> bool:
        return not self.kube_api.kube_config

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CloudCoreConfig:
        return build(cls, doc)

    def to_document(self) -> dict[str, Any]:
        """The YAML-able document of this configuration (what keadm writes as cloudcore.yaml)."""
        out = document(self)
        assert isinstance(out, dict)
        return out


def load_config(
    path: Path | None = None, overrides: Sequence[str] = (), *, data_dir: Path | None = None
) -> CloudCoreConfig:
    """Read ``path`` (or start from defaults), apply ``overrides`` and an explicit ``data_dir``."""
    doc = read_document(path) if path is not None else {}
    doc = apply_overrides(doc, overrides)
    if data_dir is not None:
        doc["dataDir"] = str(data_dir)
    return CloudCoreConfig.from_document(doc)
