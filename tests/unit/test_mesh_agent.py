"""The agent's own pieces: config sections and `--set`, tunnel identity defaults, peer discovery,
the served-endpoints check, the CLI's corefile, and the metrics collectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgemesh import cli, config
from edgemesh.discovery import NodePeers, ServedEndpoints, static_peers
from edgemesh.model import ServiceTable
from edgemesh.observe import StatsCollector, relay_families, tunnel_families
from edgemesh.tunnel import Peer
from edgemesh.tunnel.metrics import TunnelMetrics
from edgemesh.tunnel.peers import ADDRESS_ANNOTATION


def test_tunnel_identity_defaults_to_edgecores_files() -> None:
    c = config.from_dict({"commonConfig": {"edgecoreDataDir": "/x/edge"}})
    assert c.tls_files() == (
        Path("/x/edge/certs/server.crt"),
        Path("/x/edge/certs/server.key"),
        Path("/x/edge/ca/rootCA.crt"),
    )
    c = config.from_dict({"modules": {"edgeTunnel": {"tlsCAFile": "/ca.pem"}}})
    assert c.tls_files()[2] == Path("/ca.pem")


def test_set_overrides_keep_types_and_unknown_keys_fail(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("commonConfig: {nodeName: n1}\n")
    c = config.load(p, ["modules.edgeProxy.minSyncInterval=0.5", "modules.edgeRelay.enable=true"])
    assert c.proxy.min_sync_interval == 0.5 and c.relay.enable and c.common_config.node_name == "n1"
    c = config.load(None, ["modules.edgeTunnel.advertiseAddress=[203.0.113.9:20006]"])
    assert c.tunnel.advertise_address == ("203.0.113.9:20006",)
    with pytest.raises(config.ConfigError, match=r"unknown key 'modules\.edgeRelay\.prot'"):
        config.load(None, ["modules.edgeRelay.prot=1"])
    with pytest.raises(config.ConfigError, match=r"expected key\.path=value"):
        config.load(None, ["nonsense"])


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"modules": {"edgeProxy": {"mode": "userspace"}}}, "modules.edgeProxy.mode"),
        ({"modules": {"edgeProxy": {"minSyncInterval": 0}}}, "modules.edgeProxy.minSyncInterval"),
        ({"modules": {"edgeTunnel": {"keepaliveInterval": 5, "keepaliveTimeout": 5}}}, "keepaliveTimeout"),
        ({"modules": {"edgeTunnel": {"relayNodes": [{"nodeName": "r"}]}}}, "needs an advertiseAddress"),
        (
            {"modules": {"edgeTunnel": {"relayNodes": [{"nodeName": "r", "advertiseAddress": ["h:x"]}]}}},
            "bad port",
        ),
        ({"modules": {"edgeTunnel": {"peers": [{"nodeName": "Bad_Name"}]}}}, "not a node name"),
        ({"modules": {"edgeRelay": {"listenAddress": "nowhere"}}}, "modules.edgeRelay.listenAddress"),
    ],
)
def test_new_sections_validate(doc: dict[str, Any], names: str) -> None:
    with pytest.raises(config.ConfigError, match=names.replace(".", r"\.")):
        config.from_dict(doc)


def _node(name: str, ip: str, annotation: str = "") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if annotation:
        md["annotations"] = {ADDRESS_ANNOTATION: annotation}
    return {"metadata": md, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


class _FakeTunnel:
    """Records set_peers (the only Tunnel method NodePeers calls)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Peer]] = []

    def set_peers(self, peers: dict[str, Peer]) -> None:
        self.calls.append(dict(peers))


def test_node_peers_merge_watched_nodes_with_configured_ones() -> None:
    cfg = config.from_dict(
        {"modules": {"edgeTunnel": {"peers": [{"nodeName": "b", "address": ["192.0.2.2:30000"]}]}}}
    )
    assert static_peers(cfg) == {"b": Peer("b", (("192.0.2.2", 30000),))}
    t = _FakeTunnel()
    np = NodePeers(None, t, cfg, "a")  # type: ignore[arg-type]
    assert t.calls[-1] == {"b": Peer("b", (("192.0.2.2", 30000),))}
    np.update([_node("a", "10.0.0.1"), _node("b", "10.0.0.2"), _node("c", "10.0.0.3", "198.51.100.3:1234")])
    peers = t.calls[-1]
    assert "a" not in peers  # never ourselves
    assert peers["b"].addresses == (("192.0.2.2", 30000), ("10.0.0.2", 20006))  # configured first
    assert peers["c"].addresses == (("198.51.100.3", 1234), ("10.0.0.3", 20006))
    n = len(t.calls)
    np.update([_node("a", "10.0.0.1"), _node("b", "10.0.0.2"), _node("c", "10.0.0.3", "198.51.100.3:1234")])
    assert len(t.calls) == n  # nothing changed: the tunnel is not told again


def test_served_endpoints_only_this_nodes_and_follow_changes() -> None:
    table = ServiceTable()
    table.upsert_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
    )

    def sl(*eps: tuple[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node} for ip, node in eps],
        }

    table.upsert_slice("default", "web-1", sl(("10.1.0.5", "me"), ("10.2.0.5", "other")))
    serves = ServedEndpoints(table, "me")
    assert serves("10.1.0.5", 8080, "TCP") and serves("10.1.0.5", 8080, "tcp")
    assert not serves("10.1.0.5", 8080, "UDP")
    assert not serves("10.1.0.5", 22, "TCP")  # not an endpoint port: a peer cannot reach it
    assert not serves("10.2.0.5", 8080, "TCP")  # another node's endpoint
    assert not serves("127.0.0.1", 8080, "TCP")
    table.upsert_slice("default", "web-1", sl(("10.2.0.5", "other")))
    assert not serves("10.1.0.5", 8080, "TCP")


def test_corefile_command_prints_the_stanza(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["corefile", "--set", "modules.edgeDNS.clusterDomain=edge.local"]) == 0
    out = capsys.readouterr().out
    assert "edge.local:53 {" in out and "forward . 169.254.96.16:53" in out


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("modules: {edgeDNS: {lisenPort: 53}}\n")
    assert cli.main(["--config", str(p)]) == 2
    assert "unknown key 'modules.edgeDNS.lisenPort'" in capsys.readouterr().err


def test_tunnel_and_relay_metrics_render() -> None:
    m = TunnelMetrics()
    m.streams_opened["relay"] += 3
    stats = m.snapshot({"relay": (10, 20)}, {"n2": "relay"})
    stats["relays_connected"] = 1
    reg = CollectorRegistry()
    reg.register(StatsCollector(lambda: tunnel_families(stats, {"n2": "relay"})))
    relay = {
        "nodes_connected": ["a", "b"],
        "spliced_streams": 4,
        "refused_streams": 1,
        "handshakes_refused": 2,
        "bytes_relayed": 99,
    }
    reg.register(StatsCollector(lambda: relay_families(relay)))
    text = generate_latest(reg).decode()
    assert 'edgemesh_tunnel_streams_opened_total{path="relay"} 3.0' in text
    assert 'edgemesh_tunnel_bytes_total{direction="out",path="relay"} 20.0' in text
    assert 'edgemesh_tunnel_peer_path{path="relay",peer="n2"} 1.0' in text
    assert "edgemesh_relay_nodes_connected 2.0" in text and "edgemesh_relay_bytes_total 99.0" in text

    reg2 = CollectorRegistry()
    reg2.register(StatsCollector(lambda: tunnel_families({}, {})))  # KeyError inside: scrape survives
    assert generate_latest(reg2) == b""
