"""The desired proxy state, computed from the ServiceTable: one PortPlan per ClusterIP:port.

Pure: backends render it into nftables/iptables rules, the userspace proxy reads its routes from it.
Each PortPlan lists the kernel's slots (one per ready endpoint: DNAT for direct endpoints, a redirect
to the userspace listener for tunnelled ones) so traffic spreads evenly over all endpoints whichever
path they take; a port goes wholly to userspace only when it must (hash by HTTP header).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edgemesh.model import CONSISTENT_HASH, Endpoint, LbPolicy, Service, ServiceKey, ServiceTable

PROTOCOLS = ("TCP", "UDP")  # SCTP is not proxied
KERNEL, MIXED, USERSPACE, REJECT = "kernel", "mixed", "userspace", "reject"


@dataclass(frozen=True)
class Slot:
    endpoint: Endpoint
    direct: bool  # DNAT in the kernel; otherwise redirect to the userspace listener
    local: bool  # on this node (hairpin masquerade needed when a pod calls itself)
    reachable: bool  # "direct" per reach.py, even when the policy forces userspace (dial without tunnel)


@dataclass(frozen=True)
class PortPlan:
    service: ServiceKey
    port_name: str
    cluster_ip: str
    port: int
    protocol: str  # "tcp" / "udp"
    family: int  # 4 / 6
    lb: LbPolicy
    affinity_s: int  # 0 = no sessionAffinity
    slots: tuple[Slot, ...]
    mode: str  # KERNEL (all DNAT) / MIXED / USERSPACE (all redirected) / REJECT (no endpoints)

    @property
    def uid(self) -> str:
        """Stable short id for chain/set names (iptables allows 28 characters)."""
        raw = (
            f"{self.service.namespace}/{self.service.name}/{self.port_name}/{self.protocol}/{self.cluster_ip}"
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    def slot_uid(self, slot: Slot) -> str:
        kind = "d" if slot.direct else "u"
        raw = f"{self.uid}/{slot.endpoint.ip}/{slot.endpoint.port}/{kind}/{self.affinity_s}"
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    @property
    def userspace_endpoints(self) -> list[Endpoint]:
        return [s.endpoint for s in self.slots if not s.direct]

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.cluster_ip, self.port, self.protocol)

    @property
    def label(self) -> str:
        return f"{self.service}:{self.port_name or self.port}/{self.protocol}"


@dataclass(frozen=True)
class Plan:
    ports: tuple[PortPlan, ...]
    generation: int = 0

    def family(self, family: int) -> list[PortPlan]:
        return [p for p in self.ports if p.family == family]


def _family(ip: str) -> int | None:
    try:
        return ipaddress.ip_address(ip).version
    except ValueError:
        return None


def proxied(svc: Service) -> bool:
    return not svc.headless and not svc.external_name and svc.type != "ExternalName" and bool(svc.cluster_ips)


def endpoint_ips(table: ServiceTable) -> set[str]:
    """Every ready endpoint IP of a proxied service (for the reachability lookup)."""
    out: set[str] = set()
    for svc in table.services():
        if proxied(svc):
            for sp in svc.ports:
                out.update(e.ip for e in table.endpoints(svc.key, sp.name) if e.ready)
    return out


def build_plan(
    table: ServiceTable,
    is_direct: Callable[[str, str], bool],
    node_name: str,
    kernel_source_hash: bool = True,
) -> Plan:
    """`is_direct(ip, node)` from Reachability; `kernel_source_hash` False → source-IP hash in userspace."""
    ports: list[PortPlan] = []
    for svc in sorted(table.services(), key=lambda s: (s.key.namespace, s.key.name)):
        if not proxied(svc):
            continue
        affinity = svc.affinity_timeout_s if svc.session_affinity == "ClientIP" else 0
        needs_userspace = svc.lb_policy.kind == CONSISTENT_HASH and (
            bool(svc.lb_policy.hash_header) or not kernel_source_hash
        )
        for sp in svc.ports:
            if sp.protocol not in PROTOCOLS:
                continue
            eps = [e for e in table.endpoints(svc.key, sp.name) if e.ready]
            for cip in svc.cluster_ips:
                fam = _family(cip)
                if fam is None:
                    continue
                slots = tuple(
                    Slot(e, reach and not needs_userspace, e.node_name == node_name, reach)
                    for e in eps
                    if _family(e.ip) == fam
                    for reach in (is_direct(e.ip, e.node_name),)
                )
                ports.append(
                    PortPlan(
                        service=svc.key,
                        port_name=sp.name,
                        cluster_ip=cip,
                        port=sp.port,
                        protocol=sp.protocol.lower(),
                        family=fam,
                        lb=svc.lb_policy,
                        affinity_s=affinity,
                        slots=slots,
                        mode=_mode(slots),
                    )
                )
    return Plan(tuple(ports), table.generation)


def _mode(slots: Iterable[Slot]) -> str:
    kinds = {s.direct for s in slots}
    if not kinds:
        return REJECT
    if kinds == {True}:
        return KERNEL
    return USERSPACE if kinds == {False} else MIXED
