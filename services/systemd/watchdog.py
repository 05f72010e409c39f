"""The systemd watchdog: WATCHDOG=1 from the event loop itself, every WatchdogSec/2.

The pings are sent by a task on the daemon's loop, so a loop that is stuck (a blocking call, a busy
coroutine) stops them and systemd kills and restarts the unit after WatchdogSec. Settings come from
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, which must name this process when set).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Final

from .notify import Notifier

# Ping twice per period, as sd_watchdog_enabled(3) advises: one late ping must not be fatal.
PINGS_PER_PERIOD: Final = 2


def watchdog_period(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """WatchdogSec in seconds when systemd expects pings from this process, else None."""
    environ = os.environ if env is None else env
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. we are a child of the main one)
    return int(raw) / 1_000_000


class Watchdog:
    """Run ``run()`` under a Supervisor; it pings until cancelled."""

    def __init__(self, notifier: Notifier, period: float) -> None:
        if period <= 0:
            raise ValueError("watchdog period must be positive")
        self.notifier = notifier
        self.interval = period / PINGS_PER_PERIOD
        self.pings = 0

    async def run(self) -> None:
        while True:
            if self.notifier.watchdog():
                self.pings += 1
            await asyncio.sleep(self.interval)
