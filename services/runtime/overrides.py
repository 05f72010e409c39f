"""`--set key.path=value` overrides for the daemons' YAML configuration documents (keadm style)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, TypeAlias

import yaml

# "a.b.c=value" as typed on a command line (value read as YAML), or ("a.b.c", value) already parsed
# (from a settings document, so its values are not turned back into text and parsed again).
Override: TypeAlias = str | tuple[str, Any]


def parse_override(item: str) -> tuple[str, Any]:
    """("a.b.c", value) of ``a.b.c=value``. Values are read as YAML, so numbers, booleans and flow
    collections keep their types (``port=10001``, ``advertiseAddress=[10.0.0.1]``)."""
    path, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"--set {item!r}: value is not valid YAML: {e}") from None
    return path.strip(), value


def apply_overrides(doc: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """A copy of `doc` with each override applied; missing intermediate mappings are created.
    Raises ValueError naming the offending item; unknown keys are left for the config's own
    validation to report."""
    out = copy.deepcopy(doc)
    for item in overrides:
        path, value = parse_override(item) if isinstance(item, str) else item
        shown = item if isinstance(item, str) else f"{path}={value!r}"
        keys = path.split(".")
        if not all(keys):
            raise ValueError(f"--set {shown!r}: expected key.path=value")
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"--set {shown!r}: {'.'.join(keys[: i + 1])} is not a mapping")
            node = nxt
        node[keys[-1]] = value
    return out
