"""Connection settings: kubeconfig files, in-cluster service accounts, and the TLS context built from them.

The common cases (certificate/key/CA as files or inline `*-data`, static tokens, `tokenFile`,
basic auth) are handled here without the official client. Only exec plugins and legacy
auth-providers fall back to the `kubernetes` package, which knows their many variants.

Secrets (token, key, password) are excluded from `repr` so a logged config never leaks them.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Projected service-account tokens rotate (about hourly), so token files are re-read this often.
TOKEN_FILE_REFRESH_SECONDS = 60.0


class ConfigError(Exception):
    """The kubeconfig (or in-cluster environment) is missing, malformed or incomplete."""


@dataclass
class KubeConfig:
    server: str
    ca_data: bytes | None = field(default=None, repr=False)  # PEM
    ca_file: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)  # PEM
    client_cert_file: str | None = None
    client_key_data: bytes | None = field(default=None, repr=False)  # PEM
    client_key_file: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None
    namespace: str = "default"
    # Produces a fresh bearer token (exec plugins, auth-providers); takes precedence over `token`.
    token_provider: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)
    _file_token: str | None = field(default=None, init=False, repr=False, compare=False)
    _file_token_read_at: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, context: str | None = None) -> KubeConfig:
        """Load a kubeconfig; `path` defaults to $KUBECONFIG (first entry) or ~/.kube/config."""
        return load_kubeconfig(path, context)

    @classmethod
    def in_cluster(cls, sa_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR) -> KubeConfig:
        return in_cluster(sa_dir)

    @classmethod
    def auto(cls, context: str | None = None) -> KubeConfig:
        """$KUBECONFIG or ~/.kube/config if present, else the in-cluster service account."""
        if os.environ.get("KUBECONFIG") or _default_kubeconfig_path().exists():
            return load_kubeconfig(None, context)
        return in_cluster()

    # -- auth ------------------------------------------------------------------------------------

    def bearer_token(self) -> str | None:
        if self.token_provider is not None:
            tok = self.token_provider()
            if tok:
                return tok
        if self.token_file:
            now = time.monotonic()
            if self._file_token is None or now - self._file_token_read_at >= TOKEN_FILE_REFRESH_SECONDS:
                try:
                    self._file_token = Path(self.token_file).read_text().strip()
                    self._file_token_read_at = now
                except OSError as e:
                    # Keep the last good token: a rotation in progress must not break requests.
                    log.warning("cannot read token file %s: %s", self.token_file, e)
            if self._file_token:
                return self._file_token
        return self.token

    def auth_headers(self) -> dict[str, str]:
        tok = self.bearer_token()
        if tok:
            return {"Authorization": f"Bearer {tok}"}
        if self.username is not None and self.password is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}

    # -- TLS -------------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https servers (None for plain http)."""
        if not self.server.startswith("https://"):
            return None
        cadata = self.ca_data.decode() if self.ca_data else None
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif cadata or self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file, cadata=cadata)
        else:
            ctx = ssl.create_default_context()  # system trust store
        if self.client_cert_file or self.client_cert_data:
            _load_client_cert(ctx, self)
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cfg: KubeConfig) -> None:
    if cfg.client_cert_file and not cfg.client_cert_data and not cfg.client_key_data:
        ctx.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
        return
    cert = cfg.client_cert_data or Path(cfg.client_cert_file or "").read_bytes()
    if cfg.client_key_data:
        key = cfg.client_key_data
    elif cfg.client_key_file:
        key = Path(cfg.client_key_file).read_bytes()
    else:
        key = b""  # the certificate PEM may carry the key itself
    _load_cert_chain_from_memory(ctx, cert.rstrip(b"\n") + b"\n" + key)


def _load_cert_chain_from_memory(ctx: ssl.SSLContext, pem: bytes) -> None:
    """`SSLContext.load_cert_chain` only takes paths; hand it one that never touches a disk if we can.

    On Linux a memfd (anonymous, process-private memory file) is used via /proc/self/fd. Elsewhere
    the PEM goes to a 0600 file inside a fresh 0700 directory, removed straight after loading.
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        fd = memfd_create("kube-client-cert", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        finally:
            os.close(fd)
    tmpdir = tempfile.mkdtemp(prefix="kube-client-")  # mode 0700
    path = os.path.join(tmpdir, "client.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(path)
    finally:
        try:
            os.unlink(path)
        finally:
            os.rmdir(tmpdir)


# -- kubeconfig files ------------------------------------------------------------------------------


def _default_kubeconfig_path() -> Path:
    return Path.home() / ".kube" / "config"


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for e in entries or []:
        if isinstance(e, dict) and e.get("name") == name:
            body = e.get(what)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"{path}: no {what} named {name!r}")


def _b64(value: str, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(value, validate=False)
    except ValueError as e:
        raise ConfigError(f"{path}: {what} is not valid base64") from e


def _resolve(base: Path, p: str | None) -> str | None:
    # Relative paths in a kubeconfig are relative to the file that names them (kubectl semantics).
    if not p:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else base / q)


def load_kubeconfig(path: str | os.PathLike[str] | None = None, context: str | None = None) -> KubeConfig:
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        # Merging several files is rarely needed by our components; use the first existing entry.
        candidates = [Path(p) for p in env.split(os.pathsep) if p] or [_default_kubeconfig_path()]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise ConfigError(f"no kubeconfig found (tried {', '.join(map(str, candidates))})")
        p = found
    else:
        p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read kubeconfig {p}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: not a kubeconfig")
    return config_from_dict(doc, context, base_dir=p.parent, source=p)


def config_from_dict(
    doc: dict[str, Any],
    context: str | None = None,
    *,
    base_dir: Path | None = None,
    source: Path | None = None,
) -> KubeConfig:
    """Resolve one context of an already-parsed kubeconfig document."""
    src = source or Path("<kubeconfig>")
    base = base_dir or Path.cwd()
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError(f"{src}: no context given and no current-context set")
    ctx = _named(doc.get("contexts"), ctx_name, "context", src)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", src)
    user = _named(doc.get("users"), ctx["user"], "user", src) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{src}: cluster {ctx.get('cluster')!r} has no server")

    cfg = KubeConfig(
        server=str(server),
        ca_data=_b64(cluster["certificate-authority-data"], "certificate-authority-data", src)
        if cluster.get("certificate-authority-data")
        else None,
        ca_file=_resolve(base, cluster.get("certificate-authority")),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=ctx.get("namespace") or "default",
        client_cert_data=_b64(user["client-certificate-data"], "client-certificate-data", src)
        if user.get("client-certificate-data")
        else None,
        client_cert_file=_resolve(base, user.get("client-certificate")),
        client_key_data=_b64(user["client-key-data"], "client-key-data", src)
        if user.get("client-key-data")
        else None,
        client_key_file=_resolve(base, user.get("client-key")),
        token=user.get("token") or None,
        token_file=_resolve(base, user.get("tokenFile")),
        username=user.get("username"),
        password=user.get("password"),
    )
    if (user.get("exec") or user.get("auth-provider")) and not cfg.token and not cfg.token_file:
        cfg.token_provider = _official_client_token_provider(doc, ctx_name)
    return cfg


def _official_client_token_provider(doc: dict[str, Any], context: str) -> Callable[[], str | None]:
    """Exec plugins / auth-providers: let the official client run them (it also caches expiry)."""
    from kubernetes import client as k8s_client  # imported lazily: heavy and rarely needed
    from kubernetes import config as k8s_config

    conf = k8s_client.Configuration()
    k8s_config.load_kube_config_from_dict(doc, context=context, client_configuration=conf)

    def provider() -> str | None:
        hook = getattr(conf, "refresh_api_key_hook", None)
        if hook is not None:
            hook(conf)
        value = (conf.api_key or {}).get("authorization") or (conf.api_key or {}).get("BearerToken")
        if not value:
            return None
        return str(value).removeprefix("Bearer ").strip()

    return provider


def in_cluster(sa_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    """The pod's service account: token + CA from `sa_dir`, server from KUBERNETES_SERVICE_HOST/PORT."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    d = Path(sa_dir)
    token_file = d / "token"
    if not token_file.exists():
        raise ConfigError(f"service account token {token_file} not found")
    ns_file = d / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    ca = d / "ca.crt"
    return KubeConfig(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(token_file),
        namespace=namespace or "default",
    )
