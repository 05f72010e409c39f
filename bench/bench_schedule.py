"""Scheduling throughput: N pending pods bound over M registered nodes by the scheduler.

.venv/bin/python bench/bench_schedule.py [--quick] [--nodes M] [--pods N] [--concurrency C]

Process layout: the API server (subprocess, `--controllers none`), the scheduler as its own process
(`python -m kubeedge.controllers --controllers scheduler`, so its RSS and CPU are its own), and this
process, which registers the nodes, opens a watch on the pods, then creates the pods from C
concurrent HTTPS clients. Pods bound/s = pods / (last binding observed on the watch - first create
sent). Node Leases are not renewed: nothing watches them in this setup.

BENCH_SCHED_PROFILE=/path/to/out.prof runs the scheduler process under cProfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from common import (
    JSON_HEADERS,
    NS,
    ROOT,
    BenchServer,
    client_session,
    cpu_seconds,
    ensure_namespace,
    expect_ok,
    mb,
    parser,
    print_block,
    print_summary,
    proc_status,
    verdict,
)

from tests.cluster import node_manifest

TARGET = 1000.0  # pods bound per second


@contextlib.contextmanager
def server_and_scheduler(keep: bool) -> Iterator[tuple[BenchServer, subprocess.Popen[bytes], Path]]:
    data = Path(tempfile.mkdtemp(prefix="kubeedge-bench-"))
    srv = BenchServer(data / "apiserver", extra_args=["--controllers", "none"])
    sched: subprocess.Popen[bytes] | None = None
    log_path = data / "scheduler.log"
    try:
        srv.start()
        with log_path.open("wb") as log:
            prof = os.environ.get("BENCH_SCHED_PROFILE")
            sched = subprocess.Popen(
                [
                    sys.executable,
                    *(["-m", "cProfile", "-o", str(Path(prof).resolve())] if prof else []),
                    "-m",
                    "kubeedge.controllers",
                    "--kubeconfig",
                    str(srv.kubeconfig),
                    "--controllers",
                    "scheduler",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        yield srv, sched, log_path
    finally:
        if sched is not None and sched.poll() is None:
            sched.send_signal(signal.SIGTERM)
            try:
                sched.wait(15)
            except subprocess.TimeoutExpired:
                sched.kill()
                sched.wait(5)
        srv.stop()
        if keep:
            print(f"(data kept in {data})")
        else:
            shutil.rmtree(data, ignore_errors=True)


def pending_pod(i: int) -> bytes:
    """A small pod with requests, owned by one of 100 ReplicaSet-like groups (spread applies)."""
    group = i % 100
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"pod-{i:06d}",
                "labels": {"app": f"web-{group}", "bench": "yes"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"web-{group}",
                        "uid": f"00000000-0000-0000-0000-{group:012d}",
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }
                ]
            },
        }
    )


async def register_nodes(s: Any, count: int, concurrency: int) -> None:
    bodies = [
        orjson.dumps(node_manifest(f"node-{i:04d}", cpu="4", memory="8Gi", pods="110")) for i in range(count)
    ]
    it = iter(bodies)

    async def worker() -> None:
        for body in it:
            async with s.post("/api/v1/nodes", data=body, headers=JSON_HEADERS) as r:
                await expect_ok(r, 201)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _log_has(path: Path, text: bytes) -> bool:
    return text in path.read_bytes()


async def wait_scheduler_ready(
    log_path: Path, sched: subprocess.Popen[bytes], deadline_s: float = 60.0
) -> None:
    """Until the scheduler logs that its informers synced and it started deciding."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if sched.poll() is not None:
            raise RuntimeError(f"scheduler exited: {_log_tail(log_path)}")
        if _log_has(log_path, b"controller scheduler started"):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"scheduler not ready after {deadline_s}s: {_log_tail(log_path)}")


async def watch_bindings(
    s: Any, rv: str, expected: int, done: asyncio.Future[float], per_node: Counter[str]
) -> None:
    """Count pods seen with spec.nodeName; resolve `done` with the time the last one arrived."""
    bound: set[str] = set()
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "600"}
    async with s.get(f"/api/v1/namespaces/{NS}/pods", params=params) as r:
        buf = b""
        async for chunk in r.content.iter_any():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                obj = ev["object"]
                node = (obj.get("spec") or {}).get("nodeName")
                name = obj["metadata"]["name"]
                if node and name not in bound:
                    bound.add(name)
                    per_node[node] += 1
                    if len(bound) >= expected:
                        done.set_result(time.perf_counter())
                        return


async def create_all(s: Any, count: int, concurrency: int) -> float:
    bodies = [pending_pod(i) for i in range(count)]
    url = f"/api/v1/namespaces/{NS}/pods"
    it = iter(bodies)

    async def worker() -> None:
        for body in it:
            async with s.post(url, data=body, headers=JSON_HEADERS) as r:
                await expect_ok(r, 201)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def run(
    srv: BenchServer, sched: subprocess.Popen[bytes], log_path: Path, nodes: int, pods: int, concurrency: int
) -> dict[str, Any]:
    async with client_session(srv.kubeconfig, connections=concurrency + 2) as s:
        await ensure_namespace(s)
        t0 = time.perf_counter()
        await register_nodes(s, nodes, concurrency)
        register_s = time.perf_counter() - t0
        await wait_scheduler_ready(log_path, sched)
        # Let the scheduler's node informer take in every node before the pods arrive.
        await asyncio.sleep(1.0)
        rss_idle = proc_status(sched.pid, "VmRSS")
        async with s.get(f"/api/v1/namespaces/{NS}/pods", params={"limit": "1"}) as r:
            rv = orjson.loads(await expect_ok(r, 200))["metadata"]["resourceVersion"]
        per_node: Counter[str] = Counter()
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(watch_bindings(s, rv, pods, done, per_node))
        sched_cpu0, srv_cpu0 = cpu_seconds(sched.pid), cpu_seconds(srv.pid)
        start = time.perf_counter()
        create_s = await create_all(s, pods, concurrency)
        try:
            last = await asyncio.wait_for(asyncio.shield(done), timeout=max(120.0, pods / 50))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        sched_cpu = cpu_seconds(sched.pid) - sched_cpu0
        srv_cpu = cpu_seconds(srv.pid) - srv_cpu0
        elapsed = last - start
    return {
        "register_s": register_s,
        "create_s": create_s,
        "elapsed": elapsed,
        "rate": pods / elapsed,
        "create_rate": pods / create_s,
        "sched_cpu": sched_cpu,
        "srv_cpu": srv_cpu,
        "rss_idle": rss_idle,
        "rss": proc_status(sched.pid, "VmRSS"),
        "hwm": proc_status(sched.pid, "VmHWM"),
        "nodes_used": len(per_node),
        "max_per_node": max(per_node.values()),
        "min_per_node": min(per_node.values()) if len(per_node) == nodes else 0,
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--nodes", type=int, default=None, help="nodes to register (1000; --quick 100)")
    p.add_argument("--pods", type=int, default=None, help="pods to create (10000; --quick 1000)")
    p.add_argument("--concurrency", type=int, default=50)
    a = p.parse_args()
    nodes = a.nodes or (100 if a.quick else 1000)
    pods = a.pods or (1000 if a.quick else 10_000)
    with server_and_scheduler(a.keep) as (srv, sched, log_path):
        r = asyncio.run(run(srv, sched, log_path, nodes, pods, a.concurrency))
    print_block(
        f"bench_schedule: {pods} pods over {nodes} nodes, scheduler in its own process, "
        f"{a.concurrency} concurrent creators",
        [
            ("pods bound/s", f"{r['rate']:.0f}  (target >= {TARGET:.0f}: {verdict(r['rate'] >= TARGET)})"),
            ("first create -> last bound", f"{r['elapsed']:.2f} s"),
            ("creates/s (all created in)", f"{r['create_rate']:.0f}  ({r['create_s']:.2f} s)"),
            ("nodes registered in", f"{r['register_s']:.2f} s"),
            (
                "scheduler CPU during run",
                f"{r['sched_cpu']:.2f} s ({r['sched_cpu'] / r['elapsed']:.0%} of a core)",
            ),
            ("server CPU during run", f"{r['srv_cpu']:.2f} s ({r['srv_cpu'] / r['elapsed']:.0%} of a core)"),
            ("scheduler RSS idle (nodes only)", mb(r["rss_idle"])),
            ("scheduler RSS after / peak", f"{mb(r['rss'])} / {mb(r['hwm'])}"),
            (
                "nodes used / pods per node",
                f"{r['nodes_used']} / min {r['min_per_node']} max {r['max_per_node']}",
            ),
            ("cores", os.cpu_count()),
        ],
    )
    print_summary(
        "schedule",
        {
            "nodes": nodes,
            "pods": pods,
            "pods_bound_per_s": round(r["rate"], 1),
            "elapsed_s": round(r["elapsed"], 2),
            "creates_per_s": round(r["create_rate"], 1),
            "scheduler_cpu_s": round(r["sched_cpu"], 2),
            "server_cpu_s": round(r["srv_cpu"], 2),
            "scheduler_rss_mb": round(r["rss"] / 1e6, 1),
            "scheduler_hwm_mb": round(r["hwm"] / 1e6, 1),
            "max_pods_per_node": r["max_per_node"],
            "target_met": r["rate"] >= TARGET,
        },
    )


if __name__ == "__main__":
    main()
