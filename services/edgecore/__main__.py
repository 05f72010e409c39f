"""`python -m kubeedge.edgecore` / `edgecore --config FILE [--set key=value ...] [--log-level LEVEL]`.

The daemon's idle memory is a product requirement (<= 40 MB RSS), so start-up is shaped for it:
- joining (no certificate yet, a token configured) runs in a short-lived child (`--join-only`): the
  key and CSR need `cryptography`, ~10 MB that would otherwise stay resident for the daemon's life;
- the heavy imports happen under `lean_imports` (see there), then glibc gets fewer malloc arenas and
  gives back what the imports freed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Final

from .config import ConfigError, EdgeCoreConfig, load

DEFAULT_CONFIG = "/etc/kubeedge/config/edgecore.yaml"
JOIN_ONLY = "--join-only"
# glibc malloc arenas: one per thread by default (8 x cores); the store's and upstream queue's few
# worker threads allocate little, and each extra arena keeps its own free memory resident.
MALLOC_ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # mallopt parameter number, <malloc.h>
_IMPORT_ENV: Final = {
    # aiohttp builds two default client TLS contexts at import, each parsing the whole system CA
    # bundle (~0.8 MB apiece). edgecore passes its own context (the cluster CA) to every connection
    # and never uses them; without the bundle file OpenSSL still finds system CAs lazily through the
    # hashed certificate directory, so those contexts keep working should anything use them.
    "SSL_CERT_FILE": os.devnull,
    # frozenlist's C extension links libstdc++ (~0.9 MB resident) for aiohttp's signal lists, which
    # the pure-Python FrozenList serves equally well at the edge's rates.
    "FROZENLIST_NO_EXTENSIONS": "1",
}


@contextlib.contextmanager
def lean_imports() -> Iterator[None]:
    """Settings read by libraries at import time, set only while importing and restored after (so
    child processes and later TLS contexts see the caller's environment)."""
    saved = {k: os.environ.get(k) for k in _IMPORT_ENV}
    os.environ.update({k: v for k, v in _IMPORT_ENV.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def tune_malloc() -> None:
    """Fewer arenas, and return the pages the imports freed; a no-op outside glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
    p.add_argument(
        JOIN_ONLY, action="store_true", help="obtain the CA and node certificate with the token, then exit"
    )
    return p.parse_args(argv)


def has_credentials(config: EdgeCoreConfig) -> bool:
    return all(p.exists() for p in (config.ca_file, config.cert_file, config.key_file))


def join_in_child(argv: list[str]) -> int:
    """Run this command with --join-only and wait for it; its errors go to our stderr."""
    child = subprocess.Popen([sys.executable, "-m", "kubeedge.edgecore", *argv, JOIN_ONLY])
    try:
        return child.wait()
    finally:
        if child.poll() is None:  # we were interrupted: do not leave a half-done join behind
            child.terminate()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    with lean_imports():
        from kubeedge import systemd
        from kubeedge.pki.client import BootstrapError

        from .app import CredentialsError, ensure_credentials, run
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # The journal (with NODE=/PEER=/OBJECT= fields) under systemd, stderr otherwise.
    systemd.setup_logging("edgecore", args.log_level.upper())
    try:
        config = load(args.config, args.set)
    except ConfigError as e:
        print(f"edgecore: {e}", file=sys.stderr)
        return 2
    try:
        if args.join_only:
            asyncio.run(ensure_credentials(config))
            return 0
        if not has_credentials(config):
            rc = join_in_child(argv)
            if rc != 0:
                return rc
        tune_malloc()
        asyncio.run(run(config))
    except (CredentialsError, BootstrapError) as e:
        print(f"edgecore: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
