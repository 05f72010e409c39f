"""The edge daemon's import graph stays lean (its idle RSS is a product target, <= 40 MB), and the
stdlib reading of a certificate's validity that lets the edge skip `cryptography` agrees with it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from kubeedge.apiserver import protobuf, rest
from kubeedge.pki import certs, client
from kubeedge.pki.validity import der_validity, pem_validity

# Loaded only on the paths that need them (join/rotation, API writes, Table output, OpenAPI).
MUST_STAY_LAZY = (
    "cryptography",
    "kubernetes",
    "kubeedge.pki.bootstrap",
    "kubeedge.apiserver.server",
    "kubeedge.apiserver.satokens",
    "kubeedge.apiserver.patch",
    "kubeedge.apiserver.protobuf",
    "kubeedge.apiserver.tables",
    "kubeedge.apiserver.schema",
    "kubeedge.apiserver.validation",
    "kubeedge.apiserver.defaults",
    "kubeedge.apiserver.openapi",
    "kubeedge.cloudcore",
)


def test_edgecore_import_graph_stays_lean() -> None:
    code = (
        "import json, sys\n"
        "from kubeedge.edgecore.__main__ import lean_imports\n"
        "with lean_imports():\n"
        "    import kubeedge.edgecore.app, kubeedge.edgecore.metaserver\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(out.stdout)
    heavy = sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in MUST_STAY_LAZY))
    assert not heavy, f"edgecore now imports {heavy} at start-up; import them where they are used"


def test_rest_knows_the_protobuf_media_type_without_loading_the_codec() -> None:
    assert rest._PROTOBUF == protobuf.PROTOBUF


@pytest.mark.parametrize("days", [1, 365, 365 * 40])  # 40 years: notAfter beyond 2049 is GeneralizedTime
def test_validity_matches_cryptography(days: int) -> None:
    ca = certs.create_ca()
    pair = certs.issue(ca, "system:node:n1", client=True, validity=dt.timedelta(days=days))
    cert = pair.cert
    assert pair.validity == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert ca.validity == (ca.cert.not_valid_before_utc, ca.cert.not_valid_after_utc)
    assert der_validity(cert.public_bytes(serialization.Encoding.DER)) == pair.validity


def test_needs_rotation_agrees_for_a_keypair_and_its_certificate() -> None:
    pair = certs.issue(certs.create_ca(), "system:node:n1", client=True, validity=dt.timedelta(days=10))
    start, end = pair.validity
    for now in (start + dt.timedelta(days=7), start + dt.timedelta(days=9), end + dt.timedelta(days=1)):
        assert client.needs_rotation(pair, now) == client.needs_rotation(pair.cert, now)
    assert client.rotation_due_at(pair) == client.rotation_due_at(pair.cert)


@pytest.mark.parametrize(
    "pem",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"],
)
def test_validity_refuses_garbage(pem: bytes) -> None:
    with pytest.raises(ValueError):
        pem_validity(pem)


def test_validity_refuses_a_truncated_certificate() -> None:
    der = certs.issue(certs.create_ca(), "x").cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(ValueError):
        der_validity(der[:40])
