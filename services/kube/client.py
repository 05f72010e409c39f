"""`KubeClient`: a small asyncio REST client for the Kubernetes API (ours or a real kube-apiserver).

Only plain HTTP+JSON is used, addressed by `Res` descriptors, so the same code talks to both servers.

Retry policy (capped exponential backoff with jitter, honouring Retry-After):
  * reads (GET, which includes LIST and opening a WATCH) are retried on connection errors,
    timeouts, 429 and 5xx, because repeating them cannot change anything;
  * any method is retried when the connection could not be established at all, or on 429 with
    Retry-After: in both cases the server never processed the request (a 429 with Retry-After is how
    API priority-and-fairness rejects before running anything; client-go retries it the same way);
  * otherwise writes are not retried: a POST that timed out may well have been applied.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import logging
import random
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson

from .errors import ApiError, Gone, error_from_body
from .kubeconfig import KubeConfig
from .types import Obj, Res

log = logging.getLogger(__name__)

# Concurrent request connections per client. Watches and other streams use a pool of their own
# (STREAM_POOL_LIMIT): each holds its connection for minutes, and the controller manager alone
# watches every served resource, so sharing one pool would starve ordinary requests.
POOL_LIMIT = 64
STREAM_POOL_LIMIT = 1024
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0  # whole request, for everything except watches
MAX_RETRIES = 5
BACKOFF_BASE = 0.2
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 60.0  # never trust a server to park us longer than this
MAX_RELISTS = 3  # how often a paginated list restarts after its continue token expired
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "kubeedge-py/0.1"

PatchType = Literal["merge", "strategic", "json", "apply"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    # JSON is valid YAML, so server-side apply accepts the object JSON-encoded.
    "apply": "application/apply-patch+yaml",
}


class Backoff:
    """Capped exponential backoff with jitter: delay n is uniform in [d/2, d], d = min(cap, base*2^n).

    Half-jitter rather than full jitter keeps a floor, so a hot error loop can never spin at ~0s.
    """

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        d = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 62)
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> float:
        d = self.next_delay()
        await asyncio.sleep(d)
        return d


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _encode(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


def _decode(payload: bytes, content_type: str) -> Any:
    if not payload:
        return None
    if "json" in content_type or payload[:1] in (b"{", b"["):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            if "json" in content_type:
                raise
    return payload.decode("utf-8", "replace")


def _sslerror_types() -> tuple[type[BaseException], ...]:
    return (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)


class KubeClient:
    """Async Kubernetes REST client; use as `async with KubeClient(cfg) as kc:`.

    Namespace handling: for get/create/replace/patch/delete of a namespaced resource the namespace is
    the explicit argument, else the object's metadata.namespace, else the config's namespace (as
    kubectl does). For `list` (and watches) None means all namespaces.
    """

    def __init__(
        self,
        config: KubeConfig,
        *,
        pool_limit: int = POOL_LIMIT,
        request_timeout: float = REQUEST_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.config = config
        self.pool_limit = pool_limit
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._session is not None:
            return
        self._session = self._new_session(self.pool_limit, self.request_timeout)
        # Streams have no total timeout; their callers bound the silence between chunks instead.
        self._streams = self._new_session(STREAM_POOL_LIMIT, None)

    def _new_session(self, limit: int, total: float | None) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit,
            ssl=self.config.ssl_context() or False,
            # The API server is one host; keep connections alive and reuse them.
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=total, connect=self.connect_timeout),
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            json_serialize=lambda o: orjson.dumps(o).decode(),
            # Our own components hit one server; cookies would only leak state between requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        sessions = [x for x in (self._session, self._streams) if x is not None]
        self._session = self._streams = None
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeClient is not open; use `async with KubeClient(cfg) as kc:`")
        return self._session

    @property
    def server(self) -> str:
        return self.config.server

    # -- transport -------------------------------------------------------------------------------

    def _retryable_exc(self, method: str, exc: BaseException) -> bool:
        if isinstance(exc, _sslerror_types()):
            return False  # certificate problems do not heal by retrying
        if isinstance(exc, aiohttp.ClientConnectorError):
            return True  # never connected, so nothing was sent
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError):
            return method == "GET"
        return False

    @staticmethod
    def _retryable_status(method: str, status: int, retry_after: float | None) -> bool:
        if status == 429 and retry_after is not None:
            return True
        return method == "GET" and status in RETRYABLE_STATUS

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """Send with retries. Returns the response and its body; for `stream=True` the body is b""
        and the caller owns (and must release) the still-open response."""
        data = _encode(body)
        hdrs: dict[str, str] = {}
        if content_type:
            hdrs["Content-Type"] = content_type
        elif data is not None:
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        url = self.config.server + path
        extra: dict[str, Any] = {}
        if stream:
            # Streams live as long as the server keeps them open; only silence is bounded.
            extra["timeout"] = aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_read=read_timeout
            )
        if self.config.tls_server_name:
            extra["server_hostname"] = self.config.tls_server_name
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        attempt = 0
        while True:
            delay: float | None = None
            err: BaseException
            try:
                # Auth headers are computed per attempt: rotated token files are picked up.
                session = self._streams if stream and self._streams is not None else self.session
                resp = await session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers={**self.config.auth_headers(), **hdrs},
                    **extra,
                )
                try:
                    if resp.status < 400:
                        if stream:
                            return resp, b""
                        payload = await resp.read()
                        return resp, payload
                    payload = await resp.read()
                finally:
                    if not stream or resp.status >= 400:
                        resp.release()
                api_err = error_from_body(resp.status, payload)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if not self._retryable_status(method, resp.status, retry_after):
                    raise api_err
                err = api_err
                if retry_after is not None:
                    delay = min(retry_after, RETRY_AFTER_CAP)
            except (aiohttp.ClientError, TimeoutError) as e:
                if not self._retryable_exc(method, e):
                    raise
                err = e
            attempt += 1
            if attempt > self.max_retries:
                raise err
            if delay is None:
                delay = backoff.next_delay()
            log.debug(
                "%s %s on %s failed (%s); retry %d/%d in %.2fs",
                method,
                path,
                self.server,
                _describe(err),
                attempt,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    async def open_stream(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """GET a streaming endpoint (watch, logs); the caller must `async with` the response.

        `read_timeout` bounds the silence between chunks; there is no total timeout."""
        resp, _ = await self._send("GET", path, params=params, stream=True, read_timeout=read_timeout)
        return resp

    async def raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Any request. `body` may be JSON-able, str or bytes. Returns decoded JSON, else text."""
        resp, payload = await self._send(
            method.upper(), path, params=params, body=body, content_type=content_type, headers=headers
        )
        return _decode(payload, resp.headers.get("Content-Type", ""))

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        """A request passed through as bytes: (status, Content-Type, body) of a success; a failure
        raises ApiError like every other call (its ``body`` is the Status)."""
        resp, payload = await self._send(
            method.upper(), path, body=body, content_type=content_type, headers=headers
        )
        return resp.status, resp.headers.get("Content-Type", ""), payload

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Obj:
        out = await self.raw(method, path, params=params, body=body, content_type=content_type)
        if not isinstance(out, dict):
            raise ApiError(500, "InternalError", f"{method} {path}: expected a JSON object from the server")
        return out

    # -- helpers ---------------------------------------------------------------------------------

    def _namespace(self, res: Res, namespace: str | None, obj: Obj | None = None) -> str | None:
        if not res.namespaced:
            return None
        if namespace:
            return namespace
        if obj is not None:
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                return str(ns)
        return self.config.namespace

    @staticmethod
    def _name(obj: Obj) -> str:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("object has no metadata.name")
        return str(name)

    @staticmethod
    def _write_params(field_manager: str | None, dry_run: bool) -> dict[str, str]:
        p: dict[str, str] = {}
        if field_manager:
            p["fieldManager"] = field_manager
        if dry_run:
            p["dryRun"] = "All"
        return p

    # -- verbs -----------------------------------------------------------------------------------

    async def get(
        self, res: Res, name: str, namespace: str | None = None, *, subresource: str | None = None
    ) -> Obj:
        return await self._json("GET", res.path(self._namespace(res, namespace), name, subresource))

    async def list(
        self,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        *,
        resource_version: str | None = None,
    ) -> tuple[builtins.list[Obj], str]:
        """All items (following `continue` pages of size `limit`) and the list's resourceVersion.

        If a continue token expires (410) mid-way, the list restarts from scratch: the pages
        already read belong to a snapshot the server no longer has, so mixing them would be
        inconsistent."""
        path = res.path(namespace if res.namespaced else None)
        base: dict[str, str] = {}
        if label_selector:
            base["labelSelector"] = label_selector
        if field_selector:
            base["fieldSelector"] = field_selector
        if limit:
            base["limit"] = str(limit)
        relists = 0
        while True:
            items: builtins.list[Obj] = []
            cont: str | None = None
            try:
                while True:
                    params = dict(base)
                    if cont:
                        params["continue"] = cont
                    elif resource_version is not None:
                        # The server rejects resourceVersion together with continue.
                        params["resourceVersion"] = resource_version
                    page = await self._json("GET", path, params=params)
                    self._fill_kinds(res, page)
                    items.extend(page.get("items") or [])
                    meta = page.get("metadata") or {}
                    cont = meta.get("continue") or None
                    if not cont:
                        return items, str(meta.get("resourceVersion") or "")
            except Gone as e:
                if cont is None or relists >= MAX_RELISTS:
                    raise
                relists += 1
                log.info(
                    "list %s on %s: continue token expired (%s); re-listing from scratch",
                    path,
                    self.server,
                    e.message,
                )

    @staticmethod
    def _fill_kinds(res: Res, page: Obj) -> None:
        # List items come without kind/apiVersion; consumers handling dicts generically need them.
        list_kind = str(page.get("kind") or "")
        kind = list_kind.removesuffix("List") if list_kind.endswith("List") else res.kind
        api_version = str(page.get("apiVersion") or res.api_version)
        for item in page.get("items") or []:
            if isinstance(item, dict):
                if kind:
                    item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)

    async def create(
        self,
        res: Res,
        obj: Obj,
        namespace: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        path = res.path(self._namespace(res, namespace, obj))
        return await self._json("POST", path, params=self._write_params(field_manager, dry_run), body=obj)

    async def replace(
        self,
        res: Res,
        obj: Obj,
        namespace: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT the whole object; metadata.resourceVersion in `obj` makes it a compare-and-swap."""
        path = res.path(self._namespace(res, namespace, obj), self._name(obj))
        return await self._json("PUT", path, params=self._write_params(field_manager, dry_run), body=obj)

    async def update_status(
        self, res: Res, obj: Obj, namespace: str | None = None, field_manager: str | None = None
    ) -> Obj:
        path = res.path(self._namespace(res, namespace, obj), self._name(obj), "status")
        return await self._json("PUT", path, params=self._write_params(field_manager, False), body=obj)

    async def patch(
        self,
        res: Res,
        name: str,
        patch: Obj | builtins.list[Obj],
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        field_manager: str | None = None,
        force: bool = False,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        ctype = PATCH_CONTENT_TYPES.get(patch_type)
        if ctype is None:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "json" and not isinstance(patch, builtins.list):
            raise ValueError("a JSON patch is a list of operations")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        params = self._write_params(field_manager, dry_run)
        if force:
            if patch_type != "apply":
                raise ValueError("force only applies to server-side apply")
            params["force"] = "true"
        ns_hint = patch if isinstance(patch, dict) else None
        path = res.path(self._namespace(res, namespace, ns_hint), name, subresource)
        return await self._json("PATCH", path, params=params, body=patch, content_type=ctype)

    async def apply(self, res: Res, obj: Obj, field_manager: str, force: bool = False) -> Obj:
        """Server-side apply of a full (partial-intent) object."""
        return await self.patch(
            res, self._name(obj), obj, patch_type="apply", field_manager=field_manager, force=force
        )

    async def delete(
        self,
        res: Res,
        name: str,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Delete; returns what the server answers (the object while finalizers run, or a Status).

        `preconditions` is `{"uid": ..., "resourceVersion": ...}` (either key optional)."""
        opts: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            opts["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            opts["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            opts["preconditions"] = preconditions
        if dry_run:
            opts["dryRun"] = ["All"]
        path = res.path(self._namespace(res, namespace), name)
        return await self._json("DELETE", path, body=opts)

    async def delete_collection(
        self,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        propagation_policy: str | None = None,
    ) -> Obj:
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        return await self._json("DELETE", res.path(self._namespace(res, namespace)), params=params, body=body)

    async def create_subresource(
        self, res: Res, name: str, sub: str, body: Obj, namespace: str | None = None
    ) -> Obj:
        """POST to a subresource: pods/binding, pods/eviction, serviceaccounts/token, ..."""
        return await self._json("POST", res.path(self._namespace(res, namespace, body), name, sub), body=body)


def _describe(err: BaseException) -> str:
    if isinstance(err, ApiError):
        return f"{err.status} {err.reason}".strip()
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
