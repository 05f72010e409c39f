"""Deployments and ReplicaSets against a real API server, driven with kubectl.

Nobody runs containers here, so `FakeKubelet` (a test double for the absent edge agent) marks every
pod of a namespace Running and Ready (once bound, when the scheduler runs) and finishes graceful
deletions; it also samples the pods at every change so rollout invariants can be checked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeedge.controllers.manager import CONTROLLERS
from kubeedge.kube import DEPLOYMENTS, NAMESPACES, PODS, REPLICASETS, KubeClient, ListWatch, load_kubeconfig
from kubeedge.kube.errors import NotFound
from tests.apiserver_proc import ROOT, ApiServerProc
from tests.cluster import condition_true, now_micro, register_node, wait_for

Obj = dict[str, Any]

HAVE_SCHEDULER = "scheduler" in CONTROLLERS
HAVE_GC = "garbagecollector" in CONTROLLERS
NODES = ["dn-1", "dn-2", "dn-3"]
REVISION = "deployment.kubernetes.io/revision"


def _controllers(*extra: str) -> str:
    names = ["replicaset", "deployment"]
    if HAVE_SCHEDULER:
        names.append("scheduler")
    names += [e for e in extra if e in CONTROLLERS]
    return ",".join(names)


# ---- the fake kubelet ---------------------------------------------------------------------------


is_ready = condition_true


def terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def image_of(pod: Obj) -> str:
    return str(pod["spec"]["containers"][0]["image"])


class FakeKubelet:
    """Marks pods Running+Ready, deletes terminating pods with grace 0, and records for every pod
    change the number of live (non-terminating) pods and of ready live pods while `sampling`."""

    def __init__(self, kc: KubeClient, ns: str) -> None:
        self.kc = kc
        self.ns = ns
        self.pods: dict[str, Obj] = {}
        self.sampling = False
        self.samples: list[tuple[int, int]] = []  # (live, ready)
        self.images_seen: list[set[str]] = []  # images of all pods present (terminating too), per change
        self.ever: dict[str, str] = {}  # every pod ever seen -> its image (to count creations)
        self._acting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with ListWatch(self.kc, PODS, self.ns) as lw:
            async for ev in lw:
                if ev.type == "SYNC":
                    continue
                name = ev.object["metadata"]["name"]
                if ev.type == "DELETED":
                    self.pods.pop(name, None)
                else:
                    self.pods[name] = ev.object
                    self.ever[name] = image_of(ev.object)
                    self._act(ev.object)
                if self.sampling:
                    live = [p for p in self.pods.values() if not terminating(p)]
                    self.samples.append((len(live), sum(1 for p in live if is_ready(p))))
                    self.images_seen.append({image_of(p) for p in self.pods.values()})

    def _act(self, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        if name in self._acting:
            return
        if terminating(pod):
            job = self._finish_deletion(pod)
        elif not is_ready(pod) and (pod["spec"].get("nodeName") or not HAVE_SCHEDULER):
            job = self._make_ready(pod)
        else:
            return
        self._acting.add(name)
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, name))

    def _done(self, task: asyncio.Task[None], name: str) -> None:
        self._tasks.discard(task)
        self._acting.discard(name)

    async def _make_ready(self, pod: Obj) -> None:
        now = now_micro()[:19] + "Z"
        conds = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {"phase": "Running", "conditions": conds, "containerStatuses": containers, "startTime": now}
        with contextlib.suppress(NotFound):
            await self.kc.patch(
                PODS, pod["metadata"]["name"], {"status": status}, namespace=self.ns, subresource="status"
            )

    async def _finish_deletion(self, pod: Obj) -> None:
        with contextlib.suppress(NotFound):
            await self.kc.delete(PODS, pod["metadata"]["name"], self.ns, grace_period_seconds=0)

    def live(self) -> list[Obj]:
        return [p for p in self.pods.values() if not terminating(p)]


@contextlib.asynccontextmanager
async def kubelet(kc: KubeClient, ns: str) -> AsyncIterator[FakeKubelet]:
    k = FakeKubelet(kc, ns)
    task = asyncio.create_task(k.run())
    try:
        yield k
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for t in list(k._tasks):
            t.cancel()


# ---- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProc]:
    srv = ApiServerProc(
        Path(tmp_path_factory.mktemp("deploy")),
        extra_args=["--controllers", _controllers("garbagecollector")],
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


async def _setup(srv: ApiServerProc) -> tuple[KubeClient, str]:
    kc = KubeClient(load_kubeconfig(srv.kubeconfig))
    await kc.open()
    for n in NODES:
        await register_node(kc, n, cpu="8", pods="110")
    ns = f"d-{uuid.uuid4().hex[:8]}"
    await kc.create(NAMESPACES, {"metadata": {"name": ns}})
    return kc, ns


@pytest.fixture
async def env(server: ApiServerProc) -> AsyncIterator[tuple[ApiServerProc, KubeClient, str]]:
    kc, ns = await _setup(server)
    try:
        yield server, kc, ns
    finally:
        await kc.close()


async def kubectl(srv: ApiServerProc, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # In a thread: kubectl waits (rollout status) while our fake kubelet must keep running.
    return await asyncio.to_thread(srv.kubectl, *args, check=check, timeout=40)


async def replicasets(kc: KubeClient, ns: str) -> list[Obj]:
    items, _ = await kc.list(REPLICASETS, ns)
    return items


def settled(k: FakeKubelet, n: int, image: str) -> bool:
    live = k.live()
    return len(live) == n and all(is_ready(p) and image_of(p) == image for p in live) and len(k.pods) == n


async def wait_settled(k: FakeKubelet, n: int, image: str, deadline_s: float = 20) -> None:
    async def check() -> bool:
        return settled(k, n, image)

    await wait_for(check, deadline_s=deadline_s, what=f"{n} ready pods of {image} and none other")


async def rollout_done(srv: ApiServerProc, ns: str, name: str) -> None:
    r = await kubectl(srv, "-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=30s")
    assert "successfully rolled out" in r.stdout, r.stdout


def assert_bounds(k: FakeKubelet, replicas: int, surge: int, unavailable: int) -> None:
    assert k.samples, "no pod changes sampled"
    most = max(s[0] for s in k.samples)
    least_ready = min(s[1] for s in k.samples)
    assert most <= replicas + surge, f"{most} live pods > {replicas} + maxSurge {surge}"
    assert least_ready >= replicas - unavailable, (
        f"{least_ready} ready pods < {replicas} - maxUnavailable {unavailable}"
    )


# ---- tests --------------------------------------------------------------------------------------


async def test_create_scale_rolling_update_history_undo(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    srv, kc, ns = env
    async with kubelet(kc, ns) as k:
        await kubectl(srv, "-n", ns, "create", "deployment", "web", "--image=nginx:1", "--replicas=5")
        await wait_settled(k, 5, "nginx:1")
        await rollout_done(srv, ns, "web")
        (rs1,) = await replicasets(kc, ns)
        h1 = rs1["metadata"]["labels"]["pod-template-hash"]
        assert rs1["metadata"]["name"] == f"web-{h1}"
        assert rs1["spec"]["selector"]["matchLabels"]["pod-template-hash"] == h1
        assert all(p["metadata"]["labels"]["pod-template-hash"] == h1 for p in k.live())
        assert rs1["metadata"]["annotations"][REVISION] == "1"
        owner = rs1["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["controller"], owner["blockOwnerDeletion"]) == ("Deployment", True, True)
        pod_owner = k.live()[0]["metadata"]["ownerReferences"][0]
        assert (pod_owner["kind"], pod_owner["uid"]) == ("ReplicaSet", rs1["metadata"]["uid"])
        d = await kc.get(DEPLOYMENTS, "web", ns)
        conds = {c["type"]: c["reason"] for c in d["status"]["conditions"]}
        assert conds == {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}
        assert (d["status"]["availableReplicas"], d["status"]["updatedReplicas"]) == (5, 5)

        # kubectl scale goes through the scale subresource.
        await kubectl(srv, "-n", ns, "scale", "deployment/web", "--replicas=8")
        await wait_settled(k, 8, "nginx:1")
        await kubectl(srv, "-n", ns, "scale", "deployment/web", "--replicas=5")
        await wait_settled(k, 5, "nginx:1")
        await rollout_done(srv, ns, "web")

        # Rolling update: 25% of 5 = surge 2 (rounded up), unavailable 1 (rounded down).
        k.sampling = True
        await kubectl(srv, "-n", ns, "set", "image", "deployment/web", "nginx=nginx:2")
        await rollout_done(srv, ns, "web")
        await wait_settled(k, 5, "nginx:2")
        k.sampling = False
        assert_bounds(k, 5, 2, 1)

        hist = (await kubectl(srv, "-n", ns, "rollout", "history", "deployment/web")).stdout
        assert [ln.split()[0] for ln in hist.splitlines() if ln[:1].isdigit()] == ["1", "2"], hist

        # Undo restores the old template: the old ReplicaSet is reused with the next revision.
        await kubectl(srv, "-n", ns, "rollout", "undo", "deployment/web")
        await rollout_done(srv, ns, "web")
        await wait_settled(k, 5, "nginx:1")
        by_name = {rs["metadata"]["name"]: rs for rs in await replicasets(kc, ns)}
        assert len(by_name) == 2
        assert by_name[f"web-{h1}"]["metadata"]["annotations"][REVISION] == "3"
        assert (
            by_name[f"web-{h1}"]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"]
            == "1"
        )
        assert by_name[f"web-{h1}"]["spec"]["replicas"] == 5
        hist = (await kubectl(srv, "-n", ns, "rollout", "history", "deployment/web")).stdout
        assert [ln.split()[0] for ln in hist.splitlines() if ln[:1].isdigit()] == ["2", "3"], hist

        await kubectl(srv, "-n", ns, "rollout", "undo", "deployment/web", "--to-revision=2")
        await rollout_done(srv, ns, "web")
        await wait_settled(k, 5, "nginx:2")
        d = await kc.get(DEPLOYMENTS, "web", ns)
        assert d["metadata"]["annotations"][REVISION] == "4"


async def test_revision_history_limit(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    srv, kc, ns = env
    async with kubelet(kc, ns) as k:
        await kubectl(srv, "-n", ns, "create", "deployment", "hist", "--image=nginx:0", "--replicas=2")
        await kubectl(srv, "-n", ns, "patch", "deployment/hist", "-p", '{"spec":{"revisionHistoryLimit":1}}')
        for v in (1, 2, 3):
            await kubectl(srv, "-n", ns, "set", "image", "deployment/hist", f"nginx=nginx:{v}")
            await rollout_done(srv, ns, "hist")
        await wait_settled(k, 2, "nginx:3")

        async def two_left() -> list[str] | None:
            revs = sorted(rs["metadata"]["annotations"][REVISION] for rs in await replicasets(kc, ns))
            return revs if revs == ["3", "4"] else None

        await wait_for(two_left, deadline_s=10, what="only the newest old ReplicaSet kept")


async def test_recreate(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    srv, kc, ns = env
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: rec, namespace: {ns}}}
spec:
  replicas: 4
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: rec}}}}
  template:
    metadata: {{labels: {{app: rec}}}}
    spec: {{containers: [{{name: c, image: "busybox:1"}}]}}
"""
    async with kubelet(kc, ns) as k:
        await asyncio.to_thread(srv.kubectl, "apply", "-f", "-", input=manifest)
        await wait_settled(k, 4, "busybox:1")
        await rollout_done(srv, ns, "rec")
        k.sampling = True
        await kubectl(srv, "-n", ns, "set", "image", "deployment/rec", "c=busybox:2")
        await rollout_done(srv, ns, "rec")
        await wait_settled(k, 4, "busybox:2")
        k.sampling = False
        # Old pods were all gone (terminating ones too) before the first new one was created.
        assert all(len(images) <= 1 for images in k.images_seen), [s for s in k.images_seen if len(s) > 1][:3]
        assert any(not images for images in k.images_seen), "never saw zero pods between old and new"


async def test_pause_and_resume(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    srv, kc, ns = env
    async with kubelet(kc, ns) as k:
        await kubectl(srv, "-n", ns, "create", "deployment", "pz", "--image=nginx:1", "--replicas=4")
        await wait_settled(k, 4, "nginx:1")
        await rollout_done(srv, ns, "pz")
        await kubectl(srv, "-n", ns, "rollout", "pause", "deployment/pz")
        await kubectl(srv, "-n", ns, "set", "image", "deployment/pz", "nginx=nginx:2")

        async def observed() -> Obj | None:
            d = await kc.get(DEPLOYMENTS, "pz", ns)
            st = d["status"]
            progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
            ok = (
                st.get("observedGeneration") == d["metadata"]["generation"]
                and progressing["reason"] == "DeploymentPaused"
            )
            return d if ok else None

        await wait_for(observed, deadline_s=10, what="paused deployment observed")
        assert len(await replicasets(kc, ns)) == 1, "a paused deployment must not roll out"

        # Scaling still applies while paused.
        await kubectl(srv, "-n", ns, "scale", "deployment/pz", "--replicas=6")
        await wait_settled(k, 6, "nginx:1")
        await kubectl(srv, "-n", ns, "rollout", "resume", "deployment/pz")
        await rollout_done(srv, ns, "pz")
        await wait_settled(k, 6, "nginx:2")
        d = await kc.get(DEPLOYMENTS, "pz", ns)
        assert d["metadata"]["annotations"][REVISION] == "2"


async def test_progress_deadline_exceeded(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    # No kubelet here: pods never become ready, so the rollout stalls past its 2 s deadline.
    srv, kc, ns = env
    await kubectl(srv, "-n", ns, "create", "deployment", "slow", "--image=nginx:1", "--replicas=2")
    await kubectl(srv, "-n", ns, "patch", "deployment/slow", "-p", '{"spec":{"progressDeadlineSeconds":2}}')
    r = await kubectl(srv, "-n", ns, "rollout", "status", "deployment/slow", "--timeout=20s", check=False)
    assert r.returncode != 0 and "exceeded its progress deadline" in r.stderr, (r.stdout, r.stderr)
    d = await kc.get(DEPLOYMENTS, "slow", ns)
    prog = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("False", "ProgressDeadlineExceeded")


async def test_replicaset_adopts_and_releases(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    _, kc, ns = env
    async with kubelet(kc, ns) as k:
        for i in range(2):
            pod = {
                "metadata": {"name": f"orphan-{i}", "labels": {"app": "adopt"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            }
            await kc.create(PODS, pod, namespace=ns)
        rs = await kc.create(
            REPLICASETS,
            {
                "metadata": {"name": "adopt"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "adopt"}},
                    "template": {
                        "metadata": {"labels": {"app": "adopt"}},
                        "spec": {"containers": [{"name": "c", "image": "img:1"}]},
                    },
                },
            },
            namespace=ns,
        )
        await wait_settled(k, 3, "img:1")
        uid = rs["metadata"]["uid"]
        for i in range(2):
            p = await kc.get(PODS, f"orphan-{i}", ns)
            assert [r["uid"] for r in p["metadata"]["ownerReferences"]] == [uid]

        # A pod relabelled out of the selector is released and replaced.
        await kc.patch(PODS, "orphan-0", {"metadata": {"labels": {"app": "gone"}}}, namespace=ns)

        async def released() -> bool:
            p = await kc.get(PODS, "orphan-0", ns)
            owned = [q for q in k.live() if q["metadata"].get("labels", {}).get("app") == "adopt"]
            return not p["metadata"].get("ownerReferences") and len(owned) == 3

        await wait_for(released, deadline_s=10, what="pod released and replaced")

        async def status_ok() -> bool:
            st = (await kc.get(REPLICASETS, "adopt", ns))["status"]
            return (st.get("replicas"), st.get("readyReplicas"), st.get("availableReplicas")) == (3, 3, 3)

        await wait_for(status_ok, deadline_s=10, what="ReplicaSet status 3/3/3")
        # Scaling down deletes the surplus (which ones is unit-tested: it depends on node placement).
        await kc.patch(REPLICASETS, "adopt", {"spec": {"replicas": 1}}, namespace=ns)

        async def one_left() -> bool:
            live = [p for p in k.live() if p["metadata"]["labels"].get("app") == "adopt"]
            st = (await kc.get(REPLICASETS, "adopt", ns))["status"]
            return len(live) == 1 and st.get("replicas") == 1

        await wait_for(one_left, deadline_s=10, what="scaled down to 1")


@pytest.mark.skipif(not HAVE_GC, reason="the garbage collector is not registered")
async def test_delete_deployment_cascades(env: tuple[ApiServerProc, KubeClient, str]) -> None:
    srv, kc, ns = env
    async with kubelet(kc, ns) as k:
        await kubectl(srv, "-n", ns, "create", "deployment", "gone", "--image=nginx:1", "--replicas=3")
        await wait_settled(k, 3, "nginx:1")
        await kubectl(srv, "-n", ns, "delete", "deployment", "gone")

        async def empty() -> bool:
            return not await replicasets(kc, ns) and not (await kc.list(PODS, ns))[0]

        await wait_for(empty, deadline_s=20, what="ReplicaSets and pods garbage-collected")


# ---- the controllers as a separate process, killed mid-rollout -----------------------------------


def start_controllers(srv: ApiServerProc, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeedge.controllers",
            "--kubeconfig",
            str(srv.kubeconfig),
            "--controllers",
            "replicaset,deployment",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


async def test_kill9_controllers_mid_rollout(apiserver_factory: type[ApiServerProc], tmp_path: Path) -> None:
    extra = ["--controllers", "scheduler" if HAVE_SCHEDULER else "none"]
    srv = apiserver_factory(tmp_path / "srv", extra_args=extra).start()
    log = tmp_path / "controllers.log"
    proc = start_controllers(srv, log)
    kc, ns = await _setup(srv)
    try:
        async with kubelet(kc, ns) as k:
            await kubectl(srv, "-n", ns, "create", "deployment", "kk", "--image=nginx:1", "--replicas=10")
            await wait_settled(k, 10, "nginx:1", deadline_s=30)
            await rollout_done(srv, ns, "kk")
            k.sampling = True
            await kubectl(srv, "-n", ns, "set", "image", "deployment/kk", "nginx=nginx:2")

            async def mid_rollout() -> bool:
                return any(image_of(p) == "nginx:2" for p in k.live())

            await wait_for(mid_rollout, deadline_s=15, what="the rollout to start")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = start_controllers(srv, log)
            await rollout_done(srv, ns, "kk")
            await wait_settled(k, 10, "nginx:2", deadline_s=30)
            k.sampling = False
            # 25% of 10: surge 3, unavailable 2; no pod of the new template was created twice.
            assert_bounds(k, 10, 3, 2)
            assert sum(1 for img in k.ever.values() if img == "nginx:2") == 10
            before = len(k.ever)

            # Killed while creating a large ReplicaSet from scratch: still exactly the right count.
            await kubectl(srv, "-n", ns, "scale", "deployment/kk", "--replicas=60")

            async def creating() -> bool:
                return len(k.live()) > 12

            await wait_for(creating, deadline_s=15, what="scale-up to start")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = start_controllers(srv, log)
            await wait_settled(k, 60, "nginx:2", deadline_s=40)
            await rollout_done(srv, ns, "kk")
            rss = await replicasets(kc, ns)
            assert sorted(rs["spec"]["replicas"] for rs in rss) == [0, 60]
            assert len(k.ever) - before == 50, "pods created twice across the restart"
    finally:
        proc.kill()
        proc.wait(10)
        await kc.close()


async def test_template_changed_twice_quickly_gets_a_replicaset_per_revision(
    env: tuple[ApiServerProc, KubeClient, str],
) -> None:
    """Pods that never become ready (no kubelet here) must not stop a newer template from getting its
    ReplicaSet: each quick template change makes the new ReplicaSet at once, as upstream."""
    _, kc, ns = env
    dep = {
        "metadata": {"name": "quick"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "quick"}},
            "template": {
                "metadata": {"labels": {"app": "quick"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            },
        },
    }
    await kc.create(DEPLOYMENTS, dep, ns)
    for image in ("img:2", "img:3"):
        await kc.patch(
            DEPLOYMENTS,
            "quick",
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}},
            ns,
        )

    async def all_three() -> set[str] | None:
        images = {
            rs["spec"]["template"]["spec"]["containers"][0]["image"]
            for rs in await replicasets(kc, ns)
            if rs["metadata"]["name"].startswith("quick-")
        }
        d = await kc.get(DEPLOYMENTS, "quick", ns)
        done = (d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"]
        return images if done and "img:3" in images else None

    images = await wait_for(all_three, deadline_s=20, what="a ReplicaSet for the third template")
    assert images is not None and "img:3" in images
