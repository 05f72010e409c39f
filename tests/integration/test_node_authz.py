"""A node identity reads only what its own pods need and writes only its own node, lease and pods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kubeedge.kube import (
    CONFIGMAPS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    KubeClient,
    KubeConfig,
)
from kubeedge.kube.errors import BadRequest, Forbidden, Unauthorized
from kubeedge.pki import certs
from tests.apiserver_proc import ApiServerProc


def node_kubeconfig(
    srv: ApiServerProc, node: str, path: Path, orgs: tuple[str, ...] = ("system:nodes",)
) -> Path:
    ca = certs.KeyPair(
        (srv.data_dir / "pki" / "ca.crt").read_bytes(), (srv.data_dir / "pki" / "ca.key").read_bytes()
    )
    pair = certs.issue(ca, f"system:node:{node}", organizations=orgs, client=True)
    path.write_text(certs.kubeconfig(srv.url, ca.cert_pem, node, pair))
    return path


def pod(name: str, cm: str, secret: str) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}],
                }
            ],
            "volumes": [{"name": "v", "configMap": {"name": cm}}],
        },
    }


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(apiserver: ApiServerProc, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict]:
    d = tmp_path_factory.mktemp("nodes")
    admin = KubeClient(KubeConfig.from_file(str(apiserver.kubeconfig)))
    async with admin:
        await admin.create(NAMESPACES, {"metadata": {"name": "apps"}})
        for n in ("edge-1", "edge-2"):
            await admin.create(
                NODES, {"metadata": {"name": n, "labels": {"node-role.kubernetes.io/edge": ""}}}
            )
        for name, node in (("p1", "edge-1"), ("p2", "edge-2")):
            await admin.create(
                CONFIGMAPS, {"metadata": {"name": f"cm-{name}"}, "data": {"a": "b"}}, namespace="apps"
            )
            await admin.create(
                SECRETS, {"metadata": {"name": f"s-{name}"}, "stringData": {"k": "v"}}, namespace="apps"
            )
            await admin.create(PODS, pod(name, f"cm-{name}", f"s-{name}"), namespace="apps")
            await admin.create_subresource(
                PODS,
                name,
                "binding",
                {"metadata": {"name": name}, "target": {"kind": "Node", "name": node}},
                "apps",
            )
        await admin.create(
            SECRETS, {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}, namespace="apps"
        )
    yield {
        "edge1": KubeConfig.from_file(str(node_kubeconfig(apiserver, "edge-1", d / "e1.kubeconfig"))),
        "impostor": KubeConfig.from_file(
            str(node_kubeconfig(apiserver, "edge-1", d / "x.kubeconfig", orgs=()))
        ),
        "admin": KubeConfig.from_file(str(apiserver.kubeconfig)),
    }


async def test_node_reads_what_its_pods_reference(cluster: dict) -> None:
    async with KubeClient(cluster["edge1"]) as kc:
        assert (await kc.get(PODS, "p1", namespace="apps"))["spec"]["nodeName"] == "edge-1"
        assert (await kc.get(SECRETS, "s-p1", namespace="apps"))["data"]["k"] == "dg=="
        assert (await kc.get(CONFIGMAPS, "cm-p1", namespace="apps"))["data"] == {"a": "b"}
        items, _ = await kc.list(PODS, field_selector="spec.nodeName=edge-1")
        assert [p["metadata"]["name"] for p in items] == ["p1"]
        svcs, _ = await kc.list(SERVICES)  # the mesh on every node reads every service
        assert isinstance(svcs, list)


@pytest.mark.parametrize(
    "call",
    [
        lambda kc: kc.get(PODS, "p2", namespace="apps"),
        lambda kc: kc.get(SECRETS, "s-p2", namespace="apps"),
        lambda kc: kc.get(SECRETS, "unrelated", namespace="apps"),
        lambda kc: kc.get(CONFIGMAPS, "cm-p2", namespace="apps"),
        lambda kc: kc.list(SECRETS, namespace="apps"),
        lambda kc: kc.list(PODS),
        lambda kc: kc.list(PODS, field_selector="spec.nodeName=edge-2"),
        lambda kc: kc.get(NODES, "edge-2"),
        lambda kc: kc.patch(NODES, "edge-2", {"metadata": {"labels": {"x": "y"}}}),
        lambda kc: kc.delete(PODS, "p2", namespace="apps"),
        lambda kc: kc.create(CONFIGMAPS, {"metadata": {"name": "new"}}, namespace="apps"),
        lambda kc: kc.get(NAMESPACES, "apps"),
    ],
    ids=[
        "other-pod",
        "other-secret",
        "unreferenced-secret",
        "other-configmap",
        "list-secrets",
        "list-all-pods",
        "list-other-nodes-pods",
        "other-node",
        "patch-other-node",
        "delete-other-pod",
        "create-configmap",
        "read-namespace",
    ],
)
async def test_node_is_refused_everything_else(cluster: dict, call) -> None:
    async with KubeClient(cluster["edge1"], max_retries=0) as kc:
        with pytest.raises(Forbidden) as e:
            await call(kc)
        assert "system:node:edge-1" in e.value.message


async def test_node_writes_its_own_node_lease_and_pod_status(cluster: dict) -> None:
    async with KubeClient(cluster["edge1"]) as kc:
        node = await kc.patch(NODES, "edge-1", {"metadata": {"labels": {"seen": "yes"}}})
        assert node["metadata"]["labels"]["seen"] == "yes"
        lease = {
            "metadata": {"name": "edge-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40},
        }
        await kc.create(LEASES, lease, namespace="kube-node-lease")
        st = await kc.patch(
            PODS, "p1", {"status": {"phase": "Running"}}, namespace="apps", subresource="status"
        )
        assert st["status"]["phase"] == "Running"
        with pytest.raises(Forbidden):
            await kc.patch(PODS, "p1", {"metadata": {"labels": {"x": "y"}}}, namespace="apps")


async def test_node_access_follows_binding_changes(cluster: dict) -> None:
    """The reference graph is updated with each committed pod change, without lag."""
    async with KubeClient(cluster["admin"]) as admin, KubeClient(cluster["edge1"], max_retries=0) as kc:
        await admin.create(
            SECRETS, {"metadata": {"name": "s-p3"}, "stringData": {"k": "v"}}, namespace="apps"
        )
        await admin.create(CONFIGMAPS, {"metadata": {"name": "cm-p3"}}, namespace="apps")
        await admin.create(PODS, pod("p3", "cm-p3", "s-p3"), namespace="apps")
        with pytest.raises(Forbidden):
            await kc.get(SECRETS, "s-p3", namespace="apps")
        await admin.create_subresource(
            PODS,
            "p3",
            "binding",
            {"metadata": {"name": "p3"}, "target": {"kind": "Node", "name": "edge-1"}},
            "apps",
        )
        assert (await kc.get(SECRETS, "s-p3", namespace="apps"))["metadata"]["name"] == "s-p3"
        await admin.delete(PODS, "p3", namespace="apps", grace_period_seconds=0)
        with pytest.raises(Forbidden):
            await kc.get(SECRETS, "s-p3", namespace="apps")


async def test_certificate_without_node_group_and_anonymous_are_refused(
    cluster: dict, apiserver: ApiServerProc
) -> None:
    async with KubeClient(cluster["impostor"], max_retries=0) as kc:
        with pytest.raises(Forbidden):
            await kc.get(PODS, "p1", namespace="apps")
    anon = KubeConfig(server=apiserver.url, ca_file=str(apiserver.ca_file))
    async with KubeClient(anon, max_retries=0) as kc:
        with pytest.raises(Unauthorized):
            await kc.list(PODS)
    bad_token = KubeConfig(server=apiserver.url, ca_file=str(apiserver.ca_file), token="nope")
    async with KubeClient(bad_token, max_retries=0) as kc:
        with pytest.raises(Unauthorized):
            await kc.list(PODS)


async def test_admins_may_impersonate_a_node_and_get_its_rules_only(cluster: dict) -> None:
    as_edge1 = {"Impersonate-User": "system:node:edge-1", "Impersonate-Group": "system:nodes"}
    async with KubeClient(cluster["admin"]) as admin:
        code, _, body = await admin.exchange("GET", "/api/v1/namespaces/apps/secrets/s-p1", headers=as_edge1)
        assert code == 200 and b'"s-p1"' in body
        with pytest.raises(Forbidden, match="no relationship found"):
            await admin.exchange("GET", "/api/v1/namespaces/apps/secrets/s-p2", headers=as_edge1)
        with pytest.raises(Forbidden, match="may only read configmaps"):
            await admin.exchange(
                "POST", "/api/v1/namespaces/apps/configmaps", body=b'{"metadata":{"name":"x"}}',
                content_type="application/json", headers=as_edge1,
            )  # fmt: skip
        with pytest.raises(BadRequest, match="requires Impersonate-User"):
            await admin.exchange("GET", "/api/v1/nodes", headers={"Impersonate-Group": "system:masters"})
    async with KubeClient(cluster["edge1"]) as node:  # a node may not become an admin
        with pytest.raises(Forbidden, match="cannot impersonate"):
            await node.exchange(
                "GET", "/api/v1/namespaces/apps/secrets/s-p2",
                headers={"Impersonate-User": "admin", "Impersonate-Group": "system:masters"},
            )  # fmt: skip
