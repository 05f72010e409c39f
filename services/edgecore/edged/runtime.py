"""Pods as the runtime sees them: sandboxes and containers found again by their labels, reduced to
`ContainerView`s; what to do with each container (`decide`), which old ones to remove (`garbage`),
and which sandboxes belong to no wanted pod (`orphans`). Pure decisions are kept apart from CRI calls
so that adoption after an edgecore restart is testable without a runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final

from .cri import CriClient, CriNotFound, api
from .podspec import ANN_CONTAINER_HASH, ANN_RESTART_COUNT, LABEL_CONTAINER_NAME, LABEL_POD_UID
from .status import CREATED, EXITED, RUNNING, UNKNOWN, ContainerView, should_restart

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
# A stopped pod's processes leave its cgroup within moments; give up on the rmdir after this long.
CGROUP_REMOVE_TIMEOUT_S: Final = 5.0
CGROUP_REMOVE_RETRY_S: Final = 0.1
_STATES: Final = {
    api.CONTAINER_CREATED: CREATED,
    api.CONTAINER_RUNNING: RUNNING,
    api.CONTAINER_EXITED: EXITED,
    api.CONTAINER_UNKNOWN: UNKNOWN,
}
NS_PER_S: Final = 1e9


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def view_of(st: api.ContainerStatus, sandbox_id: str = "") -> ContainerView:
    ann = st.annotations
    return ContainerView(
        id=st.id,
        name=st.labels.get(LABEL_CONTAINER_NAME) or st.metadata.name,
        state=_STATES.get(st.state, UNKNOWN),
        restart_count=_int(ann.get(ANN_RESTART_COUNT), st.metadata.attempt),
        created_at=st.created_at / NS_PER_S,
        started_at=st.started_at / NS_PER_S,
        finished_at=st.finished_at / NS_PER_S,
        exit_code=st.exit_code,
        reason=st.reason,
        message=st.message,
        image=st.image.image,
        image_ref=st.image_ref,
        spec_hash=ann.get(ANN_CONTAINER_HASH, ""),
        sandbox_id=sandbox_id,
        annotations=dict(ann),
    )


@dataclass
class PodRuntime:
    """One pod's sandboxes and containers, each list newest first."""

    uid: str
    sandboxes: list[api.PodSandbox] = field(default_factory=list)
    containers: list[ContainerView] = field(default_factory=list)

    def ready_sandbox(self) -> api.PodSandbox | None:
        for s in self.sandboxes:
            if s.state == api.SANDBOX_READY:
                return s
        return None

    def next_attempt(self) -> int:
        return max((s.metadata.attempt for s in self.sandboxes), default=-1) + 1

    def by_name(self, sandbox_id: str | None = None) -> dict[str, list[ContainerView]]:
        """Instances per container name, newest first; only those of `sandbox_id` when given."""
        out: dict[str, list[ContainerView]] = {}
        for c in self.containers:
            if sandbox_id is None or c.sandbox_id == sandbox_id:
                out.setdefault(c.name, []).append(c)
        return out

    def running(self) -> list[ContainerView]:
        return [c for c in self.containers if c.state == RUNNING]


async def inspect_pod(cri: CriClient, uid: str) -> PodRuntime:
    """The pod's sandboxes and the status of each of its containers (found by the pod-uid label)."""
    sandboxes = await cri.list_pod_sandbox(labels={LABEL_POD_UID: uid})
    listed = await cri.list_containers(labels={LABEL_POD_UID: uid})
    views = []
    for c in listed:
        try:
            st = (await cri.container_status(c.id)).status
        except CriNotFound:
            continue  # removed between the list and the status call
        views.append(view_of(st, c.pod_sandbox_id))
    sandboxes.sort(key=lambda s: s.created_at, reverse=True)
    views.sort(key=lambda v: v.created_at, reverse=True)
    return PodRuntime(uid, sandboxes, views)


@dataclass(frozen=True)
class Snapshot:
    """One relist: runtime object id -> (pod uid, state); only objects carrying our pod-uid label."""

    sandboxes: Mapping[str, tuple[str, int]]
    containers: Mapping[str, tuple[str, int]]

    def uids(self) -> set[str]:
        return {u for u, _ in self.sandboxes.values()} | {u for u, _ in self.containers.values()}


async def snapshot(cri: CriClient) -> Snapshot:
    sandboxes = {
        s.id: (s.labels[LABEL_POD_UID], int(s.state))
        for s in await cri.list_pod_sandbox()
        if s.labels.get(LABEL_POD_UID)
    }
    containers = {
        c.id: (c.labels[LABEL_POD_UID], int(c.state))
        for c in await cri.list_containers()
        if c.labels.get(LABEL_POD_UID)
    }
    return Snapshot(sandboxes, containers)


def changed_uids(old: Snapshot | None, new: Snapshot) -> set[str]:
    """Pods whose sandboxes or containers appeared, went away or changed state between two relists."""
    if old is None:
        return new.uids()
    out: set[str] = set()
    for before, after in ((old.sandboxes, new.sandboxes), (old.containers, new.containers)):
        for key in before.keys() | after.keys():
            if before.get(key) != after.get(key):
                out.add((after.get(key) or before[key])[0])
    return out


def orphans(runtime_uids: Iterable[str], wanted: Iterable[str]) -> set[str]:
    """Pods the runtime holds that no wanted pod claims (deleted while edgecore was down, etc.)."""
    return set(runtime_uids) - set(wanted)


class Action(Enum):
    KEEP = "keep"  # running as wanted: leave it alone (this is how adoption never restarts)
    START = "start"  # nothing yet, or exited and due for a restart
    REPLACE = "replace"  # running, but its spec changed or its liveness failed: kill, then start anew
    DONE = "done"  # exited and not to be restarted (restartPolicy)


def decide(
    cur: ContainerView | None, spec_hash: str, policy: str, *, init: bool = False, unhealthy: bool = False
) -> Action:
    if cur is None:
        return Action.START
    if cur.state == RUNNING:
        if (cur.spec_hash and cur.spec_hash != spec_hash) or unhealthy:
            return Action.REPLACE
        return Action.KEEP
    # Created-but-never-started (a failed start) counts as a failed run.
    exit_code = cur.exit_code if cur.state == EXITED else 128
    if init and cur.state == EXITED and exit_code == 0:
        return Action.DONE
    return Action.START if should_restart(policy, exit_code, init=init) else Action.DONE


def garbage(instances: Sequence[ContainerView]) -> list[ContainerView]:
    """Old instances of one container to remove: all but the newest and the newest exited one before
    it (kept for `kubectl logs --previous` and lastState). Running instances are never garbage."""
    out: list[ContainerView] = []
    kept_previous = False
    for c in instances[1:]:
        if c.state == RUNNING:
            continue
        if not kept_previous and c.state == EXITED:
            kept_previous = True
            continue
        out.append(c)
    return out


def pod_cgroup(parent: str, uid: str) -> str:
    """The pod's own cgroup directory under the node's cgroup parent (cgroupfs layout)."""
    return f"{parent.rstrip('/')}/pod{uid}"


def cgroup_dirs(path: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Where a cgroupfs path lives: the single v2 dir, or one dir per v1 hierarchy."""
    rel = path.strip("/")
    if (root / "cgroup.controllers").exists():
        return [root / rel]
    if not root.is_dir():
        return []
    return [h / rel for h in sorted(root.iterdir()) if h.is_dir() and not h.is_symlink()]


def remove_cgroup(path: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """rmdir the pod's cgroup (containerd leaves it behind), children first; returns the directories
    that remain. Never removes a cgroup that still has processes: the kernel refuses (EBUSY)."""
    for top in cgroup_dirs(path, root):
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(dirpath)
    return [top for top in cgroup_dirs(path, root) if top.exists()]


async def remove_cgroup_soon(
    path: str, root: Path = CGROUP_ROOT, *, within: float = CGROUP_REMOVE_TIMEOUT_S
) -> list[Path]:
    """remove_cgroup, retried while the pod's last processes finish exiting (they leave the cgroup a
    moment after StopPodSandbox returns); what still remains after ``within`` is returned (the caller
    logs it; the next teardown of that pod, or the orphan sweep, tries again)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        # A walk of cgroupfs for every hierarchy: kept off the event loop.
        left = await asyncio.to_thread(remove_cgroup, path, root)
        if not left or loop.time() >= end:
            return left
        await asyncio.sleep(CGROUP_REMOVE_RETRY_S)
