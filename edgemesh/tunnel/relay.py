"""RelayServer: splices streams between nodes that cannot reach each other (run by cloudcore, or
by an agent with a public address). Each node keeps one TLS session to it; a RELAY_TO stream from
node A is matched with a RELAYED_FROM stream to node B and bytes are copied both ways. A and B run
their own TLS inside, so the relay authenticates both ends but reads and forges nothing.

The relay is also the rendezvous for hole punching (rendezvous.py): it listens on UDP on the same
port to see each node's public UDP address, and introduces nodes to each other."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from .dial import check_peer, fmt_addr, listen, tls_over
from .frames import Open, OpenKind
from .identity import Identity, PeerRejected
from .peers import DEFAULT_PORT
from .rendezvous import RendezvousServer
from .session import Session
from .splice import splice
from .stream import MuxStream, StreamRefused
from .udp import UdpEndpoint, bind_same_port, open_udp

log = logging.getLogger(__name__)


class RelayServer:
    def __init__(
        self,
        identity: Identity,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        *,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 15.0,
        open_timeout: float = 10.0,
        window: int = 1024 * 1024,
    ) -> None:
        self.identity = identity
        self.host, self._port = host, port
        self._ka = (keepalive_interval, keepalive_timeout)
        self._open_timeout = open_timeout
        self._window = window
        self._verifier = identity.verifier()
        self._ctx: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._udp: UdpEndpoint | None = None
        self.rendezvous = RendezvousServer()
        self.sessions: dict[str, Session] = {}
        self._all: set[Session] = set()
        self.spliced_streams = 0
        self.refused_streams = 0
        self.handshakes_refused = 0
        self._bytes_done = 0
        self._live: dict[int, tuple[list[int], list[int]]] = {}  # splices running, by id

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._ctx = self.identity.server_context()
        self._server, self._udp = await bind_same_port(
            self._port,
            lambda p: listen(self.host, p, self._on_connection),
            lambda p: open_udp(self.host, p, self.rendezvous.on_udp, _ignore, _nothing),
        )
        log.info("tunnel relay listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self._all):
            s.close("relay stopping")
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            await self._server.wait_closed()

    def stats(self) -> dict[str, Any]:
        return {
            "nodes_connected": sorted(self.sessions),
            "spliced_streams": self.spliced_streams,
            "refused_streams": self.refused_streams,
            "handshakes_refused": self.handshakes_refused,
            "bytes_relayed": self.bytes_relayed,
            "rendezvous_observed": self.rendezvous.observed(),
            "introductions": self.rendezvous.introductions,
        }

    async def _on_connection(self, transport: asyncio.Transport, addr: Any) -> None:
        assert self._ctx is not None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await tls_over(transport, self._ctx, server_side=True)
            name = check_peer(writer, self._verifier, None)
        except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
            self.handshakes_refused += 1
            log.warning(
                "tunnel relay: refused connection from %s: %s", fmt_addr(addr), str(e) or type(e).__name__
            )
            (writer.transport if writer is not None else transport).abort()
            return
        s = Session(
            reader,
            writer,
            initiator=False,
            peer=name,
            path="relay",
            on_open=self._on_open,
            keepalive_interval=self._ka[0],
            keepalive_timeout=self._ka[1],
            window=self._window,
        )
        s.start()
        self._all.add(s)
        old = self.sessions.get(name)
        self.sessions[name] = s  # a node that reconnects replaces its old session
        if old is not None:
            old.goaway("the node connected again")
        s.closed.add_done_callback(lambda _f: self._forget(s))
        log.info("tunnel relay: node %s connected from %s", name, fmt_addr(addr))

    def _forget(self, s: Session) -> None:
        self._all.discard(s)
        if self.sessions.get(s.peer) is s:
            del self.sessions[s.peer]
        log.info("tunnel relay: node %s gone: %s", s.peer, s.closed.result())

    async def _on_open(self, src: Session, stream: MuxStream, o: Open) -> None:
        if o.kind is OpenKind.RENDEZVOUS:
            src.accept(stream)
            await self.rendezvous.serve(src, stream)
            return
        if o.kind is not OpenKind.RELAY_TO:
            self.refused_streams += 1
            raise StreamRefused(f"this is a relay: it forwards to nodes, not {o.kind.name}")
        dst = self.sessions.get(o.target)
        if dst is None or not dst.usable:
            self.refused_streams += 1
            raise StreamRefused(f"node {o.target} is not connected to this relay")
        try:
            out = await dst.open(
                Open(OpenKind.RELAYED_FROM, "TCP", 0, src.peer), deadline_s=self._open_timeout
            )
        except (StreamRefused, ConnectionError) as e:
            self.refused_streams += 1
            raise StreamRefused(f"node {o.target} refused: {e}") from None
        src.accept(stream)
        self.spliced_streams += 1
        counters: tuple[list[int], list[int]] = ([0], [0])
        self._live[id(counters)] = counters
        try:
            ab, ba = await splice(stream.streams(), out.streams(), counters)
        finally:
            del self._live[id(counters)]
        self._bytes_done += ab + ba

    @property
    def bytes_relayed(self) -> int:
        """Bytes copied between nodes so far, including splices still running."""
        return self._bytes_done + sum(a[0] + b[0] for a, b in self._live.values())


def _ignore(data: bytes, addr: tuple[str, int]) -> None:
    """QUIC datagrams: the relay carries none (peers speak QUIC to each other only)."""


def _nothing() -> None:
    pass
