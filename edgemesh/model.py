"""The mesh's view of Services and their endpoints: pure data plus a table with subscribers.

No I/O here. `source.py` feeds the table from list-watches; DNS and the proxy read it and subscribe
to changes. Everything a reader needs per query (cluster-IP → service, port name → endpoints, pod IP →
service) is indexed at mutation time so reads are dictionary look-ups.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

Obj = dict[str, Any]

SKIP_LABEL = "service.edgemesh.kubeedge.io/service-proxy-name"  # services with it are ignored
LB_ANNOTATION = "edgemesh.kubeedge.io/lb-policy"  # simpler alternative to an Istio DestinationRule
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # EndpointSlice → owning Service

ROUND_ROBIN = "ROUND_ROBIN"
RANDOM = "RANDOM"
CONSISTENT_HASH = "CONSISTENT_HASH"
LB_KINDS = frozenset({ROUND_ROBIN, RANDOM, CONSISTENT_HASH})
# Kubernetes' default for sessionAffinityConfig.clientIP.timeoutSeconds.
DEFAULT_AFFINITY_TIMEOUT_S = 10800
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class PortInfo:
    """One EndpointSlice port: the port number endpoints listen on, by service port name."""

    name: str
    port: int | None  # None = "all ports" (the Kubernetes meaning of a nil port)
    protocol: str  # "TCP" / "UDP" / "SCTP"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool
    node_name: str
    hostname: str = ""
    zone: str = ""


@dataclass(frozen=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str
    target_port: int | str
    node_port: int = 0


@dataclass(frozen=True)
class LbPolicy:
    kind: str = ROUND_ROBIN  # ROUND_ROBIN | RANDOM | CONSISTENT_HASH
    hash_header: str = ""  # CONSISTENT_HASH by this HTTP header ...
    hash_source_ip: bool = False  # ... or by the client's address


DEFAULT_LB = LbPolicy()


@dataclass(frozen=True)
class Service:
    key: ServiceKey
    cluster_ips: tuple[str, ...]  # () for headless ("None") and ExternalName
    ports: tuple[ServicePort, ...]
    type: str = "ClusterIP"
    session_affinity: str = "None"  # "None" / "ClientIP"
    affinity_timeout_s: int = DEFAULT_AFFINITY_TIMEOUT_S
    lb_policy: LbPolicy = DEFAULT_LB
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)
    headless: bool = False
    external_name: str = ""

    def port(self, name: str) -> ServicePort | None:
        for p in self.ports:
            if p.name == name:
                return p
        return None


@dataclass(frozen=True)
class PodRef:
    """A pod IP as seen through a Service's endpoints (for PTR answers)."""

    service: ServiceKey
    ip: str
    hostname: str  # "" when the endpoint has none


# -- parsing (pure) -----------------------------------------------------------------------------


def normalize_ip(ip: str) -> str:
    """Canonical text of an address, so "fd00::0001" and "fd00::1" index alike; junk is kept as is."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def parse_lb_annotation(value: str) -> LbPolicy | None:
    """`ROUND_ROBIN`, `RANDOM`, `CONSISTENT_HASH:header=X-User` or `CONSISTENT_HASH:source-ip`.

    Case-insensitive kind; None when the value is not understood (the caller keeps the default).
    """
    kind, _, arg = value.strip().partition(":")
    kind = kind.strip().upper().replace("-", "_")
    arg = arg.strip()
    if kind in (ROUND_ROBIN, RANDOM):
        return LbPolicy(kind) if not arg else None
    if kind != CONSISTENT_HASH:
        return None
    if arg.lower() in ("source-ip", "sourceip", "source_ip"):
        return LbPolicy(CONSISTENT_HASH, hash_source_ip=True)
    name, eq, header = arg.partition("=")
    if eq and name.strip().lower() == "header" and header.strip():
        return LbPolicy(CONSISTENT_HASH, hash_header=header.strip())
    return None


def lb_from_traffic_policy(tp: Any) -> LbPolicy | None:
    """An Istio DestinationRule `spec.trafficPolicy` → policy (None when it sets no load balancer)."""
    if not isinstance(tp, dict):
        return None
    lb = tp.get("loadBalancer")
    if not isinstance(lb, dict):
        return None
    simple = lb.get("simple")
    if isinstance(simple, str):
        s = simple.upper()
        # Istio's LEAST_REQUEST/LEAST_CONN/PASSTHROUGH have no meaning for us; round robin is closest.
        return LbPolicy(RANDOM) if s == RANDOM else LbPolicy(ROUND_ROBIN)
    ch = lb.get("consistentHash")
    if isinstance(ch, dict):
        header = ch.get("httpHeaderName")
        if isinstance(header, str) and header:
            return LbPolicy(CONSISTENT_HASH, hash_header=header)
        if ch.get("useSourceIp"):
            return LbPolicy(CONSISTENT_HASH, hash_source_ip=True)
    return None


def destination_rule_target(obj: Obj) -> tuple[ServiceKey | None, LbPolicy | None]:
    """Which Service a DestinationRule names (`spec.host`, short names relative to its namespace)."""
    md = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    host = spec.get("host")
    if not isinstance(host, str) or not host or "*" in host:
        return None, None
    labels = host.rstrip(".").split(".")
    ns = labels[1] if len(labels) >= 2 else str(md.get("namespace") or "default")
    if len(labels) >= 3 and labels[2] != "svc":
        return None, None  # not a cluster service name (an external host)
    return ServiceKey(ns, labels[0]), lb_from_traffic_policy(spec.get("trafficPolicy"))


def _str_map(v: Any) -> Mapping[str, str]:
    if not isinstance(v, dict) or not v:
        return _EMPTY
    return MappingProxyType({str(k): str(x) for k, x in v.items()})


def service_from_obj(obj: Obj) -> Service | None:
    """A Kubernetes Service object → Service; None for services the mesh must not handle."""
    md = obj.get("metadata") or {}
    labels = _str_map(md.get("labels"))
    if SKIP_LABEL in labels:
        return None
    spec = obj.get("spec") or {}
    key = ServiceKey(str(md.get("namespace") or "default"), str(md.get("name") or ""))
    if not key.name:
        return None
    typ = str(spec.get("type") or "ClusterIP")
    raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    headless = typ != "ExternalName" and any(ip == "None" for ip in raw_ips)
    ips = tuple(normalize_ip(str(ip)) for ip in raw_ips if ip and ip != "None")
    ports = []
    for p in spec.get("ports") or ():
        if not isinstance(p, dict) or not isinstance(p.get("port"), int):
            continue
        port = int(p["port"])
        tp = p.get("targetPort")
        target: int | str = tp if isinstance(tp, int | str) and tp != "" else port
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        ports.append(
            ServicePort(
                name=str(p.get("name") or ""),
                port=port,
                protocol=str(p.get("protocol") or "TCP").upper(),
                target_port=target,
                node_port=int(p.get("nodePort") or 0),
            )
        )
    affinity = str(spec.get("sessionAffinity") or "None")
    timeout = DEFAULT_AFFINITY_TIMEOUT_S
    cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
    if isinstance(cfg.get("timeoutSeconds"), int) and cfg["timeoutSeconds"] > 0:
        timeout = int(cfg["timeoutSeconds"])
    annotations = _str_map(md.get("annotations"))
    lb = DEFAULT_LB
    if LB_ANNOTATION in annotations:
        parsed = parse_lb_annotation(annotations[LB_ANNOTATION])
        if parsed is None:
            log.warning("service %s: ignoring unknown %s %r", key, LB_ANNOTATION, annotations[LB_ANNOTATION])
        else:
            lb = parsed
    return Service(
        key=key,
        cluster_ips=() if typ == "ExternalName" else ips,
        ports=tuple(ports),
        type=typ,
        session_affinity=affinity,
        affinity_timeout_s=timeout,
        lb_policy=lb,
        labels=labels,
        annotations=annotations,
        headless=headless,
        external_name=str(spec.get("externalName") or "").rstrip(".") if typ == "ExternalName" else "",
    )


@dataclass(frozen=True)
class _Slice:
    service: ServiceKey
    ports: tuple[PortInfo, ...]
    endpoints: tuple[Endpoint, ...]  # port is 0 here; resolved per port by the table


def _slice_from_obj(namespace: str, obj: Obj) -> _Slice | None:
    md = obj.get("metadata") or {}
    svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not svc:
        return None
    ports = tuple(
        PortInfo(
            str(p.get("name") or ""),
            int(p["port"]) if isinstance(p.get("port"), int) else None,
            str(p.get("protocol") or "TCP").upper(),
        )
        for p in obj.get("ports") or ()
        if isinstance(p, dict)
    )
    eps = []
    for e in obj.get("endpoints") or ():
        if not isinstance(e, dict):
            continue
        cond = e.get("conditions") or {}
        # Kubernetes: a nil `ready` is to be read as ready; terminating endpoints report false.
        ready = cond.get("ready") is not False
        for addr in e.get("addresses") or ():
            if isinstance(addr, str) and addr:
                eps.append(
                    Endpoint(
                        ip=normalize_ip(addr),
                        port=0,
                        ready=ready,
                        node_name=str(e.get("nodeName") or ""),
                        hostname=str(e.get("hostname") or ""),
                        zone=str(e.get("zone") or ""),
                    )
                )
    return _Slice(ServiceKey(namespace, str(svc)), ports, tuple(eps))


def _order(eps: Iterable[Endpoint]) -> list[Endpoint]:
    """Ready first, then a stable order (consistent hashing needs the same list on every agent)."""
    best: dict[tuple[str, int], Endpoint] = {}
    for e in eps:
        k = (e.ip, e.port)
        old = best.get(k)
        # The same address can sit in two slices while the controller moves it: ready wins.
        if old is None or (e.ready and not old.ready):
            best[k] = e
    return sorted(best.values(), key=lambda e: (not e.ready, e.ip, e.port))


# -- the table ----------------------------------------------------------------------------------

Subscriber = Callable[[ServiceKey | None], None]


class ServiceTable:
    """Services and endpoints by key, with indices for the lookups DNS and the proxy make per packet.

    Subscribers are called synchronously after each change with the affected key (None = possibly
    everything, e.g. after a batch). They must be quick and must not raise; errors are logged.
    """

    def __init__(self) -> None:
        self._base: dict[ServiceKey, Service] = {}  # as parsed from the Service object
        self._services: dict[ServiceKey, Service] = {}  # with DestinationRule overrides applied
        self._by_ip: dict[str, ServiceKey] = {}
        self._slices: dict[tuple[str, str], _Slice] = {}
        self._slices_of: dict[ServiceKey, set[str]] = {}
        self._eps: dict[ServiceKey, dict[str, list[Endpoint]]] = {}  # port name → endpoints
        self._addrs: dict[ServiceKey, list[Endpoint]] = {}  # one per IP, port 0 (for DNS)
        self._pods: dict[str, dict[ServiceKey, PodRef]] = {}
        self._rules: dict[tuple[str, str], tuple[ServiceKey, LbPolicy]] = {}  # DestinationRules
        self._subs: list[Subscriber] = []
        self._held = 0
        self._pending: set[ServiceKey] = set()
        self.generation = 0  # bumped on every change: a cheap "has anything changed" for caches
        self.synced = False  # set by the source once the first complete list has been applied

    # -- reads ----------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        return list(self._services.values())

    def service(self, key: ServiceKey) -> Service | None:
        return self._services.get(key)

    def by_cluster_ip(self, ip: str) -> Service | None:
        key = self._by_ip.get(ip) or self._by_ip.get(normalize_ip(ip))
        return self._services.get(key) if key else None

    def endpoints(self, key: ServiceKey, port_name: str) -> list[Endpoint]:
        """Endpoints of one service port, with its target port resolved; ready ones first."""
        return list(self._eps.get(key, {}).get(port_name, ()))

    def addresses(self, key: ServiceKey) -> list[Endpoint]:
        """One entry per endpoint IP regardless of ports (port 0), ready first — for DNS."""
        return list(self._addrs.get(key, ()))

    def pods_by_ip(self, ip: str) -> list[PodRef]:
        refs = self._pods.get(ip) or self._pods.get(normalize_ip(ip)) or {}
        return [refs[k] for k in sorted(refs, key=lambda k: (k.namespace, k.name))]

    def __len__(self) -> int:
        return len(self._services)

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)

        def unsubscribe() -> None:
            if fn in self._subs:
                self._subs.remove(fn)

        return unsubscribe

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Coalesce notifications: subscribers hear once, at the end (None when >1 key changed)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._pending:
                keys, self._pending = self._pending, set()
                self._notify(next(iter(keys)) if len(keys) == 1 else None)

    def hold(self) -> None:
        """Like entering `batch()`, for callers whose batch spans awaits (the source's initial lists)."""
        self._held += 1

    def release(self, everything: bool = False) -> None:
        self._held = max(0, self._held - 1)
        if not self._held and (self._pending or everything):
            keys, self._pending = self._pending, set()
            self._notify(next(iter(keys)) if len(keys) == 1 and not everything else None)

    def _changed(self, key: ServiceKey) -> None:
        self.generation += 1
        if self._held:
            self._pending.add(key)
        else:
            self._notify(key)

    def _notify(self, key: ServiceKey | None) -> None:
        if key is None:
            self.generation += 1
        for fn in list(self._subs):
            try:
                fn(key)
            except Exception:
                log.exception("service table subscriber %r failed", fn)

    # -- mutations (the source calls these) -----------------------------------------------------

    def upsert_service(self, svc: Service | Obj) -> ServiceKey | None:
        """Add or replace a Service (object or parsed). A skipped service is removed if present."""
        if isinstance(svc, dict):
            md = svc.get("metadata") or {}
            parsed = service_from_obj(svc)
            if parsed is None:
                key = ServiceKey(str(md.get("namespace") or "default"), str(md.get("name") or ""))
                self.delete_service(key.namespace, key.name)
                return None
            svc = parsed
        key = svc.key
        self._base[key] = svc
        self._apply(key)
        return key

    def delete_service(self, namespace: str, name: str) -> None:
        key = ServiceKey(namespace, name)
        if self._base.pop(key, None) is None:
            return
        self._apply(key)

    def upsert_slice(self, namespace: str, name: str, slice_obj: Obj) -> None:
        new = _slice_from_obj(namespace, slice_obj)
        old = self._slices.get((namespace, name))
        if new == old:
            return
        if new is None:
            self.delete_slice(namespace, name)
            return
        self._slices[(namespace, name)] = new
        self._slices_of.setdefault(new.service, set()).add(name)
        if old is not None and old.service != new.service:
            self._unlink_slice(old.service, name)
            self._rebuild_endpoints(old.service)
        self._rebuild_endpoints(new.service)

    def delete_slice(self, namespace: str, name: str) -> None:
        old = self._slices.pop((namespace, name), None)
        if old is None:
            return
        self._unlink_slice(old.service, name)
        self._rebuild_endpoints(old.service)

    def set_destination_rule(
        self, namespace: str, name: str, target: ServiceKey | None, policy: LbPolicy | None
    ) -> None:
        """Record (or with target/policy None, forget) one DestinationRule's load-balancer choice."""
        rid = (namespace, name)
        old = self._rules.pop(rid, None)
        if target is not None and policy is not None:
            self._rules[rid] = (target, policy)
        if old is not None:
            self._apply(old[0])
        if target is not None and (old is None or old[0] != target):
            self._apply(target)

    def delete_destination_rule(self, namespace: str, name: str) -> None:
        self.set_destination_rule(namespace, name, None, None)

    def clear(self) -> None:
        """Forget everything (used before a full re-sync from a different source)."""
        keys = set(self._services) | set(self._slices_of)
        for d in (self._base, self._services, self._by_ip, self._slices, self._slices_of, self._eps):
            d.clear()
        self._addrs.clear()
        self._pods.clear()
        self._rules.clear()
        for k in keys:
            self._changed(k)

    # -- internals ------------------------------------------------------------------------------

    def _unlink_slice(self, key: ServiceKey, name: str) -> None:
        names = self._slices_of.get(key)
        if names is not None:
            names.discard(name)
            if not names:
                del self._slices_of[key]

    def _apply(self, key: ServiceKey) -> None:
        """Recompute the effective Service for `key` (base + DestinationRule) and its indices."""
        base = self._base.get(key)
        old = self._services.get(key)
        eff: Service | None = None
        if base is not None:
            eff = base
            # Several rules for one host: the last by (namespace, name) wins, deterministically.
            rules = sorted((rid, pol) for rid, (k, pol) in self._rules.items() if k == key)
            if rules:
                eff = replace(base, lb_policy=rules[-1][1])
        if old is not None:
            for ip in old.cluster_ips:
                if self._by_ip.get(ip) == key:
                    del self._by_ip[ip]
        if eff is None:
            self._services.pop(key, None)
        else:
            self._services[key] = eff
            for ip in eff.cluster_ips:
                self._by_ip[ip] = key
        if old == eff and (
            old is None or eff is None or (old.labels, old.annotations) == (eff.labels, eff.annotations)
        ):
            return  # a resync or status-only update: nothing the mesh uses changed
        # Target ports may be named or change with the Service: endpoints depend on it.
        self._rebuild_endpoints(key, notify=False)
        self._changed(key)

    def _rebuild_endpoints(self, key: ServiceKey, notify: bool = True) -> None:
        svc = self._services.get(key)
        slices = [self._slices[(key.namespace, n)] for n in sorted(self._slices_of.get(key, ()))]
        by_port: dict[str, list[Endpoint]] = {}
        addrs: list[Endpoint] = []
        for sl in slices:
            addrs.extend(sl.endpoints)
            for p in sl.ports:
                number = p.port
                if number is None:  # "all ports": the service's own target port, where numeric
                    sp = svc.port(p.name) if svc else None
                    if sp is None:
                        continue
                    number = sp.target_port if isinstance(sp.target_port, int) else sp.port
                by_port.setdefault(p.name, []).extend(replace(e, port=number) for e in sl.endpoints)
        eps = {name: _order(lst) for name, lst in by_port.items()}
        ordered_addrs = _order(addrs)
        old_addrs = self._addrs.get(key, [])
        changed = eps != self._eps.get(key, {}) or ordered_addrs != old_addrs
        if eps or ordered_addrs:
            self._eps[key] = eps
            self._addrs[key] = ordered_addrs
        else:
            self._eps.pop(key, None)
            self._addrs.pop(key, None)
        for e in old_addrs:
            refs = self._pods.get(e.ip)
            if refs is not None:
                refs.pop(key, None)
                if not refs:
                    del self._pods[e.ip]
        # Only endpoints of a Service the mesh handles are reverse-resolvable.
        if svc is not None:
            for e in ordered_addrs:
                self._pods.setdefault(e.ip, {})[key] = PodRef(key, e.ip, e.hostname)
        if changed and notify:
            self._changed(key)
