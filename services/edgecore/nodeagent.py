"""The node agent: registers this host as a Node, then reports its status and renews its Lease.

Everything goes upstream through the persisted queue (``send_upstream``), which keeps only the latest
report per object: a status written while the cloud is unreachable is delivered after reconnect,
older ones are simply replaced. Host facts come from a ``HostReader`` so tests can fake the host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from kubeedge.beehive.message import (
    GROUP_META,
    GROUP_RESOURCE,
    OP_INSERT,
    OP_PATCH,
    OP_UPDATE,
    RT_LEASE,
    RT_NODE,
    RT_NODEPATCH,
)

log = logging.getLogger(__name__)

SOURCE: Final = "edged"
EDGE_LABEL: Final = "node-role.kubernetes.io/edge"
AGENT_LABEL: Final = "node-role.kubernetes.io/agent"
LEASE_NAMESPACE: Final = "kube-node-lease"
KUBELET_VERSION: Final = "v1.37.0-kubeedge"
MAX_PODS: Final = 110
LEASE_DURATION: Final = 40
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le"}

# (resource, operation, content, group) → queued upstream.
SendUpstream = Callable[[str, str, Any, str], Awaitable[object]]


class HostReader(Protocol):
    def cpu_count(self) -> int: ...
    def memory_bytes(self) -> int: ...
    def storage_bytes(self, path: Path) -> int: ...
    def ipv4_addresses(self) -> list[str]: ...
    def hostname(self) -> str: ...
    def machine_id(self) -> str: ...
    def boot_id(self) -> str: ...
    def kernel_version(self) -> str: ...
    def os_image(self) -> str: ...
    def architecture(self) -> str: ...


class LinuxHost:
    """Reads the real host (``root`` lets tests point at a fake /proc and /etc)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def _read(self, rel: str) -> str:
        try:
            return (self.root / rel).read_text()
        except OSError:
            return ""

    def cpu_count(self) -> int:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def memory_bytes(self) -> int:
        for line in self._read("proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                return int(parts[1]) * 1024  # reported in kB
        return 0

    def storage_bytes(self, path: Path) -> int:
        try:
            st = os.statvfs(path)
        except OSError:
            return 0
        return st.f_blocks * st.f_frsize

    def ipv4_addresses(self) -> list[str]:
        return parse_fib_trie(self._read("proc/net/fib_trie"))

    def hostname(self) -> str:
        return socket.gethostname()

    def machine_id(self) -> str:
        return self._read("etc/machine-id").strip()

    def boot_id(self) -> str:
        return self._read("proc/sys/kernel/random/boot_id").strip()

    def kernel_version(self) -> str:
        return platform.release()

    def os_image(self) -> str:
        for line in self._read("etc/os-release").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
        return "Linux"

    def architecture(self) -> str:
        m = platform.machine()
        return _ARCH.get(m, m)


def parse_fib_trie(text: str) -> list[str]:
    """Local IPv4 addresses from /proc/net/fib_trie (``|-- <ip>`` followed by ``/32 host LOCAL``),
    loopback excluded, in first-seen order; no ``ip`` binary or psutil needed."""
    out: list[str] = []
    last = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            last = s[3:].strip()
        elif "/32 host LOCAL" in s and last and not last.startswith("127.") and last not in out:
            out.append(last)
    return out


@dataclass(frozen=True)
class NodeAgentConfig:
    # The kubelet's split since node leases exist: the status is *computed* every
    # nodeStatusUpdateFrequency but *sent* only when it changed or every nodeStatusReportFrequency;
    # liveness is the Lease, renewed every lease_interval. A full status every 10 s was ~90% of an idle
    # node's uplink.
    status_interval: float = 10.0  # nodeStatusUpdateFrequency
    status_report_interval: float = 300.0  # nodeStatusReportFrequency (kubelet default 5 min)
    lease_interval: float = 10.0
    lease_duration: int = LEASE_DURATION
    node_ip: str = ""
    data_dir: Path = Path("/")
    register: bool = True

    def __post_init__(self) -> None:
        if min(self.status_interval, self.status_report_interval, self.lease_interval) <= 0:
            raise ValueError("node agent: intervals must be positive")
        if self.lease_duration <= 0:
            raise ValueError("node agent: lease duration must be positive")


def _without_heartbeats(status: dict[str, Any]) -> dict[str, Any]:
    """The status minus what changes on every computation (condition heartbeat times)."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in status.get("conditions") or []
    ]
    return out


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    def __init__(
        self,
        node_name: str,
        labels: dict[str, str],
        send_upstream: SendUpstream,
        clock: Callable[[], float] = time.time,
        *,
        config: NodeAgentConfig | None = None,
        host: HostReader | None = None,
    ) -> None:
        self.node_name = node_name
        self.user_labels = dict(labels)
        self.send_upstream = send_upstream
        self.clock = clock
        self.config = config or NodeAgentConfig()
        self.host: HostReader = host or LinuxHost()
        self.started_at = clock()
        self.registered = False
        self._lease_created = False
        self._next_status = 0.0
        self._next_lease = 0.0
        self._reported: dict[str, Any] | None = None  # last status sent, heartbeat times stripped
        self._reported_at = 0.0

    # ---- object contents -----------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        h = self.host
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": h.architecture(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": h.architecture(),
            **self.user_labels,
            # Last: these mark the node as an edge node for the cloud and cannot be overridden.
            EDGE_LABEL: "",
            AGENT_LABEL: "",
        }

    def address(self) -> str:
        if self.config.node_ip:
            return self.config.node_ip
        addrs = self.host.ipv4_addresses()
        return addrs[0] if addrs else "127.0.0.1"

    def status(self) -> dict[str, Any]:
        h, now = self.host, _rfc3339(self.clock())
        since = _rfc3339(self.started_at)
        resources = {
            "cpu": str(h.cpu_count()),
            "memory": f"{h.memory_bytes() // 1024}Ki",
            "pods": str(MAX_PODS),
            "ephemeral-storage": f"{h.storage_bytes(self.config.data_dir) // 1024}Ki",
        }

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        return {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "addresses": [
                {"type": "InternalIP", "address": self.address()},
                {"type": "Hostname", "address": h.hostname()},
            ],
            "nodeInfo": {
                "machineID": h.machine_id(),
                "systemUUID": h.machine_id(),
                "bootID": h.boot_id(),
                "kernelVersion": h.kernel_version(),
                "osImage": h.os_image(),
                "architecture": h.architecture(),
                "operatingSystem": "linux",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                # No container runtime until edged exists.
                "containerRuntimeVersion": "",
            },
            "conditions": [
                cond("Ready", "True", "EdgeReady", "edge is posting ready status"),
                cond("MemoryPressure", "False", "EdgeHasSufficientMemory", "edge has sufficient memory"),
                cond("DiskPressure", "False", "EdgeHasNoDiskPressure", "edge has no disk pressure"),
                cond("PIDPressure", "False", "EdgeHasSufficientPID", "edge has sufficient PID available"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        }

    def node_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels()},
            "spec": {},
            "status": self.status(),
        }

    def status_patch(self, status: dict[str, Any] | None = None) -> str:
        """The nodepatch content: a JSON merge patch for the status subresource, as a JSON string."""
        return orjson.dumps({"status": status if status is not None else self.status()}).decode()

    def status_due(self) -> str | None:
        """The status patch if it must be sent now (changed since the last report, or the report
        period passed), else None; records what it returns as reported."""
        now = self.clock()
        status = self.status()
        essence = _without_heartbeats(status)
        if essence == self._reported and now - self._reported_at < self.config.status_report_interval:
            return None
        self._reported, self._reported_at = essence, now
        return self.status_patch(status)

    def lease(self) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": self.config.lease_duration,
                "renewTime": _micro(self.clock()),
            },
        }

    # ---- messages ------------------------------------------------------------------------------

    async def register(self) -> None:
        """Queue the registration (KubeEdge: insert ``null/node/<name>``, group meta). It carries the
        full status so the Node is Ready from its first version."""
        node = self.node_object()
        await self.send_upstream(f"null/{RT_NODE}/{self.node_name}", OP_INSERT, node, GROUP_META)
        self.registered = True
        self._reported, self._reported_at = _without_heartbeats(node["status"]), self.clock()

    def request_registration(self) -> None:
        """Register again at the next tick (the Node was deleted in the cloud)."""
        self.registered = False
        self._lease_created = False

    async def report_status(self, force: bool = False) -> None:
        """Send the status if it changed or its report period passed (``force``: send regardless)."""
        if force:
            self._reported = None
        patch = self.status_due()
        if patch is not None:
            await self.send_upstream(f"null/{RT_NODEPATCH}/{self.node_name}", OP_PATCH, patch, GROUP_RESOURCE)

    async def renew_lease(self) -> None:
        op = OP_UPDATE if self._lease_created else OP_INSERT
        await self.send_upstream(
            f"{LEASE_NAMESPACE}/{RT_LEASE}/{self.node_name}", op, self.lease(), GROUP_RESOURCE
        )
        self._lease_created = True

    # ---- schedule ------------------------------------------------------------------------------

    async def tick(self) -> float:
        """Send what is due at ``clock()``; returns the seconds until the next report is due."""
        now = self.clock()
        if self.config.register and not self.registered:
            await self.register()
            # The registration carries the status: the first patch is one interval later.
            self._next_status = now + self.config.status_interval
        if now >= self._next_status:
            await self.report_status()
            self._next_status = now + self.config.status_interval
        if now >= self._next_lease:
            await self.renew_lease()
            self._next_lease = now + self.config.lease_interval
        return max(0.0, min(self._next_status, self._next_lease) - self.clock())

    async def run(self, sleep: Callable[[float], Awaitable[object]] | None = None) -> None:
        """The report loop, for the Supervisor."""
        pause = sleep or asyncio.sleep
        while True:
            await pause(await self.tick())
