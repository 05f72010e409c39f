"""The packaged unit files: systemd's own verifier (systemd-analyze verify in a scratch root holding
the host's system units), plus the settings the daemons rely on, read with a unit-file parser."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubeedge import systemd
from kubeedge.keadm import cli

HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)
VENV_BIN = Path("opt/kubeedge/venv/bin")


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (unit files repeat keys; an empty assignment resets the list)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        values = out[section].setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return out


def words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> set[str]:
    return {w for v in unit[section].get(key, []) for w in v.split()}


def scratch_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root with the host's system units, stub executables where ExecStart points, and ``units``."""
    assert HOST_UNITS is not None
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / VENV_BIN).mkdir(parents=True)
    for tool in ("cloudcore", "edgecore", "edgemesh", "keadm"):
        stub = root / VENV_BIN / tool
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    etc = root / "etc/systemd/system"
    for name, text in units.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text)
    return root


def verify(root: Path, names: list[str]) -> str:
    paths = [str(root / "etc/systemd/system" / n) for n in names]
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *paths], capture_output=True, text=True, timeout=60
    )
    return (done.stdout + done.stderr).strip()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or HOST_UNITS is None, reason="needs systemd")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    root = scratch_root(tmp_path, {n: systemd.unit_text(n) for n in systemd.UNITS})
    assert verify(root, list(systemd.UNITS)) == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or HOST_UNITS is None, reason="needs systemd")
def test_the_verifier_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = systemd.unit_text("edgecore.service").replace("Type=notify", "Type=notfy")
    root = scratch_root(tmp_path, {"edgecore.service": broken})
    assert "Failed to parse service type" in verify(root, ["edgecore.service"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or HOST_UNITS is None, reason="needs systemd")
def test_keadm_dropin_verifies_on_top_of_the_packaged_unit(tmp_path: Path) -> None:
    for name in ("cloudcore", "edgecore"):
        d = cli.Daemon(name, tmp_path / name)
        units = {f"{name}.service": systemd.unit_text(f"{name}.service")}
        units[f"{name}.service.d/keadm.conf"] = cli.unit_dropin(d)
        root = scratch_root(tmp_path / f"r-{name}", units)
        # The drop-in's ExecStart is this interpreter, which exists inside the scratch root only by path.
        exe = root / sys.executable.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
        assert verify(root, [f"{name}.service"]) == ""
        merged = parse(units[f"{name}.service"] + units[f"{name}.service.d/keadm.conf"])
        assert merged["Service"]["ExecStart"] == [" ".join(d.command())]
        assert merged["Unit"]["ConditionPathExists"] == [str(d.config)]


@pytest.mark.parametrize("name", systemd.UNITS)
def test_every_unit_is_notify_restartable_and_packaged(name: str) -> None:
    text = systemd.unit_text(name)
    configparser.ConfigParser(strict=False, interpolation=None).read_string(text)  # well-formed INI
    unit = parse(text)
    svc = unit["Service"]
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["ExecStart"][0].startswith(f"/{VENV_BIN}/")
    assert "NoNewPrivileges" in svc and "CapabilityBoundingSet" in svc
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in words(unit, "Unit", "After")


@pytest.mark.parametrize("name", ["cloudcore.service", "edgecore.service", "edgemesh.service"])
def test_daemons_have_a_watchdog_and_a_stop_timeout(name: str) -> None:
    svc = parse(systemd.unit_text(name))["Service"]
    assert int(svc["WatchdogSec"][0]) > 0 and int(svc["TimeoutStopSec"][0]) > 0


def test_edgecore_keeps_the_host_mount_namespace_and_orders_after_its_dependencies() -> None:
    unit = parse(systemd.unit_text("edgecore.service"))
    # Each of these would give edgecore a private mount namespace: pod volume mounts would then be
    # invisible to containerd.
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "PrivateDevices"):
        assert key not in unit["Service"], key
    assert {"containerd.service", "mosquitto.service", "kubeedge-join.service"} <= words(
        unit, "Unit", "After"
    )
    assert "containerd.service" in words(unit, "Unit", "Wants")
    assert unit["Unit"]["ConditionPathExists"] == ["/etc/kubeedge/config/edgecore.yaml"]
    assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"} <= words(unit, "Service", "CapabilityBoundingSet")


def test_first_boot_join_never_trips_the_start_limit_and_precedes_edgecore() -> None:
    unit = parse(systemd.unit_text("kubeedge-join.service"))
    assert unit["Unit"]["ConditionPathExists"] == ["!/etc/kubeedge/config/edgecore.yaml"]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert {"edgecore.service", "edgemesh.service"} <= words(unit, "Unit", "Before")
    assert unit["Service"]["TimeoutStartSec"] == ["infinity"]
    assert unit["Service"]["ExecStart"] == [f"/{VENV_BIN}/keadm firstboot"]
    assert {"/etc/kubeedge", "/var/lib/kubeedge", "-/boot"} <= words(unit, "Service", "ReadWritePaths")


def test_cloud_first_boot_precedes_cloudcore_and_never_trips_the_start_limit() -> None:
    unit = parse(systemd.unit_text("kubeedge-init.service"))
    assert unit["Unit"]["ConditionPathExists"] == ["!/etc/kubeedge/config/cloudcore.yaml"]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert "cloudcore.service" in words(unit, "Unit", "Before")
    assert unit["Service"]["ExecStart"] == [f"/{VENV_BIN}/keadm firstboot-cloud"]
    # What it writes is what cloudcore's unit waits for.
    cloudcore = parse(systemd.unit_text("cloudcore.service"))
    assert cloudcore["Unit"]["ConditionPathExists"] == ["/etc/kubeedge/config/cloudcore.yaml"]


def test_cloudcore_is_confined_to_its_state() -> None:
    svc = parse(systemd.unit_text("cloudcore.service"))["Service"]
    assert svc["ProtectSystem"] == ["strict"] and svc["ReadWritePaths"] == ["/var/lib/kubeedge"]
    assert svc["PrivateTmp"] == ["yes"]


def test_unknown_unit_name() -> None:
    with pytest.raises(KeyError):
        systemd.unit_text("sshd.service")
