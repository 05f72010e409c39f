"""`python -m kubeedge.controllers --kubeconfig FILE`: run controllers apart from the API server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from kubeedge.kube import KubeClient, KubeConfig

from .manager import ControllerManager, known, resolve


async def _run(kubeconfig: str | None, names: list[str]) -> None:
    async with KubeClient(KubeConfig.from_file(kubeconfig)) as kc:
        mgr = ControllerManager(kc, names)
        await mgr.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await mgr.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubeedge-controllers", description="scheduler and controllers")
    p.add_argument("--kubeconfig", help="admin kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument(
        "--controllers",
        default="all",
        help=f"comma-separated controllers to run; 'all', '-name' to exclude (known: {', '.join(known())})",
    )
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    try:
        names = resolve(a.controllers.split(","))
    except ValueError as e:
        p.error(str(e))
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(a.kubeconfig, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
