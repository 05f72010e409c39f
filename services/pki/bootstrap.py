"""The bootstrap server (KubeEdge's cloudhub HTTPS port 10002): hands out the CA and signs edge
node certificates.

Routes, as KubeEdge's edge expects them:
- `GET /ca.crt` -> the CA certificate, raw DER. Unauthenticated: the edge pins it by the hash in
  its bootstrap token, so serving it to anyone discloses nothing secret.
- `GET /edge.crt` (body: PEM CSR; headers `NodeName`, and `Authorization: Bearer <JWT>` unless
  rotating) -> the node certificate, raw DER.

Authentication for `/edge.crt`, first match wins:
1. A TLS client certificate issued by our CA (the handshake already verified chain and validity)
   with CN `system:node:<name>`, O `system:nodes` and client-auth usage: a rotation. It may only
   renew the SAME node; any token sent alongside is ignored.
2. Otherwise a bootstrap token: the JWT alone (what KubeEdge sends) or the full `<ca-hash>.<jwt>`,
   whose hash must then be our CA's.

What a CSR may ask for (everything else in it is ignored, never copied):
- Key: ECDSA P-256 only, like KubeEdge's edge keys.
- Subject: CN, if present, must be `system:node:<NodeName>`; O, if present, only `system:nodes`.
  The issued subject is always exactly that, whatever the CSR says.
- SANs: DNS names only equal to the node name (a node may not claim another host's name); any IP
  addresses (the edge knows its own addresses, and the certificate is client-auth only, so an IP
  SAN cannot be used to impersonate a server). Other SAN types are refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import certs, tokens

log = logging.getLogger(__name__)

DEFAULT_PORT = 10002
NODE_CN_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
# A P-256 CSR with a few SANs is well under 1 KiB; anything near this limit is not a CSR.
DEFAULT_MAX_BODY = 16 * 1024

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_dns1123_subdomain(value: str) -> bool:
    return 0 < len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BootstrapConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # Names and IPs the edge dials; they become SANs of the serving certificate so the edge's
    # hostname check passes. localhost, 127.0.0.1 and ::1 are always added.
    advertise_addresses: tuple[str, ...] = ()
    cert_validity: dt.timedelta = certs.CERT_VALIDITY
    max_body_bytes: int = DEFAULT_MAX_BODY
    # A listener backlog sized for many edges re-joining at once after a cloud restart.
    backlog: int = 1024

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("bootstrap host must not be empty (use 0.0.0.0 to listen everywhere)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bootstrap port {self.port} out of range 0-65535")
        for addr in self.advertise_addresses:
            if not (_is_ip(addr) or is_dns1123_subdomain(addr)):
                raise ValueError(f"advertise address {addr!r} is neither an IP address nor a DNS name")
        if self.cert_validity <= dt.timedelta(0):
            raise ValueError("certificate validity must be positive")
        if self.cert_validity > certs.CA_VALIDITY:
            raise ValueError("certificate validity must not exceed the CA's")
        if not 1024 <= self.max_body_bytes <= 1024 * 1024:
            raise ValueError("max_body_bytes must be between 1 KiB and 1 MiB")
        if self.backlog < 1:
            raise ValueError("backlog must be positive")

    def serving_sans(self) -> tuple[list[str], list[str]]:
        """(dns names, ip addresses) for the serving certificate."""
        names = ["localhost", *self.advertise_addresses]
        if self.host not in ("0.0.0.0", "::"):
            names.append(self.host)
        dns = sorted({n for n in names if not _is_ip(n)})
        ips = sorted({n for n in [*names, "127.0.0.1", "::1"] if _is_ip(n)})
        return dns, ips


class Refused(Exception):
    """A request we will not serve: `reason` goes to the client and the log (it holds no secrets)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def node_from_certificate(cert: x509.Certificate) -> str | None:
    """The node name a client certificate speaks for, or None if it is not a node certificate."""
    user, groups = certs.subject_identity(cert)
    if not user.startswith(NODE_CN_PREFIX) or NODES_GROUP not in groups:
        return None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return None
    name = user[len(NODE_CN_PREFIX) :]
    return name if is_dns1123_subdomain(name) else None


def check_csr(body: bytes, node: str) -> tuple[ec.EllipticCurvePublicKey, list[str], list[str]]:
    """Validate a CSR for `node`; returns (public key, dns SANs, ip SANs) or raises Refused."""
    try:
        csr = (
            x509.load_pem_x509_csr(body)
            if body.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_csr(body)  # lenient: some tools send DER
        )
    except (ValueError, UnsupportedAlgorithm):
        raise Refused(400, "body is not a PEM certificate signing request") from None
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_ok = False
    if not signature_ok:
        raise Refused(400, "certificate signing request signature is invalid")
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise Refused(400, "certificate signing request public key cannot be read") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refused(400, "the key must be ECDSA P-256 (secp256r1)")
    want_cn = NODE_CN_PREFIX + node
    for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if attr.value != want_cn:
            raise Refused(403, f"CSR common name {attr.value!r} does not match {want_cn!r}")
    for attr in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        if attr.value != NODES_GROUP:
            raise Refused(
                403,
                f"CSR organization {attr.value!r} not allowed; node certificates carry only {NODES_GROUP!r}",
            )
    dns: list[str] = []
    ips: list[str] = []
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    except ValueError:
        raise Refused(400, "certificate signing request extensions are malformed") from None
    for san in sans or ():
        if isinstance(san, x509.DNSName):
            if san.value != node:
                raise Refused(403, f"CSR asks for DNS name {san.value!r}; a node may only use its own name")
            dns.append(san.value)
        elif isinstance(san, x509.IPAddress):
            if not isinstance(san.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise Refused(400, "CSR IP SANs must be addresses, not networks")
            ips.append(str(san.value))
        else:
            raise Refused(400, f"CSR subject alternative name type {type(san).__name__} not allowed")
    return key, dns, ips


class BootstrapServer:
    def __init__(
        self, config: BootstrapConfig, ca: certs.KeyPair, *, serving: certs.KeyPair | None = None
    ) -> None:
        self.config = config
        self.ca = ca
        self._ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
        self._ca_hash = tokens.ca_hash_der(self._ca_der)
        if serving is None:
            # Issued per start and kept only in memory: edges verify it against the CA, so nothing
            # needs it to persist, and no serving key is left on disk.
            dns, ips = config.serving_sans()
            serving = certs.issue(
                ca,
                "kubeedge-cloudhub",
                dns_names=dns,
                ip_addresses=ips,
                server=True,
                validity=config.cert_validity,
            )
        self.serving = serving
        self._runner: web.AppRunner | None = None
        self.port = config.port
        self.url = ""
        self.issued = 0
        self.refused = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/ca.crt", self._ca_crt)
        app.router.add_get("/edge.crt", self._edge_crt)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5)
        await self._runner.setup()
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.load_cert_chain(sslctx, self.serving)
        sslctx.load_verify_locations(cadata=self.ca.cert_pem.decode())
        # Optional: joining edges have no certificate yet and authenticate with a token instead.
        sslctx.verify_mode = ssl.CERT_OPTIONAL
        sslctx.set_alpn_protocols(["http/1.1"])
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=sslctx, backlog=self.config.backlog
        )
        await site.start()
        for addr in self._runner.addresses:  # the real port when listening on port 0
            self.port = int(addr[1])
            break
        host = self.config.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        self.url = f"https://[{host}]:{self.port}" if ":" in host else f"https://{host}:{self.port}"
        log.info("bootstrap server serving on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("bootstrap server stopped")

    # ---- handlers ----------------------------------------------------------------------------

    async def _ca_crt(self, request: web.Request) -> web.Response:
        return web.Response(body=self._ca_der, content_type="application/pkix-cert")

    async def _edge_crt(self, request: web.Request) -> web.Response:
        try:
            node, how = self._authenticate(request)
            der = await self._sign(request, node)
        except Refused as e:
            self.refused += 1
            log.warning("bootstrap: refused %s from %s: %s", request.path, request.remote, e.reason)
            return web.Response(status=e.status, text=e.reason + "\n")
        self.issued += 1
        log.info("bootstrap: issued a certificate for node %s to %s (%s)", node, request.remote, how)
        return web.Response(body=der, content_type="application/pkix-cert")

    def _authenticate(self, request: web.Request) -> tuple[str, str]:
        """(node name, how) for this request, or Refused."""
        header_node = request.headers.get("NodeName", "").strip()
        cert_node = self._peer_node(request)
        if cert_node is not None:
            if not header_node:
                header_node = cert_node  # the certificate already names the node
            if header_node != cert_node:
                raise Refused(
                    403,
                    f"the client certificate belongs to node {cert_node!r} and cannot renew {header_node!r}",
                )
            return cert_node, "rotation"
        authz = request.headers.get("Authorization", "")
        scheme, _, credential = authz.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Refused(401, "missing bootstrap token: send 'Authorization: Bearer <token>'")
        try:
            jwt = credential
            if credential.count(".") == 3:  # a full '<ca-hash>.<jwt>' token was pasted as is
                pinned, jwt = tokens.split_token(credential)
                if pinned != self._ca_hash:
                    raise tokens.TokenError("token is for a different CA (its CA hash is not this cloud's)")
            tokens.verify_jwt(self.ca, jwt)
        except tokens.TokenError as e:
            raise Refused(401, str(e)) from None
        if not header_node:
            raise Refused(400, "missing NodeName header")
        if not is_dns1123_subdomain(header_node):
            raise Refused(400, f"node name {header_node[:64]!r} is not a valid DNS-1123 subdomain")
        return header_node, "bootstrap token"

    def _peer_node(self, request: web.Request) -> str | None:
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            return None
        # The TLS layer verified this certificate against our CA during the handshake.
        return node_from_certificate(x509.load_der_x509_certificate(der))

    async def _sign(self, request: web.Request, node: str) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, f"body larger than {limit} bytes; send a single PEM CSR")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked bodies have no Content-Length to check
            raise Refused(413, f"body larger than {limit} bytes; send a single PEM CSR") from None
        if not body.strip():
            raise Refused(400, "empty body: send a PEM certificate signing request")
        key, dns, ips = check_csr(body, node)
        pem = certs.sign_public_key(
            self.ca,
            key,
            NODE_CN_PREFIX + node,
            organizations=[NODES_GROUP],
            dns_names=dns,
            ip_addresses=ips,
            client=True,
            validity=self.config.cert_validity,
        )
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
