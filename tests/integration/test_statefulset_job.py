"""StatefulSet and Job controllers against the real API server. A FakeKubelet (from the DaemonSet
tests) marks pods Running/Ready; Job pods are finished by patching their status as a kubelet would."""

from __future__ import annotations

from typing import Any

from kubeedge.kube import (
    JOBS,
    PERSISTENTVOLUMECLAIMS,
    PODS,
    STATEFULSETS,
    KubeClient,
    NotFound,
)
from tests.cluster import now_micro, wait_for
from tests.integration.test_daemonset import FakeKubelet, until

Obj = dict[str, Any]


# Only these controllers run (see tests/conftest.py: `server`, `kc` and `ns` come from there).
APISERVER_CONTROLLERS = "daemonset,statefulset,job"


async def live_pods(kc: KubeClient, ns: str) -> dict[str, Obj]:
    items, _ = await kc.list(PODS, ns)
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


# -------------------------------------------------------------------------------------------------
# StatefulSet


def statefulset(name: str, replicas: int, **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-svc",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "web:1"}]},
            },
            **spec,
        },
    }


async def sts_status(kc: KubeClient, ns: str, name: str, **want: Any) -> Obj | None:
    st = (await kc.get(STATEFULSETS, name, ns)).get("status") or {}
    return st if all(st.get(k) == v for k, v in want.items()) else None


async def test_ordered_creation_identity_claims_and_scale_down(kc: KubeClient, ns: str) -> None:
    claims = [
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    ]
    async with FakeKubelet(kc, ns, bound_only=False) as kubelet:
        kubelet.hold.add("web-0")
        await kc.create(STATEFULSETS, statefulset("web", 3, volumeClaimTemplates=claims), ns)
        await wait_for(
            lambda: sts_status(kc, ns, "web", replicas=1, observedGeneration=1), what="web-0 created"
        )
        assert set(await live_pods(kc, ns)) == {"web-0"}  # web-1 waits for web-0 to be Running and Ready
        await kubelet.release("web-0")
        await wait_for(
            lambda: sts_status(kc, ns, "web", replicas=3, readyReplicas=3), what="3 ready replicas"
        )

        pods = await live_pods(kc, ns)
        assert set(pods) == {"web-0", "web-1", "web-2"}
        created = sorted(pods, key=lambda n: pods[n]["metadata"]["creationTimestamp"])
        assert created[0] == "web-0"
        p1 = pods["web-1"]
        assert p1["spec"]["hostname"] == "web-1" and p1["spec"]["subdomain"] == "web-svc"
        labels = p1["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == "web-1"
        assert labels["apps.kubernetes.io/pod-index"] == "1"
        assert p1["spec"]["volumes"][-1] == {
            "name": "data",
            "persistentVolumeClaim": {"claimName": "data-web-1"},
        }
        pvcs, _ = await kc.list(PERSISTENTVOLUMECLAIMS, ns)
        assert sorted(p["metadata"]["name"] for p in pvcs) == ["data-web-0", "data-web-1", "data-web-2"]
        st = await kc.get(STATEFULSETS, "web", ns)
        assert (
            st["status"]["currentRevision"]
            == st["status"]["updateRevision"]
            == labels["controller-revision-hash"]
        )

        # Scale down: the highest ordinal first, the next only once it is gone.
        await kc.patch(STATEFULSETS, "web", {"spec": {"replicas": 1}}, ns)
        await wait_for(lambda: sts_status(kc, ns, "web", replicas=1, readyReplicas=1), what="scaled to 1")
        assert kubelet.deleting_order == ["web-2", "web-1"]
        assert set(await live_pods(kc, ns)) == {"web-0"}
        pvcs, _ = await kc.list(PERSISTENTVOLUMECLAIMS, ns)
        assert len(pvcs) == 3  # whenScaled: Retain (the default)


async def test_rolling_update_reverse_order_and_partition(kc: KubeClient, ns: str) -> None:
    async with FakeKubelet(kc, ns, bound_only=False) as kubelet:
        await kc.create(STATEFULSETS, statefulset("db", 3), ns)
        await wait_for(lambda: sts_status(kc, ns, "db", readyReplicas=3), what="3 ready")
        first = (await kc.get(STATEFULSETS, "db", ns))["status"]["currentRevision"]

        # With partition 2 only db-2 moves to the new revision.
        patch = {
            "spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
                "template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}},
            }
        }
        await kc.patch(STATEFULSETS, "db", patch, ns, patch_type="strategic")
        st = await until(
            lambda: sts_status(kc, ns, "db", updatedReplicas=1, readyReplicas=3, observedGeneration=2),
            what="partitioned update",
        )
        assert st["currentRevision"] == first and st["updateRevision"] != first
        pods = await live_pods(kc, ns)
        revs = {n: p["metadata"]["labels"]["controller-revision-hash"] for n, p in pods.items()}
        assert revs == {"db-0": first, "db-1": first, "db-2": st["updateRevision"]}

        # Partition 0: the rest roll, highest ordinal first, and the rollout completes.
        await kc.patch(
            STATEFULSETS, "db", {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}, ns
        )
        st = await until(
            lambda: sts_status(kc, ns, "db", updatedReplicas=3, readyReplicas=3, currentReplicas=3),
            what="full rollout",
        )
        assert st["currentRevision"] == st["updateRevision"]
        assert kubelet.deleting_order == ["db-2", "db-1", "db-0"]
        pods = await live_pods(kc, ns)
        assert {p["spec"]["containers"][0]["image"] for p in pods.values()} == {"web:2"}


async def test_parallel_creates_without_waiting(kc: KubeClient, ns: str) -> None:
    async with FakeKubelet(kc, ns, bound_only=False) as kubelet:
        kubelet.hold.update({"par-0", "par-1", "par-2"})
        await kc.create(STATEFULSETS, statefulset("par", 3, podManagementPolicy="Parallel"), ns)

        async def all_there() -> bool:
            return set(await live_pods(kc, ns)) == {"par-0", "par-1", "par-2"}

        await wait_for(all_there, what="all three pods without readiness")


# -------------------------------------------------------------------------------------------------
# Job


def job(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "pi"}]}},
            **spec,
        },
    }


def finished_status(phase: str) -> Obj:
    now = now_micro()[:19] + "Z"
    code = 0 if phase == "Succeeded" else 1
    return {
        "phase": phase,
        "containerStatuses": [
            {
                "name": "c",
                "ready": False,
                "restartCount": 0,
                "image": "pi",
                "imageID": "",
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "finishedAt": now,
                    }
                },
            }
        ],
    }


async def job_pods(kc: KubeClient, ns: str, job_name: str) -> list[Obj]:
    items, _ = await kc.list(PODS, ns, label_selector=f"batch.kubernetes.io/job-name={job_name}")
    return items


async def active_pods(kc: KubeClient, ns: str, job_name: str, n: int) -> list[Obj] | None:
    pods = [
        p for p in await job_pods(kc, ns, job_name) if p["status"].get("phase") not in ("Succeeded", "Failed")
    ]
    return pods if len(pods) == n else None


async def finish(kc: KubeClient, ns: str, pods: list[Obj], phase: str) -> None:
    for p in pods:
        await kc.patch(
            PODS, p["metadata"]["name"], {"status": finished_status(phase)}, ns, subresource="status"
        )


async def job_condition(kc: KubeClient, ns: str, name: str, ctype: str) -> Obj | None:
    j = await kc.get(JOBS, name, ns)
    for c in (j.get("status") or {}).get("conditions") or ():
        if c["type"] == ctype and c["status"] == "True":
            return j
    return None


async def test_job_runs_to_completion(kc: KubeClient, ns: str) -> None:
    await kc.create(JOBS, job("pi", completions=3, parallelism=2), ns)
    j = await kc.get(JOBS, "pi", ns)
    uid = j["metadata"]["uid"]
    # The selector is generated from the uid (manualSelector unset) and stamped on the template.
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert j["spec"]["template"]["metadata"]["labels"]["job-name"] == "pi"

    first = await until(lambda: active_pods(kc, ns, "pi", 2), what="2 parallel pods")
    labels = first[0]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == uid and labels["controller-uid"] == uid
    assert first[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"
    await finish(kc, ns, first, "Succeeded")
    last = await until(lambda: active_pods(kc, ns, "pi", 1), what="the third pod (only one more)")
    assert len(await job_pods(kc, ns, "pi")) == 3
    await finish(kc, ns, last, "Succeeded")
    done = await until(lambda: job_condition(kc, ns, "pi", "Complete"), what="Complete condition")
    st = done["status"]
    assert (st["succeeded"], st["failed"], st["active"]) == (3, 0, 0)
    assert st["completionTime"] and st["startTime"]
    assert {c["type"] for c in st["conditions"]} == {"SuccessCriteriaMet", "Complete"}
    assert len(await job_pods(kc, ns, "pi")) == 3  # nothing more was created


async def test_failing_job_hits_backoff_limit(kc: KubeClient, ns: str) -> None:
    await kc.create(JOBS, job("bad", backoffLimit=1), ns)
    first = await until(lambda: active_pods(kc, ns, "bad", 1), what="first pod")
    await finish(kc, ns, first, "Failed")
    # The retry comes after the 10s failure backoff.
    second = await until(lambda: active_pods(kc, ns, "bad", 1), deadline_s=25, what="retry pod")
    assert second[0]["metadata"]["uid"] != first[0]["metadata"]["uid"]
    await finish(kc, ns, second, "Failed")
    failed = await until(lambda: job_condition(kc, ns, "bad", "Failed"), what="Failed condition")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "BackoffLimitExceeded"
    assert failed["status"]["failed"] == 2 and failed["status"]["active"] == 0
    assert "completionTime" not in failed["status"]
    assert len(await job_pods(kc, ns, "bad")) == 2


async def test_deadline_suspend_indexed_and_ttl(kc: KubeClient, ns: str) -> None:
    # activeDeadlineSeconds: the running pod is deleted and the job fails.
    await kc.create(JOBS, job("slow", activeDeadlineSeconds=1), ns)
    await wait_for(lambda: active_pods(kc, ns, "slow", 1), what="slow pod")
    failed = await until(lambda: job_condition(kc, ns, "slow", "Failed"), what="deadline exceeded")
    assert (
        next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"]
        == "DeadlineExceeded"
    )

    async def slow_pod_removed() -> bool:
        return await active_pods(kc, ns, "slow", 0) == []

    await wait_for(slow_pod_removed, what="slow pod removed")

    # suspend: no pods until resumed.
    await kc.create(JOBS, job("later", suspend=True), ns)
    suspended = await until(lambda: job_condition(kc, ns, "later", "Suspended"), what="Suspended")
    assert suspended["status"].get("active", 0) == 0 and await job_pods(kc, ns, "later") == []
    await kc.patch(JOBS, "later", {"spec": {"suspend": False}}, ns)
    await wait_for(lambda: active_pods(kc, ns, "later", 1), what="pod after resume")

    # Indexed completion, and ttlSecondsAfterFinished removes the finished job.
    await kc.create(
        JOBS,
        job("idx", completionMode="Indexed", completions=2, parallelism=2, ttlSecondsAfterFinished=0),
        ns,
    )
    pods = await until(lambda: active_pods(kc, ns, "idx", 2), what="indexed pods")
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1"]
    await finish(kc, ns, pods, "Succeeded")

    async def gone() -> bool:
        try:
            await kc.get(JOBS, "idx", ns)
        except NotFound:
            return True
        return False

    await wait_for(gone, what="job deleted after its ttl")
