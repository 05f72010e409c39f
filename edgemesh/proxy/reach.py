"""Which endpoints this node reaches directly (kernel DNAT) and which need the tunnel (userspace).

"Direct" means: the endpoint runs on this node (its EndpointSlice `nodeName` is ours), or the kernel's
route to its IP (`ip route get`, policy rules included) has no gateway — it sits on a directly
connected link (same subnet, or a local bridge) — and is not unreachable/blackhole/prohibit. Anything
behind a gateway may sit behind NAT in another site, so it goes through the tunnel. Answers are cached
for `ttl_s` and looked up in one `ip -batch` run per sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

MAX_ROUTE_CACHE = 16384  # endpoint IPs remembered
ROUTE_LOOKUP_TIMEOUT_S = 10.0
_NOT_DIRECT_TYPES = frozenset({"unreachable", "blackhole", "prohibit", "throw"})


def route_is_direct(route: dict[str, object]) -> bool:
    """One `ip -j route get` answer → direct? (no gateway/via, and a usable route type)."""
    if route.get("gateway") or route.get("via"):
        return False
    return str(route.get("type") or "unicast") not in _NOT_DIRECT_TYPES and bool(route.get("dev"))


def parse_batch_output(text: str) -> dict[str, bool]:
    """`ip -j -force -batch` prints one JSON array per successful command; failures print nothing."""
    out: dict[str, bool] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("["):
            continue
        try:
            routes = json.loads(line)
        except ValueError:
            continue
        for r in routes:
            if isinstance(r, dict) and isinstance(r.get("dst"), str):
                out[r["dst"]] = route_is_direct(r)
    return out


class Reachability:
    def __init__(
        self,
        node_name: str,
        ip_cmd: Iterable[str] = ("ip",),
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self._ip = list(ip_cmd)
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    def is_direct(self, ip: str, node_name: str) -> bool:
        """Answer from the cache (call `refresh` first); unknown IPs count as not direct."""
        if node_name and node_name == self.node_name:
            return True
        hit = self._cache.get(ip)
        return bool(hit and hit[0])

    async def refresh(self, ips: Iterable[str]) -> None:
        now = self._clock()
        stale = sorted({ip for ip in ips if (hit := self._cache.get(ip)) is None or hit[1] <= now})
        if not stale:
            return
        answers = await self._lookup(stale)
        for ip in stale:
            # No answer = no route at all: not direct (the tunnel may still reach it).
            self._cache[ip] = (answers.get(ip, False), now + self.ttl_s)
            self._cache.move_to_end(ip)
        while len(self._cache) > MAX_ROUTE_CACHE:
            self._cache.popitem(last=False)

    async def _lookup(self, ips: list[str]) -> dict[str, bool]:
        script = "".join(f"route get {ip}\n" for ip in ips).encode()
        proc = await asyncio.create_subprocess_exec(
            *self._ip,
            "-j",
            "-force",
            "-batch",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(ROUTE_LOOKUP_TIMEOUT_S):
                out, _ = await proc.communicate(script)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("ip route get timed out for %d addresses; treating them as not direct", len(ips))
            return {}
        return parse_batch_output(out.decode(errors="replace"))
