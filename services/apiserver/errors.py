"""API errors as Kubernetes `Status` objects: every refusal names its reason, code and cause."""

from __future__ import annotations

from typing import Any

import orjson

from .resources import ResourceInfo

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Obj:
        return status_obj(self.code, self.reason, self.message, self.details)

    def body(self) -> bytes:
        return orjson.dumps(self.status())


def status_obj(
    code: int, reason: str, message: str, details: Obj | None = None, success: bool = False
) -> Obj:
    st: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if success else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        st["details"] = details
    if success:
        del st["reason"]
    return st


def _details(info: ResourceInfo | None, name: str, causes: list[Obj] | None = None) -> Obj:
    d: Obj = {"name": name} if name else {}
    if info is not None:
        if info.group:
            d["group"] = info.group
        d["kind"] = info.plural
    if causes:
        d["causes"] = causes
    return d


def _what(info: ResourceInfo) -> str:
    return f"{info.plural}.{info.group}" if info.group else info.plural


def not_found(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_what(info)} "{name}" not found', details=_details(info, name))


def already_exists(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{_what(info)} "{name}" already exists', details=_details(info, name)
    )


def conflict(info: ResourceInfo, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_what(info)} "{name}": {why}',
        details=_details(info, name),
    )


def invalid(info: ResourceInfo, name: str, causes: list[Obj]) -> ApiError:
    parts = [f"{c.get('field', '')}: {c.get('message', '')}".lstrip(": ") for c in causes]
    msg = f'{info.kind} "{name}" is invalid: '
    msg += parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    d = _details(info, name, causes)
    d["kind"] = info.kind
    return ApiError(422, "Invalid", msg, details=d)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str, info: ResourceInfo | None = None, name: str = "") -> ApiError:
    return ApiError(403, "Forbidden", message, details=_details(info, name) if info else None)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media(content_type: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType", f'the body of the request was in an unknown format: "{content_type}"'
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "RequestEntityTooLarge", f"the request body is larger than the limit of {limit} bytes"
    )


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)
