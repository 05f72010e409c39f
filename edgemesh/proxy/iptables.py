"""Render a Plan as `iptables-restore --noflush` input: our own EDGEMESH-* chains, nothing else touched.

For hosts without nftables. Declaring a chain (`:NAME - [0:0]`) flushes it, so one restore rewrites
all our chains atomically per table; stale ones are flushed and deleted in the same restore. The
built-in chains only get one jump rule each (added by the backend with -C/-I). Differences from nft:
round robin uses `statistic --mode nth` cascades, random `--mode random`, affinity `recent` lists
(kernel default: 100 clients per list); source-IP consistent hash has no iptables equivalent that
leaves the packet mark alone, so those services take the userspace path.
"""

from __future__ import annotations

from edgemesh.model import RANDOM
from edgemesh.proxy.nft import Marks
from edgemesh.proxy.plan import REJECT, USERSPACE, PortPlan

PREFIX = "EDGEMESH-"
SERVICES = "EDGEMESH-SERVICES"
POSTROUTING = "EDGEMESH-POSTRTG"
FILTER = "EDGEMESH-FILTER"
# Counter chains are never redeclared, so their rule counters survive syncs.
KCONNS = "EDGEMESH-KCONNS"  # nat: one rule per kernel-path connection (also sets the conntrack mark)
KBYTES = "EDGEMESH-KBYTES"  # filter: counts every packet of kernel-path connections
JUMPS = {
    "nat": [("PREROUTING", SERVICES), ("OUTPUT", SERVICES), ("POSTROUTING", POSTROUTING)],
    "filter": [("FORWARD", FILTER), ("OUTPUT", FILTER), ("INPUT", FILTER)],
}


def parse_chains(save_output: str) -> set[str]:
    """Our chain names in one table's `iptables-save` output."""
    return {line[1:].split()[0] for line in save_output.splitlines() if line.startswith(":" + PREFIX)}


def parse_counter(save_output: str, chain: str) -> tuple[int, int]:
    """(packets, bytes) of the first rule of `chain` in `iptables-save -c` output."""
    for line in save_output.splitlines():
        if line.startswith("[") and f"-A {chain} " in line + " ":
            pk, _, by = line[1 : line.index("]")].partition(":")
            return int(pk), int(by)
    return 0, 0


def _cidr(family: int, ip: str) -> str:
    return f"{ip}/32" if family == 4 else f"{ip}/128"


def _hostport(family: int, ip: str, port: int) -> str:
    return f"{ip}:{port}" if family == 4 else f"[{ip}]:{port}"


def render(
    family: int,
    ports: list[PortPlan],
    existing_nat: set[str],
    existing_filter: set[str],
    tcp_port: int,
    udp_ports: dict[tuple[str, int, str], int],
    marks: Marks = Marks(),
) -> str:
    nat_chains: dict[str, list[str]] = {SERVICES: [], POSTROUTING: []}
    filt: list[str] = [f"-A {FILTER} -m connmark --mark {marks.conn:#x}/{marks.conn:#x} -j {KBYTES}"]
    nat_chains[POSTROUTING] = [
        f"-m mark ! --mark {marks.masq:#x}/{marks.masq:#x} -j RETURN",
        f"-j MARK --xor-mark {marks.masq:#x}",
        "-j MASQUERADE --random-fully",
    ]
    for p in ports:
        match = f"-d {_cidr(family, p.cluster_ip)} -p {p.protocol} -m {p.protocol} --dport {p.port}"
        redirect = tcp_port if p.protocol == "tcp" else udp_ports.get(p.key, 0)
        if p.mode == REJECT or (p.mode != "kernel" and not redirect):
            filt.append(f"-A {FILTER} {match} -j REJECT")
            continue
        svc = f"{PREFIX}SVC-{p.uid}"
        nat_chains[SERVICES].append(f"{match} -j {svc}")
        if p.mode == USERSPACE:
            nat_chains[svc] = [f"-p {p.protocol} -j REDIRECT --to-ports {redirect}"]
            continue
        rules: list[str] = []
        slot_chains: list[str] = []
        for s in p.slots:
            ep = f"{PREFIX}EP-{p.slot_uid(s)}"
            slot_chains.append(ep)
            ep_rules: list[str] = []
            if p.affinity_s:
                rules.append(f"-m recent --name {ep} --rcheck --seconds {p.affinity_s} --reap -j {ep}")
            if s.direct:
                if s.local:
                    ep_rules.append(f"-s {_cidr(family, s.endpoint.ip)} -j MARK --or-mark {marks.masq:#x}")
                else:
                    ep_rules.append(f"-m addrtype ! --src-type LOCAL -j MARK --or-mark {marks.masq:#x}")
                ep_rules.append(f"-j {KCONNS}")
            if p.affinity_s:
                ep_rules.append(f"-m recent --name {ep} --set")
            if s.direct:
                dest = _hostport(family, s.endpoint.ip, s.endpoint.port)
                ep_rules.append(f"-p {p.protocol} -j DNAT --to-destination {dest}")
            else:
                ep_rules.append(f"-p {p.protocol} -j REDIRECT --to-ports {redirect}")
            nat_chains[ep] = ep_rules
        n = len(slot_chains)
        for i, ep in enumerate(slot_chains):
            left = n - i
            if left == 1:
                rules.append(f"-j {ep}")
            elif p.lb.kind == RANDOM:
                rules.append(f"-m statistic --mode random --probability {1 / left:.10f} -j {ep}")
            else:
                rules.append(f"-m statistic --mode nth --every {left} --packet 0 -j {ep}")
        nat_chains[svc] = rules

    out = ["*nat"]
    out += [f":{c} - [0:0]" for c in nat_chains]
    stale_nat = sorted(existing_nat - set(nat_chains) - {KCONNS})
    out += [f":{c} - [0:0]" for c in stale_nat]
    if KCONNS not in existing_nat:
        out += [f":{KCONNS} - [0:0]", f"-A {KCONNS} -j CONNMARK --or-mark {marks.conn:#x}"]
    for c, rules in nat_chains.items():
        out += [f"-A {c} {r}" for r in rules]
    out += [f"-X {c}" for c in stale_nat]
    out += ["COMMIT", "*filter", f":{FILTER} - [0:0]"]
    stale_filter = sorted(existing_filter - {FILTER, KBYTES})
    out += [f":{c} - [0:0]" for c in stale_filter]
    if KBYTES not in existing_filter:
        out += [f":{KBYTES} - [0:0]", f"-A {KBYTES} -j RETURN"]
    out += filt
    out += [f"-X {c}" for c in stale_filter]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def render_delete(existing_nat: set[str], existing_filter: set[str]) -> str:
    """Flush and delete all our chains (after the backend removed the jumps to them)."""
    out = ["*nat"]
    out += [f":{c} - [0:0]" for c in sorted(existing_nat)]
    out += [f"-X {c}" for c in sorted(existing_nat)]
    out += ["COMMIT", "*filter"]
    out += [f":{c} - [0:0]" for c in sorted(existing_filter)]
    out += [f"-X {c}" for c in sorted(existing_filter)]
    out.append("COMMIT")
    return "\n".join(out) + "\n"
