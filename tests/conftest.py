"""Shared fixtures: a real API server process per test module, with its admin kubeconfig."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kubeedge.kube import NAMESPACES, KubeClient, KubeConfig
from tests.apiserver_proc import ApiServerProc


@pytest.fixture(scope="module")
def apiserver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServerProc]:
    """All controllers run embedded, unless the test module narrows them with a module-level
    `APISERVER_CONTROLLERS = "a,b"` (API-level tests keep workload controllers from racing them)."""
    controllers = getattr(request.module, "APISERVER_CONTROLLERS", "all")
    srv = ApiServerProc(
        tmp_path_factory.mktemp("apiserver"), extra_args=["--controllers", controllers]
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def apiserver_factory(tmp_path: Path) -> Iterator[type[ApiServerProc]]:
    """For tests that stop, kill and restart servers themselves; all are stopped at the end."""
    started: list[ApiServerProc] = []

    class Tracked(ApiServerProc):
        def start(self, timeout: float = 30.0) -> ApiServerProc:
            started.append(self)
            return super().start(timeout)

    yield Tracked
    for s in started:
        try:
            s.stop()
        except Exception:
            pass


@pytest.fixture(scope="module")
def server(apiserver: ApiServerProc) -> ApiServerProc:
    return apiserver


@pytest_asyncio.fixture
async def kc(apiserver: ApiServerProc) -> AsyncIterator[KubeClient]:
    """An admin API client for the module's server."""
    async with KubeClient(KubeConfig.from_file(str(apiserver.kubeconfig))) as c:
        yield c


@pytest_asyncio.fixture
async def ns(kc: KubeClient) -> str:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    await kc.create(NAMESPACES, {"metadata": {"name": name}})
    return name
