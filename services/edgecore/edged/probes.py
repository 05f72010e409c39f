"""Liveness, readiness and startup probes with the kubelet's semantics, one task per (container, kind).

Results are keyed by container id: a restarted container is a new id, so its probes start from scratch
(readiness False, liveness True, not started) exactly as the kubelet's do. After a liveness or startup
probe reaches its failure threshold the worker holds (probes nothing more) until edged replaces the
container and forgets the old id. The handlers (exec, httpGet, tcpSocket) are probehandlers.py's; gRPC
probes are reported as failures with a message saying they are unsupported.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .cri import CriClient, CriUnavailable
from .probehandlers import ProbeResult, exec_probe, http_probe, tcp_probe

log = logging.getLogger(__name__)

Obj = dict[str, Any]

LIVENESS: Final = "liveness"
READINESS: Final = "readiness"
STARTUP: Final = "startup"
KINDS: Final = (STARTUP, LIVENESS, READINESS)
_FIELD = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}

# At most this many probe tasks at once (110 pods x a few containers x 3 kinds fits). Beyond it a probe
# is not started and logged: readiness then stays False (honest), liveness simply never restarts.
MAX_PROBE_TASKS: Final = 1000
# Kubernetes API defaults for a probe.
DEFAULT_PERIOD_S: Final = 10
DEFAULT_TIMEOUT_S: Final = 1
DEFAULT_SUCCESS_THRESHOLD: Final = 1
DEFAULT_FAILURE_THRESHOLD: Final = 3

# on_change(pod_uid, container_name, kind, ok)
OnChange = Callable[[str, str, str, bool], None]


@dataclass(frozen=True)
class ProbeSpec:
    initial_delay_s: float = 0.0
    period_s: float = DEFAULT_PERIOD_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    @classmethod
    def from_probe(cls, probe: Mapping[str, Any], kind: str) -> ProbeSpec:
        def num(key: str, default: int, minimum: int) -> int:
            value = probe.get(key)
            return max(minimum, int(value)) if isinstance(value, int | float) else default

        return cls(
            initial_delay_s=num("initialDelaySeconds", 0, 0),
            period_s=num("periodSeconds", DEFAULT_PERIOD_S, 1),
            timeout_s=num("timeoutSeconds", DEFAULT_TIMEOUT_S, 1),
            # The API only allows 1 for liveness and startup; treat anything else as 1 rather than hang.
            success_threshold=1
            if kind != READINESS
            else num("successThreshold", DEFAULT_SUCCESS_THRESHOLD, 1),
            failure_threshold=num("failureThreshold", DEFAULT_FAILURE_THRESHOLD, 1),
        )


class ProbeState:
    """Consecutive-result bookkeeping: the reported result flips only after `success_threshold`
    successes or `failure_threshold` failures in a row. Readiness and startup start False, liveness True."""

    def __init__(self, kind: str, spec: ProbeSpec) -> None:
        self.kind = kind
        self.spec = spec
        self.result = kind == LIVENESS
        self.failed = False  # the failure threshold was reached (and not undone by successes)
        self.message = ""  # why the last probe failed ("" after a success)
        self._last: bool | None = None
        self._run = 0

    def observe(self, ok: bool) -> bool:
        """Feed one probe outcome; True when the reported result changed."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        if self._run < (self.spec.success_threshold if ok else self.spec.failure_threshold):
            return False
        self.failed = not ok
        if self.result == ok:
            return False
        self.result = ok
        return True


# Runs one probe: (probe object, pod, container, container id, pod IP) -> result. Replaceable in tests.
ProbeRunner = Callable[[Mapping[str, Any], Obj, Obj, str, str], Awaitable[ProbeResult]]


def default_runner(cri: CriClient) -> ProbeRunner:
    async def run(
        probe: Mapping[str, Any], pod: Obj, container: Obj, container_id: str, pod_ip: str
    ) -> ProbeResult:
        timeout_s = ProbeSpec.from_probe(probe, READINESS).timeout_s
        try:
            if "exec" in probe:
                return await exec_probe(
                    cri, container_id, list(probe["exec"].get("command") or []), timeout_s
                )
            if "httpGet" in probe:
                return await http_probe(probe["httpGet"], container, pod_ip, timeout_s)
            if "tcpSocket" in probe:
                return await tcp_probe(probe["tcpSocket"], container, pod_ip, timeout_s)
        except TimeoutError:
            return ProbeResult(False, f"probe timed out after {timeout_s:g}s")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            return ProbeResult(False, f"probe failed: {e}")
        if "grpc" in probe:
            return ProbeResult(
                False, "grpc probes are not supported by this edged; use exec, httpGet or tcpSocket"
            )
        return ProbeResult(False, "probe has no handler (exec, httpGet or tcpSocket)")

    return run


# ---- workers -----------------------------------------------------------------------------------------


@dataclass
class _Container:
    pod_uid: str
    name: str
    kinds: frozenset[str]


class _Worker:
    def __init__(
        self,
        mgr: ProbeManager,
        kind: str,
        probe: Mapping[str, Any],
        pod: Obj,
        container: Obj,
        container_id: str,
        pod_ip: str,
        started_at: float,
    ) -> None:
        self.mgr = mgr
        self.kind = kind
        self.probe = probe
        self.spec = ProbeSpec.from_probe(probe, kind)
        self.state = ProbeState(kind, self.spec)
        self.pod = pod
        self.container = container
        self.container_id = container_id
        self.pod_ip = pod_ip
        self.started_at = started_at
        self.on_hold = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        mgr = self.mgr
        now = mgr.clock()
        first = max(now, self.started_at + self.spec.initial_delay_s)
        if mgr.jitter and now - mgr.born < self.spec.period_s:
            # Just (re)started with many containers to adopt: spread their first probes over a period.
            first = max(first, now + random.uniform(0, self.spec.period_s))
        next_at = first
        while True:
            delay = next_at - mgr.clock()
            if delay > self.spec.period_s + self.spec.initial_delay_s:
                next_at = mgr.clock() + self.spec.period_s  # the wall clock went back: do not stall
                delay = self.spec.period_s
            if delay > 0:
                await mgr.sleep(delay)
            next_at += self.spec.period_s
            if self.kind != STARTUP and mgr.started(self.container_id) is False:
                continue  # gated: liveness and readiness wait for the startup probe
            await self._probe_once()
            if self.on_hold or (self.kind == STARTUP and self.state.result):
                # Failed (edged replaces the container) or started for good: the result stays, and this
                # worker has nothing more to do.
                return

    async def _probe_once(self) -> None:
        mgr = self.mgr
        try:
            result = await mgr.runner(self.probe, self.pod, self.container, self.container_id, self.pod_ip)
        except CriUnavailable as e:
            # The runtime is down, so nothing is known about the container: skip rather than count a
            # failure that would restart a healthy container once containerd is back.
            log.warning("%s probe of %s skipped: %s", self.kind, self.container_id[:12], e)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            mgr.crashes += 1
            log.exception("%s probe of %s crashed; counted as a failure", self.kind, self.container_id[:12])
            result = ProbeResult(False, f"probe crashed: {e}")
        mgr.runs += 1
        self.state.message = "" if result.ok else result.message
        if self.state.observe(result.ok):
            # Only flips are logged: a container that stays unready would otherwise log every period.
            log.info(
                "%s probe of %s/%s (%s) now %s%s",
                self.kind,
                self.pod.get("metadata", {}).get("name", "?"),
                self.container.get("name", "?"),
                self.container_id[:12],
                "succeeds" if result.ok else "fails",
                "" if result.ok else f": {result.message}",
            )
            mgr.changed(self.container_id, self.kind, self.state.result)
        elif not result.ok:
            log.debug("%s probe of %s failed: %s", self.kind, self.container_id[:12], result.message)
        if self.kind in (LIVENESS, STARTUP) and self.state.failed:
            self.on_hold = True  # edged kills the container; the next one gets fresh workers


class ProbeManager:
    """All probe workers of the node. `ensure` is idempotent per container id; `forget` stops them."""

    def __init__(
        self,
        cri: CriClient,
        on_change: OnChange,
        *,
        runner: ProbeRunner | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_tasks: int = MAX_PROBE_TASKS,
        jitter: bool = True,
    ) -> None:
        self.on_change = on_change
        self.runner: ProbeRunner = runner or default_runner(cri)
        self.clock = clock
        self.sleep = sleep
        self.max_tasks = max_tasks
        self.jitter = jitter
        self._born = clock()
        self._containers: dict[str, _Container] = {}
        self._workers: dict[tuple[str, str], _Worker] = {}
        self.runs = 0  # probes run
        self.crashes = 0  # probe handlers that raised (counted as failures)
        self.rejected = 0  # probes not started because MAX_PROBE_TASKS was reached

    # ---- edged's side ---------------------------------------------------------------------------

    def ensure(self, pod: Obj, container: Obj, container_id: str, pod_ip: str, started_at: float) -> None:
        if container_id in self._containers:
            return
        uid = str(pod.get("metadata", {}).get("uid", ""))
        probes = {k: container[_FIELD[k]] for k in KINDS if isinstance(container.get(_FIELD[k]), dict)}
        self._containers[container_id] = _Container(uid, str(container.get("name", "")), frozenset(probes))
        for kind, probe in probes.items():
            if len(self._workers) >= self.max_tasks:
                self.rejected += 1
                log.error(
                    "%s probe of %s/%s not started: %d probes already run (MAX_PROBE_TASKS)",
                    kind,
                    pod.get("metadata", {}).get("name", "?"),
                    container.get("name", "?"),
                    self.max_tasks,
                )
                continue
            w = _Worker(self, kind, probe, pod, container, container_id, pod_ip, started_at)
            w.task = asyncio.create_task(w.run(), name=f"probe/{kind}/{container_id[:12]}")
            w.task.add_done_callback(self._worker_done)
            self._workers[(container_id, kind)] = w

    def forget(self, container_id: str) -> None:
        self._containers.pop(container_id, None)
        for kind in KINDS:
            w = self._workers.pop((container_id, kind), None)
            if w is not None and w.task is not None:
                w.task.cancel()

    def forget_pod(self, pod_uid: str) -> None:
        for cid in [cid for cid, c in self._containers.items() if c.pod_uid == pod_uid]:
            self.forget(cid)

    def ready(self, container_id: str) -> bool | None:
        """None for a container never ensured; False until started and (with a readiness probe) until the
        readiness probe succeeded; True with no probes at all."""
        c = self._containers.get(container_id)
        if c is None:
            return None
        if self.started(container_id) is False:
            return False
        if READINESS not in c.kinds:
            return True
        w = self._workers.get((container_id, READINESS))
        return w.state.result if w is not None else False

    def started(self, container_id: str) -> bool | None:
        """None for a container never ensured; True without a startup probe, else once it succeeded."""
        c = self._containers.get(container_id)
        if c is None:
            return None
        if STARTUP not in c.kinds:
            return True
        w = self._workers.get((container_id, STARTUP))
        return w.state.result if w is not None else False

    def liveness_failed(self, container_id: str) -> bool:
        """True once the liveness probe, or the startup probe, reached its failure threshold: the
        container must be killed and restarted per its pod's restartPolicy."""
        return any(
            (w := self._workers.get((container_id, kind))) is not None and w.state.failed
            for kind in (LIVENESS, STARTUP)
        )

    def message(self, container_id: str, kind: str) -> str:
        """The last failure message of that probe ("" when it last succeeded or never ran)."""
        w = self._workers.get((container_id, kind))
        return w.state.message if w is not None else ""

    @property
    def born(self) -> float:
        return self._born

    @property
    def tasks(self) -> int:
        return sum(1 for w in self._workers.values() if w.task is not None and not w.task.done())

    async def close(self) -> None:
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        self._workers.clear()
        self._containers.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- workers' side --------------------------------------------------------------------------

    def changed(self, container_id: str, kind: str, ok: bool) -> None:
        c = self._containers.get(container_id)
        if c is None:
            return
        try:
            self.on_change(c.pod_uid, c.name, kind, ok)
        except Exception:
            log.exception("probe on_change callback failed")

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Each probe run is already guarded; reaching here is a bug in the worker loop itself.
            self.crashes += 1
            log.error("probe worker %s died", task.get_name(), exc_info=task.exception())
