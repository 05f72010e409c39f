"""Node facts from edged (images, runtime version/readiness, pressure with hysteresis) and how the node
agent merges them: allocatable after reserved resources, change-only reports, transition times."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from kubeedge.edgecore.edged.cri import CriUnavailable, api
from kubeedge.edgecore.edged.nodeinfo import (
    DISK,
    MAX_IMAGES_IN_STATUS,
    MEMORY,
    PID,
    HostUsage,
    NodeFacts,
    PressureThresholds,
    PressureTracker,
    images_status,
    read_host_usage,
    under_pressure,
)
from kubeedge.edgecore.nodeagent import NodeAgent, NodeAgentConfig, allocatable
from tests.cluster import wait_for
from tests.unit.test_nodeagent import NODE, Clock, FakeHost, Sink

GiB = 1024**3
Mi = 1024**2
CALM = HostUsage(2 * GiB, 100 * GiB, 50 * GiB, 300, 4_194_304)


def test_read_host_usage(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text("MemTotal: 8000 kB\nMemFree: 10 kB\nMemAvailable:  51200 kB\n")
    (tmp_path / "proc/loadavg").write_text("0.10 0.20 0.30 2/913 12345\n")
    (tmp_path / "proc/sys/kernel/pid_max").write_text("4194304\n")
    (tmp_path / "proc/sys/kernel/threads-max").write_text("1000\n")
    u = read_host_usage(tmp_path, tmp_path)
    assert u.memory_available_bytes == 50 * Mi
    assert (u.pids_in_use, u.pid_limit) == (913, 1000)  # the smaller of pid_max and threads-max
    assert u.nodefs_capacity_bytes > 0 and 0 < u.nodefs_available_bytes <= u.nodefs_capacity_bytes
    empty = read_host_usage(tmp_path / "nothing", tmp_path / "nothing")
    assert empty == HostUsage(None, 0, 0, None, None)
    assert under_pressure(empty, PressureThresholds()) == {MEMORY: False, DISK: False, PID: False}
    real = read_host_usage(Path("/"), Path("/"))  # this machine: every signal readable
    assert real.memory_available_bytes and real.pids_in_use and real.pid_limit and real.nodefs_capacity_bytes


def test_thresholds() -> None:
    t = PressureThresholds()
    assert under_pressure(CALM, t) == {MEMORY: False, DISK: False, PID: False}
    low_mem = HostUsage(99 * Mi, 100 * GiB, 50 * GiB, 300, 1000)
    assert under_pressure(low_mem, t)[MEMORY]
    full_disk = HostUsage(2 * GiB, 100 * GiB, 9 * GiB, 300, 1000)
    assert under_pressure(full_disk, t)[DISK]
    assert not under_pressure(HostUsage(2 * GiB, 100 * GiB, 10 * GiB, 900, 1000), t)[DISK]  # exactly 10%
    assert under_pressure(HostUsage(2 * GiB, 100 * GiB, 50 * GiB, 901, 1000), t)[PID]
    assert not under_pressure(HostUsage(2 * GiB, 100 * GiB, 50 * GiB, 900, 1000), t)[PID]


def test_pressure_hysteresis() -> None:
    tr = PressureTracker(300)
    assert tr.observe({MEMORY: True}, 0)[MEMORY]
    assert tr.observe({MEMORY: False}, 100)[MEMORY]  # clear for only 100 s
    assert tr.observe({MEMORY: True}, 200)[MEMORY]
    assert tr.observe({MEMORY: False}, 499)[MEMORY]
    assert not tr.observe({MEMORY: False}, 500)[MEMORY]  # 300 s since last seen


def test_images_status() -> None:
    imgs = [api.Image(id=f"sha256:{i}", repo_tags=[f"img{i}:1"], size=i) for i in range(60)]
    imgs.append(api.Image(id="sha256:nameless", size=10**9))
    imgs.append(
        api.Image(
            id="sha256:many", repo_tags=[f"t{i}" for i in range(7)], repo_digests=["r@sha256:x"], size=100
        )
    )
    out = images_status(imgs)
    assert len(out) == MAX_IMAGES_IN_STATUS
    assert out[0] == {"names": ["r@sha256:x", "t0", "t1", "t2", "t3"], "sizeBytes": 100}
    assert [o["sizeBytes"] for o in out[1:3]] == [59, 58]


class FakeRuntime:
    def __init__(self) -> None:
        self.down = False
        self.network_ready = True
        self.images = [api.Image(id="sha256:a", repo_tags=["kubeedge.local/busybox:latest"], size=1234)]

    def _check(self) -> None:
        if self.down:
            raise CriUnavailable("Version", grpc.StatusCode.UNAVAILABLE, "connect: no such file")

    async def version(self) -> api.VersionResponse:
        self._check()
        return api.VersionResponse(runtime_name="containerd", runtime_version="1.6.20")

    async def list_images(self) -> list[api.Image]:
        self._check()
        return list(self.images)

    async def status(self) -> api.StatusResponse:
        self._check()
        return api.StatusResponse(
            status=api.RuntimeStatus(
                conditions=[
                    api.RuntimeCondition(type="RuntimeReady", status=True),
                    api.RuntimeCondition(
                        type="NetworkReady",
                        status=self.network_ready,
                        reason="NetworkPluginNotReady",
                        message="cni",
                    ),
                ]
            )
        )


def conds(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}


async def test_node_facts() -> None:
    rt = FakeRuntime()
    usage = [CALM]
    now = [0.0]
    facts = NodeFacts(rt, nodefs=Path("/"), clock=lambda: now[0], usage=lambda: usage[0])  # type: ignore[arg-type]
    snap = await facts()
    assert snap["nodeInfo"] == {"containerRuntimeVersion": "containerd://1.6.20"}
    assert snap["images"] == [{"names": ["kubeedge.local/busybox:latest"], "sizeBytes": 1234}]
    assert {c["type"]: c["status"] for c in snap["conditions"]} == {
        MEMORY: "False",
        DISK: "False",
        PID: "False",
    }
    usage[0] = HostUsage(10 * Mi, 100 * GiB, 50 * GiB, 300, 1000)
    snap = await facts()
    mem = next(c for c in snap["conditions"] if c["type"] == MEMORY)
    assert (mem["status"], mem["reason"]) == ("True", "EdgeHasInsufficientMemory")
    rt.down = True
    snap = await facts()
    ready = next(c for c in snap["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "container runtime is down" in ready["message"]
    assert snap["nodeInfo"]["containerRuntimeVersion"] == "containerd://1.6.20"  # last known
    assert snap["images"][0]["sizeBytes"] == 1234
    rt.down, rt.network_ready = False, False
    snap = await facts()
    ready = next(c for c in snap["conditions"] if c["type"] == "Ready")
    assert "network not ready: NetworkPluginNotReady" in ready["message"]
    no_cri = await NodeFacts(None, nodefs=Path("/"), usage=lambda: CALM)()
    assert set(no_cri) == {"conditions"}


def test_allocatable_and_reserved_validation() -> None:
    cap = {"cpu": "4", "memory": f"{8 * 1024**2}Ki", "pods": "110", "ephemeral-storage": f"{100 * 1024**2}Ki"}
    cfg = NodeAgentConfig(system_reserved={"cpu": "500m", "memory": "1Gi"}, kube_reserved={"cpu": "250m"})
    out = allocatable(cap, cfg.reserved())
    assert out == {**cap, "cpu": "3250m", "memory": f"{7 * 1024**2}Ki"}
    assert allocatable(cap, NodeAgentConfig(kube_reserved={"cpu": "2", "memory": "100Gi"}).reserved()) == {
        **cap,
        "cpu": "2",
        "memory": "0Ki",
    }
    with pytest.raises(ValueError, match="invalid quantity"):
        NodeAgentConfig(system_reserved={"memory": "lots"})
    with pytest.raises(ValueError, match="negative"):
        NodeAgentConfig(kube_reserved={"cpu": "-1"})


def agent_with(extra: Any, clock: Clock, sink: Sink, **cfg: Any) -> NodeAgent:
    return NodeAgent(NODE, {}, sink, clock, config=NodeAgentConfig(**cfg), host=FakeHost(), extra=extra)


async def test_agent_merges_extra_and_reports_changes() -> None:
    clock, sink = Clock(), Sink()
    snapshot: dict[str, Any] = {}
    fail = [False]

    async def extra() -> dict[str, Any]:
        if fail[0]:
            raise RuntimeError("provider broke")
        return snapshot

    a = agent_with(
        extra,
        clock,
        sink,
        status_interval=10,
        status_report_interval=600,
        lease_interval=1000,
        system_reserved={"cpu": "1"},
    )
    snapshot.update(
        nodeInfo={"containerRuntimeVersion": "containerd://1.6.20"},
        images=[{"names": ["kubeedge.local/busybox:latest"], "sizeBytes": 1234}],
        conditions=[{"type": MEMORY, "status": "False", "reason": "EdgeHasSufficientMemory", "message": "m"}],
    )
    await a.refresh_extra()
    await a.tick()  # registration
    [reg] = [c for r, _, c, _ in sink.take() if "/node/" in r]
    st = reg["status"]
    assert st["nodeInfo"]["containerRuntimeVersion"] == "containerd://1.6.20"
    assert st["nodeInfo"]["kubeletVersion"]  # the agent's own facts stay
    assert st["images"][0]["names"] == ["kubeedge.local/busybox:latest"]
    assert st["allocatable"]["cpu"] == "3" and st["capacity"]["cpu"] == "4"
    assert (
        conds(st)[MEMORY]["message"] == "m"
        and conds(st)[MEMORY]["lastTransitionTime"] == "2027-01-15T08:00:00Z"
    )

    def patches() -> list[dict[str, Any]]:
        return [orjson.loads(c)["status"] for r, _, c, _ in sink.take() if "/nodepatch/" in r]

    clock.now += 10
    await a.refresh_extra()
    await a.tick()
    assert len(patches()) == 1  # the first check after registering always sends (restart case)
    clock.now += 10
    await a.refresh_extra()
    await a.tick()
    assert patches() == []  # nothing changed
    snapshot["images"] = [*snapshot["images"], {"names": ["new:1"], "sizeBytes": 1}]
    await a.refresh_extra()
    clock.now += 10
    await a.tick()
    [p] = patches()
    assert len(p["images"]) == 2
    # A pressure flip is a change, with its own transition time; a runtime problem turns Ready False.
    snapshot["conditions"] = [
        {"type": MEMORY, "status": "True", "reason": "EdgeHasInsufficientMemory", "message": "low"},
        {
            "type": "Ready",
            "status": "False",
            "reason": "EdgeNotReady",
            "message": "container runtime is down",
        },
    ]
    await a.refresh_extra()
    clock.now += 10
    await a.tick()
    [p] = patches()
    assert (
        conds(p)[MEMORY]["status"] == "True"
        and conds(p)[MEMORY]["lastTransitionTime"] == "2027-01-15T08:00:40Z"
    )
    assert conds(p)["Ready"]["status"] == "False"
    assert conds(p)[DISK]["lastTransitionTime"] == "2027-01-15T08:00:00Z"  # unchanged since start
    fail[0] = True  # the provider breaks: its last facts stay, nothing is re-sent
    await a.refresh_extra()
    clock.now += 10
    await a.tick()
    assert patches() == []


async def test_run_refreshes_before_registering_and_keeps_refreshing() -> None:
    clock, sink = Clock(), Sink()
    calls = [0]
    gate = asyncio.Event()

    async def extra() -> dict[str, Any]:
        calls[0] += 1
        return {"nodeInfo": {"containerRuntimeVersion": f"containerd://{calls[0]}"}}

    async def sleep(_seconds: float) -> None:
        await gate.wait()
        gate.clear()

    a = agent_with(extra, clock, sink, lease_interval=1000)
    task = asyncio.create_task(a.run(sleep=sleep))
    try:

        async def registered() -> list[Any]:
            return [c for r, _, c, _ in sink.sent if "/node/" in r]

        [reg] = await wait_for(registered, deadline_s=5, what="registration")
        assert reg["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://1"
        gate.set()  # lets one of the two loops go round

        async def refreshed() -> bool:
            if calls[0] < 2:
                gate.set()
            return calls[0] >= 2

        await wait_for(refreshed, deadline_s=5, what="a second refresh")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
