"""The mesh DNS answers, decided without sockets: DNSServer.handle() on packets built with dnslib."""

from __future__ import annotations

import asyncio
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemesh.dns import ClusterZone, DNSServer, Forwarder
from edgemesh.dns.resolvconf import Upstreams
from edgemesh.dns.zone import dashed, reverse_ip, undash
from edgemesh.model import ServiceTable

UDP = 4096  # what the UDP listener passes; the packet's own EDNS/512 rule narrows it
TCP = 65535


def table() -> ServiceTable:
    t = ServiceTable()
    t.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"port": 81}],
            },
        }
    )
    t.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "db"},
            "spec": {
                "clusterIP": "None",
                "ports": [{"name": "pg", "port": 5432}, {"name": "m", "port": 9, "protocol": "UDP"}],
            },
        }
    )
    t.upsert_slice(
        "default",
        "db-1",
        {
            "metadata": {"labels": {"kubernetes.io/service-name": "db"}},
            "ports": [
                {"name": "pg", "port": 5432, "protocol": "TCP"},
                {"name": "m", "port": 9, "protocol": "UDP"},
            ],
            "endpoints": [
                {
                    "addresses": ["10.1.0.5"],
                    "hostname": "db-0",
                    "nodeName": "n1",
                    "conditions": {"ready": True},
                },
                {"addresses": ["10.1.0.6"], "nodeName": "n2", "conditions": {"ready": True}},
                {"addresses": ["10.1.0.7"], "nodeName": "n2", "conditions": {"ready": False}},
            ],
        },
    )
    t.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "empty"},
            "spec": {"clusterIP": "None", "ports": [{"port": 1}]},
        }
    )
    t.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"},
        }
    )
    t.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "far"},
            "spec": {"type": "ExternalName", "externalName": "x.invalid"},
        }
    )
    t.synced = True
    return t


@pytest.fixture
def server() -> DNSServer:
    return DNSServer(
        ClusterZone(table(), ns_ip="169.254.96.16"), Forwarder(Upstreams(servers=[])), "127.0.0.1", 0
    )


def ask(server: DNSServer, name: str, qtype: str = "A", limit: int = UDP, edns: int = 0) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    out = server.handle(bytes(q.pack()), limit)
    assert isinstance(out, bytes), f"{name} {qtype} was not answered locally"
    r = DNSRecord.parse(out)
    assert r.header.id == q.header.id and r.header.qr == 1
    return r


def rdata(r: DNSRecord, rtype: int | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr if rtype is None or rr.rtype == rtype)


def is_nodata(r: DNSRecord) -> bool:
    return r.header.rcode == RCODE.NOERROR and not r.rr and [rr.rtype for rr in r.auth] == [QTYPE.SOA]


def is_nxdomain(r: DNSRecord) -> bool:
    return r.header.rcode == RCODE.NXDOMAIN and not r.rr and [rr.rtype for rr in r.auth] == [QTYPE.SOA]


def test_cluster_ip_service_a_aaaa(server):
    r = ask(server, "web.default.svc.cluster.local")
    assert r.header.aa == 1 and rdata(r) == ["10.96.0.10"] and r.rr[0].ttl == 30
    assert rdata(ask(server, "web.default.svc.cluster.local", "AAAA")) == ["fd00::10"]


def test_nodata_versus_nxdomain(server):
    assert is_nodata(ask(server, "web.default.svc.cluster.local", "MX"))
    assert is_nxdomain(ask(server, "nope.default.svc.cluster.local"))
    assert is_nxdomain(ask(server, "web.nope.svc.cluster.local"))
    assert is_nodata(ask(server, "default.svc.cluster.local"))  # namespace with services: exists
    assert is_nxdomain(ask(server, "nope.svc.cluster.local"))
    assert is_nodata(ask(server, "svc.cluster.local"))
    assert is_nodata(ask(server, "_tcp.web.default.svc.cluster.local"))
    assert is_nxdomain(ask(server, "_sctp.web.default.svc.cluster.local"))
    assert is_nxdomain(ask(server, "a.b.c.web.default.svc.cluster.local"))
    assert is_nxdomain(ask(server, "other.cluster.local"))
    # search-list expansions of external names end inside the zone: NXDOMAIN at once, not forwarded
    assert is_nxdomain(ask(server, "example.com.default.svc.cluster.local"))


def test_headless_service_endpoints(server):
    assert rdata(ask(server, "db.default.svc.cluster.local")) == ["10.1.0.5", "10.1.0.6"]  # ready only
    assert is_nodata(ask(server, "db.default.svc.cluster.local", "AAAA"))
    assert rdata(ask(server, "db-0.db.default.svc.cluster.local")) == ["10.1.0.5"]
    assert rdata(ask(server, "10-1-0-6.db.default.svc.cluster.local")) == ["10.1.0.6"]
    assert is_nxdomain(ask(server, "10-1-0-7.db.default.svc.cluster.local"))  # not ready
    assert is_nxdomain(ask(server, "db-0.web.default.svc.cluster.local"))  # not headless
    assert is_nodata(ask(server, "empty.default.svc.cluster.local"))


def test_srv_named_ports(server):
    r = ask(server, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert rdata(r) == ["0 100 80 web.default.svc.cluster.local."]
    assert sorted(str(rr.rdata) for rr in r.ar) == ["10.96.0.10", "fd00::10"]
    r = ask(server, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert rdata(r) == [
        "0 50 5432 10-1-0-6.db.default.svc.cluster.local.",
        "0 50 5432 db-0.db.default.svc.cluster.local.",
    ]
    assert sorted((str(rr.rname), str(rr.rdata)) for rr in r.ar) == [
        ("10-1-0-6.db.default.svc.cluster.local.", "10.1.0.6"),
        ("db-0.db.default.svc.cluster.local.", "10.1.0.5"),
    ]
    assert rdata(ask(server, "_m._udp.db.default.svc.cluster.local", "SRV")) == [
        "0 50 9 10-1-0-6.db.default.svc.cluster.local.",
        "0 50 9 db-0.db.default.svc.cluster.local.",
    ]
    assert is_nxdomain(ask(server, "_pg._udp.db.default.svc.cluster.local", "SRV"))  # wrong protocol
    assert is_nxdomain(ask(server, "_nope._tcp.web.default.svc.cluster.local", "SRV"))
    assert is_nodata(ask(server, "_http._tcp.web.default.svc.cluster.local", "A"))
    # SRV on the service name: one per named port (the unnamed port 81 has none)
    assert rdata(ask(server, "web.default.svc.cluster.local", "SRV")) == [
        "0 100 80 web.default.svc.cluster.local."
    ]


def test_ptr_cluster_and_pod_ips(server):
    assert rdata(ask(server, "10.0.96.10.in-addr.arpa", "PTR")) == ["web.default.svc.cluster.local."]
    v6 = ".".join(reversed("fd00" + "0" * 26 + "10")) + ".ip6.arpa"
    assert rdata(ask(server, v6, "PTR")) == ["web.default.svc.cluster.local."]
    assert rdata(ask(server, "5.0.1.10.in-addr.arpa", "PTR")) == ["db-0.db.default.svc.cluster.local."]
    assert rdata(ask(server, "6.0.1.10.in-addr.arpa", "PTR")) == ["10-1-0-6.db.default.svc.cluster.local."]
    # an address we do not know is not ours to deny: it goes upstream
    out = server.handle(bytes(DNSRecord.question("9.9.9.9.in-addr.arpa", "PTR").pack()), UDP)
    assert out is not None and not isinstance(out, bytes)
    out.close()


def test_pod_names(server):
    assert rdata(ask(server, "1-2-3-4.default.pod.cluster.local")) == ["1.2.3.4"]
    assert rdata(ask(server, "fd00--7.default.pod.cluster.local", "AAAA")) == ["fd00::7"]
    assert is_nodata(ask(server, "1-2-3-4.default.pod.cluster.local", "AAAA"))
    assert is_nxdomain(ask(server, "not-an-ip.default.pod.cluster.local"))
    assert is_nodata(ask(server, "default.pod.cluster.local"))


def test_zone_apex_and_version(server):
    r = ask(server, "cluster.local", "SOA")
    assert r.rr[0].rtype == QTYPE.SOA and str(r.rr[0].rdata.mname) == "ns.dns.cluster.local."
    r = ask(server, "cluster.local", "NS")
    assert rdata(r) == ["ns.dns.cluster.local."] and [str(x.rdata) for x in r.ar] == ["169.254.96.16"]
    assert rdata(ask(server, "ns.dns.cluster.local")) == ["169.254.96.16"]
    assert rdata(ask(server, "dns-version.cluster.local", "TXT")) == ['"1.1.0"']


def test_case_insensitive_and_question_echoed(server):
    r = ask(server, "WeB.Default.SVC.cluster.LOCAL")
    assert rdata(r) == ["10.96.0.10"] and str(r.q.qname) == "WeB.Default.SVC.cluster.LOCAL."


async def test_external_name_cname_and_chase(server):
    r = ask(server, "ext.default.svc.cluster.local", "CNAME")
    assert rdata(r) == ["web.default.svc.cluster.local."]
    # A: the CNAME, then the target's records (target inside the zone: answered by us)
    q = DNSRecord.question("ext.default.svc.cluster.local", "A")
    out = server.handle(bytes(q.pack()), UDP)
    r = DNSRecord.parse(await out)
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in r.rr] == [
        ("CNAME", "web.default.svc.cluster.local."),
        ("A", "10.96.0.10"),
    ]
    # target outside, no upstream reachable: the CNAME alone, the client may chase it itself
    out = server.handle(bytes(DNSRecord.question("far.default.svc.cluster.local", "A").pack()), UDP)
    r = DNSRecord.parse(await out)
    assert r.header.rcode == RCODE.NOERROR and rdata(r) == ["x.invalid."]


def test_not_synced_is_servfail_not_nxdomain(server):
    server.table.synced = False
    assert ask(server, "web.default.svc.cluster.local").header.rcode == RCODE.SERVFAIL


def test_truncation_honours_edns_and_tcp():
    t = ServiceTable()
    t.upsert_service(
        {"metadata": {"namespace": "d", "name": "big"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    )
    addrs = [
        {"addresses": [f"10.2.{i // 200}.{i % 200 + 1}"], "conditions": {"ready": True}} for i in range(100)
    ]
    t.upsert_slice(
        "d", "big-1", {"metadata": {"labels": {"kubernetes.io/service-name": "big"}}, "endpoints": addrs}
    )
    t.synced = True
    srv = DNSServer(ClusterZone(t), Forwarder(Upstreams(servers=[])), "127.0.0.1", 0)
    plain = ask(srv, "big.d.svc.cluster.local")  # 100 A records ≈ 1.7 kB > 512
    assert plain.header.tc == 1 and not plain.rr and str(plain.q.qname) == "big.d.svc.cluster.local."
    small = ask(srv, "big.d.svc.cluster.local", edns=1200)
    assert small.header.tc == 1 and [rr.rtype for rr in small.ar] == [QTYPE.OPT]
    full = ask(srv, "big.d.svc.cluster.local", edns=4096)
    assert full.header.tc == 0 and len(full.rr) == 100
    assert len(ask(srv, "big.d.svc.cluster.local", limit=TCP).rr) == 100


def raw(server: DNSServer, data: bytes) -> DNSRecord:
    """The answer to raw bytes (use `dropped` for packets that must get none)."""
    out = server.handle(data, UDP)
    assert isinstance(out, bytes)
    return DNSRecord.parse(out)


def dropped(server: DNSServer, data: bytes) -> bool:
    return server.handle(data, UDP) is None


def test_malformed_packets(server):
    q = bytes(DNSRecord.question("web.default.svc.cluster.local").pack())
    assert dropped(server, b"\x01\x02")  # shorter than a header: nothing to answer to
    assert dropped(server, q[:2] + b"\x80" + q[3:])  # a response: never answered
    r = raw(server, q[:12] + b"\x3fweb")  # label runs past the end
    assert r.header.rcode == RCODE.FORMERR and r.header.id == struct.unpack("!H", q[:2])[0]
    two = q[:4] + b"\x00\x02" + q[6:] + q[12:]
    assert raw(server, two).header.rcode == RCODE.FORMERR
    notify = q[:2] + bytes([q[2] | (4 << 3)]) + q[3:]
    assert raw(server, notify).header.rcode == RCODE.NOTIMP
    big = q + b"\x00" * 5000
    assert raw(server, big).header.rcode == RCODE.FORMERR
    dq = DNSRecord.question("web.default.svc.cluster.local")
    dq.add_ar(EDNS0(udp_len=1232))
    dq.add_ar(EDNS0(udp_len=1232))
    assert raw(server, bytes(dq.pack())).header.rcode == RCODE.FORMERR
    compressed_loop = q[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert raw(server, compressed_loop).header.rcode == RCODE.FORMERR
    # and the server still answers normally afterwards
    assert rdata(ask(server, "web.default.svc.cluster.local")) == ["10.96.0.10"]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_never_raise(data):
    srv = DNSServer(ClusterZone(table()), Forwarder(Upstreams(servers=[])), "127.0.0.1", 0)
    out = srv.handle(data, UDP)
    if out is not None and not isinstance(out, bytes):
        out.close()  # a parseable question for outside the zone: would be forwarded


@settings(max_examples=200, deadline=None)
@given(st.integers(12, 80), st.integers(0, 255))
def test_corrupted_query_never_raises(pos, value):
    srv = DNSServer(ClusterZone(table()), Forwarder(Upstreams(servers=[])), "127.0.0.1", 0)
    q = bytearray(DNSRecord.question("_pg._tcp.db.default.svc.cluster.local", "SRV").pack())
    if pos < len(q):
        q[pos] = value
    out = srv.handle(bytes(q), UDP)
    if out is not None and not isinstance(out, bytes):
        out.close()


def test_answer_cache_serves_repeats_until_the_table_changes(server):
    q = bytes(DNSRecord.question("web.default.svc.cluster.local").pack())
    first = server.handle(q, UDP, cacheable=True)
    assert isinstance(first, bytes)
    hit = server.cached(q[2:])
    assert hit is not None and hit[0] == first[2:]
    server.table.upsert_service(
        {
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 80}]},
        }
    )
    assert server.cached(q[2:]) is None
    assert rdata(ask(server, "web.default.svc.cluster.local")) == ["10.96.0.77"]


def test_name_helpers():
    assert dashed("10.1.2.3") == "10-1-2-3" and undash("10-1-2-3") == "10.1.2.3"
    assert undash("fd00--1") == "fd00::1" and undash("web-0") is None
    assert reverse_ip((b"4", b"3", b"2", b"1", b"in-addr", b"arpa")) == "1.2.3.4"
    assert reverse_ip((b"3", b"2", b"1", b"in-addr", b"arpa")) is None
    assert reverse_ip((b"x", b"3", b"2", b"1", b"in-addr", b"arpa")) is None


def test_server_tasks_are_bounded():
    async def main():
        srv = DNSServer(ClusterZone(table()), Forwarder(Upstreams(servers=[])), "127.0.0.1", 0, max_pending=0)

        class Sink:
            sent: list[bytes] = []

            def sendto(self, data, addr):
                self.sent.append(data)

        sink = Sink()
        srv._udp_packet(bytes(DNSRecord.question("example.com").pack()), ("127.0.0.1", 1), sink)  # type: ignore[arg-type]
        assert not srv._pending and not sink.sent  # over the bound: dropped, not queued

    asyncio.run(main())
