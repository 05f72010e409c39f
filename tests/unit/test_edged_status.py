"""edged pod status: phase, conditions and container statuses from runtime views (kubelet rules)."""

from __future__ import annotations

from typing import Any

from kubeedge.edgecore.edged.status import (
    CRASH_LOOP_BACK_OFF,
    EXITED,
    RUNNING,
    ContainerView,
    PodObservation,
    compute_status,
    merge_patch,
    pod_phase,
    qos_class,
    rfc3339,
)

NOW = 1_700_000_000.0


def pod(policy: str = "Always", init: int = 0, containers: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": [{"name": f"init{i}", "image": "busybox"} for i in range(init)],
            "containers": [{"name": f"c{i}", "image": "busybox", **spec} for i in range(containers)],
        },
    }


def view(
    name: str, state: str, *, exit_code: int = 0, restarts: int = 0, cid: str = "", t: float = NOW
) -> ContainerView:
    return ContainerView(
        id=cid or f"{name}-{restarts}",
        name=name,
        state=state,
        restart_count=restarts,
        created_at=t - 10,
        started_at=t - 9,
        finished_at=t - 1 if state == EXITED else 0.0,
        exit_code=exit_code,
        reason=("Completed" if exit_code == 0 else "Error") if state == EXITED else "",
        image="busybox",
        image_ref="sha256:abc",
    )


def obs(**kw: Any) -> PodObservation:
    kw.setdefault("pod_ips", ("10.1.0.5",))
    kw.setdefault("host_ips", ("192.168.1.2",))
    kw.setdefault("start_time", NOW - 60)
    return PodObservation(**kw)


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_running_pod_is_ready_with_ips_and_ids() -> None:
    st = compute_status(pod(), obs(containers={"c0": [view("c0", RUNNING, cid="abc")]}), None, NOW)
    assert st["phase"] == "Running"
    assert conditions(st) == {
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert (st["podIP"], st["podIPs"], st["hostIP"]) == ("10.1.0.5", [{"ip": "10.1.0.5"}], "192.168.1.2")
    assert st["startTime"] == rfc3339(NOW - 60) and st["qosClass"] == "BestEffort"
    (cs,) = st["containerStatuses"]
    assert cs["containerID"] == "containerd://abc" and cs["imageID"] == "sha256:abc"
    assert cs["state"] == {"running": {"startedAt": rfc3339(NOW - 9)}}
    assert (cs["ready"], cs["started"], cs["restartCount"], cs["lastState"]) == (True, True, 0, {})
    assert "initContainerStatuses" not in st


def test_readiness_probe_gates_ready_and_transition_times_stay() -> None:
    p = pod(readinessProbe={"exec": {"command": ["true"]}})
    running = {"c0": [view("c0", RUNNING, cid="x")]}
    first = compute_status(p, obs(containers=running), None, NOW)
    assert first["containerStatuses"][0]["ready"] is False  # no verdict yet
    assert conditions(first)["Ready"] == "False"
    ready_cond = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert ready_cond["reason"] == "ContainersNotReady" and "[c0]" in ready_cond["message"]
    # Unchanged later: the transition time is the first one, so the status compares equal.
    again = compute_status(p, obs(containers=running), first, NOW + 30)
    assert again == first
    ready = compute_status(p, obs(containers=running, ready={"x": True}), first, NOW + 40)
    assert conditions(ready)["Ready"] == "True"
    t = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert t["Ready"] == rfc3339(NOW + 40) and t["PodScheduled"] == rfc3339(NOW)


def test_crash_looping_container_waits_with_last_state() -> None:
    views = {"c0": [view("c0", EXITED, exit_code=2, restarts=3), view("c0", EXITED, exit_code=2, restarts=2)]}
    waiting = {"c0": (CRASH_LOOP_BACK_OFF, "back-off 40s restarting failed container=c0")}
    st = compute_status(pod(), obs(containers=views, waiting=waiting), None, NOW)
    (cs,) = st["containerStatuses"]
    assert cs["state"]["waiting"]["reason"] == CRASH_LOOP_BACK_OFF
    assert cs["lastState"]["terminated"]["exitCode"] == 2 and cs["restartCount"] == 3
    assert st["phase"] == "Running"  # restartPolicy Always: a crash loop is still a running pod


def test_restart_policy_never_and_onfailure_phases() -> None:
    failed = {"c0": [view("c0", EXITED, exit_code=1)]}
    done = {"c0": [view("c0", EXITED, exit_code=0)]}
    assert compute_status(pod("Never"), obs(containers=failed), None, NOW)["phase"] == "Failed"
    st = compute_status(pod("Never"), obs(containers=done), None, NOW)
    assert st["phase"] == "Succeeded"
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == "PodCompleted"
    assert compute_status(pod("OnFailure"), obs(containers=done), None, NOW)["phase"] == "Succeeded"
    # OnFailure restarts the failed one: waiting with lastState, the pod is Running.
    st = compute_status(pod("OnFailure"), obs(containers=failed), None, NOW)
    assert st["phase"] == "Running" and "waiting" in st["containerStatuses"][0]["state"]
    # A terminal phase is never left.
    assert pod_phase(pod(), [], [], prev_phase="Succeeded") == "Succeeded"


def test_nothing_started_yet_is_pending_with_reasons() -> None:
    st = compute_status(
        pod(), obs(containers={}, waiting={"c0": ("ErrImagePull", "no such image")}), None, NOW
    )
    assert st["phase"] == "Pending"
    assert st["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": "no such image"}
    }
    st = compute_status(pod(), obs(containers={}), None, NOW)
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_init_containers_gate_the_pod() -> None:
    p = pod(init=2)
    running_init = {"init0": [view("init0", EXITED)], "init1": [view("init1", RUNNING)]}
    st = compute_status(p, obs(containers=running_init), None, NOW)
    assert st["phase"] == "Pending" and conditions(st)["Initialized"] == "False"
    assert [s["name"] for s in st["initContainerStatuses"]] == ["init0", "init1"]
    assert st["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert st["initContainerStatuses"][0]["ready"] is True
    done = {**running_init, "init1": [view("init1", EXITED)], "c0": [view("c0", RUNNING)]}
    st = compute_status(p, obs(containers=done), None, NOW)
    assert st["phase"] == "Running" and conditions(st)["Initialized"] == "True"
    failed = {"init0": [view("init0", EXITED, exit_code=1)]}
    assert compute_status(pod("Never", init=1), obs(containers=failed), None, NOW)["phase"] == "Failed"
    st = compute_status(pod("Always", init=1), obs(containers=failed), None, NOW)
    assert st["phase"] == "Pending"  # the init container is retried


def test_terminal_pod_keeps_its_ip_after_the_sandbox_went() -> None:
    first = compute_status(pod("Never"), obs(containers={"c0": [view("c0", EXITED)]}), None, NOW)
    later = compute_status(
        pod("Never"), obs(containers={"c0": [view("c0", EXITED)]}, pod_ips=()), first, NOW + 5
    )
    assert later["podIP"] == "10.1.0.5"


def test_qos_classes() -> None:
    assert qos_class(pod()) == "BestEffort"
    g = {"limits": {"cpu": "500m", "memory": "64Mi"}}
    assert qos_class(pod(resources=g)) == "Guaranteed"
    assert qos_class(pod(resources={**g, "requests": {"cpu": "0.5", "memory": "64Mi"}})) == "Guaranteed"
    assert qos_class(pod(resources={"requests": {"cpu": "100m"}})) == "Burstable"
    assert qos_class(pod(resources={**g, "requests": {"cpu": "100m"}})) == "Burstable"


def test_merge_patch_nulls_what_went_away() -> None:
    assert merge_patch({"phase": "Running", "message": "x"}, {"phase": "Failed"}) == {
        "phase": "Failed",
        "message": None,
    }
    assert merge_patch(None, {"phase": "Running"}) == {"phase": "Running"}


def test_deleted_pod_final_status_is_terminal_whatever_the_policy() -> None:
    # Stopped for a deletion under restartPolicy Always: no restart is coming, so the containers show
    # terminated (not waiting for a restart) and the phase says how they ended.
    ok = obs(containers={"c0": [view("c0", EXITED, exit_code=0)], "c1": [view("c1", EXITED, exit_code=0)]})
    st = compute_status(pod(containers=2), ok, None, NOW, terminal=True)
    assert st["phase"] == "Succeeded"
    assert [cs["state"]["terminated"]["reason"] for cs in st["containerStatuses"]] == ["Completed"] * 2
    assert conditions(st)["Ready"] == "False"
    # Not terminal, the same runtime view is a pod about to restart its containers.
    assert compute_status(pod(containers=2), ok, None, NOW)["phase"] == "Running"
    killed = obs(
        containers={"c0": [view("c0", EXITED, exit_code=0)], "c1": [view("c1", EXITED, exit_code=137)]}
    )
    st = compute_status(pod(containers=2), killed, None, NOW, terminal=True)
    assert st["phase"] == "Failed"
    assert st["containerStatuses"][1]["state"]["terminated"] == {
        "exitCode": 137,
        "reason": "Error",
        "startedAt": rfc3339(NOW - 9),
        "finishedAt": rfc3339(NOW - 1),
        "containerID": "containerd://c1-0",
    }


def test_deleted_pod_containers_the_runtime_lost() -> None:
    # Reported terminated before (then removed, e.g. an edgecore restart mid-deletion): kept as it was.
    before = compute_status(pod(), obs(containers={"c0": [view("c0", EXITED)]}), None, NOW, terminal=True)
    again = compute_status(pod(), obs(containers={}), before, NOW + 5, terminal=True)
    assert again["containerStatuses"] == before["containerStatuses"] and again["phase"] == "Succeeded"
    # Never seen exiting: a failure, never a success.
    running = compute_status(pod(), obs(containers={"c0": [view("c0", RUNNING)]}), None, NOW)
    st = compute_status(pod(), obs(containers={}), running, NOW + 5, terminal=True)
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert (term["reason"], term["exitCode"], st["phase"]) == ("ContainerStatusUnknown", 137, "Failed")
    # Deleted before its init container ran: Failed, with the containers that never started waiting.
    st = compute_status(pod(init=1), obs(containers={}), None, NOW, terminal=True)
    assert st["phase"] == "Failed"
    assert "waiting" in st["containerStatuses"][0]["state"]
    assert "waiting" in st["initContainerStatuses"][0]["state"]


def test_pod_phase_terminal_flag() -> None:
    stopped = [{"name": "c", "state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 0}}}]
    assert pod_phase(pod(), [], stopped) == "Running"
    done = [{"name": "c", "state": {"terminated": {"exitCode": 0}}}]
    assert pod_phase(pod(), [], done, terminal=True) == "Succeeded"
