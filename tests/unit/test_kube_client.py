"""Unit tests for kubeedge.kube (REST client, watch, ListWatch, kubeconfig, patch helpers).

They run against small in-test aiohttp servers that fake just enough of the API server for each
case; integration tests against the real API server live elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import itertools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeedge.kube import (
    CRDS,
    NODES,
    PODS,
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    KubeClient,
    KubeConfig,
    ListWatch,
    NotFound,
    Res,
    ServerError,
    apply_merge_patch,
    json_patch_test_and_set,
    load_kubeconfig,
    merge_patch_for,
    watch,
)
from kubeedge.kube import kubeconfig as kubeconfig_mod
from kubeedge.kube.watch import WatchDecodeError, WatchEvent, iter_lines

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEADLINE = 5.0


# -- fixtures and fakes ----------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[KubeConfig]]]:
    """Start a catch-all aiohttp server for `handler`; returns a KubeConfig pointing at it."""
    servers: list[TestServer] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> KubeConfig:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        srv = TestServer(app, host="127.0.0.1")
        await srv.start_server(ssl=ssl_context)
        servers.append(srv)
        scheme = "https" if ssl_context else "http"
        return KubeConfig(server=f"{scheme}://127.0.0.1:{srv.port}")

    yield start
    for s in servers:
        await s.close()


def status(code: int, reason: str, message: str = "", **details: Any) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    body["message"] = message or reason
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def pod(name: str, rv: str, ns: str = "ns", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": f"uid-{name}"},
        **extra,
    }


def event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


class FakeCollection:
    """Serves list snapshots and scripted watch streams for one pod collection.

    Each watch request takes the next script from `watches`: a list of steps, each bytes (written as
    is), a (type, object) event, an `asyncio.Event` (wait for it) or an int (answer with that HTTP
    error instead). When the script ends the server closes the watch.
    """

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]]) -> None:
        self.lists = lists
        self.list_calls = 0
        self.watches: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.watch_rvs: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.changed = asyncio.Event()
        self.watch_closed = asyncio.Event()
        self.fail_lists: list[web.Response] = []

    async def wait_until(self, cond: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not cond():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), DEADLINE)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.requests.append((request.method, request.path, q))
        self.changed.set()
        if q.get("watch") == "true":
            return await self._watch(request, q)
        if self.fail_lists:
            return self.fail_lists.pop(0)
        items, rv = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        self.changed.set()
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}
        return web.json_response(body)

    async def _watch(self, request: web.Request, q: dict[str, str]) -> web.StreamResponse:
        self.watch_rvs.append(q.get("resourceVersion", ""))
        script = await self.watches.get()
        if script and isinstance(script[0], int):
            return status(script[0], "Expired" if script[0] == 410 else "InternalError")
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        try:
            for step in script:
                if isinstance(step, asyncio.Event):
                    await step.wait()
                elif isinstance(step, bytes):
                    await resp.write(step)
                else:
                    await resp.write(event_line(*step))
        finally:
            self.watch_closed.set()
            self.changed.set()
        return resp


async def nxt(lw: ListWatch) -> WatchEvent:
    return await asyncio.wait_for(lw.__anext__(), DEADLINE)


def summary(ev: WatchEvent) -> tuple[str, str, str]:
    return (ev.type, ev.object.get("metadata", {}).get("name", ""), ev.resource_version)


# -- PKI for kubeconfig / TLS tests ---------------------------------------------------------------


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    **kw: Any,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if kw.get("ca"):
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if kw.get("ip"):
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(kw["ip"]))]), False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("apiserver", srv_key, ("test-ca", ca_key), ip="127.0.0.1")
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("admin", cli_key, ("test-ca", ca_key))
    out: dict[str, Any] = {"dir": d}
    for name, cert, key in (("ca", ca, ca_key), ("server", srv, srv_key), ("client", cli, cli_key)):
        out[f"{name}_pem"] = cert.public_bytes(serialization.Encoding.PEM)
        out[f"{name}_key_pem"] = _pem_key(key)
        (d / f"{name}.crt").write_bytes(out[f"{name}_pem"])
        (d / f"{name}.key").write_bytes(out[f"{name}_key_pem"])
    return out


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def write_kubeconfig(
    path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any], **ctx: Any
) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://example.invalid"}},
            {"name": "test", "cluster": {"server": server, **cluster}},
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "ctx", "context": {"cluster": "test", "user": "u", **ctx}},
            {"name": "ctx-other", "context": {"cluster": "other", "user": "u"}},
        ],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


# -- kubeconfig ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["data", "file"])
async def test_kubeconfig_client_cert_over_https(
    variant: str, pki: dict[str, Any], tmp_path: Path, serve: Any
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["dir"] / "ca.crt"))
    server_ctx.load_cert_chain(pki["dir"] / "server.crt", pki["dir"] / "server.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    async def handler(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else ""
        return web.json_response(
            {"kind": "Namespace", "metadata": {"name": request.match_info["tail"]}, "cn": cn}
        )

    base = await serve(handler, server_ctx)
    if variant == "data":
        cluster = {"certificate-authority-data": _b64(pki["ca_pem"])}
        user = {
            "client-certificate-data": _b64(pki["client_pem"]),
            "client-key-data": _b64(pki["client_key_pem"]),
        }
    else:
        # Relative paths resolve against the kubeconfig's directory, as kubectl does.
        cluster = {"certificate-authority": "ca.crt"}
        user = {"client-certificate": "client.crt", "client-key": str(pki["dir"] / "client.key")}
    kcpath = write_kubeconfig(
        pki["dir"] / f"kubeconfig-{variant}", base.server, cluster, user, namespace="team"
    )
    cfg = load_kubeconfig(kcpath)
    assert cfg.server == base.server and cfg.namespace == "team"
    if variant == "data":
        assert cfg.ca_data == pki["ca_pem"] and cfg.client_key_data == pki["client_key_pem"]
        assert "PRIVATE" not in repr(cfg)
    else:
        assert cfg.ca_file == str(pki["dir"] / "ca.crt")
    async with KubeClient(cfg) as kc:
        ns = await kc.get(Res("", "v1", "namespaces", False), "x")
    assert ns["cn"] == "admin"


def test_kubeconfig_token_named_context_and_secrets_hidden(tmp_path: Path) -> None:
    p = write_kubeconfig(
        tmp_path / "kc",
        "https://10.0.0.1:6443/",
        {"insecure-skip-tls-verify": True, "tls-server-name": "kubernetes"},
        {"token": "s3cret-token"},
    )
    cfg = load_kubeconfig(p)
    assert cfg.server == "https://10.0.0.1:6443"  # trailing slash dropped: paths are appended
    assert cfg.insecure and cfg.tls_server_name == "kubernetes" and cfg.namespace == "default"
    assert cfg.auth_headers() == {"Authorization": "Bearer s3cret-token"}
    assert "s3cret" not in repr(cfg)
    ctx = cfg.ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE
    assert load_kubeconfig(p, context="ctx-other").server == "https://example.invalid"
    with pytest.raises(kubeconfig_mod.ConfigError):
        load_kubeconfig(p, context="nope")


def test_kubeconfig_token_file_is_reread_after_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = tmp_path / "token"
    tok.write_text("one\n")
    p = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {}, {"tokenFile": "token"})
    cfg = load_kubeconfig(p)
    assert cfg.auth_headers()["Authorization"] == "Bearer one"
    tok.write_text("two")
    assert cfg.auth_headers()["Authorization"] == "Bearer one"  # cached within the refresh period
    monkeypatch.setattr(kubeconfig_mod, "TOKEN_FILE_REFRESH_SECONDS", 0.0)
    assert cfg.auth_headers()["Authorization"] == "Bearer two"
    tok.unlink()  # a rotation in progress: keep the last good token
    assert cfg.auth_headers()["Authorization"] == "Bearer two"


def test_kubeconfig_from_env_and_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {}, {"username": "a", "password": "b"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{p}")
    cfg = KubeConfig.auto()
    assert cfg.auth_headers() == {"Authorization": "Basic " + _b64(b"a:b")}

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("kube-system")
    (sa / "ca.crt").write_text("x")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    ic = KubeConfig.in_cluster(sa)
    assert ic.server == "https://[fd00::1]:443" and ic.namespace == "kube-system"
    assert ic.ca_file == str(sa / "ca.crt") and ic.bearer_token() == "sa-token"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(kubeconfig_mod.ConfigError):
        KubeConfig.in_cluster(sa)


# -- requests, errors, retries ---------------------------------------------------------------------


async def test_list_follows_continue_pages(serve: Any) -> None:
    seen: list[dict[str, str]] = []
    items = [pod(f"p{i}", str(i)) for i in range(7)]

    async def handler(request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        seen.append(q)
        start = int(q.get("continue", "0"))
        limit = int(q["limit"])
        page = items[start : start + limit]
        md: dict[str, Any] = {"resourceVersion": "42"}
        if start + limit < len(items):
            md["continue"] = str(start + limit)
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": md, "items": page})

    cfg = await serve(handler)
    async with KubeClient(cfg) as kc:
        got, rv = await kc.list(PODS, "ns", label_selector="app=x", limit=3, resource_version="0")
    assert [o["metadata"]["name"] for o in got] == [f"p{i}" for i in range(7)]
    assert rv == "42"
    assert [q.get("continue") for q in seen] == [None, "3", "6"]
    assert all(q["labelSelector"] == "app=x" and q["limit"] == "3" for q in seen)
    # resourceVersion is only valid on the first page; the server rejects it with continue.
    assert [q.get("resourceVersion") for q in seen] == ["0", None, None]
    assert got[0]["kind"] == "Pod" and got[0]["apiVersion"] == "v1"


async def test_list_relists_when_continue_token_expires(serve: Any) -> None:
    seen: list[str | None] = []
    expired_once = False

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal expired_once
        cont = request.query.get("continue")
        seen.append(cont)
        if cont == "stale" and not expired_once:
            expired_once = True
            return status(410, "Expired", "The provided continue parameter is too old")
        if cont is None:
            body = {"metadata": {"resourceVersion": "5", "continue": "stale"}, "items": [pod("a", "1")]}
        else:
            body = {"metadata": {"resourceVersion": "5"}, "items": [pod("b", "2")]}
        return web.json_response({"kind": "PodList", "apiVersion": "v1", **body})

    cfg = await serve(handler)
    async with KubeClient(cfg) as kc:
        got, _rv = await kc.list(PODS, "ns", limit=1)
    # Pages of the expired snapshot are dropped: exactly one a and one b.
    assert [o["metadata"]["name"] for o in got] == ["a", "b"]
    assert seen == [None, "stale", None, "stale"]


async def test_errors_are_mapped_from_code_and_reason(serve: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        if name == "missing":
            return status(404, "NotFound", 'pods "missing" not found', name="missing", kind="pods")
        if name == "exists":
            return status(409, "AlreadyExists", "already exists")
        if name == "stale":
            return status(409, "Conflict", "the object has been modified")
        if name == "gone":
            return status(410, "Gone", "too old")
        if name == "bad":
            return status(422, "Invalid", "spec.x: Invalid value")
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    cfg = await serve(handler)
    async with KubeClient(cfg, max_retries=0) as kc:
        with pytest.raises(NotFound) as nf:
            await kc.get(PODS, "missing", "ns")
        assert nf.value.status == 404 and nf.value.reason == "NotFound"
        assert nf.value.details == {"name": "missing", "kind": "pods"} and "not found" in nf.value.message
        with pytest.raises(AlreadyExists):
            await kc.get(PODS, "exists", "ns")
        with pytest.raises(Conflict) as cf:
            await kc.get(PODS, "stale", "ns")
        assert not isinstance(cf.value, AlreadyExists)
        with pytest.raises(Gone):
            await kc.get(PODS, "gone", "ns")
        with pytest.raises(Invalid):
            await kc.get(PODS, "bad", "ns")
        with pytest.raises(ServerError) as se:
            await kc.get(PODS, "proxy", "ns")
        assert se.value.status == 502 and "bad gateway" in se.value.message


async def test_retries_reads_on_503_honouring_retry_after(serve: Any) -> None:
    calls: dict[str, int] = {}
    retry_after = "0"

    async def handler(request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        calls[key] = calls.get(key, 0) + 1
        if request.path.endswith("/always"):
            return status(503, "ServiceUnavailable")
        if "/throttled/" in request.path:
            if calls[key] > 1:
                return web.json_response({"kind": "Eviction"})
            return web.json_response(
                {"kind": "Status", "code": 429, "reason": "TooManyRequests"},
                status=429,
                headers={"Retry-After": retry_after},
            )
        if calls[key] < (2 if request.path.endswith("/slow") else 3):
            return web.json_response(
                {"kind": "Status", "code": 503, "reason": "ServiceUnavailable"},
                status=503,
                headers={"Retry-After": retry_after},
            )
        return web.json_response(pod("p", "1"))

    cfg = await serve(handler)
    async with KubeClient(cfg, max_retries=3, backoff_base=0.001, backoff_cap=0.002) as kc:
        assert (await kc.get(PODS, "p", "ns"))["metadata"]["name"] == "p"
        assert calls["GET /api/v1/namespaces/ns/pods/p"] == 3
        # POST is not retried on 5xx: the first attempt may have been applied.
        with pytest.raises(ServerError):
            await kc.create(PODS, pod("q", ""), "ns")
        assert calls["POST /api/v1/namespaces/ns/pods"] == 1
        # ... but a 429 with Retry-After was rejected before processing, so it is safe to repeat.
        await kc.create_subresource(PODS, "throttled", "eviction", {"kind": "Eviction"}, "ns")
        assert calls["POST /api/v1/namespaces/ns/pods/throttled/eviction"] == 2
        with pytest.raises(ServerError):
            await kc.get(PODS, "always", "ns")
        assert calls["GET /api/v1/namespaces/ns/pods/always"] == 4  # 1 + max_retries

        # Retry-After is honoured rather than the (tiny) exponential backoff.
        retry_after = "1"
        t0 = time.monotonic()
        await kc.get(PODS, "slow", "ns")
        assert time.monotonic() - t0 >= 0.9


async def test_reads_retry_after_dropped_connection(serve: Any) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1 and request.transport is not None:
            request.transport.abort()  # the server vanishes mid-request
            await asyncio.Event().wait()
        return web.json_response(pod("p", "1"))

    cfg = await serve(handler)
    async with KubeClient(cfg, backoff_base=0.001) as kc:
        assert (await kc.get(PODS, "p", "ns"))["metadata"]["name"] == "p"
    assert calls == 2


async def test_write_verbs_send_the_right_requests(serve: Any) -> None:
    seen: list[tuple[str, str, dict[str, str], str, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read()) if request.can_read_body else None
        seen.append((request.method, request.path, dict(request.query), request.content_type, body))
        return web.json_response({"kind": "Pod", "metadata": {"name": "x"}})

    cfg = await serve(handler)
    cfg.namespace = "team"
    obj = pod("p", "7", ns="other", spec={"a": 1})
    async with KubeClient(cfg) as kc:
        await kc.create(PODS, obj, field_manager="ctl", dry_run=True)
        await kc.replace(PODS, obj)
        await kc.update_status(PODS, obj)
        await kc.patch(PODS, "p", {"spec": {"a": 2}})  # no namespace anywhere: the config's
        await kc.patch(PODS, "p", [{"op": "remove", "path": "/spec/a"}], "ns", patch_type="json")
        await kc.patch(NODES, "n", {"status": {}}, patch_type="strategic", subresource="status")
        await kc.apply(CRDS, {"metadata": {"name": "c"}}, field_manager="ctl", force=True)
        await kc.delete(PODS, "p", "ns", propagation_policy="Foreground", preconditions={"uid": "u"})
        await kc.create_subresource(PODS, "p", "binding", {"target": {"name": "n"}}, "ns")
        with pytest.raises(ValueError):
            await kc.patch(PODS, "p", {}, "ns", patch_type="apply")
    assert [(m, p) for m, p, *_ in seen] == [
        ("POST", "/api/v1/namespaces/other/pods"),
        ("PUT", "/api/v1/namespaces/other/pods/p"),
        ("PUT", "/api/v1/namespaces/other/pods/p/status"),
        ("PATCH", "/api/v1/namespaces/team/pods/p"),
        ("PATCH", "/api/v1/namespaces/ns/pods/p"),
        ("PATCH", "/api/v1/nodes/n/status"),
        ("PATCH", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/c"),
        ("DELETE", "/api/v1/namespaces/ns/pods/p"),
        ("POST", "/api/v1/namespaces/ns/pods/p/binding"),
    ]
    assert seen[0][2] == {"fieldManager": "ctl", "dryRun": "All"}
    assert [s[3] for s in seen[3:7]] == [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ]
    assert seen[6][2] == {"fieldManager": "ctl", "force": "true"}
    assert seen[7][4]["propagationPolicy"] == "Foreground" and seen[7][4]["preconditions"] == {"uid": "u"}


# -- watch -----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_iter_lines_is_independent_of_chunking(cuts: list[int]) -> None:
    lines = [event_line("ADDED", pod(f"p{i}", str(i), data="x" * i * 7)) for i in range(6)]
    stream = b"".join(lines)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]

    async def gen() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async def collect() -> list[bytes]:
        return [line async for line in iter_lines(gen())]

    assert asyncio.run(collect()) == [line.rstrip(b"\n") for line in lines]


async def test_iter_lines_bounds_the_buffer() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"type":"ADDED","object":{"x":"'
        for _ in range(10):
            yield b"y" * 100

    with pytest.raises(WatchDecodeError):
        async for _ in iter_lines(gen(), limit=512):
            pass


async def test_watch_parses_events_split_across_chunks(serve: Any) -> None:
    big = pod("big", "3", data="z" * 300_000)
    payload = (
        event_line("ADDED", pod("a", "1")) + event_line("MODIFIED", pod("a", "2")) + event_line("ADDED", big)
    )
    payload += event_line("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "9"}})
    seen_query: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen_query.update(request.query)
        resp = web.StreamResponse()
        await resp.prepare(request)
        # Cut mid-JSON and mid-line; flush each piece separately.
        for i in range(0, len(payload), 7919):
            await resp.write(payload[i : i + 7919])
            await asyncio.sleep(0)
        return resp

    cfg = await serve(handler)
    async with KubeClient(cfg) as kc:
        events = [
            e
            async for e in watch(
                kc, PODS, "ns", label_selector="a=b", resource_version="0", timeout_seconds=30
            )
        ]
    assert [(e.type, e.resource_version) for e in events] == [
        ("ADDED", "1"),
        ("MODIFIED", "2"),
        ("ADDED", "3"),
        ("BOOKMARK", "9"),
    ]
    assert events[2].object == big
    assert seen_query == {
        "watch": "true",
        "resourceVersion": "0",
        "allowWatchBookmarks": "true",
        "labelSelector": "a=b",
        "timeoutSeconds": "30",
    }


async def test_watch_error_event_410_raises_gone(serve: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(event_line("ADDED", pod("a", "1")))
        err = {"kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old"}
        await resp.write(event_line("ERROR", err))
        return resp

    cfg = await serve(handler)
    got: list[WatchEvent] = []
    async with KubeClient(cfg) as kc:
        with pytest.raises(Gone) as exc:
            async for e in watch(kc, PODS, "ns", resource_version="1"):
                got.append(e)
    assert len(got) == 1 and exc.value.status == 410 and exc.value.reason == "Expired"


# -- ListWatch -------------------------------------------------------------------------------------


async def test_listwatch_resumes_after_server_closes_watch(serve: Any) -> None:
    fake = FakeCollection([([pod("a", "5")], "10")])
    hold = asyncio.Event()
    fake.watches.put_nowait([("ADDED", pod("b", "11"))])  # then the server ends the watch
    fake.watches.put_nowait([("MODIFIED", pod("a", "12")), hold])
    cfg = await serve(fake.handler)
    async with KubeClient(cfg) as kc, ListWatch(kc, PODS, "ns", watch_timeout=60) as lw:
        assert summary(await nxt(lw)) == ("ADDED", "a", "5")
        assert summary(await nxt(lw)) == ("SYNC", "", "10")
        assert lw.has_synced
        assert summary(await nxt(lw)) == ("ADDED", "b", "11")
        assert summary(await nxt(lw)) == ("MODIFIED", "a", "12")
        assert fake.watch_rvs == ["10", "11"]
        assert fake.list_calls == 1  # resumed, not re-listed
        assert {k: v["metadata"]["resourceVersion"] for k, v in lw.cache.items()} == {
            ("ns", "a"): "12",
            ("ns", "b"): "11",
        }
        assert lw.resource_version == "12"
        hold.set()


async def test_listwatch_tracks_bookmarks(serve: Any) -> None:
    fake = FakeCollection([([], "10")])
    fake.watches.put_nowait([("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "50"}})])
    fake.watches.put_nowait([("ADDED", pod("c", "51")), asyncio.Event()])
    cfg = await serve(fake.handler)
    async with KubeClient(cfg) as kc, ListWatch(kc, PODS, "ns", watch_timeout=60) as lw:
        assert summary(await nxt(lw)) == ("SYNC", "", "10")
        # Bookmarks are not delivered, but the next watch resumes from them.
        assert summary(await nxt(lw)) == ("ADDED", "c", "51")
        assert fake.watch_rvs == ["10", "50"]
        q = [q for m, p, q in fake.requests if q.get("watch")]
        assert all(x["allowWatchBookmarks"] == "true" and x["timeoutSeconds"] == "60" for x in q)


@pytest.mark.parametrize("how", ["error-event", "http-410"])
async def test_listwatch_relists_on_gone_and_diffs_the_cache(how: str, serve: Any) -> None:
    fake = FakeCollection(
        [
            ([pod("a", "1"), pod("b", "2"), pod("c", "3")], "10"),
            ([pod("a", "1"), pod("b", "20"), pod("d", "21")], "30"),
        ]
    )
    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    fake.watches.put_nowait([("ERROR", expired)] if how == "error-event" else [410])
    fake.watches.put_nowait([asyncio.Event()])
    cfg = await serve(fake.handler)
    async with KubeClient(cfg) as kc, ListWatch(kc, PODS, "ns", watch_timeout=60) as lw:
        initial = [summary(await nxt(lw)) for _ in range(4)]
        assert initial == [("ADDED", "a", "1"), ("ADDED", "b", "2"), ("ADDED", "c", "3"), ("SYNC", "", "10")]
        after = [summary(await nxt(lw)) for _ in range(4)]
        # Unchanged `a` produces nothing; vanished `c` is DELETED with its last known state.
        assert after == [
            ("MODIFIED", "b", "20"),
            ("ADDED", "d", "21"),
            ("DELETED", "c", "3"),
            ("SYNC", "", "30"),
        ]
        assert sorted(lw.cache) == [("ns", "a"), ("ns", "b"), ("ns", "d")]
        await fake.wait_until(lambda: len(fake.watch_rvs) == 2)
        assert fake.watch_rvs == ["10", "30"] and fake.list_calls == 2


async def test_listwatch_logs_and_retries_failures(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeCollection([([pod("a", "1")], "10")])
    fake.fail_lists.append(status(403, "Forbidden", "pods is forbidden"))
    fake.watches.put_nowait([500])  # watch fails once (the client itself does not retry: max_retries=0)
    fake.watches.put_nowait([("ADDED", pod("b", "11")), asyncio.Event()])
    cfg = await serve(fake.handler)
    caplog.set_level(logging.WARNING, logger="kubeedge.kube")
    async with (
        KubeClient(cfg, max_retries=0) as kc,
        ListWatch(kc, PODS, "ns", watch_timeout=60, backoff_base=0.001, backoff_cap=0.002) as lw,
    ):
        got = [summary(await nxt(lw)) for _ in range(3)]
    assert got == [("ADDED", "a", "1"), ("SYNC", "", "10"), ("ADDED", "b", "11")]
    assert fake.watch_rvs == ["10", "10"]
    msgs = [r.getMessage() for r in caplog.records]
    assert any("list failed" in m and "403" in m and cfg.server in m and "pods in ns" in m for m in msgs)
    assert any("watch failed" in m and "500" in m for m in msgs)


async def test_listwatch_stop_and_cancellation_release_the_watch(serve: Any) -> None:
    fake = FakeCollection([([], "10")])
    fake.watches.put_nowait([asyncio.Event()])  # a watch that never ends by itself
    cfg = await serve(fake.handler)
    async with KubeClient(cfg) as kc:
        lw = ListWatch(kc, PODS, watch_timeout=60)
        assert summary(await nxt(lw)) == ("SYNC", "", "10")
        await fake.wait_until(lambda: len(fake.watch_rvs) == 1)
        pending = asyncio.ensure_future(lw.__anext__())
        lw.stop()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, DEADLINE)
        await asyncio.wait_for(lw.aclose(), DEADLINE)
        await asyncio.wait_for(fake.watch_closed.wait(), DEADLINE)  # the server saw the disconnect

        # The callback form ends when its task is cancelled, and also closes the watch.
        fake.watch_closed.clear()
        fake.watches.put_nowait([asyncio.Event()])
        seen: list[WatchEvent] = []
        synced = asyncio.Event()

        def on_event(ev: WatchEvent) -> None:
            seen.append(ev)
            if ev.type == "SYNC":
                synced.set()

        lw2 = ListWatch(kc, PODS, watch_timeout=60)
        task = asyncio.create_task(lw2.run(on_event))
        await asyncio.wait_for(synced.wait(), DEADLINE)
        await fake.wait_until(lambda: len(fake.watch_rvs) == 2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)
        await asyncio.wait_for(fake.watch_closed.wait(), DEADLINE)
        assert [e.type for e in seen] == ["SYNC"]


async def test_listwatch_handler_errors_propagate(serve: Any) -> None:
    fake = FakeCollection([([pod("a", "1")], "10")])
    fake.watches.put_nowait([asyncio.Event()])
    cfg = await serve(fake.handler)

    async def on_event(ev: WatchEvent) -> None:
        raise RuntimeError(f"handler bug on {ev.type}")

    async with KubeClient(cfg) as kc:
        with pytest.raises(RuntimeError, match="handler bug on ADDED"):
            await asyncio.wait_for(ListWatch(kc, PODS, "ns").run(on_event), DEADLINE)


# -- patch helpers ---------------------------------------------------------------------------------


def test_merge_patch_for_examples() -> None:
    old = {
        "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "1", "b": "2"}},
        "spec": {"replicas": 1, "list": [1, 2], "flag": True},
    }
    new = {
        "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "1", "c": "3"}},
        "spec": {"replicas": 1, "list": [1, 2, 3], "flag": 1},
        "status": {"ready": True},
    }
    assert merge_patch_for(old, new) == {
        "metadata": {"labels": {"b": None, "c": "3"}},
        "spec": {"list": [1, 2, 3], "flag": 1},  # True == 1 in Python, but not in JSON
        "status": {"ready": True},
    }
    assert merge_patch_for(old, old) == {}
    cas = merge_patch_for(old, new, with_resource_version=True)
    assert cas["metadata"]["resourceVersion"] == "7"
    assert json_patch_test_and_set("/spec/replicas", 1, 2) == [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 2},
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=12,
)


def _no_nulls(v: Any) -> Any:
    # Merge patches cannot express "set to null"; such values are removals by definition.
    if isinstance(v, dict):
        return {k: _no_nulls(x) for k, x in v.items() if x is not None}
    return v


@settings(max_examples=200, deadline=None)
@given(
    old=st.dictionaries(st.text(max_size=2), json_values, max_size=4),
    new=st.dictionaries(st.text(max_size=2), json_values, max_size=4),
)
def test_merge_patch_roundtrip(old: dict[str, Any], new: dict[str, Any]) -> None:
    new = _no_nulls(new)
    patch = merge_patch_for(old, new)
    assert apply_merge_patch(old, patch) == new
    assert merge_patch_for(new, new) == {}


def test_api_error_str_is_useful() -> None:
    e = ApiError(418, "Teapot", "short and stout")
    assert str(e) == "418 Teapot: short and stout"
