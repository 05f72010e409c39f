"""edgecontroller against a real API server, with a recording hub standing in for cloudhub."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest_asyncio

from kubeedge.beehive import Message, content_object, decode, encode, needs_ack
from kubeedge.cloudcore.edgecontroller import EDGE_LABEL, EdgeController, EdgeControllerConfig
from kubeedge.cloudcore.hubapi import OP_INVENTORY
from kubeedge.cloudcore.sync import SyncConfig
from kubeedge.kube import CONFIGMAPS, LEASES, NODES, PODS, SECRETS, SERVICES, KubeClient, NotFound

APISERVER_CONTROLLERS = "none"
DEADLINE = 15.0


class RecordingHub:
    """Implements hubapi.Hub: records every message per node (round-tripped through the wire codec,
    as a real session would send it) and lets tests wait for conditions on them."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Message]] = {}
        self.online: set[str] = set()
        self._changed = asyncio.Condition()

    def connected(self, node: str) -> bool:
        return node in self.online

    async def send(self, node: str, msg: Message) -> bool:
        if node not in self.online:
            return False
        async with self._changed:
            self.sent.setdefault(node, []).append(decode(encode(msg)))
            self._changed.notify_all()
        return True

    async def wait(self, node: str, pred: Callable[[list[Message]], bool], what: str) -> list[Message]:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: pred(self.sent.get(node, []))), DEADLINE
                )
            except TimeoutError:
                got = [(m.operation, m.resource) for m in self.sent.get(node, [])]
                raise AssertionError(f"timed out waiting for {what}; sent to {node}: {got}") from None
        return self.sent.get(node, [])

    def take(self, node: str) -> list[Message]:
        return self.sent.pop(node, [])


def upstream(op: str, resource: str, content: object = None) -> Message:
    return Message.new("edged", "resource", op, resource, content)


def has(resource: str, op: str | None = None) -> Callable[[list[Message]], bool]:
    return lambda msgs: any(m.resource == resource and (op is None or m.operation == op) for m in msgs)


def reply_to(msg: Message) -> Callable[[list[Message]], bool]:
    return lambda msgs: any(m.parent_msg_id == msg.msg_id for m in msgs)


async def request(ec: EdgeController, hub: RecordingHub, node: str, msg: Message) -> Message:
    await ec.message_from(node, msg)
    msgs = await hub.wait(node, reply_to(msg), f"reply to {msg.operation} {msg.resource}")
    return next(m for m in msgs if m.parent_msg_id == msg.msg_id)


async def ack_all(ec: EdgeController, node: str, msgs: list[Message]) -> dict[str, Message]:
    """ACK what needs it, as an edge does after persisting; returns the latest message per resource."""
    latest: dict[str, Message] = {}
    for m in msgs:
        if needs_ack(m):
            await ec.message_from(node, m.response())
            latest[m.resource] = m
    return latest


def inventory_of(held: dict[str, Message]) -> dict[str, list[dict[str, str]]]:
    """What edgecore's metamanager reports: its stored objects (plus types it owns, like its lease)."""
    items = []
    for res, m in held.items():
        if m.operation == "delete":
            continue
        ns, rtype, name = res.split("/")
        md = content_object(m)["metadata"]  # type: ignore[call-overload]
        items.append(
            {
                "type": rtype,
                "namespace": "" if ns == "null" else ns,
                "name": name,
                "uid": md["uid"],
                "resourceVersion": md["resourceVersion"],
            }
        )
    return {"items": items}


def pod(name: str, node: str, cm: str, secret: str) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "default",
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [
                {"name": "a", "configMap": {"name": cm}},
                {"name": "b", "secret": {"secretName": secret}},
            ],
        },
    }


@pytest_asyncio.fixture
async def controller(kc: KubeClient) -> AsyncIterator[tuple[EdgeController, RecordingHub]]:
    hub = RecordingHub()
    cfg = EdgeControllerConfig(sync=SyncConfig(resend_base=0.2, resend_cap=0.4, inventory_timeout=5.0))
    ec = EdgeController(kc, hub, cfg)
    ec.start()
    await asyncio.wait_for(ec.wait_synced(), DEADLINE)
    try:
        yield ec, hub
    finally:
        await ec.stop()


async def connect(ec: EdgeController, hub: RecordingHub, node: str, inventory: object) -> None:
    hub.online.add(node)
    await ec.node_connected(node)
    await request(ec, hub, node, upstream(OP_INVENTORY, f"null/inventory/{node}", inventory))


async def test_sync_lifecycle(
    kc: KubeClient, ns: str, controller: tuple[EdgeController, RecordingHub]
) -> None:
    ec, hub = controller
    n1 = f"edge-{uuid.uuid4().hex[:6]}"
    n2 = f"edge-{uuid.uuid4().hex[:6]}"
    await connect(ec, hub, n1, [])

    # Registration creates the Node with the edge label; the node then receives its own Node object.
    r = await request(ec, hub, n1, upstream("insert", f"null/node/{n1}", {"metadata": {"name": n1}}))
    assert r.operation == "response", r.content
    node_obj = await kc.get(NODES, n1)
    assert EDGE_LABEL in node_obj["metadata"]["labels"]
    await kc.create(NODES, {"metadata": {"name": n2, "labels": {EDGE_LABEL: ""}}})
    await hub.wait(n1, has(f"null/node/{n1}", "insert"), "own node")

    await kc.create(CONFIGMAPS, {"metadata": {"name": "cfg"}, "data": {"k": "v1"}}, ns)
    await kc.create(SECRETS, {"metadata": {"name": "sec"}, "data": {"k": "djE="}}, ns)
    await kc.create(CONFIGMAPS, {"metadata": {"name": "other-cfg"}, "data": {}}, ns)
    await kc.create(PODS, pod("web", n1, "cfg", "sec"), ns)
    await kc.create(PODS, pod("elsewhere", n2, "other-cfg", "sec"), ns)
    msgs = await hub.wait(
        n1,
        lambda ms: all(has(f"{ns}/{t}")(ms) for t in ("pod/web", "configmap/cfg", "secret/sec")),
        "pod, configmap and secret",
    )
    resources = {m.resource for m in msgs}
    assert f"{ns}/pod/elsewhere" not in resources and f"{ns}/configmap/other-cfg" not in resources
    web = next(m for m in msgs if m.resource == f"{ns}/pod/web")
    assert web.operation == "insert" and content_object(web)["spec"]["nodeName"] == n1  # type: ignore[call-overload]
    assert web.header.resource_version == content_object(web)["metadata"]["resourceVersion"]  # type: ignore[call-overload]

    # Before the ACK the controller resends (same msg_id); after it, nothing is pending.
    await hub.wait(n1, lambda ms: sum(m.msg_id == web.msg_id for m in ms) >= 2, "a resend of the pod")
    held = await ack_all(ec, n1, hub.take(n1))
    sync = ec.node_sync(n1)
    assert sync is not None
    assert sync.in_flight == 0 and sync.next_due() is None

    # An update is sent as an update with the new version.
    cm = await kc.patch(CONFIGMAPS, "cfg", {"data": {"k": "v2"}}, ns)
    msgs = await hub.wait(n1, has(f"{ns}/configmap/cfg", "update"), "configmap update")
    upd = next(m for m in msgs if m.resource == f"{ns}/configmap/cfg")
    assert upd.header.resource_version == cm["metadata"]["resourceVersion"]
    assert content_object(upd)["data"] == {"k": "v2"}  # type: ignore[call-overload]
    held.update(await ack_all(ec, n1, hub.take(n1)))

    # Graceful deletion reaches the edge as an update; the edge confirms with a delete, which removes
    # the pod (grace 0, uid precondition); the edge then gets the delete of the pod and its refs.
    await kc.create(CONFIGMAPS, {"metadata": {"name": "cfg2"}, "data": {}}, ns)
    await kc.create(PODS, pod("batch", n1, "cfg2", "sec"), ns)
    await hub.wait(n1, has(f"{ns}/configmap/cfg2"), "second pod's configmap")
    held.update(await ack_all(ec, n1, hub.take(n1)))
    await kc.delete(PODS, "batch", ns, grace_period_seconds=30)
    await hub.wait(n1, has(f"{ns}/pod/batch", "update"), "pod marked for deletion")
    held.update(await ack_all(ec, n1, hub.take(n1)))
    r = await request(ec, hub, n1, upstream("delete", f"{ns}/pod/batch", held[f"{ns}/pod/batch"].content))
    assert r.operation == "response", r.content
    msgs = await hub.wait(
        n1,
        lambda ms: has(f"{ns}/pod/batch", "delete")(ms) and has(f"{ns}/configmap/cfg2", "delete")(ms),
        "deletes of pod and its configmap",
    )
    try:
        await kc.get(PODS, "batch", ns)
        raise AssertionError("pod still exists")
    except NotFound:
        pass
    assert not any(m.resource == f"{ns}/secret/sec" and m.operation == "delete" for m in msgs)
    held.update(await ack_all(ec, n1, hub.take(n1)))
    held = {k: v for k, v in held.items() if v.operation != "delete"}

    # Offline: changes accumulate; the reconnect inventory gets exactly the difference.
    hub.online.discard(n1)
    await ec.node_disconnected(n1)
    cm = await kc.patch(CONFIGMAPS, "cfg", {"data": {"k": "v3"}}, ns)
    await kc.create(CONFIGMAPS, {"metadata": {"name": "cfg3"}, "data": {}}, ns)
    await kc.create(PODS, pod("late", n1, "cfg3", "sec"), ns)
    svc = await kc.create(
        SERVICES,
        {"metadata": {"name": "mesh"}, "spec": {"ports": [{"port": 80}]}},
        ns,
    )
    await wait_until(
        lambda: (
            (sync.desired.get(("service", ns, "mesh")) or _NO).rv == int(svc["metadata"]["resourceVersion"])
            and ("configmap", ns, "cfg3") in sync.desired
            and (sync.desired[("configmap", ns, "cfg")].rv == int(cm["metadata"]["resourceVersion"]))
        )
    )
    hub.take(n1)
    inv = inventory_of(held)
    ghost = {"type": "pod", "namespace": ns, "name": "ghost", "uid": "gone-uid", "resourceVersion": "5"}
    own_lease = {
        "type": "lease",
        "namespace": "kube-node-lease",
        "name": n1,
        "uid": "l",
        "resourceVersion": "1",
    }
    inv["items"] += [ghost, own_lease]
    await connect(ec, hub, n1, inv)
    diff = hub.sent[n1]
    got = {(m.operation, m.resource) for m in diff if m.operation != "response"}
    assert got == {
        ("update", f"{ns}/configmap/cfg"),
        ("insert", f"{ns}/configmap/cfg3"),
        ("insert", f"{ns}/pod/late"),
        ("insert", f"{ns}/service/mesh"),
        ("delete", f"{ns}/pod/ghost"),
    }
    # The response to the inventory comes after the difference.
    assert diff[-1].operation == "response"
    await ack_all(ec, n1, hub.take(n1))
    assert sync.in_flight == 0

    # Upstream status reaches the API.
    patch = orjson.dumps({"status": {"phase": "Running", "podIP": "10.0.0.9"}}).decode()
    r = await request(ec, hub, n1, upstream("patch", f"{ns}/podpatch/web", patch))
    assert r.operation == "response", r.content
    assert (await kc.get(PODS, "web", ns))["status"]["podIP"] == "10.0.0.9"
    patch = orjson.dumps({"status": {"nodeInfo": {"kubeletVersion": "v1.29.0-kubeedge"}}}).decode()
    r = await request(ec, hub, n1, upstream("patch", f"null/nodepatch/{n1}", patch))
    assert r.operation == "response", r.content
    assert (await kc.get(NODES, n1))["status"]["nodeInfo"]["kubeletVersion"] == "v1.29.0-kubeedge"

    lease = {"metadata": {"name": n1}, "spec": {"holderIdentity": n1, "leaseDurationSeconds": 40}}
    r = await request(ec, hub, n1, upstream("insert", f"kube-node-lease/lease/{n1}", lease))
    assert r.operation == "response", r.content
    lease["spec"]["leaseDurationSeconds"] = 41  # type: ignore[index]
    r = await request(ec, hub, n1, upstream("update", f"kube-node-lease/lease/{n1}", lease))
    assert r.operation == "response", r.content
    assert (await kc.get(LEASES, n1, "kube-node-lease"))["spec"]["leaseDurationSeconds"] == 41

    # Lazy reads: only what the node's pods reference.
    r = await request(ec, hub, n1, upstream("query", f"{ns}/configmap/cfg"))
    assert r.operation == "response" and content_object(r)["data"] == {"k": "v3"}  # type: ignore[call-overload]
    r = await request(ec, hub, n1, upstream("query", f"{ns}/configmap/other-cfg"))
    assert r.operation == "error" and "forbidden" in str(r.content)


async def test_node_may_not_write_others(
    kc: KubeClient, ns: str, controller: tuple[EdgeController, RecordingHub]
) -> None:
    ec, hub = controller
    n1, n2 = f"edge-{uuid.uuid4().hex[:6]}", f"edge-{uuid.uuid4().hex[:6]}"
    for n in (n1, n2):
        await kc.create(NODES, {"metadata": {"name": n, "labels": {EDGE_LABEL: ""}}})
    await kc.create(PODS, pod("theirs", n2, "x", "y"), ns)
    await connect(ec, hub, n1, [])
    patch = orjson.dumps({"status": {"phase": "Failed"}}).decode()
    cases = [
        upstream("patch", f"{ns}/podpatch/theirs", patch),
        upstream("delete", f"{ns}/pod/theirs"),
        upstream("patch", f"null/nodepatch/{n2}", patch),
        upstream("insert", f"kube-node-lease/lease/{n2}", {"metadata": {"name": n2}}),
        upstream("insert", f"null/node/{n2}", {"metadata": {"name": n2}}),
    ]
    for msg in cases:
        r = await request(ec, hub, n1, msg)
        assert r.operation == "error" and "forbidden" in str(r.content), (msg.resource, r.content)
    theirs = await kc.get(PODS, "theirs", ns)
    assert theirs["metadata"].get("deletionTimestamp") is None
    assert (theirs.get("status") or {}).get("phase") != "Failed"
    # A malformed request gets an error, and the controller keeps serving.
    r = await request(ec, hub, n1, upstream("patch", f"{ns}/podpatch/theirs", "not json"))
    assert r.operation == "error"


class _NoRv:
    rv = -1


_NO = _NoRv()


async def wait_until(pred: Callable[[], bool]) -> None:
    """Informer changes arrive as watch events; wait for them (event-driven code has no hook here)."""
    deadline = time.monotonic() + DEADLINE
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)
