"""Job controller: runs pods to completion, retrying failures up to the backoff limit.

Accounting counts the Job's pods in each phase and never lets the counters go backwards (a finished
pod that disappears keeps having counted); upstream's pod-finalizer tracking is not used. Finishing
is two-step as in recent Kubernetes: FailureTarget / SuccessCriteriaMet first (active pods are then
deleted), and Failed / Complete once no pod of the Job is running any more.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube import JOBS, PODS, NotFound, Obj

from .framework import (
    Controller,
    Expectations,
    Key,
    ignore_not_found,
    key_of,
    owned_pod_handler,
    owner_key,
    uid_of,
)
from .history import (
    new_pod,
)
from .podtemplate import (
    OWNER_UID_INDEX,
    controller_ref,
    format_time,
    is_ready,
    is_terminating,
    labels_of,
    now_utc,
    owner_uid_index,
    parse_time,
    pod_phase,
    selector_matches,
)

log = logging.getLogger(__name__)

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
# Upstream's pod failure backoff: 10s doubling per failure, capped.
BACKOFF_BASE = 10.0
BACKOFF_CAP = 600.0

FAILURE_TARGET = "FailureTarget"
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")


# -------------------------------------------------------------------------------------------------
# accounting (pure)


def pod_index(pod: Obj) -> int | None:
    md = pod.get("metadata") or {}
    raw = (md.get("annotations") or {}).get(COMPLETION_INDEX) or (md.get("labels") or {}).get(
        COMPLETION_INDEX
    )
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def parse_indexes(text: str | None) -> set[int]:
    """ "0-2,5" -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return out


def format_indexes(indexes: set[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5" (the status.completedIndexes format)."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def _finished_at(pod: Obj) -> dt.datetime | None:
    times = []
    status = pod.get("status") or {}
    for cs in [*(status.get("containerStatuses") or ()), *(status.get("initContainerStatuses") or ())]:
        t = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if t is not None:
            times.append(t)
    if times:
        return max(times)
    return parse_time((pod.get("metadata") or {}).get("creationTimestamp"))


@dataclass
class Counts:
    active: list[Obj] = field(default_factory=list)  # neither finished nor being deleted
    terminating: int = 0  # being deleted but not yet finished
    succeeded: int = 0
    failed: int = 0
    ready: int = 0
    restarts: int = 0  # container restarts of active pods (restartPolicy OnFailure)
    completed_indexes: set[int] = field(default_factory=set)
    last_failure: dt.datetime | None = None


def count_pods(job: Obj, pods: list[Obj]) -> Counts:
    status = job.get("status") or {}
    indexed = (job.get("spec") or {}).get("completionMode") == "Indexed"
    c = Counts(completed_indexes=parse_indexes(status.get("completedIndexes")) if indexed else set())
    succeeded = failed = 0
    for pod in pods:
        phase = pod_phase(pod)
        if phase == "Succeeded":
            succeeded += 1
            idx = pod_index(pod)
            if indexed and idx is not None:
                c.completed_indexes.add(idx)
        elif phase == "Failed":
            failed += 1
            t = _finished_at(pod)
            if t is not None and (c.last_failure is None or t > c.last_failure):
                c.last_failure = t
        elif is_terminating(pod):
            c.terminating += 1
        else:
            c.active.append(pod)
            c.ready += is_ready(pod)
            pstatus = pod.get("status") or {}
            for cs in [
                *(pstatus.get("containerStatuses") or ()),
                *(pstatus.get("initContainerStatuses") or ()),
            ]:
                c.restarts += int(cs.get("restartCount") or 0)
    completions = (job.get("spec") or {}).get("completions")
    if indexed and completions is not None:
        c.completed_indexes = {i for i in c.completed_indexes if 0 <= i < int(completions)}
        succeeded = max(succeeded, len(c.completed_indexes))
    # Counters never go backwards: a finished pod deleted by someone else still counted.
    c.succeeded = max(int(status.get("succeeded") or 0), succeeded)
    c.failed = max(int(status.get("failed") or 0), failed)
    return c


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def failure_of(job: Obj, c: Counts, start: dt.datetime | None, now: dt.datetime) -> tuple[str, str] | None:
    """Why the Job has failed (reason, message), or None."""
    spec = job.get("spec") or {}
    limit = _int(spec.get("backoffLimit"), 6)
    if c.failed > limit:
        return BACKOFF_LIMIT_EXCEEDED
    restart_policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if restart_policy == "OnFailure" and (c.restarts > 0 if limit == 0 else c.restarts >= limit):
        return BACKOFF_LIMIT_EXCEEDED
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and start is not None and (now - start).total_seconds() >= int(deadline):
        return DEADLINE_EXCEEDED
    return None


def succeeded(job: Obj, c: Counts) -> bool:
    spec = job.get("spec") or {}
    completions = spec.get("completions")
    if completions is None:
        # Work-queue job: done once some pod succeeded and none is still working.
        return c.succeeded > 0 and not c.active
    if spec.get("completionMode") == "Indexed":
        return len(c.completed_indexes) >= int(completions)
    return c.succeeded >= int(completions)


def want_active(job: Obj, c: Counts) -> int:
    spec = job.get("spec") or {}
    parallelism = _int(spec.get("parallelism"), 1)
    completions = spec.get("completions")
    if completions is None:
        return len(c.active) if c.succeeded > 0 else parallelism
    if spec.get("completionMode") == "Indexed":
        remaining = int(completions) - len(c.completed_indexes)
    else:
        remaining = int(completions) - c.succeeded
    return max(0, min(parallelism, remaining))


def indexes_to_create(job: Obj, c: Counts, n: int) -> list[int]:
    """The lowest indexes with neither a completed nor an active pod."""
    completions = int((job.get("spec") or {}).get("completions") or 0)
    taken = c.completed_indexes | {i for p in c.active if (i := pod_index(p)) is not None}
    return [i for i in range(completions) if i not in taken][: max(0, n)]


def backoff_remaining(c: Counts, now: dt.datetime) -> float:
    """Seconds to wait before replacing a failed pod: 10s * 2^(failures-1) after the last failure."""
    if c.failed == 0 or c.last_failure is None:
        return 0.0
    delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (c.failed - 1)))
    return max(0.0, delay - (now - c.last_failure).total_seconds())


def condition(job: Obj, ctype: str) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def is_job_finished(job: Obj) -> bool:
    return condition(job, "Complete") is not None or condition(job, "Failed") is not None


def set_condition(
    conditions: list[Obj], ctype: str, status: str, reason: str, message: str, now: str
) -> None:
    for cond in conditions:
        if cond.get("type") == ctype:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) == (status, reason, message):
                return  # unchanged: rewriting the probe time would make every sync a write
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now
            cond.update(status=status, reason=reason, message=message, lastProbeTime=now)
            return
    conditions.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
    )


def job_pod(job: Obj, index: int | None) -> Obj:
    md, spec = job["metadata"], job.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    labels: dict[str, str] = {}
    if not spec.get("manualSelector"):
        labels = {k: md["uid"] for k in CONTROLLER_UID_LABELS} | {k: md["name"] for k in JOB_NAME_LABELS}
    annotations: dict[str, str] = {}
    generate_name = f"{md['name']}-"
    if index is not None:
        labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
        generate_name = f"{md['name']}-{index}-"
    pod = new_pod(
        template,
        controller_ref(job, "batch/v1", "Job"),
        md["namespace"],
        generate_name=generate_name,
        labels=labels,
        annotations=annotations,
    )
    if index is not None:
        pod["spec"].setdefault("hostname", f"{md['name']}-{index}")
        env = {
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        }
        for ctr in [*(pod["spec"].get("containers") or ()), *(pod["spec"].get("initContainers") or ())]:
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in ctr.get("env") or ()):
                ctr.setdefault("env", []).append(dict(env))
    return pod


def excess_pods(job: Obj, c: Counts) -> list[Obj]:
    """Active pods beyond what the Job wants: duplicates of finished indexes, then the least useful."""
    if (job.get("spec") or {}).get("completionMode") == "Indexed":
        completions = int((job.get("spec") or {}).get("completions") or 0)
        seen: set[int] = set()
        out = []
        for p in sorted(c.active, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or ""):
            i = pod_index(p)
            if i is None or i in c.completed_indexes or i in seen or not 0 <= i < completions:
                out.append(p)
            else:
                seen.add(i)
        return out
    n = len(c.active) - want_active(job, c)
    if n <= 0:
        return []
    # Not-ready and newest pods first: they have done the least work (two stable sorts).
    newest = sorted(
        c.active, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True
    )
    return sorted(newest, key=is_ready)[:n]


# -------------------------------------------------------------------------------------------------
# the controller


class JobController(Controller):
    name = "job"
    workers = 2

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.expectations = Expectations()

    def setup(self) -> None:
        self.jobs = self.informers.get(JOBS)
        self.pods = self.informers.get(PODS)
        self.pods.add_index(OWNER_UID_INDEX, owner_uid_index)
        self.jobs.add_handler(lambda old, new: self.queue.add(key_of(new or old or {})))
        self.pods.add_handler(owned_pod_handler("Job", self.expectations, self.queue.add))

    def _pods_of(self, job: Obj) -> list[Obj]:
        selector = (job.get("spec") or {}).get("selector")
        pods = self.pods.by_index(OWNER_UID_INDEX, uid_of(job))
        if selector is None:
            return pods
        return [p for p in pods if selector_matches(selector, labels_of(p))]

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        jkey = owner_key(ns, name)
        job = self.jobs.get(ns, name)
        if job is None:
            self.expectations.forget(jkey)
            return None
        if is_terminating(job):
            return None
        if is_job_finished(job):
            return await self._finished(job, jkey)
        now = now_utc()
        stamp = format_time(now)
        status = job.get("status") or {}
        spec = job.get("spec") or {}
        pods = self._pods_of(job)
        c = count_pods(job, pods)
        conditions = [dict(x) for x in status.get("conditions") or ()]
        start = parse_time(status.get("startTime"))
        new: Obj = {}
        recheck: float | None = None
        if (
            spec.get("suspend")
            and condition(job, FAILURE_TARGET) is None
            and condition(job, SUCCESS_CRITERIA_MET) is None
        ):
            await self._delete(jkey, c.active)
            c.active = []
            set_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended", stamp)
        else:
            if condition(job, "Suspended") is not None:
                # Resuming restarts the clock for activeDeadlineSeconds, as upstream.
                set_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed", stamp)
                start = None
            if start is None:
                start = now
                new["startTime"] = format_time(now)
            recheck = await self._progress(job, jkey, c, conditions, start, now, new)
        new.update(
            active=len(c.active),
            ready=c.ready,
            succeeded=c.succeeded,
            failed=c.failed,
            terminating=c.terminating,
        )
        if conditions or status.get("conditions") is not None:
            new["conditions"] = conditions
        if spec.get("completionMode") == "Indexed":
            new["completedIndexes"] = format_indexes(c.completed_indexes)
        await self._write_status(job, new)
        return recheck

    async def _progress(
        self,
        job: Obj,
        jkey: str,
        c: Counts,
        conditions: list[Obj],
        start: dt.datetime,
        now: dt.datetime,
        new: Obj,
    ) -> float | None:
        """Decide failure/success, or create and delete pods toward the wanted number."""
        stamp = format_time(now)
        target = condition(job, FAILURE_TARGET) or condition(job, SUCCESS_CRITERIA_MET)
        if target is None:
            failure = failure_of(job, c, start, now)
            if failure is not None:
                set_condition(conditions, FAILURE_TARGET, "True", *failure, stamp)
                target = {"type": FAILURE_TARGET, "reason": failure[0], "message": failure[1]}
            elif succeeded(job, c):
                set_condition(conditions, SUCCESS_CRITERIA_MET, "True", *COMPLETIONS_REACHED, stamp)
                target = {"type": SUCCESS_CRITERIA_MET}
        if target is not None:
            await self._delete(jkey, c.active)
            c.active, c.terminating, c.ready = [], c.terminating + len(c.active), 0
            if c.terminating == 0:
                self._finish(target, conditions, stamp, new)
            return None
        recheck: float | None = None
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            recheck = max(0.05, int(deadline) - (now - start).total_seconds())
        if self.expectations.satisfied(jkey):
            wait = await self._manage(job, jkey, c, now)
            if wait is not None:
                recheck = wait if recheck is None else min(recheck, wait)
        return recheck

    @staticmethod
    def _finish(target: Obj, conditions: list[Obj], stamp: str, new: Obj) -> None:
        if target["type"] == FAILURE_TARGET:
            set_condition(
                conditions, "Failed", "True", target.get("reason", ""), target.get("message", ""), stamp
            )
        else:
            set_condition(conditions, "Complete", "True", *COMPLETIONS_REACHED, stamp)
            new["completionTime"] = stamp

    async def _manage(self, job: Obj, jkey: str, c: Counts, now: dt.datetime) -> float | None:
        extra = excess_pods(job, c)
        if extra:
            await self._delete(jkey, extra)
            return None
        want = want_active(job, c)
        n = want - len(c.active)
        if n <= 0:
            return None
        wait = backoff_remaining(c, now)
        if wait > 0:
            return wait
        if (job.get("spec") or {}).get("completionMode") == "Indexed":
            pods = [job_pod(job, i) for i in indexes_to_create(job, c, n)]
        else:
            pods = [job_pod(job, None) for _ in range(n)]
        await self._create(job, jkey, pods)
        return None

    async def _create(self, job: Obj, jkey: str, pods: list[Obj]) -> None:
        if not pods:
            return
        self.expectations.expect_creations(jkey, len(pods))
        ns = job["metadata"]["namespace"]
        results = await asyncio.gather(*(self.kc.create(PODS, p, ns) for p in pods), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for _ in errors:
            self.expectations.creation_failed(jkey)
        if errors:
            raise errors[0]

    async def _delete(self, jkey: str, pods: list[Obj]) -> None:
        if not pods:
            return
        self.expectations.expect_deletions(jkey, [uid_of(p) for p in pods])
        for pod in pods:
            md = pod["metadata"]
            try:
                await self.kc.delete(PODS, md["name"], md["namespace"], preconditions={"uid": md["uid"]})
            except NotFound:
                self.expectations.deletion_observed(jkey, md["uid"])
            except Exception:
                self.expectations.deletion_observed(jkey, md["uid"])
                raise

    async def _finished(self, job: Obj, jkey: str) -> float | None:
        """A finished Job keeps no running pods, and goes away ttlSecondsAfterFinished later."""
        c = count_pods(job, self._pods_of(job))
        if c.active:
            await self._delete(jkey, c.active)
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        status = job.get("status") or {}
        done = condition(job, "Complete") or condition(job, "Failed") or {}
        finished = parse_time(status.get("completionTime")) or parse_time(done.get("lastTransitionTime"))
        if finished is None:
            return None
        left = int(ttl) - (now_utc() - finished).total_seconds()
        if left > 0:
            return left
        md = job["metadata"]
        log.info(
            "job %s/%s finished %ss ago; deleting it (ttlSecondsAfterFinished)",
            md["namespace"],
            md["name"],
            ttl,
        )
        await ignore_not_found(
            self.kc.delete(
                JOBS,
                md["name"],
                md["namespace"],
                propagation_policy="Background",
                preconditions={"uid": md["uid"]},
            )
        )
        return None

    async def _write_status(self, job: Obj, new: Obj) -> None:
        current = job.get("status") or {}
        changed = {k: v for k, v in new.items() if current.get(k) != v}
        if not changed:
            return
        md = job["metadata"]
        await ignore_not_found(
            self.kc.patch(JOBS, md["name"], {"status": changed}, md["namespace"], subresource="status")
        )
