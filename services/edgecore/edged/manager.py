"""Edged: reconciles the node's pods in the edge store against the container runtime (CRI).

Sources of work, each only marking pods dirty: the store's pod watch (what is wanted), a watch of
ConfigMaps/Secrets (what pods mount or read), the runtime relist every `relist_period_s` (the kubelet's
PLEG: containers that exited or vanished), probe results, and a per-pod resync timer. One worker task
per pod uid runs the syncs of that pod one after the other; marks made while a sync runs coalesce into
one more sync. Nothing here needs the cloud: statuses go to the persisted upstream queue.

Adoption is not a separate step: a sync compares what runs with what is wanted, and a running
container with the wanted spec hash is simply kept. Restart counts come back from the containers'
annotations; runtime objects of pods nobody wants get a worker that tears them down.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from kubeedge.beehive.message import GROUP_RESOURCE, OP_DELETE, OP_PATCH, RT_POD, RT_PODPATCH
from kubeedge.store import DELETED, Closed, Event, Expired, Obj, Store, TooSlow, Watcher

from . import runtime as rt
from .backoff import Backoff
from .config import EdgedConfig
from .cri import CriClient, CriError, CriUnavailable, api
from .images import ImagePullError, auth_for, default_pull_policy, ensure_image
from .lifecycle import run_hook
from .podspec import (
    ANN_CONTAINER_PORTS,
    ANN_PRESTOP_HANDLER,
    ANN_TERMINATION_GRACE,
    ContainerConfigError,
    PodContext,
    container_config,
    container_hash,
    sandbox_config,
)
from .probes import ProbeManager
from .status import (
    CRASH_LOOP_BACK_OFF,
    CREATE_CONTAINER_CONFIG_ERROR,
    CREATE_CONTAINER_ERROR,
    EXITED,
    IMAGE_PULL_BACK_OFF,
    RUN_CONTAINER_ERROR,
    RUNNING,
    TERMINAL_PHASES,
    ContainerView,
    PodObservation,
    compute_status,
    merge_patch,
    restart_policy,
)
from .tokens import TokenManager
from .volumes import VolumeManager

log = logging.getLogger(__name__)

POD_KEY: Final = "pods"
CONFIGMAP_KEY: Final = "configmaps"
SECRET_KEY: Final = "secrets"
# Pods handled at once (kubelet's maxPods is 110; room for pods still terminating). Pods beyond this
# wait for a worker to finish and are picked up by the next resync.
MAX_POD_WORKERS: Final = 256
# Pod cgroups still busy after their teardown, kept for the resync to retry (beyond this: left alone).
MAX_BUSY_CGROUPS: Final = 1024
# Sandboxes being created at once: each runs CNI and starts a shim; a burst of 50 pods on a small
# device is faster in a few lanes than all at once.
MAX_PARALLEL_SANDBOX_STARTS: Final = 4
# Store watch buffers (events a watcher may fall behind before it is re-listed).
WATCH_BUFFER: Final = 10_000
# A sync that failed unexpectedly is retried after this long.
SYNC_ERROR_RETRY_S: Final = 2.0
# A container whose config could not be built (missing ConfigMap key, ...) is retried this often even
# without a change in the store (a change retries at once).
CONFIG_RETRY_S: Final = 10.0
# Grace used for containers of pods edged no longer has the spec of, when the container has no grace
# annotation.
ORPHAN_GRACE_S: Final = 30
# A deleted pod's containers get at least this long after SIGTERM even when its grace ran out before
# edged heard of the deletion (the kubelet's minimumGracePeriodInSeconds); never more than its grace.
MIN_STOP_GRACE_S: Final = 2
# Where the host's resolver settings come from (dnsPolicy Default).
HOST_RESOLV_CONF: Final = Path("/etc/resolv.conf")

SendUpstream = Callable[[str, str, Any, str], Awaitable[object]]


def _md(pod: Obj) -> Obj:
    md: Obj = pod.get("metadata") or {}
    return md


def _uid(pod: Obj) -> str:
    return str(_md(pod).get("uid") or "")


def _ns_name(pod: Obj) -> tuple[str, str]:
    md = _md(pod)
    return str(md.get("namespace") or "default"), str(md.get("name") or "")


def _deleting(pod: Obj) -> bool:
    return bool(_md(pod).get("deletionTimestamp"))


def grace_seconds(pod: Obj, default: int) -> int:
    md, spec = _md(pod), pod.get("spec") or {}
    for v in (md.get("deletionGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")):
        if isinstance(v, int) and v >= 0:
            return v
    return default


def _rfc3339_s(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def stop_deadline(pod: Obj, default: int, now: float) -> float:
    """Wall-clock time by which a deleted pod's containers must be stopped.

    The API server sets deletionTimestamp to the deletion request's time plus the grace period, so the
    grace runs from the request, not from when edged hears of it (late after a reconnect, or again
    after an edgecore restart mid-termination). Never later than a full grace from now: a node clock
    ahead of the API's only shortens it, one behind cannot stretch it."""
    grace = now + grace_seconds(pod, default)
    end = _rfc3339_s(_md(pod).get("deletionTimestamp"))
    return grace if end is None else min(grace, end)


def read_host_resolv(path: Path = HOST_RESOLV_CONF) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nameservers, search domains) of the host's resolv.conf; empty when unreadable."""
    servers: list[str] = []
    search: list[str] = []
    try:
        text = path.read_text()
    except OSError:
        return (), ()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1])
        elif parts and parts[0] in ("search", "domain"):
            search = parts[1:]
    return tuple(servers), tuple(search)


@dataclass
class _PodState:
    """What edged remembers about one pod between its syncs (only its worker touches it)."""

    worker: asyncio.Task[None] | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    last_pod: Obj | None = None
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    pull_failed_at: dict[str, float] = field(default_factory=dict)
    reported: Obj | None = None
    start_time: float = 0.0
    pod_ips: tuple[str, ...] = ()
    sandbox_id: str = ""
    volumes_ready: bool = False
    volume_paths: dict[str, str] = field(default_factory=dict)
    # The runtime's view of the pod from the last sync (what the status is computed from).
    observed: rt.PodRuntime | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class _Sync:
    """What one sync resolved before starting containers."""

    pod: Obj
    everywhere: Mapping[str, list[ContainerView]]  # instances per name across all sandboxes
    ctx: PodContext
    sandbox_id: str
    sandbox_config: api.PodSandboxConfig
    state: _PodState


class _Finished(Exception):
    """The pod is gone from the store and from the runtime: its worker ends."""


class Edged:
    def __init__(
        self,
        store: Store,
        send_upstream: SendUpstream,
        config: EdgedConfig,
        *,
        cri: CriClient | None = None,
        volumes: VolumeManager | None = None,
        probes: ProbeManager | None = None,
        tokens: TokenManager | None = None,
    ) -> None:
        self.store = store
        self.send_upstream = send_upstream
        self.config = config
        self._own_cri = cri is None
        self.cri = cri if cri is not None else CriClient(config.runtime_endpoint)
        self.volumes = volumes if volumes is not None else VolumeManager(config.root_dir)
        self._own_probes = probes is None
        self.probes = probes if probes is not None else ProbeManager(self.cri, self.on_probe_change)
        # Service-account tokens for projected volumes; without one such volumes get no token file.
        self.tokens = tokens
        self.backoff = Backoff(
            config.initial_backoff_s, config.max_backoff_s, reset_after=config.backoff_reset_s
        )
        self.image_backoff = Backoff(
            config.initial_backoff_s, config.max_backoff_s, reset_after=config.backoff_reset_s
        )
        self.runtime_name = "containerd"
        self.host_ips: tuple[str, ...] = (config.node_ip,) if config.node_ip else ()
        self._resolv = read_host_resolv()
        self._wanted: dict[str, Obj] = {}  # uid -> latest pod from the store, bound to this node
        self._pods: dict[str, _PodState] = {}
        self._busy_cgroups: set[str] = set()
        self._snapshot: rt.Snapshot | None = None
        self._sandbox_lane = asyncio.Semaphore(MAX_PARALLEL_SANDBOX_STARTS)
        self._store_synced = asyncio.Event()
        self.runtime_ready = asyncio.Event()
        self.syncs = 0  # pod syncs run (for tests and benchmarks)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: connect to the runtime, then watch, relist and sync. For a Supervisor."""
        try:
            await self._connect_runtime()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_pods(), name="edged/pods")
                tg.create_task(self._watch_refs(), name="edged/refs")
                tg.create_task(self._relist_loop(), name="edged/relist")
                tg.create_task(self._resync_loop(), name="edged/resync")
        finally:
            await self._stop_workers()

    async def stop(self) -> None:
        """Stop working (pods keep running: they are the node's, not this process's)."""
        await self._stop_workers()
        if self._own_probes:
            await self.probes.close()
        if self._own_cri:
            await self.cri.close()

    async def _stop_workers(self) -> None:
        tasks = [s.worker for s in self._pods.values() if s.worker is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._store_synced.clear()
        self._snapshot = None

    async def _connect_runtime(self) -> None:
        delay = self.config.runtime_retry_s
        while True:
            try:
                v = await self.cri.version()
            except CriError as e:
                log.error(
                    "edged: container runtime at %s is not reachable (%s); retrying in %.1fs",
                    self.cri.endpoint,
                    e.details or e.code.name,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.runtime_retry_max_s)
                continue
            self.runtime_name = v.runtime_name or "containerd"
            log.info(
                "edged: %s %s (CRI %s) at %s",
                v.runtime_name,
                v.runtime_version,
                v.runtime_api_version,
                self.cri.endpoint,
            )
            self.runtime_ready.set()
            return

    # ---- sources of work -----------------------------------------------------------------------

    def _mine(self, pod: Obj) -> bool:
        return (pod.get("spec") or {}).get("nodeName") == self.config.node_name and bool(_uid(pod))

    async def _watch_pods(self) -> None:
        while True:
            res = await self.store.list(POD_KEY, decode=True)
            wanted = {_uid(r.obj): r.obj for r in res.items if self._mine(r.obj)}
            gone = self._wanted.keys() - wanted.keys()
            for uid in gone:
                del self._wanted[uid]
            for uid, pod in wanted.items():
                if self._wanted.get(uid) != pod:
                    self._wanted[uid] = pod
                    self.mark(uid)
            for uid in gone:
                self.mark(uid)
            self._store_synced.set()
            w = self.store.watch(POD_KEY, from_rv=res.rv, buffer_limit=WATCH_BUFFER)
            try:
                async for batch in w:
                    for etype, rec in batch:
                        pod = rec.obj
                        uid = _uid(pod)
                        if not uid:
                            continue
                        if etype == DELETED or not self._mine(pod):
                            if self._wanted.pop(uid, None) is not None:
                                self.mark(uid)
                        else:
                            self._wanted[uid] = pod
                            self.mark(uid)
            except (Expired, TooSlow) as e:
                log.warning("edged: pod watch ended (%s); listing again", e)
            except Closed:
                return
            finally:
                w.close()

    async def _watch_refs(self) -> None:
        """A ConfigMap or Secret changed: sync the pods of its namespace (volumes, env, retries)."""
        await self._store_synced.wait()
        while True:
            watchers = [
                self.store.watch(key, from_rv=self.store.rv, buffer_limit=WATCH_BUFFER)
                for key in (CONFIGMAP_KEY, SECRET_KEY)
            ]
            try:
                async with asyncio.TaskGroup() as tg:
                    for w in watchers:
                        tg.create_task(self._follow_refs(w))
                return
            except* (Expired, TooSlow):
                log.warning("edged: ConfigMap/Secret watch fell behind; syncing every pod")
                for uid in list(self._wanted):
                    self.mark(uid)
            finally:
                for w in watchers:
                    w.close()

    async def _follow_refs(self, w: Watcher) -> None:
        async for batch in w:
            namespaces = {rec.namespace for _t, rec in batch if isinstance(rec, Event)}
            for uid, pod in list(self._wanted.items()):
                if _ns_name(pod)[0] in namespaces:
                    self.mark(uid)

    async def _relist_loop(self) -> None:
        await self._store_synced.wait()
        down = False
        while True:
            try:
                snap = await rt.snapshot(self.cri)
            except CriError as e:
                if not down:
                    log.error("edged: cannot list the runtime's containers (%s); pods wait for it", e)
                down = True
                await asyncio.sleep(self.config.runtime_retry_s)
                continue
            if down:
                log.info("edged: the runtime answers again; syncing every pod")
                for uid in list(self._wanted):
                    self.mark(uid)
                down = False
            for uid in rt.changed_uids(self._snapshot, snap):
                self.mark(uid)
            for uid in rt.orphans(snap.uids(), self._wanted):
                if uid not in self._pods:
                    self.mark(uid)
            self._snapshot = snap
            await asyncio.sleep(self.config.relist_period_s)

    async def _resync_loop(self) -> None:
        await self._store_synced.wait()
        while True:
            await asyncio.sleep(self.config.sync_period_s)
            self.backoff.gc()
            self.image_backoff.gc()
            for uid in list(self._wanted):
                if uid not in self._pods:
                    self.mark(uid)  # a pod that waited for a free worker
            # Volume dirs of pods deleted while edgecore was down (their runtime objects, if any, are
            # orphans with a worker of their own, so in-progress teardowns are left alone).
            for uid in self.volumes.orphans(set(self._wanted) | set(self._pods)):
                await self.volumes.cleanup(uid)
            # Pod cgroups a teardown found still busy: only those, as other edgecores on this host
            # (tests, EdgeSite) may share the cgroup parent.
            for uid in list(self._busy_cgroups):
                if uid not in self._pods and not await asyncio.to_thread(
                    rt.remove_cgroup, rt.pod_cgroup(self.config.cgroup_parent, uid)
                ):
                    self._busy_cgroups.discard(uid)

    def on_probe_change(self, pod_uid: str, container: str, kind: str, ok: bool) -> None:
        """ProbeManager's callback: a readiness/liveness/startup verdict changed."""
        self.mark(pod_uid)

    def mark(self, uid: str) -> None:
        """Ask for a sync of `uid` (starting its worker if it has none)."""
        state = self._pods.get(uid)
        if state is None:
            if len(self._pods) >= MAX_POD_WORKERS:
                log.warning("edged: %d pods in work (MAX_POD_WORKERS); pod %s waits", len(self._pods), uid)
                return
            state = self._pods[uid] = _PodState()
            state.worker = asyncio.create_task(self._worker(uid, state), name=f"edged/pod/{uid[:8]}")
        state.dirty.set()

    # ---- the per-pod worker --------------------------------------------------------------------

    async def _worker(self, uid: str, state: _PodState) -> None:
        wait: float = 0.0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait if wait > 0 else None):
                        await state.dirty.wait()
                state.dirty.clear()
                try:
                    wait = await self._sync(uid, state)
                except _Finished:
                    return
                except CriUnavailable as e:
                    log.warning("edged: pod %s waits for the runtime: %s", uid, e)
                    wait = self.config.runtime_retry_s
                except Exception:
                    log.exception("edged: sync of pod %s failed; retrying in %.0fs", uid, SYNC_ERROR_RETRY_S)
                    wait = SYNC_ERROR_RETRY_S
                self.syncs += 1
                wait = min(wait or self.config.sync_period_s, self.config.sync_period_s)
        finally:
            if self._pods.get(uid) is state:
                del self._pods[uid]

    async def _sync(self, uid: str, state: _PodState) -> float:
        """One reconcile of one pod; returns the seconds until it wants to be synced again."""
        pod = self._wanted.get(uid)
        if pod is None or _deleting(pod):
            known = pod or state.last_pod
            await self._stop_all(uid, state, known)
            if pod is not None and not state.confirmed:
                # The final status (containers terminated, terminal phase) goes before the confirmation,
                # as the kubelet's does: watchers of the pod see how it ended. Read before the removal.
                if state.reported is None:
                    state.reported = pod.get("status") or {}
                state.observed = await rt.inspect_pod(self.cri, uid)
                await self._report(uid, pod, state, terminal=True)
            await self._remove(uid, state, known)
            if pod is None:
                raise _Finished
            if not state.confirmed:
                ns, name = _ns_name(pod)
                await self.send_upstream(f"{ns}/{RT_POD}/{name}", OP_DELETE, pod, GROUP_RESOURCE)
                state.confirmed = True
                log.info("edged: pod %s/%s terminated; deletion confirmed", ns, name)
            return self.config.sync_period_s
        state.last_pod = pod
        if not state.start_time:
            state.start_time = _start_time(pod) or time.time()
        if state.reported is None:
            # What the cloud last echoed back: an unchanged status after a restart is not sent again.
            state.reported = pod.get("status") or {}
        wait = await self._reconcile(uid, pod, state)
        await self._report(uid, pod, state)
        return wait

    # ---- reconcile -----------------------------------------------------------------------------

    async def _reconcile(self, uid: str, pod: Obj, state: _PodState) -> float:
        prt = state.observed = await rt.inspect_pod(self.cri, uid)
        terminal = str((state.reported or {}).get("phase") or "") in TERMINAL_PHASES
        sandbox = prt.ready_sandbox()
        if terminal:
            # A finished pod keeps its containers' records (logs, status) but not its sandbox and IP.
            if sandbox is not None:
                await self._stop_sandbox(prt, sandbox.id, pod)
                state.sandbox_id = ""
            return self.config.sync_period_s

        configmaps, secrets = await self._refs(pod)
        try:
            # Renewed here at 80% of its lifetime: every sync of the pod asks, the manager decides.
            sa_token = await self.tokens.token_for(pod) if self.tokens is not None else None
            if not state.volumes_ready:
                state.volume_paths = await self.volumes.prepare(pod, configmaps, secrets, sa_token)
                state.volumes_ready = True
            else:
                await self.volumes.refresh(pod, configmaps, secrets, sa_token)
        except ContainerConfigError as e:
            for c in _all_containers(pod):
                state.waiting[str(c.get("name"))] = (CREATE_CONTAINER_CONFIG_ERROR, str(e))
            return CONFIG_RETRY_S

        ctx = self._context(pod, state, configmaps, secrets)
        if sandbox is None:
            sandbox_id = await self._new_sandbox(pod, prt, state, ctx)
            prt = state.observed = await rt.inspect_pod(self.cri, uid)
        else:
            sandbox_id = sandbox.id
        sb_cfg = self._sandbox_config(pod, ctx, _attempt(prt, sandbox_id))
        if sandbox_id != state.sandbox_id or not state.pod_ips:
            state.pod_ips = await self._pod_ips(sandbox_id)
            state.sandbox_id = sandbox_id
        ctx = self._context(pod, state, configmaps, secrets)
        sync = _Sync(pod, prt.by_name(), ctx, sandbox_id, sb_cfg, state)
        policy = restart_policy(pod)
        current = prt.by_name(sandbox_id)
        wait = self.config.sync_period_s
        acted = False

        # Init containers: in order, each to a successful exit, before any app container starts.
        initialized = True
        for spec in (pod.get("spec") or {}).get("initContainers") or []:
            cur = _newest(current, str(spec.get("name")))
            action = rt.decide(cur, container_hash(spec), policy, init=True)
            if action is rt.Action.DONE and cur is not None and cur.state == EXITED and cur.exit_code == 0:
                continue
            initialized = False  # running, restarting, or failed for good (restartPolicy Never)
            if action is rt.Action.START:
                wait = min(wait, await self._start(sync, spec, cur, init=True))
                acted = True
            break

        for spec in (pod.get("spec") or {}).get("containers") or [] if initialized else []:
            name = str(spec.get("name"))
            cur = _newest(current, name)
            unhealthy = cur is not None and cur.state == RUNNING and self.probes.liveness_failed(cur.id)
            action = rt.decide(cur, container_hash(spec), policy, unhealthy=unhealthy)
            if action is rt.Action.REPLACE and cur is not None:
                why = "liveness probe failed" if unhealthy else "its spec changed"
                log.info("edged: %s/%s: %s; restarting it", _ns_name(pod)[1], name, why)
                await self._kill(pod, spec, cur, state, grace_seconds(pod, self.config.default_grace_s))
                acted = True
                if unhealthy:
                    # The kill is an exit like any other: the restart follows the policy and back-off,
                    # from the next sync (the relist sees the exit).
                    continue
                cur, action = None, rt.Action.START
            if action is rt.Action.START:
                wait = min(wait, await self._start(sync, spec, cur))
                acted = True
            elif action is rt.Action.KEEP and cur is not None:
                state.waiting.pop(name, None)
                self.probes.ensure(pod, spec, cur.id, ctx.pod_ip, cur.started_at)

        if acted:
            prt = state.observed = await rt.inspect_pod(self.cri, uid)
        await self._collect_garbage(prt, sandbox_id)
        return wait

    async def _refs(self, pod: Obj) -> tuple[dict[str, Obj], dict[str, Obj]]:
        ns = _ns_name(pod)[0]
        cms = await self.store.list(CONFIGMAP_KEY, ns, decode=True)
        secs = await self.store.list(SECRET_KEY, ns, decode=True)
        return (
            {str(_md(r.obj).get("name")): r.obj for r in cms.items},
            {str(_md(r.obj).get("name")): r.obj for r in secs.items},
        )

    def _context(
        self, pod: Obj, state: _PodState, configmaps: Mapping[str, Obj], secrets: Mapping[str, Obj]
    ) -> PodContext:
        servers, search = self._resolv
        return PodContext(
            node_name=self.config.node_name,
            node_ip=self.config.node_ip,
            pod_ip=state.pod_ips[0] if state.pod_ips else "",
            pod_ips=state.pod_ips,
            configmaps=configmaps,
            secrets=secrets,
            volume_paths=getattr(state, "volume_paths", {}),
            cluster_dns=self.config.cluster_dns,
            cluster_domain=self.config.cluster_domain,
            search_domains_host=search,
            host_resolv_nameservers=servers,
            pod_dir=str(self.volumes.pod_dir(_uid(pod))),
        )

    def _log_dir(self, pod: Obj) -> Path:
        ns, name = _ns_name(pod)
        return self.config.pod_log_dir / f"{ns}_{name}_{_uid(pod)}"

    def _sandbox_config(self, pod: Obj, ctx: PodContext, attempt: int) -> api.PodSandboxConfig:
        cfg = sandbox_config(
            pod,
            ctx,
            attempt=attempt,
            log_dir=str(self.config.pod_log_dir),
            cgroup_parent=rt.pod_cgroup(self.config.cgroup_parent, _uid(pod)),
        )
        return cfg

    async def _new_sandbox(self, pod: Obj, prt: rt.PodRuntime, state: _PodState, ctx: PodContext) -> str:
        # A dead sandbox (reboot, runtime restart, killed shim): whatever still runs in it goes first.
        for c in prt.running():
            await self._kill(pod, _spec_of(pod, c.name), c, state, 0)
        for sb in prt.sandboxes:
            await self.cri.stop_pod_sandbox(sb.id)
        cfg = self._sandbox_config(pod, ctx, prt.next_attempt())
        self._log_dir(pod).mkdir(parents=True, exist_ok=True)
        async with self._sandbox_lane:
            sandbox_id = await self.cri.run_pod_sandbox(cfg)
        log.info(
            "edged: pod %s/%s: sandbox %s (attempt %d)", *_ns_name(pod), sandbox_id[:12], cfg.metadata.attempt
        )
        state.pod_ips = ()
        return sandbox_id

    async def _pod_ips(self, sandbox_id: str) -> tuple[str, ...]:
        net = (await self.cri.pod_sandbox_status(sandbox_id)).status.network
        return tuple(ip for ip in (net.ip, *(a.ip for a in net.additional_ips)) if ip)

    async def _start(self, sync: _Sync, spec: Obj, cur: ContainerView | None, *, init: bool = False) -> float:
        """Start (or restart) one container, honouring back-offs; returns when to look again."""
        pod, ctx, state = sync.pod, sync.ctx, sync.state
        uid, (ns, pod_name) = _uid(pod), _ns_name(pod)
        name = str(spec.get("name"))
        key = f"{uid}/{name}"
        previous = _newest(sync.everywhere, name)
        if cur is not None:
            # A restart: wait out the back-off counted from when the last run ended.
            since = cur.finished_at or cur.created_at
            left = self.backoff.remaining(key, since)
            if left > 0:
                delay = self.backoff.delay(key)
                state.waiting[name] = (
                    CRASH_LOOP_BACK_OFF,
                    f"back-off {delay:.0f}s restarting failed container={name} pod={pod_name}_{ns}({uid})",
                )
                return left
            self.backoff.next(key)
        image = str(spec.get("image") or "")
        pull_key = f"{key}/{image}"
        failed_at = state.pull_failed_at.get(pull_key)
        if failed_at is not None:
            left = self.image_backoff.remaining(pull_key, failed_at)
            if left > 0:
                state.waiting[name] = (IMAGE_PULL_BACK_OFF, f'Back-off pulling image "{image}"')
                return left
        try:
            pull_secrets = [
                ctx.secrets[str(ref.get("name"))]
                for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []
                if str(ref.get("name")) in ctx.secrets
            ]
            image_ref = await ensure_image(
                self.cri,
                image,
                str(spec.get("imagePullPolicy") or default_pull_policy(image)),
                auth=auth_for(image, pull_secrets),
            )
        except ImagePullError as e:
            delay = self.image_backoff.next(pull_key)
            state.pull_failed_at[pull_key] = time.time()
            state.waiting[name] = (e.reason, e.message)
            return delay
        state.pull_failed_at.pop(pull_key, None)
        self.image_backoff.reset(pull_key)
        restarts = previous.restart_count + 1 if previous is not None else 0
        try:
            await self.volumes.prepare_container(pod, spec, ctx, restarts)
            cfg = container_config(pod, spec, ctx, attempt=restarts, log_dir_rel=name, image_ref=image_ref)
        except ContainerConfigError as e:
            state.waiting[name] = (CREATE_CONTAINER_CONFIG_ERROR, str(e))
            return CONFIG_RETRY_S
        try:
            cid = await self.cri.create_container(sync.sandbox_id, cfg, sync.sandbox_config)
        except CriUnavailable:
            raise
        except CriError as e:
            state.waiting[name] = (CREATE_CONTAINER_ERROR, e.details)
            return self.backoff.delay(key) or self.config.initial_backoff_s
        try:
            await self.cri.start_container(cid)
        except CriUnavailable:
            raise
        except CriError as e:
            # The container stays (exited, StartError) as the failed run the back-off counts from.
            state.waiting[name] = (RUN_CONTAINER_ERROR, e.details)
            if cur is None:
                self.backoff.next(key)
            return self.backoff.delay(key)
        state.waiting.pop(name, None)
        log.info("edged: %s/%s: started %s (restart %d)", pod_name, name, cid[:12], restarts)
        hook_error = await run_hook(
            self.cri,
            (spec.get("lifecycle") or {}).get("postStart"),
            spec,
            cid,
            ctx.pod_ip,
            grace_seconds(pod, self.config.default_grace_s),
        )
        if hook_error is not None:
            log.warning("edged: %s/%s: postStart failed: %s; killing it", pod_name, name, hook_error)
            await self.cri.stop_container(cid, timeout_s=0)
            state.waiting[name] = ("PostStartHookError", hook_error)
            return self.backoff.delay(key)
        return self.config.sync_period_s

    async def _kill(
        self, pod: Obj | None, spec: Obj | None, c: ContainerView, state: _PodState, grace: int
    ) -> None:
        """preStop within the grace period, then StopContainer with what is left of it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = ((spec or {}).get("lifecycle") or {}).get("preStop")
        if hook and grace > 0:
            err = await run_hook(self.cri, hook, spec or {}, c.id, (state.pod_ips or ("",))[0], grace)
            if err is not None:
                log.warning("edged: preStop of %s failed: %s", c.name, err)
        left = max(0, int(deadline - loop.time()))
        self.probes.forget(c.id)
        await self.cri.stop_container(c.id, timeout_s=left)

    async def _stop_sandbox(self, prt: rt.PodRuntime, sandbox_id: str, pod: Obj) -> None:
        for c in prt.running():
            self.probes.forget(c.id)
            await self.cri.stop_container(c.id, timeout_s=grace_seconds(pod, self.config.default_grace_s))
        await self.cri.stop_pod_sandbox(sandbox_id)

    async def _collect_garbage(self, prt: rt.PodRuntime, sandbox_id: str) -> None:
        removed: set[str] = set()
        for instances in prt.by_name().values():
            for c in rt.garbage(instances):
                await self.cri.remove_container(c.id)
                self.probes.forget(c.id)
                removed.add(c.id)
        for sb in prt.sandboxes:
            if sb.id == sandbox_id:
                continue
            if all(c.id in removed for c in prt.containers if c.sandbox_id == sb.id):
                await self.cri.stop_pod_sandbox(sb.id)
                await self.cri.remove_pod_sandbox(sb.id)

    # ---- termination ---------------------------------------------------------------------------

    async def _stop_all(self, uid: str, state: _PodState, pod: Obj | None) -> None:
        """Stop every running container of the pod at once (preStop, then the rest of the grace)."""
        running = (await rt.inspect_pod(self.cri, uid)).running()
        if not running:
            return
        if pod is not None:
            now = time.time()
            full = grace_seconds(pod, self.config.default_grace_s)
            left = math.ceil(stop_deadline(pod, self.config.default_grace_s, now) - now)
            grace = max(left, min(full, MIN_STOP_GRACE_S))
        else:
            grace = min(_grace_of(c) for c in running)
        await asyncio.gather(
            *(
                self._kill(pod, _spec_of(pod, c.name) if pod else _spec_from(c), c, state, grace)
                for c in running
            )
        )

    async def _remove(self, uid: str, state: _PodState, pod: Obj | None) -> None:
        """Remove the stopped pod from the runtime and clean up the host."""
        prt = await rt.inspect_pod(self.cri, uid)
        for sb in prt.sandboxes:
            await self.cri.stop_pod_sandbox(sb.id)
        for c in prt.containers:
            await self.cri.remove_container(c.id)
        for sb in prt.sandboxes:
            await self.cri.remove_pod_sandbox(sb.id)
        self.probes.forget_pod(uid)
        if self.tokens is not None:
            self.tokens.forget_pod(uid)
        self.backoff.forget_prefix(f"{uid}/")
        self.image_backoff.forget_prefix(f"{uid}/")
        await self.volumes.cleanup(uid)
        left = await rt.remove_cgroup_soon(rt.pod_cgroup(self.config.cgroup_parent, uid))
        if left and len(self._busy_cgroups) < MAX_BUSY_CGROUPS:
            log.warning("edged: pod %s: cgroup %s still busy; the resync removes it later", uid, left[0])
            self._busy_cgroups.add(uid)
        if pod is not None:
            await asyncio.to_thread(shutil.rmtree, self._log_dir(pod), True)
        if prt.sandboxes or prt.containers:
            log.info("edged: pod %s removed from the runtime", (pod and "/".join(_ns_name(pod))) or uid)

    # ---- status --------------------------------------------------------------------------------

    def observe(self, state: _PodState) -> PodObservation:
        prt = state.observed
        containers = prt.by_name() if prt is not None else {}
        ready: dict[str, bool] = {}
        started: dict[str, bool] = {}
        for instances in containers.values():
            for c in instances[:1]:
                if c.state == RUNNING:
                    r, s = self.probes.ready(c.id), self.probes.started(c.id)
                    if r is not None:
                        ready[c.id] = r
                    if s is not None:
                        started[c.id] = s
        return PodObservation(
            containers=containers,
            pod_ips=state.pod_ips if state.sandbox_id else (),
            host_ips=self.host_ips,
            waiting=dict(state.waiting),
            ready=ready,
            started=started,
            start_time=state.start_time,
            runtime=self.runtime_name,
        )

    async def _report(self, uid: str, pod: Obj, state: _PodState, *, terminal: bool = False) -> None:
        status = compute_status(pod, self.observe(state), state.reported, time.time(), terminal=terminal)
        if _same_status(state.reported, status):
            return
        ns, name = _ns_name(pod)
        patch = orjson.dumps({"status": merge_patch(state.reported, status)}).decode()
        await self.send_upstream(f"{ns}/{RT_PODPATCH}/{name}", OP_PATCH, patch, GROUP_RESOURCE)
        was_terminal = str((state.reported or {}).get("phase") or "") in TERMINAL_PHASES
        state.reported = status
        if status.get("phase") in TERMINAL_PHASES and not was_terminal:
            state.dirty.set()  # the next sync releases the finished pod's sandbox

    # ---- introspection -------------------------------------------------------------------------

    def reported(self, uid: str) -> Obj | None:
        state = self._pods.get(uid)
        return state.reported if state else None


def _same_status(old: Obj | None, new: Obj) -> bool:
    if not old:
        return False
    return all(old.get(k) == v for k, v in new.items()) and all(k in new for k in old)


def _start_time(pod: Obj) -> float:
    return _rfc3339_s((pod.get("status") or {}).get("startTime")) or 0.0


def _newest(instances: Mapping[str, list[ContainerView]], name: str) -> ContainerView | None:
    found = instances.get(name)
    return found[0] if found else None


def _attempt(prt: rt.PodRuntime, sandbox_id: str) -> int:
    for sb in prt.sandboxes:
        if sb.id == sandbox_id:
            return int(sb.metadata.attempt)
    return 0


def _all_containers(pod: Obj) -> list[Obj]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _spec_of(pod: Obj | None, name: str) -> Obj | None:
    for c in _all_containers(pod or {}):
        if c.get("name") == name:
            return c
    return None


def _grace_of(c: ContainerView) -> int:
    try:
        return max(0, int(c.annotations.get(ANN_TERMINATION_GRACE, ORPHAN_GRACE_S)))
    except ValueError:
        return ORPHAN_GRACE_S


def _spec_from(c: ContainerView) -> Obj:
    """What the container's annotations tell of its spec, for a pod edged no longer has."""
    spec: Obj = {"name": c.name}
    with contextlib.suppress(ValueError):
        if ANN_PRESTOP_HANDLER in c.annotations:
            spec["lifecycle"] = {"preStop": json.loads(c.annotations[ANN_PRESTOP_HANDLER])}
        if ANN_CONTAINER_PORTS in c.annotations:
            spec["ports"] = json.loads(c.annotations[ANN_CONTAINER_PORTS])
    return spec
