"""Tunnel agents as real processes in network namespaces this test creates: a shared bridge
(direct path, foreign CA refused), and two NATed sites (iptables MASQUERADE in router namespaces)
that cannot reach each other by TCP: with UDP between them blocked they only meet through a relay
(bytes delivered intact, clean resets, a vanished peer fails its streams within the keepalive
timeout); with UDP allowed they punch a hole (QUIC through both NATs, the relay carries nothing
more) and fall back to the relay when UDP is cut. Everything is torn down, also on failure.

The test process itself stays in the host namespace: sockets it needs inside a node namespace are
created by a short-lived thread that setns()es into it (a socket keeps the namespace it was made in)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from kubeedge.pki import certs
from tests.cluster import wait_for

ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
KEEPALIVE_INTERVAL = 0.5
KEEPALIVE_TIMEOUT = 2.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
    reason="needs root, iproute2 and iptables for network namespaces",
)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Topology:
    """Namespaces, links and addresses; `close` deletes every namespace it made (their links go too)."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.namespaces: list[str] = []
        self._links = 0

    def ns(self, name: str) -> str:
        full = f"mt{self.tag}{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        sh("ip", "-n", full, "link", "set", "lo", "up")
        return full

    def link(self, a: str, a_addr: str, b: str, b_addr: str | None, *, bridge: str = "") -> tuple[str, str]:
        """A veth pair a↔b; with bridge=, b's end is enslaved to that bridge in b (no address)."""
        self._links += 1
        ia, ib = f"v{self.tag}{self._links}a", f"v{self.tag}{self._links}b"
        sh("ip", "link", "add", ia, "netns", a, "type", "veth", "peer", "name", ib, "netns", b)
        sh("ip", "-n", a, "addr", "add", a_addr, "dev", ia)
        sh("ip", "-n", a, "link", "set", ia, "up")
        if bridge:
            sh("ip", "-n", b, "link", "set", ib, "master", bridge)
        elif b_addr:
            sh("ip", "-n", b, "addr", "add", b_addr, "dev", ib)
        sh("ip", "-n", b, "link", "set", ib, "up")
        return ia, ib

    def bridge(self, ns: str, name: str = "br0") -> str:
        sh("ip", "-n", ns, "link", "add", name, "type", "bridge")
        sh("ip", "-n", ns, "link", "set", name, "up")
        return name

    def router(self, ns: str, wan_if: str) -> None:
        """A NAT router as sites have them: MASQUERADE out of the WAN, and nothing unsolicited
        accepted from it. The second part matters for hole punching: a router that lets a peer's
        early probe in to itself (no socket, an ICMP error) keeps a conntrack entry for it, and
        then maps its own node's probes to that peer onto another port — the hole never opens."""
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            wan_if,
            "-j",
            "MASQUERADE",
        )
        sh(
            "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-i", wan_if,
            "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP",
        )  # fmt: skip

    def block_udp(self, router: str, wan_peer: str) -> None:
        """Drop UDP forwarded between this router's site and `wan_peer` (another site's NAT)."""
        for direction in ("-s", "-d"):
            sh(
                "ip",
                "netns",
                "exec",
                router,
                "iptables",
                "-I",
                "FORWARD",
                "-p",
                "udp",
                direction,
                wan_peer,
                "-j",
                "DROP",
            )

    def close(self) -> None:
        for n in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)


@contextmanager
def topology() -> Iterator[Topology]:
    t = Topology()
    try:
        yield t
    finally:
        t.close()


def socket_in(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside network namespace `ns` (by a thread that enters it and exits)."""
    out: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{ns}") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            out.append(socket.socket(family, kind))
        except BaseException as e:
            out.append(e)

    th = threading.Thread(target=make)
    th.start()
    th.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    out[0].setblocking(False)
    return out[0]


async def connect_in(ns: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    s = socket_in(ns)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (host, port)), 10)
    return await asyncio.open_connection(sock=s, limit=1 << 20)


@asynccontextmanager
async def serve_in(
    ns: str, host: str, port: int, handler: Callable[..., Any]
) -> AsyncIterator[asyncio.Server]:
    s = socket_in(ns)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    srv = await asyncio.start_server(handler, sock=s, limit=1 << 20)
    try:
        yield srv
    finally:
        srv.close()


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(1 << 18):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


class Pki:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca = certs.create_ca("mesh-ca")

    def files(self, name: str, ca: certs.KeyPair | None = None) -> dict[str, str]:
        ca = ca or self.ca
        d = self.base / "pki" / name
        d.mkdir(parents=True, exist_ok=True)
        certs.issue(ca, f"system:node:{name}", organizations=["system:nodes"], client=True).save(
            d / "tls.crt", d / "tls.key"
        )
        (d / "ca.crt").write_bytes(self.ca.cert_pem)  # the CA this node trusts is always ours
        return {"cert": str(d / "tls.crt"), "key": str(d / "tls.key"), "ca": str(d / "ca.crt")}


class Agent:
    """`python -m edgemesh.tunnel` inside a namespace."""

    def __init__(self, ns: str, cfg: dict[str, Any], base: Path) -> None:
        self.ns, self.cfg = ns, cfg
        self.name = cfg.get("node_name", "relay")
        self.cfg_path = base / f"{self.name}-{ns}.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.log_path = base / f"{self.name}-{ns}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Agent:
        log = open(self.log_path, "wb")  # noqa: ASYNC230 - handed to the child, closed at exit
        self.proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.ns,
            sys.executable,
            "-m",
            "edgemesh.tunnel",
            str(self.cfg_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        log.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line.startswith(b"READY"), f"{self.name} did not start: {line!r}\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def dial(self, node: str, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, _, p = self.cfg["dial"].partition(":")
        r, w = await connect_in(self.ns, host, int(p))
        w.write(f"{node} {ip} {port} TCP\n".encode())
        status = await r.readline()
        if status != b"OK\n":
            w.close()
            raise ConnectionError(status.decode().strip())
        return r, w

    async def stats(self) -> dict[str, Any]:
        host, _, p = self.cfg["dial"].partition(":")
        r, w = await connect_in(self.ns, host, int(p))
        w.write(b"STATS\n")
        out = json.loads(await r.readline())
        w.close()
        return out


def node_cfg(pki: Pki, name: str, listen: str, peers: dict[str, list[str]], **kw: Any) -> dict[str, Any]:
    return {
        "role": "node",
        "node_name": name,
        **pki.files(name),
        "listen": listen,
        "peers": [{"name": n, "addresses": a} for n, a in peers.items()],
        "dial": "127.0.0.1:7000",
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "dial_timeout": 1.0,
        **kw,
    }


@asynccontextmanager
async def agents(*items: Agent) -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    try:
        for a in items:
            started.append(await a.start())
        yield started
    finally:
        for a in started:
            await a.stop()


async def roundtrip(agent: Agent, node: str, ip: str, port: int, payload: bytes) -> bytes:
    r, w = await agent.dial(node, ip, port)
    w.write(payload)
    w.write_eof()
    got = await asyncio.wait_for(r.read(-1), 60)
    w.close()
    return got


async def test_direct_path_on_a_shared_bridge_and_a_foreign_ca_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with topology() as topo:
        lan = topo.ns("lan")
        br = topo.bridge(lan)
        n1, n2, n3 = topo.ns("n1"), topo.ns("n2"), topo.ns("n3")
        topo.link(n1, "10.77.0.1/24", lan, None, bridge=br)
        topo.link(n2, "10.77.0.2/24", lan, None, bridge=br)
        topo.link(n3, "10.77.0.3/24", lan, None, bridge=br)
        intruder = node_cfg(pki, "node3", "10.77.0.3:20006", {"node2": ["10.77.0.2:20006"]})
        intruder.update(pki.files("node3", ca=certs.create_ca("other-ca")))
        a1 = Agent(n1, node_cfg(pki, "node1", "10.77.0.1:20006", {"node2": ["10.77.0.2:20006"]}), tmp_path)
        a2 = Agent(
            n2,
            node_cfg(
                pki, "node2", "10.77.0.2:20006", {"node1": ["10.77.0.1:20006"]}, serves=["10.77.0.2/32"]
            ),
            tmp_path,
        )
        a3 = Agent(n3, intruder, tmp_path)
        async with agents(a1, a2, a3), serve_in(n2, "10.77.0.2", 8080, echo):
            payload = os.urandom(4 * 1024 * 1024)
            assert await roundtrip(a1, "node2", "10.77.0.2", 8080, payload) == payload
            s1, s2 = await a1.stats(), await a2.stats()
            assert s1["paths"] == {"node2": "direct"} and s2["paths"] == {"node1": "direct"}
            assert s1["bytes_out"]["direct"] >= len(payload)
            # A target node2 does not serve: a clean reset with the reason, the tunnel unaffected.
            with pytest.raises(
                ConnectionError, match=r"10\.77\.0\.9:80/TCP is not an endpoint served by node node2"
            ):
                await a1.dial("node2", "10.77.0.9", 80)
            assert await roundtrip(a1, "node2", "10.77.0.2", 8080, b"again") == b"again"
            # node3's certificate comes from another CA: node2 refuses it at the handshake (with TLS 1.3
            # the client learns it on its first read, so node3 only sees its connection go away).
            with pytest.raises(ConnectionError):
                await a3.dial("node2", "10.77.0.2", 8080)

            async def logged() -> bool:
                return "refused connection from 10.77.0.3:" in a2.log()

            await wait_for(logged, what="refusal logged with the peer address", deadline_s=10)
            assert (await a2.stats())["handshakes_refused"] >= 1
            assert (await a2.stats())["paths"] == {"node1": "direct"}


def nat_sites(topo: Topology) -> dict[str, str]:
    """wan bridge 198.18.0.0/24 with a relay (.10) and two routers (.1, .2) that MASQUERADE their
    sites 10.77.1.0/24 and 10.77.2.0/24; the sites have no route to each other."""
    wan = topo.ns("wan")
    br = topo.bridge(wan)
    relay, r1, r2, n1, n2 = (topo.ns(x) for x in ("relay", "r1", "r2", "n1", "n2"))
    topo.link(relay, "198.18.0.10/24", wan, None, bridge=br)
    w1, _ = topo.link(r1, "198.18.0.1/24", wan, None, bridge=br)
    w2, _ = topo.link(r2, "198.18.0.2/24", wan, None, bridge=br)
    topo.link(n1, "10.77.1.2/24", r1, "10.77.1.1/24")
    topo.link(n2, "10.77.2.2/24", r2, "10.77.2.1/24")
    sh("ip", "-n", n1, "route", "add", "default", "via", "10.77.1.1")
    sh("ip", "-n", n2, "route", "add", "default", "via", "10.77.2.1")
    topo.router(r1, w1)
    topo.router(r2, w2)
    return {"relay": relay, "r1": r1, "r2": r2, "n1": n1, "n2": n2}


async def test_nat_sites_reach_each_other_through_the_relay(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with topology() as topo:
        ns = nat_sites(topo)
        topo.block_udp(ns["r1"], "198.18.0.2")  # no hole punching: the relay is the only way
        relay_cfg = {"role": "relay", **pki.files("relay"), "listen": "198.18.0.10:20006"}
        relays = {"relays": ["198.18.0.10:20006"]}
        a1 = Agent(
            ns["n1"],
            node_cfg(pki, "node1", "0.0.0.0:20006", {"node2": ["10.77.2.2:20006"]}, **relays),
            tmp_path,
        )
        a2 = Agent(
            ns["n2"],
            node_cfg(
                pki,
                "node2",
                "0.0.0.0:20006",
                {"node1": ["10.77.1.2:20006"]},
                serves=["10.77.2.0/24"],
                **relays,
            ),
            tmp_path,
        )
        relay = Agent(ns["relay"], relay_cfg, tmp_path)
        async with agents(relay, a1, a2), serve_in(ns["n2"], "10.77.2.2", 8080, echo):

            async def on_relay() -> bool:
                return (await a1.stats())["relays_connected"] == 1 and (await a2.stats())[
                    "relays_connected"
                ] == 1

            await wait_for(on_relay, what="both sites connected to the relay", deadline_s=20)
            payload = os.urandom(4 * 1024 * 1024)
            got = await asyncio.gather(
                *(roundtrip(a1, "node2", "10.77.2.2", 8080, payload) for _ in range(3))
            )
            assert all(g == payload for g in got)
            s1 = await a1.stats()
            assert s1["paths"] == {"node2": "relay"}
            assert s1["bytes_out"]["relay"] >= 3 * len(payload) and s1["bytes_out"]["direct"] == 0
            assert (await a2.stats())["paths"] == {"node1": "relay"}

            async def punch_failed() -> bool:
                return (await a1.stats())["punches"]["failed"] >= 1

            await wait_for(punch_failed, what="the punch tried and gave up", deadline_s=20)
            s1 = await a1.stats()
            assert s1["paths"] == {"node2": "relay"} and s1["bytes_out"]["holepunch"] == 0
            assert await roundtrip(a1, "node2", "10.77.2.2", 8080, b"after the punch") == b"after the punch"
            assert "connected from 198.18.0.1:" in relay.log()  # the relay sees site 1 only as its NAT
            with pytest.raises(
                ConnectionError, match=r"10\.77\.3\.5:22/TCP is not an endpoint served by node node2"
            ):
                await a1.dial("node2", "10.77.3.5", 22)
            with pytest.raises(
                ConnectionError, match=r"connect to 10\.77\.2\.99:22/TCP failed on node node2"
            ):
                await a1.dial("node2", "10.77.2.99", 22)

            # node2 vanishes without a word (its link goes down): the open stream fails within the
            # keepalive timeout instead of hanging.
            r, w = await a1.dial("node2", "10.77.2.2", 8080)
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sh("ip", "-n", ns["n2"], "link", "set", "dev", f"v{topo.tag}5a", "down")
            try:
                while await asyncio.wait_for(r.read(1024), 3 * KEEPALIVE_TIMEOUT):
                    pass
            except ConnectionError:
                pass
            failed_after = loop.time() - t0
            w.close()
            assert failed_after < 2 * KEEPALIVE_TIMEOUT, f"stream failed only after {failed_after:.1f}s"
            assert "keepalive timeout" in a1.log() or "lost" in a1.log()

            async def gone() -> bool:
                return (await a1.stats())["paths"] == {}

            await wait_for(gone, what="node2 dropped from paths", deadline_s=10)


async def relay_stats(relay: Agent) -> dict[str, Any]:
    host, _, p = relay.cfg["dial"].partition(":")
    r, w = await connect_in(relay.ns, host, int(p))
    w.write(b"STATS\n")
    out: dict[str, Any] = json.loads(await r.readline())
    w.close()
    return out


async def test_nat_sites_punch_a_hole_and_fall_back_to_the_relay_when_udp_dies(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with topology() as topo:
        ns = nat_sites(topo)
        relay = Agent(
            ns["relay"],
            {"role": "relay", **pki.files("relay"), "listen": "198.18.0.10:20006", "dial": "127.0.0.1:7001"},
            tmp_path,
        )
        relays = {"relays": ["198.18.0.10:20006"], "upgrade_interval": 60}
        a1 = Agent(
            ns["n1"],
            node_cfg(pki, "node1", "0.0.0.0:20006", {"node2": ["10.77.2.2:20006"]}, **relays),
            tmp_path,
        )
        a2 = Agent(
            ns["n2"],
            node_cfg(
                pki,
                "node2",
                "0.0.0.0:20006",
                {"node1": ["10.77.1.2:20006"]},
                serves=["10.77.2.0/24"],
                **relays,
            ),
            tmp_path,
        )
        async with agents(relay, a1, a2), serve_in(ns["n2"], "10.77.2.2", 8080, echo):

            async def registered() -> dict[str, str]:
                seen: dict[str, str] = (await relay_stats(relay))["rendezvous_observed"]
                return seen if len(seen) == 2 else {}

            # The relay sees each site's UDP as its NAT maps it: the router's address, not the node's.
            seen = await wait_for(registered, what="both sites registered for rendezvous", deadline_s=20)
            assert seen["node1"].startswith("198.18.0.1:") and seen["node2"].startswith("198.18.0.2:")

            payload = os.urandom(1024 * 1024)
            assert await roundtrip(a1, "node2", "10.77.2.2", 8080, payload) == payload
            assert (await a1.stats())["streams_opened"]["relay"] == 1  # the first stream: relay

            async def punched() -> bool:
                s1, s2 = await a1.stats(), await a2.stats()
                return s1["paths"] == {"node2": "holepunch"} and s2["paths"] == {"node1": "holepunch"}

            await wait_for(punched, what="relay → holepunch", deadline_s=20)

            async def relayed_session_gone() -> bool:
                return (await a1.stats())["sessions_closed"] >= 1 and (await a2.stats())[
                    "sessions_closed"
                ] >= 1

            await wait_for(relayed_session_gone, what="the relayed session drained", deadline_s=20)
            before = await relay_stats(relay)
            payload = os.urandom(4 * 1024 * 1024)
            got = await asyncio.gather(
                *(roundtrip(a1, "node2", "10.77.2.2", 8080, payload) for _ in range(3))
            )
            assert all(g == payload for g in got)
            after = await relay_stats(relay)
            assert after["bytes_relayed"] == before["bytes_relayed"]  # not one stream byte via the relay
            assert after["spliced_streams"] == before["spliced_streams"] == 1
            s1 = await a1.stats()
            assert s1["bytes_out"]["holepunch"] >= 3 * len(payload)
            assert s1["streams_opened"]["holepunch"] == 3 and s1["punches"]["succeeded"] == 1

            # UDP between the sites is cut: the punched session dies within the keepalive timeout
            # and the tunnel goes back to the relay by itself.
            topo.block_udp(ns["r1"], "198.18.0.2")

            async def relayed_again() -> bool:
                return (await a1.stats())["paths"] == {"node2": "relay"}

            await wait_for(relayed_again, what="fallback to the relay", deadline_s=20)
            assert await roundtrip(a1, "node2", "10.77.2.2", 8080, payload) == payload
            after_fallback = await relay_stats(relay)
            assert after_fallback["bytes_relayed"] > after["bytes_relayed"]
            assert "holepunch session closed" in a1.log()
