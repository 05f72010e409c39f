"""sd_notify over real AF_UNIX datagram sockets (path and abstract), as systemd receives it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeedge.systemd import notify
from kubeedge.systemd.notify import MAX_STATUS_CHARS, Notifier, socket_address


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    try:
        yield s, str(path)
    finally:
        s.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    name = f"kubeedge-test-notify-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        yield s, "@" + name
    finally:
        s.close()


def messages(s: socket.socket) -> list[str]:
    """Everything queued on the receiver now (the sender is synchronous: no waiting needed)."""
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(65536).decode())
    except BlockingIOError:
        pass
    finally:
        s.settimeout(5)
    return out


def test_ready_status_stopping_watchdog_over_a_path_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    n = Notifier(env={"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("serving 3 pods")
    assert n.watchdog()
    assert n.status("offline since 12:01")
    assert n.stopping("stopping")
    assert n.mainpid(4242)
    assert messages(sock) == [
        "READY=1\nSTATUS=serving 3 pods",
        "WATCHDOG=1",
        "STATUS=offline since 12:01",
        "STOPPING=1\nSTATUS=stopping",
        "MAINPID=4242",
    ]
    n.close()


def test_abstract_socket(abstract_receiver: tuple[socket.socket, str]) -> None:
    sock, address = abstract_receiver
    assert socket_address(address) == b"\0" + address[1:].encode()
    n = Notifier(address)
    assert n.ready()
    assert sock.recv(1024) == b"READY=1"


def test_status_is_one_line_sent_only_on_change(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    n = Notifier(address)
    assert n.status("line one\nSTOPPING=1")  # a newline must not smuggle in another assignment
    assert not n.status("line one STOPPING=1")  # unchanged: not sent again
    assert n.status("x" * (MAX_STATUS_CHARS + 50))
    got = messages(sock)
    assert got[0] == "STATUS=line one STOPPING=1"
    assert len(got) == 2 and len(got[1]) == len("STATUS=") + MAX_STATUS_CHARS


def test_no_socket_is_a_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.stopping()


def test_gone_receiver_does_not_raise(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.enabled and not n.ready()


def test_systemd_python_is_used_for_the_environment_socket(
    monkeypatch: pytest.MonkeyPatch, receiver: tuple[socket.socket, str]
) -> None:
    sent: list[str] = []

    def native(state: str) -> bool:
        sent.append(state)
        return True

    monkeypatch.setattr(notify, "_load_native", lambda: native)
    sock, address = receiver
    Notifier(env={"NOTIFY_SOCKET": address}).ready("via libsystemd")
    assert sent == ["READY=1\nSTATUS=via libsystemd"]
    Notifier(address).ready("explicit address: our own socket")
    assert messages(sock) == ["READY=1\nSTATUS=explicit address: our own socket"]
