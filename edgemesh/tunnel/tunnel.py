"""The agent's tunnel: one authenticated session per peer node, chosen by path, streams opened on
demand, inbound streams connected to this node's endpoints.

Paths, best first: direct (TLS over TCP to an address the peer advertises), holepunch (QUIC with
mutual TLS over a UDP 4-tuple punched through both NATs, see punch.py), relay (nested TLS through
a relay session). A new peer is reached direct, else through a relay at once; a relayed session
then asks the relay (which doubles as rendezvous) to introduce the two nodes, and a punched
session that comes up replaces the relayed one, whose streams drain. A punched session that dies
falls back to the relay at once; the upgrader retries punches and direct addresses periodically."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dial import check_peer, dial_tls, fmt_addr, listen, tls_over
from .frames import Open, OpenKind
from .identity import Identity, PeerRejected
from .metrics import TunnelMetrics
from .peers import DEFAULT_PORT, Peer
from .rendezvous import Offer, RendezvousClient
from .session import Session
from .stream import INITIAL_WINDOW, MuxStream, StreamRefused
from .target import Serves, connect_target
from .udp import bind_same_port

if TYPE_CHECKING:
    # QUIC (aioquic, and with it cryptography's x509 and AEAD code) is imported only when this
    # tunnel can punch: about 12 MiB of an idle agent's RSS otherwise.
    from .punch import HolePuncher
    from .quic import QuicLink

log = logging.getLogger(__name__)

PATH_RANK = {"direct": 0, "holepunch": 1, "relay": 2}
RELAY_BACKOFF_MIN = 0.2
RELAY_BACKOFF_MAX = 10.0
# After a failed connect the peer is not retried (open() fails fast with the last reason) until
# this backoff has passed; it doubles per failure up to the max.
PEER_BACKOFF_MIN = 0.5
PEER_BACKOFF_MAX = 30.0


@dataclass
class TunnelConfig:
    node_name: str
    identity: Identity
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    relays: tuple[tuple[str, int], ...] = ()
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 15.0
    dial_timeout: float = 3.0
    open_timeout: float = 10.0
    upgrade_interval: float = 30.0  # how often a relayed peer is retried on a direct path
    window: int = 1024 * 1024  # per-stream receive window
    holepunch: bool = True  # listen on UDP too, register with relays, punch toward relayed peers
    punch_timeout: float = 10.0  # probes + QUIC handshake, per attempt


@dataclass
class _PeerState:
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


class Tunnel:
    def __init__(self, config: TunnelConfig, serves: Serves, peers: Mapping[str, Peer] | None = None) -> None:
        self.config = config
        self.name = config.node_name
        self._serves = serves
        self._peers: dict[str, Peer] = dict(peers or {})
        self.metrics = TunnelMetrics()
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: ssl.SSLContext | None = None
        self._verifier = config.identity.verifier()
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, Session] = {}  # the session new streams to a peer use
        self._all: set[Session] = set()
        self._relays: dict[tuple[str, int], Session] = {}
        self._connecting: dict[str, asyncio.Task[Session]] = {}
        self._state: dict[str, _PeerState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.relay_up = asyncio.Event()
        self._punch: HolePuncher | None = None
        self._rendezvous: dict[tuple[str, int], RendezvousClient] = {}
        self._punching: set[str] = set()  # peers a punch we asked for is in progress to

    # ---- public ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    def set_peers(self, peers: Mapping[str, Peer] | Iterable[Peer]) -> None:
        items = peers.values() if isinstance(peers, Mapping) else peers
        self._peers = {p.name: p for p in items if p.name != self.name}

    async def start(self) -> None:
        self._server_ctx = self.config.identity.server_context()
        self._client_ctx = self.config.identity.client_context()
        host = self.config.listen_host
        # Punching needs a relay (the rendezvous): without one no offer can ever arrive.
        if self.config.holepunch and self.config.relays:
            from .punch import HolePuncher

            punch = self._punch = HolePuncher(
                self.config.identity, self._verifier, idle_timeout=2 * self.config.keepalive_timeout
            )
            self._server, _ = await bind_same_port(
                self.config.listen_port,
                lambda p: listen(host, p, self._on_connection),
                lambda p: punch.start(host, p),
            )
        else:
            self._server = await listen(host, self.config.listen_port, self._on_connection)
        for addr in self.config.relays:
            self._spawn(self._relay_link(addr), f"tunnel-relay-{addr[0]}:{addr[1]}")
        self._spawn(self._upgrader(), "tunnel-upgrader")
        log.info("tunnel %s listening on %s:%d", self.name, self.config.listen_host, self.port)

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for s in list(self._all) + list(self._relays.values()):
            s.close("tunnel stopping")
        tasks = list(self._tasks) + list(self._connecting.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._punch is not None:
            self._punch.stop()
        if self._server is not None:
            await self._server.wait_closed()

    def paths(self) -> dict[str, str]:
        return {peer: s.path for peer, s in self._sessions.items() if not s.closed.done()}

    def stats(self) -> dict[str, Any]:
        live: dict[str, tuple[int, int]] = {}
        for s in self._all:
            i, o = live.get(s.path, (0, 0))
            live[s.path] = (i + s.bytes_in, o + s.bytes_out)
        snap = self.metrics.snapshot(live, self.paths())
        snap["relays_connected"] = sum(1 for s in self._relays.values() if s.usable)
        observed = [rv.observed for rv in self._rendezvous.values() if rv.observed is not None]
        snap["udp"] = {
            "enabled": self._punch is not None,
            "observed": fmt_addr(observed[0]) if observed else None,
            "quic_links": self._punch.links() if self._punch is not None else 0,
            "unexpected_datagrams": self._punch.unexpected_datagrams if self._punch is not None else 0,
        }
        return snap

    async def open(
        self, node_name: str, ip: str, port: int, protocol: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to ip:port/protocol served by node `node_name` (the Dialer interface)."""
        if protocol not in ("TCP", "UDP"):
            self.metrics.streams_failed += 1
            raise StreamRefused(f"{protocol} is not carried by the tunnel")
        o = Open(OpenKind.CONNECT, protocol, port, ip)
        for attempt in range(2):
            session: Session | None = None
            try:
                session = await self._session_for(node_name)
                stream = await session.open(o, deadline_s=self.config.open_timeout)
            except StreamRefused:
                # Refused because the session was closing under us (replaced by a better path,
                # drained): one retry on the session that replaced it.
                if attempt == 0 and session is not None and not session.usable:
                    continue
                self.metrics.streams_failed += 1
                raise
            except (ConnectionError, TimeoutError):
                if attempt == 0 and session is not None:  # the session died mid-open: reconnect once
                    continue
                self.metrics.streams_failed += 1
                raise
            self.metrics.streams_opened[session.path] += 1
            return stream.streams()
        raise AssertionError("unreachable")

    # ---- sessions --------------------------------------------------------------------------
    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None and not self._stopping:
            log.error("tunnel task %s failed", t.get_name(), exc_info=t.exception())

    def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, **kw: Any) -> Session:
        return Session(
            reader,
            writer,
            keepalive_interval=self.config.keepalive_interval,
            keepalive_timeout=self.config.keepalive_timeout,
            window=self.config.window,
            **kw,
        )

    def _better(self, a: Session, b: Session) -> bool:
        """Is a preferable to b? Better path first; on a tie, the one dialled by the node whose name
        sorts first — both ends compute the same answer, so one connection survives."""
        ra, rb = PATH_RANK.get(a.path, 9), PATH_RANK.get(b.path, 9)
        if ra != rb:
            return ra < rb
        return a.initiator == (self.name < a.peer)

    def _adopt(self, s: Session) -> Session:
        if self._stopping:
            s.close("tunnel stopping")
            return s
        s.start()
        self._all.add(s)
        s.closed.add_done_callback(lambda f, s=s: self._on_session_closed(s, f.result()))  # type: ignore[misc]
        cur = self._sessions.get(s.peer)
        if cur is None or not cur.usable:
            self._sessions[s.peer] = s
        elif self._better(s, cur):
            self._sessions[s.peer] = s
            cur.goaway(f"replaced by a {s.path} connection")
        else:
            s.goaway(f"{cur.path} connection already in use")
            return cur
        self._state.pop(s.peer, None)
        log.info("tunnel %s ↔ %s: %s session up", self.name, s.peer, s.path)
        if s.path == "relay" and s.initiator:
            self._maybe_punch(s.peer)
        return s

    def _on_session_closed(self, s: Session, reason: str) -> None:
        self._all.discard(s)
        self.metrics.sessions_closed += 1
        self.metrics.bytes_in[s.path] += s.bytes_in
        self.metrics.bytes_out[s.path] += s.bytes_out
        if self._sessions.get(s.peer) is s:
            del self._sessions[s.peer]
            # Another live session (a draining one) may still serve new streams until we reconnect.
            for other in self._all:
                if other.peer == s.peer and other.usable:
                    self._sessions[s.peer] = other
            if s.path == "holepunch" and s.peer not in self._sessions and not self._stopping:
                # The punched path died (NAT mapping gone, UDP blocked): back to the relay now,
                # not at the next stream, so the peer stays reachable without a first failure.
                self._spawn(self._reconnect(s.peer), f"tunnel-fallback-{s.peer}")
        log.info("tunnel %s ↔ %s: %s session closed: %s", self.name, s.peer, s.path, reason)

    async def _reconnect(self, node: str) -> None:
        try:
            await self._session_for(node)
        except (ConnectionError, TimeoutError) as e:
            log.info("tunnel %s: %s not reachable after its punched path died: %s", self.name, node, e)

    async def _session_for(self, node: str) -> Session:
        s = self._sessions.get(node)
        if s is not None and s.usable:
            return s
        task = self._connecting.get(node)
        if task is None:
            st = self._state.get(node)
            now = asyncio.get_running_loop().time()
            if st is not None and now < st.retry_at:
                raise ConnectionError(
                    f"node {node} unreachable (retry in {st.retry_at - now:.1f}s): {st.last_error}"
                )
            task = asyncio.get_running_loop().create_task(self._connect(node), name=f"tunnel-connect-{node}")
            self._connecting[node] = task
            task.add_done_callback(lambda _t: self._connecting.pop(node, None))
        return await asyncio.shield(task)

    async def _connect(self, node: str) -> Session:
        errors: list[str] = []
        peer = self._peers.get(node)
        for host, port in peer.addresses if peer else ():
            try:
                return self._adopt(await self._dial_direct(node, host, port))
            except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
                errors.append(f"direct {host}:{port}: {_why(e)}")
        for addr, relay in list(self._relays.items()):
            if not relay.usable:
                continue
            try:
                return self._adopt(await self._dial_relayed(node, relay))
            except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
                errors.append(f"relay {addr[0]}:{addr[1]}: {_why(e)}")
        if peer is None and not self._relays:
            errors.append("not in the peer table and no relay connected")
        elif not any(r.usable for r in self._relays.values()):
            errors.append("no relay connected")
        st = self._state.setdefault(node, _PeerState())
        st.failures += 1
        backoff = min(PEER_BACKOFF_MAX, PEER_BACKOFF_MIN * 2 ** (st.failures - 1))
        st.retry_at = asyncio.get_running_loop().time() + backoff
        st.last_error = "; ".join(errors)
        raise ConnectionError(f"node {node} unreachable: {st.last_error}")

    async def _dial_direct(self, node: str, host: str, port: int) -> Session:
        assert self._client_ctx is not None
        r, w = await dial_tls(host, port, self._client_ctx, self.config.dial_timeout)
        try:
            check_peer(w, self._verifier, node)
        except PeerRejected:
            self.metrics.handshakes_refused += 1
            w.transport.abort()
            raise
        return self._session(r, w, initiator=True, peer=node, path="direct", on_open=self._on_peer_open)

    async def _dial_relayed(self, node: str, relay: Session) -> Session:
        assert self._client_ctx is not None
        stream = await relay.open(
            Open(OpenKind.RELAY_TO, "TCP", 0, node), deadline_s=self.config.open_timeout
        )
        try:
            r, w = await tls_over(stream, self._client_ctx, server_side=False)
            check_peer(w, self._verifier, node)
        except BaseException:
            stream.abort()
            raise
        return self._session(r, w, initiator=True, peer=node, path="relay", on_open=self._on_peer_open)

    async def _on_connection(self, transport: asyncio.Transport, addr: Any) -> None:
        """A peer dialled us directly: TLS (server side), identity, session."""
        assert self._server_ctx is not None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await tls_over(transport, self._server_ctx, server_side=True)
            name = check_peer(writer, self._verifier, None)
        except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
            self.metrics.handshakes_refused += 1
            log.warning("tunnel %s: refused connection from %s: %s", self.name, fmt_addr(addr), _why(e))
            (writer.transport if writer is not None else transport).abort()
            return
        self._adopt(
            self._session(
                reader, writer, initiator=False, peer=name, path="direct", on_open=self._on_peer_open
            )
        )

    async def _on_peer_open(self, session: Session, stream: MuxStream, o: Open) -> None:
        if o.kind is not OpenKind.CONNECT:
            raise StreamRefused(f"{o.kind.name} is for relays")
        try:
            await connect_target(stream, o, self._serves, self.name, self._accept_counted(session))
        except StreamRefused as e:
            self.metrics.streams_refused += 1
            log.info("tunnel %s: refused stream from %s: %s", self.name, session.peer, e)
            raise

    def _accept_counted(self, session: Session) -> Callable[[MuxStream], None]:
        def accept(stream: MuxStream) -> None:
            self.metrics.streams_accepted += 1
            session.accept(stream)

        return accept

    # ---- relays ----------------------------------------------------------------------------
    async def _relay_link(self, addr: tuple[str, int]) -> None:
        """Keep one session to a relay up, reconnecting with jittered exponential backoff."""
        assert self._client_ctx is not None
        backoff = RELAY_BACKOFF_MIN
        while True:
            try:
                r, w = await dial_tls(addr[0], addr[1], self._client_ctx, self.config.dial_timeout)
                try:
                    self._verifier.check(_peer_der(w), node_required=False)
                except PeerRejected:
                    self.metrics.handshakes_refused += 1
                    w.transport.abort()
                    raise
                s = self._session(
                    r,
                    w,
                    initiator=True,
                    peer=f"relay {addr[0]}:{addr[1]}",
                    path="relay",
                    on_open=self._on_relay_open,
                )
                s.start()
                self._relays[addr] = s
                self.relay_up.set()
                backoff = RELAY_BACKOFF_MIN
                log.info("tunnel %s: connected to relay %s:%d", self.name, *addr)
                if self._punch is not None:
                    rv = RendezvousClient(addr, s, self._punch.send, self._on_offer, self.config.open_timeout)
                    self._rendezvous[addr] = rv
                    self._spawn(self._rendezvous_run(addr, rv), f"tunnel-rendezvous-{addr[0]}:{addr[1]}")
                reason = await s.closed
                log.warning("tunnel %s: relay %s:%d lost: %s", self.name, addr[0], addr[1], reason)
            except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
                log.warning("tunnel %s: relay %s:%d: %s", self.name, addr[0], addr[1], _why(e))
            finally:
                self._relays.pop(addr, None)
                self._rendezvous.pop(addr, None)
                if not self._relays:
                    self.relay_up.clear()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # backoff timer
            backoff = min(RELAY_BACKOFF_MAX, backoff * 2)

    async def _on_relay_open(self, relay: Session, stream: MuxStream, o: Open) -> None:
        """Another node reaches us through the relay: nested TLS as server, then a session."""
        assert self._server_ctx is not None
        if o.kind is not OpenKind.RELAYED_FROM:
            raise StreamRefused(f"a relay may only forward peers, not {o.kind.name}")
        relay.accept(stream)
        try:
            r, w = await tls_over(stream, self._server_ctx, server_side=True)
            name = check_peer(w, self._verifier, o.target)
        except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
            self.metrics.handshakes_refused += 1
            log.warning("tunnel %s: refused relayed peer %s: %s", self.name, o.target, _why(e))
            stream.abort()
            return
        self._adopt(self._session(r, w, initiator=False, peer=name, path="relay", on_open=self._on_peer_open))

    async def _upgrader(self) -> None:
        """Retry relayed peers on their direct addresses; a direct session replaces the relayed one."""
        while True:
            await asyncio.sleep(self.config.upgrade_interval)  # periodic retry timer
            for node, s in list(self._sessions.items()):
                if s.path == "relay" and s.initiator:
                    self._maybe_punch(node)
                peer = self._peers.get(node)
                if s.path == "direct" or peer is None or node in self._connecting:
                    continue
                for host, port in peer.addresses:
                    try:
                        self._adopt(await self._dial_direct(node, host, port))
                        break
                    except (OSError, TimeoutError, PeerRejected, ssl.SSLError) as e:
                        log.debug(
                            "tunnel %s: %s still not direct via %s:%d: %s", self.name, node, host, port, e
                        )

    # ---- hole punching ---------------------------------------------------------------------
    async def _rendezvous_run(self, addr: tuple[str, int], rv: RendezvousClient) -> None:
        try:
            await rv.run()
        except (ConnectionError, TimeoutError, ValueError, KeyError) as e:
            # An older relay refuses RENDEZVOUS; a lost relay resets it: the relay path still works.
            log.info("tunnel %s: no rendezvous with relay %s:%d: %s", self.name, addr[0], addr[1], _why(e))
        finally:
            if self._rendezvous.get(addr) is rv:
                del self._rendezvous[addr]

    def _maybe_punch(self, node: str) -> None:
        if self._punch is None or self._stopping or node in self._punching:
            return
        if not any(rv.observed is not None for rv in self._rendezvous.values()):
            return  # not registered yet; the upgrader asks again later
        self._punching.add(node)
        self._spawn(self._punch_to(node), f"tunnel-punch-{node}")

    async def _punch_to(self, node: str) -> None:
        """Ask a relay to introduce us to `node`, punch, and adopt the QUIC session."""
        assert self._punch is not None
        from .punch import PunchFailed  # loaded with HolePuncher already

        errors: list[str] = []
        try:
            for addr, rv in list(self._rendezvous.items()):
                if rv.observed is None:
                    continue
                try:
                    offer = await rv.introduce(node, self.config.open_timeout)
                except (ConnectionError, TimeoutError) as e:
                    errors.append(f"relay {addr[0]}:{addr[1]}: {_why(e)}")
                    continue
                self.metrics.punches_started += 1
                try:
                    link = await self._punch.punch(offer, self.config.punch_timeout)
                except PunchFailed as e:
                    self.metrics.punches_failed += 1
                    errors.append(str(e))
                    continue
                self.metrics.punches_succeeded += 1
                self._adopt_link(link, initiator=True)
                return
            if errors:
                log.info("tunnel %s: staying on the relay to %s: %s", self.name, node, "; ".join(errors))
        finally:
            self._punching.discard(node)

    def _on_offer(self, offer: Offer) -> None:
        """A peer asked the relay to introduce it to us: punch back and serve its QUIC handshake."""
        self._spawn(self._accept_punch(offer), f"tunnel-punch-from-{offer.peer}")

    async def _accept_punch(self, offer: Offer) -> None:
        assert self._punch is not None
        from .punch import PunchFailed  # loaded with HolePuncher already

        try:
            link = await self._punch.punch(offer, self.config.punch_timeout)
        except PunchFailed as e:
            self.metrics.punches_failed += 1
            log.info("tunnel %s: punch from %s failed: %s", self.name, offer.peer, e)
            return
        self.metrics.punches_accepted += 1
        self.metrics.punches_succeeded += 1
        self._adopt_link(link, initiator=False)

    def _adopt_link(self, link: QuicLink, *, initiator: bool) -> None:
        if link.closed:
            return
        r, w = link.pipe.streams()
        self._adopt(
            self._session(
                r, w, initiator=initiator, peer=link.expect, path="holepunch", on_open=self._on_peer_open
            )
        )


def _peer_der(w: asyncio.StreamWriter) -> bytes | None:
    obj = w.get_extra_info("ssl_object")
    return obj.getpeercert(binary_form=True) if obj is not None else None


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


__all__ = ["INITIAL_WINDOW", "Tunnel", "TunnelConfig"]
