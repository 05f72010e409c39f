"""The node agent: registers this host as a Node, then reports its status and renews its Lease.

Everything goes upstream through the persisted queue (``send_upstream``), which keeps only the latest
report per object: a status written while the cloud is unreachable is delivered after reconnect,
older ones are simply replaced. Host facts come from a ``HostReader`` so tests can fake the host;
what edged knows (images, runtime version and readiness, pressure conditions) comes from an optional
``extra`` provider, polled by its own loop so that a slow runtime never delays the status or the lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
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

# How long one poll of the extra provider may take before its last snapshot is kept instead.
EXTRA_TIMEOUT: Final = 15.0
# Resources whose quantities are reported in Ki (bytes); the others as plain numbers or millicores.
_BYTE_RESOURCES: Final = ("memory", "ephemeral-storage")

# (resource, operation, content, group) → queued upstream.
SendUpstream = Callable[[str, str, Any, str], Awaitable[object]]
# Returns the part of the status it knows: {"images": [...], "nodeInfo": {...}, "conditions": [{type,
# status, reason, message}, ...]}; conditions replace the agent's own of the same type.
ExtraStatus = Callable[[], Awaitable[dict[str, Any]]]


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
    # The kubelet's systemReserved/kubeReserved (quantities by resource name): allocatable is capacity
    # minus both.
    system_reserved: Mapping[str, str] = field(default_factory=dict)
    kube_reserved: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.status_interval, self.status_report_interval, self.lease_interval) <= 0:
            raise ValueError("node agent: intervals must be positive")
        if self.lease_duration <= 0:
            raise ValueError("node agent: lease duration must be positive")
        self.reserved()  # raises on a bad quantity now rather than at the first status

    def reserved(self) -> dict[str, Fraction]:
        """systemReserved + kubeReserved per resource."""
        if not self.system_reserved and not self.kube_reserved:
            return {}
        from kubeedge.kube.quantity import parse_quantity  # only nodes that reserve something need it

        out: dict[str, Fraction] = {}
        for which in (self.system_reserved, self.kube_reserved):
            for name, q in which.items():
                try:
                    amount = parse_quantity(q)
                except ValueError:
                    raise ValueError(f"node agent: reserved {name}: invalid quantity {q!r}") from None
                if amount < 0:
                    raise ValueError(f"node agent: reserved {name}: {q!r} is negative")
                out[name] = out.get(name, Fraction(0)) + amount
        return out


def allocatable(capacity: dict[str, str], reserved: dict[str, Fraction]) -> dict[str, str]:
    """capacity minus reserved, never below zero, in the units capacity uses."""
    if not reserved:
        return dict(capacity)
    from kubeedge.kube.quantity import parse_quantity

    out = dict(capacity)
    for name, amount in reserved.items():
        if name not in capacity:
            continue
        left = max(Fraction(0), parse_quantity(capacity[name]) - amount)
        if name in _BYTE_RESOURCES:
            out[name] = f"{int(left) // 1024}Ki"
        elif left.denominator == 1:
            out[name] = str(left.numerator)
        else:
            out[name] = f"{int(left * 1000)}m"
    return out


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
        extra: ExtraStatus | None = None,
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
        self.extra = extra
        self._extra: dict[str, Any] = {}  # the provider's latest snapshot
        self._transitions: dict[str, tuple[str, float]] = {}  # condition type -> (status, since)

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

        extra = self._extra

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        conditions = [
            cond("Ready", "True", "EdgeReady", "edge is posting ready status"),
            cond("MemoryPressure", "False", "EdgeHasSufficientMemory", "edge has sufficient memory"),
            cond("DiskPressure", "False", "EdgeHasNoDiskPressure", "edge has no disk pressure"),
            cond("PIDPressure", "False", "EdgeHasSufficientPID", "edge has sufficient PID available"),
        ]
        for c in extra.get("conditions") or []:
            mine = next((x for x in conditions if x["type"] == c["type"]), None)
            if mine is None:
                conditions.append(mine := cond(c["type"], "", "", ""))
            mine.update(status=c["status"], reason=c["reason"], message=c["message"])
        for c in conditions:
            c["lastTransitionTime"] = _rfc3339(self._transition(c["type"], c["status"]))
        status: dict[str, Any] = {
            "capacity": dict(resources),
            "allocatable": allocatable(resources, self.config.reserved()),
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
                # Known once the extra provider has asked the container runtime.
                "containerRuntimeVersion": "",
                **(extra.get("nodeInfo") or {}),
            },
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        }
        if "images" in extra:
            status["images"] = extra["images"]
        return status

    def _transition(self, type_: str, status: str) -> float:
        """When the condition last changed status: the agent's start for its first value."""
        seen = self._transitions.get(type_)
        if seen is None or seen[0] != status:
            seen = (status, self.started_at if seen is None else self.clock())
            self._transitions[type_] = seen
        return seen[1]

    async def refresh_extra(self) -> None:
        """Take a new snapshot from the provider; on failure keep the last one (and say so)."""
        if self.extra is None:
            return
        try:
            async with asyncio.timeout(EXTRA_TIMEOUT):
                self._extra = await self.extra()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("node status provider failed; keeping its last facts", exc_info=True)

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
        # Not "reported": a Node that already exists (edgecore restarted) keeps the cloud's old status —
        # the registration does not overwrite it — so the first status check sends the status.
        self._reported = None

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
        """The report loop, for the Supervisor; with an extra provider, also the loop refreshing its
        snapshot (one fails, both end, and the Supervisor restarts them)."""
        pause = sleep or asyncio.sleep

        async def report() -> None:
            while True:
                await pause(await self.tick())

        if self.extra is None:
            await report()
            return
        await self.refresh_extra()  # so the registration already carries images and runtime facts

        async def refresh() -> None:
            while True:
                await pause(self.config.status_interval)
                await self.refresh_extra()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(report(), name="nodeagent/report")
            tg.create_task(refresh(), name="nodeagent/extra")
