"""Forwarding to upstream resolvers: UDP from a fresh random port per query (spoofing resistance),
TCP retry when the answer is truncated, identical concurrent questions coalesced, answers cached."""

from __future__ import annotations

import asyncio
import logging
import random
import struct

from dnslib import EDNS0, DNSError, DNSQuestion, DNSRecord  # type: ignore[import-untyped]

from . import metrics
from .cache import AnswerCache, CacheKey, answer_ttl
from .resolvconf import Upstreams

log = logging.getLogger(__name__)

UPSTREAM_PAYLOAD = 1232  # our EDNS0 buffer toward upstreams (DNS flag day 2020's safe size)
DEFAULT_TIMEOUT = 2.0
DEFAULT_MAX_INFLIGHT = 1024
TCP_MAX_MESSAGE = 65535


class UpstreamError(Exception):
    pass


class _OneShot(asyncio.DatagramProtocol):
    """Waits for the first datagram that answers our id and question; ignores anything else."""

    def __init__(self, qid: int, question: DNSQuestion) -> None:
        self.qid = qid
        self.question = question
        self.done: asyncio.Future[DNSRecord] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or len(data) < 12 or struct.unpack_from("!H", data)[0] != self.qid:
            return
        try:
            rec = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error):
            return
        if not rec.header.qr or not rec.questions or not _same_question(rec.questions[0], self.question):
            return
        self.done.set_result(rec)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(UpstreamError(f"{type(exc).__name__}: {exc}"))


def _same_question(a: DNSQuestion, b: DNSQuestion) -> bool:
    return (
        a.qtype == b.qtype
        and a.qclass == b.qclass
        and tuple(x.lower() for x in a.qname.label) == tuple(x.lower() for x in b.qname.label)
    )


class Forwarder:
    def __init__(
        self,
        upstreams: Upstreams,
        cache: AnswerCache | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        min_ttl: int = 0,
        max_ttl: int = 3600,
        negative_ttl: int = 30,
    ) -> None:
        self.upstreams = upstreams
        self.cache = cache if cache is not None else AnswerCache()
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self._inflight: dict[CacheKey, asyncio.Future[DNSRecord | None]] = {}

    async def resolve(self, name: str, qtype: int, qclass: int = 1) -> DNSRecord | None:
        """The upstream answer (from cache when fresh), or None when no upstream answered."""
        key: CacheKey = (name.lower().encode(errors="surrogateescape"), qtype, qclass)
        hit = self.cache.get(key)
        if hit is not None:
            metrics.CACHE_HITS.inc()
            return hit
        metrics.CACHE_MISSES.inc()
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._inflight) >= self.max_inflight:
            metrics.FORWARDED.labels("overload").inc()
            return None
        fut: asyncio.Future[DNSRecord | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            rec = await self._ask(name, qtype, qclass)
            if rec is not None:
                self.cache.put(key, rec, answer_ttl(rec, self.min_ttl, self.max_ttl, self.negative_ttl))
            fut.set_result(rec)
            return rec
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # waiters re-raise it; the future itself must not warn as unretrieved
            raise
        finally:
            del self._inflight[key]

    async def _ask(self, name: str, qtype: int, qclass: int) -> DNSRecord | None:
        servers = self.upstreams.servers()
        if not servers:
            metrics.FORWARDED.labels("no_upstream").inc()
            return None
        for host, port in servers:
            q = DNSRecord(q=DNSQuestion(name, qtype, qclass))
            q.header.id = random.getrandbits(16)
            q.header.rd = 1
            q.add_ar(EDNS0(udp_len=UPSTREAM_PAYLOAD))
            try:
                rec = await asyncio.wait_for(self._udp(host, port, q), self.timeout)
                if rec.header.tc:
                    rec = await asyncio.wait_for(self._tcp(host, port, q), self.timeout)
            except TimeoutError:
                metrics.FORWARDED.labels("timeout").inc()
                log.debug("dns: upstream %s:%d timed out for %r", host, port, name)
                continue
            except (OSError, UpstreamError, DNSError, asyncio.IncompleteReadError) as e:
                metrics.FORWARDED.labels("error").inc()
                log.debug("dns: upstream %s:%d failed for %r: %s", host, port, name, e)
                continue
            metrics.FORWARDED.labels("ok").inc()
            return rec
        return None

    async def _udp(self, host: str, port: int, q: DNSRecord) -> DNSRecord:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneShot(q.header.id, q.q), remote_addr=(host, port)
        )
        try:
            transport.sendto(q.pack())
            return await proto.done
        finally:
            transport.close()

    async def _tcp(self, host: str, port: int, q: DNSRecord) -> DNSRecord:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            wire = q.pack()
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            rec = DNSRecord.parse(await reader.readexactly(n))
        finally:
            writer.close()
        if rec.header.id != q.header.id or not rec.questions or not _same_question(rec.questions[0], q.q):
            raise UpstreamError("TCP answer does not match the question")
        return rec
