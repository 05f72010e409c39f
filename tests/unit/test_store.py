"""The SQLite store: revisions, optimistic concurrency, consistent pagination, watch semantics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from kubeedge.store import (
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    Store,
    StoreConfig,
    TooSlow,
)


def pod(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": {"n": 0}}


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(tmp_path / "s.db", StoreConfig(compact_interval=3600))
    await s.open()
    yield s
    await s.close()


async def test_crud_and_monotonic_revisions(store: Store) -> None:
    a = await store.create("pods", "ns", "a", pod("a"))
    assert a.obj["metadata"]["resourceVersion"] == str(a.rv)
    b = await store.update("pods", "ns", "a", {**pod("a"), "spec": {"n": 1}}, expect_rv=a.rv)
    assert b.rv > a.rv
    got = store.get_now("pods", "ns", "a")
    assert got.rv == b.rv and got.obj["spec"]["n"] == 1
    d = await store.delete("pods", "ns", "a")
    assert d.rv > b.rv
    assert d.obj["metadata"]["resourceVersion"] == str(d.rv)
    with pytest.raises(NotFound):
        store.get_now("pods", "ns", "a")
    assert store.rv == d.rv


async def test_conflicts_and_existence(store: Store) -> None:
    a = await store.create("pods", "ns", "a", pod("a"))
    with pytest.raises(AlreadyExists):
        await store.create("pods", "ns", "a", pod("a"))
    await store.update("pods", "ns", "a", pod("a"), expect_rv=a.rv)
    with pytest.raises(Conflict):
        await store.update("pods", "ns", "a", pod("a"), expect_rv=a.rv)
    with pytest.raises(Conflict):
        await store.delete("pods", "ns", "a", expect_rv=a.rv)
    with pytest.raises(NotFound):
        await store.update("pods", "ns", "zz", pod("zz"))


async def test_failed_mutation_fails_only_itself(store: Store) -> None:
    await store.create("pods", "ns", "a", pod("a"))

    def boom(obj: dict) -> dict:
        raise ValueError("bad patch")

    def bump(obj: dict) -> dict:
        obj["spec"]["n"] += 1
        return obj

    results = await asyncio.gather(
        store.guaranteed_update("pods", "ns", "a", boom),
        *[store.guaranteed_update("pods", "ns", "a", bump) for _ in range(20)],
        return_exceptions=True,
    )
    assert isinstance(results[0], ValueError)
    assert all(not isinstance(r, BaseException) for r in results[1:])
    assert store.get_now("pods", "ns", "a").obj["spec"]["n"] == 20


async def test_noop_mutation_writes_nothing(store: Store) -> None:
    a = await store.create("pods", "ns", "a", pod("a"))
    same = await store.guaranteed_update("pods", "ns", "a", lambda o: None)
    assert same.rv == a.rv and store.rv == a.rv


async def test_group_commit_batches_concurrent_writes(store: Store) -> None:
    before = store.stats["batches"]
    await asyncio.gather(*[store.create("pods", "ns", f"p{i}", pod(f"p{i}")) for i in range(500)])
    batches = store.stats["batches"] - before
    assert batches < 100, f"500 concurrent creates took {batches} transactions"


async def test_pagination_is_consistent_at_the_first_pages_revision(store: Store) -> None:
    for i in range(20):
        await store.create("pods", "ns", f"p{i:02d}", pod(f"p{i:02d}"))
    first = await store.list("pods", "ns", limit=5)
    assert [r.obj["metadata"]["name"] for r in first.items] == [f"p{i:02d}" for i in range(5)]
    assert first.next_after == ("ns", "p04")
    # Changes after the first page must not show in later pages of the same list.
    await store.delete("pods", "ns", "p10")
    await store.update("pods", "ns", "p11", {**pod("p11"), "spec": {"n": 99}})
    await store.create("pods", "ns", "p05a", pod("p05a"))
    seen = [r.obj for r in first.items]
    after = first.next_after
    while after is not None:
        page = await store.list("pods", "ns", limit=5, at_rv=first.rv, after=after)
        assert page.rv == first.rv
        seen += [r.obj for r in page.items]
        after = page.next_after
    names = [o["metadata"]["name"] for o in seen]
    assert names == [f"p{i:02d}" for i in range(20)]
    p11 = next(o for o in seen if o["metadata"]["name"] == "p11")
    assert p11["spec"]["n"] == 0
    # A fresh list sees the present.
    now = [r.obj["metadata"]["name"] for r in (await store.list("pods", "ns")).items]
    assert "p10" not in now and "p05a" in now


async def test_list_with_predicate_and_limit(store: Store) -> None:
    for i in range(30):
        await store.create("pods", "ns", f"p{i:02d}", pod(f"p{i:02d}", parity=str(i % 2)))
    names: list[str] = []
    after = None
    rv = None
    while True:
        page = await store.list(
            "pods",
            "ns",
            predicate=lambda o: o["metadata"]["labels"]["parity"] == "1",
            limit=4,
            at_rv=rv,
            after=after,
        )
        rv = page.rv
        names += [r.obj["metadata"]["name"] for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert names == [f"p{i:02d}" for i in range(1, 30, 2)]


async def test_continued_list_expires_after_compaction(store: Store) -> None:
    for i in range(10):
        await store.create("pods", "ns", f"p{i}", pod(f"p{i}"))
    first = await store.list("pods", "ns", limit=3)
    for i in range(10):
        await store.update("pods", "ns", f"p{i}", pod(f"p{i}"))
    await store.compact(keep=2)
    with pytest.raises(Expired):
        await store.list("pods", "ns", limit=3, at_rv=first.rv, after=first.next_after)


async def test_watch_sees_every_change_once_in_order(store: Store) -> None:
    start = store.rv
    w = store.watch("pods", "ns", from_rv=start)
    await asyncio.gather(*[store.create("pods", "ns", f"p{i}", pod(f"p{i}")) for i in range(200)])
    await asyncio.gather(*[store.delete("pods", "ns", f"p{i}") for i in range(0, 200, 2)])
    got: list[tuple[str, int]] = []
    while len(got) < 300:
        batch = await asyncio.wait_for(w.next(), 5)
        got += [(t, r.rv) for t, r in batch]
    w.close()
    rvs = [rv for _, rv in got]
    assert rvs == sorted(rvs) and len(set(rvs)) == 300
    assert sum(1 for t, _ in got if t == "DELETED") == 100


async def test_watch_other_namespace_and_resource_are_not_delivered(store: Store) -> None:
    w = store.watch("pods", "ns", from_rv=store.rv)
    await store.create("pods", "other", "x", {"metadata": {"name": "x", "namespace": "other"}})
    await store.create("configmaps", "ns", "x", {"metadata": {"name": "x", "namespace": "ns"}})
    last = await store.create("pods", "ns", "y", pod("y"))
    batch = await asyncio.wait_for(w.next(), 5)
    assert [(t, r.rv) for t, r in batch] == [("ADDED", last.rv)]
    w.close()


async def test_filtered_watch_turns_transitions_into_added_and_deleted(store: Store) -> None:
    await store.create("pods", "ns", "a", pod("a", app="x"))
    w = store.watch(
        "pods", "ns", from_rv=store.rv, predicate=lambda o: o["metadata"]["labels"].get("app") == "web"
    )
    await store.update("pods", "ns", "a", pod("a", app="web"))  # enters the selection
    await store.update("pods", "ns", "a", {**pod("a", app="web"), "spec": {"n": 2}})  # stays
    await store.update("pods", "ns", "a", pod("a", app="db"))  # leaves
    await store.update("pods", "ns", "a", pod("a", app="db2"))  # still out: nothing
    types: list[str] = []
    while len(types) < 3:
        types += [t for t, _ in await asyncio.wait_for(w.next(), 5)]
    assert types == ["ADDED", "MODIFIED", "DELETED"]
    assert await w.next(max_wait=0.05) == []
    w.close()


async def test_watch_resumes_from_history(store: Store) -> None:
    recs = [await store.create("pods", "ns", f"p{i}", pod(f"p{i}")) for i in range(10)]
    w = store.watch("pods", "ns", from_rv=recs[4].rv)
    live = await store.create("pods", "ns", "late", pod("late"))
    got: list[int] = []
    while len(got) < 6:
        got += [r.rv for _, r in await asyncio.wait_for(w.next(), 5)]
    assert got == [r.rv for r in recs[5:]] + [live.rv]
    w.close()


async def test_filtered_replay_uses_previous_versions(store: Store) -> None:
    await store.create("pods", "ns", "a", pod("a", app="x"))
    start = store.rv
    await store.update("pods", "ns", "a", pod("a", app="web"))
    await store.update("pods", "ns", "a", pod("a", app="x"))
    w = store.watch(
        "pods", "ns", from_rv=start, predicate=lambda o: o["metadata"]["labels"].get("app") == "web"
    )
    types: list[str] = []
    while len(types) < 2:
        types += [t for t, _ in await asyncio.wait_for(w.next(), 5)]
    assert types == ["ADDED", "DELETED"]
    w.close()


async def test_watch_from_compacted_revision_expires(store: Store) -> None:
    for i in range(10):
        await store.create("pods", "ns", f"p{i}", pod(f"p{i}"))
    await store.compact(keep=3)
    with pytest.raises(Expired):
        store.watch("pods", "ns", from_rv=2)
    w = store.watch("pods", "ns", from_rv=store.rv - 3)
    w.close()


async def test_slow_watcher_is_closed_not_grown(store: Store) -> None:
    w = store.watch("pods", None, from_rv=store.rv, buffer_limit=10)
    for i in range(30):
        await store.create("pods", "ns", f"p{i}", pod(f"p{i}"))
    assert w.closed
    with pytest.raises(TooSlow):
        await w.next()


async def test_bookmark_progress_advances_with_unrelated_writes(store: Store) -> None:
    w = store.watch("pods", "ns", from_rv=store.rv)
    rec = await store.create("configmaps", "ns", "c", {"metadata": {"name": "c"}})
    assert await w.next(max_wait=0.01) == []
    assert w.progress_rv >= rec.rv
    w.close()


async def test_reopen_keeps_data_and_revision(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with Store(path) as s:
        for i in range(50):
            await s.create("pods", "ns", f"p{i}", pod(f"p{i}"))
        rv = s.rv
    async with Store(path) as s:
        assert s.rv == rv
        assert len((await s.list("pods")).items) == 50
        nxt = await s.create("pods", "ns", "new", pod("new"))
        assert nxt.rv == rv + 1
        w = s.watch("pods", "ns", from_rv=rv - 5)
        got: list[int] = []
        while len(got) < 6:
            got += [r.rv for _, r in await asyncio.wait_for(w.next(), 5)]
        assert got == list(range(rv - 4, rv + 2))
        w.close()


async def test_stored_bytes_are_the_served_json(store: Store) -> None:
    rec = await store.create("pods", "ns", "a", pod("a"))
    listed = (await store.list("pods", "ns")).items[0]
    assert listed.data == rec.data
    assert orjson.loads(listed.data)["metadata"]["resourceVersion"] == str(rec.rv)


async def _types(w: object, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out += [t for t, _ in await asyncio.wait_for(w.next(), 5)]  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("compact_after_update", [False, True])
async def test_replay_and_old_lists_survive_compaction_of_the_replaced_version(
    store: Store, compact_after_update: bool
) -> None:
    """An object unchanged for a whole history window: once its creation row is compacted away, the
    change that later replaces it must still replay as MODIFIED under a selector (not ADDED) and a
    list at a revision before that change must still find the old version (not 410) — whether the
    compaction ran before the change was written or after."""
    await store.create("pods", "ns", "a", pod("a", app="web"))
    for i in range(10):
        await store.create("pods", "ns", f"fill{i}", pod(f"fill{i}"))
    if not compact_after_update:
        await store.compact(keep=2)
    before = store.rv
    await store.update("pods", "ns", "a", {**pod("a", app="web"), "spec": {"v": 2}})
    for i in range(3):
        await store.create("pods", "ns", f"late{i}", pod(f"late{i}"))
    if compact_after_update:
        await store.compact(keep=store.rv - before)  # keeps the update, drops a's creation row
    assert store.compacted_rv <= before
    w = store.watch(
        "pods", "ns", from_rv=before, predicate=lambda o: o["metadata"]["labels"].get("app") == "web"
    )
    assert await _types(w, 1) == ["MODIFIED"]
    w.close()
    res = await store.list("pods", "ns", at_rv=before)
    old = next(orjson.loads(r.data) for r in res.items if orjson.loads(r.data)["metadata"]["name"] == "a")
    assert "spec" not in old or old["spec"] != {"v": 2}
