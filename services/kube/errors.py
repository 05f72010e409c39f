"""API errors, classified from the HTTP code and the `Status.reason` the server returns.

Classification uses the reason first because one code covers several meanings: 409 is either
`Conflict` (stale resourceVersion: re-read and retry) or `AlreadyExists` (create raced: usually fine),
and callers must tell them apart. They are therefore siblings, not parent and child.
"""

from __future__ import annotations

from typing import Any

import orjson

from .types import Obj


class ApiError(Exception):
    """A non-2xx answer from the API server (or an ERROR event inside a watch)."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        details: Obj | None = None,
        body: Obj | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Obj = details or {}
        self.body: Obj = body or {}
        super().__init__(": ".join(x for x in (f"{status} {reason}".strip(), message) if x))


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Gone(ApiError):
    """410: the requested resourceVersion (or continue token) is too old; re-list from scratch."""


class Invalid(ApiError):
    pass


class TooManyRequests(ApiError):
    pass


class ServerError(ApiError):
    pass


_BY_REASON: dict[str, type[ApiError]] = {
    "NotFound": NotFound,
    "AlreadyExists": AlreadyExists,
    "Conflict": Conflict,
    "Gone": Gone,
    "Expired": Gone,  # what servers send for an expired continue token / compacted watch RV
    "Invalid": Invalid,
    "Unauthorized": Unauthorized,
    "Forbidden": Forbidden,
    "BadRequest": BadRequest,
    "TooManyRequests": TooManyRequests,
}

_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def error_class(code: int, reason: str) -> type[ApiError]:
    cls = _BY_REASON.get(reason)
    if cls is None:
        cls = _BY_CODE.get(code)
    if cls is None:
        cls = ServerError if code >= 500 else ApiError
    # A reason that contradicts the code (e.g. reason "NotFound" on a 500) is not trusted.
    if cls is not ServerError and cls is not ApiError and code >= 500:
        cls = ServerError
    return cls


def error_from_status(code: int, status: Obj) -> ApiError:
    """Build the error for a `Status` object (from a response body or a watch ERROR event)."""
    code = int(status.get("code") or code)
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    details = status.get("details") if isinstance(status.get("details"), dict) else None
    return error_class(code, reason)(code, reason, message, details, status)


def error_from_body(code: int, body: bytes) -> ApiError:
    """Build the error for a failed HTTP response; tolerates non-JSON bodies from proxies."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        # The HTTP code is authoritative; Status.code is normally identical.
        err = error_from_status(code, {**parsed, "code": code})
        return err
    text = body.decode("utf-8", "replace").strip()[:1000]
    return error_class(code, "")(code, "", text or f"HTTP {code}")
