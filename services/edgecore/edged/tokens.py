"""Service-account tokens for projected volumes: TokenRequests made by the cloud on the node's behalf, kept
in memory and on disk (in the pod's dir under the edged root, so they go with the pod's volumes) so that a
pod restarted while the cloud is unreachable still gets its last token.

A token is bound to its pod (the API server only issues node-requested tokens bound to a pod on that node),
so the cache key is (namespace, service account, audiences, expirationSeconds, pod uid). As the kubelet
does, a token is renewed once 80% of its lifetime has passed; until a renewal succeeds the cached token is
served, even past its expiry while offline (a stale token is better than a pod that cannot start).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from kubeedge.beehive.apirequest import ApiReply, ApiRequest

from .podspec import ContainerConfigError

log = logging.getLogger(__name__)

# The API server's default and minimum for a projected token's expirationSeconds.
DEFAULT_EXPIRATION_S: Final = 3600
MIN_EXPIRATION_S: Final = 600
# Renew once this share of the lifetime has passed (kubelet's rule).
REFRESH_AT: Final = 0.8
# Tokens held in memory at once (MAX_POD_WORKERS in manager.py is 256); the files stay with their pods.
MAX_TOKENS: Final = 1024
# Below the pod's dir (VolumeManager.pod_dir), removed with it.
TOKEN_DIR: Final = "sa-tokens"
# A failed request is not retried for this long (every pod sync would otherwise ask the cloud again).
RETRY_AFTER_S: Final = 10.0

Forward = Callable[[ApiRequest], Awaitable[ApiReply]]
Obj = dict[str, Any]


@dataclass(frozen=True)
class TokenKey:
    namespace: str
    service_account: str
    audiences: tuple[str, ...]
    expiration_s: int
    pod_name: str
    pod_uid: str

    def file_name(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:32] + ".json"


@dataclass(frozen=True)
class Token:
    token: str
    issued_at: float
    expires_at: float

    def refresh_due(self, now: float) -> bool:
        return now >= self.issued_at + REFRESH_AT * (self.expires_at - self.issued_at)


def projection(pod: Obj) -> Obj | None:
    """The pod's first projected serviceAccountToken source (VolumeManager writes one token per pod)."""
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        for src in (vol.get("projected") or {}).get("sources") or []:
            if isinstance(src.get("serviceAccountToken"), dict):
                sat: Obj = src["serviceAccountToken"]
                return sat
    return None


def key_for(pod: Obj, source: Obj) -> TokenKey:
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    audience = source.get("audience")
    seconds = source.get("expirationSeconds")
    return TokenKey(
        namespace=str(md.get("namespace") or "default"),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"),
        audiences=(str(audience),) if audience else (),
        expiration_s=seconds
        if isinstance(seconds, int) and not isinstance(seconds, bool)
        else DEFAULT_EXPIRATION_S,
        pod_name=str(md.get("name") or ""),
        pod_uid=str(md.get("uid") or ""),
    )


def request_for(key: TokenKey) -> ApiRequest:
    spec: Obj = {
        "expirationSeconds": key.expiration_s,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": key.pod_name, "uid": key.pod_uid},
    }
    if key.audiences:
        spec["audiences"] = list(key.audiences)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{key.namespace}/serviceaccounts/{key.service_account}/token"
    return ApiRequest("POST", path, "application/json", json.dumps(body).encode())


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class TokenError(Exception):
    """The cloud did not issue a token; the text says why."""


class TokenManager:
    def __init__(
        self, forward: Forward, pod_dir: Callable[[str], Path], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.forward = forward
        self.pod_dir = pod_dir
        self.clock = clock
        self._tokens: OrderedDict[TokenKey, Token] = OrderedDict()
        self._failed_at: dict[TokenKey, float] = {}
        self.requests = 0  # TokenRequests sent (tests and benchmarks)

    async def token_for(self, pod: Obj) -> str | None:
        """The token for the pod's projected serviceAccountToken volume source, None when it has none.
        Raises ContainerConfigError when no token was ever obtained and the cloud does not give one."""
        source = projection(pod)
        if source is None:
            return None
        key = key_for(pod, source)
        now = self.clock()
        held = self._tokens.get(key) or self._load(key)
        if held is not None and not held.refresh_due(now):
            return held.token
        failed = self._failed_at.get(key)
        if failed is not None and now - failed < RETRY_AFTER_S:
            if held is not None:
                return held.token
            raise ContainerConfigError(
                f"service account token for {key.namespace}/{key.service_account}: "
                "waiting to retry the TokenRequest"
            )
        try:
            fresh = await self._request(key, now)
        except (TokenError, ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            self._failed_at[key] = now
            if held is not None:
                level = logging.WARNING if now >= held.expires_at else logging.INFO
                log.log(
                    level,
                    "edged: renewing the token of pod %s/%s failed (%s); keeping the last one",
                    key.namespace,
                    key.pod_name,
                    e,
                )
                return held.token
            raise ContainerConfigError(
                f"cannot obtain a token for service account {key.namespace}/{key.service_account}: {e}"
            ) from None
        self._failed_at.pop(key, None)
        self._remember(key, fresh)
        return fresh.token

    async def _request(self, key: TokenKey, now: float) -> Token:
        self.requests += 1
        reply = await self.forward(request_for(key))
        try:
            doc = json.loads(reply.body or b"{}")
        except ValueError:
            doc = {}
        if reply.code not in (200, 201):
            raise TokenError(f"{reply.code}: {doc.get('message') or reply.body[:200]!r}")
        status = doc.get("status") or {}
        token, expires = status.get("token"), _parse_time(status.get("expirationTimestamp"))
        if not isinstance(token, str) or not token or expires is None:
            raise TokenError("the TokenRequest answer has no token or expirationTimestamp")
        return Token(token, now, expires)

    def _remember(self, key: TokenKey, tok: Token) -> None:
        self._tokens[key] = tok
        self._tokens.move_to_end(key)
        while len(self._tokens) > MAX_TOKENS:
            self._tokens.popitem(last=False)
        self._save(key, tok)

    def forget_pod(self, pod_uid: str) -> None:
        """The pod is gone: drop its tokens from memory (its dir, with the files, goes with its volumes)."""
        for key in [k for k in self._tokens if k.pod_uid == pod_uid]:
            del self._tokens[key]
            self._failed_at.pop(key, None)

    # ---- persistence ---------------------------------------------------------------------------

    def _path(self, key: TokenKey) -> Path:
        return self.pod_dir(key.pod_uid) / TOKEN_DIR / key.file_name()

    def _save(self, key: TokenKey, tok: Token) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(tok), f)
        tmp.replace(path)

    def _load(self, key: TokenKey) -> Token | None:
        try:
            doc = json.loads(self._path(key).read_text())
            tok = Token(str(doc["token"]), float(doc["issued_at"]), float(doc["expires_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._tokens[key] = tok
        return tok
