"""The cloudcore process end to end: `python -m kubeedge.cloudcore` (embedded API) as a real process,
an edge node in the test process made of the real edge modules (EdgeHub + MetaManager over a Store),
joined through the real bootstrap server with the token cloudcore wrote."""

from __future__ import annotations

import asyncio
import subprocess
import sys
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
from tests.cloudcore_proc import CloudCore
from tests.cluster import wait_for

NODE = "edge-proc-1"
NS = "default"
STOP_S = 10.0
REPLY_S = 10.0


@pytest.fixture(scope="module")
def cloudcore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudCore]:
    base = tmp_path_factory.mktemp("cloudcore")
    https = free_port()
    cc = CloudCore.create(
        base,
        data_dir=base / "data",
        # The file's https port is wrong on purpose: --set on the command line wins.
        extra={"kubeAPIConfig": {"kubeConfig": ""}, "modules": {"cloudHub": {"https": {"port": 1}}}},
        ports={"https": https},
        argv_tail=["--set", f"modules.cloudHub.https.port={https}"],
    )
    try:
        cc.daemon.start()
        asyncio.run(cc.wait_healthy())
        yield cc
    finally:
        cc.daemon.stop()


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
async def edge(cloudcore: CloudCore, tmp_path: Path) -> AsyncIterator[Edge]:
    pinned, jwt = tokens.split_token(cloudcore.token)
    ca_pem = await fetch_ca("127.0.0.1", cloudcore.ports["https"], pinned)
    cert = await request_certificate("127.0.0.1", cloudcore.ports["https"], ca_pem, jwt, NODE)
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
                "127.0.0.1", NODE, port=cloudcore.ports["ws"], backoff_base=0.1, backoff_cap=1.0
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


async def test_wrong_token_and_wrong_pin_are_refused(cloudcore: CloudCore) -> None:
    pinned, _ = tokens.split_token(cloudcore.token)
    ca_pem = await fetch_ca("127.0.0.1", cloudcore.ports["https"], pinned)
    # A well-formed token signed by some other CA: the bootstrap server must refuse it.
    _, foreign_jwt = tokens.split_token(tokens.make_token(certs.create_ca("other-ca")))
    with pytest.raises(CertificateRefused) as refused:
        await request_certificate("127.0.0.1", cloudcore.ports["https"], ca_pem, foreign_jwt, "intruder")
    assert refused.value.status == 401
    assert "signature invalid" in refused.value.reason
    with pytest.raises(PinError, match="pins"):
        await fetch_ca("127.0.0.1", cloudcore.ports["https"], "0" * 64)
    assert cloudcore.http("/healthz")[0] == 200  # the daemon keeps serving


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_edge_joins_and_receives_exactly_its_objects(cloudcore: CloudCore, edge: Edge) -> None:
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


def test_sigterm_stops_cleanly(cloudcore: CloudCore) -> None:
    # The last test using the shared process (file order): it ends it.
    proc = cloudcore.daemon.proc
    assert proc is not None
    proc.terminate()
    try:
        rc = proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"cloudcore did not exit within {STOP_S}s of SIGTERM:\n{cloudcore.daemon.tail()}"
        ) from None
    assert rc == 0, cloudcore.daemon.tail()
    assert "cloudcore stopped" in cloudcore.daemon.tail()


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
