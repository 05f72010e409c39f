"""In-process module bus, the counterpart of KubeEdge's beehive context.

Modules (edgehub, metamanager, edged, devicetwin, ...) register under a name and a group; messages go to
one module, to every module of a group, or out as a request whose reply is matched by parent_msg_id.
Queues are bounded so a stuck module applies back-pressure instead of growing memory: ``send`` waits for
room, ``try_send`` (for callers that must not block, e.g. protocol callbacks) drops and counts.
Everything runs on one event loop; waiting is on futures, never polling.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Final

from .message import Message

# Per-module queue bound. Large enough to absorb a resync burst of one node's objects, small enough that a
# wedged module is noticed (senders block) long before memory is.
DEFAULT_QUEUE_SIZE: Final = 1024


class BusError(Exception):
    """Base of the bus's errors."""


class Closed(BusError):
    """The bus (or the module's queue) is closed."""


class UnknownModule(BusError, LookupError):
    """No module registered under that name."""


class SyncTimeout(BusError, TimeoutError):
    """No reply to a ``send_sync`` request in time."""


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    # Waiters remove themselves when they resume, so a woken-but-not-yet-running waiter still counts as
    # "in line" (see try_put); skip those and wake the next sleeper.
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
            return


class _Mailbox:
    """A bounded FIFO with close(): asyncio.Queue cannot wake its getters on shutdown."""

    __slots__ = ("_getters", "_items", "_putters", "closed", "drops", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Message] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self.drops = 0

    def __len__(self) -> int:
        return len(self._items)

    def _has_room(self) -> bool:
        return len(self._items) < self.maxsize

    def _append(self, msg: Message) -> None:
        self._items.append(msg)
        _wake_first(self._getters)

    def try_put(self, msg: Message) -> bool:
        # Blocked senders were first: overtaking them would reorder a sender's messages and starve them.
        if self.closed or self._putters or not self._has_room():
            return False
        self._append(msg)
        return True

    async def put(self, msg: Message) -> None:
        if self.closed:
            raise Closed("queue closed")
        if not self._putters and self._has_room():
            self._append(msg)
            return
        fut = asyncio.get_running_loop().create_future()
        self._putters.append(fut)
        while True:
            try:
                await fut
            except BaseException:
                # A wake-up (a free slot) handed to us and lost to cancellation passes to the next sender.
                woken = fut.done() and not fut.cancelled()
                self._putters.remove(fut)
                if woken and self._has_room():
                    _wake_first(self._putters)
                raise
            if self.closed:
                self._putters.remove(fut)
                raise Closed("queue closed")
            if self._has_room():
                self._putters.remove(fut)
                self._append(msg)
                return
            # Defensive: woken without a slot; wait again without losing our place in line.
            again = asyncio.get_running_loop().create_future()
            self._putters[self._putters.index(fut)] = again
            fut = again

    async def get(self) -> Message:
        while True:
            if self._items:
                msg = self._items.popleft()
                _wake_first(self._putters)
                return msg
            if self.closed:
                raise Closed("queue closed")
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                woken = fut.done() and not fut.cancelled()
                self._getters.remove(fut)
                if woken and self._items:
                    _wake_first(self._getters)
                raise
            self._getters.remove(fut)

    def close(self) -> None:
        # Messages already queued are still delivered (like reading a closed Go channel); only waiting on
        # an empty queue, or sending, ends in Closed.
        self.closed = True
        for fut in (*self._getters, *self._putters):
            if not fut.done():
                fut.set_result(None)


@dataclass(frozen=True, slots=True)
class ModuleStats:
    name: str
    group: str
    queued: int
    capacity: int
    drops: int


class Bus:
    """Named, grouped, bounded mailboxes plus request/response matching."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue_size = queue_size
        self._boxes: dict[str, _Mailbox] = {}
        self._groups: dict[str, list[str]] = {}
        self._module_group: dict[str, str] = {}
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._closed = False

    # --- membership ---------------------------------------------------------------------------------
    def register(self, name: str, group: str = "", *, queue_size: int | None = None) -> None:
        if self._closed:
            raise Closed("bus closed")
        if name in self._boxes:
            raise ValueError(f"module {name!r} already registered")
        size = self._queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError("queue_size must be at least 1")
        self._boxes[name] = _Mailbox(size)
        self._module_group[name] = group
        if group:
            self._groups.setdefault(group, []).append(name)

    def unregister(self, name: str) -> None:
        """Remove a module; its receivers are woken with Closed, undelivered messages are discarded."""
        box = self._boxes.pop(name, None)
        if box is None:
            return
        box.close()
        group = self._module_group.pop(name, "")
        members = self._groups.get(group)
        if members is not None:
            members.remove(name)
            if not members:
                del self._groups[group]

    def modules(self, group: str | None = None) -> list[str]:
        if group is None:
            return list(self._boxes)
        return list(self._groups.get(group, ()))

    def stats(self) -> list[ModuleStats]:
        return [
            ModuleStats(n, self._module_group[n], len(b), b.maxsize, b.drops) for n, b in self._boxes.items()
        ]

    def drops(self, module: str) -> int:
        return self._box(module).drops

    @property
    def closed(self) -> bool:
        return self._closed

    def _box(self, module: str) -> _Mailbox:
        box = self._boxes.get(module)
        if box is None:
            if self._closed:
                raise Closed("bus closed")
            raise UnknownModule(module)
        return box

    # --- sending ------------------------------------------------------------------------------------
    async def send(self, module: str, msg: Message) -> None:
        """Queue ``msg`` for ``module``, waiting while its queue is full."""
        await self._box(module).put(msg)

    def try_send(self, module: str, msg: Message) -> bool:
        """Queue without waiting; False (and a counted drop) when the queue is full, False once closed."""
        box = self._box(module)
        if box.closed:
            return False
        if not box.try_put(msg):
            box.drops += 1
            return False
        return True

    async def send_to_group(self, group: str, msg: Message) -> int:
        """Send ``msg`` to every module of ``group`` (in registration order); returns how many.

        The same Message object goes to each member: it is frozen, and content is read-only by contract."""
        members = self.modules(group)
        for name in members:
            await self._box(name).put(msg)
        return len(members)

    def try_send_to_group(self, group: str, msg: Message) -> int:
        """Non-blocking ``send_to_group``; returns how many members accepted (full ones count a drop)."""
        return sum(self.try_send(name, msg) for name in self.modules(group))

    async def receive(self, module: str) -> Message:
        """The next message for ``module``; raises Closed once the bus/module is closed and drained."""
        return await self._box(module).get()

    # --- request / response -------------------------------------------------------------------------
    # The deadline is a mandatory parameter (as in beehive's SendSync) rather than left to the caller's
    # asyncio.timeout: a request to a module that never answers must not be able to wait forever.
    async def send_sync(self, module: str, msg: Message, timeout: float) -> Message:  # noqa: ASYNC109
        """Send a request and wait for the reply whose parent_msg_id is ``msg.msg_id``.

        ``timeout`` covers waiting for queue room as well as the reply; on expiry SyncTimeout is raised
        and a late reply is discarded by ``send_resp``."""
        if self._closed:
            raise Closed("bus closed")
        key = msg.msg_id
        if key in self._pending:
            raise ValueError(f"a request with msg_id {key!r} is already waiting for its reply")
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._box(module).put(msg)
                return await fut
        except TimeoutError:
            raise SyncTimeout(
                f"no reply from {module!r} to {msg.operation} {msg.resource} within {timeout}s"
            ) from None
        finally:
            if self._pending.get(key) is fut:
                del self._pending[key]

    def send_resp(self, msg: Message) -> bool:
        """Deliver a reply to the ``send_sync`` waiting for it; False when nobody waits (late or stray)."""
        fut = self._pending.pop(msg.parent_msg_id, None) if msg.parent_msg_id else None
        if fut is None or fut.done():
            return False
        fut.set_result(msg)
        return True

    def has_waiter(self, msg_id: str) -> bool:
        return msg_id in self._pending

    # --- shutdown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every queue and fail pending requests with Closed; idempotent, never blocks."""
        if self._closed:
            return
        self._closed = True
        for box in self._boxes.values():
            box.close()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(Closed("bus closed"))
