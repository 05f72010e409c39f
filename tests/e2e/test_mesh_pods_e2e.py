"""EdgeMesh with real pods: the NAT topology of test_mesh_e2e.py, but each site's node runs edgecore
with edged and a project-owned containerd (both inside the node's network namespace, so the CNI
bridge and the pods hang off the node), and the workloads are a Deployment and pods applied with
kubectl. Pods resolve through the mesh DNS because edged writes it into their resolv.conf
(`clusterDNS`, dnsPolicy ClusterFirst).

    cloud 198.18.0.1 ──wan── r1 (NAT) ── 10.1.0.0/24: n1 .2 ── pods 10.1.64.0/24 (client)
                         └── r2 (NAT) ── 10.2.0.0/24: n2 .2 ── pods 10.2.64.0/24 (web, client)

containerd and edgecore enter only the node's network namespace (nsenter --net): `ip netns exec`
would also give them a private /sys without the cgroup hierarchy their pods live in. Everything is
removed at the end: pods (through CRI), containerd, cgroups, the namespaces (with their bridges).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kubeedge.edgecore.edged.containerd import Containerd, ContainerdConfig
from kubeedge.edgecore.edged.cri import CriClient, api
from kubeedge.edgecore.edged.ociimage import BuiltImage, build_image
from kubeedge.edgecore.edged.podspec import LABEL_CONTAINER_NAME, LABEL_POD_UID
from kubeedge.pki import tokens
from tests.apiserver_proc import KUBECTL
from tests.cloudcore_proc import Proc
from tests.cluster import wait_for
from tests.containerd_proc import cgroup_dirs, check_prerequisites, remove_all_pods, remove_cgroup
from tests.e2e.backbone import edge_config_doc
from tests.e2e.test_mesh_e2e import (
    CLOUD_IP,
    DOMAIN,
    MESH_DNS,
    METRICS_PORT,
    PORTS,
    agent_config,
    cloud_config,
    http_get,
    udp_block_rules,
)
from tests.integration.test_mesh_tunnel import Topology, sh

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables", "nft", "nsenter")),
        reason="needs root, iproute2, iptables, nftables and nsenter for network namespaces",
    ),
]

NODES = {1: "site1-node", 2: "site2-node"}
POD_CIDR = {1: "10.1.64.0/24", 2: "10.2.64.0/24"}
STARTUP_S = 60.0
DEADLINE_S = 30.0
WEB_PORT = 80
EXEC_TIMEOUT_S = 20


@dataclass
class Site:
    i: int
    ns: str
    node: str
    containerd: Containerd
    cri: CriClient
    cgroup_root: str
    procs: dict[str, Proc] = field(default_factory=dict)


@dataclass
class World:
    base: Path
    topo: Topology
    ns: dict[str, str]
    image: BuiltImage
    sites: dict[int, Site] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.base / "cloud" / "apiserver" / "admin.kubeconfig"

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """kubectl inside the cloud namespace, where the embedded API listens on loopback."""
        res = await asyncio.to_thread(
            subprocess.run,
            ["ip", "netns", "exec", self.ns["cloud"], KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res.stdout

    async def pods(self) -> dict[str, dict[str, Any]]:
        out = await self.kubectl("get", "pods", "-n", "default", "-o", "json")
        return {p["metadata"]["name"]: p for p in json.loads(out)["items"]}


def in_net(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{ns}", "--", *argv]


def build_topology(topo: Topology) -> dict[str, str]:
    ns = {k: topo.ns(k) for k in ("wan", "cloud", "r1", "r2", "n1", "n2")}
    br = topo.bridge(ns["wan"])
    topo.link(ns["cloud"], f"{CLOUD_IP}/24", ns["wan"], None, bridge=br)
    for i in (1, 2):
        r, node = ns[f"r{i}"], ns[f"n{i}"]
        wan_if, _ = topo.link(r, f"198.18.0.1{i}/24", ns["wan"], None, bridge=br)
        lan = topo.bridge(r, "lan")
        sh("ip", "-n", r, "addr", "add", f"10.{i}.0.1/24", "dev", lan)
        topo.router(r, wan_if)
        for rule in udp_block_rules(i):  # the sites meet through the relay only: a fixed path
            sh("ip", "netns", "exec", r, "iptables", "-A", *rule)
        topo.link(node, f"10.{i}.0.2/24", r, None, bridge=lan)
        sh("ip", "-n", node, "route", "add", "default", "via", f"10.{i}.0.1")
    return ns


async def start_containerd(w: World, i: int) -> Site:
    base = w.base / f"ctrd{i}"
    base.mkdir()
    # containerd starts its CNI plugins, so the pod bridge lands in the node's namespace.
    wrapper = base / "containerd-in-node"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net=/var/run/netns/{w.ns[f"n{i}"]} -- containerd "$@"\n')
    wrapper.chmod(0o755)
    ctrd = Containerd(
        ContainerdConfig(
            base_dir=base,
            containerd_bin=str(wrapper),
            sandbox_image=w.image.name,
            subnet=POD_CIDR[i],
            bridge="kemesh0",
            network_name=f"kemesh-site{i}",
            host_ports=False,
        )
    )
    site = Site(
        i, w.ns[f"n{i}"], NODES[i], ctrd, CriClient(ctrd.endpoint), f"/kubeedge-mesh-{uuid.uuid4().hex[:8]}"
    )
    w.sites[i] = site
    await ctrd.start()
    await ctrd.import_image(w.image.path)
    return site


def edge_doc(site: Site, data: Path, token: str) -> dict[str, Any]:
    doc = edge_config_doc(
        site.node,
        data,
        10550,
        ws=f"{CLOUD_IP}:{PORTS['ws']}",
        https=f"https://{CLOUD_IP}:{PORTS['https']}",
        token=token,
    )
    doc["modules"]["edged"].update(
        {
            "enable": True,
            "runtimeEndpoint": site.containerd.endpoint,
            "rootDirectory": str(data / "edged"),
            "tailoredKubeletConfig": {
                "podLogsDir": str(data / "pods"),
                "cgroupRoot": site.cgroup_root,
                # What a site running EdgeMesh sets: pods with ClusterFirst resolve through the agent.
                "clusterDNS": [MESH_DNS],
                "clusterDomain": DOMAIN,
            },
        }
    )
    return doc


async def mesh_status(w: World, i: int) -> dict[str, Any]:
    return dict(json.loads(await http_get(w.ns[f"n{i}"], "127.0.0.1", METRICS_PORT, "/status")))


async def bring_up(w: World) -> None:
    for i in (1, 2):
        await start_containerd(w, i)
    cloud = Proc(
        ["ip", "netns", "exec", w.ns["cloud"], sys.executable, "-m", "kubeedge.cloudcore",
         "--config", str(cloud_config(w.base))],
        w.base / "cloudcore.log",
    ).start()  # fmt: skip
    w.procs["cloud"] = cloud

    async def cloud_healthy() -> bool:
        assert cloud.alive(), f"cloudcore exited:\n{cloud.tail()}"
        try:
            await http_get(w.ns["cloud"], "127.0.0.1", PORTS["metrics"], "/healthz")
        except (OSError, AssertionError, TimeoutError):
            return False
        return (w.base / "cloud" / tokens.TOKEN_FILE).exists()

    await wait_for(cloud_healthy, deadline_s=STARTUP_S, what="cloudcore healthy")
    token = (w.base / "cloud" / tokens.TOKEN_FILE).read_text().strip()
    for site in w.sites.values():
        data = w.base / site.node
        data.mkdir()
        cfg = data / "edgecore.yaml"
        cfg.write_text(yaml.safe_dump(edge_doc(site, data, token)))
        site.procs["edge"] = Proc(
            in_net(site.ns, sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg)),
            w.base / f"{site.node}.log",
        ).start()
    for site in w.sites.values():
        edge = site.procs["edge"]

        async def certified(edge: Proc = edge, node: str = site.node) -> bool:
            assert edge.alive(), f"edgecore exited:\n{edge.tail()}"
            return (w.base / node / "certs" / "server.crt").exists()

        await wait_for(certified, deadline_s=STARTUP_S, what=f"{site.node}'s node certificate")
    for site in w.sites.values():
        cfg = agent_config(w.base, site.node, w.base / site.node)
        site.procs["mesh"] = Proc(
            in_net(site.ns, sys.executable, "-m", "edgemesh", "--config", str(cfg)),
            w.base / f"{site.node}-mesh.log",
        ).start()
    for i, site in w.sites.items():
        agent = site.procs["mesh"]

        async def healthy(agent: Proc = agent, i: int = i) -> bool:
            assert agent.alive(), f"mesh agent exited:\n{agent.tail()}"
            try:
                await http_get(w.ns[f"n{i}"], "127.0.0.1", METRICS_PORT, "/healthz")
            except (OSError, AssertionError, TimeoutError):
                return False
            return True

        await wait_for(healthy, deadline_s=STARTUP_S, what=f"mesh agent on {site.node} healthy")


def manifests(image: str) -> str:
    def client(name: str, node: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "dnsPolicy": "ClusterFirst",
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "c",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        }

    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeName": NODES[2],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "httpd",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            # busybox httpd serves / (its working dir): /etc/hostname is the pod's name.
                            "command": ["httpd", "-f", "-p", "8080"],
                        }
                    ],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": WEB_PORT, "targetPort": 8080}],
        },
    }
    return yaml.safe_dump_all([web, svc, client("client-site1", NODES[1]), client("client-site2", NODES[2])])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    check_prerequisites()
    base = tmp_path_factory.mktemp("meshpods")
    topo = Topology()
    w = World(base, topo, {}, build_image(base / "busybox.tar"))
    try:
        w.ns = build_topology(topo)
        await bring_up(w)
        await w.kubectl("apply", "-n", "default", "-f", "-", stdin=manifests(w.image.name))
        yield w
    finally:
        # Agents first (they remove their rules), then the edges, the pods, containerd, the cloud.
        for site in w.sites.values():
            for key in ("mesh", "edge"):
                if key in site.procs:
                    await asyncio.to_thread(site.procs[key].stop)
        for site in w.sites.values():
            try:
                if site.containerd.running:
                    await remove_all_pods(site.cri)
            finally:
                await site.cri.close()
                await site.containerd.stop()
                remove_cgroup(site.cgroup_root)
        if "cloud" in w.procs:
            await asyncio.to_thread(w.procs["cloud"].stop)
        topo.close()  # the namespaces go, and with them the pod bridges and the agents' interfaces
    assert leftovers(w) == []


def leftovers(w: World) -> list[str]:
    """What would outlive the module: shims of our containerds, mounts under our tmp dir, pod cgroups,
    namespaces."""
    found: list[str] = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (d / "cmdline").read_bytes()
                if any(str(s.containerd.cfg.address).encode() in cmdline for s in w.sites.values()):
                    found.append(f"pid {d.name}: {cmdline[:200]!r}")
    found += [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(w.base) in m]
    for s in w.sites.values():
        found += [str(d) for d in cgroup_dirs(s.cgroup_root) if d.exists()]
    netns = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    found += sorted(netns & set(w.topo.namespaces))
    return found


# ---- helpers over the running world -----------------------------------------------------------------


def running(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and bool(st.get("podIP"))


async def container_of(site: Site, pod: dict[str, Any], name: str) -> str:
    uid = pod["metadata"]["uid"]
    found = await site.cri.list_containers(
        state=api.CONTAINER_RUNNING, labels={LABEL_POD_UID: uid, LABEL_CONTAINER_NAME: name}
    )
    assert found, f"no running container {name} of {pod['metadata']['name']} on {site.node}"
    return str(found[0].id)


async def wget_in(site: Site, container: str, url: str) -> tuple[int, str]:
    """busybox wget inside the pod; a name resolves through the pod's resolv.conf (the mesh DNS).
    No `-T`: Debian's busybox-static wget segfaults with it; ExecSync's timeout bounds the call."""
    res = await site.cri.exec_sync(container, ["wget", "-q", "-O", "-", url], timeout_s=EXEC_TIMEOUT_S)
    return res.exit_code, ((res.stdout or b"") + (res.stderr or b"")).decode().strip()


async def resolve_in(site: Site, container: str, name: str) -> str:
    """The A record the pod's resolver (busybox nslookup, the pod's resolv.conf) gets for `name`."""
    script = f"nslookup -type=a {name} | awk '/^Name:/ {{n=1}} n && /^Address/ {{print $NF; exit}}'"
    res = await site.cri.exec_sync(container, ["sh", "-c", script], timeout_s=EXEC_TIMEOUT_S)
    return (res.stdout or b"").decode().strip()


async def all_running(w: World) -> dict[str, dict[str, Any]]:
    pods = await w.pods()
    want = ("client-site1", "client-site2")
    web = [p for n, p in pods.items() if n.startswith("web-") and running(p)]
    if len(web) != 1 or not all(n in pods and running(pods[n]) for n in want):
        return {}
    return {"web": web[0], **{n: pods[n] for n in want}}


def path_of(st: dict[str, Any], svc: str) -> str:
    return str(next(v for k, v in st["proxy"]["paths"].items() if k.startswith(f"default/{svc}:")))


# ---- the must-shows ------------------------------------------------------------------------------


async def test_pod_on_site1_calls_web_on_site2_by_name_through_the_tunnel(world: World) -> None:
    w = world
    pods = await wait_for(lambda: all_running(w), deadline_s=STARTUP_S, what="web and both clients Running")
    web = pods["web"]
    assert web["spec"]["nodeName"] == NODES[2]
    assert web["status"]["podIP"].startswith("10.2.64.")
    assert pods["client-site1"]["status"]["podIP"].startswith("10.1.64.")
    s1 = w.sites[1]
    client = await container_of(s1, pods["client-site1"], "c")
    # edged gave the pod the mesh DNS and the cluster search path.
    res = await s1.cri.exec_sync(client, ["cat", "/etc/resolv.conf"], timeout_s=EXEC_TIMEOUT_S)
    resolv = res.stdout.decode()
    assert f"nameserver {MESH_DNS}" in resolv and f"default.svc.{DOMAIN}" in resolv, resolv

    async def web_path_known() -> bool:
        st = await mesh_status(w, 1)
        return any(k.startswith("default/web:") for k in st["proxy"]["paths"])

    await wait_for(web_path_known, deadline_s=DEADLINE_S, what="site 1's agent to have the web Service")
    before = await mesh_status(w, 1)
    assert path_of(before, "web") == "userspace", before["proxy"]["paths"]  # the endpoint is at site 2
    url = f"http://web.default.svc.{DOMAIN}:{WEB_PORT}/etc/hostname"
    last: list[Any] = []

    async def answered() -> str:
        last[:] = await wget_in(s1, client, url)
        return str(last[1]) if last[0] == 0 else ""

    # The first answer may wait for the Service's endpoint to reach site 1 (one watch event).
    try:
        got = await wait_for(answered, deadline_s=DEADLINE_S, what=f"{url} from the site-1 client pod")
    except AssertionError as e:
        raise AssertionError(f"{e}; the pod said {last}; site 1: {await mesh_status(w, 1)}") from None
    assert got == web["metadata"]["name"]  # the answer came from the site-2 pod itself
    svc = json.loads(await w.kubectl("get", "service", "web", "-n", "default", "-o", "json"))
    assert await resolve_in(s1, client, f"web.default.svc.{DOMAIN}") == svc["spec"]["clusterIP"]
    for short in ("web", "web.default"):  # through the pod's search path
        assert await wget_in(s1, client, f"http://{short}:{WEB_PORT}/etc/hostname") == (0, got)
    after = await mesh_status(w, 1)
    assert after["tunnel"]["paths"].get(NODES[2]) == "relay", after["tunnel"]["paths"]
    assert after["tunnel"]["streams_opened"]["relay"] >= before["tunnel"]["streams_opened"]["relay"] + 2
    assert after["proxy"]["userspace_forwarded"] >= before["proxy"]["userspace_forwarded"] + 2
    assert (await mesh_status(w, 2))["tunnel"]["streams_accepted"] >= 3


async def test_same_node_pod_reaches_web_over_the_kernel_path(world: World) -> None:
    w = world
    pods = await wait_for(lambda: all_running(w), deadline_s=STARTUP_S, what="web and both clients Running")
    s2 = w.sites[2]
    client = await container_of(s2, pods["client-site2"], "c")

    async def web_path_kernel() -> bool:
        st = await mesh_status(w, 2)
        return (
            any(k.startswith("default/web:") for k in st["proxy"]["paths"]) and path_of(st, "web") == "kernel"
        )

    await wait_for(web_path_kernel, deadline_s=DEADLINE_S, what="site 2's agent to DNAT web in the kernel")
    before = await mesh_status(w, 2)
    for _ in range(3):
        url = f"http://web.default.svc.{DOMAIN}:{WEB_PORT}/etc/hostname"
        assert await wget_in(s2, client, url) == (0, pods["web"]["metadata"]["name"])
    after = await mesh_status(w, 2)
    for k in ("userspace_forwarded", "userspace_bytes_up", "userspace_bytes_down"):
        assert after["proxy"][k] == before["proxy"][k], k  # not one byte through the agent
    assert after["tunnel"]["bytes_out"] == before["tunnel"]["bytes_out"]
    assert after["tunnel"]["streams_accepted"] == before["tunnel"]["streams_accepted"]
