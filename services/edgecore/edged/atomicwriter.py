"""The kubelet's atomic writer layout, so running containers see ConfigMap/Secret updates all at once.

A volume dir holds the files in a hidden timestamped dir, a `..data` symlink to it, and one user-visible
symlink per top-level entry (`key -> ..data/key`):

    <dir>/..2024_05_01_10_00_00.123456789/key
    <dir>/..data -> ..2024_05_01_10_00_00.123456789
    <dir>/key -> ..data/key

An update writes a complete new timestamped dir, then renames a fresh symlink over `..data` (rename(2) is
atomic), then fixes the user-visible links and removes the old dir. A reader resolving `key` therefore
sees the old set or the new set, never a mix or a half-written file. Synchronous: callers run it in a
thread. File contents are never logged (they may be secrets).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"
# Path limits the kubelet validates payload paths against (Linux PATH_MAX / NAME_MAX).
MAX_PATH_LEN = 4096
MAX_SEGMENT_LEN = 255
DIR_MODE = 0o755


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = 0o644


class PayloadError(ValueError):
    """A payload path is unusable (absolute, `..`, reserved `..` prefix, too long)."""


def validate_path(path: str) -> None:
    if not path:
        raise PayloadError("empty path")
    if len(path) > MAX_PATH_LEN:
        raise PayloadError(f"path {path[:40]!r}... is longer than {MAX_PATH_LEN} characters")
    if os.path.isabs(path):
        raise PayloadError(f"path {path!r} must be relative")
    parts = path.split("/")
    for part in parts:
        if len(part) > MAX_SEGMENT_LEN:
            raise PayloadError(f"path {path!r} has a segment longer than {MAX_SEGMENT_LEN} characters")
        if part == "..":
            raise PayloadError(f"path {path!r} must not contain '..'")
    if parts[0].startswith(".."):
        # `..`-prefixed names are the writer's own (timestamped dirs, ..data).
        raise PayloadError(f"path {path!r} must not start with '..'")


def _top(path: str) -> str:
    return path.split("/", 1)[0]


def _read_dir(root: Path) -> dict[str, FileProjection]:
    """The regular files under root (recursively) with their contents and permission bits."""
    out: dict[str, FileProjection] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath, name)
            st = full.lstat()
            out[str(full.relative_to(root))] = FileProjection(full.read_bytes(), st.st_mode & 0o7777)
    return out


class AtomicWriter:
    """Writes whole payloads (relative path -> content and mode) into one target dir atomically."""

    def __init__(self, target: Path, *, what: str = "") -> None:
        self.target = target
        self.what = what or str(target)

    def current_dir(self) -> Path | None:
        """The timestamped dir `..data` points to, if any."""
        try:
            name = os.readlink(self.target / DATA_DIR)
        except (FileNotFoundError, OSError):
            return None
        return self.target / name

    def read(self) -> dict[str, FileProjection]:
        """The payload as currently published (empty if nothing was written yet)."""
        current = self.current_dir()
        return _read_dir(current) if current is not None and current.is_dir() else {}

    def write(self, payload: Mapping[str, FileProjection]) -> bool:
        """Publish payload; False when it is already what readers see (nothing touched)."""
        for path in payload:
            validate_path(path)
        self.target.mkdir(parents=True, exist_ok=True)
        old_dir = self.current_dir()
        old = _read_dir(old_dir) if old_dir is not None and old_dir.is_dir() else None
        if old is not None and old == dict(payload) and self._visible_ok(payload):
            return False

        new_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=self.target))
        try:
            new_dir.chmod(DIR_MODE)
            for path, proj in payload.items():
                self._write_file(new_dir / path, proj)
            self._swap(new_dir.name)
        except BaseException:
            shutil.rmtree(new_dir, ignore_errors=True)
            raise
        self._link_visible(payload)
        stale = {_top(p) for p in old or {}} - {_top(p) for p in payload}
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                (self.target / name).unlink()
        self._remove_stale_dirs(keep=new_dir.name)
        log.debug("%s: published %d file(s)", self.what, len(payload))
        return True

    def _write_file(self, path: Path, proj: FileProjection) -> None:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(proj.data)
            while view:
                view = view[os.write(fd, view) :]
            # fchmod, not the open mode: the umask must not narrow what the pod asked for.
            os.fchmod(fd, proj.mode)
        finally:
            os.close(fd)

    def _swap(self, new_name: str) -> None:
        """Point `..data` at new_name in one rename; readers see the old dir until this instant."""
        tmp = self.target / DATA_DIR_TMP
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left over from a crash mid-swap
        os.symlink(new_name, tmp)
        os.rename(tmp, self.target / DATA_DIR)

    def _visible_ok(self, payload: Mapping[str, FileProjection]) -> bool:
        for name in {_top(p) for p in payload}:
            link = self.target / name
            if not link.is_symlink() or os.readlink(link) != f"{DATA_DIR}/{name}":
                return False
        return True

    def _link_visible(self, payload: Mapping[str, FileProjection]) -> None:
        for name in {_top(p) for p in payload}:
            link = self.target / name
            want = f"{DATA_DIR}/{name}"
            if link.is_symlink() and os.readlink(link) == want:
                continue
            if link.exists() or link.is_symlink():
                if link.is_dir() and not link.is_symlink():
                    raise PayloadError(f"{link} exists and is not ours to replace")
                link.unlink()
            os.symlink(want, link)

    def _remove_stale_dirs(self, keep: str) -> None:
        for entry in self.target.iterdir():
            if entry.name.startswith("..") and entry.name not in (keep, DATA_DIR) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
