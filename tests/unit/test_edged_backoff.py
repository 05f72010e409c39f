"""edged back-off: kubelet's CrashLoopBackOff arithmetic on a fake clock."""

from __future__ import annotations

import pytest

from kubeedge.edgecore.edged.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    clock = Clock()
    b = Backoff(10, 40, clock=clock)
    assert b.remaining("p/c", since=clock.now) == 0  # never failed: go
    assert b.next("p/c") == 10
    # The container exits again at once: it must wait 10 s counted from its exit.
    exited = clock.now
    clock.now += 4
    assert b.remaining("p/c", since=exited) == pytest.approx(6)
    clock.now += 6
    assert b.remaining("p/c", since=exited) == 0
    assert [b.next("p/c") for _ in range(4)] == [20, 40, 40, 40]
    assert b.delay("p/c") == 40
    assert b.delay("other") == 0


def test_entry_resets_after_a_quiet_period() -> None:
    clock = Clock()
    b = Backoff(10, 300, reset_after=600, clock=clock)
    for _ in range(5):
        b.next("k")
    assert b.delay("k") == 160
    clock.now += 599
    assert b.delay("k") == 160
    clock.now += 2  # ran for 10 minutes without a restart: healthy again
    assert b.delay("k") == 0
    assert b.next("k") == 10


def test_forget_gc_and_bound() -> None:
    clock = Clock()
    b = Backoff(1, 8, clock=clock, limit=3)
    for k in ("u1/a", "u1/b", "u2/a"):
        b.next(k)
    b.forget_prefix("u1/")
    assert len(b) == 1
    b.next("u3/a")
    clock.now += 1
    b.next("u4/a")
    b.next("u5/a")  # over the limit: the least recently touched entry goes
    assert len(b) == 3 and b.delay("u2/a") == 0
    clock.now += 100
    b.gc()
    assert len(b) == 0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(10, 5)
