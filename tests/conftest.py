"""Shared fixtures: a real API server process per test module, with its admin kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
