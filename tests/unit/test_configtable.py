"""kubeedge.runtime.configtable: the declared-table loader cloudcore and the mesh agent share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubeedge.runtime.configtable import ConfigError, build, camel, document, read_document


@dataclass(frozen=True)
class Peer:
    node_name: str
    address: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    data_dir: Path = Path("/var/lib/x")
    dns_ip: str = "169.254.96.16"
    listen_port: int = 53
    ratio: float = 0.5
    enable: bool = False
    names: tuple[str, ...] = ()
    peers: tuple[Peer, ...] = ()
    spelled: str = field(default="", metadata={"key": "kubeEdgeSpelling"})

    def __post_init__(self) -> None:
        if not 0 < self.listen_port < 65536:
            raise ConfigError(f"listenPort: {self.listen_port} out of range")


def test_keys_defaults_and_round_trip() -> None:
    assert camel("dns_ip") == "dnsIP" and camel("cache_max_ttl") == "cacheMaxTTL"
    t = build(
        Table,
        {
            "dataDir": "/srv/x",
            "listenPort": 5353,
            "ratio": 1,
            "names": "a, b",
            "peers": [{"nodeName": "n1", "address": ["10.0.0.1"]}],
            "kubeEdgeSpelling": 10,
        },
    )
    assert t.data_dir == Path("/srv/x") and t.ratio == 1.0 and t.names == ("a", "b")
    assert t.peers == (Peer("n1", ("10.0.0.1",)),) and t.spelled == "10" and t.dns_ip == "169.254.96.16"
    assert build(Table, document(t)) == t
    assert build(Table, None) == Table()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"listenPrt": 1}, "unknown key 'listenPrt' (known here: dataDir,"),
        ({"peers": [{"address": []}]}, "peers[0].nodeName: required"),
        ({"peers": [{"nodeName": "n", "adress": []}]}, "unknown key 'peers[0].adress'"),
        ({"listenPort": True}, "listenPort: expected an integer"),
        ({"enable": "yes"}, "enable: expected true or false"),
        ({"ratio": "x"}, "ratio: expected a number"),
        ({"dataDir": ""}, "dataDir: expected a path"),
        ({"names": {"a": 1}}, "names: expected a list"),
        ({"dnsIP": ["x"]}, "dnsIP: expected a string"),
        ({"listenPort": 70000}, "listenPort: 70000 out of range"),
        ([1, 2], "document: expected a mapping"),
    ],
)
def test_errors_name_the_key(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(Table, doc)
    assert message in str(e.value)


def test_read_document(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("")
    assert read_document(f) == {}
    f.write_text("- a\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        read_document(f)
    f.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_document(f)
    with pytest.raises(ConfigError, match="cannot read"):
        read_document(tmp_path / "missing.yaml")
