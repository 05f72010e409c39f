"""The cloud profile, booted, with an edge image joined to it and nothing else: no cloudcore on the host,
no config written by the test. The cloud initialises itself on first boot (one setting, given as the
system credential kubeedge.cloud; no advertiseAddress, so a serving certificate naming the address it
has), the edge joins it with the token `keadm gettoken`
prints on the cloud, and kubectl run inside the cloud's network namespace deploys a pod to the edge
and execs into it through the cloud's stream tunnel."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.apiserver_proc import KUBECTL
from tests.cluster import condition_true, wait_for
from tests.image import machine as m
from tests.image.cloud import deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NODE = "image-edge-2"
APP = "web2"
NS = "default"
# The 10.213.<index>.0/24 of this module's wire (other image tests use 1..5).
WIRE_INDEX = 6
NODE_LIMIT = 77
HUB_PORT = 10000
# First boots on a shared 2-core machine: systemd, the embedded API's first sync, the edge's join.
CLOUD_DEADLINE_S = 240.0
JOIN_DEADLINE_S = 240.0
POD_DEADLINE_S = 180.0
EXEC_DEADLINE_S = 60.0
KEADM = "/usr/local/bin/keadm"


def wanted_units(tree: Path) -> set[str]:
    return {p.name for p in (tree / "etc/systemd/system/multi-user.target.wants").iterdir()}


def test_the_cloud_tree_runs_the_cloud_and_nothing_of_the_edge(cloud_disk: Path) -> None:
    tree = m.tree_of(m.CLOUD_PROFILE)
    wants = wanted_units(tree)
    assert {"kubeedge-init.service", "cloudcore.service"} <= wants, wants
    assert not {"edgecore.service", "kubeedge-join.service", "containerd.service"} & wants, wants
    assert (tree / "opt/kubeedge/venv/bin/cloudcore").exists()
    assert not (tree / "etc/kubeedge/config/cloudcore.yaml").exists()  # written on first boot


class Kubectl:
    """kubectl 1.37 on the host, in the cloud machine's network namespace (its API is on 127.0.0.1),
    with the admin kubeconfig the cloud wrote into its state."""

    def __init__(self, link: m.Link, kubeconfig: Path) -> None:
        self.link = link
        self.kubeconfig = kubeconfig

    async def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.link.in_netns(
            KUBECTL, "--kubeconfig", str(self.kubeconfig), "--request-timeout=20s", *args
        )
        return await asyncio.to_thread(
            subprocess.run, argv, input=stdin, capture_output=True, text=True, timeout=60
        )

    async def json(self, *args: str) -> Any:
        done = await self(*args, "-o", "json")
        return json.loads(done.stdout) if done.returncode == 0 else None


async def test_a_cloud_image_and_an_edge_image_make_a_cluster(
    cloud_root: Path, edge_root: Path, image_tmp: Path
) -> None:
    with m.wired_pair(WIRE_INDEX) as (cloud_link, edge_link):
        # Settings as the system credential kubeedge.cloud (as systemd.set_credential= on a kernel
        # command line gives them); no advertiseAddress, so the host's own addresses are advertised.
        settings = json.dumps({"set": {"modules.cloudHub.nodeLimit": NODE_LIMIT}})
        cloud = m.Machine(
            cloud_root, cloud_link, image_tmp / "cloud-1", extra_args=[f"--set-credential=kubeedge.cloud:{settings}"]
        )
        edge = m.Machine(edge_root, edge_link, image_tmp / "edge-2")
        try:
            cloud.boot()
            try:
                await wait_for(
                    lambda: asyncio.to_thread(lambda: cloud.is_active("cloudcore") == "active"),
                    deadline_s=CLOUD_DEADLINE_S,
                    interval=1.0,
                    what="cloudcore active on the cloud image",
                )
            except AssertionError as e:
                raise AssertionError(
                    f"{e}\n{cloud.journal('kubeedge-init')[-2000:]}\n{cloud.journal('cloudcore')[-3000:]}"
                ) from None
            init_log = cloud.journal("kubeedge-init")
            assert "wrote /etc/kubeedge/config/cloudcore.yaml (settings from" in init_log, init_log[-2000:]
            assert "kubeedge.cloud" in init_log, init_log[-2000:]
            written = yaml.safe_load(cloud.sh("cat", "/etc/kubeedge/config/cloudcore.yaml"))
            assert written["modules"]["cloudHub"]["nodeLimit"] == NODE_LIMIT
            assert cloud.show("cloudcore", "StatusText")["StatusText"], "cloudcore reports no STATUS"
            assert cloud_link.guest_ip in cloud.journal("cloudcore")  # the address it advertises

            token = cloud.sh(KEADM, "gettoken").strip()
            join = {"cloud": f"{cloud_link.guest_ip}:{HUB_PORT}", "token": token, "nodeName": NODE}
            (edge.esp / "kubeedge").mkdir(parents=True)
            (edge.esp / "kubeedge" / "join.yaml").write_text(yaml.safe_dump(join))
            edge.boot()

            kubectl = Kubectl(cloud_link, cloud.state / "var-lib-kubeedge/cloud/apiserver/admin.kubeconfig")

            async def ready() -> bool:
                return condition_true(await kubectl.json("get", "node", NODE))

            try:
                await wait_for(ready, deadline_s=JOIN_DEADLINE_S, interval=2.0, what=f"{NODE} Ready")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{edge.journal('kubeedge-join')[-3000:]}") from None

            done = await kubectl("apply", "-f", "-", stdin=json.dumps(deployment(APP, NODE)))
            assert done.returncode == 0, done.stderr

            async def running_pod() -> str:
                pods = await kubectl.json("get", "pods", "-n", NS, "-l", f"app={APP}")
                for pod in (pods or {}).get("items", []):
                    if (pod.get("status") or {}).get("phase") == "Running":
                        assert pod["spec"]["nodeName"] == NODE
                        return str(pod["metadata"]["name"])
                return ""

            try:
                pod = await wait_for(running_pod, deadline_s=POD_DEADLINE_S, interval=2.0, what="pod Running")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{edge.journal('edgecore')[-3000:]}") from None

            # kubectl exec: API server → cloudstream → the tunnel the edge dialled → CRI on the edge.
            async def hostname() -> str:
                done = await kubectl("exec", pod, "--", "cat", "/etc/hostname")
                return done.stdout.strip() if done.returncode == 0 else ""

            assert await wait_for(hostname, deadline_s=EXEC_DEADLINE_S, interval=2.0, what="exec") == pod
        finally:
            edge.kill()
            cloud.kill()
