"""KubeEdge message envelope: codec round trips, exact wire field names, resource strings, ACK rule."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeedge.beehive import (
    MAX_FRAME_BYTES,
    DecodeError,
    EncodeError,
    Header,
    Message,
    RawJSON,
    Resource,
    ResourceError,
    Route,
    add_node,
    base_type,
    content_bytes,
    content_object,
    content_text,
    decode,
    device_resource,
    encode,
    encode_with_raw_content,
    format_resource,
    kind_info,
    needs_ack,
    resource_type_of,
    strip_node,
    type_for_api_resource,
    type_for_kind,
)
from kubeedge.beehive import message as m

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx", "namespace": "default"}}

# A frame as a KubeEdge cloudcore writes it (Go encoding/json: struct field order, no spaces).
KUBEEDGE_FRAME = (
    b'{"header":{"msg_id":"0b6a3f8e-3c1d-4a57-9a43-8f0f2b7c1d11",'
    b'"parent_msg_id":"9d1f6a3e-1111-4c2d-8e8e-222233334444","timestamp":1700000000123,'
    b'"resourceversion":"4711","sync":true,"type":"t"},'
    b'"route":{"source":"edgecontroller","destination":"","group":"resource","operation":"update",'
    b'"resource":"default/pod/nginx"},'
    b'"content":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nginx","namespace":"default"}}}'
)


# --- envelope and exact field names ----------------------------------------------------------------


def test_decode_literal_kubeedge_frame() -> None:
    msg = decode(KUBEEDGE_FRAME)
    assert msg.header == Header(
        msg_id="0b6a3f8e-3c1d-4a57-9a43-8f0f2b7c1d11",
        parent_msg_id="9d1f6a3e-1111-4c2d-8e8e-222233334444",
        timestamp=1700000000123,
        resource_version="4711",
        sync=True,
        type="t",
    )
    assert msg.route == Route("edgecontroller", "", "resource", "update", "default/pod/nginx")
    assert msg.content == POD
    # Re-encoding reproduces KubeEdge's bytes exactly: same names, same order, same omissions.
    assert encode(msg) == KUBEEDGE_FRAME
    assert decode(KUBEEDGE_FRAME.decode()) == msg  # websocket text frames arrive as str


def test_empty_optional_header_fields_are_omitted_like_go_omitempty() -> None:
    msg = Message.new("edged", "meta", "insert", "null/node/n1", {"a": 1})
    frame = orjson.loads(encode(msg))
    assert list(frame) == ["header", "route", "content"]
    assert list(frame["header"]) == ["msg_id", "timestamp"]
    assert list(frame["route"]) == ["source", "destination", "group", "operation", "resource"]
    uuid.UUID(frame["header"]["msg_id"], version=4)
    assert isinstance(frame["header"]["timestamp"], int) and frame["header"]["timestamp"] > 1_600_000_000_000
    full = Message.new(
        "a", "resource", "update", "x/pod/y", None, parent=msg, resource_version="7", sync=True
    )
    h = orjson.loads(encode(full))["header"]
    assert h["parent_msg_id"] == msg.msg_id and h["resourceversion"] == "7" and h["sync"] is True
    assert "router" not in orjson.loads(encode(full))


def test_round_trip_object_string_bytes_content() -> None:
    obj = Message.new("edgecontroller", "resource", "update", "default/pod/nginx", POD, resource_version="5")
    assert decode(encode(obj)) == obj

    patch = Message.new("edged", "meta", "patch", "default/podpatch/nginx", '{"status":{"phase":"Running"}}')
    back = decode(encode(patch))
    assert back == patch and content_text(back) == '{"status":{"phase":"Running"}}'
    assert content_object(back) == {"status": {"phase": "Running"}}

    raw = bytes(range(256))
    blob = Message.new("servicebus", "user", "upload", "SYS/dis/upload_records", raw)
    wire = orjson.loads(encode(blob))
    assert wire["content"] == base64.b64encode(raw).decode()  # Go's []byte encoding
    back = decode(encode(blob))
    assert back.header == blob.header and back.route == blob.route
    assert content_bytes(back) == raw


def test_nested_bytes_are_base64_and_unencodable_content_is_encode_error() -> None:
    msg = Message.new("a", "resource", "update", "default/secret/s", {"data": {"k": b"\x00\x01"}})
    assert orjson.loads(encode(msg))["content"] == {"data": {"k": "AAE="}}
    with pytest.raises(EncodeError):
        encode(msg.with_content({1: "non-string key"}))
    with pytest.raises(EncodeError):
        encode(msg.with_content({"big": 2**70}))


def test_raw_content_is_spliced_verbatim() -> None:
    stored = b'{"kind":"ConfigMap","metadata":{"name":"c","namespace":"default"},"data":{"k":"v"}}'
    req = Message.new(
        "edgecontroller", "resource", "update", "default/configmap/c", None, resource_version="9"
    )
    frame = encode_with_raw_content(req, stored)
    assert frame.endswith(b',"content":' + stored + b"}")
    back = decode(frame)
    assert back.header == req.header and back.route == req.route
    assert back.content == orjson.loads(stored)
    # A RawJSON content flows through the bus and is spliced by plain encode() too.
    assert encode(req.with_content(RawJSON(stored))) == frame
    assert content_object(req.with_content(RawJSON(stored))) == orjson.loads(stored)
    with pytest.raises(EncodeError):
        encode_with_raw_content(req, b"")


# --- replies ------------------------------------------------------------------------------------------


def test_response_and_error_follow_kubeedge_reply_rules() -> None:
    req = Message.new("edgecontroller", "resource", "update", "default/pod/nginx", POD, sync=True)
    ok = req.response()
    assert ok.parent_msg_id == req.msg_id and ok.msg_id != req.msg_id
    assert ok.operation == "response" and ok.content == "OK"
    assert (ok.source, ok.group, ok.resource) == (req.source, req.group, req.resource)
    assert ok.header.sync is False and ok.is_reply
    assert req.response(POD, source="metamanager").source == "metamanager"
    err = req.error("boom")
    assert err.operation == "error" and err.content == "boom" and err.parent_msg_id == req.msg_id
    assert decode(encode(ok)) == ok


# --- malformed frames ---------------------------------------------------------------------------------


def _frame(header: object = None, route: object = None, **extra: object) -> bytes:
    h = {"msg_id": "id-1", "timestamp": 1} if header is None else header
    r = (
        {"source": "s", "group": "resource", "operation": "update", "resource": "a/pod/b"}
        if route is None
        else route
    )
    return orjson.dumps({"header": h, "route": r, **extra})


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'"x"', "not a JSON object"),
        (orjson.dumps({"route": {}}), "missing header"),
        (orjson.dumps({"header": {"msg_id": "x"}}), "missing route"),
        (orjson.dumps({"header": [], "route": {}}), "header is not an object"),
        (orjson.dumps({"header": {"msg_id": "x"}, "route": "r"}), "route is not an object"),
        (_frame({"timestamp": 1}), "msg_id missing"),
        (_frame({"msg_id": 5, "timestamp": 1}), "msg_id is not a string"),
        (_frame({"msg_id": "", "timestamp": 1}), "msg_id is empty"),
        (_frame({"msg_id": "x", "timestamp": "1"}), "timestamp is not an integer"),
        (_frame({"msg_id": "x", "timestamp": 1.5}), "timestamp is not an integer"),
        (_frame({"msg_id": "x", "timestamp": True}), "timestamp is not an integer"),
        (
            b'{"header":{"msg_id":"x","timestamp":123456789012345678901234567890},"route":{"operation":"a"}}',
            "timestamp",
        ),
        (_frame({"msg_id": "x", "sync": "yes"}), "sync is not a boolean"),
        (_frame({"msg_id": "x", "parent_msg_id": 3}), "parent_msg_id is not a string"),
        (_frame(route={"source": "s", "resource": "r"}), "operation is empty"),
        (_frame(route={"operation": ""}), "operation is empty"),
        (_frame(route={"operation": "update", "resource": 7}), "route.resource is not a string"),
    ],
)
def test_malformed_frames_name_the_problem(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as ei:
        decode(frame)
    assert reason in ei.value.reason


def test_oversize_frame_names_the_limit() -> None:
    frame = _frame(content="x" * 100)
    with pytest.raises(DecodeError, match="max_size of 64 bytes"):
        decode(frame, max_size=64)
    with pytest.raises(DecodeError, match="max_size of 64 bytes"):
        decode(frame.decode(), max_size=64)
    assert decode(frame, max_size=len(frame)).content == "x" * 100
    assert MAX_FRAME_BYTES >= 1024 * 1024


def test_decode_is_lenient_where_go_is() -> None:
    # Unknown fields, unknown operations, nulls for strings, missing timestamp/content all pass.
    frame = orjson.dumps(
        {
            "header": {"msg_id": "x", "parent_msg_id": None, "future": 1, "sync": None},
            "route": {"operation": "teleport", "source": None, "extra": [1]},
            "other": True,
        }
    )
    msg = decode(frame)
    assert msg.operation == "teleport" and msg.header.timestamp == 0 and msg.content is None
    assert msg.source == "" and msg.parent_msg_id == ""


def test_content_object_accepts_all_three_shapes() -> None:
    base = Message.new("a", "resource", "update", "default/pod/nginx")
    text = orjson.dumps(POD).decode()
    for content in (POD, text, "  " + text, base64.b64encode(text.encode()).decode(), text.encode()):
        assert content_object(base.with_content(content)) == POD
    assert content_object(base.with_content([1, 2])) == [1, 2]
    for bad in ("not base64!", base64.b64encode(b'"str"').decode(), "{broken", 5, None):
        with pytest.raises(DecodeError):
            content_object(base.with_content(bad))
    assert content_text(base.with_content(None)) == "" and content_bytes(base.with_content(None)) == b""
    assert content_text(base.with_content({"a": 1})) == '{"a":1}'


# --- property tests -----------------------------------------------------------------------------------

_text = st.text(max_size=20)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
_messages = st.builds(
    Message,
    st.builds(
        Header,
        msg_id=st.text(min_size=1, max_size=40),
        parent_msg_id=_text,
        timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        resource_version=_text,
        sync=st.booleans(),
        type=_text,
    ),
    st.builds(Route, _text, _text, _text, st.text(min_size=1, max_size=20), _text),
    _json,
)


@given(_messages)
@settings(max_examples=300)
def test_random_messages_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg
    assert decode(encode(msg).decode()) == msg


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_decode_random_bytes_only_raises_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


_frames = st.dictionaries(
    st.sampled_from(["header", "route", "content", "x"]),
    _json
    | st.fixed_dictionaries(
        {},
        optional={
            "msg_id": _json,
            "timestamp": _json,
            "sync": _json,
            "parent_msg_id": _json,
            "resourceversion": _json,
            "type": _json,
            "operation": _json,
            "source": _json,
            "resource": _json,
        },
    ),
)


@given(_frames | _json)
@settings(max_examples=500)
def test_decode_random_json_only_raises_decode_error(value: object) -> None:
    try:
        msg = decode(orjson.dumps(value))
    except DecodeError:
        return
    assert msg.msg_id and msg.operation and isinstance(msg.header.timestamp, int)


# --- resource strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("default/pod/nginx", Resource("pod", "default", "nginx")),
        ("null/node/n1", Resource("node", None, "n1")),
        ("kube-node-lease/lease/n1", Resource("lease", "kube-node-lease", "n1")),
        ("default/podpatch/nginx", Resource("podpatch", "default", "nginx")),
        ("null/nodepatch/n1", Resource("nodepatch", None, "n1")),
        ("default/pod", Resource("pod", "default")),
        ("null/node", Resource("node", None)),
        (
            "device/default/d1/twin/edge_updated",
            Resource("device", "default", "d1", rest="twin/edge_updated"),
        ),
        ("device/ns/d1/state/update", Resource("device", "ns", "d1", rest="state/update")),
        ("membership/detail", Resource("membership", rest="detail", bare=True)),
        ("membership", Resource("membership", bare=True)),
        ("node", Resource("node", bare=True)),
        ("membership/pod", Resource("pod", "membership")),  # a namespace named "membership"
        ("device/pod/x", Resource("pod", "device", "x")),  # a namespace named "device"
    ],
)
def test_resource_parse_and_format_round_trip(s: str, expected: Resource) -> None:
    r = Resource.parse(s)
    assert r == expected
    assert str(r) == s == r.wire


def test_node_prefix_strip_and_add() -> None:
    r = Resource.parse("node/n1/default/pod/nginx", node_prefixed=True)
    assert r == Resource("pod", "default", "nginx", node="n1")
    assert str(r) == "node/n1/default/pod/nginx" and r.wire == "default/pod/nginx"
    assert Resource.parse("node/n1/membership", node_prefixed=True) == Resource(
        "membership", node="n1", bare=True
    )
    assert strip_node("node/n1/null/node/n1") == ("n1", "null/node/n1")
    assert add_node("n1", "default/pod/x") == "node/n1/default/pod/x"
    for bad in ("default/pod/x", "node/n1", "node//default/pod/x"):
        with pytest.raises(ResourceError):
            strip_node(bad)
    for bad_node in ("", "a/b"):
        with pytest.raises(ResourceError):
            add_node(bad_node, "default/pod/x")
    assert format_resource(None, "node", "n1") == "null/node/n1"
    assert format_resource("default", "pod") == "default/pod"
    assert device_resource("default", "d1", "twin/cloud_updated") == "device/default/d1/twin/cloud_updated"
    assert Resource.parse("default/pod").is_list and not Resource.parse("default/pod/x").is_list


@pytest.mark.parametrize(
    "s",
    [
        "",
        "/",
        "default//nginx",
        "/pod/nginx",
        "default/pod/",
        "default/pod/a b",
        "default/pod/a\n",
        "a/b/c/d",
    ],
)
def test_malformed_resources(s: str) -> None:
    with pytest.raises(ResourceError):
        Resource.parse(s)


_seg = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_ns = _seg.filter(lambda s: s not in ("null", "device", "membership"))


@given(
    st.one_of(
        st.builds(Resource, _seg, st.none() | _ns, st.none() | _seg),
        st.builds(
            lambda ns, name, rest: Resource("device", ns, name, rest="/".join(rest)),
            _seg,
            _seg,
            st.lists(_seg, min_size=1, max_size=3),
        ),
    ),
    st.none() | _seg,
)
def test_resource_property_round_trip(r: Resource, node: str | None) -> None:
    assert Resource.parse(str(r)) == r
    prefixed = Resource(r.type, r.namespace, r.name, node=node, rest=r.rest, bare=r.bare)
    if node is not None:
        assert Resource.parse(str(prefixed), node_prefixed=True) == prefixed


# --- kinds and ACKs -----------------------------------------------------------------------------------


def test_kind_mapping() -> None:
    for rtype, kind, group, plural in [
        ("pod", "Pod", "", "pods"),
        ("configmap", "ConfigMap", "", "configmaps"),
        ("secret", "Secret", "", "secrets"),
        ("node", "Node", "", "nodes"),
        ("service", "Service", "", "services"),
        ("endpoints", "Endpoints", "", "endpoints"),
        ("endpointslice", "EndpointSlice", "discovery.k8s.io", "endpointslices"),
        ("lease", "Lease", "coordination.k8s.io", "leases"),
        ("event", "Event", "", "events"),
        ("persistentvolumeclaim", "PersistentVolumeClaim", "", "persistentvolumeclaims"),
        ("device", "Device", "devices.kubeedge.io", "devices"),
        ("devicemodel", "DeviceModel", "devices.kubeedge.io", "devicemodels"),
    ]:
        info = kind_info(rtype)
        assert info is not None and (info.kind, info.group, info.plural) == (kind, group, plural)
        assert type_for_kind(kind, group) == rtype
        assert type_for_api_resource(plural, group) == rtype
    sa = kind_info("serviceaccounttoken")
    assert sa is not None and (sa.plural, sa.subresource, sa.kind) == (
        "serviceaccounts",
        "token",
        "TokenRequest",
    )
    assert type_for_api_resource("serviceaccounts") is None
    assert kind_info("podpatch") == kind_info("pod") and base_type("nodestatus") == "node"
    node = kind_info("node")
    assert node is not None and not node.namespaced and node.api_version == "v1"
    lease = kind_info("lease")
    assert lease is not None and lease.api_version == "coordination.k8s.io/v1"
    assert kind_info("nonsense") is None and type_for_kind("Pod", "apps") is None


@pytest.mark.parametrize(
    ("group", "operation", "resource", "ack"),
    [
        ("resource", "update", "default/pod/nginx", True),
        ("resource", "insert", "default/configmap/c", True),
        ("resource", "delete", "default/secret/s", True),
        ("resource", "update", "null/node/n1", True),
        ("twin", "updated", "device/default/d1/twin/cloud_updated", True),
        ("resource", "update", "node/n1/default/pod/nginx", True),  # cloud-internal prefix
        ("resource", "patch", "default/podpatch/nginx", False),
        ("resource", "patch", "null/nodepatch/n1", False),
        ("resource", "update", "default/podstatus/nginx", False),
        ("resource", "update", "kube-node-lease/lease/n1", False),
        ("resource", "insert", "null/csr/n1", False),
        ("resource", "insert", "null/certificatesigningrequest/n1", False),
        ("meta", "updated", "membership", False),
        ("meta", "updated", "node/n1/membership", False),
        ("resource", "insert", "default/serviceaccounttoken/sa", False),
        ("user", "update", "default/pod/nginx", False),
        ("user", "publish", "$hw/events/upload/x", False),
        ("resource", "response", "default/pod/nginx", False),
        ("resource", "error", "default/pod/nginx", False),
        ("resource", "query", "default/configmap/c", False),
        ("resource", "keepalive", "node", False),
        ("resource", "update", "default/pod/lease", True),  # a pod *named* lease still needs its ACK
    ],
)
def test_ack_rule(group: str, operation: str, resource: str, ack: bool) -> None:
    assert needs_ack(Message.new("x", group, operation, resource, None)) is ack


def test_resource_type_of() -> None:
    assert resource_type_of("default/pod/x") == "pod"
    assert resource_type_of("node/n1/null/node/n1") == "node"
    assert resource_type_of("$hw/events/upload/x") == ""
    assert resource_type_of("") == ""


def test_constants_match_reference_lists() -> None:
    assert {"insert", "update", "patch", "delete", "query", "response", "error", "keepalive"} <= m.OPERATIONS
    assert len(m.OPERATIONS) == 21
    assert m.GROUPS == {"resource", "twin", "user", "meta", "func"}
    assert {"pod", "podpatch", "membership", "devicemodel", "endpointslice"} <= m.RESOURCE_TYPES
