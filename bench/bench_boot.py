"""Appliance boot figures: nspawn start → node Ready in the cloud (first boot with join.yaml, then a
later boot of the joined node), the image's size, and idle RSS of edgecore, edgemesh and containerd
inside the booted image. Uses the image `make image` built (run it first) and the boot harness of
tests/image. Prints figures; asserts nothing about timings."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the checkout on sys.path: the image harness is in tests/)

from kubeedge.kube import KubeClient
from tests.cluster import wait_for
from tests.image import machine as m
from tests.image.cloud import Cloud, cloud_on

NODE = "bench-boot"
READY_DEADLINE_S = 300.0
IDLE_S = 20.0
PROCS = ("edgecore", "edgemesh", "containerd")


def rss_mb(mach: m.Machine, unit: str) -> float | None:
    pid = int(mach.show(unit, "MainPID").get("MainPID", "0") or 0)
    if not pid:
        return None
    out = mach.sh("ps", "-o", "rss=", "-p", str(pid), check=False).strip()
    return int(out) / 1024 if out else None


async def boot_to_ready(mach: m.Machine, cloud: Cloud, kc: KubeClient) -> float:
    mach.boot()
    t0 = mach.started_at
    await wait_for(lambda: cloud.node_ready(kc, NODE), deadline_s=READY_DEADLINE_S, interval=0.2)
    return time.monotonic() - t0


async def main() -> None:
    disk = m.DISK
    assert disk.exists(), f"{disk} missing: run `make image` first"
    work = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    try:
        with m.mounted_root(disk, work / "root") as root, m.veth_link(9) as link:
            async with cloud_on(work / "cloud", link.host_ip) as cloud, cloud.admin() as kc:
                mach = m.Machine(root, link, work / "node")
                (mach.esp / "kubeedge").mkdir(parents=True)
                (mach.esp / "kubeedge" / "join.yaml").write_text(cloud.join_yaml(NODE))
                try:
                    first = await boot_to_ready(mach, cloud, kc)
                    print(f"first boot (join) → Ready: {first:.1f} s")
                    await asyncio.sleep(IDLE_S)  # a benchmark's idle window, not synchronisation
                    for unit in PROCS:
                        rss = rss_mb(mach, unit)
                        print(f"idle RSS {unit}: " + (f"{rss:.1f} MB" if rss is not None else "not running"))
                    mach.poweroff()
                    # The cloud notices the node gone only after its grace period; wait for NotReady
                    # would take minutes, so the later boot is timed to edgecore's hub connection.
                    mach.boot()
                    t0 = mach.started_at

                    async def connected() -> bool:
                        return "connected to" in mach.journal("edgecore")

                    await wait_for(connected, deadline_s=READY_DEADLINE_S, interval=0.2)
                    print(f"later boot → edgecore connected to the cloud: {time.monotonic() - t0:.1f} s")
                finally:
                    mach.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    await cloud_image()
    st = os.stat(disk)
    print(
        f"disk image: {st.st_size / 2**30:.2f} GiB apparent, {st.st_blocks * 512 / 2**30:.2f} GiB allocated"
    )
    tree = m.TREE
    if tree.exists():
        du = m.run(["du", "-sh", str(tree)]).split()[0]
        print(f"directory tree: {du}")


async def cloud_image() -> None:
    """The cloud profile: nspawn start → cloudcore READY=1 (first boot writes its config), idle RSS."""
    disk = m.disk_of(m.CLOUD_PROFILE)
    if not disk.exists():
        print(f"cloud image: {disk} missing (`make image IMAGE_PROFILE=cloud`); skipped")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-boot-cloud-"))
    try:
        with m.mounted_root(disk, work / "root") as root, m.veth_link(8) as link:
            mach = m.Machine(root, link, work / "cloud")
            try:
                mach.boot()

                async def active() -> bool:
                    return await asyncio.to_thread(lambda: mach.is_active("cloudcore") == "active")

                await wait_for(active, deadline_s=READY_DEADLINE_S, interval=0.2)
                print(f"cloud image first boot → cloudcore ready: {time.monotonic() - mach.started_at:.1f} s")
                await asyncio.sleep(IDLE_S)  # a benchmark's idle window, not synchronisation
                rss = rss_mb(mach, "cloudcore")
                print("idle RSS cloudcore (embedded API): " + (f"{rss:.1f} MB" if rss else "not running"))
            finally:
                mach.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
