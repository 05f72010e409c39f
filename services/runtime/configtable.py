"""A daemon's configuration as one declared table: frozen dataclasses whose fields are the settings
(type, default, validation in ``__post_init__``), loaded from a YAML document by their annotations.

A field's YAML key is its ``metadata["key"]`` when given (KubeEdge's spelling), else its name in
camelCase. An unknown key is an error naming its dotted path, so a typo never falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from .overrides import Override
from .overrides import apply_overrides as _apply_overrides

T = TypeVar("T")
_ACRONYMS: Final = {"api": "API", "ca": "CA", "dns": "DNS", "ip": "IP", "ttl": "TTL"}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(_ACRONYMS.get(w, w.capitalize()) for w in rest)


def key_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key") or camel(f.name))


def build(cls: type[T], doc: Any, path: str = "") -> T:
    """``cls`` from the mapping ``doc`` (None: all defaults); ConfigError names the first problem."""
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path or 'document'}: expected a mapping, got {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    by_key = {key_of(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kw: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"{path}.{key}" if path else str(key)
        f = by_key.get(str(key))
        if f is None:
            raise ConfigError(f"unknown key {where!r} (known here: {', '.join(sorted(by_key))})")
        kw[f.name] = _convert(hints[f.name], value, where)
    for k, f in by_key.items():
        if f.name not in kw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path + '.' if path else ''}{k}: required")
    try:
        return cls(**kw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if value is None:
            return ()
        if isinstance(value, str) and item is str:  # "a, b" as well as [a, b]
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: unsupported union type")  # settings stay single-typed
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        # YAML reads a bare 10 or 1.5 as a number; where text belongs it is meant as text.
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")  # a programming error, said plainly


def document(value: Any) -> Any:
    """The YAML-able document of a configuration (what `keadm` writes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key_of(f): document(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [document(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def apply_overrides(doc: Any, overrides: Iterable[Override]) -> dict[str, Any]:
    """``--set a.b.c=value`` overrides applied to a copy of the raw document."""
    try:
        return _apply_overrides(doc if isinstance(doc, dict) else {}, overrides)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_document(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (an empty file is an empty mapping)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded or {}
