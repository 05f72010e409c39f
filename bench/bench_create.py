"""Create throughput: N pods from 50 concurrent HTTPS clients, against bare sqlite3 inserts.

.venv/bin/python bench/bench_create.py [--quick] [--count N] [--concurrency C]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson
from common import (
    NS,
    client_session,
    cpu_seconds,
    create_pods,
    ensure_namespace,
    ms,
    parser,
    percentile,
    pod_manifest,
    print_block,
    print_summary,
    running_server,
    verdict,
)

TARGET = 2000.0  # creates/s


async def api_run(srv, count: int, concurrency: int) -> dict[str, float]:
    async with client_session(srv.kubeconfig, connections=concurrency) as s:
        await ensure_namespace(s)
        # Warm up: TLS handshakes for every connection, server caches, first-use code paths.
        await create_pods(s, concurrency * 2, concurrency, prefix="warm")
        lat: list[float] = []
        cpu0, client0 = cpu_seconds(srv.pid), time.process_time()
        elapsed = await create_pods(s, count, concurrency, prefix="pod", latencies=lat)
        cpu1, client1 = cpu_seconds(srv.pid), time.process_time()
        async with s.get(f"/api/v1/namespaces/{NS}/pods", params={"limit": "1"}) as r:
            assert r.status == 200
    return {
        "rate": count / elapsed,
        "elapsed": elapsed,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": max(lat),
        "server_cpu": cpu1 - cpu0,
        "client_cpu": client1 - client0,
    }


def bare_sqlite_run(count: int, batch: int = 100) -> dict[str, float]:
    """The same objects inserted straight into SQLite: WAL, synchronous=FULL, 100 rows a transaction."""
    d = Path(tempfile.mkdtemp(prefix="kubeedge-bench-sqlite-"))
    try:
        conn = sqlite3.connect(d / "bare.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE objects (key TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL, "
            "rv INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (key, ns, name))"
        )
        objs = [pod_manifest(i) for i in range(count)]
        t0 = time.perf_counter()
        rv = 0
        for start in range(0, count, batch):
            conn.execute("BEGIN")
            for obj in objs[start : start + batch]:
                rv += 1
                obj["metadata"]["namespace"] = NS
                obj["metadata"]["resourceVersion"] = str(rv)
                conn.execute(
                    "INSERT INTO objects VALUES (?,?,?,?,?)",
                    ("pods", NS, obj["metadata"]["name"], rv, orjson.dumps(obj)),
                )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
        return {"rate": count / elapsed, "elapsed": elapsed, "txns": -(-count // batch)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--count", type=int, default=None, help="pods to create (10000; --quick 1000)")
    p.add_argument("--concurrency", type=int, default=50)
    a = p.parse_args()
    count = a.count or (1000 if a.quick else 10_000)
    with running_server(a.keep) as srv:
        api = asyncio.run(api_run(srv, count, a.concurrency))
    bare = bare_sqlite_run(count)
    ratio = api["rate"] / bare["rate"]
    print_block(
        f"bench_create: {count} pods, {a.concurrency} concurrent HTTPS clients (keep-alive, 1 client process)",
        [
            (
                "API creates/s",
                f"{api['rate']:.0f}  (target >= {TARGET:.0f}: {verdict(api['rate'] >= TARGET)})",
            ),
            ("API wall time", f"{api['elapsed']:.2f} s"),
            ("latency p50 / p99 / max", f"{ms(api['p50'])} / {ms(api['p99'])} / {ms(api['max'])}"),
            (
                "server CPU during run",
                f"{api['server_cpu']:.2f} s ({api['server_cpu'] / api['elapsed']:.0%} of a core)",
            ),
            (
                "client CPU during run",
                f"{api['client_cpu']:.2f} s ({api['client_cpu'] / api['elapsed']:.0%} of a core)",
            ),
            ("bare sqlite3 inserts/s", f"{bare['rate']:.0f}  (WAL, synchronous=FULL, 100 rows/txn, orjson)"),
            ("ratio API / bare sqlite", f"{ratio:.3f}"),
            ("cores", os.cpu_count()),
        ],
    )
    print_summary(
        "create",
        {
            "count": count,
            "concurrency": a.concurrency,
            "creates_per_s": round(api["rate"], 1),
            "p50_ms": round(api["p50"] * 1000, 2),
            "p99_ms": round(api["p99"] * 1000, 2),
            "bare_sqlite_per_s": round(bare["rate"], 1),
            "ratio_api_to_sqlite": round(ratio, 4),
            "server_cpu_s": round(api["server_cpu"], 2),
            "target_met": api["rate"] >= TARGET,
        },
    )


if __name__ == "__main__":
    main()
