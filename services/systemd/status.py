"""STATUS= lines a person reads in `systemctl status`, and the task that keeps them current."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from .notify import Notifier

# How often the daemons recompute their STATUS= line (sent only when it changed).
STATUS_INTERVAL: Final = 5.0


def clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class OfflineClock:
    """When the link went down (None while up): observed at each status round."""

    def __init__(self, started: float | None = None) -> None:
        self.since: float | None = time.time() if started is None else started

    def observe(self, connected: bool, now: float | None = None) -> float | None:
        if connected:
            self.since = None
        elif self.since is None:
            self.since = time.time() if now is None else now
        return self.since


def edge_status(cloud: str, connected: bool, pods: int, offline_since: float | None) -> str:
    if connected:
        return f"connected to cloud {cloud}, {plural(pods, 'pod')}"
    since = f" since {clock(offline_since)}" if offline_since is not None else ""
    return f"offline{since} (cloud {cloud}), serving {plural(pods, 'pod')} from the edge store"


def cloud_status(hub: str, nodes: int, api_ok: bool) -> str:
    api = "API healthy" if api_ok else "API NOT answering"
    return f"cloudhub on {hub}, {plural(nodes, 'edge node')} connected, {api}"


class StatusReporter:
    """Run ``run()`` under a Supervisor: recompute the line every ``interval`` and send changes."""

    def __init__(
        self, notifier: Notifier, compute: Callable[[], Awaitable[str]], interval: float = STATUS_INTERVAL
    ) -> None:
        self.notifier = notifier
        self.compute = compute
        self.interval = interval

    async def run(self) -> None:
        while True:
            self.notifier.status(await self.compute())
            await asyncio.sleep(self.interval)
