"""Hole punching on loopback with real QUIC (aioquic), real certificates from our PKI and a real
relay/rendezvous: relay → holepunch upgrade with bytes on the punched path only, identity checks
on the QUIC handshake, fallback to the relay when the punched path dies, and the UDP framing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edgemesh.tunnel import Peer, RelayServer, Tunnel
from edgemesh.tunnel.punch import HolePuncher, PunchFailed
from edgemesh.tunnel.rendezvous import Offer
from edgemesh.tunnel.udp import Ctl, ctl_packet, parse_ctl
from kubeedge.pki import certs
from tests.cluster import wait_for
from tests.unit.test_mesh_tunnel import Env, _echo, echo_through, node_identity


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


async def pair_on_relay(env: Env, **kw: Any) -> tuple[RelayServer, Tunnel, Tunnel]:
    relay = await env.relay()
    relays = (("127.0.0.1", relay.port),)
    a = await env.tunnel("node-a", relays=relays, **kw)
    b = await env.tunnel("node-b", relays=relays, **kw)
    # No direct addresses: only the relay (and then a punch) can connect them.
    a.set_peers([Peer("node-b", ())])
    b.set_peers([Peer("node-a", ())])

    async def registered() -> bool:
        return set(relay.rendezvous.observed()) == {"node-a", "node-b"}

    await wait_for(registered, what="both nodes registered their UDP address", deadline_s=10)
    return relay, a, b


async def test_relay_then_holepunch_and_the_relay_carries_nothing_after(env: Env) -> None:
    relay, a, b = await pair_on_relay(env)
    # The relay saw each node's UDP source, which on loopback is the node's own port.
    assert relay.rendezvous.observed() == {"node-a": f"127.0.0.1:{a.port}", "node-b": f"127.0.0.1:{b.port}"}
    payload = os.urandom(1024 * 1024)
    assert await echo_through(a, "node-b", env.echo_port, payload) == payload
    assert a.stats()["streams_opened"]["relay"] == 1

    async def punched() -> bool:
        return a.paths() == {"node-b": "holepunch"} and b.paths() == {"node-a": "holepunch"}

    await wait_for(punched, what="relay → holepunch", deadline_s=15)
    # The relayed session drains and closes; from then on the relay's byte count must stand still.
    await wait_for(
        lambda: _async(not any(s.path == "relay" for s in a._all | b._all)), what="relayed sessions drained"
    )
    relayed = relay.stats()["bytes_relayed"]
    payload = os.urandom(4 * 1024 * 1024)
    got = await asyncio.gather(*(echo_through(a, "node-b", env.echo_port, payload) for _ in range(2)))
    assert all(g == payload for g in got)
    assert relay.stats()["bytes_relayed"] == relayed and relay.stats()["spliced_streams"] == 1
    sa = a.stats()
    assert sa["streams_opened"] == {"direct": 0, "holepunch": 2, "relay": 1}
    assert sa["bytes_out"]["holepunch"] >= 2 * len(payload)
    assert sa["punches"]["succeeded"] == 1 and b.stats()["punches"]["accepted"] == 1
    assert relay.stats()["introductions"] == 1


async def test_a_dying_punched_path_falls_back_to_the_relay(env: Env) -> None:
    _, a, b = await pair_on_relay(env, upgrade_interval=60.0)
    assert await echo_through(a, "node-b", env.echo_port, b"x") == b"x"
    await wait_for(lambda: _async(a.paths() == {"node-b": "holepunch"}), what="punched", deadline_s=15)
    # node-b's UDP socket goes away (as if its NAT dropped the mapping): nothing arrives either way.
    assert b._punch is not None and b._punch.udp is not None
    b._punch.udp.close()
    await wait_for(
        lambda: _async(a.paths() == {"node-b": "relay"}), what="fallback to the relay", deadline_s=15
    )
    assert await echo_through(a, "node-b", env.echo_port, b"still here") == b"still here"
    assert a.stats()["streams_opened"]["relay"] == 2


async def test_quic_refuses_a_peer_from_another_ca(env: Env, tmp_path: Path) -> None:
    evil = node_identity(tmp_path / "evil", certs.create_ca("evil"), "node-b")
    ours = node_identity(env.base, env.ca, "node-a")
    hp_a = HolePuncher(ours, ours.verifier(), idle_timeout=5.0)
    hp_b = HolePuncher(evil, evil.verifier(), idle_timeout=5.0)
    ua, ub = await hp_a.start("127.0.0.1", 0), await hp_b.start("127.0.0.1", 0)
    try:
        pid = os.urandom(8)
        a_side = hp_a.punch(Offer("node-b", ("127.0.0.1", ub.port), pid, client=True), 5.0)
        b_side = hp_b.punch(Offer("node-a", ("127.0.0.1", ua.port), pid, client=False), 5.0)
        ra, rb = await asyncio.gather(a_side, b_side, return_exceptions=True)
        assert isinstance(ra, PunchFailed) and "not signed by our CA" in str(ra)
        assert isinstance(rb, PunchFailed)
        assert hp_a.links() == 0
    finally:
        hp_a.stop()
        hp_b.stop()


async def test_punch_without_an_answer_fails_within_its_bounds(env: Env) -> None:
    ours = node_identity(env.base, env.ca, "node-a")
    hp = HolePuncher(ours, ours.verifier(), idle_timeout=5.0)
    await hp.start("127.0.0.1", 0)
    silent = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        port = silent[0].get_extra_info("sockname")[1]
        with pytest.raises(PunchFailed, match="no way through after 30 probes"):
            await hp.punch(Offer("node-b", ("127.0.0.1", port), os.urandom(8), client=True), 10.0)
    finally:
        silent[0].close()
        hp.stop()


def test_control_packets_are_told_from_quic() -> None:
    pkt = ctl_packet(Ctl.PROBE, b"12345678")
    assert pkt[0] & 0x40 == 0  # never mistaken for QUIC, whose fixed bit is set
    assert parse_ctl(pkt) == (Ctl.PROBE, b"12345678")
    assert parse_ctl(b"\x00EMT\x09abc") is None  # unknown kind
    assert parse_ctl(b"\x00XXX\x02abc") is None
    assert parse_ctl(pkt + bytes(100)) is None  # oversized


async def _async(v: object) -> object:
    return v
