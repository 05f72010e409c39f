"""Who the tunnel talks to, and what it may serve: peers from Node objects plus configured peers,
this node's tunnel address published on its own Node, and the index of endpoints this node serves.

Where peer addresses come from (the choice, and why):
- Cloud mode (a kubeconfig): every Node is visible; `peers_from_nodes` gives each peer its advertised
  tunnel address (annotation) and node addresses, so agents in the cloud or on routable networks dial
  each other directly.
- Edge mode (the MetaServer): the edge store holds only this node's own Node, so other nodes'
  addresses are unknown. Peers are then named by the EndpointSlices (`nodeName` of each endpoint) and
  reached through a relay first — the Tunnel dials a peer it has no address for via its relays — and
  hole punching (rendezvous at the relay) upgrades the path where the NATs allow. Peers listed in
  `modules.edgeTunnel.peers` (static addresses) are dialled directly, as in cloud mode.
A node with `modules.edgeTunnel.advertiseAddress` publishes it as the tunnel-address annotation on its
own Node (through the MetaServer, which forwards the write to the cloud as the node), which is what
cloud-mode agents read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubeedge.kube import NODES, KubeClient, ListWatch

from .config import DEFAULT_TUNNEL_PORT, AgentConfig, parse_host_port
from .model import ServiceTable, normalize_ip
from .tunnel import Peer, Tunnel, peers_from_nodes
from .tunnel.peers import ADDRESS_ANNOTATION

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_MIN = 1.0
PUBLISH_BACKOFF_MAX = 60.0


def static_peers(cfg: AgentConfig) -> dict[str, Peer]:
    out: dict[str, Peer] = {}
    for sp in cfg.tunnel.peers:
        addrs = tuple(parse_host_port(a, DEFAULT_TUNNEL_PORT, "peers") for a in sp.address)
        out[sp.node_name] = Peer(sp.node_name, addrs)
    return out


class NodePeers:
    """Keeps `tunnel`'s peer table equal to the watched Nodes merged with the configured peers."""

    def __init__(self, kc: KubeClient, tunnel: Tunnel, cfg: AgentConfig, node_name: str) -> None:
        self.kc = kc
        self.tunnel = tunnel
        self.node_name = node_name
        self.static = static_peers(cfg)
        self.peers: dict[str, Peer] = dict(self.static)
        tunnel.set_peers(self.peers)

    async def run(self) -> None:
        """Until cancelled (the agent supervises it); each Node event recomputes the table."""
        async with ListWatch(self.kc, NODES) as lw:
            async for _ev in lw:
                self.update(list(lw.cache.values()))

    def update(self, nodes: list[dict[str, Any]]) -> None:
        found = peers_from_nodes(nodes, self.node_name)
        merged = dict(found)
        for name, sp in self.static.items():
            known = found.get(name)
            # Configured addresses first: the operator knows the network better than Node status.
            extra = tuple(a for a in (known.addresses if known else ()) if a not in sp.addresses)
            merged[name] = Peer(name, sp.addresses + extra, known.relay if known else False)
        if merged != self.peers:
            self.peers = merged
            self.tunnel.set_peers(merged)
            log.info("edgemesh: %d tunnel peers with known addresses", len(merged))


async def publish_address(kc: KubeClient, node_name: str, addresses: tuple[str, ...]) -> None:
    """Set this node's tunnel-address annotation, retrying (the cloud may be away) until it sticks."""
    value = ",".join(addresses)
    delay = PUBLISH_BACKOFF_MIN
    while True:
        try:
            node = await kc.get(NODES, node_name)
            current = ((node.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION)
            if current != value:
                await kc.patch(NODES, node_name, {"metadata": {"annotations": {ADDRESS_ANNOTATION: value}}})
                log.info("edgemesh: published tunnel address %s on node %s", value, node_name)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("edgemesh: cannot publish the tunnel address yet (retry in %.0fs): %s", delay, e)
        await asyncio.sleep(delay)  # retry timer while the node (or the cloud) is not there yet
        delay = min(PUBLISH_BACKOFF_MAX, delay * 2)


class ServedEndpoints:
    """The tunnel's `serves(ip, port, protocol)`: is it an endpoint of a Service on this node?

    Only those: a tunnel stream is a remote node asking us to connect on its behalf, and anything
    else (the node's own services, other hosts on the site network) must stay out of its reach.
    The index is rebuilt lazily when the table's generation moves."""

    def __init__(self, table: ServiceTable, node_name: str) -> None:
        self.table = table
        self.node_name = node_name
        self._generation = -1
        self._index: frozenset[tuple[str, int, str]] = frozenset()

    def _rebuild(self) -> None:
        idx: set[tuple[str, int, str]] = set()
        for svc in self.table.services():
            for sp in svc.ports:
                for ep in self.table.endpoints(svc.key, sp.name):
                    if ep.node_name == self.node_name:
                        idx.add((ep.ip, ep.port, sp.protocol.upper()))
        self._index = frozenset(idx)
        self._generation = self.table.generation

    def __call__(self, ip: str, port: int, protocol: str) -> bool:
        if self._generation != self.table.generation:
            self._rebuild()
        return (normalize_ip(ip), port, protocol.upper()) in self._index
