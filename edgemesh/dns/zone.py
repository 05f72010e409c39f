"""The cluster zone: answers for `<zone>` (cluster.local) computed from the ServiceTable.

Follows the Kubernetes DNS-Based Service Discovery specification as CoreDNS's kubernetes plugin
implements it: service A/AAAA (headless → ready endpoint IPs), endpoint names of headless services,
SRV for named ports, PTR for cluster and endpoint IPs, `<a-b-c-d>.<ns>.pod` ("pods insecure"), and
ExternalName → CNAME. A name that exists without records of the asked type is NODATA (NOERROR, SOA in
authority), never NXDOMAIN — resolvers asking A and AAAA in parallel depend on that.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A  # type: ignore[import-untyped]

from ..model import Endpoint, Service, ServiceKey, ServiceTable

# Spec: `dns-version.<zone>` TXT answers the schema version implemented.
SCHEMA_VERSION = "1.1.0"
SRV_WEIGHT_TOTAL = 100  # CoreDNS spreads 100 over the SRV records of one answer
_PROTOS = {b"_tcp": "TCP", b"_udp": "UDP", b"_sctp": "SCTP"}

Labels = tuple[bytes, ...]


@dataclass
class Answer:
    """What the zone says about one question; `forward` = not ours after all (unknown reverse IP)."""

    rcode: int = RCODE.NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    chase: str = ""  # ExternalName target whose records the server should append (from upstream)
    forward: bool = False
    kind: str = "noerror"  # for metrics: noerror / nodata / nxdomain / servfail


def dashed(ip: str) -> str:
    """1.2.3.4 → 1-2-3-4; fd00::1 → fd00--1 (the pod/endpoint name form)."""
    return ip.replace(".", "-").replace(":", "-")


def undash(label: str) -> str | None:
    """The inverse of `dashed`, or None when the label is not an address."""
    for text in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def reverse_ip(labels: Labels) -> str | None:
    """`4.3.2.1.in-addr.arpa` / nibble `ip6.arpa` labels → address text; None when not a full address."""
    try:
        if labels[-2:] == (b"in-addr", b"arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(x.decode() for x in reversed(labels[:4]))))
        if labels[-2:] == (b"ip6", b"arpa") and len(labels) == 34:
            nibbles = "".join(x.decode() for x in reversed(labels[:32]))
            if len(nibbles) == 32:
                return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except (ValueError, UnicodeDecodeError):
        return None
    return None


class ClusterZone:
    """Authoritative data for one cluster domain, read from a ServiceTable on every question."""

    def __init__(
        self, table: ServiceTable, domain: str = "cluster.local", ttl: int = 30, ns_ip: str = ""
    ) -> None:
        self.table = table
        self.domain = domain.strip(".").lower()
        self.labels: Labels = tuple(x.encode() for x in self.domain.split("."))
        self.ttl = ttl
        self.ns_ip = ns_ip
        self.ns_name = f"ns.dns.{self.domain}"
        self._namespaces: set[str] = set()
        self._ns_generation = -1

    # -- helpers --------------------------------------------------------------------------------

    def contains(self, labels: Labels) -> bool:
        n = len(self.labels)
        return len(labels) >= n and labels[len(labels) - n :] == self.labels

    def soa(self) -> RR:
        return RR(
            self.domain,
            QTYPE.SOA,
            ttl=self.ttl,
            rdata=SOA(
                self.ns_name,
                f"hostmaster.{self.domain}",
                # serial: the table's generation changes whenever any answer may have changed
                (self.table.generation & 0xFFFFFFFF, 7200, 1800, 86400, self.ttl),
            ),
        )

    def _empty(self, nx: bool = False) -> Answer:
        return Answer(
            rcode=RCODE.NXDOMAIN if nx else RCODE.NOERROR,
            authority=[self.soa()],
            kind="nxdomain" if nx else "nodata",
        )

    def _svc_name(self, key: ServiceKey) -> str:
        return f"{key.name}.{key.namespace}.svc.{self.domain}"

    def _addr_rr(self, name: str, ip: str, qtype: int) -> RR | None:
        v6 = ":" in ip
        if v6 and qtype in (QTYPE.AAAA, QTYPE.ANY):
            return RR(name, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip))
        if not v6 and qtype in (QTYPE.A, QTYPE.ANY):
            return RR(name, QTYPE.A, ttl=self.ttl, rdata=A(ip))
        return None

    def _addresses(self, name: str, ips: list[str], qtype: int) -> Answer:
        rrs = [rr for ip in ips if (rr := self._addr_rr(name, ip, qtype)) is not None]
        return Answer(answer=rrs) if rrs else self._empty()

    def _namespace_exists(self, ns: str) -> bool:
        if self._ns_generation != self.table.generation:
            self._namespaces = {s.key.namespace for s in self.table.services()}
            self._ns_generation = self.table.generation
        return ns in self._namespaces

    @staticmethod
    def _ready(eps: list[Endpoint]) -> list[Endpoint]:
        return [e for e in eps if e.ready]

    # -- resolution -----------------------------------------------------------------------------

    def resolve(self, labels: Labels, qtype: int) -> Answer:
        """Answer for a lower-cased name inside the zone (or a reverse name; see `resolve_ptr`)."""
        rel = labels[: len(labels) - len(self.labels)]
        if not rel:
            return self._apex(qtype)
        top = rel[-1]
        if top == b"svc":
            return self._svc(rel[:-1], qtype)
        if top == b"pod":
            return self._pod(rel[:-1], qtype)
        if rel == (b"dns-version",):
            if qtype in (QTYPE.TXT, QTYPE.ANY):
                return Answer(
                    answer=[
                        RR(f"dns-version.{self.domain}", QTYPE.TXT, ttl=self.ttl, rdata=TXT(SCHEMA_VERSION))
                    ]
                )
            return self._empty()
        if rel == (b"ns", b"dns") and self.ns_ip:
            return self._addresses(self.ns_name, [self.ns_ip], qtype)
        if rel == (b"dns",) and self.ns_ip:
            return self._empty()
        return self._empty(nx=True)

    def _apex(self, qtype: int) -> Answer:
        ans = Answer()
        if qtype in (QTYPE.SOA, QTYPE.ANY):
            ans.answer.append(self.soa())
        if qtype in (QTYPE.NS, QTYPE.ANY):
            ans.answer.append(RR(self.domain, QTYPE.NS, ttl=self.ttl, rdata=NS(self.ns_name)))
            if self.ns_ip:
                rr = self._addr_rr(self.ns_name, self.ns_ip, QTYPE.ANY)
                if rr is not None:
                    ans.additional.append(rr)
        return ans if ans.answer else self._empty()

    def _svc(self, rel: Labels, qtype: int) -> Answer:
        if not rel:
            return self._empty()  # svc.<zone>: an empty non-terminal
        if len(rel) == 1:
            return self._empty(nx=not self._namespace_exists(rel[0].decode(errors="replace")))
        svc = self.table.service(
            ServiceKey(rel[-1].decode(errors="replace"), rel[-2].decode(errors="replace"))
        )
        if svc is None:
            return self._empty(nx=True)
        if len(rel) == 2:
            return self._service(svc, qtype)
        if len(rel) == 3:
            first = rel[0]
            if first.startswith(b"_"):
                proto = _PROTOS.get(first)
                exists = proto is not None and any(p.protocol == proto and p.name for p in svc.ports)
                return self._empty(nx=not exists)  # `_tcp.<svc>...`: an empty non-terminal
            return self._endpoint_name(svc, first.decode(errors="replace"), qtype)
        if len(rel) == 4 and rel[0].startswith(b"_") and rel[1].startswith(b"_"):
            return self._srv(svc, rel[0][1:].decode(errors="replace"), _PROTOS.get(rel[1], ""), qtype)
        return self._empty(nx=True)

    def _service(self, svc: Service, qtype: int) -> Answer:
        name = self._svc_name(svc.key)
        if svc.external_name:
            # A CNAME owner has no other records, whatever the type asked; the server appends the
            # target's records (stub resolvers expect the whole chain).
            ans = Answer(answer=[RR(name, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(svc.external_name))])
            if qtype != QTYPE.CNAME:
                ans.chase = svc.external_name
            return ans
        if qtype == QTYPE.SRV:
            return self._srv_all(svc)
        if svc.headless:
            ips = [e.ip for e in self._ready(self.table.addresses(svc.key))]
            return self._addresses(name, ips, qtype)
        return self._addresses(name, list(svc.cluster_ips), qtype)

    def _endpoint_name(self, svc: Service, label: str, qtype: int) -> Answer:
        if not svc.headless:
            return self._empty(nx=True)
        ips = [
            e.ip for e in self._ready(self.table.addresses(svc.key)) if label in (e.hostname, dashed(e.ip))
        ]
        if not ips:
            return self._empty(nx=True)
        return self._addresses(f"{label}.{self._svc_name(svc.key)}", ips, qtype)

    def _srv_records(self, svc: Service, port_name: str, protocol: str) -> tuple[list[RR], list[RR]] | None:
        sp = svc.port(port_name) if port_name else None
        if sp is None or sp.protocol != protocol:
            return None
        owner = f"_{port_name}._{protocol.lower()}.{self._svc_name(svc.key)}"
        answer: list[RR] = []
        extra: list[RR] = []
        if svc.headless:
            eps = self._ready(self.table.endpoints(svc.key, port_name))
            weight = SRV_WEIGHT_TOTAL // len(eps) if eps else 0
            for e in eps:
                target = f"{e.hostname or dashed(e.ip)}.{self._svc_name(svc.key)}"
                answer.append(RR(owner, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, weight, e.port, target)))
                rr = self._addr_rr(target, e.ip, QTYPE.ANY)
                if rr is not None:
                    extra.append(rr)
        elif svc.cluster_ips:
            target = self._svc_name(svc.key)
            answer.append(RR(owner, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, SRV_WEIGHT_TOTAL, sp.port, target)))
            extra.extend(
                rr for ip in svc.cluster_ips if (rr := self._addr_rr(target, ip, QTYPE.ANY)) is not None
            )
        return answer, extra

    def _srv(self, svc: Service, port_name: str, protocol: str, qtype: int) -> Answer:
        recs = self._srv_records(svc, port_name, protocol)
        if recs is None:
            return self._empty(nx=True)
        if qtype not in (QTYPE.SRV, QTYPE.ANY) or not recs[0]:
            return self._empty()
        return Answer(answer=recs[0], additional=recs[1])

    def _srv_all(self, svc: Service) -> Answer:
        """SRV on the service name itself: one per named port (as CoreDNS answers)."""
        ans = Answer()
        for p in svc.ports:
            recs = self._srv_records(svc, p.name, p.protocol) if p.name else None
            if recs:
                ans.answer.extend(recs[0])
                ans.additional.extend(rr for rr in recs[1] if rr not in ans.additional)
        return ans if ans.answer else self._empty()

    def _pod(self, rel: Labels, qtype: int) -> Answer:
        if len(rel) < 2:
            return self._empty()  # pod.<zone> and <ns>.pod.<zone>: empty non-terminals
        if len(rel) > 2:
            return self._empty(nx=True)
        label = rel[0].decode(errors="replace")
        ip = undash(label)
        if ip is None:
            return self._empty(nx=True)
        return self._addresses(f"{label}.{rel[1].decode(errors='replace')}.pod.{self.domain}", [ip], qtype)

    def resolve_ptr(self, labels: Labels) -> Answer:
        """PTR for a cluster IP or an endpoint IP; `forward` when the address is not one of ours."""
        ip = reverse_ip(labels)
        if ip is None:
            return Answer(forward=True)
        owner = ".".join(x.decode() for x in labels)
        svc = self.table.by_cluster_ip(ip)
        if svc is not None:
            return Answer(answer=[RR(owner, QTYPE.PTR, ttl=self.ttl, rdata=PTR(self._svc_name(svc.key)))])
        refs = self.table.pods_by_ip(ip)
        if not refs:
            return Answer(forward=True)
        return Answer(
            answer=[
                RR(
                    owner,
                    QTYPE.PTR,
                    ttl=self.ttl,
                    rdata=PTR(f"{r.hostname or dashed(ip)}.{self._svc_name(r.service)}"),
                )
                for r in refs
            ]
        )
