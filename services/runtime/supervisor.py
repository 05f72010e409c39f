"""Supervised tasks: a failure is logged and, for long-lived loops, restarted with capped backoff;
shutdown cancels everything and waits for it to finish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class Supervisor:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def spawn(
        self, make: Callable[[], Awaitable[None]], name: str, *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Run `make()` as a task. With restart, a crash (or an unexpected return) starts it again."""

        async def guarded() -> None:
            backoff = BACKOFF_MIN
            while True:
                try:
                    await make()
                    if not restart:
                        return
                    log.warning("%s: task %s returned; restarting in %.1fs", self.owner, name, backoff)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failures += 1
                    if not restart:
                        log.exception("%s: task %s failed", self.owner, name)
                        return
                    log.exception("%s: task %s failed; restarting in %.1fs", self.owner, name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

        task = asyncio.create_task(guarded(), name=f"{self.owner}/{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def __len__(self) -> int:
        return len(self._tasks)
