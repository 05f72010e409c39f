"""Tunnel end to end on loopback with real TLS and certificates from our PKI: direct and relayed
paths, identity checks, refusals with reasons, tie-break, relay→direct upgrade, peer discovery."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edgemesh.tunnel import (
    Identity,
    Peer,
    RelayServer,
    StreamRefused,
    Tunnel,
    TunnelConfig,
    peers_from_nodes,
    relays_from_nodes,
)
from kubeedge.pki import certs
from tests.cluster import wait_for


def node_identity(base: Path, ca: certs.KeyPair, name: str, *, cn: str | None = None) -> Identity:
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    pair = certs.issue(ca, cn or f"system:node:{name}", organizations=["system:nodes"], client=True)
    pair.save(d / "tls.crt", d / "tls.key")
    (d / "ca.crt").write_bytes(ca.cert_pem)
    return Identity(d / "tls.crt", d / "tls.key", d / "ca.crt")


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()


class Env:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca = certs.create_ca("mesh-test-ca")
        self.tunnels: list[Tunnel] = []
        self.relays: list[RelayServer] = []
        self.echo_port = 0

    async def tunnel(self, name: str, *, identity: Identity | None = None, **kw: object) -> Tunnel:
        cfg = TunnelConfig(
            node_name=name,
            identity=identity or node_identity(self.base, self.ca, name),
            listen_host="127.0.0.1",
            listen_port=0,
            dial_timeout=2.0,
            keepalive_interval=0.5,
            keepalive_timeout=2.0,
            **kw,  # type: ignore[arg-type]
        )
        port = self.echo_port
        t = Tunnel(cfg, serves=lambda ip, p, proto: ip == "127.0.0.1" and p == port)
        await t.start()
        self.tunnels.append(t)
        return t

    async def relay(self) -> RelayServer:
        r = RelayServer(node_identity(self.base, self.ca, "relay"), "127.0.0.1", 0, keepalive_interval=0.5)
        await r.start()
        self.relays.append(r)
        return r


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    srv = await asyncio.start_server(_echo, "127.0.0.1", 0)
    e.echo_port = srv.sockets[0].getsockname()[1]
    try:
        yield e
    finally:
        for t in e.tunnels:
            await t.stop()
        for r in e.relays:
            await r.stop()
        srv.close()
        await srv.wait_closed()


def link(a: Tunnel, b: Tunnel) -> None:
    a.set_peers([Peer(b.name, (("127.0.0.1", b.port),))])
    b.set_peers([Peer(a.name, (("127.0.0.1", a.port),))])


async def echo_through(t: Tunnel, node: str, port: int, payload: bytes) -> bytes:
    r, w = await t.open(node, "127.0.0.1", port, "TCP")
    w.write(payload)
    w.write_eof()
    got = await r.read(-1)
    w.close()
    return got


async def test_direct_path_carries_streams_and_reports_it(env: Env) -> None:
    a, b = await env.tunnel("node-a"), await env.tunnel("node-b")
    link(a, b)
    payload = os.urandom(3 * 1024 * 1024)
    got = await asyncio.gather(*(echo_through(a, "node-b", env.echo_port, payload) for _ in range(4)))
    assert all(g == payload for g in got)
    assert a.paths() == {"node-b": "direct"}
    assert b.paths() == {"node-a": "direct"}
    stats = a.stats()
    assert stats["streams_opened"]["direct"] == 4
    assert stats["bytes_out"]["direct"] >= 4 * len(payload)
    assert b.stats()["streams_accepted"] == 4


async def test_target_the_peer_does_not_serve_gets_a_clean_reset(env: Env) -> None:
    a, b = await env.tunnel("node-a"), await env.tunnel("node-b")
    link(a, b)
    with pytest.raises(StreamRefused, match=r"10\.1\.2\.3:80/TCP is not an endpoint served by node node-b"):
        await a.open("node-b", "10.1.2.3", 80, "TCP")
    with pytest.raises(StreamRefused, match="not carried"):
        await a.open("node-b", "127.0.0.1", env.echo_port, "SCTP")
    assert await echo_through(a, "node-b", env.echo_port, b"after") == b"after"
    assert b.stats()["streams_refused"] == 1


async def test_peer_with_a_certificate_from_another_ca_is_refused(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgemesh.tunnel")
    a = await env.tunnel("node-a")
    foreign = await env.tunnel(
        "node-x", identity=node_identity(tmp_path / "other", certs.create_ca("evil"), "node-x")
    )
    # The intruder dials us: refused at the handshake, logged with its address.
    foreign.set_peers([Peer("node-a", (("127.0.0.1", a.port),))])
    with pytest.raises(ConnectionError):
        await foreign.open("node-a", "127.0.0.1", env.echo_port, "TCP")
    await wait_for(lambda: _async(a.stats()["handshakes_refused"] >= 1), what="refusal counted")
    assert any("refused connection from 127.0.0.1:" in r.getMessage() for r in caplog.records)
    # We dial it: its certificate is refused by us.
    a.set_peers([Peer("node-x", (("127.0.0.1", foreign.port),))])
    with pytest.raises(ConnectionError, match="not signed by our CA"):
        await a.open("node-x", "127.0.0.1", env.echo_port, "TCP")
    assert a.paths() == {}


async def test_a_node_certificate_for_another_name_is_not_that_peer(env: Env) -> None:
    a = await env.tunnel("node-a")
    impostor = await env.tunnel("node-b", identity=node_identity(env.base, env.ca, "node-c"))
    a.set_peers([Peer("node-b", (("127.0.0.1", impostor.port),))])
    with pytest.raises(ConnectionError, match="expected node node-b, the certificate says node-c"):
        await a.open("node-b", "127.0.0.1", env.echo_port, "TCP")


async def test_relay_path_then_upgrade_to_direct(env: Env) -> None:
    relay = await env.relay()
    relays = (("127.0.0.1", relay.port),)
    # No hole punching here: on loopback it would always succeed and race the relay assertions.
    a = await env.tunnel("node-a", relays=relays, upgrade_interval=0.3, holepunch=False)
    b = await env.tunnel("node-b", relays=relays, upgrade_interval=0.3, holepunch=False)
    await wait_for(lambda: _async(len(relay.sessions) == 2), what="both nodes on the relay")
    # No direct addresses known: only the relay can connect them.
    a.set_peers([Peer("node-b", ())])
    b.set_peers([Peer("node-a", ())])
    payload = os.urandom(1024 * 1024)
    assert await echo_through(a, "node-b", env.echo_port, payload) == payload
    assert a.paths() == {"node-b": "relay"} and b.paths() == {"node-a": "relay"}
    assert relay.stats()["spliced_streams"] == 1
    with pytest.raises(StreamRefused, match="not an endpoint"):
        await a.open("node-b", "10.0.0.9", 80, "TCP")
    # A direct address appears: the upgrader replaces the relayed session with a direct one.
    link(a, b)
    await wait_for(lambda: _async(a.paths() == {"node-b": "direct"}), what="switch to direct")
    assert await echo_through(a, "node-b", env.echo_port, payload) == payload
    assert a.stats()["streams_opened"] == {"direct": 1, "holepunch": 0, "relay": 1}


async def test_relay_refuses_an_unknown_node(env: Env) -> None:
    relay = await env.relay()
    a = await env.tunnel("node-a", relays=(("127.0.0.1", relay.port),))
    await a.relay_up.wait()
    with pytest.raises(ConnectionError, match="node-z is not connected to this relay"):
        await a.open("node-z", "127.0.0.1", env.echo_port, "TCP")
    # ...and fails fast while backing off, saying why.
    with pytest.raises(ConnectionError, match="unreachable"):
        await a.open("node-z", "127.0.0.1", env.echo_port, "TCP")


async def test_simultaneous_dials_converge_on_one_session(env: Env) -> None:
    a, b = await env.tunnel("node-a"), await env.tunnel("node-b")
    link(a, b)
    await asyncio.gather(
        echo_through(a, "node-b", env.echo_port, b"x" * 1000),
        echo_through(b, "node-a", env.echo_port, b"y" * 1000),
    )

    async def settled() -> bool:
        return len(a._all) == 1 and len(b._all) == 1

    await wait_for(settled, what="one session per side")
    (sa,), (sb,) = a._all, b._all
    assert sa.initiator != sb.initiator and sa.initiator == ("node-a" < "node-b")


async def test_udp_datagrams_through_the_tunnel(env: Env) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    env.echo_port = udp.get_extra_info("sockname")[1]
    try:
        a, b = await env.tunnel("node-a"), await env.tunnel("node-b")
        link(a, b)
        r, w = await a.open("node-b", "127.0.0.1", env.echo_port, "UDP")
        for msg in (b"hello", b"x" * 1400):
            w.write(len(msg).to_bytes(2, "big") + msg)
            n = int.from_bytes(await r.readexactly(2), "big")
            assert await r.readexactly(n) == msg.upper()
        w.close()
    finally:
        udp.close()


def test_peer_table_from_node_objects() -> None:
    nodes: list[dict[str, Any]] = [
        {
            "metadata": {
                "name": "a",
                "annotations": {"edgemesh.kubeedge.io/tunnel-address": "203.0.113.5:4000"},
            },
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        },
        {
            "metadata": {"name": "r", "annotations": {"edgemesh.kubeedge.io/tunnel-relay": "true"}},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.2"},
                    {"type": "ExternalIP", "address": "198.51.100.7"},
                    {"type": "Hostname", "address": "r"},
                ]
            },
        },
        {
            "metadata": {"name": "me"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.3"}]},
        },
        {"metadata": {}},
    ]
    peers = peers_from_nodes(nodes, self_name="me")
    assert set(peers) == {"a", "r"}
    assert peers["a"].addresses == (("203.0.113.5", 4000), ("10.0.0.1", 20006))
    assert peers["r"].addresses == (("198.51.100.7", 20006), ("10.0.0.2", 20006)) and peers["r"].relay
    assert relays_from_nodes(nodes) == [("198.51.100.7", 20006)]


async def _async(v: object) -> object:
    return v
