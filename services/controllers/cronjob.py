"""CronJob controller: creates a Job from spec.jobTemplate at each scheduled time (upstream's
cronjob controller v2 semantics).

Only the most recent missed schedule time is started (since lastScheduleTime, or creation), at most
startingDeadlineSeconds late. Job names are `<cronjob>-<scheduled minutes since the epoch>`, so a
restarted or lagging controller cannot run one schedule time twice: AlreadyExists means done. The
key is re-queued exactly at the next schedule time instead of polling.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube import EVENTS, JOBS, AlreadyExists, ApiError, NotFound, Obj, Res

from . import cron
from .framework import Controller, Key, controller_of, ignore_not_found, key_of, uid_of
from .podtemplate import OWNER_UID_INDEX, controller_ref, format_time, now_utc, owner_uid_index, parse_time

log = logging.getLogger(__name__)

CRONJOBS = Res("batch", "v1", "cronjobs", True, "CronJob")
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
COMPONENT = "cronjob-controller"
DEFAULT_SUCCESSFUL_LIMIT = 3
DEFAULT_FAILED_LIMIT = 1
# Upstream wakes 100 ms after the schedule time so the time has surely passed on this clock.
WAKE_SLACK = 0.1


# -------------------------------------------------------------------------------------------------
# pure helpers


def finished_condition(job: Obj) -> str | None:
    """ "Complete" or "Failed" when that condition is True, else None (still running)."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def job_name(cronjob_name: str, scheduled: dt.datetime) -> str:
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def job_ref(job: Obj) -> Obj:
    md = job.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": md.get("namespace"),
        "name": md.get("name"),
        "uid": md.get("uid"),
        "resourceVersion": md.get("resourceVersion"),
    }


def job_from_template(cj: Obj, scheduled: dt.datetime) -> Obj:
    md = cj.get("metadata") or {}
    tmpl = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
    tmd = tmpl.get("metadata") or {}
    annotations = dict(tmd.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = format_time(scheduled)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(md.get("name", ""), scheduled),
            "namespace": md.get("namespace"),
            "labels": dict(tmd.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [controller_ref(cj, "batch/v1", "CronJob")],
        },
        "spec": tmpl.get("spec") or {},
    }


def jobs_to_prune(jobs: list[Obj], successful_limit: int, failed_limit: int) -> list[Obj]:
    """Finished jobs beyond the history limits, oldest (by startTime, then name) first."""
    out: list[Obj] = []
    for kind, limit in (("Complete", successful_limit), ("Failed", failed_limit)):
        done = [j for j in jobs if finished_condition(j) == kind]
        done.sort(key=_start_key)
        if len(done) > limit:
            out += done[: len(done) - limit]
    return out


def _start_key(job: Obj) -> tuple[int, str, str]:
    start = (job.get("status") or {}).get("startTime")
    # Jobs that never started sort last, as upstream's byJobStartTime does.
    return (0 if start else 1, str(start or ""), str((job.get("metadata") or {}).get("name") or ""))


@dataclass
class Plan:
    """What one sync decided: the schedule time to run now (if any), Events, the next wake-up."""

    run: dt.datetime | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue: float | None = None


def plan_run(cj: Obj, sched: cron.CronSchedule, now: dt.datetime) -> Plan:
    """Pick the schedule time due now, following upstream's getNextScheduleTime/tooLate rules."""
    spec = cj.get("spec") or {}
    status = cj.get("status") or {}
    md = cj.get("metadata") or {}
    earliest = parse_time(status.get("lastScheduleTime")) or parse_time(md.get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        earliest = max(earliest, now - dt.timedelta(seconds=int(deadline)))
    plan = Plan()
    nxt = sched.next_after(now)
    if nxt is not None:
        plan.requeue = max(0.0, (nxt - now).total_seconds()) + WAKE_SLACK
    missed = sched.missed_between(earliest, now)
    if missed.too_many:
        plan.events.append(
            (
                "Warning",
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
            )
        )
    if missed.last is None:
        return plan
    if deadline is not None and missed.last + dt.timedelta(seconds=int(deadline)) < now:
        plan.events.append(
            ("Warning", "MissSchedule", f"Missed scheduled time to start a job: {format_time(missed.last)}")
        )
        return plan
    plan.run = missed.last
    return plan


# -------------------------------------------------------------------------------------------------
# controller


class CronJobController(Controller):
    name = "cronjob"
    workers = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: set[asyncio.Task[None]] = set()

    def setup(self) -> None:
        self.cronjobs = self.informers.get(CRONJOBS)
        self.jobs = self.informers.get(JOBS)
        self.jobs.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.cronjobs.add_handler(lambda old, new: self.queue.add(key_of(new or old or {})))
        self.jobs.add_handler(self._on_job)

    def now(self) -> dt.datetime:
        """The controller's clock (tests replace it)."""
        return now_utc()

    def _on_job(self, old: Obj | None, new: Obj | None) -> None:
        job = new or old or {}
        ref = controller_of(job)
        if ref is None or ref.get("kind") != "CronJob":
            return
        self.queue.add(((job.get("metadata") or {}).get("namespace") or "", ref.get("name", "")))

    def _owned_jobs(self, cj: Obj) -> list[Obj]:
        return self.jobs.by_index(OWNER_UID_INDEX, uid_of(cj))

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        cached = self.cronjobs.get(ns, name)
        if cached is None:
            return None
        cj = copy.deepcopy(cached)
        jobs = await self._with_unseen_active(cj, self._owned_jobs(cj))
        old_status = copy.deepcopy(cj.get("status") or {})
        await self._sync_active(cj, jobs)
        requeue: float | None = None
        if not (cj.get("metadata") or {}).get("deletionTimestamp"):
            requeue = await self._sync_schedule(cj, jobs)
            await self._prune_history(cj, jobs)
        if (cj.get("status") or {}) != old_status:
            await self.kc.update_status(CRONJOBS, cj, namespace=ns)
        return requeue

    async def _with_unseen_active(self, cj: Obj, jobs: list[Obj]) -> list[Obj]:
        """Active Jobs the informer has not delivered yet (just created) are fetched live, so a
        lagging cache neither drops them from status.active nor lets Forbid start another."""
        seen = {uid_of(j) for j in jobs}
        out = list(jobs)
        for r in (cj.get("status") or {}).get("active") or ():
            if r.get("uid") in seen:
                continue
            job = await ignore_not_found(self.kc.get(JOBS, str(r.get("name")), r.get("namespace")))
            if job is not None and uid_of(job) == r.get("uid"):
                out.append(job)
        return out

    async def _sync_active(self, cj: Obj, jobs: list[Obj]) -> None:
        """status.active lists exactly the owned Jobs still running; completions are recorded."""
        status = cj.setdefault("status", {})
        listed = {r.get("uid") for r in status.get("active") or ()}
        by_uid = {uid_of(j): j for j in jobs}
        active: list[Obj] = []
        for j in sorted(jobs, key=lambda j: str(j["metadata"].get("name"))):
            done = finished_condition(j)
            if done is None:
                if not (j.get("metadata") or {}).get("deletionTimestamp"):
                    active.append(job_ref(j))
                continue
            if uid_of(j) in listed:
                jname = j["metadata"]["name"]
                self._event(cj, "Normal", "SawCompletedJob", f"Saw completed job: {jname}, status: {done}")
            if done == "Complete":
                self._record_success(status, j)
        for r in status.get("active") or ():
            if r.get("uid") not in by_uid:
                self._event(cj, "Normal", "MissingJob", f"Active job went missing: {r.get('name')}")
        if active:
            status["active"] = active
        else:
            status.pop("active", None)

    @staticmethod
    def _record_success(status: Obj, job: Obj) -> None:
        done_at = parse_time((job.get("status") or {}).get("completionTime"))
        if done_at is None:
            return
        last = parse_time(status.get("lastSuccessfulTime"))
        if last is None or done_at > last:
            status["lastSuccessfulTime"] = format_time(done_at)

    async def _sync_schedule(self, cj: Obj, jobs: list[Obj]) -> float | None:
        spec = cj.get("spec") or {}
        if spec.get("suspend"):
            return None
        try:
            sched = cron.parse(str(spec.get("schedule") or ""), spec.get("timeZone"))
        except ValueError as e:
            self._event(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {e}")
            return None
        plan = plan_run(cj, sched, self.now())
        for etype, reason, msg in plan.events:
            self._event(cj, etype, reason, msg)
        if plan.run is None:
            return plan.requeue
        await self._start(cj, jobs, plan.run)
        return plan.requeue

    async def _start(self, cj: Obj, jobs: list[Obj], scheduled: dt.datetime) -> None:
        status = cj.setdefault("status", {})
        wanted = job_name(cj["metadata"]["name"], scheduled)
        active = status.get("active") or []
        if any(r.get("name") == wanted for r in active):
            return  # this schedule time already runs
        policy = (cj.get("spec") or {}).get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            self._event(
                cj,
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            return
        if policy == "Replace":
            await self._replace(cj, active)
            active = []
        job = await self._create_job(cj, scheduled)
        if job is not None and finished_condition(job) is None:
            status["active"] = [*active, job_ref(job)]
        status["lastScheduleTime"] = format_time(scheduled)

    async def _replace(self, cj: Obj, active: list[Obj]) -> None:
        for r in active:
            await ignore_not_found(
                self.kc.delete(JOBS, str(r.get("name")), r.get("namespace"), propagation_policy="Background")
            )
            self._event(cj, "Normal", "SuccessfulDelete", f"Deleted job {r.get('name')}")

    async def _create_job(self, cj: Obj, scheduled: dt.datetime) -> Obj | None:
        body = job_from_template(cj, scheduled)
        ns = cj["metadata"].get("namespace")
        try:
            job = await self.kc.create(JOBS, body, namespace=ns)
        except AlreadyExists:
            # Created by an earlier sync (or before a restart): that schedule time is done.
            existing = await ignore_not_found(self.kc.get(JOBS, body["metadata"]["name"], ns))
            if existing is None:
                raise  # deleted meanwhile: retry the create
            ref = controller_of(existing)
            if ref is None or ref.get("uid") != uid_of(cj):
                self._event(cj, "Warning", "FailedCreate", f"Job {body['metadata']['name']} exists, not ours")
                return None
            return dict(existing)
        self._event(cj, "Normal", "SuccessfulCreate", f"Created job {body['metadata']['name']}")
        return dict(job)

    async def _prune_history(self, cj: Obj, jobs: list[Obj]) -> None:
        spec = cj.get("spec") or {}
        ok = spec.get("successfulJobsHistoryLimit")
        failed = spec.get("failedJobsHistoryLimit")
        victims = jobs_to_prune(
            jobs,
            DEFAULT_SUCCESSFUL_LIMIT if ok is None else int(ok),
            DEFAULT_FAILED_LIMIT if failed is None else int(failed),
        )
        for j in victims:
            if (j.get("metadata") or {}).get("deletionTimestamp"):
                continue
            jname = str(j["metadata"]["name"])
            await ignore_not_found(
                self.kc.delete(JOBS, jname, j["metadata"].get("namespace"), propagation_policy="Background")
            )
            self._event(cj, "Normal", "SuccessfulDelete", f"Deleted job {jname}")

    # ---- events ---------------------------------------------------------------------------------

    def _event(self, cj: Obj, etype: str, reason: str, message: str) -> None:
        """Record an Event in the background; losing one must not fail or slow the sync."""
        ev = _event_body(cj, etype, reason, message)
        self._spawn_event(ev)

    def _spawn_event(self, ev: Obj) -> None:
        task = asyncio.get_running_loop().create_task(self._create_event(ev))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _create_event(self, ev: Obj) -> None:
        try:
            await self.kc.create(EVENTS, ev, namespace=ev["metadata"]["namespace"])
        except (NotFound, ApiError) as e:
            log.debug("cronjob: event not recorded: %s", e)


def _event_body(cj: Obj, etype: str, reason: str, message: str) -> Obj:
    md = cj.get("metadata") or {}
    ns, name = md.get("namespace") or "default", md.get("name") or ""
    now = format_time(now_utc())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": ns},
        "involvedObject": {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "namespace": ns,
            "name": name,
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": etype,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
