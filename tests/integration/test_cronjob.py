"""CronJob controller against a real API server running it with the garbage collector.

Schedules are "* * * * *"; instead of waiting for the next minute, tests move status.lastScheduleTime
two minutes back so the most recent missed run (the last full minute) is due at once. No Job
controller runs, so Jobs keep whatever status the tests give them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeedge.controllers.cronjob import CRONJOBS, SCHEDULED_TIMESTAMP
from kubeedge.kube import EVENTS, JOBS, KubeClient
from tests.cluster import wait_for

Obj = dict[str, Any]

APISERVER_CONTROLLERS = "cronjob,garbagecollector"

TEMPLATE: Obj = {
    "metadata": {"labels": {"app": "tick"}},
    "spec": {
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
        }
    },
}


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


async def make_cronjob(kc: KubeClient, ns: str, name: str, **spec: Any) -> Obj:
    body = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "jobTemplate": TEMPLATE, **spec},
    }
    return await kc.create(CRONJOBS, body, namespace=ns)


async def backdate(kc: KubeClient, ns: str, name: str, minutes: int = 2) -> str:
    """Pretend the last run was `minutes` ago, so one run is overdue now."""
    when = iso(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes))
    await kc.patch(CRONJOBS, name, {"status": {"lastScheduleTime": when}}, namespace=ns, subresource="status")
    return when


async def hand_made_job(
    kc: KubeClient, ns: str, cj: Obj, name: str, finished: str | None = None, minute: int = 0
) -> Obj:
    """A Job owned by the CronJob, optionally Complete/Failed, started `minute` minutes into 2024."""
    owner = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": cj["metadata"]["name"],
        "uid": cj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    body = {"metadata": {"name": name, "ownerReferences": [owner]}, "spec": TEMPLATE["spec"]}
    job = await kc.create(JOBS, body, namespace=ns)
    if finished is not None:
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
        await finish(kc, ns, name, finished, start)
    return job


async def finish(kc: KubeClient, ns: str, name: str, kind: str, start: dt.datetime) -> None:
    end = start + dt.timedelta(seconds=30)
    conds = [
        {"type": "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget", "status": "True"},
        {"type": kind, "status": "True"},
    ]
    for c in conds:
        c["lastTransitionTime"] = c["lastProbeTime"] = iso(end)
    status: Obj = {"conditions": conds, "startTime": iso(start)}
    if kind == "Complete":
        status |= {"completionTime": iso(end), "succeeded": 1}
    else:
        status |= {"failed": 1}
    await kc.patch(JOBS, name, {"status": status}, namespace=ns, subresource="status")


async def owned_jobs(kc: KubeClient, ns: str, cj: Obj) -> dict[str, Obj]:
    jobs = (await kc.list(JOBS, namespace=ns))[0]
    return {
        j["metadata"]["name"]: j
        for j in jobs
        if any(r.get("uid") == cj["metadata"]["uid"] for r in j["metadata"].get("ownerReferences") or ())
    }


async def event_reasons(kc: KubeClient, ns: str, cj_name: str) -> list[str]:
    items = (await kc.list(EVENTS, namespace=ns))[0]
    return [e["reason"] for e in items if e["involvedObject"].get("name") == cj_name]


async def test_overdue_run_creates_job_with_deterministic_name(kc: KubeClient, ns: str) -> None:
    cj = await make_cronjob(kc, ns, "tick", concurrencyPolicy="Forbid", startingDeadlineSeconds=3600)
    before = parse(await backdate(kc, ns, "tick"))

    async def created() -> dict[str, Obj]:
        return await owned_jobs(kc, ns, cj)

    jobs = await wait_for(created, deadline_s=15, what="the overdue job")
    assert len(jobs) == 1  # Forbid: no second run while it is active
    ((name, job),) = jobs.items()
    scheduled = parse(job["metadata"]["annotations"][SCHEDULED_TIMESTAMP])
    assert scheduled.second == 0 and before < scheduled <= dt.datetime.now(dt.UTC)
    assert name == f"tick-{int(scheduled.timestamp()) // 60}"
    assert job["metadata"]["labels"] == {"app": "tick"}
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "CronJob",
        "tick",
        True,
        True,
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"

    async def status_recorded() -> Obj:
        st: Obj = (await kc.get(CRONJOBS, "tick", ns)).get("status") or {}
        return st if st.get("active") and st.get("lastScheduleTime") == iso(scheduled) else {}

    st = await wait_for(status_recorded, deadline_s=10, what="status.active and lastScheduleTime")
    assert [(a["kind"], a["name"], a["uid"]) for a in st["active"]] == [("Job", name, job["metadata"]["uid"])]
    await wait_for(
        lambda: _has(kc, ns, "tick", "SuccessfulCreate"), deadline_s=10, what="SuccessfulCreate event"
    )

    # Deleting the CronJob takes its Jobs with it (garbage collector).
    await kc.delete(CRONJOBS, "tick", ns, propagation_policy="Background")

    async def jobs_gone() -> bool:
        return not await owned_jobs(kc, ns, cj)

    await wait_for(jobs_gone, deadline_s=15, what="owned jobs garbage-collected")


async def _has(kc: KubeClient, ns: str, cj_name: str, reason: str) -> bool:
    return reason in await event_reasons(kc, ns, cj_name)


async def test_forbid_waits_for_active_job_then_runs(kc: KubeClient, ns: str) -> None:
    cj = await make_cronjob(kc, ns, "fb", concurrencyPolicy="Forbid", suspend=True)
    await hand_made_job(kc, ns, cj, "fb-manual")
    await backdate(kc, ns, "fb")
    await kc.patch(CRONJOBS, "fb", {"spec": {"suspend": False}}, namespace=ns)

    await wait_for(lambda: _has(kc, ns, "fb", "JobAlreadyActive"), deadline_s=15, what="JobAlreadyActive")
    assert set(await owned_jobs(kc, ns, cj)) == {"fb-manual"}
    st = (await kc.get(CRONJOBS, "fb", ns))["status"]
    assert [a["name"] for a in st["active"]] == ["fb-manual"]

    # Once the running Job completes, the overdue run starts.
    await finish(kc, ns, "fb-manual", "Complete", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))

    async def second_run() -> set[str]:
        names = set(await owned_jobs(kc, ns, cj)) - {"fb-manual"}
        return names

    (new_name,) = await wait_for(second_run, deadline_s=15, what="the run after the active job finished")
    assert new_name.startswith("fb-")

    async def settled() -> Obj | None:
        st = (await kc.get(CRONJOBS, "fb", ns))["status"]
        active = [a["name"] for a in st.get("active") or ()]
        return st if active == [new_name] and st.get("lastSuccessfulTime") else None

    await wait_for(settled, deadline_s=10, what="active = new job, lastSuccessfulTime set")
    await wait_for(lambda: _has(kc, ns, "fb", "SawCompletedJob"), deadline_s=10, what="SawCompletedJob")
    await kc.patch(CRONJOBS, "fb", {"spec": {"suspend": True}}, namespace=ns)


async def test_replace_deletes_active_job(kc: KubeClient, ns: str) -> None:
    cj = await make_cronjob(kc, ns, "rp", concurrencyPolicy="Replace", suspend=True)
    await hand_made_job(kc, ns, cj, "rp-old")
    await backdate(kc, ns, "rp")
    await kc.patch(CRONJOBS, "rp", {"spec": {"suspend": False}}, namespace=ns)

    async def replaced() -> set[str]:
        names = set(await owned_jobs(kc, ns, cj))
        return names if "rp-old" not in names and names else set()

    names = await wait_for(replaced, deadline_s=15, what="old job replaced by a new one")
    assert all(n.startswith("rp-2") for n in names)
    await kc.patch(CRONJOBS, "rp", {"spec": {"suspend": True}}, namespace=ns)


async def test_history_limits_and_suspend(kc: KubeClient, ns: str) -> None:
    cj = await make_cronjob(
        kc, ns, "hist", suspend=True, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1
    )
    await backdate(kc, ns, "hist")  # overdue, but suspended: must not run
    for i in range(4):
        await hand_made_job(kc, ns, cj, f"hist-ok{i}", "Complete", minute=i)
    for i in range(2):
        await hand_made_job(kc, ns, cj, f"hist-bad{i}", "Failed", minute=i)
    await hand_made_job(kc, ns, cj, "hist-running")

    async def pruned() -> set[str]:
        names = set(await owned_jobs(kc, ns, cj))
        return names if names == {"hist-ok2", "hist-ok3", "hist-bad1", "hist-running"} else set()

    await wait_for(pruned, deadline_s=15, what="oldest finished jobs pruned")

    async def success_time() -> str | None:
        st = (await kc.get(CRONJOBS, "hist", ns)).get("status") or {}
        return st.get("lastSuccessfulTime")

    assert await wait_for(success_time, deadline_s=10, what="lastSuccessfulTime") == "2024-01-01T00:03:30Z"
    # Suspended: the overdue run was not started.
    assert all(not n.startswith("hist-2") for n in await owned_jobs(kc, ns, cj))
