"""The in-process module bus: routing, groups, request/response, back-pressure, drops, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from kubeedge.beehive import Bus, Closed, Message, SyncTimeout, UnknownModule


async def settle() -> None:
    """Let started tasks run until they block (a fixed number of loop turns, not wall time)."""
    for _ in range(20):
        await asyncio.sleep(0)


def msg(n: int = 0, op: str = "update") -> Message:
    return Message.new("test", "resource", op, f"default/pod/p{n}", {"n": n})


async def test_send_receive_in_order() -> None:
    bus = Bus()
    bus.register("metamanager", "meta")
    sent = [msg(i) for i in range(5)]
    for s in sent:
        await bus.send("metamanager", s)
    assert [await bus.receive("metamanager") for _ in sent] == sent


async def test_unknown_and_duplicate_modules() -> None:
    bus = Bus()
    bus.register("a")
    with pytest.raises(ValueError):
        bus.register("a")
    with pytest.raises(UnknownModule):
        await bus.send("nope", msg())
    with pytest.raises(UnknownModule):
        bus.try_send("nope", msg())
    with pytest.raises(UnknownModule):
        await bus.receive("nope")


async def test_send_to_group_reaches_every_member() -> None:
    bus = Bus()
    bus.register("edged", "edged")
    bus.register("twin", "twin")
    bus.register("twin2", "twin")
    m = msg()
    assert await bus.send_to_group("twin", m) == 2
    assert await bus.receive("twin") is m and await bus.receive("twin2") is m
    assert bus.try_send_to_group("twin", m) == 2
    assert await bus.send_to_group("nobody", m) == 0
    assert bus.modules("twin") == ["twin", "twin2"]
    bus.unregister("twin2")
    assert bus.modules("twin") == ["twin"]


async def test_send_sync_matches_reply_by_parent_id() -> None:
    bus = Bus()
    bus.register("metamanager", "meta")

    async def responder() -> None:
        while True:
            req = await bus.receive("metamanager")
            # An unrelated reply first: it must not satisfy the waiting request.
            assert (
                bus.send_resp(Message.new("x", "meta", "response", req.resource, "stray", parent="other"))
                is False
            )
            assert bus.send_resp(req.response({"answer": req.content["n"]}))

    task = asyncio.create_task(responder())
    try:
        replies = await asyncio.gather(
            *(bus.send_sync("metamanager", msg(i, "query"), timeout=2) for i in range(3))
        )
        assert [r.content for r in replies] == [{"answer": i} for i in range(3)]
    finally:
        task.cancel()
    assert not bus.has_waiter(replies[0].parent_msg_id)


async def test_send_sync_timeout_and_late_reply() -> None:
    bus = Bus()
    bus.register("slow")
    req = msg(op="query")
    with pytest.raises(SyncTimeout):
        await bus.send_sync("slow", req, timeout=0.05)
    assert isinstance(SyncTimeout("x"), TimeoutError)
    assert not bus.has_waiter(req.msg_id)
    # The request itself was delivered; its late reply finds nobody waiting.
    got = await bus.receive("slow")
    assert got is req and bus.send_resp(got.response()) is False


async def test_send_sync_timeout_covers_a_full_queue() -> None:
    bus = Bus(queue_size=1)
    bus.register("stuck")
    await bus.send("stuck", msg())
    with pytest.raises(SyncTimeout):
        await bus.send_sync("stuck", msg(1), timeout=0.05)
    assert len(bus.stats()) == 1 and bus.stats()[0].queued == 1


async def test_bounded_queue_blocks_sender_and_try_send_drops() -> None:
    bus = Bus()
    bus.register("edged", queue_size=2)
    await bus.send("edged", msg(0))
    assert bus.try_send("edged", msg(1))
    assert not bus.try_send("edged", msg(2)) and bus.drops("edged") == 1

    blocked = asyncio.create_task(bus.send("edged", msg(3)))
    await settle()
    assert not blocked.done()
    # While a sender waits in line, a non-blocking sender must not jump ahead of it.
    assert (await bus.receive("edged")).content == {"n": 0}
    assert not bus.try_send("edged", msg(4)) and bus.drops("edged") == 2
    await asyncio.wait_for(blocked, 1)
    assert [(await bus.receive("edged")).content["n"] for _ in range(2)] == [1, 3]
    stats = bus.stats()[0]
    assert (stats.name, stats.queued, stats.capacity, stats.drops) == ("edged", 0, 2, 2)


async def test_blocked_senders_keep_fifo_order_and_survive_cancellation() -> None:
    bus = Bus(queue_size=1)
    bus.register("m")
    await bus.send("m", msg(0))
    s1 = asyncio.create_task(bus.send("m", msg(1)))
    s2 = asyncio.create_task(bus.send("m", msg(2)))
    s3 = asyncio.create_task(bus.send("m", msg(3)))
    await settle()
    s2.cancel()
    got = [(await bus.receive("m")).content["n"] for _ in range(3)]
    assert got == [0, 1, 3]
    await asyncio.gather(s1, s3)
    assert s2.cancelled()


async def test_cancelled_receiver_does_not_swallow_a_message() -> None:
    bus = Bus()
    bus.register("m")
    r1 = asyncio.create_task(bus.receive("m"))
    r2 = asyncio.create_task(bus.receive("m"))
    await settle()
    await bus.send("m", msg(7))  # wakes r1 ...
    r1.cancel()  # ... which is cancelled before it runs: r2 must get the message
    assert (await asyncio.wait_for(r2, 1)).content == {"n": 7}


async def test_close_wakes_receivers_senders_and_requests() -> None:
    bus = Bus(queue_size=1)
    bus.register("idle")
    bus.register("full")
    bus.register("svc")
    await bus.send("full", msg(0))
    receiver = asyncio.create_task(bus.receive("idle"))
    sender = asyncio.create_task(bus.send("full", msg(1)))
    request = asyncio.create_task(bus.send_sync("svc", msg(2), timeout=10))
    await settle()
    bus.close()
    bus.close()  # idempotent
    for t in (receiver, sender, request):
        with pytest.raises(Closed):
            await asyncio.wait_for(t, 1)
    # Already-queued messages drain, then Closed; sending is refused.
    assert (await bus.receive("full")).content == {"n": 0}
    with pytest.raises(Closed):
        await bus.receive("full")
    with pytest.raises(Closed):
        await bus.send("idle", msg())
    assert bus.try_send("idle", msg()) is False
    with pytest.raises(Closed):
        await bus.send_sync("svc", msg(), timeout=1)
    with pytest.raises(Closed):
        bus.register("late")
    assert bus.closed


async def test_unregister_wakes_its_receiver() -> None:
    bus = Bus()
    bus.register("m", "g")
    receiver = asyncio.create_task(bus.receive("m"))
    await settle()
    bus.unregister("m")
    with pytest.raises(Closed):
        await asyncio.wait_for(receiver, 1)
    assert bus.modules("g") == [] and bus.modules() == []
    with pytest.raises(UnknownModule):
        await bus.send("m", msg())
