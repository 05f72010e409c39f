"""Pod status from what the runtime reports: phase, conditions, container statuses, IPs, QoS class.

Pure functions over plain data (`ContainerView`, `PodObservation`), following the kubelet's rules
(getPhase, generateAPIPodStatus, convertToAPIContainerStatuses) so that `kubectl get pods` reads the
same as on a Kubernetes node. Times in the result are RFC 3339 seconds, as the API server stores them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kubeedge.kube.quantity import try_parse_quantity
from kubeedge.store import Obj

CREATED: Final = "created"
RUNNING: Final = "running"
EXITED: Final = "exited"
UNKNOWN: Final = "unknown"

PENDING: Final = "Pending"
RUNNING_PHASE: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
TERMINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED})

# Waiting reasons (the kubelet's words; users and tooling match on them).
CONTAINER_CREATING: Final = "ContainerCreating"
POD_INITIALIZING: Final = "PodInitializing"
CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
ERR_IMAGE_PULL: Final = "ErrImagePull"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
RUN_CONTAINER_ERROR: Final = "RunContainerError"
CREATE_CONTAINER_ERROR: Final = "CreateContainerError"
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
# A container of a terminated pod that the runtime no longer knows (the kubelet's TerminatePod words).
STATUS_UNKNOWN: Final = "ContainerStatusUnknown"
STATUS_UNKNOWN_MESSAGE: Final = "The container could not be located when the pod was terminated"
STATUS_UNKNOWN_EXIT: Final = 137


@dataclass(frozen=True)
class ContainerView:
    """One runtime container, reduced to what status and the reconcile loop use (times in seconds)."""

    id: str
    name: str
    state: str
    restart_count: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image: str = ""
    image_ref: str = ""
    spec_hash: str = ""
    sandbox_id: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PodObservation:
    # Per container name, that container's instances newest first (the current one, then the previous).
    containers: Mapping[str, Sequence[ContainerView]] = field(default_factory=dict)
    pod_ips: tuple[str, ...] = ()
    host_ips: tuple[str, ...] = ()
    # Why a container is not running, from the last sync: (reason, message).
    waiting: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Probe verdicts per container id; a container without the probe is judged by its state alone.
    ready: Mapping[str, bool] = field(default_factory=dict)
    started: Mapping[str, bool] = field(default_factory=dict)
    start_time: float = 0.0
    runtime: str = "containerd"


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def restart_policy(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("restartPolicy") or "Always")


def should_restart(policy: str, exit_code: int, *, init: bool = False) -> bool:
    """Whether an exited container is started again; init containers never restart after success."""
    if policy == "Never":
        return False
    if policy == "OnFailure" or init:
        return exit_code != 0
    return True


def _containers(pod: Obj, kind: str) -> list[Obj]:
    return list((pod.get("spec") or {}).get(kind) or [])


def qos_class(pod: Obj) -> str:
    """Guaranteed: every container limits cpu and memory with requests equal; BestEffort: nothing set."""
    any_set = False
    guaranteed = True
    for c in _containers(pod, "initContainers") + _containers(pod, "containers"):
        res = c.get("resources") or {}
        limits = {k: try_parse_quantity(v) for k, v in (res.get("limits") or {}).items()}
        requests = {k: try_parse_quantity(v) for k, v in (res.get("requests") or {}).items()}
        if any(v for v in (*limits.values(), *requests.values())):
            any_set = True
        for r in ("cpu", "memory"):
            lim = limits.get(r)
            req = requests.get(r, lim)
            if not lim or req != lim:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _terminated(c: ContainerView, runtime: str) -> Obj:
    out: Obj = {
        "exitCode": c.exit_code,
        "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
        "startedAt": rfc3339(c.started_at) if c.started_at else None,
        "finishedAt": rfc3339(c.finished_at) if c.finished_at else None,
        "containerID": f"{runtime}://{c.id}",
    }
    if c.message:
        out["message"] = c.message
    return out


def container_status(
    spec: Obj,
    instances: Sequence[ContainerView],
    obs: PodObservation,
    policy: str,
    *,
    init: bool = False,
    default_waiting: str = CONTAINER_CREATING,
    terminal: bool = False,
) -> Obj:
    """The kubelet's ContainerStatus for one spec container, from its newest instances; in a `terminal`
    pod (deleted and stopped) nothing restarts, so an exited container stays terminated."""
    name = str(spec.get("name", ""))
    image = str(spec.get("image", ""))
    cur = instances[0] if instances else None
    prev = instances[1] if len(instances) > 1 else None
    st: Obj = {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
    }
    last: Obj = {}
    if prev is not None and prev.state == EXITED:
        last = {"terminated": _terminated(prev, obs.runtime)}
    waiting = obs.waiting.get(name)
    if cur is None:
        reason, message = waiting or (default_waiting, "")
        st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    else:
        st["restartCount"] = cur.restart_count
        st["imageID"] = cur.image_ref
        st["containerID"] = f"{obs.runtime}://{cur.id}"
        if cur.state == RUNNING:
            st["state"] = {"running": {"startedAt": rfc3339(cur.started_at)}}
            probe_started = obs.started.get(cur.id)
            st["started"] = probe_started if spec.get("startupProbe") else True
            probe_ready = obs.ready.get(cur.id)
            ready = probe_ready if spec.get("readinessProbe") else True
            st["ready"] = bool(ready) and bool(st["started"])
        elif cur.state == EXITED and not terminal and should_restart(policy, cur.exit_code, init=init):
            # Going to be restarted: waiting, with the run that ended as lastState.
            last = {"terminated": _terminated(cur, obs.runtime)}
            reason, message = waiting or (CONTAINER_CREATING, "")
            st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        elif cur.state == EXITED:
            st["state"] = {"terminated": _terminated(cur, obs.runtime)}
        else:
            # Created but never started (a failed start), or unknown to the runtime right now.
            reason, message = waiting or (default_waiting, "")
            st["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if init and cur.state == EXITED and cur.exit_code == 0:
            st["ready"] = True
    st["lastState"] = last
    return st


def _exited_ok(st: Obj) -> bool:
    term = (st.get("state") or {}).get("terminated") or {}
    return bool(term) and term.get("exitCode") == 0


def pod_phase(
    pod: Obj,
    init_statuses: Sequence[Obj],
    statuses: Sequence[Obj],
    prev_phase: str = "",
    *,
    terminal: bool = False,
) -> str:
    """kubelet getPhase; a pod that reached Succeeded/Failed stays there. A `terminal` pod's stopped
    containers are not restarted whatever the policy, so it ends Succeeded or Failed."""
    if prev_phase in TERMINAL_PHASES:
        return prev_phase
    policy = restart_policy(pod)
    pending_init = False
    failed_init = False
    for st in init_statuses:
        state = st.get("state") or {}
        if _exited_ok(st):
            continue
        if "terminated" in state:
            failed_init = True
        elif "waiting" in state and (st.get("lastState") or {}).get("terminated"):
            pending_init = True  # failed, restarting
        else:
            pending_init = True
    if failed_init and policy == "Never":
        return FAILED
    if pending_init or failed_init:
        return PENDING
    running = waiting = stopped = succeeded = 0
    for st in statuses:
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif (st.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return PENDING
    if running:
        return RUNNING_PHASE
    if stopped:
        if terminal:
            return SUCCEEDED if stopped == succeeded else FAILED
        if policy == "Always":
            return RUNNING_PHASE
        if stopped == succeeded:
            return SUCCEEDED
        if policy == "Never":
            return FAILED
        return RUNNING_PHASE
    return PENDING


def _condition(
    ctype: str, ok: bool, prev: Mapping[str, Obj], now: float, reason: str = "", msg: str = ""
) -> Obj:
    status = "True" if ok else "False"
    old = prev.get(ctype)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    c: Obj = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or rfc3339(now),
    }
    if not ok and reason:
        c["reason"] = reason
        if msg:
            c["message"] = msg
    return c


def _unknown_terminated(st: Obj, prev: Mapping[str, Obj]) -> Obj:
    """A terminal pod's container that is not terminated: what was last reported for it if that was a
    termination (the runtime may have removed it since), else the kubelet's ContainerStatusUnknown
    (never a success: nobody saw it exit)."""
    if "terminated" in (st.get("state") or {}):
        return st
    old = prev.get(str(st.get("name")))
    if old is not None and "terminated" in (old.get("state") or {}):
        return {**st, **{k: old[k] for k in ("state", "containerID", "imageID") if k in old}}
    unknown = {"exitCode": STATUS_UNKNOWN_EXIT, "reason": STATUS_UNKNOWN, "message": STATUS_UNKNOWN_MESSAGE}
    return {**st, "state": {"terminated": unknown}, "ready": False, "started": False}


def _was_terminated(prev: Mapping[str, Obj], st: Obj) -> bool:
    return "terminated" in ((prev.get(str(st.get("name"))) or {}).get("state") or {})


def _by_name(statuses: object) -> dict[str, Obj]:
    items = statuses if isinstance(statuses, list) else []
    return {str(s.get("name")): s for s in items if isinstance(s, dict)}


def compute_status(
    pod: Obj, obs: PodObservation, prev: Obj | None, now: float, *, terminal: bool = False
) -> Obj:
    """The pod's full status; `prev` (the last one reported) keeps transition times and IPs stable.

    `terminal`: the pod was deleted and its containers are stopped — its final status before the
    deletion is confirmed (the kubelet's TerminatePod): every container terminated, phase Succeeded
    only if all of them exited 0, Failed otherwise."""
    prev = prev or {}
    policy = restart_policy(pod)
    init_specs = _containers(pod, "initContainers")
    specs = _containers(pod, "containers")
    init_statuses = [
        container_status(
            c, obs.containers.get(c.get("name", ""), ()), obs, policy, init=True, terminal=terminal
        )
        for c in init_specs
    ]
    initialized = all(_exited_ok(s) for s in init_statuses)
    statuses = [
        container_status(
            c,
            obs.containers.get(c.get("name", ""), ()),
            obs,
            policy,
            default_waiting=CONTAINER_CREATING if initialized else POD_INITIALIZING,
            terminal=terminal,
        )
        for c in specs
    ]
    if init_statuses and not initialized and any("running" in (s.get("state") or {}) for s in statuses):
        initialized = True  # containers only run once init finished (their records may be gone)
    if terminal:
        # Once initialized, any container without a termination is a failure; before that the
        # app containers never ran and stay waiting, as does an init container that never started.
        old = _by_name(prev.get("containerStatuses"))
        if initialized:
            statuses = [_unknown_terminated(st, old) for st in statuses]
        old_init = _by_name(prev.get("initContainerStatuses"))
        init_statuses = [
            _unknown_terminated(st, old_init)
            if st.get("containerID") or _was_terminated(old_init, st)
            else st
            for st in init_statuses
        ]
    phase = pod_phase(pod, init_statuses, statuses, str(prev.get("phase") or ""), terminal=terminal)
    if terminal and phase not in TERMINAL_PHASES:
        phase = FAILED  # still waiting for something that will never run now
    prev_conditions = {str(c.get("type")): c for c in prev.get("conditions") or [] if isinstance(c, dict)}
    unready = [s["name"] for s in statuses if not s["ready"]]
    completed = phase == SUCCEEDED
    uninit = [s["name"] for s in init_statuses if not _exited_ok(s)]
    containers_ready = not unready and not completed
    if completed:
        ready_reason, ready_msg = "PodCompleted", ""
    elif not initialized:
        ready_reason, ready_msg = (
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninit)}]",
        )
    else:
        ready_reason, ready_msg = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        )
    conditions = [
        _condition(
            "Initialized",
            initialized or completed,
            prev_conditions,
            now,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninit)}]",
        ),
        _condition("Ready", containers_ready, prev_conditions, now, ready_reason, ready_msg),
        _condition("ContainersReady", containers_ready, prev_conditions, now, ready_reason, ready_msg),
        _condition("PodScheduled", True, prev_conditions, now),
    ]
    if completed:
        conditions[0] = _condition("Initialized", True, prev_conditions, now)
    pod_ips = obs.pod_ips or tuple(
        str(p.get("ip")) for p in prev.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")
    )
    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": obs.host_ips[0] if obs.host_ips else None,
        "hostIPs": [{"ip": ip} for ip in obs.host_ips] or None,
        "podIP": pod_ips[0] if pod_ips else None,
        "podIPs": [{"ip": ip} for ip in pod_ips] or None,
        "startTime": rfc3339(obs.start_time) if obs.start_time else prev.get("startTime"),
        "qosClass": qos_class(pod),
        "containerStatuses": statuses,
    }
    if init_specs:
        status["initContainerStatuses"] = init_statuses
    return {k: v for k, v in status.items() if v is not None}


def merge_patch(prev: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Obj:
    """A JSON merge patch turning status `prev` into `new` at the top level (lists are replaced whole,
    as merge patch does; keys that went away become null)."""
    out: Obj = dict(new)
    for k in prev or {}:
        if k not in new:
            out[k] = None
    return out
