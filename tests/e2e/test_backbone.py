"""The cloud-edge backbone end to end: cloudcore and two edgecores (nodes A and B) as separate OS
processes on loopback, each edge serving its store through its MetaServer.

Proves, in order (the tests share one set of processes; each also runs alone):
1. both nodes join Ready with their Leases renewed; a Deployment pinned to A with a ConfigMap and a
   Secret volume puts the pod, ConfigMap and Secret in A's store and none of them in B's, and deleting
   them removes them at the edge;
2. changes made in the cloud while edgecore A is down (a ConfigMap update, a pod deletion) reach A on
   restart through the inventory handshake, each exactly once and nothing for unchanged objects; A's
   node status and Lease advance again in the API;
3. kill -9 of A during a burst of 1,000 pod patches: after a restart A's store equals the cloud's
   desired set, each pod at the cloud's resourceVersion;
4. garbage, an unknown operation and an oversized frame over an mTLS websocket with A's certificate
   get an error reply or a close reason while B keeps working; a token pinning another CA fails
   ``keadm join``; B's certificate presented as A is refused with 403;
5. A's node certificate cannot read B's pod or Secret through the cloud API (403)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from kubeedge.beehive import Message, encode
from kubeedge.beehive.codec import decode
from kubeedge.cloudcore.cloudhub import NODE_ID_HEADER
from kubeedge.edgecore.metamanager import CLOUD_RV_ANNOTATION
from kubeedge.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NODES,
    PODS,
    SECRETS,
    KubeClient,
    KubeConfig,
)
from kubeedge.kube.errors import Forbidden
from tests.apiserver_proc import KUBECTL, ROOT, free_port
from tests.cluster import wait_for
from tests.e2e.backbone import (
    DEADLINE_S,
    HOST,
    STARTUP_S,
    CloudCore,
    Edge,
    Proc,
    bound_pod,
    collect,
    edge_doc,
    edge_names,
    lease_renew_time,
    mtls,
    new_namespace,
    ready,
    write_config,
)

NODE_A = "edge-a"
NODE_B = "edge-b"
BURST_PODS = 20
PATCHES_PER_POD = 50
BURST_CONCURRENCY = 50
OVERSIZED_FRAME_BYTES = 9 * 1024 * 1024  # above cloudhub's default 8 MiB frame limit


@dataclass
class Cluster:
    cloud: CloudCore
    edges: dict[str, Edge] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("backbone")
    c = Cluster(CloudCore.create(base))
    try:
        c.cloud.daemon.start()
        asyncio.run(c.cloud.wait_healthy())
        for name in (NODE_A, NODE_B):
            data = base / name
            data.mkdir()
            port = free_port()
            cfg = write_config(data / "edgecore.yaml", edge_doc(c.cloud, name, data, port))
            argv = [sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg)]
            e = Edge(name, data, port, Proc(argv, base / f"{name}.log"))
            c.edges[name] = e
            e.daemon.start()
        for e in c.edges.values():
            asyncio.run(e.wait_serving())
        yield c
    finally:
        for e in c.edges.values():
            e.daemon.stop()
        c.cloud.daemon.stop()


@contextlib.asynccontextmanager
async def admin(c: Cluster) -> AsyncIterator[KubeClient]:
    async with c.cloud.admin() as kc:
        yield kc


async def kubectl_ready_nodes(c: Cluster) -> set[str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(c.cloud.kubeconfig), "get", "nodes", "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return {
        n["metadata"]["name"]
        for n in json.loads(out)["items"]
        if any(x["type"] == "Ready" and x["status"] == "True" for x in n["status"].get("conditions", []))
    }


# ---- 1. join, pinned workload, deletion ------------------------------------------------------------


async def test_two_nodes_ready_and_pinned_deployment_reaches_only_its_node(cluster: Cluster) -> None:
    a, b = cluster.edges[NODE_A], cluster.edges[NODE_B]

    async def both_ready() -> bool:
        for e in (a, b):
            assert e.daemon.alive(), f"edgecore {e.name} exited:\n{e.daemon.tail()}"
        return {NODE_A, NODE_B} <= await kubectl_ready_nodes(cluster)

    await wait_for(both_ready, deadline_s=STARTUP_S, interval=0.3, what="kubectl: both nodes Ready")
    await a.wait_serving()
    await b.wait_serving()
    async with admin(cluster) as kc:
        first = {n: await lease_renew_time(kc, n) for n in (NODE_A, NODE_B)}

        async def renewed() -> bool:
            return all([await lease_renew_time(kc, n) > first[n] for n in (NODE_A, NODE_B)])

        await wait_for(renewed, deadline_s=DEADLINE_S, what="both Leases renewed")

        ns = await new_namespace(kc, "pin")
        await kc.create(CONFIGMAPS, {"metadata": {"name": "web-config"}, "data": {"k": "v"}}, ns)
        await kc.create(SECRETS, {"metadata": {"name": "web-secret"}, "stringData": {"p": "s"}}, ns)
        labels = {"app": "web"}
        deploy = {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": NODE_A},
                        # No container runtime at this edge confirms a graceful termination: without
                        # grace the pod's deletion is immediate, as it would be after such a confirmation.
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "c", "image": "nginx"}],
                        "volumes": [
                            {"name": "cfg", "configMap": {"name": "web-config"}},
                            {"name": "sec", "secret": {"secretName": "web-secret"}},
                        ],
                    },
                },
            },
        }
        await kc.create(DEPLOYMENTS, deploy, ns)

        async def at_a() -> bool:
            pods = await edge_names(a, PODS, ns)
            return (
                len(pods) == 1
                and await edge_names(a, CONFIGMAPS, ns) == {"web-config"}
                and await edge_names(a, SECRETS, ns) == {"web-secret"}
            )

        await wait_for(at_a, deadline_s=DEADLINE_S, what="pod, ConfigMap and Secret in A's store")
        cloud_pods, _ = await kc.list(PODS, ns)
        assert [p["spec"]["nodeName"] for p in cloud_pods] == [NODE_A]
        assert await edge_names(a, PODS, ns) == {cloud_pods[0]["metadata"]["name"]}
        for res in (PODS, CONFIGMAPS, SECRETS):
            assert await edge_names(b, res, ns) == set(), res

        await kc.delete(DEPLOYMENTS, "web", ns, propagation_policy="Foreground")
        await kc.delete(CONFIGMAPS, "web-config", ns)
        await kc.delete(SECRETS, "web-secret", ns)

        async def gone_at_a() -> bool:
            left = [await edge_names(a, r, ns) for r in (PODS, CONFIGMAPS, SECRETS)]
            return not any(left)

        await wait_for(gone_at_a, deadline_s=DEADLINE_S, what="pod, ConfigMap and Secret removed at A")


# ---- 2. changes while the edge is down: the inventory handshake -----------------------------------


async def test_changes_while_edge_down_arrive_once_on_reconnect(cluster: Cluster) -> None:
    a = cluster.edges[NODE_A]
    await a.ensure_running()
    async with admin(cluster) as kc:
        ns = await new_namespace(kc, "inv")
        await kc.create(CONFIGMAPS, {"metadata": {"name": "cfg"}, "data": {"v": "1"}}, ns)
        vol = [{"name": "cfg", "configMap": {"name": "cfg"}}]
        for name in ("keep", "gone"):
            await kc.create(PODS, bound_pod(name, NODE_A, volumes=vol), ns)

        async def synced() -> bool:
            return await edge_names(a, PODS, ns) == {"keep", "gone"} and await edge_names(
                a, CONFIGMAPS, ns
            ) == {"cfg"}

        await wait_for(synced, deadline_s=DEADLINE_S, what="pods and ConfigMap at A")
        async with KubeClient(a.meta) as mc:
            _, pods_rv = await mc.list(PODS, ns)
            _, cms_rv = await mc.list(CONFIGMAPS, ns)

        assert await asyncio.to_thread(a.daemon.terminate) == 0, a.daemon.tail()
        lease_before = await lease_renew_time(kc, NODE_A)
        beat_before = ready(await kc.get(NODES, NODE_A))["lastHeartbeatTime"]
        await kc.patch(CONFIGMAPS, "cfg", {"data": {"v": "2"}}, ns)
        await kc.delete(PODS, "gone", ns)

        a.daemon.start()
        await a.wait_serving()
        pod_events: list[tuple[str, str]] = []
        cm_events: list[tuple[str, str]] = []
        watchers = [
            asyncio.create_task(collect(a, PODS, ns, pods_rv, pod_events)),
            asyncio.create_task(collect(a, CONFIGMAPS, ns, cms_rv, cm_events)),
        ]
        try:

            async def reconciled() -> bool:
                return ("DELETED", "gone") in pod_events and ("MODIFIED", "cfg") in cm_events

            await wait_for(reconciled, deadline_s=DEADLINE_S, what="the reconnect's changes at A")
            # A pod created after the reconnect is sent after the handshake's messages: once it is
            # seen, any duplicate or spurious event from the handshake would have been seen as well.
            await kc.create(PODS, bound_pod("marker", NODE_A), ns)

            async def marker() -> bool:
                return ("ADDED", "marker") in pod_events

            await wait_for(marker, deadline_s=DEADLINE_S, what="a pod created after the reconnect")
        finally:
            for t in watchers:
                t.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        assert pod_events == [("DELETED", "gone"), ("ADDED", "marker")], pod_events
        assert cm_events == [("MODIFIED", "cfg")], cm_events
        async with KubeClient(a.meta) as mc:
            assert (await mc.get(CONFIGMAPS, "cfg", ns))["data"] == {"v": "2"}

        # The restarted edge reports again: heartbeat and Lease advance past their pre-outage values.
        async def reported() -> bool:
            node = await kc.get(NODES, NODE_A)
            return bool(
                ready(node)["status"] == "True"
                and ready(node)["lastHeartbeatTime"] > beat_before
                and await lease_renew_time(kc, NODE_A) > lease_before
            )

        await wait_for(reported, deadline_s=DEADLINE_S, what="A's status and Lease after the reconnect")


# ---- 3. kill -9 during a burst ----------------------------------------------------------------------


async def test_kill9_during_burst_converges_to_cloud_state(cluster: Cluster) -> None:
    a = cluster.edges[NODE_A]
    await a.ensure_running()
    async with admin(cluster) as kc:
        ns = await new_namespace(kc, "burst")
        names = [f"p{i:02d}" for i in range(BURST_PODS)]
        for n in names:
            await kc.create(PODS, bound_pod(n, NODE_A), ns)

        async def landed() -> bool:
            return await edge_names(a, PODS, ns) == set(names)

        await wait_for(landed, deadline_s=DEADLINE_S, what="the burst's pods at A")

        gate = asyncio.Semaphore(BURST_CONCURRENCY)
        done = 0
        kill_at = BURST_PODS * PATCHES_PER_POD // 4
        killed = asyncio.Event()

        async def patch(name: str, i: int) -> None:
            nonlocal done
            body = {"metadata": {"labels": {"step": str(i)}, "annotations": {"burst/step": str(i)}}}
            async with gate:
                await kc.patch(PODS, name, body, ns)
            done += 1
            if done == kill_at:
                await asyncio.to_thread(a.daemon.kill9)
                killed.set()

        await asyncio.gather(*(patch(n, i) for i in range(PATCHES_PER_POD) for n in names))
        assert killed.is_set() and done == BURST_PODS * PATCHES_PER_POD

        a.daemon.start()
        await a.wait_serving()
        cloud_pods, _ = await kc.list(PODS, ns)
        want = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in cloud_pods}
        assert set(want) == set(names)

        async def converged() -> dict[str, str] | None:
            async with KubeClient(a.meta) as mc:
                items, _ = await mc.list(PODS, ns)
            have = {
                p["metadata"]["name"]: p["metadata"]["annotations"].get(CLOUD_RV_ANNOTATION) for p in items
            }
            return None if have != want else have

        await wait_for(converged, deadline_s=DEADLINE_S, what="A's store equal to the cloud's pods")
        async with KubeClient(a.meta) as mc:
            items, _ = await mc.list(PODS, ns)
        assert all(p["metadata"]["labels"]["step"] == str(PATCHES_PER_POD - 1) for p in items)


# ---- 4. bad input -----------------------------------------------------------------------------------


async def test_bad_input_is_refused_and_others_keep_working(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.edges[NODE_A], cluster.edges[NODE_B]
    # A's own edgecore would replace the test's session with its reconnect: take it down first.
    await a.ensure_running()
    assert await asyncio.to_thread(a.daemon.terminate) == 0, a.daemon.tail()
    url = f"wss://{HOST}:{cluster.cloud.ports['ws']}/project/{NODE_A}/events"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, ssl=mtls(a), headers={NODE_ID_HEADER: NODE_A}) as ws:
            await ws.send_str("this is not a message")
            await ws.send_str('{"header": {"msg_id": "bad-1"}, "route": 7}')
            unknown = Message.new("edged", "resource", "frobnicate", f"default/pod/{NODE_A}-x")
            await ws.send_str(encode(unknown).decode())
            errors: dict[str, str] = {}
            async with asyncio.timeout(DEADLINE_S):
                while not {"bad-1", unknown.msg_id} <= set(errors):
                    frame = await ws.receive()
                    assert frame.type is aiohttp.WSMsgType.TEXT, frame
                    msg = decode(frame.data)
                    if msg.operation == "error":
                        errors[msg.parent_msg_id] = str(msg.content)
            assert "undecodable" in errors["bad-1"]
            assert "unsupported operation frobnicate" in errors[unknown.msg_id]
            await ws.send_str("x" * OVERSIZED_FRAME_BYTES)
            async with asyncio.timeout(DEADLINE_S):
                frame = await ws.receive()
                while frame.type is aiohttp.WSMsgType.TEXT:  # anything queued before the close
                    frame = await ws.receive()
            # The close frame the server sent: 1009 (message too big) with the limit as its reason.
            assert frame.type is aiohttp.WSMsgType.CLOSE and frame.data == 1009, frame
            assert "exceeds the limit" in str(frame.extra), frame

        # B's certificate presented as A: refused before the upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, ssl=mtls(a, as_cert_of=b), headers={NODE_ID_HEADER: NODE_A})
        assert refused.value.status == 403

    async with admin(cluster) as kc:
        assert ready(await kc.get(NODES, NODE_B))["status"] == "True"
        ns = await new_namespace(kc, "still")
        await kc.create(PODS, bound_pod("after-garbage", NODE_B), ns)

        async def at_b() -> bool:
            return await edge_names(b, PODS, ns) == {"after-garbage"}

        await wait_for(at_b, deadline_s=DEADLINE_S, what="a new pod at B after A's garbage")

    # A token pinning another CA: keadm join refuses before asking for a certificate.
    token = cluster.cloud.token
    other = ("0" if token[0] != "0" else "1") * 64 + token[64:]
    argv = [
        sys.executable, "-m", "kubeedge.keadm", "join", "--detach",
        "--cloudcore-ipport", f"{HOST}:{cluster.cloud.ports['ws']}", "--certport", str(cluster.cloud.ports["https"]),
        "--edgenode-name", "edge-wrong-ca", "--token", other, "--data-dir", str(tmp_path / "wrong-ca"),
        "--set", f"modules.metaManager.metaServer.server={HOST}:{free_port()}",
    ]  # fmt: skip
    r = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "keadm gettoken" in r.stderr, r.stderr
    assert not (tmp_path / "wrong-ca" / "certs" / "server.crt").exists()


# ---- 5. node authorization --------------------------------------------------------------------------


async def test_node_certificate_cannot_read_another_nodes_objects(cluster: Cluster) -> None:
    a = cluster.edges[NODE_A]
    crt, key = a.cert
    as_a = KubeConfig(
        server=f"https://{HOST}:{cluster.cloud.ports['api']}",
        ca_file=str(a.ca),
        client_cert_file=str(crt),
        client_key_file=str(key),
    )
    async with admin(cluster) as kc:
        ns = await new_namespace(kc, "authz")
        await kc.create(SECRETS, {"metadata": {"name": "b-secret"}, "stringData": {"k": "v"}}, ns)
        vol = [{"name": "s", "secret": {"secretName": "b-secret"}}]
        await kc.create(PODS, bound_pod("b-pod", NODE_B, volumes=vol), ns)
    async with KubeClient(as_a) as node_a:
        assert (await node_a.get(NODES, NODE_A))["metadata"]["name"] == NODE_A  # authenticated as A
        with pytest.raises(Forbidden):
            await node_a.get(PODS, "b-pod", ns)
        with pytest.raises(Forbidden):
            await node_a.get(SECRETS, "b-secret", ns)


# ---- 6. MetaServer writes are forwarded to the cloud and performed as the node ------------------------


async def test_metaserver_writes_are_forwarded_as_the_node(cluster: Cluster) -> None:
    a = cluster.edges[NODE_A]
    await a.ensure_running()
    async with admin(cluster) as kc:
        ns = await new_namespace(kc, "fwd")
        await kc.create(PODS, bound_pod("fwd-pod", NODE_A), ns)

        async def pod_at_a() -> bool:
            return "fwd-pod" in await edge_names(a, PODS, ns)

        await wait_for(pod_at_a, deadline_s=DEADLINE_S, what="fwd-pod at A")

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, "--kubeconfig", "/dev/null", "--server", a.meta.server, *args],
                capture_output=True,
                text=True,
                timeout=60,
            )

        # The node's own Node: allowed by the node rules, performed in the cloud.
        r = await asyncio.to_thread(kubectl, "label", "node", NODE_A, "fwd=yes")
        assert r.returncode == 0, r.stderr
        assert (await kc.get(NODES, NODE_A))["metadata"]["labels"]["fwd"] == "yes"
        # Its own pod's status: allowed.
        async with KubeClient(a.meta) as local:
            await local.patch(
                PODS, "fwd-pod", {"status": {"conditions": [{"type": "Fwd", "status": "True"}]}}, ns,
                subresource="status",
            )  # fmt: skip
            conds = (await kc.get(PODS, "fwd-pod", ns))["status"].get("conditions") or []
            assert {"type": "Fwd", "status": "True"} in [{k: c[k] for k in ("type", "status")} for c in conds]
            # What a node may not do is refused by the cloud's API server, with its reason.
            with pytest.raises(Forbidden) as e:
                await local.create(CONFIGMAPS, {"metadata": {"name": "nope"}, "data": {}}, ns)
            assert "may only read configmaps" in str(e.value)
        # (kubectl label would GET node B first, and A's store does not hold B: patch directly.)
        async with KubeClient(a.meta) as local:
            with pytest.raises(Forbidden) as e:
                await local.patch(NODES, NODE_B, {"metadata": {"labels": {"fwd": "yes"}}})
            assert f"cannot access node '{NODE_B}'" in str(e.value)
        assert "fwd" not in ((await kc.get(NODES, NODE_B))["metadata"].get("labels") or {})
        # The change comes back down: A's store sees its own label.
        async with KubeClient(a.meta) as local:

            async def label_at_a() -> bool:
                node = await local.get(NODES, NODE_A)
                return (node["metadata"].get("labels") or {}).get("fwd") == "yes"

            await wait_for(label_at_a, deadline_s=DEADLINE_S, what="the forwarded label back at A")
