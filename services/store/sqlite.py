"""The revisioned object store on SQLite: group-committed writes, snapshot lists, watch history.

Layout: `objects` holds the current version of every object; `events` holds the change history
(every version, with the revision of the version it replaced) down to the compaction point; `revisions`
holds the current and compacted revisions. One global revision numbers every change.
`revisions` was once called `meta`; that name belongs to KubeEdge's edge table (key, type, value),
which the edge offers as a view (edgecore.metamanager), so an old file's table is renamed at open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import AlreadyExists, Closed, Conflict, Expired, NotFound, StoreError
from .records import ADDED, DELETED, MODIFIED, Event, Obj, Record, type_code, type_name
from .watch import Hub, Predicate, Watcher

log = logging.getLogger(__name__)

List = list  # Store.list shadows the builtin inside the class body

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (key, ns, name));
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type INTEGER NOT NULL,
    key TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,
    prev_rv INTEGER NOT NULL, data BLOB NOT NULL, prev_data BLOB);
CREATE TABLE IF NOT EXISTS revisions (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO revisions VALUES ('rv', 0), ('compacted', 0);
"""

_AFTER = " AND (ns > ? OR (ns = ? AND name > ?))"


@dataclass(frozen=True)
class StoreConfig:
    # Writes waiting for the group-commit writer; callers wait (backpressure) beyond this.
    write_queue_limit: int = 10_000
    # Most operations committed in one transaction (one fsync).
    max_batch: int = 2_000
    # Change history kept for watch resume and paginated lists, in events.
    history_limit: int = 200_000
    compact_interval: float = 60.0
    # Events a watcher may have pending before it is closed as too slow.
    watch_buffer_limit: int = 100_000
    # Rows read per round trip while filtering a list.
    list_chunk: int = 1_000
    # Decoded objects kept (LRU) so lists that need them (Table, selectors) skip JSON decoding:
    # the role of kube-apiserver's watch cache, bounded. 0 disables.
    decoded_cache_limit: int = 20_000
    # SQLite page cache per connection (there are four: writer, event loop, two readers).
    page_cache_kib: int = 16_384
    # FULL: a commit is on disk before the write is answered (survives power loss, not only kill -9).
    synchronous: str = "FULL"

    def __post_init__(self) -> None:
        for f in ("write_queue_limit", "max_batch", "history_limit", "watch_buffer_limit", "list_chunk"):
            if getattr(self, f) < 1:
                raise ValueError(f"store config: {f} must be positive")
        if self.decoded_cache_limit < 0:
            raise ValueError("store config: decoded_cache_limit must not be negative")
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("store config: synchronous must be FULL, NORMAL or EXTRA")


@dataclass
class ListResult:
    items: list[Record]
    rv: int
    # (namespace, name) of the last item when more items follow; the API encodes it in `continue`.
    next_after: tuple[str, str] | None = None


Mutator = Callable[[Obj], Obj | None]


class DecodedCache:
    """Bounded LRU of decoded current objects, keyed by (resource, namespace, name) and checked
    against the revision, so a stale entry is never served. Shared by the writer and reader threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._d: collections.OrderedDict[tuple[str, str, str], tuple[int, Obj]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, ns: str, name: str, rv: int) -> Obj | None:
        if not self.limit:
            return None
        with self._lock:
            hit = self._d.get((key, ns, name))
            if hit is None or hit[0] != rv:
                return None
            self._d.move_to_end((key, ns, name))
            return hit[1]

    def put(self, key: str, ns: str, name: str, rv: int, obj: Obj) -> None:
        if not self.limit:
            return
        with self._lock:
            self._d[(key, ns, name)] = (rv, obj)
            self._d.move_to_end((key, ns, name))
            while len(self._d) > self.limit:
                self._d.popitem(last=False)

    def committed(self, events: List[Event]) -> None:
        if not self.limit:
            return
        with self._lock:
            for ev in events:
                k = (ev.key, ev.namespace, ev.name)
                if ev.type == DELETED:
                    self._d.pop(k, None)
                elif k in self._d:
                    # Refresh only what is cached: writes alone should not push reads out.
                    self._d[k] = (ev.rv, ev.obj)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


def _rename_old_revisions(conn: sqlite3.Connection) -> None:
    row = conn.execute("SELECT type FROM sqlite_master WHERE name='meta'").fetchone()
    if row is None or row[0] != "table":
        return
    if [r[1] for r in conn.execute("PRAGMA table_info(meta)")] != ["k", "v"]:
        return  # not ours: leave it alone
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='revisions'").fetchone() is None:
        conn.execute("ALTER TABLE meta RENAME TO revisions")


class _Op:
    __slots__ = ("args", "fut", "kind")

    def __init__(self, kind: str, args: tuple[Any, ...], fut: asyncio.Future[Any]) -> None:
        self.kind = kind
        self.args = args
        self.fut = fut


def _set_rv(obj: Obj, rv: int) -> None:
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = obj["metadata"] = {}
    md["resourceVersion"] = str(rv)


class Store:
    """Kubernetes-shaped object store. Keys: (resource key, namespace or "", name)."""

    def __init__(self, path: str | Path, config: StoreConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or StoreConfig()
        self.hub = Hub()
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(maxsize=self.config.write_queue_limit)
        self._wexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._rexec = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._local = threading.local()
        self._wconn: sqlite3.Connection | None = None
        self._loop_conn: sqlite3.Connection | None = None
        self._rv = 0
        self._compacted = 0
        # The compaction point as the writer thread knows it (compaction runs on that thread).
        self._w_compacted = 0
        self._writer_task: asyncio.Task[None] | None = None
        self._compactor_task: asyncio.Task[None] | None = None
        self._closed = False
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.stats = {"batches": 0, "ops": 0}
        self.decoded = DecodedCache(self.config.decoded_cache_limit)

    # ---- lifecycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.config.synchronous}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA cache_size=-{self.config.page_cache_kib}")
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = await asyncio.get_running_loop().run_in_executor(self._wexec, self._open_writer)
        self._loop_conn = self._connect()
        row = self._loop_conn.execute("SELECT v FROM revisions WHERE k='rv'").fetchone()
        crow = self._loop_conn.execute("SELECT v FROM revisions WHERE k='compacted'").fetchone()
        self._rv = int(row[0])
        self._compacted = int(crow[0])
        self.hub.rv = self._rv
        self._writer_task = asyncio.create_task(self._writer(), name="store-writer")
        self._compactor_task = asyncio.create_task(self._compactor(), name="store-compactor")
        log.info("store %s open at revision %d (history from %d)", self.path, self._rv, self._compacted)

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        _rename_old_revisions(conn)
        conn.executescript(_SCHEMA)
        _add_prev_data(conn)
        self._w_compacted = int(conn.execute("SELECT v FROM revisions WHERE k='compacted'").fetchone()[0])
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in (self._compactor_task, self._writer_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.fut.done():
                op.fut.set_exception(Closed("store closed"))
        self.hub.close_all()
        self._wexec.shutdown(wait=True)
        self._rexec.shutdown(wait=True)
        with self._conns_lock:
            for c in self._conns:
                c.close()
            self._conns.clear()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def rv(self) -> int:
        """The latest revision published to watchers (every write answered so far is at or below)."""
        return self._rv

    @property
    def compacted_rv(self) -> int:
        return self._compacted

    # ---- writes ----------------------------------------------------------------------------

    async def _submit(self, kind: str, *args: Any) -> Any:
        if self._closed:
            raise Closed("store closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Op(kind, args, fut))
        return await fut

    async def create(self, key: str, namespace: str, name: str, obj: Obj) -> Record:
        """Insert; sets metadata.resourceVersion. `obj` must not be changed by the caller afterwards."""
        rec: Record = await self._submit("create", key, namespace, name, obj)
        return rec

    async def update(
        self, key: str, namespace: str, name: str, obj: Obj, expect_rv: int | None = None
    ) -> Record:
        """Replace; with expect_rv, fail with Conflict unless the stored version is that one."""
        rec: Record = await self._submit("update", key, namespace, name, obj, expect_rv)
        return rec

    async def guaranteed_update(self, key: str, namespace: str, name: str, fn: Mutator) -> Record:
        """Apply `fn` to a private copy of the current object inside the write transaction.

        No conflicts are possible. `fn` returns the new object, or None to leave it unchanged (the
        current record is returned). Exceptions from `fn` fail this write only.
        """
        rec: Record = await self._submit("mutate", key, namespace, name, fn)
        return rec

    async def delete(self, key: str, namespace: str, name: str, expect_rv: int | None = None) -> Record:
        """Remove; returns the final version of the object, stamped with the deletion revision."""
        rec: Record = await self._submit("delete", key, namespace, name, expect_rv)
        return rec

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            op = await self._queue.get()
            batch = [op]
            while len(batch) < self.config.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results, events, rv = await loop.run_in_executor(self._wexec, self._commit, batch)
            except asyncio.CancelledError:
                for o in batch:
                    if not o.fut.done():
                        o.fut.set_exception(Closed("store closed"))
                raise
            except Exception as e:  # the whole transaction failed (disk full, I/O error)
                log.exception("store commit of %d operations failed", len(batch))
                for o in batch:
                    if not o.fut.done():
                        o.fut.set_exception(StoreError(f"commit failed: {e}"))
                continue
            # Publish before answering: a client that hears "done" and then watches sees nothing stale.
            self._rv = rv
            self.stats["batches"] += 1
            self.stats["ops"] += len(batch)
            if events:
                self.hub.publish(events, rv)
            else:
                self.hub.rv = rv
            for o, res in zip(batch, results, strict=True):
                if o.fut.done():  # the caller went away; the write stands regardless
                    continue
                if isinstance(res, BaseException):
                    o.fut.set_exception(res)
                else:
                    o.fut.set_result(res)

    def _commit(self, batch: list[_Op]) -> tuple[list[Any], list[Event], int]:
        conn = self._wconn
        assert conn is not None
        rv = self._rv
        results: list[Any] = []
        events: list[Event] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                if op.kind == "compact":
                    results.append(self._do_compact(conn, op.args[0]))
                    continue
                try:
                    ev = self._apply(conn, op, rv + 1)
                except Exception as e:
                    results.append(e)
                    continue
                if not isinstance(ev, Event):  # a mutation that changed nothing
                    results.append(ev)
                    continue
                rv += 1
                events.append(ev)
                results.append(Record(ev.data, ev.rv, ev.obj if ev.type != DELETED else None))
            conn.execute("UPDATE revisions SET v=? WHERE k='rv'", (rv,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.decoded.committed(events)
        return results, events, rv

    def _apply(self, conn: sqlite3.Connection, op: _Op, rv: int) -> Event | Record:
        key, ns, name = op.args[0], op.args[1], op.args[2]
        row = conn.execute(
            "SELECT rv, data FROM objects WHERE key=? AND ns=? AND name=?", (key, ns, name)
        ).fetchone()
        if op.kind == "create":
            if row is not None:
                raise AlreadyExists(f"{key} {ns}/{name} already exists")
            obj: Obj = op.args[3]
            _set_rv(obj, rv)
            data = orjson.dumps(obj)
            conn.execute("INSERT INTO objects VALUES (?,?,?,?,?)", (key, ns, name, rv, data))
            self._log_event(conn, rv, ADDED, key, ns, name, 0, data)
            return Event(ADDED, key, ns, name, rv, data, obj)
        if row is None:
            raise NotFound(f"{key} {ns}/{name} not found")
        cur_rv, cur_data = int(row[0]), bytes(row[1])
        prev = Record(cur_data, cur_rv)
        if op.kind == "mutate":
            fn: Mutator = op.args[3]
            new = fn(prev.copy_obj())
            if new is None:
                return prev
            obj = new
        elif op.kind == "update":
            expect = op.args[4]
            if expect is not None and expect != cur_rv:
                raise Conflict(f"{key} {ns}/{name}: stored revision {cur_rv}, not {expect}")
            obj = op.args[3]
        elif op.kind == "delete":
            expect = op.args[3]
            if expect is not None and expect != cur_rv:
                raise Conflict(f"{key} {ns}/{name}: stored revision {cur_rv}, not {expect}")
            obj = prev.copy_obj()
            _set_rv(obj, rv)
            data = orjson.dumps(obj)
            conn.execute("DELETE FROM objects WHERE key=? AND ns=? AND name=?", (key, ns, name))
            self._log_event(
                conn, rv, DELETED, key, ns, name, cur_rv, data, self._inline_prev(cur_rv, cur_data)
            )
            return Event(DELETED, key, ns, name, rv, data, obj, prev)
        else:
            raise StoreError(f"unknown operation {op.kind}")
        _set_rv(obj, rv)
        data = orjson.dumps(obj)
        conn.execute(
            "UPDATE objects SET rv=?, data=? WHERE key=? AND ns=? AND name=?", (rv, data, key, ns, name)
        )
        self._log_event(conn, rv, MODIFIED, key, ns, name, cur_rv, data, self._inline_prev(cur_rv, cur_data))
        return Event(MODIFIED, key, ns, name, rv, data, obj, prev)

    def _inline_prev(self, prev_rv: int, prev_data: bytes) -> bytes | None:
        """The replaced version's bytes when its own history row is already compacted away: a watch
        replaying this change (ADDED vs MODIFIED under a selector) and a list at an older revision
        both need the version it replaced. Only objects unchanged for a whole history window pay."""
        return prev_data if prev_rv <= self._w_compacted else None

    @staticmethod
    def _log_event(
        conn: sqlite3.Connection,
        rv: int,
        t: str,
        key: str,
        ns: str,
        name: str,
        prev_rv: int,
        data: bytes,
        prev_data: bytes | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            (rv, type_code(t), key, ns, name, prev_rv, data, prev_data),
        )

    # ---- compaction ------------------------------------------------------------------------

    async def compact(self, keep: int | None = None) -> int:
        """Drop history older than the last `keep` revisions; returns the new compaction point."""
        keep = self.config.history_limit if keep is None else keep
        upto: int = await self._submit("compact", max(0, self._rv - keep))
        self._compacted = max(self._compacted, upto)
        return self._compacted

    def _do_compact(self, conn: sqlite3.Connection, upto: int) -> int:
        row = conn.execute("SELECT v FROM revisions WHERE k='compacted'").fetchone()
        if upto <= int(row[0]):
            return int(row[0])
        # Kept changes whose replaced version goes now carry that version themselves.
        conn.execute(
            "UPDATE events SET prev_data = (SELECT e.data FROM events e WHERE e.rv = events.prev_rv) "
            "WHERE rv > ? AND prev_rv > 0 AND prev_rv <= ? AND prev_data IS NULL",
            (upto, upto),
        )
        conn.execute("DELETE FROM events WHERE rv <= ?", (upto,))
        conn.execute("UPDATE revisions SET v=? WHERE k='compacted'", (upto,))
        self._w_compacted = upto
        return upto

    async def _compactor(self) -> None:
        while True:
            await asyncio.sleep(self.config.compact_interval)
            try:
                before = self._compacted
                after = await self.compact()
                if after > before:
                    log.info("store compacted history up to revision %d", after)
            except Closed:
                return
            except Exception:
                log.exception("store compaction failed; will retry")

    # ---- reads -----------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise Closed("store closed")
        return await asyncio.get_running_loop().run_in_executor(self._rexec, fn, *args)

    def get_now(self, key: str, namespace: str, name: str) -> Record:
        """Point read on the event loop: one indexed row, cheaper than a thread hop."""
        if self._loop_conn is None or self._closed:
            raise Closed("store closed")
        row = self._loop_conn.execute(
            "SELECT rv, data FROM objects WHERE key=? AND ns=? AND name=?", (key, namespace, name)
        ).fetchone()
        if row is None:
            raise NotFound(f"{key} {namespace}/{name} not found")
        rv = int(row[0])
        return Record(bytes(row[1]), rv, self.decoded.get(key, namespace, name, rv))

    async def get(self, key: str, namespace: str, name: str) -> Record:
        return self.get_now(key, namespace, name)

    async def list(
        self,
        key: str,
        namespace: str | None = None,
        *,
        predicate: Predicate | None = None,
        limit: int = 0,
        at_rv: int | None = None,
        after: tuple[str, str] | None = None,
        decode: bool = False,
    ) -> ListResult:
        """Objects of a resource in (namespace, name) order, consistent at one revision.

        Without `at_rv` the list is a snapshot of now. With `at_rv` (a continued list) it shows the
        objects as they were at that revision, or raises Expired once history has moved past it.
        `decode` asks for every item's `obj` (through the decoded-object cache), e.g. for Tables.
        """
        result: ListResult = await self._read(
            self._list, key, namespace, predicate, limit, at_rv, after, decode or predicate is not None
        )
        return result

    def _list(
        self,
        key: str,
        ns: str | None,
        predicate: Predicate | None,
        limit: int,
        at_rv: int | None,
        after: tuple[str, str] | None,
        decode: bool,
    ) -> ListResult:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            snap_rv = int(conn.execute("SELECT v FROM revisions WHERE k='rv'").fetchone()[0])
            compacted = int(conn.execute("SELECT v FROM revisions WHERE k='compacted'").fetchone()[0])
            if at_rv is not None and at_rv < compacted:
                raise Expired(f"revision {at_rv} is older than the kept history ({compacted})")
            rv = snap_rv if at_rv is None else at_rv
            rows = self._iter_at(conn, key, ns, rv, snap_rv, after)
            items: List[Record] = []
            last: tuple[str, str] | None = None
            cache = self.decoded
            for rns, rname, rrv, data in rows:
                rec = Record(data, rrv, cache.get(key, rns, rname, rrv))
                if decode and rec.decoded is None:
                    cache.put(key, rns, rname, rrv, rec.obj)
                if predicate is not None and not predicate(rec.obj):
                    continue
                if limit and len(items) == limit:
                    return ListResult(items, rv, last)
                items.append(rec)
                last = (rns, rname)
            return ListResult(items, rv, None)
        finally:
            conn.execute("COMMIT")

    def _iter_at(
        self,
        conn: sqlite3.Connection,
        key: str,
        ns: str | None,
        rv: int,
        snap_rv: int,
        after: tuple[str, str] | None,
    ) -> Iterable[tuple[str, str, int, bytes]]:
        """Rows (ns, name, rv, data) as of revision `rv`, in key order, from `after` onwards."""
        where = "key=?"
        params: List[Any] = [key]
        if ns is not None:
            where += " AND ns=?"
            params.append(ns)
        current = self._chunks(conn, where, list(params), after)
        if after is not None:
            where += _AFTER
            params = [*params, after[0], after[0], after[1]]
        if rv >= snap_rv:
            yield from current
            return
        # Objects changed since `rv`: their state at `rv` is the version their first later change
        # replaced (none if that change created them); objects deleted since are only found here.
        changed: dict[tuple[str, str], int] = {}
        changed_data: dict[tuple[str, str], bytes | None] = {}
        q = f"SELECT ns, name, type, prev_rv, prev_data FROM events WHERE rv > ? AND {where} ORDER BY rv"
        for rns, rname, t, prev_rv, prev_data in conn.execute(q, [rv, *params]):
            if (rns, rname) not in changed:
                changed[(rns, rname)] = 0 if type_name(t) == ADDED else int(prev_rv)
                changed_data[(rns, rname)] = prev_data
        olds: List[tuple[str, str, int, bytes]] = []
        for (rns, rname), prev_rv in changed.items():
            if prev_rv:
                data = _prev_version(conn, prev_rv, changed_data[(rns, rname)])
                if data is None:
                    raise Expired(f"revision {rv} is older than the kept history")
                olds.append((rns, rname, prev_rv, data))
        olds.sort(key=lambda r: (r[0], r[1]))
        i = 0
        for row in current:
            k = (row[0], row[1])
            while i < len(olds) and (olds[i][0], olds[i][1]) < k:
                yield olds[i]
                i += 1
            if k not in changed:
                yield row
        yield from olds[i:]

    def _chunks(
        self, conn: sqlite3.Connection, where: str, params: List[Any], after: tuple[str, str] | None
    ) -> Iterable[tuple[str, str, int, bytes]]:
        # Chunked keyset reads keep memory flat when a filtered list scans many rows.
        chunk = self.config.list_chunk
        while True:
            q = f"SELECT ns, name, rv, data FROM objects WHERE {where}"
            p = list(params)
            if after is not None:
                q += _AFTER
                p += [after[0], after[0], after[1]]
            rows = conn.execute(q + " ORDER BY ns, name LIMIT ?", [*p, chunk]).fetchall()
            for r in rows:
                yield r[0], r[1], int(r[2]), bytes(r[3])
            if len(rows) < chunk:
                return
            after = (rows[-1][0], rows[-1][1])

    async def history(self, key: str, namespace: str | None, after_rv: int, upto_rv: int) -> List[Event]:
        """Committed events of a resource with after_rv < rv <= upto_rv, each with its predecessor."""
        events: List[Event] = await self._read(self._history, key, namespace, after_rv, upto_rv)
        return events

    def _history(self, key: str, ns: str | None, after_rv: int, upto_rv: int) -> List[Event]:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            compacted = int(conn.execute("SELECT v FROM revisions WHERE k='compacted'").fetchone()[0])
            if after_rv < compacted:
                raise Expired(f"too old resource version: {after_rv} ({compacted})")
            q = "SELECT rv, type, ns, name, prev_rv, data, prev_data FROM events WHERE rv > ? AND rv <= ? AND key=?"
            params: List[Any] = [after_rv, upto_rv, key]
            if ns is not None:
                q += " AND ns=?"
                params.append(ns)
            out: List[Event] = []
            for rv, t, rns, rname, prev_rv, data, prev_data in conn.execute(q + " ORDER BY rv", params):
                prev = None
                if prev_rv:
                    pdata = _prev_version(conn, prev_rv, prev_data)
                    if pdata is not None:
                        prev = Record(pdata, int(prev_rv))
                out.append(Event(type_name(t), key, rns, rname, int(rv), bytes(data), None, prev))
            return out
        finally:
            conn.execute("COMMIT")

    # ---- watch -----------------------------------------------------------------------------

    def watch(
        self,
        key: str,
        namespace: str | None = None,
        *,
        from_rv: int,
        predicate: Predicate | None = None,
        buffer_limit: int | None = None,
    ) -> Watcher:
        """Changes after `from_rv`, in revision order, exactly once. Close the watcher when done.

        Registration is immediate, so nothing committed after this call can be missed; history
        between from_rv and now is replayed first (Expired if compacted away).
        """
        if self._closed:
            raise Closed("store closed")
        if from_rv < self._compacted:
            raise Expired(f"too old resource version: {from_rv} ({self._compacted})")
        w = Watcher(
            self.hub,
            key,
            namespace,
            predicate,
            from_rv,
            self.hub.rv,
            buffer_limit or self.config.watch_buffer_limit,
            lambda a, b: self.history(key, namespace, a, b),
        )
        self.hub.add(w)
        return w


def _prev_version(conn: sqlite3.Connection, prev_rv: int, inline: bytes | None) -> bytes | None:
    """The version a change replaced: carried inline once its own row was compacted, else its row."""
    if inline is not None:
        return bytes(inline)
    row = conn.execute("SELECT data FROM events WHERE rv=?", (prev_rv,)).fetchone()
    return bytes(row[0]) if row is not None else None


def _add_prev_data(conn: sqlite3.Connection) -> None:
    """Stores written before events carried prev_data get the column (NULL: look the row up)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    if "prev_data" not in cols:
        conn.execute("ALTER TABLE events ADD COLUMN prev_data BLOB")
