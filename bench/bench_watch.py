"""Watch fan-out: 100 watchers on one namespace's pods while N pods are created and then patched.

    .venv/bin/python bench/bench_watch.py [--quick] [--objects N] [--watchers W]
                                          [--watcher-procs P] [--writers K]

Process layout: the API server (subprocess), the writer (this process: K concurrent HTTPS clients
doing N creates, then N merge-patches), and P watcher processes holding W/P watch streams each.
Every write carries its send time (time.time()) in the annotation `bench/t`; each watcher parses
every newline-delimited event with orjson and records (chunk arrival time - bench/t).
Delivered events/s = events delivered to all watchers / (last delivery - first write sent).
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing as mp
import os
import queue
import time
from typing import Any

import orjson
from common import (
    MERGE_HEADERS,
    NS,
    client_session,
    cpu_seconds,
    ensure_namespace,
    expect_ok,
    ms,
    parser,
    percentile_sorted,
    pod_manifest,
    print_block,
    print_summary,
    running_server,
    verdict,
)

TARGET_RATE = 100_000.0  # events/s delivered
TARGET_P99 = 0.100  # seconds


# ---- watcher processes ----------------------------------------------------------------------


STAMP_KEY = b'"bench/t":"'


def watcher_proc(
    kubeconfig: str,
    rv: str,
    n: int,
    expected: int,
    ready: Any,
    stop: Any,
    results: Any,
    idx: int,
    full_decode: bool,
) -> None:
    try:
        results.put(asyncio.run(_watchers(kubeconfig, rv, n, expected, ready, stop, full_decode)))
    except BaseException as e:
        results.put({"error": f"watcher process {idx}: {e!r}"})
        raise


async def _watchers(
    kubeconfig: str, rv: str, n: int, expected: int, ready: Any, stop: Any, full_decode: bool
) -> dict[str, Any]:
    from pathlib import Path

    loads = orjson.loads
    now = time.time
    delays = array.array("d")
    per: list[dict[str, Any]] = []
    cpu0 = time.process_time()
    async with client_session(Path(kubeconfig), connections=n) as s:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "600"}
        url = f"/api/v1/namespaces/{NS}/pods"
        # Headers arrive after the server registered the watch: from then on nothing is missed.
        resps = await asyncio.gather(*(s.get(url, params=params) for _ in range(n)))
        for r in resps:
            if r.status != 200:
                raise RuntimeError(f"watch -> {r.status}: {(await r.read())[:300]!r}")
        ready.set()

        async def consume(resp: Any) -> None:
            st = {"count": 0, "errors": 0, "closed_early": False, "first": 0.0, "last": 0.0}
            per.append(st)
            buf = b""
            count = 0
            append = delays.append
            try:
                async for chunk in resp.content.iter_any():
                    t = now()
                    if buf:
                        chunk = buf + chunk
                    lines = chunk.split(b"\n")
                    buf = lines.pop()
                    if not lines:
                        continue
                    if not count:
                        st["first"] = t
                    for line in lines:
                        try:
                            if full_decode:
                                stamp = loads(line)["object"]["metadata"]["annotations"]["bench/t"]
                            else:
                                # Light client: find the stamp without decoding the whole object, so
                                # the watcher processes (on the same 2 cores) measure the server, not
                                # themselves. --full-decode parses every event like a real informer.
                                at = line.index(STAMP_KEY) + len(STAMP_KEY)
                                stamp = line[at : line.index(b'"', at)]
                            append(t - float(stamp))
                        except (KeyError, TypeError, ValueError):
                            st["errors"] += 1
                    count += len(lines)
                    st["last"] = t
                    if count >= expected:
                        break
            except Exception:
                pass
            finally:
                st["count"] = count
                st["closed_early"] = count < expected and not stop.is_set()
                resp.close()

        async def stopper(tasks: list[asyncio.Task[None]]) -> None:
            while not all(t.done() for t in tasks):
                if stop.is_set():
                    for t in tasks:
                        t.cancel()
                    return
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(consume(r)) for r in resps]
        await asyncio.gather(stopper(tasks), *tasks, return_exceptions=True)
    return {
        "watchers": per,
        "delays": delays.tobytes(),
        "cpu": time.process_time() - cpu0,
    }


# ---- writer ---------------------------------------------------------------------------------


async def write_all(s: Any, n: int, writers: int) -> dict[str, float]:
    url = f"/api/v1/namespaces/{NS}/pods"
    next_i = 0

    async def creator() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            body = orjson.dumps(pod_manifest(i, "w", stamp=time.time()))
            async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await expect_ok(r, 201)

    async def patcher() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            body = orjson.dumps(
                {"metadata": {"labels": {"phase": "updated"}, "annotations": {"bench/t": repr(time.time())}}}
            )
            async with s.patch(f"{url}/w-{i:06d}", data=body, headers=MERGE_HEADERS) as r:
                await expect_ok(r, 200)

    t0 = time.time()
    await asyncio.gather(*(creator() for _ in range(writers)))
    t1 = time.time()
    next_i = 0
    await asyncio.gather(*(patcher() for _ in range(writers)))
    t2 = time.time()
    return {"first_write": t0, "creates_done": t1, "patches_done": t2}


async def current_rv(s: Any) -> str:
    async with s.get(f"/api/v1/namespaces/{NS}/pods", params={"limit": "1"}) as r:
        doc = orjson.loads(await expect_ok(r, 200))
    return str(doc["metadata"]["resourceVersion"])


async def setup(kubeconfig: Any) -> str:
    async with client_session(kubeconfig, 4) as s:
        await ensure_namespace(s)
        return await current_rv(s)


async def writer_run(kubeconfig: Any, n: int, writers: int) -> dict[str, float]:
    async with client_session(kubeconfig, writers) as s:
        # Open the connections (TLS handshakes) before the clock starts.
        await asyncio.gather(*(current_rv(s) for _ in range(writers)))
        return await write_all(s, n, writers)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument(
        "--objects", type=int, default=None, help="pods created then patched (10000; --quick 1000)"
    )
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--watcher-procs", type=int, default=2)
    p.add_argument("--writers", type=int, default=8, help="concurrent writer connections")
    p.add_argument(
        "--full-decode", action="store_true", help="watchers decode every event fully (like an informer)"
    )
    a = p.parse_args()
    n = a.objects or (1000 if a.quick else 10_000)
    expected = 2 * n
    procs_n = max(1, min(a.watcher_procs, a.watchers))
    split = [a.watchers // procs_n + (1 if i < a.watchers % procs_n else 0) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    with running_server(a.keep) as srv:
        rv = asyncio.run(setup(srv.kubeconfig))
        ready = [ctx.Event() for _ in split]
        stop = ctx.Event()
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=watcher_proc,
                args=(str(srv.kubeconfig), rv, k, expected, ready[i], stop, results, i, a.full_decode),
                daemon=True,
            )
            for i, k in enumerate(split)
        ]
        for pr in procs:
            pr.start()
        for ev in ready:
            if not ev.wait(60):
                raise SystemExit("watchers did not connect within 60 s")
        cpu0 = cpu_seconds(srv.pid)
        wcpu0 = time.process_time()
        w = asyncio.run(writer_run(srv.kubeconfig, n, a.writers))
        writer_cpu = time.process_time() - wcpu0
        outs: list[dict[str, Any]] = []
        deadline = time.monotonic() + (60 if a.quick else 150)
        while len(outs) < len(procs):
            try:
                outs.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                if not stop.is_set():
                    print("(watchers still incomplete at the deadline; stopping them)")
                    stop.set()
                    deadline = time.monotonic() + 20
                    continue
                break
        server_cpu = cpu_seconds(srv.pid) - cpu0
        stop.set()
        for pr in procs:
            pr.join(10)
    errs = [o["error"] for o in outs if "error" in o]
    if errs:
        raise SystemExit("; ".join(errs))
    per = [st for o in outs for st in o["watchers"]]
    delivered = sum(st["count"] for st in per)
    last = max((st["last"] for st in per if st["count"]), default=w["patches_done"])
    span = last - w["first_write"]
    rate = delivered / span if span > 0 else 0.0
    delays = array.array("d")
    for o in outs:
        delays.frombytes(o["delays"])
    ds = sorted(delays)
    p50, p99, pmax = percentile_sorted(ds, 50), percentile_sorted(ds, 99), (ds[-1] if ds else float("nan"))
    closed = sum(1 for st in per if st["closed_early"])
    complete = sum(1 for st in per if st["count"] >= expected)
    errors = sum(st["errors"] for st in per)
    write_span = w["patches_done"] - w["first_write"]
    watcher_cpu = sum(o["cpu"] for o in outs)
    ok = rate >= TARGET_RATE and p99 <= TARGET_P99
    print_block(
        f"bench_watch: {a.watchers} watchers, {n} pods created then merge-patched ({expected} events each)",
        [
            (
                "process layout",
                f"server 1 proc; writer 1 proc ({a.writers} connections); watchers {procs_n} procs "
                f"({'/'.join(map(str, split))} streams, "
                f"{'full JSON decode' if a.full_decode else 'stamp extracted without decoding'}); "
                f"{os.cpu_count()} cores",
            ),
            ("events delivered", f"{delivered} of {expected * a.watchers} ({complete} watchers complete)"),
            (
                "delivered events/s",
                f"{rate:,.0f}  (target >= {TARGET_RATE:,.0f}: {verdict(rate >= TARGET_RATE)})",
            ),
            ("span first write -> last delivery", f"{span:.2f} s"),
            (
                "writes",
                f"{2 * n} in {write_span:.2f} s = {2 * n / write_span:.0f}/s (creates "
                f"{n / (w['creates_done'] - w['first_write']):.0f}/s, patches "
                f"{n / (w['patches_done'] - w['creates_done']):.0f}/s)",
            ),
            (
                "delay write->delivery p50 / p99 / max",
                f"{ms(p50)} / {ms(p99)} / {ms(pmax)}  (p99 target <= {ms(TARGET_P99)}: "
                f"{verdict(p99 <= TARGET_P99)})",
            ),
            ("watchers closed early by server", closed),
            ("events without bench/t (errors)", errors),
            (
                "CPU: server / watcher procs / writer",
                f"{server_cpu:.1f} s / {watcher_cpu:.1f} s / {writer_cpu:.1f} s over {span:.1f} s wall "
                f"({(server_cpu + watcher_cpu + writer_cpu) / span:.2f} cores busy)",
            ),
            (
                "CPU per delivered event: server / watchers",
                f"{server_cpu / max(1, delivered) * 1e6:.1f} us / {watcher_cpu / max(1, delivered) * 1e6:.1f} us",
            ),
        ],
    )
    print_summary(
        "watch",
        {
            "watchers": a.watchers,
            "objects": n,
            "writes": 2 * n,
            "watcher_procs": procs_n,
            "writers": a.writers,
            "delivered": delivered,
            "events_per_s": round(rate),
            "span_s": round(span, 3),
            "writes_per_s": round(2 * n / write_span, 1),
            "delay_p50_ms": round(p50 * 1000, 2),
            "delay_p99_ms": round(p99 * 1000, 2),
            "delay_max_ms": round(pmax * 1000, 2),
            "closed_early": closed,
            "server_cpu_s": round(server_cpu, 2),
            "watcher_cpu_s": round(watcher_cpu, 2),
            "target_met": ok,
        },
    )


if __name__ == "__main__":
    main()
