"""Event retention: Events expire after a TTL, so a chatty fleet cannot grow the store forever."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from kubeedge.store import Conflict, NotFound, Store

log = logging.getLogger(__name__)

# How often expired events are swept, at most (and at least every TTL/10).
SWEEP_INTERVAL = 60.0


def last_seen(ev: dict[str, Any]) -> dt.datetime | None:
    """When an Event last happened: lastTimestamp, eventTime, series, or its creation."""
    for value in (
        ev.get("lastTimestamp"),
        (ev.get("series") or {}).get("lastObservedTime"),
        ev.get("eventTime"),
        (ev.get("metadata") or {}).get("creationTimestamp"),
    ):
        if isinstance(value, str) and value:
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
    return None


async def sweep(store: Store, ttl: float, now: dt.datetime | None = None) -> int:
    """Delete events whose last occurrence is older than `ttl` seconds; returns how many."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=ttl)

    def expired(ev: dict[str, Any]) -> bool:
        seen = last_seen(ev)
        return seen is not None and seen < cutoff

    res = await store.list("events", predicate=expired)
    removed = 0
    for rec in res.items:
        md = rec.obj["metadata"]
        try:
            await store.delete("events", md.get("namespace", ""), md["name"], expect_rv=rec.rv)
            removed += 1
        except (NotFound, Conflict):
            pass  # gone already, or updated meanwhile (so it is recent again)
    return removed


async def expire_events(store: Store, ttl: float) -> None:
    interval = min(SWEEP_INTERVAL, max(1.0, ttl / 10))
    while True:
        await asyncio.sleep(interval)
        n = await sweep(store, ttl)
        if n:
            log.info("expired %d events older than %.0fs", n, ttl)
