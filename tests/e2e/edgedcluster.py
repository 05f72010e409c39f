"""One cloud and one edge node that runs pods, all real: a project-owned containerd, cloudcore (embedded
API and controllers) and edgecore with edged on, as OS processes; shared by the edged e2e tests and
bench/bench_pods.py. Reads of the runtime go through CRI; reads of the edge store through its MetaServer."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeedge.edgecore.edged.containerd import Containerd, ContainerdConfig
from kubeedge.edgecore.edged.cri import CriClient, api
from kubeedge.edgecore.edged.ociimage import BuiltImage, build_image
from kubeedge.edgecore.edged.podspec import LABEL_POD_NAMESPACE, LABEL_POD_UID
from kubeedge.kube import KubeClient
from tests.apiserver_proc import KUBECTL, free_port
from tests.cluster import condition_true, wait_for
from tests.containerd_proc import remove_all_pods, remove_cgroup
from tests.e2e import backbone
from tests.e2e.backbone import CloudCore, Edge, Proc, write_config

NODE = "edge-pods"
KUBECTL_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 2.0


@dataclass
class EdgedCluster:
    base: Path
    cloud: CloudCore
    edge: Edge
    containerd: Containerd
    image: BuiltImage
    cri: CriClient
    cgroup_root: str

    @property
    def kubeconfig(self) -> Path:
        return self.cloud.kubeconfig

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[KubeClient]:
        async with self.cloud.admin() as kc:
            yield kc

    @contextlib.asynccontextmanager
    async def meta(self) -> AsyncIterator[KubeClient]:
        async with KubeClient(self.edge.meta) as kc:
            yield kc

    async def ensure_up(self) -> None:
        if not self.containerd.running:
            await self.containerd.start()
        await self.cloud.ensure_running()
        await self.edge.ensure_running()

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(self.kubeconfig), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), KUBECTL_TIMEOUT_S
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return out.decode()

    async def apply(self, *docs: dict[str, Any], namespace: str) -> str:
        return await self.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs))

    # ---- the runtime's view ------------------------------------------------------------------------

    async def running_containers(self, namespace: str | None = None) -> dict[str, dict[str, str]]:
        """pod uid -> {container name: id} of every running container (of ``namespace``'s pods)."""
        labels = {LABEL_POD_NAMESPACE: namespace} if namespace else None
        out: dict[str, dict[str, str]] = {}
        for c in await self.cri.list_containers(state=api.CONTAINER_RUNNING, labels=labels):
            out.setdefault(c.labels[LABEL_POD_UID], {})[c.metadata.name] = c.id
        return out

    async def kill_all_pods(self) -> int:
        """What a power cut leaves: every container and sandbox stopped at once (SIGKILL, no grace)."""
        containers = await self.cri.list_containers(state=api.CONTAINER_RUNNING)
        await asyncio.gather(*(self.cri.stop_container(c.id, timeout_s=0) for c in containers))
        for sb in await self.cri.list_pod_sandbox(state=api.SANDBOX_READY):
            await self.cri.stop_pod_sandbox(sb.id)
        return len(containers)


def edge_doc(c: EdgedCluster, data_dir: Path) -> dict[str, Any]:
    doc = backbone.edge_doc(c.cloud, NODE, data_dir, c.edge.meta_port)
    doc["modules"]["edged"].update(
        {
            "enable": True,
            "runtimeEndpoint": c.containerd.endpoint,
            "rootDirectory": str(data_dir / "edged"),
            "tailoredKubeletConfig": {"podLogsDir": str(data_dir / "pods"), "cgroupRoot": c.cgroup_root},
        }
    )
    return doc


@contextlib.asynccontextmanager
async def edged_cluster(base: Path, subnet: str, bridge: str) -> AsyncIterator[EdgedCluster]:
    """Start containerd (busybox image imported), cloudcore and edgecore; on exit stop them all and
    remove every pod, the pods' cgroups and the bridge."""
    image = build_image(base / "busybox.tar")
    ctrd = Containerd(
        ContainerdConfig(
            base_dir=base / "ctrd",
            sandbox_image=image.name,
            subnet=subnet,
            bridge=bridge,
            network_name=f"kubeedge-{bridge}",
        )
    )
    cloud = CloudCore.create(base)
    data = base / NODE
    data.mkdir()
    edge = Edge(NODE, data, free_port(), Proc([], base / "edgecore.log"))
    cri = CriClient(ctrd.cfg.endpoint)
    c = EdgedCluster(base, cloud, edge, ctrd, image, cri, f"/kubeedge-e2e-{uuid.uuid4().hex[:8]}")
    try:
        await ctrd.start()
        await ctrd.import_image(image.path)
        await cloud.ensure_running()
        cfg = write_config(data / "edgecore.yaml", edge_doc(c, data))
        edge.daemon.argv = [sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg)]
        edge.daemon.start()
        await edge.wait_serving()
        yield c
    finally:
        edge.daemon.stop()
        cloud.daemon.stop()
        try:
            if not ctrd.running:
                await ctrd.start()
            await remove_all_pods(cri)
        finally:
            await cri.close()
            await ctrd.stop()
            remove_cgroup(c.cgroup_root)
            ip = await asyncio.create_subprocess_exec(
                "ip", "link", "del", bridge, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )  # fmt: skip
            await ip.wait()


# ---- what the API says -----------------------------------------------------------------------------


def running_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and condition_true(pod) and bool(st.get("podIP"))


def container_ids(pod: dict[str, Any]) -> dict[str, str]:
    """container name -> runtime id as the pod's status reports it (without the ``containerd://``)."""
    return {
        cs["name"]: str(cs.get("containerID") or "").partition("://")[2]
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    }


def waiting_reason(pod: dict[str, Any], container: str) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs["name"] == container:
            return str(((cs.get("state") or {}).get("waiting") or {}).get("reason") or "")
    return ""


def http_get(url: str) -> str:
    """The body of a GET, or '' when nothing (or an error) answers."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            return str(r.read().decode())
    except (OSError, urllib.error.URLError):
        return ""


async def wait_http(url: str, want: str, *, deadline_s: float = 30.0) -> str:
    async def answered() -> str:
        body = await asyncio.to_thread(http_get, url)
        return body if want in body else ""

    return await wait_for(answered, deadline_s=deadline_s, what=f"GET {url} returning {want!r}")
