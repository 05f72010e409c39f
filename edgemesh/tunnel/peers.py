"""Peer discovery from Node objects: where each node's tunnel listens, and which nodes are relays.

A node advertises its tunnel with the annotation `edgemesh.kubeedge.io/tunnel-address` ("host:port",
several comma-separated); without it the node's ExternalIP and InternalIP addresses are tried on the
default port. `edgemesh.kubeedge.io/tunnel-relay: "true"` marks a node whose address also serves a
relay. No multicast: the API already knows every node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 20006
ADDRESS_ANNOTATION = "edgemesh.kubeedge.io/tunnel-address"
RELAY_ANNOTATION = "edgemesh.kubeedge.io/tunnel-relay"


@dataclass(frozen=True)
class Peer:
    name: str
    addresses: tuple[tuple[str, int], ...]  # direct-dial candidates, best first
    relay: bool = False


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """ "host:port", "[v6]:port", "host" or a bare IPv6 address → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def peer_from_node(node: Mapping[str, Any], default_port: int = DEFAULT_PORT) -> Peer | None:
    meta = node.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return None
    ann = meta.get("annotations") or {}
    addrs: list[tuple[str, int]] = []
    advertised = ann.get(ADDRESS_ANNOTATION, "")
    for part in advertised.split(","):
        if part.strip():
            try:
                addrs.append(parse_address(part, default_port))
            except ValueError:
                continue  # a malformed annotation must not hide the node's own addresses
    by_type: dict[str, list[str]] = {}
    for a in (node.get("status") or {}).get("addresses") or []:
        by_type.setdefault(str(a.get("type")), []).append(str(a.get("address")))
    for kind in ("ExternalIP", "InternalIP"):
        for ip in by_type.get(kind, []):
            if (ip, default_port) not in addrs:
                addrs.append((ip, default_port))
    relay = str(ann.get(RELAY_ANNOTATION, "")).lower() == "true"
    return Peer(str(name), tuple(addrs), relay)


def peers_from_nodes(nodes: Iterable[Mapping[str, Any]], self_name: str = "") -> dict[str, Peer]:
    """The peer table for Tunnel.set_peers from a list of Node objects (self excluded)."""
    out: dict[str, Peer] = {}
    for n in nodes:
        p = peer_from_node(n)
        if p is not None and p.name != self_name:
            out[p.name] = p
    return out


def relays_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Addresses of nodes marked as relays (their first advertised address)."""
    out = []
    for n in nodes:
        p = peer_from_node(n)
        if p is not None and p.relay and p.addresses:
            out.append(p.addresses[0])
    return out
