"""Who is on the other end of a tunnel: TLS contexts from the node's certificate and our CA, and
the check that turns a peer certificate into a node name.

Node certificates carry only the clientAuth usage, which OpenSSL refuses when a *server* presents
it, so the dialling side does not let OpenSSL judge the server certificate: it verifies it itself,
right after the handshake and before any frame is sent — signature by our CA, validity period,
CN `system:node:<name>` and O `system:nodes`. The accepting side lets OpenSSL verify the client
chain (a foreign CA fails the handshake) and then applies the same name rules."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

NODE_CN_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


class PeerRejected(ConnectionError):
    """The peer's certificate is not a node certificate from our CA."""


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path
    ca: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        # Verified by `Verifier.check` after the handshake (see the module docstring).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def verifier(self) -> Verifier:
        return Verifier(self.ca.read_bytes())


class Verifier:
    def __init__(self, ca_pem: bytes) -> None:
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise ValueError("no PEM certificate in the CA file")
        self._ca_pem = ca_pem
        # Parsed at the first peer check: cryptography's x509 costs ~8 MiB of RSS, which an agent
        # with no session yet (no relay, no peer) need not carry.
        self._cas: list[x509.Certificate] | None = None

    def cas(self) -> list[x509.Certificate]:
        if self._cas is None:
            from cryptography import x509

            self._cas = x509.load_pem_x509_certificates(self._ca_pem)
        return self._cas

    def check(self, der: bytes | None, *, node_required: bool = True) -> str:
        """The node name in a peer's DER certificate, or PeerRejected. With node_required=False
        any certificate from our CA passes (a relay run by cloudcore has a server certificate);
        its CN is returned."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        if not der:
            raise PeerRejected("peer sent no certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise PeerRejected(f"unreadable peer certificate: {e}") from None
        if not any(_signed_by(cert, ca) for ca in self.cas()):
            raise PeerRejected(f"certificate of {cert.subject.rfc4514_string()} is not signed by our CA")
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise PeerRejected(f"certificate of {cert.subject.rfc4514_string()} is outside its validity")
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else ""
        if not node_required:
            return cn
        groups = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not cn.startswith(NODE_CN_PREFIX) or NODES_GROUP not in groups or cn == NODE_CN_PREFIX:
            raise PeerRejected(f"{cert.subject.rfc4514_string()} is not a node certificate")
        return cn[len(NODE_CN_PREFIX) :]


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, or a key type that cannot have signed it
        return False
    return True


def peer_der(obj: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    return obj.getpeercert(binary_form=True) if obj is not None else None
