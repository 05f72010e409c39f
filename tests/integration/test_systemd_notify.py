"""cloudcore and edgecore as processes, under a stand-in for systemd's notify socket: READY=1 arrives
only once they serve (cloudhub + healthy API; edge store + MetaServer), STATUS= says what a person needs
(edges connected; cloud link and pods, offline since when), WATCHDOG=1 comes from the loop, and SIGTERM
gives STOPPING=1 and a clean exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeedge.pki import tokens
from tests.apiserver_proc import ROOT, free_port
from tests.cluster import wait_for

HOST = "127.0.0.1"
NODE = "edge-sd-1"
# What systemd would pass for WatchdogSec=2: pings every second.
WATCHDOG_USEC = "2000000"
STOP_TIMEOUT = 30.0  # the units' TimeoutStopSec


class NotifySocket:
    """The receiving end systemd holds: an AF_UNIX datagram socket, read without blocking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def statuses(self) -> list[str]:
        return [
            ln[len("STATUS=") :] for m in self.drain() for ln in m.splitlines() if ln.startswith("STATUS=")
        ]

    async def wait(self, what: str, match: str, deadline: float = 60.0) -> str:
        async def found() -> str:
            return next((m for m in self.drain() if match in m), "")

        return await wait_for(found, deadline_s=deadline, interval=0.05, what=what)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def tcp_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


class Daemon:
    def __init__(self, name: str, args: list[str], notify: NotifySocket, log: Path) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": WATCHDOG_USEC}
        env.pop("WATCHDOG_PID", None)
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"kubeedge.{name}", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def sigterm(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


async def test_ready_only_when_serving_status_watchdog_and_stopping(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    ports = {k: free_port() for k in ("api", "ws", "https", "metrics", "meta")}
    cloud_doc = {
        "apiVersion": "cloudcore.config.kubeedge.io/v1alpha2",
        "kind": "CloudCore",
        "dataDir": str(tmp_path / "cloud"),
        "embedded": {"listen": f"{HOST}:{ports['api']}", "controllers": "none"},
        "metrics": {"address": f"{HOST}:{ports['metrics']}"},
        "modules": {
            "cloudHub": {
                "advertiseAddress": [HOST],
                "websocket": {"address": HOST, "port": ports["ws"]},
                "https": {"address": HOST, "port": ports["https"]},
            }
        },
    }
    (tmp_path / "cloudcore.yaml").write_text(yaml.safe_dump(cloud_doc))
    cloud_sd = NotifySocket(tmp_path / "cloud.notify")
    cloud = Daemon(
        "cloudcore", ["--config", str(tmp_path / "cloudcore.yaml")], cloud_sd, tmp_path / "cloud.log"
    )
    daemons.append(cloud)

    ready = await cloud_sd.wait("cloudcore READY=1", "READY=1", deadline=90)
    # Checked the moment READY arrives: everything it promises already answers.
    assert tcp_open(ports["ws"]) and tcp_open(ports["https"]), cloud.tail()
    assert http_ok(f"http://{HOST}:{ports['metrics']}/healthz")
    assert not any("READY=1" in m for m in cloud_sd.messages[: cloud_sd.messages.index(ready)])
    assert f"STATUS=cloudhub on :{ports['ws']}, 0 edge nodes connected, API healthy" in ready
    await cloud_sd.wait("cloudcore watchdog pings", "WATCHDOG=1", deadline=10)

    token = (tmp_path / "cloud" / tokens.TOKEN_FILE).read_text().strip()
    edge_dir = tmp_path / "edge"
    edge_doc = {
        "dataDir": str(edge_dir),
        "modules": {
            "edgeHub": {
                "httpServer": f"https://{HOST}:{ports['https']}",
                "websocket": {"server": f"{HOST}:{ports['ws']}"},
                "heartbeat": 2,
                "token": token,
            },
            "edged": {"enable": False, "hostnameOverride": NODE},
            "metaManager": {"metaServer": {"enable": True, "server": f"{HOST}:{ports['meta']}"}},
        },
    }
    (tmp_path / "edgecore.yaml").write_text(yaml.safe_dump(edge_doc))
    edge_sd = NotifySocket(tmp_path / "edge.notify")
    edge = Daemon("edgecore", ["--config", str(tmp_path / "edgecore.yaml")], edge_sd, tmp_path / "edge.log")
    daemons.append(edge)
    ready = await edge_sd.wait("edgecore READY=1", "READY=1", deadline=60)
    assert http_ok(f"http://{HOST}:{ports['meta']}/healthz"), edge.tail()
    assert (edge_dir / "edgecore.db").exists()
    assert not any("READY=1" in m for m in edge_sd.messages[: edge_sd.messages.index(ready)])
    assert "STATUS=" in ready
    await edge_sd.wait("edgecore watchdog pings", "WATCHDOG=1", deadline=10)
    await edge_sd.wait(
        "edge status: connected", f"STATUS=connected to cloud {HOST}:{ports['ws']}, 0 pods", 30
    )
    await cloud_sd.wait("cloud status: one edge", "1 edge node connected", deadline=30)

    # The cloud goes away: cloudcore says it stops, exits cleanly; the edge says it is offline.
    assert cloud.sigterm() == 0, cloud.tail()
    assert any(m.startswith("STOPPING=1") for m in cloud_sd.drain())
    offline = await edge_sd.wait("edge status: offline", "STATUS=offline since", deadline=30)
    assert f"(cloud {HOST}:{ports['ws']}), serving 0 pods from the edge store" in offline
    assert edge.proc.poll() is None

    assert edge.sigterm() == 0, edge.tail()
    assert any(m.startswith("STOPPING=1") for m in edge_sd.drain())
