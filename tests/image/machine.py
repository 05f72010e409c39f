"""Booting the appliance image the way shared/reference/image-here.md says works on these machines.

The disk's root partition is loop-mounted read-only and booted with systemd-nspawn (--volatile=overlay,
--register=no --keep-unit) inside a network namespace made here, with a veth whose host end carries the
cloud's address. A device's persistent state (/etc/kubeedge, /var/lib/kubeedge, /var/lib/containerd)
and its ESP are host directories bound in, so a machine can be powered off and booted again with its
state, and a test can write the ESP's kubeedge/join.yaml. Shared by tests/image and bench/bench_boot.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.apiserver_proc import ROOT

IMAGE_DIR = ROOT / "image"
OUTPUT = IMAGE_DIR / "mkosi.output"
PROFILE = "edge"
DISK = OUTPUT / f"kubeedge-{PROFILE}.raw"
TREE = OUTPUT / f"kubeedge-{PROFILE}-tree"
CLOUD_PROFILE = "cloud"
# The tools tree mkosi builds (trixie): systemd-repart, mtools, ...
TOOLS = OUTPUT / "tools"
# GPT type of an x86-64 root partition (Discoverable Partitions Specification) and of the ESP.
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
SECTOR = 512
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
BUILD_TIMEOUT_S = 1800.0
CMD_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# The persistent directories of a device: everything a join and the pods leave behind.
STATE_BINDS = ("/etc/kubeedge", "/var/lib/kubeedge", "/var/lib/containerd")
# cgroup v1 controllers (this host is hybrid), made writable in the container for runc: pod cgroups are
# under POD_CGROUP_ROOT (edged's default cgroup root) and removed, when empty, as the machine goes.
V1_CONTROLLERS = ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids")
POD_CGROUP_ROOT = "kubeedge"


def image_name(profile: str, ssh: bool = False) -> str:
    """The Makefile's IMAGE_NAME."""
    return f"kubeedge-{profile}" + ("-ssh" if ssh else "")


def disk_of(profile: str, ssh: bool = False) -> Path:
    return OUTPUT / f"{image_name(profile, ssh)}.raw"


def tree_of(profile: str, ssh: bool = False) -> Path:
    return OUTPUT / f"{image_name(profile, ssh)}-tree"


def build_image(profile: str = PROFILE, ssh: bool = False) -> Path:
    """`make image`: the disk and the tree; caches under image/ make a rebuild incremental."""
    done = subprocess.run(
        ["make", "-C", str(ROOT), "image", f"IMAGE_PROFILE={profile}", f"IMAGE_SSH={'yes' if ssh else 'no'}"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"make image failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return disk_of(profile, ssh)


@dataclass(frozen=True)
class Partition:
    type: str
    start: int  # bytes
    size: int  # bytes


def partitions(disk: Path) -> list[Partition]:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], check=True, capture_output=True).stdout)
    return [
        Partition(p["type"].upper(), p["start"] * SECTOR, p["size"] * SECTOR)
        for p in table["partitiontable"]["partitions"]
    ]


def partition(disk: Path, gpt_type: str) -> Partition:
    found = [p for p in partitions(disk) if p.type == gpt_type]
    assert found, f"{disk} has no partition of type {gpt_type}: {partitions(disk)}"
    return found[0]


@contextlib.contextmanager
def mounted_root(disk: Path, where: Path) -> Iterator[Path]:
    """The root partition mounted read-only at ``where`` (nspawn --image= needs udev, absent here)."""
    root = partition(disk, ROOT_X86_64)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-o", f"ro,loop,offset={root.start},sizelimit={root.size}", str(disk), str(where)],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True)


def mtools(disk: Path, offset: int, tool: str, *args: str, files: Path | None = None) -> str:
    """An mtools command on the FAT at ``offset`` in ``disk``, run from mkosi's tools tree: bookworm's
    mtools 4.0.32 cannot read the ESP trixie's systemd-repart formats. ``files`` (a directory holding
    the disk and any file named in ``args``) is bound at /mnt, so paths in ``args`` are /mnt/...."""
    where = files or disk.parent
    mnt = TOOLS / "mnt"
    run(["mount", "--bind", str(where), str(mnt)])
    try:
        image = f"/mnt/{disk.relative_to(where)}@@{offset}"
        return run(["chroot", str(TOOLS), tool, "-i", image, *args])
    finally:
        run(["umount", str(mnt)], check=False)


def run(argv: list[str], *, timeout: float = CMD_TIMEOUT_S, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Link:
    """A network namespace with a veth: ``guest_if`` inside, ``host_ip`` on the far end, which is in
    the host's namespace or, for two machines wired to each other, in ``host_netns``."""

    netns: str
    host_if: str
    guest_if: str
    host_ip: str
    guest_ip: str
    prefix: int = 24
    host_netns: str | None = None

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def _far(self) -> list[str]:
        return ["ip", "-n", self.host_netns] if self.host_netns else ["ip"]

    def cut(self) -> None:
        """The uplink goes down: the cloud becomes unreachable from the guest."""
        run([*self._far(), "link", "set", self.host_if, "down"])

    def restore(self) -> None:
        run([*self._far(), "link", "set", self.host_if, "up"])

    def in_netns(self, *argv: str) -> list[str]:
        """``argv`` run in this link's namespace (where the guest is), from the host."""
        return ["nsenter", f"--net={self.netns_path}", *argv]


@contextlib.contextmanager
def veth_link(index: int) -> Iterator[Link]:
    tag = uuid.uuid4().hex[:6]
    link = Link(
        netns=f"kei-{tag}",
        host_if=f"keih{tag}",
        guest_if="uplink0",
        host_ip=f"10.213.{index}.1",
        guest_ip=f"10.213.{index}.2",
    )
    run(["ip", "netns", "add", link.netns])
    try:
        run(
            [
                "ip",
                "link",
                "add",
                link.host_if,
                "type",
                "veth",
                "peer",
                "name",
                link.guest_if,
                "netns",
                link.netns,
            ]
        )
        run(["ip", "addr", "add", f"{link.host_ip}/{link.prefix}", "dev", link.host_if])
        run(["ip", "link", "set", link.host_if, "up"])
        # Configured from outside, as a container host does: networkd inside leaves a link that no
        # .network file matches alone (the image's DHCP default matches en*/eth* only).
        inside = ["ip", "-n", link.netns]
        run([*inside, "addr", "add", f"{link.guest_ip}/{link.prefix}", "dev", link.guest_if])
        run([*inside, "link", "set", link.guest_if, "up"])
        run([*inside, "link", "set", "lo", "up"])
        run([*inside, "route", "add", "default", "via", link.host_ip])
        yield link
    finally:
        run(["ip", "link", "del", link.host_if], check=False)
        run(["ip", "netns", "del", link.netns], check=False)


@contextlib.contextmanager
def wired_pair(index: int) -> Iterator[tuple[Link, Link]]:
    """Two namespaces joined by one veth, for a cloud machine and an edge machine: (cloud, edge). The
    host has no address on it: what passes is between the two machines only."""
    tag = uuid.uuid4().hex[:6]
    cloud_ns, edge_ns = f"keic-{tag}", f"keie-{tag}"
    cloud_ip, edge_ip = f"10.213.{index}.1", f"10.213.{index}.2"
    cloud = Link(cloud_ns, "uplink0", "uplink0", edge_ip, cloud_ip, host_netns=edge_ns)
    edge = Link(edge_ns, "uplink0", "uplink0", cloud_ip, edge_ip, host_netns=cloud_ns)
    for ns in (cloud_ns, edge_ns):
        run(["ip", "netns", "add", ns])
    try:
        # Made in the cloud's namespace, one end moved to the edge's.
        run(["ip", "-n", cloud_ns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0",
             "netns", edge_ns])  # fmt: skip
        for link in (cloud, edge):
            inside = ["ip", "-n", link.netns]
            run([*inside, "addr", "add", f"{link.guest_ip}/{link.prefix}", "dev", link.guest_if])
            run([*inside, "link", "set", link.guest_if, "up"])
            run([*inside, "link", "set", "lo", "up"])
        yield cloud, edge
    finally:
        for ns in (cloud_ns, edge_ns):
            run(["ip", "netns", "del", ns], check=False)


@dataclass
class Machine:
    """One nspawn boot of the image's root. ``state`` holds the bound persistent dirs and the ESP."""

    root: Path
    link: Link
    state: Path
    name: str = field(default_factory=lambda: f"kubeedge-{uuid.uuid4().hex[:8]}")
    extra_args: list[str] = field(default_factory=list)
    # nspawn's --volatile: "overlay" (a writable layer over the image, thrown away at poweroff) or
    # "state" (the image's root read-only, /var a fresh tmpfs: only the bound state persists).
    volatile: str = "overlay"
    proc: subprocess.Popen[bytes] | None = None
    console: Path | None = None
    leader: int = 0
    started_at: float = 0.0

    @property
    def esp(self) -> Path:
        return self.state / "esp"

    def _binds(self) -> list[str]:
        args = []
        for target in STATE_BINDS:
            src = self.state / target.strip("/").replace("/", "-")
            src.mkdir(parents=True, exist_ok=True)
            args.append(f"--bind={src}:{target}")
        self.esp.mkdir(parents=True, exist_ok=True)
        args.append(f"--bind={self.esp}:/efi")
        return args

    def _cgroups(self) -> list[Path]:
        return [h / f"kubeedge-image-{self.name}" for h in CGROUP_HIERARCHIES]

    def boot(self) -> None:
        """Start the container; returns once its PID 1 (systemd) exists."""
        assert self.proc is None or self.proc.poll() is not None, "already booted"
        for cg in self._cgroups():
            cg.mkdir(exist_ok=True)
        argv = [
            "systemd-nspawn", "--boot", "-D", str(self.root), "--machine", self.name,
            f"--volatile={self.volatile}", "--register=no", "--keep-unit", "--console=read-only",
            "--link-journal=no", f"--network-namespace-path={self.link.netns_path}",
            # nspawn 252 grants CAP_NET_ADMIN only with its own private network, not a given netns;
            # networkd (ConditionCapability) and edged's pod networking need it.
            "--capability=CAP_NET_ADMIN",
            *self._binds(), *self.extra_args,
            # PID 1's arguments, which systemd reads as its kernel command line in a container. The
            # writable /sys makes networkd wait for udev, which cannot work here; the uplink is set up
            # from outside (veth_link), so network-online needs no waiting on networkd either. (A mask
            # by bind mount would need a mount point, which a read-only root cannot get.)
            "systemd.mask=systemd-networkd-wait-online.service",
        ]  # fmt: skip
        # Each container gets its own cgroup in both hierarchies first, else parallel ones share one.
        enter = " ".join(f'echo $$ > "{cg}/cgroup.procs";' for cg in self._cgroups())
        env = dict(os.environ)
        # Writable /proc/sys/net for the pods' bridge. "1" (all of /sys writable) would not give runc
        # writable v1 cgroup controllers here either, and makes udev start and networkd wait for it.
        env["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] = "network"
        # nspawn's seccomp filter refuses keyctl (keyrings are not namespaced), and runc gives every
        # container a new session keyring. The image's containerd keeps that on devices; only the
        # container boot drops the filter.
        env["SYSTEMD_SECCOMP"] = "0"
        self.console = self.state / f"console-{int(time.time() * 1000)}.log"
        with self.console.open("wb") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                ["sh", "-c", f'{enter} exec "$@"', "sh", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.leader = self._wait_leader()
        self._writable_v1_controllers()

    def _writable_v1_controllers(self, deadline_s: float = 30.0) -> None:
        """nspawn 252 mounts this hybrid host's v1 controllers read-only, so runc cannot make pod
        cgroups (a pure v2 tree has no cpu controller here, and containerd always sets a sandbox's CPU
        shares). The container shares the host's user namespace, so the mounts can be made writable
        from outside, once PID 1 is systemd: nspawn has mounted everything before it execs systemd."""
        end = time.monotonic() + deadline_s
        while Path(f"/proc/{self.leader}/comm").read_text().strip() != "systemd":
            assert time.monotonic() < end, f"PID 1 not systemd after {deadline_s}s:\n{self.console_tail()}"
            time.sleep(0.02)
        for c in V1_CONTROLLERS:
            if Path(f"/proc/{self.leader}/root/sys/fs/cgroup/{c}").is_dir():
                run(["nsenter", "-t", str(self.leader), "-m", "mount", "-o", "remount,bind,rw",
                     f"/sys/fs/cgroup/{c}"])  # fmt: skip

    def _wait_leader(self, deadline_s: float = 30.0) -> int:
        """The host pid of the container's PID 1: a descendant of nspawn whose innermost pid is 1."""
        assert self.proc is not None
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"nspawn exited {self.proc.returncode}:\n{self.console_tail()}"
            pid = _find_ns_init(self.proc.pid)
            if pid:
                return pid
            time.sleep(0.05)
        raise AssertionError(f"no container PID 1 under nspawn after {deadline_s}s:\n{self.console_tail()}")

    def console_tail(self, n: int = 4000) -> str:
        return self.console.read_text(errors="replace")[-n:] if self.console and self.console.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sh(self, *argv: str, check: bool = True, timeout: float = CMD_TIMEOUT_S) -> str:
        """Run a command in every namespace of the container (machinectl needs host systemd)."""
        assert self.running(), f"the machine is not running:\n{self.console_tail()}"
        return run(["nsenter", "-t", str(self.leader), "-a", *argv], check=check, timeout=timeout)

    def is_active(self, unit: str) -> str:
        return self.sh("systemctl", "is-active", unit, check=False).strip()

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", unit, *(f"--property={p}" for p in props), check=False)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def unit_exists(self, unit: str) -> bool:
        return self.show(unit, "LoadState").get("LoadState") == "loaded"

    def journal(self, unit: str) -> str:
        return self.sh("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False)

    def poweroff(self) -> None:
        """A clean shutdown (systemctl poweroff inside); waits for nspawn to exit."""
        if not self.running():
            return
        assert self.proc is not None
        self.sh("systemctl", "poweroff", "--no-block", check=False)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self._cleanup_cgroups()

    def kill(self) -> None:
        """Pull the plug."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
        # The container's processes (pods' shims included) share nspawn's cgroup: end them too.
        for cg in self._cgroups():
            for _ in range(2):
                for walk in _cgroup_dirs(cg):
                    with contextlib.suppress(OSError):
                        for pid in (walk / "cgroup.procs").read_text().split():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(int(pid), 9)
        self._cleanup_cgroups()

    def _cleanup_cgroups(self, deadline_s: float = 15.0) -> None:
        # Killed processes leave their cgroups a moment after the kill returns: rmdir until it works.
        # Only empty pod cgroups go (rmdir fails on busy ones): those of other machines stay.
        pods = [Path(f"/sys/fs/cgroup/{c}/{POD_CGROUP_ROOT}") for c in V1_CONTROLLERS]
        end = time.monotonic() + deadline_s
        for cg in [*self._cgroups(), *pods]:
            for d in reversed(_cgroup_dirs(cg)):
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if cg in pods or time.monotonic() > end:
                            break
                        time.sleep(0.1)


def _cgroup_dirs(top: Path) -> list[Path]:
    """``top`` and every cgroup below it, parents first."""
    if not top.is_dir():
        return []
    out = [top]
    for dirpath, dirnames, _ in os.walk(top):
        out += [Path(dirpath) / d for d in dirnames]
    return out


def _find_ns_init(nspawn_pid: int) -> int:
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                if len(ids) > 1 and ids[-1] == "1":
                    return pid
        todo += [int(c) for c in children]
    return 0


def reset_state(state: Path) -> None:
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
