"""Run the service proxy alone from a static spec file (tests, benchmarks, debugging without an API).

  python -m edgemesh.proxy --node NAME --spec spec.json [--status status.json] [--backend iptables]

spec.json: {"version": N, "services": [Service objects], "slices": [EndpointSlice objects]}.
SIGHUP reloads it; SIGUSR1 refreshes the kernel counters into the status file; SIGTERM/SIGINT stop
and remove our rules. The status file (rewritten atomically after each sync) says which spec version
the kernel rules reflect, the userspace ports and the metrics. Endpoints needing the tunnel are dialled
directly (routing decides), since there is no tunnel here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from edgemesh.model import ServiceTable
from edgemesh.proxy.plan import Plan
from edgemesh.proxy.proxier import Proxy, ProxyConfig
from edgemesh.proxy.userspace import DirectDialer


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.table = ServiceTable()
        self.proxy = Proxy(
            self.table,
            ProxyConfig(
                node_name=args.node,
                backend=args.backend,
                iptables_variant=args.iptables_variant,
                userspace_tcp_port=args.tcp_port,
                min_sync_interval_s=args.min_sync_interval,
            ),
            tunnel=DirectDialer(),
        )
        self.loads: list[tuple[int, int]] = []  # (table generation after load, spec version)
        self.applied_version = -1

    def load(self) -> None:
        spec: dict[str, Any] = json.loads(Path(self.args.spec).read_text())
        self.table.hold()
        try:
            self.table.clear()
            for svc in spec.get("services", []):
                self.table.upsert_service(svc)
            for sl in spec.get("slices", []):
                md = sl.get("metadata") or {}
                self.table.upsert_slice(md.get("namespace", "default"), md["name"], sl)
        finally:
            self.table.release(everything=True)
        self.loads.append((self.table.generation, int(spec.get("version", 0))))

    def synced(self, plan: Plan) -> None:
        for gen, version in self.loads:
            if gen <= plan.generation:
                self.applied_version = version
        self.write_status()

    def write_status(self) -> None:
        if not self.args.status:
            return
        p = self.proxy
        status = {
            "pid": os.getpid(),
            "spec_version": self.applied_version,
            "backend": p.backend.name if p.backend else "",
            "tcp_port": p.userspace.tcp_port,
            "udp_ports": {f"{ip}:{port}": local for (ip, port, _), local in p.udp_ports.items()},
            "paths": p.paths(),
            "metrics": p.metrics.snapshot(),
        }
        tmp = Path(self.args.status + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(self.args.status)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.load)
        counters: set[asyncio.Task[None]] = set()

        def refresh() -> None:
            async def go() -> None:
                await self.proxy.refresh_counters()
                self.write_status()

            t = asyncio.ensure_future(go())
            counters.add(t)
            t.add_done_callback(counters.discard)

        loop.add_signal_handler(signal.SIGUSR1, refresh)
        self.load()
        self.proxy.on_sync(self.synced)
        await self.proxy.start()
        await stop.wait()
        await self.proxy.stop(cleanup=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m edgemesh.proxy")
    ap.add_argument("--node", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--status", default="")
    ap.add_argument("--backend", default="auto", choices=["auto", "nftables", "iptables"])
    ap.add_argument("--iptables-variant", default="", choices=["", "legacy", "nft"])
    ap.add_argument("--tcp-port", type=int, default=0)
    ap.add_argument("--min-sync-interval", type=float, default=0.05)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(Runner(args).run())


if __name__ == "__main__":
    main()
