"""`--set key.path=value` overrides for the daemons' YAML configuration documents (keadm style)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml


def apply_overrides(doc: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `doc` with each ``a.b.c=value`` applied. Values are read as YAML, so numbers,
    booleans and flow collections keep their types (``port=10001``, ``advertiseAddress=[10.0.0.1]``);
    missing intermediate mappings are created. Raises ValueError naming the offending item; unknown
    keys are left for the config's own validation to report."""
    out = copy.deepcopy(doc)
    for item in overrides:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: value is not valid YAML: {e}") from None
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"--set {item!r}: {'.'.join(keys[: i + 1])} is not a mapping")
            node = nxt
        node[keys[-1]] = value
    return out
