"""List latency with N pods stored: JSON, Table, label selector, and pages of 500.

    .venv/bin/python bench/bench_list.py [--quick] [--count N] [--reps R]

Times are client-side wall time per request (send to last body byte read, body not parsed), over
several repetitions on a keep-alive connection; "server CPU/req" is the server process's CPU time
over the repetitions divided by their number.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import orjson
from common import (
    NS,
    TABLE_ACCEPT,
    client_session,
    cpu_seconds,
    create_pods,
    ensure_namespace,
    mb,
    ms,
    parser,
    print_block,
    print_summary,
    running_server,
    verdict,
)

TARGET = 0.250  # seconds, list of all pods


async def timed_get(s, url: str, params: dict[str, str], accept: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    async with s.get(url, params=params, headers={"Accept": accept}) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {url} {params} -> {r.status}: {body[:300]!r}")
    return time.perf_counter() - t0, body


async def measure(
    s, srv, reps: int, params: dict[str, str], accept: str = "application/json"
) -> dict[str, Any]:
    url = f"/api/v1/namespaces/{NS}/pods"
    await timed_get(s, url, params, accept)  # warm-up
    times = []
    cpu0 = cpu_seconds(srv.pid)
    body = b""
    for _ in range(reps):
        dt, body = await timed_get(s, url, params, accept)
        times.append(dt)
    cpu = (cpu_seconds(srv.pid) - cpu0) / reps
    doc = orjson.loads(body)
    n = len(doc.get("items") or doc.get("rows") or [])
    return {
        "median": statistics.median(times),
        "best": min(times),
        "size": len(body),
        "items": n,
        "server_cpu": cpu,
    }


async def paginate(s, srv, reps: int, limit: int) -> dict[str, Any]:
    url = f"/api/v1/namespaces/{NS}/pods"
    walks, pages_t = [], []
    items = pages = 0
    cpu0 = cpu_seconds(srv.pid)
    for _ in range(reps):
        t0 = time.perf_counter()
        cont = ""
        items = pages = 0
        while True:
            params = {"limit": str(limit)}
            if cont:
                params["continue"] = cont
            dt, body = await timed_get(s, url, params, "application/json")
            pages_t.append(dt)
            doc = orjson.loads(body)
            items += len(doc["items"])
            pages += 1
            cont = doc["metadata"].get("continue", "")
            if not cont:
                break
        walks.append(time.perf_counter() - t0)
    cpu = (cpu_seconds(srv.pid) - cpu0) / (reps * pages)
    return {
        "walk_median": statistics.median(walks),
        "walk_best": min(walks),
        "page_median": statistics.median(pages_t),
        "page_best": min(pages_t),
        "pages": pages,
        "items": items,
        "server_cpu": cpu,
    }


async def run(srv, count: int, reps: int) -> dict[str, Any]:
    async with client_session(srv.kubeconfig, connections=50) as s:
        await ensure_namespace(s)
        t_fill = await create_pods(s, count, 50)
        out: dict[str, Any] = {"fill_s": t_fill}
        out["json"] = await measure(s, srv, reps, {})
        out["table"] = await measure(s, srv, reps, {}, TABLE_ACCEPT)
        out["label"] = await measure(s, srv, reps, {"labelSelector": "app=web-3"})
        out["label_set"] = await measure(s, srv, reps, {"labelSelector": "tier in (frontend),bench=yes"})
        out["pages"] = await paginate(s, srv, max(2, reps // 3), 500)
    return out


def row(r: dict[str, Any]) -> str:
    return (
        f"median {ms(r['median'])}, best {ms(r['best'])}; server CPU/req {ms(r['server_cpu'])}; "
        f"{r['items']} items, {mb(r['size'])}"
    )


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--count", type=int, default=None, help="pods stored (10000; --quick 2000)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per list (10; --quick 3)")
    a = p.parse_args()
    count = a.count or (2000 if a.quick else 10_000)
    reps = a.reps or (3 if a.quick else 10)
    with running_server(a.keep) as srv:
        r = asyncio.run(run(srv, count, reps))
    pg = r["pages"]
    ok = r["json"]["median"] <= TARGET
    print_block(
        f"bench_list: {count} pods stored (filled in {r['fill_s']:.1f} s), {reps} reps each, client wall time",
        [
            ("list all, JSON", row(r["json"]) + f"  (target <= {ms(TARGET)}: {verdict(ok)})"),
            (
                "list all, Table",
                row(r["table"]) + f"  (target <= {ms(TARGET)}: {verdict(r['table']['median'] <= TARGET)})",
            ),
            ("labelSelector app=web-3", row(r["label"])),
            ("labelSelector tier in (frontend),bench=yes", row(r["label_set"])),
            (
                "paginated, limit=500",
                f"page median {ms(pg['page_median'])}, best {ms(pg['page_best'])}; server CPU/page "
                f"{ms(pg['server_cpu'])}; full walk of {pg['pages']} pages ({pg['items']} items) "
                f"median {ms(pg['walk_median'])}, best {ms(pg['walk_best'])}",
            ),
        ],
    )
    print_summary(
        "list",
        {
            "count": count,
            "json_median_ms": round(r["json"]["median"] * 1000, 1),
            "json_best_ms": round(r["json"]["best"] * 1000, 1),
            "json_bytes": r["json"]["size"],
            "table_median_ms": round(r["table"]["median"] * 1000, 1),
            "table_best_ms": round(r["table"]["best"] * 1000, 1),
            "table_bytes": r["table"]["size"],
            "label_median_ms": round(r["label"]["median"] * 1000, 1),
            "label_set_median_ms": round(r["label_set"]["median"] * 1000, 1),
            "page500_median_ms": round(pg["page_median"] * 1000, 1),
            "page500_walk_median_ms": round(pg["walk_median"] * 1000, 1),
            "target_met": ok,
            "table_target_met": r["table"]["median"] <= TARGET,
        },
    )


if __name__ == "__main__":
    main()
