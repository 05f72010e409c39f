"""Journal logging: journald's native protocol, read back from a real socket and decoded here."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeedge.systemd import journal
from kubeedge.systemd.journal import JournalHandler, NativeSender, encode, field_name, setup_logging


def decode(data: bytes) -> dict[str, str]:
    """journald's parser, independently: KEY=value lines, or KEY, u64 length, value, newline."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            start = nl + 9
            fields[line.decode()] = data[start : start + size].decode()
            assert data[start + size : start + size + 1] == b"\n"
            i = start + size + 1
    return fields


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "journal.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    try:
        yield s, path
    finally:
        s.close()


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def receive(s: socket.socket) -> dict[str, str]:
    """One entry: inline in the datagram, or (large ones) in a memfd passed with SCM_RIGHTS."""
    data, ancdata, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd = array.array("i", payload[:4])[0]
            try:
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
    return decode(data)


def test_encoding_round_trips() -> None:
    raw = {"MESSAGE": "two\nlines", "NODE": "edge-1", "PRIORITY": "6", "EMPTY": ""}
    assert decode(encode(raw)) == raw
    assert encode({"A": "x"}) == b"A=x\n"
    assert encode({"A": "x\ny"}) == b"A\n" + struct.pack("<Q", 3) + b"x\ny\n"
    assert field_name("object") == "OBJECT" and field_name("_pid") == "PID" and field_name("9-a.b") == "A_B"


def test_records_reach_the_socket_with_structured_fields(
    journald: tuple[socket.socket, Path], restore_root_logging: None
) -> None:
    sock, path = journald
    where = setup_logging("edgecore", "INFO", env={"INVOCATION_ID": "abc"}, socket_path=path)
    assert where == "journal"
    log = logging.getLogger("kubeedge.test")
    log.warning(
        "node %s lost", "edge-1", extra={"node": "edge-1", "peer": "10.0.0.1:10000", "object": "pods/a"}
    )
    got = receive(sock)
    assert got["MESSAGE"] == "node edge-1 lost"
    assert got["PRIORITY"] == "4"
    assert got["SYSLOG_IDENTIFIER"] == "edgecore"
    assert got["LOGGER"] == "kubeedge.test"
    assert (got["NODE"], got["PEER"], got["OBJECT"]) == ("edge-1", "10.0.0.1:10000", "pods/a")
    assert got["CODE_FUNC"] == "test_records_reach_the_socket_with_structured_fields"
    log.debug("below the level: not sent")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    got = receive(sock)
    assert got["PRIORITY"] == "3" and "NODE" not in got
    assert got["MESSAGE"].startswith("failed\nTraceback") and "RuntimeError: boom" in got["MESSAGE"]


def test_a_record_too_big_for_a_datagram_goes_in_a_memfd(journald: tuple[socket.socket, Path]) -> None:
    sock, path = journald
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    big = "x" * (1 << 20)  # beyond any datagram the kernel takes on a unix socket by default
    handler = JournalHandler("cloudcore", NativeSender(path))
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("big", logging.INFO, __file__, 1, big, None, None)
    handler.emit(record)
    assert receive(sock)["MESSAGE"] == big
    handler.close()


def test_an_unreachable_journal_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = JournalHandler("edgecore", NativeSender(tmp_path / "gone.sock"))
    handler.fallback.stream = __import__("sys").stderr
    handler.emit(logging.LogRecord("x", logging.ERROR, __file__, 1, "still seen", None, None))
    assert "still seen" in capsys.readouterr().err


def test_off_systemd_it_is_stderr_with_the_fields(
    tmp_path: Path, restore_root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The socket exists, but nothing says we run under systemd: stderr.
    assert setup_logging("edgecore", logging.INFO, env={}, socket_path=tmp_path) == "stderr"
    # Under systemd but without journald's socket (e.g. a container without journald): stderr too.
    assert (
        setup_logging("edgecore", "info", env={"JOURNAL_STREAM": "8:9"}, socket_path=tmp_path / "no")
        == "stderr"
    )
    logging.getLogger("t").info("hello", extra={"node": "edge-2", "peer": "p"})
    err = capsys.readouterr().err
    assert "INFO t: hello [node=edge-2 peer=p]" in err


def test_priorities() -> None:
    assert [journal.priority(lv) for lv in (50, 40, 30, 20, 10, 5)] == [2, 3, 4, 6, 7, 7]
