"""Event retention: only events last seen before the TTL are removed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kubeedge.apiserver.events import last_seen, sweep
from kubeedge.store import Store

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def event(name: str, **times: str) -> dict:
    md = {"name": name, "namespace": "ns", "creationTimestamp": times.pop("created", "2026-11-26T11:59:00Z")}
    return {"metadata": md, "involvedObject": {"kind": "Pod", "name": "p"}, **times}


def test_last_seen_prefers_last_timestamp() -> None:
    ev = event("a", lastTimestamp="2026-11-26T10:00:00Z", created="2026-11-26T09:00:00Z")
    assert last_seen(ev) == dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
    assert last_seen(event("b", eventTime="2026-11-26T08:00:00.123456Z", created="")) == dt.datetime(
        2026, 11, 26, 8, 0, 0, 123456, tzinfo=dt.UTC
    )
    assert last_seen({"metadata": {}}) is None


async def test_sweep_removes_only_expired(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        await store.create("events", "ns", "old", event("old", lastTimestamp="2026-11-26T10:00:00Z"))
        await store.create("events", "ns", "recent", event("recent", lastTimestamp="2026-11-26T11:30:00Z"))
        await store.create(
            "events", "ns", "created-old", event("created-old", created="2026-11-26T09:00:00Z")
        )
        await store.create(
            "events",
            "ns",
            "old-but-repeated",
            event("old-but-repeated", created="2026-11-26T09:00:00Z", lastTimestamp="2026-11-26T11:59:00Z"),
        )
        assert await sweep(store, 3600, now=NOW) == 2
        left = sorted(r.obj["metadata"]["name"] for r in (await store.list("events")).items)
        assert left == ["old-but-repeated", "recent"]
