"""The persisted upstream queue: latest status per object, ordered, sequence-checked ACKs, bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kubeedge.beehive import Message, needs_ack
from kubeedge.edgecore.upstream import UpstreamFull, UpstreamQueue


async def test_put_replaces_pending_entry_for_same_object(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        await q.put("default/podpatch/a", "patch", '{"status":{"phase":"Pending"}}')
        await q.put("default/podpatch/b", "patch", '{"status":{"phase":"Pending"}}')
        await q.put("default/podpatch/a", "patch", '{"status":{"phase":"Running"}}')
        pending = await q.pending()
        assert len(q) == 2
        assert [e.resource for e in pending] == ["default/podpatch/b", "default/podpatch/a"]
        assert pending[1].content == '{"status":{"phase":"Running"}}'
        assert pending[0].seq < pending[1].seq


async def test_pending_is_in_insertion_order(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        names = [f"default/podpatch/p{i}" for i in (5, 1, 9, 3)]
        for n in names:
            await q.put(n, "patch", {"n": n})
        assert [e.resource for e in await q.pending()] == names
        assert [e.content for e in await q.pending(limit=2)] == [{"n": names[0]}, {"n": names[1]}]


async def test_ack_does_not_remove_a_replaced_entry(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        old = await q.put("null/nodepatch/n1", "patch", "v1")
        new = await q.put("null/nodepatch/n1", "patch", "v2")  # written while v1 was in flight
        assert not await q.ack("null/nodepatch/n1", old)
        [entry] = await q.pending()
        assert (entry.seq, entry.content) == (new, "v2")
        assert await q.ack("null/nodepatch/n1", new)
        assert await q.pending() == []
        assert len(q) == 0


async def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "up.db"
    async with UpstreamQueue(path) as q:
        await q.put("default/podpatch/a", "patch", "a1")
        s2 = await q.put("kube-node-lease/lease/n1", "update", {"spec": {"holderIdentity": "n1"}})
        await q.put("default/podpatch/a", "patch", "a2")
    async with UpstreamQueue(path) as q:
        pending = await q.pending()
        assert [(e.resource, e.content) for e in pending] == [
            ("kube-node-lease/lease/n1", {"spec": {"holderIdentity": "n1"}}),
            ("default/podpatch/a", "a2"),
        ]
        assert len(q) == 2
        # New sequence numbers continue past the stored ones: an ack of a pre-restart entry stays exact.
        s3 = await q.put("default/podpatch/c", "patch", "c")
        assert s3 > max(e.seq for e in pending)
        assert await q.ack("kube-node-lease/lease/n1", s2)


async def test_bounded_put_raises_when_full_but_replacing_still_works(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db", limit=3) as q:
        for i in range(3):
            await q.put(f"default/podpatch/p{i}", "patch", str(i))
        with pytest.raises(UpstreamFull, match="limit 3"):
            await q.put("default/podpatch/p3", "patch", "3")
        await q.put("default/podpatch/p0", "patch", "new")  # replacing needs no room
        assert len(q) == 3
        [e0] = [e for e in await q.pending() if e.resource == "default/podpatch/p0"]
        await q.ack(e0.resource, e0.seq)
        await q.put("default/podpatch/p3", "patch", "3")
        assert len(q) == 3


class FakeLink:
    """Records sends; optionally answers ACK-needing messages like the cloud does."""

    def __init__(self, q: UpstreamQueue, *, online: bool = True, answer: bool = True) -> None:
        self.q = q
        self.online = online
        self.answer = answer
        self.sent: list[Message] = []

    async def send(self, msg: Message) -> bool:
        if not self.online:
            return False
        self.sent.append(msg)
        if self.answer and needs_ack(msg):
            # The reply comes later, through the hub's reader.
            asyncio.get_running_loop().call_soon(self.q.deliver_reply, msg.response())
        return True


async def test_drain_sends_in_order_and_removes_only_delivered(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db", batch=2) as q:
        await q.put("default/podpatch/a", "patch", "a")
        await q.put("null/nodepatch/n1", "patch", "n")
        await q.put("default/pod/gone", "delete", None)  # needs an ACK from the cloud
        link = FakeLink(q)
        assert await q.drain(link.send) == 3
        assert [m.resource for m in link.sent] == [
            "default/podpatch/a",
            "null/nodepatch/n1",
            "default/pod/gone",
        ]
        assert await q.pending() == []


async def test_drain_offline_keeps_everything(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        await q.put("default/podpatch/a", "patch", "a")
        assert await q.drain(FakeLink(q, online=False).send) == 0
        assert len(await q.pending()) == 1


async def test_drain_retries_unacknowledged_then_leaves_them(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db", ack_timeout=0.05, ack_attempts=2) as q:
        await q.put("default/pod/p", "delete", None)
        await q.put("default/podpatch/x", "patch", "x")
        link = FakeLink(q, answer=False)
        assert await q.drain(link.send) == 1  # the patch; the delete waits for its ACK
        assert [m.resource for m in link.sent].count("default/pod/p") == 2
        assert [e.resource for e in await q.pending()] == ["default/pod/p"]
        link.answer = True
        assert await q.drain(link.send) == 1
        assert await q.pending() == []


async def test_drain_keeps_entry_replaced_during_send(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        await q.put("default/podpatch/a", "patch", "old")

        async def send(msg: Message) -> bool:
            await q.put("default/podpatch/a", "patch", "new")  # a newer status arrives mid-flight
            return True

        assert await q.drain(send) == 0
        [e] = await q.pending()
        assert e.content == "new"


class EventLink(FakeLink):
    def __init__(self, q: UpstreamQueue) -> None:
        super().__init__(q, online=False)
        self.connected_event = asyncio.Event()
        self.delivered = asyncio.Event()

    async def send(self, msg: Message) -> bool:
        ok = await super().send(msg)
        if ok and msg.resource == "default/podpatch/last":
            self.delivered.set()
        return ok


async def test_run_flushes_what_was_written_offline_once_connected(tmp_path: Path) -> None:
    async with UpstreamQueue(tmp_path / "up.db") as q:
        link = EventLink(q)
        runner = asyncio.create_task(q.run(link))
        try:
            await q.put("default/podpatch/a", "patch", "a1")
            await q.put("default/podpatch/a", "patch", "a2")  # offline: only the latest survives
            await q.put("default/podpatch/last", "patch", "z")
            link.online = True
            link.connected_event.set()
            async with asyncio.timeout(10):
                await link.delivered.wait()
            assert [(m.resource, m.content) for m in link.sent] == [
                ("default/podpatch/a", "a2"),
                ("default/podpatch/last", "z"),
            ]
            deadline = time.monotonic() + 10
            while len(q):  # the removal commits right after the send returned; no event to wait on
                assert time.monotonic() < deadline, "entries not removed after delivery"
                await asyncio.sleep(0.01)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
