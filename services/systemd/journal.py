"""Logging for the daemons: the journal with structured fields under systemd, stderr otherwise.

``extra={"node": ..., "peer": ..., "object": ...}`` on a log call becomes the journal fields NODE=,
PEER=, OBJECT= (``journalctl NODE=edge-1``); on stderr they are appended as ``[node=edge-1 ...]``.
Under systemd (``$JOURNAL_STREAM`` or ``$INVOCATION_ID`` set) records go to journald through
systemd-python's ``journal.send`` when it is installed, else through journald's native datagram
protocol on /run/systemd/journal/socket (large records in a sealed memfd, as sd-journal does).
A record journald does not take is written to stderr instead, never dropped silently.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

JOURNAL_SOCKET: Final = Path("/run/systemd/journal/socket")
# Record attributes (from extra=) that become journal fields.
STRUCTURED: Final = (("node", "NODE"), ("peer", "PEER"), ("object", "OBJECT"))
# journald answers in microseconds; a send that cannot finish in this long falls back to stderr
# rather than stalling the event loop that logged (and so tripping the watchdog).
SEND_TIMEOUT: Final = 1.0
STDERR_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s%(fields)s"
_MAX_FIELD_NAME: Final = 64
# syslog priorities, as journalctl -p understands them.
_PRIORITY: Final = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}
_DEBUG_PRIORITY: Final = 7

Fields = Mapping[str, str]


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if env is None else env
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


def priority(levelno: int) -> int:
    for level, prio in _PRIORITY.items():
        if levelno >= level:
            return prio
    return _DEBUG_PRIORITY


def field_name(raw: str) -> str:
    """A valid journal field name: upper-case letters, digits and '_', not starting with '_' or a digit
    (a leading '_' marks fields only journald itself may set)."""
    name = "".join(c if c.isalnum() and c.isascii() else "_" for c in raw.upper()).lstrip("_0123456789")
    return name[:_MAX_FIELD_NAME] or "FIELD"


def encode(fields: Fields) -> bytes:
    """journald's native format: ``KEY=value\\n``, or for values with a newline
    ``KEY\\n<length as little-endian u64><value>\\n``."""
    out = bytearray()
    for key, value in fields.items():
        name = field_name(key).encode()
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


def record_fields(record: logging.LogRecord, message: str, identifier: str) -> dict[str, str]:
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(priority(record.levelno)),
        "SYSLOG_IDENTIFIER": identifier,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName or "",
    }
    for attr, name in STRUCTURED:
        value = getattr(record, attr, None)
        if value is not None:
            fields[name] = str(value)
    return fields


class NativeSender:
    """journald's socket protocol, without libsystemd."""

    def __init__(self, path: Path | str = JOURNAL_SOCKET) -> None:
        self.path = str(path)
        self._sock: socket.socket | None = None

    def __call__(self, fields: Fields) -> None:
        data = encode(fields)
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT)
        try:
            self._sock.sendto(data, self.path)
        except OSError as e:
            # Too big for one datagram: pass it in a sealed memfd, which journald accepts instead.
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        assert self._sock is not None
        fd = os.memfd_create("journal-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _systemd_python_sender() -> Callable[[Fields], None] | None:
    try:
        from systemd import journal  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None

    def send(fields: Fields) -> None:
        rest = dict(fields)
        journal.send(rest.pop("MESSAGE"), **rest)

    return send


class JournalHandler(logging.Handler):
    def __init__(self, identifier: str, sender: Callable[[Fields], None] | None = None) -> None:
        super().__init__()
        self.identifier = identifier
        self.sender = sender or _systemd_python_sender() or NativeSender()
        self.fallback = logging.StreamHandler(sys.stderr)
        self.fallback.setFormatter(FieldsFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            self.sender(record_fields(record, message, self.identifier))
        except Exception:
            # journald unreachable or slow: the record still goes somewhere a person can read it.
            self.fallback.handle(record)

    def close(self) -> None:
        closer = getattr(self.sender, "close", None)
        if callable(closer):
            closer()
        super().close()


class FieldsFormatter(logging.Formatter):
    """The stderr format, with the structured fields appended so they are not lost off systemd."""

    def __init__(self) -> None:
        super().__init__(STDERR_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{attr}={getattr(record, attr)}" for attr, _ in STRUCTURED if getattr(record, attr, None)]
        record.fields = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def setup_logging(
    identifier: str,
    level: int | str = logging.INFO,
    *,
    env: Mapping[str, str] | None = None,
    socket_path: Path = JOURNAL_SOCKET,
) -> str:
    """Route the root logger to the journal (under systemd, when its socket exists) or stderr.
    Returns "journal" or "stderr"."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    handler: logging.Handler
    if under_systemd(env) and socket_path.exists():
        sender = NativeSender(socket_path) if socket_path != JOURNAL_SOCKET else None
        handler = JournalHandler(identifier, sender)
        # The journal records time, level and unit itself: MESSAGE is the text (and any traceback).
        handler.setFormatter(logging.Formatter("%(message)s"))
        where = "journal"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter())
        where = "stderr"
    root.addHandler(handler)
    return where
