"""Probe semantics (thresholds, initial delay, startup gating, hold after failure, bounds) on virtual time
with a scripted runner, and the httpGet/tcpSocket handlers against real loopback servers."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from kubeedge.edgecore.edged.cri import CriUnavailable
from kubeedge.edgecore.edged.probehandlers import ProbeResult, http_probe, resolve_port, tcp_probe
from kubeedge.edgecore.edged.probes import (
    LIVENESS,
    READINESS,
    STARTUP,
    ProbeManager,
    ProbeSpec,
    ProbeState,
    default_runner,
)
from kubeedge.pki.certs import create_ca, issue, load_cert_chain

T0 = 1_800_000_000.0
# Loop turns that let woken workers run to their next sleep (the scripted runner never blocks).
SETTLE_TURNS = 20


class VirtualTime:
    """A clock and a sleep that only move when the test advances them."""

    def __init__(self) -> None:
        self.now = T0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.now + seconds, next(self._seq), fut))
        await fut

    async def settle(self) -> None:
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await self.settle()
        while self._waiters and self._waiters[0][0] <= target:
            when, _, fut = heapq.heappop(self._waiters)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self.now = target


class Script:
    """Runner answering per probe command: a list of outcomes consumed in order (the last repeats)."""

    def __init__(self, outcomes: Mapping[str, list[bool | Exception]]) -> None:
        self.outcomes = {k: list(v) for k, v in outcomes.items()}
        self.calls: dict[str, list[float]] = {k: [] for k in outcomes}
        self.clock: Callable[[], float] = lambda: 0.0

    async def __call__(
        self, probe: Mapping[str, Any], pod: Any, container: Any, container_id: str, pod_ip: str
    ) -> ProbeResult:
        key = probe["exec"]["command"][0]
        self.calls[key].append(self.clock())
        seq = self.outcomes[key]
        outcome = seq.pop(0) if len(seq) > 1 else seq[0]
        if isinstance(outcome, Exception):
            raise outcome
        return ProbeResult(outcome, "" if outcome else f"{key} said no")


def probe(key: str, **fields: int) -> dict[str, Any]:
    return {"exec": {"command": [key]}, "periodSeconds": 1, **fields}


def pod_with(container: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default", "uid": uid},
        "spec": {"containers": [container]},
    }


Changes = list[tuple[str, str, str, bool]]


def manager(vt: VirtualTime, script: Script, **kw: Any) -> tuple[ProbeManager, Changes]:
    changes: Changes = []
    script.clock = vt.clock
    mgr = ProbeManager(
        None,  # type: ignore[arg-type]  # the scripted runner never touches CRI
        lambda *c: changes.append(c),
        runner=script,
        clock=vt.clock,
        sleep=vt.sleep,
        jitter=False,
        **kw,
    )
    return mgr, changes


@pytest.fixture
async def vt() -> AsyncIterator[VirtualTime]:
    yield VirtualTime()


def test_spec_defaults_and_liveness_success_threshold() -> None:
    assert ProbeSpec.from_probe({}, READINESS) == ProbeSpec(0, 10, 1, 1, 3)
    spec = ProbeSpec.from_probe(
        {"initialDelaySeconds": 5, "periodSeconds": 0, "successThreshold": 4, "failureThreshold": 2}, LIVENESS
    )
    assert (spec.initial_delay_s, spec.period_s, spec.success_threshold, spec.failure_threshold) == (
        5,
        1,
        1,
        2,
    )
    assert ProbeSpec.from_probe({"successThreshold": 4}, READINESS).success_threshold == 4


def test_state_thresholds() -> None:
    s = ProbeState(READINESS, ProbeSpec(success_threshold=2, failure_threshold=3))
    assert s.result is False
    assert [s.observe(x) for x in (True, False, True, True)] == [False, False, False, True]
    assert s.result is True
    assert [s.observe(x) for x in (False, False, True, False, False, False)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert s.result is False and s.failed
    live = ProbeState(LIVENESS, ProbeSpec(failure_threshold=1))
    assert live.result is True and live.observe(False) and live.failed


async def test_readiness_false_until_success_then_threshold(vt: VirtualTime) -> None:
    script = Script({"r": [False, True, True, False, False, False, True]})
    mgr, changes = manager(vt, script)
    c = {"name": "app", "readinessProbe": probe("r", successThreshold=2, failureThreshold=3)}
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0)
    assert mgr.ready("cid1") is False and mgr.started("cid1") is True
    await vt.advance(0.5)
    assert len(script.calls["r"]) == 1 and mgr.ready("cid1") is False  # fail
    await vt.advance(1)  # success 1 of 2
    assert mgr.ready("cid1") is False
    await vt.advance(1)  # success 2 of 2
    assert mgr.ready("cid1") is True and changes == [("uid-1", "app", READINESS, True)]
    await vt.advance(2)  # two failures: still ready
    assert mgr.ready("cid1") is True
    await vt.advance(1)  # the third
    assert mgr.ready("cid1") is False and changes[-1] == ("uid-1", "app", READINESS, False)
    assert mgr.message("cid1", READINESS) == "r said no"
    assert not mgr.liveness_failed("cid1")  # readiness never restarts anything
    await vt.advance(1)
    assert mgr.ready("cid1") is False  # one success, threshold 2
    await mgr.close()


async def test_liveness_failure_holds_and_reports(vt: VirtualTime) -> None:
    script = Script({"l": [True, False, False, False]})
    mgr, changes = manager(vt, script)
    c = {"name": "app", "livenessProbe": probe("l", periodSeconds=2)}
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0)
    assert mgr.ready("cid1") is True  # no readiness probe
    await vt.advance(5)  # t=0 ok, t=2 fail, t=4 fail
    assert not mgr.liveness_failed("cid1") and changes == []
    await vt.advance(2)  # t=6: third failure
    assert mgr.liveness_failed("cid1")
    assert changes == [("uid-1", "app", LIVENESS, False)]
    calls = len(script.calls["l"])
    await vt.advance(20)
    assert len(script.calls["l"]) == calls  # on hold until edged replaces the container
    assert mgr.tasks == 0 and mgr.liveness_failed("cid1")  # the worker ended; its result stays
    mgr.forget("cid1")
    assert mgr.ready("cid1") is None and not mgr.liveness_failed("cid1")
    await vt.settle()
    assert mgr.tasks == 0
    # The replacement container starts fresh.
    script.outcomes["l"] = [True]
    mgr.ensure(pod_with(c), c, "cid2", "10.0.0.5", vt.now)
    await vt.advance(3)
    assert not mgr.liveness_failed("cid2")
    await mgr.close()


async def test_initial_delay(vt: VirtualTime) -> None:
    script = Script({"r": [True]})
    mgr, _ = manager(vt, script)
    c = {"name": "app", "readinessProbe": probe("r", initialDelaySeconds=5)}
    # Started 2 s ago: 3 s of the delay remain.
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0 - 2)
    await vt.advance(2.9)
    assert script.calls["r"] == [] and mgr.ready("cid1") is False
    await vt.advance(0.2)
    assert script.calls["r"] == [T0 + 3] and mgr.ready("cid1") is True
    await mgr.close()


async def test_startup_gates_liveness_and_readiness(vt: VirtualTime) -> None:
    script = Script({"s": [False, False, True], "l": [True], "r": [True]})
    mgr, changes = manager(vt, script)
    c = {
        "name": "app",
        "startupProbe": probe("s", failureThreshold=5),
        "livenessProbe": probe("l"),
        "readinessProbe": probe("r"),
    }
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0)
    await vt.advance(1.5)  # startup probed twice, both failed
    assert mgr.started("cid1") is False and mgr.ready("cid1") is False
    assert script.calls["l"] == [] and script.calls["r"] == []
    await vt.advance(1)  # startup succeeds at t=2
    assert mgr.started("cid1") is True
    assert ("uid-1", "app", STARTUP, True) in changes
    await vt.advance(1)
    assert script.calls["l"] and mgr.ready("cid1") is True
    startup_calls = len(script.calls["s"])
    await vt.advance(5)
    assert len(script.calls["s"]) == startup_calls  # the startup probe is done
    assert mgr.tasks == 2 and mgr.started("cid1") is True
    await mgr.close()


async def test_startup_failure_threshold_means_restart(vt: VirtualTime) -> None:
    script = Script({"s": [False]})
    mgr, _ = manager(vt, script)
    c = {"name": "app", "startupProbe": probe("s", failureThreshold=3)}
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0)
    await vt.advance(1.5)
    assert not mgr.liveness_failed("cid1")
    await vt.advance(1)
    assert mgr.liveness_failed("cid1") and mgr.started("cid1") is False
    await mgr.close()


async def test_crash_counts_as_failure_and_runtime_down_counts_as_nothing(vt: VirtualTime) -> None:
    down = CriUnavailable("ExecSync", __import__("grpc").StatusCode.UNAVAILABLE, "connection refused")
    script = Script({"l": [RuntimeError("boom"), down, down, down, RuntimeError("boom"), True]})
    mgr, _ = manager(vt, script)
    c = {"name": "app", "livenessProbe": probe("l", failureThreshold=2)}
    mgr.ensure(pod_with(c), c, "cid1", "10.0.0.5", T0)
    await vt.advance(3.5)  # crash, then the runtime is down three times: still one failure in a row
    assert mgr.crashes == 1 and not mgr.liveness_failed("cid1")
    await vt.advance(1)  # second crash in a row
    assert mgr.crashes == 2 and mgr.liveness_failed("cid1")
    assert "boom" in mgr.message("cid1", LIVENESS)
    await mgr.close()


async def test_no_probes_unknown_containers_forget_pod_and_bound(vt: VirtualTime) -> None:
    script = Script({"a": [True], "b": [True], "c": [True]})
    mgr, _ = manager(vt, script, max_tasks=2)
    plain = {"name": "plain"}
    mgr.ensure(pod_with(plain, "p1"), plain, "plain", "10.0.0.5", T0)
    assert (mgr.ready("plain"), mgr.started("plain"), mgr.liveness_failed("plain")) == (True, True, False)
    assert mgr.ready("nope") is None and mgr.started("nope") is None
    c = {"name": "app", "livenessProbe": probe("a"), "readinessProbe": probe("b"), "startupProbe": probe("c")}
    mgr.ensure(pod_with(c, "p2"), c, "cid1", "10.0.0.5", T0)
    mgr.ensure(pod_with(c, "p2"), c, "cid1", "10.0.0.5", T0)  # idempotent
    assert mgr.tasks == 2 and mgr.rejected == 1
    mgr.forget_pod("p2")
    await vt.settle()
    assert mgr.tasks == 0 and mgr.ready("cid1") is None and mgr.ready("plain") is True
    await mgr.close()


def test_resolve_port() -> None:
    c = {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port(80, c) == 80 and resolve_port("http", c) == 8080 and resolve_port("81", c) == 81
    with pytest.raises(ValueError, match="named port"):
        resolve_port("metrics", c)
    with pytest.raises(ValueError, match="out of range"):
        resolve_port(70000, c)


# ---- handlers against real loopback servers -----------------------------------------------------


class HttpServer:
    """Answers per path: `routes[path] = (status, extra header lines)`; records request heads."""

    def __init__(self, routes: dict[str, tuple[int, list[str]]], hang: bool = False) -> None:
        self.routes = routes
        self.hang = hang
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.requests.append(head)
            if self.hang:
                await reader.read()  # until the prober gives up and closes
                return
            path = head.split(" ")[1]
            status, extra = self.routes.get(path, (404, []))
            lines = [f"HTTP/1.1 {status} X", "Content-Length: 2", *extra, "", "ok"]
            writer.write("\r\n".join(lines).encode())
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_http_probe_statuses_headers_redirects() -> None:
    srv = HttpServer(
        {
            "/ok": (200, []),
            "/moved": (302, ["Location: /ok"]),
            "/bad": (500, []),
            "/to-missing": (301, ["Location: http://127.0.0.1/missing"]),
            "/away": (302, ["Location: http://example.invalid/elsewhere"]),
        }
    )
    port = await srv.start()
    c = {"name": "app", "ports": [{"name": "web", "containerPort": port}]}
    try:
        ok = await http_probe(
            {"path": "/ok", "port": "web", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
            c,
            "127.0.0.1",
            1,
        )
        assert ok.ok
        head = srv.requests[-1]
        assert head.startswith("GET /ok HTTP/1.1\r\n") and "X-Probe: 1" in head
        assert f"Host: 127.0.0.1:{port}" in head and "User-Agent: kube-probe/" in head
        await http_probe(
            {"path": "/ok", "port": port, "httpHeaders": [{"name": "Host", "value": "h"}]}, c, "127.0.0.1", 1
        )
        assert "\r\nHost: h\r\n" in srv.requests[-1] and srv.requests[-1].count("Host:") == 1
        bad = await http_probe({"path": "/bad", "port": port}, c, "127.0.0.1", 1)
        assert not bad.ok and "500" in bad.message
        assert (await http_probe({"path": "/moved", "port": port}, c, "127.0.0.1", 1)).ok
        assert srv.requests[-1].startswith("GET /ok ")  # followed on the same host
        missing = await http_probe({"path": "/to-missing", "port": port}, c, "127.0.0.1", 1)
        assert not missing.ok and "404" in missing.message
        away = await http_probe({"path": "/away", "port": port}, c, "127.0.0.1", 1)
        assert away.ok and "redirect" in away.message and srv.requests[-1].startswith("GET /away ")
    finally:
        await srv.stop()


async def test_http_probe_timeout_and_refused_via_runner() -> None:
    srv = HttpServer({}, hang=True)
    port = await srv.start()
    run = default_runner(None)  # type: ignore[arg-type]
    c = {"name": "app"}
    try:
        r = await run({"httpGet": {"port": port}, "timeoutSeconds": 1}, {}, c, "cid", "127.0.0.1")
        assert not r.ok and "timed out" in r.message
    finally:
        await srv.stop()
    r = await run({"httpGet": {"port": port}}, {}, c, "cid", "127.0.0.1")
    assert not r.ok and "probe failed" in r.message
    r = await run({"grpc": {"port": port}}, {}, c, "cid", "127.0.0.1")
    assert not r.ok and "not supported" in r.message
    assert not (await run({}, {}, c, "cid", "127.0.0.1")).ok


async def test_https_probe_does_not_verify(tmp_path: Path) -> None:
    ca = create_ca("probe-test-ca")
    pair = issue(ca, "not-the-host", server=True, dns_names=["elsewhere.invalid"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_cert_chain(tls, pair)
    srv = HttpServer({"/healthz": (204, [])})
    port = await srv.start(tls)
    try:
        r = await http_probe({"path": "healthz", "port": port, "scheme": "HTTPS"}, {}, "127.0.0.1", 2)
        assert r.ok, r.message
        run = default_runner(None)  # type: ignore[arg-type]
        plain = await run({"httpGet": {"path": "/healthz", "port": port}}, {}, {}, "cid", "127.0.0.1")
        assert not plain.ok
    finally:
        await srv.stop()


async def test_tcp_probe() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    assert (await tcp_probe({"port": port}, {}, "127.0.0.1", 1)).ok
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await tcp_probe({"port": port}, {}, "127.0.0.1", 1)
    r = await default_runner(None)({"tcpSocket": {"port": port}}, {}, {}, "cid", "127.0.0.1")  # type: ignore[arg-type]
    assert not r.ok
