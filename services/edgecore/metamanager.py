"""metamanager: applies the cloud's object messages to the edge store, ACKing only what is committed.

Objects land under the same storage keys the API server uses (``pods``, ``leases.coordination.k8s.io``,
...), so the MetaServer serves them unchanged. The store rewrites ``metadata.resourceVersion`` with
its own revision, so the cloud's version is kept in the annotation CLOUD_RV_ANNOTATION: staleness
checks and the inventory compare against it (as integers, as KubeEdge does).

Messages are applied in bursts: everything queued when the applier wakes is written concurrently, the
store group-commits those writes into few transactions, and each message is ACKed (``response``/"OK")
once its own write has committed.

KubeEdge's edgecore keeps the same objects in a SQLite table ``meta`` (``key`` = the message resource
``<namespace>/<type>/<name>``, ``type`` = e.g. ``pod``, ``value`` = the object JSON); tooling reads it
with ``sqlite3 edgecore.db 'select key, type from meta'``. The edge store's file offers that layout as
a read-only VIEW over the store's ``objects`` table (cluster-scoped objects under ``null/``, as on the
wire), created when the metamanager starts.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from kubeedge.beehive import (
    DecodeError,
    KindInfo,
    Message,
    Resource,
    ResourceError,
    content_object,
    kind_info,
)
from kubeedge.beehive import needs_ack as _needs_ack
from kubeedge.beehive.message import (
    GROUP_RESOURCE,
    OP_DELETE,
    OP_INSERT,
    OP_INVENTORY,
    OP_QUERY,
    OP_UPDATE,
    RT_CONFIGMAP,
    RT_DEVICE,
    RT_DEVICEMODEL,
    RT_ENDPOINTS,
    RT_ENDPOINTSLICE,
    RT_LEASE,
    RT_NODE,
    RT_PERSISTENTVOLUMECLAIM,
    RT_POD,
    RT_SECRET,
    RT_SERVICE,
)
from kubeedge.store import AlreadyExists, NotFound, Obj, Record, Store, StoreError

log = logging.getLogger(__name__)

SOURCE: Final = "metamanager"
CLOUD_RV_ANNOTATION: Final = "edge.kubeedge.io/cloud-resource-version"
# Resource string of the inventory message; must equal cloudcore.hubapi.INVENTORY_RESOURCE (the edge
# does not import the cloud's package).
INVENTORY_RESOURCE: Final = "null/inventory/{node}"
# Downstream messages waiting to be applied; the hub's reader waits (back-pressure) beyond this.
INBOX_LIMIT: Final = 4096
# Most messages applied in one burst (the store commits up to its max_batch per transaction).
MAX_BURST: Final = 2000

# KubeEdge has no resource type for a ServiceAccount (only its token subresource): ours.
RT_SERVICEACCOUNT: Final = "serviceaccount"
_SERVICEACCOUNT = KindInfo("ServiceAccount", "", "v1", "serviceaccounts", True)

# The object types the edge stores. Everything else downstream is refused with an error reply.
STORED_TYPES: Final = (
    RT_POD,
    RT_CONFIGMAP,
    RT_SECRET,
    RT_SERVICE,
    RT_ENDPOINTS,
    RT_ENDPOINTSLICE,
    RT_NODE,
    RT_LEASE,
    RT_SERVICEACCOUNT,
    RT_PERSISTENTVOLUMECLAIM,
    RT_DEVICE,
    RT_DEVICEMODEL,
)
# Types a local module may read through ``query`` (lazy reads of what pods mount).
QUERY_TYPES: Final = frozenset({RT_CONFIGMAP, RT_SECRET, RT_SERVICEACCOUNT, RT_POD, RT_NODE})


def _info(rtype: str) -> KindInfo | None:
    if rtype == RT_SERVICEACCOUNT:
        return _SERVICEACCOUNT
    return kind_info(rtype) if rtype in STORED_TYPES else None


def storage_key(info: KindInfo) -> str:
    """The API server's storage key: plural, group-qualified outside the core group."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


_POD_KEY: Final = "pods"  # storage_key of the pod kind

META_VIEW: Final = "meta"


def meta_view_sql() -> str:
    """CREATE VIEW for KubeEdge's ``meta`` layout over the store's ``objects`` of STORED_TYPES."""
    cases = []
    for rtype in STORED_TYPES:
        info = _info(rtype)
        assert info is not None
        # Constants of ours, quoted all the same: a view's SQL cannot take parameters.
        key, typ = (v.replace("'", "''") for v in (storage_key(info), rtype))
        cases.append(f"WHEN '{key}' THEN '{typ}'")
    type_of = f"CASE key {' '.join(cases)} END"
    return (
        f"CREATE VIEW IF NOT EXISTS {META_VIEW} (key, type, value) AS "
        "SELECT (CASE ns WHEN '' THEN 'null' ELSE ns END) || '/' || type || '/' || name, type, value "
        f"FROM (SELECT {type_of} AS type, ns, name, CAST(data AS TEXT) AS value FROM objects) "
        "WHERE type IS NOT NULL"
    )


def ensure_meta_view(path: Path, timeout: float = 30.0) -> None:
    """Create (or bring up to date) the ``meta`` view in the store file at ``path`` (blocking)."""
    want = meta_view_sql()
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        row = conn.execute("SELECT type, sql FROM sqlite_master WHERE name=?", (META_VIEW,)).fetchone()
        if row is not None and row[0] != "view":
            log.warning("metamanager: %s has a %s named %s; not creating the view", path, row[0], META_VIEW)
            return
        if row is not None and row[1] == want.replace(" IF NOT EXISTS", "", 1):
            return
        # Absent, or written by a version that stored other types: replace it in one transaction.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DROP VIEW IF EXISTS {META_VIEW}")
        conn.execute(want)
        conn.execute("COMMIT")
    finally:
        conn.close()


def cloud_rv(obj: Obj) -> int:
    """The cloud's resourceVersion kept on a stored object (0 if absent or not a number)."""
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    return _as_int(ann.get(CLOUD_RV_ANNOTATION, ""))


def _as_int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


class Link(Protocol):
    """What the metamanager needs of the edgehub."""

    async def send(self, msg: Message) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Target:
    rtype: str
    info: KindInfo
    key: str
    namespace: str  # "" for cluster-scoped, as the API server stores them
    name: str


class Rejected(Exception):
    """A message we cannot apply; the text goes back in an ``error`` reply."""


class MetaManager:
    def __init__(self, store: Store, hub: Link, *, node_name: str = "", max_burst: int = MAX_BURST) -> None:
        self.store = store
        self.hub = hub
        self.node_name = node_name
        self.max_burst = max_burst
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=INBOX_LIMIT)
        self.stats = {"applied": 0, "stale": 0, "errors": 0, "bursts": 0}

    # ---- intake -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Offer KubeEdge's ``meta`` view in the store's file (idempotent; run() calls it first)."""
        await asyncio.to_thread(ensure_meta_view, self.store.path)

    async def handle(self, msg: Message) -> None:
        """Queue a downstream message for the applier (waits while the inbox is full)."""
        await self._inbox.put(msg)

    async def run(self) -> None:
        """The applier loop, for the Supervisor: one burst at a time."""
        await self.open()
        while True:
            burst = [await self._inbox.get()]
            while len(burst) < self.max_burst and not self._inbox.empty():
                burst.append(self._inbox.get_nowait())
            await self.apply_burst(burst)

    async def apply_burst(self, burst: list[Message]) -> None:
        """Apply ``burst`` concurrently (the store group-commits), then send each reply in order.

        Messages for the same object are applied one after the other, in arrival order (an insert then
        a delete of one pod must not race); different objects go concurrently."""
        self.stats["bursts"] += 1
        chains: dict[str, list[int]] = {}
        for i, m in enumerate(burst):
            chains.setdefault(m.resource, []).append(i)
        replies: list[Message | None] = [None] * len(burst)

        async def chain(indexes: list[int]) -> None:
            for i in indexes:
                replies[i] = await self._process(burst[i])

        await asyncio.gather(*(chain(ix) for ix in chains.values()))
        for reply in replies:
            if reply is not None:
                await self.hub.send(reply)

    async def _process(self, msg: Message) -> Message | None:
        try:
            if msg.operation == OP_QUERY:
                return await self.query(msg)
            if msg.operation in (OP_INSERT, OP_UPDATE):
                target = self._target(msg)
                applied = await self._upsert(target, msg)
            elif msg.operation == OP_DELETE:
                target = self._target(msg)
                applied = await self._delete(target, msg)
            else:
                raise Rejected(f"metamanager: unsupported operation {msg.operation!r} for {msg.resource}")
        except Rejected as e:
            self.stats["errors"] += 1
            log.warning("%s", e)
            return msg.error(str(e), source=SOURCE)
        except StoreError as e:
            # Not committed, so no ACK: the cloud resends and we try again.
            self.stats["errors"] += 1
            log.error("metamanager: %s %s not applied: %s", msg.operation, msg.resource, e)
            return None
        self.stats["applied" if applied else "stale"] += 1
        return msg.response(source=SOURCE) if _needs_ack(msg) else None

    def _target(self, msg: Message) -> _Target:
        try:
            res = Resource.parse(msg.resource)
        except ResourceError as e:
            raise Rejected(f"metamanager: {e}") from e
        info = _info(res.type)
        if info is None or res.bare or res.name is None:
            raise Rejected(f"metamanager: unsupported resource {msg.resource!r}")
        ns = (res.namespace or "") if info.namespaced else ""
        if info.namespaced and not ns:
            raise Rejected(f"metamanager: {res.type} {res.name} needs a namespace")
        return _Target(res.type, info, storage_key(info), ns, res.name)

    @staticmethod
    def _incoming_rv(msg: Message, obj: Obj | None) -> int:
        if msg.header.resource_version:
            return _as_int(msg.header.resource_version)
        return _as_int(((obj or {}).get("metadata") or {}).get("resourceVersion"))

    # ---- writes -----------------------------------------------------------------------------------

    async def _upsert(self, t: _Target, msg: Message) -> bool:
        """Store the object unless ours is as new or newer; True when written."""
        try:
            obj = content_object(msg)
        except DecodeError as e:
            raise Rejected(f"metamanager: {msg.resource}: {e.reason}") from e
        if not isinstance(obj, dict):
            raise Rejected(f"metamanager: {msg.resource}: content is not an object")
        md = obj.get("metadata")
        if not isinstance(md, dict) or md.get("name", t.name) != t.name:
            raise Rejected(f"metamanager: {msg.resource}: metadata.name missing or different")
        rv = self._incoming_rv(msg, obj)
        new = self._prepare(t, obj, rv)
        written = True

        def mutate(cur: Obj) -> Obj | None:
            nonlocal written
            # Checked inside the write transaction: no other write to this object can slip between.
            if rv and cloud_rv(cur) >= rv:
                written = False
                return None
            return new

        try:
            self.store.get_now(t.key, t.namespace, t.name)
        except NotFound:
            try:
                await self.store.create(t.key, t.namespace, t.name, new)
                return True
            except AlreadyExists:
                pass  # created concurrently (two messages for one object in a burst): update it instead
        await self.store.guaranteed_update(t.key, t.namespace, t.name, mutate)
        return written

    @staticmethod
    def _prepare(t: _Target, obj: Obj, rv: int) -> Obj:
        # A private copy: the message content is shared read-only (beehive fan-out).
        new: Obj = dict(obj)
        md = dict(new.get("metadata") or {})
        ann = dict(md.get("annotations") or {})
        ann[CLOUD_RV_ANNOTATION] = str(rv)
        md["annotations"] = ann
        md["name"] = t.name
        if t.info.namespaced:
            md["namespace"] = t.namespace
        else:
            md.pop("namespace", None)
        new["metadata"] = md
        new.setdefault("apiVersion", t.info.api_version)
        new.setdefault("kind", t.info.kind)
        return new

    async def _delete(self, t: _Target, msg: Message) -> bool:
        """Remove the object; an absent one, or one newer than the delete, is left alone (still ACKed)."""
        try:
            cur = self.store.get_now(t.key, t.namespace, t.name)
        except NotFound:
            return False
        body: Obj | None = None
        try:
            parsed = content_object(msg) if msg.content is not None else None
            body = parsed if isinstance(parsed, dict) else None
        except DecodeError:
            body = None
        rv = self._incoming_rv(msg, body)
        uid = ((body or {}).get("metadata") or {}).get("uid")
        cur_obj = cur.obj
        if uid and cur_obj.get("metadata", {}).get("uid") not in (None, uid):
            return False  # a newer object of the same name replaced the deleted one
        if rv and cloud_rv(cur_obj) > rv:
            return False
        try:
            await self.store.delete(t.key, t.namespace, t.name, expect_rv=cur.rv)
        except NotFound:
            return False
        return True

    # ---- reads ------------------------------------------------------------------------------------

    async def record_pod_status(self, namespace: str, name: str, patch: Any) -> bool:
        """Apply edged's status patch (a JSON merge patch ``{"status": ...}``, as text or object) to
        the stored pod as well: local readers (the MetaServer, EdgeMesh) see what the node runs — new
        pod IPs after a restart — while the cloud is away. The cloud's resourceVersion annotation is
        kept, so staleness checks and the inventory are unchanged; the cloud's next copy replaces this.
        False when the pod is not stored (deleted meanwhile)."""
        from kubeedge.apiserver.patch import json_merge_patch  # write path only: kept off idle imports

        body = orjson.loads(patch) if isinstance(patch, str | bytes) else patch
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, dict):
            raise ValueError("a pod status patch must be an object with a status object")

        def mutate(cur: Obj) -> Obj | None:
            merged = json_merge_patch(cur.get("status") or {}, status)
            if merged == cur.get("status"):
                return None  # nothing new: no write, no watch event
            return {**cur, "status": merged}

        key = _POD_KEY
        try:
            await self.store.guaranteed_update(key, namespace, name, mutate)
        except NotFound:
            return False
        return True

    async def query(self, msg: Message) -> Message:
        """Answer ``<ns>/<type>/<name>`` (configmap, secret, ...) from the store: how edged reads what
        its pods mount, and the only answer while the cloud is unreachable."""
        try:
            t = self._target(msg)
        except Rejected as e:
            return msg.error(str(e), source=SOURCE)
        if t.rtype not in QUERY_TYPES:
            return msg.error(f"metamanager: query of {t.rtype} is not supported", source=SOURCE)
        try:
            rec = self.store.get_now(t.key, t.namespace, t.name)
        except NotFound:
            return msg.error(f"{t.rtype} {msg.resource} not found", source=SOURCE)
        return msg.response(rec.obj, source=SOURCE)

    async def inventory(self) -> Message:
        """The inventory sent on every (re)connect: every stored object with its uid and cloud rv."""
        items: list[dict[str, Any]] = []
        for rtype in STORED_TYPES:
            info = _info(rtype)
            assert info is not None
            res = await self.store.list(storage_key(info), decode=True)
            items.extend(self._item(rtype, rec) for rec in res.items)
        resource = INVENTORY_RESOURCE.format(node=self.node_name or "unknown")
        return Message.new(SOURCE, GROUP_RESOURCE, OP_INVENTORY, resource, {"items": items})

    @staticmethod
    def _item(rtype: str, rec: Record) -> dict[str, Any]:
        md = rec.obj.get("metadata") or {}
        return {
            "type": rtype,
            "namespace": md.get("namespace") or "",
            "name": md.get("name", ""),
            "uid": md.get("uid", ""),
            "resourceVersion": str(cloud_rv(rec.obj)),
        }

    async def on_connected(self) -> None:
        """EdgeHub on_connected hook: send the inventory so the cloud answers with the difference."""
        msg = await self.inventory()
        if not await self.hub.send(msg):
            log.info("metamanager: inventory not sent (disconnected again)")
