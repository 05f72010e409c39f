"""Stored objects and change events: JSON bytes, decoded at most once and only when needed."""

from __future__ import annotations

from typing import Any

import orjson

Obj = dict[str, Any]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
_TYPE_CODES = {ADDED: 0, MODIFIED: 1, DELETED: 2}
_CODE_TYPES = {v: k for k, v in _TYPE_CODES.items()}


def type_code(t: str) -> int:
    return _TYPE_CODES[t]


def type_name(code: int) -> str:
    return _CODE_TYPES[code]


class Record:
    """One stored version of an object. `data` is what we send; `obj` is a shared, read-only decode."""

    __slots__ = ("_obj", "data", "rv")

    def __init__(self, data: bytes, rv: int, obj: Obj | None = None) -> None:
        self.data = data
        self.rv = rv
        self._obj = obj

    @property
    def obj(self) -> Obj:
        # Shared between every reader of this record: callers copy (copy_obj) before changing it.
        if self._obj is None:
            self._obj = orjson.loads(self.data)
        return self._obj

    @property
    def decoded(self) -> Obj | None:
        """The decoded object if it has been decoded already (no decoding here)."""
        return self._obj

    def copy_obj(self) -> Obj:
        """A private, mutable copy (decoding the bytes is faster than a deepcopy)."""
        result: Obj = orjson.loads(self.data)
        return result


class Event(Record):
    """A committed change. For MODIFIED/DELETED, `prev` is the version it replaced when known."""

    __slots__ = ("_wire", "key", "name", "namespace", "prev", "type")

    def __init__(
        self,
        type: str,
        key: str,
        namespace: str,
        name: str,
        rv: int,
        data: bytes,
        obj: Obj | None = None,
        prev: Record | None = None,
    ) -> None:
        super().__init__(data, rv, obj)
        self.type = type
        self.key = key
        self.namespace = namespace
        self.name = name
        self.prev = prev
        self._wire: dict[str, bytes] | None = None

    def wire(self, etype: str) -> bytes:
        """The watch-stream line for this event as `etype`, built once and shared by all watchers."""
        if self._wire is None:
            self._wire = {}
        line = self._wire.get(etype)
        if line is None:
            line = self._wire[etype] = b'{"type":"' + etype.encode() + b'","object":' + self.data + b"}\n"
        return line

    def __repr__(self) -> str:
        return f"Event({self.type} {self.key} {self.namespace}/{self.name} rv={self.rv})"
