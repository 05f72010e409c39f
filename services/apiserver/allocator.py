"""ClusterIP and NodePort allocation for Services, rebuilt from stored Services at start."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]


class AllocationError(Exception):
    pass


class ServiceAllocator:
    def __init__(self, cidr: str, node_ports: tuple[int, int]) -> None:
        self.net = ipaddress.ip_network(cidr)
        # The first address is the `kubernetes` service's by convention; skip network address too.
        self._first = int(self.net.network_address) + 1
        self._last = int(self.net.broadcast_address) - 1
        self.node_ports = node_ports
        self._ips: set[int] = set()
        self._ports: set[int] = set()
        self._rand = random.Random()

    def load(self, services: Iterable[Obj]) -> None:
        for svc in services:
            self.claim(svc)

    def claim(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if ip and ip != "None":
                try:
                    self._ips.add(int(ipaddress.ip_address(ip)))
                except ValueError:
                    pass
        for p in spec.get("ports") or ():
            if p.get("nodePort"):
                self._ports.add(int(p["nodePort"]))

    def release(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if ip and ip != "None":
                try:
                    self._ips.discard(int(ipaddress.ip_address(ip)))
                except ValueError:
                    pass
        for p in spec.get("ports") or ():
            if p.get("nodePort"):
                self._ports.discard(int(p["nodePort"]))

    def allocate_ip(self, wanted: str | None = None) -> str:
        if wanted:
            try:
                addr = ipaddress.ip_address(wanted)
            except ValueError as e:
                raise AllocationError(f"{wanted!r} is not a valid IP address") from e
            if addr not in self.net:
                raise AllocationError(f"{wanted} is not within the service CIDR {self.net}")
            if int(addr) in self._ips:
                raise AllocationError(f"provided IP {wanted} is already allocated")
            self._ips.add(int(addr))
            return wanted
        size = self._last - self._first + 1
        if len(self._ips) >= size:
            raise AllocationError(f"no free cluster IPs in {self.net}")
        # Random probing, then a scan: keeps allocation O(1) while the range is sparse.
        for _ in range(32):
            cand = self._first + self._rand.randrange(size)
            if cand not in self._ips:
                self._ips.add(cand)
                return str(ipaddress.ip_address(cand))
        for cand in range(self._first, self._last + 1):
            if cand not in self._ips:
                self._ips.add(cand)
                return str(ipaddress.ip_address(cand))
        raise AllocationError(f"no free cluster IPs in {self.net}")

    def allocate_port(self, wanted: int | None = None) -> int:
        lo, hi = self.node_ports
        if wanted:
            if not lo <= wanted <= hi:
                raise AllocationError(f"provided port {wanted} is not in the valid range {lo}-{hi}")
            if wanted in self._ports:
                raise AllocationError(f"provided port {wanted} is already allocated")
            self._ports.add(wanted)
            return wanted
        free = [p for p in range(lo, hi + 1) if p not in self._ports]
        if not free:
            raise AllocationError(f"no free node ports in {lo}-{hi}")
        port = self._rand.choice(free)
        self._ports.add(port)
        return port
