"""Load-balancing policies for the userspace path, and the consistent-hash ring both paths share.

Round robin (the default), random, and consistent hash (by an HTTP header or the client address),
optionally wrapped in `sessionAffinity: ClientIP`. The kernel path cannot run Python per connection, so
for source-IP hashing it asks the ring for a bucket → endpoint table (`HashRing.bucket_owners`) that nft
indexes with `jhash ip saddr mod BUCKETS`; the same ring keeps both paths moving keys minimally.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from edgemesh.model import CONSISTENT_HASH, RANDOM, Endpoint, LbPolicy

VNODES = 160  # points per endpoint on the ring: ±10% load spread at a few endpoints
KERNEL_HASH_BUCKETS = 128  # jhash buckets per source-hashed service in nft (rules grow with it)
MAX_AFFINITY_ENTRIES = 65536  # client IPs remembered per service port (the nft set size, too)
HEADER_PEEK_LIMIT = 8192  # bytes of a request we read looking for the hash header


def _h64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


def endpoint_id(e: Endpoint) -> str:
    return f"{e.ip}:{e.port}"


class HashRing:
    """Consistent hashing with virtual nodes: adding/removing a member moves only ~1/N of the keys."""

    def __init__(self, members: Sequence[str], vnodes: int = VNODES) -> None:
        points = sorted((_h64(f"{m}#{i}"), m) for m in set(members) for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._owners = [m for _, m in points]
        self.members = frozenset(members)

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def _index(self, key: str) -> int:
        i = bisect.bisect(self._hashes, _h64(key))
        return 0 if i == len(self._hashes) else i

    def lookup(self, key: str) -> str:
        return self._owners[self._index(key)]

    def preference(self, key: str, n: int) -> list[str]:
        """The owner of `key` then the next distinct members clockwise (fallbacks when one fails)."""
        out: list[str] = []
        if not self._hashes:
            return out
        i = self._index(key)
        for step in range(len(self._owners)):
            m = self._owners[(i + step) % len(self._owners)]
            if m not in out:
                out.append(m)
                if len(out) >= n:
                    break
        return out

    def bucket_owners(self, buckets: int = KERNEL_HASH_BUCKETS) -> list[str]:
        """Owner of each of `buckets` fixed points: the kernel path's jhash → endpoint table."""
        return [self.lookup(f"bucket:{b}") for b in range(buckets)]


class Affinity:
    """sessionAffinity ClientIP: client → endpoint for `timeout_s` after its last connection, LRU-bounded."""

    def __init__(
        self, timeout_s: float, limit: int = MAX_AFFINITY_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout_s = timeout_s
        self.limit = limit
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, client: str) -> str | None:
        hit = self._entries.get(client)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            del self._entries[client]
            return None
        return hit[0]

    def put(self, client: str, member: str) -> None:
        self._entries[client] = (member, self._clock() + self.timeout_s)
        self._entries.move_to_end(client)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def retain(self, members: frozenset[str]) -> None:
        for c in [c for c, (m, _) in self._entries.items() if m not in members]:
            del self._entries[c]

    def __len__(self) -> int:
        return len(self._entries)


class Balancer:
    """Chooses endpoints for one service port. `pick` returns the choice first, then fallbacks."""

    def __init__(self, policy: LbPolicy, affinity_s: int = 0, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._eps: dict[str, Endpoint] = {}
        self._order: list[str] = []
        self._next = 0
        self._ring = HashRing(())
        self.affinity = Affinity(affinity_s) if affinity_s > 0 else None

    @property
    def needs_header(self) -> bool:
        return self.policy.kind == CONSISTENT_HASH and bool(self.policy.hash_header)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [self._eps[m] for m in self._order]

    def update(self, endpoints: Sequence[Endpoint], policy: LbPolicy, affinity_s: int) -> None:
        """New endpoint set / policy; affinity and the ring survive when what they depend on didn't change."""
        eps = {endpoint_id(e): e for e in endpoints}
        if affinity_s <= 0:
            self.affinity = None
        elif self.affinity is None or self.affinity.timeout_s != affinity_s:
            self.affinity = Affinity(affinity_s)
        if set(eps) != set(self._eps) or policy != self.policy:
            self._ring = HashRing(list(eps)) if policy.kind == CONSISTENT_HASH else HashRing(())
        self.policy = policy
        self._eps = eps
        self._order = sorted(eps)
        if self.affinity is not None:
            self.affinity.retain(frozenset(eps))

    def pick(self, client_ip: str, header_value: str | None = None, tries: int = 3) -> list[Endpoint]:
        if not self._order:
            return []
        n = min(tries, len(self._order))
        first: str | None = self.affinity.get(client_ip) if self.affinity is not None else None
        if first is not None:
            rest = [m for m in self._rotation() if m != first]
            chosen = [first, *rest][:n]
        elif self.policy.kind == CONSISTENT_HASH:
            # A request without the header hashes by client address: still sticky, never random.
            key = header_value if self.policy.hash_header and header_value is not None else client_ip
            chosen = self._ring.preference(key, n)
        else:
            chosen = self._rotation()[:n]
        if self.affinity is not None:
            self.affinity.put(client_ip, chosen[0])
        return [self._eps[m] for m in chosen]

    def _rotation(self) -> list[str]:
        if self.policy.kind == RANDOM:
            order = list(self._order)
            self._rng.shuffle(order)
            return order
        i = self._next % len(self._order)
        self._next = i + 1
        return self._order[i:] + self._order[:i]


def http_header(data: bytes, name: str) -> str | None:
    """Value of header `name` in the first request of `data` (None if absent or headers incomplete)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    want = name.lower().encode()
    for line in data[:end].split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == want:
            return v.strip().decode("latin-1")
    return None
