"""keadm as users run it: real ``python -m kubeedge.keadm`` processes starting real daemons.

Proves: ``init --detach`` writes cloudcore.yaml and leaves a healthy cloudcore running with a pid
file; ``gettoken`` prints a token ``split_token`` accepts; ``join`` with it brings the Node to Ready;
a tampered token and a taken port fail at join time with exit 1 and one line saying what to do;
``reset --force`` stops both daemons and removes their directories; and ``dev-run`` (``make run``)
brings up its own containerd, cloudcore and a Ready local node on which a busybox httpd Deployment
applied with kubectl runs (and a pod's projected service-account token arrives from the cloud), then on
SIGINT stops every child, pod shim and the pod bridge with exit code 0."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeedge.keadm.devruntime import bridge_for
from kubeedge.kube import NODES, KubeClient, KubeConfig, NotFound
from kubeedge.pki import tokens
from tests.apiserver_proc import KUBECTL, ROOT, free_port
from tests.cluster import wait_for

HOST = "127.0.0.1"
DEADLINE = 60.0


def keadm(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeedge.keadm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def pid_of(path: Path) -> int:
    return int(path.read_text().strip())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def node_ready(kubeconfig: Path, name: str, within: float = DEADLINE) -> dict:
    async with KubeClient(KubeConfig.from_file(str(kubeconfig))) as kc:
        deadline = time.monotonic() + within
        last: object = None
        while time.monotonic() < deadline:
            with contextlib.suppress(NotFound):
                last = node = await kc.get(NODES, name)
                conds = node.get("status", {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    return node
            await asyncio.sleep(0.2)
    raise AssertionError(f"node {name} not Ready within {within}s (last: {last!r})")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    data = tmp_path / "cloud"
    ports = {k: free_port() for k in ("api", "ws", "https", "metrics")}
    r = keadm(
        "init",
        "--detach",
        "--data-dir",
        str(data),
        "--advertise-address",
        HOST,
        "--set",
        f"embedded.listen={HOST}:{ports['api']}",
        "--set",
        f"modules.cloudHub.websocket.port={ports['ws']}",
        "--set",
        f"modules.cloudHub.https.port={ports['https']}",
        "--set",
        f"metrics.address={HOST}:{ports['metrics']}",
    )
    try:
        assert r.returncode == 0, r.stderr + r.stdout
        yield data, ports
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(pid_of(data / "cloudcore.pid"), signal.SIGKILL)


async def test_init_gettoken_join_reset(cloud: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    data, ports = cloud
    doc = yaml.safe_load((data / "cloudcore.yaml").read_text())
    assert doc["modules"]["cloudHub"]["websocket"]["port"] == ports["ws"]
    assert doc["modules"]["cloudHub"]["advertiseAddress"] == [HOST]
    cloud_pid = pid_of(data / "cloudcore.pid")
    assert not gone(cloud_pid)

    r = keadm("gettoken", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    ca_hash, _ = tokens.split_token(token)
    assert len(ca_hash) == 64

    edge = tmp_path / "edge"
    join_args = [
        "join",
        "--detach",
        "--cloudcore-ipport",
        f"{HOST}:{ports['ws']}",
        "--certport",
        str(ports["https"]),
        "--edgenode-name",
        "keadm-edge-1",
        "--labels",
        "site=lab,tier=test",
    ]
    meta = f"{HOST}:{free_port()}"
    r = keadm(
        *join_args,
        "--token",
        token,
        "--data-dir",
        str(edge),
        "--runtime-endpoint",
        "unix:///run/nowhere/containerd.sock",
        "--set",
        f"modules.metaManager.metaServer.server={meta}",
        # No container runtime here: edged (on by default) would report the node NotReady.
        "--set",
        "modules.edged.enable=false",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert (edge / "certs" / "server.crt").exists()
    assert (edge / "edgecore.yaml").stat().st_mode & 0o077 == 0  # it holds the token
    edged = yaml.safe_load((edge / "edgecore.yaml").read_text())["modules"]["edged"]
    assert edged["runtimeEndpoint"] == "unix:///run/nowhere/containerd.sock" and edged["enable"] is False
    node = await node_ready(data / "apiserver" / "admin.kubeconfig", "keadm-edge-1")
    assert node["metadata"]["labels"]["site"] == "lab"
    edge_pid = pid_of(edge / "edgecore.pid")

    # The same MetaServer address again: refused at join time, naming the setting to change.
    r = keadm(*join_args, "--token", token, "--data-dir", str(tmp_path / "edge2"), "--set",
              f"modules.metaManager.metaServer.server={meta}")  # fmt: skip
    assert r.returncode == 1
    assert "already in use" in r.stderr and "modules.metaManager.metaServer.server" in r.stderr

    # A tampered signature: the cloud refuses the certificate; exit 1, one line, what to do next.
    head, _, sig = token.rpartition(".")
    bad = f"{head}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    r = keadm(*join_args, "--token", bad, "--data-dir", str(tmp_path / "edge3"), "--set",
              f"modules.metaManager.metaServer.server={HOST}:{free_port()}")  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "keadm gettoken" in lines[0], r.stderr
    assert not (tmp_path / "edge3" / "edgecore.pid").exists()

    # A token pinning another CA: refused before any certificate request.
    other = "0" * 64 + token[64:]
    r = keadm(*join_args, "--token", other, "--data-dir", str(tmp_path / "edge4"), "--set",
              f"modules.metaManager.metaServer.server={HOST}:{free_port()}")  # fmt: skip
    assert r.returncode == 1 and "keadm gettoken" in r.stderr, r.stderr

    r = keadm("reset", "--force", "--data-dir", str(edge), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"stopped edgecore (pid {edge_pid})" in r.stdout
    assert f"stopped cloudcore (pid {cloud_pid})" in r.stdout
    assert gone(edge_pid) and gone(cloud_pid)
    assert not edge.exists() and not data.exists()

    r = keadm("gettoken", "--data-dir", str(data))
    assert r.returncode == 1 and "keadm init" in r.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = keadm("join", "--cloudcore-ipport", "nohost", "--token", "x")
    assert r.returncode == 2 and "IP:PORT" in r.stderr
    r = keadm("join", "--cloudcore-ipport", f"{HOST}:1", "--token", "x.y")
    assert r.returncode == 2 and "--token" in r.stderr
    token = "a" * 64 + ".e30.e30.sig"
    r = keadm("join", "--cloudcore-ipport", f"{HOST}:1", "--token", token, "--edgenode-name", "Bad_Name")
    assert r.returncode == 2 and "DNS-1123" in r.stderr
    r = keadm("init", "--data-dir", str(tmp_path), "--set", "modules.cloudHub.nope=1")
    assert r.returncode == 2 and "nope" in r.stderr
    r = keadm("reset", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "--data-dir" in r.stderr
    r = keadm("join", "--cloudcore-ipport", f"{HOST}:1", "--token", token, "--runtime-endpoint", "tcp://h:1")
    assert r.returncode == 2 and "--runtime-endpoint" in r.stderr


def test_init_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        r = keadm("init", "--detach", "--data-dir", str(tmp_path), "--set", f"metrics.address={HOST}:{port}")
    assert r.returncode == 1
    assert f"{HOST}:{port} is already in use" in r.stderr and "--set metrics.address" in r.stderr


# The quickstart's Deployment (README), and a pod with a projected service-account token.
WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: httpd, image: busybox, command: ["httpd", "-f", "-p", "8080"]}
---
apiVersion: v1
kind: Pod
metadata: {name: tok}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts: [{name: api, mountPath: /var/run/secrets/tokens}]
  volumes:
  - name: api
    projected: {sources: [{serviceAccountToken: {path: token, audience: vault, expirationSeconds: 600}}]}
"""
# Apart from make run's 10.86.0.0/24 and the containerd fixtures' 10.200-239.x.x/24.
DEV_POD_CIDR = "10.86.250.0/24"


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    res = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


async def running_pods(kubeconfig: Path) -> dict[str, dict] | None:
    """name -> pod once every pod is Running with an IP (None before)."""
    out = await asyncio.to_thread(kubectl, kubeconfig, "get", "pods", "-o", "json")
    pods = {p["metadata"]["name"]: p for p in json.loads(out)["items"]}
    ok = len(pods) == 2 and all(
        p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP") for p in pods.values()
    )
    return pods if ok else None


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_dev_run_runs_a_deployment_and_stops_everything_on_sigint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "--data-dir", str(run),
        "--node-name", "devrun-node",
        "--api-listen", f"{HOST}:{free_port()}",
        "--hub-port", str(free_port()),
        "--cert-port", str(free_port()),
        "--metrics-address", f"{HOST}:{free_port()}",
        "--tunnel-port", str(free_port()),
        "--stream-port", str(free_port()),
        "--meta-server", f"{HOST}:{free_port()}",
        "--advertise-address", HOST,
        "--pod-cidr", DEV_POD_CIDR,
        "--no-mesh",  # the agent would add an interface and nftables rules to the host's network
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubeedge.keadm", "dev-run", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(150):
            while not any(line.startswith("Ready:") for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, f"dev-run exited early: {''.join(seen)}"
                seen.append(line)
            while not any("keadm join" in line for line in seen):
                seen.append((await proc.stdout.readline()).decode())
        out = "".join(seen)
        assert "kubectl --kubeconfig" in out and "--edgenode-name" in out
        assert "keadm image import IMAGE.tar --runtime-endpoint unix://" in out
        kubeconfig = run / "admin.kubeconfig"
        assert kubeconfig.is_symlink()
        await node_ready(kubeconfig, "devrun-node", within=10)
        children = _children(proc.pid)
        assert len(children) == 3, children  # containerd, cloudcore, edgecore
        edge_doc = yaml.safe_load((run / "edge" / "edgecore.yaml").read_text())
        socket_path = edge_doc["modules"]["edged"]["runtimeEndpoint"].removeprefix("unix://")

        await asyncio.to_thread(kubectl, kubeconfig, "apply", "-f", "-", input=WEB)
        pods = await wait_for(lambda: running_pods(kubeconfig), deadline_s=60, what="both pods Running")
        web = next(p for name, p in pods.items() if name.startswith("web-"))
        assert web["spec"]["nodeName"] == "devrun-node"
        assert ipaddress.ip_address(web["status"]["podIP"]) in ipaddress.ip_network(DEV_POD_CIDR)
        # busybox httpd serves / (its working dir): the pod's own /etc/hostname is its name.
        got = await asyncio.to_thread(http_get, f"http://{web['status']['podIP']}:8080/etc/hostname")
        assert got.strip() == web["metadata"]["name"]
        # kubectl exec and logs reach the pod through the cloud's stream tunnel.
        name = web["metadata"]["name"]
        out_exec = await asyncio.to_thread(kubectl, kubeconfig, "exec", name, "--", "cat", "/etc/hostname")
        assert out_exec.strip() == name
        await asyncio.to_thread(kubectl, kubeconfig, "logs", name)  # httpd -f logs nothing; must succeed

        # The token the cloud issued on the node's behalf, bound to the pod, in the pod's volume.
        uid = pods["tok"]["metadata"]["uid"]
        token_file = (
            run / "edge" / "edged" / "pods" / uid / "volumes" / "kubernetes.io~projected" / "api" / "token"
        )
        claims = jwt_claims(token_file.read_text())
        assert claims["sub"] == "system:serviceaccount:default:default" and claims["aud"] == ["vault"]
        assert claims["kubernetes.io"]["pod"]["uid"] == uid
        assert claims["kubernetes.io"]["node"]["name"] == "devrun-node"

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
        assert code == 0, out + rest
        assert "removed 2 pod sandbox(es)" in rest and "stopped" in rest
        assert all(gone(pid) for pid in children)
        # Nothing outlives it: no shim of its containerd, no pod volume mount, no pod bridge.
        assert await asyncio.to_thread(_leftovers, run, socket_path) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _leftovers(run: Path, socket_path: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (d / "cmdline").read_bytes()
                if socket_path.encode() in cmdline:
                    found.append(f"pid {d.name}: {cmdline!r}")
    found += [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(run) in line]
    if subprocess.run(["ip", "link", "show", bridge_for(DEV_POD_CIDR)], capture_output=True).returncode == 0:
        found.append(f"bridge {bridge_for(DEV_POD_CIDR)}")
    return found


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(d.name))
    return found


# Inside the dev-run's network namespace: the README's `dig @169.254.96.16 +short NAME` then
# `curl http://IP/etc/hostname`, with dnslib and urllib (neither dig nor a proxy is assumed).
MESH_CALL = r"""
import socket, sys, urllib.request
from dnslib import QTYPE, DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(DNSRecord.question(sys.argv[1], "A").pack(), ("169.254.96.16", 53))
ips = [str(a.rdata) for a in DNSRecord.parse(s.recv(4096)).rr if a.rtype == QTYPE.A]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(ips[0], opener.open(f"http://{ips[0]}/etc/hostname", timeout=5).read().decode().strip())
"""
HELLO = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - {name: httpd, image: busybox, command: ["httpd", "-f", "-p", "8080"]}
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "nsenter")),
    reason="needs root, iproute2, nftables and nsenter for a network namespace",
)
async def test_dev_run_with_the_mesh_serves_a_service_by_name(tmp_path: Path) -> None:
    """make run with the mesh (the default), in a throwaway network namespace so the agent's DNS
    interface and nftables table never touch the host's: the README's quickstart, Service by name."""
    netns = f"kedev{os.getpid() % 100000}"
    await asyncio.to_thread(_run, ["ip", "netns", "add", netns], True)
    # Network namespace only: `ip netns exec` would also hide the cgroup hierarchy under a fresh /sys.
    enter = ["nsenter", f"--net=/var/run/netns/{netns}", "--"]
    run = tmp_path / "run"
    proc: asyncio.subprocess.Process | None = None
    try:
        # What a host has: loopback and a default route (here over a veth pair that leads nowhere;
        # the dummy link type is not available everywhere). Without any route a local connect() to a
        # ClusterIP fails (ENETUNREACH) before the nat-output DNAT runs.
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"],
            ["ip", "addr", "add", "192.0.2.10/24", "dev", "uplink0"],
            ["ip", "link", "set", "uplink0", "up"],
            ["ip", "link", "set", "uplink1", "up"],
            ["ip", "route", "add", "default", "via", "192.0.2.1"],
        ):
            await asyncio.to_thread(_run, [*enter, *cmd], True)
        args = [
            "--data-dir", str(run), "--node-name", "devrun-mesh", "--advertise-address", HOST,
            "--pod-cidr", DEV_POD_CIDR,
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *enter, sys.executable, "-m", "kubeedge.keadm", "dev-run", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None
        seen: list[str] = []
        async with asyncio.timeout(150):
            while not any(line.startswith("Ready:") for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, f"dev-run exited early: {''.join(seen)}"
                seen.append(line)
        out = "".join(seen)
        assert "cluster DNS: dig @169.254.96.16 kubernetes.default.svc.cluster.local" in out, out
        # The `kubectl` of the README, in the namespace where the API listens.
        kubeconfig = run / "admin.kubeconfig"

        def kubectl_in(*a: str, input: str | None = None) -> str:
            res = subprocess.run(
                [*enter, KUBECTL, "--kubeconfig", str(kubeconfig), *a],
                input=input, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert res.returncode == 0, res.stdout + res.stderr
            return res.stdout

        await asyncio.to_thread(kubectl_in, "apply", "-f", "-", input=HELLO)
        await asyncio.to_thread(
            kubectl_in, "expose", "deployment", "hello", "--port", "80", "--target-port", "8080"
        )
        svc = json.loads(await asyncio.to_thread(kubectl_in, "get", "service", "hello", "-o", "json"))

        async def hello_pod() -> str:
            pods = json.loads(await asyncio.to_thread(kubectl_in, "get", "pods", "-o", "json"))["items"]
            ok = [
                p for p in pods if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            ]
            return str(ok[0]["metadata"]["name"]) if ok else ""

        pod = await wait_for(hello_pod, deadline_s=60, what="the hello pod Running")
        name = "hello.default.svc.cluster.local"
        last: list[str] = []

        async def answered() -> bool:
            res = await asyncio.to_thread(
                subprocess.run, [*enter, sys.executable, "-c", MESH_CALL, name],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            last[:] = [res.stdout + res.stderr]
            return res.returncode == 0

        # The agent gets the Service and then its endpoint (two watch events) after the pod runs.
        try:
            await wait_for(answered, deadline_s=30, what=f"{name} answering through the mesh")
        except AssertionError as e:
            log = await asyncio.to_thread((run / "edgemesh.log").read_text)
            raise AssertionError(f"{e}: {last}\nedgemesh.log: {log[-3000:]}") from None
        ip, hostname = last[0].split()
        assert ip == svc["spec"]["clusterIP"] and hostname == pod
        # Pods resolve through the mesh too: make run gives edged the agent's address as clusterDNS.
        looked_up = await asyncio.to_thread(kubectl_in, "exec", pod, "--", "nslookup", name)
        assert svc["spec"]["clusterIP"] in looked_up, looked_up

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
        assert code == 0, out + rest
        assert "stopping the mesh agent" in rest and "stopped" in rest
        # The agent removed what it added to the namespace: its nftables table and DNS interface.
        ruleset = await asyncio.to_thread(_run, [*enter, "nft", "list", "ruleset"])
        assert "edgemesh" not in ruleset.stdout, ruleset.stdout
        links = await asyncio.to_thread(_run, [*enter, "ip", "-o", "addr"])
        assert "169.254.96.16" not in links.stdout, links.stdout
        mounts = await asyncio.to_thread(Path("/proc/self/mountinfo").read_text)
        assert [m for m in mounts.splitlines() if str(run) in m] == []
    finally:
        if proc is not None and proc.returncode is None:
            # The designed stop even on failure: SIGKILL would leave containerd, its pods and the
            # daemons (their own sessions) running.
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(60):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(_run, ["ip", "netns", "del", netns])


def _run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)
