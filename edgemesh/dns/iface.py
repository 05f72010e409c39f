"""The interface that carries the DNS address (KubeEdge: a link-local IP on `edgemesh0`).

A dummy interface: it exists only to own the address, so packets to it are delivered locally from
the host and from pods routed through the host. Kernels built without the dummy driver get a bridge
with no ports instead (what KubeEdge's EdgeMesh uses), which behaves the same for this purpose.
Idempotent (`ensure` twice is a no-op) and removable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

log = logging.getLogger(__name__)

IP_TIMEOUT = 10.0  # one `ip` invocation


class InterfaceError(RuntimeError):
    pass


async def _ip(*args: str, netns: str = "") -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), IP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise InterfaceError(f"{' '.join(cmd)}: timed out") from None
    if proc.returncode != 0:
        raise InterfaceError(f"{' '.join(cmd)}: {err.decode(errors='replace').strip()}")
    return out.decode()


async def addresses(name: str, netns: str = "") -> list[str] | None:
    """The interface's addresses, or None when it does not exist."""
    try:
        out = await _ip("-j", "addr", "show", "dev", name, netns=netns)
    except InterfaceError as e:
        if "does not exist" in str(e):
            return None
        raise
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


async def ensure(name: str, ip: str, netns: str = "") -> bool:
    """Create `name` (type dummy) with `ip` on it, up. Returns True if anything had to change."""
    addr = ipaddress.ip_address(ip)
    prefix = 32 if addr.version == 4 else 128
    have = await addresses(name, netns)
    changed = False
    if have is None:
        try:
            await _ip("link", "add", name, "type", "dummy", netns=netns)
        except InterfaceError as e:
            if "Unknown device type" not in str(e):
                raise
            await _ip("link", "add", name, "type", "bridge", netns=netns)
        have = []
        changed = True
    if str(addr) not in have:
        await _ip("addr", "add", f"{addr}/{prefix}", "dev", name, netns=netns)
        changed = True
    await _ip("link", "set", name, "up", netns=netns)
    if changed:
        log.info("dns: %s now carries %s", name, addr)
    return changed


async def remove(name: str, netns: str = "") -> bool:
    """Delete the interface (and with it its addresses); False when it was not there."""
    if await addresses(name, netns) is None:
        return False
    await _ip("link", "del", name, netns=netns)
    return True
