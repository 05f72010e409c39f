"""Our async client (kubeedge.kube) against the real API server process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from kubeedge.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    NODES,
    PODS,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    KubeClient,
    ListWatch,
    NotFound,
    WatchEvent,
    load_kubeconfig,
    watch,
)
from tests.apiserver_proc import ApiServerProc

Obj = dict[str, Any]


@pytest.fixture
async def kc(apiserver: ApiServerProc) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_kubeconfig(apiserver.kubeconfig)) as c:
        yield c


@pytest.fixture
async def ns(kc: KubeClient) -> str:
    name = f"k-{uuid.uuid4().hex[:10]}"
    await kc.create(NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProc]:
    """A server that keeps only a few revisions of history and compacts often."""
    d = tmp_path_factory.mktemp("small-kc")
    cfg = d / "config.yaml"
    cfg.write_text("store: {history_limit: 5, compact_interval: 0.2}\n")
    srv = ApiServerProc(d / "data", extra_args=["--config", str(cfg)]).start()
    try:
        yield srv
    finally:
        srv.stop()


async def eventually(
    cond: Callable[[], Awaitable[Any]], within: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `cond` until it is truthy; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        v = await cond()
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def next_event(lw: ListWatch, within: float = 10.0) -> WatchEvent:
    try:
        async with asyncio.timeout(within):
            return await anext(lw)
    except TimeoutError:
        raise AssertionError(f"no event from {lw!r} within {within}s") from None


def cm(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": labels}, "data": {"n": name}}


# ---- list / pagination -------------------------------------------------------------------------


async def test_list_with_pagination_and_selectors(kc: KubeClient, ns: str) -> None:
    for i in range(17):
        await kc.create(CONFIGMAPS, cm(f"c{i:02d}", parity="even" if i % 2 == 0 else "odd"), ns)
    items, rv = await kc.list(CONFIGMAPS, ns, limit=4)
    assert [o["metadata"]["name"] for o in items] == [f"c{i:02d}" for i in range(17)]
    assert int(rv) > 0
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in items)
    even, _ = await kc.list(CONFIGMAPS, ns, label_selector="parity=even", limit=3)
    assert [o["metadata"]["name"] for o in even] == [f"c{i:02d}" for i in range(0, 17, 2)]
    one, _ = await kc.list(CONFIGMAPS, ns, field_selector="metadata.name=c05")
    assert [o["metadata"]["name"] for o in one] == ["c05"]
    everywhere, _ = await kc.list(CONFIGMAPS, None, label_selector="parity=odd")
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everywhere} >= {(ns, "c01")}


# ---- create / patch / delete -------------------------------------------------------------------


async def test_create_patch_replace_delete(kc: KubeClient, ns: str) -> None:
    created = await kc.create(CONFIGMAPS, cm("a"), ns)
    assert created["metadata"]["uid"] and created["metadata"]["namespace"] == ns
    with pytest.raises(AlreadyExists):
        await kc.create(CONFIGMAPS, cm("a"), ns)
    p = await kc.patch(CONFIGMAPS, "a", {"data": {"x": "1"}}, ns)
    assert p["data"] == {"n": "a", "x": "1"}
    p = await kc.patch(CONFIGMAPS, "a", {"data": {"y": "2"}}, ns, patch_type="strategic")
    assert p["data"] == {"n": "a", "x": "1", "y": "2"}
    p = await kc.patch(CONFIGMAPS, "a", [{"op": "remove", "path": "/data/x"}], ns, patch_type="json")
    assert p["data"] == {"n": "a", "y": "2"}
    applied = await kc.patch(
        CONFIGMAPS,
        "b",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": "v"}},
        ns,
        patch_type="apply",
        field_manager="me",
    )
    assert applied["data"] == {"k": "v"}
    # Compare-and-swap replace: a stale resourceVersion is a Conflict.
    stale = dict(created)
    with pytest.raises(Conflict):
        await kc.replace(CONFIGMAPS, {**stale, "data": {"z": "z"}}, ns)
    fresh = await kc.get(CONFIGMAPS, "a", ns)
    replaced = await kc.replace(CONFIGMAPS, {**fresh, "data": {"z": "z"}}, ns)
    assert replaced["data"] == {"z": "z"}
    with pytest.raises(Invalid):
        await kc.create(CONFIGMAPS, cm("Bad_Name"), ns)
    dry = await kc.create(CONFIGMAPS, cm("dry"), ns, dry_run=True)
    assert dry["metadata"]["name"] == "dry"
    with pytest.raises(NotFound):
        await kc.get(CONFIGMAPS, "dry", ns)
    deleted = await kc.delete(CONFIGMAPS, "a", ns)
    assert deleted["metadata"]["name"] == "a"
    with pytest.raises(NotFound):
        await kc.get(CONFIGMAPS, "a", ns)
    with pytest.raises(NotFound):
        await kc.delete(CONFIGMAPS, "a", ns)
    with pytest.raises(Conflict):
        await kc.delete(CONFIGMAPS, "b", ns, preconditions={"uid": "not-the-uid"})
    await kc.delete_collection(CONFIGMAPS, ns)
    assert (await kc.list(CONFIGMAPS, ns))[0] == []


# ---- watch ---------------------------------------------------------------------------------------


async def test_watch_with_resume(kc: KubeClient, ns: str) -> None:
    _, rv0 = await kc.list(CONFIGMAPS, ns)
    for n in ("w1", "w2", "w3"):
        await kc.create(CONFIGMAPS, cm(n), ns)
    await kc.patch(CONFIGMAPS, "w2", {"data": {"m": "1"}}, ns)
    await kc.delete(CONFIGMAPS, "w1", ns)
    want = [("ADDED", "w1"), ("ADDED", "w2"), ("ADDED", "w3"), ("MODIFIED", "w2"), ("DELETED", "w1")]
    got: list[tuple[str, str]] = []
    rvs: list[str] = []
    async with asyncio.timeout(10):
        stream = watch(kc, CONFIGMAPS, ns, resource_version=rv0, timeout_seconds=10)
        async with contextlib.aclosing(stream):
            async for ev in stream:
                if ev.type == "BOOKMARK":
                    continue
                got.append((ev.type, ev.object["metadata"]["name"]))
                rvs.append(ev.resource_version)
                if len(got) == 2:
                    break  # stop half-way: resume below from the last seen revision
    assert got == want[:2]
    async with asyncio.timeout(10):
        stream = watch(kc, CONFIGMAPS, ns, resource_version=rvs[-1], timeout_seconds=10)
        async with contextlib.aclosing(stream):
            async for ev in stream:
                if ev.type == "BOOKMARK":
                    continue
                got.append((ev.type, ev.object["metadata"]["name"]))
                if len(got) == len(want):
                    break
    assert got == want
    # A watch with a short server-side timeout simply ends.
    async with asyncio.timeout(10):
        quiet = [ev async for ev in watch(kc, CONFIGMAPS, ns, resource_version=rvs[-1], timeout_seconds=1)]
    assert [e.type for e in quiet if e.type != "BOOKMARK"] == ["ADDED", "MODIFIED", "DELETED"]


async def test_listwatch_initial_sync_and_live_events(kc: KubeClient, ns: str) -> None:
    for n in ("x", "y"):
        await kc.create(CONFIGMAPS, cm(n, app="lw"), ns)
    await kc.create(CONFIGMAPS, cm("other"), ns)
    async with ListWatch(kc, CONFIGMAPS, ns, label_selector="app=lw", page_size=1, watch_timeout=5) as lw:
        first = [await next_event(lw) for _ in range(3)]
        assert sorted((e.type, e.object.get("metadata", {}).get("name")) for e in first[:2]) == [
            ("ADDED", "x"),
            ("ADDED", "y"),
        ]
        assert first[2].type == "SYNC" and lw.has_synced
        assert set(lw.cache) == {(ns, "x"), (ns, "y")}
        await kc.create(CONFIGMAPS, cm("z", app="lw"), ns)
        await kc.patch(CONFIGMAPS, "x", {"data": {"v": "2"}}, ns)
        await kc.delete(CONFIGMAPS, "y", ns)
        await kc.create(CONFIGMAPS, cm("ignored"), ns)
        live = [await next_event(lw) for _ in range(3)]
        assert [(e.type, e.object["metadata"]["name"]) for e in live] == [
            ("ADDED", "z"),
            ("MODIFIED", "x"),
            ("DELETED", "y"),
        ]
        assert set(lw.cache) == {(ns, "x"), (ns, "z")}
        assert lw.cache[(ns, "x")]["data"]["v"] == "2"
        assert lw.lists == 1


async def test_listwatch_relists_after_410(small: ApiServerProc) -> None:
    """A ListWatch whose revision falls out of the kept history gets 410, re-lists and carries on.

    The ListWatch watches one label; the server sends no bookmarks in time (default interval), so
    its revision stays at the last matching change while unrelated writes move history past it.
    Each watch lasts a second; the re-watch after that is answered with 410."""
    async with KubeClient(load_kubeconfig(small.kubeconfig)) as kc:
        ns = f"g-{uuid.uuid4().hex[:8]}"
        await kc.create(NAMESPACES, {"metadata": {"name": ns}})
        for n in ("keep", "change"):
            await kc.create(CONFIGMAPS, cm(n, app="lw"), ns)
        lw = ListWatch(
            kc, CONFIGMAPS, ns, label_selector="app=lw", watch_timeout=1, backoff_base=0.05, backoff_cap=0.2
        )
        async with lw:
            initial = [await next_event(lw) for _ in range(3)]
            assert [e.type for e in initial] == ["ADDED", "ADDED", "SYNC"]
            stale_rv = lw.resource_version
            for i in range(15):
                await kc.create(CONFIGMAPS, cm(f"fill{i}"), ns)

            async def expired() -> bool:
                try:
                    stream = watch(kc, CONFIGMAPS, ns, resource_version=stale_rv, timeout_seconds=1)
                    async with contextlib.aclosing(stream) as s:
                        async for _ in s:
                            pass
                except Gone:
                    return True
                return False

            await eventually(expired, 15, "the ListWatch's revision to be compacted away")
            # The ListWatch's own re-watch runs into the same 410 and re-lists: a second SYNC.
            ev = await next_event(lw, 15)
            assert ev.type == "SYNC", ev
            assert lw.lists >= 2 and int(lw.resource_version) > int(stale_rv)
            assert set(lw.cache) == {(ns, "keep"), (ns, "change")}
            # Live events flow again after the re-list.
            await kc.patch(CONFIGMAPS, "change", {"data": {"v": "new"}}, ns)
            await kc.create(CONFIGMAPS, cm("late", app="lw"), ns)
            await kc.delete(CONFIGMAPS, "keep", ns)
            live: list[tuple[str, str]] = []
            while len(live) < 3:
                ev = await next_event(lw)
                if ev.type != "SYNC":
                    live.append((ev.type, ev.object["metadata"]["name"]))
            assert live == [("MODIFIED", "change"), ("ADDED", "late"), ("DELETED", "keep")]
            assert set(lw.cache) == {(ns, "change"), (ns, "late")}
            assert lw.cache[(ns, "change")]["data"]["v"] == "new"


# ---- status and subresources -------------------------------------------------------------------


async def test_update_status(kc: KubeClient, ns: str) -> None:
    dep = await kc.create(
        DEPLOYMENTS,
        {
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        },
        ns,
    )
    dep["status"] = {"replicas": 2, "readyReplicas": 1, "observedGeneration": 1}
    dep["spec"]["replicas"] = 10
    st = await kc.update_status(DEPLOYMENTS, dep, ns)
    assert st["status"]["readyReplicas"] == 1 and st["spec"]["replicas"] == 2
    assert st["metadata"]["generation"] == 1
    with pytest.raises(Conflict):
        await kc.update_status(DEPLOYMENTS, dep, ns)  # stale resourceVersion
    st = await kc.patch(DEPLOYMENTS, "d", {"status": {"readyReplicas": 2}}, ns, subresource="status")
    assert st["status"]["readyReplicas"] == 2
    scale = await kc.get(DEPLOYMENTS, "d", ns, subresource="scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2


async def test_bind_pod_to_node(kc: KubeClient, ns: str) -> None:
    node = f"edge-{uuid.uuid4().hex[:6]}"
    await kc.create(NODES, {"metadata": {"name": node}})
    pod = await kc.create(
        PODS, {"metadata": {"name": "unbound"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}, ns
    )
    assert not pod["spec"].get("nodeName")

    def binding(target: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "unbound"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": target},
        }

    res = await kc.create_subresource(PODS, "unbound", "binding", binding(node), ns)
    assert res.get("kind") == "Status" and res.get("status") == "Success"
    bound = await kc.get(PODS, "unbound", ns)
    assert bound["spec"]["nodeName"] == node
    assert any(
        c["type"] == "PodScheduled" and c["status"] == "True" for c in bound["status"].get("conditions", [])
    )
    on_node, _ = await kc.list(PODS, ns, field_selector=f"spec.nodeName={node}")
    assert [p["metadata"]["name"] for p in on_node] == ["unbound"]
    with pytest.raises(Conflict):
        await kc.create_subresource(PODS, "unbound", "binding", binding(node), ns)
    with pytest.raises(Conflict):
        await kc.create_subresource(PODS, "unbound", "binding", binding("elsewhere"), ns)
    with pytest.raises(NotFound):
        await kc.create_subresource(PODS, "missing", "binding", binding(node), ns)
    await kc.delete(NODES, node)
