"""Per-key exponential back-off with the kubelet's semantics (CrashLoopBackOff, ImagePullBackOff).

The first failure restarts at once and arms `initial`; every restart while the entry is live doubles
it up to `cap`. A key is "in back-off" while less than its current delay has passed since the
failure it is about (a container's finishedAt, a failed pull). An entry not touched for `reset_after`
seconds starts over (a container that ran 10 minutes is healthy again). Times are wall-clock seconds
because the events come from the runtime (CRI timestamps), which survive an edged restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Live entries kept at most (one per restarting container or failing image); the oldest go first.
MAX_BACKOFF_ENTRIES: Final = 4096


@dataclass
class _Entry:
    delay: float
    last_update: float


class Backoff:
    def __init__(
        self,
        initial: float = 10.0,
        cap: float = 300.0,
        *,
        reset_after: float | None = None,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_BACKOFF_ENTRIES,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("back-off needs 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.reset_after = 2 * cap if reset_after is None else reset_after
        self.clock = clock
        self.limit = limit
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        e = self._entries.get(key)
        if e is not None and now - e.last_update > self.reset_after:
            del self._entries[key]
            return None
        return e

    def delay(self, key: str) -> float:
        """The delay currently armed for `key` (0 when none)."""
        e = self._live(key, self.clock())
        return e.delay if e else 0.0

    def next(self, key: str) -> float:
        """Record a restart/retry now: arm `initial` for a fresh key, else double (capped)."""
        now = self.clock()
        e = self._live(key, now)
        if e is None:
            if len(self._entries) >= self.limit:
                self.gc()
                if len(self._entries) >= self.limit:
                    oldest = min(self._entries, key=lambda k: self._entries[k].last_update)
                    del self._entries[oldest]
            e = self._entries[key] = _Entry(self.initial, now)
        else:
            e.delay = min(e.delay * 2, self.cap)
            e.last_update = now
        return e.delay

    def remaining(self, key: str, since: float) -> float:
        """Seconds left before `key` may be retried for an event at `since` (0: go ahead)."""
        now = self.clock()
        e = self._live(key, now)
        if e is None:
            return 0.0
        return max(0.0, since + e.delay - now)

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for k in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[k]

    def gc(self) -> None:
        now = self.clock()
        for k in [k for k, e in self._entries.items() if now - e.last_update > self.reset_after]:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
