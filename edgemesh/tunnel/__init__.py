"""Agent-to-agent tunnel: streams multiplexed over mutually authenticated sessions — direct TLS,
QUIC through a punched UDP hole, or relayed — with flow control and keepalives (`Tunnel`, `RelayServer`)."""

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
