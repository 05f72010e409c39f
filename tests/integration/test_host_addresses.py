"""The host-address fallback against a network namespace the test builds, so the addresses are known:
cloudcore's certificate names them only when no advertiseAddress is configured, and the API server
names them only when it listens everywhere. (Read in this machine's own namespace these checks would
hold trivially on a host with no address but loopback.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.apiserver_proc import ROOT
from tests.integration.test_mesh_tunnel import sh, topology

V4, V6 = "10.213.99.7", "2001:db8:99::7"

# Run inside the namespace (its /proc/net is the namespace's): everything the assertions need, as JSON.
PROBE = """
import json, sys
from pathlib import Path
from cryptography import x509
from kubeedge.apiserver.config import ApiServerConfig
from kubeedge.apiserver.server import Pki
from kubeedge.cloudcore import config as cc
from kubeedge.cloudcore.app import advertised, serving_sans
from kubeedge.runtime.hostaddrs import host_addresses

def api_ips(listen, where):
    _, serving = Pki(ApiServerConfig(data_dir=Path(where), listen=listen)).ensure()
    ext = x509.load_pem_x509_certificate(serving.cert_pem).extensions
    names = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(str(ip) for ip in names.get_values_for_type(x509.IPAddress))

auto = cc.CloudCoreConfig()
doc = auto.to_document()
doc["modules"]["cloudHub"]["advertiseAddress"] = ["cloud.example"]
fixed = cc.CloudCoreConfig.from_document(doc)
print(json.dumps({
    "host": host_addresses(),
    "advertised_auto": list(advertised(auto)),
    "sans_auto": [list(x) for x in serving_sans(auto)],
    "advertised_fixed": list(advertised(fixed)),
    "sans_fixed": [list(x) for x in serving_sans(fixed)],
    "api_everywhere": api_ips("0.0.0.0:6443", sys.argv[1] + "/a"),
    "api_loopback": api_ips("127.0.0.1:6443", sys.argv[1] + "/b"),
}))
"""


def probe_in(ns: str, work: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, str(work)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_certificates_name_the_namespaces_addresses_unless_told_otherwise(tmp_path: Path) -> None:
    with topology() as t:
        ns = t.ns("addr")
        dev, _ = t.link(ns, f"{V4}/24", t.ns("peer"), "10.213.99.8/24")
        sh("ip", "-n", ns, "addr", "add", f"{V6}/64", "dev", dev, "nodad")
        # A link-local address is not dialable from elsewhere: never named.
        sh("ip", "-n", ns, "addr", "add", "fe80::7/64", "dev", dev, "nodad")
        got = probe_in(ns, tmp_path)
    assert got["host"] == [V4, V6]
    assert got["advertised_auto"] == [V4, V6]
    dns, ips = got["sans_auto"]
    assert {V4, V6} <= set(ips) and "fe80::7" not in ips
    assert got["advertised_fixed"] == ["cloud.example"]
    dns, ips = got["sans_fixed"]
    assert "cloud.example" in dns and not {V4, V6} & set(ips)
    assert {V4, V6, "127.0.0.1"} <= set(got["api_everywhere"])
    assert not {V4, V6} & set(got["api_loopback"])
