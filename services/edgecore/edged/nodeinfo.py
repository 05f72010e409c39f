"""Node status facts edged knows and the node agent does not: the runtime's images and version, whether the
runtime is ready, and the host's memory, disk and PID pressure (the kubelet's eviction signals).

`NodeFacts` is the node agent's `extra` provider: an async call returning the part of the Node status it
contributes. Pressure uses the kubelet's hard-eviction defaults and its transition period, so a condition
does not flap (and cause a status report) every time usage wobbles around a threshold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .cri import CriClient, CriError, api

log = logging.getLogger(__name__)

# The kubelet's nodeStatusMaxImages and maxNamesPerImageInNodeStatus.
MAX_IMAGES_IN_STATUS: Final = 50
MAX_NAMES_PER_IMAGE: Final = 5
# The kubelet's default hard eviction thresholds and evictionPressureTransitionPeriod.
DEFAULT_MEMORY_AVAILABLE_BYTES: Final = 100 * 1024**2
DEFAULT_NODEFS_AVAILABLE_PERCENT: Final = 10.0
DEFAULT_PIDS_AVAILABLE_PERCENT: Final = 10.0
DEFAULT_TRANSITION_PERIOD_S: Final = 300.0
# A CRI call made for the status must not hold the status back for long; the last facts stay.
CRI_TIMEOUT_S: Final = 5.0

MEMORY: Final = "MemoryPressure"
DISK: Final = "DiskPressure"
PID: Final = "PIDPressure"
# type -> (reason, message) when under pressure, and when not (the node agent's wording for the latter).
_WORDING: Final = {
    MEMORY: (
        ("EdgeHasInsufficientMemory", "edge has insufficient memory available"),
        ("EdgeHasSufficientMemory", "edge has sufficient memory"),
    ),
    DISK: (
        ("EdgeHasDiskPressure", "edge has disk pressure"),
        ("EdgeHasNoDiskPressure", "edge has no disk pressure"),
    ),
    PID: (
        ("EdgeHasInsufficientPID", "edge has insufficient PID available"),
        ("EdgeHasSufficientPID", "edge has sufficient PID available"),
    ),
}


@dataclass(frozen=True)
class PressureThresholds:
    memory_available_bytes: int = DEFAULT_MEMORY_AVAILABLE_BYTES  # evictionHard memory.available
    nodefs_available_percent: float = DEFAULT_NODEFS_AVAILABLE_PERCENT  # evictionHard nodefs.available
    pids_available_percent: float = DEFAULT_PIDS_AVAILABLE_PERCENT  # evictionHard pid.available
    transition_period_s: float = DEFAULT_TRANSITION_PERIOD_S


@dataclass(frozen=True)
class HostUsage:
    memory_available_bytes: int | None  # None: unknown (no MemAvailable)
    nodefs_capacity_bytes: int
    nodefs_available_bytes: int
    pids_in_use: int | None
    pid_limit: int | None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def read_host_usage(root: Path, nodefs: Path) -> HostUsage:
    """/proc/meminfo MemAvailable, statvfs of the node's data filesystem, tasks from /proc/loadavg against
    min(pid_max, threads-max) — the same sources the kubelet's eviction manager reads."""
    mem: int | None = None
    for line in _read(root / "proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            mem = int(line.split()[1]) * 1024
            break
    try:
        st = os.statvfs(nodefs)
        capacity, available = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError:
        capacity = available = 0
    tasks: int | None = None
    fields = _read(root / "proc/loadavg").split()
    if len(fields) >= 4 and "/" in fields[3]:
        tasks = int(fields[3].split("/")[1])
    limits = [
        int(v)
        for v in (_read(root / "proc/sys/kernel/pid_max"), _read(root / "proc/sys/kernel/threads-max"))
        if v.strip().isdigit()
    ]
    return HostUsage(mem, capacity, available, tasks, min(limits) if limits else None)


def under_pressure(usage: HostUsage, t: PressureThresholds) -> dict[str, bool]:
    """Which signals cross their threshold right now (unknown signals never do)."""
    disk = usage.nodefs_capacity_bytes > 0 and (
        usage.nodefs_available_bytes * 100.0 / usage.nodefs_capacity_bytes < t.nodefs_available_percent
    )
    pids = False
    if usage.pids_in_use is not None and usage.pid_limit:
        free_percent = (usage.pid_limit - usage.pids_in_use) * 100.0 / usage.pid_limit
        pids = free_percent < t.pids_available_percent
    memory = (
        usage.memory_available_bytes is not None and usage.memory_available_bytes < t.memory_available_bytes
    )
    return {MEMORY: memory, DISK: disk, PID: pids}


class PressureTracker:
    """A condition turns True at once and back to False only after `period_s` without pressure."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last_seen: dict[str, float] = {}

    def observe(self, signals: dict[str, bool], now: float) -> dict[str, bool]:
        out = {}
        for kind, pressed in signals.items():
            if pressed:
                self._last_seen[kind] = now
            seen = self._last_seen.get(kind)
            out[kind] = pressed or (seen is not None and now - seen < self.period_s)
        return out


def images_status(images: Iterable[api.Image]) -> list[dict[str, Any]]:
    """The Node's `status.images`: largest first, at most MAX_IMAGES_IN_STATUS, names = digests + tags."""
    out = []
    for img in sorted(images, key=lambda i: i.size, reverse=True):
        names = [*img.repo_digests, *img.repo_tags][:MAX_NAMES_PER_IMAGE]
        if names:
            out.append({"names": names, "sizeBytes": img.size})
        if len(out) == MAX_IMAGES_IN_STATUS:
            break
    return out


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


class NodeFacts:
    """The node agent's `extra` provider. Runtime facts that cannot be read keep their last value; the
    Ready condition then says the runtime is down, as the kubelet's does."""

    def __init__(
        self,
        cri: CriClient | None,
        *,
        nodefs: Path,
        thresholds: PressureThresholds | None = None,
        host_root: Path = Path("/"),
        clock: Callable[[], float] = time.monotonic,
        usage: Callable[[], HostUsage] | None = None,
    ) -> None:
        self.cri = cri
        self.thresholds = thresholds or PressureThresholds()
        self.clock = clock
        self._usage = usage or (lambda: read_host_usage(host_root, nodefs))
        self._pressure = PressureTracker(self.thresholds.transition_period_s)
        self._images: list[dict[str, Any]] | None = None
        self._runtime_version = ""

    async def __call__(self) -> dict[str, Any]:
        usage = await asyncio.to_thread(self._usage)
        pressed = self._pressure.observe(under_pressure(usage, self.thresholds), self.clock())
        conditions = []
        for kind, on in pressed.items():
            reason, message = _WORDING[kind][0 if on else 1]
            conditions.append(_condition(kind, on, reason, message))
        if any(pressed.values()):
            log.warning("node pressure %s: %s", sorted(k for k, v in pressed.items() if v), usage)
        out: dict[str, Any] = {"conditions": conditions}
        if self.cri is not None:
            problem = await self._runtime()
            if problem:
                conditions.append(_condition("Ready", False, "EdgeNotReady", problem))
            out["nodeInfo"] = {"containerRuntimeVersion": self._runtime_version}
            if self._images is not None:
                out["images"] = self._images
        return out

    async def _runtime(self) -> str:
        """Refresh version and images; returns why the runtime is not ready ("" when it is)."""
        assert self.cri is not None
        try:
            async with asyncio.timeout(CRI_TIMEOUT_S):
                version = await self.cri.version()
                self._runtime_version = f"{version.runtime_name}://{version.runtime_version}"
                self._images = images_status(await self.cri.list_images())
                status = await self.cri.status()
        except (CriError, TimeoutError) as e:
            return f"container runtime is down: {e or 'no answer'}"
        for c in status.status.conditions:
            if c.type in ("RuntimeReady", "NetworkReady") and not c.status:
                what = "runtime" if c.type == "RuntimeReady" else "runtime network"
                return f"container {what} not ready: {c.reason}: {c.message}"
        return ""
