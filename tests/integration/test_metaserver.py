"""MetaServer: the edge store, filled through the real MetaManager, served read-only on loopback HTTP to
our client, the official Python client and kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from kubeedge.beehive import Message
from kubeedge.beehive.apirequest import ApiReply, ApiRequest
from kubeedge.edgecore.app import EdgeCore
from kubeedge.edgecore.config import EdgeCoreConfig, EdgeHubSection, MetaServerSection
from kubeedge.edgecore.metamanager import CLOUD_RV_ANNOTATION, MetaManager
from kubeedge.edgecore.metaserver import (
    OFFLINE_MESSAGE,
    READ_ONLY_MESSAGE,
    MetaServer,
    MetaServerConfig,
    MetaServerError,
)
from kubeedge.kube import CONFIGMAPS, LEASES, NODES, PODS, KubeClient, KubeConfig, NotFound, watch
from kubeedge.kube.types import Res
from kubeedge.store import Store

Obj = dict[str, Any]
NODE = "edge-1"
KUBECTL = str(Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[2] / ".venv")) / "bin" / "kubectl")
DEVICES = Res("devices.kubeedge.io", "v1beta1", "devices", True, "Device")


class NullLink:
    """Stands in for the edgehub: the MetaManager's ACKs go nowhere."""

    async def send(self, msg: Message) -> bool:
        return True


@dataclass
class Edge:
    store: Store
    meta: MetaManager
    server: MetaServer
    cloud_rv: int = 100

    async def apply(self, op: str, resource: str, obj: Obj | None = None) -> None:
        """One downstream message, applied (and committed) as the cloud would send it."""
        self.cloud_rv += 1
        if obj is not None:
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.cloud_rv)}}
        msg = Message.new(
            "edgecontroller", "resource", op, resource, obj, resource_version=str(self.cloud_rv)
        )
        await self.meta.apply_burst([msg])

    def kube(self) -> KubeClient:
        return KubeClient(KubeConfig(server=self.server.url))


def pod(name: str, ns: str = "default", app: str = "web", node: str = NODE, image: str = "nginx") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }


def configmap(name: str, ns: str = "default", **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"}, "data": data}


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    store = Store(tmp_path / "edgecore.db")
    await store.open()
    server = MetaServer(store, MetaServerConfig(port=0, bookmark_interval=0.2))
    await server.start()
    e = Edge(store, MetaManager(store, NullLink(), node_name=NODE), server)
    await e.apply("insert", "default/pod/web-1", pod("web-1"))
    await e.apply("insert", "default/pod/web-2", pod("web-2", node="edge-2"))
    await e.apply("insert", "kube-system/pod/dns-1", pod("dns-1", ns="kube-system", app="dns"))
    await e.apply("insert", "default/configmap/cfg", configmap("cfg", k="v1"))
    await e.apply("insert", "default/secret/s", {"metadata": {"name": "s"}, "data": {"p": "eA=="}})
    node = {"metadata": {"name": NODE, "labels": {"node-role.kubernetes.io/edge": ""}}, "status": {}}
    await e.apply("insert", f"default/node/{NODE}", node)
    lease = {"metadata": {"name": NODE, "namespace": "kube-node-lease"}, "spec": {"holderIdentity": NODE}}
    await e.apply("insert", f"kube-node-lease/lease/{NODE}", lease)
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": NODE},
    }
    await e.apply("insert", "default/device/thermo", device)
    try:
        yield e
    finally:
        await server.stop()
        await store.close()


async def until(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


# ---- configuration -------------------------------------------------------------------------------


def test_config_refuses_non_loopback_unless_explicit() -> None:
    assert MetaServerConfig.from_address("127.0.0.1:10550").port == 10550
    assert MetaServerConfig.from_address("[::1]:10550").host == "::1"
    with pytest.raises(MetaServerError, match="non-loopback"):
        MetaServerConfig.from_address("0.0.0.0:10550")
    with pytest.raises(MetaServerError, match="non-loopback"):
        MetaServerConfig(host="192.168.1.5")
    assert MetaServerConfig(host="0.0.0.0", allow_non_loopback=True).host == "0.0.0.0"
    with pytest.raises(MetaServerError, match="host>:<port"):
        MetaServerConfig.from_address("127.0.0.1")


# ---- discovery and reads -------------------------------------------------------------------------


async def test_discovery_version_healthz(edge: Edge) -> None:
    url = edge.server.url
    assert url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/healthz") as r:
            assert r.status == 200 and await r.text() == "ok"
        async with s.get(f"{url}/version") as r:
            assert (await r.json())["major"] == "1"
        async with s.get(f"{url}/api") as r:
            assert (await r.json())["versions"] == ["v1"]
        async with s.get(f"{url}/api/v1") as r:
            names = {x["name"] for x in (await r.json())["resources"]}
            assert {"pods", "configmaps", "secrets", "services", "endpoints", "nodes"} <= names
        async with s.get(f"{url}/apis") as r:
            groups = {g["name"] for g in (await r.json())["groups"]}
            assert {"coordination.k8s.io", "discovery.k8s.io", "devices.kubeedge.io"} <= groups
        agg = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        async with s.get(f"{url}/apis", headers={"Accept": agg}) as r:
            assert "APIGroupDiscoveryList" in r.headers["Content-Type"]
            assert (await r.json())["kind"] == "APIGroupDiscoveryList"


async def test_list_get_selectors_and_edge_resource_versions(edge: Edge) -> None:
    async with edge.kube() as kc:
        pods, rv = await kc.list(PODS)
        assert sorted(p["metadata"]["name"] for p in pods) == ["dns-1", "web-1", "web-2"]
        assert int(rv) == edge.store.rv
        default, _ = await kc.list(PODS, "default")
        assert sorted(p["metadata"]["name"] for p in default) == ["web-1", "web-2"]
        dns, _ = await kc.list(PODS, label_selector="app=dns")
        assert [p["metadata"]["name"] for p in dns] == ["dns-1"]
        mine, _ = await kc.list(PODS, field_selector=f"spec.nodeName={NODE}")
        assert sorted(p["metadata"]["name"] for p in mine) == ["dns-1", "web-1"]
        page, _ = await kc.list(PODS, limit=2)
        assert len(page) == 3  # our client follows continue tokens
        cm = await kc.get(CONFIGMAPS, "cfg", "default")
        assert cm["data"] == {"k": "v1"}
        # The object's resourceVersion is the edge store's revision; the cloud's is the annotation.
        stored = edge.store.get_now("configmaps", "default", "cfg")
        assert cm["metadata"]["resourceVersion"] == str(stored.rv)
        assert cm["metadata"]["annotations"][CLOUD_RV_ANNOTATION] == "104"
        assert (await kc.get(NODES, NODE))["metadata"]["name"] == NODE
        assert (await kc.get(LEASES, NODE, "kube-node-lease"))["spec"]["holderIdentity"] == NODE
        devices, _ = await kc.list(DEVICES, "default")
        assert [d["metadata"]["name"] for d in devices] == ["thermo"]
        with pytest.raises(NotFound):
            await kc.get(CONFIGMAPS, "absent", "default")


async def test_writes_refused_with_503(edge: Edge) -> None:
    url = edge.server.url
    before = edge.store.rv
    cm_url = f"{url}/api/v1/namespaces/default/configmaps"
    body = orjson.dumps(configmap("new"))
    async with aiohttp.ClientSession() as s:
        for method, target in (
            ("POST", cm_url),
            ("PUT", f"{cm_url}/cfg"),
            ("PATCH", f"{cm_url}/cfg"),
            ("DELETE", f"{cm_url}/cfg"),
            ("DELETE", cm_url),
            ("POST", f"{url}/api/v1/namespaces/default/nosuchthings"),
        ):
            headers = {
                "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"
            }
            async with s.request(method, target, data=body, headers=headers) as r:
                assert r.status == 503, (method, target)
                status = await r.json()
                assert status["kind"] == "Status" and status["code"] == 503
                assert status["reason"] == "ServiceUnavailable"
                assert status["message"] == READ_ONLY_MESSAGE
    assert edge.store.rv == before
    assert edge.store.get_now("configmaps", "default", "cfg").obj["data"] == {"k": "v1"}


# ---- watch ---------------------------------------------------------------------------------------


async def test_watch_sees_metamanager_updates_and_resumes(edge: Edge) -> None:
    async with edge.kube() as kc:
        _, rv0 = await kc.list(CONFIGMAPS, "default")
        got: list[tuple[str, str]] = []
        last_rv = rv0
        async with asyncio.timeout(10):
            stream = watch(kc, CONFIGMAPS, "default", resource_version=rv0, timeout_seconds=10)
            async with contextlib.aclosing(stream):
                # The update arrives through the MetaManager while the watch is open.
                await edge.apply("update", "default/configmap/cfg", configmap("cfg", k="v2"))
                async for ev in stream:
                    if ev.type == "BOOKMARK":
                        continue
                    got.append((ev.type, ev.object["data"]["k"]))
                    last_rv = ev.resource_version
                    break
        assert got == [("MODIFIED", "v2")]
        assert last_rv == str(edge.store.get_now("configmaps", "default", "cfg").rv)
        # Offline from the watch: a delete and a create; resuming from the last revision sees both.
        await edge.apply("delete", "default/configmap/cfg", configmap("cfg"))
        await edge.apply("insert", "default/configmap/cfg2", configmap("cfg2", k="x"))
        resumed: list[tuple[str, str]] = []
        async with asyncio.timeout(10):
            stream = watch(kc, CONFIGMAPS, "default", resource_version=last_rv, timeout_seconds=10)
            async with contextlib.aclosing(stream):
                async for ev in stream:
                    if ev.type != "BOOKMARK":
                        resumed.append((ev.type, ev.object["metadata"]["name"]))
                    if len(resumed) == 2:
                        break
        assert resumed == [("DELETED", "cfg"), ("ADDED", "cfg2")]


async def test_watch_bookmarks_and_selectors(edge: Edge) -> None:
    url = edge.server.url
    params = {"watch": "1", "allowWatchBookmarks": "true", "labelSelector": "app=web", "timeoutSeconds": "10"}
    events: list[Obj] = []
    async with aiohttp.ClientSession() as s, asyncio.timeout(10):
        async with s.get(f"{url}/api/v1/pods", params=params) as r:
            assert r.status == 200
            async for line in r.content:
                ev = orjson.loads(line)
                events.append(ev)
                if ev["type"] == "ADDED" and len([e for e in events if e["type"] == "ADDED"]) == 2:
                    # Not matching the selector: must not show up. Matching: must.
                    await edge.apply("insert", "default/pod/other", pod("other", app="db"))
                    await edge.apply("insert", "default/pod/web-3", pod("web-3"))
                if ev["type"] == "BOOKMARK" and any(
                    e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "web-3" for e in events
                ):
                    break
    names = [(e["type"], e["object"]["metadata"].get("name")) for e in events if e["type"] != "BOOKMARK"]
    assert names == [("ADDED", "web-1"), ("ADDED", "web-2"), ("ADDED", "web-3")]
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "Pod" and int(bookmark["metadata"]["resourceVersion"]) >= 1


# ---- the official Python client ------------------------------------------------------------------


async def test_official_python_client(edge: Edge) -> None:
    conf = k8s.Configuration()
    conf.host = edge.server.url

    def read() -> tuple[list[str], str, list[str]]:
        with k8s.ApiClient(conf) as api_client:
            core = k8s.CoreV1Api(api_client)
            pods = core.list_pod_for_all_namespaces(label_selector="app=web")
            cm = core.read_namespaced_config_map("cfg", "default")
            w = k8s_watch.Watch()
            seen = [
                ev["object"].metadata.name
                for ev in w.stream(core.list_namespaced_pod, "default", timeout_seconds=1)
            ]
            names = sorted(str(p.metadata.name) for p in pods.items if p.metadata is not None)
            return names, (cm.data or {})["k"], sorted(seen)

    names, value, watched = await asyncio.to_thread(read)
    assert names == ["web-1", "web-2"]
    assert value == "v1"
    assert watched == ["web-1", "web-2"]

    def write() -> int:
        with k8s.ApiClient(conf) as api_client:
            try:
                k8s.CoreV1Api(api_client).delete_namespaced_pod("web-1", "default")
            except k8s.ApiException as e:
                assert READ_ONLY_MESSAGE in (e.body or "")
                return int(e.status)
        return 0

    assert await asyncio.to_thread(write) == 503


# ---- kubectl -------------------------------------------------------------------------------------


def kubectl_args(edge: Edge, tmp: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "KUBECONFIG": str(tmp / "no-kubeconfig"), "HOME": str(tmp)}
    return [KUBECTL, "--server", edge.server.url, "--cache-dir", str(tmp / "cache"), *args], env


async def kubectl(edge: Edge, tmp: Path, *args: str) -> tuple[int, str, str]:
    argv, env = kubectl_args(edge, tmp, *args)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()[1:]]


async def test_kubectl_get_wide_and_write_refused(edge: Edge, tmp_path: Path) -> None:
    rc, out, err = await kubectl(edge, tmp_path, "get", "pods", "-A")
    assert rc == 0, err
    assert out.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "READY"]
    assert sorted((r[0], r[1]) for r in rows(out)) == [
        ("default", "web-1"),
        ("default", "web-2"),
        ("kube-system", "dns-1"),
    ]
    rc, out, err = await kubectl(edge, tmp_path, "get", "pods", "-n", "default", "-o", "wide")
    assert rc == 0, err
    assert "NODE" in out.splitlines()[0]
    wide = {r[0]: r for r in rows(out)}
    assert NODE in wide["web-1"] and "edge-2" in wide["web-2"] and "10.0.0.7" in wide["web-1"]
    rc, out, err = await kubectl(edge, tmp_path, "get", "devices", "-n", "default", "-o", "name")
    assert rc == 0, err
    assert out.strip() == "device.devices.kubeedge.io/thermo"
    rc, out, err = await kubectl(edge, tmp_path, "get", "cm", "cfg", "-n", "default", "-o", "json")
    assert rc == 0, err
    assert orjson.loads(out)["data"] == {"k": "v1"}
    rc, out, err = await kubectl(edge, tmp_path, "delete", "pod", "web-1", "-n", "default")
    assert rc != 0
    assert "read-only at the edge" in err
    assert edge.store.get_now("pods", "default", "web-1")


async def test_kubectl_watch_sees_update(edge: Edge, tmp_path: Path) -> None:
    argv, env = kubectl_args(edge, tmp_path, "get", "pods", "-n", "default", "-w")
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while len(lines) < 3:  # header + the two pods
                lines.append((await proc.stdout.readline()).decode())
            assert lines[0].split()[:2] == ["NAME", "READY"]
            assert sorted(line.split()[0] for line in lines[1:]) == ["web-1", "web-2"]
            await edge.apply("insert", "default/pod/web-9", pod("web-9"))
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "kubectl -w ended early"
                if line.split()[0] == "web-9":
                    assert "Running" in line
                    break
    finally:
        proc.kill()
        await proc.wait()


# ---- edgecore wiring -----------------------------------------------------------------------------


async def test_edgecore_refuses_a_non_loopback_metaserver_before_starting(tmp_path: Path) -> None:
    cfg = EdgeCoreConfig(
        data_dir=str(tmp_path / "edge"),
        edge_hub=EdgeHubSection(websocket_server="127.0.0.1:10000"),
        meta_server=MetaServerSection(enable=True, server="0.0.0.0:10550"),
    )
    core = EdgeCore(cfg)
    with pytest.raises(MetaServerError, match="non-loopback"):
        await core.start()
    assert core.store is None and core.metaserver is None  # nothing was opened or served


async def test_writes_forwarded_verbatim_and_refused_offline(tmp_path: Path) -> None:
    """With a forwarder (edgecore's: the cloud performs the write as the node), a write's method,
    path + query, content type and bytes (protobuf too) go through, and the cloud's answer — status
    code, type, body — comes back unchanged; an unreachable cloud is a 503 that says so."""
    seen: list[ApiRequest] = []
    online = True

    async def forward(req: ApiRequest) -> ApiReply:
        if not online:
            raise ConnectionError("the cloud is not connected")
        seen.append(req)
        return ApiReply(201, "application/json", b'{"kind":"ConfigMap","metadata":{"name":"x"}}')

    async with Store(tmp_path / "edge.db") as store:
        server = MetaServer(store, MetaServerConfig(port=0), forward=forward)
        await server.start()
        try:
            proto = b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\xff\xfe"
            async with aiohttp.ClientSession() as http:
                url = f"{server.url}/api/v1/namespaces/a/configmaps?fieldManager=me&dryRun=All"
                async with http.post(
                    url, data=proto, headers={"Content-Type": "application/vnd.kubernetes.protobuf"}
                ) as r:
                    assert r.status == 201 and (await r.json())["metadata"]["name"] == "x"
                [req] = seen
                assert (req.method, req.path) == (
                    "POST",
                    "/api/v1/namespaces/a/configmaps?fieldManager=me&dryRun=All",
                )
                assert req.content_type == "application/vnd.kubernetes.protobuf" and req.body == proto
                assert ApiRequest.from_content(req.to_content()) == req  # survives the JSON envelope
                online = False
                async with http.delete(f"{server.url}/api/v1/namespaces/a/configmaps/x") as r:
                    status = await r.json()
                    assert r.status == 503 and status["message"] == OFFLINE_MESSAGE
                async with http.get(f"{server.url}/api/v1/namespaces/a/configmaps") as r:
                    assert r.status == 200  # reads never need the cloud
        finally:
            await server.stop()
