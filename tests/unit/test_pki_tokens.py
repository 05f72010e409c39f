"""Bootstrap tokens: KubeEdge's `<ca-hash>.<jwt>` format, HS256 keyed with the CA key DER."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubeedge.pki import certs, client, tokens

CA = certs.create_ca()


def b64d(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_ca_hash_is_sha256_of_der() -> None:
    der = x509.load_pem_x509_certificate(CA.cert_pem).public_bytes(serialization.Encoding.DER)
    assert tokens.ca_hash(CA.cert_pem) == hashlib.sha256(der).hexdigest()
    assert tokens.ca_hash_der(der) == hashlib.sha256(der).hexdigest()


def test_round_trip_and_format() -> None:
    now = time.time()
    token = tokens.make_token(CA, now=now)
    ca_part, jwt = tokens.split_token(token)
    assert ca_part == tokens.ca_hash(CA.cert_pem)
    header, payload, sig = jwt.split(".")
    assert json.loads(b64d(header)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(b64d(payload))
    assert list(claims) == ["exp"]
    assert now + 24 * 3600 <= claims["exp"] <= now + 24 * 3600 + 1
    # An independent HS256 computation, keyed with the CA private key DER (SEC1, as Go marshals it).
    key_der = CA.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    expected = hmac.new(key_der, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert b64d(sig) == expected
    tokens.verify_jwt(CA, jwt, now)
    tokens.verify_token(CA, token, now)


def test_expired() -> None:
    token = tokens.make_token(CA, dt.timedelta(hours=1), now=1000.0)
    _, jwt = tokens.split_token(token)
    tokens.verify_jwt(CA, jwt, now=1000.0 + 3599)
    with pytest.raises(tokens.TokenError, match="token expired"):
        tokens.verify_jwt(CA, jwt, now=1000.0 + 3600)


def test_wrong_key() -> None:
    other = certs.create_ca()
    _, jwt = tokens.split_token(tokens.make_token(other))
    with pytest.raises(tokens.TokenError, match="token signature invalid"):
        tokens.verify_jwt(CA, jwt)
    with pytest.raises(tokens.TokenError, match="different CA"):
        tokens.verify_token(CA, tokens.make_token(other))


def test_tampered() -> None:
    _, jwt = tokens.split_token(tokens.make_token(CA, now=1000.0))
    header, _, sig = jwt.split(".")
    # Extending the expiry without the key must not work.
    forged = f"{header}.{b64e(json.dumps({'exp': 10**10}).encode())}.{sig}"
    with pytest.raises(tokens.TokenError, match="token signature invalid"):
        tokens.verify_jwt(CA, forged, now=1000.0)
    flipped = jwt[:-2] + ("A" if jwt[-2] != "A" else "B") + jwt[-1]
    with pytest.raises(tokens.TokenError, match="token signature invalid"):
        tokens.verify_jwt(CA, flipped, now=1000.0)


def test_alg_none_refused() -> None:
    none_header = b64e(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64e(json.dumps({"exp": 10**10}).encode())
    with pytest.raises(tokens.TokenError, match="malformed token"):
        tokens.verify_jwt(CA, f"{none_header}.{payload}.")


@pytest.mark.parametrize(
    "jwt",
    ["", "abc", "a.b", "a.b.c.d", "!!!.b.c", "e30.e30.", "x" * 5000, f"{b64e(b'[1]')}.{b64e(b'{}')}.AAAA"],
)
def test_malformed_jwt(jwt: str) -> None:
    with pytest.raises(tokens.TokenError, match="malformed token"):
        tokens.verify_jwt(CA, jwt)


def test_missing_or_bad_exp() -> None:
    header = b64e(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    for claims in ({}, {"exp": "soon"}, {"exp": True}):
        payload = b64e(json.dumps(claims).encode())
        sig = hmac.new(tokens._hmac_key(CA.key_pem), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(tokens.TokenError, match="no numeric 'exp'"):
            tokens.verify_jwt(CA, f"{header}.{payload}.{b64e(sig)}")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "expected '<ca-hash>.<jwt>'"),
        ("nodot", "expected '<ca-hash>.<jwt>'"),
        ("abc.a.b.c", "64-digit sha256"),
        ("a" * 64 + ".a.b", "three '.'-separated"),
    ],
)
def test_split_token_errors(token: str, why: str) -> None:
    with pytest.raises(tokens.TokenError, match="malformed token") as e:
        tokens.split_token(token)
    assert why in str(e.value)


def test_error_messages_never_contain_the_token() -> None:
    token = tokens.make_token(CA, now=1000.0)
    _, jwt = tokens.split_token(token)
    with pytest.raises(tokens.TokenError) as e:
        tokens.verify_jwt(CA, jwt, now=10**10)
    assert jwt not in str(e.value) and jwt.split(".")[2] not in str(e.value)


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        tokens.make_token(CA, dt.timedelta(0))


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_store_refresh_keeps_old_token_valid(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    store = tokens.TokenStore(CA, tmp_path, clock=clock)
    first = store.current()
    assert store.path.read_text().strip() == first
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    clock.t += 11 * 3600
    assert store.current() == first  # not due yet
    clock.t += 1 * 3600 + 1  # 12 h later: due
    second = store.current()
    assert second != first
    assert store.path.read_text().strip() == second
    # The old token is still good until its own expiry, 24 h after it was issued.
    tokens.verify_token(CA, first, clock.t)
    tokens.verify_token(CA, second, clock.t)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_token(CA, first, 1_000_000.0 + 24 * 3600 + 1)


def test_store_reloads_from_disk_and_replaces_bad_files(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    first = tokens.TokenStore(CA, tmp_path, clock=clock).current()
    assert tokens.TokenStore(CA, tmp_path, clock=clock).current() == first  # survives a restart
    # A token for another CA (the CA was regenerated) or garbage gets replaced.
    assert tokens.TokenStore(certs.create_ca(), tmp_path, clock=clock).current() != first
    (tmp_path / tokens.TOKEN_FILE).write_text("garbage")
    replaced = tokens.TokenStore(CA, tmp_path, clock=clock).current()
    tokens.verify_token(CA, replaced, clock.t)


def test_store_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter"):
        tokens.TokenStore(CA, tmp_path, ttl=dt.timedelta(hours=1), refresh_interval=dt.timedelta(hours=1))


async def test_store_run_refreshes_on_schedule(tmp_path: Path) -> None:
    store = tokens.TokenStore(
        CA, tmp_path, ttl=dt.timedelta(seconds=4), refresh_interval=dt.timedelta(seconds=1)
    )
    first = store.current()
    task = asyncio.create_task(store.run())
    try:
        deadline = time.monotonic() + 5
        while store.path.read_text().strip() == first:
            assert time.monotonic() < deadline, "token was not refreshed"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    tokens.verify_token(CA, first)
    tokens.verify_token(CA, store.path.read_text().strip())


def test_needs_rotation() -> None:
    pair = certs.issue(CA, "system:node:n1", client=True, validity=dt.timedelta(days=100))
    cert = pair.cert
    start = cert.not_valid_before_utc
    span = cert.not_valid_after_utc - start
    assert client.ROTATION_FRACTION == 0.8
    assert not client.needs_rotation(cert, start + span * 0.79)
    assert client.needs_rotation(cert, start + span * 0.8)
    assert client.needs_rotation(cert, start + span * 0.5, fraction=0.5)
    assert not client.needs_rotation(cert)
