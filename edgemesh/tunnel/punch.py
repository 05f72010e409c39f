"""Hole punching on the tunnel's UDP socket: simultaneous probes toward the address the relay
introduced, then QUIC over the 4-tuple that got through. Probes carry the punch id both sides
learnt from the relay; a PROBE proves the peer→us direction, its PROBE_ACK the us→peer one. The
QUIC server accepts an Initial only from the address of a punch it is taking part in."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from .identity import Identity, Verifier
from .quic import QuicLink, configuration, new_connection
from .rendezvous import Offer
from .udp import Addr, Ctl, UdpEndpoint, ctl_packet, open_udp

log = logging.getLogger(__name__)

# Probes: one every PROBE_INTERVAL, at most PROBE_COUNT per punch (3 s of trying).
PROBE_INTERVAL = 0.1
PROBE_COUNT = 30
# Punches in progress at once, and QUIC connections kept (one per punched peer, plus closing ones).
MAX_PUNCHES = 64
MAX_LINKS = 256
QUIC_CID_LENGTH = 8  # aioquic's default local connection id length


class PunchFailed(ConnectionError):
    """UDP did not get through both ways, or QUIC over it did not come up."""


@dataclass
class _Punch:
    offer: Offer
    addr: Addr
    inbound: bool = False  # a PROBE of this punch arrived
    outbound: bool = False  # a PROBE_ACK arrived: our probes get through
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    link: asyncio.Future[QuicLink] | None = None  # the QUIC server side: the peer's Initial arrived


class HolePuncher:
    def __init__(self, identity: Identity, verifier: Verifier, *, idle_timeout: float) -> None:
        self._identity, self._verifier = identity, verifier
        self._idle_timeout = idle_timeout
        self.udp: UdpEndpoint | None = None
        self._links: dict[Addr, QuicLink] = {}
        self._punches: dict[str, _Punch] = {}  # by peer node
        self._by_id: dict[bytes, _Punch] = {}
        self.unexpected_datagrams = 0

    async def start(self, host: str, port: int) -> UdpEndpoint:
        self.udp = await open_udp(host, port, self._on_ctl, self._on_quic, self._on_writable)
        return self.udp

    def stop(self) -> None:
        for link in list(self._links.values()):
            link.close("tunnel stopping")
        if self.udp is not None:
            self.udp.close()

    def send(self, data: bytes, addr: Addr) -> None:
        if self.udp is not None:
            self.udp.sendto(data, addr)

    def links(self) -> int:
        return len(self._links)

    async def punch(self, offer: Offer, deadline_s: float) -> QuicLink:
        """Probe toward offer.addr and bring QUIC up over it (as client or server per the offer);
        the returned link's peer is verified to be offer.peer. PunchFailed otherwise."""
        if len(self._punches) >= MAX_PUNCHES and offer.peer not in self._punches:
            raise PunchFailed(f"too many punches in progress ({MAX_PUNCHES})")
        cur = self._punches.get(offer.peer)
        if cur is not None:
            # Both ends asked at once: both keep the offer with the lower punch id.
            if cur.offer.punch_id <= offer.punch_id:
                raise PunchFailed(f"another punch to {offer.peer} is in progress")
            self._drop(cur)
        p = _Punch(offer, offer.addr)
        if not offer.client:
            p.link = asyncio.get_running_loop().create_future()
        self._punches[offer.peer] = p
        self._by_id[offer.punch_id] = p
        link: QuicLink | None = None
        try:
            async with asyncio.timeout(deadline_s):
                if offer.client:
                    if not await self._probe(p, until_both=True):
                        seen = (
                            "nothing"
                            if not (p.inbound or p.outbound)
                            else ("probes" if p.inbound else "acks")
                        )
                        raise PunchFailed(
                            f"no way through after {PROBE_COUNT} probes (saw {seen} from the peer)"
                        )
                    link = self._client_link(p)
                else:
                    assert p.link is not None
                    prober = asyncio.ensure_future(self._probe(p, until_both=False))
                    try:
                        link = await p.link
                    finally:
                        prober.cancel()
                await link.ready
            return link
        except (TimeoutError, ConnectionError) as e:
            if link is not None:
                link.close(f"punch failed: {e}", error=True)
            stage = "QUIC" if link is not None else "UDP probes"
            why = "timed out" if isinstance(e, TimeoutError) else str(e)
            raise PunchFailed(f"hole punch to {offer.peer} at {_fmt(p.addr)}: {stage}: {why}") from None
        finally:
            self._drop(p)

    def _drop(self, p: _Punch) -> None:
        if self._punches.get(p.offer.peer) is p:
            del self._punches[p.offer.peer]
        if self._by_id.get(p.offer.punch_id) is p:
            del self._by_id[p.offer.punch_id]
        if p.link is not None and not p.link.done():
            p.link.cancel()

    async def _probe(self, p: _Punch, *, until_both: bool) -> bool:
        """Send up to PROBE_COUNT probes; with until_both, stop once both directions are seen."""
        packet = ctl_packet(Ctl.PROBE, p.offer.punch_id)
        for _ in range(PROBE_COUNT):
            if until_both and p.inbound and p.outbound:
                return True
            self.send(packet, p.addr)
            p.changed.clear()
            try:
                await asyncio.wait_for(p.changed.wait(), PROBE_INTERVAL)
            except TimeoutError:
                pass  # next probe: the interval is the probing rate, not a wait for state
        return p.inbound and p.outbound

    def _client_link(self, p: _Punch) -> QuicLink:
        old = self._links.get(p.addr)
        if old is not None:
            old.close("replaced by a new punch")
        if len(self._links) >= MAX_LINKS:
            raise PunchFailed(f"too many QUIC connections ({MAX_LINKS})")
        cfg = configuration(self._identity, client=True, idle_timeout=self._idle_timeout)
        assert self.udp is not None
        link = QuicLink(new_connection(cfg), p.addr, self.udp, self._verifier, p.offer.peer, self._forget)
        self._links[p.addr] = link
        link.connect()
        return link

    def _forget(self, link: QuicLink) -> None:
        if self._links.get(link.addr) is link:
            del self._links[link.addr]

    # ---- datagrams -------------------------------------------------------------------------
    def _on_ctl(self, kind: Ctl, body: bytes, addr: Addr) -> None:
        p = self._by_id.get(body)
        if p is None:
            self.unexpected_datagrams += 1
            return
        if kind is Ctl.PROBE:
            # The peer's probe shows where its packets really come from (a NAT may pick another
            # port than the relay saw): answer and use that address from now on.
            p.addr = addr
            p.inbound = True
            self.send(ctl_packet(Ctl.PROBE_ACK, body), addr)
        elif kind is Ctl.PROBE_ACK:
            p.addr = addr
            p.outbound = True
        p.changed.set()

    def _on_quic(self, data: bytes, addr: Addr) -> None:
        link = self._links.get(addr)
        if link is not None:
            link.datagram(data, addr)
            return
        p = next((p for p in self._punches.values() if p.addr == addr and p.link is not None), None)
        if p is None or p.link is None or p.link.done() or len(self._links) >= MAX_LINKS:
            self.unexpected_datagrams += 1
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=QUIC_CID_LENGTH)
        except ValueError:
            self.unexpected_datagrams += 1
            return
        if header.packet_type is not QuicPacketType.INITIAL:
            self.unexpected_datagrams += 1
            return
        cfg = configuration(self._identity, client=False, idle_timeout=self._idle_timeout)
        assert self.udp is not None
        conn = new_connection(cfg, header.destination_cid)
        link = QuicLink(conn, addr, self.udp, self._verifier, p.offer.peer, self._forget)
        self._links[addr] = link
        p.link.set_result(link)
        link.datagram(data, addr)

    def _on_writable(self) -> None:
        for link in list(self._links.values()):
            link.transmit_soon()


def _fmt(a: Addr) -> str:
    return f"{a[0]}:{a[1]}"
