"""Pods on one real edge node: startup latency, offline restart, edgecore memory.

    .venv/bin/python bench/bench_pods.py [--quick] [--pods N] [--offline-pods M]

A project-owned containerd, `python -m kubeedge.cloudcore` (embedded API, all controllers) and
`python -m kubeedge.edgecore` with edged on, as in tests/e2e/test_edged_e2e.py. Pods are busybox sleepers
with a nodeSelector for the edge node, so the scheduler is on the path. Prints:
1. pod startup, API create sent → phase Running seen on a watch of the cloud API: N pods one after the
   other (each created once the previous one runs), then N created at once; p50/p99/max (target p99 ≤
   1.5 s over 50 pods);
2. edgecore VmRSS with 0, 10 and N pods running (target ≤ 45 MB at 10 pods);
3. offline restart: M pods in the edge store, cloudcore stopped, edgecore killed -9 and every pod
   container and sandbox killed (a power cut); seconds from starting edgecore alone to all M pods'
   containers running again in CRI (target ≤ 10 s for 30 pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import mb, ms, parser, percentile, print_block, print_summary, proc_status, rss_bytes, verdict

from kubeedge.kube import NAMESPACES, PODS, KubeClient, watch
from tests.cluster import wait_for
from tests.e2e.edgedcluster import NODE, EdgedCluster, edged_cluster

NS = "bench-pods"
# Outside the 10.200-239.x.0/24 range the test modules hash their pod networks into.
SUBNET = "10.250.1.0/24"
BRIDGE = "kebench0"
STARTUP_P99_TARGET_S = 1.5
RSS_TARGET = 45e6
OFFLINE_TARGET_S = 10.0
# edgecore's RSS is read after it has been idle this long with the pods running (status reports and
# probe set-up done): "idle" is the measurement condition itself.
SETTLE_S = 3.0
PHASE_DEADLINE_S = 180.0
# How often CRI is asked during the offline restart (the runtime is the only witness offline).
CRI_POLL_S = 0.05
DELETE_CONCURRENCY = 10


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": "kubeedge.local/busybox:latest",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"],
                }
            ],
        },
    }


class RunningWatch:
    """When the cloud API first showed each pod of NS with phase Running (monotonic seconds)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def run(self, kc: KubeClient, rv: str) -> None:
        async for ev in watch(kc, PODS, NS, resource_version=rv, timeout_seconds=int(PHASE_DEADLINE_S) * 4):
            name = ev.object.get("metadata", {}).get("name", "")
            if ev.type in ("ADDED", "MODIFIED") and (ev.object.get("status") or {}).get("phase") == "Running":
                self.seen.setdefault(name, time.monotonic())
                self.changed.set()

    async def wait(self, names: set[str]) -> None:
        async with asyncio.timeout(PHASE_DEADLINE_S):
            while not names <= self.seen.keys():
                self.changed.clear()
                await self.changed.wait()


async def settle_rss(c: EdgedCluster) -> tuple[int, int]:
    await asyncio.sleep(SETTLE_S)
    assert c.edge.daemon.proc is not None
    pid = c.edge.daemon.proc.pid
    return rss_bytes(pid), proc_status(pid, "VmHWM")


async def running_count(c: EdgedCluster) -> int:
    return len(await c.running_containers(NS))


async def wait_runtime(c: EdgedCluster, n: int) -> None:
    async def reached() -> bool:
        return await running_count(c) == n

    await wait_for(reached, deadline_s=PHASE_DEADLINE_S, interval=CRI_POLL_S, what=f"{n} pods running in CRI")


async def delete_pods(c: EdgedCluster, kc: KubeClient, names: list[str]) -> None:
    lane = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one(name: str) -> None:
        async with lane:
            await kc.delete(PODS, name, NS)

    await asyncio.gather(*(one(n) for n in names))

    async def gone() -> bool:
        return not {p["metadata"]["name"] for p in (await kc.list(PODS, NS))[0]} & set(names)

    await wait_for(gone, deadline_s=PHASE_DEADLINE_S, interval=0.2, what="deleted pods gone from the API")


def latency_rows(label: str, lat: list[float]) -> list[tuple[str, Any]]:
    p99 = percentile(lat, 99)
    return [
        (f"{label} p50", ms(percentile(lat, 50))),
        (f"{label} p99", f"{ms(p99)} ({verdict(p99 <= STARTUP_P99_TARGET_S)}: <= 1.5 s)"),
        (f"{label} max", ms(max(lat))),
    ]


async def bench(c: EdgedCluster, n: int, offline: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pods": n, "offline_pods": offline}
    rss: list[tuple[str, Any]] = []
    async with c.admin() as kc:
        ns = await kc.create(NAMESPACES, {"metadata": {"name": NS}})
        await c.edge.wait_serving()
        r0, _ = await settle_rss(c)
        rss.append(("edgecore VmRSS, 0 pods", mb(r0)))
        out["rss_0_mb"] = round(r0 / 1e6, 1)
        seen = RunningWatch()
        watcher = asyncio.create_task(seen.run(kc, str(ns["metadata"]["resourceVersion"])))
        try:
            # 1a. one after the other.
            seq: list[float] = []
            for i in range(n):
                name = f"seq-{i}"
                t0 = time.monotonic()
                await kc.create(PODS, pod(name), NS)
                await seen.wait({name})
                seq.append(seen.seen[name] - t0)
                if i + 1 == 10:
                    r10, _ = await settle_rss(c)
                    rss.append(
                        ("edgecore VmRSS, 10 pods", f"{mb(r10)} ({verdict(r10 <= RSS_TARGET)}: <= 45 MB)")
                    )
                    out["rss_10_mb"] = round(r10 / 1e6, 1)
            rn, hwm = await settle_rss(c)
            if n != 10:
                rss.append((f"edgecore VmRSS, {n} pods", mb(rn)))
            rss.append(("edgecore VmHWM so far", mb(hwm)))
            out[f"rss_{n}_mb"] = round(rn / 1e6, 1)
            await delete_pods(c, kc, [f"seq-{i}" for i in range(n)])
            await wait_runtime(c, 0)

            # 1b. all at once.
            names = [f"burst-{i}" for i in range(n)]
            sent: dict[str, float] = {}

            async def create(name: str) -> None:
                sent[name] = time.monotonic()
                await kc.create(PODS, pod(name), NS)

            t_burst = time.monotonic()
            await asyncio.gather(*(create(x) for x in names))
            await seen.wait(set(names))
            burst = [seen.seen[x] - sent[x] for x in names]
            burst_all = max(seen.seen[x] for x in names) - t_burst
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        print_block(
            f"pod startup: API create → Running seen in the cloud ({n} pods, one node)",
            [
                *latency_rows("one at a time", seq),
                *latency_rows("all at once", burst),
                ("all at once, first create → last Running", f"{burst_all:.2f} s"),
            ],
        )
        out.update(
            seq_p50_ms=round(percentile(seq, 50) * 1000, 1),
            seq_p99_ms=round(percentile(seq, 99) * 1000, 1),
            burst_p50_ms=round(percentile(burst, 50) * 1000, 1),
            burst_p99_ms=round(percentile(burst, 99) * 1000, 1),
            burst_all_s=round(burst_all, 2),
        )
        print_block("edgecore memory", rss)

        # 3. offline restart with `offline` pods in the store.
        await delete_pods(c, kc, names[offline:])
        await wait_runtime(c, offline)

    c.cloud.terminate()
    c.edge.daemon.kill9()
    killed = await c.kill_all_pods()
    t0 = time.monotonic()
    c.edge.daemon.start()
    await c.edge.wait_serving()
    t_meta = time.monotonic() - t0
    await wait_runtime(c, offline)
    t_all = time.monotonic() - t0
    r_off, _ = await settle_rss(c)
    print_block(
        f"offline restart: {offline} pods in the store, cloud down, every container killed ({killed})",
        [
            ("edgecore start → MetaServer serving", f"{t_meta:.2f} s"),
            (
                f"edgecore start → all {offline} pods running in CRI",
                f"{t_all:.2f} s ({verdict(t_all <= OFFLINE_TARGET_S)}: <= 10 s)",
            ),
            (f"edgecore VmRSS offline, {offline} pods", mb(r_off)),
        ],
    )
    out.update(offline_meta_s=round(t_meta, 2), offline_all_running_s=round(t_all, 2))
    return out


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--pods", type=int, default=0, help="pods for startup and memory (default 50, quick 10)")
    p.add_argument("--offline-pods", type=int, default=0, help="pods for the offline restart (default 30)")
    a = p.parse_args()
    n = a.pods or (10 if a.quick else 50)
    offline = min(n, a.offline_pods or (5 if a.quick else 30))
    base = Path(tempfile.mkdtemp(prefix="kubeedge-bench-pods-"))
    async with edged_cluster(base, SUBNET, BRIDGE) as c:
        out = await bench(c, n, offline)
    if a.keep:
        print(f"(data kept in {base})")
    else:
        shutil.rmtree(base, ignore_errors=True)
    print_summary("pods", out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
