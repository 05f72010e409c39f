"""The persisted upstream queue: the latest pending status per object, sent when the cloud is reachable.

Upstream status is last-writer-wins (DESIGN §3): while offline only the newest report per object
matters, so entries are keyed by resource string and a new ``put`` replaces the pending one. Every
entry carries a sequence number; ``ack`` removes an entry only if its number is the one that was
sent, so a report written while an older one was in flight is never lost. The table lives in its own
small SQLite file (WAL, synchronous=FULL): nothing the edge wrote offline is lost to a crash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from kubeedge.beehive import Message, needs_ack
from kubeedge.beehive.message import GROUP_RESOURCE, OP_ERROR

log = logging.getLogger(__name__)

# Distinct objects with a pending report. A node reports its own node, lease and its pods' status, so
# even a dense node stays far below; hitting the bound means something writes unbounded keys.
MAX_ENTRIES: Final = 10_000
# Entries read and sent per round of a drain; also bounds the ACK waiters alive at once.
DRAIN_BATCH: Final = 200
# How long a drain waits for the cloud's response to a message that needs one, and how often it
# resends before leaving the entry for the next drain.
ACK_TIMEOUT: Final = 5.0
ACK_ATTEMPTS: Final = 3
DEFAULT_SOURCE: Final = "edged"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS upstream (
    resource TEXT PRIMARY KEY, seq INTEGER NOT NULL, source TEXT NOT NULL, grp TEXT NOT NULL,
    operation TEXT NOT NULL, content BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS upstream_seq ON upstream (seq);
"""


class UpstreamFull(Exception):
    """The queue holds MAX_ENTRIES distinct objects; a new object cannot be added until some drain."""


@dataclass(frozen=True, slots=True)
class Entry:
    resource: str
    seq: int
    source: str
    group: str
    operation: str
    content: Any

    def message(self) -> Message:
        return Message.new(self.source, self.group, self.operation, self.resource, self.content)


class _Link(Protocol):
    """What ``run`` needs of the edgehub."""

    @property
    def connected_event(self) -> asyncio.Event: ...

    async def send(self, msg: Message) -> bool: ...


Send = Callable[[Message], Awaitable[bool]]


class UpstreamQueue:
    def __init__(
        self,
        path: str | Path,
        *,
        limit: int = MAX_ENTRIES,
        ack_timeout: float = ACK_TIMEOUT,
        ack_attempts: int = ACK_ATTEMPTS,
        batch: int = DRAIN_BATCH,
    ) -> None:
        if limit < 1 or batch < 1 or ack_attempts < 1 or ack_timeout <= 0:
            raise ValueError("upstream queue: limit, batch, ack_attempts and ack_timeout must be positive")
        self.path = Path(path)
        self.limit = limit
        self.ack_timeout = ack_timeout
        self.ack_attempts = ack_attempts
        self.batch = batch
        # One thread owns the connection: statements are serialised and fsyncs stay off the event loop.
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upstream-queue")
        self._conn: sqlite3.Connection | None = None
        self._seq = 0
        self._count = 0
        # Set by put: a drain loop sleeps on it instead of polling.
        self.changed = asyncio.Event()
        # msg_id -> future resolved by the cloud's response/error (see deliver_reply).
        self._waiting: dict[str, asyncio.Future[Message]] = {}

    # ---- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        if self._count:
            self.changed.set()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT coalesce(max(seq), 0), count(*) FROM upstream").fetchone()
        # Sequence numbers only need to be unique among entries still present (an ack names one of
        # them), so continuing from the largest stored one is enough across restarts.
        self._seq, self._count = int(row[0]), int(row[1])
        self._conn = conn

    async def close(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._exec.shutdown(wait=True)

    async def __aenter__(self) -> UpstreamQueue:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("upstream queue is not open")
        return self._conn

    # ---- queue operations ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    async def put(
        self,
        resource: str,
        operation: str,
        content: Any,
        *,
        group: str = GROUP_RESOURCE,
        source: str = DEFAULT_SOURCE,
    ) -> int:
        """Store the latest report for ``resource`` (replacing a pending one); returns its sequence."""
        data = orjson.dumps(content)
        seq: int = await self._run(self._put, resource, source, group, operation, data)
        self.changed.set()
        return seq

    def _put(self, resource: str, source: str, group: str, operation: str, data: bytes) -> int:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute("SELECT 1 FROM upstream WHERE resource=?", (resource,)).fetchone()
            if exists is None and self._count >= self.limit:
                raise UpstreamFull(
                    f"upstream queue full: {self._count} objects pending (limit {self.limit}); "
                    f"cannot queue {resource}"
                )
            seq = self._seq + 1
            conn.execute(
                "INSERT OR REPLACE INTO upstream VALUES (?,?,?,?,?,?)",
                (resource, seq, source, group, operation, data),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._seq = seq
        if exists is None:
            self._count += 1
        return seq

    async def pending(self, limit: int = 0, after_seq: int = 0) -> list[Entry]:
        """Pending entries, oldest first (a replaced entry moves to the back with its new sequence)."""
        rows: list[tuple[Any, ...]] = await self._run(self._pending, limit, after_seq)
        return [Entry(r[0], int(r[1]), r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    def _pending(self, limit: int, after_seq: int) -> list[tuple[Any, ...]]:
        sql = "SELECT resource, seq, source, grp, operation, content FROM upstream WHERE seq > ? ORDER BY seq"
        if limit:
            return self._db().execute(sql + " LIMIT ?", (after_seq, limit)).fetchall()
        return self._db().execute(sql, (after_seq,)).fetchall()

    async def ack(self, resource: str, seq: int) -> bool:
        """Remove the entry if it is still the one with ``seq``; False when it was replaced (or gone)."""
        removed: int = await self._run(self._ack_many, [(resource, seq)])
        return removed == 1

    async def ack_many(self, done: list[tuple[str, int]]) -> int:
        """``ack`` for several entries in one transaction; returns how many were removed."""
        if not done:
            return 0
        removed: int = await self._run(self._ack_many, done)
        return removed

    def _ack_many(self, done: list[tuple[str, int]]) -> int:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            for resource, seq in done:
                cur = conn.execute("DELETE FROM upstream WHERE resource=? AND seq=?", (resource, seq))
                removed += cur.rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._count -= removed
        return removed

    # ---- flushing ---------------------------------------------------------------------------------

    def deliver_reply(self, msg: Message) -> bool:
        """Hand a reply from the cloud to a waiting drain; True when it was one we were waiting for.

        The edgecore's message router calls this for every response/error before routing it further."""
        fut = self._waiting.get(msg.parent_msg_id)
        if fut is None or fut.done():
            return False
        fut.set_result(msg)
        return True

    async def drain(self, send: Send) -> int:
        """Send everything pending, in order and in batches; remove what was delivered.

        Messages the cloud acknowledges (``needs_ack``) are removed only after its response arrives
        (resent up to ``ack_attempts`` times, ``ack_timeout`` each); the rest once ``send`` returned
        True. Stops at the first failed send (offline). Returns how many entries were removed."""
        removed = 0
        after_seq = 0
        # Only what was pending when the drain began: reports written meanwhile set ``changed`` and are
        # the next drain's, so a busy writer cannot keep one drain going forever.
        upto = self._seq
        while True:
            batch = [e for e in await self.pending(self.batch, after_seq) if e.seq <= upto]
            if not batch:
                return removed
            done, online = await self._send_batch(send, batch)
            removed += await self.ack_many(done)
            if not online:
                return removed
            # Entries left behind (no ACK) wait for the next drain; move past them.
            after_seq = batch[-1].seq

    async def _send_batch(self, send: Send, batch: list[Entry]) -> tuple[list[tuple[str, int]], bool]:
        done: list[tuple[str, int]] = []
        acked: list[Entry] = []
        for e in batch:
            if needs_ack(e.message()):
                acked.append(e)
                continue
            if not await send(e.message()):
                return done, False
            done.append((e.resource, e.seq))
        for _ in range(self.ack_attempts):
            if not acked:
                break
            waits: dict[str, tuple[Entry, asyncio.Future[Message]]] = {}
            loop = asyncio.get_running_loop()
            try:
                for e in acked:
                    msg = e.message()
                    fut: asyncio.Future[Message] = loop.create_future()
                    self._waiting[msg.msg_id] = fut
                    waits[msg.msg_id] = (e, fut)
                    if not await send(msg):
                        return done, False
                await asyncio.wait([f for _, f in waits.values()], timeout=self.ack_timeout)
            finally:
                for mid in waits:
                    self._waiting.pop(mid, None)
            acked = []
            for e, fut in waits.values():
                if not fut.done() or fut.cancelled():
                    acked.append(e)
                    continue
                reply = fut.result()
                if reply.operation == OP_ERROR:
                    # A refusal is final (resending the same report is refused again); the next
                    # report of this object replaces it anyway.
                    log.warning("cloud refused upstream %s %s: %s", e.operation, e.resource, reply.content)
                done.append((e.resource, e.seq))
        if acked:
            log.info("%d upstream messages not acknowledged after %d attempts", len(acked), self.ack_attempts)
        return done, True

    async def run(self, link: _Link) -> None:
        """Drain whenever something is pending and the hub is connected; for the Supervisor."""
        while True:
            await link.connected_event.wait()
            self.changed.clear()
            await self.drain(link.send)
            if self._count and link.connected_event.is_set():
                # Leftovers were not acknowledged: retry after a pause rather than spin.
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=self.ack_timeout)
                except TimeoutError:
                    pass
                continue
            await self.changed.wait()
