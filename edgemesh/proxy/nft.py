"""Render a Plan into one nftables transaction for `table ip edgemesh` (or ip6), and read it back.

The transaction updates the table in place — flush every chain and map we own, re-add the desired
rules, delete what is no longer desired — so sessionAffinity sets (and their timeouts) survive a
sync; the kernel applies it atomically. Layout:
  nat-prerouting / nat-output → services: `daddr . l4proto . dport vmap @service-ips` → svc-<uid>
  svc-<uid>: affinity look-ups, then numgen inc|random / jhash saddr → ep-<slot> (or one redirect)
  ep-<slot>: masquerade marks, conntrack mark, `update @aff-<slot>`, dnat (or redirect to userspace)
  nat-postrouting: masquerade what ep chains marked; filter-*: reject ports without endpoints, and
  count kernel-path bytes (conntrack mark) in the `kernel-bytes` counter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgemesh.model import CONSISTENT_HASH, RANDOM
from edgemesh.proxy.loadbalance import KERNEL_HASH_BUCKETS, MAX_AFFINITY_ENTRIES, HashRing, endpoint_id
from edgemesh.proxy.plan import REJECT, USERSPACE, PortPlan, Slot

TABLE = "edgemesh"
BASE_CHAINS = {
    "nat-prerouting": "type nat hook prerouting priority -100; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority 100; policy accept;",
    "filter-forward": "type filter hook forward priority 0; policy accept;",
    "filter-output": "type filter hook output priority 0; policy accept;",
    "filter-input": "type filter hook input priority 0; policy accept;",
}
COUNTERS = ("kernel-bytes", "kernel-conns")


@dataclass(frozen=True)
class Marks:
    masq: int = 0x00100000  # packet mark bit: masquerade this connection in postrouting
    conn: int = 0x00100000  # conntrack mark bit: this connection took the kernel path (byte counter)


@dataclass
class Existing:
    """Names of what our table holds now (None = no table)."""

    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)
    maps: set[str] = field(default_factory=set)
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (packets, bytes)


def family_kw(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def parse_table(text: str) -> Existing:
    """`nft -j list table ...` → what exists."""
    ex = Existing()
    for item in json.loads(text).get("nftables", []):
        if "chain" in item:
            ex.chains.add(item["chain"]["name"])
        elif "set" in item:
            ex.sets.add(item["set"]["name"])
        elif "map" in item:
            ex.maps.add(item["map"]["name"])
        elif "counter" in item:
            c = item["counter"]
            ex.counters[c["name"]] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
    return ex


def _addr(family: int, ip: str) -> str:
    return ip if family == 4 else f"[{ip}]"


def _vmap(targets: list[str]) -> str:
    return "{ " + ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets)) + " }"


def render(
    family: int,
    ports: list[PortPlan],
    existing: Existing | None,
    tcp_port: int,
    udp_ports: dict[tuple[str, int, str], int],
    marks: Marks = Marks(),
) -> str:
    """The whole transaction text for `nft -f`."""
    fam = family_kw(family)
    saddr = "ip saddr" if family == 4 else "ip6 saddr"
    daddr = "ip daddr" if family == 4 else "ip6 daddr"
    addr_type = "ipv4_addr" if family == 4 else "ipv6_addr"
    t = f"{fam} {TABLE}"
    head: list[str] = [f"add table {t}"]
    body: list[str] = []
    chains: dict[str, list[str]] = {}
    aff_sets: set[str] = set()
    service_elems: list[str] = []
    reject_elems: list[str] = []

    if existing is not None:
        head += [f"flush map {t} service-ips"] if "service-ips" in existing.maps else []
        head += [f"flush set {t} no-endpoints"] if "no-endpoints" in existing.sets else []
        head += [f"flush chain {t} {c}" for c in sorted(existing.chains)]
    for name, spec in BASE_CHAINS.items():
        head.append(f"add chain {t} {name} {{ {spec} }}")
    head.append(f"add chain {t} services")
    head.append(f"add map {t} service-ips {{ type {addr_type} . inet_proto . inet_service : verdict; }}")
    head.append(f"add set {t} no-endpoints {{ type {addr_type} . inet_proto . inet_service; }}")
    head += [f"add counter {t} {c}" for c in COUNTERS]

    lookup = f"{daddr} . meta l4proto . th dport"
    chains["nat-prerouting"] = ["jump services"]
    chains["nat-output"] = ["jump services"]
    chains["services"] = [f"{lookup} vmap @service-ips"]
    chains["nat-postrouting"] = [
        f"meta mark & {marks.masq:#x} == 0 return",
        f"meta mark set meta mark ^ {marks.masq:#x} masquerade fully-random",
    ]
    counted = f"ct mark & {marks.conn:#x} == {marks.conn:#x} counter name kernel-bytes"
    chains["filter-forward"] = [counted, f"{lookup} @no-endpoints reject"]
    chains["filter-output"] = [counted, f"{lookup} @no-endpoints reject"]
    chains["filter-input"] = [counted]

    for p in ports:
        elem = f"{p.cluster_ip} . {p.protocol} . {p.port}"
        redirect = tcp_port if p.protocol == "tcp" else udp_ports.get(p.key, 0)
        if p.mode == REJECT or (p.mode != "kernel" and not redirect):
            reject_elems.append(elem)
            continue
        svc_chain = f"svc-{p.uid}"
        service_elems.append(f"{elem} : goto {svc_chain}")
        proto = f"meta l4proto {p.protocol}"
        if p.mode == USERSPACE:
            # The userspace proxy balances (and keeps affinity) itself: one redirect for all slots.
            chains[svc_chain] = [f"{proto} redirect to :{redirect}"]
            continue
        rules: list[str] = []
        slot_chain: dict[str, str] = {}
        for s in p.slots:
            sid = p.slot_uid(s)
            ep_chain = f"ep-{sid}"
            slot_chain[endpoint_id(s.endpoint)] = ep_chain
            chains[ep_chain] = _slot_rules(p, s, sid, saddr, proto, redirect, marks)
            if p.affinity_s:
                aff = f"aff-{sid}"
                aff_sets.add(aff)
                body.append(
                    f"add set {t} {aff} {{ type {addr_type}; flags dynamic,timeout; "
                    f"timeout {p.affinity_s}s; size {MAX_AFFINITY_ENTRIES}; }}"
                )
                rules.append(f"{saddr} @{aff} goto {ep_chain}")
        targets = list(slot_chain.values())
        if len(targets) == 1:
            rules.append(f"goto {targets[0]}")
        elif p.lb.kind == CONSISTENT_HASH:
            ring = HashRing(list(slot_chain))
            owners = [slot_chain[m] for m in ring.bucket_owners(KERNEL_HASH_BUCKETS)]
            seed = int(p.uid[:8], 16)
            rules.append(f"jhash {saddr} mod {KERNEL_HASH_BUCKETS} seed {seed:#x} vmap {_vmap(owners)}")
        elif p.lb.kind == RANDOM:
            rules.append(f"numgen random mod {len(targets)} vmap {_vmap(targets)}")
        else:
            rules.append(f"numgen inc mod {len(targets)} vmap {_vmap(targets)}")
        chains[svc_chain] = rules

    for name in chains:
        if name not in BASE_CHAINS and name != "services":
            head.append(f"add chain {t} {name}")
    for name, rules in chains.items():
        body += [f"add rule {t} {name} {r}" for r in rules]
    if service_elems:
        body.append(f"add element {t} service-ips {{ {', '.join(service_elems)} }}")
    if reject_elems:
        body.append(f"add element {t} no-endpoints {{ {', '.join(reject_elems)} }}")
    tail: list[str] = []
    if existing is not None:
        tail += [f"delete chain {t} {c}" for c in sorted(existing.chains - set(chains))]
        stale_sets = {s for s in existing.sets if s.startswith("aff-")} - aff_sets
        tail += [f"delete set {t} {s}" for s in sorted(stale_sets)]
    return "\n".join(head + body + tail) + "\n"


def _slot_rules(
    p: PortPlan, s: Slot, sid: str, saddr: str, proto: str, redirect: int, marks: Marks
) -> list[str]:
    rules: list[str] = []
    if s.direct:
        if s.local:
            # A pod reaching its own service through itself: without SNAT the reply would bypass us.
            rules.append(f"{saddr} {s.endpoint.ip} meta mark set meta mark | {marks.masq:#x}")
        else:
            # Forwarded (pod/client) traffic to another node: that node has no route back to our pods.
            rules.append(f"fib saddr type != local meta mark set meta mark | {marks.masq:#x}")
        rules.append(f"ct mark set ct mark | {marks.conn:#x} counter name kernel-conns")
    if p.affinity_s:
        rules.append(f"update @aff-{sid} {{ {saddr} }}")
    if s.direct:
        rules.append(f"{proto} dnat to {_addr(p.family, s.endpoint.ip)}:{s.endpoint.port}")
    else:
        rules.append(f"{proto} redirect to :{redirect}")
    return rules


def render_delete(family: int) -> str:
    t = f"{family_kw(family)} {TABLE}"
    # `add` first so the delete cannot fail on a missing table; both in one transaction.
    return f"add table {t}\ndelete table {t}\n"
