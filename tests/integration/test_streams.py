"""The stream tunnel and cloudstream in process, over real mTLS websockets: multiplexing with flow
control (a stalled stream holds back only itself, buffers stay within the window), the stream limit,
refusals the API server sees as status codes, tunnel identity rules and replacement on reconnect; and
CRI log files (partial lines, tail, since, limit, rotation while following)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from kubeedge.cloudcore.cloudstream import NODE_HEADER, CloudStream, CloudStreamConfig
from kubeedge.edgecore.streams.logs import LogOptions, stream_logs
from kubeedge.pki import certs
from kubeedge.streaming import tunnel as tn
from kubeedge.streaming.tunnel import StreamError, TunnelStream
from tests.cluster import wait_for

WINDOW = 64 * 1024


@pytest.fixture(scope="module")
def pki() -> dict[str, certs.KeyPair]:
    ca = certs.create_ca("test-ca")
    return {
        "ca": ca,
        "serving": certs.issue(ca, "cloud", ip_addresses=["127.0.0.1"], server=True),
        "node": certs.issue(ca, "system:node:n1", organizations=["system:nodes"], client=True),
        "node2": certs.issue(ca, "system:node:n2", organizations=["system:nodes"], client=True),
        "apiserver": certs.issue(ca, "kube-apiserver-kubelet-client", client=True),
        "stranger": certs.issue(ca, "someone", client=True),
    }


def client_ssl(ca: certs.KeyPair, pair: certs.KeyPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    certs.load_cert_chain(ctx, pair)
    return ctx


async def echo_or_flood(stream: TunnelStream) -> None:
    """The edge side of the tests: `echo` returns what it gets; `flood` sends N bytes unasked."""
    req = stream.request
    if req.get("refuse"):
        raise StreamError(404, "no such pod")
    await stream.accept()
    if req.get("flood"):
        await stream.send(b"x" * int(req["flood"]))
        return
    while (data := await stream.recv()) is not None:
        await stream.send(data)


async def dial(port: int, ssl_ctx: ssl.SSLContext, http: aiohttp.ClientSession) -> tn.Tunnel:
    ws = await http.ws_connect(f"wss://127.0.0.1:{port}/v1/kubeedge/connect", ssl=ssl_ctx)
    # The edge's window differs from the cloud's: each side must honour the other's, not its own.
    t = tn.Tunnel(ws, on_open=echo_or_flood, window=3 * WINDOW, name="test-edge")
    asyncio.get_running_loop().create_task(t.run())
    return t


@pytest.fixture
async def cloud(pki: dict[str, certs.KeyPair]) -> AsyncIterator[CloudStream]:
    cs = CloudStream(
        CloudStreamConfig(
            tunnel_host="127.0.0.1", tunnel_port=0, stream_port=0, max_streams_per_node=8, window=WINDOW
        ),
        pki["ca"],
        pki["serving"],
    )
    await cs.start()
    yield cs
    await cs.stop()


async def test_streams_multiplex_with_flow_control(cloud: CloudStream, pki: dict[str, certs.KeyPair]) -> None:
    async with aiohttp.ClientSession() as http:
        edge = await dial(cloud.tunnel_port, client_ssl(pki["ca"], pki["node"]), http)
        await wait_for(cond(lambda: cloud.connected("n1")), what="tunnel")
        tunnel = cloud.tunnels["n1"]
        # A flood nobody reads: the edge may send one window, then waits for credit.
        stalled = await tunnel.open(tn.LOGS, {"flood": 10 * WINDOW})
        await stalled.accepted
        await wait_for(cond(lambda: stalled._queued >= WINDOW), what="a full window queued")

        async def echo(i: int) -> bytes:
            s = await tunnel.open(tn.EXEC, {"i": i})
            await s.accepted
            payload = os.urandom(3 * WINDOW + i)  # more than a window: needs credit to flow back and forth
            got = bytearray()

            async def read() -> None:
                while len(got) < len(payload):
                    chunk = await s.recv()
                    assert chunk is not None
                    got.extend(chunk)

            reader = asyncio.create_task(read())
            await s.send(payload)
            await reader
            await s.close()
            return bytes(got) == payload and bytes(got)

        results = await asyncio.gather(*(echo(i) for i in range(6)))
        assert all(results)
        assert stalled._queued <= WINDOW  # the stalled stream never exceeded its window
        # Reading the stalled stream lets the rest of its flood through.
        total = 0
        while (chunk := await stalled.recv()) is not None:
            total += len(chunk)
        assert total == 10 * WINDOW
        await edge.close()


async def test_limits_refusals_and_replacement(cloud: CloudStream, pki: dict[str, certs.KeyPair]) -> None:
    async with aiohttp.ClientSession() as http:
        first = await dial(cloud.tunnel_port, client_ssl(pki["ca"], pki["node"]), http)
        await wait_for(cond(lambda: cloud.connected("n1")), what="tunnel")
        tunnel = cloud.tunnels["n1"]
        refused = await tunnel.open(tn.LOGS, {"refuse": True})
        with pytest.raises(StreamError) as e:
            await refused.accepted
        assert e.value.code == 404 and "no such pod" in e.value.message
        held = [await tunnel.open(tn.EXEC, {}) for _ in range(8)]
        with pytest.raises(StreamError) as e:
            await tunnel.open(tn.EXEC, {})
        assert e.value.code == 429
        for s in held:
            await s.close()
        # A second tunnel from the same node replaces the first.
        second = await dial(cloud.tunnel_port, client_ssl(pki["ca"], pki["node"]), http)
        await wait_for(cond(lambda: first.closed.is_set()), what="first tunnel closed")
        assert cloud.connected("n1") and cloud.tunnels["n1"] is not tunnel
        await second.close()

        # Only node certificates may dial the tunnel; only the API server (or admins) the stream server.
        for who in ("apiserver", "stranger"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as h:
                await http.ws_connect(
                    f"wss://127.0.0.1:{cloud.tunnel_port}/v1/kubeedge/connect",
                    ssl=client_ssl(pki["ca"], pki[who]),
                )
            assert h.value.status == 403
        url = f"https://127.0.0.1:{cloud.stream_port}/containerLogs/default/p/c"
        async with http.get(url, ssl=client_ssl(pki["ca"], pki["node2"]), headers={NODE_HEADER: "n1"}) as r:
            assert r.status == 403
        # A node without a tunnel: a clear 503.
        async with http.get(
            url, ssl=client_ssl(pki["ca"], pki["apiserver"]), headers={NODE_HEADER: "n9"}
        ) as r:
            assert r.status == 503 and "node n9 has no stream tunnel" in (await r.json())["message"]


def cri_line(t: dt.datetime, text: str, partial: bool = False) -> str:
    return f"{t.isoformat().replace('+00:00', 'Z')} stdout {'P' if partial else 'F'} {text}\n"


def cond(f: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return f()

    return check


async def collect(
    path: Path, opts: LogOptions, stop_after: int | None = None, out: bytearray | None = None
) -> bytes:
    out = bytearray() if out is None else out
    running = True

    async def send(b: bytes) -> None:
        out.extend(b)

    async def is_running() -> bool:
        return running

    def stopped() -> bool:
        return stop_after is not None and out.count(b"\n") >= stop_after

    await stream_logs(path, opts, send, is_running, stopped)
    return bytes(out)


async def test_log_files(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    log = tmp_path / "0.log"
    lines = [cri_line(t0 + dt.timedelta(seconds=i), f"line-{i}") for i in range(5)]
    lines.insert(2, cri_line(t0 + dt.timedelta(seconds=1, milliseconds=500), "par", partial=True))
    log.write_text("".join(lines))
    assert await collect(log, LogOptions()) == b"line-0\nline-1\nparline-2\nline-3\nline-4\n"
    # A partial record belongs to the line it ends in: tail 3 keeps it whole.
    assert await collect(log, LogOptions(tail_lines=3)) == b"parline-2\nline-3\nline-4\n"
    assert (
        await collect(log, LogOptions(since_ns=int((t0 + dt.timedelta(seconds=3)).timestamp()) * 10**9))
        == b"line-3\nline-4\n"
    )
    assert await collect(log, LogOptions(limit_bytes=9)) == b"line-0\nli"
    stamped = await collect(log, LogOptions(tail_lines=1, timestamps=True))
    assert stamped == b"2026-01-01T00:00:04Z line-4\n"
    opts = LogOptions.from_query({"sinceTime": "2026-01-01T00:00:03.000000001Z", "tailLines": "10"})
    assert await collect(log, opts) == b"line-4\n"


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    log = tmp_path / "0.log"
    log.write_text(cri_line(t0, "before"))
    seen = bytearray()
    task = asyncio.create_task(collect(log, LogOptions(follow=True), stop_after=3, out=seen))
    await wait_for(cond(lambda: b"before" in seen), what="the existing line")
    with log.open("a") as f:
        f.write(cri_line(t0, "appended"))
    await wait_for(cond(lambda: b"appended" in seen), what="the appended line, from the old file")
    os.rename(log, tmp_path / "0.log.1")  # rotation: the runtime reopens a new file at the same path
    log.write_text(cri_line(t0, "after-rotation"))
    out = await asyncio.wait_for(task, 10)
    assert out == b"before\nappended\nafter-rotation\n"
