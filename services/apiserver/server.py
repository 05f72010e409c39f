"""The API server process: TLS, authentication, routing, discovery, and the startup sequence."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import secrets
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from kubeedge.pki import certs
from kubeedge.runtime import Supervisor
from kubeedge.runtime.hostaddrs import host_addresses
from kubeedge.store import AlreadyExists, NotFound, Store

from .allocator import ServiceAllocator
from .auth import ADMIN_GROUP, Authorizer, Identity, TokenAuthenticator, identity_from_peercert
from .config import ApiServerConfig
from .crds import CrdServing
from .errors import ApiError
from .events import expire_events
from .nodegraph import NodeGraph
from .objects import CRD_KEY
from .resources import Registry
from .rest import ResourceApi
from .routes import ApiRoutes
from .routes import manifests as _manifests
from .satokens import ServiceAccountTokens

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ANONYMOUS_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})


class Pki:
    """The server's CA, serving certificate, and the admin credentials it hands out."""

    def __init__(self, config: ApiServerConfig) -> None:
        self.dir = config.data_dir / "pki"
        self.config = config

    def ensure(self) -> tuple[certs.KeyPair, certs.KeyPair]:
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = self._pair("ca", lambda: certs.create_ca("kubeedge-ca"))
        sans_dns = {
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            socket.gethostname(),
        }
        sans_ip = {"127.0.0.1", "::1"}
        if self.config.host in ("0.0.0.0", "::", ""):
            # Listening everywhere: clients may dial any of the host's addresses (checked at each start;
            # the certificate is reissued when they change).
            sans_ip.update(host_addresses())
        for s in (self.config.host, *self.config.cert_sans):
            try:
                ipaddress.ip_address(s)
                if s not in ("0.0.0.0", "::"):
                    sans_ip.add(s)
            except ValueError:
                if s:
                    sans_dns.add(s)
        first_svc = str(next(iter(ipaddress.ip_network(self.config.service_cidr).hosts())))
        sans_ip.add(first_svc)
        serving = self._pair(
            "apiserver",
            lambda: certs.issue(
                ca, "kube-apiserver", dns_names=sorted(sans_dns), ip_addresses=sorted(sans_ip), server=True
            ),
            want_sans=(sans_dns, sans_ip),
        )
        return ca, serving

    def _pair(
        self, name: str, make: Callable[[], certs.KeyPair], want_sans: tuple[set[str], set[str]] | None = None
    ) -> certs.KeyPair:
        crt, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        if crt.exists() and key.exists():
            pair = certs.KeyPair(crt.read_bytes(), key.read_bytes())
            if want_sans is None or _covers(pair, *want_sans):
                return pair
            log.info("reissuing %s certificate: its names changed", name)
        pair = make()
        certs.write_private(key, pair.key_pem)
        crt.write_bytes(pair.cert_pem)
        return pair


def _covers(pair: certs.KeyPair, dns: set[str], ips: set[str]) -> bool:
    from cryptography import x509

    try:
        ext = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(ext.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in ext.get_values_for_type(x509.IPAddress)}
    return dns <= have_dns and ips <= have_ip


class ApiServer(ApiRoutes):
    def __init__(self, config: ApiServerConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(config.data_dir / "state.db", config.store)
        self.registry = Registry()
        self.graph = NodeGraph()
        self.tokens = TokenAuthenticator(config.data_dir / "tokens.csv")
        self.allocator = ServiceAllocator(config.service_cidr, config.node_ports)
        self.api = ResourceApi(self.store, self.registry, Authorizer(self.graph), self.allocator, config)
        # Bound service-account tokens: issued by serviceaccounts/<name>/token, accepted as bearer tokens.
        self.sa_tokens = ServiceAccountTokens(self.store, config.data_dir, config.cluster_domain)
        self.api.sa_tokens = self.sa_tokens
        self.tokens.checkers.append(self.sa_tokens.authenticate)
        if config.node_stream_url:
            from .podstreams import PodStreams

            self.api.pod_streams = PodStreams(self.api, config)
        self.crds = CrdServing(self.registry)
        self._runner: web.AppRunner | None = None
        self.tasks = Supervisor("apiserver")
        self._discovery_cache: dict[str, tuple[int, bytes]] = {}
        self._conn_identity: weakref.WeakKeyDictionary[Any, Identity | None] = weakref.WeakKeyDictionary()
        self.port = config.port
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        ca, _ = Pki(self.config).ensure()
        self.ca = ca
        self.sa_tokens.load_key()
        await self.store.open()
        await self._load_state()
        self.api.after_write.setdefault(CRD_KEY, []).append(self._on_crd_write)
        self.api.after_write.setdefault("services", []).append(self._on_service_write)
        await self._bootstrap()
        _tune_gc()
        self._spawn(lambda: expire_events(self.store, self.config.event_ttl), "event-ttl")
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5)
        await self._runner.setup()
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sslctx.load_cert_chain(
            self.config.data_dir / "pki" / "apiserver.crt", self.config.data_dir / "pki" / "apiserver.key"
        )
        sslctx.load_verify_locations(cadata=ca.cert_pem.decode())
        sslctx.verify_mode = ssl.CERT_OPTIONAL  # certificates or bearer tokens
        sslctx.set_alpn_protocols(["http/1.1"])
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=sslctx, backlog=1024)
        await site.start()
        for addr in self._runner.addresses:  # the real port when listening on port 0
            self.port = int(addr[1])
            break
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self.url = f"https://{host}:{self.port}"
        self._write_admin_credentials(ca)
        await self._kubernetes_service()
        log.info("API server serving on %s (data in %s)", self.url, self.config.data_dir)

    async def stop(self) -> None:
        await self.tasks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.store.close()
        log.info("API server stopped")

    def _spawn(self, make: Callable[[], Awaitable[None]], name: str, restart: bool = True) -> None:
        self.tasks.spawn(make, name, restart=restart)

    async def _load_state(self) -> None:
        for r in (await self.store.list(CRD_KEY)).items:
            self.crds.on_write("create", r.obj)
        self.allocator.load(r.obj for r in (await self.store.list("services")).items)
        self.graph.load((await self.store.list("pods")).items)
        self.store.hub.listeners.append(self.graph.on_events)

    def _on_crd_write(self, op: str, crd: Obj) -> None:
        self.crds.on_write(op, crd)
        if op == "delete":
            key = f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
            self._spawn(lambda: self._purge(key), f"purge-{key}", restart=False)

    async def _purge(self, key: str) -> None:
        for r in (await self.store.list(key)).items:
            md = r.obj["metadata"]
            with contextlib.suppress(Exception):
                await self.store.delete(key, md.get("namespace", ""), md["name"])

    def _on_service_write(self, op: str, svc: Obj) -> None:
        if op == "delete":
            self.allocator.release(svc)

    async def _bootstrap(self) -> None:
        """System namespaces, the `kubernetes` service, and manifests (CRDs) from the manifests dir."""
        ns_info = self.registry.get("", "v1", "namespaces")
        assert ns_info is not None
        for ns in SYSTEM_NAMESPACES:
            with contextlib.suppress(ApiError, AlreadyExists):
                await self.api.create_object(ns_info, "", {"metadata": {"name": ns}}, {})
        for f, doc in _manifests(self.config.manifests_dir):
            await self._ensure(doc, f)

    async def _kubernetes_service(self) -> None:
        """The `kubernetes` Service in `default`, as in-cluster clients expect, pointing at us."""
        svc_info = self.registry.get("", "v1", "services")
        ep_info = self.registry.get("", "v1", "endpoints")
        assert svc_info is not None and ep_info is not None
        first_ip = str(next(iter(ipaddress.ip_network(self.config.service_cidr).hosts())))
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        svc = {
            "metadata": {
                "name": "kubernetes",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "clusterIP": first_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}],
            },
        }
        eps: Obj = {
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [
                {
                    "addresses": [{"ip": host}],
                    "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
                }
            ],
        }
        await self._upsert(svc_info, "default", svc, lambda o: o["spec"].get("ports"), "ports")
        await self._upsert(ep_info, "default", eps, lambda o: o.get("subsets"), "subsets")

    async def _upsert(self, info: Any, ns: str, obj: Obj, part: Callable[[Obj], Any], field: str) -> None:
        """Create `obj`, or bring one part of the stored object (spec.ports, subsets) up to date."""
        name = obj["metadata"]["name"]
        try:
            cur = self.store.get_now(info.key, ns, name)
        except NotFound:
            with contextlib.suppress(ApiError, AlreadyExists):
                await self.api.create_object(info, ns, obj, {})
            return
        want = part(obj)
        if part(cur.obj) == want:
            return

        def fix(o: Obj) -> Obj:
            (o["spec"] if field == "ports" else o)[field] = want
            return o

        await self.store.guaranteed_update(info.key, ns, name, fix)

    async def _ensure(self, doc: Obj, source: Path) -> None:
        info = self.registry.by_kind(doc.get("apiVersion", ""), doc.get("kind", ""))
        if info is None:
            log.error("%s: no resource for %s %s", source, doc.get("apiVersion"), doc.get("kind"))
            return
        ns = (doc.get("metadata") or {}).get("namespace", "default") if info.namespaced else ""
        await self.api.ensure(info, ns, doc)

    def _write_admin_credentials(self, ca: certs.KeyPair) -> None:
        d = self.config.data_dir
        admin_crt = d / "pki" / "admin.crt"
        admin_key = d / "pki" / "admin.key"
        if admin_crt.exists() and admin_key.exists():
            admin = certs.KeyPair(admin_crt.read_bytes(), admin_key.read_bytes())
        else:
            admin = certs.issue(ca, "kubernetes-admin", organizations=[ADMIN_GROUP], client=True)
            certs.write_private(admin_key, admin.key_pem)
            admin_crt.write_bytes(admin.cert_pem)
        certs.write_private(
            d / "admin.kubeconfig", certs.kubeconfig(self.url, ca.cert_pem, "admin", admin).encode()
        )
        (d / "ca.crt").write_bytes(ca.cert_pem)
        tokfile = d / "tokens.csv"
        if not tokfile.exists():
            token = secrets.token_urlsafe(32)
            certs.write_private(tokfile, f'{token},admin-token,admin-token,"{ADMIN_GROUP}"\n'.encode())
            self.tokens.add(
                token, Identity("admin-token", (ADMIN_GROUP, "system:authenticated"), "admin-token")
            )

    # ---- HTTP ------------------------------------------------------------------------------

    def _identity(self, request: web.Request) -> Identity | None:
        ident = self._authenticate(request)
        user = request.headers.get(IMPERSONATE_USER, "")
        groups = request.headers.getall(IMPERSONATE_GROUP, [])
        if not user and not groups:
            return ident
        # Kubernetes impersonation, for admins only (we have no RBAC "impersonate" verb to grant):
        # cloudcore performs a node's forwarded MetaServer writes as that node, so the node rules
        # decide them exactly as if the node had called.
        if ident is None or not ident.is_admin:
            who = ident.user if ident is not None else "system:anonymous"
            raise ApiError(
                403, "Forbidden", f'users "{user}" is forbidden: User "{who}" cannot impersonate users'
            )
        if not user:
            raise ApiError(400, "BadRequest", f"{IMPERSONATE_GROUP} requires {IMPERSONATE_USER}")
        return Identity(user, (*groups, "system:authenticated"))

    def _authenticate(self, request: web.Request) -> Identity | None:
        authz = request.headers.get("Authorization", "")
        if authz.startswith("Bearer "):
            ident = self.tokens.authenticate(authz[7:].strip())
            if ident is None:
                raise ApiError(401, "Unauthorized", "Unauthorized: the bearer token is not valid")
            return ident
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport else None
        if sslobj is None:
            return None
        # The peer certificate is fixed for the connection's life: parse it once per connection.
        try:
            return self._conn_identity[sslobj]
        except KeyError:
            ident = self._conn_identity[sslobj] = identity_from_peercert(sslobj.getpeercert())
            return ident


IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"


# Decoding a big list allocates hundreds of thousands of dicts; with the default gen-0 threshold
# (700) the collector runs thousands of times per list and dominates its cost. Our objects are
# acyclic JSON trees, so collections can be rare; start-up objects are frozen out of them.
GC_GEN0_THRESHOLD = 50_000


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


Companion = Callable[["ApiServer"], contextlib.AbstractAsyncContextManager[object]]


async def serve(
    config: ApiServerConfig,
    ready: Callable[[ApiServer], None] | None = None,
    companions: list[Companion] | None = None,
) -> None:
    """Run until cancelled or signalled; shut down cleanly. Companions (the embedded controllers)
    start once the server serves and stop before it does."""
    import signal

    server = ApiServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for make in companions or ():
                await stack.enter_async_context(make(server))
            if ready is not None:
                ready(server)
            await stop.wait()
            log.info("shutting down")
    finally:
        await server.stop()
