"""keadm as users run it: real ``python -m kubeedge.keadm`` processes starting real daemons.

Proves: ``init --detach`` writes cloudcore.yaml and leaves a healthy cloudcore running with a pid
file; ``gettoken`` prints a token ``split_token`` accepts; ``join`` with it brings the Node to Ready;
a tampered token and a taken port fail at join time with exit 1 and one line saying what to do;
``reset --force`` stops both daemons and removes their directories; and ``dev-run`` (``make run``)
brings up cloudcore and a Ready local node, then stops both children on SIGINT with exit code 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeedge.kube import NODES, KubeClient, KubeConfig, NotFound
from kubeedge.pki import tokens
from tests.apiserver_proc import ROOT, free_port

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
        "--set",
        f"modules.metaManager.metaServer.server={meta}",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert (edge / "certs" / "server.crt").exists()
    assert (edge / "edgecore.yaml").stat().st_mode & 0o077 == 0  # it holds the token
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


def test_init_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        r = keadm("init", "--detach", "--data-dir", str(tmp_path), "--set", f"metrics.address={HOST}:{port}")
    assert r.returncode == 1
    assert f"{HOST}:{port} is already in use" in r.stderr and "--set metrics.address" in r.stderr


async def test_dev_run_starts_both_and_stops_on_sigint(tmp_path: Path) -> None:
    args = [
        "--data-dir", str(tmp_path / "run"),
        "--node-name", "devrun-node",
        "--api-listen", f"{HOST}:{free_port()}",
        "--hub-port", str(free_port()),
        "--cert-port", str(free_port()),
        "--metrics-address", f"{HOST}:{free_port()}",
        "--meta-server", f"{HOST}:{free_port()}",
        "--advertise-address", HOST,
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
        kubeconfig = tmp_path / "run" / "admin.kubeconfig"
        assert kubeconfig.is_symlink()
        await node_ready(kubeconfig, "devrun-node", within=10)
        children = _children(proc.pid)
        assert len(children) == 2, children

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest = await proc.stdout.read()
            code = await proc.wait()
        assert code == 0, out + rest.decode()
        assert "stopped" in rest.decode()
        assert all(gone(pid) for pid in children)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(d.name))
    return found
