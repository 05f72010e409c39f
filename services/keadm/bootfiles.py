"""What the first-boot commands share: where a device's settings are looked for (systemd credentials,
then the boot partition), how a settings document is read and checked, the one-step config write, and
reporting a problem in STATUS= and (once per problem) the journal."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge.systemd import Notifier

log = logging.getLogger(__name__)

BOOT_DIRS: Final = (Path("/efi"), Path("/boot/efi"), Path("/boot"))
SYSTEM_CREDENTIALS: Final = Path("/run/credentials/@system")
CONFIG_DIR: Final = Path("/etc/kubeedge/config")
# Settings that are missing or wrong are looked for again this often (a person is fixing them).
RECHECK_INTERVAL: Final = 15.0
# A settings file is a small hand-written document; anything bigger is not one.
MAX_SETTINGS_BYTES: Final = 64 * 1024


class SettingsError(Exception):
    """The settings are missing or unusable; the text (never containing a secret) says why."""


def credential_dirs(given: Sequence[Path] = ()) -> list[Path]:
    """``given``, else the unit's $CREDENTIALS_DIRECTORY, then the credentials PID 1 received."""
    if given:
        return list(given)
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    return ([Path(env)] if env else []) + [SYSTEM_CREDENTIALS]


def first_found(candidates: Iterable[Path]) -> tuple[Path, str] | None:
    """(path, text) of the first candidate that exists; None when none does."""
    for path in candidates:
        try:
            if path.stat().st_size > MAX_SETTINGS_BYTES:
                raise SettingsError(f"{path}: larger than {MAX_SETTINGS_BYTES} bytes; not a settings file")
            return path, path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    return None


def load_mapping(text: str, source: Path, keys: frozenset[str], expected: str) -> dict[str, Any]:
    """The document as a mapping with only ``keys``; an empty document is an empty mapping."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{source}: not valid YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingsError(f"{source}: expected a mapping with {expected}")
    unknown = sorted(str(k) for k in doc if k not in keys)
    if unknown:
        raise SettingsError(
            f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(keys))})"
        )
    return doc


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` in one step: a power cut leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # vfat and some others cannot fsync a directory
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class Reporter:
    """STATUS= for every report; the journal once per distinct problem (a retry loop must not flood it)."""

    def __init__(self, notifier: Notifier, logger: logging.Logger = log) -> None:
        self.notifier = notifier
        self.log = logger
        self._last = ""

    def __call__(self, problem: str) -> None:
        self.notifier.status(problem)
        if problem != self._last:
            self.log.error("%s", problem)
            self._last = problem


def announce_done(notifier: Notifier, logger: logging.Logger, done: str, then: str, **fields: str) -> None:
    """The end of a first-boot job: journal (with structured fields), READY=1 with the same words as
    STATUS, and stdout for a person who ran it by hand."""
    logger.info("%s; %s", done, then, extra=fields)
    notifier.ready(done)
    print(done, flush=True)


def add_location_args(p: Any, file: Path, credential: str, config_help: str) -> None:
    """--boot-dir, --credentials-dir and --config-dir, the same for every first-boot command."""
    p.add_argument("--boot-dir", action="append", default=[], type=Path, help=f"where {file} may be")
    p.add_argument(
        "--credentials-dir", action="append", default=[], type=Path, help=f"where {credential} may be"
    )
    p.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help=f"{config_help} ({CONFIG_DIR})")
