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
0. first, as the baseline for 1: containerd's own rate — N pods' RunPodSandbox + CreateContainer +
   StartContainer straight through CriClient (same sandbox and container configs edged builds, but
   without edged's labels so edged leaves them alone), all at once and in edged's lanes; the burst
   p99 of 1 is also printed as a multiple of the unbounded baseline's p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import mb, ms, parser, percentile, print_block, print_summary, proc_status, rss_bytes, verdict

from kubeedge.edgecore.edged import runtime as rt
from kubeedge.edgecore.edged.manager import MAX_PARALLEL_SANDBOX_STARTS
from kubeedge.edgecore.edged.podspec import (
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    PodContext,
    container_config,
    sandbox_config,
)
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
        self.wall: dict[str, float] = {}  # the same moments as time.time(), to compare with CRI's
        self.changed = asyncio.Event()

    async def run(self, kc: KubeClient, rv: str) -> None:
        async for ev in watch(kc, PODS, NS, resource_version=rv, timeout_seconds=int(PHASE_DEADLINE_S) * 4):
            name = ev.object.get("metadata", {}).get("name", "")
            if ev.type in ("ADDED", "MODIFIED") and (ev.object.get("status") or {}).get("phase") == "Running":
                self.seen.setdefault(name, time.monotonic())
                self.wall.setdefault(name, time.time())
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


async def started_at(c: EdgedCluster) -> dict[str, float]:
    """pod name -> when CRI says its container started (wall clock), for the pods of NS."""
    out: dict[str, float] = {}
    for ctr in await c.cri.list_containers(labels={LABEL_POD_NAMESPACE: NS}):
        st = (await c.cri.container_status(ctr.id)).status
        if st.started_at:
            out[ctr.labels[LABEL_POD_NAME]] = st.started_at / 1e9
    return out


async def containerd_baseline(c: EdgedCluster, n: int, lanes: int | None) -> tuple[list[float], float]:
    """Per-pod seconds from RunPodSandbox to StartContainer returned, and the whole burst's seconds, for
    n pods started at once (at most `lanes` sandboxes being created at a time, as edged does)."""
    lane = asyncio.Semaphore(lanes or n)
    image = await c.cri.image_status(c.image.name)
    assert image is not None, "the bench image is not in containerd"
    ctx = PodContext(node_name=NODE, node_ip="", pod_ip="", pod_ips=(), configmaps={}, secrets={},
                     volume_paths={})  # fmt: skip
    log_dir = c.base / "baseline-logs"
    cgroups: list[str] = []

    async def one(i: int) -> float:
        p = pod(f"base-{i}")
        p["metadata"].update(namespace=NS, uid=str(uuid.uuid4()))
        cgroup = rt.pod_cgroup(c.cgroup_root, p["metadata"]["uid"])
        cgroups.append(cgroup)
        sb = sandbox_config(p, ctx, attempt=0, log_dir=str(log_dir), cgroup_parent=cgroup)
        sb.labels.clear()
        sb.labels["bench"] = "baseline"  # not edged's: it must not adopt or remove these
        spec = p["spec"]["containers"][0]
        cc = container_config(p, spec, ctx, attempt=0, log_dir_rel="c", image_ref=image.id)
        cc.labels.clear()
        t0 = time.monotonic()
        async with lane:
            sid = await c.cri.run_pod_sandbox(sb)
        cid = await c.cri.create_container(sid, cc, sb)
        await c.cri.start_container(cid)
        return time.monotonic() - t0

    t0 = time.monotonic()
    lat = await asyncio.gather(*(one(i) for i in range(n)))
    total = time.monotonic() - t0
    for sb in await c.cri.list_pod_sandbox(labels={"bench": "baseline"}):
        await c.cri.stop_pod_sandbox(sb.id)
        await c.cri.remove_pod_sandbox(sb.id)
    for cg in cgroups:
        rt.remove_cgroup(cg)
    shutil.rmtree(log_dir, ignore_errors=True)
    return list(lat), total


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
    # 0. containerd alone, in the same run (same machine load, same containerd).
    base_all, base_all_s = await containerd_baseline(c, n, None)
    base_lanes, base_lanes_s = await containerd_baseline(c, n, MAX_PARALLEL_SANDBOX_STARTS)
    print_block(
        f"containerd alone: RunPodSandbox + CreateContainer + StartContainer, {n} pods at once",
        [
            ("unbounded p50", ms(percentile(base_all, 50))),
            ("unbounded p99", ms(percentile(base_all, 99))),
            ("unbounded, all started", f"{base_all_s:.2f} s ({n / base_all_s:.1f} pods/s)"),
            (f"{MAX_PARALLEL_SANDBOX_STARTS} sandbox lanes p99", ms(percentile(base_lanes, 99))),
            (f"{MAX_PARALLEL_SANDBOX_STARTS} sandbox lanes, all started", f"{base_lanes_s:.2f} s"),
        ],
    )
    out.update(
        ctrd_p50_ms=round(percentile(base_all, 50) * 1000, 1),
        ctrd_p99_ms=round(percentile(base_all, 99) * 1000, 1),
        ctrd_all_s=round(base_all_s, 2),
        ctrd_lanes_p99_ms=round(percentile(base_lanes, 99) * 1000, 1),
        ctrd_lanes_all_s=round(base_lanes_s, 2),
    )
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

            sent_wall: dict[str, float] = {}

            async def create(name: str) -> None:
                sent[name] = time.monotonic()
                sent_wall[name] = time.time()
                await kc.create(PODS, pod(name), NS)

            t_burst = time.monotonic()
            await asyncio.gather(*(create(x) for x in names))
            await seen.wait(set(names))
            burst = [seen.seen[x] - sent[x] for x in names]
            burst_all = max(seen.seen[x] for x in names) - t_burst
            # Where the time went: up to the container's start (cloud to edge, edged, containerd), and
            # from there to Running in the cloud (status report, upstream queue, cloud's patch).
            started = await started_at(c)
            to_start = [started[x] - sent_wall[x] for x in names if x in started]
            to_seen = [seen.wall[x] - started[x] for x in names if x in started]
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
                ("all at once, create → container started p50", ms(percentile(to_start, 50))),
                ("all at once, create → container started p99", ms(percentile(to_start, 99))),
                ("all at once, container started → Running seen p50", ms(percentile(to_seen, 50))),
                ("all at once, container started → Running seen p99", ms(percentile(to_seen, 99))),
                (
                    "all at once p99 / containerd alone p99",
                    f"{percentile(burst, 99) / percentile(base_all, 99):.2f}x",
                ),
            ],
        )
        out.update(
            seq_p50_ms=round(percentile(seq, 50) * 1000, 1),
            seq_p99_ms=round(percentile(seq, 99) * 1000, 1),
            burst_p50_ms=round(percentile(burst, 50) * 1000, 1),
            burst_p99_ms=round(percentile(burst, 99) * 1000, 1),
            burst_all_s=round(burst_all, 2),
            burst_to_start_p99_ms=round(percentile(to_start, 99) * 1000, 1),
            burst_start_to_seen_p99_ms=round(percentile(to_seen, 99) * 1000, 1),
            burst_p99_over_ctrd=round(percentile(burst, 99) / percentile(base_all, 99), 2),
        )
        print_block("edgecore memory", rss)

        # 3. offline restart with `offline` pods in the store.
        await delete_pods(c, kc, names[offline:])
        await wait_runtime(c, offline)

    c.cloud.daemon.terminate()
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
