"""The contract between cloudhub (transport, sessions) and the modules that use it (edgecontroller).

cloudhub owns connections; modules see nodes coming and going and exchange beehive Messages."""

from __future__ import annotations

from typing import Protocol

from kubeedge.beehive import Message

# Our extension operation (a KubeEdge peer ignores unknown operations): on every (re)connect the
# edge sends its inventory; the cloud answers with exactly the difference, then a response to it.
OP_INVENTORY = "inventory"
INVENTORY_RESOURCE = "null/inventory/{node}"


class NodeEvents(Protocol):
    """Implemented by a module that wants to hear from cloudhub."""

    async def node_connected(self, node: str) -> None: ...

    async def node_disconnected(self, node: str) -> None: ...

    async def message_from(self, node: str, msg: Message) -> None:
        """An upstream message (not keepalives/control operations, which cloudhub answers itself)."""


class Hub(Protocol):
    """Implemented by cloudhub."""

    def connected(self, node: str) -> bool: ...

    async def send(self, node: str, msg: Message) -> bool:
        """Queue `msg` for `node`'s session (waits while that node's bounded queue is full); False
        when the node is not connected (the caller keeps it for the next connection)."""
        ...
