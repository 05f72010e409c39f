"""The `edgemesh` console script.

edgemesh --config FILE [--set key.path=value ...]     run the agent for this node
edgemesh corefile [--config FILE] [--set ...]         print a CoreDNS stanza for the cluster domain
edgemesh relay --config FILE [--set ...]              run a relay (modules.edgeRelay, tunnel certs)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .config import AgentConfig, ConfigError, load
from .dns.corefile import corefile_stanza

SUBCOMMANDS = ("corefile", "relay")


def _parser(prog: str, config_required: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--config", required=config_required, help="agent YAML (EdgeMeshAgent)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. commonConfig.nodeName=n1",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_agent(cfg: AgentConfig) -> None:
    from .agent import run

    await run(cfg, _stop_event())


async def _run_relay(cfg: AgentConfig) -> None:
    from prometheus_client import CollectorRegistry

    from .observe import MetricsServer, StatsCollector, relay_families
    from .tunnel import Identity, RelayServer

    stop = _stop_event()
    t, r = cfg.tunnel, cfg.relay
    relay = RelayServer(
        Identity(*cfg.tls_files()),
        r.listen_address,
        r.listen_port,
        keepalive_interval=t.keepalive_interval,
        keepalive_timeout=t.keepalive_timeout,
    )
    await relay.start()
    metrics: MetricsServer | None = None
    try:
        if cfg.common_config.metrics_port:
            reg = CollectorRegistry()
            reg.register(StatsCollector(lambda: relay_families(relay.stats())))

            async def health() -> dict[str, bool]:
                return {"relay": True}

            metrics = MetricsServer(
                cfg.common_config.metrics_address, cfg.common_config.metrics_port, reg, health, relay.stats
            )
            await metrics.start()
        print(f"edgemesh relay listening on {r.listen_address}:{relay.port}", flush=True)
        await stop.wait()
    finally:
        if metrics is not None:
            await metrics.stop()
        await relay.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args and args[0] in SUBCOMMANDS else ""
    a = _parser(f"edgemesh {cmd}".strip(), config_required=cmd != "corefile").parse_args(args)
    from kubeedge.systemd import setup_logging

    setup_logging("edgemesh", a.log_level)  # the journal under systemd, else stderr
    try:
        cfg = load(a.config, a.set)
    except ConfigError as e:
        print(f"edgemesh: {e}", file=sys.stderr)
        return 2
    if cmd == "corefile":
        host, port = cfg.dns_listen
        sys.stdout.write(corefile_stanza(cfg.dns.cluster_domain, host, port, cache_ttl=cfg.dns.ttl))
        return 0
    try:
        asyncio.run(_run_relay(cfg) if cmd == "relay" else _run_agent(cfg))
    except (OSError, ConnectionError) as e:
        print(f"edgemesh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
