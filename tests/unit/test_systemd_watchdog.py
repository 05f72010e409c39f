"""The watchdog pings from the event loop, and a blocked loop stops the pings."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from kubeedge.runtime import Supervisor
from kubeedge.systemd import Notifier, Watchdog, watchdog_period
from tests.cluster import wait_for


def test_period_from_the_environment() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_period({}) is None
    with pytest.raises(ValueError):
        Watchdog(Notifier(env={}), 0)


async def test_pings_stop_while_the_loop_is_blocked(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.setblocking(False)
    period = 0.2  # pings every 0.1 s
    dog = Watchdog(Notifier(str(path)), period)
    sup = Supervisor("test")
    sup.spawn(dog.run, "watchdog")
    try:

        def received() -> int:
            count = 0
            while True:
                try:
                    assert rx.recv(64) == b"WATCHDOG=1"
                except BlockingIOError:
                    return count
                count += 1

        async def pinged() -> bool:
            return received() > 0

        await wait_for(pinged, deadline_s=5, interval=0.01, what="a first ping")
        received()  # drained: from here on only what is sent during the block would show
        # Block the loop for several periods, as a stuck coroutine would. A pinger that did not run
        # on the loop (a thread, say) would keep pinging and hide the hang from systemd.
        time.sleep(5 * period)  # noqa: ASYNC251 - blocking the loop is the point
        assert received() == 0, "pings were sent while the event loop was blocked"

        await wait_for(pinged, deadline_s=5, interval=0.01, what="pings after the loop is free again")
        assert dog.pings >= 2
    finally:
        await sup.stop()
        rx.close()


async def test_spawn_watchdog_only_with_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kubeedge.systemd as sd

    sup = Supervisor("test")
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sd.spawn_watchdog(sup) is None and len(sup) == 0
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setattr(sd, "_notifier", Notifier(str(tmp_path / "x.sock")))
    dog = sd.spawn_watchdog(sup)
    assert dog is not None and dog.interval == 1.0 and len(sup) == 1
    await sup.stop()
