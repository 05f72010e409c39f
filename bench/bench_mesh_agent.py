"""EdgeMesh agent memory with many services: RSS of one agent (`python -m edgemesh`) idle and with
N Services (default 1,000), each with one port and an EndpointSlice of 2 endpoints on this node (so
every one gets kernel DNAT rules, a DNS name and a served-endpoint entry).

Runs in a network namespace it creates (deleted at the end): an API server (`kubeedge.apiserver`,
controllers off) and the agent in cloud mode against it, with DNS on its interface, the nftables
proxy and the tunnel (node certificate from the API's CA). Figures: RSS (VmRSS) after the first sync
with no services, RSS and peak (VmHWM) with N, the time from the first create to the agent having
all N in its table and its rules, and a DNS answer for the last service as a check.
Needs root. Prints a block and, last, a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
API_PORT = 16443
METRICS_PORT = 10551
NODE = "bench-node"

# Runs inside the namespace: creates N services + slices through the API, `conc` at a time.
CREATE = r"""
import asyncio, sys
from kubeedge.kube import ENDPOINTSLICES, SERVICES, KubeClient, KubeConfig
kubeconfig, n, node, conc = sys.argv[1], int(sys.argv[2]), sys.argv[3], 32
async def one(kc, i):
    await kc.create(SERVICES, {"metadata": {"name": f"svc-{i}", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}, "default")
    eps = [{"addresses": [f"10.200.{i // 250}.{i % 250 + 1}"], "nodeName": node},
           {"addresses": [f"10.201.{i // 250}.{i % 250 + 1}"], "nodeName": node}]
    await kc.create(ENDPOINTSLICES, {"metadata": {"name": f"svc-{i}-1", "namespace": "default",
        "labels": {"kubernetes.io/service-name": f"svc-{i}"}}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}, "default")
async def main():
    async with KubeClient(KubeConfig.from_file(kubeconfig)) as kc:
        sem = asyncio.Semaphore(conc)
        async def guarded(i):
            async with sem:
                await one(kc, i)
        await asyncio.gather(*(guarded(i) for i in range(n)))
asyncio.run(main())
"""

# Runs inside the namespace: one GET to the agent's loopback metrics port.
GET = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""

DIG = r"""
import socket, sys
from dnslib import DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(DNSRecord.question(sys.argv[1], "A").pack(), ("169.254.96.16", 53))
r = DNSRecord.parse(s.recv(4096)); print(" ".join(str(a.rdata) for a in r.rr))
"""


def sh(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()[-2000:]}")
    return r


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def agent_pid(wrapper: subprocess.Popen[bytes]) -> int:
    """`ip netns exec` execs the command, so the child's pid is the agent's."""
    return wrapper.pid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespace, nftables)")
    ns = f"bma{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix="bench-mesh-agent-"))
    procs: list[subprocess.Popen[bytes]] = []

    def x(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, **kw)

    def status() -> dict[str, Any]:
        out = x(PY, "-c", GET, f"http://127.0.0.1:{METRICS_PORT}/status", check=False)
        return dict(json.loads(out.stdout)) if out.returncode == 0 and out.stdout.strip() else {}

    def until(what: str, check: Any, within: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if check():
                return time.monotonic() - t0
            time.sleep(0.1)  # polling a condition with a deadline
        raise TimeoutError(f"{what} not within {within}s; logs in {base}")

    try:
        sh("ip", "netns", "add", ns)
        x("ip", "link", "set", "lo", "up")
        api_dir = base / "api"
        api_dir.mkdir()
        with (base / "api.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, PY, "-m", "kubeedge.apiserver", "--data-dir", str(api_dir),
                     "--listen", f"127.0.0.1:{API_PORT}", "--controllers", "none"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                )
            )  # fmt: skip
        kubeconfig = api_dir / "admin.kubeconfig"
        until("the API server", lambda: kubeconfig.exists(), 60)
        sys.path.insert(0, str(ROOT))
        from kubeedge.pki import certs

        ca = certs.KeyPair.load(api_dir / "pki" / "ca.crt", api_dir / "pki" / "ca.key")
        edge = base / "edge"
        (edge / "certs").mkdir(parents=True)
        (edge / "ca").mkdir()
        certs.issue(ca, f"system:node:{NODE}", organizations=["system:nodes"], client=True).save(
            edge / "certs" / "server.crt", edge / "certs" / "server.key"
        )
        (edge / "ca" / "rootCA.crt").write_bytes(ca.cert_pem)
        cfg = base / "agent.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "kubeAPIConfig": {"kubeConfig": str(kubeconfig)},
                    "commonConfig": {
                        "nodeName": NODE,
                        "mode": "CloudMode",
                        "edgecoreDataDir": str(edge),
                        "metricsPort": METRICS_PORT,
                    },
                    "modules": {"edgeDNS": {"upstreamServers": ["127.0.0.1:5399"]}},
                }
            )
        )
        with (base / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                ["ip", "netns", "exec", ns, PY, "-m", "edgemesh", "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        procs.append(agent)
        until("the agent's first sync", lambda: status().get("source", {}).get("synced"), 60)
        time.sleep(1.0)  # let start-up garbage settle before reading the idle figure (a measurement)
        idle_rss, _ = rss_kib(agent_pid(agent))
        base_services = status()["services"]

        t0 = time.monotonic()
        x(PY, "-c", CREATE, str(kubeconfig), str(a.services), NODE, timeout=900)
        created = time.monotonic() - t0

        def all_in() -> bool:
            st = status()
            return bool(
                st.get("services", 0) >= base_services + a.services
                and st.get("proxy", {}).get("ports_kernel", 0) >= a.services
            )

        until(f"{a.services} services in the agent's table and rules", all_in, 300)
        converged = time.monotonic() - t0
        time.sleep(2.0)  # a resync interval's worth of quiet before the steady-state figure
        rss, hwm = rss_kib(agent_pid(agent))
        answer = x(PY, "-c", DIG, f"svc-{a.services - 1}.default.svc.cluster.local").stdout.strip()
        st = status()
        rules = x("nft", "list", "table", "ip", "edgemesh").stdout.count("\n")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        sh("ip", "netns", "del", ns, check=False)

    out = {
        "services": a.services,
        "agent_rss_idle_mib": round(idle_rss / 1024, 1),
        "agent_rss_mib": round(rss / 1024, 1),
        "agent_rss_peak_mib": round(hwm / 1024, 1),
        "per_service_kib": round((rss - idle_rss) / a.services, 2),
        "create_s": round(created, 2),
        "converged_s": round(converged, 2),
        "nft_lines": rules,
        "proxy_syncs": st["proxy"]["syncs"],
    }
    print(
        f"EdgeMesh agent with {a.services} services (each 1 port, 2 endpoints on this node; nftables proxy)"
    )
    print(f"  RSS idle (0 services)     {out['agent_rss_idle_mib']:8.1f} MiB")
    print(
        f"  RSS with {a.services:<5} services {out['agent_rss_mib']:8.1f} MiB  (peak {out['agent_rss_peak_mib']} MiB)"
    )
    print(f"  per service               {out['per_service_kib']:8.2f} KiB")
    print(
        f"  API creates took          {created:8.2f} s; agent converged (table + rules) at {converged:.2f} s"
    )
    print(
        f"  nft table lines {rules}, proxy syncs {st['proxy']['syncs']}, DNS svc-{a.services - 1} -> {answer}"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
