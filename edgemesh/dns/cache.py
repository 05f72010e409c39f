"""A bounded, TTL-respecting cache of upstream answers (LRU by entry count)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, DNSRecord  # type: ignore[import-untyped]

DEFAULT_CACHE_SIZE = 10000

CacheKey = tuple[bytes, int, int]  # lower-cased name, qtype, qclass


@dataclass
class Entry:
    record: DNSRecord
    stored: float
    expires: float


def answer_ttl(rec: DNSRecord, min_ttl: int, max_ttl: int, negative_ttl: int) -> int:
    """How long an upstream answer may be cached (0 = not at all).

    Positive: the smallest TTL of answer and authority records. Negative (NXDOMAIN, or NOERROR with
    no answer): the SOA's minimum or its TTL, whichever is smaller (RFC 2308), capped by negative_ttl.
    """
    rcode = rec.header.rcode
    if rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN) or rec.header.tc:
        return 0
    if rcode == RCODE.NOERROR and rec.rr:
        ttl = min(rr.ttl for rr in rec.rr + rec.auth)
        return max(min_ttl, min(max_ttl, ttl))
    soas = [rr for rr in rec.auth if rr.rtype == QTYPE.SOA]
    if not soas:
        return 0  # RFC 2308: without an SOA a negative answer is not cached
    ttl = min(soas[0].ttl, soas[0].rdata.times[-1])
    return max(0, min(negative_ttl, max_ttl, max(min_ttl, ttl)))


class AnswerCache:
    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        self.size = max(1, size)
        self._d: OrderedDict[CacheKey, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def put(self, key: CacheKey, rec: DNSRecord, ttl: int) -> None:
        if ttl <= 0:
            return
        now = time.monotonic()
        self._d[key] = Entry(rec, now, now + ttl)
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def get(self, key: CacheKey) -> DNSRecord | None:
        """A copy of the cached answer with TTLs counted down, or None when absent or expired."""
        e = self._d.get(key)
        if e is None:
            return None
        now = time.monotonic()
        if now >= e.expires:
            del self._d[key]
            return None
        self._d.move_to_end(key)
        elapsed = int(now - e.stored)
        out = DNSRecord(header=e.record.header)
        out.rr = [_aged(rr, elapsed) for rr in e.record.rr]
        out.auth = [_aged(rr, elapsed) for rr in e.record.auth]
        out.ar = [_aged(rr, elapsed) for rr in e.record.ar if rr.rtype != QTYPE.OPT]
        return out


def _aged(rr: RR, elapsed: int) -> RR:
    return RR(rr.rname, rr.rtype, rr.rclass, max(0, rr.ttl - elapsed), rr.rdata)
