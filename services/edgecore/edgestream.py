"""edgestream: the node's outbound stream tunnel to cloudstream (KubeEdge's EdgeStream).

Dials `wss://<cloud>:10004/v1/kubeedge/connect` with the node certificate (the cloud reads the node from
it), reconnects with jittered backoff, and serves what the cloud opens over it: logs, exec, attach and
port-forward for this node's pods (streams/). The node opens no port of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from kubeedge.pki.certs import KeyPair, load_cert_chain
from kubeedge.store import Store
from kubeedge.streaming import tunnel as tn
from kubeedge.streaming.tunnel import StreamError, Tunnel, TunnelStream

log = logging.getLogger(__name__)

CONNECT_PATH: Final = "/v1/kubeedge/connect"
HOSTNAME_HEADER: Final = "SessionHostNameOverride"
INTERNAL_IP_HEADER: Final = "SessionInternalIP"
DEFAULT_PORT: Final = 10004

Credentials = Callable[[], tuple[bytes, KeyPair]]


@dataclass(frozen=True)
class EdgeStreamConfig:
    server: str  # <cloud>:10004
    node_name: str
    node_ip: str = ""
    handshake_timeout: float = 30.0
    # Reconnect delay: uniform in [0, min(cap, base * 2**attempt)].
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    # A tunnel that lived this long resets the backoff.
    stable_after: float = 30.0
    # websocket pings: a dead cloud is noticed within about twice this.
    heartbeat: float = 15.0
    max_streams: int = tn.DEFAULT_MAX_STREAMS

    def __post_init__(self) -> None:
        host, sep, port = self.server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"edgestream: server {self.server!r} is not <host>:<port>")
        if self.handshake_timeout <= 0 or self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise ValueError("edgestream: timeouts and backoff must be positive (cap >= base)")

    @property
    def url(self) -> str:
        return f"wss://{self.server}{CONNECT_PATH}"


class EdgeStream:
    def __init__(
        self,
        config: EdgeStreamConfig,
        credentials: Credentials,
        store: Store,
        cri: Callable[[], Any],
    ) -> None:
        """`cri()` gives edged's CRI client, or None when this node runs no pods."""
        self.config = config
        self.credentials = credentials
        self.store = store
        self.cri = cri
        self.connected = asyncio.Event()
        self.served = 0

    async def run(self) -> None:
        """Until cancelled: dial, serve, redial after a backoff."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._session()
            except (OSError, aiohttp.ClientError, TimeoutError, ssl.SSLError) as e:
                log.info("edgestream: cannot reach %s: %s", self.config.url, e)
            finally:
                self.connected.clear()
            attempt = 0 if loop.time() - started >= self.config.stable_after else attempt + 1
            delay = random.uniform(0, min(self.config.backoff_cap, self.config.backoff_base * 2**attempt))
            await asyncio.sleep(delay)

    def _ssl(self) -> ssl.SSLContext:
        ca_pem, pair = self.credentials()
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        load_cert_chain(ctx, pair)
        return ctx

    async def _session(self) -> None:
        cfg = self.config
        headers = {HOSTNAME_HEADER: cfg.node_name, INTERNAL_IP_HEADER: cfg.node_ip}
        timeout = aiohttp.ClientTimeout(total=None, connect=cfg.handshake_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.ws_connect(
                cfg.url,
                ssl=self._ssl(),
                headers=headers,
                heartbeat=cfg.heartbeat,
                max_msg_size=tn.MAX_FRAME_BYTES,
                autoping=True,
            ) as ws:
                log.info("edgestream: tunnel to %s open", cfg.url)
                self.connected.set()
                tunnel = Tunnel(ws, on_open=self._serve, max_streams=cfg.max_streams, name="edgestream")
                await tunnel.run()
                log.info("edgestream: tunnel closed (%s)", ws.close_code)

    # ---- serving -------------------------------------------------------------------------------

    async def _serve(self, stream: TunnelStream) -> None:
        # Imported on first use: they load the CRI client (grpc), which only pod-running nodes pay for.
        from .edged.cri import CriError, api
        from .streams import execattach, logs, pods, portforward

        self.served += 1
        req = stream.request
        node = self.config.node_name
        pod = pods.pod_of(self.store, node, str(req.get("namespace", "")), str(req.get("pod", "")))
        cri = self.cri()
        if cri is None:
            raise StreamError(503, f"node {node} runs no pods (modules.edged.enable is false)")
        container = str(req.get("container", ""))
        if stream.kind == tn.LOGS:
            opts = logs.LogOptions.from_query({k: str(v) for k, v in (req.get("query") or {}).items()})
            found = await pods.instances(cri, pod, container)
            name = pod["metadata"]["name"]
            if opts.previous:
                if len(found) < 2:
                    raise StreamError(
                        400, f'previous terminated container "{container}" in pod "{name}" not found'
                    )
                target = found[1]
            elif not found:
                raise StreamError(400, f'container "{container}" in pod "{name}" is waiting to start')
            else:
                target = found[0]
            path = Path((await cri.container_status(target.id)).status.log_path)

            async def running() -> bool:
                try:
                    st = (await cri.container_status(target.id)).status
                except CriError:
                    return False
                return bool(st.state == api.CONTAINER_RUNNING)

            await stream.accept()
            await logs.stream_logs(path, opts, stream.send, running, lambda: stream.closed)
        elif stream.kind in (tn.EXEC, tn.ATTACH):
            cid = await pods.running_container(cri, pod, container)
            await execattach.serve(stream, cri, cid, req, attach=stream.kind == tn.ATTACH)
        elif stream.kind == tn.PORTFORWARD:
            port = req.get("port")
            if not isinstance(port, int) or not 0 < port < 65536:
                raise StreamError(400, f"invalid port {port!r}")
            await portforward.serve(stream, cri, await portforward.ready_sandbox(cri, pod), port)
        else:
            raise StreamError(400, f"unsupported stream kind {stream.kind}")
