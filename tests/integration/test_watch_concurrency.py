"""Many writers and watchers over HTTPS: every watcher sees every change exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from kubeedge.kube import CONFIGMAPS, NAMESPACES, KubeClient, KubeConfig, watch
from kubeedge.kube.errors import Gone
from tests.apiserver_proc import ApiServerProc

WRITERS = 8
PER_WRITER = 60
WATCHERS = 20


async def _write(kc: KubeClient, wid: int, answered: list[int]) -> None:
    for i in range(PER_WRITER):
        name = f"w{wid}-{i % 20}"
        if i < 20:
            obj = await kc.create(
                CONFIGMAPS, {"metadata": {"name": name}, "data": {"i": str(i)}}, namespace="wc"
            )
        elif i < 50:
            obj = await kc.patch(CONFIGMAPS, name, {"data": {"i": str(i)}}, namespace="wc")
        else:
            obj = await kc.delete(CONFIGMAPS, name, namespace="wc")
        answered.append(int(obj["metadata"]["resourceVersion"]))


async def _collect(kc: KubeClient, from_rv: str, last: list[int], out: list[tuple[str, int]]) -> None:
    """Record events until the revision in `last` (set once writers finish) has been seen."""
    stream = watch(kc, CONFIGMAPS, "wc", resource_version=from_rv, allow_bookmarks=True, timeout_seconds=120)
    async with contextlib.aclosing(stream):
        async for ev in stream:
            if ev.type == "BOOKMARK":
                continue
            out.append((ev.type, int(ev.object["metadata"]["resourceVersion"])))
            if last and out[-1][1] >= last[0]:
                return


async def test_concurrent_writers_and_watchers(apiserver: ApiServerProc) -> None:
    cfg = KubeConfig.from_file(str(apiserver.kubeconfig))
    async with KubeClient(cfg, pool_limit=64) as kc:
        await kc.create(NAMESPACES, {"metadata": {"name": "wc"}})
        _, rv0 = await kc.list(CONFIGMAPS, namespace="wc")
        last: list[int] = []
        seen: list[list[tuple[str, int]]] = [[] for _ in range(WATCHERS)]
        watchers = [asyncio.create_task(_collect(kc, rv0, last, seen[i])) for i in range(WATCHERS)]
        answered: list[int] = []
        await asyncio.gather(*[_write(kc, w, answered) for w in range(WRITERS)])
        # A sentinel write after all others tells each watcher it has seen everything.
        last.append(max(answered) + 1)
        sentinel = await kc.create(CONFIGMAPS, {"metadata": {"name": "sentinel"}}, namespace="wc")
        last[0] = int(sentinel["metadata"]["resourceVersion"])
        await asyncio.wait_for(asyncio.gather(*watchers), 60)
        for s in seen:
            assert s[-1][1] == last[0]
            del s[-1]
        expected = sorted(answered)
        assert len(expected) == WRITERS * PER_WRITER
        for s in seen:
            rvs = [rv for _, rv in s]
            assert rvs == expected, "a watcher missed, duplicated or reordered events"
            assert sum(1 for t, _ in s if t == "DELETED") == WRITERS * 10
            assert sum(1 for t, _ in s if t == "ADDED") == WRITERS * 20

        # Resume from any kept revision loses nothing.
        mid = expected[len(expected) // 2]
        resumed: list[tuple[str, int]] = []
        await asyncio.wait_for(_collect(kc, str(mid), last, resumed), 30)
        assert [rv for _, rv in resumed] == [rv for rv in expected if rv > mid] + last


async def test_expired_revision_is_410_and_relist_recovers(
    apiserver_factory: type[ApiServerProc], tmp_path: Path
) -> None:
    cfgfile = tmp_path / "apiserver.yaml"
    cfgfile.write_text("store:\n  history_limit: 5\n  compact_interval: 0.1\n")
    srv = apiserver_factory(tmp_path / "srv", extra_args=["--config", str(cfgfile)]).start()
    cfg = KubeConfig.from_file(str(srv.kubeconfig))
    async with KubeClient(cfg) as kc:
        await kc.create(NAMESPACES, {"metadata": {"name": "wc"}})
        _, old_rv = await kc.list(CONFIGMAPS, namespace="wc")
        for i in range(30):
            await kc.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}}, namespace="wc")

        async def expired() -> bool:
            stream = watch(kc, CONFIGMAPS, "wc", resource_version=old_rv, timeout_seconds=1)
            try:
                async with contextlib.aclosing(stream):
                    async for _ in stream:
                        pass
            except Gone:
                return True
            return False

        for _ in range(400):  # compaction runs every 0.1 s; give it up to ~20 s
            if await expired():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the old revision never expired")
        # The client's recovery: re-list, then watch from the new revision.
        items, rv = await kc.list(CONFIGMAPS, namespace="wc")
        assert len(items) == 30
        got: list[str] = []
        stream = watch(kc, CONFIGMAPS, "wc", resource_version=rv, timeout_seconds=10)
        await kc.create(CONFIGMAPS, {"metadata": {"name": "fresh"}}, namespace="wc")
        async with contextlib.aclosing(stream):
            async for ev in stream:
                got.append(ev.object["metadata"]["name"])
                break
        assert got == ["fresh"]


async def test_watch_without_revision_starts_with_current_state(apiserver: ApiServerProc) -> None:
    cfg = KubeConfig.from_file(str(apiserver.kubeconfig))
    async with KubeClient(cfg) as kc:
        await kc.create(NAMESPACES, {"metadata": {"name": "wc-init"}})
        for i in range(5):
            await kc.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}}, namespace="wc-init")
        names: list[str] = []
        stream = watch(kc, CONFIGMAPS, "wc-init", timeout_seconds=10)
        async with contextlib.aclosing(stream):
            async for ev in stream:
                assert ev.type == "ADDED"
                names.append(ev.object["metadata"]["name"])
                if len(names) == 5:
                    break
        assert names == [f"c{i}" for i in range(5)]
