"""A Kubernetes API request carried in a message: how the edge's MetaServer forwards a local app's
write for the cloud to perform as the node, and how the answer comes back.

Bodies travel as text when they are UTF-8 (JSON, YAML, patches) and as base64 otherwise (protobuf),
so the envelope stays JSON. Only writes under ``/api`` and ``/apis`` are carried; everything about
*whether* the node may make the write is decided by the cloud's API server, not here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final

from .message import GROUP_META, OP_QUERY, RT_APIREQUEST, Message

WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A forwarded body is bounded like the MetaServer's own (and must fit a websocket frame).
MAX_BODY_BYTES: Final = 3 * 1024 * 1024
MAX_PATH_CHARS: Final = 4096


class ApiRequestError(ValueError):
    """A malformed forwarded request or reply; the text says which field."""


def _body_out(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "bodyEncoding": "base64"}


def _body_in(doc: dict[str, Any]) -> bytes:
    body = doc.get("body", "")
    if not isinstance(body, str):
        raise ApiRequestError("body must be a string")
    enc = doc.get("bodyEncoding", "")
    if enc == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ApiRequestError(f"body is not valid base64: {e}") from None
    if enc:
        raise ApiRequestError(f"unknown bodyEncoding {enc!r}")
    return body.encode("utf-8")


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str  # absolute path with its query string, e.g. /api/v1/namespaces/a/configmaps?dryRun=All
    content_type: str = ""
    body: bytes = b""

    def __post_init__(self) -> None:
        if self.method not in WRITE_METHODS:
            raise ApiRequestError(
                f"method {self.method!r} is not a write ({', '.join(sorted(WRITE_METHODS))})"
            )
        p = self.path.split("?", 1)[0]
        if len(self.path) > MAX_PATH_CHARS or not (p.startswith("/api/") or p.startswith("/apis/")):
            raise ApiRequestError(f"path {self.path[:80]!r} is not under /api/ or /apis/")
        if "/../" in p or p.endswith("/..") or "//" in p:
            raise ApiRequestError(f"path {self.path[:80]!r} is not canonical")
        if len(self.body) > MAX_BODY_BYTES:
            raise ApiRequestError(f"body of {len(self.body)} bytes exceeds {MAX_BODY_BYTES}")

    def to_content(self) -> dict[str, str]:
        return {
            "method": self.method,
            "path": self.path,
            "contentType": self.content_type,
            **_body_out(self.body),
        }

    @classmethod
    def from_content(cls, content: Any) -> ApiRequest:
        if not isinstance(content, dict):
            raise ApiRequestError("content is not an object")
        method, path, ctype = content.get("method"), content.get("path"), content.get("contentType", "")
        if not isinstance(method, str) or not isinstance(path, str) or not isinstance(ctype, str):
            raise ApiRequestError("method, path and contentType must be strings")
        return cls(method.upper(), path, ctype, _body_in(content))

    def message(self, source: str, node: str) -> Message:
        return Message.new(source, GROUP_META, OP_QUERY, f"null/{RT_APIREQUEST}/{node}", self.to_content())


@dataclass(frozen=True)
class ApiReply:
    code: int
    content_type: str = "application/json"
    body: bytes = b""

    def to_content(self) -> dict[str, Any]:
        return {"code": self.code, "contentType": self.content_type, **_body_out(self.body)}

    @classmethod
    def from_content(cls, content: Any) -> ApiReply:
        if not isinstance(content, dict):
            raise ApiRequestError("reply content is not an object")
        code, ctype = content.get("code"), content.get("contentType", "application/json")
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            raise ApiRequestError(f"reply code {code!r} is not an HTTP status")
        if not isinstance(ctype, str):
            raise ApiRequestError("reply contentType must be a string")
        return cls(code, ctype, _body_in(content))
