"""Bootstrap tokens in KubeEdge's format: `<sha256 hex of the CA certificate DER>.<JWT>`.

The first part lets a joining edge pin the CA it downloads over an unverified connection; the JWT
proves to the cloud that the holder got the token from an admin. The JWT is HS256 keyed with the
CA private key in DER form (SEC1, what Go's `x509.MarshalECPrivateKey` produces) and carries only
`exp`, exactly as KubeEdge's cloudhub does, so tokens are stateless: any unexpired JWT signed with
the CA key is valid, and a refreshed token never invalidates the one handed out before it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from .certs import KeyPair, write_private

log = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(hours=24)
REFRESH_INTERVAL = dt.timedelta(hours=12)
TOKEN_FILE = "bootstrap-token"

# Fixed, compact header: identical bytes to what Go's jwt libraries emit for HS256.
_HEADER = {"alg": "HS256", "typ": "JWT"}
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# JWT segments are unpadded base64url; anything else is malformed before we even try to decode.
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# A CSR request carries one of these in a header; refusing giant inputs early keeps parsing cheap.
_MAX_JWT_LEN = 4096


class TokenError(Exception):
    """A bootstrap token that cannot be accepted. The message is safe to show and log: it never
    contains the token itself."""


# ---- primitives ------------------------------------------------------------------------------


def ca_hash(ca_cert_pem: bytes) -> str:
    """sha256 hex of the CA certificate's DER encoding (what `keadm join --certificate...` pins)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(ca_cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def ca_hash_der(ca_cert_der: bytes) -> str:
    return hashlib.sha256(ca_cert_der).hexdigest()


@functools.lru_cache(maxsize=8)
def _hmac_key(ca_key_pem: bytes) -> bytes:
    # Parsing the CA key for every request would dominate the cost of a verification; the key
    # material is immutable per CA, so cache by its PEM.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(segment: str) -> bytes:
    if not _SEGMENT_RE.match(segment):
        raise TokenError("malformed token: a JWT segment is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token: a JWT segment is not base64url") from None


def _sign(ca: KeyPair, signing_input: bytes) -> bytes:
    return hmac.new(_hmac_key(ca.key_pem), signing_input, hashlib.sha256).digest()


def make_jwt(ca: KeyPair, exp: int) -> str:
    header = _b64e(orjson.dumps(_HEADER))
    payload = _b64e(orjson.dumps({"exp": exp}))
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{_b64e(_sign(ca, signing_input.encode('ascii')))}"


def make_token(ca: KeyPair, ttl: dt.timedelta = DEFAULT_TTL, *, now: float | None = None) -> str:
    """A full bootstrap token valid for `ttl` from `now` (Unix seconds; default: the clock)."""
    if ttl <= dt.timedelta(0):
        raise ValueError("token ttl must be positive")
    issued = time.time() if now is None else now
    # Round up so a token is never shorter-lived than asked (JWT NumericDate is whole seconds here).
    exp = math.ceil(issued + ttl.total_seconds())
    return f"{ca_hash(ca.cert_pem)}.{make_jwt(ca, exp)}"


def split_token(token: str) -> tuple[str, str]:
    """(ca_hash, jwt) from a full token; TokenError says which part is wrong."""
    token = token.strip()
    ca_part, sep, jwt = token.partition(".")
    if not sep or not jwt:
        raise TokenError("malformed token: expected '<ca-hash>.<jwt>' (as printed by keadm gettoken)")
    ca_part = ca_part.lower()
    if not _HASH_RE.match(ca_part):
        raise TokenError(
            "malformed token: the part before the first '.' must be a 64-digit sha256 hex CA hash"
        )
    if jwt.count(".") != 2:
        raise TokenError("malformed token: the JWT after the CA hash must have three '.'-separated parts")
    return ca_part, jwt


def jwt_expiry(jwt: str) -> int:
    """The `exp` claim, without checking the signature (for scheduling refreshes of our own token)."""
    parts = jwt.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: a JWT has three '.'-separated parts")
    try:
        claims = orjson.loads(_b64d(parts[1]))
    except orjson.JSONDecodeError:
        raise TokenError("malformed token: the JWT claims are not JSON") from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    # bool is an int subclass; `true` is not a date.
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("malformed token: the JWT has no numeric 'exp' claim")
    return int(exp)


def verify_jwt(ca: KeyPair, jwt: str, now: float | None = None) -> None:
    """Accept a JWT signed with this CA's key and not yet expired, or raise TokenError.

    The signature is checked before the claims are trusted, so an attacker learns nothing from
    the error beyond "invalid"; expiry is reported separately because it is the common, fixable
    case ("ask for a new token")."""
    if not jwt or len(jwt) > _MAX_JWT_LEN:
        raise TokenError("malformed token: empty or too long")
    parts = jwt.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: a JWT has three '.'-separated parts")
    header_seg, payload_seg, sig_seg = parts
    try:
        header = orjson.loads(_b64d(header_seg))
    except orjson.JSONDecodeError:
        raise TokenError("malformed token: the JWT header is not JSON") from None
    # Pinning the algorithm defeats "alg: none" and algorithm-confusion tricks.
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("malformed token: the JWT algorithm must be HS256")
    signature = _b64d(sig_seg)
    expected = _sign(ca, f"{header_seg}.{payload_seg}".encode("ascii"))
    if not hmac.compare_digest(signature, expected):
        raise TokenError("token signature invalid (was it issued by this cloud's CA?)")
    exp = jwt_expiry(jwt)
    if (time.time() if now is None else now) >= exp:
        raise TokenError("token expired; get a new one with 'keadm gettoken'")


def verify_token(ca: KeyPair, token: str, now: float | None = None) -> None:
    """Verify a full token: the CA hash must be ours and the JWT valid."""
    pinned, jwt = split_token(token)
    if not hmac.compare_digest(pinned, ca_hash(ca.cert_pem)):
        raise TokenError("token is for a different CA (its CA hash does not match this cloud's CA)")
    verify_jwt(ca, jwt, now)


# ---- the cloud's current token ----------------------------------------------------------------


class TokenStore:
    """Keeps the cloud's current bootstrap token in `<data_dir>/bootstrap-token` (mode 0600) and
    replaces it every `refresh_interval`. Replacing never revokes: the previous token stays valid
    until its own `exp`, so a token an admin just copied keeps working for at least
    `ttl - refresh_interval`."""

    def __init__(
        self,
        ca: KeyPair,
        data_dir: Path,
        *,
        ttl: dt.timedelta = DEFAULT_TTL,
        refresh_interval: dt.timedelta = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= dt.timedelta(0) or refresh_interval <= dt.timedelta(0):
            raise ValueError("token ttl and refresh interval must be positive")
        if refresh_interval >= ttl:
            # Otherwise there would be windows with no valid token at all.
            raise ValueError("token refresh interval must be shorter than its ttl")
        self.ca = ca
        self.path = data_dir / TOKEN_FILE
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._token: str | None = None

    def current(self) -> str:
        """The current token, loading it from disk or minting one when the stored one is missing,
        unusable or due for refresh."""
        if self._token is None:
            self._token = self._load()
        if self._token is None or self._due(self._token):
            return self.refresh()
        return self._token

    def refresh(self) -> str:
        token = make_token(self.ca, self.ttl, now=self._clock())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, token.encode() + b"\n")
        self._token = token
        log.info("bootstrap token refreshed (stored in %s)", self.path)
        return token

    def next_refresh_at(self) -> float:
        """Unix time at which the current token is due for replacement."""
        token = self.current()
        return jwt_expiry(split_token(token)[1]) - (self.ttl - self.refresh_interval).total_seconds()

    async def run(self) -> None:
        """Refresh on schedule forever (cancel to stop)."""
        while True:
            delay = self.next_refresh_at() - self._clock()
            # A floor keeps a clock jump from turning this into a busy loop.
            await asyncio.sleep(max(delay, 0.05))
            self.current()  # refreshes when due; an early wake-up just recomputes the delay

    def _due(self, token: str) -> bool:
        try:
            exp = jwt_expiry(split_token(token)[1])
        except TokenError:
            return True
        return exp - self._clock() <= (self.ttl - self.refresh_interval).total_seconds()

    def _load(self) -> str | None:
        try:
            token = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            verify_token(self.ca, token, self._clock())
        except TokenError as e:
            # E.g. the CA was regenerated, or the cloud was down past the token's expiry.
            log.info("stored bootstrap token not usable (%s); issuing a new one", e)
            return None
        return token
