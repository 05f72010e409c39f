"""The edge's link and store: metamanager on a real Store, edgehub against an in-test TLS websocket cloud.

The fake cloud here is a minimal aiohttp mTLS websocket endpoint beside the real cloudhub, enough to
observe what the edge puts on the wire and to close the socket under it."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from kubeedge.beehive import Message, decode, encode
from kubeedge.beehive.message import OP_INVENTORY
from kubeedge.edgecore.edgehub import EdgeHub, EdgeHubConfig
from kubeedge.edgecore.metamanager import CLOUD_RV_ANNOTATION, MetaManager
from kubeedge.pki import certs
from kubeedge.store import NotFound, Store

HOST = "127.0.0.1"
NODE = "edge-1"


async def until(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for a condition owned by the code under test (no event to wait on), with a deadline."""
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


# ---- metamanager on a real store -----------------------------------------------------------------


class RecordingLink:
    """Stands in for the edgehub; on each ACK, snapshots whether the object is already in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sent: list[Message] = []
        self.committed_at_ack: list[bool] = []

    async def send(self, msg: Message) -> bool:
        self.sent.append(msg)
        if msg.operation == "response":
            ns, rtype, name = msg.resource.split("/")
            key = {"pod": "pods", "configmap": "configmaps"}.get(rtype)
            if key is not None:
                try:
                    self.store.get_now(key, ns, name)
                    self.committed_at_ack.append(True)
                except NotFound:
                    self.committed_at_ack.append(False)
        return True


def pod(name: str, rv: int, ns: str = "default", uid: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "resourceVersion": str(rv)},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
    }


def obj_msg(op: str, resource: str, content: Any, rv: int) -> Message:
    return Message.new("edgecontroller", "resource", op, resource, content, resource_version=str(rv))


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "edge.db") as s:
        yield s


async def test_insert_update_delete_with_ack_after_commit(store: Store) -> None:
    link = RecordingLink(store)
    mm = MetaManager(store, link, node_name=NODE)
    ins = obj_msg("insert", "default/pod/web", pod("web", 10), 10)
    await mm.apply_burst([ins])
    rec = store.get_now("pods", "default", "web")
    assert rec.obj["metadata"]["annotations"][CLOUD_RV_ANNOTATION] == "10"
    assert rec.obj["metadata"]["resourceVersion"] == str(rec.rv)  # the store's own revision
    assert link.sent[-1].operation == "response"
    assert link.sent[-1].parent_msg_id == ins.msg_id
    assert link.sent[-1].content == "OK"

    upd = pod("web", 12)
    upd["spec"]["containers"][0]["image"] = "nginx"
    await mm.apply_burst([obj_msg("update", "default/pod/web", upd, 12)])
    assert store.get_now("pods", "default", "web").obj["spec"]["containers"][0]["image"] == "nginx"

    cm = {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"k": "v"}}
    await mm.apply_burst([obj_msg("insert", "default/configmap/cfg", cm, 13)])
    assert store.get_now("configmaps", "default", "cfg").obj["kind"] == "ConfigMap"

    dele = obj_msg("delete", "default/pod/web", pod("web", 14), 14)
    await mm.apply_burst([dele])
    with pytest.raises(NotFound):
        store.get_now("pods", "default", "web")
    assert link.sent[-1].parent_msg_id == dele.msg_id and link.sent[-1].operation == "response"
    # Every ACK of a pod/configmap write was sent when the write was already visible in the store.
    assert link.committed_at_ack[:3] == [True, True, True]


async def test_cluster_scoped_and_group_keys(store: Store) -> None:
    mm = MetaManager(store, RecordingLink(store), node_name=NODE)
    node = {"metadata": {"name": NODE}, "status": {}}
    lease = {"metadata": {"name": NODE, "namespace": "kube-node-lease"}, "spec": {}}
    dev = {"metadata": {"name": "d1", "namespace": "default"}, "spec": {}}
    await mm.apply_burst(
        [
            obj_msg("insert", f"null/node/{NODE}", node, 3),
            obj_msg("insert", f"kube-node-lease/lease/{NODE}", lease, 4),
            obj_msg("insert", "default/device/d1", dev, 5),
        ]
    )
    assert store.get_now("nodes", "", NODE).obj["apiVersion"] == "v1"
    assert store.get_now("leases.coordination.k8s.io", "kube-node-lease", NODE).obj["kind"] == "Lease"
    assert store.get_now("devices.devices.kubeedge.io", "default", "d1").obj["kind"] == "Device"


async def test_stale_versions_dropped_but_acked(store: Store) -> None:
    link = RecordingLink(store)
    mm = MetaManager(store, link, node_name=NODE)
    await mm.apply_burst([obj_msg("insert", "default/pod/p", pod("p", 20), 20)])
    before = store.get_now("pods", "default", "p").rv
    old = pod("p", 19)
    old["spec"]["containers"][0]["image"] = "old"
    for rv in (19, 20):
        stale = obj_msg("update", "default/pod/p", old, rv)
        await mm.apply_burst([stale])
        assert link.sent[-1].operation == "response" and link.sent[-1].parent_msg_id == stale.msg_id
    rec = store.get_now("pods", "default", "p")
    assert rec.rv == before and rec.obj["spec"]["containers"][0]["image"] == "busybox"
    assert mm.stats["stale"] == 2
    # "9" < "20" as strings but not as integers: versions compare as integers.
    nine = obj_msg("update", "default/pod/p", pod("p", 9), 9)
    await mm.apply_burst([nine])
    assert store.get_now("pods", "default", "p").rv == before
    # A delete of an absent object is ACKed as well.
    gone = obj_msg("delete", "default/pod/nothere", pod("nothere", 5), 5)
    await mm.apply_burst([gone])
    assert link.sent[-1].parent_msg_id == gone.msg_id and link.sent[-1].content == "OK"


async def test_insert_then_delete_in_one_burst_keeps_order(store: Store) -> None:
    mm = MetaManager(store, RecordingLink(store), node_name=NODE)
    await mm.apply_burst(
        [
            obj_msg("insert", "default/pod/x", pod("x", 30), 30),
            obj_msg("delete", "default/pod/x", pod("x", 31), 31),
        ]
    )
    with pytest.raises(NotFound):
        store.get_now("pods", "default", "x")


async def test_unknown_operation_and_type_get_error_replies(store: Store) -> None:
    link = RecordingLink(store)
    mm = MetaManager(store, link, node_name=NODE)
    bad_op = obj_msg("frobnicate", "default/pod/p", pod("p", 1), 1)
    bad_type = obj_msg("insert", "default/widget/w", {"metadata": {"name": "w"}}, 1)
    bad_body = obj_msg("insert", "default/pod/q", "not json at all", 1)
    await mm.apply_burst([bad_op, bad_type, bad_body])
    errs = {m.parent_msg_id: m for m in link.sent}
    for m in (bad_op, bad_type, bad_body):
        assert errs[m.msg_id].operation == "error"
        assert isinstance(errs[m.msg_id].content, str) and errs[m.msg_id].content
    assert "frobnicate" in errs[bad_op.msg_id].content
    assert mm.stats["errors"] == 3


async def test_burst_of_1000_updates_in_few_transactions(store: Store) -> None:
    link = RecordingLink(store)
    mm = MetaManager(store, link, node_name=NODE)
    msgs = []
    for i in range(1000):
        cm = {"metadata": {"name": f"c{i}", "namespace": "default"}, "data": {"i": str(i)}}
        msgs.append(obj_msg("update", f"default/configmap/c{i}", cm, 100 + i))
    for m in msgs:
        await mm.handle(m)
    batches_before = store.stats["batches"]
    runner = asyncio.create_task(mm.run())
    try:
        await until(lambda: len(link.sent) == 1000, within=30)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert all(link.committed_at_ack)
    assert {m.parent_msg_id for m in link.sent} == {m.msg_id for m in msgs}
    assert store.stats["batches"] - batches_before <= 5
    listed = await store.list("configmaps", "default")
    assert len(listed.items) == 1000


async def test_inventory_lists_cloud_versions(store: Store) -> None:
    mm = MetaManager(store, RecordingLink(store), node_name=NODE)
    await mm.apply_burst(
        [
            obj_msg("insert", "default/pod/a", pod("a", 41, uid="u-a"), 41),
            obj_msg("insert", "default/secret/s", {"metadata": {"name": "s", "uid": "u-s"}}, 42),
            obj_msg("insert", f"null/node/{NODE}", {"metadata": {"name": NODE, "uid": "u-n"}}, 43),
        ]
    )
    inv = await mm.inventory()
    assert inv.operation == OP_INVENTORY == "inventory"
    assert inv.resource == f"null/inventory/{NODE}"
    items = {(i["type"], i["namespace"], i["name"]): i for i in inv.content["items"]}
    assert items[("pod", "default", "a")]["uid"] == "u-a"
    assert items[("pod", "default", "a")]["resourceVersion"] == "41"
    assert items[("secret", "default", "s")]["resourceVersion"] == "42"
    assert items[("node", "", NODE)]["resourceVersion"] == "43"
    assert len(items) == 3
    decode(encode(inv))  # goes on the wire as is


async def test_local_query_answered_from_store(store: Store) -> None:
    mm = MetaManager(store, RecordingLink(store), node_name=NODE)
    cm = {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"k": "v"}}
    await mm.apply_burst([obj_msg("insert", "default/configmap/cfg", cm, 7)])
    q = Message.new("edged", "meta", "query", "default/configmap/cfg")
    r = await mm.query(q)
    assert r.operation == "response" and r.parent_msg_id == q.msg_id
    assert r.content["data"] == {"k": "v"}
    missing = await mm.query(Message.new("edged", "meta", "query", "default/secret/nope"))
    assert missing.operation == "error" and "not found" in missing.content


# ---- edgehub against an in-test TLS websocket cloud ----------------------------------------------


@dataclass
class FakeCloud:
    """Accepts edge websockets over mTLS, records frames and headers, lets the test close or push."""

    ca: certs.KeyPair
    port: int = 0
    connects: list[dict[str, str]] = field(default_factory=list)
    frames: list[Message] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    open_ws: set[web.WebSocketResponse] = field(default_factory=set)
    runner: web.AppRunner | None = None

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        self.connects.append(
            {
                "node_id": request.headers.get("node_id", ""),
                "project_id": request.headers.get("project_id", ""),
                "cn": str(subject.get("commonName", "")),
                "path": request.path,
            }
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.open_ws.add(ws)
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(decode(frame.data))
        finally:
            self.open_ws.discard(ws)
        return ws

    async def start(self) -> None:
        server_pair = certs.issue(self.ca, "cloudcore", ip_addresses=[HOST], server=True)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.ca.cert_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        certs.load_cert_chain(ctx, server_pair)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def push(self, msg: Message) -> None:
        assert self.ws is not None
        await self.ws.send_str(encode(msg).decode())

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            for ws in list(self.open_ws):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"cloud stopping")
            await runner.cleanup()


@dataclass
class Harness:
    cloud: FakeCloud
    hub: EdgeHub
    received: list[Message]
    events: list[str]
    new_hub: Callable[..., EdgeHub]


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    ca = certs.create_ca()
    cloud = FakeCloud(ca)
    await cloud.start()
    node_pair = certs.issue(ca, f"system:node:{NODE}", organizations=["system:nodes"], client=True)
    received: list[Message] = []
    events: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    hubs: list[EdgeHub] = []

    async def on_message(m: Message) -> None:
        received.append(m)

    async def on_connected() -> None:
        events.append("up")

    async def on_disconnected() -> None:
        events.append("down")

    def new_hub(**overrides: Any) -> EdgeHub:
        cfg = EdgeHubConfig.for_cloud(
            HOST,
            NODE,
            port=cloud.port,
            heartbeat=overrides.pop("heartbeat", 0.05),
            backoff_base=0.01,
            backoff_cap=0.05,
            handshake_timeout=5.0,
        )
        hub = EdgeHub(
            cfg, ca.cert_pem, overrides.pop("cert", node_pair), on_message, on_connected, on_disconnected
        )
        hubs.append(hub)
        tasks.append(asyncio.create_task(hub.run()))
        return hub

    hub = new_hub()
    try:
        yield Harness(cloud, hub, received, events, new_hub)
    finally:
        for h in hubs:
            h.stop()
        for t in tasks:
            try:
                async with asyncio.timeout(5):
                    await t
            except TimeoutError:
                t.cancel()
        await cloud.stop()


async def test_dials_with_mtls_and_headers_and_sends_keepalives(harness: Harness) -> None:
    async with asyncio.timeout(10):
        await harness.hub.connected_event.wait()
    assert harness.hub.connected
    c = harness.cloud.connects[0]
    assert c == {
        "node_id": NODE,
        "project_id": "e632aba927ea4ac2b575ec1603d56f10",
        "cn": f"system:node:{NODE}",
        "path": f"/e632aba927ea4ac2b575ec1603d56f10/{NODE}/events",
    }
    await until(lambda: len([f for f in harness.cloud.frames if f.operation == "keepalive"]) >= 3)
    ka = harness.cloud.frames[0]
    assert (ka.group, ka.resource, ka.operation, ka.content) == ("resource", "node", "keepalive", "ping")
    await until(lambda: harness.events == ["up"])


async def test_messages_from_cloud_reach_on_message_in_order(harness: Harness) -> None:
    async with asyncio.timeout(10):
        await harness.hub.connected_event.wait()
    await until(lambda: harness.cloud.ws is not None)
    sent = [
        obj_msg("update", f"default/configmap/c{i}", {"metadata": {"name": f"c{i}"}}, i) for i in range(50)
    ]
    for m in sent:
        await harness.cloud.push(m)
    await until(lambda: len(harness.received) == 50)
    assert [m.msg_id for m in harness.received] == [m.msg_id for m in sent]
    assert harness.received[7].content == {"metadata": {"name": "c7"}}


async def test_server_close_reconnects_and_offline_send_fails(harness: Harness) -> None:
    hub = harness.hub
    async with asyncio.timeout(10):
        await hub.connected_event.wait()
    await until(lambda: harness.cloud.ws is not None)
    first = harness.cloud.ws
    assert first is not None
    await first.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"replaced by test")
    await until(lambda: "down" in harness.events)
    assert "replaced by test" in hub.last_close_reason
    await until(lambda: len(harness.cloud.connects) >= 2 and hub.connected)
    # on_connected runs as its own task once the hub is connected (it may await replies the reader
    # delivers), so the second "up" can trail `connected` by a moment.
    await until(lambda: len(harness.events) >= 3)
    assert harness.events[:3] == ["up", "down", "up"]
    assert await hub.send(Message.new("edged", "resource", "patch", "default/podpatch/p", "{}"))
    await until(lambda: any(f.resource == "default/podpatch/p" for f in harness.cloud.frames))
    # Cloud gone: sends fail fast with False, and the hub keeps dialling.
    await harness.cloud.stop()
    await until(lambda: not hub.connected)
    assert not await hub.send(Message.new("edged", "resource", "patch", "default/podpatch/p", "{}"))
    dials = hub.stats["dials"]
    await until(lambda: hub.stats["dials"] >= dials + 2)


async def test_untrusted_client_certificate_is_refused_then_rotation_fixes_it(harness: Harness) -> None:
    harness.hub.stop()
    other_ca = certs.create_ca("someone-else")
    wrong = certs.issue(other_ca, f"system:node:{NODE}", organizations=["system:nodes"], client=True)
    hub = harness.new_hub(cert=wrong)
    await until(lambda: hub.stats["dials"] >= 2)
    assert not hub.connected
    assert "dial failed" in hub.last_close_reason
    # Rotation: the next dial uses the new pair.
    hub.use_certificate(certs.issue(harness.cloud.ca, f"system:node:{NODE}", client=True))
    async with asyncio.timeout(10):
        await hub.connected_event.wait()


async def test_config_validation() -> None:
    with pytest.raises(ValueError, match="wss"):
        EdgeHubConfig(server="ws://127.0.0.1:10000/x/n/events", node_name="n")
    with pytest.raises(ValueError, match="node_name"):
        EdgeHubConfig(server="wss://127.0.0.1:10000/x/n/events", node_name="a/b")
    with pytest.raises(ValueError, match="backoff_cap"):
        EdgeHubConfig(server="wss://127.0.0.1:10000/x/n/events", node_name="n", backoff_base=5, backoff_cap=1)
    cfg = EdgeHubConfig(server="wss://127.0.0.1:10000/x/n/events", node_name="n")
    assert all(0 <= cfg.backoff(a) <= min(60.0, 2.0**a) for a in range(20))
    assert max(cfg.backoff(100) for _ in range(200)) <= 60.0


async def test_metamanager_behind_edgehub_acks_through_the_socket(harness: Harness, tmp_path: Path) -> None:
    """End to end on the edge: cloud frame → edgehub → metamanager → store → ACK frame back."""
    harness.hub.stop()
    async with Store(tmp_path / "edge.db") as store:
        holder: dict[str, MetaManager] = {}

        async def route(m: Message) -> None:
            await holder["mm"].handle(m)

        async def connected() -> None:
            await holder["mm"].on_connected()

        cfg = EdgeHubConfig.for_cloud(HOST, NODE, port=harness.cloud.port, heartbeat=5.0, backoff_base=0.01)
        node_pair = certs.issue(harness.cloud.ca, f"system:node:{NODE}", client=True)
        hub = EdgeHub(cfg, harness.cloud.ca.cert_pem, node_pair, route, connected)
        holder["mm"] = MetaManager(store, hub, node_name=NODE)
        tasks = [asyncio.create_task(hub.run()), asyncio.create_task(holder["mm"].run())]
        try:
            await until(lambda: any(f.operation == "inventory" for f in harness.cloud.frames))
            await until(lambda: harness.cloud.ws is not None and not harness.cloud.ws.closed)
            ins = obj_msg("insert", "default/pod/e2e", pod("e2e", 77), 77)
            await harness.cloud.push(ins)
            await until(lambda: any(f.parent_msg_id == ins.msg_id for f in harness.cloud.frames))
            assert store.get_now("pods", "default", "e2e").obj["metadata"]["name"] == "e2e"
        finally:
            hub.stop()
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
