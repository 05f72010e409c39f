"""The addresses this host can be reached by, read from /proc (no netlink dependency for one list).

cloudcore puts them into its serving certificate when no advertiseAddress is configured, so an
appliance that gets its address at boot (DHCP, a site's plan) serves edges without a config edit.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Final

FIB_TRIE: Final = Path("/proc/net/fib_trie")
IF_INET6: Final = Path("/proc/net/if_inet6")
# if_inet6's scope column: only global addresses (not host 10, link 20, site 40) are dialable by peers.
_IPV6_GLOBAL_SCOPE: Final = 0x00


def local_ipv4(fib_trie: str) -> list[str]:
    """The host's own IPv4 addresses: leaves the kernel marks "/32 host LOCAL" in any table."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    return sorted(a for a in found if not ipaddress.IPv4Address(a).is_loopback)


def global_ipv6(if_inet6: str) -> list[str]:
    found = set()
    for line in if_inet6.splitlines():
        cols = line.split()
        if len(cols) < 6 or len(cols[0]) != 32:
            continue
        try:
            scope = int(cols[3], 16)
            addr = ipaddress.IPv6Address(int(cols[0], 16))
        except ValueError:
            continue
        if scope == _IPV6_GLOBAL_SCOPE and not addr.is_loopback and not addr.is_link_local:
            found.add(str(addr))
    return sorted(found)


def host_addresses(fib_trie: Path = FIB_TRIE, if_inet6: Path = IF_INET6) -> list[str]:
    """Non-loopback IPv4 and global IPv6 addresses; empty when /proc does not say (not Linux)."""
    out: list[str] = []
    for path, parse in ((fib_trie, local_ipv4), (if_inet6, global_ipv6)):
        try:
            out += parse(path.read_text())
        except OSError:
            continue
    return out
