"""Probes against real containers in a real containerd: exec through CRI ExecSync (success, failure,
timeout), httpGet to busybox httpd on the pod IP (named port), tcpSocket on open and closed ports, and the
ProbeManager turning those into readiness and liveness results over time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from kubeedge.edgecore.edged.cri import api
from kubeedge.edgecore.edged.probes import LIVENESS, READINESS, ProbeManager, default_runner
from tests.cluster import wait_for
from tests.containerd_proc import RunningContainerd, containerd_fixture, remove_cgroup

pytestmark = pytest.mark.asyncio(loop_scope="module")

containerd = containerd_fixture()

HTTPD = (
    "mkdir -p /www && echo ok > /www/index.html && echo ok > /www/healthz && touch /tmp/healthy && "
    "exec httpd -f -p 8080 -h /www"
)
CGROUP_TOP = "/kubeedge-test"


@dataclass
class Pod:
    sandbox_id: str
    container_id: str
    ip: str
    uid: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def web(containerd: RunningContainerd, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pod]:
    cri = containerd.cri
    uid = str(uuid.uuid4())
    parent = f"{CGROUP_TOP}/pod{uid[:12]}"
    cfg = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web", uid=uid, namespace="default"),
        hostname="web",
        log_directory=str(tmp_path_factory.mktemp("probe-logs")),
        labels={"io.kubernetes.pod.uid": uid},
        linux=api.LinuxPodSandboxConfig(cgroup_parent=parent),
    )
    sandbox_id = await cri.run_pod_sandbox(cfg)
    try:
        ccfg = api.ContainerConfig(
            metadata=api.ContainerMetadata(name="httpd"),
            image=api.ImageSpec(image=containerd.image.name),
            command=["sh", "-c", HTTPD],
            log_path="httpd/0.log",
        )
        cid = await cri.create_container(sandbox_id, ccfg, cfg)
        await cri.start_container(cid)
        ip = (await cri.pod_sandbox_status(sandbox_id)).status.network.ip

        async def serving() -> bool:
            r = await cri.exec_sync(
                cid, ["sh", "-c", "test -f /tmp/healthy && wget -q -O- http://127.0.0.1:8080/"]
            )
            return r.exit_code == 0

        await wait_for(serving, deadline_s=15, what="httpd serving in the pod")
        yield Pod(sandbox_id, cid, ip, uid)
    finally:
        await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)
        remove_cgroup(parent)
        remove_cgroup(CGROUP_TOP)


CONTAINER = {"name": "httpd", "ports": [{"name": "http", "containerPort": 8080}]}


async def test_handlers(containerd: RunningContainerd, web: Pod) -> None:
    run = default_runner(containerd.cri)
    pod = {"metadata": {"uid": web.uid, "name": "web"}}

    async def probe(p: dict) -> tuple[bool, str]:
        r = await run(p, pod, CONTAINER, web.container_id, web.ip)
        return r.ok, r.message

    assert await probe({"exec": {"command": ["cat", "/tmp/healthy"]}}) == (True, "")
    ok, msg = await probe({"exec": {"command": ["sh", "-c", "echo sick >&2; exit 3"]}})
    assert not ok and "exited with 3" in msg and "sick" in msg
    ok, msg = await probe({"exec": {"command": ["sleep", "30"]}, "timeoutSeconds": 1})
    assert not ok and ("timeout" in msg or "deadline" in msg), msg
    ok, msg = await probe({"exec": {"command": ["/no/such/binary"]}})
    assert not ok

    assert await probe({"httpGet": {"path": "/healthz", "port": "http"}}) == (True, "")
    ok, msg = await probe({"httpGet": {"path": "/missing", "port": 8080}})
    assert not ok and "404" in msg
    assert (await probe({"tcpSocket": {"port": "http"}}))[0]
    ok, msg = await probe({"tcpSocket": {"port": 9999}})
    assert not ok and "probe failed" in msg


async def test_manager_readiness_and_liveness(
    containerd: RunningContainerd, web: Pod, tmp_path: Path
) -> None:
    cri = containerd.cri
    changes: list[tuple[str, str, str, bool]] = []
    mgr = ProbeManager(cri, lambda *c: changes.append(c))
    container = {
        **CONTAINER,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {
            "exec": {"command": ["cat", "/tmp/healthy"]},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    }
    pod = {"metadata": {"uid": web.uid, "name": "web", "namespace": "default"}}
    started = (await cri.container_status(web.container_id)).status.started_at / 1e9
    try:
        mgr.ensure(pod, container, web.container_id, web.ip, started)
        assert mgr.ready(web.container_id) is False  # until the first success

        async def ready() -> bool:
            return mgr.ready(web.container_id) is True

        await wait_for(ready, deadline_s=10, what="readiness from httpGet on the pod IP")
        assert (web.uid, "httpd", READINESS, True) in changes
        assert not mgr.liveness_failed(web.container_id)

        await cri.exec_sync(web.container_id, ["rm", "/www/healthz"])

        async def not_ready() -> bool:
            return mgr.ready(web.container_id) is False

        await wait_for(not_ready, deadline_s=10, what="readiness to drop after /healthz 404s")
        assert "404" in mgr.message(web.container_id, READINESS)
        assert not mgr.liveness_failed(web.container_id)  # readiness failures never restart

        await cri.exec_sync(web.container_id, ["rm", "/tmp/healthy"])

        async def dead() -> bool:
            return mgr.liveness_failed(web.container_id)

        await wait_for(dead, deadline_s=10, what="liveness failure after /tmp/healthy vanished")
        assert (web.uid, "httpd", LIVENESS, False) in changes
        mgr.forget_pod(web.uid)
        assert mgr.ready(web.container_id) is None
    finally:
        await mgr.close()
    assert mgr.tasks == 0
