"""API server memory: VmRSS idle after start, after N pods stored, and after full lists.

.venv/bin/python bench/bench_rss.py [--quick] [--count N]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import (
    NS,
    TABLE_ACCEPT,
    client_session,
    create_pods,
    ensure_namespace,
    expect_ok,
    mb,
    parser,
    print_block,
    print_summary,
    proc_status,
    rss_bytes,
    running_server,
)


def settle(pid: int, seconds: float = 1.0) -> int:
    """RSS after a short pause (let the server finish in-flight work and free buffers)."""
    time.sleep(seconds)
    return rss_bytes(pid)


async def get_all(s: Any, accept: str = "application/json") -> int:
    async with s.get(f"/api/v1/namespaces/{NS}/pods", headers={"Accept": accept}) as r:
        return len(await expect_ok(r, 200))


async def run(srv: Any, count: int, conns: int) -> dict[str, int]:
    pid = srv.pid
    out = {"idle": settle(pid, 2.0)}
    async with client_session(srv.kubeconfig, connections=50) as s:
        await ensure_namespace(s)
        await create_pods(s, count, 50)
    out["stored"] = settle(pid)  # the 50 create connections are closed by now
    async with client_session(srv.kubeconfig, connections=1) as s:
        out["list_bytes"] = await get_all(s)
        out["after_list"] = settle(pid)
        out["table_bytes"] = await get_all(s, TABLE_ACCEPT)
        out["after_table"] = settle(pid)
        for _ in range(10):
            await get_all(s)
        out["after_more_lists"] = settle(pid)
    # Lists spread over several keep-alive connections that stay open: each idle connection can
    # keep its last response alive on the server (aiohttp's per-connection handler holds it).
    async with client_session(srv.kubeconfig, connections=conns) as s:
        await asyncio.gather(*(get_all(s) for _ in range(conns)))
        out["conns_open"] = settle(pid)
    out["conns_closed"] = settle(pid)
    out["hwm"] = proc_status(pid, "VmHWM")
    return out


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--count", type=int, default=None, help="pods stored (10000; --quick 2000)")
    p.add_argument("--conns", type=int, default=10, help="keep-alive connections for the last step")
    a = p.parse_args()
    count = a.count or (2000 if a.quick else 10_000)
    with running_server(a.keep) as srv:
        r = asyncio.run(run(srv, count, a.conns))
    per_pod = (r["stored"] - r["idle"]) / count
    print_block(
        f"bench_rss: API server VmRSS (/proc/<pid>/status), {count} pods",
        [
            ("idle after start", mb(r["idle"])),
            (f"after {count} pods stored", f"{mb(r['stored'])}  (+{per_pod / 1000:.2f} kB/pod)"),
            (f"after a full JSON list ({mb(r['list_bytes'])})", mb(r["after_list"])),
            (f"after a full Table list ({mb(r['table_bytes'])})", mb(r["after_table"])),
            ("after 10 more JSON lists (same connection)", mb(r["after_more_lists"])),
            (
                f"{a.conns} concurrent lists, {a.conns} keep-alive conns still open",
                f"{mb(r['conns_open'])}  (+{mb((r['conns_open'] - r['after_more_lists']) / a.conns)} per idle conn)",
            ),
            ("after those connections closed", mb(r["conns_closed"])),
            ("peak (VmHWM)", mb(r["hwm"])),
        ],
    )
    print_summary(
        "rss",
        {
            "count": count,
            "idle_mb": round(r["idle"] / 1e6, 1),
            "stored_mb": round(r["stored"] / 1e6, 1),
            "after_list_mb": round(r["after_list"] / 1e6, 1),
            "after_table_mb": round(r["after_table"] / 1e6, 1),
            "after_12_lists_mb": round(r["after_more_lists"] / 1e6, 1),
            "conns_open_mb": round(r["conns_open"] / 1e6, 1),
            "conns_closed_mb": round(r["conns_closed"] / 1e6, 1),
            "peak_mb": round(r["hwm"] / 1e6, 1),
        },
    )


if __name__ == "__main__":
    main()
