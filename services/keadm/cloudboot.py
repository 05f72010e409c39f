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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge.runtime.overrides import Override
from kubeedge.systemd import Notifier, setup_logging

from . import cli
from .bootfiles import (
    BOOT_DIRS,
    CONFIG_DIR,
    RECHECK_INTERVAL,
    Reporter,
    SettingsError,
    add_location_args,
    announce_done,
    credential_dirs,
    first_found,
    load_mapping,
    write_atomic,
)

log = logging.getLogger(__name__)

CREDENTIAL: Final = "kubeedge.cloud"
CLOUD_FILE: Final = Path("kubeedge") / "cloud.yaml"
KEYS: Final = frozenset({"advertiseAddress", "set"})


@dataclass(frozen=True)
class CloudPaths:
    boot_dirs: Sequence[Path] = BOOT_DIRS
    credential_dirs: Sequence[Path] = ()  # default: $CREDENTIALS_DIRECTORY, then the system's
    config_dir: Path = CONFIG_DIR
    data_dir: Path = cli.CLOUD_DATA_DIR

    @property
    def cloudcore_config(self) -> Path:
        return self.config_dir / "cloudcore.yaml"

    def candidates(self) -> list[Path]:
        creds = [d / CREDENTIAL for d in credential_dirs(self.credential_dirs)]
        return creds + [d / CLOUD_FILE for d in self.boot_dirs]


def read_settings(paths: CloudPaths) -> tuple[Path | None, str]:
    """(source, text) of the first settings document found, or (None, "") when there is none."""
    return first_found(paths.candidates()) or (None, "")


def _overrides(raw: Any, source: Path) -> list[Override]:
    """``set`` as overrides: a mapping of dotted keys to values, or a list of "key=value" strings."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        if not all(isinstance(key, str) and key for key in raw):
            raise SettingsError(f"{source}: 'set' keys must be dotted setting names")
        return list(raw.items())
    if isinstance(raw, list) and all(isinstance(item, str) and "=" in item for item in raw):
        return list(raw)
    raise SettingsError(f"{source}: 'set' must map setting names to values (or list 'key=value' strings)")


def parse(text: str, source: Path) -> tuple[list[str], list[Override]]:
    """(advertise addresses, overrides) of a cloud settings document."""
    doc = load_mapping(text, source, KEYS, "'advertiseAddress' and/or 'set'")
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
        self.report = Reporter(notifier, log)

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
    add_location_args(p, CLOUD_FILE, CREDENTIAL, "cloudcore's config")
    p.add_argument(
        "--data-dir", type=Path, default=cli.CLOUD_DATA_DIR, help=f"cloudcore state ({cli.CLOUD_DATA_DIR})"
    )
    p.set_defaults(func=cmd_firstboot_cloud)


def cmd_firstboot_cloud(a: argparse.Namespace, notifier: Notifier | None = None) -> int:
    setup_logging("kubeedge-init", "INFO")
    paths = CloudPaths(
        boot_dirs=tuple(a.boot_dir) or BOOT_DIRS,
        credential_dirs=tuple(a.credentials_dir),
        config_dir=a.config_dir,
        data_dir=a.data_dir,
    )
    sd = notifier or Notifier()
    try:
        done = asyncio.run(CloudFirstBoot(paths, sd).run())
    except KeyboardInterrupt:
        sd.stopping("interrupted before the cloud was initialised")
        return 130
    announce_done(sd, log, done, "cloudcore starts next")
    return 0
