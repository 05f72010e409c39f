"""``keadm firstboot`` (run by kubeedge-join.service): join the cloud with settings found on the device.

Settings, first found wins: the systemd credential ``kubeedge.join`` ($CREDENTIALS_DIRECTORY, then the
system credentials PID 1 received, e.g. from ``systemd.set_credential=kubeedge.join:...``), then
``kubeedge/join.yaml`` on the boot partition (/efi, /boot/efi, /boot). The document::

    cloud: 192.168.1.10:10000     # cloudhub (required)
    token: <keadm gettoken>       # required until the node has its certificate
    nodeName: hostname            # a DNS-1123 name, or "hostname" (default) or "machine-id";
                                  # "hostname" on a device still called localhost/debian: machine-id
    certPort: 10002               # bootstrap port (optional)
    labels: {site: berlin}        # node labels (optional)
    runtimeEndpoint: unix:///run/containerd/containerd.sock   # optional

Steps: node certificate → token removed from join.yaml → edgemesh and edgecore configs, the edgecore
config last (edgecore.service and this unit's condition key on it, so a crash in between redoes only
what is missing). Nothing here ever prints or logs the token. Problems are reported in STATUS= and
the journal, and waited out: missing or garbled settings and a refused token are re-read every
RECHECK_INTERVAL, an unreachable cloud is retried with capped backoff; the process does not exit
until it joined, so systemd never counts failures against the unit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge.pki import tokens
from kubeedge.pki.bootstrap import is_dns1123_subdomain
from kubeedge.pki.client import BootstrapError
from kubeedge.systemd import Notifier, setup_logging

from . import cli
from .bootfiles import (
    BOOT_DIRS,
    CONFIG_DIR,
    RECHECK_INTERVAL,
    Reporter,
    SettingsError,
    add_location_args,
    announce_done,
    credential_dirs,
    first_found,
    load_mapping,
    write_atomic,
)

log = logging.getLogger(__name__)

CREDENTIAL: Final = "kubeedge.join"
JOIN_FILE: Final = Path("kubeedge") / "join.yaml"
MACHINE_ID: Final = Path("/etc/machine-id")
# Hostnames a device has when nothing gave it one (systemd's and Debian's fallbacks, our own).
GENERIC_HOSTNAMES: Final = frozenset({"localhost", "localhost.localdomain", "debian", "edge-node"})
KEYS: Final = frozenset({"cloud", "token", "nodeName", "certPort", "labels", "runtimeEndpoint"})
# A refused token is retried unchanged this rarely (the cloud may have been at fault).
REFUSED_RETRY_INTERVAL: Final = 300.0
# An unreachable cloud: retry after 2, 4, 8 ... seconds, at most this long apart.
BACKOFF_MIN: Final = 2.0
BACKOFF_MAX: Final = 60.0
_TOKEN_LINE = re.compile(r"^token\s*:")


@dataclass(frozen=True)
class Paths:
    boot_dirs: Sequence[Path] = BOOT_DIRS
    credential_dirs: Sequence[Path] = ()  # default: $CREDENTIALS_DIRECTORY, then SYSTEM_CREDENTIALS
    config_dir: Path = CONFIG_DIR
    data_dir: Path = cli.EDGE_DATA_DIR
    machine_id: Path = MACHINE_ID

    @property
    def edgecore_config(self) -> Path:
        return self.config_dir / "edgecore.yaml"

    @property
    def edgemesh_config(self) -> Path:
        return self.config_dir / "edgemesh.yaml"

    def credential_candidates(self) -> list[Path]:
        return [d / CREDENTIAL for d in credential_dirs(self.credential_dirs)]

    def candidates(self) -> list[Path]:
        return self.credential_candidates() + [d / JOIN_FILE for d in self.boot_dirs]


@dataclass(frozen=True)
class JoinSettings:
    source: Path
    cloud_host: str
    hub_port: int
    cert_port: int
    node_name: str
    labels: dict[str, str] = field(default_factory=dict)
    runtime_endpoint: str = cli.DEFAULT_RUNTIME_ENDPOINT
    token: str = field(default="", repr=False)

    @property
    def is_credential(self) -> bool:
        return self.source.name == CREDENTIAL

    def token_expiry(self) -> dt.datetime | None:
        with contextlib.suppress(tokens.TokenError):
            return dt.datetime.fromtimestamp(tokens.jwt_expiry(tokens.split_token(self.token)[1]), dt.UTC)
        return None


def read_machine_id(machine_id: Path) -> str:
    try:
        mid = machine_id.read_text().strip().lower()
    except OSError as e:
        raise SettingsError(f"nodeName: machine-id: cannot read {machine_id}: {e.strerror}") from None
    if not re.fullmatch(r"[0-9a-f]{32}", mid):
        raise SettingsError(f"nodeName: machine-id: {machine_id} does not hold a machine id")
    return mid


def node_name(raw: str, machine_id: Path) -> str:
    if raw == "hostname":
        name = cli.node_name_from_hostname()
        # Every device flashed from one image has the same fallback hostname unless DHCP or a person
        # named it: as node names they would collide, so such a device is named by its machine id.
        return read_machine_id(machine_id) if name in GENERIC_HOSTNAMES else name
    if raw == "machine-id":
        return read_machine_id(machine_id)
    if not is_dns1123_subdomain(raw):
        raise SettingsError(
            f"nodeName {raw!r} is not a DNS-1123 name (lower-case letters, digits, '-', '.'); "
            "or use 'hostname' or 'machine-id'"
        )
    return raw


def parse(text: str, source: Path, *, machine_id: Path = MACHINE_ID, need_token: bool = True) -> JoinSettings:
    """Validate a join document; SettingsError names the first problem (and never shows the token)."""
    doc = load_mapping(text, source, KEYS, "at least 'cloud' and 'token'")
    cloud = doc.get("cloud")
    if not isinstance(cloud, str) or not cloud:
        raise SettingsError(f"{source}: 'cloud' (cloudhub HOST:PORT, e.g. 192.168.1.10:10000) is missing")
    try:
        host, hub_port = cli._parse_ipport(cloud)
    except cli.UsageError:
        raise SettingsError(f"{source}: cloud {cloud!r} is not HOST:PORT") from None
    cert_port = doc.get("certPort", cli.DEFAULT_CERT_PORT)
    if not isinstance(cert_port, int) or isinstance(cert_port, bool) or not 0 < cert_port < 65536:
        raise SettingsError(f"{source}: certPort {cert_port!r} is not a port number")
    token = doc.get("token")
    if token is None or token == "":
        if need_token:
            raise SettingsError(f"{source}: 'token' is missing (get one on the cloud with `keadm gettoken`)")
        token = ""
    elif not isinstance(token, str):
        raise SettingsError(f"{source}: 'token' must be a string")
    else:
        try:
            tokens.split_token(token)
        except tokens.TokenError as e:
            raise SettingsError(f"{source}: token: {e}") from None
    try:
        name = node_name(str(doc.get("nodeName", "hostname")), machine_id)
    except SettingsError as e:
        raise SettingsError(f"{source}: {e}") from None
    labels = doc.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and k for k in labels):
        raise SettingsError(f"{source}: 'labels' must be a mapping of names to values")
    endpoint = doc.get("runtimeEndpoint", cli.DEFAULT_RUNTIME_ENDPOINT)
    if not isinstance(endpoint, str):
        raise SettingsError(f"{source}: 'runtimeEndpoint' must be a string")
    try:
        cli.unix_socket_path(endpoint)
    except cli.UsageError:
        raise SettingsError(f"{source}: runtimeEndpoint {endpoint!r} is not a unix socket") from None
    return JoinSettings(
        source=source,
        cloud_host=host,
        hub_port=hub_port,
        cert_port=cert_port,
        node_name=name,
        labels={k: "" if v is None else str(v) for k, v in labels.items()},
        runtime_endpoint=endpoint,
        token=token.strip(),
    )


def locate(paths: Paths) -> tuple[Path, str]:
    """(source, text) of the first settings found; SettingsError lists where it looked."""
    found = first_found(paths.candidates())
    if found is not None:
        return found
    where = ", ".join(str(p) for p in paths.candidates())
    raise SettingsError(f"no join settings: looked for {where}")


def without_token(text: str, when: str) -> str:
    """join.yaml minus its token, comments and layout kept when the token is a plain top-level line."""
    lines = text.splitlines(keepends=True)
    kept = [ln for ln in lines if not _TOKEN_LINE.match(ln)]
    note = f"# token used by kubeedge-join at {when} and removed\n"
    candidate = "".join(kept)
    try:
        before, after = yaml.safe_load(text), yaml.safe_load(candidate)
    except yaml.YAMLError:
        after, before = None, {}
    if isinstance(before, dict) and isinstance(after, dict):
        expected = {k: v for k, v in before.items() if k != "token"}
        if after == expected:
            return candidate + note
    # A token in flow style or spread over lines: rewrite the document (comments are lost).
    doc = {k: v for k, v in (before or {}).items() if k != "token"} if isinstance(before, dict) else {}
    return yaml.safe_dump(doc, sort_keys=False) + note


def consume_token(settings: JoinSettings) -> str:
    """Remove the token from where it came from; returns what was done (for the journal)."""
    if settings.is_credential:
        return (
            f"the token stays in the read-only credential {settings.source}: remove it from the kernel "
            "command line or unit drop-in that sets it"
        )
    path = settings.source
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = path.read_text(errors="replace")
    write_atomic(path, without_token(text, stamp), 0o600)
    return f"token removed from {path}"


def edgemesh_document(settings: JoinSettings, config: Any) -> dict[str, Any]:
    """The mesh agent's config for this node: its name and the node certificate edgecore obtained."""
    return {
        "apiVersion": "agent.edgemesh.config.kubeedge.io/v1alpha1",
        "kind": "EdgeMeshAgent",
        "commonConfig": {"nodeName": settings.node_name},
        "modules": {
            "edgeTunnel": {
                "tlsCAFile": str(config.ca_file),
                "tlsCertFile": str(config.cert_file),
                "tlsPrivateKeyFile": str(config.key_file),
            }
        },
    }


class Refused(Exception):
    """The cloud answered and said no: the settings must change (or the cloud be fixed)."""


class FirstBoot:
    def __init__(
        self,
        paths: Paths,
        notifier: Notifier,
        *,
        recheck: float = RECHECK_INTERVAL,
        refused_retry: float = REFUSED_RETRY_INTERVAL,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ) -> None:
        self.paths = paths
        self.notifier = notifier
        self.recheck = recheck
        self.refused_retry = refused_retry
        self.backoff_min, self.backoff_max = backoff
        self.attempts = 0
        self.report = Reporter(notifier, log)

    def joined(self) -> bool:
        return self.paths.edgecore_config.exists()

    async def run(self) -> JoinSettings | None:
        """Until joined; returns the settings used (None when the node had joined already)."""
        if self.joined():
            self.notifier.ready(f"already joined ({self.paths.edgecore_config} exists)")
            return None
        backoff = self.backoff_min
        refused: tuple[str, float] | None = None  # (fingerprint of refused settings, when)
        loop = asyncio.get_running_loop()
        while True:
            try:
                settings, fingerprint = self._read()
            except SettingsError as e:
                self.report(f"waiting for join settings: {e}")
                await asyncio.sleep(self.recheck)
                continue
            if (
                refused is not None
                and refused[0] == fingerprint
                and loop.time() - refused[1] < self.refused_retry
            ):
                await asyncio.sleep(self.recheck)
                continue
            try:
                await self._join(settings)
            except Refused as e:
                refused = (fingerprint, loop.time())
                self.report(f"join refused: {e}; waiting for new settings in {settings.source}")
                await asyncio.sleep(self.recheck)
                continue
            except (OSError, BootstrapError) as e:
                self.report(
                    f"cloud {settings.cloud_host}:{settings.cert_port} unreachable ({e}); "
                    f"retrying in {backoff:.0f}s{self._expiry_note(settings)}"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            return settings

    def _read(self) -> tuple[JoinSettings, str]:
        source, text = locate(self.paths)
        has_cert = (self.paths.data_dir / "certs" / "server.crt").exists()
        settings = parse(text, source, machine_id=self.paths.machine_id, need_token=not has_cert)
        return settings, hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def _expiry_note(settings: JoinSettings) -> str:
        expiry = settings.token_expiry()
        if expiry is not None and expiry <= dt.datetime.now(dt.UTC):
            return f"; note: the token expired at {expiry:%Y-%m-%d %H:%M} UTC by this device's clock"
        return ""

    async def _join(self, settings: JoinSettings) -> None:
        from kubeedge.edgecore.app import CredentialsError, ensure_credentials
        from kubeedge.pki.client import CertificateRefused, PinError

        self.attempts += 1
        name = settings.node_name
        self.notifier.status(f"joining {settings.cloud_host}:{settings.hub_port} as node {name}")
        doc = cli.edgecore_document(
            data_dir=self.paths.data_dir,
            cloud_host=settings.cloud_host,
            hub_port=settings.hub_port,
            cert_port=settings.cert_port,
            token=settings.token,
            node_name=name,
            labels=settings.labels,
            runtime_endpoint=settings.runtime_endpoint,
        )
        try:
            doc, config = cli.edgecore_config(doc, [])
        except cli.UsageError as e:
            raise Refused(str(e)) from None
        try:
            await ensure_credentials(config)
        except PinError:
            raise Refused(
                "the token pins a different CA than the cloud serves (token from another cloud?)"
            ) from None
        except CertificateRefused as e:
            if e.status >= 500:
                raise
            expired = self._expiry_note(settings)
            raise Refused(
                f"the cloud refused the token or node name ({e.status} {e.reason}){expired}"
            ) from None
        except (CredentialsError, tokens.TokenError) as e:
            raise Refused(str(e)) from None
        log.info("node %s: certificate obtained from %s", name, settings.cloud_host, extra={"node": name})
        if settings.token:
            log.info("%s", consume_token(settings), extra={"node": name})
        doc["modules"]["edgeHub"].pop("token", None)  # the certificate is what edgecore uses from now on
        mesh = edgemesh_document(settings, config)
        write_atomic(self.paths.edgemesh_config, yaml.safe_dump(mesh, sort_keys=False), 0o644)
        # Last: its existence is "joined" for edgecore.service and for this unit's condition.
        write_atomic(self.paths.edgecore_config, yaml.safe_dump(doc, sort_keys=False), 0o600)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "firstboot",
        help="join with the settings on the boot partition or in systemd credentials (kubeedge-join.service)",
    )
    add_location_args(p, JOIN_FILE, CREDENTIAL, "edgecore/edgemesh configs")
    p.add_argument(
        "--data-dir", type=Path, default=cli.EDGE_DATA_DIR, help=f"edgecore state ({cli.EDGE_DATA_DIR})"
    )
    p.add_argument("--machine-id", type=Path, default=MACHINE_ID, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_firstboot)


def cmd_firstboot(a: argparse.Namespace, notifier: Notifier | None = None) -> int:
    setup_logging("kubeedge-join", "INFO")
    paths = Paths(
        boot_dirs=tuple(a.boot_dir) or BOOT_DIRS,
        credential_dirs=tuple(a.credentials_dir),
        config_dir=a.config_dir,
        data_dir=a.data_dir,
        machine_id=a.machine_id,
    )
    sd = notifier or Notifier()
    job = FirstBoot(paths, sd)
    try:
        settings = asyncio.run(job.run())
    except KeyboardInterrupt:
        sd.stopping("interrupted before joining")
        return 130
    if settings is not None:
        done = f"joined the cloud at {settings.cloud_host}:{settings.hub_port} as node {settings.node_name}"
        announce_done(sd, log, done, "edgecore starts next", node=settings.node_name)
    return 0
