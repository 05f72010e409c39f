"""A plain Debian bookworm root tree for nspawn-booted test hosts, built once with debootstrap and
cached under ansible/.cache (keyed by what goes into it, so a change of the package list rebuilds)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CACHE: Final = REPO / "ansible" / ".cache"
SUITE: Final = "bookworm"
MIRROR: Final = "http://deb.debian.org/debian"
# What any host Ansible manages has before it is provisioned: an init, sshd and a Python for the
# modules (python3-apt for the apt module). Everything the roles need they install themselves.
PACKAGES: Final = ("systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2")
DEBOOTSTRAP_TIMEOUT: Final = 1200.0
# The daily apt timers would take the dpkg lock in the middle of a provisioning run.
MASKED_UNITS: Final = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_reap.service")
SOURCES: Final = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)


def tree_key() -> str:
    return hashlib.sha256(repr((SUITE, MIRROR, PACKAGES, MASKED_UNITS, SOURCES)).encode()).hexdigest()[:12]


def base_tree() -> Path:
    """The cached tree, building it first when absent (a half-built one is never used)."""
    root = CACHE / f"{SUITE}-{tree_key()}"
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(work),
            MIRROR,
        ],
        check=True,
        capture_output=True,
        timeout=DEBOOTSTRAP_TIMEOUT,
    )
    (work / "etc/apt/sources.list").write_text(SOURCES)
    # Empty: each boot of the read-only tree gets its own transient machine id.
    (work / "etc/machine-id").write_text("")
    for unit in MASKED_UNITS:
        link = work / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    ssh = work / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    (work / "var/cache/apt/archives/partial").mkdir(parents=True)
    (work / ".complete").write_text(f"{SUITE} {' '.join(PACKAGES)}\n")
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    return root
