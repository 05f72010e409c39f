"""Run a tunnel node or a relay on its own: `python -m edgemesh.tunnel CONFIG.json`.

For a standalone relay (a host with a public address and no agent), and for tests and benchmarks
that put nodes in network namespaces. A node may expose a local *dial port*: a client sends one
line `NODE IP PORT PROTO\\n`, reads `OK\\n` (then raw bytes to and from the target through the
tunnel) or `ERR reason\\n`; the line `STATS\\n` answers one JSON line of paths and counters.

Config keys: role ("node"|"relay"), node_name, cert, key, ca, listen ("host:port"), relays
(["host:port"]), peers ([{"name", "addresses": ["host:port"]}]), serves (CIDRs whose endpoints this
node serves), dial ("127.0.0.1:port"), keepalive_interval, keepalive_timeout, dial_timeout,
upgrade_interval, window, holepunch (default true), punch_timeout. A relay given a dial port
answers only `STATS\n` there. Prints `READY <port>` once listening."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from .identity import Identity
from .peers import Peer, parse_address
from .relay import RelayServer
from .splice import splice
from .tunnel import Tunnel, TunnelConfig

log = logging.getLogger("edgemesh.tunnel")

MAX_DIAL_LINE = 512


def _serves(cidrs: list[str]) -> Any:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def serves(ip: str, port: int, proto: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in nets)

    return serves


async def _stats_port(relay: RelayServer, host: str, port: int) -> asyncio.Server:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            if (await r.readuntil(b"\n")).strip() == b"STATS":
                w.write(json.dumps(relay.stats()).encode() + b"\n")
                await w.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            w.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_DIAL_LINE)


async def _dial_port(t: Tunnel, host: str, port: int) -> asyncio.Server:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            line = (await r.readuntil(b"\n"))[:MAX_DIAL_LINE].decode().split()
            if line == ["STATS"]:
                w.write(json.dumps({"paths": t.paths(), **t.stats()}).encode() + b"\n")
                await w.drain()
                return
            node, ip, p, proto = line
            try:
                tr, tw = await t.open(node, ip, int(p), proto)
            except (ConnectionError, TimeoutError) as e:
                w.write(f"ERR {e}\n".encode())
                await w.drain()
                return
            w.write(b"OK\n")
            await splice((r, w), (tr, tw))
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
            with contextlib.suppress(ConnectionError):
                w.write(f"ERR {e}\n".encode())
        finally:
            w.close()

    return await asyncio.start_server(handle, host, port, limit=1 << 20)


async def run(cfg: dict[str, Any]) -> None:
    ident = Identity(Path(cfg["cert"]), Path(cfg["key"]), Path(cfg["ca"]))
    host, port = parse_address(cfg.get("listen", "0.0.0.0:20006"))
    timing: dict[str, Any] = {
        k: float(cfg[k]) for k in ("keepalive_interval", "keepalive_timeout") if k in cfg
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if cfg.get("role") == "relay":
        relay = RelayServer(ident, host, port, **timing)
        await relay.start()
        stats = await _stats_port(relay, *parse_address(cfg["dial"])) if cfg.get("dial") else None
        print(f"READY {relay.port}", flush=True)
        await stop.wait()
        if stats is not None:
            stats.close()
        await relay.stop()
        return
    more: dict[str, Any] = {
        k: float(cfg[k])
        for k in ("dial_timeout", "upgrade_interval", "open_timeout", "punch_timeout")
        if k in cfg
    }
    t = Tunnel(
        TunnelConfig(
            node_name=cfg["node_name"],
            identity=ident,
            listen_host=host,
            listen_port=port,
            relays=tuple(parse_address(a) for a in cfg.get("relays", [])),
            window=int(cfg.get("window", 1024 * 1024)),
            holepunch=bool(cfg.get("holepunch", True)),
            **timing,
            **more,
        ),
        serves=_serves(cfg.get("serves", [])),
    )
    t.set_peers(
        [
            Peer(p["name"], tuple(parse_address(a) for a in p.get("addresses", [])))
            for p in cfg.get("peers", [])
        ]
    )
    await t.start()
    dial = None
    if cfg.get("dial"):
        dial = await _dial_port(t, *parse_address(cfg["dial"]))
    print(f"READY {t.port}", flush=True)
    await stop.wait()
    if dial is not None:
        dial.close()
    await t.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m edgemesh.tunnel CONFIG.json")
    asyncio.run(run(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
