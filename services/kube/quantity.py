"""Kubernetes resource quantities ("100m", "1.5", "1Gi", "500Mi", "1e3", "2k") as exact numbers.

Pure API semantics shared by the API server (defaults, validation) and the scheduler."""

from __future__ import annotations

import functools
import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
# A decimal exponent needs digits after the e, so "1E" is one exa while "1e3" is a thousand.
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Fraction:
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"invalid quantity {text!r}")
    number, exponent, suffix = m.groups()
    value = Fraction(number)
    if exponent is not None:
        return value * Fraction(10) ** int(exponent)
    return value * _SUFFIXES[suffix or ""]


def parse_quantity(q: str | int | float) -> Fraction:
    """A Kubernetes resource quantity ("100m", "1.5", "1Gi", "500Mi", "1e3", "2k") as an exact number."""
    if isinstance(q, bool):
        raise ValueError(f"invalid quantity {q!r}")
    if isinstance(q, int):
        return Fraction(q)
    if isinstance(q, float):
        return Fraction(repr(q))
    return _parse(str(q))


def try_parse_quantity(q: object) -> Fraction | None:
    """parse_quantity, or None for a malformed value (validation reports it)."""
    if not isinstance(q, str | int | float):
        return None
    try:
        return parse_quantity(q)
    except (ValueError, ZeroDivisionError):
        return None
