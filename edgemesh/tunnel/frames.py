"""Wire format of a tunnel session: 9-byte header (type u8, stream id u32, length u32) + payload.

Stream ids are odd for streams opened by the side that dialled the session and even for the side
that accepted it, so both ends can open streams without agreeing first. Stream id 0 carries
session-level frames (PING, PONG, GOAWAY)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("!BII")
HEADER_SIZE = HEADER.size
# The largest payload a frame may carry. Big frames keep per-frame overhead negligible at Gbit/s;
# a peer announcing more is broken or hostile and the session is dropped.
MAX_FRAME = 256 * 1024
# Target ip or node names are short; anything longer in an OPEN frame is refused.
MAX_TARGET = 255


class FrameType(IntEnum):
    OPEN = 1  # payload: Open
    OPENED = 2  # the target is connected; data may flow
    DATA = 3
    WINDOW = 4  # payload: u32 credit increment
    CLOSE = 5  # sender will send no more data (half-close)
    RESET = 6  # payload: utf-8 reason; the stream is gone both ways
    PING = 7  # payload: 8 opaque bytes, echoed in PONG
    PONG = 8
    GOAWAY = 9  # payload: utf-8 reason; no new streams on this session


class OpenKind(IntEnum):
    CONNECT = 0  # connect to target ip:port on the receiving node
    RELAY_TO = 1  # (to a relay) splice this stream to node `target`
    RELAYED_FROM = 2  # (from a relay) node `target` reaches you through me
    RENDEZVOUS = 3  # (to a relay) UDP registration and introductions for hole punching


PROTOCOLS = ("TCP", "UDP", "SCTP")


class ProtocolError(Exception):
    """The peer broke the framing rules; the session is closed."""


@dataclass(frozen=True, slots=True)
class Open:
    kind: OpenKind
    protocol: str
    port: int
    target: str

    _FIXED = struct.Struct("!BBH")

    def encode(self) -> bytes:
        name = self.target.encode()
        if len(name) > MAX_TARGET:
            raise ValueError(f"target longer than {MAX_TARGET} bytes")
        return self._FIXED.pack(self.kind, PROTOCOLS.index(self.protocol), self.port) + name

    @classmethod
    def decode(cls, payload: bytes) -> Open:
        if len(payload) < cls._FIXED.size or len(payload) > cls._FIXED.size + MAX_TARGET:
            raise ProtocolError(f"OPEN payload of {len(payload)} bytes")
        kind, proto, port = cls._FIXED.unpack_from(payload)
        try:
            return cls(OpenKind(kind), PROTOCOLS[proto], port, payload[cls._FIXED.size :].decode())
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise ProtocolError(f"bad OPEN payload: {e}") from None


def frame(ftype: FrameType, sid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, sid, len(payload)) + payload


def header(ftype: FrameType, sid: int, length: int) -> bytes:
    return HEADER.pack(ftype, sid, length)


def parse_header(raw: bytes) -> tuple[FrameType, int, int]:
    t, sid, length = HEADER.unpack(raw)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    try:
        return FrameType(t), sid, length
    except ValueError:
        raise ProtocolError(f"unknown frame type {t}") from None


WINDOW_PAYLOAD = struct.Struct("!I")
