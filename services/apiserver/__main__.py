"""`python -m kubeedge.apiserver` / `kubeedge-apiserver`: run the API server in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from .config import parse_args
from .server import ApiServer, Companion, serve


def _announce(server: ApiServer) -> None:
    kubeconfig = server.config.data_dir / "admin.kubeconfig"
    # The project's virtualenv carries a kubectl new enough for this server; prefer it in the hint.
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    kubectl = os.path.relpath(venv_kubectl) if venv_kubectl.exists() else "kubectl"
    print(f"kubeedge API server ready at {server.url}", flush=True)
    print(f"try: {kubectl} --kubeconfig {kubeconfig} get namespaces", flush=True)


@contextlib.asynccontextmanager
async def _embedded_controllers(server: ApiServer) -> AsyncIterator[object]:
    """Embedded mode: the controllers run in this process but talk to the API like any client."""
    from kubeedge.controllers.manager import ControllerManager
    from kubeedge.kube import KubeClient, KubeConfig

    async with KubeClient(KubeConfig.from_file(server.config.data_dir / "admin.kubeconfig")) as kc:
        mgr = ControllerManager(kc, server.config.controllers.split(","))
        await mgr.start()
        try:
            yield mgr
        finally:
            await mgr.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        companions: list[Companion] = [] if config.controllers == "none" else [_embedded_controllers]
        asyncio.run(serve(config, ready=_announce, companions=companions))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
