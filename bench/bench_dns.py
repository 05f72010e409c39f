"""EdgeMesh DNS: queries/s for cluster names on one core and latency, with dnsmasq as a C peer.

Both servers hold the same N names (dnsmasq from a hosts file written from the same table) and run
pinned to CPU 0; the load generator runs pinned to CPU 1 and keeps C queries outstanding over UDP
(closed loop), timing each answer. Our server is measured twice: as deployed (repeated questions
answered from its packed-answer cache) and with that cache off (every query parsed and answered by
dnslib). Figures: answered queries/s over the run, p50/p99 latency, and our/dnsmasq ratios.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import parser, percentile_sorted, print_block, print_summary  # noqa: E402
from tests.apiserver_proc import free_port  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
DOMAIN = "cluster.local"
QUERY_TIMEOUT = 1.0  # an answer later than this counts as lost


def service_ip(i: int) -> str:
    return f"10.96.{i // 250}.{i % 250 + 1}"


def names(n: int) -> list[str]:
    return [f"svc-{i}.bench.svc.{DOMAIN}" for i in range(n)]


# ---- our server, in its own process ----------------------------------------------------------


async def serve(port: int, n: int, cache: bool) -> None:
    from edgemesh.dns import ClusterZone, DNSServer, Forwarder
    from edgemesh.dns.resolvconf import Upstreams
    from edgemesh.model import ServiceTable

    table = ServiceTable()
    for i in range(n):
        table.upsert_service(
            {
                "metadata": {"namespace": "bench", "name": f"svc-{i}"},
                "spec": {"clusterIP": service_ip(i), "ports": [{"name": "http", "port": 80}]},
            }
        )
    table.synced = True
    fwd = Forwarder(Upstreams(servers=[]))
    srv = DNSServer(ClusterZone(table, DOMAIN), fwd, "127.0.0.1", port, answer_cache=cache)
    await srv.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await srv.stop()


def start_ours(port: int, n: int, cache: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--serve", str(port), "--services", str(n)]
    if not cache:
        args.append("--no-cache")
    p = subprocess.Popen(
        args, stdout=subprocess.PIPE, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU})
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if b"ready" not in line:
        p.kill()
        raise RuntimeError("our DNS server did not start")
    return p


def start_dnsmasq(port: int, n: int, tmp: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
    if exe is None:
        return None
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"{service_ip(i)} {name}\n" for i, name in enumerate(names(n))))
    p = subprocess.Popen(
        [
            exe,
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            f"--local=/{DOMAIN}/",  # authoritative-ish: names not in the file are NXDOMAIN, not forwarded
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--port={port}",
            "--cache-size=10000",
            "--user=root",
            f"--pid-file={tmp / 'dnsmasq.pid'}",
            "--log-facility=-",
            "--quiet-dhcp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
    )
    wait_answering(port)
    return p


def query_packet(name: str, qid: int) -> bytes:
    from dnslib import DNSRecord  # type: ignore[import-untyped]

    q = DNSRecord.question(name, "A")
    q.header.id = qid
    return bytes(q.pack())


def wait_answering(port: int, deadline_s: float = 10.0) -> None:
    pkt = query_packet(names(1)[0], 1)
    end = time.monotonic() + deadline_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < end:
            s.sendto(pkt, ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"no DNS answer on port {port}")


# ---- load generator --------------------------------------------------------------------------


def load(port: int, n: int, seconds: float, concurrency: int) -> dict[str, float]:
    """Closed loop: keep `concurrency` queries outstanding; returns qps and latency figures."""
    os.sched_setaffinity(0, {CLIENT_CPU})
    rng = random.Random(7)
    pool = names(n)
    templates = [query_packet(rng.choice(pool), 0)[2:] for _ in range(4096)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    sent_at: dict[int, float] = {}
    lat: list[float] = []
    qid = 0
    lost = 0
    bad = 0
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    ti = 0
    while True:
        now = clock()
        if now >= end:
            break
        while len(sent_at) < concurrency:
            qid = (qid + 1) & 0xFFFF
            if qid in sent_at:
                continue
            s.send(qid.to_bytes(2, "big") + templates[ti])
            ti = (ti + 1) & 4095
            sent_at[qid] = clock()
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            cutoff = clock() - QUERY_TIMEOUT
            for k in [k for k, t in sent_at.items() if t < cutoff]:
                del sent_at[k]
                lost += 1
            continue
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            t0 = sent_at.pop(int.from_bytes(data[:2], "big"), None)
            if t0 is None:
                continue
            if data[3] & 0x0F or data[6:8] == b"\x00\x00":  # an error rcode, or no answer record
                bad += 1
            lat.append(clock() - t0)
    elapsed = clock() - start
    s.close()
    lat.sort()
    return {
        "qps": len(lat) / elapsed,
        "p50_ms": percentile_sorted(lat, 50) * 1000,
        "p99_ms": percentile_sorted(lat, 99) * 1000,
        "lost": lost,
        "errors": bad,
    }


def measure(proc: subprocess.Popen[bytes], port: int, n: int, seconds: float, conc: int) -> dict[str, float]:
    try:
        load(port, n, min(1.0, seconds / 4), conc)  # warm-up (caches, CPU frequency)
        return load(port, n, seconds, conc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--serve", type=int, default=0, help=argparse_hidden())
    p.add_argument("--no-cache", action="store_true", help=argparse_hidden())
    a = p.parse_args()
    if a.serve:
        asyncio.run(serve(a.serve, a.services, not a.no_cache))
        return
    if a.quick:
        a.seconds = 3.0
    if len(os.sched_getaffinity(0)) < 2:
        print("note: fewer than 2 CPUs: server and load generator share one", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        port = free_port()
        results["edgemesh"] = measure(
            start_ours(port, a.services, True), port, a.services, a.seconds, a.concurrency
        )
        port = free_port()
        results["edgemesh_nocache"] = measure(
            start_ours(port, a.services, False), port, a.services, a.seconds, a.concurrency
        )
        port = free_port()
        peer = start_dnsmasq(port, a.services, Path(tmp))
        if peer is not None:
            results["dnsmasq"] = measure(peer, port, a.services, a.seconds, a.concurrency)
    for name, r in results.items():
        print_block(
            f"{name}: {a.services} names, {a.concurrency} outstanding, {a.seconds:.0f}s, server on 1 CPU",
            [
                ("queries/s", f"{r['qps']:,.0f}"),
                ("p50 latency", f"{r['p50_ms']:.3f} ms"),
                ("p99 latency", f"{r['p99_ms']:.3f} ms"),
                ("lost / error answers", f"{r['lost']:.0f} / {r['errors']:.0f}"),
            ],
        )
    ours = results["edgemesh"]["qps"]
    summary: dict[str, float | str] = {
        "qps": round(ours),
        "p99_ms": round(results["edgemesh"]["p99_ms"], 3),
        "qps_nocache": round(results["edgemesh_nocache"]["qps"]),
        "target_qps": 20000,
    }
    if "dnsmasq" in results:
        peer_qps = results["dnsmasq"]["qps"]
        summary["dnsmasq_qps"] = round(peer_qps)
        summary["ratio_vs_dnsmasq"] = round(ours / peer_qps, 3)
        summary["ratio_nocache_vs_dnsmasq"] = round(results["edgemesh_nocache"]["qps"] / peer_qps, 3)
        print(
            f"ours/dnsmasq: {ours / peer_qps:.2f}x (uncached path {summary['ratio_nocache_vs_dnsmasq']:.2f}x)"
        )
    else:
        print("dnsmasq not installed (apt install dnsmasq-base): no peer figure")
    print(f"target >= 20,000 qps: {'meets target' if ours >= 20000 else 'MISSES target'}")
    print_summary("dns", summary)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
