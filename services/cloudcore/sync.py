"""Per-node reliable delivery: what a node should hold, what it confirmed, what is in flight.

Pure state (no I/O, clock passed in): the edgecontroller feeds desired-set changes, ACKs and the
node's inventory, and drains the messages to send. The rules (DESIGN §3):

- a key's *target* is the desired object (or absence); the node's *known* state is what it ACKed or
  reported in its inventory; a message is owed exactly when they differ;
- only the newest target is ever in flight per key (a change before the ACK replaces the pending
  message: coalescing), and nothing at or below the ACKed resourceVersion of the same uid is sent;
- un-ACKed messages are resent with exponential backoff up to a cap, keeping their msg_id so that a
  late ACK of any copy counts;
- on (re)connect nothing is sent until the node's inventory arrives (or a timeout, for KubeEdge
  peers that never send one); the inventory replaces the known state and the answer is exactly the
  difference.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from kubeedge.beehive import Header, Message, RawJSON, Resource, ResourceError, now_ms
from kubeedge.beehive.message import GROUP_RESOURCE, OP_DELETE, OP_INSERT, OP_UPDATE

SOURCE: Final = "edgecontroller"

# (resource type, namespace or None for cluster-scoped, name) — e.g. ("pod", "default", "nginx").
Key = tuple[str, str | None, str]


class InventoryError(ValueError):
    """An inventory message whose content is not the documented shape."""


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Limits and timings of one node's delivery state."""

    # KubeEdge's cloud resends after 5 s; we start there and double per attempt up to the cap.
    resend_base: float = 5.0
    resend_cap: float = 60.0
    # Messages awaiting an ACK per node; beyond this, new sends wait for ACKs (flow control, so a
    # node that resyncs thousands of objects is not flooded faster than it persists).
    max_in_flight: int = 4096
    # How long to wait for a (re)connected node's inventory before assuming it holds what it last
    # ACKed (a KubeEdge edgecore never sends one).
    inventory_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.resend_base <= 0 or self.resend_cap < self.resend_base:
            raise ValueError("need 0 < resend_base <= resend_cap")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if self.inventory_timeout <= 0:
            raise ValueError("inventory_timeout must be > 0")


@dataclass(frozen=True, slots=True)
class Desired:
    """One object a node should hold: identity, version and its JSON, serialized once and shared by
    every node that needs it."""

    uid: str
    rv: int
    raw: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Desired:
        md = obj.get("metadata") or {}
        return cls(str(md.get("uid") or ""), parse_rv(md.get("resourceVersion")), orjson.dumps(obj))


@dataclass(frozen=True, slots=True)
class Held:
    """What the node holds for a key (ACKed or reported)."""

    uid: str
    rv: int


@dataclass(slots=True)
class _InFlight:
    key: Key
    target: Held | None  # None: a delete
    msg: Message
    attempts: int
    next_at: float


def parse_rv(value: Any) -> int:
    """resourceVersions compare as integers (as KubeEdge does); anything unparsable is 0 (oldest)."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def key_resource(key: Key) -> str:
    rtype, ns, name = key
    return str(Resource(type=rtype, namespace=ns, name=name))


def parse_key(resource: str) -> Key:
    r = Resource.parse(resource)
    if r.bare or r.name is None or r.rest:
        raise ResourceError(f"resource {resource!r} does not name one object")
    return r.type, r.namespace, r.name


def parse_inventory(content: Any) -> dict[Key, Held]:
    """The inventory's content. Accepted shapes (edgecore's metamanager sends the first):

    - ``{"items": [{"type", "namespace" ("" when cluster-scoped), "name", "uid", "resourceVersion"}]}``
    - a list of ``{"resource": "<ns>/<type>/<name>", "uid", "resourceVersion"}``
    - a mapping ``"<ns>/<type>/<name>"`` → ``{"uid", "resourceVersion"}``"""
    if isinstance(content, dict) and isinstance(content.get("items"), list):
        content = content["items"]
    pairs: list[tuple[Key, Any]] = []
    if isinstance(content, list):
        for it in content:
            if not isinstance(it, dict):
                raise InventoryError("inventory item is not an object")
            pairs.append((_item_key(it), it))
    elif isinstance(content, dict):
        for res, it in content.items():
            if not isinstance(it, dict):
                raise InventoryError(f"inventory entry for {res!r} is not an object")
            pairs.append((_resource_key(res), it))
    else:
        raise InventoryError("inventory content is neither a list nor an object")
    return {k: Held(str(it.get("uid") or ""), parse_rv(it.get("resourceVersion"))) for k, it in pairs}


def _resource_key(res: Any) -> Key:
    if not isinstance(res, str):
        raise InventoryError("inventory item without a resource string")
    try:
        return parse_key(res)
    except ResourceError as e:
        raise InventoryError(str(e)) from None


def _item_key(it: dict[str, Any]) -> Key:
    if "resource" in it:
        return _resource_key(it["resource"])
    rtype, ns, name = it.get("type"), it.get("namespace"), it.get("name")
    if not isinstance(rtype, str) or not rtype or not isinstance(name, str) or not name:
        raise InventoryError("inventory item without type and name")
    if ns is not None and not isinstance(ns, str):
        raise InventoryError("inventory item namespace is not a string")
    return rtype, (ns or None), name


class NodeSync:
    """Delivery state for one edge node. Not thread-safe; one event loop owns it."""

    def __init__(
        self, node: str, config: SyncConfig | None = None, *, managed: frozenset[str] | None = None
    ) -> None:
        """``managed``: the resource types this sync owns; inventory items of other types (the
        node's own leases, devices synced by another module) are neither diffed nor deleted."""
        self.node = node
        self.config = config or SyncConfig()
        self.managed = managed
        self._desired: dict[Key, Desired] = {}
        self._known: dict[Key, Held] = {}
        self._inflight: dict[str, _InFlight] = {}
        self._inflight_by_key: dict[Key, str] = {}
        # Keys whose target may differ from the known state; an ordered set so sends keep event order.
        self._dirty: collections.OrderedDict[Key, None] = collections.OrderedDict()
        self._inventory_deadline: float | None = None
        self.resends = 0

    # --- introspection --------------------------------------------------------------------------
    @property
    def desired(self) -> Mapping[Key, Desired]:
        return self._desired

    @property
    def known(self) -> Mapping[Key, Held]:
        return self._known

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def awaiting_inventory(self) -> bool:
        return self._inventory_deadline is not None

    def next_due(self) -> float | None:
        """The earliest time ``due`` has something to do, or None."""
        times = [f.next_at for f in self._inflight.values()]
        if self._inventory_deadline is not None:
            times.append(self._inventory_deadline)
        return min(times) if times else None

    # --- inputs ---------------------------------------------------------------------------------
    def desired_changed(self, key: Key, want: Desired | None) -> None:
        """``key`` now should (``want``) or should not (None) be on the node."""
        if want is None:
            if self._desired.pop(key, None) is None and key not in self._known:
                return
        else:
            self._desired[key] = want
        self._dirty[key] = None

    def connection_started(self, now: float) -> None:
        """A new session: whatever was in flight may be lost; wait for the inventory."""
        self._requeue_inflight()
        self._inventory_deadline = now + self.config.inventory_timeout

    def connection_lost(self) -> None:
        self._requeue_inflight()
        self._inventory_deadline = None

    def on_ack(self, parent_msg_id: str) -> bool:
        """The node persisted the message ``parent_msg_id``; False if it is not (any longer) pending."""
        f = self._inflight.pop(parent_msg_id, None)
        if f is None:
            return False
        del self._inflight_by_key[f.key]
        if f.target is None:
            self._known.pop(f.key, None)
        else:
            self._known[f.key] = f.target
        return True

    def on_inventory(self, held: Mapping[Key, Held], now: float) -> list[Message]:
        """Replace the known state with what the node reports; returns exactly the difference."""
        self._inflight.clear()
        self._inflight_by_key.clear()
        self._inventory_deadline = None
        self._known = {k: h for k, h in held.items() if self.managed is None or k[0] in self.managed}
        self._dirty.clear()
        for k in self._desired.keys() | self._known.keys():
            self._dirty[k] = None
        return self.outgoing(now)

    # --- outputs --------------------------------------------------------------------------------
    def outgoing(self, now: float) -> list[Message]:
        """New messages owed to the node (nothing while waiting for its inventory)."""
        out: list[Message] = []
        if self._inventory_deadline is not None:
            return out
        while self._dirty and len(self._inflight) < self.config.max_in_flight:
            key, _ = self._dirty.popitem(last=False)
            msg = self._plan(key, now)
            if msg is not None:
                out.append(msg)
        return out

    def due(self, now: float) -> list[Message]:
        """Resends whose time has come (same msg_id, fresh timestamp), plus, once the inventory
        timeout has passed, the sends that were waiting for it."""
        if self._inventory_deadline is not None:
            if now < self._inventory_deadline:
                return []
            # No inventory (a KubeEdge peer): trust what it last ACKed.
            self._inventory_deadline = None
            return self.outgoing(now)
        out: list[Message] = []
        for f in self._inflight.values():
            if f.next_at > now:
                continue
            f.attempts += 1
            f.next_at = now + self._backoff(f.attempts)
            f.msg = Message(
                Header(
                    msg_id=f.msg.header.msg_id,
                    timestamp=now_ms(),
                    resource_version=f.msg.header.resource_version,
                ),
                f.msg.route,
                f.msg.content,
            )
            out.append(f.msg)
        self.resends += len(out)
        return out

    # --- internals ------------------------------------------------------------------------------
    def _backoff(self, attempts: int) -> float:
        return float(min(self.config.resend_cap, self.config.resend_base * (2 ** max(0, attempts - 1))))

    def _requeue_inflight(self) -> None:
        for f in self._inflight.values():
            self._dirty[f.key] = None
        self._inflight.clear()
        self._inflight_by_key.clear()

    def _plan(self, key: Key, now: float) -> Message | None:
        want = self._desired.get(key)
        have = self._known.get(key)
        target = None if want is None else Held(want.uid, want.rv)
        pending_id = self._inflight_by_key.get(key)
        if pending_id is not None:
            if self._inflight[pending_id].target == target:
                return None  # the newest is already on its way
            # Coalesce: the older pending version is abandoned (a late ACK of it is ignored).
            del self._inflight[pending_id]
            del self._inflight_by_key[key]
        if target == have:
            return None
        if want is None:
            assert have is not None
            op = OP_DELETE
            rv = have.rv
            content: Any = {"metadata": _delete_metadata(key, have)}
        else:
            if have is not None and have.uid == want.uid and want.rv <= have.rv:
                return None  # stale: the node already holds this version or a newer one
            op = OP_UPDATE if have is not None and have.uid == want.uid else OP_INSERT
            rv = want.rv
            content = RawJSON(want.raw)
        msg = Message.new(SOURCE, GROUP_RESOURCE, op, key_resource(key), content, resource_version=str(rv))
        self._inflight[msg.msg_id] = _InFlight(key, target, msg, 1, now + self._backoff(1))
        self._inflight_by_key[key] = msg.msg_id
        return msg


def _delete_metadata(key: Key, have: Held) -> dict[str, Any]:
    md: dict[str, Any] = {"name": key[2], "uid": have.uid, "resourceVersion": str(have.rv)}
    if key[1] is not None:
        md["namespace"] = key[1]
    return md
