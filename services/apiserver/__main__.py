"""`python -m kubeedge.apiserver` / `kubeedge-apiserver`: run the API server in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from .config import parse_args
from .server import ApiServer, serve


def _announce(server: ApiServer) -> None:
    kubeconfig = server.config.data_dir / "admin.kubeconfig"
    # The project's virtualenv carries a kubectl new enough for this server; prefer it in the hint.
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    kubectl = os.path.relpath(venv_kubectl) if venv_kubectl.exists() else "kubectl"
    print(f"kubeedge API server ready at {server.url}", flush=True)
    print(f"try: {kubectl} --kubeconfig {kubeconfig} get namespaces", flush=True)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config, ready=_announce))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
