"""Sans-I/O JSON codec for KubeEdge message frames (one message per websocket text frame).

Field names are KubeEdge's Go JSON tags exactly; empty optional header fields are omitted the way Go's
``omitempty`` omits them, so a KubeEdge peer sees byte-for-byte familiar frames. Decoding is strict about
what routing needs (ids, timestamp, operation) and lenient about everything else (unknown fields, unknown
operations, any content shape), because a peer of a newer version must still be understood.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import orjson

from .message import Header, Message, RawJSON, Route

# A frame bigger than this is refused before parsing. Kubernetes caps one object near 1.5 MiB (etcd),
# but pod lists and query responses carry many; 16 MiB leaves room without letting one peer make us
# allocate without bound.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024


class DecodeError(ValueError):
    """A frame that is not a KubeEdge message; ``reason`` says what is wrong (safe to log: no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(ValueError):
    """Content that cannot be represented as JSON (e.g. non-string keys, integers beyond 64 bits)."""


# --- encoding ----------------------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    # Go's encoding/json writes []byte as base64 wherever it appears; do the same for nested bytes.
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, RawJSON):
        return orjson.Fragment(obj.data)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _header_json(h: Header) -> dict[str, Any]:
    # Key order and omissions follow the Go struct (msg_id, parent_msg_id, timestamp, resourceversion,
    # sync, type); msg_id and timestamp have no omitempty and are always written.
    d: dict[str, Any] = {"msg_id": h.msg_id}
    if h.parent_msg_id:
        d["parent_msg_id"] = h.parent_msg_id
    d["timestamp"] = h.timestamp
    if h.resource_version:
        d["resourceversion"] = h.resource_version
    if h.sync:
        d["sync"] = True
    if h.type:
        d["type"] = h.type
    return d


def _route_json(r: Route) -> dict[str, str]:
    return {
        "source": r.source,
        "destination": r.destination,
        "group": r.group,
        "operation": r.operation,
        "resource": r.resource,
    }


def _content_json(content: Any) -> Any:
    # Top-level raw shapes are converted here rather than in ``default`` so that the common cases never
    # pay for a Python callback.
    if isinstance(content, bytes | bytearray | memoryview):
        return base64.b64encode(content).decode("ascii")
    if isinstance(content, RawJSON):
        return orjson.Fragment(content.data)
    return content


def encode(msg: Message) -> bytes:
    """Serialize ``msg`` as one JSON text frame (UTF-8 bytes)."""
    frame = {
        "header": _header_json(msg.header),
        "route": _route_json(msg.route),
        "content": _content_json(msg.content),
    }
    try:
        return orjson.dumps(frame, default=_default)
    except orjson.JSONEncodeError as e:
        raise EncodeError(f"message {msg.header.msg_id}: content not encodable: {e}") from e


def encode_with_raw_content(msg: Message, raw_json: bytes) -> bytes:
    """Encode ``msg``'s header and route with ``raw_json`` spliced in verbatim as the content.

    The cloud sends stored objects this way: they are already JSON bytes, and parsing them only to
    serialize them again would be the dominant cost of a resync. ``msg.content`` is ignored; ``raw_json``
    must be a valid JSON value (it is not checked — that is the point)."""
    if not raw_json:
        raise EncodeError("raw content is empty (not a JSON value)")
    return encode(Message(msg.header, msg.route, RawJSON(raw_json)))


# --- decoding ----------------------------------------------------------------------------------------


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str:
    # Go decodes JSON null into a string field as "", so null is accepted as empty.
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise DecodeError(f"{where}.{key} is not a string")
    return v


def decode(frame: bytes | bytearray | memoryview | str, *, max_size: int = MAX_FRAME_BYTES) -> Message:
    """Parse one frame into a Message, or raise DecodeError naming what is wrong.

    Content is kept exactly as it came (object, list, string — base64 is *not* guessed here, since a
    string may equally be a patch or plain text); use ``content_object``/``content_bytes``/
    ``content_text`` where the receiver knows what it expects."""
    if isinstance(frame, str):
        # Cheap pre-check before paying for the UTF-8 copy: a str never has more characters than bytes.
        if len(frame) > max_size:
            raise DecodeError(f"frame exceeds max_size of {max_size} bytes")
        try:
            data: bytes | bytearray | memoryview = frame.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("frame is not valid UTF-8 text") from None
    else:
        data = frame
    if len(data) > max_size:
        raise DecodeError(f"frame of {len(data)} bytes exceeds max_size of {max_size} bytes")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"frame is not JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise DecodeError("frame is not a JSON object")

    h = obj.get("header")
    if h is None:
        raise DecodeError("missing header")
    if not isinstance(h, dict):
        raise DecodeError("header is not an object")
    r = obj.get("route")
    if r is None:
        raise DecodeError("missing route")
    if not isinstance(r, dict):
        raise DecodeError("route is not an object")

    msg_id = h.get("msg_id")
    if msg_id is None:
        raise DecodeError("header.msg_id missing")
    if not isinstance(msg_id, str):
        raise DecodeError("header.msg_id is not a string")
    if not msg_id:
        # An empty id can never be answered or acknowledged, so it is useless rather than forward-compatible.
        raise DecodeError("header.msg_id is empty")
    ts = h.get("timestamp", 0)
    if ts is None:
        ts = 0
    # bool is an int subclass in Python; JSON true is not a timestamp. orjson turns integers beyond
    # 64 bits into floats, which this rejects too, as Go's int64 would.
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise DecodeError("header.timestamp is not an integer")
    sync = h.get("sync", False)
    if sync is None:
        sync = False
    if not isinstance(sync, bool):
        raise DecodeError("header.sync is not a boolean")

    header = Header(
        msg_id=msg_id,
        parent_msg_id=_opt_str(h, "parent_msg_id", "header"),
        timestamp=ts,
        resource_version=_opt_str(h, "resourceversion", "header"),
        sync=sync,
        type=_opt_str(h, "type", "header"),
    )
    operation = _opt_str(r, "operation", "route")
    if not operation:
        # Unknown operations pass (a newer peer's extension); no operation at all cannot be dispatched.
        raise DecodeError("route.operation is empty")
    route = Route(
        source=_opt_str(r, "source", "route"),
        destination=_opt_str(r, "destination", "route"),
        group=_opt_str(r, "group", "route"),
        operation=operation,
        resource=_opt_str(r, "resource", "route"),
    )
    return Message(header, route, obj.get("content"))


# --- content helpers ---------------------------------------------------------------------------------


def _b64decode(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("content is not valid base64") from None


def _loads_container(data: bytes | str, what: str) -> dict[str, Any] | list[Any]:
    try:
        v = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise DecodeError(f"content {what} is not JSON") from None
    if not isinstance(v, dict | list):
        raise DecodeError(f"content {what} is not a JSON object or array")
    return v


def content_object(msg: Message) -> dict[str, Any] | list[Any]:
    """The content as a JSON object/array, whichever of KubeEdge's three shapes it arrived in.

    Accepts a nested object/array, a string holding JSON text of one, or base64 of such JSON (bytes
    content and RawJSON are parsed too). A JSON object or array text starts with ``{``/``[``, neither
    of which is a base64 character, so the two string forms cannot be confused."""
    c = msg.content
    if isinstance(c, dict | list):
        return c
    if isinstance(c, RawJSON):
        return _loads_container(c.data, "raw JSON")
    if isinstance(c, bytes | bytearray | memoryview):
        return _loads_container(bytes(c), "bytes")
    if isinstance(c, str):
        s = c.lstrip()
        if s[:1] in ("{", "["):
            return _loads_container(c, "string")
        return _loads_container(_b64decode(c), "base64")
    raise DecodeError(f"content is {type(c).__name__}, not an object")


def content_bytes(msg: Message) -> bytes:
    """The content as raw bytes: bytes as given, a string as base64 (how Go sends []byte), objects as JSON."""
    c = msg.content
    if c is None:
        return b""
    if isinstance(c, bytes | bytearray | memoryview):
        return bytes(c)
    if isinstance(c, RawJSON):
        return c.data
    if isinstance(c, str):
        return _b64decode(c)
    try:
        return orjson.dumps(c, default=_default)
    except orjson.JSONEncodeError as e:
        raise DecodeError(f"content not representable as JSON: {e}") from None


def content_text(msg: Message) -> str:
    """The content as text: strings as given (patch bodies, "OK", error texts), anything else as JSON."""
    c = msg.content
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, bytes | bytearray | memoryview):
        try:
            return bytes(c).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("content bytes are not UTF-8 text") from None
    return content_bytes(msg).decode("utf-8")
