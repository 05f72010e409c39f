"""The EndpointSlice controller: for every Service with a selector, discovery.k8s.io/v1
EndpointSlices (at most 100 endpoints each, one address family each) listing its pods with their
readiness conditions, node and zone. EdgeMesh and other proxies consume these.

Slices are updated in place rather than replaced, so consumers see few changes: an endpoint stays
in its slice while it lives, new endpoints fill free room before new slices are created, and
slices that are no longer needed are recycled for new content before any is deleted."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube import ENDPOINTSLICES, NODES, PODS, SERVICES
from kubeedge.kube.errors import NotFound
from kubeedge.kube.types import Obj

from .endpoints import (
    HEADLESS_LABEL,
    TRIGGER_ANNOTATION,
    TriggerTimes,
    find_port,
    is_headless,
    pod_ip_for,
    pod_ready,
    pod_terminating,
    pods_for_service,
    selector_of,
    service_families,
    services_for_pod,
    should_pod_be_in_endpoints,
    should_set_hostname,
    target_ref,
    watch_services_and_pods,
)
from .framework import Controller, Key, key_of

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
SLICE_SERVICE_INDEX = "service"
POD_NODE_INDEX = "node-name"
# How long to wait for our own writes to show up in the informer before trusting it again anyway.
STALE_TTL = 30.0
STALE_RECHECK = 1.0

PortsKey = tuple[tuple[str, int, str, str], ...]
GroupKey = tuple[str, PortsKey]  # (addressType, ports)

# ---- desired state -----------------------------------------------------------------------------


def _ports_key(ports: Iterable[Obj]) -> PortsKey:
    return tuple(
        sorted(
            (
                str(p.get("name") or ""),
                int(p.get("port") or 0),
                str(p.get("protocol") or "TCP"),
                str(p.get("appProtocol") or ""),
            )
            for p in ports
        )
    )


def _port_obj(key: tuple[str, int, str, str]) -> Obj:
    name, port, proto, app = key
    out: Obj = {"name": name, "port": port, "protocol": proto}
    if app:
        out["appProtocol"] = app
    return out


def endpoint_key(ep: Obj) -> str:
    """An endpoint's identity across updates: its pod, else its addresses."""
    uid = (ep.get("targetRef") or {}).get("uid")
    return f"uid:{uid}" if uid else "addr:" + ",".join(ep.get("addresses") or ())


def pod_endpoint(pod: Obj, svc: Obj, ip: str, zone_of: Callable[[str], str | None]) -> Obj:
    spec = svc.get("spec") or {}
    terminating = pod_terminating(pod)
    serving = pod_ready(pod)
    ep: Obj = {
        "addresses": [ip],
        "conditions": {
            "ready": bool(spec.get("publishNotReadyAddresses")) or (serving and not terminating),
            "serving": serving,
            "terminating": terminating,
        },
    }
    if should_set_hostname(pod, svc):
        ep["hostname"] = pod["spec"]["hostname"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
        zone = zone_of(node)
        if zone:
            ep["zone"] = zone
    ep["targetRef"] = target_ref(pod)
    return ep


def desired_groups(
    svc: Obj, pods: Iterable[Obj], zone_of: Callable[[str], str | None] = lambda _: None
) -> dict[GroupKey, dict[str, Obj]]:
    """Endpoints by (address type, resolved ports): pods resolving named ports differently, or of
    another family, need other slices. Terminating pods stay (conditions.terminating) so proxies
    can drain them, as upstream."""
    spec = svc.get("spec") or {}
    families = service_families(svc)
    groups: dict[GroupKey, dict[str, Obj]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, include_terminating=True):
            continue
        ports = []
        for sp in spec.get("ports") or ():
            num = find_port(pod, sp)
            if num is not None:
                ports.append({**sp, "port": num, "name": sp.get("name") or ""})
        pkey = _ports_key(ports)
        for fam in families:
            ip = pod_ip_for(pod, fam)
            if ip is None:
                continue
            ep = pod_endpoint(pod, svc, ip, zone_of)
            groups.setdefault((fam, pkey), {})[endpoint_key(ep)] = ep
    return groups


def slice_labels(svc: Obj) -> dict[str, str]:
    md = svc.get("metadata") or {}
    labels = {
        k: v for k, v in (md.get("labels") or {}).items() if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)
    }
    labels.pop(HEADLESS_LABEL, None)
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = md["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def owner_ref(svc: Obj) -> Obj:
    md = svc["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": md["name"],
        "uid": md.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


# ---- planning ----------------------------------------------------------------------------------


@dataclass
class SlicePlan:
    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


@dataclass
class _Work:
    """An existing slice while planning: its (new) content and whether that changed."""

    obj: Obj
    group: GroupKey | None
    endpoints: list[Obj]
    changed: bool = False


def _slice_group(s: Obj) -> GroupKey:
    return (str(s.get("addressType") or ""), _ports_key(s.get("ports") or ()))


def plan_slices(
    svc: Obj,
    existing: list[Obj],
    groups: dict[GroupKey, dict[str, Obj]],
    max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
    trigger: str | None = None,
) -> SlicePlan:
    """The creates, updates and deletes that turn the service's `existing` slices into ones
    holding exactly the endpoints in `groups`, moving as little as possible."""
    remaining = {g: dict(eps) for g, eps in groups.items() if eps}
    works: list[_Work] = []
    free: list[_Work] = []  # slices whose content is no longer wanted: recycle or delete
    for s in sorted(existing, key=lambda o: str(o["metadata"].get("name"))):
        g = _slice_group(s)
        want = remaining.get(g)
        kept: list[Obj] = []
        changed = False
        for ep in s.get("endpoints") or ():
            new = want.pop(endpoint_key(ep), None) if want is not None else None
            if new is None:
                changed = True
            else:
                kept.append(new)
                changed = changed or new != ep
        w = _Work(s, g, kept, changed)
        (works if kept else free).append(w)
    for g, eps in sorted(remaining.items()):
        _fill(works, free, g, [eps[k] for k in sorted(eps)], max_per_slice, svc)
    plan = SlicePlan()
    if not works:
        # No endpoints at all: keep (or make) one empty placeholder slice, like upstream, so
        # consumers can tell "no endpoints" from "not processed yet".
        placeholder = next((w for w in free if not w.obj.get("ports") and not w.obj.get("endpoints")), None)
        if placeholder is None and free:
            placeholder = free[0]
        if placeholder is None:
            placeholder = _Work(_new_slice(svc, service_families(svc)[0]), None, [], True)
        else:
            free.remove(placeholder)
        placeholder.group = (service_families(svc)[0], ())
        placeholder.changed = True
        works.append(placeholder)
    labels = slice_labels(svc)
    owner = owner_ref(svc)
    for w in works:
        desired = _render(w, labels, owner, trigger)
        if "resourceVersion" not in w.obj.get("metadata", {}):
            plan.create.append(desired)
        elif _differs(w.obj, desired):
            plan.update.append(desired)
    plan.delete.extend(w.obj for w in free)
    return plan


def _fill(works: list[_Work], free: list[_Work], g: GroupKey, eps: list[Obj], cap: int, svc: Obj) -> None:
    """Put new endpoints of group `g` into slices of that group with room (ones already changing
    first), then into recycled slices, then into new ones."""
    same = [w for w in works if w.group == g and len(w.endpoints) < cap]
    same.sort(key=lambda w: (not w.changed, -len(w.endpoints)))
    for w in same:
        room = cap - len(w.endpoints)
        if not eps:
            return
        w.endpoints.extend(eps[:room])
        del eps[:room]
        w.changed = True
    while eps:
        if free:
            w = free.pop(0)
            w.group, w.endpoints, w.changed = g, [], True
        else:
            w = _Work(_new_slice(svc, g[0]), g, [], True)
        w.endpoints.extend(eps[:cap])
        del eps[:cap]
        works.append(w)


def _new_slice(svc: Obj, address_type: str) -> Obj:
    md = svc["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"generateName": f"{md['name'][:200]}-", "namespace": md.get("namespace", "")},
        "addressType": address_type,
        "endpoints": [],
        "ports": [],
    }


def _render(w: _Work, labels: dict[str, str], owner: Obj, trigger: str | None) -> Obj:
    out = copy.deepcopy(w.obj)
    md = out.setdefault("metadata", {})
    md["labels"] = {**(md.get("labels") or {}), **labels}
    refs = [
        r for r in md.get("ownerReferences") or () if r.get("uid") != owner["uid"] and not r.get("controller")
    ]
    md["ownerReferences"] = [owner, *refs]
    if w.group is not None:
        out["addressType"] = w.group[0]
        out["ports"] = [_port_obj(k) for k in w.group[1]]
    out["endpoints"] = w.endpoints
    if w.changed and trigger:
        md["annotations"] = {**(md.get("annotations") or {}), TRIGGER_ANNOTATION: trigger}
    return out


def _differs(cur: Obj, desired: Obj) -> bool:
    cmd, dmd = cur.get("metadata") or {}, desired["metadata"]
    if (cmd.get("labels") or {}) != dmd["labels"] or (cmd.get("ownerReferences") or []) != dmd[
        "ownerReferences"
    ]:
        return True
    if cur.get("addressType") != desired.get("addressType"):
        return True
    if _ports_key(cur.get("ports") or ()) != _ports_key(desired.get("ports") or ()):
        return True
    return (cur.get("endpoints") or []) != desired["endpoints"]


# ---- our writes, until the informer shows them -------------------------------------------------


def _rv_at_least(have: str, want: str) -> bool:
    if have.isdigit() and want.isdigit():
        return int(have) >= int(want)
    return have == want


class SliceTracker:
    """The slices this controller wrote or deleted and the cache has not shown yet. Planning on
    a cache without them would create duplicates (a create not yet seen) or resurrect deletes."""

    def __init__(self) -> None:
        # service key -> slice name -> (resourceVersion we wrote, or None for deleted; when)
        self._pending: dict[Key, dict[str, tuple[str | None, float]]] = {}

    def wrote(self, svc: Key, obj: Obj) -> None:
        md = obj.get("metadata") or {}
        self._pending.setdefault(svc, {})[md["name"]] = (
            str(md.get("resourceVersion") or ""),
            time.monotonic(),
        )

    def deleted(self, svc: Key, name: str) -> None:
        self._pending.setdefault(svc, {})[name] = (None, time.monotonic())

    def observe(self, svc: Key, name: str, obj: Obj | None) -> bool:
        """Note what the informer shows; True if it is exactly one of our own writes."""
        pend = self._pending.get(svc)
        if not pend or name not in pend:
            return False
        want, _ = pend[name]
        if want is None:
            done = obj is None
        else:
            have = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
            done = obj is not None and _rv_at_least(have, want)
        if done:
            del pend[name]
            if not pend:
                del self._pending[svc]
            return True
        return False

    def stale(self, svc: Key) -> bool:
        pend = self._pending.get(svc)
        if not pend:
            return False
        now = time.monotonic()
        for name, (_, when) in list(pend.items()):
            if now - when > STALE_TTL:
                log.warning(
                    "endpointslice %s/%s: our write never showed in the cache; trusting it", svc[0], name
                )
                del pend[name]
        if not pend:
            del self._pending[svc]
            return False
        return True

    def forget(self, svc: Key) -> None:
        self._pending.pop(svc, None)


# ---- the controller ----------------------------------------------------------------------------


class EndpointSliceController(Controller):
    """Keeps each selector Service's EndpointSlices equal to its matching pods."""

    name = "endpointslice"
    workers = 4

    def setup(self) -> None:
        self.triggers = TriggerTimes()
        self.tracker = SliceTracker()
        self.deferred: set[Key] = set()  # services whose reconcile waits for our writes to show
        self.services = self.informers.get(SERVICES)
        self.pods = self.informers.get(PODS)
        self.nodes = self.informers.get(NODES)
        self.slices = self.informers.get(
            ENDPOINTSLICES, label_selector=f"{MANAGED_BY_LABEL}={CONTROLLER_NAME}"
        )
        watch_services_and_pods(self.services, self.pods, self._enqueue)
        self.slices.add_index(SLICE_SERVICE_INDEX, _slice_service)
        self.pods.add_index(POD_NODE_INDEX, _pod_node)
        self.slices.add_handler(self._on_slice)
        self.nodes.add_handler(self._on_node)

    def _enqueue(self, key: Key) -> None:
        self.triggers.record(key)
        self.queue.add(key)

    def _on_slice(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        ns, name = key_of(obj)
        svc_name = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc_name:
            return
        svc = (ns, svc_name)
        # Our own writes coming back need no work, unless a reconcile waited for them; anything
        # else (a slice someone edited or deleted) is checked against the service again.
        if not self.tracker.observe(svc, name, new):
            self.queue.add(svc)
        elif svc in self.deferred and not self.tracker.stale(svc):
            self.deferred.discard(svc)
            self.queue.add(svc)

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if old is None or new is None:
            return
        if _zone(old) == _zone(new):
            return
        keys: set[Key] = set()
        for pod in self.pods.by_index(POD_NODE_INDEX, new["metadata"]["name"]):
            keys |= services_for_pod(self.services, pod)
        for k in keys:
            self._enqueue(k)

    def _zone_of(self, node: str) -> str | None:
        obj = self.nodes.get("", node)
        return _zone(obj) if obj is not None else None

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        existing = self.slices.by_index(SLICE_SERVICE_INDEX, f"{ns}/{name}")
        svc = self.services.get(ns, name)
        if svc is None or selector_of(svc) is None:
            # Gone (the ownerReference lets the garbage collector do this too; we do not wait
            # for it), or no longer selecting pods: its slices would only mislead consumers.
            self.triggers.pop(key)
            for s in existing:
                await self._delete(key, s)
            return None
        if self.tracker.stale(key):
            self.deferred.add(key)
            return STALE_RECHECK  # the slice event we wait for re-queues sooner
        self.deferred.discard(key)
        trigger = self.triggers.pop(key)
        groups = desired_groups(svc, pods_for_service(self.pods, svc), self._zone_of)
        current = [s for s in existing if _owned_by(s, svc)]
        foreign = [s for s in existing if not _owned_by(s, svc)]  # a previous service of this name
        plan = plan_slices(svc, current, groups, trigger=trigger)
        plan.delete.extend(foreign)
        try:
            await self._apply(key, plan)
        except Exception:
            if trigger is not None:
                self.triggers.record(key)
            raise
        return None

    async def _apply(self, key: Key, plan: SlicePlan) -> None:
        ns = key[0]
        # New endpoints appear before old ones go: creates, then updates, then deletes.
        for obj in plan.create:
            self.tracker.wrote(key, await self.kc.create(ENDPOINTSLICES, obj, namespace=ns))
        for obj in plan.update:
            self.tracker.wrote(key, await self.kc.replace(ENDPOINTSLICES, obj, namespace=ns))
        for obj in plan.delete:
            await self._delete(key, obj)

    async def _delete(self, key: Key, obj: Obj) -> None:
        md = obj["metadata"]
        try:
            await self.kc.delete(ENDPOINTSLICES, md["name"], key[0], preconditions={"uid": md.get("uid")})
        except NotFound:
            return
        self.tracker.deleted(key, md["name"])


def _owned_by(s: Obj, svc: Obj) -> bool:
    uid = svc["metadata"].get("uid")
    refs = (s.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("uid") == uid for r in refs) or not refs


def _slice_service(s: Obj) -> list[str]:
    md = s.get("metadata") or {}
    name = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{md.get('namespace', '')}/{name}"] if name else []


def _pod_node(pod: Obj) -> list[str]:
    node = (pod.get("spec") or {}).get("nodeName")
    return [node] if node else []


def _zone(node: Obj) -> str | None:
    labels: Any = (node.get("metadata") or {}).get("labels") or {}
    zone = labels.get(ZONE_LABEL)
    return str(zone) if zone else None
