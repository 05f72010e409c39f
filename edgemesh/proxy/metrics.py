"""Proxy counters: connections forwarded/failed and bytes, by path (kernel DNAT vs userspace).

Userspace figures are counted as they happen; kernel figures are conntrack-marked counters in our
nft/iptables rules, copied in by the proxy's refresh. Exposed as a prometheus Collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass
class ProxyMetrics:
    userspace_forwarded: int = 0  # connections/UDP sessions established to an endpoint
    userspace_failed: int = 0  # no route, no endpoint, dial failures, over the connection limit
    userspace_bytes_up: int = 0  # client → endpoint
    userspace_bytes_down: int = 0  # endpoint → client
    userspace_spliced: int = 0  # of the forwarded, how many went through splice(2)
    userspace_active: int = 0
    kernel_forwarded: int = 0  # connections DNATed by our rules (from the kernel's counters)
    kernel_bytes: int = 0  # both directions
    syncs: int = 0
    sync_failures: int = 0
    ports_kernel: int = 0
    ports_userspace: int = 0  # userspace-only or mixed

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "edgemesh_proxy_connections", "Connections through the service proxy", labels=["path", "result"]
        )
        c.add_metric(["userspace", "forwarded"], self.userspace_forwarded)
        c.add_metric(["userspace", "failed"], self.userspace_failed)
        c.add_metric(["kernel", "forwarded"], self.kernel_forwarded)
        yield c
        b = CounterMetricFamily("edgemesh_proxy_bytes", "Bytes through the service proxy", labels=["path"])
        b.add_metric(["userspace"], self.userspace_bytes_up + self.userspace_bytes_down)
        b.add_metric(["kernel"], self.kernel_bytes)
        yield b
        s = CounterMetricFamily("edgemesh_proxy_syncs", "Rule syncs", labels=["result"])
        s.add_metric(["ok"], self.syncs)
        s.add_metric(["failed"], self.sync_failures)
        yield s
        g = GaugeMetricFamily("edgemesh_proxy_service_ports", "Service ports by path", labels=["path"])
        g.add_metric(["kernel"], self.ports_kernel)
        g.add_metric(["userspace"], self.ports_userspace)
        yield g
        yield GaugeMetricFamily(
            "edgemesh_proxy_active_connections", "Open userspace connections", value=self.userspace_active
        )
