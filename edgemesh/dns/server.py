"""The DNS server: UDP and TCP listeners in front of the cluster zone and the forwarder.

Hot path: a repeated UDP question (same bytes after the 2-byte ID) for a cluster name is answered
from a cache of packed responses — one dict look-up and a sendto — until the ServiceTable changes.
Everything else is parsed with dnslib. Malformed input gets FORMERR (or is dropped when it is not
even a query header) and never reaches beyond the one packet.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Coroutine
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, DNSError, DNSHeader, DNSRecord  # type: ignore[import-untyped]

from . import metrics
from .forward import Forwarder
from .zone import Answer, ClusterZone

log = logging.getLogger(__name__)

MIN_UDP_PAYLOAD = 512  # RFC 1035: without EDNS0 a UDP answer is at most this long
MAX_UDP_PAYLOAD = 4096  # EDNS0 sizes above this are treated as this
OUR_PAYLOAD = 1232  # what we advertise in our own OPT record
MAX_QUERY_SIZE = 4096  # no real query comes near; anything bigger is FORMERR
TCP_MAX_MESSAGE = 65535
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 suggests seconds, not minutes
TCP_READ_TIMEOUT = 5.0  # once a length prefix arrived, the message must follow this quickly
DEFAULT_MAX_TCP_CLIENTS = 256
DEFAULT_MAX_PENDING = 1024  # queries waiting on upstreams at once; more get SERVFAIL
ANSWER_CACHE_LIMIT = 8192  # packed cluster answers kept (oldest evicted first)
ANSWER_CACHE_KEY_LIMIT = 512  # longer queries are answered but not cached
UDP_SOCKET_BUFFER = 1 << 20  # kernel receive buffer asked for, to ride out bursts
EPHEMERAL_BIND_ATTEMPTS = 20  # port 0: tries at a UDP port whose TCP twin is also free
UDP_BATCH = 64  # datagrams read per event-loop wake-up before other work gets a turn
UDP_RECV_SIZE = MAX_QUERY_SIZE + 1  # anything longer is FORMERR anyway; its tail is irrelevant
MAX_CNAME_CHASE = 8
REVERSE_SUFFIXES = ((b"in-addr", b"arpa"), (b"ip6", b"arpa"))
_RESULT = {
    RCODE.NOERROR: "noerror",
    RCODE.NXDOMAIN: "nxdomain",
    RCODE.SERVFAIL: "servfail",
    RCODE.FORMERR: "formerr",
    RCODE.REFUSED: "refused",
    RCODE.NOTIMP: "notimp",
}

Handled = bytes | Coroutine[Any, Any, bytes | None] | None


def _qtype_label(qtype: int) -> str:
    name = QTYPE.get(qtype, "OTHER")
    return name if name in metrics.QTYPE_LABELS else "OTHER"


def formerr(data: bytes) -> bytes:
    """FORMERR for a packet we could not parse: its ID and opcode, no sections."""
    flags = 0x8000 | (data[2] & 0x78) << 8 | RCODE.FORMERR
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class DNSServer:
    def __init__(
        self,
        zone: ClusterZone,
        forwarder: Forwarder,
        host: str = "169.254.96.16",
        port: int = 53,
        *,
        max_tcp_clients: int = DEFAULT_MAX_TCP_CLIENTS,
        max_pending: int = DEFAULT_MAX_PENDING,
        answer_cache: bool = True,
    ) -> None:
        self.zone = zone
        self.table = zone.table
        self.forwarder = forwarder
        self.host = host
        self.port = port
        self.max_tcp_clients = max_tcp_clients
        self.max_pending = max_pending
        self.answer_cache = answer_cache  # off only to measure the uncached path
        self._answers: dict[bytes, tuple[bytes, Any]] = {}
        self._generation = -1
        self._udp: _UDPListener | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_clients = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._counters: dict[tuple[int, str], Any] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        # Port 0 asks for any free port: the kernel picks one for UDP and its TCP twin may be taken,
        # so an ephemeral choice is retried (bounded); a configured port fails at once.
        ephemeral = self.port == 0
        for attempt in range(EPHEMERAL_BIND_ATTEMPTS if ephemeral else 1):
            try:
                await self._bind(0 if ephemeral else self.port)
                break
            except OSError:
                if attempt == (EPHEMERAL_BIND_ATTEMPTS if ephemeral else 1) - 1:
                    raise
        log.info("dns: serving %s on %s:%d (udp+tcp)", self.zone.domain, self.host, self.port)

    async def _bind(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        listener = _UDPListener(self, sock)
        bound = sock.getsockname()[1]  # port 0 → the one the kernel chose, also for TCP
        try:
            self._tcp = await asyncio.start_server(self._tcp_client, self.host, bound, reuse_address=True)
        except OSError:
            listener.close()
            raise
        self._udp = listener
        self.port = bound

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for w in list(self._writers):
                w.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for t in list(self._pending):
            t.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    # -- counting -------------------------------------------------------------------------------

    def _counter(self, qtype: int, result: str) -> Any:
        c = self._counters.get((qtype, result))
        if c is None:
            c = self._counters[(qtype, result)] = metrics.QUERIES.labels(_qtype_label(qtype), result)
        return c

    # -- request handling -----------------------------------------------------------------------

    def cached(self, key: bytes) -> tuple[bytes, Any] | None:
        if self._generation != self.table.generation:
            self._answers.clear()
            self._generation = self.table.generation
        return self._answers.get(key)

    def handle(self, data: bytes, limit: int, cacheable: bool = False) -> Handled:
        """bytes to send now, a coroutine producing them (forwarding), or None to drop the packet."""
        if len(data) < 12:
            metrics.DROPPED.labels("short").inc()
            return None
        if data[2] & 0x80:
            metrics.DROPPED.labels("response").inc()  # never answer answers (reflection loops)
            return None
        if len(data) > MAX_QUERY_SIZE:
            self._counter(0, "formerr").inc()
            return formerr(data)
        try:
            req = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error, UnicodeError):
            self._counter(0, "formerr").inc()
            return formerr(data)
        opts = [rr for rr in req.ar if rr.rtype == QTYPE.OPT]
        if req.header.opcode != 0:
            return self._error(req, RCODE.NOTIMP, limit)
        if len(req.questions) != 1 or len(opts) > 1:
            return self._error(req, RCODE.FORMERR, limit)
        if opts:
            limit = min(limit, max(MIN_UDP_PAYLOAD, min(opts[0].rclass, MAX_UDP_PAYLOAD)))
        elif limit < TCP_MAX_MESSAGE:
            limit = MIN_UDP_PAYLOAD
        q = req.q
        labels = tuple(x.lower() for x in q.qname.label)
        if self.zone.contains(labels):
            if q.qclass not in (1, 255):  # IN, ANY
                return self._error(req, RCODE.REFUSED, limit)
            if not self.table.synced:
                # An NXDOMAIN now would be cached by clients for a name that may well exist.
                return self._error(req, RCODE.SERVFAIL, limit)
            ans = self.zone.resolve(labels, q.qtype)
            if ans.chase:
                return self._chase(req, ans, limit)
            wire = self._pack(self._reply(req, ans), limit)
            counter = self._counter(q.qtype, ans.kind)
            counter.inc()
            if cacheable and len(data) <= ANSWER_CACHE_KEY_LIMIT:
                self._remember(data[2:], wire[2:], counter)
            return wire
        if q.qtype == QTYPE.PTR and labels[-2:] in REVERSE_SUFFIXES:
            ans = self.zone.resolve_ptr(labels)
            if not ans.forward:
                counter = self._counter(q.qtype, ans.kind)
                counter.inc()
                wire = self._pack(self._reply(req, ans), limit)
                if cacheable and len(data) <= ANSWER_CACHE_KEY_LIMIT:
                    self._remember(data[2:], wire[2:], counter)
                return wire
        return self._forward(req, limit)

    def _remember(self, key: bytes, payload: bytes, counter: Any) -> None:
        if self._generation != self.table.generation:
            self._answers.clear()
            self._generation = self.table.generation
        if len(self._answers) >= ANSWER_CACHE_LIMIT:
            del self._answers[next(iter(self._answers))]
        self._answers[key] = (payload, counter)

    def _reply(self, req: DNSRecord, ans: Answer, authoritative: bool = True) -> DNSRecord:
        h = DNSHeader(id=req.header.id, qr=1, aa=int(authoritative), rd=req.header.rd, ra=1, rcode=ans.rcode)
        r = DNSRecord(h, q=req.q)
        r.rr = list(ans.answer)
        r.auth = list(ans.authority)
        r.ar = list(ans.additional)
        if any(rr.rtype == QTYPE.OPT for rr in req.ar):
            r.add_ar(EDNS0(udp_len=OUR_PAYLOAD))
        return r

    def _error(self, req: DNSRecord, rcode: int, limit: int) -> bytes:
        self._counter(req.q.qtype if req.questions else 0, _RESULT.get(rcode, "other")).inc()
        return self._pack(self._reply(req, Answer(rcode=rcode), authoritative=False), limit)

    def _pack(self, r: DNSRecord, limit: int) -> bytes:
        wire = r.pack()
        if len(wire) <= limit:
            return bytes(wire)
        # Too big for this client's UDP buffer: header, question and OPT with TC set; it retries on TCP.
        metrics.TRUNCATED.inc()
        t = DNSRecord(DNSHeader(id=r.header.id, bitmap=r.header.bitmap), q=r.q)
        t.header.tc = 1
        t.ar = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
        return bytes(t.pack())

    async def _forward(self, req: DNSRecord, limit: int) -> bytes | None:
        q = req.q
        rec = await self.forwarder.resolve(str(q.qname), q.qtype, q.qclass)
        if rec is None:
            return self._error(req, RCODE.SERVFAIL, limit)
        ans = Answer(
            rcode=rec.header.rcode,
            answer=rec.rr,
            authority=rec.auth,
            additional=[rr for rr in rec.ar if rr.rtype != QTYPE.OPT],
        )
        kind = _RESULT.get(rec.header.rcode, "other")
        if kind == "noerror" and not rec.rr:
            kind = "nodata"
        self._counter(q.qtype, kind).inc()
        return self._pack(self._reply(req, ans, authoritative=False), limit)

    async def _chase(self, req: DNSRecord, ans: Answer, limit: int) -> bytes | None:
        """ExternalName: the CNAME plus the target's records (from the zone or upstream)."""
        target = ans.chase
        for _ in range(MAX_CNAME_CHASE):
            labels = tuple(x.encode().lower() for x in target.rstrip(".").split("."))
            if self.zone.contains(labels):
                more = self.zone.resolve(labels, req.q.qtype)
                ans.answer.extend(more.answer)
                ans.rcode = more.rcode
                if not more.chase:
                    break
                target = more.chase
                continue
            rec = await self.forwarder.resolve(target, req.q.qtype, req.q.qclass)
            if rec is not None:
                ans.answer.extend(rec.rr)
                if rec.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
                    ans.rcode = rec.header.rcode
            break
        self._counter(req.q.qtype, _RESULT.get(ans.rcode, "other")).inc()
        return self._pack(self._reply(req, ans), limit)

    # -- transports -----------------------------------------------------------------------------

    def _udp_packet(self, data: bytes, addr: Any, transport: _UDPListener) -> None:
        try:
            out = self.handle(data, MAX_UDP_PAYLOAD, cacheable=self.answer_cache)
        except Exception:
            log.exception("dns: failed to answer a %d-byte query from %s", len(data), addr)
            out = formerr(data) if len(data) >= 12 else None
        if out is None:
            return
        if isinstance(out, bytes):
            transport.sendto(out, addr)
            return
        if len(self._pending) >= self.max_pending:
            out.close()
            metrics.DROPPED.labels("overload").inc()
            return
        task = asyncio.create_task(self._udp_later(out, addr, transport))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _udp_later(
        self, work: Coroutine[Any, Any, bytes | None], addr: Any, transport: _UDPListener
    ) -> None:
        try:
            out = await work
        except Exception:
            log.exception("dns: forwarding for %s failed", addr)
            return
        if out is not None and not transport.is_closing():
            transport.sendto(out, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= self.max_tcp_clients:
            metrics.DROPPED.labels("tcp_clients").inc()
            writer.close()
            return
        self._tcp_clients += 1
        self._writers.add(writer)
        try:
            while True:
                (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT))
                data = await asyncio.wait_for(reader.readexactly(n), TCP_READ_TIMEOUT)
                try:
                    out = self.handle(data, TCP_MAX_MESSAGE)
                    if out is not None and not isinstance(out, bytes):
                        out = await out
                except Exception:
                    log.exception("dns: failed to answer a %d-byte TCP query", len(data))
                    out = formerr(data) if len(data) >= 12 else None
                if out is None:
                    break  # not a query: a TCP peer speaking something else gets hung up on
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients -= 1
            self._writers.discard(writer)
            writer.close()


class _UDPListener:
    """The UDP socket, read directly from the event loop: up to UDP_BATCH datagrams per wake-up.

    asyncio's datagram transport takes one datagram per selector round and buffers unsent answers
    without bound; here a busy socket is drained in batches and an answer the kernel will not take
    is dropped (UDP clients retry) rather than queued.
    """

    def __init__(self, server: DNSServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)

    def sendto(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            metrics.DROPPED.labels("backlog").inc()
        except OSError as e:
            log.debug("dns: cannot answer %s: %s", addr, e)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _readable(self) -> None:
        server = self.server
        recvfrom = self.sock.recvfrom
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. a queued ICMP error; the socket itself is fine
                log.debug("dns: udp receive: %s", e)
                return
            hit = server.cached(data[2:])
            if hit is not None:
                self.sendto(data[:2] + hit[0], addr)
                hit[1].inc()
                metrics.ANSWER_CACHE_HITS.inc()
            else:
                server._udp_packet(data, addr, self)
