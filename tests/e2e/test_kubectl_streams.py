"""kubectl logs / exec / attach / port-forward through the cloud to an edge pod, all real: a project-owned
containerd, cloudcore (embedded API, cloudStream on) and edgecore (edged on, edgeStream on) as OS
processes, and kubectl 1.37 with the admin kubeconfig.

Proves: `logs` (plain, --tail, --timestamps, -f with new lines arriving, --previous after a restart);
`exec -- cat /etc/hostname`, `exec -i` with piped stdin (stdin EOF reaches the command), a missing
command fails with a non-zero exit and a message; `port-forward` to busybox httpd and a GET through
it, also to an httpd bound only to the pod's 127.0.0.1 (forwarding happens inside the pod's network
namespace); `attach -i` to a container reading its stdin, a line sent and its answer seen; a node
certificate cannot exec into another node's pod; a pod on a node without a tunnel gets a clear error."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from kubeedge.edgecore.edged.containerd import Containerd, ContainerdConfig
from kubeedge.edgecore.edged.cri import CriClient
from kubeedge.edgecore.edged.ociimage import build_image
from kubeedge.kube import PODS, KubeClient, KubeConfig
from kubeedge.pki import certs
from tests.apiserver_proc import KUBECTL, free_port
from tests.cluster import wait_for
from tests.containerd_proc import check_prerequisites, remove_all_pods, remove_cgroup
from tests.e2e.backbone import HOST, CloudCore, Edge, Proc, edge_doc, write_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODE = "edge-streams"
GHOST = "edge-ghost"  # a node with no edgecore: nothing ever dials its tunnel
SUBNET, BRIDGE = "10.231.77.0/24", "kestrm0"
KUBECTL_S = 30.0
STARTUP_S = 30.0
TALKER = "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done"
WEB = "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www"
CRASHER = "echo boot-$(cat /proc/sys/kernel/random/uuid); sleep 1; exit 3"
# Bound to the pod's loopback only: reachable inside the pod's network namespace, not on the pod IP.
LOOPBACK_WEB = (
    "mkdir -p /www && echo hello-from-loopback > /www/index.html && exec httpd -f -p 127.0.0.1:8081 -h /www"
)
# Reads its stdin (an attach gives it one) and answers every line.
ECHOER = "while read l; do echo got:$l; done"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) ")


@dataclass
class Env:
    base: Path
    cloud: CloudCore
    edge: Edge
    ns: str = "default"

    @property
    def kubeconfig(self) -> Path:
        return self.cloud.kubeconfig

    async def kubectl(
        self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None
    ) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(kubeconfig or self.kubeconfig), "-n", self.ns, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), KUBECTL_S)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str, stdin: str | None = None) -> str:
        rc, out, err = await self.kubectl(*args, stdin=stdin)
        assert rc == 0, f"kubectl {' '.join(args)} failed ({rc}): {err}\n{self.edge.daemon.tail()}"
        return out


def _pod(name: str, script: str, node: str = NODE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}],
            **spec,
        },
    }


def _stdin_pod(name: str, script: str) -> dict[str, Any]:
    pod = _pod(name, script)
    pod["spec"]["containers"][0]["stdin"] = True
    return pod


IMAGE = ""  # set by the fixture to the locally built busybox image's name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    global IMAGE
    check_prerequisites()
    base = tmp_path_factory.mktemp("streams")
    stream_ports = {k: free_port() for k in ("tunnel", "stream")}
    image = build_image(base / "busybox.tar")
    IMAGE = image.name
    ctrd = Containerd(
        ContainerdConfig(
            base_dir=base / "ctrd", sandbox_image=image.name, subnet=SUBNET, bridge=BRIDGE,
            network_name=f"kubeedge-{BRIDGE}",
        )
    )  # fmt: skip
    stream = {
        "enable": True,
        "tunnelAddress": HOST,
        "tunnelPort": stream_ports["tunnel"],
        "streamPort": stream_ports["stream"],
    }
    cloud = CloudCore.create(base, ports=stream_ports, extra={"modules": {"cloudStream": stream}})
    data = base / NODE
    data.mkdir()
    edge = Edge(NODE, data, free_port(), Proc([], base / "edgecore.log"))
    cri = CriClient(ctrd.cfg.endpoint)
    cgroup = f"/kubeedge-streams-{uuid.uuid4().hex[:8]}"
    e = Env(base, cloud, edge)
    try:
        await ctrd.start()
        await ctrd.import_image(image.path)
        await cloud.ensure_running()
        doc = edge_doc(cloud, NODE, data, edge.meta_port)
        doc["modules"]["edged"].update(
            enable=True,
            runtimeEndpoint=ctrd.endpoint,
            rootDirectory=str(data / "edged"),
            tailoredKubeletConfig={"podLogsDir": str(data / "pods"), "cgroupRoot": cgroup},
        )
        doc["modules"]["edgeStream"] = {"enable": True, "server": f"{HOST}:{stream_ports['tunnel']}"}
        cfg = write_config(data / "edgecore.yaml", doc)
        edge.daemon.argv = [sys.executable, "-m", "kubeedge.edgecore", "--config", str(cfg)]
        edge.daemon.start()
        await edge.wait_serving()
        docs = [
            _pod("talker", TALKER),
            _pod("web", WEB),
            _pod("crasher", CRASHER, restartPolicy="Always"),
            _pod("loopback", LOOPBACK_WEB),
            _stdin_pod("echoer", ECHOER),
            _pod("ghost-pod", "sleep 3600", node=GHOST),
        ]
        await e.ok("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        await _wait_running(e, "talker", "web", "loopback", "echoer")
        yield e
    finally:
        edge.daemon.stop()
        cloud.daemon.stop()
        try:
            await remove_all_pods(cri)
        finally:
            await cri.close()
            await ctrd.stop()
            remove_cgroup(cgroup)
            ip = await asyncio.create_subprocess_exec(
                "ip", "link", "del", BRIDGE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )  # fmt: skip
            await ip.wait()


async def _pod_status(e: Env, name: str) -> dict[str, Any]:
    async with KubeClient(KubeConfig.from_file(str(e.kubeconfig))) as kc:
        return dict((await kc.get(PODS, name, e.ns)).get("status") or {})


async def _wait_running(e: Env, *names: str) -> None:
    for name in names:

        async def running(name: str = name) -> bool:
            assert e.edge.daemon.alive(), e.edge.daemon.tail()
            return (await _pod_status(e, name)).get("phase") == "Running"

        await wait_for(running, deadline_s=STARTUP_S, what=f"pod {name} Running")


async def test_logs_plain_tail_timestamps(env: Env) -> None:
    async def some_lines() -> str:
        rc, out, _ = await env.kubectl("logs", "talker")
        return out if rc == 0 and out.count("\n") >= 3 else ""

    out = await wait_for(some_lines, deadline_s=STARTUP_S, what="three log lines")
    assert out.startswith("line-0\nline-1\n")
    tail = await env.ok("logs", "talker", "--tail=2")
    lines = tail.splitlines()
    assert len(lines) == 2 and all(line.startswith("line-") for line in lines)
    assert int(lines[1][5:]) == int(lines[0][5:]) + 1
    stamped = (await env.ok("logs", "talker", "--timestamps", "--tail=3")).splitlines()
    assert len(stamped) == 3 and all(RFC3339.match(line) for line in stamped), stamped
    assert all(line.split(" ", 1)[1].startswith("line-") for line in stamped)


async def test_logs_follow_sees_new_lines(env: Env) -> None:
    last = int((await env.ok("logs", "talker", "--tail=1")).strip()[5:])
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(env.kubeconfig), "logs", "-f", "talker", "--tail=1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        seen: list[int] = []
        async with asyncio.timeout(KUBECTL_S):
            while len(seen) < 5:
                line = (await proc.stdout.readline()).decode()
                assert line, (
                    f"logs -f ended early: {(await proc.stderr.read()).decode() if proc.stderr else ''}"
                )
                seen.append(int(line.strip()[5:]))
        assert seen[-1] > last + 1, (last, seen)  # lines written after the command started
        assert seen == list(range(seen[0], seen[0] + len(seen)))  # in order, none lost
    finally:
        proc.terminate()
        await proc.wait()


async def test_logs_previous_after_restart(env: Env) -> None:
    async def restarted() -> bool:
        statuses = (await _pod_status(env, "crasher")).get("containerStatuses") or []
        return bool(statuses) and statuses[0].get("restartCount", 0) >= 1

    await wait_for(restarted, deadline_s=60, what="crasher restarted")
    previous = await env.ok("logs", "crasher", "--previous")
    assert previous.startswith("boot-"), previous
    current = await env.ok("logs", "crasher")
    assert current.startswith("boot-") and current != previous


async def test_exec(env: Env) -> None:
    assert await env.ok("exec", "talker", "--", "cat", "/etc/hostname") == "talker\n"
    # stdin reaches the command and its EOF too: `cat` ends only when stdin closes
    piped = await env.ok("exec", "-i", "talker", "--", "sh", "-c", "cat; echo done", stdin="hello\nworld\n")
    assert piped == "hello\nworld\ndone\n"
    rc, out, err = await env.kubectl("exec", "talker", "--", "sh", "-c", "echo oops >&2; exit 7")
    assert rc == 7 and "oops" in err, (rc, out, err)
    rc, _, err = await env.kubectl("exec", "talker", "--", "/no/such/command")
    assert rc != 0 and "no/such/command" in err, (rc, err)


async def test_port_forward(env: Env) -> None:
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(env.kubeconfig), "port-forward", "pod/web", f"{local}:8080",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(KUBECTL_S):
            line = (await proc.stdout.readline()).decode()
        assert "Forwarding from" in line, line

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10) as r:
                return str(r.read().decode())

        assert await asyncio.to_thread(get) == "hello-from-pod\n"
        assert await asyncio.to_thread(get) == "hello-from-pod\n"  # a second connection, same session
    finally:
        proc.terminate()
        await proc.wait()


async def _port_forward(env: Env, target: str, ports: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(env.kubeconfig), "port-forward", target, ports,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(KUBECTL_S):
        line = (await proc.stdout.readline()).decode()
    assert "Forwarding from" in line, line
    return proc


async def test_port_forward_reaches_the_pods_loopback(env: Env) -> None:
    # kubelet's port-forward connects inside the pod's network namespace: a server listening only on
    # the pod's 127.0.0.1 answers (dialling the pod IP from the node would be refused).
    local = free_port()
    proc = await _port_forward(env, "pod/loopback", f"{local}:8081")
    try:

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10) as r:
                return str(r.read().decode())

        assert await asyncio.to_thread(get) == "hello-from-loopback\n"
    finally:
        proc.terminate()
        await proc.wait()


async def test_attach_sends_stdin_and_sees_the_answer(env: Env) -> None:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(env.kubeconfig), "attach", "-i", "echoer",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        token = f"hello-{uuid.uuid4().hex[:8]}"
        proc.stdin.write(f"{token}\n".encode())
        await proc.stdin.drain()
        async with asyncio.timeout(KUBECTL_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, (
                    f"attach ended early: {(await proc.stderr.read()).decode() if proc.stderr else ''}"
                )
                if line.strip() == f"got:{token}":
                    break
    finally:
        proc.terminate()
        await proc.wait()


async def test_node_certificate_cannot_exec_elsewhere(env: Env) -> None:
    ca = (env.edge.data_dir / "ca" / "rootCA.crt").read_bytes()
    crt, key = env.edge.cert
    api = f"https://{HOST}:{env.cloud.ports['api']}"
    node_kc = env.base / "node.kubeconfig"
    node_kc.write_text(
        certs.kubeconfig(api, ca, f"system:node:{NODE}", certs.KeyPair(crt.read_bytes(), key.read_bytes()))
    )
    rc, _, err = await env.kubectl("exec", "ghost-pod", "--", "true", kubeconfig=node_kc)
    assert rc != 0 and "forbidden" in err.lower(), err


async def test_node_without_tunnel_gets_a_clear_error(env: Env) -> None:
    rc, _, err = await env.kubectl("logs", "ghost-pod")
    assert rc != 0 and f"node {GHOST} has no stream tunnel" in err, err
    rc, _, err = await env.kubectl("exec", "ghost-pod", "--", "true")
    assert rc != 0 and f"node {GHOST} has no stream tunnel" in err, err


async def test_stream_metrics(env: Env) -> None:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://{HOST}:{env.cloud.ports['metrics']}/metrics", timeout=5) as r:
            return str(r.read().decode())

    text = await asyncio.to_thread(scrape)
    counted = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cloudcore_streams_total{")
    }
    assert counted.get('kind="exec",outcome="ok"', 0) >= 1, counted
    assert counted.get('kind="containerLogs",outcome="ok"', 0) >= 1, counted
    assert "cloudcore_stream_tunnels 1.0" in text
