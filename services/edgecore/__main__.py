"""`python -m kubeedge.edgecore` / `edgecore --config FILE [--set key=value ...] [--log-level LEVEL]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from kubeedge.pki.client import BootstrapError

from .app import CredentialsError, run
from .config import ConfigError, load

DEFAULT_CONFIG = "/etc/kubeedge/config/edgecore.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edgecore", description="KubeEdge edge agent")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"edgecore.yaml (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. modules.edged.hostnameOverride=edge-1 (repeatable)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load(args.config, args.set)
    except ConfigError as e:
        print(f"edgecore: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(config))
    except (CredentialsError, BootstrapError) as e:
        print(f"edgecore: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
