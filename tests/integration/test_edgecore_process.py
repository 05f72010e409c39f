"""The real edgecore process against a real cloud.

First test: the API server in a subprocess, cloudhub + edgecontroller + the bootstrap server in this
process (so the cloud can be taken down and brought back under the edge), ``python -m kubeedge.edgecore``
as a subprocess. Proves: join with a token (CA pinned, certificate written 0600), registration (labels,
Ready, addresses, nodeInfo), status patches, lease renewal, a bound pod landing in the edge store,
statuses queued through a cloud outage and delivered after it, reconnect after kill -9 with the saved
certificate alone, and a clean SIGTERM shutdown.

Second test: both ends as processes (``python -m kubeedge.cloudcore`` with its embedded API server), the
token cloudcore wrote, and a cloudcore restart under a running edgecore."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import pytest_asyncio
import yaml

from kubeedge.cloudcore.cloudhub import CloudHub, CloudHubConfig
from kubeedge.cloudcore.edgecontroller import EDGE_LABEL, EdgeController
from kubeedge.kube import LEASES, NAMESPACES, NODES, PODS, KubeClient, KubeConfig, NotFound
from kubeedge.pki import certs, tokens
from kubeedge.pki.bootstrap import BootstrapConfig, BootstrapServer
from tests.apiserver_proc import ROOT, ApiServerProc
from tests.cloudcore_proc import CloudCore

APISERVER_CONTROLLERS = "none"
HOST = "127.0.0.1"
NODE = "edge-proc-1"
DEADLINE = 20.0


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, within: float = DEADLINE) -> Any:
    """Poll ``probe`` until it returns something truthy (state lives in other processes: no event to
    wait on), failing with ``what`` at the deadline."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Cloud:
    hub: CloudHub
    ec: EdgeController
    bootstrap: BootstrapServer
    ca: certs.KeyPair


@pytest_asyncio.fixture
async def cloud(apiserver: ApiServerProc, kc: KubeClient) -> AsyncIterator[Cloud]:
    pki = apiserver.data_dir / "pki"
    ca = certs.KeyPair.load(pki / "ca.crt", pki / "ca.key")
    serving = certs.issue(ca, "kubeedge-cloudhub", dns_names=["localhost"], ip_addresses=[HOST], server=True)
    # cloudhub and edgecontroller refer to each other: the hub gets its events sink right after.
    hub = CloudHub(CloudHubConfig(host=HOST, port=0), ca, serving, cast(Any, None))
    ec = EdgeController(kc, hub)
    hub.events = ec
    ec.start()
    await asyncio.wait_for(ec.wait_synced(), DEADLINE)
    await hub.start()
    bs = BootstrapServer(BootstrapConfig(host=HOST, port=0), ca)
    await bs.start()
    try:
        yield Cloud(hub, ec, bs, ca)
    finally:
        await bs.stop()
        await hub.stop()
        await ec.stop()


class EdgeProc:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "edgecore.log"

    def write_config(self, cloud: Cloud, token: str) -> Path:
        doc = {
            "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
            "kind": "EdgeCore",
            "dataDir": str(self.data_dir),
            "database": {"dataSource": str(self.data_dir / "edgecore.db")},
            "modules": {
                "edgeHub": {
                    "httpServer": f"https://{HOST}:{cloud.bootstrap.port}",
                    "websocket": {"server": f"{HOST}:{cloud.hub.port}", "handshakeTimeout": 5},
                    "heartbeat": 2,
                    **({"token": token} if token else {}),
                },
                "edged": {
                    "enable": False,  # no container runtime here
                    "hostnameOverride": NODE,
                    "nodeStatusUpdateFrequency": 1,
                    "nodeStatusReportFrequency": 1,
                    "nodeLeaseDurationSeconds": 4,
                    "nodeLabels": {"site": "lab"},
                },
                "metaManager": {"metaServer": {"enable": False}},
            },
        }
        path = self.data_dir / "edgecore.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def start(self, config: Path) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubeedge.edgecore", "--config", str(config), "--log-level", "debug"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProc]:
    e = EdgeProc(tmp_path / "edge")
    e.data_dir.mkdir()
    try:
        yield e
    finally:
        e.stop()


def condition(node: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in node["status"].get("conditions", []) if c["type"] == type_)


def edge_pod_row(db: Path, ns: str, name: str) -> dict[str, Any] | None:
    """The pod as the edge stored it, read through a read-only connection (the process owns the file)."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT data FROM objects WHERE key='pods' AND ns=? AND name=?", (ns, name)
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # schema not created yet
    finally:
        conn.close()
    return cast(dict[str, Any], orjson.loads(row[0])) if row else None


async def test_join_register_sync_and_restart(cloud: Cloud, edge: EdgeProc, kc: KubeClient) -> None:
    token = tokens.make_token(cloud.ca)
    edge.start(edge.write_config(cloud, token))

    async def node_ready() -> dict[str, Any] | None:
        assert edge.alive(), f"edgecore exited:\n{edge.logs()}"
        try:
            node = await kc.get(NODES, NODE)
        except NotFound:
            return None
        ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
        return node if ready and ready[0]["status"] == "True" else None

    node = await eventually(node_ready, "the Node to be registered Ready")
    labels = node["metadata"]["labels"]
    assert labels[EDGE_LABEL] == "" and labels["node-role.kubernetes.io/agent"] == ""
    assert labels["site"] == "lab" and labels["kubernetes.io/hostname"] == NODE
    st = node["status"]
    assert condition(node, "Ready")["reason"] == "EdgeReady"
    assert condition(node, "MemoryPressure")["status"] == "False"
    addrs = {a["type"]: a["address"] for a in st["addresses"]}
    assert addrs["InternalIP"] and addrs["Hostname"]
    assert st["nodeInfo"]["kubeletVersion"] == "v1.37.0-kubeedge"
    assert st["nodeInfo"]["operatingSystem"] == "linux" and st["nodeInfo"]["kernelVersion"]
    assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["pods"] == "110"

    # Status patches follow the registration (every nodeStatusUpdateFrequency = 1 s).
    registered_beat = condition(node, "Ready")["lastHeartbeatTime"]

    async def patched() -> bool:
        return bool(condition(await kc.get(NODES, NODE), "Ready")["lastHeartbeatTime"] > registered_beat)

    await eventually(patched, "a nodepatch to refresh the Ready heartbeat")

    # `kubectl delete node` while the edge runs: its next status patch finds no Node, and it registers
    # again (a new uid), labels and all.
    old_uid = node["metadata"]["uid"]
    await kc.delete(NODES, NODE)

    async def registered_again() -> dict[str, Any] | None:
        n = await node_ready()
        return n if n is not None and n["metadata"]["uid"] != old_uid else None

    again = await eventually(registered_again, "the deleted Node to be registered again")
    assert again["metadata"]["labels"]["site"] == "lab"

    # Joined: CA + certificate on disk, the key private to the owner.
    key_file = edge.data_dir / "certs" / "server.key"
    assert (edge.data_dir / "ca" / "rootCA.crt").read_bytes() == cloud.ca.cert_pem
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert (
        certs.subject_identity(certs.KeyPair.load(edge.data_dir / "certs" / "server.crt", key_file).cert)[0]
        == f"system:node:{NODE}"
    )

    # The lease is renewed (every nodeLeaseDurationSeconds/4 = 1 s).
    async def lease_time() -> str | None:
        try:
            lease = await kc.get(LEASES, NODE, "kube-node-lease")
        except NotFound:
            return None
        return cast(str | None, lease["spec"].get("renewTime"))

    first = await eventually(lease_time, "the Lease")
    lease = await kc.get(LEASES, NODE, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE and lease["spec"]["leaseDurationSeconds"] == 4

    async def renewed() -> bool:
        t = await lease_time()
        return t is not None and t > first

    await eventually(renewed, "the Lease renewTime to advance")

    # A pod bound to the node lands in the edge store.
    ns = f"e-{os.getpid()}"
    await kc.create(NAMESPACES, {"metadata": {"name": ns}})
    pod = {
        "metadata": {"name": "web"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "nginx"}]},
    }
    created = await kc.create(PODS, pod, ns)
    db = edge.data_dir / "edgecore.db"

    async def stored() -> dict[str, Any] | None:
        return edge_pod_row(db, ns, "web")

    row = await eventually(stored, "the pod in the edge store")
    assert row["metadata"]["uid"] == created["metadata"]["uid"]
    assert row["spec"]["nodeName"] == NODE

    # Cloud outage: statuses queue in the persisted upstream queue and are delivered after reconnect.
    port = cloud.hub.port
    await cloud.hub.stop()
    upstream_db = edge.data_dir / "upstream.db"
    await eventually(
        lambda: _async(pending_upstream(upstream_db, f"null/nodepatch/{NODE}")), "a queued status"
    )
    before_outage_end = await lease_time()
    serving = certs.issue(cloud.ca, "kubeedge-cloudhub", ip_addresses=[HOST], server=True)
    cloud.hub = CloudHub(CloudHubConfig(host=HOST, port=port), cloud.ca, serving, cloud.ec)
    cloud.ec.hub = cloud.hub  # the restarted cloudhub, as a restarted cloudcore would wire it
    await cloud.hub.start()
    await eventually(lambda: _async(cloud.hub.connected(NODE)), "edgehub to reconnect after the outage")

    async def renewed_after_outage() -> bool:
        t = await lease_time()
        return t is not None and before_outage_end is not None and t > before_outage_end

    await eventually(renewed_after_outage, "the Lease renewed after the outage")

    # kill -9, restart without a token: the saved certificate is enough, and the node stays Ready.
    edge.kill9()
    await eventually(lambda: _async(not cloud.hub.connected(NODE)), "cloudhub to notice the disconnect")
    stale = await lease_time()
    assert stale is not None
    edge.start(edge.write_config(cloud, token=""))
    await eventually(lambda: _async(cloud.hub.connected(NODE)), "the restarted edgecore to reconnect")

    async def renewed_after_restart() -> bool:
        t = await lease_time()
        return t is not None and t > stale

    await eventually(renewed_after_restart, "a Lease renewal from the restarted edgecore")
    assert condition(await kc.get(NODES, NODE), "Ready")["status"] == "True"
    assert edge_pod_row(db, ns, "web") is not None
    # The restarted process receives downstream changes too.
    await kc.create(PODS, {**pod, "metadata": {"name": "api"}}, ns)

    async def second_stored() -> dict[str, Any] | None:
        return edge_pod_row(db, ns, "api")

    await eventually(second_stored, "a pod bound after the restart in the edge store")
    assert edge.log.read_text().count("joined as node") == 1  # the restart did not join again

    # SIGTERM: a clean exit.
    assert await asyncio.to_thread(edge.terminate) == 0
    assert "stopped" in edge.logs()


def pending_upstream(db: Path, resource: str) -> bool:
    """Whether the edge's upstream queue holds a report for ``resource`` (read-only peek)."""
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT 1 FROM upstream WHERE resource=?", (resource,)).fetchone() is not None
    finally:
        conn.close()


async def _async(value: bool) -> bool:
    return value


# ---- against the cloudcore process ------------------------------------------------------------------


@pytest.fixture
def cloudcore(tmp_path: Path) -> Iterator[CloudCore]:
    base = tmp_path / "cloud"
    base.mkdir()
    cc = CloudCore.create(base, data_dir=base / "data", controllers="none")
    try:
        yield cc
    finally:
        cc.daemon.stop()


async def test_against_cloudcore_process_and_its_restart(cloudcore: CloudCore, edge: EdgeProc) -> None:
    await cloudcore.ensure_running()
    doc = {
        "dataDir": str(edge.data_dir),
        "modules": {
            "edgeHub": {
                "httpServer": cloudcore.https_server,
                "websocket": {"server": cloudcore.ws_server},
                "token": cloudcore.token,
            },
            "edged": {
                "enable": False,
                "hostnameOverride": NODE,
                "nodeStatusUpdateFrequency": 1,
                "nodeStatusReportFrequency": 1,
                "nodeLeaseDurationSeconds": 4,
            },
            "metaManager": {"metaServer": {"enable": False}},
        },
    }
    config = edge.data_dir / "edgecore.yaml"
    config.write_text(yaml.safe_dump(doc))
    edge.start(config)
    async with KubeClient(KubeConfig.from_file(str(cloudcore.kubeconfig))) as kc:

        async def ready_since(t: str) -> bool:
            assert edge.alive(), f"edgecore exited:\n{edge.logs()}"
            try:
                node = await kc.get(NODES, NODE)
            except NotFound:
                return False
            ready = condition(node, "Ready")
            return ready["status"] == "True" and ready["lastHeartbeatTime"] > t

        await eventually(lambda: ready_since(""), "the Node registered Ready through cloudcore")
        pod = {
            "metadata": {"name": "p1"},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]},
        }
        await kc.create(PODS, pod, "default")
        db = edge.data_dir / "edgecore.db"
        await eventually(lambda: _async(edge_pod_row(db, "default", "p1") is not None), "p1 at the edge")

    # Restart cloudcore under the running edgecore: it reconnects by itself and keeps reporting.
    cloudcore.daemon.stop()
    stopped_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await cloudcore.ensure_running()
    async with KubeClient(KubeConfig.from_file(str(cloudcore.kubeconfig))) as kc:
        await eventually(lambda: ready_since(stopped_at), "a Ready status after the cloudcore restart", 45.0)
        await kc.create(PODS, {**pod, "metadata": {"name": "p2"}}, "default")
        await eventually(lambda: _async(edge_pod_row(db, "default", "p2") is not None), "p2 at the edge")
    assert await asyncio.to_thread(edge.terminate) == 0
