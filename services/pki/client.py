"""The edge side of the bootstrap: fetch and pin the CA, obtain a node certificate with a token,
and renew it with the current certificate before it expires.

`cryptography` is imported by the steps that make keys or check certificates (join, rotation), so an
edge that holds a valid certificate never loads it; `needs_rotation` reads a KeyPair's validity
with the stdlib."""

from __future__ import annotations

import datetime as dt
import hmac
import ssl
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from . import certs, tokens

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

# Renew once this share of the validity has passed: with 365-day certificates that leaves ~73
# days to succeed, ample for an edge that is offline for weeks.
ROTATION_FRACTION = 0.8
DEFAULT_TIMEOUT = 30.0


class BootstrapError(Exception):
    """The bootstrap could not complete; the message says what to check."""


class PinError(BootstrapError):
    """The CA served by the cloud is not the one the token pins."""


class CertificateRefused(BootstrapError):
    """The cloud answered the certificate request with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _url(host: str, port: int, path: str) -> URL:
    return URL.build(scheme="https", host=host, port=port, path=path)


async def _get(
    url: URL,
    sslctx: ssl.SSLContext,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    request_timeout: float,
) -> tuple[int, bytes]:
    where = f"{url.host}:{url.port}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout)) as session,
            session.get(url, ssl=sslctx, headers=headers, data=body) as resp,
        ):
            return resp.status, await resp.read()
    except aiohttp.ClientConnectorCertificateError as e:
        raise BootstrapError(
            f"cannot verify the TLS certificate of {where} against the cluster CA ({e.certificate_error}); "
            f"check that {url.host} is one of the cloud's advertise addresses and that the CA is current"
        ) from None
    except aiohttp.ClientError as e:
        raise BootstrapError(f"cannot reach the bootstrap server at {where}: {e}") from None
    except TimeoutError:
        raise BootstrapError(
            f"bootstrap server at {where} did not answer within {request_timeout:g}s"
        ) from None


async def fetch_ca(
    host: str, port: int, expected_hash: str, *, request_timeout: float = DEFAULT_TIMEOUT
) -> bytes:
    """Download the CA certificate (PEM) and accept it only if its sha256 matches the pin.

    The connection is deliberately unverified: we have no CA yet. The pin from the token is what
    makes this safe: a man in the middle cannot produce a certificate with the same hash."""
    pinned = expected_hash.strip().lower()
    if len(pinned) != 64 or any(c not in "0123456789abcdef" for c in pinned):
        raise PinError(
            "the expected CA hash must be 64 hex digits (the part of the token before the first '.')"
        )
    sslctx = ssl.create_default_context()
    sslctx.check_hostname = False
    sslctx.verify_mode = ssl.CERT_NONE
    status, der = await _get(_url(host, port, "/ca.crt"), sslctx, request_timeout=request_timeout)
    if status != 200:
        raise BootstrapError(
            f"{host}:{port} answered {status} for /ca.crt: {der[:200].decode(errors='replace')}"
        )
    got = tokens.ca_hash_der(der)
    if not hmac.compare_digest(got, pinned):
        raise PinError(
            f"the CA served by {host}:{port} has sha256 {got}, but the token pins {pinned}: check that the "
            "token was printed by this cloud ('keadm gettoken' on it), that the address points at that "
            "cloud, and that its CA was not regenerated since; otherwise something is intercepting the connection"
        )
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_der_x509_certificate(der)
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, x509.ExtensionNotFound):
        is_ca = False
    if not is_ca:
        raise BootstrapError(f"{host}:{port} served a pinned certificate that is not a CA certificate")
    return cert.public_bytes(serialization.Encoding.PEM)


def _verified_context(ca_pem: bytes) -> ssl.SSLContext:
    sslctx = ssl.create_default_context(cadata=ca_pem.decode())
    sslctx.set_alpn_protocols(["http/1.1"])
    return sslctx


async def _issue(
    host: str,
    port: int,
    ca_pem: bytes,
    sslctx: ssl.SSLContext,
    headers: dict[str, str],
    node_name: str,
    key: ec.EllipticCurvePrivateKey,
    request_timeout: float,
) -> certs.KeyPair:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    from .bootstrap import NODE_CN_PREFIX, NODES_GROUP

    csr = certs.make_csr(key, NODE_CN_PREFIX + node_name, organizations=[NODES_GROUP])
    headers = {**headers, "NodeName": node_name, "Content-Type": "application/pkcs10"}
    status, body = await _get(
        _url(host, port, "/edge.crt"), sslctx, headers=headers, body=csr, request_timeout=request_timeout
    )
    if status != 200:
        reason = body[:500].decode(errors="replace").strip()
        raise CertificateRefused(
            status,
            reason,
            f"{host}:{port} refused the certificate for node {node_name!r} ({status}): {reason}",
        )
    # Trust nothing in the answer until it checks out: issued by our CA, for our key and name.
    try:
        cert = x509.load_der_x509_certificate(body)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        raise BootstrapError(f"{host}:{port} returned a certificate not issued by the cluster CA") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise BootstrapError(f"{host}:{port} returned a certificate for a different key")
    if certs.subject_identity(cert) != (NODE_CN_PREFIX + node_name, [NODES_GROUP]):
        raise BootstrapError(
            f"{host}:{port} returned a certificate for another subject: {cert.subject.rfc4514_string()}"
        )
    return certs.KeyPair(cert.public_bytes(serialization.Encoding.PEM), certs.key_pem(key))


async def request_certificate(
    host: str,
    port: int,
    ca_pem: bytes,
    token_jwt: str,
    node_name: str,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> certs.KeyPair:
    """Obtain a node certificate with a bootstrap token (the JWT, or the full token, whose CA hash
    must then match `ca_pem`). A fresh P-256 key is generated unless one is given."""
    jwt = token_jwt.strip()
    if jwt.count(".") == 3:
        pinned, jwt = tokens.split_token(jwt)
        if pinned != tokens.ca_hash(ca_pem):
            raise PinError("the token pins a different CA than the one given; fetch the CA with this token")
    from cryptography.hazmat.primitives.asymmetric import ec

    if key is None:
        key = certs.generate_key()
    elif not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("edge keys must be ECDSA P-256 (secp256r1)")
    return await _issue(
        host,
        port,
        ca_pem,
        _verified_context(ca_pem),
        {"Authorization": f"Bearer {jwt}"},
        node_name,
        key,
        request_timeout,
    )


async def rotate_certificate(
    host: str,
    port: int,
    ca_pem: bytes,
    current: certs.KeyPair,
    node_name: str,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> certs.KeyPair:
    """Renew the node certificate, authenticating with the current one. A new key is generated so
    a key that leaked during the old certificate's life dies with it."""
    sslctx = _verified_context(ca_pem)
    certs.load_cert_chain(sslctx, current)
    return await _issue(host, port, ca_pem, sslctx, {}, node_name, certs.generate_key(), request_timeout)


def rotation_due_at(
    cert: x509.Certificate | certs.KeyPair, fraction: float = ROTATION_FRACTION
) -> dt.datetime:
    if not 0.0 < fraction <= 1.0:
        raise ValueError("rotation fraction must be in (0, 1]")
    if isinstance(cert, certs.KeyPair):
        start, end = cert.validity
    else:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction


def needs_rotation(
    cert: x509.Certificate | certs.KeyPair,
    now: dt.datetime | None = None,
    fraction: float = ROTATION_FRACTION,
) -> bool:
    """True once `fraction` of the certificate's validity has passed. Given the KeyPair rather than
    its parsed `.cert`, it reads the validity without loading `cryptography`."""
    return (now or dt.datetime.now(dt.UTC)) >= rotation_due_at(cert, fraction)


__all__ = [
    "DEFAULT_TIMEOUT",
    "ROTATION_FRACTION",
    "BootstrapError",
    "CertificateRefused",
    "PinError",
    "fetch_ca",
    "needs_rotation",
    "request_certificate",
    "rotate_certificate",
    "rotation_due_at",
]
