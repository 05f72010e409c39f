"""edged's service-account token cache: what it asks the cloud for, when it renews (80% of the lifetime),
and that a restarted edgecore with the cloud unreachable serves the last token from disk."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from kubeedge.beehive.apirequest import ApiReply, ApiRequest
from kubeedge.edgecore.edged.podspec import ContainerConfigError
from kubeedge.edgecore.edged.tokens import RETRY_AFTER_S, TOKEN_DIR, TokenManager

T0 = 1_800_000_000.0


def pod(uid: str = "u1", *, seconds: int | None = 1000, audience: str | None = "vault") -> dict[str, Any]:
    sat: dict[str, Any] = {"path": "token"}
    if seconds is not None:
        sat["expirationSeconds"] = seconds
    if audience is not None:
        sat["audience"] = audience
    return {
        "metadata": {"name": "p", "namespace": "ns1", "uid": uid},
        "spec": {
            "serviceAccountName": "robot",
            "volumes": [
                {"name": "cm", "configMap": {"name": "x"}},
                {"name": "api", "projected": {"sources": [{"serviceAccountToken": sat}]}},
            ],
        },
    }


class Cloud:
    """Answers TokenRequests as the API server does (or refuses, or is unreachable)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.requests: list[ApiRequest] = []
        self.offline = False
        self.code = 201

    async def __call__(self, req: ApiRequest) -> ApiReply:
        if self.offline:
            raise ConnectionError("the cloud is not connected")
        self.requests.append(req)
        body = json.loads(req.body)
        if self.code != 201:
            return ApiReply(
                self.code, body=json.dumps({"kind": "Status", "message": "forbidden: no"}).encode()
            )
        now = self.clock[0]
        exp = dt.datetime.fromtimestamp(now + body["spec"]["expirationSeconds"], dt.UTC)
        status = {
            "token": f"tok-{len(self.requests)}",
            "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return ApiReply(201, body=json.dumps({**body, "status": status}).encode())


@pytest.fixture
def clock() -> list[float]:
    return [T0]


def manager(tmp_path: Path, cloud: Cloud, clock: list[float]) -> TokenManager:
    return TokenManager(cloud, lambda uid: tmp_path / "pods" / uid, clock=lambda: clock[0])


async def test_requests_a_pod_bound_token_and_renews_at_80_percent(
    tmp_path: Path, clock: list[float]
) -> None:
    cloud = Cloud(clock)
    tm = manager(tmp_path, cloud, clock)
    assert await tm.token_for(pod()) == "tok-1"
    req = cloud.requests[0]
    assert (req.method, req.path) == ("POST", "/api/v1/namespaces/ns1/serviceaccounts/robot/token")
    spec = json.loads(req.body)["spec"]
    assert spec == {
        "expirationSeconds": 1000,
        "audiences": ["vault"],
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u1"},
    }
    clock[0] = T0 + 799
    assert await tm.token_for(pod()) == "tok-1" and len(cloud.requests) == 1
    clock[0] = T0 + 800
    assert await tm.token_for(pod()) == "tok-2" and len(cloud.requests) == 2
    # Another pod of the same account gets its own token (tokens are bound to their pod).
    assert await tm.token_for(pod("u2")) == "tok-3"


async def test_no_projected_token_no_request(tmp_path: Path, clock: list[float]) -> None:
    cloud = Cloud(clock)
    tm = manager(tmp_path, cloud, clock)
    plain = pod()
    plain["spec"]["volumes"] = plain["spec"]["volumes"][:1]
    assert await tm.token_for(plain) is None
    assert cloud.requests == []
    # Defaults: an hour, the API server's audience (none named).
    assert await tm.token_for(pod(seconds=None, audience=None)) == "tok-1"
    spec = json.loads(cloud.requests[0].body)["spec"]
    assert spec["expirationSeconds"] == 3600 and "audiences" not in spec


async def test_offline_restart_serves_the_persisted_token(tmp_path: Path, clock: list[float]) -> None:
    cloud = Cloud(clock)
    assert await manager(tmp_path, cloud, clock).token_for(pod()) == "tok-1"
    files = list((tmp_path / "pods" / "u1" / TOKEN_DIR).iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600

    # A new edgecore, the cloud unreachable, the token even past its renewal point: the last one is used.
    cloud.offline = True
    clock[0] = T0 + 900
    again = manager(tmp_path, cloud, clock)
    assert await again.token_for(pod()) == "tok-1"
    # Back online (and past the retry pause): renewed and persisted.
    cloud.offline = False
    clock[0] += RETRY_AFTER_S
    assert await again.token_for(pod()) == "tok-2"
    third = manager(tmp_path, Cloud(clock), clock)
    assert await third.token_for(pod()) == "tok-2"


async def test_no_token_at_all_is_a_config_error_retried_later(tmp_path: Path, clock: list[float]) -> None:
    cloud = Cloud(clock)
    cloud.code = 403
    tm = manager(tmp_path, cloud, clock)
    with pytest.raises(ContainerConfigError, match=r"403.*forbidden"):
        await tm.token_for(pod())
    # Every pod sync asks again; the cloud is asked again only after the retry pause.
    with pytest.raises(ContainerConfigError):
        await tm.token_for(pod())
    assert len(cloud.requests) == 1
    cloud.code = 201
    clock[0] += RETRY_AFTER_S
    assert await tm.token_for(pod()) == "tok-2"


async def test_forget_pod_drops_memory(tmp_path: Path, clock: list[float]) -> None:
    cloud = Cloud(clock)
    tm = manager(tmp_path, cloud, clock)
    await tm.token_for(pod())
    tm.forget_pod("u1")
    (tmp_path / "pods" / "u1" / TOKEN_DIR).rename(tmp_path / "moved")  # as VolumeManager.cleanup would
    assert await tm.token_for(pod()) == "tok-2"
