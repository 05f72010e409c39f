"""Helpers shared by the DaemonSet, StatefulSet and Job controllers.

ControllerRevisions (upstream's `controller/history`): a workload's pod template is snapshotted into
a ControllerRevision named `<owner>-<hash>`; pods carry the `controller-revision-hash` label so the
controller can tell which template each pod was made from, and rolling updates replace pods whose
revision is not the newest. Also a few pod helpers beyond `podtemplate`'s.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from kubeedge.kube import CONTROLLERREVISIONS, AlreadyExists, KubeClient, Obj

from .framework import controller_of, ignore_not_found, uid_of
from .podtemplate import (
    generate_name_prefix,
    is_ready,
    labels_of,
    pod_from_template,
    pod_phase,
    template_hash,
)

log = logging.getLogger(__name__)

REVISION_HASH_LABEL = "controller-revision-hash"


# -------------------------------------------------------------------------------------------------
# pod state and pods (beyond what podtemplate has)


def is_finished(pod: Obj) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def is_running_and_ready(pod: Obj) -> bool:
    return pod_phase(pod) == "Running" and is_ready(pod)


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An IntOrString ("25%" or 3) resolved against `total`, as intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        scaled = int(text[:-1] or 0) * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(text)


def new_pod(
    template: Obj,
    owner_ref: Obj,
    namespace: str,
    *,
    name: str | None = None,
    generate_name: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    """podtemplate.pod_from_template plus extra labels/annotations and, optionally, a fixed name."""
    prefix = generate_name or generate_name_prefix(owner_ref["name"])
    pod = pod_from_template(template, owner_ref, prefix, namespace)
    md = pod["metadata"]
    if labels:
        md["labels"] = {**(md.get("labels") or {}), **labels}
    if annotations:
        md["annotations"] = {**(md.get("annotations") or {}), **annotations}
    if name:
        md.pop("generateName", None)
        md["name"] = name
    return pod


# -------------------------------------------------------------------------------------------------
# ControllerRevisions


def revision_data(template: Obj) -> Obj:
    """What a revision stores: a strategic patch restoring the template (as upstream, so
    `kubectl rollout undo` can apply it)."""
    return {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}}


def template_of(revision: Obj) -> Obj:
    tpl = dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    tpl.pop("$patch", None)
    return tpl


def revision_number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


def revision_hash(revision: Obj) -> str:
    return labels_of(revision).get(REVISION_HASH_LABEL, "")


def sort_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    return sorted(revisions, key=lambda r: (revision_number(r), (r.get("metadata") or {}).get("name", "")))


async def sync_revision(
    kc: KubeClient,
    owner: Obj,
    owner_ref: Obj,
    revisions: list[Obj],
    collision_count: int,
) -> tuple[Obj, int]:
    """The revision for the owner's current template, created if new; returns it and the (possibly
    bumped) collision count. Going back to an older template re-uses its revision with a new number."""
    md = owner["metadata"]
    template = (owner.get("spec") or {}).get("template") or {}
    data = revision_data(template)
    top = max((revision_number(r) for r in revisions), default=0)
    equal = [r for r in revisions if r.get("data") == data]
    if equal:
        rev = sort_revisions(equal)[-1]
        if revision_number(rev) == top:
            return rev, collision_count
        updated = await kc.patch(
            CONTROLLERREVISIONS, rev["metadata"]["name"], {"revision": top + 1}, namespace=md["namespace"]
        )
        return updated, collision_count
    while True:
        h = template_hash(template, collision_count or None)
        body: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": f"{md['name']}-{h}",
                "namespace": md["namespace"],
                "labels": {**labels_of(template), REVISION_HASH_LABEL: h},
                "ownerReferences": [dict(owner_ref)],
            },
            "data": data,
            "revision": top + 1,
        }
        try:
            return await kc.create(CONTROLLERREVISIONS, body), collision_count
        except AlreadyExists:
            existing = await kc.get(CONTROLLERREVISIONS, body["metadata"]["name"], md["namespace"])
            ref = controller_of(existing)
            if existing.get("data") == data and ref is not None and ref.get("uid") == uid_of(owner):
                # Our own revision, not yet in the cache.
                return existing, collision_count
            collision_count += 1


async def truncate_history(kc: KubeClient, revisions: list[Obj], keep_names: set[str], limit: int) -> None:
    """Delete the oldest revisions that no pod uses, keeping at most `limit` of them."""
    unused = [r for r in sort_revisions(revisions) if r["metadata"]["name"] not in keep_names]
    excess = len(unused) - max(0, limit)
    for rev in unused[: max(0, excess)]:
        md = rev["metadata"]
        await ignore_not_found(kc.delete(CONTROLLERREVISIONS, md["name"], md.get("namespace")))
