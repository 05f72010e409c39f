"""EdgeMesh tunnel throughput and 4 MB request/response time over a veth pair.

Two namespaces joined by a veth pair, a tunnel agent process in each (`python -m edgemesh.tunnel`),
a client entering through node1's dial port and a target server in node2 — the path a service
call from node1 takes to an endpoint on node2 when it must cross the tunnel (TLS, multiplexed
stream, node2 connects the target). The same transfers straight over the veth give the baseline.

    .venv/bin/python bench/bench_tunnel.py [--mb 512] [--rounds 10]

Prints: tunnel throughput (target >= 1 Gbit/s), direct throughput, ratio; 4 MB request/response
through the tunnel, cold (first call: TCP + TLS + session) and warm (median, p90) against
EdgeMesh's measured 321 ms and the direct path.

Then the hole-punched path: two sites behind MASQUERADE routers and a relay/rendezvous on a WAN
bridge; the first call goes through the relay, the agents punch a hole and the same transfers run
over QUIC through both NATs: throughput and the 4 MB request, warm."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cluster import wait_for  # noqa: E402
from tests.integration.test_mesh_tunnel import (  # noqa: E402
    Agent,
    Pki,
    agents,
    connect_in,
    nat_sites,
    node_cfg,
    serve_in,
    topology,
)

CHUNK = 1 << 20
RESPONSE = 4 * 1024 * 1024
EDGEMESH_4MB_MS = 321.0


async def target(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """`SINK\\n` → count bytes until EOF, answer the count; `GET n\\n` → n bytes, then close."""
    try:
        line = await r.readline()
        if line == b"SINK\n":
            n = 0
            while data := await r.read(CHUNK):
                n += len(data)
            w.write(f"{n}\n".encode())
        elif line.startswith(b"GET "):
            w.write(bytes(int(line.split()[1])))
        await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


async def throughput(open_: object, total: int) -> float:
    r, w = await open_()  # type: ignore[operator]
    block = bytes(CHUNK)
    t0 = time.perf_counter()
    w.write(b"SINK\n")
    sent = 0
    while sent < total:
        w.write(block)
        await w.drain()
        sent += len(block)
    w.write_eof()
    got = int(await r.readline())
    dt = time.perf_counter() - t0
    w.close()
    assert got == total, f"target counted {got} of {total} bytes"
    return total * 8 / dt / 1e9


async def request(open_: object) -> float:
    t0 = time.perf_counter()
    r, w = await open_()  # type: ignore[operator]
    w.write(f"GET {RESPONSE}\n".encode())
    n = 0
    while data := await r.read(CHUNK):
        n += len(data)
    dt = time.perf_counter() - t0
    w.close()
    assert n == RESPONSE, f"got {n} of {RESPONSE} bytes"
    return dt * 1000


async def main(mb: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tunnel-") as d, topology() as topo:
        base = Path(d)
        pki = Pki(base)
        n1, n2 = topo.ns("n1"), topo.ns("n2")
        topo.link(n1, "10.78.0.1/24", n2, "10.78.0.2/24")
        a1 = Agent(n1, node_cfg(pki, "node1", "10.78.0.1:20006", {"node2": ["10.78.0.2:20006"]}), base)
        a2 = Agent(
            n2,
            node_cfg(
                pki, "node2", "10.78.0.2:20006", {"node1": ["10.78.0.1:20006"]}, serves=["10.78.0.2/32"]
            ),
            base,
        )
        async with agents(a1, a2), serve_in(n2, "10.78.0.2", 8080, target):

            def tunnel() -> object:
                return a1.dial("node2", "10.78.0.2", 8080)

            def direct() -> object:
                return connect_in(n1, "10.78.0.2", 8080)

            cold = await request(tunnel)
            total = mb * 1024 * 1024
            await throughput(tunnel, 64 * CHUNK)  # warm-up
            gbps_tunnel = await throughput(tunnel, total)
            gbps_direct = await throughput(direct, total)
            warm = sorted([await request(tunnel) for _ in range(rounds)])
            base_ms = sorted([await request(direct) for _ in range(rounds)])
            stats = await a1.stats()

    p90 = warm[min(len(warm) - 1, int(0.9 * len(warm)))]
    print(f"tunnel throughput ({mb} MB, one stream):   {gbps_tunnel:6.2f} Gbit/s   (target >= 1 Gbit/s)")
    print(
        f"direct TCP throughput over the same veth:  {gbps_direct:6.2f} Gbit/s   ratio {gbps_tunnel / gbps_direct:.2f}"
    )
    print(f"4 MB request/response, tunnel, cold:       {cold:7.1f} ms  (TCP + TLS + session to the peer)")
    print(
        f"4 MB request/response, tunnel, warm:       {statistics.median(warm):7.1f} ms median, {p90:.1f} ms p90"
        f"  (EdgeMesh measured {EDGEMESH_4MB_MS:.0f} ms: {EDGEMESH_4MB_MS / statistics.median(warm):.1f}x faster)"
    )
    print(f"4 MB request/response, direct:             {statistics.median(base_ms):7.1f} ms median")
    print(f"paths: {stats['paths']}  bytes out by path: {stats['bytes_out']}")


async def holepunch(mb: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tunnel-hp-") as d, topology() as topo:
        base = Path(d)
        pki = Pki(base)
        ns = nat_sites(topo)
        relay = Agent(
            ns["relay"], {"role": "relay", **pki.files("relay"), "listen": "198.18.0.10:20006"}, base
        )
        relays = {"relays": ["198.18.0.10:20006"], "upgrade_interval": 600}
        a1 = Agent(ns["n1"], node_cfg(pki, "node1", "0.0.0.0:20006", {}, **relays), base)
        a2 = Agent(
            ns["n2"], node_cfg(pki, "node2", "0.0.0.0:20006", {}, serves=["10.77.2.0/24"], **relays), base
        )
        async with agents(relay, a1, a2), serve_in(ns["n2"], "10.77.2.2", 8080, target):

            def tunnel() -> object:
                return a1.dial("node2", "10.77.2.2", 8080)

            async def registered() -> bool:
                return (await a1.stats())["udp"]["observed"] is not None and (await a2.stats())["udp"][
                    "observed"
                ] is not None

            await wait_for(registered, what="both sites registered with the rendezvous", deadline_s=30)
            relayed = await request(tunnel)  # through the relay; the punch starts now

            async def punched() -> bool:
                return (await a1.stats())["paths"] == {"node2": "holepunch"}

            await wait_for(punched, what="relay → holepunch", deadline_s=30)
            total = mb * 1024 * 1024
            await throughput(tunnel, 16 * CHUNK)  # warm-up (congestion window)
            gbps = await throughput(tunnel, total)
            warm = sorted([await request(tunnel) for _ in range(rounds)])
            stats = await a1.stats()

    p90 = warm[min(len(warm) - 1, int(0.9 * len(warm)))]
    print(f"hole-punched (QUIC through two NATs) throughput ({mb} MB): {gbps:6.2f} Gbit/s")
    print(f"4 MB request/response, first call (relay): {relayed:7.1f} ms")
    print(
        f"4 MB request/response, hole-punched, warm: {statistics.median(warm):7.1f} ms median, {p90:.1f} ms p90"
        f"  (EdgeMesh measured {EDGEMESH_4MB_MS:.0f} ms)"
    )
    print(f"paths: {stats['paths']}  bytes out by path: {stats['bytes_out']}  punches: {stats['punches']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--holepunch-mb", type=int, default=128, help="transfer size over the punched path")
    args = ap.parse_args()
    asyncio.run(main(args.mb, args.rounds))
    asyncio.run(holepunch(args.holepunch_mb, args.rounds))
