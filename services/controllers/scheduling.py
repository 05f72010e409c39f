"""Scheduling decisions, free of I/O: Kubernetes quantities, the filters and scores of the default
kube-scheduler profile as pure functions, and `ClusterState`, the per-node aggregates (requested
resources, pod counts, host ports, workload spread) kept incrementally so that one decision never
scans the pods of the cluster."""

from __future__ import annotations

import collections
import functools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubeedge.kube.quantity import parse_quantity

Obj = dict[str, Any]

# ---- quantities -----------------------------------------------------------------------------


def milli(q: str | int | float) -> int:
    """A quantity in thousandths, rounded up as the API rounds (MilliValue). All resources are kept
    in milli-units so CPU and byte-valued resources share one integer arithmetic."""
    if isinstance(q, str):
        return _milli_text(q)
    v = parse_quantity(q) * 1000
    return -((-v.numerator) // v.denominator)


@functools.lru_cache(maxsize=8192)
def _milli_text(text: str) -> int:
    # Pods repeat the same few request strings: Fraction arithmetic once per string is enough.
    v = parse_quantity(text) * 1000
    return -((-v.numerator) // v.denominator)


def resource_list(rl: Mapping[str, Any] | None) -> dict[str, int]:
    return {name: milli(q) for name, q in (rl or {}).items()}


# ---- pod requests ---------------------------------------------------------------------------

CPU = "cpu"
MEMORY = "memory"
PODS = "pods"
# What an unset request counts as when scoring (upstream GetNonzeroRequests): a pod without
# requests still occupies something, or least-requested would pile them all onto one node.
DEFAULT_CPU_MILLI = 100
DEFAULT_MEMORY_MILLI = 200 * 2**20 * 1000


def _add(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def _container_requests(c: Obj, nonzero: bool) -> dict[str, int]:
    req = resource_list((c.get("resources") or {}).get("requests"))
    if nonzero:
        return {CPU: req.get(CPU, DEFAULT_CPU_MILLI), MEMORY: req.get(MEMORY, DEFAULT_MEMORY_MILLI)}
    return req


def pod_requests(spec: Obj, *, nonzero: bool = False) -> dict[str, int]:
    """Effective requests (milli-units) as upstream computes them: the sum of the containers, raised
    to what any init container needs while it runs (init containers run one at a time, next to
    the restartable "sidecar" init containers started before them), plus the pod overhead."""
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or ():
        _add(reqs, _container_requests(c, nonzero))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for c in spec.get("initContainers") or ():
        r = _container_requests(c, nonzero)
        if c.get("restartPolicy") == "Always":
            _add(reqs, r)
            _add(sidecars, r)
            running = dict(sidecars)
        else:
            running = dict(r)
            _add(running, sidecars)
        _max(init_peak, running)
    _max(reqs, init_peak)
    overhead = spec.get("overhead")
    if overhead:
        over = resource_list(overhead)
        _add(reqs, {k: v for k, v in over.items() if not nonzero or k in (CPU, MEMORY)})
    return reqs


HostPort = tuple[str, int, str]  # (protocol, port, hostIP)
ANY_IP = "0.0.0.0"


def host_ports(spec: Obj) -> tuple[HostPort, ...]:
    """Host ports the pod claims (containers and sidecar init containers, which keep running)."""
    out: list[HostPort] = []
    sidecars = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in [*(spec.get("containers") or ()), *sidecars]:
        for p in c.get("ports") or ():
            hp = int(p.get("hostPort") or 0)
            if hp > 0:
                out.append((str(p.get("protocol") or "TCP"), hp, str(p.get("hostIP") or ANY_IP)))
    return tuple(out)


def ports_conflict(used: Mapping[tuple[str, int], Mapping[str, int]], wanted: Iterable[HostPort]) -> bool:
    """0.0.0.0 conflicts with every address of the same protocol and port; others only with
    themselves (and with 0.0.0.0)."""
    for proto, port, ip in wanted:
        ips = used.get((proto, port))
        if not ips:
            continue
        if ip == ANY_IP or ip in ips or ANY_IP in ips:
            return True
    return False


# ---- node affinity --------------------------------------------------------------------------


def _as_int(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def match_expression(expr: Obj, labels: Mapping[str, str]) -> bool:
    """One NodeSelectorRequirement against node labels (In, NotIn, Exists, DoesNotExist, Gt, Lt)."""
    key = expr.get("key") or ""
    op = expr.get("operator")
    values = expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        have, want = _as_int(labels[key]), _as_int(values[0])
        if have is None or want is None:
            return False
        return have > want if op == "Gt" else have < want
    return False


def match_field(expr: Obj, node_name: str) -> bool:
    """matchFields supports only metadata.name, with In and NotIn."""
    if expr.get("key") != "metadata.name":
        return False
    values = expr.get("values") or []
    if expr.get("operator") == "In":
        return node_name in values
    if expr.get("operator") == "NotIn":
        return node_name not in values
    return False


def match_term(term: Obj, labels: Mapping[str, str], node_name: str) -> bool:
    """A NodeSelectorTerm: its requirements are ANDed; an empty term matches nothing."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    return all(match_expression(e, labels) for e in exprs) and all(match_field(f, node_name) for f in fields)


def match_terms(terms: Iterable[Obj], labels: Mapping[str, str], node_name: str) -> bool:
    """nodeSelectorTerms are ORed."""
    return any(match_term(t, labels, node_name) for t in terms)


def match_node_selector(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- taints and tolerations -----------------------------------------------------------------

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
TAINT_UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": NO_SCHEDULE}
TAINT_NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": NO_SCHEDULE}
TAINT_UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": NO_SCHEDULE}


def tolerates(tol: Obj, taint: Obj) -> bool:
    """Toleration.ToleratesTaint: the effect must match (empty tolerates all effects); an empty key
    with Exists tolerates every taint; Exists ignores the value, Equal (the default) compares it."""
    effect = tol.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = tol.get("key") or ""
    op = tol.get("operator") or "Equal"
    if not key:
        return op == "Exists"
    if key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return op == "Equal" and (tol.get("value") or "") == (taint.get("value") or "")


def tolerated(tolerations: Iterable[Obj], taint: Obj) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[Obj], tolerations: list[Obj]) -> Obj | None:
    for taint in taints:
        if not tolerated(tolerations, taint):
            return taint
    return None


def count_intolerable_prefer(taints: Iterable[Obj], tolerations: list[Obj]) -> int:
    """PreferNoSchedule taints the pod does not tolerate (only tolerations that could apply count)."""
    relevant = [t for t in tolerations if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)]
    return sum(1 for taint in taints if not tolerated(relevant, taint))


# ---- the pod as the scheduler sees it -------------------------------------------------------


@dataclass(slots=True)
class PodProfile:
    """Everything about a pod that scheduling and accounting need, computed once per pod."""

    key: tuple[str, str]
    requests: dict[str, int]
    cpu: int
    memory: int
    other: tuple[tuple[str, int], ...]  # requests beyond cpu and memory (ephemeral-storage, extended)
    nz_cpu: int
    nz_memory: int
    ports: tuple[HostPort, ...]
    node_selector: dict[str, str]
    required_terms: list[Obj] | None  # None: no required node affinity
    preferred: list[tuple[int, Obj]]
    tolerations: list[Obj]
    workload: str | None
    signature: bytes  # identical for pods whose static (node-only) filters agree


def workload_of(pod: Obj) -> str | None:
    """What spreading groups by: the controlling owner, else the label set of a bare pod."""
    md = pod.get("metadata") or {}
    for ref in md.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("uid"):
            return "uid:" + str(ref["uid"])
    labels = md.get("labels") or {}
    if not labels:
        return None
    return (
        "labels:"
        + (md.get("namespace") or "")
        + ":"
        + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    )


def profile_of(pod: Obj) -> PodProfile:
    """Raises ValueError on an unparsable quantity."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    reqs = pod_requests(spec)
    nz = pod_requests(spec, nonzero=True)
    node_aff = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    required_terms = None if required is None else list(required.get("nodeSelectorTerms") or [])
    preferred = [
        (int(p.get("weight") or 0), p.get("preference") or {})
        for p in node_aff.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
    ]
    selector = dict(spec.get("nodeSelector") or {})
    tolerations = list(spec.get("tolerations") or [])
    signature = orjson.dumps([selector, required_terms, tolerations], option=orjson.OPT_SORT_KEYS)
    return PodProfile(
        key=(md.get("namespace") or "", md.get("name") or ""),
        requests=reqs,
        cpu=reqs.get(CPU, 0),
        memory=reqs.get(MEMORY, 0),
        other=tuple((k, v) for k, v in reqs.items() if k not in (CPU, MEMORY) and v > 0),
        nz_cpu=nz.get(CPU, 0),
        nz_memory=nz.get(MEMORY, 0),
        ports=host_ports(spec),
        node_selector=selector,
        required_terms=required_terms,
        preferred=[(w, t) for w, t in preferred if w],
        tolerations=tolerations,
        workload=workload_of(pod),
        signature=signature,
    )


# ---- nodes ----------------------------------------------------------------------------------


def _ready_taint(node: Obj) -> Obj | None:
    """A node whose Ready condition is not True is treated as carrying the NoSchedule taint the
    node lifecycle controller would put on it (so pods that tolerate it may still land there)."""
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return None
            if c.get("status") == "False":
                return TAINT_NOT_READY
            break
    return TAINT_UNREACHABLE


class NodeInfo:
    """One node: its schedulable properties and the aggregates of the pods placed on it."""

    __slots__ = (
        "alloc",
        "alloc_cpu",
        "alloc_memory",
        "exists",
        "hard_taints",
        "labels",
        "max_pods",
        "memo",
        "name",
        "npods",
        "nz_cpu",
        "nz_memory",
        "ports",
        "prefer_taints",
        "req_cpu",
        "req_memory",
        "requested",
        "static_key",
        "unschedulable",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.exists = False  # False: pods are bound to a node we have not seen (yet)
        self.labels: dict[str, str] = {}
        self.hard_taints: list[Obj] = []
        self.prefer_taints: list[Obj] = []
        self.unschedulable = False
        self.alloc: dict[str, int] = {}
        self.alloc_cpu = 0
        self.alloc_memory = 0
        self.max_pods = 0
        self.static_key = b""
        self.requested: dict[str, int] = {}
        self.req_cpu = 0
        self.req_memory = 0
        self.nz_cpu = 0
        self.nz_memory = 0
        self.npods = 0
        self.ports: dict[tuple[str, int], dict[str, int]] = {}
        # Pod shape id -> least-requested score if such a pod fits on cpu/memory/pod count, else -1;
        # valid until this node changes, which happens for one node per decision.
        self.memo: dict[int, int] = {}

    def set_node(self, node: Obj) -> tuple[bool, bool]:
        """Take the node's current object; returns (static properties changed, capacity changed)."""
        md = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        taints = [t for t in spec.get("taints") or () if isinstance(t, dict)]
        hard = [t for t in taints if t.get("effect") in (NO_SCHEDULE, NO_EXECUTE)]
        ready = _ready_taint(node)
        if ready is not None:
            hard.append(ready)
        self.labels = dict(md.get("labels") or {})
        self.hard_taints = hard
        self.prefer_taints = [t for t in taints if t.get("effect") == PREFER_NO_SCHEDULE]
        self.unschedulable = bool(spec.get("unschedulable"))
        static_key = orjson.dumps([self.labels, hard, self.unschedulable], option=orjson.OPT_SORT_KEYS)
        alloc = resource_list(status.get("allocatable") or status.get("capacity"))
        static_changed = not self.exists or static_key != self.static_key
        capacity_changed = alloc != self.alloc
        self.static_key = static_key
        self.alloc = alloc
        self.alloc_cpu = alloc.get(CPU, 0)
        self.alloc_memory = alloc.get(MEMORY, 0)
        self.max_pods = alloc.get(PODS, 0) // 1000
        self.exists = True
        self.memo.clear()
        return static_changed, capacity_changed

    def add(self, p: PodProfile, sign: int = 1) -> None:
        self.memo.clear()
        self.req_cpu += sign * p.cpu
        self.req_memory += sign * p.memory
        self.nz_cpu += sign * p.nz_cpu
        self.nz_memory += sign * p.nz_memory
        self.npods += sign
        for name, q in p.other:
            self.requested[name] = self.requested.get(name, 0) + sign * q
        for proto, port, ip in p.ports:
            ips = self.ports.setdefault((proto, port), {})
            n = ips.get(ip, 0) + sign
            if n > 0:
                ips[ip] = n
            else:
                ips.pop(ip, None)
                if not ips:
                    del self.ports[(proto, port)]

    def remove(self, p: PodProfile) -> None:
        self.add(p, -1)

    @property
    def empty(self) -> bool:
        return self.npods == 0


# ---- filters --------------------------------------------------------------------------------

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"


def static_reason(ni: NodeInfo, p: PodProfile) -> str | None:
    """The filters that depend only on the node's properties, in upstream plugin order
    (NodeUnschedulable, TaintToleration, NodeAffinity); None when the node passes."""
    if ni.unschedulable and not tolerated(p.tolerations, TAINT_UNSCHEDULABLE):
        return REASON_UNSCHEDULABLE
    taint = first_untolerated(ni.hard_taints, p.tolerations)
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key') or ''}: {taint.get('value') or ''}}}"
    if not match_node_selector(p.node_selector, ni.labels):
        return REASON_AFFINITY
    if p.required_terms is not None and not match_terms(p.required_terms, ni.labels, ni.name):
        return REASON_AFFINITY
    return None


def fits(ni: NodeInfo, p: PodProfile) -> bool:
    """The filters that depend on what is placed on the node (NodePorts, NodeResourcesFit): the
    fast yes/no used on the hot path."""
    if ni.npods >= ni.max_pods:
        return False
    if p.cpu and ni.req_cpu + p.cpu > ni.alloc_cpu:
        return False
    if p.memory and ni.req_memory + p.memory > ni.alloc_memory:
        return False
    for name, q in p.other:
        if ni.requested.get(name, 0) + q > ni.alloc.get(name, 0):
            return False
    return not (p.ports and ni.ports and ports_conflict(ni.ports, p.ports))


def fit_reasons(ni: NodeInfo, p: PodProfile) -> list[str]:
    """Why `fits` said no, worded like upstream (all insufficient resources are listed)."""
    if p.ports and ports_conflict(ni.ports, p.ports):
        return [REASON_PORTS]
    out: list[str] = []
    if ni.npods >= ni.max_pods:
        out.append(REASON_TOO_MANY_PODS)
    if p.cpu and ni.req_cpu + p.cpu > ni.alloc_cpu:
        out.append("Insufficient cpu")
    if p.memory and ni.req_memory + p.memory > ni.alloc_memory:
        out.append("Insufficient memory")
    for name, q in p.other:
        if ni.requested.get(name, 0) + q > ni.alloc.get(name, 0):
            out.append(f"Insufficient {name}")
    return out


def failure_message(total: int, reasons: Mapping[str, int]) -> str:
    """ "0/3 nodes are available: 1 node(s) didn't match ..., 2 Insufficient cpu." (sorted as upstream)"""
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{n} {r}" for r, n in reasons.items())
    return f"0/{total} nodes are available: {', '.join(parts)}."


# ---- scores ---------------------------------------------------------------------------------

MAX_SCORE = 100
# Upstream default-profile weights: NodeResourcesFit 1, PodTopologySpread 2, NodeAffinity 2,
# TaintToleration 3.
WEIGHT_LEAST_REQUESTED = 1
WEIGHT_SPREAD = 2
WEIGHT_AFFINITY = 2
WEIGHT_TAINT = 3


def least_requested(ni: NodeInfo, p: PodProfile) -> int:
    """Mean over cpu and memory of the free share (0..100) left after placing the pod."""
    score = 0
    cap = ni.alloc_cpu
    used = ni.nz_cpu + p.nz_cpu
    if cap and used <= cap:
        score += (cap - used) * MAX_SCORE // cap
    cap = ni.alloc_memory
    used = ni.nz_memory + p.nz_memory
    if cap and used <= cap:
        score += (cap - used) * MAX_SCORE // cap
    return score // 2


def spread_score(count: int, max_count: int) -> int:
    """Fewer pods of the same workload on a node scores higher (0..100)."""
    if max_count <= 0:
        return MAX_SCORE
    return (max_count - count) * MAX_SCORE // max_count


def preferred_affinity(ni: NodeInfo, p: PodProfile) -> int:
    """Sum of the weights of the preferred terms the node matches (normalised later)."""
    return sum(w for w, term in p.preferred if match_term(term, ni.labels, ni.name))


def normalize(raw: int, max_raw: int, reverse: bool = False) -> int:
    """DefaultNormalizeScore: scale to 0..100 by the maximum; reverse for "fewer is better"."""
    if max_raw <= 0:
        return MAX_SCORE if reverse else 0
    s = raw * MAX_SCORE // max_raw
    return MAX_SCORE - s if reverse else s


# ---- sampling -------------------------------------------------------------------------------

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5


def num_feasible_to_find(total: int, percentage: int = 0) -> int:
    """Upstream's percentageOfNodesToScore: 0 means adaptive (50% minus 1% per 125 nodes, at least
    5%); never fewer than 100 nodes."""
    if total < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return total
    pct = percentage
    if pct <= 0:
        pct = max(50 - total // 125, MIN_FEASIBLE_NODES_PERCENTAGE)
    return max(total * pct // 100, MIN_FEASIBLE_NODES_TO_FIND)


# ---- cluster state --------------------------------------------------------------------------


@dataclass(slots=True)
class Placement:
    profile: PodProfile
    node: str
    assumed: bool  # chosen and bound (or binding) by us, not yet seen bound through the informer


@dataclass(slots=True)
class _ShapeScores:
    """`_basic` of one pod shape for every node of a static entry, in the entry's order, kept
    current by replaying the node-change log from `synced` on."""

    values: list[int]
    synced: int


@dataclass(slots=True)
class _StaticEntry:
    epoch: int
    nodes: list[NodeInfo]
    reasons: dict[str, int]
    next_start: int = 0
    index: dict[str, int] = field(default_factory=dict)  # node name -> position in nodes
    shapes: collections.OrderedDict[int, _ShapeScores] = field(default_factory=collections.OrderedDict)


@dataclass(slots=True)
class Decision:
    node: str | None
    message: str = ""
    evaluated: int = 0
    feasible: int = 0


@dataclass
class ClusterState:
    """Nodes and the pods placed on them, updated incrementally from informer events and from
    our own assumptions; answers one scheduling decision at a time."""

    percentage_of_nodes_to_score: int = 0
    rng: random.Random = field(default_factory=random.Random)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    placed: dict[tuple[str, str], Placement] = field(default_factory=dict)
    spread: dict[str, dict[str, int]] = field(default_factory=dict)
    epoch: int = 0  # bumped whenever a static (node-only) filter could answer differently
    _node_list: list[NodeInfo] = field(default_factory=list)
    _node_list_epoch: int = -1
    _static: collections.OrderedDict[bytes, _StaticEntry] = field(default_factory=collections.OrderedDict)
    _prefer_tainted: int = 0  # nodes with PreferNoSchedule taints: 0 lets scoring skip that plugin
    _shapes: dict[tuple[int, int, int, int], int] = field(default_factory=dict)
    _changes: list[NodeInfo] = field(default_factory=list)

    STATIC_CACHE_SIZE = 256
    SHAPES_PER_ENTRY = 8
    CHANGE_LOG_LIMIT = 100_000
    SHAPES_LIMIT = 4096

    # -- nodes --

    def set_node(self, node: Obj) -> bool:
        """Add or update a node; True when pods that did not fit before might fit now."""
        name = (node.get("metadata") or {}).get("name") or ""
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(name)
        had_prefer = bool(ni.exists and ni.prefer_taints)
        static_changed, capacity_changed = ni.set_node(node)
        if capacity_changed:
            self._changed(ni)
        self._prefer_tainted += bool(ni.prefer_taints) - had_prefer
        if static_changed:
            self.epoch += 1
        return static_changed or capacity_changed

    def remove_node(self, name: str) -> None:
        ni = self.nodes.get(name)
        if ni is None or not ni.exists:
            return
        self._prefer_tainted -= bool(ni.prefer_taints)
        ni.exists = False
        if ni.empty:
            del self.nodes[name]
        self.epoch += 1

    def node_list(self) -> list[NodeInfo]:
        if self._node_list_epoch != self.epoch:
            self._node_list = [ni for ni in self.nodes.values() if ni.exists]
            self._node_list_epoch = self.epoch
        return self._node_list

    # -- pods --

    def place(self, p: PodProfile, node: str, *, assumed: bool) -> None:
        """Account `p` on `node` (moving it if it was accounted elsewhere)."""
        cur = self.placed.get(p.key)
        if cur is not None:
            if cur.node == node:
                cur.assumed = cur.assumed and assumed
                return
            self.unplace(p.key)
        ni = self.nodes.get(node)
        if ni is None:
            ni = self.nodes[node] = NodeInfo(node)
        ni.add(p)
        self._changed(ni)
        if p.workload is not None:
            counts = self.spread.setdefault(p.workload, {})
            counts[node] = counts.get(node, 0) + 1
        self.placed[p.key] = Placement(p, node, assumed)

    def confirm(self, key: tuple[str, str], node: str) -> bool:
        """The informer shows the pod bound to `node`: True if it was already accounted there."""
        cur = self.placed.get(key)
        if cur is None or cur.node != node:
            return False
        cur.assumed = False
        return True

    def unplace(self, key: tuple[str, str]) -> Placement | None:
        cur = self.placed.pop(key, None)
        if cur is None:
            return None
        ni = self.nodes.get(cur.node)
        if ni is not None:
            ni.remove(cur.profile)
            self._changed(ni)
            if ni.empty and not ni.exists:
                del self.nodes[cur.node]
        w = cur.profile.workload
        if w is not None:
            counts = self.spread.get(w)
            if counts is not None:
                n = counts.get(cur.node, 0) - 1
                if n > 0:
                    counts[cur.node] = n
                else:
                    counts.pop(cur.node, None)
                    if not counts:
                        del self.spread[w]
        return cur

    def forget_assumed(self, key: tuple[str, str]) -> bool:
        """Drop our assumption (the bind failed); a placement the informer confirmed stays."""
        cur = self.placed.get(key)
        if cur is not None and cur.assumed:
            self.unplace(key)
            return True
        return False

    # -- deciding --

    def _static_entry(self, p: PodProfile) -> _StaticEntry:
        """Nodes passing the static filters for pods of this signature, cached until a node's
        static properties change (heartbeats do not invalidate it)."""
        entry = self._static.get(p.signature)
        if entry is not None and entry.epoch == self.epoch:
            self._static.move_to_end(p.signature)
            return entry
        ok: list[NodeInfo] = []
        reasons: dict[str, int] = {}
        for ni in self.node_list():
            r = static_reason(ni, p)
            if r is None:
                ok.append(ni)
            else:
                reasons[r] = reasons.get(r, 0) + 1
        start = entry.next_start if entry is not None else 0
        entry = _StaticEntry(self.epoch, ok, reasons, start, {ni.name: i for i, ni in enumerate(ok)})
        self._static[p.signature] = entry
        self._static.move_to_end(p.signature)
        while len(self._static) > self.STATIC_CACHE_SIZE:
            self._static.popitem(last=False)
        return entry

    def schedule(self, p: PodProfile) -> Decision:
        """Pick a node for `p` (does not account it: call `place` once decided)."""
        total = len(self.node_list())
        if total == 0:
            return Decision(None, failure_message(0, {}))
        entry = self._static_entry(p)
        candidates = entry.nodes
        n = len(candidates)
        want = num_feasible_to_find(total, self.percentage_of_nodes_to_score)
        start = entry.next_start % n if n else 0
        shape = self._shape(p)
        if n and not (p.other or p.ports or p.preferred or self._prefer_tainted):
            decision = self._schedule_fast(entry, p, shape, start, want)
            if decision is not None:
                return decision
        feasible, scores, examined = scan(candidates[start:] + candidates[:start], p, want, shape)
        # The next pod of this kind starts where this one stopped, so load spreads over all nodes.
        entry.next_start = (start + examined) % n if n else 0
        if not feasible:
            reasons = dict(entry.reasons)
            for ni in candidates:
                for r in fit_reasons(ni, p):
                    reasons[r] = reasons.get(r, 0) + 1
            return Decision(None, failure_message(total, reasons), examined, 0)
        if len(feasible) == 1:
            return Decision(feasible[0].name, "", examined, 1)
        scores = self.score(feasible, scores, p)
        top = max(scores)
        best = [ni for s, ni in zip(scores, feasible, strict=True) if s == top]
        # Ties are broken uniformly at random, as upstream's selectHost does.
        chosen = best[0] if len(best) == 1 else self.rng.choice(best)
        return Decision(chosen.name, "", examined, len(feasible))

    def _schedule_fast(
        self, entry: _StaticEntry, p: PodProfile, shape: int, start: int, want: int
    ) -> Decision | None:
        """`scan` + `score` for pods that only need cpu/memory/pod-count fit, least-requested and
        spread, done with list slices and C-level searches over the memoised per-node scores
        instead of a Python loop over hundreds of nodes. Same choice set, same scores up to a
        constant. None when no node fits (the caller then explains why)."""
        n = len(entry.nodes)
        window, examined = _window(self._shape_scores(entry, p, shape), start, want)
        entry.next_start = (start + examined) % n
        feasible = examined - window.count(INFEASIBLE)
        if feasible == 0:
            return None
        counts = self.spread.get(p.workload) if p.workload is not None else None
        if counts and feasible > 1:
            # Spread adds W*100*(top-c)/top; nodes without pods of the workload all get the full
            # W*100, so subtracting it from everyone leaves only the few nodes in `counts` to touch.
            hits: list[tuple[int, int]] = []
            index = entry.index
            for name, c in counts.items():
                j = index.get(name)
                if j is not None:
                    i = (j - start) % n
                    if i < examined and window[i] != INFEASIBLE:
                        hits.append((i, c))
            if hits:
                top = max(c for _, c in hits)
                full = WEIGHT_SPREAD * MAX_SCORE
                for i, c in hits:
                    window[i] -= full - WEIGHT_SPREAD * ((top - c) * MAX_SCORE // top)
        best = max(window)
        ties = window.count(best)
        i = window.index(best)
        if ties > 1:
            # Uniformly among the ties: skip to the k-th occurrence.
            for _ in range(self.rng.randrange(ties)):
                i = window.index(best, i + 1)
        return Decision(entry.nodes[(start + i) % n].name, "", examined, feasible)

    def _shape_scores(self, entry: _StaticEntry, p: PodProfile, shape: int) -> list[int]:
        arr = entry.shapes.get(shape)
        changes = self._changes
        if arr is None:
            arr = entry.shapes[shape] = _ShapeScores([_basic(ni, p) for ni in entry.nodes], len(changes))
            while len(entry.shapes) > self.SHAPES_PER_ENTRY:
                entry.shapes.popitem(last=False)
        else:
            entry.shapes.move_to_end(shape)
            if arr.synced < len(changes):
                values, index = arr.values, entry.index
                for ni in changes[arr.synced :]:
                    j = index.get(ni.name)
                    if j is not None:
                        values[j] = _basic(ni, p)
                arr.synced = len(changes)
        return arr.values

    def _changed(self, ni: NodeInfo) -> None:
        """Log a node whose aggregates changed, for `_shape_scores` to replay."""
        self._changes.append(ni)
        if len(self._changes) > self.CHANGE_LOG_LIMIT:
            self._changes = []
            for entry in self._static.values():
                entry.shapes.clear()

    def _shape(self, p: PodProfile) -> int:
        """A small id for p's (cpu, memory) requests: the key of the per-node memo."""
        key = (p.cpu, p.memory, p.nz_cpu, p.nz_memory)
        sid = self._shapes.get(key)
        if sid is None:
            if len(self._shapes) >= self.SHAPES_LIMIT:
                self._shapes.clear()
                for ni in self.nodes.values():
                    ni.memo.clear()
                for entry in self._static.values():
                    entry.shapes.clear()
            sid = self._shapes[key] = len(self._shapes)
        return sid

    def score(self, feasible: list[NodeInfo], scores: list[int], p: PodProfile) -> list[int]:
        """Add the other plugins' weighted, normalised scores to the least-requested ones."""
        counts = self.spread.get(p.workload) if p.workload is not None else None
        if counts:
            get = counts.get
            per_node = [get(ni.name, 0) for ni in feasible]
            top = max(per_node)
            if top:
                w = WEIGHT_SPREAD
                scores = [
                    s + w * ((top - c) * MAX_SCORE // top) for s, c in zip(scores, per_node, strict=True)
                ]
        if p.preferred:
            raw = [preferred_affinity(ni, p) for ni in feasible]
            top = max(raw)
            if top:
                scores = [s + WEIGHT_AFFINITY * normalize(r, top) for s, r in zip(scores, raw, strict=True)]
        if self._prefer_tainted:
            raw = [count_intolerable_prefer(ni.prefer_taints, p.tolerations) for ni in feasible]
            top = max(raw)
            if top:
                scores = [
                    s + WEIGHT_TAINT * normalize(r, top, reverse=True)
                    for s, r in zip(scores, raw, strict=True)
                ]
        return scores


# The loop below runs for hundreds of nodes per decision: it memoises, per node and pod shape,
# `fits` (cpu, memory, pod count) and `least_requested` (same arithmetic; tests check they agree),
# because the Python arithmetic dominates otherwise and only one node changes per decision.


INFEASIBLE = -(10**9)  # below any sum of scores and penalties


def _basic(ni: NodeInfo, p: PodProfile) -> int:
    """Weighted least_requested if `p` fits the node's pod count, cpu and memory; else INFEASIBLE."""
    if ni.npods >= ni.max_pods:
        return INFEASIBLE
    if p.cpu and ni.req_cpu + p.cpu > ni.alloc_cpu:
        return INFEASIBLE
    if p.memory and ni.req_memory + p.memory > ni.alloc_memory:
        return INFEASIBLE
    return WEIGHT_LEAST_REQUESTED * least_requested(ni, p)


def _window(values: list[int], start: int, want: int) -> tuple[list[int], int]:
    """values from `start` on (wrapping) until `want` of them are feasible or all were taken;
    returns them and how many were taken. Chunks are sized so the want-th feasible one ends it."""
    n = len(values)
    out: list[int] = []
    taken = feasible = 0
    while feasible < want and taken < n:
        k = min(want - feasible, n - taken)
        a = (start + taken) % n
        chunk = values[a : a + k]
        if len(chunk) < k:
            chunk += values[: k - len(chunk)]
        out += chunk
        feasible += k - chunk.count(INFEASIBLE)
        taken += k
    return out, taken


def scan(
    nodes: list[NodeInfo], p: PodProfile, want: int, shape: int
) -> tuple[list[NodeInfo], list[int], int]:
    """The first `want` nodes (in order) on which `p` fits, their least-requested scores (times
    its weight), and how many nodes were examined. `shape` identifies p's cpu/memory requests."""
    slow = bool(p.other or p.ports)
    feasible: list[NodeInfo] = []
    scores: list[int] = []
    append, append_score = feasible.append, scores.append
    examined = 0
    for ni in nodes:
        examined += 1
        memo = ni.memo
        lr = memo.get(shape)
        if lr is None:
            lr = memo[shape] = _basic(ni, p)
        if lr == INFEASIBLE or (slow and not fits(ni, p)):
            continue
        append(ni)
        append_score(lr)
        if len(feasible) >= want:
            break
    return feasible, scores, examined
