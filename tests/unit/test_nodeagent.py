"""NodeAgent (status content, schedule, message shapes) and EdgeCoreConfig (defaults, unknown keys,
overrides), without a cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from kubeedge.beehive import Message, needs_ack
from kubeedge.edgecore.config import ConfigError, EdgeCoreConfig, apply_overrides, from_dict, load
from kubeedge.edgecore.nodeagent import (
    EDGE_LABEL,
    KUBELET_VERSION,
    LinuxHost,
    NodeAgent,
    NodeAgentConfig,
    parse_fib_trie,
)

NODE = "edge-1"
T0 = 1_800_000_000.0

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     |-- 10.1.2.3
        /32 host LOCAL
     |-- 10.1.2.255
        /32 link BROADCAST
Local:
     |-- 10.1.2.3
        /32 host LOCAL
     |-- 192.168.7.9
        /32 host LOCAL
"""


class FakeHost:
    def cpu_count(self) -> int:
        return 4

    def memory_bytes(self) -> int:
        return 8 * 1024**3

    def storage_bytes(self, path: Path) -> int:
        return 100 * 1024**3

    def ipv4_addresses(self) -> list[str]:
        return ["10.1.2.3", "192.168.7.9"]

    def hostname(self) -> str:
        return "box"

    def machine_id(self) -> str:
        return "m-123"

    def boot_id(self) -> str:
        return "b-456"

    def kernel_version(self) -> str:
        return "6.1.0"

    def os_image(self) -> str:
        return "Debian GNU/Linux 12 (bookworm)"

    def architecture(self) -> str:
        return "arm64"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any, str]] = []

    async def __call__(self, resource: str, op: str, content: Any, group: str) -> None:
        self.sent.append((resource, op, content, group))

    def take(self) -> list[tuple[str, str, Any, str]]:
        out, self.sent = self.sent, []
        return out


def agent(clock: Clock, sink: Sink, **cfg: Any) -> NodeAgent:
    return NodeAgent(
        NODE, {"zone": "a", EDGE_LABEL: "x"}, sink, clock, config=NodeAgentConfig(**cfg), host=FakeHost()
    )


def test_node_object_content() -> None:
    a = agent(Clock(), Sink())
    node = a.node_object()
    assert node["kind"] == "Node" and node["metadata"]["name"] == NODE
    labels = node["metadata"]["labels"]
    assert labels[EDGE_LABEL] == "" and labels["node-role.kubernetes.io/agent"] == ""
    assert labels["kubernetes.io/hostname"] == NODE and labels["kubernetes.io/arch"] == "arm64"
    assert labels["kubernetes.io/os"] == "linux" and labels["zone"] == "a"
    st = node["status"]
    assert st["capacity"] == {
        "cpu": "4",
        "memory": f"{8 * 1024**2}Ki",
        "pods": "110",
        "ephemeral-storage": f"{100 * 1024**2}Ki",
    }
    assert st["allocatable"] == st["capacity"]
    assert st["addresses"] == [
        {"type": "InternalIP", "address": "10.1.2.3"},
        {"type": "Hostname", "address": "box"},
    ]
    info = st["nodeInfo"]
    assert info["machineID"] == "m-123" and info["bootID"] == "b-456"
    assert info["kubeletVersion"] == KUBELET_VERSION and info["containerRuntimeVersion"] == ""
    assert info["osImage"].startswith("Debian") and info["operatingSystem"] == "linux"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "EdgeReady"
    for t in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conds[t]["status"] == "False" and conds[t]["reason"]
    assert conds["Ready"]["lastHeartbeatTime"] == "2027-01-15T08:00:00Z"


def test_configured_node_ip_wins() -> None:
    a = agent(Clock(), Sink(), node_ip="172.16.0.5")
    assert a.status()["addresses"][0] == {"type": "InternalIP", "address": "172.16.0.5"}


async def test_schedule_and_message_shapes() -> None:
    clock, sink = Clock(), Sink()
    a = agent(clock, sink, status_interval=10.0, lease_interval=10.0)
    delay = await a.tick()
    first = sink.take()
    assert [(r, op, g) for r, op, _, g in first] == [
        (f"null/node/{NODE}", "insert", "meta"),
        (f"kube-node-lease/lease/{NODE}", "insert", "resource"),
    ]
    # Registration needs the cloud's ACK (it creates the Node); statuses and leases do not.
    reg = Message.new("edged", first[0][3], first[0][1], first[0][0], first[0][2])
    assert needs_ack(reg)
    assert first[0][2]["status"]["conditions"][0]["type"] == "Ready"
    lease = first[1][2]
    assert lease["spec"]["holderIdentity"] == NODE and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["spec"]["renewTime"] == "2027-01-15T08:00:00.000000Z"
    assert delay == 10.0

    clock.now += 5
    assert await a.tick() == 5.0
    assert sink.take() == []  # nothing due yet

    clock.now += 5
    await a.tick()
    # The first check after registering sends the status: a Node that already existed (edgecore
    # restarted) keeps the cloud's old status, which the registration does not overwrite.
    assert [(r, op) for r, op, _, _ in sink.take()] == [
        (f"null/nodepatch/{NODE}", "patch"),
        (f"kube-node-lease/lease/{NODE}", "update"),
    ]
    clock.now += 10
    await a.tick()
    # Then the status did not change (only its heartbeat times would): the lease alone says "alive".
    assert [(r, op) for r, op, _, _ in sink.take()] == [(f"kube-node-lease/lease/{NODE}", "update")]


async def test_status_sent_when_it_changes_or_the_report_period_passes() -> None:
    clock, sink = Clock(), Sink()
    a = agent(clock, sink, status_interval=10.0, status_report_interval=60.0, lease_interval=1000.0)
    await a.tick()
    sink.take()  # registration (carries the status) + the first lease

    def patches() -> list[dict[str, Any]]:
        return [orjson.loads(c) for r, _, c, _ in sink.take() if "/nodepatch/" in r]

    clock.now += 10
    await a.tick()
    assert len(patches()) == 1  # the first check after registering always sends
    clock.now += 10
    await a.tick()
    assert patches() == []  # unchanged
    a.host.memory_bytes = lambda: 4 * 1024**3  # type: ignore[method-assign]
    clock.now += 10
    await a.tick()
    [changed] = patches()
    assert changed["status"]["capacity"]["memory"] == f"{4 * 1024**2}Ki"
    assert changed["status"]["conditions"][0]["lastHeartbeatTime"] == "2027-01-15T08:00:30Z"
    for _ in range(5):  # t = 40..80: unchanged, and less than 60 s since the last report
        clock.now += 10
        await a.tick()
        assert patches() == []
    clock.now += 10  # t = 90: 60 s since the report at t = 30
    await a.tick()
    [periodic] = patches()
    assert periodic["status"]["conditions"][0]["lastHeartbeatTime"] == "2027-01-15T08:01:30Z"
    await a.report_status(force=True)
    assert len(patches()) == 1  # forced (e.g. after the Node was recreated in the cloud)


async def test_status_and_lease_on_their_own_periods() -> None:
    clock, sink = Clock(), Sink()
    a = agent(
        clock, sink, status_interval=3.0, status_report_interval=9.0, lease_interval=10.0, register=False
    )
    counts = {"nodepatch": 0, "lease": 0}
    while clock.now < T0 + 30:
        await a.tick()
        for r, *_ in sink.take():
            counts[r.split("/")[1]] += 1
        clock.now += 1
    # Unchanged status: reported at t=0 and then once the 9 s report period passed on a 3 s check
    # (t=9,18,27) → 4; leases t=0,10,20 → 3.
    assert counts == {"nodepatch": 4, "lease": 3}


def test_linux_host_reads_files(tmp_path: Path) -> None:
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/random").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16384 kB\nMemFree: 1 kB\n")
    (tmp_path / "proc/net/fib_trie").write_text(FIB_TRIE)
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("boot-1\n")
    (tmp_path / "etc/machine-id").write_text("mach-1\n")
    (tmp_path / "etc/os-release").write_text('NAME="X"\nPRETTY_NAME="Ubuntu 24.04 LTS"\n')
    h = LinuxHost(tmp_path)
    assert h.memory_bytes() == 16384 * 1024
    assert h.ipv4_addresses() == ["10.1.2.3", "192.168.7.9"]
    assert h.boot_id() == "boot-1" and h.machine_id() == "mach-1"
    assert h.os_image() == "Ubuntu 24.04 LTS"
    assert h.storage_bytes(tmp_path) > 0 and h.cpu_count() >= 1


def test_fib_trie_without_addresses() -> None:
    assert parse_fib_trie("") == []
    assert parse_fib_trie(FIB_TRIE.replace("10.1.2.3", "127.0.0.2").replace("192.168.7.9", "127.1.1.1")) == []


# ---- config ----------------------------------------------------------------------------------------

MINIMAL = {
    "modules": {
        "edgeHub": {"websocket": {"server": "cloud.example:10000"}},
        "edged": {"hostnameOverride": NODE},
    }
}


def test_config_defaults() -> None:
    c = from_dict(MINIMAL)
    assert c.data_dir == "/var/lib/kubeedge/edge"
    assert c.database == Path("/var/lib/kubeedge/edge/edgecore.db")
    assert c.cert_file == Path("/var/lib/kubeedge/edge/certs/server.crt")
    assert c.cloud_ws == ("cloud.example", 10000) and c.cloud_http is None
    assert c.edge_hub.heartbeat == 15.0 and c.edge_hub.rotate_certificates
    assert c.edged.node_status_update_frequency == 10.0 and c.edged.register_node
    assert c.meta_server.enable and c.meta_server.server == "127.0.0.1:10550"
    assert c.node_name == NODE


def test_config_full_document(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
        "kind": "EdgeCore",
        "dataDir": str(tmp_path),
        "database": {"dataSource": str(tmp_path / "x.db")},
        "modules": {
            "edgeHub": {
                "httpServer": "https://10.0.0.1:10002",
                "websocket": {"server": "10.0.0.1:10000", "handshakeTimeout": 5, "writeDeadline": 7},
                "heartbeat": 3,
                "token": "a" * 64 + ".x.y.z",
                "tlsCaFile": str(tmp_path / "ca.crt"),
            },
            "edged": {"hostnameOverride": NODE, "nodeLabels": {"zone": "b"}, "nodeStatusUpdateFrequency": 4},
            "metaManager": {"metaServer": {"enable": False}},
        },
    }
    p = tmp_path / "edgecore.yaml"
    p.write_text(yaml.safe_dump(doc))
    c = load(p)
    assert c.database == tmp_path / "x.db" and c.ca_file == tmp_path / "ca.crt"
    assert c.cloud_http == ("10.0.0.1", 10002)
    assert c.edge_hub.handshake_timeout == 5.0 and c.edge_hub.write_deadline == 7.0
    assert c.edge_hub.heartbeat == 3.0 and c.edged.node_labels == {"zone": "b"}
    assert not c.meta_server.enable


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({**MINIMAL, "bogus": 1}, "bogus"),
        (
            {"modules": {**MINIMAL["modules"], "edgeHub": {"websocket": {"server": "c:1", "sever": "x"}}}},
            "sever",
        ),
        ({"modules": {"edged": {"hostnameOverride": NODE}}}, "websocket.server"),
        ({**MINIMAL, "kind": "CloudCore"}, "kind"),
        ({"modules": {**MINIMAL["modules"], "edged": {"hostnameOverride": "Bad_Name"}}}, "hostnameOverride"),
        (
            {"modules": {**MINIMAL["modules"], "edged": {"hostnameOverride": NODE, "registerNode": "yes"}}},
            "bool",
        ),
        ({"modules": {"edgeHub": {"websocket": {"server": "nope"}}}}, "<host>:<port>"),
        ({"modules": {"edgeHub": {"websocket": {"server": "c:1"}, "heartbeat": 0}}}, "heartbeat"),
        ({"modules": {"edgeHub": {"websocket": {"server": "c:1"}, "token": "t"}}}, "httpServer"),
    ],
)
def test_config_errors(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        from_dict(doc)


def test_overrides() -> None:
    doc = apply_overrides(
        MINIMAL,
        [
            "modules.edged.nodeStatusUpdateFrequency=5",
            "modules.edged.registerNode=false",
            "modules.metaManager.metaServer.server=127.0.0.1:10551",
            "dataDir=/tmp/e",
        ],
    )
    assert "metaManager" not in MINIMAL["modules"]  # the input is not modified
    c = from_dict(doc)
    assert c.edged.node_status_update_frequency == 5.0 and not c.edged.register_node
    assert c.meta_server.server == "127.0.0.1:10551" and c.data_dir == "/tmp/e"
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        apply_overrides(MINIMAL, ["novalue"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides(MINIMAL, ["modules.edgeHub.websocket.server.x=1"])


def test_config_is_frozen() -> None:
    c = from_dict(MINIMAL)
    with pytest.raises(AttributeError):
        c.data_dir = "/x"  # type: ignore[misc]
    assert isinstance(c, EdgeCoreConfig)
