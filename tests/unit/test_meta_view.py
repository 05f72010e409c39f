"""KubeEdge's ``meta`` table layout (key, type, value) as a view over the edge store's file, read with the
sqlite3 module as tooling would, after objects arrive through the metamanager."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from kubeedge.beehive import Message
from kubeedge.edgecore.metamanager import MetaManager, ensure_meta_view
from kubeedge.store import Store


class Link:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True


def msg(op: str, resource: str, obj: dict[str, object] | None = None) -> Message:
    return Message.new("edgecontroller", "resource", op, resource, obj)


def meta_rows(path: Path) -> dict[str, tuple[str, dict[str, object]]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, type, value FROM meta").fetchall()
    return {k: (t, orjson.loads(v)) for k, t, v in rows}


async def test_meta_view_lists_what_the_metamanager_stored(tmp_path: Path) -> None:
    path = tmp_path / "edgecore.db"
    async with Store(path) as store:
        mm = MetaManager(store, Link(), node_name="edge-1")
        await mm.open()
        pod = {"metadata": {"name": "nginx", "namespace": "default", "resourceVersion": "7"}, "spec": {}}
        cm = {"metadata": {"name": "cfg", "namespace": "apps", "resourceVersion": "8"}, "data": {"a": "b"}}
        node = {"metadata": {"name": "edge-1", "resourceVersion": "9"}}
        lease = {"metadata": {"name": "edge-1", "namespace": "kube-node-lease", "resourceVersion": "10"}}
        await mm.apply_burst(
            [
                msg("insert", "default/pod/nginx", pod),
                msg("insert", "apps/configmap/cfg", cm),
                msg("update", "null/node/edge-1", node),
                msg("update", "kube-node-lease/lease/edge-1", lease),
            ]
        )
        rows = meta_rows(path)
        assert set(rows) == {
            "default/pod/nginx",
            "apps/configmap/cfg",
            "null/node/edge-1",
            "kube-node-lease/lease/edge-1",
        }
        assert rows["default/pod/nginx"][0] == "pod"
        assert rows["apps/configmap/cfg"][0] == "configmap"
        assert rows["apps/configmap/cfg"][1]["data"] == {"a": "b"}
        assert rows["null/node/edge-1"][0] == "node"
        assert rows["kube-node-lease/lease/edge-1"][0] == "lease"

        # A delete leaves the view at once; objects of types the edge does not store never show.
        await mm.apply_burst([msg("delete", "apps/configmap/cfg", cm)])
        await store.create("widgets", "default", "w", {"metadata": {"name": "w"}})
        assert set(meta_rows(path)) == {
            "default/pod/nginx",
            "null/node/edge-1",
            "kube-node-lease/lease/edge-1",
        }

        # The view is read-only, as KubeEdge tooling only reads it.
        with sqlite3.connect(path) as conn:
            try:
                conn.execute("DELETE FROM meta")
            except sqlite3.OperationalError as e:
                assert "view" in str(e)
            else:
                raise AssertionError("writing the meta view must fail")


async def test_meta_view_is_idempotent_and_replaces_an_outdated_view(tmp_path: Path) -> None:
    path = tmp_path / "edgecore.db"
    async with Store(path) as store:
        await store.create("pods", "default", "p", {"metadata": {"name": "p", "namespace": "default"}})
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE VIEW meta (key, type, value) AS SELECT 'stale', 'x', '{}'")
        ensure_meta_view(path)
        ensure_meta_view(path)
        assert list(meta_rows(path)) == ["default/pod/p"]


async def test_store_renames_its_old_revision_table_named_meta(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with Store(path) as store:
        await store.create("pods", "default", "p", {"metadata": {"name": "p", "namespace": "default"}})
        rv = store.rv
    # A file from before the rename: the revision counters in a table called meta.
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE revisions RENAME TO meta")
    async with Store(path) as store:
        assert store.rv == rv
        rec = await store.create("pods", "default", "q", {"metadata": {"name": "q", "namespace": "default"}})
        assert rec.rv == rv + 1
    ensure_meta_view(path)
    assert set(meta_rows(path)) == {"default/pod/p", "default/pod/q"}
