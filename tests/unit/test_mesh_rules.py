"""Proxy plan and rule rendering: which path each service port takes, and rules the kernel accepts."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from edgemesh.model import SKIP_LABEL, ServiceTable
from edgemesh.proxy import iptables as ipt
from edgemesh.proxy import nft
from edgemesh.proxy.plan import KERNEL, MIXED, REJECT, USERSPACE, build_plan
from edgemesh.proxy.reach import parse_batch_output, route_is_direct


def svc(name: str, ip: str, ports: list[tuple[str, int, str, int]], **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default"}
    md.update(extra.pop("metadata", {}))
    spec: dict[str, Any] = {
        "clusterIP": ip,
        "ports": [{"name": n, "port": p, "protocol": proto, "targetPort": t} for n, p, proto, t in ports],
    }
    spec.update(extra)
    return {"metadata": md, "spec": spec}


def eslice(
    name: str, service: str, eps: list[tuple[str, str]], ports: list[tuple[str, int, str]]
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [
            {"addresses": [ip], "nodeName": node, "conditions": {"ready": True}} for ip, node in eps
        ],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def table() -> ServiceTable:
    t = ServiceTable()
    t.upsert_service(svc("web", "10.96.0.10", [("http", 80, "TCP", 8080), ("dns", 53, "UDP", 5353)]))
    t.upsert_slice(
        "default",
        "web-1",
        eslice(
            "web-1",
            "web",
            [("10.1.0.2", "a"), ("10.1.0.3", "b")],
            [("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        ),
    )
    t.upsert_service(svc("far", "10.96.0.11", [("", 80, "TCP", 80)]))
    t.upsert_slice("default", "far-1", eslice("far-1", "far", [("10.9.0.2", "z")], [("", 80, "TCP")]))
    t.upsert_service(
        svc(
            "mix",
            "10.96.0.12",
            [("", 80, "TCP", 80)],
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}},
        )
    )
    t.upsert_slice(
        "default", "mix-1", eslice("mix-1", "mix", [("10.1.0.2", "a"), ("10.9.0.2", "z")], [("", 80, "TCP")])
    )
    t.upsert_service(
        svc(
            "hdr",
            "10.96.0.13",
            [("", 80, "TCP", 80)],
            metadata={"annotations": {"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:header=X-U"}},
        )
    )
    t.upsert_slice("default", "hdr-1", eslice("hdr-1", "hdr", [("10.1.0.2", "a")], [("", 80, "TCP")]))
    t.upsert_service(
        svc(
            "src",
            "10.96.0.14",
            [("", 80, "TCP", 80)],
            metadata={"annotations": {"edgemesh.kubeedge.io/lb-policy": "CONSISTENT_HASH:source-ip"}},
        )
    )
    t.upsert_slice(
        "default", "src-1", eslice("src-1", "src", [("10.1.0.2", "a"), ("10.1.0.3", "a")], [("", 80, "TCP")])
    )
    t.upsert_service(svc("empty", "10.96.0.15", [("", 80, "TCP", 80)]))
    t.upsert_service(
        svc("skipped", "10.96.0.16", [("", 80, "TCP", 80)], metadata={"labels": {SKIP_LABEL: "x"}})
    )
    t.upsert_service(svc("headless", "None", [("", 80, "TCP", 80)]))
    return t


def direct(ip: str, node: str) -> bool:
    return node == "a" or ip.startswith("10.1.")


def modes(kernel_hash: bool = True) -> dict[str, str]:
    plan = build_plan(table(), direct, "a", kernel_hash)
    return {f"{p.service.name}/{p.protocol}": p.mode for p in plan.ports}


def test_plan_paths() -> None:
    assert modes() == {
        "empty/tcp": REJECT,
        "far/tcp": USERSPACE,
        "hdr/tcp": USERSPACE,
        "mix/tcp": MIXED,
        "src/tcp": KERNEL,
        "web/tcp": KERNEL,
        "web/udp": KERNEL,
    }
    assert modes(kernel_hash=False)["src/tcp"] == USERSPACE  # iptables cannot hash to chains


def test_plan_resolves_target_ports_and_affinity() -> None:
    plan = build_plan(table(), direct, "a")
    web = {p.protocol: p for p in plan.ports if p.service.name == "web"}
    assert [(s.endpoint.ip, s.endpoint.port, s.local) for s in web["udp"].slots] == [
        ("10.1.0.2", 5353, True),
        ("10.1.0.3", 5353, False),
    ]
    mix = next(p for p in plan.ports if p.service.name == "mix")
    assert mix.affinity_s == 30 and [s.direct for s in mix.slots] == [True, False]
    hdr = next(p for p in plan.ports if p.service.name == "hdr")
    assert [s.reachable for s in hdr.slots] == [True]  # userspace, but dialled without the tunnel


def test_route_parsing() -> None:
    out = (
        '[{"dst":"10.1.0.2","dev":"br0","prefsrc":"10.1.0.1","flags":[],"uid":0,"cache":[]}]\n'
        '[{"dst":"8.8.8.8","gateway":"192.0.2.1","dev":"eth0","flags":[],"uid":0,"cache":[]}]\n'
        '[{"type":"local","dst":"127.0.0.1","dev":"lo","flags":[],"uid":0,"cache":["local"]}]\n'
        "garbage\n"
    )
    assert parse_batch_output(out) == {"10.1.0.2": True, "8.8.8.8": False, "127.0.0.1": True}
    assert not route_is_direct({"dst": "1.2.3.4", "type": "unreachable", "dev": "lo"})


def _render_nft(existing: nft.Existing | None = None) -> str:
    plan = build_plan(table(), direct, "a")
    udp = {p.key: 40001 for p in plan.ports if p.protocol == "udp"}
    return nft.render(4, plan.family(4), existing, 40000, udp)


def test_nft_render_shape() -> None:
    text = _render_nft()
    assert "numgen inc mod 2" in text  # web: round robin over two direct endpoints
    assert "jhash ip saddr mod 128" in text  # src: hashed in the kernel
    assert "10.96.0.15 . tcp . 80" in text.split("no-endpoints {", 2)[-1]  # empty: rejected
    assert "redirect to :40000" in text and "dnat to 10.1.0.3:5353" in text
    assert "flags dynamic,timeout; timeout 30s" in text  # mix: affinity set per slot
    assert "10.96.0.16" not in text  # skip label honoured
    stale = nft.Existing(
        chains={"services", "svc-deadbeef0000"},
        sets={"aff-deadbeef0000", "no-endpoints"},
        maps={"service-ips"},
    )
    inc = _render_nft(stale)
    assert "flush chain ip edgemesh svc-deadbeef0000" in inc
    assert inc.rstrip().endswith("delete set ip edgemesh aff-deadbeef0000")
    assert (
        "delete chain ip edgemesh svc-deadbeef0000" in inc and "delete chain ip edgemesh services" not in inc
    )


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_nft_accepts_render() -> None:
    # -c: the kernel checks the whole transaction and commits nothing.
    r = subprocess.run(["nft", "-c", "-f", "-"], input=_render_nft(), text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


def test_iptables_render_shape() -> None:
    plan = build_plan(table(), direct, "a", kernel_source_hash=False)
    text = ipt.render(4, plan.family(4), {"EDGEMESH-SVC-deadbeef0000", ipt.KCONNS}, set(), 40000, {})
    assert "--mode nth --every 2 --packet 0" in text
    assert "-m recent --name EDGEMESH-EP-" in text and "--rcheck --seconds 30 --reap" in text
    assert "-X EDGEMESH-SVC-deadbeef0000" in text
    assert f":{ipt.KCONNS} " not in text  # counters chain exists: not redeclared (keeps its counts)
    assert f":{ipt.KBYTES} - [0:0]" in text  # missing: created
    assert all(len(c) <= 28 for c in ipt.parse_chains(text.replace("\n:", "\n:")))
    # The UDP port of web has no userspace port but is kernel-only, so it is DNATed, not rejected.
    assert "-d 10.96.0.10/32 -p udp -m udp --dport 53 -j EDGEMESH-SVC-" in text
    assert "-d 10.96.0.15/32 -p tcp -m tcp --dport 80 -j REJECT" in text
