"""Rendezvous for hole punching, spoken over a RENDEZVOUS stream of a node's relay session.

The relay hands the node a random token over TLS; the node sends it in a UDP packet from its
tunnel socket to the relay's UDP port, so the relay learns the node's public UDP address as the
NAT mapped it (and tells the node: "observed"). To reach node B, node A asks for an
introduction; the relay sends both a "punch" offer with a fresh punch id and the other's observed
address. Messages are JSON lines, small and few. The relay vouches for nothing: the peers
authenticate each other with their own certificates once UDP gets through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .frames import Open, OpenKind
from .peers import parse_address
from .session import Session
from .stream import MuxStream
from .udp import Addr, Ctl, ctl_packet

log = logging.getLogger(__name__)

MAX_LINE = 4096
TOKEN_BYTES = 16
# Registration is re-sent this often until the relay confirms it, then every REGISTER_REFRESH
# (that keeps the NAT mapping to the relay alive: Linux forgets unanswered UDP after 30 s).
REGISTER_RETRY = 0.25
REGISTER_REFRESH = 10.0
# Introductions one node may have waiting for the relay's answer.
MAX_PENDING = 64


@dataclass(frozen=True)
class Offer:
    """Punch toward `peer` at `addr`; the side with client=True starts QUIC once UDP gets through."""

    peer: str
    addr: Addr
    punch_id: bytes
    client: bool


def _fmt(a: Addr) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


def _send(w: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    w.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


async def _read(r: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        line = await r.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise ValueError("rendezvous message is not an object")
    return msg


# ---- relay side ------------------------------------------------------------------------------
@dataclass
class _Member:
    node: str
    token: bytes
    writer: asyncio.StreamWriter
    observed: Addr | None = None


class RendezvousServer:
    def __init__(self) -> None:
        self._by_token: dict[bytes, _Member] = {}
        self.members: dict[str, _Member] = {}
        self.introductions = 0
        self.registrations = 0

    def observed(self) -> dict[str, str]:
        return {n: _fmt(m.observed) for n, m in sorted(self.members.items()) if m.observed is not None}

    def on_udp(self, kind: Ctl, body: bytes, addr: Addr) -> None:
        if kind is not Ctl.REGISTER:
            return
        m = self._by_token.get(body)
        if m is None:
            return
        self.registrations += 1
        if m.observed != addr:
            m.observed = addr
            _send(m.writer, {"t": "observed", "addr": _fmt(addr)})

    async def serve(self, session: Session, stream: MuxStream) -> None:
        """One node's rendezvous stream, for as long as it is open."""
        r, w = stream.streams(limit=MAX_LINE)
        m = _Member(session.peer, os.urandom(TOKEN_BYTES), w)
        old = self.members.get(m.node)
        if old is not None:
            self._by_token.pop(old.token, None)
            old.writer.close()
        self.members[m.node] = m
        self._by_token[m.token] = m
        _send(w, {"t": "token", "token": m.token.hex()})
        try:
            while (msg := await _read(r)) is not None:
                if msg.get("t") == "introduce":
                    self._introduce(m, str(msg.get("peer", "")), msg.get("id"))
        except (ValueError, asyncio.LimitOverrunError, ConnectionError) as e:
            log.info("tunnel rendezvous: %s: %s", m.node, e)
        finally:
            self._by_token.pop(m.token, None)
            if self.members.get(m.node) is m:
                del self.members[m.node]
            w.close()

    def _introduce(self, m: _Member, peer: str, req: Any) -> None:
        other = self.members.get(peer)
        why = ""
        if m.observed is None:
            why = f"no UDP registration from {m.node} yet"
        elif other is None:
            why = f"node {peer} has no rendezvous with this relay"
        elif other.observed is None:
            why = f"no UDP registration from {peer} yet"
        if why or other is None or m.observed is None or other.observed is None:
            _send(m.writer, {"t": "error", "id": req, "reason": why})
            return
        self.introductions += 1
        pid = os.urandom(8).hex()
        _send(other.writer, {"t": "punch", "peer": m.node, "addr": _fmt(m.observed), "punch": pid})
        _send(
            m.writer,
            {
                "t": "punch",
                "peer": peer,
                "addr": _fmt(other.observed),
                "punch": pid,
                "id": req,
                "client": True,
            },
        )


# ---- node side -------------------------------------------------------------------------------
class RendezvousClient:
    """A node's rendezvous with one relay; `run` lasts as long as the relay session."""

    def __init__(
        self,
        relay_addr: Addr,
        session: Session,
        send_udp: Callable[[bytes, Addr], None],
        on_offer: Callable[[Offer], None],
        open_timeout: float,
    ) -> None:
        self.relay_addr, self._session = relay_addr, session
        self._send_udp, self._on_offer = send_udp, on_offer
        self._open_timeout = open_timeout
        self.observed: Addr | None = None
        self._registered = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Offer]] = {}
        self._next_id = 1

    async def run(self) -> None:
        stream = await self._session.open(
            Open(OpenKind.RENDEZVOUS, "UDP", 0, ""), deadline_s=self._open_timeout
        )
        r, w = stream.streams(limit=MAX_LINE)
        self._writer = w
        register: asyncio.Task[None] | None = None
        try:
            while (msg := await _read(r)) is not None:
                t = msg.get("t")
                if t == "token" and register is None:
                    token = bytes.fromhex(str(msg.get("token", "")))
                    register = asyncio.get_running_loop().create_task(
                        self._register(token), name="tunnel-rendezvous-register"
                    )
                elif t == "observed":
                    self.observed = parse_address(str(msg["addr"]))
                    self._registered.set()
                    log.info("tunnel rendezvous: relay %s sees us at %s", _fmt(self.relay_addr), msg["addr"])
                elif t == "punch":
                    offer = Offer(
                        str(msg["peer"]),
                        parse_address(str(msg["addr"])),
                        bytes.fromhex(str(msg["punch"])),
                        bool(msg.get("client")),
                    )
                    fut = self._pending.pop(msg["id"], None) if msg.get("id") is not None else None
                    if fut is not None:
                        if not fut.done():
                            fut.set_result(offer)
                    elif not offer.client:
                        self._on_offer(offer)
                elif t == "error":
                    fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
                    if fut is not None and not fut.done():
                        fut.set_exception(ConnectionError(f"rendezvous: {msg.get('reason')}"))
        finally:
            self._writer = None
            if register is not None:
                register.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await register
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("rendezvous with the relay ended"))
            self._pending.clear()
            w.close()

    async def _register(self, token: bytes) -> None:
        packet = ctl_packet(Ctl.REGISTER, token)
        while True:
            self._send_udp(packet, self.relay_addr)
            interval = REGISTER_REFRESH if self._registered.is_set() else REGISTER_RETRY
            # A timer: registration is periodic whether or not the relay has answered.
            await asyncio.sleep(interval)

    async def introduce(self, peer: str, deadline_s: float) -> Offer:
        if self._writer is None or self.observed is None:
            raise ConnectionError(f"no UDP registration with relay {_fmt(self.relay_addr)}")
        if len(self._pending) >= MAX_PENDING:
            raise ConnectionError("too many introductions waiting")
        req = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Offer] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        _send(self._writer, {"t": "introduce", "peer": peer, "id": req})
        try:
            return await asyncio.wait_for(fut, deadline_s)
        finally:
            self._pending.pop(req, None)
