"""edgecontroller: decides what each edge node needs and delivers it reliably; applies what nodes
report upstream, each node writing only its own objects.

Desired set of an edge node (label ``node-role.kubernetes.io/edge``): its own Node, the pods bound to
it, the ConfigMaps/Secrets/ServiceAccounts those pods reference, and every Service and EndpointSlice
(EdgeMesh resolves services cluster-wide). Informers (shared, list-watch through the API) feed the
per-node ``NodeSync``; one supervised pump per connected node drains it into cloudhub.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import orjson

from kubeedge.beehive import DecodeError, Message, ResourceError, content_object
from kubeedge.beehive.apirequest import ApiReply, ApiRequest, ApiRequestError
from kubeedge.beehive.message import (
    OP_DELETE,
    OP_INSERT,
    OP_PATCH,
    OP_QUERY,
    OP_RESPONSE,
    OP_UPDATE,
    RT_APIREQUEST,
    RT_CONFIGMAP,
    RT_ENDPOINTSLICE,
    RT_EVENT,
    RT_LEASE,
    RT_NODE,
    RT_NODEPATCH,
    RT_POD,
    RT_PODPATCH,
    RT_SECRET,
    RT_SERVICE,
)
from kubeedge.controllers.framework import Informer, InformerFactory
from kubeedge.kube import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    EVENTS,
    LEASES,
    NODES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    AlreadyExists,
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
    Res,
)
from kubeedge.kube.podrefs import Ref, pod_refs
from kubeedge.kube.types import Obj
from kubeedge.pki.bootstrap import NODE_CN_PREFIX, NODES_GROUP
from kubeedge.runtime import Supervisor

from .hubapi import OP_INVENTORY, Hub
from .sync import SOURCE, Desired, InventoryError, Key, NodeSync, SyncConfig, parse_inventory, parse_key

log = logging.getLogger(__name__)

EDGE_LABEL: Final = "node-role.kubernetes.io/edge"
LEASE_NAMESPACE: Final = "kube-node-lease"
RT_SERVICEACCOUNT: Final = "serviceaccount"  # ours: KubeEdge has only serviceaccounttoken
POD_NODE_INDEX: Final = "node"

# API resource plural (as pod_refs names it) → (KubeEdge type, Res) for the objects pods reference.
_REF_TYPES: Final[dict[str, tuple[str, Res]]] = {
    "configmaps": (RT_CONFIGMAP, CONFIGMAPS),
    "secrets": (RT_SECRET, SECRETS),
    "serviceaccounts": (RT_SERVICEACCOUNT, SERVICEACCOUNTS),
}
# What this controller delivers; other types in a node's inventory belong to other modules.
MANAGED_TYPES: Final = frozenset(
    {RT_NODE, RT_POD, RT_CONFIGMAP, RT_SECRET, RT_SERVICEACCOUNT, RT_SERVICE, RT_ENDPOINTSLICE}
)
_QUERYABLE: Final[dict[str, str]] = {RT_CONFIGMAP: "configmaps", RT_SECRET: "secrets"}


class Refused(Exception):
    """An upstream request the node is not allowed to make (answered with an ``error``)."""


@dataclass(frozen=True, slots=True)
class EdgeControllerConfig:
    sync: SyncConfig = field(default_factory=SyncConfig)
    # Field manager recorded on writes made on behalf of nodes.
    field_manager: str = "edgecontroller"

    def __post_init__(self) -> None:
        if not self.field_manager:
            raise ValueError("field_manager must not be empty")


@dataclass(slots=True)
class _Node:
    sync: NodeSync
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None
    seeded: bool = False  # filled from the informers' caches once the Node was seen
    lease_rv: str = ""  # resourceVersion of the Lease we last wrote: renewals skip the GET


def _node_of(pod: Obj | None) -> str:
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


def _ns_name(obj: Obj) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def _is_edge(node: Obj | None) -> bool:
    return node is not None and EDGE_LABEL in ((node.get("metadata") or {}).get("labels") or {})


class EdgeController:
    """Implements hubapi.NodeEvents. ``start`` wires informers and returns; ``stop`` ends everything."""

    def __init__(
        self,
        kc: KubeClient,
        hub: Hub,
        config: EdgeControllerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kc = kc
        self.hub = hub
        self.config = config or EdgeControllerConfig()
        self.clock = clock
        self.sup = Supervisor("edgecontroller")
        self.informers = InformerFactory(kc)
        self._nodes: dict[str, _Node] = {}
        # Per node: how many of its pods reference each object (ref-counted so that two pods sharing a
        # ConfigMap keep it until both are gone).
        self._node_refs: dict[str, collections.Counter[Ref]] = collections.defaultdict(collections.Counter)
        self._pod_refs: dict[tuple[str, str], tuple[str, set[Ref]]] = {}
        self._ref_nodes: dict[Ref, set[str]] = collections.defaultdict(set)
        self.node_inf = self.informers.get(NODES, label_selector=EDGE_LABEL)
        self.pod_inf = self.informers.get(PODS)
        self.ref_infs: dict[str, Informer] = {p: self.informers.get(r) for p, (_, r) in _REF_TYPES.items()}
        self.svc_inf = self.informers.get(SERVICES)
        self.eps_inf = self.informers.get(ENDPOINTSLICES)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.pod_inf.add_index(POD_NODE_INDEX, lambda p: [n] if (n := _node_of(p)) else [])
        # Pods first: a node appearing later seeds itself from the pod index and the ref counts.
        self.pod_inf.add_handler(self._on_pod)
        for plural, inf in self.ref_infs.items():
            inf.add_handler(self._ref_handler(plural))
        self.svc_inf.add_handler(self._shared_handler(RT_SERVICE))
        self.eps_inf.add_handler(self._shared_handler(RT_ENDPOINTSLICE))
        self.node_inf.add_handler(self._on_node)
        self.informers.start(lambda make, name: self.sup.spawn(make, name))

    async def wait_synced(self) -> None:
        await self.informers.wait_synced()

    async def stop(self) -> None:
        await self.sup.stop()

    def node_sync(self, node: str) -> NodeSync | None:
        st = self._nodes.get(node)
        return st.sync if st else None

    # --- desired sets ---------------------------------------------------------------------------
    def _state(self, node: str) -> _Node:
        st = self._nodes.get(node)
        if st is None:
            st = self._nodes[node] = _Node(NodeSync(node, self.config.sync, managed=MANAGED_TYPES))
        return st

    def _feed(self, node: str, key: Key, want: Desired | None) -> None:
        st = self._nodes.get(node)
        if st is not None:
            st.sync.desired_changed(key, want)
            st.wake.set()

    def _ref_object(self, ref: Ref) -> Obj | None:
        plural, ns, name = ref
        return self.ref_infs[plural].get(ns, name)

    @staticmethod
    def _ref_key(ref: Ref) -> Key:
        return _REF_TYPES[ref[0]][0], ref[1], ref[2]

    def _add_refs(self, node: str, refs: set[Ref]) -> None:
        c = self._node_refs[node]
        for r in refs:
            if r[0] not in _REF_TYPES:
                continue
            c[r] += 1
            if c[r] == 1:
                self._ref_nodes[r].add(node)
                obj = self._ref_object(r)
                if obj is not None:
                    self._feed(node, self._ref_key(r), Desired.of(obj))

    def _drop_refs(self, node: str, refs: set[Ref]) -> None:
        c = self._node_refs[node]
        for r in refs:
            if c.get(r, 0) <= 0:
                continue
            c[r] -= 1
            if c[r] == 0:
                del c[r]
                nodes = self._ref_nodes[r]
                nodes.discard(node)
                if not nodes:
                    del self._ref_nodes[r]
                self._feed(node, self._ref_key(r), None)
        if not c:
            del self._node_refs[node]

    def _on_pod(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        ns, name = _ns_name(obj)
        key: Key = (RT_POD, ns, name)
        prev = self._pod_refs.pop((ns, name), None)
        node = _node_of(new)
        refs = pod_refs(new) if new is not None and node else set()
        if node:
            self._pod_refs[(ns, name)] = (node, refs)
            # Pod first, then its references: the edge can start it as soon as they arrive.
            assert new is not None
            self._feed(node, key, Desired.of(new))
            self._add_refs(node, refs)
        if prev is not None:
            if prev[0] != node:
                self._feed(prev[0], key, None)
            self._drop_refs(prev[0], prev[1])

    def _ref_handler(self, plural: str) -> Callable[[Obj | None, Obj | None], None]:
        rtype = _REF_TYPES[plural][0]

        def handle(old: Obj | None, new: Obj | None) -> None:
            obj = new if new is not None else old
            assert obj is not None
            ns, name = _ns_name(obj)
            nodes = self._ref_nodes.get((plural, ns, name))
            if not nodes:
                return
            want = Desired.of(new) if new is not None else None
            for node in nodes:
                self._feed(node, (rtype, ns, name), want)

        return handle

    def _shared_handler(self, rtype: str) -> Callable[[Obj | None, Obj | None], None]:
        def handle(old: Obj | None, new: Obj | None) -> None:
            obj = new if new is not None else old
            assert obj is not None
            ns, name = _ns_name(obj)
            want = Desired.of(new) if new is not None else None
            for node in self._nodes:
                self._feed(node, (rtype, ns, name), want)

        return handle

    def _on_node(self, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        _, name = _ns_name(obj)
        key: Key = (RT_NODE, None, name)
        if new is None or not _is_edge(new):
            self._feed(name, key, None)
            return
        st = self._state(name)
        st.sync.desired_changed(key, Desired.of(new))
        if not st.seeded:
            st.seeded = True
            self._seed(name)
        st.wake.set()

    def _seed(self, node: str) -> None:
        """A node just became known: everything it needs that informers already hold."""
        for pod in self.pod_inf.by_index(POD_NODE_INDEX, node):
            ns, name = _ns_name(pod)
            self._feed(node, (RT_POD, ns, name), Desired.of(pod))
        for r in self._node_refs.get(node, {}):
            obj = self._ref_object(r)
            if obj is not None:
                self._feed(node, self._ref_key(r), Desired.of(obj))
        for rtype, inf in ((RT_SERVICE, self.svc_inf), (RT_ENDPOINTSLICE, self.eps_inf)):
            for obj in inf.list():
                ns, name = _ns_name(obj)
                self._feed(node, (rtype, ns, name), Desired.of(obj))

    # --- NodeEvents -----------------------------------------------------------------------------
    async def node_connected(self, node: str) -> None:
        st = self._state(node)
        st.sync.connection_started(self.clock())
        if st.pump is not None:
            st.pump.cancel()
        st.pump = self.sup.spawn(lambda: self._pump(node, st), f"pump-{node}")

    async def node_disconnected(self, node: str) -> None:
        st = self._nodes.get(node)
        if st is None:
            return
        st.sync.connection_lost()
        if st.pump is not None:
            st.pump.cancel()
            st.pump = None

    async def _pump(self, node: str, st: _Node) -> None:
        """Drain new sends and due resends to the hub; sleep until a change or the next deadline."""
        while True:
            st.wake.clear()
            now = self.clock()
            msgs = st.sync.due(now) + st.sync.outgoing(now)
            for m in msgs:
                if not await self.hub.send(node, m):
                    # The session is gone; the hub's node_disconnected/node_connected cancel this
                    # pump (and start a new one), so park here instead of spinning or returning
                    # (a return would be restarted by the supervisor).
                    st.sync.connection_lost()
                    await asyncio.get_running_loop().create_future()
            deadline = st.sync.next_due()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(st.wake.wait(), timeout)

    async def message_from(self, node: str, msg: Message) -> None:
        op = msg.operation
        if op == OP_RESPONSE:
            st = self._nodes.get(node)
            if st is not None and st.sync.on_ack(msg.parent_msg_id):
                st.wake.set()  # a free in-flight slot may let more sends go
            return
        if msg.is_reply:
            log.info("node %s answered %s with an error: %s", node, msg.parent_msg_id, msg.content)
            return
        try:
            reply = await self._handle(node, msg)
        except Refused as e:
            reply = msg.error(f"forbidden: {e}", source=SOURCE)
        except (DecodeError, ResourceError, InventoryError, ApiRequestError, ValueError) as e:
            reply = msg.error(f"bad request: {e}", source=SOURCE)
        except ApiError as e:
            reply = msg.error(str(e), source=SOURCE)
        except (OSError, TimeoutError) as e:
            # The API is unreachable: the node retries (statuses are re-reported, queries re-asked).
            log.warning("node %s: %s %s failed: %s", node, msg.operation, msg.resource, e)
            reply = msg.error(f"unavailable: {type(e).__name__}", source=SOURCE)
        if reply is not None:
            await self.hub.send(node, reply)

    # --- upstream -------------------------------------------------------------------------------
    async def _handle(self, node: str, msg: Message) -> Message | None:
        op = msg.operation
        if op == OP_INVENTORY:
            held = parse_inventory(msg.content)
            st = self._state(node)
            for m in st.sync.on_inventory(held, self.clock()):
                if not await self.hub.send(node, m):
                    return None
            st.wake.set()
            return msg.response(source=SOURCE)
        rtype, ns, name = parse_key(msg.resource)
        if rtype == RT_NODE and op in (OP_INSERT, OP_UPDATE):
            return msg.response(await self._register_node(node, name, msg), source=SOURCE)
        if rtype == RT_NODEPATCH and op == OP_PATCH:
            self._own_node(node, name)
            patch = _patch_body(msg)
            obj = await self.kc.patch(NODES, name, patch, subresource="status")
            return msg.response(obj, source=SOURCE)
        if rtype == RT_LEASE and op in (OP_INSERT, OP_UPDATE):
            if ns != LEASE_NAMESPACE:
                raise Refused(f"leases live in {LEASE_NAMESPACE}")
            self._own_node(node, name)
            return msg.response(await self._write_lease(name, _object(msg)), source=SOURCE)
        if rtype == RT_PODPATCH and op == OP_PATCH and ns is not None:
            await self._own_pod(node, ns, name)
            obj = await self.kc.patch(PODS, name, _patch_body(msg), ns, subresource="status")
            return msg.response(obj, source=SOURCE)
        if rtype == RT_POD and op == OP_DELETE and ns is not None:
            pod = await self._own_pod(node, ns, name)
            return msg.response(await self._confirm_pod_deletion(pod, msg), source=SOURCE)
        if rtype == RT_EVENT and op == OP_INSERT and ns is not None:
            return msg.response(await self._create_event(ns, _object(msg)), source=SOURCE)
        if rtype == RT_APIREQUEST and op == OP_QUERY:
            self._own_node(node, name)
            reply = await self._api_request(node, ApiRequest.from_content(content_object(msg)))
            return msg.response(reply.to_content(), source=SOURCE)
        if op == OP_QUERY and rtype in _QUERYABLE and ns is not None:
            return msg.response(await self._query(node, _QUERYABLE[rtype], ns, name), source=SOURCE)
        log.info("node %s: unsupported %s of %s", node, op, msg.resource)
        return msg.error(f"unsupported operation {op} on {rtype}", source=SOURCE)

    @staticmethod
    def _own_node(node: str, name: str) -> None:
        if name != node:
            raise Refused(f"node {node} may not write node {name}")

    async def _own_pod(self, node: str, ns: str, name: str) -> Obj:
        pod = self.pod_inf.get(ns, name)
        if pod is None:
            # The informer may lag behind a just-bound pod; ask the API before refusing.
            try:
                pod = await self.kc.get(PODS, name, ns)
            except NotFound:
                raise Refused(f"pod {ns}/{name} not found") from None
        if _node_of(pod) != node:
            raise Refused(f"pod {ns}/{name} is not bound to node {node}")
        return pod

    async def _register_node(self, node: str, name: str, msg: Message) -> Obj:
        self._own_node(node, name)
        try:
            return await self.kc.get(NODES, name)
        except NotFound:
            pass
        obj = _object(msg)
        md = obj.setdefault("metadata", {})
        md["name"] = name
        md.pop("resourceVersion", None)
        md.pop("uid", None)
        md.setdefault("labels", {})[EDGE_LABEL] = ""
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Node")
        try:
            return await self.kc.create(NODES, obj, field_manager=self.config.field_manager)
        except AlreadyExists:
            return await self.kc.get(NODES, name)

    async def _write_lease(self, name: str, obj: Obj) -> Obj:
        md = obj.setdefault("metadata", {})
        md["name"] = name
        md["namespace"] = LEASE_NAMESPACE
        md.pop("uid", None)
        obj.setdefault("apiVersion", LEASES.api_version)
        obj.setdefault("kind", "Lease")
        st = self._state(name)
        fm = self.config.field_manager
        # Last writer wins: the node is the only writer of its lease. A renewal is one PUT at the
        # version we wrote last; only when someone else touched it (409) or removed it (404) do we
        # look it up — one API call per renewal instead of two is what lets one cloudcore hold
        # thousands of nodes.
        out: Obj | None = None
        if st.lease_rv:
            md["resourceVersion"] = st.lease_rv
            with contextlib.suppress(Conflict, NotFound):
                out = await self.kc.replace(LEASES, obj, field_manager=fm)
        if out is None:
            try:
                current = await self.kc.get(LEASES, name, LEASE_NAMESPACE)
            except NotFound:
                md.pop("resourceVersion", None)
                out = await self.kc.create(LEASES, obj, field_manager=fm)
            else:
                md["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
                out = await self.kc.replace(LEASES, obj, field_manager=fm)
        st.lease_rv = str((out.get("metadata") or {}).get("resourceVersion") or "")
        return out

    async def _confirm_pod_deletion(self, pod: Obj, msg: Message) -> Obj:
        ns, name = _ns_name(pod)
        uid = (pod.get("metadata") or {}).get("uid")
        with contextlib.suppress(DecodeError):
            content = content_object(msg)
            if isinstance(content, dict):
                uid = (content.get("metadata") or {}).get("uid") or uid
        try:
            return await self.kc.delete(
                PODS, name, ns, grace_period_seconds=0, preconditions={"uid": uid} if uid else None
            )
        except NotFound:
            return {"kind": "Status", "status": "Success", "reason": "NotFound"}

    async def _create_event(self, ns: str, obj: Obj) -> Obj:
        md = obj.setdefault("metadata", {})
        md["namespace"] = ns
        md.pop("resourceVersion", None)
        md.pop("uid", None)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Event")
        try:
            return await self.kc.create(EVENTS, obj, ns)
        except AlreadyExists:
            return obj

    async def _api_request(self, node: str, req: ApiRequest) -> ApiReply:
        """A local app's write at the node's MetaServer, performed as the node: the API server's node
        rules decide it exactly as if the node had called (admins may impersonate)."""
        headers = {"Impersonate-User": NODE_CN_PREFIX + node, "Impersonate-Group": NODES_GROUP}
        try:
            code, ctype, body = await self.kc.exchange(
                req.method,
                req.path,
                body=req.body or None,
                content_type=req.content_type or None,
                headers=headers,
            )
        except ApiError as e:
            status = e.body or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": e.status}
            return ApiReply(e.status, "application/json", orjson.dumps(status))
        return ApiReply(code, ctype or "application/json", body)

    async def _query(self, node: str, plural: str, ns: str, name: str) -> Obj:
        if self._node_refs.get(node, collections.Counter())[(plural, ns, name)] <= 0:
            raise Refused(f"no pod on node {node} references {plural}/{ns}/{name}")
        cached = self._ref_object((plural, ns, name))
        if cached is not None:
            return cached
        return await self.kc.get(_REF_TYPES[plural][1], name, ns)


def _object(msg: Message) -> Obj:
    obj = content_object(msg)
    if not isinstance(obj, dict):
        raise ValueError("content is not an object")
    # Message content is shared (read-only); copy the levels we edit.
    out = dict(obj)
    out["metadata"] = dict(out.get("metadata") or {})
    return out


def _patch_body(msg: Message) -> Obj:
    """A patch arrives as a JSON string (KubeEdge) or, from lenient peers, as an object."""
    obj = content_object(msg)
    if not isinstance(obj, dict):
        raise ValueError("patch is not a JSON merge patch object")
    return obj
