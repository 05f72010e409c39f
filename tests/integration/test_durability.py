"""kill -9 the API server while clients write: every answered write survives, nothing is half-written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from kubeedge.kube import CONFIGMAPS, NAMESPACES, KubeClient, KubeConfig
from kubeedge.kube.errors import NotFound
from tests.apiserver_proc import ApiServerProc

WRITERS = 8


async def _writer(
    kc: KubeClient, wid: int, answered: dict[str, int], stop: asyncio.Event, enough: asyncio.Event
) -> None:
    i = 0
    while not stop.is_set():
        name = f"w{wid}-{i}"
        body = {"metadata": {"name": name}, "data": {"payload": "x" * 200, "seq": str(i)}}
        try:
            obj = await kc.create(CONFIGMAPS, body, namespace="dur")
        except (TimeoutError, aiohttp.ClientError, OSError, Exception):
            return  # the server died mid-request: this write was never answered
        answered[name] = int(obj["metadata"]["resourceVersion"])
        if len(answered) >= 300:
            enough.set()
        i += 1


async def test_answered_writes_survive_kill_9(apiserver_factory: type[ApiServerProc], tmp_path: Path) -> None:
    srv = apiserver_factory(tmp_path / "srv").start()
    cfg = KubeConfig.from_file(str(srv.kubeconfig))
    answered: dict[str, int] = {}
    async with KubeClient(cfg, max_retries=0) as kc:
        await kc.create(NAMESPACES, {"metadata": {"name": "dur"}})
        stop, enough = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(_writer(kc, w, answered, stop, enough)) for w in range(WRITERS)]
        # Kill while writes are in flight, once a good number have been answered.
        await asyncio.wait_for(enough.wait(), 60)
        srv.kill9()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(answered) >= 300
    top_answered = max(answered.values())

    srv2 = apiserver_factory(tmp_path / "srv", port=srv.port).start()
    cfg2 = KubeConfig.from_file(str(srv2.kubeconfig))
    async with KubeClient(cfg2) as kc:
        items, list_rv = await kc.list(CONFIGMAPS, namespace="dur")
        stored = {o["metadata"]["name"]: o for o in items}
        missing = [n for n in answered if n not in stored]
        assert not missing, f"{len(missing)} answered writes lost, e.g. {missing[:5]}"
        for name, rv in answered.items():
            assert int(stored[name]["metadata"]["resourceVersion"]) == rv
        # Unanswered writes are all-or-nothing: whatever is there is a complete object.
        for name, obj in stored.items():
            assert obj["data"]["payload"] == "x" * 200, name
            assert obj["data"]["seq"] == name.rsplit("-", 1)[1]
        assert int(list_rv) >= top_answered
        # The revision never goes backwards.
        after = await kc.create(CONFIGMAPS, {"metadata": {"name": "after-restart"}}, namespace="dur")
        assert int(after["metadata"]["resourceVersion"]) > int(list_rv)
        # A write answered before the crash can still be read back individually.
        some = next(iter(answered))
        got = await kc.get(CONFIGMAPS, some, namespace="dur")
        assert got["metadata"]["name"] == some
        try:
            await kc.get(CONFIGMAPS, "never-written", namespace="dur")
            raise AssertionError("expected NotFound")
        except NotFound:
            pass
