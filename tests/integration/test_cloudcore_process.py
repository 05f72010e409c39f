"""The cloudcore process end to end: `python -m kubeedge.cloudcore` (embedded API) as a real process,
an edge node in the test process made of the real edge modules (EdgeHub + MetaManager over a Store),
joined through the real bootstrap server with the token cloudcore wrote."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from kubeedge.beehive import Message
from kubeedge.cloudcore.config import CloudCoreConfig, ConfigError, apply_overrides
from kubeedge.edgecore.edgehub import EdgeHub, EdgeHubConfig
from kubeedge.edgecore.metamanager import MetaManager
from kubeedge.kube import CONFIGMAPS, PODS, KubeClient, KubeConfig
from kubeedge.pki import certs, tokens
from kubeedge.pki.client import CertificateRefused, PinError, fetch_ca, request_certificate
from kubeedge.runtime import Supervisor
from kubeedge.store import NotFound, Store
from tests.apiserver_proc import ROOT, free_port
from tests.cluster import wait_for

NODE = "edge-proc-1"
NS = "default"
STARTUP_S = 30.0
STOP_S = 10.0
REPLY_S = 10.0


@dataclass
class CloudCoreProc:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    api_port: int
    ws_port: int
    https_port: int
    metrics_port: int

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "apiserver" / "admin.kubeconfig"

    @property
    def token(self) -> str:
        return (self.data_dir / tokens.TOKEN_FILE).read_text().strip()

    def log(self) -> str:
        return (self.data_dir.parent / "cloudcore.log").read_text(errors="replace")[-4000:]


def _wait_healthy(cc: CloudCoreProc) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if cc.proc.poll() is not None:
            raise AssertionError(f"cloudcore exited with {cc.proc.returncode}:\n{cc.log()}")
        with contextlib.suppress(OSError):
            if cc.http("/healthz")[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"cloudcore not healthy within {STARTUP_S}s:\n{cc.log()}")


@pytest.fixture(scope="module")
def cloudcore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudCoreProc]:
    base = tmp_path_factory.mktemp("cloudcore")
    ports = {k: free_port() for k in ("api", "ws", "https", "metrics")}
    doc = {
        "apiVersion": "cloudcore.config.kubeedge.io/v1alpha2",
        "kind": "CloudCore",
        "kubeAPIConfig": {"kubeConfig": ""},
        "dataDir": str(base / "data"),
        "embedded": {"listen": f"127.0.0.1:{ports['api']}", "controllers": "all"},
        "metrics": {"address": f"127.0.0.1:{ports['metrics']}"},
        "modules": {
            "cloudHub": {
                "advertiseAddress": ["127.0.0.1"],
                "websocket": {"address": "127.0.0.1", "port": ports["ws"]},
                "https": {"address": "127.0.0.1", "port": 1},  # replaced by --set below
            },
            "edgeController": {"resendBase": 1.0},
        },
    }
    cfg = base / "cloudcore.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    with (base / "cloudcore.log").open("ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeedge.cloudcore",
                "--config",
                str(cfg),
                "--set",
                f"modules.cloudHub.https.port={ports['https']}",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    cc = CloudCoreProc(base / "data", proc, ports["api"], ports["ws"], ports["https"], ports["metrics"])
    try:
        _wait_healthy(cc)
        yield cc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Edge:
    store: Store
    hub: EdgeHub
    replies: dict[str, asyncio.Future[Message]]

    async def request(self, msg: Message) -> Message:
        fut = self.replies[msg.msg_id] = asyncio.get_running_loop().create_future()
        assert await self.hub.send(msg), "edgehub is not connected"
        async with asyncio.timeout(REPLY_S):
            return await fut

    def has(self, key: str, name: str) -> bool:
        try:
            self.store.get_now(key, NS, name)
        except NotFound:
            return False
        return True


@pytest_asyncio.fixture
async def edge(cloudcore: CloudCoreProc, tmp_path: Path) -> AsyncIterator[Edge]:
    pinned, jwt = tokens.split_token(cloudcore.token)
    ca_pem = await fetch_ca("127.0.0.1", cloudcore.https_port, pinned)
    cert = await request_certificate("127.0.0.1", cloudcore.https_port, ca_pem, jwt, NODE)
    replies: dict[str, asyncio.Future[Message]] = {}
    async with Store(tmp_path / "edge.db") as store:
        mm: MetaManager | None = None

        async def on_message(msg: Message) -> None:
            fut = replies.pop(msg.parent_msg_id, None) if msg.is_reply else None
            if fut is not None:
                fut.set_result(msg)
            elif not msg.is_reply:
                assert mm is not None
                await mm.handle(msg)

        async def on_connected() -> None:
            assert mm is not None
            await mm.on_connected()

        hub = EdgeHub(
            EdgeHubConfig.for_cloud(
                "127.0.0.1", NODE, port=cloudcore.ws_port, backoff_base=0.1, backoff_cap=1.0
            ),
            ca_pem,
            cert,
            on_message,
            on_connected=on_connected,
        )
        mm = MetaManager(store, hub, node_name=NODE)
        sup = Supervisor("test-edge")
        sup.spawn(mm.run, "metamanager")
        sup.spawn(hub.run, "edgehub")
        try:
            async with asyncio.timeout(15):
                await hub.connected_event.wait()
            yield Edge(store, hub, replies)
        finally:
            hub.stop()
            await sup.stop()


async def test_wrong_token_and_wrong_pin_are_refused(cloudcore: CloudCoreProc) -> None:
    pinned, _ = tokens.split_token(cloudcore.token)
    ca_pem = await fetch_ca("127.0.0.1", cloudcore.https_port, pinned)
    # A well-formed token signed by some other CA: the bootstrap server must refuse it.
    _, foreign_jwt = tokens.split_token(tokens.make_token(certs.create_ca("other-ca")))
    with pytest.raises(CertificateRefused) as refused:
        await request_certificate("127.0.0.1", cloudcore.https_port, ca_pem, foreign_jwt, "intruder")
    assert refused.value.status == 401
    assert "signature invalid" in refused.value.reason
    with pytest.raises(PinError, match="pins"):
        await fetch_ca("127.0.0.1", cloudcore.https_port, "0" * 64)
    assert cloudcore.http("/healthz")[0] == 200  # the daemon keeps serving


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_edge_joins_and_receives_exactly_its_objects(cloudcore: CloudCoreProc, edge: Edge) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"node-role.kubernetes.io/edge": ""}},
    }
    reply = await edge.request(Message.new("edged", "resource", "insert", f"null/node/{NODE}", node))
    assert reply.operation == "response", reply.content

    async with KubeClient(KubeConfig.from_file(cloudcore.kubeconfig)) as kc:
        await kc.create(CONFIGMAPS, {"metadata": {"name": "app-cfg"}, "data": {"k": "v"}}, NS)
        await kc.create(CONFIGMAPS, {"metadata": {"name": "unrelated"}, "data": {"x": "y"}}, NS)
        pod = {
            "metadata": {"name": "app"},
            "spec": {
                "nodeName": NODE,
                "containers": [
                    {"name": "c", "image": "busybox", "volumeMounts": [{"name": "cfg", "mountPath": "/c"}]}
                ],
                "volumes": [{"name": "cfg", "configMap": {"name": "app-cfg"}}],
            },
        }
        await kc.create(PODS, pod, NS)

        async def arrived() -> bool:
            return edge.has("pods", "app") and edge.has("configmaps", "app-cfg")

        await wait_for(arrived, deadline_s=20, what="pod and its ConfigMap in the edge store")
        assert edge.store.get_now("configmaps", NS, "app-cfg").obj["data"] == {"k": "v"}
        assert edge.store.get_now("pods", NS, "app").obj["spec"]["nodeName"] == NODE
        assert not edge.has("configmaps", "unrelated")  # only what its pods reference

        status, text = cloudcore.http("/metrics")
        assert status == 200
        assert _metric(text, "cloudcore_connected_nodes") == 1.0
        assert f'cloudcore_node_queue_depth{{node="{NODE}"}}' in text
        assert (_metric(text, "cloudcore_inventory_handshake_seconds_count") or 0) >= 1
        assert (_metric(text, "cloudcore_messages_out_total") or 0) >= 2

        await kc.delete(PODS, "app", NS, grace_period_seconds=0)

        async def removed() -> bool:
            return not edge.has("pods", "app") and not edge.has("configmaps", "app-cfg")

        await wait_for(removed, deadline_s=20, what="pod and ConfigMap removed at the edge")


def test_sigterm_stops_cleanly(cloudcore: CloudCoreProc) -> None:
    # The last test using the shared process (file order): it ends it.
    cloudcore.proc.terminate()
    try:
        rc = cloudcore.proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"cloudcore did not exit within {STOP_S}s of SIGTERM:\n{cloudcore.log()}"
        ) from None
    assert rc == 0, cloudcore.log()
    assert "cloudcore stopped" in cloudcore.log()


def test_config_overrides_and_unknown_keys(tmp_path: Path) -> None:
    doc = apply_overrides(
        {"modules": {"cloudHub": {"advertiseAddress": ["10.0.0.9"]}}},
        ["modules.cloudHub.websocket.port=10100", "modules.cloudHub.tokenRefreshDuration=6", "dataDir=/x"],
    )
    cfg = CloudCoreConfig.from_document(doc)
    assert cfg.modules.cloud_hub.websocket.port == 10100
    assert cfg.modules.cloud_hub.https.port == 10002  # untouched defaults stay
    assert cfg.modules.cloud_hub.token_refresh_duration == 6.0
    assert cfg.data_dir == Path("/x") and cfg.embedded_api
    assert CloudCoreConfig.from_document(cfg.to_document()) == cfg  # round trip through YAML shape
    with pytest.raises(ConfigError, match=r"unknown key 'modules\.cloudHub\.websockt'"):
        CloudCoreConfig.from_document({"modules": {"cloudHub": {"websockt": {"port": 1}}}})
    with pytest.raises(ConfigError, match="out of range"):
        CloudCoreConfig.from_document({"modules": {"cloudHub": {"https": {"port": 70000}}}})
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        apply_overrides({}, ["modules.cloudHub"])


def test_bad_config_exits_with_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"modules": {"cloudHub": {"nodeLimt": 5}}}))
    done = subprocess.run(
        [sys.executable, "-m", "kubeedge.cloudcore", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"unknown key 'modules.cloudHub.nodeLimt'" in done.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
