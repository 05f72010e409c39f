"""The appliance image, built by `make image` and booted: first boot joins from join.yaml with no
further action and runs a Deployment's pod; systemd restarts a killed or stuck edgecore; a power cycle
with the cloud unreachable brings the pods back; bad join settings are reported, not crash-looped;
join settings also come as a systemd credential; the same disk boots in qemu (TCG) to a running
edgecore."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from kubeedge.edgecore.edged.cri import CriClient, api
from kubeedge.edgecore.edged.podspec import LABEL_POD_NAMESPACE
from kubeedge.kube import DEPLOYMENTS, NODES
from tests.cluster import wait_for
from tests.image import machine as m
from tests.image.cloud import Cloud, cloud_on, deployment

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]

NODE = "image-edge-1"
QEMU_NODE = "image-edge-qemu"
RO_NODE = "image-edge-ro"
RO_APP = "web-ro"
RO_WIRE_INDEX = 5
CRED_WIRE_INDEX = 3
NS = "default"
APP = "web"
# First boot: systemd up, containerd, the join (key + CSR), edgecore's imports; generous for a shared
# 2-core machine.
JOIN_DEADLINE_S = 240.0
POD_DEADLINE_S = 180.0
# WatchdogSec=30, then TimeoutAbortSec (= TimeoutStopSec=30) before SIGKILL, then RestartSec=5.
WATCHDOG_DEADLINE_S = 150.0
RESTART_DEADLINE_S = 60.0
STATUS_DEADLINE_S = 90.0
QEMU_DEADLINE_S = 600.0
# The guest's view of the cloud in qemu: slirp forwards this address to the host's cloudhub.
QEMU_CLOUD_IP = "10.0.2.100"


@pytest.fixture(scope="module")
def link() -> Iterator[m.Link]:
    with m.veth_link(1) as lk:
        yield lk


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cloud(image_tmp: Path, link: m.Link) -> AsyncIterator[Cloud]:
    async with cloud_on(image_tmp / "cloud", link.host_ip, extra_sans=[QEMU_CLOUD_IP]) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(edge_root: Path, link: m.Link, cloud: Cloud, image_tmp: Path) -> AsyncIterator[m.Machine]:
    """The edge device: join.yaml on its ESP, booted once; tests below act on it in order."""
    mach = m.Machine(edge_root, link, image_tmp / "edge-1")
    (mach.esp / "kubeedge").mkdir(parents=True)
    (mach.esp / "kubeedge" / "join.yaml").write_text(cloud.join_yaml(NODE))
    try:
        mach.boot()
        yield mach
    finally:
        mach.kill()


@pytest.mark.asyncio(loop_scope="module")
async def test_image_built(edge_disk: Path) -> None:
    parts = m.partitions(edge_disk)
    types = [p.type for p in parts]
    assert m.ESP in types and m.ROOT_X86_64 in types, parts
    esp = m.partition(edge_disk, m.ESP)
    listing = m.mtools(edge_disk, esp.start, "mdir", "-b", "::/EFI/BOOT")
    assert "BOOTX64.EFI" in listing.upper(), listing
    tree = m.TREE
    assert (tree / "opt/kubeedge/venv/bin/edgecore").exists()
    assert (tree / "usr/share/kubeedge/images/busybox.tar").exists()
    wants = {p.name for p in (tree / "etc/systemd/system/multi-user.target.wants").iterdir()}
    assert {"edgecore.service", "kubeedge-join.service", "containerd.service"} <= wants, wants
    conf = (tree / "etc/containerd/config.toml").read_text()
    assert "restrict_oom_score_adj = true" in conf


async def test_first_boot_joins_with_no_further_action(node: m.Machine, cloud: Cloud) -> None:
    async with cloud.admin() as kc:
        await cloud.wait_node_ready(kc, NODE, JOIN_DEADLINE_S, lambda: f"console:\n{node.console_tail(1500)}")
        # join.yaml's labels are the node's.
        assert (await kc.get(NODES, NODE))["metadata"]["labels"].get("site") == "image-test"
    join_yaml = (node.esp / "kubeedge" / "join.yaml").read_text()
    assert cloud.token not in join_yaml, "the token was not consumed from join.yaml"
    assert node.is_active("edgecore") == "active"
    if node.unit_exists("edgemesh.service"):
        # It starts after edgecore and reports ready on its own (Type=notify): it may trail the node.
        try:
            await wait_for(
                lambda: asyncio.to_thread(lambda: node.is_active("edgemesh") == "active"),
                deadline_s=RESTART_DEADLINE_S,
                interval=0.5,
                what="edgemesh active",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{node.journal('edgemesh')[-3000:]}") from None


async def test_a_deployments_pod_runs_on_the_booted_node(node: m.Machine, cloud: Cloud) -> None:
    async with cloud.admin() as kc:
        await cloud.wait_node_ready(kc, NODE, JOIN_DEADLINE_S)
        await kc.create(DEPLOYMENTS, deployment(APP, NODE), NS)

        async def running() -> list[dict[str, object]]:
            return await cloud.running_pods(kc, NS, f"app={APP}")

        try:
            pods = await wait_for(
                running, deadline_s=POD_DEADLINE_S, interval=1.0, what="the web pod Running"
            )
        except AssertionError as e:  # the journal as of the deadline, not as of the start
            raise AssertionError(f"{e}\nedgecore:\n{node.journal('edgecore')[-3000:]}") from None
        assert pods[0]["spec"]["nodeName"] == NODE  # type: ignore[index]


def main_pid(node: m.Machine) -> int:
    return int(node.show("edgecore", "MainPID").get("MainPID", "0") or 0)


async def wait_new_main_pid(node: m.Machine, old: int, deadline_s: float) -> int:
    async def restarted() -> int:
        pid = main_pid(node)
        return pid if pid not in (0, old) and node.is_active("edgecore") == "active" else 0

    return await wait_for(restarted, deadline_s=deadline_s, interval=0.5, what="edgecore restarted")


async def running_main_pid(node: m.Machine) -> int:
    """edgecore's pid once it runs (each test may run alone, right after the first boot)."""
    return await wait_for(
        lambda: asyncio.to_thread(main_pid, node), deadline_s=JOIN_DEADLINE_S, interval=1.0, what="edgecore"
    )


async def test_killed_edgecore_is_restarted(node: m.Machine) -> None:
    before = await running_main_pid(node)
    restarts = int(node.show("edgecore", "NRestarts")["NRestarts"])
    node.sh("kill", "-KILL", str(before))
    await wait_new_main_pid(node, before, RESTART_DEADLINE_S)
    assert int(node.show("edgecore", "NRestarts")["NRestarts"]) == restarts + 1


async def test_stuck_edgecore_is_restarted_by_the_watchdog(node: m.Machine) -> None:
    before = await running_main_pid(node)
    # SIGSTOP freezes the event loop like a hang would: the WATCHDOG=1 pings stop, nothing else does.
    node.sh("kill", "-STOP", str(before))
    await wait_new_main_pid(node, before, WATCHDOG_DEADLINE_S)
    assert "watchdog" in node.journal("edgecore").lower()


def cri_socket(node: m.Machine) -> str:
    return f"unix:///proc/{node.leader}/root/run/containerd/containerd.sock"


async def app_containers(node: m.Machine) -> list[str]:
    cri = CriClient(cri_socket(node))
    try:
        found = await cri.list_containers(state=api.CONTAINER_RUNNING, labels={LABEL_POD_NAMESPACE: NS})
        return [c.id for c in found if c.metadata.name == "web"]
    except Exception:  # containerd not up yet after a boot: keep waiting
        return []
    finally:
        await cri.close()


async def test_power_cycle_with_the_cloud_unreachable_brings_pods_back(
    node: m.Machine, link: m.Link, cloud: Cloud
) -> None:
    before = await app_containers(node)
    assert before, "no running web container before the power cycle"
    node.poweroff()
    link.cut()
    try:
        node.boot()
        await wait_for(
            lambda: asyncio.to_thread(lambda: node.is_active("edgecore") == "active"),
            deadline_s=JOIN_DEADLINE_S,
            interval=1.0,
            what="edgecore active after the offline boot",
        )
        assert node.is_active("kubeedge-join") != "activating"  # joined before: no first boot again

        async def back() -> list[str]:
            now = await app_containers(node)
            return [c for c in now if c not in before]

        await wait_for(back, deadline_s=POD_DEADLINE_S, interval=1.0, what="the web pod running again")
    finally:
        link.restore()
    async with cloud.admin() as kc:
        await cloud.wait_node_ready(kc, NODE, JOIN_DEADLINE_S)


async def test_bad_join_settings_are_reported_without_crash_looping(
    edge_root: Path, cloud: Cloud, image_tmp: Path
) -> None:
    with m.veth_link(2) as lk:
        mach = m.Machine(edge_root, lk, image_tmp / "edge-bad")
        join = mach.esp / "kubeedge" / "join.yaml"
        try:
            mach.boot()

            async def status_has(text: str) -> str:
                async def check() -> str:
                    st = await asyncio.to_thread(mach.show, "kubeedge-join", "StatusText")
                    return st.get("StatusText", "") if text in st.get("StatusText", "") else ""

                return await wait_for(
                    check, deadline_s=STATUS_DEADLINE_S, interval=1.0, what=f"STATUS {text!r}"
                )

            await status_has("join.yaml")  # nothing to join with: says where it looks
            join.parent.mkdir(parents=True, exist_ok=True)
            join.write_text("cloud: [this is: not\n")
            await status_has("not valid YAML")
            join.write_text(cloud.join_yaml("image-edge-bad", token=cloud.expired_token()))
            await status_has("expired")
            st = mach.show("kubeedge-join", "ActiveState", "NRestarts")
            assert st == {"ActiveState": "activating", "NRestarts": "0"}, st
            journal = mach.journal("kubeedge-join")
            assert "not valid YAML" in journal and "expired" in journal, journal[-3000:]
            assert mach.is_active("edgecore") != "active"
        finally:
            mach.kill()


async def test_join_settings_from_a_systemd_credential(
    edge_root: Path, cloud: Cloud, image_tmp: Path
) -> None:
    """No join.yaml: the settings come as the system credential kubeedge.join (nspawn --set-credential,
    as systemd.set_credential= on a kernel command line would give them), and the node is named after
    the device's hostname (nspawn's machine name)."""
    settings = json.dumps(yaml.safe_load(cloud.join_yaml("hostname")))  # one line: YAML reads JSON
    with m.veth_link(CRED_WIRE_INDEX) as lk:
        mach = m.Machine(
            edge_root, lk, image_tmp / "edge-cred", extra_args=[f"--set-credential=kubeedge.join:{settings}"]
        )
        node_name = mach.name
        try:
            mach.boot()
            async with cloud.admin() as kc:
                await cloud.wait_node_ready(
                    kc, node_name, JOIN_DEADLINE_S, lambda: mach.journal("kubeedge-join")[-3000:]
                )
            # A credential cannot be edited: the journal says where the token stays.
            journal = mach.journal("kubeedge-join")
            assert "read-only credential" in journal and "kubeedge.join" in journal, journal[-3000:]
            assert mach.is_active("edgecore") == "active"
        finally:
            mach.kill()


async def test_a_read_only_root_joins_and_runs_pods(edge_root: Path, cloud: Cloud, image_tmp: Path) -> None:
    """The layout keeps all state in /etc/kubeedge, /var/lib/kubeedge and /var/lib/containerd: with the
    root read-only and /var a fresh tmpfs (nspawn --volatile=state) the device still joins and runs pods."""
    with m.veth_link(RO_WIRE_INDEX) as lk:
        mach = m.Machine(edge_root, lk, image_tmp / "edge-ro", volatile="state")
        (mach.esp / "kubeedge").mkdir(parents=True)
        (mach.esp / "kubeedge" / "join.yaml").write_text(cloud.join_yaml(RO_NODE))
        try:
            mach.boot()
            async with cloud.admin() as kc:
                await cloud.wait_node_ready(
                    kc, RO_NODE, JOIN_DEADLINE_S, lambda: mach.journal("kubeedge-join")[-3000:]
                )
                await kc.create(DEPLOYMENTS, deployment(RO_APP, RO_NODE), NS)

                async def running() -> list[dict[str, object]]:
                    return await cloud.running_pods(kc, NS, f"app={RO_APP}")

                try:
                    await wait_for(running, deadline_s=POD_DEADLINE_S, interval=1.0, what="the pod Running")
                except AssertionError as e:
                    raise AssertionError(f"{e}\nedgecore:\n{mach.journal('edgecore')[-3000:]}") from None
            denied = mach.sh(
                "sh", "-c", "touch /usr/lib/kubeedge-write-probe 2>&1 || echo denied", check=False
            )
            assert "denied" in denied and "Read-only file system" in denied, denied
        finally:
            mach.kill()


async def test_the_disk_boots_in_qemu_to_a_running_edgecore(
    edge_disk: Path, cloud: Cloud, image_tmp: Path
) -> None:
    """TCG (this machine's /dev/kvm fails), -snapshot, user networking with restrict=on: the guest
    reaches nothing but the cloudhub ports forwarded to the host's cloudcore."""
    copy = image_tmp / "qemu.raw"
    await asyncio.to_thread(m.run, ["cp", "--sparse=always", str(edge_disk), str(copy)], timeout=300)
    esp = m.partition(copy, m.ESP)
    join = image_tmp / "qemu-join.yaml"
    text = cloud.join_yaml(QEMU_NODE).replace(cloud.hub_ip, QEMU_CLOUD_IP)
    join.write_text(text)
    m.mtools(copy, esp.start, "mmd", "::/kubeedge", files=image_tmp)
    m.mtools(copy, esp.start, "mcopy", f"/mnt/{join.name}", "::/kubeedge/join.yaml", files=image_tmp)
    serial = image_tmp / "qemu-serial.log"
    fwd = ",".join(
        f"guestfwd=tcp:{QEMU_CLOUD_IP}:{port}-cmd:busybox nc {cloud.hub_ip} {port}"
        for port in (cloud.ports["ws"], cloud.ports["https"])
    )
    argv = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "2048", "-smp", "2",
        "-bios", "/usr/share/ovmf/OVMF.fd", "-snapshot", "-nographic", "-monitor", "none",
        "-serial", f"file:{serial}",
        "-drive", f"if=virtio,format=raw,file={copy}",
        "-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        async with cloud.admin() as kc:

            async def ready() -> bool:
                assert proc.poll() is None, (
                    f"qemu exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
                return await cloud.node_ready(kc, QEMU_NODE)

            await wait_for(
                ready, deadline_s=QEMU_DEADLINE_S, interval=2.0, what=f"qemu node Ready ({serial})"
            )
        # The node's Ready is edgecore's own report; the console shows the disk's systemd booted to a
        # login prompt (systemd stops printing unit status once booted, so edgecore's lines may miss it).
        log = serial.read_text(errors="replace")
        assert "login:" in log, log[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        os.unlink(copy)
