"""Deployment scale-out: `kubectl apply` of a Deployment with N replicas on M registered nodes,
timed until every pod exists and until every pod is bound (watched, not polled).

The server runs the deployment, replicaset and scheduler controllers embedded (without a scheduler
only creation is measured). Nodes are registered through the API (pods=110 each); no kubelet runs.

.venv/bin/python bench/bench_deployment.py [--quick] [--replicas N] [--nodes M]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import NS, BenchServer, cpu_seconds, parser, print_block, print_summary

from kubeedge.controllers.manager import CONTROLLERS
from kubeedge.kube import NAMESPACES, PODS, KubeClient, ListWatch, load_kubeconfig
from tests.apiserver_proc import KUBECTL
from tests.cluster import register_node

HAVE_SCHEDULER = "scheduler" in CONTROLLERS


def manifest(replicas: int) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: bench, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: bench}}}}
  template:
    metadata: {{labels: {{app: bench}}}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"""


@contextlib.contextmanager
def server_with(controllers: str, keep: bool) -> Iterator[BenchServer]:
    data = Path(tempfile.mkdtemp(prefix="kubeedge-bench-"))
    srv = BenchServer(data / "apiserver", extra_args=["--controllers", controllers])
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if keep:
            print(f"(server data kept in {data})")
        else:
            shutil.rmtree(data, ignore_errors=True)


async def register_nodes(kc: KubeClient, count: int) -> None:
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            await register_node(kc, f"node-{i:03d}", cpu="64", memory="256Gi", pods="110")

    await asyncio.gather(*(one(i) for i in range(count)))


async def run(srv: BenchServer, replicas: int, nodes: int) -> dict[str, Any]:
    async with KubeClient(load_kubeconfig(srv.kubeconfig)) as kc:
        await register_nodes(kc, nodes)
        await kc.create(NAMESPACES, {"metadata": {"name": NS}})
        created: set[str] = set()
        bound: set[str] = set()
        marks: dict[str, float] = {}
        per_node: dict[str, int] = {}
        async with ListWatch(kc, PODS, NS) as lw:
            await lw.wait_synced()
            cpu0 = cpu_seconds(srv.pid)
            t0 = time.perf_counter()
            env = dict(os.environ, KUBECONFIG=str(srv.kubeconfig))
            apply = asyncio.create_task(
                asyncio.to_thread(
                    subprocess.run,
                    [KUBECTL, "apply", "-f", "-"],
                    input=manifest(replicas),
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
            )
            async with asyncio.timeout(600):
                async for ev in lw:
                    if ev.type not in ("ADDED", "MODIFIED"):
                        continue
                    name = ev.object["metadata"]["name"]
                    if name not in created:
                        created.add(name)
                        if len(created) == 1:
                            marks["first_pod"] = time.perf_counter() - t0
                        if len(created) == replicas:
                            marks["all_created"] = time.perf_counter() - t0
                    node = ev.object["spec"].get("nodeName")
                    if node and name not in bound:
                        bound.add(name)
                        per_node[node] = per_node.get(node, 0) + 1
                        if len(bound) == replicas:
                            marks["all_bound"] = time.perf_counter() - t0
                    if len(created) >= replicas and (len(bound) >= replicas or not HAVE_SCHEDULER):
                        break
            await apply
            cpu1 = cpu_seconds(srv.pid)
            elapsed = time.perf_counter() - t0
    return {
        **marks,
        "elapsed": elapsed,
        "created": len(created),
        "bound": len(bound),
        "server_cpu": cpu1 - cpu0,
        "nodes_used": len(per_node),
        "max_per_node": max(per_node.values(), default=0),
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--replicas", type=int, default=None, help="Deployment replicas (1000; --quick 200)")
    p.add_argument("--nodes", type=int, default=None, help="registered nodes (100; --quick 20)")
    a = p.parse_args()
    replicas = a.replicas or (200 if a.quick else 1000)
    nodes = a.nodes or (20 if a.quick else 100)
    controllers = "replicaset,deployment" + (",scheduler" if HAVE_SCHEDULER else "")
    with server_with(controllers, a.keep) as srv:
        r = asyncio.run(run(srv, replicas, nodes))
    rows: list[tuple[str, Any]] = [
        ("controllers (embedded)", controllers),
        ("first pod after apply", f"{r.get('first_pod', float('nan')):.2f} s"),
        (
            "all pods created",
            f"{r.get('all_created', float('nan')):.2f} s ({replicas / r['all_created']:.0f} pods/s)",
        ),
    ]
    if HAVE_SCHEDULER:
        rows += [
            (
                "all pods bound",
                f"{r.get('all_bound', float('nan')):.2f} s ({replicas / r['all_bound']:.0f} pods/s)",
            ),
            ("nodes used / max pods on one node", f"{r['nodes_used']} / {r['max_per_node']}"),
        ]
    rows += [
        (
            "server CPU (apiserver + controllers)",
            f"{r['server_cpu']:.2f} s ({r['server_cpu'] / r['elapsed']:.0%} of a core)",
        ),
        ("cores", os.cpu_count()),
    ]
    print_block(
        f"bench_deployment: kubectl apply of a Deployment with {replicas} replicas, {nodes} nodes", rows
    )
    print_summary(
        "deployment",
        {
            "replicas": replicas,
            "nodes": nodes,
            "scheduler": HAVE_SCHEDULER,
            "first_pod_s": round(r.get("first_pod", -1), 3),
            "all_created_s": round(r.get("all_created", -1), 3),
            "all_bound_s": round(r.get("all_bound", -1), 3) if HAVE_SCHEDULER else None,
            "server_cpu_s": round(r["server_cpu"], 2),
        },
    )


if __name__ == "__main__":
    main()
