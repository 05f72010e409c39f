"""A cloudcore on the host end of a test's veth, for booted images to join: embedded API and controllers
on loopback, cloudhub (websocket + bootstrap https) on the veth address the guest dials."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubeedge.kube import NODES, PODS, KubeClient, NotFound
from kubeedge.pki import certs, tokens
from tests.cloudcore_proc import CloudCore
from tests.cluster import condition_true, wait_for

BUSYBOX = "kubeedge.local/busybox:latest"


class Cloud(CloudCore):
    """The image tests' cloud: tokens and join settings for a booted device, and what it reports."""

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
            "cloud": self.ws_server,
            "certPort": self.ports["https"],
            "token": self.token if token is None else token,
            "nodeName": node,
            "labels": {"site": "image-test"},
        }
        return yaml.safe_dump(doc, sort_keys=False)

    async def node_ready(self, kc: KubeClient, name: str) -> bool:
        try:
            return condition_true(await kc.get(NODES, name))
        except NotFound:
            return False

    async def wait_node_ready(
        self, kc: KubeClient, name: str, deadline_s: float, explain: Callable[[], str] = str
    ) -> None:
        """Until ``name`` is Ready; on timeout the failure carries ``explain()`` (a journal, a console)."""
        try:
            await wait_for(
                lambda: self.node_ready(kc, name), deadline_s=deadline_s, interval=1.0, what=f"node {name} Ready"
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{explain()}") from None

    async def running_pods(self, kc: KubeClient, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods, _ = await kc.list(PODS, namespace, label_selector=selector)
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]


@contextlib.asynccontextmanager
async def cloud_on(base: Path, hub_ip: str, *, extra_sans: Sequence[str] = ()) -> AsyncIterator[Cloud]:
    """A running cloud whose hub serves on ``hub_ip``; ``extra_sans``: further addresses edges may dial
    it by (a qemu guest's forwarded one), named in its certificate."""
    await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
    cloud = Cloud.create(base, hub_ip=hub_ip, advertise=[hub_ip, *extra_sans])
    try:
        await cloud.ensure_running()
        yield cloud
    finally:
        cloud.daemon.stop()


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
