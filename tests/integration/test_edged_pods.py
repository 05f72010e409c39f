"""Edged against a real, project-owned containerd and a real edge store: pods run, restart, fail, stop
gracefully, survive an edged restart without being restarted, and orphans go away."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from kubeedge.edgecore.edged.config import EdgedConfig
from kubeedge.edgecore.edged.cri import api
from kubeedge.edgecore.edged.manager import Edged
from kubeedge.edgecore.edged.podspec import LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID
from kubeedge.edgecore.edged.status import rfc3339
from kubeedge.store import Store
from tests.cluster import wait_for
from tests.containerd_proc import RunningContainerd, containerd_fixture, remove_all_pods, remove_cgroup

pytestmark = pytest.mark.asyncio(loop_scope="module")

containerd = containerd_fixture()

NODE = "edge-h1"
NODE_IP = "192.0.2.10"
# Sleeps until SIGTERM, then exits 0 at once (a busybox shell as PID 1 ignores TERM without a trap).
SERVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]


@dataclass
class Upstream:
    """Collects what edged queues for the cloud, in order."""

    messages: list[tuple[str, str, Any, str]] = field(default_factory=list)

    async def __call__(self, resource: str, operation: str, content: Any, group: str) -> None:
        self.messages.append((resource, operation, content, group))

    def patches(self, name: str, ns: str = "default") -> list[dict[str, Any]]:
        res = f"{ns}/podpatch/{name}"
        return [orjson.loads(c)["status"] for r, op, c, _g in self.messages if r == res and op == "patch"]

    def status(self, name: str, ns: str = "default") -> dict[str, Any]:
        """The status the cloud holds after applying every patch (top-level merge, nulls delete)."""
        out: dict[str, Any] = {}
        for p in self.patches(name, ns):
            for k, v in p.items():
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = v
        return out

    def reasons(self, name: str) -> list[str]:
        """Every waiting reason any patch reported for the pod's containers, in order."""
        out: list[str] = []
        for p in self.patches(name):
            for cs in p.get("containerStatuses") or []:
                w = (cs.get("state") or {}).get("waiting")
                if w and (not out or out[-1] != w["reason"]):
                    out.append(w["reason"])
        return out

    def final_status(self, name: str, ns: str = "default") -> dict[str, Any]:
        """The status the cloud held when the deletion confirmation arrived."""
        out: dict[str, Any] = {}
        for r, op, c, _g in self.messages:
            if r == f"{ns}/pod/{name}" and op == "delete":
                return out
            if r == f"{ns}/podpatch/{name}" and op == "patch":
                out = {**out, **orjson.loads(c)["status"]}
                out = {k: v for k, v in out.items() if v is not None}
        raise AssertionError(f"no deletion confirmation for {ns}/{name}")

    def confirmed(self, name: str, ns: str = "default") -> bool:
        return any(r == f"{ns}/pod/{name}" and op == "delete" for r, op, _c, _g in self.messages)


@dataclass
class Env:
    ctrd: RunningContainerd
    store: Store
    up: Upstream
    config: EdgedConfig
    edged: Edged
    task: asyncio.Task[None]

    async def restart_edged(self) -> None:
        await stop(self.edged, self.task)
        self.edged = Edged(self.store, self.up, self.config, cri=self.ctrd.cri)
        self.task = asyncio.create_task(self.edged.run())

    async def add(self, pod: dict[str, Any]) -> dict[str, Any]:
        md = pod["metadata"]
        rec = await self.store.create("pods", md["namespace"], md["name"], pod)
        return rec.obj


async def stop(edged: Edged, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await edged.stop()


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 5, "containers": containers, **spec},
    }


def container(e: Env, name: str = "main", command: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": e.ctrd.image.name,
        "imagePullPolicy": "IfNotPresent",
        "command": command or SERVE,
        **kw,
    }


@pytest_asyncio.fixture(loop_scope="module")
async def env(containerd: RunningContainerd, tmp_path: Path) -> AsyncIterator[Env]:
    store = Store(tmp_path / "edge.db")
    await store.open()
    cgroup = f"/kubeedge-test-h1-{uuid.uuid4().hex[:8]}"
    config = EdgedConfig(
        node_name=NODE,
        runtime_endpoint=containerd.endpoint,
        root_dir=tmp_path / "edged",
        pod_log_dir=tmp_path / "logs",
        cgroup_parent=cgroup,
        node_ip=NODE_IP,
        cluster_dns=("10.96.0.10",),
        # Short back-offs keep the restart tests quick; the doubling is what is checked.
        initial_backoff_s=1.0,
        max_backoff_s=4.0,
        sync_period_s=2.0,
        relist_period_s=0.2,
    )
    up = Upstream()
    edged = Edged(store, up, config, cri=containerd.cri)
    e = Env(containerd, store, up, config, edged, asyncio.create_task(edged.run()))
    try:
        yield e
    finally:
        await stop(e.edged, e.task)
        await remove_all_pods(containerd.cri)
        await store.close()
        remove_cgroup(cgroup)


async def phase_is(env: Env, name: str, phase: str) -> dict[str, Any]:
    st = env.up.status(name)
    return st if st.get("phase") == phase else {}


async def running_ready(env: Env, name: str) -> dict[str, Any]:
    st = env.up.status(name)
    cs = st.get("containerStatuses") or []
    ok = st.get("phase") == "Running" and cs and all(c["ready"] for c in cs)
    return st if ok else {}


async def containers_of(env: Env, uid: str) -> list[api.Container]:
    return await env.ctrd.cri.list_containers(labels={LABEL_POD_UID: uid})


async def test_pod_runs_and_reports_running_with_ip(env: Env) -> None:
    pod = await env.add(make_pod("web", [container(env, env=[{"name": "A", "value": "1"}])]))
    st = await wait_for(lambda: running_ready(env, "web"), deadline_s=30, what="web Running and Ready")
    assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network(env.ctrd.subnet)
    assert st["podIPs"] == [{"ip": st["podIP"]}] and st["hostIP"] == NODE_IP
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    (cs,) = st["containerStatuses"]
    (ctr,) = await containers_of(env, pod["metadata"]["uid"])
    assert cs["containerID"] == f"containerd://{ctr.id}" and cs["imageID"] == env.ctrd.image.config_digest
    assert cs["restartCount"] == 0 and "running" in cs["state"] and st["qosClass"] == "BestEffort"
    r = await env.ctrd.cri.exec_sync(ctr.id, ["sh", "-c", "echo $A; hostname"])
    assert r.stdout.decode().split() == ["1", "web"]
    sandboxes = await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: pod["metadata"]["uid"]})
    assert [(s.labels[LABEL_POD_NAME], s.labels[LABEL_POD_NAMESPACE]) for s in sandboxes] == [
        ("web", "default")
    ]
    # Unchanged pods are not reported again.
    sent = len(env.up.patches("web"))
    syncs = env.edged.syncs
    await wait_for(lambda: _true(env.edged.syncs > syncs + 3), deadline_s=20, what="more syncs")
    assert len(env.up.patches("web")) == sent


async def _true(v: bool) -> bool:
    return v


async def test_exiting_container_restarts_with_growing_backoff(env: Env) -> None:
    await env.add(make_pod("crash", [container(env, command=["sh", "-c", "echo run; exit 2"])]))

    async def restarted_thrice() -> dict[str, Any] | None:
        cs = (env.up.status("crash").get("containerStatuses") or [{}])[0]
        return cs if cs.get("restartCount", 0) >= 3 else None

    await wait_for(restarted_thrice, deadline_s=60, what="three restarts")
    assert CRASH in env.up.reasons("crash")
    messages = [
        cs["state"]["waiting"].get("message", "")
        for p in env.up.patches("crash")
        for cs in p.get("containerStatuses") or []
        if (cs["state"].get("waiting") or {}).get("reason") == CRASH
    ]
    # The back-off doubles: 1 s, then 2 s (then 4 s, the cap).
    assert any("back-off 1s" in m for m in messages) and any("back-off 2s" in m for m in messages)
    st = env.up.status("crash")
    assert st["phase"] == "Running"  # restartPolicy Always: a crash loop is not a terminal phase
    last = st["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (2, "Error")
    # Old runs are removed: at most the current one and the previous one remain.
    uid = next(p for p in env.edged._wanted.values() if p["metadata"]["name"] == "crash")["metadata"]["uid"]
    assert len(await containers_of(env, uid)) <= 2


CRASH = "CrashLoopBackOff"


async def test_restart_policy_never_ends_in_succeeded_or_failed(env: Env) -> None:
    await env.add(make_pod("ok", [container(env, command=["true"])], restartPolicy="Never"))
    await env.add(make_pod("bad", [container(env, command=["sh", "-c", "exit 3"])], restartPolicy="Never"))
    await env.add(make_pod("retry", [container(env, command=["true"])], restartPolicy="OnFailure"))
    st = await wait_for(lambda: phase_is(env, "ok", "Succeeded"), deadline_s=30, what="ok Succeeded")
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    st = await wait_for(lambda: phase_is(env, "bad", "Failed"), deadline_s=30, what="bad Failed")
    assert st["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    st = await wait_for(lambda: phase_is(env, "retry", "Succeeded"), deadline_s=30, what="retry Succeeded")
    assert st["containerStatuses"][0]["restartCount"] == 0
    # A finished pod gives back its sandbox (and IP) but keeps reporting its last address.
    uid = next(p for p in env.edged._wanted.values() if p["metadata"]["name"] == "ok")["metadata"]["uid"]

    async def sandbox_stopped() -> bool:
        sbs = await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: uid})
        return bool(sbs) and all(s.state == api.SANDBOX_NOTREADY for s in sbs)

    await wait_for(sandbox_stopped, deadline_s=20, what="the finished pod's sandbox stopped")
    assert env.up.status("ok")["podIP"]


async def test_init_containers_run_in_order_before_the_app(env: Env) -> None:
    work = {"name": "work", "mountPath": "/work"}
    pod = make_pod(
        "init",
        [container(env, volumeMounts=[work])],
        initContainers=[
            container(env, "first", ["sh", "-c", "echo first >> /work/order"], volumeMounts=[work]),
            container(env, "second", ["sh", "-c", "echo second >> /work/order"], volumeMounts=[work]),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    await env.add(pod)
    st = await wait_for(lambda: running_ready(env, "init"), deadline_s=30, what="init pod Running")
    assert [s["state"]["terminated"]["reason"] for s in st["initContainerStatuses"]] == ["Completed"] * 2
    main = [c for c in await containers_of(env, pod["metadata"]["uid"]) if c.metadata.name == "main"]
    r = await env.ctrd.cri.exec_sync(main[0].id, ["cat", "/work/order"])
    assert r.stdout.decode().split() == ["first", "second"]
    # A failing init container under Never fails the pod; the app never starts.
    bad = make_pod(
        "badinit",
        [container(env)],
        restartPolicy="Never",
        initContainers=[container(env, "fail", ["false"])],
    )
    await env.add(bad)
    st = await wait_for(lambda: phase_is(env, "badinit", "Failed"), deadline_s=30, what="badinit Failed")
    assert st["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    names = {c.metadata.name for c in await containers_of(env, bad["metadata"]["uid"])}
    assert names == {"fail"}


async def test_graceful_deletion_runs_prestop_and_confirms(env: Env, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    pre_stop = {"exec": {"command": ["sh", "-c", "echo bye > /host/prestop"]}}
    pod = make_pod(
        "graceful",
        [container(env, lifecycle={"preStop": pre_stop}, volumeMounts=[{"name": "h", "mountPath": "/host"}])],
        volumes=[{"name": "h", "hostPath": {"path": str(host)}}],
    )
    pod = await env.add(pod)
    uid = pod["metadata"]["uid"]
    await wait_for(lambda: running_ready(env, "graceful"), deadline_s=30, what="graceful Running")

    def deleting(cur: dict[str, Any]) -> dict[str, Any]:
        cur["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        cur["metadata"]["deletionGracePeriodSeconds"] = 10
        return cur

    await env.store.guaranteed_update("pods", "default", "graceful", deleting)
    await wait_for(lambda: _true(env.up.confirmed("graceful")), deadline_s=30, what="deletion confirmed")
    assert (host / "prestop").read_text() == "bye\n"
    # The final status went up before the confirmation: the container exited 0 on TERM, so Succeeded.
    final = env.up.final_status("graceful")
    assert final["phase"] == "Succeeded", final
    (cs,) = final["containerStatuses"]
    assert (cs["state"]["terminated"]["reason"], cs["ready"]) == ("Completed", False)
    assert await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: uid}) == []
    assert await containers_of(env, uid) == []
    assert not (env.config.root_dir / "pods" / uid).exists()
    (_resource, op, content, group) = next(m for m in env.up.messages if m[0] == "default/pod/graceful")
    assert (op, group, content["metadata"]["uid"]) == ("delete", "resource", uid)
    # The cloud then deletes it; edged's worker for it ends.
    await env.store.delete("pods", "default", "graceful")
    await wait_for(lambda: _true(uid not in env.edged._pods), deadline_s=10, what="worker gone")


async def test_grace_period_runs_from_the_deletion_request(env: Env) -> None:
    # A container that ignores SIGTERM is stopped when the API's deletionTimestamp (request + grace)
    # passes, not a whole grace period after edged heard of it: here the deletion was requested 118 s
    # of 120 ago (edged was offline, say), so the kill is due in a few seconds (the 2 s left, or the
    # 2 s minimum after SIGTERM), not in 120.
    stubborn = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    pod = await env.add(
        make_pod("late", [container(env, command=stubborn)], terminationGracePeriodSeconds=120)
    )
    await wait_for(lambda: running_ready(env, "late"), deadline_s=30, what="late Running")

    def deleting(cur: dict[str, Any]) -> dict[str, Any]:
        cur["metadata"]["deletionTimestamp"] = rfc3339(time.time() + 2)
        cur["metadata"]["deletionGracePeriodSeconds"] = 120
        return cur

    await env.store.guaranteed_update("pods", "default", "late", deleting)
    await wait_for(lambda: _true(env.up.confirmed("late")), deadline_s=30, what="deletion confirmed")
    assert await containers_of(env, pod["metadata"]["uid"]) == []
    final = env.up.final_status("late")
    (cs,) = final["containerStatuses"]
    # Killed at the end of the grace: SIGKILL's 137, so the pod Failed.
    assert (final["phase"], cs["state"]["terminated"]["exitCode"]) == ("Failed", 137), final
    await env.store.delete("pods", "default", "late")


async def test_edged_restart_adopts_running_pods_and_removes_orphans(env: Env) -> None:
    pod = await env.add(make_pod("keep", [container(env)]))
    uid = pod["metadata"]["uid"]
    await wait_for(lambda: running_ready(env, "keep"), deadline_s=30, what="keep Running")
    before = {c.id for c in await containers_of(env, uid)}
    sandboxes = {s.id for s in await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: uid})}

    # While edged is down, a pod is deleted from the store (it ran, nobody wants it any more).
    gone = await env.add(make_pod("gone", [container(env)]))
    await wait_for(lambda: running_ready(env, "gone"), deadline_s=30, what="gone Running")
    await stop(env.edged, env.task)
    await env.store.delete("pods", "default", "gone")
    # ... and something else left a sandbox of ours behind.
    orphan_uid = str(uuid.uuid4())
    orphan = await env.ctrd.cri.run_pod_sandbox(
        api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name="orphan", uid=orphan_uid, namespace="default"),
            labels={LABEL_POD_UID: orphan_uid, LABEL_POD_NAME: "orphan", LABEL_POD_NAMESPACE: "default"},
            log_directory=str(env.config.pod_log_dir / "orphan"),
        )
    )

    await env.restart_edged()

    async def orphans_gone() -> bool:
        left = await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: orphan_uid})
        left += await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: gone["metadata"]["uid"]})
        return not left

    await wait_for(orphans_gone, deadline_s=30, what="orphan sandboxes removed")
    assert orphan not in {s.id for s in await env.ctrd.cri.list_pod_sandbox()}
    await wait_for(lambda: _true(env.edged.syncs > 2), deadline_s=20, what="syncs after restart")
    assert {c.id for c in await containers_of(env, uid)} == before
    assert {s.id for s in await env.ctrd.cri.list_pod_sandbox(labels={LABEL_POD_UID: uid})} == sandboxes
    assert env.up.status("keep")["containerStatuses"][0]["restartCount"] == 0
    assert not env.up.confirmed("gone")  # already gone from the store: nothing to confirm


async def test_bad_input_shows_waiting_reasons_and_spares_other_pods(env: Env) -> None:
    await env.add(make_pod("noimage", [container(env, image="kubeedge.invalid/missing:1")]))
    await env.add(make_pod("nobinary", [container(env, command=["/no/such/binary"])]))
    await env.add(
        make_pod(
            "nocm",
            [container(env, volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])],
            volumes=[{"name": "cfg", "configMap": {"name": "settings"}}],
        )
    )
    await env.add(make_pod("fine", [container(env)]))
    await wait_for(lambda: running_ready(env, "fine"), deadline_s=30, what="fine Running")

    async def seen(name: str, *reasons: str) -> bool:
        got = env.up.reasons(name)
        return all(r in got for r in reasons)

    await wait_for(
        lambda: seen("noimage", "ErrImagePull", "ImagePullBackOff"), deadline_s=60, what="pull reasons"
    )
    await wait_for(lambda: seen("nobinary", "RunContainerError"), deadline_s=30, what="RunContainerError")
    await wait_for(lambda: seen("nocm", "CreateContainerConfigError"), deadline_s=30, what="config error")
    assert env.up.status("noimage")["phase"] == "Pending"
    # The ConfigMap arrives: the pod starts without any other nudge.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default"}}
    await env.store.create("configmaps", "default", "settings", {**cm, "data": {"k": "v"}})
    await wait_for(lambda: running_ready(env, "nocm"), deadline_s=30, what="nocm Running")
    assert await running_ready(env, "fine")
