"""Service proxy in network namespaces: a client netns, the agent in a "node" netns, backends on the
node's bridge (directly reachable) and one behind a router (reachable only via a gateway, so it takes
the userspace path). The agent is a real process (`python -m edgemesh.proxy`) applying real rules."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"), reason="needs root, ip and nft"
)

PY = sys.executable
NODE = "node-a"
CIP = "10.96.7.10"  # ClusterIPs are routed nowhere: only our rules make them work
DIRECT = ["10.207.2.11", "10.207.2.12", "10.207.2.13"]
FAR = "10.207.4.2"
CLIENTS = [f"10.207.1.{i}" for i in range(2, 16)]

SERVER = r"""
import asyncio, sys
name = sys.argv[1]
class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(name.encode() + b" " + data, addr)
async def tcp(r, w):
    try:
        data = await r.read(65536)
        if data.startswith(b"BULK"):
            n = int(data.split()[1])
            w.write(b"x" * n)
        else:
            w.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + name.encode())
        await w.drain()
    finally:
        w.close()
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Udp, local_addr=("0.0.0.0", 8080))
    srv = await asyncio.start_server(tcp, "0.0.0.0", 8080)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""

CLIENT = r"""
import json, socket, sys
proto, ip, port, n, srcs, header = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
out = []
for src in srcs.split(","):
    for i in range(n):
        try:
            if proto == "tcp":
                s = socket.create_connection((ip, port), timeout=5, source_address=(src, 0) if src else None)
                hdr = f"X-User: {header}{i % 10}\r\n" if header else ""
                s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{hdr}\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                s.close()
                out.append([src, header + str(i % 10) if header else "", data.split(b"\r\n\r\n", 1)[1].decode()])
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                if src:
                    s.bind((src, 0))
                s.settimeout(5)
                s.sendto(b"ping", (ip, port))
                out.append([src, "", s.recv(65536).decode().split()[0]])
                s.close()
        except OSError as e:
            out.append([src, "", f"error:{e}"])
print(json.dumps(out))
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def until(fn: Callable[[], Any], what: str, deadline_s: float = 20.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what} (last: {got!r})")
        time.sleep(0.05)


class Topo:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {k: f"m2{k}-{tag}" for k in ("node", "client", "b0", "b1", "b2", "gw", "far")}
        self.procs: list[subprocess.Popen[str]] = []

    def x(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[ns], *cmd, check=check)

    def link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
        self.x(a, "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", self.ns[b])
        for ns, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            if ip:
                self.x(ns, "ip", "addr", "add", ip, "dev", ifname)
            self.x(ns, "ip", "link", "set", ifname, "up")

    def build(self) -> None:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
        for k in self.ns:
            self.x(k, "ip", "link", "set", "lo", "up")
        for k in ("node", "gw"):
            self.x(k, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.link("node", "toclient", "10.207.1.1/24", "client", "eth0", f"{CLIENTS[0]}/24")
        for ip in CLIENTS[1:]:
            self.x("client", "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.x("client", "ip", "route", "add", "default", "via", "10.207.1.1")
        self.x("node", "ip", "link", "add", "br0", "type", "bridge")
        self.x("node", "ip", "addr", "add", "10.207.2.1/24", "dev", "br0")
        self.x("node", "ip", "link", "set", "br0", "up")
        for i, ip in enumerate(DIRECT):
            self.link("node", f"vb{i}", "", f"b{i}", "eth0", f"{ip}/24")
            self.x("node", "ip", "link", "set", f"vb{i}", "master", "br0")
            self.x(f"b{i}", "ip", "route", "add", "default", "via", "10.207.2.1")
        self.link("node", "togw", "10.207.3.1/24", "gw", "eth0", "10.207.3.2/24")
        self.link("gw", "tofar", "10.207.4.1/24", "far", "eth0", f"{FAR}/24")
        self.x("node", "ip", "route", "add", "default", "via", "10.207.3.2")
        self.x("gw", "ip", "route", "add", "10.207.0.0/16", "via", "10.207.3.1")
        self.x("far", "ip", "route", "add", "default", "via", "10.207.4.1")
        for k, name in (("b0", "b0"), ("b1", "b1"), ("b2", "b2"), ("far", "far")):
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[k], PY, "-c", SERVER, name], stdout=subprocess.PIPE, text=True
            )
            self.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def destroy(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)

    def call(
        self,
        proto: str,
        port: int,
        n: int,
        srcs: list[str] | None = None,
        header: str = "",
        ip: str = CIP,
        ns: str = "client",
    ) -> list[tuple[str, str, str]]:
        r = self.x(ns, PY, "-c", CLIENT, proto, ip, str(port), str(n), ",".join(srcs or [""]), header)
        return [tuple(row) for row in json.loads(r.stdout)]

    def hits(self, *a: Any, **kw: Any) -> Counter[str]:
        return Counter(who for _, _, who in self.call(*a, **kw))


class Agent:
    def __init__(self, topo: Topo, tmp: Path, backend: str = "nftables") -> None:
        self.topo, self.tmp, self.backend = topo, tmp, backend
        self.spec = tmp / "spec.json"
        self.status = tmp / "status.json"
        self.version = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = open(os.devnull, "w")

    def write(self, services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> None:
        self.version += 1
        tmp = self.spec.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": self.version, "services": services, "slices": slices}))
        tmp.replace(self.spec)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.status.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def start(self) -> None:
        self.status.unlink(missing_ok=True)
        self._log.close()
        self._log = open(self.tmp / "agent.log", "a")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.topo.ns["node"],
                PY,
                "-m",
                "edgemesh.proxy",
                "--node",
                NODE,
                "--spec",
                str(self.spec),
                "--status",
                str(self.status),
                "--backend",
                self.backend,
            ],
            stderr=self._log,
        )
        self.wait_applied()

    def wait_applied(self) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, (self.tmp / "agent.log").read_text()
            st = self.read()
            return st if st.get("spec_version") == self.version else None

        return until(ok, f"agent applying spec v{self.version}")

    def update(self, services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> dict[str, Any]:
        self.write(services, slices)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        return self.wait_applied()

    def metrics(self) -> dict[str, int]:
        assert self.proc is not None
        before = self.read().get("metrics", {}).get("syncs", -1)
        mtime = self.status.stat().st_mtime_ns
        self.proc.send_signal(signal.SIGUSR1)
        until(lambda: self.status.stat().st_mtime_ns != mtime, "status after SIGUSR1")
        m: dict[str, int] = self.read()["metrics"]
        assert m["syncs"] >= before
        return m

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None
        self._log.close()


def service(
    name: str, ip: str = CIP, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": {
            "clusterIP": ip,
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8080},
            ],
            **spec,
        },
    }


def eps(name: str, addrs: list[str], node: str = "node-b") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{name}-x",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}} for ip in addrs],
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 8080, "protocol": "UDP"},
        ],
    }


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    t = Topo()
    try:
        t.build()
        yield t
    finally:
        t.destroy()


@pytest.fixture
def agent_factory(topo: Topo, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def make(backend: str = "nftables") -> Agent:
        a = Agent(topo, tmp_path, backend)
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()
    # Whatever a test did, leave the node namespace without our rules for the next one.
    topo.x("node", "nft", "delete", "table", "ip", "edgemesh", check=False)


def our_chains(topo: Topo, backend: str) -> set[str]:
    if backend == "nftables":
        r = topo.x("node", "nft", "-j", "list", "table", "ip", "edgemesh", check=False)
        if r.returncode != 0:
            return set()
        return {i["chain"]["name"] for i in json.loads(r.stdout)["nftables"] if "chain" in i}
    out = topo.x("node", "iptables-save").stdout
    return {line.split()[0][1:] for line in out.splitlines() if line.startswith(":EDGEMESH-")} | {
        line
        for line in out.splitlines()
        if "EDGEMESH" in line
        and line.startswith("-A ")
        and line.split()[1] in ("PREROUTING", "OUTPUT", "POSTROUTING", "INPUT", "FORWARD")
    }


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_kernel_path_round_robin_tcp_udp_and_lifecycle(
    topo: Topo, agent_factory: Callable[..., Agent], backend: str
) -> None:
    a = agent_factory(backend)
    a.write([service("web")], [eps("web", DIRECT)])
    a.start()
    st = a.read()
    assert st["backend"] == backend and set(st["paths"].values()) == {"kernel"}
    assert sorted(topo.hits("tcp", 80, 30).items()) == [("b0", 10), ("b1", 10), ("b2", 10)]
    assert sorted(topo.hits("udp", 53, 30).items()) == [("b0", 10), ("b1", 10), ("b2", 10)]
    # From the node itself (OUTPUT hook), too.
    assert set(topo.hits("tcp", 80, 3, ns="node")) == {"b0", "b1", "b2"}
    m = a.metrics()
    assert m["userspace_bytes_up"] + m["userspace_bytes_down"] == 0 and m["userspace_forwarded"] == 0
    assert m["kernel_forwarded"] >= 63 and m["kernel_bytes"] > 30 * 60

    # Endpoint change → rules follow within one update.
    a.update([service("web")], [eps("web", DIRECT[:2])])
    assert sorted(topo.hits("tcp", 80, 20).items()) == [("b0", 10), ("b1", 10)]
    # No endpoints → a clean refusal, not a hang.
    a.update([service("web")], [])
    assert all(who.startswith("error:") and "refused" in who.lower() for who in topo.hits("tcp", 80, 2))

    # Crash, then restart with a different service set: nothing of the old one survives.
    a.update([service("web"), service("old", ip="10.96.7.11")], [eps("web", DIRECT), eps("old", DIRECT)])
    crashed = our_chains(topo, backend)
    a.stop(signal.SIGKILL)
    assert our_chains(topo, backend) == crashed  # a crash leaves rules behind ...
    a.write([service("web")], [eps("web", DIRECT[:1])])
    a.start()
    after = our_chains(topo, backend)
    assert len(after) < len(crashed)  # ... the restart removes the stale ones
    assert set(topo.hits("tcp", 80, 4)) == {"b0"}
    assert set(topo.hits("tcp", 80, 2, ip="10.96.7.11")) != {"b0"}
    a.stop()
    assert our_chains(topo, backend) == set()  # clean shutdown removes everything


def test_policies_on_the_kernel_path(topo: Topo, agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory()
    svcs = [
        service("rand", ip="10.96.7.20", annotations={"edgemesh.kubeedge.io/lb-policy": "RANDOM"}),
        service(
            "src",
            ip="10.96.7.21",
            annotations={"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:source-ip"},
        ),
        service("aff", ip="10.96.7.22", sessionAffinity="ClientIP"),
    ]
    a.write(svcs, [eps(n, DIRECT) for n in ("rand", "src", "aff")])
    a.start()
    assert set(a.read()["paths"].values()) == {"kernel"}
    rand = topo.hits("tcp", 80, 60, ip="10.96.7.20")
    assert set(rand) == {"b0", "b1", "b2"} and max(rand.values()) < 40, rand
    for ip in ("10.96.7.21", "10.96.7.22"):
        rows = topo.call("tcp", 80, 4, srcs=CLIENTS, ip=ip)
        by_src: dict[str, set[str]] = {}
        for src, _, who in rows:
            by_src.setdefault(src, set()).add(who)
        assert all(len(v) == 1 for v in by_src.values()), (ip, by_src)  # each client sticks
        assert len(set().union(*by_src.values())) >= 2, (ip, by_src)  # clients spread
    # Affinity survives a sync that touches the service (rules are updated in place).
    before = {src: who for src, _, who in topo.call("tcp", 80, 1, srcs=CLIENTS[:4], ip="10.96.7.22")}
    a.update(svcs, [eps(n, DIRECT) for n in ("rand", "src")] + [eps("aff", [*DIRECT, FAR])])
    after = {src: who for src, _, who in topo.call("tcp", 80, 1, srcs=CLIENTS[:4], ip="10.96.7.22")}
    assert before == after


def test_userspace_path_through_gateway_and_mixed(topo: Topo, agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory()
    svcs = [service("far", ip="10.96.7.30"), service("mix", ip="10.96.7.31")]
    a.write(svcs, [eps("far", [FAR], node="node-z"), eps("mix", [DIRECT[0], FAR], node="node-z")])
    a.start()
    paths = a.read()["paths"]
    assert sorted(paths.values()) == ["mixed", "mixed", "userspace", "userspace"], paths
    assert topo.hits("tcp", 80, 3, ip="10.96.7.30") == Counter({"far": 3})
    assert topo.hits("udp", 53, 3, ip="10.96.7.30") == Counter({"far": 3})
    assert topo.hits("tcp", 80, 2, ip="10.96.7.30", ns="node") == Counter({"far": 2})
    assert topo.hits("udp", 53, 2, ip="10.96.7.30", ns="node") == Counter({"far": 2})
    # Mixed: the kernel spreads evenly over all endpoints, sending the tunnel's share to userspace.
    assert sorted(topo.hits("tcp", 80, 20, ip="10.96.7.31").items()) == [("b0", 10), ("far", 10)]
    m = a.metrics()
    assert m["userspace_forwarded"] >= 20 and m["userspace_bytes_down"] > 0 and m["userspace_spliced"] >= 15


def test_consistent_hash_by_header(topo: Topo, agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory()
    svcs = [
        service(
            "hdr",
            ip="10.96.7.40",
            annotations={"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:header=X-User"},
        )
    ]
    a.write(svcs, [eps("hdr", DIRECT)])
    a.start()
    rows = topo.call("tcp", 80, 40, srcs=CLIENTS[:2], header="user", ip="10.96.7.40")
    owner: dict[str, set[str]] = {}
    for _, key, who in rows:
        owner.setdefault(key, set()).add(who)
    assert len(owner) == 10 and all(len(v) == 1 for v in owner.values()), owner  # a key stays put
    assert len(set().union(*owner.values())) >= 2, owner
    # Adding an endpoint moves keys only onto the newcomer.
    a.update(svcs, [eps("hdr", [*DIRECT, FAR])])
    moved = {key: who for _, key, who in topo.call("tcp", 80, 10, header="user", ip="10.96.7.40")}
    assert all(who == "far" or {who} == owner[k] for k, who in moved.items()), (owner, moved)
