"""sd_notify: tell the service manager READY, STATUS, STOPPING, WATCHDOG, MAINPID.

systemd-python's ``systemd.daemon.notify`` is used when it is installed and the address is the one
systemd gave us; otherwise one AF_UNIX datagram per message to ``$NOTIFY_SOCKET`` (a path, or an
abstract address written ``@name``). Without ``$NOTIFY_SOCKET`` (not under systemd, or a unit type
that does not listen) every call is a cheap no-op returning False.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

log = logging.getLogger(__name__)

ENV_SOCKET: Final = "NOTIFY_SOCKET"
# STATUS= is shown on one line by `systemctl status`; longer text is cut (systemd itself keeps more,
# but a status line nobody can read on a console helps nobody).
MAX_STATUS_CHARS: Final = 400


def _load_native() -> Callable[[str], bool] | None:
    try:
        from systemd import daemon  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    send = daemon.notify

    def notify(state: str) -> bool:
        return bool(send(state))

    return notify


def socket_address(raw: str) -> str | bytes:
    """$NOTIFY_SOCKET as an address for sendto(): ``@name`` is the abstract socket ``\\0name``."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def one_line(text: str) -> str:
    """A STATUS= value: the protocol is one assignment per line, so newlines would start new ones."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_STATUS_CHARS else flat[: MAX_STATUS_CHARS - 1] + "…"


class Notifier:
    """One daemon's channel to systemd; ``Notifier()`` reads the environment once."""

    def __init__(self, address: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        from_env = address is None
        self.address = environ.get(ENV_SOCKET, "") if address is None else address
        # systemd-python reads $NOTIFY_SOCKET itself, so it only serves the address from the environment.
        self._native = _load_native() if from_env and self.address else None
        self._sock: socket.socket | None = None
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one message; True if systemd's socket took it."""
        if not self.address or not assignments:
            return False
        state = "\n".join(assignments)
        if self._native is not None:
            return self._native(state)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: this runs on the event loop; a full receive queue drops one
            # notification rather than stalling every task (the next STATUS/WATCHDOG follows soon).
            self._sock.sendto(state.encode(), socket.MSG_DONTWAIT, socket_address(self.address))
        except OSError as e:
            log.debug("sd_notify to %s failed: %s", self.address, e)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1"]
        if status:
            self.last_status = one_line(status)
            lines.append(f"STATUS={self.last_status}")
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """STATUS=text, sent only when it differs from the last one sent."""
        line = one_line(text)
        if line == self.last_status:
            return False
        self.last_status = line
        return self.send(f"STATUS={line}")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status:
            self.last_status = one_line(status)
            lines.append(f"STATUS={self.last_status}")
        return self.send(*lines)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def mainpid(self, pid: int) -> bool:
        return self.send(f"MAINPID={pid}")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
