"""systemd integration: sd_notify (READY/STATUS/STOPPING/WATCHDOG), the loop watchdog, journal logging,
and the unit files (units/) that keadm and the image install.

A daemon's whole use of it (edgemesh's agent, say), all no-ops when not run by systemd:

    systemd.setup_logging("edgemesh", "info")     # journal (NODE=/PEER=/OBJECT= from extra=) or stderr
    systemd.spawn_watchdog(supervisor)            # WATCHDOG=1 from this event loop every WatchdogSec/2
    systemd.ready("serving DNS on 169.254.96.16:53")  # once it really serves; then systemd.status(...),
                                                  # and systemd.stopping() when SIGTERM arrives
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from kubeedge.runtime import Supervisor

from .journal import setup_logging
from .notify import Notifier
from .status import OfflineClock, StatusReporter, cloud_status, edge_status
from .watchdog import Watchdog, watchdog_period

UNITS: Final = (
    "cloudcore.service",
    "edgecore.service",
    "edgemesh.service",
    "kubeedge-join.service",
    "kubeedge-init.service",
)

_notifier: Notifier | None = None


def notifier() -> Notifier:
    """The process's channel to systemd (from $NOTIFY_SOCKET, read on first use)."""
    global _notifier
    if _notifier is None:
        _notifier = Notifier()
    return _notifier


def ready(status: str | None = None) -> bool:
    return notifier().ready(status)


def status(text: str) -> bool:
    return notifier().status(text)


def stopping(status: str | None = None) -> bool:
    return notifier().stopping(status)


def spawn_watchdog(sup: Supervisor) -> Watchdog | None:
    """Start the pings under ``sup`` when the unit has WatchdogSec= (returns None otherwise)."""
    period = watchdog_period()
    if period is None:
        return None
    dog = Watchdog(notifier(), period)
    sup.spawn(dog.run, "systemd-watchdog")
    return dog


def spawn_status(sup: Supervisor, compute: Callable[[], Awaitable[str]]) -> StatusReporter | None:
    """Keep STATUS= current from ``compute()`` (under systemd only: it costs a little work per round)."""
    if not notifier().enabled:
        return None
    reporter = StatusReporter(notifier(), compute)
    sup.spawn(reporter.run, "systemd-status")
    return reporter


def unit_text(name: str) -> str:
    """A packaged unit file's text, e.g. unit_text("edgecore.service")."""
    if name not in UNITS:
        raise KeyError(f"no packaged unit {name!r} (have {', '.join(UNITS)})")
    return resources.files(__package__).joinpath("units", name).read_text()


__all__ = [
    "UNITS",
    "Notifier",
    "OfflineClock",
    "StatusReporter",
    "Watchdog",
    "cloud_status",
    "edge_status",
    "notifier",
    "ready",
    "setup_logging",
    "spawn_status",
    "spawn_watchdog",
    "status",
    "stopping",
    "unit_text",
    "watchdog_period",
]
