"""`python -m kubeedge.cloudcore` / `cloudcore`: run the cloud side in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from kubeedge import systemd

from .app import CloudCore, run
from .config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloudcore", description="KubeEdge cloud core: cloudhub, edgecontroller, API"
    )
    p.add_argument("--config", type=Path, help="cloudcore.yaml (KubeEdge's shape); defaults apply without it")
    p.add_argument("--data-dir", type=Path, help="state directory (overrides dataDir)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a setting, e.g. modules.cloudHub.websocket.port=10001 (repeatable)",
    )
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    return p


def _announce(core: CloudCore) -> None:
    print("cloudcore ready", flush=True)
    for line in core.describe():
        print("  " + line, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    overrides = list(a.set)
    if a.log_level:
        overrides.append(f"logLevel={a.log_level}")
    try:
        config = load_config(a.config, overrides, data_dir=a.data_dir)
    except ConfigError as e:
        print(f"cloudcore: configuration error: {e}", file=sys.stderr)
        return 2
    # The journal (with NODE=/PEER=/OBJECT= fields) under systemd, stderr otherwise.
    systemd.setup_logging("cloudcore", config.log_level.upper())
    try:
        asyncio.run(run(config, ready=_announce))
    except KeyboardInterrupt:
        pass
    except OSError as e:  # e.g. a port in use: say which, without a traceback
        print(f"cloudcore: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
