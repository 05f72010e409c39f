"""Watch over HTTP: chunked newline-delimited events, initial state, bookmarks, 410 on expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from kubeedge.store import ADDED, Closed, Event, Expired, Record, TooSlow
from kubeedge.store.watch import Predicate

from .errors import bad_request, status_obj
from .resources import ResourceInfo

if TYPE_CHECKING:
    from .rest import Negotiated, ResourceApi

log = logging.getLogger(__name__)

Obj = dict[str, Any]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# A batch this large is written at once; smaller ones wait `watch_linger` for company.
LINGER_MAX_EVENTS = 64


def _event_bytes(etype: str, data: bytes) -> bytes:
    # Stored bytes are spliced in as the object: no decode/encode per event and per watcher.
    return b'{"type":"' + etype.encode() + b'","object":' + data + b"}\n"


class _Encoder:
    def __init__(self, info: ResourceInfo, neg: Negotiated) -> None:
        self.info = info
        self.neg = neg
        self.first = True

    def event(self, etype: str, rec: Record) -> bytes:
        if self.neg.table:
            from . import tables  # only Table watches (kubectl get -w) need the printers

            t = tables.to_table(
                self.info,
                [rec.obj],
                resource_version=str(rec.rv),
                now=dt.datetime.now(dt.UTC),
                with_headers=True,
            )
            self.first = False
            return _event_bytes(etype, orjson.dumps(t))
        if self.neg.partial:
            md = rec.obj.get("metadata", {})
            body = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}
            return _event_bytes(etype, orjson.dumps(body))
        if isinstance(rec, Event):
            return rec.wire(etype)
        return _event_bytes(etype, rec.data)

    def bookmark(self, rv: int, initial_end: bool = False) -> bytes:
        md: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            md["annotations"] = {INITIAL_EVENTS_END: "true"}
        if self.neg.table:
            obj: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "rows": []}
            obj["columnDefinitions"] = []
        else:
            obj = {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": md}
        return _event_bytes("BOOKMARK", orjson.dumps(obj))


async def serve_watch(
    api: ResourceApi,
    info: ResourceInfo,
    ns: str | None,
    predicate: Predicate | None,
    request: web.Request,
    neg: Negotiated,
) -> web.StreamResponse:
    q = request.query
    store = api.store
    rv_text = q.get("resourceVersion", "")
    try:
        rv = int(rv_text) if rv_text else None
    except ValueError:
        raise bad_request(f"resourceVersion: {rv_text!r} is not a valid resource version") from None
    send_initial = q.get("sendInitialEvents", "") == "true"
    bookmarks = q.get("allowWatchBookmarks", "") == "true"
    if send_initial and (not bookmarks or q.get("resourceVersionMatch") != "NotOlderThan"):
        raise bad_request(
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan"
        )
    timeout = api.config.max_watch_seconds
    if q.get("timeoutSeconds"):
        try:
            timeout = min(timeout, max(0, int(q["timeoutSeconds"])))
        except ValueError:
            raise bad_request("timeoutSeconds must be an integer") from None
    enc = _Encoder(info, neg)
    initial: list[Record] = []
    # Without a revision (or "0"), Kubernetes starts with the current state as synthetic ADDED.
    synthetic = rv is None or rv == 0 or send_initial
    if synthetic:
        snap = await store.list(info.key, ns, predicate=predicate)
        start_rv = snap.rv if rv is None or rv == 0 or rv < snap.rv else rv
        initial = snap.items
    else:
        assert rv is not None
        start_rv = rv
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    try:
        watcher = store.watch(info.key, ns, from_rv=start_rv, predicate=predicate)
    except Expired as e:
        await resp.prepare(request)
        await resp.write(
            _event_bytes(
                "ERROR",
                orjson.dumps(status_obj(410, "Expired", f"too old resource version: {rv_text} ({e})")),
            )
        )
        await resp.write_eof()
        return resp
    await resp.prepare(request)
    interval = api.config.bookmark_interval
    linger = api.config.watch_linger
    hub = store.hub
    loop = asyncio.get_running_loop()
    # Two timers per watch, not one per wakeup: the deadline, and the next bookmark.
    end = loop.time() + timeout
    deadline_timer = loop.call_at(end, watcher.poke)
    bookmark_timer: asyncio.TimerHandle | None = None
    try:
        if initial:
            await resp.write(b"".join(enc.event(ADDED, r) for r in initial))
        if send_initial:
            await resp.write(enc.bookmark(start_rv, initial_end=True))
        next_bookmark = loop.time() + interval
        last_write = 0.0
        if bookmarks:
            bookmark_timer = loop.call_at(next_bookmark, watcher.poke)
        while loop.time() < end:
            try:
                batch = await watcher.next()
            except Expired as e:
                msg = f"too old resource version: {rv_text} ({e})"
                await resp.write(_event_bytes("ERROR", orjson.dumps(status_obj(410, "Expired", msg))))
                break
            except TooSlow as e:
                log.warning("watch of %s by %s closed: %s", info.plural, request.remote, e)
                break
            except Closed:
                break
            if batch:
                if linger and len(batch) < LINGER_MAX_EVENTS and loop.time() - last_write < linger:
                    # Nagle for watches: a watch that wrote within the last `linger` waits for the
                    # shared tick and sends everything since in one write. Under a stream of small
                    # commits that cuts the per-watcher cost (wakeup, chunk, TLS record, syscall) by
                    # the batch size; an idle watch still gets its first event at once.
                    await hub.tick(linger)
                    batch += watcher.drain()
                await resp.write(b"".join(enc.event(t, r) for t, r in batch))
                last_write = loop.time()
            if bookmarks and loop.time() >= next_bookmark:
                await resp.write(enc.bookmark(watcher.progress_rv))
                next_bookmark = loop.time() + interval
                bookmark_timer = loop.call_at(next_bookmark, watcher.poke)
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to tell it
    finally:
        deadline_timer.cancel()
        if bookmark_timer is not None:
            bookmark_timer.cancel()
        watcher.close()
    return resp
