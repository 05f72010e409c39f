"""A real sd_notify socket for the first-boot commands' STATUS= reports."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from kubeedge.systemd import Notifier


class Statuses:
    """Every datagram the notifier sent, read without blocking."""

    def __init__(self, rx: socket.socket) -> None:
        self.rx = rx
        self.seen: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.rx.recv(4096).decode())
            except BlockingIOError:
                return self.seen

    def having(self, text: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(text in m for m in self.drain())

        return check


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Notifier]]:
    path = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.setblocking(False)
    try:
        yield rx, Notifier(str(path))
    finally:
        rx.close()
