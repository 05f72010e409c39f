"""A certificate's validity period (notBefore, notAfter) read from its DER with the stdlib.

The edge checks "is rotation due?" on a timer; parsing with `cryptography` for that would keep its
~10 MB native library resident in a process that otherwise only hands PEM files to `ssl`. X.509
puts the period at a fixed place (RFC 5280 §4.1): Certificate → tbsCertificate → [0] version
(optional), serialNumber, signature, issuer, validity { notBefore, notAfter }.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import NamedTuple

_SEQUENCE = 0x30
_VERSION_TAG = 0xA0  # [0] EXPLICIT
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


class Validity(NamedTuple):
    not_before: dt.datetime  # timezone-aware, UTC
    not_after: dt.datetime


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("certificate: truncated DER")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise ValueError("certificate: unsupported DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("certificate: truncated DER")
    return tag, pos, pos + length


def _time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError(f"certificate: time {text!r} is not in UTC")
    if tag == _UTC_TIME and len(text) == 13:
        # RFC 5280 §4.1.2.5.1: two-digit years 50..99 are 19xx, 00..49 are 20xx.
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError(f"certificate: unsupported time encoding {text!r}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def der_validity(der: bytes) -> Validity:
    tag, start, _ = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("certificate: not a DER SEQUENCE")
    tag, pos, _ = _tlv(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("certificate: tbsCertificate is not a SEQUENCE")
    tag, _, end = _tlv(der, pos)
    if tag == _VERSION_TAG:
        pos = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, pos = _tlv(der, pos)
    tag, pos, _ = _tlv(der, pos)
    if tag != _SEQUENCE:
        raise ValueError("certificate: validity is not a SEQUENCE")
    times = []
    for _field in ("notBefore", "notAfter"):
        tag, start, pos = _tlv(der, pos)
        times.append(_time(tag, der[start:pos]))
    return Validity(times[0], times[1])


def pem_validity(pem: bytes) -> Validity:
    """The validity of the first certificate in `pem`."""
    begin = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, begin + 1)
    if begin < 0 or end < 0:
        raise ValueError("certificate: no PEM CERTIFICATE block")
    try:
        der = base64.b64decode(b"".join(pem[begin + len(_PEM_BEGIN) : end].split()), validate=True)
    except binascii.Error:
        raise ValueError("certificate: the PEM block is not valid base64") from None
    return der_validity(der)


__all__ = ["Validity", "der_validity", "pem_validity"]
