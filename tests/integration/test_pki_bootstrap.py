"""The bootstrap server on a real TLS port, driven by the edge-side client."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeedge.pki import certs, tokens
from kubeedge.pki.bootstrap import BootstrapConfig, BootstrapServer
from kubeedge.pki.client import (
    BootstrapError,
    CertificateRefused,
    PinError,
    fetch_ca,
    request_certificate,
    rotate_certificate,
)

HOST = "127.0.0.1"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[BootstrapServer]:
    certs.create_ca().save(tmp_path / "ca.crt", tmp_path / "ca.key")
    ca = certs.KeyPair.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    srv = BootstrapServer(BootstrapConfig(host=HOST, port=0), ca)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def jwt_for(srv: BootstrapServer, ttl: dt.timedelta = tokens.DEFAULT_TTL, now: float | None = None) -> str:
    return tokens.split_token(tokens.make_token(srv.ca, ttl, now=now))[1]


async def raw_edge_crt(
    srv: BootstrapServer, body: bytes, headers: dict[str, str], client_pair: certs.KeyPair | None = None
) -> tuple[int, str]:
    ctx = ssl.create_default_context(cadata=srv.ca.cert_pem.decode())
    if client_pair is not None:
        certs.load_cert_chain(ctx, client_pair)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"https://{HOST}:{srv.port}/edge.crt", data=body, headers=headers, ssl=ctx) as r,
    ):
        return r.status, (await r.read()).decode(errors="replace")


def csr(
    cn: str = "system:node:n1",
    *,
    key: PrivateKey | None = None,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> bytes:
    """Like certs.make_csr, but any key type, so the server's key checks can be exercised."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signing_key = key or certs.generate_key()
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


async def test_fetch_ca_pins(server: BootstrapServer) -> None:
    pem = await fetch_ca(HOST, server.port, tokens.ca_hash(server.ca.cert_pem))
    assert x509.load_pem_x509_certificate(pem) == server.ca.cert
    with pytest.raises(PinError, match="the token pins"):
        await fetch_ca(HOST, server.port, tokens.ca_hash(certs.create_ca().cert_pem))
    with pytest.raises(PinError, match="64 hex digits"):
        await fetch_ca(HOST, server.port, "nothex")


async def test_request_certificate(server: BootstrapServer) -> None:
    token = tokens.make_token(server.ca)
    ca_hash, jwt = tokens.split_token(token)
    ca_pem = await fetch_ca(HOST, server.port, ca_hash)
    pair = await request_certificate(HOST, server.port, ca_pem, jwt, "n1")
    cert = pair.cert
    assert certs.subject_identity(cert) == ("system:node:n1", ["system:nodes"])
    cert.verify_directly_issued_by(server.ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= validity <= dt.timedelta(days=365, minutes=10)
    key = pair.private_key
    assert isinstance(key.curve, ec.SECP256R1)
    # The full token works too, and a key of our own is used as given.
    mine = certs.generate_key()
    again = await request_certificate(HOST, server.port, ca_pem, token, "n1", mine)
    assert again.cert.public_key() == mine.public_key()
    assert server.issued == 2


async def test_expired_token_is_401(server: BootstrapServer) -> None:
    expired = jwt_for(server, dt.timedelta(hours=1), now=1000.0)
    with pytest.raises(CertificateRefused, match="token expired") as e:
        await request_certificate(HOST, server.port, server.ca.cert_pem, expired, "n1")
    assert e.value.status == 401
    other = tokens.split_token(tokens.make_token(certs.create_ca()))[1]
    with pytest.raises(CertificateRefused, match="signature invalid") as e:
        await request_certificate(HOST, server.port, server.ca.cert_pem, other, "n1")
    assert e.value.status == 401


async def test_missing_token_and_bad_node_name(server: BootstrapServer) -> None:
    status, text = await raw_edge_crt(server, csr(), {"NodeName": "n1"})
    assert (status, "missing bootstrap token" in text) == (401, True)
    auth = {"Authorization": f"Bearer {jwt_for(server)}"}
    status, text = await raw_edge_crt(server, csr(), auth)
    assert (status, "missing NodeName" in text) == (400, True)
    status, text = await raw_edge_crt(server, csr("system:node:Bad_Name"), {**auth, "NodeName": "Bad_Name"})
    assert (status, "DNS-1123" in text) == (400, True)


async def test_csr_checks(server: BootstrapServer) -> None:
    headers = {"Authorization": f"Bearer {jwt_for(server)}", "NodeName": "n1"}
    cases: list[tuple[bytes, int, str]] = [
        (csr("system:node:n2"), 403, "does not match"),
        (csr("admin"), 403, "does not match"),
        (csr(organizations=("system:masters",)), 403, "organization"),
        (csr(dns_names=("other.example",)), 403, "only use its own name"),
        (csr(key=ec.generate_private_key(ec.SECP384R1())), 400, "P-256"),
        (csr(key=rsa.generate_private_key(65537, 2048)), 400, "P-256"),
        (b"x" * 20_000, 413, "larger than"),
        (b"", 400, "empty body"),
    ]
    good = csr()
    # Flip a byte inside the signature (the end of the DER): still parses, signature fails.
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    cases.append((der[:-3] + bytes([der[-3] ^ 1]) + der[-2:], 400, "signature is invalid"))
    for body, status, reason in cases:
        got, text = await raw_edge_crt(server, body, headers)
        assert (got, reason in text) == (status, True), (reason, got, text)
    # Allowed SANs: the node's own name and IPs; a CSR without a CN is fine (we set the subject).
    got, _ = await raw_edge_crt(server, csr(dns_names=("n1",), ip_addresses=("10.0.0.7", "fd00::7")), headers)
    assert got == 200
    no_subject = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(certs.generate_key(), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    got, text = await raw_edge_crt(server, no_subject, headers)
    assert got == 200, text


async def test_another_cn_is_403(server: BootstrapServer) -> None:
    headers = {"Authorization": f"Bearer {jwt_for(server)}", "NodeName": "n1"}
    status, text = await raw_edge_crt(server, csr("system:node:other"), headers)
    assert status == 403 and "system:node:other" in text


async def test_rotation(server: BootstrapServer) -> None:
    ca_pem = server.ca.cert_pem
    a = await request_certificate(HOST, server.port, ca_pem, jwt_for(server), "node-a")
    renewed = await rotate_certificate(HOST, server.port, ca_pem, a, "node-a")
    assert certs.subject_identity(renewed.cert) == ("system:node:node-a", ["system:nodes"])
    assert renewed.cert.public_key() != a.cert.public_key()  # a fresh key
    renewed.cert.verify_directly_issued_by(server.ca.cert)
    # The renewed certificate renews in turn.
    await rotate_certificate(HOST, server.port, ca_pem, renewed, "node-a")
    # Node A cannot get a certificate for B, even carrying a valid token alongside.
    with pytest.raises(CertificateRefused, match="cannot renew 'node-b'") as e:
        await rotate_certificate(HOST, server.port, ca_pem, a, "node-b")
    assert e.value.status == 403
    headers = {"Authorization": f"Bearer {jwt_for(server)}", "NodeName": "node-b"}
    status, _ = await raw_edge_crt(server, csr("system:node:node-b"), headers, client_pair=a)
    assert status == 403


async def test_non_node_certificate_needs_token(server: BootstrapServer) -> None:
    admin = certs.issue(server.ca, "admin", organizations=["system:masters"], client=True)
    status, text = await raw_edge_crt(server, csr(), {"NodeName": "n1"}, client_pair=admin)
    assert status == 401 and "missing bootstrap token" in text
    # A node-looking certificate without client-auth usage is not a node certificate either
    # (no EKU at all passes the TLS layer, so this reaches our own check).
    no_eku = certs.issue(server.ca, "system:node:n1", organizations=["system:nodes"])
    status, _ = await raw_edge_crt(server, csr(), {"NodeName": "n1"}, client_pair=no_eku)
    assert status == 401
    # A serverAuth-only certificate is already refused by the TLS handshake.
    serving = certs.issue(server.ca, "system:node:n1", organizations=["system:nodes"], server=True)
    with pytest.raises(aiohttp.ClientError):
        await raw_edge_crt(server, csr(), {"NodeName": "n1"}, client_pair=serving)


async def test_foreign_ca_certificate_is_rejected_at_tls(server: BootstrapServer) -> None:
    foreign = certs.issue(certs.create_ca(), "system:node:n1", organizations=["system:nodes"], client=True)
    with pytest.raises(BootstrapError):
        await rotate_certificate(HOST, server.port, server.ca.cert_pem, foreign, "n1")


async def test_server_certificate_is_verified(server: BootstrapServer) -> None:
    # A client holding another CA must not talk to this server.
    with pytest.raises(BootstrapError, match="cannot verify the TLS certificate"):
        await request_certificate(HOST, server.port, certs.create_ca().cert_pem, jwt_for(server), "n1")


async def test_garbage_then_good_and_logging(
    server: BootstrapServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwt = jwt_for(server)
    headers = {"Authorization": f"Bearer {jwt}", "NodeName": "n1"}
    with caplog.at_level(logging.INFO, logger="kubeedge.pki.bootstrap"):
        status, text = await raw_edge_crt(server, b"\x00garbage\xff" * 10, headers)
        assert status == 400 and "not a PEM certificate signing request" in text
        pair = await request_certificate(HOST, server.port, server.ca.cert_pem, jwt, "n1")
    assert certs.subject_identity(pair.cert)[0] == "system:node:n1"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and HOST in refusals[0]
    assert all(jwt not in r.getMessage() and jwt.split(".")[2] not in r.getMessage() for r in caplog.records)
    assert server.refused == 1 and server.issued == 1


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="out of range"):
        BootstrapConfig(port=70000)
    with pytest.raises(ValueError, match="advertise address"):
        BootstrapConfig(advertise_addresses=("not a name",))
    with pytest.raises(ValueError, match="validity"):
        BootstrapConfig(cert_validity=dt.timedelta(0))
    cfg = BootstrapConfig(advertise_addresses=("10.1.2.3", "cloud.example"))
    assert cfg.port == 10002
    assert cfg.serving_sans() == (["cloud.example", "localhost"], ["10.1.2.3", "127.0.0.1", "::1"])
