"""The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.

It follows upstream pkg/controller/deployment closely, because kubectl reads what it writes:
ReplicaSets are named `<deployment>-<pod-template-hash>` and carry that label in their selector,
template and pods; `deployment.kubernetes.io/revision` (and revision-history, desired-replicas,
max-replicas) annotations drive `kubectl rollout history|undo`; status and the Progressing/Available
conditions drive `kubectl rollout status`. Strategies: RollingUpdate (maxSurge/maxUnavailable) and
Recreate. Old ReplicaSets beyond revisionHistoryLimit are deleted.

Where upstream trusts ReplicaSet status that may lag behind their spec, this controller counts
conservatively (see `pods_of` and `available_of`), so a rolling update never has more than
replicas + maxSurge pods nor fewer than replicas - maxUnavailable available, even while caches lag.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
from collections.abc import Iterable
from typing import Any

from kubeedge.kube import DEPLOYMENTS, PODS, REPLICASETS, Obj
from kubeedge.kube.errors import AlreadyExists, Conflict, NotFound

from . import podtemplate as pt
from .framework import Controller, Key, controller_of, ignore_not_found, key_of, uid_of

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Annotations of the Deployment that are not copied to its ReplicaSets (upstream annotationsToSkip).
SKIP_COPY = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, ROLLBACK_TO})
MAX_REVISION_HISTORY_CHARS = 2000
NO_DEADLINE = 2**31 - 1

# Condition reasons, as upstream deploymentutil.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
FAILED_RS_CREATE = "ReplicaSetCreateError"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

UID_INDEX = "deployment/uid"


# ---- numbers ------------------------------------------------------------------------------------


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An IntOrString (3 or "25%") against `total` (upstream intstr.GetScaledValueFromIntOrPercent)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a percentage: {text!r}")
    pct = int(text[:-1])
    return math.ceil(pct * total / 100) if round_up else math.floor(pct * total / 100)


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """(surge, unavailable) for `desired` replicas: surge rounds up, unavailable down; both zero
    would block a rollout forever, so unavailable becomes 1 then (upstream ResolveFenceposts)."""
    surge = scaled_value(max_surge, desired, True)
    unavailable = scaled_value(max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def replicas_of(d: Obj) -> int:
    return _int((d.get("spec") or {}).get("replicas"), 1)


def is_rolling(d: Obj) -> bool:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def _rolling_params(d: Obj) -> tuple[Any, Any]:
    ru = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%")


def max_surge(d: Obj) -> int:
    if not is_rolling(d):
        return 0
    surge, _ = resolve_fenceposts(*_rolling_params(d), replicas_of(d))
    return surge


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    _, unavailable = resolve_fenceposts(*_rolling_params(d), replicas_of(d))
    return min(unavailable, replicas_of(d))


def round_half_away(x: float) -> int:
    """Go's math.Round: halves away from zero (Python's round() is banker's)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


# ---- ReplicaSet accessors -----------------------------------------------------------------------


def spec_replicas(rs: Obj | None) -> int:
    return 0 if rs is None else _int((rs.get("spec") or {}).get("replicas"), 1)


def status_int(rs: Obj | None, field: str) -> int:
    return 0 if rs is None else _int((rs.get("status") or {}).get(field))


def pods_of(rs: Obj) -> int:
    """Pods a ReplicaSet may have right now: its spec, or more while it has not yet deleted a
    surplus (status.replicas counts pods not yet being deleted). Upstream counts spec only, which
    lets the new ReplicaSet create pods before the old one has deleted its own."""
    return max(spec_replicas(rs), status_int(rs, "replicas"))


def available_of(rs: Obj) -> int:
    """Available pods a ReplicaSet can be relied on for: never more than its spec, since a scale-down
    deletes pods before its status says so."""
    return min(spec_replicas(rs), status_int(rs, "availableReplicas"))


def revision_of(obj: Obj | None) -> int:
    if obj is None:
        return 0
    return _int(pt.annotations_of(obj).get(REVISION), 0)


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    return sorted(rss, key=pt.creation_key)


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and spec_replicas(rs) > 0]


# ---- which ReplicaSet is new --------------------------------------------------------------------


def template_of(obj: Obj) -> Obj:
    return (obj.get("spec") or {}).get("template") or {}


def find_new_rs(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's, ignoring the hash label."""
    for rs in by_creation(rss):
        if pt.templates_equal_ignoring(template_of(rs), template_of(d), HASH_LABEL):
            return rs
    return None


def find_old_rss(rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
    nu = uid_of(new_rs) if new_rs is not None else None
    return [rs for rs in rss if uid_of(rs) != nu]


# ---- annotations --------------------------------------------------------------------------------


def set_replicas_annotations(ann: dict[str, str], desired: int, maximum: int) -> bool:
    changed = False
    for k, v in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if ann.get(k) != v:
            ann[k] = v
            changed = True
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, exists: bool) -> bool:
    """Copy the Deployment's annotations, raise the revision (remembering the old one in
    revision-history when an old ReplicaSet comes back), and for a new ReplicaSet set the replica
    annotations (upstream SetNewReplicaSetAnnotations). Mutates `rs`; True if it changed."""
    md = rs.setdefault("metadata", {})
    ann: dict[str, str] = md.setdefault("annotations", {}) or {}
    md["annotations"] = ann
    changed = False
    for k, v in pt.annotations_of(d).items():
        if k in SKIP_COPY or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    old = ann.get(REVISION)
    try:
        old_int = int(old) if old is not None else 0
    except ValueError:
        if old:
            return False
        old_int = 0
    if old_int < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if old is not None:
            _append_revision_history(ann, old)
    if not exists and set_replicas_annotations(ann, replicas_of(d), replicas_of(d) + max_surge(d)):
        changed = True
    return changed


def _append_revision_history(ann: dict[str, str], old_revision: str) -> None:
    history = ann.get(REVISION_HISTORY, "")
    if not history:
        ann[REVISION_HISTORY] = old_revision
        return
    revs = history.split(",")
    total = len(history) + len(old_revision) + 1
    start = 0
    while total > MAX_REVISION_HISTORY_CHARS and start < len(revs):
        total -= len(revs[start]) + 1
        start += 1
    if total <= MAX_REVISION_HISTORY_CHARS:
        ann[REVISION_HISTORY] = ",".join([*revs[start:], old_revision])


# ---- rollout arithmetic (pure: each returns the sizes to set) -----------------------------------


def new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How big the new ReplicaSet may be now (upstream NewRSNewReplicas)."""
    want = replicas_of(d)
    if not is_rolling(d):
        return want
    surge = scaled_value(_rolling_params(d)[0], want, True)
    current = sum(pods_of(rs) for rs in all_rss)
    cur_new = spec_replicas(new_rs)
    if current >= want + surge:
        return cur_new
    return cur_new + max(0, min(want + surge - current, want - cur_new))


def old_rs_scale_down(d: Obj, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj) -> dict[str, int]:
    """New sizes (by name) for old ReplicaSets in a rolling update: first drop their unavailable
    pods (as far as maxUnavailable allows), then scale down as many as keep replicas - maxUnavailable
    available (upstream reconcileOldReplicaSets)."""
    old_active = active(old_rss)
    if sum(spec_replicas(rs) for rs in old_active) == 0:
        return {}
    sizes = {rs["metadata"]["name"]: spec_replicas(rs) for rs in old_active}
    min_available = replicas_of(d) - max_unavailable(d)
    all_pods = sum(spec_replicas(rs) for rs in all_rss)
    new_unavailable = spec_replicas(new_rs) - available_of(new_rs)
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    # Unhealthy old pods first: removing them cannot lower availability.
    cleaned = 0
    for rs in by_creation(old_active):
        if cleaned >= max_scaled_down:
            break
        name, size = rs["metadata"]["name"], sizes[rs["metadata"]["name"]]
        unhealthy = size - available_of(rs)
        if size == 0 or unhealthy <= 0:
            continue
        n = min(max_scaled_down - cleaned, unhealthy)
        sizes[name] = size - n
        cleaned += n
    # Then healthy ones, down to the minimum availability.
    available = sum(available_of(rs) for rs in all_rss if rs not in old_active) + sum(
        min(sizes[rs["metadata"]["name"]], available_of(rs)) for rs in old_active
    )
    if available > min_available:
        budget = available - min_available
        for rs in by_creation(old_active):
            if budget <= 0:
                break
            name = rs["metadata"]["name"]
            if sizes[name] == 0:
                continue
            n = min(sizes[name], budget)
            sizes[name] -= n
            budget -= n
    return {name: size for name, size in sizes.items() if size != spec_replicas(_named(old_active, name))}


def _named(rss: list[Obj], name: str) -> Obj:
    return next(rs for rs in rss if rs["metadata"]["name"] == name)


def find_active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    if new_rs is None and not old_rss:
        return None
    newest_first = list(reversed(by_creation(old_rss)))
    live = active([*newest_first, new_rs])
    if not live:
        return new_rs if new_rs is not None else newest_first[0]
    return live[0] if len(live) == 1 else None


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    try:
        desired = int(pt.annotations_of(rs).get(DESIRED_REPLICAS, ""))
    except ValueError:
        return False
    want = replicas_of(d)
    return spec_replicas(rs) == want and desired == want and status_int(rs, "availableReplicas") == want


def _rs_fraction(rs: Obj, d: Obj) -> int:
    if replicas_of(d) == 0:
        return -spec_replicas(rs)
    deployment_replicas = replicas_of(d) + max_surge(d)
    try:
        annotated = int(pt.annotations_of(rs).get(MAX_REPLICAS, ""))
    except ValueError:
        annotated = _int((d.get("status") or {}).get("replicas"))
    if annotated == 0:
        return 0
    return round_half_away(spec_replicas(rs) * deployment_replicas / annotated) - spec_replicas(rs)


def _rs_proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    if spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _rs_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def scale_plan(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> dict[str, int]:
    """New sizes (by name) when the Deployment's replicas changed or a paused Deployment is scaled:
    one active ReplicaSet takes it all, otherwise it is spread proportionally over the active ones
    (upstream DeploymentController.scale)."""
    target = find_active_or_latest(new_rs, old_rss)
    if target is not None:
        if spec_replicas(target) == replicas_of(d):
            return {}
        return {target["metadata"]["name"]: replicas_of(d)}
    if is_saturated(d, new_rs):
        return {rs["metadata"]["name"]: 0 for rs in active(old_rss)}
    if not is_rolling(d):
        return {}
    live = active([*old_rss, new_rs])
    allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
    to_add = allowed - sum(spec_replicas(rs) for rs in live)
    if to_add > 0:  # larger first; newer first among equals when scaling up
        live.sort(key=lambda rs: pt.creation_key(rs), reverse=True)
        live.sort(key=lambda rs: -spec_replicas(rs))
    elif to_add < 0:  # larger first; older first among equals when scaling down
        live.sort(key=pt.creation_key)
        live.sort(key=lambda rs: -spec_replicas(rs))
    sizes: dict[str, int] = {}
    added = 0
    for rs in live:
        p = _rs_proportion(rs, d, to_add, added)
        sizes[rs["metadata"]["name"]] = spec_replicas(rs) + p
        added += p
    if live and to_add != 0:
        first = live[0]["metadata"]["name"]
        sizes[first] = max(0, sizes[first] + to_add - added)
    return {name: n for name, n in sizes.items() if n != spec_replicas(_named(live, name))}


def is_scaling_event(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
    for rs in active([*old_rss, new_rs]):
        desired = pt.annotations_of(rs).get(DESIRED_REPLICAS)
        if desired is not None and _int(desired, -1) != replicas_of(d):
            return True
    return False


def history_to_delete(d: Obj, old_rss: list[Obj]) -> list[Obj]:
    """Old ReplicaSets beyond revisionHistoryLimit, oldest revision first, that are fully scaled
    down and settled (upstream cleanupDeployment)."""
    limit = (d.get("spec") or {}).get("revisionHistoryLimit")
    if limit is None:
        return []
    alive = [rs for rs in old_rss if not pt.is_terminating(rs)]
    excess = len(alive) - _int(limit)
    if excess <= 0:
        return []
    ordered = sorted(alive, key=lambda rs: (revision_of(rs), *pt.creation_key(rs)))
    out = []
    for rs in ordered[:excess]:
        settled = _int((rs.get("metadata") or {}).get("generation"), 1) <= status_int(
            rs, "observedGeneration"
        )
        if spec_replicas(rs) == 0 and status_int(rs, "replicas") == 0 and settled:
            out.append(rs)
    return out


# ---- status and conditions ----------------------------------------------------------------------


def has_progress_deadline(d: Obj) -> bool:
    pds = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return pds is not None and _int(pds) != NO_DEADLINE


def get_condition(status: Obj, ctype: str) -> Obj | None:
    for c in status.get("conditions") or ():
        if c.get("type") == ctype:
            return c
    return None


def new_condition(ctype: str, status: str, reason: str, message: str, now: dt.datetime) -> Obj:
    t = pt.format_time(now)
    return {
        "type": ctype,
        "status": status,
        "lastUpdateTime": t,
        "lastTransitionTime": t,
        "reason": reason,
        "message": message,
    }


def set_condition(status: Obj, cond: Obj) -> None:
    """Upstream SetDeploymentCondition: same status and reason is no change; same status keeps the
    transition time."""
    cur = get_condition(status, cond["type"])
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime")}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Obj, ctype: str) -> None:
    conds = [c for c in status.get("conditions") or () if c.get("type") != ctype]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: dt.datetime) -> Obj:
    old = d.get("status") or {}
    available = sum(status_int(rs, "availableReplicas") for rs in all_rss)
    total = sum(spec_replicas(rs) for rs in all_rss)
    status: Obj = {
        "observedGeneration": _int((d.get("metadata") or {}).get("generation"), 1),
        "replicas": sum(status_int(rs, "replicas") for rs in all_rss),
        "updatedReplicas": status_int(new_rs, "replicas"),
        "readyReplicas": sum(status_int(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= replicas_of(d) - max_unavailable(d):
        cond = new_condition("Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        cond = new_condition(
            "Available", "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.", now
        )
    set_condition(status, cond)
    return status


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas_of(d)
    return (
        _int(status.get("updatedReplicas")) == want
        and _int(status.get("replicas")) == want
        and _int(status.get("availableReplicas")) == want
        and _int(status.get("observedGeneration")) >= _int((d.get("metadata") or {}).get("generation"), 1)
    )


def deployment_progressing(d: Obj, new: Obj) -> bool:
    old = d.get("status") or {}
    old_old = _int(old.get("replicas")) - _int(old.get("updatedReplicas"))
    new_old = _int(new.get("replicas")) - _int(new.get("updatedReplicas"))
    return (
        _int(new.get("updatedReplicas")) > _int(old.get("updatedReplicas"))
        or new_old < old_old
        or _int(new.get("readyReplicas")) > _int(old.get("readyReplicas"))
        or _int(new.get("availableReplicas")) > _int(old.get("availableReplicas"))
    )


def deployment_timed_out(d: Obj, status: Obj, now: dt.datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = pt.parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    return since + dt.timedelta(seconds=_int(d["spec"].get("progressDeadlineSeconds"))) < now


def rollout_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: dt.datetime) -> Obj:
    """The status after a rollout step, with the Progressing condition advanced (upstream
    syncRolloutStatus, minus the write)."""
    status = calculate_status(d, all_rss, new_rs, now)
    if not has_progress_deadline(d):
        remove_condition(status, "Progressing")
    cur = get_condition(d.get("status") or {}, "Progressing")
    complete = (
        _int(status.get("replicas")) == _int(status.get("updatedReplicas"))
        and cur is not None
        and cur.get("reason") == NEW_RS_AVAILABLE
    )
    name = (d.get("metadata") or {}).get("name", "")
    what = f'ReplicaSet "{new_rs["metadata"]["name"]}"' if new_rs is not None else f'Deployment "{name}"'
    if has_progress_deadline(d) and not complete:
        if deployment_complete(d, status):
            set_condition(
                status,
                new_condition(
                    "Progressing", "True", NEW_RS_AVAILABLE, f"{what} has successfully progressed.", now
                ),
            )
        elif deployment_progressing(d, status):
            cond = new_condition("Progressing", "True", RS_UPDATED, f"{what} is progressing.", now)
            if cur is not None:
                if cur.get("status") == "True":
                    cond["lastTransitionTime"] = cur.get("lastTransitionTime")
                remove_condition(status, "Progressing")
            set_condition(status, cond)
        elif deployment_timed_out(d, status, now):
            set_condition(
                status,
                new_condition("Progressing", "False", TIMED_OUT, f"{what} has timed out progressing.", now),
            )
    failure = _replica_failure(all_rss, new_rs)
    if failure is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, "ReplicaFailure")
    return status


def _replica_failure(all_rss: list[Obj], new_rs: Obj | None) -> Obj | None:
    for rs in [new_rs, *all_rss] if new_rs is not None else all_rss:
        for c in (rs.get("status") or {}).get("conditions") or ():
            if c.get("type") == "ReplicaFailure":
                return {
                    "type": "ReplicaFailure",
                    "status": c.get("status", "True"),
                    "lastUpdateTime": c.get("lastTransitionTime"),
                    "lastTransitionTime": c.get("lastTransitionTime"),
                    "reason": c.get("reason", ""),
                    "message": c.get("message", ""),
                }
    return None


def stuck_requeue(d: Obj, new_status: Obj, now: dt.datetime) -> float | None:
    """When to look again for a progress deadline passing (upstream requeueStuckDeployment)."""
    cur = get_condition(d.get("status") or {}, "Progressing")
    if not has_progress_deadline(d) or cur is None:
        return None
    if deployment_complete(d, new_status) or cur.get("reason") == TIMED_OUT:
        return None
    since = pt.parse_time(cur.get("lastUpdateTime"))
    if since is None:
        return None
    after = (
        since + dt.timedelta(seconds=_int(d["spec"].get("progressDeadlineSeconds"))) - now
    ).total_seconds()
    return 1.0 if after < 1 else after + 1


def old_pods_running(new_rs: Obj | None, old_rss: list[Obj], pods_by_rs: dict[str, list[Obj]]) -> bool:
    """Whether a Recreate rollout must still wait for old pods to go (upstream oldPodsRunning)."""
    if sum(status_int(rs, "replicas") for rs in old_rss) > 0:
        return True
    new_uid = uid_of(new_rs) if new_rs is not None else None
    for rs_uid, pods in pods_by_rs.items():
        if rs_uid == new_uid:
            continue
        if any(pt.pod_phase(p) not in ("Failed", "Succeeded") for p in pods):
            return True
    return False


def new_replicaset(d: Obj, collision_count: int | None) -> Obj:
    """The ReplicaSet for the Deployment's current template (replicas still to be decided)."""
    md, spec = d["metadata"], d.get("spec") or {}
    template = copy.deepcopy(template_of(d))
    h = pt.template_hash(template_of(d), collision_count)
    tmd = template.setdefault("metadata", {})
    tmd["labels"] = {**(tmd.get("labels") or {}), HASH_LABEL: h}
    selector = copy.deepcopy(spec.get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: h}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{md['name']}-{h}",
            "namespace": md.get("namespace"),
            "labels": dict(tmd["labels"]),
            "ownerReferences": [pt.controller_ref(d, "apps/v1", "Deployment")],
        },
        "spec": {
            "replicas": 0,
            "minReadySeconds": _int(spec.get("minReadySeconds")),
            "selector": selector,
            "template": template,
        },
    }


# ---- the controller -----------------------------------------------------------------------------


class DeploymentController(Controller):
    name = "deployment"
    workers = 2

    def setup(self) -> None:
        self.d_informer = self.informers.get(DEPLOYMENTS)
        self.rs_informer = self.informers.get(REPLICASETS)
        self.pod_informer = self.informers.get(PODS)
        self.d_informer.add_index(UID_INDEX, _own_uid)
        self.rs_informer.add_index(pt.OWNER_UID_INDEX, pt.owner_uid_index)
        self.rs_informer.add_index(pt.ORPHAN_NS_INDEX, pt.orphan_namespace_index)
        self.pod_informer.add_index(pt.OWNER_UID_INDEX, pt.owner_uid_index)
        # ReplicaSets as this controller last wrote them, until the informer catches up: a reconcile
        # right after a write must not act on the ReplicaSet's previous size.
        self._written: dict[str, Obj] = {}
        self.d_informer.add_handler(self._on_deployment)
        self.rs_informer.add_handler(self._on_rs)
        self.pod_informer.add_handler(self._on_pod)

    # -- event handlers ---------------------------------------------------------------------------

    def _on_deployment(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        assert obj is not None
        self.queue.add(key_of(obj))

    def _owner(self, obj: Obj | None) -> Obj | None:
        ref = controller_of(obj) if obj is not None else None
        if ref is None or ref.get("kind") != "Deployment" or not ref.get("uid"):
            return None
        found = self.d_informer.by_index(UID_INDEX, str(ref["uid"]))
        return found[0] if found else None

    def _on_rs(self, old: Obj | None, new: Obj | None) -> None:
        if new is None and old is not None:
            self._written.pop(uid_of(old), None)
        for obj in (old, new):
            if obj is None:
                continue
            d = self._owner(obj)
            if d is not None:
                self.queue.add(key_of(d))
            elif controller_of(obj) is None and new is not None:
                ns = (obj.get("metadata") or {}).get("namespace") or ""
                for d in self.d_informer.list(ns):
                    if pt.selector_matches((d.get("spec") or {}).get("selector"), pt.labels_of(obj)):
                        self.queue.add(key_of(d))

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        # Only a Recreate rollout waits on pods, and only for them to be gone.
        if new is not None or old is None:
            return
        ref = controller_of(old)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        for rs in self.rs_informer.list((old.get("metadata") or {}).get("namespace") or ""):
            if uid_of(rs) == ref.get("uid"):
                d = self._owner(rs)
                if d is not None and not is_rolling(d):
                    self.queue.add(key_of(d))
                return

    # -- cache with our own writes ----------------------------------------------------------------

    def _fresh(self, rs: Obj) -> Obj:
        mine = self._written.get(uid_of(rs))
        if mine is None:
            return rs
        if _rv(mine) > _rv(rs):
            return mine
        self._written.pop(uid_of(rs), None)
        return rs

    def _remember(self, rs: Obj) -> Obj:
        self._written[uid_of(rs)] = rs
        return rs

    # -- reconcile --------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        cached = self.d_informer.get(*key)
        if cached is None:
            return None
        d = copy.deepcopy(cached)
        try:
            return await self._sync_deployment(d)
        except Conflict:
            # Someone (often we) changed an object since the cache saw it; its event re-queues the
            # Deployment, this is only a backstop.
            return 0.5

    async def _sync_deployment(self, d: Obj) -> float | None:
        spec = d.get("spec") or {}
        selector = spec.get("selector") or {}
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            # Selecting everything is refused (upstream); just acknowledge the generation.
            if _int((d.get("status") or {}).get("observedGeneration")) < _int(
                d["metadata"].get("generation"), 1
            ):
                d.setdefault("status", {})["observedGeneration"] = _int(d["metadata"].get("generation"), 1)
                await self.kc.update_status(DEPLOYMENTS, d)
            return None
        rss = await self._claim_replicasets(d)
        if pt.is_terminating(d):
            new_rs, old_rss = self._split(d, rss)
            await self._write_status(d, calculate_status(d, [*old_rss, *_opt(new_rs)], new_rs, pt.now_utc()))
            return None
        d = await self._check_paused_conditions(d)
        if spec.get("paused"):
            return await self._sync_scale(d, rss)
        new_rs, old_rss = self._split(d, rss)
        if is_scaling_event(d, new_rs, old_rss):
            return await self._sync_scale(d, rss)
        if not is_rolling(d):
            return await self._rollout_recreate(d, rss)
        return await self._rollout_rolling(d, rss)

    def _split(self, d: Obj, rss: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        new_rs = find_new_rs(d, rss)
        return new_rs, find_old_rss(rss, new_rs)

    # -- claiming ReplicaSets ---------------------------------------------------------------------

    async def _claim_replicasets(self, d: Obj) -> list[Obj]:
        md = d["metadata"]
        ns, uid = md.get("namespace") or "", uid_of(d)
        selector = (d.get("spec") or {}).get("selector")
        owned: list[Obj] = []
        for rs in self.rs_informer.by_index(pt.OWNER_UID_INDEX, uid):
            rs = self._fresh(rs)
            if pt.selector_matches(selector, pt.labels_of(rs)):
                owned.append(rs)
            elif not pt.is_terminating(d):
                await self._set_owner_refs(rs, [r for r in _refs(rs) if r.get("uid") != uid])
        if pt.is_terminating(d):
            return owned
        orphans = [
            rs
            for rs in self.rs_informer.by_index(pt.ORPHAN_NS_INDEX, ns)
            if not pt.is_terminating(rs) and pt.selector_matches(selector, pt.labels_of(rs))
        ]
        if orphans and await self._can_adopt(d):
            for rs in orphans:
                refs = [r for r in _refs(rs) if r.get("uid") != uid]
                adopted = await self._set_owner_refs(
                    rs, [*refs, pt.controller_ref(d, "apps/v1", "Deployment")]
                )
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _can_adopt(self, d: Obj) -> bool:
        md = d["metadata"]
        try:
            fresh = await self.kc.get(DEPLOYMENTS, md["name"], md.get("namespace"))
        except NotFound:
            return False
        return uid_of(fresh) == uid_of(d) and not pt.is_terminating(fresh)

    async def _set_owner_refs(self, rs: Obj, refs: list[Obj]) -> Obj | None:
        md = rs["metadata"]
        patch = {"metadata": {"ownerReferences": refs or None, "resourceVersion": md.get("resourceVersion")}}
        try:
            return self._remember(
                await self.kc.patch(REPLICASETS, md["name"], patch, namespace=md.get("namespace"))
            )
        except (NotFound, Conflict):
            return None

    # -- writes -----------------------------------------------------------------------------------

    async def _scale_rs(self, d: Obj, rs: Obj, size: int) -> tuple[bool, Obj]:
        """Set a ReplicaSet's size and replica annotations; True if the size changed."""
        body = copy.deepcopy(rs)
        ann = body["metadata"].setdefault("annotations", {}) or {}
        body["metadata"]["annotations"] = ann
        size_changed = spec_replicas(rs) != size
        ann_changed = set_replicas_annotations(ann, replicas_of(d), replicas_of(d) + max_surge(d))
        if not size_changed and not ann_changed:
            return False, rs
        body["spec"]["replicas"] = size
        updated = self._remember(await self.kc.replace(REPLICASETS, body))
        if size_changed:
            log.info(
                "deployment %s/%s: scaled replica set %s from %d to %d",
                d["metadata"].get("namespace"),
                d["metadata"]["name"],
                rs["metadata"]["name"],
                spec_replicas(rs),
                size,
            )
        return size_changed, updated

    async def _apply_sizes(self, d: Obj, rss: list[Obj], sizes: dict[str, int]) -> list[Obj]:
        out = []
        for rs in rss:
            if rs["metadata"]["name"] in sizes:
                _, rs = await self._scale_rs(d, rs, sizes[rs["metadata"]["name"]])
            out.append(rs)
        return out

    async def _write_status(self, d: Obj, status: Obj) -> Obj:
        if pt.semantic(d.get("status") or {}) == pt.semantic(status):
            return d
        body = {**d, "status": status}
        return await self.kc.update_status(DEPLOYMENTS, body)

    async def _set_revision(self, d: Obj, revision: str) -> Obj:
        if pt.annotations_of(d).get(REVISION) == revision:
            return d
        md = d["metadata"]
        patch = {
            "metadata": {"annotations": {REVISION: revision}, "resourceVersion": md.get("resourceVersion")}
        }
        return await self.kc.patch(DEPLOYMENTS, md["name"], patch, namespace=md.get("namespace"))

    # -- the new ReplicaSet -----------------------------------------------------------------------

    async def _new_and_old(self, d: Obj, rss: list[Obj], create: bool) -> tuple[Obj, Obj | None, list[Obj]]:
        """(deployment, new RS or None, old RSs), syncing revision annotations and creating the new
        ReplicaSet if asked (upstream getAllReplicaSetsAndSyncRevision)."""
        existing, old_rss = self._split(d, rss)
        new_revision = max((revision_of(rs) for rs in old_rss), default=0) + 1
        if existing is not None:
            return await self._sync_existing_new(d, existing, old_rss, new_revision)
        if not create:
            return d, None, old_rss
        return await self._create_new(d, old_rss, new_revision)

    async def _sync_existing_new(
        self, d: Obj, rs: Obj, old_rss: list[Obj], new_revision: int
    ) -> tuple[Obj, Obj | None, list[Obj]]:
        body = copy.deepcopy(rs)
        changed = set_new_rs_annotations(d, body, new_revision, exists=True)
        min_ready = _int((d.get("spec") or {}).get("minReadySeconds"))
        if changed or _int(body["spec"].get("minReadySeconds")) != min_ready:
            body["spec"]["minReadySeconds"] = min_ready
            rs = self._remember(await self.kc.replace(REPLICASETS, body))
        d = await self._set_revision(d, pt.annotations_of(rs).get(REVISION, ""))
        if has_progress_deadline(d) and get_condition(d.get("status") or {}, "Progressing") is None:
            status = copy.deepcopy(d.get("status") or {})
            msg = f'Found new replica set "{rs["metadata"]["name"]}"'
            set_condition(status, new_condition("Progressing", "True", FOUND_NEW_RS, msg, pt.now_utc()))
            d = await self._write_status(d, status)
        return d, rs, old_rss

    async def _create_new(
        self, d: Obj, old_rss: list[Obj], new_revision: int
    ) -> tuple[Obj, Obj | None, list[Obj]]:
        collision = (d.get("status") or {}).get("collisionCount")
        body = new_replicaset(d, None if collision is None else _int(collision))
        body["spec"]["replicas"] = new_rs_new_replicas(d, [*old_rss, body], body)
        set_new_rs_annotations(d, body, new_revision, exists=False)
        ns, name = d["metadata"].get("namespace"), body["metadata"]["name"]
        created = False
        try:
            rs = self._remember(await self.kc.create(REPLICASETS, body, namespace=ns))
            created = True
        except AlreadyExists:
            rs = self.rs_informer.get(ns or "", name) or await self.kc.get(REPLICASETS, name, ns)
            ref = controller_of(rs)
            if not (
                ref is not None
                and ref.get("uid") == uid_of(d)
                and pt.templates_equal_ignoring(template_of(rs), template_of(d), HASH_LABEL)
            ):
                # A hash collision with someone else's ReplicaSet: the next hash includes a count.
                status = copy.deepcopy(d.get("status") or {})
                status["collisionCount"] = _int(collision) + 1
                await self.kc.update_status(DEPLOYMENTS, {**d, "status": status})
                raise Conflict(
                    409, "AlreadyExists", f"replica set {name} exists with another template"
                ) from None
        except Exception as e:
            if has_progress_deadline(d) and not isinstance(e, Conflict):
                status = copy.deepcopy(d.get("status") or {})
                msg = f'Failed to create new replica set "{name}": {e}'
                set_condition(
                    status, new_condition("Progressing", "False", FAILED_RS_CREATE, msg, pt.now_utc())
                )
                await ignore_not_found(self._write_status(d, status))
            raise
        if created:
            log.info(
                "deployment %s/%s: created replica set %s (%d replicas)",
                ns,
                d["metadata"]["name"],
                name,
                spec_replicas(rs),
            )
        d = await self._set_revision(d, str(new_revision))
        if created and has_progress_deadline(d):
            status = copy.deepcopy(d.get("status") or {})
            msg = f'Created new replica set "{name}"'
            set_condition(status, new_condition("Progressing", "True", NEW_RS_CREATED, msg, pt.now_utc()))
            d = await self._write_status(d, status)
        return d, rs, old_rss

    # -- paused, scaling --------------------------------------------------------------------------

    async def _check_paused_conditions(self, d: Obj) -> Obj:
        if not has_progress_deadline(d):
            return d
        status = copy.deepcopy(d.get("status") or {})
        cur = get_condition(status, "Progressing")
        if cur is not None and cur.get("reason") == TIMED_OUT:
            return d
        paused_cond = cur is not None and cur.get("reason") == PAUSED
        paused = bool((d.get("spec") or {}).get("paused"))
        if paused and not paused_cond:
            set_condition(
                status, new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", pt.now_utc())
            )
        elif not paused and paused_cond:
            set_condition(
                status,
                new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", pt.now_utc()),
            )
        else:
            return d
        return await self._write_status(d, status)

    async def _sync_scale(self, d: Obj, rss: list[Obj]) -> float | None:
        """Scaling (or a paused Deployment): resize proportionally, no rollout (upstream sync)."""
        d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        all_rss = [*old_rss, *_opt(new_rs)]
        all_rss = await self._apply_sizes(d, all_rss, scale_plan(d, new_rs, old_rss))
        new_rs = next((rs for rs in all_rss if new_rs is not None and uid_of(rs) == uid_of(new_rs)), None)
        old_rss = [rs for rs in all_rss if rs is not new_rs]
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(d, old_rss)
        await self._write_status(d, calculate_status(d, all_rss, new_rs, pt.now_utc()))
        return None

    # -- strategies -------------------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> float | None:
        d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
        assert new_rs is not None
        all_rss = [*old_rss, new_rs]
        # Scale up the new ReplicaSet as far as maxSurge allows.
        want = replicas_of(d)
        if spec_replicas(new_rs) != want:
            target = want if spec_replicas(new_rs) > want else new_rs_new_replicas(d, all_rss, new_rs)
            scaled, new_rs = await self._scale_rs(d, new_rs, target)
            if scaled:
                return await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
        # Scale down old ReplicaSets as far as maxUnavailable allows.
        plan = old_rs_scale_down(d, [*old_rss, new_rs], old_rss, new_rs)
        if plan:
            old_rss = await self._apply_sizes(d, old_rss, plan)
            return await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
        if deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        return await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> float | None:
        d, new_rs, old_rss = await self._new_and_old(d, rss, create=False)
        all_rss = [*old_rss, *_opt(new_rs)]
        scaled_down = False
        plan = {rs["metadata"]["name"]: 0 for rs in active(old_rss)}
        if plan:
            old_rss = await self._apply_sizes(d, old_rss, plan)
            scaled_down = True
        if scaled_down or old_pods_running(new_rs, old_rss, self._pods_by_rs(old_rss)):
            return await self._sync_rollout_status(d, [*old_rss, *_opt(new_rs)], new_rs)
        if new_rs is None:
            d, new_rs, old_rss = await self._new_and_old(d, rss, create=True)
            assert new_rs is not None
        _, new_rs = await self._scale_rs(d, new_rs, replicas_of(d))
        all_rss = [*old_rss, new_rs]
        if deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        return await self._sync_rollout_status(d, all_rss, new_rs)

    def _pods_by_rs(self, rss: list[Obj]) -> dict[str, list[Obj]]:
        return {uid_of(rs): self.pod_informer.by_index(pt.OWNER_UID_INDEX, uid_of(rs)) for rs in rss}

    async def _sync_rollout_status(self, d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> float | None:
        now = pt.now_utc()
        status = rollout_status(d, all_rss, new_rs, now)
        if pt.semantic(d.get("status") or {}) == pt.semantic(status):
            return stuck_requeue(d, status, now)
        await self._write_status(d, status)
        return None

    async def _cleanup(self, d: Obj, old_rss: list[Obj]) -> None:
        for rs in history_to_delete(d, old_rss):
            md = rs["metadata"]
            log.info(
                "deployment %s/%s: deleting old replica set %s",
                md.get("namespace"),
                d["metadata"]["name"],
                md["name"],
            )
            await ignore_not_found(
                self.kc.delete(
                    REPLICASETS, md["name"], md.get("namespace"), preconditions={"uid": uid_of(rs)}
                )
            )


def _own_uid(obj: Obj) -> list[str]:
    u = uid_of(obj)
    return [u] if u else []


def _refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or ())


def _opt(rs: Obj | None) -> list[Obj]:
    return [] if rs is None else [rs]


def _rv(obj: Obj) -> int:
    return _int((obj.get("metadata") or {}).get("resourceVersion"), 0)
