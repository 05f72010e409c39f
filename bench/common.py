"""Shared pieces of the benchmarks: server start, client TLS from the admin kubeconfig, pods, stats.

Every benchmark runs the real API server as a subprocess (tests.apiserver_proc.ApiServerProc) on a
fresh data dir and drives it over HTTPS from a separate process, the way a client would.

Profiling the server: set BENCH_PROFILE=/path/to/out.prof and the server runs under cProfile
(event-loop thread only); the profile is written when the benchmark stops the server.
Print it with `.venv/bin/python -m pstats /path/to/out.prof` (then `sort tottime`, `stats 30`).
Or set BENCH_PYSPY=/path/to/out.txt (needs `pip install py-spy` into the venv) to sample the
server with py-spy for the whole run (all threads, collapsed stacks; BENCH_PYSPY_ARGS adds flags,
e.g. "--idle" or "--native").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

from tests.apiserver_proc import ApiServerProc  # noqa: E402

NS = "bench"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"


# ---- command line / output ------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small run for smoke testing (under ~30 s)")
    p.add_argument("--keep", action="store_true", help="keep the server data dir afterwards")
    return p


def print_block(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows) if rows else 0
    print(f"== {title}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


def print_summary(name: str, figures: dict[str, Any]) -> None:
    """The machine-readable last line: one JSON object."""
    print(json.dumps({"bench": name, **figures}, sort_keys=False), flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


# ---- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted or sorted values; nan when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def percentile_sorted(s: Sequence[float], p: float) -> float:
    if not s:
        return math.nan
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


# ---- server ---------------------------------------------------------------------------------


class BenchServer(ApiServerProc):
    """ApiServerProc, optionally under cProfile (BENCH_PROFILE=out.prof)."""

    def start(self, timeout: float = 60.0) -> BenchServer:
        prof = os.environ.get("BENCH_PROFILE")
        if prof:
            self.python_args = ["-m", "cProfile", "-o", str(Path(prof).resolve())]
        super().start(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@contextlib.contextmanager
def running_server(keep: bool = False) -> Iterator[BenchServer]:
    data = Path(tempfile.mkdtemp(prefix="kubeedge-bench-"))
    srv = BenchServer(data / "apiserver")
    spy: subprocess.Popen[bytes] | None = None
    try:
        srv.start()
        out = os.environ.get("BENCH_PYSPY")
        if out:
            exe = Path(sys.executable).parent / "py-spy"
            extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
            cmd = [str(exe), "record", "-p", str(srv.pid), "-r", "200", "--format", "raw", "-o", out, *extra]
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        yield srv
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        srv.stop()
        if keep:
            print(f"(server data kept in {data})")
        else:
            shutil.rmtree(data, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ---- client ---------------------------------------------------------------------------------


class ClientCreds:
    """The admin kubeconfig's server URL and TLS material, written to a private temp dir."""

    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.server: str = cluster["server"]
        self.dir = Path(tempfile.mkdtemp(prefix="kubeedge-bench-tls-"))
        os.chmod(self.dir, 0o700)
        self.ca = self._write("ca.crt", cluster["certificate-authority-data"])
        self.cert = self._write("client.crt", user["client-certificate-data"])
        self.key = self._write("client.key", user["client-key-data"])

    def _write(self, name: str, b64: str) -> Path:
        p = self.dir / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(b64))
        return p

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def ssl_context_from_kubeconfig(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    creds = ClientCreds(kubeconfig)
    try:
        return creds.server, creds.ssl_context()
    finally:
        creds.cleanup()  # the context holds the material in memory; the files are not needed


@contextlib.asynccontextmanager
async def client_session(kubeconfig: Path, connections: int = 64) -> AsyncIterator[aiohttp.ClientSession]:
    """A keep-alive session to the server with the admin client certificate."""
    base, ctx = ssl_context_from_kubeconfig(kubeconfig)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=connections, limit_per_host=connections, keepalive_timeout=300)
    async with aiohttp.ClientSession(
        base_url=base,
        connector=conn,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        json_serialize=lambda o: orjson.dumps(o).decode(),
        skip_auto_headers=("User-Agent",),
    ) as s:
        yield s


async def expect_ok(resp: aiohttp.ClientResponse, *codes: int) -> bytes:
    body = await resp.read()
    if resp.status not in (codes or (200, 201)):
        raise RuntimeError(f"{resp.method} {resp.url} -> {resp.status}: {body[:500]!r}")
    return body


async def ensure_namespace(s: aiohttp.ClientSession, name: str = NS) -> None:
    body = orjson.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    async with s.post("/api/v1/namespaces", data=body, headers=JSON_HEADERS) as r:
        await expect_ok(r, 201, 409)


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MERGE_HEADERS = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}


# ---- workload -------------------------------------------------------------------------------


def pod_manifest(i: int, prefix: str = "pod", stamp: float | None = None) -> dict[str, Any]:
    """A realistic small pod: one container with a port, env, resources, and a few labels."""
    md: dict[str, Any] = {
        "name": f"{prefix}-{i:06d}",
        "labels": {"app": f"web-{i % 10}", "tier": "frontend" if i % 2 else "backend", "bench": "yes"},
    }
    if stamp is not None:
        md["annotations"] = {"bench/t": repr(stamp)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                    "env": [
                        {"name": "MODE", "value": "bench"},
                        {"name": "INDEX", "value": str(i)},
                    ],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
            "nodeName": f"node-{i % 20}",
        },
    }


async def create_pods(
    s: aiohttp.ClientSession,
    count: int,
    concurrency: int = 50,
    prefix: str = "pod",
    ns: str = NS,
    latencies: list[float] | None = None,
) -> float:
    """Create `count` pods with `concurrency` concurrent clients; returns elapsed wall seconds."""
    bodies = [orjson.dumps(pod_manifest(i, prefix)) for i in range(count)]
    url = f"/api/v1/namespaces/{ns}/pods"
    next_i = 0
    pc = time.perf_counter

    async def worker() -> None:
        nonlocal next_i
        while next_i < count:
            i = next_i
            next_i += 1
            t0 = pc()
            async with s.post(url, data=bodies[i], headers=JSON_HEADERS) as r:
                await expect_ok(r, 201)
            if latencies is not None:
                latencies.append(pc() - t0)

    t0 = pc()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pc() - t0
