"""Agent-to-agent tunnel: streams multiplexed over mutually authenticated TLS sessions, direct or
through a relay, with per-stream flow control, keepalives and reconnects (`Tunnel`, `RelayServer`)."""

from .identity import Identity, PeerRejected
from .peers import Peer, peers_from_nodes, relays_from_nodes
from .relay import RelayServer
from .stream import StreamRefused
from .tunnel import Tunnel, TunnelConfig

__all__ = [
    "Identity",
    "Peer",
    "PeerRejected",
    "RelayServer",
    "StreamRefused",
    "Tunnel",
    "TunnelConfig",
    "peers_from_nodes",
    "relays_from_nodes",
]
