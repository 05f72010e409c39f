"""Kernel rule backends: install a Plan atomically (nft -f / iptables-restore), read counters, clean up.

Each sync replaces our whole ruleset in one kernel transaction per table and family; anything of ours
the plan no longer names (including leftovers of a crashed run) is deleted in that same transaction.
If an incremental update is refused (someone edited our table), the next attempt recreates it whole.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from typing import Protocol

from edgemesh.proxy import iptables as ipt
from edgemesh.proxy import nft
from edgemesh.proxy.plan import Plan

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30.0


class RulesError(RuntimeError):
    pass


async def run(cmd: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"{cmd[0]} timed out"
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Backend(Protocol):
    name: str
    kernel_source_hash: bool  # can the kernel hash source IPs to endpoints itself?

    async def apply(self, plan: Plan, tcp_port: int, udp_ports: dict[tuple[str, int, str], int]) -> None: ...
    async def cleanup(self) -> None: ...
    async def counters(self) -> tuple[int, int]: ...  # kernel-path (connections, bytes)


class NftBackend:
    name = "nftables"
    kernel_source_hash = True

    def __init__(self, nft_cmd: Sequence[str] = ("nft",), marks: nft.Marks = nft.Marks()) -> None:
        self._nft = list(nft_cmd)
        self._marks = marks
        self.last_script: dict[int, str] = {}  # per family, for debugging and tests

    async def _existing(self, family: int) -> nft.Existing | None:
        rc, out, _ = await run([*self._nft, "-j", "list", "table", nft.family_kw(family), nft.TABLE])
        return nft.parse_table(out) if rc == 0 else None

    async def apply(self, plan: Plan, tcp_port: int, udp_ports: dict[tuple[str, int, str], int]) -> None:
        for family in (4, 6):
            ports = plan.family(family)
            existing = await self._existing(family)
            if family == 6 and not ports:
                if existing is not None:
                    await self._run_script(nft.render_delete(6))
                continue
            script = nft.render(family, ports, existing, tcp_port, udp_ports, self._marks)
            self.last_script[family] = script
            rc, err = await self._run_script(script)
            if rc == 0:
                continue
            log.warning("nft refused the incremental update (%s); recreating table", err.strip()[:500])
            script = nft.render_delete(family) + nft.render(
                family, ports, None, tcp_port, udp_ports, self._marks
            )
            self.last_script[family] = script
            rc, err = await self._run_script(script)
            if rc != 0:
                raise RulesError(f"nft -f failed: {err.strip()[:1000]}")

    async def _run_script(self, script: str) -> tuple[int, str]:
        rc, _, err = await run([*self._nft, "-f", "-"], stdin=script)
        return rc, err

    async def cleanup(self) -> None:
        for family in (4, 6):
            rc, err = await self._run_script(nft.render_delete(family))
            if rc != 0:
                log.warning("removing nft table %s failed: %s", nft.family_kw(family), err.strip())

    async def counters(self) -> tuple[int, int]:
        conns = nbytes = 0
        for family in (4, 6):
            ex = await self._existing(family)
            if ex is not None:
                conns += ex.counters.get("kernel-conns", (0, 0))[0]
                nbytes += ex.counters.get("kernel-bytes", (0, 0))[1]
        return conns, nbytes


class IptablesBackend:
    name = "iptables"
    kernel_source_hash = False

    def __init__(self, variant: str = "", marks: nft.Marks = nft.Marks()) -> None:
        """`variant` "", "legacy" or "nft": which iptables flavour (iptables-legacy-restore, ...)."""
        self._suffix = f"-{variant}" if variant else ""
        self._marks = marks
        self.last_script: dict[int, str] = {}

    def _bin(self, family: int, tool: str = "") -> list[str]:
        base = "iptables" if family == 4 else "ip6tables"
        return [f"{base}{self._suffix}{'-' + tool if tool else ''}"]

    async def _save(self, family: int, table: str, counters: bool = False) -> str:
        rc, out, err = await run([*self._bin(family, "save"), "-t", table, *(["-c"] if counters else [])])
        if rc != 0:
            raise RulesError(f"{self._bin(family, 'save')[0]} failed: {err.strip()}")
        return out

    async def _chains(self, family: int) -> tuple[set[str], set[str]]:
        return (
            ipt.parse_chains(await self._save(family, "nat")),
            ipt.parse_chains(await self._save(family, "filter")),
        )

    async def apply(self, plan: Plan, tcp_port: int, udp_ports: dict[tuple[str, int, str], int]) -> None:
        for family in (4, 6):
            ports = plan.family(family)
            if family == 6 and (not ports or not shutil.which(self._bin(6)[0])):
                continue
            nat, filt = await self._chains(family)
            script = ipt.render(family, ports, nat, filt, tcp_port, udp_ports, self._marks)
            self.last_script[family] = script
            rc, _, err = await run([*self._bin(family, "restore"), "--noflush"], stdin=script)
            if rc != 0:
                raise RulesError(f"iptables-restore failed: {err.strip()[:1000]}")
            await self._ensure_jumps(family)

    async def _ensure_jumps(self, family: int) -> None:
        for table, jumps in ipt.JUMPS.items():
            for chain, target in jumps:
                rc, _, _ = await run([*self._bin(family), "-w", "-t", table, "-C", chain, "-j", target])
                if rc != 0:
                    rc, _, err = await run([*self._bin(family), "-w", "-t", table, "-I", chain, "-j", target])
                    if rc != 0:
                        raise RulesError(f"cannot hook {table}/{chain}: {err.strip()}")

    async def cleanup(self) -> None:
        for family in (4, 6):
            if not shutil.which(self._bin(family)[0]):
                continue
            try:
                nat, filt = await self._chains(family)
            except RulesError as e:
                log.warning("%s", e)
                continue
            if not nat and not filt:
                continue
            for table, jumps in ipt.JUMPS.items():
                for chain, target in jumps:
                    # -D removes one copy per call; loop in case a crash left duplicates.
                    for _ in range(8):
                        rc, _, _ = await run(
                            [*self._bin(family), "-w", "-t", table, "-D", chain, "-j", target]
                        )
                        if rc != 0:
                            break
            rc, _, err = await run(
                [*self._bin(family, "restore"), "--noflush"], stdin=ipt.render_delete(nat, filt)
            )
            if rc != 0:
                log.warning("removing our iptables chains failed: %s", err.strip())

    async def counters(self) -> tuple[int, int]:
        conns = nbytes = 0
        for family in (4, 6):
            if family == 6 and not shutil.which(self._bin(6)[0]):
                continue
            conns += ipt.parse_counter(await self._save(family, "nat", counters=True), ipt.KCONNS)[0]
            nbytes += ipt.parse_counter(await self._save(family, "filter", counters=True), ipt.KBYTES)[1]
        return conns, nbytes


async def nft_usable(nft_cmd: Sequence[str] = ("nft",)) -> bool:
    if not shutil.which(nft_cmd[0]):
        return False
    rc, _, _ = await run([*nft_cmd, "list", "tables"])
    return rc == 0


async def select_backend(
    kind: str, nft_cmd: Sequence[str] = ("nft",), iptables_variant: str = "", marks: nft.Marks = nft.Marks()
) -> tuple[Backend, list[Backend]]:
    """(the backend to use, the other backends whose leftovers of ours must be removed)."""
    use_nft = kind == "nftables" or (kind == "auto" and await nft_usable(nft_cmd))
    if kind not in ("auto", "nftables", "iptables"):
        raise ValueError(f"proxy backend must be auto, nftables or iptables, not {kind!r}")
    n = NftBackend(nft_cmd, marks)
    i = IptablesBackend(iptables_variant, marks)
    if use_nft:
        return n, ([i] if shutil.which(i._bin(4)[0]) else [])
    return i, ([n] if await nft_usable(nft_cmd) else [])
