"""keadm firstboot-cloud: optional settings validated into a cloudcore config that loads; wrong settings
reported in STATUS= (over a real notify socket) while it waits; and the parsing of /proc behind the
host-address fallback (against real addresses: tests/integration/test_host_addresses.py)."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest
import yaml

from kubeedge.cloudcore import config as cc_config
from kubeedge.keadm import cli
from kubeedge.keadm.cloudboot import CloudFirstBoot, CloudPaths, cloudcore_document, parse
from kubeedge.keadm.firstboot import SettingsError
from kubeedge.runtime.hostaddrs import global_ipv6, host_addresses, local_ipv4
from kubeedge.systemd import Notifier
from tests.cluster import wait_for
from tests.unit.conftest import Statuses

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.213.5.0/24 2 0 2
        |-- 10.213.5.0
           /24 link UNICAST
        |-- 10.213.5.1
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.213.5.1
        /32 host LOCAL
     |-- 192.168.7.9
        /32 host LOCAL
     |-- 192.168.7.255
        /32 link BROADCAST
"""
IF_INET6 = """\
20010db8000000000000000000000005 02 40 00 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
garbage
"""


def test_host_addresses_from_proc_text(tmp_path: Path) -> None:
    assert local_ipv4(FIB_TRIE) == ["10.213.5.1", "192.168.7.9"]
    assert global_ipv6(IF_INET6) == ["2001:db8::5"]
    (tmp_path / "fib").write_text(FIB_TRIE)
    assert host_addresses(tmp_path / "fib", tmp_path / "missing") == ["10.213.5.1", "192.168.7.9"]
    # This machine's own /proc: loopback never appears, whatever else does.
    assert not {"127.0.0.1", "::1"} & set(host_addresses())


def paths_in(tmp_path: Path) -> CloudPaths:
    return CloudPaths(
        boot_dirs=(tmp_path / "efi", tmp_path / "boot"),
        credential_dirs=(tmp_path / "creds",),
        config_dir=tmp_path / "etc/config",
        data_dir=tmp_path / "var/cloud",
    )


def test_no_settings_means_the_defaults(tmp_path: Path) -> None:
    p = paths_in(tmp_path)
    doc = cloudcore_document(p, None, "")
    config = cc_config.CloudCoreConfig.from_document(doc)
    assert config.data_dir == p.data_dir
    assert config.modules.cloud_hub.advertise_address == ()
    assert config.modules.cloud_stream.enable  # kubectl logs/exec work on an appliance cloud
    assert config.embedded_api


def test_settings_set_advertise_addresses_and_any_cloudcore_key(tmp_path: Path) -> None:
    p = paths_in(tmp_path)
    src = tmp_path / "cloud.yaml"
    text = (
        "advertiseAddress: 10.1.2.3\nset:\n  modules.cloudHub.nodeLimit: 42\n  logLevel: debug\n"
        "  embedded.listen: '0.0.0.0:6443'\n"
    )
    config = cc_config.CloudCoreConfig.from_document(cloudcore_document(p, src, text))
    assert config.modules.cloud_hub.advertise_address == ("10.1.2.3",)
    assert config.modules.cloud_hub.node_limit == 42
    assert config.log_level == "debug" and config.embedded.listen == "0.0.0.0:6443"
    listed = "set: ['modules.cloudHub.nodeLimit=7']\nadvertiseAddress: [a.example, 10.0.0.1]\n"
    config = cc_config.CloudCoreConfig.from_document(cloudcore_document(p, src, listed))
    assert config.modules.cloud_hub.node_limit == 7
    assert config.modules.cloud_hub.advertise_address == ("a.example", "10.0.0.1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("advertiseAddress: [10.0.0.1\n", "not valid YAML at line"),
        ("- a\n", "expected a mapping"),
        ("advertise: 10.0.0.1\n", "unknown key(s) advertise"),
        ("advertiseAddress: {a: 1}\n", "'advertiseAddress' must be"),
        ("set: 3\n", "'set' must map"),
        ("advertiseAddress: 'not an address!'\n", "neither an IP address nor a DNS name"),
        ("set: {modules.cloudHub.nodeLimit: many}\n", "nodeLimit"),
        ("set: {modules.nosuch.key: 1}\n", "nosuch"),
        ("set: {'modules..nodeLimit': 1}\n", "expected key.path=value"),
        ("set: {logLevel.x: 1}\n", "logLevel is not a mapping"),
    ],
)
def test_wrong_settings_say_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    src = tmp_path / "cloud.yaml"
    with pytest.raises(SettingsError, match=r"cloud\.yaml") as e:
        cloudcore_document(paths_in(tmp_path), src, text)
    assert expected in str(e.value)
    assert parse("", src) == ([], [])


async def test_waits_out_wrong_settings_then_writes_the_config_once(
    tmp_path: Path, notify_socket: tuple[socket.socket, Notifier]
) -> None:
    rx, notifier = notify_socket
    statuses = Statuses(rx)
    p = paths_in(tmp_path)
    settings = p.boot_dirs[1] / "kubeedge/cloud.yaml"
    settings.parent.mkdir(parents=True)
    settings.write_text("advertiseAddress: [10.0.0.1\n")
    task = asyncio.create_task(CloudFirstBoot(p, notifier, recheck=0.05).run())
    try:
        await wait_for(
            statuses.having("waiting for usable cloud settings"), what="the garbled settings reported"
        )
        assert not task.done() and not p.cloudcore_config.exists()
        settings.write_text("advertiseAddress: [10.0.0.1]\n")
        done = await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
    assert "settings from" in done and str(settings) in done
    assert stat.S_IMODE(p.cloudcore_config.stat().st_mode) == 0o600
    written = yaml.safe_load(p.cloudcore_config.read_text())
    assert written["modules"]["cloudHub"]["advertiseAddress"] == ["10.0.0.1"]
    # Initialised: a later boot changes nothing, even with other settings present.
    settings.write_text("advertiseAddress: [10.9.9.9]\n")
    again = await asyncio.wait_for(CloudFirstBoot(p, notifier).run(), 5)
    assert again.startswith("already initialised")
    assert yaml.safe_load(p.cloudcore_config.read_text()) == written


def test_a_credential_wins_over_the_boot_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = paths_in(tmp_path)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds/kubeedge.cloud").write_text("advertiseAddress: cred.example\n")
    (tmp_path / "efi/kubeedge").mkdir(parents=True)
    (tmp_path / "efi/kubeedge/cloud.yaml").write_text("advertiseAddress: file.example\n")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    a = cli.parser().parse_args(
        [
            "firstboot-cloud",
            "--boot-dir", str(tmp_path / "efi"),
            "--credentials-dir", str(tmp_path / "creds"),
            "--config-dir", str(p.config_dir),
            "--data-dir", str(p.data_dir),
        ]
    )  # fmt: skip
    assert a.func(a) == 0
    written = yaml.safe_load(p.cloudcore_config.read_text())
    assert written["modules"]["cloudHub"]["advertiseAddress"] == ["cred.example"]
    assert written["dataDir"] == str(p.data_dir)
