"""The optional ssh profile (`make image IMAGE_SSH=yes`): the image carries no SSH host keys, a booted
device makes its own, root logs in with the key put on the ESP as kubeedge/authorized_keys (and with no
other), and the edge's units are there as in the plain image."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import wait_for
from tests.image import machine as m

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

WIRE_INDEX = 4
SSH_DEADLINE_S = 180.0
SSH_OPTS = (
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes",
)  # fmt: skip


@pytest.fixture(scope="module")
def ssh_disk() -> Path:
    return m.build_image(m.PROFILE, ssh=True)


@pytest.fixture(scope="module")
def ssh_root(ssh_disk: Path, image_tmp: Path) -> Iterator[Path]:
    with m.mounted_root(ssh_disk, image_tmp / "ssh-root") as root:
        yield root


def keypair(where: Path, name: str) -> Path:
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def banner(address: str) -> bool:
    with socket.socket() as s:
        s.settimeout(2.0)
        try:
            s.connect((address, 22))
            return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False


def ssh(key: Path, address: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", *SSH_OPTS, "-i", str(key), f"root@{address}", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_image_carries_no_host_keys(ssh_disk: Path) -> None:
    tree = m.tree_of(m.PROFILE, ssh=True)
    assert (tree / "usr/sbin/sshd").exists()
    assert not list((tree / "etc/ssh").glob("ssh_host_*")), "host keys baked into the image"
    wants = {p.name for p in (tree / "etc/systemd/system/multi-user.target.wants").iterdir()}
    assert {"ssh.service", "kubeedge-ssh-keys.service", "edgecore.service", "kubeedge-join.service"} <= wants


async def test_root_logs_in_with_the_key_from_the_esp_only(ssh_root: Path, image_tmp: Path) -> None:
    keys = image_tmp / "ssh-keys"
    keys.mkdir()
    allowed, other = keypair(keys, "allowed"), keypair(keys, "other")
    with m.veth_link(WIRE_INDEX) as link:
        mach = m.Machine(ssh_root, link, image_tmp / "edge-ssh")
        (mach.esp / "kubeedge").mkdir(parents=True)
        (mach.esp / "kubeedge" / "authorized_keys").write_text(allowed.with_suffix(".pub").read_text())
        try:
            mach.boot()
            await wait_for(
                lambda: asyncio.to_thread(banner, link.guest_ip),
                deadline_s=SSH_DEADLINE_S,
                interval=1.0,
                what=f"sshd on the booted image (console:\n{mach.console_tail(1500)})",
            )
            done = await asyncio.to_thread(
                ssh, allowed, link.guest_ip, "systemctl", "is-active", "kubeedge-join"
            )
            assert done.returncode in (0, 3), done.stderr  # is-active exits 3 for "activating"
            # No join.yaml on this device: the join waits, and says so, to whoever logs in.
            assert done.stdout.strip() == "activating", done.stdout
            refused = await asyncio.to_thread(ssh, other, link.guest_ip, "true")
            assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
            # The device's own host key, made at its first boot.
            made = mach.sh("sh", "-c", "ls /etc/ssh/ssh_host_*_key.pub").split()
            assert "/etc/ssh/ssh_host_ed25519_key.pub" in made, made
        finally:
            mach.kill()
