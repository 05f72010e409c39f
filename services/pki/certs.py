"""Certificate primitives: a CA, certificates it signs, and kubeconfig files that carry them.

`cryptography` (~10 MB resident) is imported where a certificate is parsed, made or signed, not at
import: an edge that already holds its certificate only hands PEM files to `ssl`, and reads the
validity period with the stdlib (`validity`)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import yaml

from .validity import Validity, pem_validity

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_VALIDITY = dt.timedelta(days=3650)
CERT_VALIDITY = dt.timedelta(days=365)


def _curve() -> ec.EllipticCurve:
    # ECDSA P-256 everywhere: small keys, fast handshakes on weak edge CPUs, what KubeEdge uses.
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.SECP256R1()


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def validity(self) -> Validity:
        """notBefore/notAfter of the certificate, read without `cryptography`."""
        return pem_validity(self.cert_pem)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("expected an ECDSA private key")
        return key

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> KeyPair:
        return cls(cert_path.read_bytes(), key_path.read_bytes())

    def save(self, cert_path: Path, key_path: Path) -> None:
        # The key first: a crash in between leaves an old certificate next to a key it does not
        # match, which fails loudly at load, rather than a new certificate with an unreadable key.
        write_private(key_path, self.key_pem)
        write_private(cert_path, self.cert_pem)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(_curve())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return _key_pem(key)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(common_name: str = "kubeedge-ca") -> KeyPair:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


class CertProfile(TypedDict, total=False):
    """What a certificate says besides its name: the keyword arguments of ``sign_public_key``."""

    organizations: Iterable[str]
    dns_names: Iterable[str]
    ip_addresses: Iterable[str]
    server: bool
    client: bool
    validity: dt.timedelta


def issue(ca: KeyPair, common_name: str, **profile: Unpack[CertProfile]) -> KeyPair:
    """Sign a fresh key for `common_name`; organizations become groups for client certificates."""
    key = generate_key()
    return KeyPair(sign_public_key(ca, key.public_key(), common_name, **profile), _key_pem(key))


def sign_public_key(
    ca: KeyPair,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    *,
    organizations: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
    validity: dt.timedelta = CERT_VALIDITY,
) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organizations: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
) -> bytes:
    """A PEM certificate signing request, the form KubeEdge's edge sends to the bootstrap server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_cert_chain(ctx: ssl.SSLContext, pair: KeyPair) -> None:
    """Load an in-memory pair into an SSL context. The ssl module only reads files, so the pair
    goes through a private temporary directory that is removed before returning."""
    with tempfile.TemporaryDirectory(prefix="kubeedge-tls-") as d:
        cert_path, key_path = Path(d) / "tls.crt", Path(d) / "tls.key"
        write_private(cert_path, pair.cert_pem)
        write_private(key_path, pair.key_pem)
        ctx.load_cert_chain(cert_path, key_path)


def subject_identity(cert: x509.Certificate) -> tuple[str, list[str]]:
    """(user, groups) as Kubernetes reads a client certificate: CN is the user, O the groups."""
    from cryptography.x509.oid import NameOID

    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    user = str(cn[0].value) if cn else ""
    return user, [str(o.value) for o in orgs]


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def kubeconfig(server: str, ca_pem: bytes, user: str, cred: KeyPair | None = None, token: str = "") -> str:
    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    user_entry: dict[str, str] = {}
    if cred is not None:
        user_entry = {"client-certificate-data": b64(cred.cert_pem), "client-key-data": b64(cred.key_pem)}
    if token:
        user_entry["token"] = token
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubeedge", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "kubeedge", "context": {"cluster": "kubeedge", "user": user}}],
        "current-context": "kubeedge",
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
