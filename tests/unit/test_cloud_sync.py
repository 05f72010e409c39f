"""NodeSync: per-node reliable delivery (send, ACK, resend with backoff, coalescing, inventory diff)."""

from __future__ import annotations

import orjson
import pytest

from kubeedge.beehive import RawJSON, decode, encode
from kubeedge.cloudcore.sync import (
    Desired,
    Held,
    InventoryError,
    Key,
    NodeSync,
    SyncConfig,
    parse_inventory,
)

CFG = SyncConfig(resend_base=5.0, resend_cap=40.0, max_in_flight=100, inventory_timeout=10.0)
POD: Key = ("pod", "default", "web")
CM: Key = ("configmap", "default", "cfg")
NODE: Key = ("node", None, "n1")


def obj(key: Key, uid: str, rv: int, **extra: object) -> Desired:
    md: dict[str, object] = {"name": key[2], "uid": uid, "resourceVersion": str(rv)}
    if key[1] is not None:
        md["namespace"] = key[1]
    return Desired.of({"metadata": md, **extra})


def ready(now: float = 0.0) -> NodeSync:
    """A connected node that reported an empty inventory."""
    s = NodeSync("n1", CFG)
    s.connection_started(now)
    assert s.on_inventory({}, now) == []
    return s


def test_initial_send_message_shape() -> None:
    s = ready()
    s.desired_changed(POD, obj(POD, "u1", 7, spec={"x": 1}))
    s.desired_changed(NODE, obj(NODE, "un", 3))
    msgs = s.outgoing(0.0)
    assert [m.resource for m in msgs] == ["default/pod/web", "null/node/n1"]
    m = msgs[0]
    assert (m.source, m.group, m.operation) == ("edgecontroller", "resource", "insert")
    assert m.header.resource_version == "7"
    assert isinstance(m.content, RawJSON)
    # The stored bytes go on the wire verbatim.
    wire = decode(encode(m))
    assert wire.content["spec"] == {"x": 1}
    assert s.outgoing(0.0) == []  # nothing twice
    assert s.in_flight == 2


def test_ack_stops_resends_and_backoff_grows_to_cap() -> None:
    s = ready()
    s.desired_changed(POD, obj(POD, "u1", 7))
    s.desired_changed(CM, obj(CM, "u2", 8))
    pod_msg, cm_msg = s.outgoing(0.0)
    assert s.next_due() == 5.0
    assert s.due(4.9) == []
    assert s.on_ack(pod_msg.msg_id)
    assert not s.on_ack(pod_msg.msg_id)  # a duplicate ACK is harmless
    assert s.known[POD] == Held("u1", 7)
    # Only the un-ACKed configmap is resent, with the same msg_id, at 5, +10, +20, +40, +40 (cap).
    times = []
    now = 0.0
    for _ in range(5):
        nxt = s.next_due()
        assert nxt is not None
        now = nxt
        resent = s.due(now)
        assert [m.msg_id for m in resent] == [cm_msg.msg_id]
        times.append(now)
    assert times == [5.0, 15.0, 35.0, 75.0, 115.0]
    assert s.on_ack(cm_msg.msg_id)
    assert s.next_due() is None and s.due(1e9) == []


def test_coalescing_sends_only_newest() -> None:
    s = ready()
    s.desired_changed(CM, obj(CM, "u2", 8))
    (first,) = s.outgoing(0.0)
    s.desired_changed(CM, obj(CM, "u2", 9))
    s.desired_changed(CM, obj(CM, "u2", 10))
    (second,) = s.outgoing(1.0)
    assert second.header.resource_version == "10" and second.operation == "insert"
    assert s.in_flight == 1
    # The late ACK of the abandoned version does not count as delivery of the newest.
    assert not s.on_ack(first.msg_id)
    assert [m.msg_id for m in s.due(6.0)] == [second.msg_id]
    assert s.on_ack(second.msg_id)
    assert s.known[CM] == Held("u2", 10)
    s.desired_changed(CM, obj(CM, "u2", 11))
    (third,) = s.outgoing(7.0)
    assert third.operation == "update" and third.header.resource_version == "11"


def test_stale_or_equal_version_is_not_sent() -> None:
    s = ready()
    s.desired_changed(POD, obj(POD, "u1", 7))
    (m,) = s.outgoing(0.0)
    s.on_ack(m.msg_id)
    s.desired_changed(POD, obj(POD, "u1", 7))  # an informer replay
    assert s.outgoing(0.0) == []
    s.desired_changed(POD, obj(POD, "u1", 5))  # a lagging cache
    assert s.outgoing(0.0) == []
    assert s.in_flight == 0


def test_removal_sends_delete_and_ack_forgets() -> None:
    s = ready()
    s.desired_changed(POD, obj(POD, "u1", 7))
    (m,) = s.outgoing(0.0)
    s.on_ack(m.msg_id)
    s.desired_changed(POD, None)
    (d,) = s.outgoing(0.0)
    assert d.operation == "delete" and d.resource == "default/pod/web"
    assert d.content["metadata"]["uid"] == "u1"
    s.on_ack(d.msg_id)
    assert POD not in s.known
    # Added and removed before the node ever held it: an in-flight insert is withdrawn, no delete.
    s.desired_changed(CM, obj(CM, "u2", 8))
    (ins,) = s.outgoing(0.0)
    s.desired_changed(CM, None)
    assert s.outgoing(0.0) == []
    assert s.in_flight == 0 and not s.on_ack(ins.msg_id)


def test_nothing_sent_before_inventory_then_timeout_falls_back() -> None:
    s = NodeSync("n1", CFG)
    s.connection_started(100.0)
    s.desired_changed(POD, obj(POD, "u1", 7))
    assert s.outgoing(100.0) == [] and s.awaiting_inventory
    assert s.next_due() == 110.0
    assert s.due(109.0) == []
    (m,) = s.due(110.0)  # a KubeEdge peer never sends an inventory
    assert m.resource == "default/pod/web" and not s.awaiting_inventory


def test_inventory_diff_deletes_updates_and_uid_replacement() -> None:
    s = ready()
    keep = ("secret", "default", "same")
    s.desired_changed(keep, obj(keep, "s1", 4))
    s.desired_changed(POD, obj(POD, "u-new", 30))  # recreated under the same name while away
    s.desired_changed(CM, obj(CM, "c1", 20))  # changed while away
    for m in s.outgoing(0.0):
        s.on_ack(m.msg_id)
    s.connection_lost()
    s.connection_started(50.0)
    gone = ("pod", "default", "deleted-while-away")
    held = {
        keep: Held("s1", 4),
        POD: Held("u-old", 12),
        CM: Held("c1", 15),
        gone: Held("g1", 3),
    }
    msgs = {m.resource: m for m in s.on_inventory(held, 50.0)}
    assert set(msgs) == {"default/pod/web", "default/configmap/cfg", "default/pod/deleted-while-away"}
    assert msgs["default/pod/web"].operation == "insert"  # different uid: replace
    assert msgs["default/configmap/cfg"].operation == "update"
    assert msgs["default/configmap/cfg"].header.resource_version == "20"
    assert msgs["default/pod/deleted-while-away"].operation == "delete"
    for m in msgs.values():
        assert s.on_ack(m.msg_id)
    assert s.known == {keep: Held("s1", 4), POD: Held("u-new", 30), CM: Held("c1", 20)}
    assert s.outgoing(60.0) == [] and s.due(1e9) == []


def test_node_offline_for_a_week_converges_in_one_exchange() -> None:
    big = SyncConfig(max_in_flight=10_000)
    s = NodeSync("n1", big)
    s.connection_started(0.0)
    s.on_inventory({}, 0.0)
    for i in range(500):
        k: Key = ("pod", "default", f"p{i}")
        s.desired_changed(k, obj(k, f"u{i}", 100 + i))
    for m in s.outgoing(0.0):
        s.on_ack(m.msg_id)
    held_before = dict(s.known)
    s.connection_lost()
    # A week of churn: a third deleted, a third updated many times, new ones added.
    week = 7 * 24 * 3600.0
    for i in range(500):
        k = ("pod", "default", f"p{i}")
        if i % 3 == 0:
            s.desired_changed(k, None)
        elif i % 3 == 1:
            for v in range(10):
                s.desired_changed(k, obj(k, f"u{i}", 10_000 + i * 10 + v))
    for i in range(500, 600):
        k = ("pod", "default", f"p{i}")
        s.desired_changed(k, obj(k, f"u{i}", 20_000 + i))
    s.connection_started(week)
    msgs = s.on_inventory(held_before, week)
    ops = [m.operation for m in msgs]
    assert ops.count("delete") == 167 and ops.count("update") == 167 and ops.count("insert") == 100
    assert len({m.resource for m in msgs}) == len(msgs)  # one message per object, newest only
    for m in msgs:
        assert s.on_ack(m.msg_id)
    assert {k: (v.uid, v.rv) for k, v in s.known.items()} == {k: (v.uid, v.rv) for k, v in s.desired.items()}
    assert s.outgoing(week) == [] and s.due(week * 2) == []


def test_in_flight_window_limits_sends() -> None:
    s = NodeSync("n1", SyncConfig(max_in_flight=2))
    s.connection_started(0.0)
    s.on_inventory({}, 0.0)
    for i in range(5):
        k: Key = ("configmap", "ns", f"c{i}")
        s.desired_changed(k, obj(k, f"u{i}", i + 1))
    first = s.outgoing(0.0)
    assert len(first) == 2 and s.outgoing(0.0) == []
    s.on_ack(first[0].msg_id)
    assert len(s.outgoing(0.0)) == 1


def test_parse_inventory_shapes() -> None:
    listed = parse_inventory(
        [{"resource": "default/pod/web", "uid": "u1", "resourceVersion": "7"}, {"resource": "null/node/n1"}]
    )
    assert listed == {POD: Held("u1", 7), NODE: Held("", 0)}
    assert parse_inventory({"default/pod/web": {"uid": "u1", "resourceVersion": "7"}}) == {POD: Held("u1", 7)}
    # edgecore's metamanager shape: "" namespace = cluster-scoped.
    mm = {
        "items": [
            {"type": "pod", "namespace": "default", "name": "web", "uid": "u1", "resourceVersion": "7"},
            {"type": "node", "namespace": "", "name": "n1", "uid": "un", "resourceVersion": "3"},
        ]
    }
    assert parse_inventory(mm) == {POD: Held("u1", 7), NODE: Held("un", 3)}
    for bad in ("x", [{"uid": "u"}], [{"resource": "node"}], [{"resource": "a b/pod/x"}], {"items": [1]}):
        with pytest.raises(InventoryError):
            parse_inventory(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SyncConfig(resend_base=0)
    with pytest.raises(ValueError):
        SyncConfig(resend_base=10, resend_cap=5)
    with pytest.raises(ValueError):
        SyncConfig(max_in_flight=0)


def test_desired_bytes_are_the_object_json() -> None:
    d = obj(POD, "u1", 7, spec={"a": [1, 2]})
    assert orjson.loads(d.raw)["spec"] == {"a": [1, 2]} and (d.uid, d.rv) == ("u1", 7)


def test_unmanaged_inventory_types_are_left_alone() -> None:
    s = NodeSync("n1", CFG, managed=frozenset({"pod"}))
    s.connection_started(0.0)
    lease: Key = ("lease", "kube-node-lease", "n1")
    gone: Key = ("pod", "default", "gone")
    msgs = s.on_inventory({lease: Held("l1", 4), gone: Held("g", 2)}, 0.0)
    assert [(m.operation, m.resource) for m in msgs] == [("delete", "default/pod/gone")]
