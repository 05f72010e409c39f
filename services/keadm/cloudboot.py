"""``keadm firstboot-cloud`` (run by kubeedge-init.service on the cloud image): write cloudcore's config.

Settings are optional, first found wins: the systemd credential ``kubeedge.cloud``, then
``kubeedge/cloud.yaml`` on the boot partition (/efi, /boot/efi, /boot). The document::

    advertiseAddress: [192.168.1.10, cloud.example]   # what edges dial; default: this host's addresses
    set:                                             # any cloudcore setting, as `keadm init --set`
      modules.cloudHub.nodeLimit: 2000

Without settings the cloud starts on its defaults (embedded API on 127.0.0.1:6443, cloudhub on all
addresses, the serving certificate naming every address the host has at each start). The config is
written in one step to /etc/kubeedge/config/cloudcore.yaml, whose existence is "initialised" for
cloudcore.service and this unit's condition. Wrong settings are reported in STATUS= and the journal
and looked for again every RECHECK_INTERVAL: cloudcore never starts on settings it was not given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge.systemd import Notifier, setup_logging

from . import cli
from .firstboot import (
    BOOT_DIRS,
    CONFIG_DIR,
    MAX_SETTINGS_BYTES,
    RECHECK_INTERVAL,
    SYSTEM_CREDENTIALS,
    SettingsError,
    write_atomic,
)

log = logging.getLogger(__name__)

CREDENTIAL: Final = "kubeedge.cloud"
CLOUD_FILE: Final = Path("kubeedge") / "cloud.yaml"
KEYS: Final = frozenset({"advertiseAddress", "set"})


@dataclass(frozen=True)
class CloudPaths:
    boot_dirs: Sequence[Path] = BOOT_DIRS
    credential_dirs: Sequence[Path] = (SYSTEM_CREDENTIALS,)
    config_dir: Path = CONFIG_DIR
    data_dir: Path = cli.CLOUD_DATA_DIR

    @property
    def cloudcore_config(self) -> Path:
        return self.config_dir / "cloudcore.yaml"

    def candidates(self) -> list[Path]:
        return [d / CREDENTIAL for d in self.credential_dirs] + [d / CLOUD_FILE for d in self.boot_dirs]


def read_settings(paths: CloudPaths) -> tuple[Path | None, str]:
    """(source, text) of the first settings document found, or (None, "") when there is none."""
    for path in paths.candidates():
        try:
            if path.stat().st_size > MAX_SETTINGS_BYTES:
                raise SettingsError(f"{path}: larger than {MAX_SETTINGS_BYTES} bytes; not a settings file")
            return path, path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    return None, ""


def _overrides(raw: Any, source: Path) -> list[str]:
    """``set`` as `--set` arguments: a mapping of dotted keys, or a list of "key=value" strings."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        out = []
        for key, value in raw.items():
            if not isinstance(key, str) or not key:
                raise SettingsError(f"{source}: 'set' keys must be dotted setting names")
            # YAML scalars back to text the override parser reads as YAML again (true, 10, "x").
            text = yaml.safe_dump(value, default_flow_style=True).strip()
            out.append(f"{key}={text.removesuffix('...').strip()}")
        return out
    if isinstance(raw, list) and all(isinstance(item, str) and "=" in item for item in raw):
        return list(raw)
    raise SettingsError(f"{source}: 'set' must map setting names to values (or list 'key=value' strings)")


def parse(text: str, source: Path) -> tuple[list[str], list[str]]:
    """(advertise addresses, overrides) of a cloud settings document."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{source}: not valid YAML{where}") from None
    if doc is None:
        return [], []
    if not isinstance(doc, dict):
        raise SettingsError(f"{source}: expected a mapping (keys: {', '.join(sorted(KEYS))})")
    unknown = sorted(str(k) for k in doc if k not in KEYS)
    if unknown:
        raise SettingsError(
            f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})"
        )
    raw = doc.get("advertiseAddress") or []
    advertise = [raw] if isinstance(raw, str) else raw
    if not isinstance(advertise, list) or not all(isinstance(a, str) and a for a in advertise):
        raise SettingsError(f"{source}: 'advertiseAddress' must be an address or a list of them")
    return advertise, _overrides(doc.get("set"), source)


def cloudcore_document(paths: CloudPaths, source: Path | None, text: str) -> dict[str, Any]:
    advertise, overrides = parse(text, source) if source is not None else ([], [])
    try:
        config = cli.cloudcore_config(paths.data_dir, advertise, "", overrides)
    except cli.UsageError as e:
        raise SettingsError(f"{source}: {e}") from None
    return config.to_document()


class CloudFirstBoot:
    def __init__(self, paths: CloudPaths, notifier: Notifier, *, recheck: float = RECHECK_INTERVAL) -> None:
        self.paths = paths
        self.notifier = notifier
        self.recheck = recheck
        self._last_problem = ""

    def report(self, problem: str) -> None:
        self.notifier.status(problem)
        if problem != self._last_problem:
            log.error("%s", problem)
            self._last_problem = problem

    async def run(self) -> str:
        """Until the config is written; returns what was done."""
        target = self.paths.cloudcore_config
        if target.exists():
            return f"already initialised ({target} exists)"
        while True:
            try:
                source, text = read_settings(self.paths)
                doc = cloudcore_document(self.paths, source, text)
            except SettingsError as e:
                self.report(f"waiting for usable cloud settings: {e}")
                await asyncio.sleep(self.recheck)
                continue
            self.paths.data_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(target, yaml.safe_dump(doc, sort_keys=False), 0o600)
            return f"wrote {target} ({'settings from ' + str(source) if source else 'defaults'})"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "firstboot-cloud",
        help="write cloudcore's config from the boot partition or credentials (kubeedge-init.service)",
    )
    p.add_argument(
        "--boot-dir", action="append", default=[], type=Path, help="where kubeedge/cloud.yaml may be"
    )
    p.add_argument(
        "--credentials-dir", action="append", default=[], type=Path, help="where kubeedge.cloud may be"
    )
    p.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help=f"cloudcore's config ({CONFIG_DIR})")
    p.add_argument(
        "--data-dir", type=Path, default=cli.CLOUD_DATA_DIR, help=f"cloudcore state ({cli.CLOUD_DATA_DIR})"
    )
    p.set_defaults(func=cmd_firstboot_cloud)


def credential_dirs(given: Sequence[Path]) -> tuple[Path, ...]:
    if given:
        return tuple(given)
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    return ((Path(env),) if env else ()) + (SYSTEM_CREDENTIALS,)


def cmd_firstboot_cloud(a: argparse.Namespace, notifier: Notifier | None = None) -> int:
    setup_logging("kubeedge-init", "INFO")
    paths = CloudPaths(
        boot_dirs=tuple(a.boot_dir) or BOOT_DIRS,
        credential_dirs=credential_dirs(a.credentials_dir),
        config_dir=a.config_dir,
        data_dir=a.data_dir,
    )
    sd = notifier or Notifier()
    try:
        done = asyncio.run(CloudFirstBoot(paths, sd).run())
    except KeyboardInterrupt:
        sd.stopping("interrupted before the cloud was initialised")
        return 130
    log.info("%s; cloudcore starts next", done)
    sd.ready(done)
    print(done, flush=True)
    return 0
