"""Service accounts on a real API server: the controller gives every namespace a `default` account,
`kubectl create token` issues bound tokens, and the server accepts them as bearer tokens only while
they are valid (signature, expiry, bound objects), with a read-only policy in their namespace."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kubeedge.apiserver.satokens import SigningKey
from kubeedge.kube import CONFIGMAPS, NAMESPACES, PODS, SERVICEACCOUNTS, KubeClient, KubeConfig
from kubeedge.kube.errors import Forbidden, Invalid, NotFound
from kubeedge.pki import certs
from tests.apiserver_proc import KUBECTL, ApiServerProc
from tests.cluster import register_node, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

Obj = dict[str, Any]
NS = "team-a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProc]:
    srv = ApiServerProc(tmp_path_factory.mktemp("sa"), extra_args=["--controllers", "serviceaccount"]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kc(server: ApiServerProc) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.from_file(str(server.kubeconfig))) as client:
        for ns in (NS, "team-b"):
            await client.create(NAMESPACES, {"metadata": {"name": ns}})
            await wait_for(partial(_sa, client, ns, "default"), deadline_s=15, what=f"default SA in {ns}")
        yield client


async def _sa(kc: KubeClient, ns: str, name: str) -> Obj | None:
    try:
        return await kc.get(SERVICEACCOUNTS, name, ns)
    except NotFound:
        return None


def token_kubeconfig(srv: ApiServerProc, token: str, path: Path) -> Path:
    ca = base64.b64encode(srv.ca_file.read_bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": srv.url, "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(cfg))
    return path


def kubectl_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=30)


def claims_of(token: str) -> Obj:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_default_account_in_every_namespace_and_recreated(kc: KubeClient) -> None:
    for ns in ("default", "kube-system", NS):
        assert await _sa(kc, ns, "default") is not None
    old = await kc.get(SERVICEACCOUNTS, "default", "team-b")
    await kc.delete(SERVICEACCOUNTS, "default", "team-b")

    async def recreated() -> bool:
        sa = await _sa(kc, "team-b", "default")
        return sa is not None and sa["metadata"]["uid"] != old["metadata"]["uid"]

    await wait_for(recreated, deadline_s=15, what="default SA recreated")
    # No legacy token Secrets are made for it (Kubernetes >= 1.24).
    assert not (await kc.get(SERVICEACCOUNTS, "default", "team-b")).get("secrets")


async def test_kubectl_create_token_and_read_only_access(
    kc: KubeClient, server: ApiServerProc, tmp_path: Path
) -> None:
    res = server.kubectl("create", "token", "default", "-n", NS)  # kubectl sends a protobuf TokenRequest
    token = res.stdout.strip()
    claims = claims_of(token)
    sa = await kc.get(SERVICEACCOUNTS, "default", NS)
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == f"system:serviceaccount:{NS}:default"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "default", "uid": sa["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3600

    await kc.create(CONFIGMAPS, {"metadata": {"name": "settings"}, "data": {"a": "b"}}, namespace=NS)
    cfg = token_kubeconfig(server, token, tmp_path / "sa.kubeconfig")
    pods = kubectl_as(cfg, "get", "pods", "-n", NS)
    assert pods.returncode == 0, pods.stderr
    cms = kubectl_as(cfg, "get", "configmaps", "-n", NS, "-o", "name")
    assert cms.returncode == 0 and "configmap/settings" in cms.stdout, cms.stderr
    for args in (
        ("get", "secrets", "-n", NS),
        ("get", "pods", "-n", "team-b"),
        ("get", "pods", "--all-namespaces"),
        ("create", "configmap", "x", "-n", NS),
        ("delete", "configmap", "settings", "-n", NS),
    ):
        out = kubectl_as(cfg, *args)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (args, out.stdout, out.stderr)
        assert f"system:serviceaccount:{NS}:default" in out.stderr
    assert kubectl_as(cfg, "api-resources", "-o", "name").returncode == 0  # discovery is open


async def test_token_requests_are_validated(kc: KubeClient, server: ApiServerProc) -> None:
    short = server.kubectl("create", "token", "default", "-n", NS, "--duration=5m", check=False)
    assert short.returncode != 0 and "less than 10 minutes" in short.stderr
    with pytest.raises(Invalid):
        await kc.create_subresource(
            SERVICEACCOUNTS, "default", "token", {"spec": {"expirationSeconds": 60}}, NS
        )
    missing = server.kubectl("create", "token", "nobody", "-n", NS, check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr
    long = await kc.create_subresource(
        SERVICEACCOUNTS, "default", "token", {"spec": {"expirationSeconds": 10**9, "audiences": ["x"]}}, NS
    )
    assert long["spec"]["expirationSeconds"] == 48 * 3600 and long["spec"]["audiences"] == ["x"]


async def test_deleted_account_and_expired_or_foreign_tokens_are_refused(
    kc: KubeClient, server: ApiServerProc, tmp_path: Path
) -> None:
    await kc.create(SERVICEACCOUNTS, {"metadata": {"name": "builder"}}, namespace=NS)
    token = server.kubectl("create", "token", "builder", "-n", NS, "--duration=10m").stdout.strip()
    cfg = token_kubeconfig(server, token, tmp_path / "builder.kubeconfig")
    assert kubectl_as(cfg, "get", "pods", "-n", NS).returncode == 0

    # The same claims, expired, signed with the server's own key: refused.
    key = SigningKey.load_or_create(server.data_dir / "pki" / "sa.key")
    now = int(time.time())
    expired = key.sign({**claims_of(token), "iat": now - 1300, "nbf": now - 1300, "exp": now - 700})
    out = kubectl_as(
        token_kubeconfig(server, expired, tmp_path / "expired.kubeconfig"), "get", "pods", "-n", NS
    )
    assert out.returncode != 0 and "Unauthorized" in out.stderr
    # Valid claims signed by another key: refused.
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certs.write_private(tmp_path / "other.key", pem)
    forged = SigningKey.load_or_create(tmp_path / "other.key").sign(claims_of(token))
    out = kubectl_as(
        token_kubeconfig(server, forged, tmp_path / "forged.kubeconfig"), "get", "pods", "-n", NS
    )
    assert out.returncode != 0 and "Unauthorized" in out.stderr

    # Deleting the account revokes its tokens, even if it is recreated under the same name.
    await kc.delete(SERVICEACCOUNTS, "builder", NS)
    out = kubectl_as(cfg, "get", "pods", "-n", NS)
    assert out.returncode != 0 and "Unauthorized" in out.stderr
    await kc.create(SERVICEACCOUNTS, {"metadata": {"name": "builder"}}, namespace=NS)
    assert kubectl_as(cfg, "get", "pods", "-n", NS).returncode != 0


async def test_pod_bound_token_dies_with_its_pod(
    kc: KubeClient, server: ApiServerProc, tmp_path: Path
) -> None:
    pod = {"metadata": {"name": "worker"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    created = await kc.create(PODS, pod, namespace=NS)
    tr = await kc.create_subresource(
        SERVICEACCOUNTS,
        "default",
        "token",
        {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "worker"}}},
        NS,
    )
    token = tr["status"]["token"]
    assert tr["status"]["expirationTimestamp"].endswith("Z")
    assert claims_of(token)["kubernetes.io"]["pod"] == {"name": "worker", "uid": created["metadata"]["uid"]}
    cfg = token_kubeconfig(server, token, tmp_path / "pod.kubeconfig")
    assert kubectl_as(cfg, "get", "pod", "worker", "-n", NS).returncode == 0
    # kubectl binds tokens the same way (its protobuf TokenRequest carries the reference).
    by_kubectl = server.kubectl(
        "create", "token", "default", "-n", NS, "--bound-object-kind=Pod", "--bound-object-name=worker"
    ).stdout.strip()
    assert claims_of(by_kubectl)["kubernetes.io"]["pod"]["uid"] == created["metadata"]["uid"]
    cfg2 = token_kubeconfig(server, by_kubectl, tmp_path / "pod2.kubeconfig")
    assert kubectl_as(cfg2, "get", "pods", "-n", NS).returncode == 0
    await kc.delete(PODS, "worker", NS, grace_period_seconds=0)
    for c in (cfg, cfg2):
        out = kubectl_as(c, "get", "pods", "-n", NS)
        assert out.returncode != 0 and "Unauthorized" in out.stderr
    with pytest.raises(NotFound):
        await kc.create_subresource(
            SERVICEACCOUNTS,
            "default",
            "token",
            {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "worker"}}},
            NS,
        )


def node_kubeconfig(srv: ApiServerProc, node: str, path: Path) -> Path:
    ca = certs.KeyPair(
        (srv.data_dir / "pki" / "ca.crt").read_bytes(), (srv.data_dir / "pki" / "ca.key").read_bytes()
    )
    pair = certs.issue(ca, f"system:node:{node}", organizations=["system:nodes"], client=True)
    path.write_text(certs.kubeconfig(srv.url, ca.cert_pem, node, pair))
    return path


async def test_node_gets_tokens_only_for_its_own_pods(
    kc: KubeClient, server: ApiServerProc, tmp_path: Path
) -> None:
    await register_node(kc, "edge-a")
    await register_node(kc, "edge-b")
    await kc.create(SERVICEACCOUNTS, {"metadata": {"name": "runner"}}, namespace=NS)
    for name, node in (("on-a", "edge-a"), ("on-b", "edge-b")):
        body = {
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "containers": [{"name": "c", "image": "x"}],
            },
        }
        await kc.create(PODS, body, namespace=NS)

    def bound(pod: str) -> Obj:
        return {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}}

    async with KubeClient(
        KubeConfig.from_file(str(node_kubeconfig(server, "edge-a", tmp_path / "a")))
    ) as node_kc:
        tr = await node_kc.create_subresource(SERVICEACCOUNTS, "runner", "token", bound("on-a"), NS)
        assert claims_of(tr["status"]["token"])["kubernetes.io"]["node"]["name"] == "edge-a"
        with pytest.raises(Forbidden):  # not bound to a pod
            await node_kc.create_subresource(SERVICEACCOUNTS, "runner", "token", {"spec": {}}, NS)
        with pytest.raises(Forbidden):  # a pod on another node
            await node_kc.create_subresource(SERVICEACCOUNTS, "runner", "token", bound("on-b"), NS)
        with pytest.raises(Forbidden):  # an account none of its pods uses
            await node_kc.create_subresource(SERVICEACCOUNTS, "builder", "token", {"spec": {}}, NS)
