import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeedge.beehive import Message, decode, encode
from kubeedge.beehive.apirequest import MAX_BODY_BYTES, ApiReply, ApiRequest, ApiRequestError


@given(body=st.binary(max_size=512), method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]))
def test_request_survives_the_envelope(body: bytes, method: str) -> None:
    req = ApiRequest(method, "/apis/apps/v1/namespaces/a/deployments/d?dryRun=All", "application/x", body)
    msg = decode(encode(req.message("metaserver", "edge-1")))
    assert msg.resource == "null/apirequest/edge-1" and msg.operation == "query"
    assert ApiRequest.from_content(msg.content) == req


@given(body=st.binary(max_size=256), code=st.integers(100, 599))
def test_reply_survives_the_envelope(body: bytes, code: int) -> None:
    reply = ApiReply(code, "application/json", body)
    assert ApiReply.from_content(decode(encode(msg_with(reply.to_content()))).content) == reply


def msg_with(content: object) -> Message:
    return ApiRequest("POST", "/api/v1/x").message("t", "n").with_content(content)


@pytest.mark.parametrize(
    ("method", "path", "why"),
    [
        ("GET", "/api/v1/pods", "not a write"),
        ("POST", "/healthz", "not under /api/"),
        ("POST", "/api/v1/../../etc", "not canonical"),
        ("POST", "/apis//x", "not canonical"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(method: str, path: str, why: str) -> None:
    with pytest.raises(ApiRequestError, match=why):
        ApiRequest(method, path)


def test_bad_contents_are_refused() -> None:
    with pytest.raises(ApiRequestError, match="exceeds"):
        ApiRequest("POST", "/api/v1/x", "", b"x" * (MAX_BODY_BYTES + 1))
    with pytest.raises(ApiRequestError, match="not an object"):
        ApiRequest.from_content("POST /api")
    with pytest.raises(ApiRequestError, match="base64"):
        ApiRequest.from_content(
            {"method": "POST", "path": "/api/v1/x", "body": "!!", "bodyEncoding": "base64"}
        )
    with pytest.raises(ApiRequestError, match="unknown bodyEncoding"):
        ApiRequest.from_content({"method": "POST", "path": "/api/v1/x", "body": "", "bodyEncoding": "rot13"})
    with pytest.raises(ApiRequestError, match="HTTP status"):
        ApiReply.from_content({"code": 42})
    with pytest.raises(ApiRequestError, match="HTTP status"):
        ApiReply.from_content({"code": True})
