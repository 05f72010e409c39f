"""Upstream resolvers from a resolv.conf, re-read when the file changes, never including ourselves."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

# The file is stat'ed at most this often: cheap enough per query, quick enough for a DHCP change.
RESOLV_CHECK_INTERVAL = 5.0
MAX_UPSTREAMS = 3  # glibc's MAXNS: resolvers ignore the rest, so do we


def parse_resolv_conf(text: str) -> list[str]:
    """`nameserver` addresses in order (scoped IPv6 `%iface` suffixes dropped; junk skipped)."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            addr = parts[1].split("%", 1)[0]
            try:
                out.append(str(ipaddress.ip_address(addr)))
            except ValueError:
                log.warning("resolv.conf: ignoring nameserver %r", parts[1])
    return out


class Upstreams:
    """The current upstream list: explicit `servers` (an empty list: none), else the nameservers of
    a resolv.conf, minus `exclude` (our own listen address)."""

    def __init__(
        self,
        resolv_conf: str = "/etc/resolv.conf",
        servers: Iterable[tuple[str, int]] | None = None,
        exclude: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.path = resolv_conf
        self.fixed = list(servers) if servers is not None else None  # [] = forward nowhere
        self.exclude = {(str(ipaddress.ip_address(h)), p) for h, p in exclude}
        self._servers: list[tuple[str, int]] = []
        self._mtime: float | None = None
        self._checked = 0.0

    def servers(self) -> list[tuple[str, int]]:
        if self.fixed is not None:
            return [s for s in self.fixed if s not in self.exclude][:MAX_UPSTREAMS]
        now = time.monotonic()
        if now - self._checked >= RESOLV_CHECK_INTERVAL or self._mtime is None:
            self._checked = now
            self._reload()
        return self._servers

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
            if st.st_mtime == self._mtime:
                return
            with open(self.path) as f:
                text = f.read()
        except OSError as e:
            if self._mtime is None:
                log.warning("dns: cannot read %s (%s); no upstream resolvers", self.path, e.strerror)
            self._mtime = 0.0
            self._servers = []
            return
        self._mtime = st.st_mtime
        found = [(ip, 53) for ip in parse_resolv_conf(text)]
        # Our own address in the host's resolv.conf (the agent set the host up to use the mesh DNS)
        # would make every forwarded query loop back to us.
        self._servers = [s for s in found if s not in self.exclude][:MAX_UPSTREAMS]
        log.info("dns: upstream resolvers from %s: %s", self.path, self._servers or "none")
