"""The mesh DNS over real sockets on loopback: UDP and TCP, forwarding to a real upstream server
(answering from a zone this test sets, over UDP and TCP), and fed by the real source watching our
API server, so an EndpointSlice change reaches DNS within one watch event."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord  # type: ignore[import-untyped]

from edgemesh.dns import ClusterZone, DNSServer, Forwarder
from edgemesh.dns.cache import AnswerCache
from edgemesh.dns.resolvconf import Upstreams
from edgemesh.model import SKIP_LABEL, ServiceKey, ServiceTable
from edgemesh.source import ServiceSource
from kubeedge.kube import ENDPOINTSLICES, NAMESPACES, SERVICES, KubeClient, load_kubeconfig
from tests.apiserver_proc import ApiServerProc
from tests.cluster import wait_for

APISERVER_CONTROLLERS = "namespace"  # the test writes EndpointSlices itself
DEADLINE = 10.0


class Upstream:
    """A small real DNS server (UDP+TCP) standing in for the site's resolver."""

    def __init__(self) -> None:
        self.udp_queries = 0
        self.tcp_queries = 0
        self.silent = False
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.port = 0

    def answer(self, data: bytes, tcp: bool) -> bytes:
        q = DNSRecord.parse(data)
        r = q.reply(ra=1, aa=0)
        name = str(q.q.qname).lower()
        if name == "www.example.":
            r.add_answer(RR(q.q.qname, QTYPE.A, ttl=120, rdata=A("192.0.2.10")))
        elif name == "big.example.":
            for i in range(60):
                r.add_answer(RR(q.q.qname, QTYPE.TXT, ttl=120, rdata=TXT(f"chunk-{i:02d}-" + "x" * 20)))
            if not tcp:  # too big for UDP: the resolver must come back over TCP
                t = DNSRecord(q.header)
                t.header.qr, t.header.tc = 1, 1
                t.add_question(q.q)
                return bytes(t.pack())
        else:
            r.header.rcode = RCODE.NXDOMAIN
            r.add_auth(
                RR("example", QTYPE.SOA, ttl=60, rdata=SOA("ns.example", "h.example", (1, 60, 60, 60, 15)))
            )
        return bytes(r.pack())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        up = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                up.udp_queries += 1
                if not up.silent:
                    self.t.sendto(up.answer(data, tcp=False), addr)

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                self.tcp_queries += 1
                out = self.answer(await reader.readexactly(n), tcp=True)
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
            writer.close()

        # DNS needs one port number for UDP and TCP: take a free UDP port, and try again (bounded) when
        # its TCP twin is in use by someone else.
        for attempt in range(20):
            self.udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            self.port = self.udp.get_extra_info("sockname")[1]
            try:
                self.tcp = await asyncio.start_server(client, "127.0.0.1", self.port)
                return
            except OSError:
                self.udp.close()
                if attempt == 19:
                    raise

    async def stop(self) -> None:
        if self.udp:
            self.udp.close()
        if self.tcp:
            self.tcp.close()
            await self.tcp.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    u = Upstream()
    await u.start()
    yield u
    await u.stop()


async def start_dns(table: ServiceTable, upstream: Upstream, upstream_timeout: float = 1.0) -> DNSServer:
    fwd = Forwarder(
        Upstreams(servers=[("127.0.0.1", upstream.port)]), AnswerCache(100), timeout=upstream_timeout
    )
    srv = DNSServer(ClusterZone(table), fwd, "127.0.0.1", 0)
    await srv.start()
    return srv


async def udp_query(
    port: int, name: str, qtype: str = "A", edns: int = 0, raw: bytes | None = None
) -> DNSRecord:
    loop = asyncio.get_running_loop()
    q = DNSRecord.question(name, qtype)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    data = raw if raw is not None else bytes(q.pack())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        await loop.sock_sendall(s, data)
        out = await asyncio.wait_for(loop.sock_recv(s, 65535), DEADLINE)
    return DNSRecord.parse(out)


async def tcp_queries(port: int, *queries: tuple[str, str]) -> list[DNSRecord]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for name, qtype in queries:  # several questions on one connection
            wire = bytes(DNSRecord.question(name, qtype).pack())
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), DEADLINE))
            out.append(DNSRecord.parse(await reader.readexactly(n)))
    finally:
        writer.close()
    return out


def one_service_table() -> ServiceTable:
    t = ServiceTable()
    t.upsert_service(
        {"metadata": {"namespace": "default", "name": "web"}, "spec": {"clusterIP": "10.96.0.10"}}
    )
    t.synced = True
    return t


async def test_udp_and_tcp_cluster_answers(upstream: Upstream) -> None:
    srv = await start_dns(one_service_table(), upstream)
    try:
        r = await udp_query(srv.port, "web.default.svc.cluster.local")
        assert [str(x.rdata) for x in r.rr] == ["10.96.0.10"] and r.header.aa
        r1, r2 = await tcp_queries(
            srv.port, ("web.default.svc.cluster.local", "A"), ("x.default.svc.cluster.local", "A")
        )
        assert [str(x.rdata) for x in r1.rr] == ["10.96.0.10"] and r2.header.rcode == RCODE.NXDOMAIN
        assert upstream.udp_queries == 0  # cluster names never leave the node
    finally:
        await srv.stop()


async def test_forwarding_cache_and_tcp_retry(upstream: Upstream) -> None:
    srv = await start_dns(one_service_table(), upstream)
    try:
        r = await udp_query(srv.port, "www.example")
        assert [str(x.rdata) for x in r.rr] == ["192.0.2.10"] and not r.header.aa and r.header.ra
        r = await udp_query(srv.port, "WWW.example")  # same question, other case: from the cache
        assert [str(x.rdata) for x in r.rr] == ["192.0.2.10"] and r.rr[0].ttl <= 120
        assert upstream.udp_queries == 1
        r = await udp_query(srv.port, "nothing.example")
        assert r.header.rcode == RCODE.NXDOMAIN and r.auth[0].rtype == QTYPE.SOA
        # upstream truncates over UDP → we ask it again over TCP; a client with a big EDNS buffer
        # gets everything over UDP, a plain client gets TC and then everything over TCP
        r = await udp_query(srv.port, "big.example", "TXT", edns=4096)
        assert len(r.rr) == 60 and not r.header.tc and upstream.tcp_queries == 1
        r = await udp_query(srv.port, "big.example", "TXT")
        assert r.header.tc and not r.rr
        (r,) = await tcp_queries(srv.port, ("big.example", "TXT"))
        assert len(r.rr) == 60 and upstream.tcp_queries == 1  # the cache answered
    finally:
        await srv.stop()


async def test_silent_upstream_gives_servfail(upstream: Upstream) -> None:
    upstream.silent = True
    srv = await start_dns(one_service_table(), upstream, upstream_timeout=0.3)
    try:
        r = await udp_query(srv.port, "www.example")
        assert r.header.rcode == RCODE.SERVFAIL
        assert [str(x.rdata) for x in (await udp_query(srv.port, "web.default.svc.cluster.local")).rr] == [
            "10.96.0.10"
        ]
    finally:
        await srv.stop()


async def test_bad_packets_leave_the_server_serving(upstream: Upstream) -> None:
    srv = await start_dns(one_service_table(), upstream)
    loop = asyncio.get_running_loop()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (
                b"",
                b"\x00",
                b"\xff" * 11,
                b"\x12\x34" + b"\xff" * 40,
                b"\x12\x34\x01\x00" + b"\x00" * 60000,
            ):
                s.sendto(junk, ("127.0.0.1", srv.port))
        r = await udp_query(srv.port, "", raw=b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fab")
        assert r.header.id == 0xABCD and r.header.rcode == RCODE.FORMERR
        # TCP: a length prefix and then silence, a garbage message, a dropped connection
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"\x00\x05abcde")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(2), DEADLINE) in (b"", b"\x00\x0c")
        writer.close()
        _, w2 = await asyncio.open_connection("127.0.0.1", srv.port)
        w2.write(b"\x01")
        w2.close()
        await loop.run_in_executor(None, lambda: None)
        r = await udp_query(srv.port, "web.default.svc.cluster.local")
        assert [str(x.rdata) for x in r.rr] == ["10.96.0.10"]
        (r,) = await tcp_queries(srv.port, ("web.default.svc.cluster.local", "A"))
        assert [str(x.rdata) for x in r.rr] == ["10.96.0.10"]
    finally:
        await srv.stop()


# -- fed by the real source ----------------------------------------------------------------------


def slice_obj(name: str, service: str, ips: list[tuple[str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in ips],
    }


async def test_endpoint_changes_reach_dns_within_one_watch_event(
    apiserver: ApiServerProc, upstream: Upstream
) -> None:
    ns = "mesh-dns"
    async with KubeClient(load_kubeconfig(apiserver.kubeconfig)) as kc:
        with contextlib.suppress(Exception):
            await kc.create(NAMESPACES, {"metadata": {"name": ns}})
        await kc.create(
            SERVICES,
            {
                "metadata": {"name": "db", "namespace": ns},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
            },
            namespace=ns,
        )
        await kc.create(
            SERVICES,
            {"metadata": {"name": "web", "namespace": ns}, "spec": {"ports": [{"name": "http", "port": 80}]}},
            namespace=ns,
        )
        await kc.create(
            SERVICES,
            {
                "metadata": {"name": "hidden", "namespace": ns, "labels": {SKIP_LABEL: "other"}},
                "spec": {"ports": [{"port": 80}]},
            },
            namespace=ns,
        )
        await kc.create(
            ENDPOINTSLICES, slice_obj("db-1", "db", [("10.1.0.1", True), ("10.1.0.2", False)]), namespace=ns
        )
        table = ServiceTable()
        source = ServiceSource(kc, table)
        await source.start()
        srv = await start_dns(table, upstream)
        try:
            await source.wait_synced(DEADLINE)
            web = await kc.get(SERVICES, "web", namespace=ns)
            r = await udp_query(srv.port, f"web.{ns}.svc.cluster.local")
            assert [str(x.rdata) for x in r.rr] == [web["spec"]["clusterIP"]]
            r = await udp_query(srv.port, f"db.{ns}.svc.cluster.local")
            assert [str(x.rdata) for x in r.rr] == ["10.1.0.1"]
            assert (
                await udp_query(srv.port, f"hidden.{ns}.svc.cluster.local")
            ).header.rcode == RCODE.NXDOMAIN
            assert source.dr_api is None  # no Istio API on this server: tolerated

            # readiness flips and a scale-up: one MODIFIED event each
            before = source.events
            await kc.replace(
                ENDPOINTSLICES,
                slice_obj("db-1", "db", [("10.1.0.1", True), ("10.1.0.2", True), ("10.1.0.3", True)]),
                namespace=ns,
            )

            async def answer() -> list[str]:
                r = await udp_query(srv.port, f"db.{ns}.svc.cluster.local")
                return sorted(str(x.rdata) for x in r.rr)

            await wait_for(
                lambda: _eq(answer(), ["10.1.0.1", "10.1.0.2", "10.1.0.3"]),
                deadline_s=DEADLINE,
                what="scaled answer",
            )
            assert source.events == before + 1  # the change arrived as exactly one watch event

            await kc.delete(SERVICES, "web", namespace=ns)
            await wait_for(
                lambda: _rcode(srv.port, f"web.{ns}.svc.cluster.local", RCODE.NXDOMAIN),
                deadline_s=DEADLINE,
                what="deleted service NXDOMAIN",
            )
            assert table.service(ServiceKey(ns, "db")) is not None
        finally:
            await srv.stop()
            await source.stop()


async def _eq(coro: Any, want: Any) -> bool:
    return bool(await coro == want)


async def _rcode(port: int, name: str, rcode: int) -> bool:
    return bool((await udp_query(port, name)).header.rcode == rcode)


DR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "destinationrules.networking.istio.io"},
    "spec": {
        "group": "networking.istio.io",
        "scope": "Namespaced",
        "names": {"plural": "destinationrules", "singular": "destinationrule", "kind": "DestinationRule"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


async def test_destination_rules_fold_into_the_policy(apiserver: ApiServerProc) -> None:
    """Runs last in this module: it installs the Istio CRD on the shared server."""
    from edgemesh.model import CONSISTENT_HASH, RANDOM
    from edgemesh.source import DESTINATION_RULES
    from kubeedge.kube import CRDS

    ns = "mesh-dr"
    dr_res = DESTINATION_RULES[0]
    async with KubeClient(load_kubeconfig(apiserver.kubeconfig)) as kc:
        with contextlib.suppress(Exception):
            await kc.create(NAMESPACES, {"metadata": {"name": ns}})
        await kc.create(CRDS, DR_CRD)

        async def served() -> bool:
            try:
                await kc.list(dr_res, ns, limit=1)
                return True
            except Exception:
                return False

        await wait_for(served, deadline_s=DEADLINE, what="DestinationRule API served")
        await kc.create(
            SERVICES,
            {
                "metadata": {
                    "name": "orders",
                    "namespace": ns,
                    "annotations": {"edgemesh.kubeedge.io/lb-policy": "RANDOM"},
                },
                "spec": {"ports": [{"port": 80}]},
            },
            namespace=ns,
        )
        table = ServiceTable()
        source = ServiceSource(kc, table)
        await source.start()
        key = ServiceKey(ns, "orders")
        try:
            await source.wait_synced(DEADLINE)
            assert (
                s := table.service(key)
            ) is not None and s.lb_policy.kind == RANDOM  # the annotation, until a rule says otherwise
            await kc.create(
                dr_res,
                {
                    "apiVersion": "networking.istio.io/v1beta1",
                    "kind": "DestinationRule",
                    "metadata": {"name": "orders-lb", "namespace": ns},
                    "spec": {
                        "host": f"orders.{ns}.svc.cluster.local",
                        "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
                    },
                },
                namespace=ns,
            )

            async def policy() -> Any:
                s = table.service(key)
                return (
                    s is not None
                    and s.lb_policy.kind == CONSISTENT_HASH
                    and s.lb_policy.hash_header == "x-user"
                )

            await wait_for(policy, deadline_s=DEADLINE, what="DestinationRule applied")
            await kc.delete(dr_res, "orders-lb", namespace=ns)
            await wait_for(
                lambda: _true((s := table.service(key)) is not None and s.lb_policy.kind == RANDOM),
                deadline_s=DEADLINE,
                what="rule removed",
            )
        finally:
            await source.stop()


async def _true(v: bool) -> bool:
    return v
