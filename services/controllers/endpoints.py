"""The Endpoints controller: for every Service with a selector, an Endpoints object of the same name
listing the IPs and ports of the pods it selects, ready ones in `addresses`, the rest in
`notReadyAddresses`. Also the pod/service helpers the EndpointSlice controller shares."""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from kubeedge.kube import ENDPOINTS, PODS, SERVICES
from kubeedge.kube.errors import AlreadyExists, Conflict, NotFound
from kubeedge.kube.types import Obj

from .framework import Controller, Informer, Key, ignore_not_found, key_of

log = logging.getLogger(__name__)

TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
HEADLESS_LABEL = "service.kubernetes.io/headless"
# Informer index names shared by the endpoints and endpointslice controllers (same functions).
SERVICE_SELECTOR_INDEX = "selector-pairs"
POD_LABEL_INDEX = "label-pairs"
WRITE_ATTEMPTS = 3

# ---- pods --------------------------------------------------------------------------------------


def pod_ready(pod: Obj) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or () if p.get("ip")]
    primary = status.get("podIP")
    if primary and primary not in ips:
        ips.insert(0, str(primary))
    return ips


def ip_family(ip: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return ""


def pod_ip_for(pod: Obj, family: str) -> str | None:
    for ip in pod_ips(pod):
        if ip_family(ip) == family:
            return ip
    return None


def should_pod_be_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """Upstream's rule: pods without an IP, finished pods (that will not restart), and (unless
    asked) terminating pods have no endpoint."""
    if not pod_ips(pod):
        return False
    if not include_terminating and pod_terminating(pod):
        return False
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    policy = spec.get("restartPolicy", "Always")
    if policy == "Never":
        return phase not in ("Failed", "Succeeded")
    if policy == "OnFailure":
        return phase != "Succeeded"
    return True


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """The pod's port for a service port: a number as is, a name looked up in the pod's containers
    (and restartable init containers) with the same protocol; None when the pod has no such port."""
    target = svc_port.get("targetPort")
    if target is None or target == "":
        target = svc_port.get("port")
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    proto = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or ())
    containers += [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or ():
            if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                cp = p.get("containerPort")
                return int(cp) if isinstance(cp, int) else None
    return None


def should_set_hostname(pod: Obj, svc: Obj) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == svc["metadata"]["name"]


def target_ref(pod: Obj) -> Obj:
    md = pod.get("metadata") or {}
    return {
        "kind": "Pod",
        "namespace": md.get("namespace", ""),
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
    }


# ---- services ----------------------------------------------------------------------------------


def selector_of(svc: Obj) -> dict[str, str] | None:
    """The selector of a service the controllers manage endpoints for; None for selector-less
    (user-managed endpoints) and ExternalName services. An empty selector counts as none: the
    API drops empty maps, as kube-apiserver's omitempty serialisation does."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    sel = spec.get("selector")
    if not isinstance(sel, dict) or not sel:
        return None
    return {str(k): str(v) for k, v in sel.items()}


def is_headless(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def service_families(svc: Obj) -> list[str]:
    """The IP families the service's endpoints have: spec.ipFamilies, else its clusterIP's, else IPv4."""
    spec = svc.get("spec") or {}
    fams = [f for f in spec.get("ipFamilies") or () if f in ("IPv4", "IPv6")]
    if fams:
        return fams
    fam = ip_family(str(spec.get("clusterIP") or ""))
    return [fam or "IPv4"]


def labels_match(selector: dict[str, str], obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def endpoint_labels(svc: Obj) -> dict[str, str]:
    """Labels an Endpoints object carries: the service's, plus the headless marker (as upstream)."""
    labels = dict((svc.get("metadata") or {}).get("labels") or {})
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


def _pairs(ns: str, labels: Any) -> list[str]:
    if not isinstance(labels, dict):
        return []
    return [f"{ns}/{k}={v}" for k, v in labels.items()]


def service_selector_pairs(svc: Obj) -> list[str]:
    """Index a service under each `ns/key=value` of its selector: a pod can only match services
    filed under one of its own labels, so a pod event looks up a few buckets, not every service."""
    sel = selector_of(svc)
    return _pairs(key_of(svc)[0], sel) if sel else []


def pod_label_pairs(pod: Obj) -> list[str]:
    return _pairs(key_of(pod)[0], (pod.get("metadata") or {}).get("labels"))


def services_for_pod(services: Informer, pod: Obj) -> set[Key]:
    found: set[Key] = set()
    for pair in pod_label_pairs(pod):
        for svc in services.by_index(SERVICE_SELECTOR_INDEX, pair):
            k = key_of(svc)
            if k not in found:
                sel = selector_of(svc)
                if sel and labels_match(sel, pod):
                    found.add(k)
    return found


def pods_for_service(pods: Informer, svc: Obj) -> list[Obj]:
    """Pods matching the service's selector, read from the smallest label bucket."""
    sel = selector_of(svc)
    if not sel:
        return []
    ns = key_of(svc)[0]
    buckets = [pods.by_index(POD_LABEL_INDEX, pair) for pair in _pairs(ns, sel)]
    smallest = min(buckets, key=len)
    return [p for p in smallest if labels_match(sel, p)]


def _pod_signature(pod: Obj) -> tuple[Any, ...]:
    """Everything about a pod that its endpoints depend on."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ports = tuple(
        (p.get("name"), p.get("containerPort"), p.get("protocol"))
        for c in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ()))
        for p in c.get("ports") or ()
    )
    return (
        tuple(pod_ips(pod)),
        pod_ready(pod),
        pod_terminating(pod),
        spec.get("nodeName"),
        spec.get("hostname"),
        spec.get("subdomain"),
        status.get("phase"),
        spec.get("restartPolicy"),
        (pod.get("metadata") or {}).get("uid"),
        ports,
    )


def watch_services_and_pods(services: Informer, pods: Informer, enqueue: Callable[[Key], None]) -> None:
    """Wire the informers so `enqueue(service key)` runs for every change that can alter a
    service's endpoints: the service itself, or a pod its selector matches (before or after)."""
    services.add_index(SERVICE_SELECTOR_INDEX, service_selector_pairs)
    pods.add_index(POD_LABEL_INDEX, pod_label_pairs)

    def on_service(old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        enqueue(key_of(obj))

    def on_pod(old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None:
            same_labels = (old.get("metadata") or {}).get("labels") == (new.get("metadata") or {}).get(
                "labels"
            )
            if same_labels and _pod_signature(old) == _pod_signature(new):
                return
        keys: set[Key] = set()
        for p in (old, new):
            if p is not None:
                keys |= services_for_pod(services, p)
        for k in keys:
            enqueue(k)

    services.add_handler(on_service)
    pods.add_handler(on_pod)


class TriggerTimes:
    """When the oldest change not yet written for each service was seen: the
    last-change-trigger-time annotation, from which consumers measure propagation latency."""

    def __init__(self) -> None:
        self._first: dict[Key, str] = {}

    def record(self, key: Key) -> None:
        if key not in self._first:
            self._first[key] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def pop(self, key: Key) -> str | None:
        return self._first.pop(key, None)


# ---- endpoint computation ----------------------------------------------------------------------


def endpoint_address(pod: Obj, svc: Obj, ip: str) -> Obj:
    addr: Obj = {"ip": ip}
    if should_set_hostname(pod, svc):
        addr["hostname"] = pod["spec"]["hostname"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        addr["nodeName"] = node
    addr["targetRef"] = target_ref(pod)
    return addr


def _port_key(port: Obj) -> tuple[str, int, str, str]:
    return (
        str(port.get("name") or ""),
        int(port.get("port") or 0),
        str(port.get("protocol") or "TCP"),
        str(port.get("appProtocol") or ""),
    )


def _addr_key(addr: Obj) -> tuple[str, str]:
    return (str(addr.get("ip")), str((addr.get("targetRef") or {}).get("uid") or ""))


def compute_subsets(svc: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """The Endpoints subsets of a service over the pods its selector matches, packed as upstream:
    addresses sharing exactly the same ports form one subset (so pods that resolve a named port to
    different numbers land in different subsets)."""
    spec = svc.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    family = service_families(svc)[0]
    svc_ports = list(spec.get("ports") or ())
    # (address, ready) pairs per port; port None stands for "no ports" (headless without ports).
    by_port: dict[tuple[str, int, str, str] | None, dict[tuple[str, str], tuple[Obj, bool]]] = {}
    port_objs: dict[tuple[str, int, str, str], Obj] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, publish_not_ready):
            continue
        ip = pod_ip_for(pod, family)
        if ip is None:
            continue
        addr = endpoint_address(pod, svc, ip)
        ready = publish_not_ready or pod_ready(pod)
        if not svc_ports:
            if is_headless(svc):
                by_port.setdefault(None, {})[_addr_key(addr)] = (addr, ready)
            continue
        for sp in svc_ports:
            num = find_port(pod, sp)
            if num is None:
                continue
            ep: Obj = {"name": sp.get("name") or "", "port": num, "protocol": sp.get("protocol") or "TCP"}
            if not ep["name"]:
                del ep["name"]
            if sp.get("appProtocol"):
                ep["appProtocol"] = sp["appProtocol"]
            pk = _port_key(ep)
            port_objs[pk] = ep
            by_port.setdefault(pk, {})[_addr_key(addr)] = (addr, ready)
    return repack(by_port, port_objs)


def repack(
    by_port: dict[tuple[str, int, str, str] | None, dict[tuple[str, str], tuple[Obj, bool]]],
    port_objs: dict[tuple[str, int, str, str], Obj],
) -> list[Obj]:
    """Group ports served by exactly the same (address, readiness) set into one subset."""
    groups: dict[
        frozenset[tuple[tuple[str, str], bool]], tuple[dict[tuple[str, str], tuple[Obj, bool]], list[Any]]
    ]
    groups = {}
    for pk, addrs in by_port.items():
        sig = frozenset((k, ready) for k, (_, ready) in addrs.items())
        _, ports = groups.setdefault(sig, (addrs, []))
        if pk is not None:
            ports.append(pk)
    subsets: list[Obj] = []
    for addrs, pkeys in groups.values():
        subset: Obj = {}
        ready = [a for k, (a, r) in sorted(addrs.items()) if r]
        not_ready = [a for k, (a, r) in sorted(addrs.items()) if not r]
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if pkeys:
            subset["ports"] = [port_objs[pk] for pk in sorted(pkeys)]
        subsets.append(subset)
    subsets.sort(key=_subset_sort_key)
    return subsets


def _subset_sort_key(subset: Obj) -> tuple[Any, ...]:
    first = (subset.get("addresses") or subset.get("notReadyAddresses") or [{}])[0]
    return (_addr_key(first), [_port_key(p) for p in subset.get("ports") or ()])


def normalize_subsets(subsets: Any) -> list[Obj]:
    """Subsets as this controller writes them (order and optional fields), to compare with
    what is stored without spurious differences (server defaults, client ordering)."""
    out: list[Obj] = []
    for s in subsets or ():
        norm: Obj = {}
        for field in ("addresses", "notReadyAddresses"):
            addrs = sorted((_clean(a) for a in s.get(field) or ()), key=_addr_key)
            if addrs:
                norm[field] = addrs
        ports = sorted((_clean_port(p) for p in s.get("ports") or ()), key=_port_key)
        if ports:
            norm["ports"] = ports
        out.append(norm)
    out.sort(key=_subset_sort_key)
    return out


def _clean(addr: Obj) -> Obj:
    out = {k: v for k, v in addr.items() if v not in (None, "")}
    ref = out.get("targetRef")
    if isinstance(ref, dict):
        out["targetRef"] = {k: v for k, v in ref.items() if k != "resourceVersion" and v not in (None, "")}
    return out


def _clean_port(port: Obj) -> Obj:
    out = {k: v for k, v in port.items() if v not in (None, "")}
    out.setdefault("protocol", "TCP")
    return out


def desired_endpoints(svc: Obj, pods: Iterable[Obj]) -> Obj:
    md = svc["metadata"]
    meta: Obj = {"name": md["name"], "namespace": md.get("namespace", "")}
    labels = endpoint_labels(svc)
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta, "subsets": compute_subsets(svc, pods)}


def endpoints_up_to_date(current: Obj, desired: Obj) -> bool:
    cur_labels = (current.get("metadata") or {}).get("labels") or {}
    if cur_labels != desired["metadata"].get("labels", {}):
        return False
    return normalize_subsets(current.get("subsets")) == normalize_subsets(desired["subsets"])


# ---- the controller ----------------------------------------------------------------------------


class EndpointsController(Controller):
    """Keeps each selector Service's Endpoints equal to its matching pods, within watch latency."""

    name = "endpoints"
    workers = 4

    def setup(self) -> None:
        self.triggers = TriggerTimes()
        self.services = self.informers.get(SERVICES)
        self.pods = self.informers.get(PODS)
        self.endpoints = self.informers.get(ENDPOINTS)
        watch_services_and_pods(self.services, self.pods, self._enqueue)
        self.endpoints.add_handler(self._on_endpoints)

    def _enqueue(self, key: Key) -> None:
        self.triggers.record(key)
        self.queue.add(key)

    def _on_endpoints(self, old: Obj | None, new: Obj | None) -> None:
        # Recreate Endpoints someone deleted; at start, also look at every existing Endpoints, so
        # leftovers of services deleted while the controller was down are removed (as upstream).
        if new is None and old is not None:
            self.queue.add(key_of(old))
        elif old is None and new is not None and not self.endpoints.synced.is_set():
            self.queue.add(key_of(new))

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        trigger = self.triggers.pop(key)
        svc = self.services.get(ns, name)
        if svc is None:
            # Not only when cached: an Endpoints we just created may not have reached the cache.
            await ignore_not_found(self.kc.delete(ENDPOINTS, name, ns))
            return None
        if selector_of(svc) is None:
            return None  # user-managed Endpoints (or ExternalName): not ours
        desired = desired_endpoints(svc, pods_for_service(self.pods, svc))
        try:
            await self._write(ns, name, desired, trigger)
        except Exception:
            if trigger is not None:
                self.triggers.record(key)
            raise
        return None

    async def _write(self, ns: str, name: str, desired: Obj, trigger: str | None) -> None:
        current = self.endpoints.get(ns, name)
        for attempt in range(WRITE_ATTEMPTS):
            if current is not None and endpoints_up_to_date(current, desired):
                return
            try:
                if current is None:
                    await self.kc.create(ENDPOINTS, _with_trigger(desired, None, trigger), namespace=ns)
                else:
                    await self.kc.replace(ENDPOINTS, _with_trigger(desired, current, trigger), namespace=ns)
                return
            except (AlreadyExists, Conflict):
                # Our cache lags our own (or someone's) write: read the current object and retry.
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                try:
                    current = await self.kc.get(ENDPOINTS, name, ns)
                except NotFound:
                    current = None


def _with_trigger(desired: Obj, current: Obj | None, trigger: str | None) -> Obj:
    """The object to write: the desired content on top of the current metadata (resourceVersion
    for the compare-and-swap, annotations others set), with the trigger time when known."""
    out = copy.deepcopy(desired)
    md = out["metadata"]
    annotations: dict[str, str] = {}
    if current is not None:
        cur_md = {k: v for k, v in (current.get("metadata") or {}).items() if k != "managedFields"}
        annotations = dict(cur_md.get("annotations") or {})
        cur_md.pop("labels", None)  # labels follow the service's
        md = out["metadata"] = {**copy.deepcopy(cur_md), **md}
    if trigger:
        annotations[TRIGGER_ANNOTATION] = trigger
    else:
        annotations.pop(TRIGGER_ANNOTATION, None)
    if annotations:
        md["annotations"] = annotations
    return out
