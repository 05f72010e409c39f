"""Node lifecycle controller, edge-aware.

Watches Nodes and their Leases (kube-node-lease/<node>). A node whose heartbeat - the later of its
Lease renewTime and its Ready condition's lastHeartbeatTime - has not advanced for the grace period
gets every condition set to Unknown (reason NodeStatusUnknown) and the `node.kubernetes.io/unreachable`
NoSchedule and NoExecute taints; a node reporting Ready=False gets the `not-ready` ones. Staleness is
measured on this controller's clock, from when it last saw the heartbeat advance (as upstream does),
so clock skew between an edge node and the cloud does not matter.

Edge choices (KubeEdge's autonomy: an edge node that loses its link keeps running its pods):
- Pods on nodes labelled `node-role.kubernetes.io/edge` are not evicted by default
  (`evict_edge_pods`; per node, annotation `node.kubeedge.io/eviction: "true"|"false"` overrides);
  they stay bound with the same UIDs and nothing is recreated when the node comes back.
- When the Lease is renewed again and Ready is still the Unknown this controller wrote, Ready is set
  back to True (and the other conditions it made Unknown to False). Upstream leaves that to the
  kubelet; an edge node may renew its Lease over a thin link well before it re-posts its status, and
  the node must not stay tainted unreachable meanwhile. A status the node posts itself wins.
- Per node, `node.kubeedge.io/grace-period-seconds` overrides the grace period (edge links are
  slower and flakier than a datacenter network, so edge nodes often want a longer one).

Other nodes follow taint-based eviction: a pod not tolerating a NoExecute taint is deleted (with its
own grace period), one tolerating it for tolerationSeconds is deleted that long after the taint was
added; deletions are rate limited. Pods on a node that is not Ready get Ready=False (upstream's
MarkPodsNotReady) on every node, edge included - that is status, not eviction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubeedge.kube import LEASES, NODES, PODS, KubeClient, Obj
from kubeedge.kube.errors import Conflict, NotFound

from .framework import Controller, InformerFactory

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
EDGE_LABEL = "node-role.kubernetes.io/edge"
GRACE_ANNOTATION = "node.kubeedge.io/grace-period-seconds"
EVICTION_ANNOTATION = "node.kubeedge.io/eviction"
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
RESTORED_MESSAGE = "Node lease renewed; status restored by the node lifecycle controller."
MIN_GRACE = 0.5
# Taints this controller owns: (key, effect) for each Ready status it reacts to.
CONDITION_TAINTS: dict[str, tuple[str, ...]] = {"Unknown": (UNREACHABLE,), "False": (NOT_READY,), "True": ()}
OWNED_KEYS = frozenset({UNREACHABLE, NOT_READY})


# ---- pure decisions ----------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time (Time or MicroTime) as a POSIX timestamp."""
    if not value or not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(node: Obj, ctype: str) -> Obj | None:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == ctype:
            return dict(c)
    return None


def heartbeat(node: Obj | None, lease: Obj | None) -> float | None:
    """The node's latest sign of life: Lease renewTime or Ready lastHeartbeatTime, the later."""
    beats = []
    if lease is not None:
        beats.append(parse_time((lease.get("spec") or {}).get("renewTime")))
    if node is not None:
        ready = condition(node, "Ready")
        beats.append(parse_time(ready.get("lastHeartbeatTime")) if ready else None)
    known = [b for b in beats if b is not None]
    return max(known) if known else None


@dataclass
class NodeHealth:
    """When (on our monotonic clock) the node's heartbeat last advanced."""

    beat: float | None
    observed_at: float

    def observe(self, beat: float | None, now: float) -> bool:
        if beat is not None and (self.beat is None or beat > self.beat):
            self.beat = beat
            self.observed_at = now
            return True
        return False

    def stale(self, now: float, grace: float) -> bool:
        return now - self.observed_at > grace

    def time_left(self, now: float, grace: float) -> float:
        return grace - (now - self.observed_at)


def grace_period(node: Obj, default: float) -> float:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(GRACE_ANNOTATION)
    try:
        return max(MIN_GRACE, float(raw)) if raw is not None else default
    except ValueError:
        return default


def is_edge(node: Obj) -> bool:
    return EDGE_LABEL in ((node.get("metadata") or {}).get("labels") or {})


def eviction_enabled(node: Obj, evict_edge_pods: bool) -> bool:
    """Annotation `node.kubeedge.io/eviction` decides; else edge nodes follow the cluster default
    and all other nodes evict."""
    ann = str(((node.get("metadata") or {}).get("annotations") or {}).get(EVICTION_ANNOTATION, "")).lower()
    if ann in ("true", "false"):
        return ann == "true"
    return evict_edge_pods if is_edge(node) else True


def tolerates(toleration: Obj, taint: Obj) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    op = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return op == "Exists"  # an empty key with Exists tolerates everything
    if key != taint.get("key"):
        return False
    return op == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def eviction_delay(pod: Obj, taints: list[tuple[Obj, float]], now: float) -> float | None:
    """Seconds until `pod` must be evicted for the NoExecute `taints` (taint, time added): 0 = now,
    None = never. As upstream: an untolerated taint evicts at once; otherwise the shortest
    tolerationSeconds among the tolerations in use counts (tolerations without it last forever)."""
    tolerations = [t for t in (pod.get("spec") or {}).get("tolerations") or () if isinstance(t, dict)]
    deadline: float | None = None
    for taint, added in taints:
        if taint.get("effect") != "NoExecute":
            continue
        used = [t for t in tolerations if tolerates(t, taint)]
        if not used:
            return 0.0
        for t in used:
            secs = t.get("tolerationSeconds")
            if secs is None:
                continue
            when = added + max(0, int(secs))
            deadline = when if deadline is None else min(deadline, when)
    if deadline is None:
        return None
    return max(0.0, deadline - now)


def desired_taints(current: list[Obj], ready: str, now: float) -> list[Obj] | None:
    """`current` with this controller's taints matching the Ready status; None if unchanged."""
    want = {(k, e) for k in CONDITION_TAINTS.get(ready, ()) for e in ("NoSchedule", "NoExecute")}
    have = {(t.get("key"), t.get("effect")) for t in current if t.get("key") in OWNED_KEYS}
    if want == have:
        return None
    out = [t for t in current if t.get("key") not in OWNED_KEYS or (t.get("key"), t.get("effect")) in want]
    for key, effect in sorted(want - have):
        taint: Obj = {"key": key, "effect": effect}
        if effect == "NoExecute":
            taint["timeAdded"] = rfc3339(now)
        out.append(taint)
    return out


def unknown_conditions(node: Obj, now: float) -> list[Obj] | None:
    """Every condition set to Unknown because the node stopped reporting; None if already so."""
    conds = list((node.get("status") or {}).get("conditions") or ())
    if not any(c.get("type") == "Ready" for c in conds):
        conds.append({"type": "Ready", "status": "Unknown"})
    if all(c.get("status") == "Unknown" for c in conds):
        return None
    out = []
    for c in conds:
        c = dict(c)
        if c.get("status") != "Unknown":
            c["lastTransitionTime"] = rfc3339(now)
            c["status"] = "Unknown"
            c["reason"] = UNKNOWN_REASON
            c["message"] = UNKNOWN_MESSAGE
        out.append(c)
    return out


def restored_conditions(node: Obj, now: float) -> list[Obj] | None:
    """Undo what `unknown_conditions` wrote (only that): Ready True, the pressure conditions False."""
    conds = list((node.get("status") or {}).get("conditions") or ())
    ready = condition(node, "Ready")
    if not ready or ready.get("status") != "Unknown" or ready.get("reason") != UNKNOWN_REASON:
        return None
    out = []
    for c in conds:
        c = dict(c)
        if c.get("status") == "Unknown" and c.get("reason") == UNKNOWN_REASON:
            ok = c.get("type") == "Ready"
            c.update(
                status="True" if ok else "False",
                reason="KubeletReady" if ok else "NodeStatusRestored",
                message=RESTORED_MESSAGE,
                lastTransitionTime=rfc3339(now),
            )
        out.append(c)
    return out


# ---- rate limiting -----------------------------------------------------------------------------


class TokenBucket:
    """`rate` operations per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


# ---- the controller ----------------------------------------------------------------------------


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    workers = 2
    # Settings: class attributes, so a deployment (or a test) can override them in a subclass or set
    # them before the manager constructs the controller; per node, annotations override some.
    grace_period = 40.0  # seconds without a heartbeat before a node is Unknown
    evict_edge_pods = False  # cluster-wide default for edge nodes (annotation overrides per node)
    eviction_qps = 10.0
    eviction_burst = 10

    def __init__(self, kc: KubeClient, informers: InformerFactory) -> None:
        super().__init__(kc, informers)
        self.health: dict[str, NodeHealth] = {}
        # (node, taint key, effect) -> when the NoExecute taint was added, to the sub-second when we
        # added it ourselves (the API's timeAdded has whole seconds only).
        self.taint_added: dict[tuple[str, str, str], float] = {}
        self.limiter = TokenBucket(self.eviction_qps, self.eviction_burst)

    def setup(self) -> None:
        self.nodes = self.informers.get(NODES)
        self.leases = self.informers.get(LEASES, namespace=LEASE_NAMESPACE)
        self.pods = self.informers.get(PODS)
        self.pods.add_index("node", lambda p: [n] if (n := (p.get("spec") or {}).get("nodeName")) else [])
        self.nodes.add_handler(self._on_node)
        self.leases.add_handler(self._on_lease)
        self.pods.add_handler(self._on_pod)

    # ---- handlers ------------------------------------------------------------------------------

    def _observe(self, name: str) -> None:
        node = self.nodes.get("", name)
        if node is None:
            return
        beat = heartbeat(node, self.leases.get(LEASE_NAMESPACE, name))
        h = self.health.get(name)
        if h is None:
            # First sight: give the node a full grace period from now (upstream does the same).
            self.health[name] = NodeHealth(beat, time.monotonic())
        else:
            h.observe(beat, time.monotonic())
        self.queue.add(name)

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None:
            self._observe(new["metadata"]["name"])
            return
        if old is not None:
            name = old["metadata"]["name"]
            self.health.pop(name, None)
            for k in [k for k in self.taint_added if k[0] == name]:
                del self.taint_added[k]

    def _on_lease(self, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is not None:
            self._observe(obj["metadata"]["name"])

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        pod = new or old
        node_name = ((pod or {}).get("spec") or {}).get("nodeName")
        if new is None or not node_name:
            return
        node = self.nodes.get("", node_name)
        if node is None:
            return
        ready = (condition(node, "Ready") or {}).get("status")
        no_execute = any(t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or ())
        if ready != "True" or no_execute:
            self.queue.add(node_name)

    # ---- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        node = self.nodes.get("", key)
        h = self.health.get(key)
        if node is None or h is None:
            return None
        now = time.monotonic()
        grace = grace_period(node, self.grace_period)
        stale = h.stale(now, grace)
        node = await self._update_conditions(node, stale)
        waits: list[float] = []
        if not stale:
            waits.append(h.time_left(now, grace) + 0.05)
        ready = (condition(node, "Ready") or {}).get("status")
        if ready is None:
            # A node that never reported status: nothing to taint until it goes stale.
            return min(waits, default=None)
        node = await self._update_taints(node, ready)
        if eviction_enabled(node, self.evict_edge_pods):
            nxt = await self._evict(node)
            if nxt is not None:
                waits.append(nxt + 0.05)
        if ready != "True":
            await self._mark_pods_not_ready(node)
        return min(waits) if waits else None

    async def _update_conditions(self, node: Obj, stale: bool) -> Obj:
        now = time.time()
        conds = unknown_conditions(node, now) if stale else restored_conditions(node, now)
        if conds is None:
            return node
        name = node["metadata"]["name"]
        log.info("node %s: %s", name, "stopped posting status" if stale else "lease renewed, Ready again")
        patch = {"metadata": {"resourceVersion": node["metadata"].get("resourceVersion")}}
        patch["status"] = {"conditions": conds}
        return await self.kc.patch(NODES, name, patch, subresource="status")

    async def _update_taints(self, node: Obj, ready: str) -> Obj:
        name = node["metadata"]["name"]
        now = time.time()
        current = list((node.get("spec") or {}).get("taints") or ())
        taints = desired_taints(current, ready, now)
        if taints is None:
            return node
        for t in taints:
            if t.get("key") in OWNED_KEYS and t not in current:
                self.taint_added[(name, t["key"], t["effect"])] = now
        patch = {
            "metadata": {"resourceVersion": node["metadata"].get("resourceVersion")},
            "spec": {"taints": taints or None},
        }
        log.info("node %s: taints %s", name, [f"{t['key']}:{t['effect']}" for t in taints] or "cleared")
        return await self.kc.patch(NODES, name, patch)

    def _no_execute_taints(self, node: Obj) -> list[tuple[Obj, float]]:
        name = node["metadata"]["name"]
        out = []
        for t in (node.get("spec") or {}).get("taints") or ():
            if t.get("effect") != "NoExecute":
                continue
            k = (name, str(t.get("key") or ""), "NoExecute")
            if k not in self.taint_added:
                self.taint_added[k] = parse_time(t.get("timeAdded")) or time.time()
            out.append((t, self.taint_added[k]))
        live = {(name, str(t.get("key") or ""), "NoExecute") for t, _ in out}
        for k in [k for k in self.taint_added if k[0] == name and k not in live]:
            del self.taint_added[k]
        return out

    async def _evict(self, node: Obj) -> float | None:
        """Delete the pods whose tolerations ran out; seconds until the next one will, if any."""
        taints = self._no_execute_taints(node)
        if not taints:
            return None
        nxt: float | None = None
        now = time.time()
        for pod in self.pods.by_index("node", node["metadata"]["name"]):
            md = pod["metadata"]
            if md.get("deletionTimestamp"):
                continue
            delay = eviction_delay(pod, taints, now)
            if delay is None:
                continue
            if delay > 0:
                nxt = delay if nxt is None else min(nxt, delay)
                continue
            await self.limiter.acquire()
            log.info(
                "node %s: evicting pod %s/%s (NoExecute taint)",
                node["metadata"]["name"],
                md.get("namespace"),
                md["name"],
            )
            try:
                await self.kc.delete(
                    PODS, md["name"], md.get("namespace"), preconditions={"uid": md.get("uid")}
                )
            except (NotFound, Conflict):
                pass  # gone already, or replaced by a new pod of the same name
        return nxt

    async def _mark_pods_not_ready(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        for pod in self.pods.by_index("node", name):
            ready = condition(pod, "Ready")
            if not ready or ready.get("status") == "False":
                continue
            conds = []
            for c in (pod.get("status") or {}).get("conditions") or ():
                if c.get("type") == "Ready":
                    c = {
                        **c,
                        "status": "False",
                        "reason": "NodeNotReady"
                        if (condition(node, "Ready") or {}).get("status") == "False"
                        else "NodeUnreachable",
                        "message": f"Node {name} which was running pod {pod['metadata']['name']} is unresponsive",
                        "lastTransitionTime": rfc3339(time.time()),
                    }
                conds.append(c)
            patch = {
                "metadata": {"resourceVersion": pod["metadata"].get("resourceVersion")},
                "status": {"conditions": conds},
            }
            try:
                await self.kc.patch(
                    PODS,
                    pod["metadata"]["name"],
                    patch,
                    pod["metadata"].get("namespace"),
                    subresource="status",
                )
            except NotFound:
                pass
