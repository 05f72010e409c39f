"""Pieces around the mesh DNS: configuration, resolv.conf, the answer cache's TTL rules, Corefile."""

from __future__ import annotations

import os
import time

import pytest
from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord  # type: ignore[import-untyped]

from edgemesh import config
from edgemesh.dns.cache import AnswerCache, answer_ttl
from edgemesh.dns.corefile import corefile_stanza
from edgemesh.dns.resolvconf import Upstreams, parse_resolv_conf
from edgemesh.dns.setup import dns_from_config
from edgemesh.model import ServiceTable


def test_config_defaults_and_yaml(tmp_path):
    c = config.from_dict(None)
    assert c.dns_listen == ("169.254.96.16", 53) and c.tunnel.listen_port == 20006
    assert c.kube_api_config.meta_server == "http://127.0.0.1:10550"
    p = tmp_path / "agent.yaml"
    p.write_text(
        "apiVersion: agent.edgemesh.config.kubeedge.io/v1alpha1\nkind: EdgeMeshAgent\n"
        "commonConfig: {nodeName: edge-1, bridgeDeviceIP: 169.254.96.20}\n"
        "modules:\n  edgeDNS: {listenPort: 5353, cacheMaxTTL: 60, upstreamServers: ['127.0.0.1:5300']}\n"
        "  edgeTunnel: {relayNodes: [{nodeName: cloud, advertiseAddress: [203.0.113.1]}]}\n"
    )
    c = config.load(p)
    assert c.dns_listen == ("169.254.96.20", 5353) and c.dns.cache_max_ttl == 60
    assert c.tunnel.relay_nodes[0].advertise_address == ("203.0.113.1",)
    srv = dns_from_config(c, ServiceTable())
    assert srv.forwarder.upstreams.servers() == [("127.0.0.1", 5300)]


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"modules": {"edgeDNS": {"listenPrt": 53}}}, "unknown key 'modules.edgeDNS.listenPrt'"),
        ({"modules": {"edgeDNS": {"listenPort": "53"}}}, "expected an integer"),
        ({"modules": {"edgeDNS": {"listenPort": 70000}}}, "out of range"),
        ({"modules": {"edgeDNS": {"upstreamServers": ["dns.example"]}}}, "not an IP address"),
        ({"modules": {"edgeDNS": {"cacheMinTTL": 10, "cacheMaxTTL": 5}}}, "cacheMinTTL"),
        ({"modules": {"edgeProxy": {"mode": "ebpf"}}}, "modules.edgeProxy.mode"),
        ({"commonConfig": {"bridgeDeviceIP": "x"}}, "commonConfig.bridgeDeviceIP"),
        ({"kind": "EdgeCore"}, "apiVersion/kind"),
    ],
)
def test_config_errors_name_the_key(doc, names):
    with pytest.raises(config.ConfigError, match=names.replace(".", r"\.")):
        config.from_dict(doc)


def test_parse_server_forms():
    assert config.parse_server("10.0.0.1") == ("10.0.0.1", 53)
    assert config.parse_server("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert config.parse_server("[fd00::1]:54") == ("fd00::1", 54)
    assert config.parse_server("fd00::1") == ("fd00::1", 53)


def test_resolv_conf_parsing_and_self_exclusion(tmp_path):
    text = "# c\nsearch a b\nnameserver 169.254.96.16\nnameserver 10.0.0.2 # x\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n"
    assert parse_resolv_conf(text) == ["169.254.96.16", "10.0.0.2", "fe80::1"]
    p = tmp_path / "resolv.conf"
    p.write_text(text)
    up = Upstreams(str(p), exclude=[("169.254.96.16", 53)])
    assert up.servers() == [("10.0.0.2", 53), ("fe80::1", 53)]
    p.write_text("nameserver 10.0.0.9\n")
    os.utime(p, (time.time() + 5, time.time() + 5))
    up._checked = 0.0  # the stat interval elapsed
    assert up.servers() == [("10.0.0.9", 53)]
    assert Upstreams(str(tmp_path / "missing")).servers() == []


def reply(name="a.example", ttls=(300,), rcode=RCODE.NOERROR, soa=None):
    r = DNSRecord.question(name).reply()
    r.header.rcode = rcode
    for t in ttls:
        r.add_answer(RR(name, QTYPE.A, ttl=t, rdata=A("192.0.2.1")))
    if soa is not None:
        r.add_auth(RR("example", QTYPE.SOA, ttl=soa[0], rdata=SOA("ns", "h", (1, 2, 3, 4, soa[1]))))
    return r


def test_answer_ttl_rules():
    assert answer_ttl(reply(ttls=(300, 60)), 0, 3600, 30) == 60
    assert answer_ttl(reply(ttls=(300,)), 0, 100, 30) == 100  # capped
    assert answer_ttl(reply(ttls=(1,)), 5, 100, 30) == 5  # floored
    assert answer_ttl(reply(ttls=(), rcode=RCODE.NXDOMAIN, soa=(900, 20)), 0, 3600, 30) == 20
    assert answer_ttl(reply(ttls=(), rcode=RCODE.NXDOMAIN, soa=(900, 600)), 0, 3600, 30) == 30
    assert answer_ttl(reply(ttls=(), rcode=RCODE.NXDOMAIN), 0, 3600, 30) == 0  # no SOA: not cached
    assert answer_ttl(reply(rcode=RCODE.SERVFAIL), 0, 3600, 30) == 0


def test_cache_counts_ttl_down_expires_and_is_bounded(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    c = AnswerCache(size=2)
    c.put((b"a", 1, 1), reply("a", ttls=(60,)), 60)
    now[0] += 10
    got = c.get((b"a", 1, 1))
    assert got is not None and got.rr[0].ttl == 50
    now[0] += 51
    assert c.get((b"a", 1, 1)) is None
    for n in (b"x", b"y", b"z"):
        c.put((n, 1, 1), reply(n.decode()), 60)
    assert len(c) == 2 and c.get((b"x", 1, 1)) is None


def test_corefile_stanza():
    s = corefile_stanza("cluster.local", "169.254.96.16")
    assert "cluster.local:53 {" in s and "forward . 169.254.96.16:53" in s and s.count("{") == s.count("}")
    s6 = corefile_stanza("corp.internal.", "fd00::53", 5353, reverse_zones=("in-addr.arpa",))
    assert "corp.internal in-addr.arpa:53 {" in s6 and "forward . [fd00::53]:5353" in s6
