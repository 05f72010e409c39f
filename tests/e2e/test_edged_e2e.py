"""Pods on an edge node end to end, all real: a project-owned containerd, cloudcore (embedded API and
controllers) and edgecore with edged, as OS processes; workloads go in with kubectl.

Proves (the tests share one cluster; each also runs alone):
1. a Deployment of busybox httpd serving a ConfigMap volume, with an env var from a Secret and
   readiness/liveness probes, runs Running and Ready on the edge; ``kubectl get pods -o wide`` shows
   the pod IP and the host gets the ConfigMap's file from it; scale 1 → 3 → 1; a rolling update of an
   env value replaces the pods (new ones serve the new value, old ones are gone from API and runtime);
2. an exiting container restarts with growing back-off (restartCount climbs, CrashLoopBackOff with
   10 s then 20 s); a failing liveness probe restarts a container that never exits by itself; a
   failing readiness probe makes the pod NotReady and takes its IP out of the Service's Endpoints and
   EndpointSlice (and back);
3. a ConfigMap change reaches the file mounted in the running pod;
4. bad input (missing image, missing command, missing ConfigMap) shows its waiting reason while the
   Deployment's pod keeps its container;
5. autonomy: with cloudcore stopped, edgecore killed -9 and every pod container and sandbox killed,
   edgecore alone brings every pod back from its store (seen in CRI, its MetaServer and over HTTP);
   containerd restarted under a running edgecore, with one app process killed meanwhile: that one is
   restarted, the others kept; when cloudcore returns the API converges with no pod UID changed and
   no healthy container replaced."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kubeedge.edgecore.edged.cri import api
from kubeedge.edgecore.edged.podspec import LABEL_POD_UID
from kubeedge.kube import CONFIGMAPS, ENDPOINTS, ENDPOINTSLICES, PODS, KubeClient, watch
from kubeedge.kube.errors import NotFound
from tests.cluster import wait_for
from tests.containerd_proc import check_prerequisites
from tests.e2e.backbone import new_namespace
from tests.e2e.edgedcluster import (
    NODE,
    EdgedCluster,
    container_ids,
    edged_cluster,
    running_ready,
    wait_http,
    waiting_reason,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEADLINE_S = 45.0
# edged's kubelet-like back-off: first restart at once, then 10 s, 20 s, ... (capped at 300 s).
FIRST_BACKOFFS = ("back-off 10s", "back-off 20s")
PORT = 8080
IMAGE = "kubeedge.local/busybox:latest"
# httpd as PID 1 ignores SIGTERM; the shell exits on it so that a graceful stop takes no grace period.
HTTPD = ["sh", "-c", f"trap 'exit 0' TERM; httpd -f -p {PORT} -h /www & wait"]
# busybox httpd runs executables below cgi-bin/ as CGI: how the env is checked over HTTP. Listing items
# pins the files, so a key removed from the ConfigMap would be an error, not a file removed.
CGI_ITEMS = [
    {"key": "index.html", "path": "index.html"},
    {"key": "env.cgi", "path": "cgi-bin/env", "mode": 0o755},
]
SLEEPER = "trap 'exit 0' TERM; sleep 100000 & wait"
CGI = '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "greeting=$GREETING answer=$ANSWER"\n'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EdgedCluster]:
    check_prerequisites()
    # A pod network of its own (tests.containerd_proc's scheme, another bridge prefix).
    n = int(hashlib.sha256(request.module.__name__.encode()).hexdigest(), 16)
    subnet, bridge = f"10.{200 + n % 40}.{(n >> 8) % 256}.0/24", f"kee{n % 10**8:08d}"
    async with edged_cluster(tmp_path_factory.mktemp("edged-e2e"), subnet, bridge) as c:
        yield c


# ---- manifests -------------------------------------------------------------------------------------


def site_configmap(name: str, index: str, **extra: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"index.html": index, "env.cgi": CGI, **extra},
    }


def pod_template(
    labels: dict[str, str], configmap: str, answer: str, *, cgi: bool = True, **container: Any
) -> dict[str, Any]:
    """A pod serving ``configmap`` (with its env.cgi as cgi-bin/env, or every key as a file)."""
    return {
        "metadata": {"labels": labels},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE},
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": HTTPD,
                    "ports": [{"containerPort": PORT}],
                    "env": [
                        {
                            "name": "GREETING",
                            "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "text"}},
                        },
                        {"name": "ANSWER", "value": answer},
                    ],
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 2},
                    **container,
                }
            ],
            "volumes": [
                {
                    "name": "www",
                    "configMap": {"name": configmap, "items": CGI_ITEMS} if cgi else {"name": configmap},
                }
            ],
        },
    }


def deployment(name: str, replicas: int, answer: str = "1") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template(labels, "site", answer),
        },
    }


def secret(text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "greeting"},
        "stringData": {"text": text},
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": PORT}]},
    }


def bare_pod(name: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", SLEEPER],
                    **container,
                }
            ],
        },
    }


# ---- reads -----------------------------------------------------------------------------------------


async def app_pods(kc: KubeClient, ns: str, app: str) -> list[dict[str, Any]]:
    return (await kc.list(PODS, ns, label_selector=f"app={app}"))[0]


async def wait_app_ready(kc: KubeClient, ns: str, app: str, n: int) -> list[dict[str, Any]]:
    """Exactly ``n`` pods of ``app``, all Running and Ready on the edge node, none terminating."""

    async def settled() -> list[dict[str, Any]]:
        pods = await app_pods(kc, ns, app)
        ok = len(pods) == n and all(
            running_ready(p)
            and p["spec"].get("nodeName") == NODE
            and not p["metadata"].get("deletionTimestamp")
            for p in pods
        )
        return pods if ok else []

    return await wait_for(settled, deadline_s=DEADLINE_S, what=f"{n} Ready pods of {ns}/{app}")


async def endpoint_ips(kc: KubeClient, ns: str, svc: str) -> tuple[set[str], set[str]]:
    """(ready addresses in Endpoints, ready addresses in the EndpointSlices) of ``svc``."""
    try:
        ep = await kc.get(ENDPOINTS, svc, ns)
    except NotFound:
        ep = {}
    ready = {a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []}
    slices = (await kc.list(ENDPOINTSLICES, ns, label_selector=f"kubernetes.io/service-name={svc}"))[0]
    sliced = {
        addr
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready", True)
        for addr in e.get("addresses") or []
    }
    return ready, sliced


# ---- workloads shared by several tests -------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def crash(cluster: EdgedCluster) -> tuple[str, str]:
    """A pod whose container exits at once, started early so its back-off runs while other tests do.
    Returns (namespace, resourceVersion of its creation) to watch its history from."""
    async with cluster.admin() as kc:
        ns = await new_namespace(kc, "crash")
        pod = await kc.create(PODS, bare_pod("crash", command=["sh", "-c", "exit 3"]), ns)
    return ns, str(pod["metadata"]["resourceVersion"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def web(cluster: EdgedCluster, crash: tuple[str, str]) -> str:
    """The web Deployment (1 replica) with its ConfigMap, Secret and Service, Ready; its namespace."""
    await cluster.ensure_up()
    async with cluster.admin() as kc:
        ns = await new_namespace(kc, "web")
        await cluster.apply(
            site_configmap("site", "hello v1"),
            secret("s3cret-1"),
            deployment("web", 1),
            service("web"),
            namespace=ns,
        )
        await wait_app_ready(kc, ns, "web", 1)
    return ns


# ---- 1. Deployment: serve, scale, roll ---------------------------------------------------------------


async def test_deployment_runs_ready_serves_scales_and_rolls(cluster: EdgedCluster, web: str) -> None:
    ns = web
    async with cluster.admin() as kc:
        (pod,) = await wait_app_ready(kc, ns, "web", 1)
        ip = pod["status"]["podIP"]
        wide = await cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", "--no-headers")
        assert any(
            ln.split()[0] == pod["metadata"]["name"] and ip in ln.split() and NODE in ln.split()
            for ln in wide.splitlines()
        ), wide
        # The ConfigMap's file and, through CGI, the Secret's value in the container's environment.
        assert (await wait_http(f"http://{ip}:{PORT}/", "hello v1")).strip() == "hello v1"
        env = await wait_http(f"http://{ip}:{PORT}/cgi-bin/env", "greeting=")
        assert env.strip() == "greeting=s3cret-1 answer=1", env

        await cluster.kubectl("scale", "-n", ns, "deployment/web", "--replicas=3")
        three = await wait_app_ready(kc, ns, "web", 3)
        assert len({p["status"]["podIP"] for p in three}) == 3
        for p in three:
            await wait_http(f"http://{p['status']['podIP']}:{PORT}/", "hello v1")
        await cluster.kubectl("scale", "-n", ns, "deployment/web", "--replicas=1")
        (kept,) = await wait_app_ready(kc, ns, "web", 1)
        gone = {p["metadata"]["uid"] for p in three} - {kept["metadata"]["uid"]}

        async def scaled_down_in_runtime() -> bool:
            return not gone & set(await cluster.running_containers(ns))

        await wait_for(scaled_down_in_runtime, deadline_s=DEADLINE_S, what="scaled-down pods gone from CRI")

        # Rolling update: a new env value means a new ReplicaSet; the old pod goes only after.
        old = kept["metadata"]["uid"]
        await cluster.kubectl("set", "env", "-n", ns, "deployment/web", "ANSWER=2")

        async def rolled() -> list[dict[str, Any]]:
            pods = await wait_app_ready(kc, ns, "web", 1)
            return pods if pods[0]["metadata"]["uid"] != old else []

        (new,) = await wait_for(rolled, deadline_s=DEADLINE_S, what="the rolled-out pod")
        env = await wait_http(f"http://{new['status']['podIP']}:{PORT}/cgi-bin/env", "answer=2")
        assert env.strip() == "greeting=s3cret-1 answer=2", env

        async def old_gone_from_runtime() -> bool:
            return old not in await cluster.running_containers(ns)

        await wait_for(old_gone_from_runtime, deadline_s=DEADLINE_S, what="the old pod gone from CRI")
        with pytest.raises(NotFound):
            await kc.get(PODS, kept["metadata"]["name"], ns)


# ---- 2. restarts and probes --------------------------------------------------------------------------


async def test_exiting_container_restarts_with_growing_backoff(
    cluster: EdgedCluster, crash: tuple[str, str]
) -> None:
    ns, rv = crash
    messages: list[str] = []
    counts: list[int] = []
    async with cluster.admin() as kc:
        # Replays the pod's whole history (from its creation), then follows it.
        async for ev in watch(kc, PODS, ns, resource_version=rv, timeout_seconds=90):
            if ev.type == "BOOKMARK":
                continue
            for cs in ev.object.get("status", {}).get("containerStatuses") or []:
                counts.append(int(cs.get("restartCount") or 0))
                w = (cs.get("state") or {}).get("waiting") or {}
                if w.get("reason") == "CrashLoopBackOff" and (not messages or messages[-1] != w["message"]):
                    messages.append(str(w["message"]))
            seen = [m for m in FIRST_BACKOFFS if any(m in x for x in messages)]
            if len(seen) == len(FIRST_BACKOFFS) and counts and counts[-1] >= 2:
                break
    assert counts == sorted(counts), f"restartCount went backwards: {counts}"
    assert counts and counts[-1] >= 2, counts
    # The back-off messages come in growing order: 10 s before the first restart after the first
    # exit, 20 s after the next.
    first = [next(i for i, x in enumerate(messages) if m in x) for m in FIRST_BACKOFFS]
    assert first == sorted(first), messages
    async with cluster.admin() as kc:
        pod = await kc.get(PODS, "crash", ns)
        cs = pod["status"]["containerStatuses"][0]
        assert cs["lastState"]["terminated"]["exitCode"] == 3, cs
        assert pod["status"]["phase"] == "Running" and not running_ready(pod)


async def test_failing_liveness_restarts_and_failing_readiness_leaves_endpoints(
    cluster: EdgedCluster,
) -> None:
    await cluster.ensure_up()
    async with cluster.admin() as kc:
        ns = await new_namespace(kc, "probes")
        # Liveness: healthy for 3 s, then its file is gone; the main process never exits by itself.
        live = bare_pod(
            "liveness",
            command=["sh", "-c", f"touch /tmp/alive; (sleep 3; rm /tmp/alive) & {SLEEPER}"],
            livenessProbe={"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1},
        )
        await kc.create(PODS, live, ns)
        # Readiness: a pod Ready while its ConfigMap carries ready.html.
        probe = {"httpGet": {"path": "/ready.html", "port": PORT}, "periodSeconds": 1, "failureThreshold": 1}
        gate = {
            "apiVersion": "v1",
            "kind": "Pod",
            **pod_template({"app": "gate"}, "gate", "1", cgi=False, readinessProbe=probe),
        }
        gate["metadata"]["name"] = "gate"
        await cluster.apply(
            site_configmap("gate", "gate", **{"ready.html": "ok"}),
            secret("x"),
            gate,
            service("gate"),
            namespace=ns,
        )
        (pod,) = await wait_app_ready(kc, ns, "gate", 1)
        ip = pod["status"]["podIP"]

        async def listed() -> bool:
            return (await endpoint_ips(kc, ns, "gate")) == ({ip}, {ip})

        await wait_for(listed, deadline_s=DEADLINE_S, what="the gate pod in Endpoints and EndpointSlice")
        cid = container_ids(pod)["web"]

        cm = site_configmap("gate", "gate")
        await cluster.apply(cm, namespace=ns)  # ready.html removed: the readiness GET gets 404

        async def not_ready() -> bool:
            p = await kc.get(PODS, "gate", ns)
            return not running_ready(p) and p["status"].get("phase") == "Running"

        await wait_for(not_ready, deadline_s=DEADLINE_S, what="the gate pod NotReady")

        async def dropped() -> bool:
            return (await endpoint_ips(kc, ns, "gate")) == (set(), set())

        await wait_for(dropped, deadline_s=DEADLINE_S, what="the gate pod's IP out of the endpoints")
        await cluster.apply(site_configmap("gate", "gate", **{"ready.html": "ok"}), namespace=ns)
        await wait_for(listed, deadline_s=DEADLINE_S, what="the gate pod's IP back in the endpoints")
        # Readiness never restarts anything.
        assert container_ids(await kc.get(PODS, "gate", ns))["web"] == cid

        async def restarted_by_liveness() -> dict[str, Any]:
            p = await kc.get(PODS, "liveness", ns)
            cs: dict[str, Any] = (p.get("status", {}).get("containerStatuses") or [{}])[0]
            return cs if cs.get("restartCount", 0) >= 1 and "running" in cs.get("state", {}) else {}

        cs = await wait_for(restarted_by_liveness, deadline_s=DEADLINE_S, what="a liveness restart")
        # Killed by edged (SIGTERM → the trap's exit 0, or SIGKILL), not an exit of its own.
        assert "terminated" in cs["lastState"], cs


# ---- 3. ConfigMap updates ----------------------------------------------------------------------------


async def test_configmap_change_reaches_the_mounted_file(cluster: EdgedCluster, web: str) -> None:
    ns = web
    async with cluster.admin() as kc:
        (pod,) = await wait_app_ready(kc, ns, "web", 1)
        ip = pod["status"]["podIP"]
        await wait_http(f"http://{ip}:{PORT}/", "hello v")
        await kc.patch(CONFIGMAPS, "site", {"data": {"index.html": "hello v2"}}, ns)
        assert (await wait_http(f"http://{ip}:{PORT}/", "hello v2")).strip() == "hello v2"
        # The same container serves it: a volume update is not a restart.
        assert container_ids(await kc.get(PODS, pod["metadata"]["name"], ns)) == container_ids(pod)


# ---- 4. bad input --------------------------------------------------------------------------------------


async def test_bad_input_shows_waiting_reasons_and_spares_other_pods(cluster: EdgedCluster, web: str) -> None:
    async with cluster.admin() as kc:
        (good,) = await wait_app_ready(kc, web, "web", 1)
        ns = await new_namespace(kc, "bad")
        created = await kc.create(PODS, bare_pod("noimage", image="kubeedge.local/does-not-exist:v1"), ns)
        await kc.create(PODS, bare_pod("nocmd", command=["/no/such/binary"]), ns)
        missing_cm = bare_pod("nocm", volumeMounts=[{"name": "v", "mountPath": "/v"}])
        missing_cm["spec"]["volumes"] = [{"name": "v", "configMap": {"name": "missing"}}]
        await kc.create(PODS, missing_cm, ns)
        want = {
            "noimage": {"ErrImagePull", "ImagePullBackOff"},
            "nocmd": {"RunContainerError"},
            "nocm": {"CreateContainerConfigError"},
        }
        seen: dict[str, set[str]] = {name: set() for name in want}
        # Watched, not polled: RunContainerError lasts only until the next sync turns it into
        # CrashLoopBackOff (as on a kubelet), milliseconds later.
        async with asyncio.timeout(DEADLINE_S):
            async for ev in watch(kc, PODS, ns, resource_version=created["metadata"]["resourceVersion"]):
                name = ev.object["metadata"].get("name", "")
                if ev.type != "BOOKMARK" and (reason := waiting_reason(ev.object, "c")):
                    seen[name].add(reason)
                if all(seen[n] & want[n] for n in want):
                    break
        for name in want:
            assert seen[name] <= want[name] | {"CrashLoopBackOff", "ContainerCreating"}, (name, seen)
        assert not await cluster.running_containers(ns)
        after = await kc.get(PODS, good["metadata"]["name"], web)
        assert running_ready(after) and container_ids(after) == container_ids(good)
        await wait_http(f"http://{after['status']['podIP']}:{PORT}/", "hello")


# ---- 4b. deletion ---------------------------------------------------------------------------------------


async def test_deleted_pod_shows_its_termination_before_it_goes(cluster: EdgedCluster) -> None:
    # What `kubectl get pod -w` shows: after the deletion, the pod's final status (container terminated,
    # phase Succeeded: it exits 0 on SIGTERM), then its removal.
    await cluster.ensure_up()
    async with cluster.admin() as kc:
        ns = await new_namespace(kc, "bye")
        pod = await kc.create(PODS, bare_pod("bye"), ns)
        await wait_for(lambda: _running(kc, ns, "bye"), deadline_s=DEADLINE_S, what="bye Running and Ready")
        await cluster.kubectl("delete", "pod", "bye", "-n", ns, "--wait=false")
        last: dict[str, Any] = {}
        async with asyncio.timeout(DEADLINE_S):
            async for ev in watch(kc, PODS, ns, resource_version=pod["metadata"]["resourceVersion"]):
                if ev.type == "DELETED":
                    break
                if ev.type == "MODIFIED":
                    last = ev.object
        status = last.get("status") or {}
        (cs,) = status.get("containerStatuses") or [{}]
        assert status.get("phase") == "Succeeded", status
        assert (cs.get("state") or {}).get("terminated", {}).get("reason") == "Completed", cs
        assert not cs.get("ready")


async def _running(kc: KubeClient, ns: str, name: str) -> bool:
    return running_ready(await kc.get(PODS, name, ns))


# ---- 5. autonomy ---------------------------------------------------------------------------------------


async def test_offline_restart_runs_every_pod_and_the_cloud_return_replaces_nothing(
    cluster: EdgedCluster,
) -> None:
    await cluster.ensure_up()
    async with cluster.admin() as kc:
        ns = await new_namespace(kc, "auto")
        await cluster.apply(
            site_configmap("site", "autonomous"), secret("offline"), deployment("auto", 3), namespace=ns
        )
        before = {
            p["metadata"]["uid"]: p["metadata"]["name"] for p in await wait_app_ready(kc, ns, "auto", 3)
        }

    # Cloud gone; then a power cut at the edge: edgecore and every pod container and sandbox killed.
    cluster.cloud.daemon.terminate()
    cluster.edge.daemon.kill9()
    assert await cluster.kill_all_pods() > 0
    assert not await cluster.running_containers()
    cluster.edge.daemon.start()
    await cluster.edge.wait_serving()

    async def all_running() -> dict[str, dict[str, str]]:
        run = await cluster.running_containers(ns)
        return run if set(run) == set(before) and all("web" in c for c in run.values()) else {}

    offline = await wait_for(all_running, deadline_s=DEADLINE_S, what="every auto pod running offline")
    async with cluster.meta() as meta:
        names = {p["metadata"]["uid"]: p["metadata"]["name"] for p in (await meta.list(PODS, ns))[0]}
    assert names == before
    ips: dict[str, str] = {}
    for sb in await cluster.cri.list_pod_sandbox(state=api.SANDBOX_READY):
        if (uid := sb.labels.get(LABEL_POD_UID, "")) in before:
            ips[uid] = (await cluster.cri.pod_sandbox_status(sb.id)).status.network.ip
            await wait_http(f"http://{ips[uid]}:{PORT}/", "autonomous")
    assert set(ips) == set(before)

    # The edge's own view while the cloud is away: the MetaServer shows the new pod IPs and Running
    # (what EdgeMesh resolves and proxies to), not the cloud's last word.
    async def meta_shows_new_ips() -> bool:
        async with cluster.meta() as meta:
            pods = (await meta.list(PODS, ns))[0]
        return {p["metadata"]["uid"]: (p.get("status") or {}).get("podIP") for p in pods} == ips and all(
            running_ready(p) for p in pods
        )

    await wait_for(meta_shows_new_ips, deadline_s=DEADLINE_S, what="the MetaServer showing the new pod IPs")

    # The runtime restarts under a running edgecore, and one app process dies while it is down: the
    # pods' shims outlive containerd; edged keeps the live containers and restarts the dead one.
    victim_uid = sorted(offline)[0]
    victim = offline[victim_uid]["web"]
    info = json.loads((await cluster.cri.container_status(victim, verbose=True)).info["info"])
    await cluster.containerd.stop()
    os.kill(int(info["pid"]), signal.SIGKILL)
    await cluster.containerd.start()

    async def recovered() -> dict[str, dict[str, str]]:
        run = await cluster.running_containers(ns)
        return run if set(run) == set(before) and all("web" in c for c in run.values()) else {}

    after_runtime = await wait_for(
        recovered, deadline_s=DEADLINE_S, what="every pod running after containerd"
    )
    assert after_runtime[victim_uid]["web"] != victim
    assert {u: c for u, c in after_runtime.items() if u != victim_uid} == {
        u: c for u, c in offline.items() if u != victim_uid
    }
    assert cluster.edge.daemon.alive(), cluster.edge.daemon.tail()

    # The cloud returns: statuses converge on what runs, nothing is recreated or restarted.
    await cluster.cloud.ensure_running()
    async with cluster.admin() as kc:

        async def converged() -> bool:
            pods = await app_pods(kc, ns, "auto")
            return {p["metadata"]["uid"] for p in pods} == set(before) and all(
                running_ready(p)
                and container_ids(p) == after_runtime[p["metadata"]["uid"]]
                and p["status"]["podIP"] == ips[p["metadata"]["uid"]]
                for p in pods
            )

        await wait_for(converged, deadline_s=DEADLINE_S, what="API statuses matching the offline containers")
    assert await cluster.running_containers(ns) == after_runtime
