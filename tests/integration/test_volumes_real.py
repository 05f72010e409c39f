"""podspec + volumes against a real containerd: a pod built from a Kubernetes pod spec sees its ConfigMap
volume (and an update of it, atomically), its Secret env and volume, its ClusterFirst resolv.conf, the
kubelet-style /etc/hosts, a tmpfs emptyDir and a termination-message file the node can read."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kubeedge.edgecore.edged import podspec
from kubeedge.edgecore.edged.podspec import PodContext
from kubeedge.edgecore.edged.volumes import VolumeManager, mounts_under
from tests.cluster import wait_for
from tests.containerd_proc import RunningContainerd, containerd_fixture, remove_cgroup

pytestmark = pytest.mark.asyncio(loop_scope="module")

containerd = containerd_fixture()

CGROUP_TOP = "/kubeedge-test-volumes"


def read_host(p: Path) -> str:
    return p.read_text()


def exists(p: Path) -> bool:
    return p.exists()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def configmap(conf: str) -> dict[str, Any]:
    return {"metadata": {"name": "app-config", "namespace": "shop"}, "data": {"app.conf": conf}}


SECRETS = {"db": {"metadata": {"name": "db", "namespace": "shop"}, "data": {"password": b64("s3cret-pw")}}}


def make_pod(uid: str) -> dict[str, Any]:
    script = "echo $(GREETING) > /tmp/greeting; trap 'exit 0' TERM; sleep 1000 & wait"
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
        "spec": {
            "dnsPolicy": "ClusterFirst",
            "subdomain": "crew",
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "env": [
                        {"name": "GREETING", "value": "hello"},
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    ],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/app", "readOnly": True},
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
                {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            ],
        },
    }


@dataclass
class RunningPod:
    ctrd: RunningContainerd
    volumes: VolumeManager
    pod: dict[str, Any]
    ctx: PodContext
    sandbox_id: str
    container_id: str

    async def sh(self, script: str) -> str:
        r = await self.ctrd.cri.exec_sync(self.container_id, ["sh", "-c", script], timeout_s=10)
        assert r.exit_code == 0, r.stderr.decode()
        return r.stdout.decode()


@pytest_asyncio.fixture(loop_scope="module")
async def running(containerd: RunningContainerd, tmp_path: Path) -> AsyncIterator[RunningPod]:
    cri = containerd.cri
    uid = str(uuid.uuid4())
    pod = make_pod(uid)
    volumes = VolumeManager(tmp_path / "edged")
    paths = await volumes.prepare(pod, {"app-config": configmap("v=1\n")}, SECRETS)
    ctx = PodContext(
        node_name="edge-1",
        node_ip="192.0.2.5",
        pod_ip="",
        pod_ips=(),
        configmaps={"app-config": configmap("v=1\n")},
        secrets=SECRETS,
        volume_paths=paths,
        cluster_dns=("10.96.0.10",),
        cluster_domain="cluster.local",
        search_domains_host=("example.org",),
        host_resolv_nameservers=("192.0.2.53",),
        pod_dir=str(volumes.pod_dir(uid)),
    )
    parent = f"{CGROUP_TOP}/pod{uid}"
    sandbox_cfg = podspec.sandbox_config(
        pod, ctx, attempt=0, log_dir=str(tmp_path / "logs"), cgroup_parent=parent
    )
    sandbox_id = await cri.run_pod_sandbox(sandbox_cfg)
    try:
        ip = (await cri.pod_sandbox_status(sandbox_id)).status.network.ip
        ctx = replace(ctx, pod_ip=ip, pod_ips=(ip,))
        container = pod["spec"]["containers"][0]
        await volumes.prepare_container(pod, container, ctx, attempt=0)
        cfg = podspec.container_config(
            pod, container, ctx, attempt=0, log_dir_rel="app", image_ref=containerd.image.name
        )
        cid = await cri.create_container(sandbox_id, cfg, sandbox_cfg)
        await cri.start_container(cid)
        yield RunningPod(containerd, volumes, pod, ctx, sandbox_id, cid)
    finally:
        with contextlib.suppress(Exception):
            await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)
        await volumes.cleanup(uid)
        remove_cgroup(parent)
        remove_cgroup(CGROUP_TOP)


async def test_configmap_volume_update_reaches_the_running_container(running: RunningPod) -> None:
    assert await running.sh("cat /etc/app/app.conf") == "v=1\n"
    # Read-only as asked.
    r = await running.ctrd.cri.exec_sync(running.container_id, ["sh", "-c", "echo x > /etc/app/new"])
    assert r.exit_code != 0

    assert await running.volumes.refresh(running.pod, {"app-config": configmap("v=2\n")}, SECRETS) is True

    async def updated() -> bool:
        return await running.sh("cat /etc/app/app.conf") == "v=2\n"

    await wait_for(updated, deadline_s=10, what="the new ConfigMap content inside the container")
    # Same content again: nothing rewritten.
    assert await running.volumes.refresh(running.pod, {"app-config": configmap("v=2\n")}, SECRETS) is False


async def test_secret_env_and_volume(running: RunningPod) -> None:
    out = await running.sh(
        'echo "$DB_PASSWORD|$POD_NS|$GREETING"; cat /tmp/greeting; cat /etc/creds/password'
    )
    assert out.splitlines() == ["s3cret-pw|shop|hello", "hello", "s3cret-pw"]
    mode = await running.sh("stat -L -c %a /etc/creds/password")
    assert mode.strip() == "400"


async def test_cluster_first_resolv_conf_and_hosts(running: RunningPod) -> None:
    resolv = (await running.sh("cat /etc/resolv.conf")).splitlines()
    assert "nameserver 10.96.0.10" in resolv
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local example.org" in resolv
    assert "options ndots:5" in resolv
    assert not any("192.0.2.53" in line for line in resolv)
    hosts = (await running.sh("cat /etc/hosts")).splitlines()
    assert f"{running.ctx.pod_ip}\tweb.crew.shop.svc.cluster.local\tweb" in hosts
    assert (await running.sh("hostname")).strip() == "web"


async def test_memory_empty_dir_and_termination_message(running: RunningPod) -> None:
    mounts = await running.sh("cat /proc/mounts")
    scratch = [line for line in mounts.splitlines() if " /scratch " in line]
    assert scratch and scratch[0].split()[2] == "tmpfs"
    await running.sh("echo data > /scratch/f && echo 'it ended' > /dev/termination-log")
    host_file = Path(podspec.termination_log_path(running.ctx.pod_dir, "app", 0))
    assert read_host(host_file) == "it ended\n"
    # The cgroup limit came from the spec.
    limit = await running.sh(
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    assert limit.strip() == str(64 * 2**20)


async def test_cleanup_unmounts_everything(containerd: RunningContainerd, tmp_path: Path) -> None:
    volumes = VolumeManager(tmp_path / "edged")
    pod = make_pod("cleanup-" + uuid.uuid4().hex[:8])
    uid = pod["metadata"]["uid"]
    await volumes.prepare(pod, {"app-config": configmap("x")}, SECRETS)
    assert len(mounts_under(volumes.pod_dir(uid))) == 2  # the secret and the Memory emptyDir
    await volumes.cleanup(uid)
    assert mounts_under(volumes.pod_dir(uid)) == [] and not exists(volumes.pod_dir(uid))
