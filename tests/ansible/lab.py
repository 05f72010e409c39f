"""Test hosts for the Ansible roles: each a systemd-nspawn boot of the cached Debian base tree
(``--volatile=overlay``, so the tree stays clean) in its own network namespace, wired by veth to one
bridge in the root namespace. The hosts have no route out; apt reaches the Debian mirrors only through
the forwarding proxy (aptproxy.py) this lab runs on the bridge address.

Each nspawn is launched from its own cgroup in the ``name=systemd`` and ``unified`` hierarchies (with
``--keep-unit`` nspawn makes the caller's cgroup the container's, so parallel containers would share
one otherwise), removed again on stop.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from tests.ansible.basetree import REPO

T = TypeVar("T")
CGROUP_ROOTS: Final = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
PROXY_PORT: Final = 3142
PROXY_ALLOW: Final = ("deb.debian.org",)
SSH_PORT: Final = 22
BOOT_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 30.0
POLL: Final = 0.2


def wait_until(check: Callable[[], T], *, deadline_s: float, what: str, interval: float = POLL) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def free_subnet() -> str:
    """A /24 prefix ("10.231.N") no route on this machine uses (other tests build netns topologies too)."""
    used = sh("ip", "-4", "route", "show", "table", "all")
    for _ in range(200):
        prefix = f"10.{random.randint(224, 239)}.{random.randint(0, 255)}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.224-239.x.0/24 subnet for the lab bridge")


@dataclass
class Host:
    name: str
    address: str
    netns: str
    veth: str
    cgroup: str
    console: Path
    proc: subprocess.Popen[bytes] | None = None

    def leader(self) -> int:
        """The container's PID 1 as seen from the host (nspawn's child running systemd)."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    return int(entry.name)
        raise LookupError(f"{self.name}: no container init under nspawn pid {self.proc.pid}")

    def run(self, *cmd: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the booted host (all its namespaces), without ssh."""
        return subprocess.run(
            ["nsenter", "-t", str(self.leader()), "-a", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@dataclass
class Lab:
    names: list[str]
    workdir: Path
    base: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 0xFFFF:04x}{random.randint(0, 255):02x}")
    hosts: list[Host] = field(default_factory=list)
    proxy: subprocess.Popen[bytes] | None = None

    @property
    def bridge(self) -> str:
        return f"a3b{self.tag}"

    def start(self, key_pub: Path) -> None:
        prefix = free_subnet()
        self.gateway = f"{prefix}.1"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        apt_conf = self.workdir / "apt-proxy.conf"
        apt_conf.write_text(
            f'Acquire::http::Proxy "http://{self.gateway}:{PROXY_PORT}";\n'
            # one request per connection is all the proxy serves
            'Acquire::http::Pipeline-Depth "0";\n'
        )
        self.proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ansible.aptproxy",
                "--listen",
                f"{self.gateway}:{PROXY_PORT}",
                *(f"--allow={h}" for h in PROXY_ALLOW),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "aptproxy.log").open("wb"),
        )
        for i, name in enumerate(self.names):
            host = Host(
                name=name,
                address=f"{prefix}.{11 + i}",
                netns=f"a3-{self.tag}-{name}",
                veth=f"a3v{self.tag}{i}",
                cgroup=f"a3-{self.tag}-{name}",
                console=self.workdir / f"{name}.console.log",
            )
            self.hosts.append(host)
            self._wire(host)
            self._boot(host, key_pub, apt_conf)
        for host in self.hosts:
            wait_until(
                lambda h=host: _port_open(h.address, SSH_PORT),  # type: ignore[misc]
                deadline_s=BOOT_TIMEOUT,
                what=f"sshd on {host.name} ({host.address}); console: {host.console}",
            )

    def _wire(self, host: Host) -> None:
        sh("ip", "netns", "add", host.netns)
        peer = f"{host.veth}p"
        sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", host.veth, "master", self.bridge, "up")
        sh("ip", "link", "set", peer, "netns", host.netns)
        ns = ("ip", "-n", host.netns)
        sh(*ns, "link", "set", peer, "name", "eth0")
        sh(*ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")
        sh(*ns, "link", "set", "lo", "up")

    def _boot(self, host: Host, key_pub: Path, apt_conf: Path) -> None:
        containerd = self.workdir / host.name / "containerd"
        containerd.mkdir(parents=True)
        for root in CGROUP_ROOTS:
            (root / host.cgroup).mkdir()
        enter = " ".join(f"echo $$ > {root / host.cgroup / 'cgroup.procs'};" for root in CGROUP_ROOTS)
        nspawn = [
            "systemd-nspawn",
            "--boot",
            f"--directory={self.base}",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "--link-journal=no",
            f"--machine={host.name}",
            f"--network-namespace-path=/run/netns/{host.netns}",
            # the host's own network namespace, so it may manage it: pod bridges, the mesh's DNS device
            "--capability=CAP_NET_ADMIN",
            f"--bind-ro={key_pub}:/root/.ssh/authorized_keys",
            f"--bind-ro={apt_conf}:/etc/apt/apt.conf.d/00lab-proxy",
            # containerd's overlayfs snapshotter cannot stack on the volatile overlay root
            f"--bind={containerd}:/var/lib/containerd",
        ]
        host.proc = subprocess.Popen(
            ["sh", "-c", f'{enter} exec "$@"', "nspawn", *nspawn],
            stdin=subprocess.DEVNULL,
            stdout=host.console.open("wb"),
            stderr=subprocess.STDOUT,
            # several containers boot one read-only tree; nspawn's exclusive image lock would refuse
            env={**os.environ, "SYSTEMD_NSPAWN_LOCK": "0"},
        )

    def save_journals(self) -> None:
        """Each running host's journal into ``<workdir>/<host>.journal.log``, for a failure's post-mortem."""
        for host in self.hosts:
            if host.proc is None or host.proc.poll() is not None:
                continue
            with contextlib.suppress(OSError, LookupError, subprocess.SubprocessError):
                done = host.run("journalctl", "--no-pager", "-b", "-o", "short-precise")
                (self.workdir / f"{host.name}.journal.log").write_text(done.stdout + done.stderr)

    def stop(self) -> None:
        for host in self.hosts:
            if host.proc is not None and host.proc.poll() is None:
                host.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        for host in self.hosts:
            if host.proc is None:
                continue
            try:
                host.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait(timeout=STOP_TIMEOUT)
        for host in self.hosts:
            for root in CGROUP_ROOTS:
                _kill_and_remove(root / host.cgroup)
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "netns", "del", host.netns)
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "link", "del", host.veth)
        if self.proxy is not None:
            self.proxy.terminate()
            self.proxy.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            sh("ip", "link", "del", self.bridge)


def _port_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect((address, port))
        except OSError:
            return False
        # sshd answers with its banner once it really serves (a bare accept is not enough)
        with contextlib.suppress(OSError):
            return s.recv(4).startswith(b"SSH-")
    return False


def _kill_and_remove(cgroup: Path) -> None:
    """Kill whatever survived the container's shutdown in ``cgroup``, then remove it bottom-up."""
    if not cgroup.exists():
        return
    dirs = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*dirs, cgroup]:
        with contextlib.suppress(OSError, ValueError):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def gone() -> bool:
        for d in [*dirs, cgroup]:
            with contextlib.suppress(OSError):
                d.rmdir()
        return not cgroup.exists()

    wait_until(gone, deadline_s=STOP_TIMEOUT, what=f"removal of cgroup {cgroup}")


@contextlib.contextmanager
def running_lab(names: list[str], workdir: Path, base: Path, key_pub: Path) -> Iterator[Lab]:
    lab = Lab(names=names, workdir=workdir, base=base)
    try:
        lab.start(key_pub)
        yield lab
    except BaseException:
        lab.save_journals()
        raise
    finally:
        lab.stop()
