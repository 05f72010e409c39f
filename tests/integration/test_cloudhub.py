"""cloudhub on a real mTLS port on 127.0.0.1, with aiohttp websocket clients acting as edge nodes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from kubeedge.beehive import Message, decode, encode
from kubeedge.cloudcore.cloudhub import CloudHub, CloudHubConfig
from kubeedge.cloudcore.session import (
    CLOSE_BAD_FRAMES,
    CLOSE_GOING_AWAY,
    CLOSE_KEEPALIVE_TIMEOUT,
    CLOSE_RATE_LIMIT,
    CLOSE_REPLACED,
    CLOSE_TOO_BIG,
    REASON_KEEPALIVE,
    REASON_RATE_LIMIT,
    REASON_REPLACED,
    REASON_SHUTDOWN,
)
from kubeedge.pki import certs

HOST = "127.0.0.1"
PATH = "/e632aba927ea4ac2b575ec1603d56f10/{node}/events"
DEADLINE = 10.0


class Recorder:
    """A NodeEvents that records everything, in order, and lets tests wait for conditions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Message | None]] = []
        self._changed = asyncio.Condition()

    async def _record(self, kind: str, node: str, msg: Message | None) -> None:
        async with self._changed:
            self.events.append((kind, node, msg))
            self._changed.notify_all()

    async def node_connected(self, node: str) -> None:
        await self._record("connected", node, None)

    async def node_disconnected(self, node: str) -> None:
        await self._record("disconnected", node, None)

    async def message_from(self, node: str, msg: Message) -> None:
        await self._record("message", node, msg)

    def kinds(self, node: str) -> list[str]:
        return [k for k, n, _ in self.events if n == node]

    def messages(self, node: str) -> list[Message]:
        return [m for k, n, m in self.events if n == node and k == "message" and m is not None]

    async def wait(self, cond: Callable[[], bool], within: float = DEADLINE) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(cond)


class Pki:
    def __init__(self) -> None:
        self.ca = certs.create_ca()
        self.serving = certs.issue(self.ca, "cloudhub", ip_addresses=[HOST], server=True)
        self._nodes: dict[str, certs.KeyPair] = {}

    def node(self, name: str) -> certs.KeyPair:
        if name not in self._nodes:
            self._nodes[name] = certs.issue(
                self.ca, f"system:node:{name}", organizations=["system:nodes"], client=True
            )
        return self._nodes[name]

    def client_ctx(self, pair: certs.KeyPair | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        if pair is not None:
            certs.load_cert_chain(ctx, pair)
        return ctx


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


HubFactory = Callable[..., Awaitable[tuple[CloudHub, Recorder]]]


@pytest_asyncio.fixture
async def make_hub(pki: Pki) -> AsyncIterator[HubFactory]:
    hubs: list[CloudHub] = []

    async def make(**overrides: Any) -> tuple[CloudHub, Recorder]:
        rec = Recorder()
        hub = CloudHub(CloudHubConfig(host=HOST, port=0, **overrides), pki.ca, pki.serving, rec)
        await hub.start()
        hubs.append(hub)
        return hub, rec

    yield make
    for hub in hubs:
        await hub.stop()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def dial(
    s: aiohttp.ClientSession,
    hub: CloudHub,
    pki: Pki,
    node: str,
    *,
    header: str | None = None,
    pair: certs.KeyPair | str | None = "default",
) -> aiohttp.ClientWebSocketResponse:
    key = pki.node(node) if pair == "default" else pair
    assert not isinstance(key, str)
    return await s.ws_connect(
        f"https://{HOST}:{hub.port}{PATH.format(node=node)}",
        ssl=pki.client_ctx(key),
        headers={"node_id": node if header is None else header},
        autoping=True,
        max_msg_size=16 * 1024 * 1024,
    )


def upstream(i: int, node: str = "n1") -> Message:
    return Message.new("edged", "resource", "update", f"default/podpatch/p{i}", {"seq": i})


async def recv_msg(ws: aiohttp.ClientWebSocketResponse) -> Message:
    frame = await ws.receive(timeout=DEADLINE)
    assert frame.type is aiohttp.WSMsgType.TEXT, frame
    return decode(frame.data)


async def recv_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server's close frame; (code, reason)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            frame = await ws.receive()
            if frame.type is aiohttp.WSMsgType.CLOSE:
                # The frame's code: ws.close_code may already say 1006 if the server dropped the
                # transport right after its close frame.
                return int(frame.data), frame.extra or ""
            if frame.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, ""


async def eventually(cond: Callable[[], bool], within: float = DEADLINE) -> None:
    """Poll a condition owned by the hub (no event to wait on), with a deadline."""
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


# ---- config ----------------------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    cfg = CloudHubConfig()
    assert (cfg.port, cfg.keepalive_timeout, cfg.send_queue_limit) == (10000, 30.0, 1000)
    bads: list[dict[str, Any]] = [
        {"port": 70000},
        {"keepalive_timeout": 0},
        {"send_queue_limit": 0},
        {"rate_limit_qps": -1},
        {"max_frame_bytes": 10},
    ]
    for bad in bads:
        with pytest.raises(ValueError):
            CloudHubConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]


# ---- connecting ------------------------------------------------------------------------------------


async def test_connect_and_round_trip_in_order(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub()
    ws = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    assert hub.connected("n1") and hub.nodes() == ["n1"]

    # Upstream: text and binary frames both accepted, delivered in order; keepalive is not delivered.
    sent = [upstream(i) for i in range(50)]
    for i, m in enumerate(sent):
        if i % 2:
            await ws.send_bytes(encode(m))
        else:
            await ws.send_str(encode(m).decode())
    keepalive = Message.new("edgehub", "resource", "keepalive", "node", "ping")
    await ws.send_bytes(encode(keepalive))
    await rec.wait(lambda: len(rec.messages("n1")) == 50)
    assert [m.msg_id for m in rec.messages("n1")] == [m.msg_id for m in sent]
    assert rec.messages("n1")[7].content == {"seq": 7}

    # Control operations are answered by the hub with "ack" and never reach a module.
    ping = Message.new("edgehub", "resource", "ping", "node", "")
    await ws.send_bytes(encode(ping))
    ack = await recv_msg(ws)
    assert (ack.operation, ack.parent_msg_id, ack.content) == ("response", ping.msg_id, "ack")

    # Downstream, in order.
    down = [
        Message.new("edgecontroller", "resource", "update", f"default/pod/p{i}", {"i": i}) for i in range(30)
    ]
    for m in down:
        assert await hub.send("n1", m)
    got = [await recv_msg(ws) for _ in down]
    assert [g.msg_id for g in got] == [m.msg_id for m in down]
    assert got[3].content == {"i": 3}

    st = hub.stats()
    assert st.connected == 1
    assert st.nodes["n1"].messages_in == 52  # 50 + keepalive + ping
    await eventually(lambda: hub.stats().nodes["n1"].messages_out == 31)
    assert len(rec.messages("n1")) == 50  # keepalive and ping never reached the module

    await ws.close()
    await rec.wait(lambda: rec.kinds("n1")[-1] == "disconnected")
    assert not hub.connected("n1") and hub.nodes() == []
    assert not await hub.send("n1", down[0])
    assert hub.stats().connected == 0 and hub.stats().messages_out == 31


async def test_header_must_match_certificate(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub()
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await dial(session, hub, pki, "n1", header="n2")
    assert exc.value.status == 403
    # The same refusal, read as plain HTTP, carries the reason.
    async with session.get(
        f"https://{HOST}:{hub.port}/x/n1/events",
        ssl=pki.client_ctx(pki.node("n1")),
        headers={"node_id": "n2"},
    ) as r:
        assert r.status == 403
        text = await r.text()
    assert "does not match" in text and "'n2'" in text and "'n1'" in text
    async with session.get(f"https://{HOST}:{hub.port}/x/n1/events", ssl=pki.client_ctx(pki.node("n1"))) as r:
        assert r.status == 403 and "missing node_id header" in await r.text()
    # A certificate from our CA that is not a node identity.
    admin = certs.issue(pki.ca, "admin", organizations=["system:masters"], client=True)
    async with session.get(
        f"https://{HOST}:{hub.port}/", ssl=pki.client_ctx(admin), headers={"node_id": "admin"}
    ) as r:
        assert r.status == 403 and "not a node identity" in await r.text()
    assert hub.stats().refused == 4 and rec.events == []


async def test_foreign_ca_and_missing_client_cert_fail_tls(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub()
    other_ca = certs.create_ca("other")
    foreign = certs.issue(other_ca, "system:node:n1", organizations=["system:nodes"], client=True)
    for pair in (foreign, None):
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            ws = await dial(session, hub, pki, "n1", pair=pair)
            # TLS 1.3 reports a rejected client certificate on the first read.
            await ws.receive(timeout=DEADLINE)
            raise AssertionError("connection without a valid client certificate was served")
    # The hub is still serving valid nodes.
    ws = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    await ws.close()


async def test_second_connection_replaces_first(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub()
    first = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    async with aiohttp.ClientSession() as s2:
        second = await dial(s2, hub, pki, "n1")
        assert await recv_close(first) == (CLOSE_REPLACED, REASON_REPLACED)
        await rec.wait(lambda: rec.kinds("n1") == ["connected", "disconnected", "connected"])
        assert hub.connected("n1") and hub.stats().connected == 1
        # The new session is the one served.
        m = upstream(1)
        await second.send_str(encode(m).decode())
        await rec.wait(lambda: len(rec.messages("n1")) == 1)
        down = Message.new("edgecontroller", "resource", "update", "default/pod/p", {})
        assert await hub.send("n1", down)
        assert (await recv_msg(second)).msg_id == down.msg_id
        await second.close()
    await rec.wait(lambda: rec.kinds("n1")[-1] == "disconnected")
    assert rec.kinds("n1") == ["connected", "disconnected", "connected", "message", "disconnected"]


# ---- misbehaving nodes -----------------------------------------------------------------------------


async def test_garbage_frames_error_then_close_while_others_work(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(max_bad_frames=3)
    bad = await dial(session, hub, pki, "bad")
    good = await dial(session, hub, pki, "good")
    await rec.wait(lambda: rec.kinds("bad") == ["connected"] and rec.kinds("good") == ["connected"])

    # A frame with a recognisable msg_id but no route gets an error reply naming the problem.
    await bad.send_str(orjson.dumps({"header": {"msg_id": "m-1", "timestamp": 1}}).decode())
    err = await recv_msg(bad)
    assert (err.operation, err.parent_msg_id) == ("error", "m-1")
    assert "missing route" in err.content
    # A good frame resets the streak; then garbage without any id, until the limit closes the session.
    await bad.send_str(encode(upstream(0)).decode())
    await bad.send_str("not json at all")
    await bad.send_bytes(b"\xff\xfe")
    await good.send_str(encode(upstream(1)).decode())
    await bad.send_str("[1, 2, 3]")
    code, reason = await recv_close(bad)
    assert code == CLOSE_BAD_FRAMES
    assert "3 undecodable frames in a row" in reason and "not a JSON object" in reason
    await rec.wait(lambda: rec.kinds("bad")[-1] == "disconnected")
    assert len(rec.messages("bad")) == 1

    # The other node kept working throughout and still does.
    await rec.wait(lambda: len(rec.messages("good")) == 1)
    await good.send_str(encode(upstream(2)).decode())
    await rec.wait(lambda: len(rec.messages("good")) == 2)
    assert hub.connected("good") and hub.stats().bad_frames == 4
    await good.close()


async def test_oversize_frame_closes_with_1009(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(max_frame_bytes=4096)
    ws = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    await ws.send_str(encode(upstream(0).with_content("x" * 8192)).decode())
    code, reason = await recv_close(ws)
    assert code == CLOSE_TOO_BIG and "4096 bytes" in reason
    await rec.wait(lambda: rec.kinds("n1")[-1] == "disconnected")
    assert rec.messages("n1") == []


async def test_keepalive_timeout_closes_silent_session(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(keepalive_timeout=0.5)
    started = time.monotonic()
    silent = await dial(session, hub, pki, "silent")
    chatty = await dial(session, hub, pki, "chatty")
    await rec.wait(lambda: "connected" in rec.kinds("silent") and "connected" in rec.kinds("chatty"))
    keepalive = Message.new("edgehub", "resource", "keepalive", "node", "ping")

    async def keep_alive() -> None:
        while True:
            await chatty.send_str(encode(keepalive).decode())
            await asyncio.sleep(0.1)  # the edge's keepalive period, scaled down

    pinger = asyncio.create_task(keep_alive())
    try:
        assert await recv_close(silent) == (CLOSE_KEEPALIVE_TIMEOUT, REASON_KEEPALIVE)
        assert time.monotonic() - started >= 0.5
        await rec.wait(lambda: rec.kinds("silent")[-1] == "disconnected")
        assert hub.connected("chatty") and not hub.connected("silent")
    finally:
        pinger.cancel()
    await chatty.close()


async def test_bounded_queue_waits_then_drops(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(send_queue_limit=4, send_timeout=0.2)
    ws = await dial(session, hub, pki, "n1")  # never reads
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    blob = "x" * (256 * 1024)
    results: list[bool] = []
    for i in range(400):  # socket buffers fill, then the queue, then send times out
        ok = await hub.send(
            "n1", Message.new("edgecontroller", "resource", "update", f"default/pod/p{i}", blob)
        )
        results.append(ok)
        if not ok:
            break
    assert results[-1] is False, "send never gave up on a node that does not read"
    st = hub.stats()
    assert st.nodes["n1"].queue_depth == 4 and st.nodes["n1"].dropped == 1 and st.dropped == 1
    assert hub.connected("n1")  # a slow reader is not disconnected for it
    # Once the node reads again, what was queued is delivered in order.
    got = [await recv_msg(ws) for _ in range(len(results) - 1)]
    assert [g.resource for g in got] == [f"default/pod/p{i}" for i in range(len(results) - 1)]
    await ws.close()


async def test_upstream_rate_limit_delays_then_closes_a_flood(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(rate_limit_qps=100, rate_limit_burst=5, rate_limit_flood_seconds=0.3)
    ws = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    # 25 messages at once: 5 pass on the burst, 20 are paced at 100/s (0.2 s < the flood window).
    started = time.monotonic()
    for i in range(25):
        await ws.send_str(encode(upstream(i)).decode())
    await rec.wait(lambda: len(rec.messages("n1")) == 25)
    assert time.monotonic() - started >= 0.15  # delayed, none dropped
    assert [m.content for m in rec.messages("n1")] == [{"seq": i} for i in range(25)]
    # A node that keeps sending far beyond the limit is closed.
    for i in range(200):
        await ws.send_str(encode(upstream(i)).decode())
    assert await recv_close(ws) == (CLOSE_RATE_LIMIT, REASON_RATE_LIMIT)
    await rec.wait(lambda: rec.kinds("n1")[-1] == "disconnected")


async def test_stop_closes_sessions_with_a_reason(pki: Pki, session: aiohttp.ClientSession) -> None:
    rec = Recorder()
    hub = CloudHub(CloudHubConfig(host=HOST, port=0), pki.ca, pki.serving, rec)
    await hub.start()
    ws = await dial(session, hub, pki, "n1")
    await rec.wait(lambda: rec.kinds("n1") == ["connected"])
    stopping = asyncio.create_task(hub.stop())
    assert await recv_close(ws) == (CLOSE_GOING_AWAY, REASON_SHUTDOWN)
    await stopping
    assert rec.kinds("n1") == ["connected", "disconnected"] and hub.nodes() == []


async def _raw_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """One server frame: (FIN/RSV/opcode byte, opcode, payload) — servers never mask."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0, b0 & 0x0F, await reader.readexactly(n)


def _client_frame(payload: bytes, rsv1: bool) -> bytes:
    mask = os.urandom(4)
    head = bytes([0x80 | (0x40 if rsv1 else 0) | 0x1])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


async def test_compressed_uplink_accepted_downlink_never_compressed(make_hub: HubFactory, pki: Pki) -> None:
    """permessage-deflate is negotiated; the edge's deflated frames (one shared window across
    messages) are inflated, and every frame the cloud sends has RSV1 clear (no per-node deflater)."""
    hub, rec = await make_hub()
    reader, writer = await asyncio.open_connection(HOST, hub.port, ssl=pki.client_ctx(pki.node("n1")))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {PATH.format(node='n1')} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; server_max_window_bits=12\r\n"
            "node_id: n1\r\n\r\n"
        ).encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)).decode().lower()
    assert head.startswith("http/1.1 101") and "permessage-deflate" in head, head
    deflater = zlib.compressobj(6, zlib.DEFLATED, -12)
    sent = [upstream(i) for i in range(5)]
    sizes = []
    for m in sent:
        data = deflater.compress(encode(m)) + deflater.flush(zlib.Z_SYNC_FLUSH)
        sizes.append(len(data))
        writer.write(_client_frame(data[:-4], rsv1=True))  # RFC 7692: drop the 00 00 ff ff tail
    await rec.wait(lambda: len(rec.messages("n1")) == 5)
    assert [m.msg_id for m in rec.messages("n1")] == [m.msg_id for m in sent]
    assert sizes[-1] < sizes[0] / 2  # the shared window makes repeats cheap
    down = Message.new("edgecontroller", "resource", "update", "default/pod/p1", {"x": "y" * 300})
    assert await hub.send("n1", down)
    b0, opcode, payload = await asyncio.wait_for(_raw_frame(reader), DEADLINE)
    assert opcode == 0x1 and not b0 & 0x40, "downstream frames must not be compressed"
    assert decode(payload).msg_id == down.msg_id
    writer.close()


async def test_node_limit_refuses_new_nodes_not_reconnects(
    make_hub: HubFactory, pki: Pki, session: aiohttp.ClientSession
) -> None:
    hub, rec = await make_hub(node_limit=2)
    ws1 = await dial(session, hub, pki, "n1")
    ws2 = await dial(session, hub, pki, "n2")  # held: a collected client websocket closes
    await rec.wait(lambda: sorted(hub.nodes()) == ["n1", "n2"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await dial(session, hub, pki, "n3")
    assert e.value.status == 503
    assert hub.stats().refused == 1 and "n3" not in hub.nodes()
    again = await dial(session, hub, pki, "n1")  # a node that has a session may always replace it
    await recv_close(ws1)
    await rec.wait(lambda: rec.kinds("n1")[-1] == "connected")
    assert not again.closed and not ws2.closed and sorted(hub.nodes()) == ["n1", "n2"]
