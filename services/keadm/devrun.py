"""``keadm dev-run``: what ``make run`` runs. A project-owned containerd (devruntime.py), cloudcore
(embedded API server and controllers) and a local edgecore joined as this machine's node with edged
running pods on that containerd, all as child processes, in the foreground.

Shutdown is one designed path: on SIGINT/SIGTERM (or when a child dies) edgecore is stopped first, so
its last status goes out while the cloud still listens, then the pods and containerd, then cloudcore.
The children run in their own sessions so a terminal's Ctrl-C reaches only this process, which orders
the stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Final

import yaml

from kubeedge.kube import NODES, KubeClient, KubeConfig, NotFound

from . import cli
from .devruntime import APP_IMAGE, DEFAULT_POD_CIDR, DevRuntime, DevRuntimeError

# Bounds on each start-up step; the embedded API server and the informer sync dominate the first.
CLOUD_READY_TIMEOUT: Final = 120.0
NODE_READY_TIMEOUT: Final = 60.0
CHILD_STOP_TIMEOUT: Final = 20.0
POLL_INTERVAL: Final = 0.2
MESH_READY_TIMEOUT: Final = 60.0
MESH_DNS: Final = "169.254.96.16"  # KubeEdge EdgeMesh's default DNS address
MESH_METRICS: Final = "127.0.0.1:10551"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dev-run", help="run cloudcore and a local edgecore in the foreground (make run)")
    p.add_argument("--data-dir", default=".run", help="state: <dir>/cloud, <dir>/edge (default .run)")
    p.add_argument("--node-name", help="this machine's node name (default: the hostname)")
    p.add_argument("--api-listen", default="127.0.0.1:6443", help="embedded API server (127.0.0.1:6443)")
    p.add_argument("--hub-port", type=int, default=10000, help="cloudhub websocket port (10000)")
    p.add_argument("--cert-port", type=int, default=10002, help="bootstrap (certificate) port (10002)")
    p.add_argument("--metrics-address", default="127.0.0.1:10010", help="cloudcore metrics/healthz")
    p.add_argument("--tunnel-port", type=int, default=10004, help="stream tunnel port for logs/exec (10004)")
    p.add_argument("--stream-port", type=int, default=10003, help="cloudstream's API-facing port (10003)")
    p.add_argument("--meta-server", default=cli.DEFAULT_META_SERVER, help="edgecore MetaServer address")
    p.add_argument("--advertise-address", help="address other edges dial (default: primary IP)")
    p.add_argument(
        "--runtime-endpoint",
        help="run pods on this CRI socket instead of a containerd of our own under <data-dir>/containerd",
    )
    p.add_argument(
        "--pod-cidr", default=DEFAULT_POD_CIDR, help=f"our containerd's pod network ({DEFAULT_POD_CIDR})"
    )
    p.add_argument(
        "--keep-pods", action="store_true", help="on exit, leave pods running (the next run adopts them)"
    )
    p.add_argument("--no-mesh", action="store_true", help="do not start the EdgeMesh agent for this node")
    p.add_argument("--mesh-dns", default=MESH_DNS, help=f"the mesh agent's DNS address ({MESH_DNS})")
    p.set_defaults(func=lambda a: asyncio.run(DevRun(a).run()))


class Child:
    """One daemon subprocess with its log file."""

    def __init__(self, name: str, config: Path, log: Path, module: str = "") -> None:
        self.name = name
        self.config = config
        self.log = log
        self.module = module or f"kubeedge.{name}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(CHILD_STOP_TIMEOUT):
                    await self.proc.wait()
            except TimeoutError:
                print(f"{self.name} ignored SIGTERM for {CHILD_STOP_TIMEOUT:.0f}s: killing it", flush=True)
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


class DevRun:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.base = Path(a.data_dir).resolve()
        self.cloud_dir = self.base / "cloud"
        self.edge_dir = self.base / "edge"
        self.node = a.node_name or cli.node_name_from_hostname()
        self.advertise = a.advertise_address or cli.primary_ip()
        self.cloud = Child("cloudcore", self.cloud_dir / "cloudcore.yaml", self.base / "cloudcore.log")
        self.edge = Child("edgecore", self.edge_dir / "edgecore.yaml", self.base / "edgecore.log")
        self.mesh = Child(
            "edgemesh", self.base / "mesh" / "edgemesh.yaml", self.base / "edgemesh.log", "edgemesh"
        )
        self.runtime = DevRuntime(
            self.base, endpoint=a.runtime_endpoint, pod_cidr=a.pod_cidr, keep_pods=a.keep_pods
        )
        self.stop = asyncio.Event()
        # Printed relative when under the working directory (make run: .run/admin.kubeconfig).
        self.kubeconfig_shown = os.path.relpath(self.base / "admin.kubeconfig")
        if self.kubeconfig_shown.startswith(".."):
            self.kubeconfig_shown = str(self.base / "admin.kubeconfig")

    def _cloud_config(self) -> Any:
        a = self.a
        return cli.cloudcore_config(
            self.cloud_dir,
            [self.advertise],
            "",
            [
                f"embedded.listen={a.api_listen}",
                f"metrics.address={a.metrics_address}",
                f"modules.cloudHub.websocket.port={a.hub_port}",
                f"modules.cloudHub.https.port={a.cert_port}",
                f"modules.cloudStream.tunnelPort={a.tunnel_port}",
                f"modules.cloudStream.streamPort={a.stream_port}",
            ],
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        code = 0
        try:
            await self._start()
            await self._watch()
            if not self.stop.is_set():
                code = 1
        except (cli.KeadmError, DevRuntimeError) as e:
            print(f"keadm dev-run: {e}", file=sys.stderr, flush=True)
            code = 1
        finally:
            print(
                "stopping the mesh agent, edgecore, the pods and containerd, then cloudcore ...", flush=True
            )
            await self._stop_child(self.mesh)  # first: it removes its DNAT rules and DNS interface
            await self._stop_child(self.edge)
            for note in await self.runtime.stop(self.edge_dir / "edged"):
                print(note, flush=True)
            await self._stop_child(self.cloud)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        print("stopped", flush=True)
        return code

    @staticmethod
    async def _stop_child(child: Child) -> None:
        rc = await child.stop()
        if rc not in (None, 0, -signal.SIGTERM):
            print(f"{child.name} exited with {rc} (log: {child.log})", flush=True)

    async def _start(self) -> None:
        a = self.a
        config = self._cloud_config()
        hub = config.modules.cloud_hub
        for address, setting in (
            (f"{hub.websocket.address}:{hub.websocket.port}", "--hub-port"),
            (f"{hub.https.address}:{hub.https.port}", "--cert-port"),
            (config.metrics.address, "--metrics-address"),
            (f"{config.modules.cloud_stream.tunnel_address}:{a.tunnel_port}", "--tunnel-port"),
            (f"{config.modules.cloud_stream.stream_address}:{a.stream_port}", "--stream-port"),
            (config.embedded.listen, "--api-listen"),
            (a.meta_server, "--meta-server"),
            *([] if a.no_mesh else [(MESH_METRICS, "--no-mesh"), ("0.0.0.0:20006", "--no-mesh")]),
        ):
            try:
                cli.check_port_free(address, setting)
            except cli.KeadmError:
                raise cli.KeadmError(
                    f"{address} is already in use (another `make run`?); change it with {setting}"
                ) from None
        print(await self.runtime.start(), flush=True)
        self.cloud_dir.mkdir(parents=True, exist_ok=True)
        cli.write_private(self.cloud.config, yaml.safe_dump(config.to_document(), sort_keys=False))
        await self.cloud.start()
        print(f"cloudcore starting (state {self.cloud_dir}, log {self.cloud.log}) ...", flush=True)
        url = cli.healthz_url(config)
        await self._until(
            lambda: asyncio.to_thread(cli.healthy, url), "cloudcore healthy", CLOUD_READY_TIMEOUT
        )
        token = cli.read_token(self.cloud_dir)
        kubeconfig = self._link_kubeconfig()

        doc = cli.edgecore_document(
            data_dir=self.edge_dir,
            cloud_host="127.0.0.1",
            hub_port=hub.websocket.port,
            cert_port=hub.https.port,
            token=token,
            node_name=self.node,
            labels={},
            runtime_endpoint=self.runtime.endpoint,
        )
        # Pod logs stay with the rest of the run's state rather than in the host's /var/log/pods.
        kubelet: dict[str, Any] = {"podLogsDir": str(self.edge_dir / "pod-logs")}
        if not a.no_mesh:
            # Pods resolve cluster names through the mesh agent's DNS (dnsPolicy ClusterFirst).
            kubelet["clusterDNS"] = [a.mesh_dns]
        doc["modules"]["edged"]["tailoredKubeletConfig"] = kubelet
        doc, _ = cli.edgecore_config(
            doc,
            [
                f"modules.metaManager.metaServer.server={a.meta_server}",
                f"modules.edgeStream.server=127.0.0.1:{a.tunnel_port}",
            ],
        )
        cli.write_private(self.edge.config, yaml.safe_dump(doc, sort_keys=False))
        edge_started = time.time()
        await self.edge.start()
        print(
            f"edgecore starting as node {self.node} (state {self.edge_dir}, log {self.edge.log}) ...",
            flush=True,
        )
        async with KubeClient(KubeConfig.from_file(kubeconfig)) as kc:
            await self._until(
                lambda: _node_ready(kc, self.node, edge_started),
                f"node {self.node} Ready",
                NODE_READY_TIMEOUT,
            )
        if not a.no_mesh:
            await self._start_mesh()
        print(f"Ready: node {self.node} joined; Ctrl-C stops edgecore, its pods and cloudcore", flush=True)
        print(f"try:  .venv/bin/kubectl --kubeconfig {self.kubeconfig_shown} get nodes", flush=True)
        if not a.runtime_endpoint:
            print(f"pods run on this machine; the image {APP_IMAGE} (busybox) is there", flush=True)
        print("import your own images (docker save / OCI archives) with:", flush=True)
        print(
            f"  .venv/bin/keadm image import IMAGE.tar --runtime-endpoint {self.runtime.endpoint}", flush=True
        )
        print("join more edge nodes with:", flush=True)
        print("  " + cli.join_command(self.advertise, hub.websocket.port, hub.https.port, token), flush=True)

    async def _start_mesh(self) -> None:
        """The EdgeMesh agent for this node: cluster DNS on --mesh-dns, the service proxy, the tunnel."""
        doc = {
            "apiVersion": "agent.edgemesh.config.kubeedge.io/v1alpha1",
            "kind": "EdgeMeshAgent",
            "kubeAPIConfig": {"metaServer": f"http://{self.a.meta_server}"},
            "commonConfig": {
                "nodeName": self.node,
                "bridgeDeviceIP": self.a.mesh_dns,
                "metricsAddress": MESH_METRICS.split(":")[0],
                "metricsPort": int(MESH_METRICS.split(":")[1]),
                "edgecoreDataDir": str(self.edge_dir),
            },
            # A development run leaves the host as it found it: rules and the DNS interface go at exit.
            "modules": {"edgeDNS": {"removeInterfaceOnExit": True}},
        }
        self.mesh.config.parent.mkdir(parents=True, exist_ok=True)
        cli.write_private(self.mesh.config, yaml.safe_dump(doc, sort_keys=False))
        await self.mesh.start()
        print(f"edgemesh agent starting (log {self.mesh.log}) ...", flush=True)
        url = f"http://{MESH_METRICS}/healthz"
        await self._until(
            lambda: asyncio.to_thread(cli.healthy, url), "edgemesh agent healthy", MESH_READY_TIMEOUT
        )
        print(
            f"cluster DNS: dig @{self.a.mesh_dns} kubernetes.default.svc.cluster.local "
            f"(any Service: <name>.<namespace>.svc.cluster.local; its ClusterIP answers from this host)",
            flush=True,
        )

    def _link_kubeconfig(self) -> Path:
        """``<data-dir>/admin.kubeconfig`` stays the path users use: a link into the embedded API's data."""
        target = self.cloud_dir / "apiserver" / "admin.kubeconfig"
        link = self.base / "admin.kubeconfig"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, self.base))
        return link

    async def _until(self, probe: Any, what: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise cli.KeadmError(f"interrupted while waiting for {what}")
            for child in (self.cloud, self.edge, self.mesh):
                if child.proc is not None and not child.alive:
                    raise cli.KeadmError(
                        f"{child.name} exited during start-up: {cli.log_tail(child.log)} (log: {child.log})"
                    )
            if await probe():
                return
            await asyncio.sleep(POLL_INTERVAL)
        raise cli.KeadmError(f"no {what} within {within:.0f}s; see {self.cloud.log} and {self.edge.log}")

    async def _watch(self) -> None:
        """Until a signal, or until a child dies on its own (then say which, and stop the other)."""
        assert self.cloud.proc is not None and self.edge.proc is not None
        waits = {
            asyncio.ensure_future(c.proc.wait()): c for c in (self.cloud, self.edge, self.mesh) if c.proc
        }
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [stop, *waits]:
                t.cancel()
        for t in done:
            if t in waits:
                c = waits[t]
                print(f"{c.name} exited unexpectedly: {cli.log_tail(c.log)} (log: {c.log})", flush=True)


async def _node_ready(kc: KubeClient, name: str, since: float) -> bool:
    """Ready, and reported by this run's edgecore: after a restart the stored condition is stale."""
    try:
        node = await kc.get(NODES, name)
    except NotFound:
        return False
    for c in node.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            with contextlib.suppress(TypeError, ValueError):
                beat = dt.datetime.fromisoformat(str(c.get("lastHeartbeatTime")).replace("Z", "+00:00"))
                # Heartbeat times have whole seconds.
                return beat.timestamp() >= int(since)
    return False
