"""Cloud outages, link cuts and certificate rotation end to end, with real processes on loopback: the
API server (with controllers) as its own process, cloudcore pointed at it through a kubeconfig, and
edgecore A joined to that cloudcore.

1. cloudcore stopped (SIGTERM, and separately kill -9) while A keeps serving its MetaServer: list,
   get and new watches work, the earlier watch stays open; the cloud's changes meanwhile (a ConfigMap
   update, deletes of a pod and a Secret, a new pod) arrive after the restart through the inventory
   handshake, each exactly once and nothing for unchanged objects; the status and Lease A wrote while
   cut off reach the API.
2. the link cut mid-stream: A dials through a relay owned by the test, which resets both sides while a
   burst of 300 changes flows and refuses connections for a while; afterwards A's store equals the
   cloud's pods (names and cloud resourceVersions) and A's watch saw no version go backwards, nothing
   twice and no deletion of a pod that still exists.
3. certificate rotation: a cloudcore issuing 15-second node certificates and an edge checking every
   second; with its token removed, the edge renews before expiry with its current certificate, keeps
   receiving pods, and connects again after a restart once the join certificate has expired (which the
   cloud then refuses); another node's certificate cannot renew this node's."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import sqlite3
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from kubeedge.cloudcore.cloudhub import NODE_ID_HEADER
from kubeedge.edgecore.metamanager import CLOUD_RV_ANNOTATION
from kubeedge.kube import CONFIGMAPS, NODES, PODS, SECRETS, KubeClient, KubeConfig, Res, watch
from kubeedge.kube.errors import NotFound
from kubeedge.pki import client
from tests.apiserver_proc import ApiServerProc, free_port
from tests.cluster import wait_for
from tests.e2e.backbone import (
    DEADLINE_S,
    HOST,
    CloudCore,
    Edge,
    Proc,
    bound_pod,
    edge_doc,
    edge_names,
    lease_renew_time,
    new_namespace,
    ready,
    write_config,
)

NODE_A = "edge-a"
NODE_ROT = "edge-rot"
# A watch outlives every test; the server ends it after this.
WATCH_S = 120
BURST_OPS = 300
BURST_PODS = 30
BURST_CONCURRENCY = 20
# Watch events A must have seen before the relay cuts the link: the burst is flowing.
CUT_AFTER_EVENTS = 40
# Connection attempts the relay refuses before letting A back in (A keeps dialling while cut off).
REFUSE_ATTEMPTS = 2
RELAY_READ = 64 * 1024
CERT_LIFE_S = 30.0  # long enough for join + restart on a loaded 2-core machine


def _new_edge(base: Path, name: str, doc: dict[str, Any], *extra: str) -> Edge:
    data = Path(doc["dataDir"])
    cfg = write_config(data / "edgecore.yaml", doc)
    argv = [sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg), *extra]
    port = int(doc["modules"]["metaManager"]["metaServer"]["server"].rpartition(":")[2])
    return Edge(name, data, port, Proc(argv, base / f"{name}.log"))


@dataclass
class Outage:
    cloud: CloudCore
    a: Edge
    base_argv: list[str]

    async def restart_a(self, *extra: str) -> None:
        """A fresh edgecore A (optionally with ``--set`` overrides): its reconnect backoff starts over,
        so each test's outage is bridged by the first few short delays."""
        a = self.a
        if a.daemon.alive():
            assert await asyncio.to_thread(a.daemon.terminate) == 0, a.daemon.tail()
        a.daemon = Proc([*self.base_argv, *extra], a.daemon.log)
        a.daemon.start()
        await a.wait_serving()


@pytest.fixture(scope="module")
def outage(apiserver: ApiServerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    base = tmp_path_factory.mktemp("outage")
    cloud = CloudCore.create(base, kube_config=apiserver.kubeconfig)
    edge: Edge | None = None
    try:
        cloud.daemon.start()
        asyncio.run(cloud.wait_healthy())
        data = base / NODE_A
        data.mkdir()
        edge = _new_edge(base, NODE_A, edge_doc(cloud, NODE_A, data, free_port()))
        yield Outage(cloud, edge, list(edge.daemon.argv))
    finally:
        if edge is not None:
            edge.daemon.stop()
        cloud.daemon.stop()


@contextlib.asynccontextmanager
async def api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.from_file(str(kubeconfig))) as kc:
        yield kc


# ---- watching A's MetaServer ------------------------------------------------------------------------


@dataclass
class Watcher:
    """One watch request on an edge's MetaServer, recording (type, name, cloud resourceVersion)."""

    edge: Edge
    res: Res
    ns: str
    rv: str
    events: list[tuple[str, str, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Watcher:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async with KubeClient(self.edge.meta) as kc:
            async for ev in watch(kc, self.res, self.ns, resource_version=self.rv, timeout_seconds=WATCH_S):
                if ev.type == "BOOKMARK":
                    continue
                md = ev.object["metadata"]
                cloud_rv = int((md.get("annotations") or {}).get(CLOUD_RV_ANNOTATION, "0"))
                self.events.append((ev.type, md["name"], cloud_rv))

    @property
    def open(self) -> bool:
        return self.task is not None and not self.task.done()

    def counts(self) -> collections.Counter[tuple[str, str]]:
        return collections.Counter((t, n) for t, n, _ in self.events)

    def saw(self, type_: str, name: str) -> bool:
        return any(t == type_ and n == name for t, n, _ in self.events)

    async def stop(self) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # a watch that ended early shows why
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def watch_from_now(e: Edge, res: Res, ns: str) -> Watcher:
    async with KubeClient(e.meta) as kc:
        _, rv = await kc.list(res, ns)
    return Watcher(e, res, ns, rv).start()


# ---- what the edge wrote while cut off ------------------------------------------------------------


def offline_reports(e: Edge) -> tuple[str, str]:
    """(Lease renewTime, Ready heartbeat) of the reports waiting in A's persisted upstream queue."""
    conn = sqlite3.connect(f"file:{e.data_dir / 'upstream.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT resource, content FROM upstream").fetchall()
    finally:
        conn.close()
    renew, beat = "", ""
    for resource, content in rows:
        body = json.loads(content)
        if resource == f"kube-node-lease/lease/{e.name}":
            renew = str(body["spec"]["renewTime"])
        elif resource in (f"null/nodepatch/{e.name}", f"null/node/{e.name}"):
            node = json.loads(body) if isinstance(body, str) else body  # a nodepatch is a JSON string
            beat = max(beat, ready(node)["lastHeartbeatTime"])
    return renew, beat


# ---- 1. cloudcore outage ----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_how", ["SIGTERM", "SIGKILL"])
async def test_cloudcore_outage_edge_serves_and_converges_once(outage: Outage, stop_how: str) -> None:
    cloud, a = outage.cloud, outage.a
    if not cloud.daemon.alive():  # each test may run alone
        cloud.daemon.start()
    await cloud.wait_healthy()
    await outage.restart_a()
    async with api(cloud.kubeconfig) as kc:
        ns = await new_namespace(kc, "outage")
        await kc.create(CONFIGMAPS, {"metadata": {"name": "cfg"}, "data": {"v": "1"}}, ns)
        await kc.create(CONFIGMAPS, {"metadata": {"name": "same"}, "data": {"v": "1"}}, ns)
        for s in ("sec-keep", "sec-gone"):
            await kc.create(SECRETS, {"metadata": {"name": s}, "stringData": {"k": s}}, ns)
        vols = [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "same", "configMap": {"name": "same"}},
            {"name": "sk", "secret": {"secretName": "sec-keep"}},
            {"name": "sg", "secret": {"secretName": "sec-gone"}},
        ]
        await kc.create(PODS, bound_pod("keep", NODE_A, volumes=vols), ns)
        await kc.create(PODS, bound_pod("gone", NODE_A), ns)
        want_before = {
            PODS: {"keep", "gone"},
            CONFIGMAPS: {"cfg", "same"},
            SECRETS: {"sec-keep", "sec-gone"},
        }

        async def synced() -> bool:
            return all([await edge_names(a, r, ns) == names for r, names in want_before.items()])

        await wait_for(synced, deadline_s=DEADLINE_S, what="pods, ConfigMaps and Secrets at A")
        watchers = {r: await watch_from_now(a, r, ns) for r in (PODS, CONFIGMAPS, SECRETS)}
        during: Watcher | None = None
        try:
            if stop_how == "SIGTERM":
                assert await asyncio.to_thread(cloud.daemon.terminate) == 0, cloud.daemon.tail()
            else:
                await asyncio.to_thread(cloud.daemon.kill9)
            lease_before = await lease_renew_time(kc, NODE_A)
            beat_before = ready(await kc.get(NODES, NODE_A))["lastHeartbeatTime"]

            # ---- the outage: A's MetaServer answers from its store; the API moves on without A.
            async with KubeClient(a.meta) as mc:
                assert {p["metadata"]["name"] for p in (await mc.list(PODS, ns))[0]} == {"keep", "gone"}
                assert (await mc.get(CONFIGMAPS, "cfg", ns))["data"] == {"v": "1"}
                assert (await mc.get(SECRETS, "sec-gone", ns))["metadata"]["name"] == "sec-gone"
            during = await watch_from_now(a, PODS, ns)
            await kc.patch(CONFIGMAPS, "cfg", {"data": {"v": "2"}}, ns)
            await kc.delete(PODS, "gone", ns)
            await kc.delete(SECRETS, "sec-gone", ns)
            await kc.create(PODS, bound_pod("new", NODE_A), ns)

            async def reported_offline() -> tuple[str, str] | None:
                renew, beat = await asyncio.to_thread(offline_reports, a)
                return (renew, beat) if renew > lease_before and beat > beat_before else None

            offline = await wait_for(
                reported_offline, deadline_s=DEADLINE_S, what="A's Lease and status queued while cut off"
            )
            assert offline is not None
            # A local app's write needs the cloud: refused with a 503 that says so (reads go on).
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{a.meta.server}/api/v1/namespaces/{ns}/events",
                    json={
                        "metadata": {"name": "offline-write"},
                        "involvedObject": {"kind": "Pod", "name": "keep"},
                    },
                ) as resp,
            ):
                status = await resp.json()
            assert resp.status == 503 and "cloud is unreachable" in status["message"], status
            assert all(w.open for w in watchers.values()) and during.open
            assert await edge_names(a, PODS, ns) == {"keep", "gone"}  # nothing can have arrived
            assert not any(w.events for w in watchers.values()), {
                r.plural: w.events for r, w in watchers.items()
            }

            # ---- back: the inventory handshake delivers exactly the difference.
            cloud.daemon.start()
            await cloud.wait_healthy()

            async def converged() -> bool:
                return (
                    watchers[PODS].saw("DELETED", "gone")
                    and watchers[PODS].saw("ADDED", "new")
                    and watchers[CONFIGMAPS].saw("MODIFIED", "cfg")
                    and watchers[SECRETS].saw("DELETED", "sec-gone")
                )

            await wait_for(converged, deadline_s=DEADLINE_S, what="the outage's changes at A")
            # A pod created now is sent after the handshake's answer: once A has it, any duplicate
            # or spurious event from the handshake would have been seen too.
            await kc.create(PODS, bound_pod("marker", NODE_A), ns)

            async def marker() -> bool:
                return watchers[PODS].saw("ADDED", "marker") and during.saw("ADDED", "marker")

            await wait_for(marker, deadline_s=DEADLINE_S, what="a pod created after the reconnect")
            assert all(w.open for w in watchers.values()) and during.open, "a MetaServer watch ended"
        finally:
            for w in [*watchers.values(), *([during] if during else [])]:
                await w.stop()

        once = {("DELETED", "gone"): 1, ("ADDED", "new"): 1, ("ADDED", "marker"): 1}
        assert watchers[PODS].counts() == once, watchers[PODS].events
        assert watchers[PODS].events[-1][:2] == ("ADDED", "marker"), watchers[PODS].events
        assert during.counts() == once, during.events
        assert watchers[CONFIGMAPS].counts() == {("MODIFIED", "cfg"): 1}, watchers[CONFIGMAPS].events
        assert watchers[SECRETS].counts() == {("DELETED", "sec-gone"): 1}, watchers[SECRETS].events
        async with KubeClient(a.meta) as mc:
            assert (await mc.get(CONFIGMAPS, "cfg", ns))["data"] == {"v": "2"}
            with pytest.raises(NotFound):
                await mc.get(SECRETS, "sec-gone", ns)

        # What A wrote while cut off reached the API (or was overtaken by a later report).
        renew_off, beat_off = offline

        async def reached() -> bool:
            node = await kc.get(NODES, NODE_A)
            return bool(
                ready(node)["status"] == "True"
                and ready(node)["lastHeartbeatTime"] >= beat_off
                and await lease_renew_time(kc, NODE_A) >= renew_off
            )

        await wait_for(reached, deadline_s=DEADLINE_S, what="A's offline Lease and status in the API")


# ---- 2. link cut mid-stream -------------------------------------------------------------------------


class Relay:
    """A TCP relay between edgecore and cloudhub that the test can cut: ``cut`` resets both sides of
    every live connection and refuses (resets) new ones until ``restore``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.refusing = False
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(RELAY_READ):
                dst.write(data)
                await dst.drain()  # the relay buffers no more than one read per direction
        dst.transport.abort()  # either side ending ends the relayed connection

    def cut(self) -> int:
        self.refusing = True
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()
        return len(self._pairs)

    def restore(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _burst_ops() -> list[tuple[str, str, int]]:
    """(verb, pod, step): patches of p00..p19, deletes of p20..p29, creates of n00..n09, interleaved."""
    ops: list[tuple[str, str, int]] = []
    for i in range(BURST_OPS):
        if i % 30 == 7:
            ops.append(("delete", f"p{20 + i // 30:02d}", i))
        elif i % 30 == 22:
            ops.append(("create", f"n{i // 30:02d}", i))
        else:
            ops.append(("patch", f"p{i % 20:02d}", i))
    return ops


async def test_link_cut_mid_stream_converges_without_going_backwards(outage: Outage) -> None:
    cloud, a = outage.cloud, outage.a
    if not cloud.daemon.alive():
        cloud.daemon.start()
    await cloud.wait_healthy()
    relay = Relay((HOST, cloud.ports["ws"]))
    port = await relay.start()
    try:
        await outage.restart_a(f"--set=modules.edgeHub.websocket.server={HOST}:{port}")
        async with api(cloud.kubeconfig) as kc:
            ns = await new_namespace(kc, "cut")
            names = [f"p{i:02d}" for i in range(BURST_PODS)]
            for n in names:
                await kc.create(PODS, bound_pod(n, NODE_A), ns)

            async def landed() -> bool:
                return await edge_names(a, PODS, ns) == set(names)

            await wait_for(landed, deadline_s=DEADLINE_S, what="the burst's pods at A (through the relay)")
            assert relay.accepted >= 1
            w = await watch_from_now(a, PODS, ns)
            gate = asyncio.Semaphore(BURST_CONCURRENCY)
            deleted: set[str] = set()

            async def one(verb: str, name: str, step: int) -> None:
                async with gate:
                    if verb == "patch":
                        await kc.patch(PODS, name, {"metadata": {"labels": {"step": str(step)}}}, ns)
                    elif verb == "delete":
                        await kc.delete(PODS, name, ns)
                        deleted.add(name)
                    else:
                        await kc.create(PODS, bound_pod(name, NODE_A), ns)

            burst = asyncio.ensure_future(asyncio.gather(*(one(*op) for op in _burst_ops())))
            try:

                async def flowing() -> bool:
                    assert not burst.done() or burst.exception() is None
                    return len(w.events) >= CUT_AFTER_EVENTS

                await wait_for(flowing, deadline_s=DEADLINE_S, interval=0.01, what="the burst reaching A")
                assert relay.cut() >= 1, "no live connection to cut"
                assert not burst.done(), "the burst finished before the cut: not mid-stream"
                seen_at_cut = len(w.events)

                async def held() -> bool:
                    return relay.refused >= REFUSE_ATTEMPTS and burst.done()

                await wait_for(held, deadline_s=DEADLINE_S, what="A refused while the burst finishes")
                relay.restore()
                await burst
            finally:
                if not burst.done():
                    burst.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await burst

            cloud_pods, _ = await kc.list(PODS, ns)
            want = {p["metadata"]["name"]: int(p["metadata"]["resourceVersion"]) for p in cloud_pods}
            assert set(want) == (set(names) - deleted) | {f"n{i:02d}" for i in range(BURST_OPS // 30)}

            async def converged() -> bool:
                async with KubeClient(a.meta) as mc:
                    items, _ = await mc.list(PODS, ns)
                have = {
                    p["metadata"]["name"]: int(p["metadata"]["annotations"][CLOUD_RV_ANNOTATION])
                    for p in items
                }
                return have == want

            try:
                await wait_for(converged, deadline_s=DEADLINE_S, what="A's store equal to the cloud's pods")
                assert w.open, "the MetaServer watch ended"
            finally:
                await w.stop()
        assert relay.accepted >= 2, "A never reconnected through the relay"
        assert len(w.events) > seen_at_cut, "nothing arrived after the cut"

        # The watch, object by object: versions only go forward, each version once, a pod deleted in
        # the cloud is deleted once and last, and a pod that exists is never deleted.
        per_name: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
        for t, n, rv in w.events:
            per_name[n].append((t, rv))
        for n, evs in per_name.items():
            versions = [rv for t, rv in evs if t != "DELETED"]
            assert versions == sorted(set(versions)), f"{n}: versions went backwards or repeated: {evs}"
            dels = [i for i, (t, _) in enumerate(evs) if t == "DELETED"]
            if n in want:
                assert not dels, f"{n} still exists in the cloud but A's watch saw it deleted: {evs}"
                assert versions[-1] == want[n], f"{n}: last version seen {evs[-1]}, cloud has {want[n]}"
            else:
                assert dels == [len(evs) - 1], f"{n} deleted in the cloud: expected one final DELETED: {evs}"
        assert set(per_name) >= deleted | {f"n{i:02d}" for i in range(BURST_OPS // 30)}
    finally:
        await relay.close()


# ---- 3. certificate rotation ------------------------------------------------------------------------


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):  # not there yet, or caught mid-write
        return None


async def test_certificate_rotates_before_expiry_and_survives_restart(tmp_path: Path) -> None:
    cloud = CloudCore.create(
        tmp_path, extra={"modules": {"cloudHub": {"edgeCertSigningDuration": CERT_LIFE_S / 86400}}}
    )
    data = tmp_path / NODE_ROT
    data.mkdir()
    edge: Edge | None = None
    try:
        cloud.daemon.start()
        await cloud.wait_healthy()
        doc = edge_doc(cloud, NODE_ROT, data, free_port())
        # Join with the token, rotation off: the join certificate is the one that must be renewed.
        doc["modules"]["edgeHub"]["rotateCertificates"] = False
        edge = _new_edge(tmp_path, NODE_ROT, doc)
        edge.daemon.start()
        await edge.wait_serving()
        crt, key = edge.cert
        ca_pem = edge.ca.read_bytes()
        async with api(cloud.kubeconfig) as kc:
            ns = await new_namespace(kc, "rot")

            async def arrives(pod: str) -> None:
                await kc.create(PODS, bound_pod(pod, NODE_ROT), ns)

                async def there() -> bool:
                    assert edge is not None and edge.daemon.alive(), edge and edge.daemon.tail()
                    return pod in await edge_names(edge, PODS, ns)

                await wait_for(there, deadline_s=DEADLINE_S, what=f"pod {pod} at {NODE_ROT}")

            await arrives("joined")
            join_cert = _read_cert(crt)
            assert join_cert is not None
            join_pem, join_key = crt.read_bytes(), key.read_bytes()
            expires = join_cert.not_valid_after_utc
            assert expires - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=CERT_LIFE_S)

            # No token any more: only the current certificate can authenticate a renewal.
            assert await asyncio.to_thread(edge.daemon.terminate) == 0, edge.daemon.tail()
            del doc["modules"]["edgeHub"]["token"]
            doc["modules"]["edgeHub"]["rotateCertificates"] = True
            doc["modules"]["edgeHub"]["rotationCheckInterval"] = 1
            write_config(data / "edgecore.yaml", doc)
            edge.daemon.start()
            await edge.wait_serving()

            async def rotated() -> x509.Certificate | None:
                cur = _read_cert(crt)
                return cur if cur is not None and cur.serial_number != join_cert.serial_number else None

            new = await wait_for(rotated, deadline_s=CERT_LIFE_S, interval=0.1, what="a renewed certificate")
            assert new is not None
            assert dt.datetime.now(dt.UTC) < expires, "renewed only after the join certificate expired"
            # Whole seconds: a renewal within the join's second has the same notAfter (node certificates
            # are backdated 5 minutes, so a 30 s one is due for renewal at once).
            assert new.not_valid_after_utc >= expires
            assert key.read_bytes() != join_key, "the renewal kept the old key"
            await arrives("after-rotation")  # the websocket still delivers

            # Another node's valid certificate cannot renew this node's.
            other = await client.request_certificate(
                HOST, cloud.ports["https"], ca_pem, cloud.token, "edge-other"
            )
            with pytest.raises(client.CertificateRefused, match=f"cannot renew '{NODE_ROT}'") as refused:
                await client.rotate_certificate(HOST, cloud.ports["https"], ca_pem, other, NODE_ROT)
            assert refused.value.status == 403

            # Once the join certificate has expired the cloud refuses it, while a valid one gets in.
            async def join_cert_expired() -> bool:
                return dt.datetime.now(dt.UTC) > expires + dt.timedelta(seconds=1)

            await wait_for(
                join_cert_expired, deadline_s=CERT_LIFE_S + 5, what="the join certificate's expiry"
            )
            old = tmp_path / "join"
            old.mkdir()
            (old / "c.crt").write_bytes(join_pem)
            (old / "c.key").write_bytes(join_key)
            url = f"wss://{HOST}:{cloud.ports['ws']}/project/{NODE_ROT}/events"
            async with aiohttp.ClientSession() as http:
                # ``other`` has expired by now too: a fresh certificate for the control connection.
                fresh = await client.request_certificate(
                    HOST, cloud.ports["https"], ca_pem, cloud.token, "edge-other"
                )
                (old / "o.crt").write_bytes(fresh.cert_pem)
                (old / "o.key").write_bytes(fresh.key_pem)
                ok_ctx = ssl.create_default_context(cadata=ca_pem.decode())
                ok_ctx.load_cert_chain(str(old / "o.crt"), str(old / "o.key"))
                async with http.ws_connect(url, ssl=ok_ctx, headers={NODE_ID_HEADER: "edge-other"}) as ws:
                    assert not ws.closed
                old_ctx = ssl.create_default_context(cadata=ca_pem.decode())
                old_ctx.load_cert_chain(str(old / "c.crt"), str(old / "c.key"))
                with pytest.raises(aiohttp.ClientError):
                    await http.ws_connect(url, ssl=old_ctx, headers={NODE_ID_HEADER: NODE_ROT})

            # A restart dials with what is on disk: the renewed certificate, or the edge stays out.
            assert await asyncio.to_thread(edge.daemon.terminate) == 0, edge.daemon.tail()
            edge.daemon.start()
            await edge.wait_serving()
            await arrives("after-restart")
            on_disk = _read_cert(crt)
            assert on_disk is not None and on_disk.serial_number != join_cert.serial_number
            assert on_disk.not_valid_after_utc > dt.datetime.now(dt.UTC)
            assert "certificate rotation failed" not in edge.daemon.tail()
    finally:
        if edge is not None:
            edge.daemon.stop()
        cloud.daemon.stop()
