"""keadm firstboot: settings found, validated and consumed; problems reported in STATUS= (over a real
notify socket) while it keeps waiting; the join itself against a real bootstrap server over TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from kubeedge.keadm import cli
from kubeedge.keadm.firstboot import (
    CREDENTIAL,
    FirstBoot,
    JoinSettings,
    Paths,
    SettingsError,
    consume_token,
    locate,
    parse,
    without_token,
)
from kubeedge.pki import certs, tokens
from kubeedge.pki.bootstrap import BootstrapConfig, BootstrapServer
from kubeedge.systemd import Notifier
from tests.cluster import wait_for
from tests.unit.conftest import Statuses

HOST = "127.0.0.1"
MACHINE_ID = "0123456789abcdef0123456789abcdef"
# Shaped like a real token (hash '.' JWT) so that it passes the format check; never valid anywhere.
FAKE_TOKEN = "a" * 64 + ".eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJl"


def settings_text(token: str = FAKE_TOKEN, **extra: object) -> str:
    doc: dict[str, object] = {"cloud": "10.0.0.1:10000", "token": token, **extra}
    return yaml.safe_dump(doc)


@pytest.fixture
def machine_id(tmp_path: Path) -> Path:
    p = tmp_path / "machine-id"
    p.write_text(MACHINE_ID + "\n")
    return p


# ---- parsing and validation ------------------------------------------------------------------------


def test_a_full_document(machine_id: Path) -> None:
    text = settings_text(
        nodeName="machine-id",
        certPort=10012,
        labels={"site": "berlin", "tier": None},
        runtimeEndpoint="unix:///run/k3s/containerd.sock",
    )
    s = parse(text, Path("join.yaml"), machine_id=machine_id)
    assert (s.cloud_host, s.hub_port, s.cert_port) == ("10.0.0.1", 10000, 10012)
    assert s.node_name == MACHINE_ID
    assert s.labels == {"site": "berlin", "tier": ""}
    assert s.runtime_endpoint == "unix:///run/k3s/containerd.sock"
    assert s.token == FAKE_TOKEN and FAKE_TOKEN not in repr(s)


def test_defaults(machine_id: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "Shelf_7.Site-B")
    s = parse("cloud: cloud.example.org:10000\ntoken: " + FAKE_TOKEN, Path("j"), machine_id=machine_id)
    assert s.node_name == "shelf-7.site-b"
    assert s.cert_port == cli.DEFAULT_CERT_PORT and s.runtime_endpoint == cli.DEFAULT_RUNTIME_ENDPOINT
    assert parse(settings_text(nodeName="edge-7"), Path("j")).node_name == "edge-7"


@pytest.mark.parametrize("hostname", ["localhost", "localhost.localdomain", "debian", ""])
def test_a_device_nobody_named_is_named_by_its_machine_id(
    machine_id: Path, monkeypatch: pytest.MonkeyPatch, hostname: str
) -> None:
    # A fleet flashed from one image shares the fallback hostname: as node names they would collide.
    monkeypatch.setattr(cli.socket, "gethostname", lambda: hostname)
    assert parse(settings_text(), Path("j"), machine_id=machine_id).node_name == MACHINE_ID
    assert parse(settings_text(nodeName="hostname"), Path("j"), machine_id=machine_id).node_name == MACHINE_ID


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cloud: [unclosed\ntoken: " + FAKE_TOKEN, "not valid YAML at line"),
        ("- a list\n", "expected a mapping"),
        (settings_text(clodu="x"), "unknown key(s) clodu"),
        ("token: " + FAKE_TOKEN, "'cloud'"),
        (settings_text().replace("10.0.0.1:10000", "10.0.0.1"), "is not HOST:PORT"),
        ("cloud: 10.0.0.1:10000\n", "'token' is missing"),
        (settings_text(token="not-a-token"), "token: malformed token"),
        (settings_text(certPort=70000), "certPort 70000"),
        (settings_text(nodeName="Edge_1"), "not a DNS-1123 name"),
        (settings_text(labels=["a"]), "'labels' must be a mapping"),
        (settings_text(runtimeEndpoint="tcp://1.2.3.4:1"), "is not a unix socket"),
    ],
)
def test_garbled_settings_say_what_is_wrong_without_the_token(text: str, expected: str) -> None:
    with pytest.raises(SettingsError) as e:
        parse(text, Path("/boot/kubeedge/join.yaml"))
    assert expected in str(e.value)
    assert "/boot/kubeedge/join.yaml" in str(e.value)
    assert FAKE_TOKEN not in str(e.value) and "eyJ" not in str(e.value)


def test_machine_id_must_be_readable_and_a_machine_id(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        parse(settings_text(nodeName="machine-id"), Path("j"), machine_id=tmp_path / "none")
    (tmp_path / "bad").write_text("uninitialized\n")
    with pytest.raises(SettingsError, match="does not hold a machine id"):
        parse(settings_text(nodeName="machine-id"), Path("j"), machine_id=tmp_path / "bad")


def test_token_not_needed_once_the_certificate_exists() -> None:
    s = parse("cloud: 10.0.0.1:10000\n", Path("j"), need_token=False)
    assert s.token == ""


# ---- finding and consuming ------------------------------------------------------------------------


def paths_in(tmp_path: Path, machine_id: Path | None = None) -> Paths:
    return Paths(
        boot_dirs=(tmp_path / "efi", tmp_path / "boot"),
        credential_dirs=(tmp_path / "creds",),
        config_dir=tmp_path / "etc/kubeedge/config",
        data_dir=tmp_path / "var/lib/kubeedge/edge",
        machine_id=machine_id or tmp_path / "machine-id",
    )


def test_locate_prefers_credentials_then_the_first_boot_dir(tmp_path: Path) -> None:
    p = paths_in(tmp_path)
    with pytest.raises(SettingsError) as e:
        locate(p)
    assert "no join settings" in str(e.value) and str(tmp_path / "boot/kubeedge/join.yaml") in str(e.value)
    for d in ("boot", "efi"):
        (tmp_path / d / "kubeedge").mkdir(parents=True)
        (tmp_path / d / "kubeedge/join.yaml").write_text(f"# {d}\n")
    assert locate(p)[0] == tmp_path / "efi/kubeedge/join.yaml"
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / CREDENTIAL).write_text("# credential\n")
    assert locate(p) == (tmp_path / "creds" / CREDENTIAL, "# credential\n")


def test_credentials_directory_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    found = Paths().credential_candidates()
    assert found[0] == tmp_path / CREDENTIAL and found[1] == Path("/run/credentials/@system") / CREDENTIAL


def test_without_token_keeps_comments_and_other_keys() -> None:
    text = (
        "# site 12, rack 3\ncloud: 10.0.0.1:10000   # the VIP\ntoken: "
        + FAKE_TOKEN
        + "\nnodeName: hostname\n"
    )
    out = without_token(text, "2030-01-01 00:00 UTC")
    assert FAKE_TOKEN not in out
    assert out.startswith("# site 12, rack 3\ncloud: 10.0.0.1:10000   # the VIP\nnodeName: hostname\n")
    assert "token used by kubeedge-join at 2030-01-01 00:00 UTC" in out
    assert yaml.safe_load(out) == {"cloud": "10.0.0.1:10000", "nodeName": "hostname"}


def test_without_token_rewrites_a_flow_style_document() -> None:
    text = "{cloud: '10.0.0.1:10000', token: '" + FAKE_TOKEN + "'}\n"
    out = without_token(text, "now")
    assert FAKE_TOKEN not in out and yaml.safe_load(out) == {"cloud": "10.0.0.1:10000"}


def test_consume_token_rewrites_join_yaml_but_cannot_touch_a_credential(tmp_path: Path) -> None:
    f = tmp_path / "join.yaml"
    f.write_text(settings_text())
    s = parse(f.read_text(), f)
    assert consume_token(s) == f"token removed from {f}"
    assert "token" not in yaml.safe_load(f.read_text())
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))
    cred = JoinSettings(tmp_path / CREDENTIAL, "h", 1, 2, "n", token=FAKE_TOKEN)
    assert "read-only credential" in consume_token(cred)


# ---- the run loop, over a real notify socket -------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def bootstrap(tmp_path: Path) -> AsyncIterator[BootstrapServer]:
    certs.create_ca().save(tmp_path / "ca.crt", tmp_path / "ca.key")
    ca = certs.KeyPair.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    srv = BootstrapServer(BootstrapConfig(host=HOST, port=0), ca)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def write_join(p: Paths, text: str) -> Path:
    f = p.boot_dirs[1] / "kubeedge/join.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


async def test_waits_for_settings_then_for_the_network_then_joins(
    tmp_path: Path,
    machine_id: Path,
    notify_socket: tuple[socket.socket, Notifier],
    bootstrap: BootstrapServer,
) -> None:
    rx, notifier = notify_socket
    statuses = Statuses(rx)
    p = paths_in(tmp_path, machine_id)
    job = FirstBoot(p, notifier, recheck=0.05, refused_retry=60, backoff=(0.05, 0.2))
    task = asyncio.create_task(job.run())
    try:
        await wait_for(statuses.having("waiting for join settings: no join settings"), what="missing report")
        write_join(p, "cloud: [garbled")
        await wait_for(statuses.having("not valid YAML at line 1"), what="garbled report")
        assert not task.done()
        token = tokens.make_token(bootstrap.ca, dt.timedelta(hours=1))
        # The cloud's bootstrap port is closed: network trouble, retried with backoff.
        dead = closed_port()
        write_join(p, f"cloud: {HOST}:10000\ncertPort: {dead}\ntoken: {token}\nnodeName: machine-id\n")
        await wait_for(statuses.having(f"cloud {HOST}:{dead} unreachable"), what="unreachable report")
        assert not task.done() and job.attempts >= 1
        # The network comes back (the right port): joined, token consumed, configs written.
        f = write_join(
            p, f"cloud: {HOST}:10000\ncertPort: {bootstrap.port}\ntoken: {token}\nnodeName: machine-id\n"
        )
        settings = await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert settings is not None and settings.node_name == MACHINE_ID
    assert token not in f.read_text() and "token used by kubeedge-join" in f.read_text()
    cfg = yaml.safe_load(p.edgecore_config.read_text())
    assert "token" not in cfg["modules"]["edgeHub"]
    assert cfg["modules"]["edged"]["hostnameOverride"] == MACHINE_ID
    assert cfg["modules"]["edgeHub"]["httpServer"] == f"https://{HOST}:{bootstrap.port}"
    assert stat.S_IMODE(p.edgecore_config.stat().st_mode) == 0o600
    assert (p.data_dir / "certs/server.crt").exists() and (p.data_dir / "ca/rootCA.crt").exists()
    mesh = yaml.safe_load(p.edgemesh_config.read_text())
    assert mesh["commonConfig"]["nodeName"] == MACHINE_ID
    assert mesh["modules"]["edgeTunnel"]["tlsCertFile"] == str(p.data_dir / "certs/server.crt")
    # The STATUS lines never carried the token.
    assert not any(token in m or token.split(".")[1] in m for m in statuses.drain())
    # Booting again: joined already, nothing to do (and no network needed).
    again = FirstBoot(p, notifier)
    assert await asyncio.wait_for(again.run(), 5) is None
    await wait_for(statuses.having("READY=1\nSTATUS=already joined"), what="ready on a joined node")


async def test_an_expired_token_is_reported_and_a_fresh_one_is_picked_up(
    tmp_path: Path, notify_socket: tuple[socket.socket, Notifier], bootstrap: BootstrapServer
) -> None:
    rx, notifier = notify_socket
    statuses = Statuses(rx)
    p = paths_in(tmp_path)
    old = tokens.make_token(
        bootstrap.ca, dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC).timestamp() - 7200
    )
    write_join(p, f"cloud: {HOST}:10000\ncertPort: {bootstrap.port}\ntoken: {old}\nnodeName: edge-x\n")
    job = FirstBoot(p, notifier, recheck=0.05, refused_retry=60, backoff=(0.05, 0.2))
    task = asyncio.create_task(job.run())
    try:
        await wait_for(statuses.having("join refused"), what="refusal report")
        report = next(m for m in statuses.drain() if "join refused" in m)
        assert "the token expired at" in report and old not in report
        attempts = job.attempts
        # Unchanged settings are not hammered against the cloud while waiting (refused_retry=60s).
        await wait_for(statuses.having("join refused"), what="still waiting")
        assert job.attempts == attempts and not task.done()
        fresh = tokens.make_token(bootstrap.ca, dt.timedelta(hours=1))
        write_join(p, f"cloud: {HOST}:10000\ncertPort: {bootstrap.port}\ntoken: {fresh}\nnodeName: edge-x\n")
        settings = await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert settings is not None and p.edgecore_config.exists()


def test_firstboot_is_a_keadm_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = paths_in(tmp_path)
    p.config_dir.mkdir(parents=True)
    p.edgecore_config.write_text("joined\n")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    a = cli.parser().parse_args(
        ["firstboot", "--boot-dir", str(tmp_path / "boot"), "--config-dir", str(p.config_dir)]
    )
    assert a.func(a) == 0
    assert os.environ.get("NOTIFY_SOCKET") is None


def test_edgemesh_document_is_a_valid_agent_config() -> None:
    """What firstboot writes for the mesh agent must load (an unknown key would crash-loop the unit)."""
    from edgemesh.config import from_dict
    from kubeedge.keadm.firstboot import edgemesh_document

    class Settings:
        node_name = "edge-1"

    class Config:
        ca_file, cert_file, key_file = Path("/ca.crt"), Path("/n.crt"), Path("/n.key")

    cfg = from_dict(edgemesh_document(Settings(), Config()))  # type: ignore[arg-type]
    assert cfg is not None
