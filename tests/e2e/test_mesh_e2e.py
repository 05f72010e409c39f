"""EdgeMesh end to end, in network namespaces this module creates (all deleted at the end, also on
failure): a cloud namespace (cloudcore with its embedded API and the mesh relay) on a "WAN" bridge,
and two sites in different subnets that cannot route to each other, each behind a NAT router
(iptables MASQUERADE; site-to-site UDP dropped at the routers until the hole-punching test lifts
that, so the sites first meet only through the relay). Each site has a node namespace running edgecore (edged off) and the mesh agent
(`python -m edgemesh`, edge mode: the MetaServer as its source, edgecore's node certificate as its
tunnel identity). "Pods" are processes in their own namespaces, attached to their node by a veth,
whose resolv.conf (/etc/netns/<ns>/resolv.conf, which `ip netns exec` mounts) names the mesh DNS;
the Services and EndpointSlices are created in the API to match them.

    cloud 198.18.0.1 ──wan── r1 (NAT) ── lan 10.1.0.0/24: n1 .2, lanpod .50
                         └── r2 (NAT) ── lan 10.2.0.0/24: n2 .2
    n1 pods: c1 10.1.1.2 (client), w1 10.1.2.2, w1b 10.1.3.2     n2 pods: w2 10.2.1.2, w2b 10.2.2.2

The test process enters the cloud namespace (this thread only) while it talks to the API, and makes
sockets inside other namespaces with short-lived threads (see tests/integration/test_mesh_tunnel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dnslib import QTYPE, RCODE, DNSRecord

from kubeedge.kube import ENDPOINTSLICES, SERVICES, KubeClient, KubeConfig, NotFound
from kubeedge.pki import certs, tokens
from tests.cloudcore_proc import Proc, cloudcore_doc
from tests.cluster import wait_for
from tests.e2e.backbone import edge_config_doc
from tests.integration.test_mesh_tunnel import CLONE_NEWNET, Topology, connect_in, sh, socket_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables", "nft")),
        reason="needs root, iproute2, iptables and nftables for network namespaces",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
CLOUD_IP = "198.18.0.1"
PORTS = {"api": 16443, "ws": 10000, "https": 10002, "metrics": 10010, "relay": 20007}
MESH_DNS = "169.254.96.16"
METRICS_PORT = 10551
NODE1, NODE2 = "site1-node", "site2-node"
STARTUP_S = 60.0
DEADLINE_S = 20.0
KEEPALIVE = (0.5, 2.0)
DOMAIN = "cluster.local"

WEB = r"""
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"""

# Resolves by name through the pod's resolv.conf (glibc → the mesh DNS) and fetches over HTTP.
CLIENT = r"""
import socket, sys, urllib.request
name = sys.argv[1]
ip = socket.gethostbyname(name)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(ip, opener.open("http://" + name + "/", timeout=15).read().decode().strip())
"""


@dataclass
class Mesh:
    base: Path
    topo: Topology
    ns: dict[str, str]
    wan_if: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    cluster_ips: dict[str, str] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.base / "cloud" / "apiserver" / "admin.kubeconfig"

    def in_ns(self, key: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[key], *argv]


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run this thread in network namespace `ns` (new sockets land there), restoring it after."""
    libc = ctypes.CDLL(None, use_errno=True)
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        if libc.setns(orig, CLONE_NEWNET) != 0:  # pragma: no cover - would leave pytest elsewhere
            os._exit(f"cannot return to the original network namespace: errno {ctypes.get_errno()}")  # type: ignore[arg-type]
        os.close(orig)
        os.close(target)


# ---- HTTP and DNS from inside namespaces ---------------------------------------------------------


async def http_get(
    ns: str, host: str, port: int, path: str = "/", headers: dict[str, str] | None = None
) -> str:
    r, w = await connect_in(ns, host, port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        w.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n{extra}\r\n".encode())
        await w.drain()
        data = await asyncio.wait_for(r.read(), 15)
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
        raise AssertionError(f"bad answer from {host}:{port}{path}: {data[:200]!r}")
    return body.decode()


async def status(mesh: Mesh, node: str) -> dict[str, Any]:
    return dict(json.loads(await http_get(mesh.ns[node], "127.0.0.1", METRICS_PORT, "/status")))


async def metrics_text(mesh: Mesh, node: str) -> str:
    return await http_get(mesh.ns[node], "127.0.0.1", METRICS_PORT, "/metrics")


async def dns_raw(ns: str, packet: bytes, wait_s: float = 3.0) -> bytes | None:
    s = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(s, packet, (MESH_DNS, 53))
        try:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(s, 65535), wait_s)
        except TimeoutError:
            return None
        return data
    finally:
        s.close()


async def dns_a(ns: str, name: str) -> tuple[int, list[str]]:
    data = await dns_raw(ns, DNSRecord.question(name, "A").pack())
    assert data is not None, f"no DNS answer for {name}"
    r = DNSRecord.parse(data)
    return r.header.rcode, sorted(str(a.rdata) for a in r.rr if a.rtype == QTYPE.A)


# ---- API objects ---------------------------------------------------------------------------------


def service(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}], **spec},
    }


def endpoint_slice(
    svc: str, eps: list[tuple[str, str, bool]], name: str = "", port: int = 8080
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name or f"{svc}-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}} for ip, node, ready in eps
        ],
    }


async def put(kc: KubeClient, res: Any, obj: dict[str, Any]) -> dict[str, Any]:
    try:
        cur = await kc.get(res, obj["metadata"]["name"], "default")
    except NotFound:
        return await kc.create(res, obj, "default")
    obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": cur["metadata"]["resourceVersion"]}}
    if res is SERVICES:
        obj["spec"] = {**obj["spec"], "clusterIP": cur["spec"].get("clusterIP")}
    return await kc.replace(res, obj, "default")


SERVICES_SPEC: dict[str, tuple[dict[str, str], list[tuple[str, str, bool]]]] = {
    # name: (annotations, endpoints (ip, nodeName, ready))
    "web": ({}, [("10.2.1.2", NODE2, True), ("10.2.2.2", NODE2, True)]),
    "local": ({}, [("10.1.2.2", NODE1, True)]),
    "lan": ({}, [("10.1.0.50", "site1-other", True)]),
    "rr": (
        {"edgemesh.kubeedge.io/lb-policy": "ROUND_ROBIN"},
        [("10.1.2.2", NODE1, True), ("10.1.3.2", NODE1, True)],
    ),
    "rnd": (
        {"edgemesh.kubeedge.io/lb-policy": "RANDOM"},
        [("10.1.2.2", NODE1, True), ("10.1.3.2", NODE1, True)],
    ),
    "hdr": (
        {"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:header=X-User"},
        [("10.1.2.2", NODE1, True), ("10.1.3.2", NODE1, True)],
    ),
    "srcip": (
        {"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:source-ip"},
        [("10.1.2.2", NODE1, True), ("10.1.3.2", NODE1, True)],
    ),
    "ghost": ({}, [("10.2.1.2", NODE2, True)]),  # endpoint port 9999: nothing listens there
}


# ---- the fixture ---------------------------------------------------------------------------------


def udp_block_rules(site: int) -> list[list[str]]:
    """Site-to-site UDP dropped at site `site`'s router (in both directions): no hole punching, so
    the sites meet only through the relay until a test deletes these."""
    other = f"198.18.0.1{3 - site}"
    return [["FORWARD", "-p", "udp", flag, other, "-j", "DROP"] for flag in ("-d", "-s")]


def build_topology(topo: Topology) -> tuple[dict[str, str], dict[str, str]]:
    ns = {
        k: topo.ns(k)
        for k in ("wan", "cloud", "r1", "r2", "n1", "n2", "lanpod", "c1", "w1", "w1b", "w2", "w2b")
    }
    br = topo.bridge(ns["wan"])
    topo.link(ns["cloud"], f"{CLOUD_IP}/24", ns["wan"], None, bridge=br)
    wan_if: dict[str, str] = {}
    for i, r in ((1, "r1"), (2, "r2")):
        wan_if[r], _ = topo.link(ns[r], f"198.18.0.1{i}/24", ns["wan"], None, bridge=br)
        lan = topo.bridge(ns[r], "lan")
        sh("ip", "-n", ns[r], "addr", "add", f"10.{i}.0.1/24", "dev", lan)
        topo.router(ns[r], wan_if[r])
        for rule in udp_block_rules(i):
            sh("ip", "netns", "exec", ns[r], "iptables", "-A", *rule)
        node = ns[f"n{i}"]
        topo.link(node, f"10.{i}.0.2/24", ns[r], None, bridge=lan)
        sh("ip", "-n", node, "route", "add", "default", "via", f"10.{i}.0.1")
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    topo.link(ns["lanpod"], "10.1.0.50/24", ns["r1"], None, bridge="lan")
    # The site routes its pod networks via their nodes (what a site's router or CNI would do).
    sh("ip", "-n", ns["lanpod"], "route", "add", "10.1.0.0/16", "via", "10.1.0.2")
    for pod, node, subnet in (
        ("c1", "n1", "10.1.1"),
        ("w1", "n1", "10.1.2"),
        ("w1b", "n1", "10.1.3"),
        ("w2", "n2", "10.2.1"),
        ("w2b", "n2", "10.2.2"),
    ):
        topo.link(ns[pod], f"{subnet}.2/24", ns[node], f"{subnet}.1/24")
        sh("ip", "-n", ns[pod], "route", "add", "default", "via", f"{subnet}.1")
    return ns, wan_if


def cloud_config(base: Path) -> Path:
    # cloudhub on every address of the cloud's namespace, metrics and the API on its loopback.
    doc = cloudcore_doc(
        base / "cloud",
        PORTS,
        hub_ip="0.0.0.0",
        advertise=[CLOUD_IP],
        extra={"modules": {"edgeMeshRelay": {"enable": True, "port": PORTS["relay"]}}},
    )
    path = base / "cloudcore.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def agent_config(base: Path, node: str, edge_dir: Path) -> Path:
    doc = {
        "apiVersion": "agent.edgemesh.config.kubeedge.io/v1alpha1",
        "kind": "EdgeMeshAgent",
        "kubeAPIConfig": {"metaServer": "http://127.0.0.1:10550"},
        "commonConfig": {"nodeName": node, "edgecoreDataDir": str(edge_dir), "metricsPort": METRICS_PORT},
        "modules": {
            # Nothing upstream in this topology: a closed port answers at once.
            "edgeDNS": {"upstreamServers": ["127.0.0.1:5399"], "upstreamTimeout": 0.5},
            "edgeProxy": {"minSyncInterval": 0.05},
            "edgeTunnel": {
                "relayNodes": [{"nodeName": "cloud", "advertiseAddress": [f"{CLOUD_IP}:{PORTS['relay']}"]}],
                "keepaliveInterval": KEEPALIVE[0],
                "keepaliveTimeout": KEEPALIVE[1],
                "upgradeInterval": 1.0,
            },
        },
    }
    path = base / f"{node}-mesh.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def _bring_up(mesh: Mesh) -> None:
    base, ns = mesh.base, mesh.ns
    cloud = Proc(
        mesh.in_ns("cloud", sys.executable, "-m", "kubeedge.cloudcore", "--config", str(cloud_config(base))),
        base / "cloudcore.log",
    )
    mesh.procs["cloud"] = cloud.start()
    for pod, node in (("w1", "w1"), ("w1b", "w1b"), ("w2", "w2"), ("w2b", "w2b"), ("lanpod", "lanpod")):
        mesh.procs[pod] = Proc(
            mesh.in_ns(pod, sys.executable, "-c", WEB, node, "8080"), base / f"{pod}.log"
        ).start()

    token_file = base / "cloud" / tokens.TOKEN_FILE

    async def cloud_up() -> bool:
        assert cloud.alive(), f"cloudcore exited:\n{cloud.tail()}"
        return token_file.exists()

    await wait_for(cloud_up, deadline_s=STARTUP_S, what="cloudcore's bootstrap token")
    with entered(ns["cloud"]):

        async def api_up() -> bool:
            assert cloud.alive(), f"cloudcore exited:\n{cloud.tail()}"
            try:
                async with KubeClient(KubeConfig.from_file(mesh.kubeconfig)) as kc:
                    await kc.raw("GET", "/healthz")
                return True
            except Exception:
                return False

        await wait_for(api_up, deadline_s=STARTUP_S, what="the API in the cloud namespace")
    token = token_file.read_text().strip()
    for key, node in (("n1", NODE1), ("n2", NODE2)):
        edge_dir = base / node
        edge_dir.mkdir()
        doc = edge_config_doc(
            node,
            edge_dir,
            10550,
            ws=f"{CLOUD_IP}:{PORTS['ws']}",
            https=f"https://{CLOUD_IP}:{PORTS['https']}",
            token=token,
        )
        cfg = edge_dir / "edgecore.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        mesh.procs[f"edge-{key}"] = Proc(
            mesh.in_ns(key, sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg)),
            base / f"{node}.log",
        ).start()
    for key, node in (("n1", NODE1), ("n2", NODE2)):
        edge = mesh.procs[f"edge-{key}"]

        async def certified(edge: Proc = edge, node: str = node) -> bool:
            assert edge.alive(), f"edgecore exited:\n{edge.tail()}"
            return (base / node / "certs" / "server.crt").exists()

        await wait_for(certified, deadline_s=STARTUP_S, what=f"{node}'s node certificate")
    await create_objects(mesh)
    for key, node in (("n1", NODE1), ("n2", NODE2)):
        mesh.procs[f"mesh-{key}"] = Proc(
            mesh.in_ns(
                key, sys.executable, "-m", "edgemesh", "--config", str(agent_config(base, node, base / node))
            ),
            base / f"{node}-mesh.log",
        ).start()
    for key in ("n1", "n2"):
        await agent_healthy(mesh, key)

    async def all_services_at_n1() -> bool:
        return (await status(mesh, "n1"))["services"] >= len(SERVICES_SPEC)

    await wait_for(all_services_at_n1, deadline_s=DEADLINE_S, what="every Service at site 1's agent")


async def agent_healthy(mesh: Mesh, key: str) -> None:
    agent = mesh.procs[f"mesh-{key}"]

    async def healthy() -> bool:
        assert agent.alive(), f"mesh agent exited:\n{agent.tail()}"
        try:
            await http_get(mesh.ns[key], "127.0.0.1", METRICS_PORT, "/healthz")
        except (OSError, AssertionError, TimeoutError):
            return False
        return True

    await wait_for(healthy, deadline_s=STARTUP_S, what=f"mesh agent on {key} healthy")


async def create_objects(mesh: Mesh) -> None:
    with entered(mesh.ns["cloud"]):
        async with KubeClient(KubeConfig.from_file(mesh.kubeconfig)) as kc:
            for name, (ann, eps) in SERVICES_SPEC.items():
                extra = {"sessionAffinity": "ClientIP"} if name == "srcip" else {}
                svc = await put(kc, SERVICES, service(name, ann, **extra))
                mesh.cluster_ips[name] = svc["spec"]["clusterIP"]
                await put(
                    kc, ENDPOINTSLICES, endpoint_slice(name, eps, port=9999 if name == "ghost" else 8080)
                )
            await put(kc, SERVICES, service("hl", clusterIP="None"))
            await put(
                kc,
                ENDPOINTSLICES,
                endpoint_slice("hl", [("10.2.1.2", NODE2, True), ("10.2.2.2", NODE2, True)]),
            )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("mesh")
    topo = Topology()
    netns_etc: list[Path] = []
    m: Mesh | None = None
    try:
        ns, wan_if = build_topology(topo)
        m = Mesh(base, topo, ns, wan_if)
        # The client pod's resolver is the mesh DNS, with the usual search path.
        d = Path("/etc/netns") / ns["c1"]
        d.mkdir(parents=True, exist_ok=True)
        netns_etc.append(d)
        (d / "resolv.conf").write_text(
            f"nameserver {MESH_DNS}\nsearch default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\noptions ndots:5 timeout:2 attempts:2\n"
        )
        asyncio.run(_bring_up(m))
        yield m
    finally:
        if m is not None:
            # Agents first (they remove their rules), then edges, pods and the cloud.
            for key in sorted(m.procs, key=lambda k: (not k.startswith("mesh"), k == "cloud")):
                m.procs[key].stop()
        for d in netns_etc:
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only if we made it and nothing else uses it
        topo.close()


# ---- the must-shows ------------------------------------------------------------------------------


async def test_client_on_site1_resolves_and_reaches_web_on_site2_through_the_relay(mesh: Mesh) -> None:
    before = await status(mesh, "n1")
    for name in (f"web.default.svc.{DOMAIN}", "web"):  # the full name, and through the search path
        out = await asyncio.to_thread(
            subprocess.run,
            mesh.in_ns("c1", sys.executable, "-c", CLIENT, name),
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        assert out.returncode == 0, out.stderr
        ip, backend = out.stdout.split()
        assert ip == mesh.cluster_ips["web"]
        assert backend in ("w2", "w2b")
    after = await status(mesh, "n1")
    assert after["tunnel"]["paths"].get(NODE2) == "relay"
    assert after["tunnel"]["streams_opened"]["relay"] >= before["tunnel"]["streams_opened"]["relay"] + 2
    assert after["proxy"]["userspace_forwarded"] >= before["proxy"]["userspace_forwarded"] + 2
    text = await metrics_text(mesh, "n1")
    assert f'edgemesh_tunnel_peer_path{{path="relay",peer="{NODE2}"}} 1.0' in text
    assert 'edgemesh_dns_queries_total{qtype="A",result="noerror"}' in text
    n2 = await status(mesh, "n2")
    assert n2["tunnel"]["streams_accepted"] >= 2


async def test_with_site_to_site_udp_allowed_the_path_switches_to_holepunch(mesh: Mesh) -> None:
    for i in (1, 2):
        for rule in udp_block_rules(i):
            sh("ip", "netns", "exec", mesh.ns[f"r{i}"], "iptables", "-D", *rule)
    before = (await status(mesh, "n1"))["tunnel"]["streams_opened"]["holepunch"]

    async def punched() -> bool:
        return (await status(mesh, "n1"))["tunnel"]["paths"].get(NODE2) == "holepunch"

    await wait_for(punched, deadline_s=DEADLINE_S + 10, what="site 1's path to site 2 to become holepunch")
    assert (await http_get(mesh.ns["c1"], mesh.cluster_ips["web"], 80)).strip() in ("w2", "w2b")
    st = await status(mesh, "n1")
    assert st["tunnel"]["streams_opened"]["holepunch"] > before
    text = await metrics_text(mesh, "n1")
    assert f'edgemesh_tunnel_peer_path{{path="holepunch",peer="{NODE2}"}} 1.0' in text


async def test_same_node_and_same_subnet_traffic_takes_the_kernel_path(mesh: Mesh) -> None:
    st = await status(mesh, "n1")
    assert _path(st, "local") == "kernel", st["proxy"]["paths"]
    assert _path(st, "lan") == "kernel", st["proxy"]["paths"]
    assert _path(st, "web") == "userspace", st["proxy"]["paths"]
    before = st["proxy"], st["tunnel"]
    for _ in range(5):
        assert (await http_get(mesh.ns["c1"], mesh.cluster_ips["local"], 80)).strip() == "w1"
        assert (await http_get(mesh.ns["n1"], mesh.cluster_ips["lan"], 80)).strip() == "lanpod"
    st = await status(mesh, "n1")
    for k in ("userspace_forwarded", "userspace_bytes_up", "userspace_bytes_down", "userspace_failed"):
        assert st["proxy"][k] == before[0][k], k  # no byte went through the agent
    assert st["tunnel"]["bytes_out"] == before[1]["bytes_out"]


def _path(st: dict[str, Any], svc: str) -> str:
    """How the agent forwards a service's port: kernel / mixed / userspace / reject."""
    return str(next(v for k, v in st["proxy"]["paths"].items() if k.startswith(f"default/{svc}:")))


async def test_endpoint_changes_reach_dns_and_proxy_within_one_watch_event(mesh: Mesh) -> None:
    rc, ips = await dns_a(mesh.ns["c1"], f"hl.default.svc.{DOMAIN}")
    assert (rc, ips) == (RCODE.NOERROR, ["10.2.1.2", "10.2.2.2"])
    events0 = (await status(mesh, "n1"))["source"]["events"]
    with entered(mesh.ns["cloud"]):
        async with KubeClient(KubeConfig.from_file(mesh.kubeconfig)) as kc:
            # One object change (one watch event): w2b not ready for both the headless and web.
            await put(
                kc,
                ENDPOINTSLICES,
                endpoint_slice("hl", [("10.2.1.2", NODE2, True), ("10.2.2.2", NODE2, False)]),
            )

    async def dns_changed() -> bool:
        return (await dns_a(mesh.ns["c1"], f"hl.default.svc.{DOMAIN}"))[1] == ["10.2.1.2"]

    await wait_for(dns_changed, deadline_s=DEADLINE_S, what="DNS to drop the unready endpoint")
    assert (await status(mesh, "n1"))["source"]["events"] == events0 + 1
    # The proxy: scale the local service to the second pod only; the next connection lands there.
    with entered(mesh.ns["cloud"]):
        async with KubeClient(KubeConfig.from_file(mesh.kubeconfig)) as kc:
            await put(kc, ENDPOINTSLICES, endpoint_slice("local", [("10.1.3.2", NODE1, True)]))
    try:

        async def proxied_to_new() -> bool:
            return (await http_get(mesh.ns["c1"], mesh.cluster_ips["local"], 80)).strip() == "w1b"

        await wait_for(proxied_to_new, deadline_s=DEADLINE_S, what="the proxy to follow the endpoint change")
        assert (await status(mesh, "n1"))["source"]["events"] == events0 + 2
    finally:
        with entered(mesh.ns["cloud"]):
            async with KubeClient(KubeConfig.from_file(mesh.kubeconfig)) as kc:
                await put(kc, ENDPOINTSLICES, endpoint_slice("local", [("10.1.2.2", NODE1, True)]))
                await put(
                    kc,
                    ENDPOINTSLICES,
                    endpoint_slice("hl", [("10.2.1.2", NODE2, True), ("10.2.2.2", NODE2, True)]),
                )

        async def restored() -> bool:
            return (await dns_a(mesh.ns["c1"], f"hl.default.svc.{DOMAIN}"))[1] == [
                "10.2.1.2",
                "10.2.2.2",
            ] and (await http_get(mesh.ns["c1"], mesh.cluster_ips["local"], 80)).strip() == "w1"

        await wait_for(restored, deadline_s=DEADLINE_S, what="the endpoints to be restored")


async def test_each_lb_policy_distributes_as_specified(mesh: Mesh) -> None:
    c1, n = mesh.ns["c1"], 20

    seq: list[str] = []

    async def hits(svc: str, headers: dict[str, str] | None = None, ns: str = c1) -> Counter[str]:
        seq.clear()
        for _ in range(n):
            seq.append((await http_get(ns, mesh.cluster_ips[svc], 80, headers=headers)).strip())
        return Counter(seq)

    rr = await hits("rr")
    # Alternation. A rule reload (any sync of this node's rules) restarts the kernel's counter, so
    # one repeat is allowed; random choice would repeat about n/2 times.
    repeats = sum(1 for a, b in itertools.pairwise(seq) if a == b)
    assert set(rr) == {"w1", "w1b"} and repeats <= 1, seq
    rnd = await hits("rnd")
    assert set(rnd) == {"w1", "w1b"}, rnd  # P(all 20 on one backend) = 2^-19
    by_user = {
        u: await hits("hdr", {"X-User": u})
        for u in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
    }
    for u, c in by_user.items():
        assert len(c) == 1, (u, c)  # a key stays on one backend
    assert len({next(iter(c)) for c in by_user.values()}) == 2, by_user  # and keys spread over both
    same_src = await hits("srcip")
    assert len(same_src) == 1, same_src  # one client address → one backend (hash + ClientIP affinity)
    other_src = await hits("srcip", ns=mesh.ns["n1"])  # the node's own address as another client
    assert len(other_src) == 1, other_src


async def test_bad_input_gets_clean_errors_and_the_agent_keeps_serving(mesh: Mesh, tmp_path: Path) -> None:
    c1 = mesh.ns["c1"]
    # Malformed and oversized DNS packets: FORMERR or silence, never a crash.
    for junk in (b"\x00", os.urandom(37), b"\x12\x34" + b"\xff" * 4000):
        reply = await dns_raw(c1, junk, wait_s=1.0)
        if reply is not None and len(reply) >= 4:
            assert reply[3] & 0x0F in (RCODE.FORMERR, RCODE.NOTIMP, RCODE.REFUSED), reply[:12]
    assert (await dns_a(c1, f"web.default.svc.{DOMAIN}")) == (RCODE.NOERROR, [mesh.cluster_ips["web"]])
    # A peer with a certificate from another CA: refused at the handshake by the agent and the relay.
    foreign = certs.create_ca("not-our-ca")
    crt, keyfile = tmp_path / "f.crt", tmp_path / "f.key"
    certs.issue(foreign, f"system:node:{NODE2}", organizations=["system:nodes"], client=True).save(
        crt, keyfile
    )
    refused0 = (await status(mesh, "n1"))["tunnel"]["handshakes_refused"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(crt, keyfile)
    s = socket_in(mesh.ns["n1"])
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", 20006))
    with contextlib.suppress(ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        r, w = await asyncio.open_connection(sock=s, ssl=ctx, server_hostname="x")
        w.write(b"\x00" * 64)
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()

    async def counted() -> bool:
        return bool((await status(mesh, "n1"))["tunnel"]["handshakes_refused"] > refused0)

    await wait_for(counted, deadline_s=DEADLINE_S, what="the foreign-CA handshake to be refused")
    # A stream to a non-existent endpoint (nothing on 10.2.1.2:9999 at site 2): the client's
    # connection closes, site 2 counts a refused stream, and everything else keeps working.
    refused_at_n2 = (await status(mesh, "n2"))["tunnel"]["streams_refused"]
    r, w = await connect_in(c1, mesh.cluster_ips["ghost"], 80)
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    await w.drain()
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(r.read(), 15) == b""  # closed (or reset): no answer, no hang
    w.close()

    async def refused() -> bool:
        return bool((await status(mesh, "n2"))["tunnel"]["streams_refused"] > refused_at_n2)

    await wait_for(refused, deadline_s=DEADLINE_S, what="site 2 to refuse the stream")
    assert (await http_get(c1, mesh.cluster_ips["web"], 80)).strip() in ("w2", "w2b")
    for key in ("mesh-n1", "mesh-n2"):
        assert mesh.procs[key].alive()


async def test_cloud_link_down_dns_and_proxy_keep_working_from_the_metaserver(mesh: Mesh) -> None:
    r1, wan = mesh.ns["r1"], mesh.wan_if["r1"]
    sh("ip", "-n", r1, "link", "set", wan, "down")
    try:
        # The relay session times out (keepalive), the edge loses the cloud: local service still works.
        async def relay_lost() -> bool:
            return (await status(mesh, "n1"))["tunnel"]["relays_connected"] == 0

        await wait_for(relay_lost, deadline_s=DEADLINE_S, what="site 1 to notice the cloud is gone")
        assert (await dns_a(mesh.ns["c1"], f"local.default.svc.{DOMAIN}")) == (
            RCODE.NOERROR,
            [mesh.cluster_ips["local"]],
        )
        assert (await dns_a(mesh.ns["c1"], f"hl.default.svc.{DOMAIN}"))[1] == ["10.2.1.2", "10.2.2.2"]
        assert (await http_get(mesh.ns["c1"], mesh.cluster_ips["local"], 80)).strip() == "w1"
        st = await status(mesh, "n1")
        assert st["source"]["synced"] and st["services"] >= len(SERVICES_SPEC)
        # A restart while offline: the agent syncs from the MetaServer alone and serves again.
        agent = mesh.procs["mesh-n1"]
        agent.stop()
        assert agent.proc is not None and agent.proc.returncode == 0, agent.tail()
        agent.start()
        await agent_healthy(mesh, "n1")
        st = await status(mesh, "n1")
        assert st["services"] >= len(SERVICES_SPEC) and st["tunnel"]["relays_connected"] == 0
        assert (await dns_a(mesh.ns["c1"], f"web.default.svc.{DOMAIN}")) == (
            RCODE.NOERROR,
            [mesh.cluster_ips["web"]],
        )
        assert (await http_get(mesh.ns["c1"], mesh.cluster_ips["local"], 80)).strip() == "w1"
    finally:
        sh("ip", "-n", r1, "link", "set", wan, "up")

    async def relay_back() -> bool:
        return (await status(mesh, "n1"))["tunnel"]["relays_connected"] == 1

    await wait_for(relay_back, deadline_s=DEADLINE_S + 15, what="site 1 to reconnect to the relay")


def test_agent_stop_removes_its_rules(mesh: Mesh) -> None:
    """Last (module order): a clean stop leaves no nft table/iptables chain of ours in the node."""
    agent = mesh.procs["mesh-n2"]
    agent.stop()
    assert agent.proc is not None and agent.proc.returncode == 0, agent.tail()
    out = subprocess.run(
        mesh.in_ns("n2", "nft", "list", "ruleset"), capture_output=True, text=True, timeout=30
    )
    assert "edgemesh" not in out.stdout, out.stdout
