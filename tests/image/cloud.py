"""A cloudcore on the host end of a test's veth, for booted images to join: embedded API and controllers
on loopback, cloudhub (websocket + bootstrap https) on the veth address the guest dials."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeedge.kube import NODES, PODS, KubeClient, KubeConfig, NotFound
from kubeedge.pki import certs, tokens
from tests.apiserver_proc import free_port
from tests.cluster import condition_true, wait_for
from tests.e2e.backbone import STARTUP_S, Proc, http_ok

LOOPBACK = "127.0.0.1"
BUSYBOX = "kubeedge.local/busybox:latest"


@dataclass
class Cloud:
    base: Path
    hub_ip: str
    ports: dict[str, int]
    proc: Proc
    # Further addresses edges may dial the hub by (a qemu guest's forwarded one): in its certificate.
    extra_sans: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.base / "cloud"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "apiserver" / "admin.kubeconfig"

    @property
    def token(self) -> str:
        return (self.data_dir / tokens.TOKEN_FILE).read_text().strip()

    def expired_token(self) -> str:
        """A token signed by this cloud's CA that expired an hour ago (what a stale join.yaml holds)."""
        want = tokens.split_token(self.token)[0]
        for crt in self.data_dir.rglob("ca.crt"):
            key = crt.with_name("ca.key")
            if key.exists() and tokens.ca_hash(crt.read_bytes()) == want:
                ca = certs.KeyPair.load(crt, key)
                past = dt.datetime.now(dt.UTC).timestamp() - 7200
                return tokens.make_token(ca, dt.timedelta(hours=1), now=past)
        raise AssertionError(f"no CA under {self.data_dir} matches the token's hash")

    def join_yaml(self, node: str, token: str | None = None) -> str:
        doc: dict[str, Any] = {
            "cloud": f"{self.hub_ip}:{self.ports['ws']}",
            "certPort": self.ports["https"],
            "token": self.token if token is None else token,
            "nodeName": node,
            "labels": {"site": "image-test"},
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def config(self) -> Path:
        doc = {
            "apiVersion": "cloudcore.config.kubeedge.io/v1alpha2",
            "kind": "CloudCore",
            "dataDir": str(self.data_dir),
            "embedded": {"listen": f"{LOOPBACK}:{self.ports['api']}", "controllers": "all"},
            "metrics": {"address": f"{LOOPBACK}:{self.ports['metrics']}"},
            "modules": {
                "cloudHub": {
                    "advertiseAddress": [self.hub_ip, *self.extra_sans],
                    "websocket": {"address": self.hub_ip, "port": self.ports["ws"]},
                    "https": {"address": self.hub_ip, "port": self.ports["https"]},
                },
            },
        }
        path = self.base / "cloudcore.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    async def start(self) -> None:
        if not self.proc.alive():
            self.proc.start()
        url = f"http://{LOOPBACK}:{self.ports['metrics']}/healthz"

        async def healthy() -> bool:
            assert self.proc.alive(), f"cloudcore exited:\n{self.proc.tail()}"
            return await asyncio.to_thread(http_ok, url)

        await wait_for(healthy, deadline_s=STARTUP_S, what="cloudcore /healthz")

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[KubeClient]:
        async with KubeClient(KubeConfig.from_file(str(self.kubeconfig))) as kc:
            yield kc

    async def node_ready(self, kc: KubeClient, name: str) -> bool:
        try:
            return condition_true(await kc.get(NODES, name))
        except NotFound:
            return False

    async def running_pods(self, kc: KubeClient, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods, _ = await kc.list(PODS, namespace, label_selector=selector)
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]


@contextlib.asynccontextmanager
async def cloud_on(base: Path, hub_ip: str, *, extra_sans: Sequence[str] = ()) -> AsyncIterator[Cloud]:
    await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("api", "ws", "https", "metrics")}
    proc = Proc([], base / "cloudcore.log")
    cloud = Cloud(base, hub_ip, ports, proc, tuple(extra_sans))
    proc.argv = [sys.executable, "-m", "kubeedge.cloudcore", "--config", str(cloud.config())]
    try:
        await cloud.start()
        yield cloud
    finally:
        proc.stop()


def deployment(name: str, node: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "web",
                            "image": BUSYBOX,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["httpd", "-f", "-p", "8080"],
                        }
                    ],
                },
            },
        },
    }
