"""Tunnel counters, kept as plain numbers; the agent exports them (Prometheus) by reading `snapshot`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PATHS = ("direct", "holepunch", "relay")


@dataclass
class TunnelMetrics:
    streams_opened: Counter[str] = field(default_factory=Counter)  # by path
    streams_failed: int = 0  # open() that raised
    streams_accepted: int = 0  # inbound CONNECT streams served
    streams_refused: int = 0  # inbound CONNECT streams reset (target not served / unreachable)
    handshakes_refused: int = 0  # TLS or identity failures, inbound and outbound
    bytes_in: Counter[str] = field(default_factory=Counter)  # by path, sessions already closed
    bytes_out: Counter[str] = field(default_factory=Counter)
    sessions_closed: int = 0
    punches_started: int = 0  # hole punches this node asked a relay for
    punches_accepted: int = 0  # hole punches a peer asked for that came up here
    punches_succeeded: int = 0  # either kind, ending in a verified QUIC session
    punches_failed: int = 0

    def snapshot(self, live: dict[str, tuple[int, int]], paths: dict[str, str]) -> dict[str, Any]:
        """Counters plus live sessions' bytes (live: path → (in, out)) and peers by path."""
        bytes_in = {p: self.bytes_in[p] + live.get(p, (0, 0))[0] for p in PATHS}
        bytes_out = {p: self.bytes_out[p] + live.get(p, (0, 0))[1] for p in PATHS}
        by_path = {p: sum(1 for v in paths.values() if v == p) for p in PATHS}
        return {
            "streams_opened": {p: self.streams_opened[p] for p in PATHS},
            "streams_failed": self.streams_failed,
            "streams_accepted": self.streams_accepted,
            "streams_refused": self.streams_refused,
            "handshakes_refused": self.handshakes_refused,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "peers_by_path": by_path,
            "sessions_closed": self.sessions_closed,
            "punches": {
                "started": self.punches_started,
                "accepted": self.punches_accepted,
                "succeeded": self.punches_succeeded,
                "failed": self.punches_failed,
            },
        }
