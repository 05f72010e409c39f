"""Load-balancing policies: counts per endpoint, stickiness, minimal movement of consistent hashing."""

from __future__ import annotations

import random
from collections import Counter

from edgemesh.model import CONSISTENT_HASH, RANDOM, ROUND_ROBIN, Endpoint, LbPolicy
from edgemesh.proxy.loadbalance import Affinity, Balancer, HashRing, http_header


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, True, "n") for i in range(n)]


def picks(b: Balancer, n: int, client: str = "1.1.1.1", header: str | None = None) -> Counter[str]:
    return Counter(b.pick(client, header)[0].ip for _ in range(n))


def test_round_robin_is_exactly_even() -> None:
    b = Balancer(LbPolicy(ROUND_ROBIN))
    b.update(eps(3), LbPolicy(ROUND_ROBIN), 0)
    assert sorted(picks(b, 300).values()) == [100, 100, 100]


def test_pick_returns_distinct_fallbacks() -> None:
    b = Balancer(LbPolicy(ROUND_ROBIN))
    b.update(eps(4), LbPolicy(ROUND_ROBIN), 0)
    got = b.pick("c", tries=3)
    assert len(got) == 3 and len({e.ip for e in got}) == 3


def test_random_spreads() -> None:
    b = Balancer(LbPolicy(RANDOM), rng=random.Random(7))
    b.update(eps(3), LbPolicy(RANDOM), 0)
    counts = picks(b, 3000)
    assert len(counts) == 3 and all(800 < c < 1200 for c in counts.values()), counts


def test_affinity_sticks_then_expires() -> None:
    now = [0.0]
    b = Balancer(LbPolicy(ROUND_ROBIN), affinity_s=10)
    b.update(eps(3), LbPolicy(ROUND_ROBIN), 10)
    assert b.affinity is not None
    b.affinity._clock = lambda: now[0]
    first = b.pick("9.9.9.9")[0]
    assert all(b.pick("9.9.9.9")[0] == first for _ in range(20))
    assert len(picks(b, 30, client="8.8.8.8")) == 1  # another client sticks too
    now[0] = 11.0
    b.pick("7.7.7.7")  # moves the round robin on
    assert len({b.pick(f"5.5.5.{i}")[0].ip for i in range(3)}) == 3  # new clients still spread


def test_affinity_forgets_removed_endpoint() -> None:
    b = Balancer(LbPolicy(ROUND_ROBIN), affinity_s=100)
    b.update(eps(3), LbPolicy(ROUND_ROBIN), 100)
    first = b.pick("c")[0]
    b.update([e for e in eps(3) if e != first], LbPolicy(ROUND_ROBIN), 100)
    second = b.pick("c")[0]
    assert second != first
    assert all(b.pick("c")[0] == second for _ in range(10))


def test_affinity_bounded() -> None:
    a = Affinity(100, limit=10)
    for i in range(50):
        a.put(f"c{i}", "x")
    assert len(a) == 10 and a.get("c49") == "x" and a.get("c0") is None


def test_consistent_hash_by_header_is_sticky_and_spread() -> None:
    pol = LbPolicy(CONSISTENT_HASH, hash_header="X-User")
    b = Balancer(pol)
    b.update(eps(4), pol, 0)
    owner = {f"user{k}": b.pick("c", f"user{k}")[0].ip for k in range(2000)}
    for k in list(owner)[:200]:
        assert b.pick("other-client", k)[0].ip == owner[k]
    counts = Counter(owner.values())
    assert len(counts) == 4 and all(350 < c < 650 for c in counts.values()), counts


def test_consistent_hash_moves_minimally() -> None:
    keys = [f"k{i}" for i in range(5000)]
    before = HashRing([f"e{i}" for i in range(4)])
    after = HashRing([f"e{i}" for i in range(5)])
    moved = [k for k in keys if before.lookup(k) != after.lookup(k)]
    assert all(after.lookup(k) == "e4" for k in moved)  # only to the newcomer
    assert 0.1 < len(moved) / len(keys) < 0.3  # ≈ 1/5
    shrunk = HashRing([f"e{i}" for i in range(4) if i != 2])
    assert all(shrunk.lookup(k) == before.lookup(k) for k in keys if before.lookup(k) != "e2")


def test_kernel_buckets_follow_the_ring() -> None:
    a = HashRing(["a", "b", "c"]).bucket_owners(128)
    b = HashRing(["a", "b", "c", "d"]).bucket_owners(128)
    assert set(a) == {"a", "b", "c"}
    assert all(y == "d" for x, y in zip(a, b, strict=True) if x != y)
    assert 10 < sum(1 for x, y in zip(a, b, strict=True) if x != y) < 60


def test_source_ip_hash_without_header_falls_back_to_client() -> None:
    pol = LbPolicy(CONSISTENT_HASH, hash_source_ip=True)
    b = Balancer(pol)
    b.update(eps(3), pol, 0)
    for c in ("1.2.3.4", "5.6.7.8", "9.9.9.9"):
        assert len(picks(b, 10, client=c)) == 1
    hb = Balancer(LbPolicy(CONSISTENT_HASH, hash_header="X-K"))
    hb.update(eps(3), LbPolicy(CONSISTENT_HASH, hash_header="X-K"), 0)
    assert len(picks(hb, 10, client="4.4.4.4", header=None)) == 1


def test_http_header() -> None:
    req = b"GET / HTTP/1.1\r\nHost: x\r\nx-user:  alice \r\n\r\nbody"
    assert http_header(req, "X-User") == "alice"
    assert http_header(req, "X-Other") is None
    assert http_header(b"GET / HTTP/1.1\r\nX-User: a", "X-User") is None  # headers incomplete
