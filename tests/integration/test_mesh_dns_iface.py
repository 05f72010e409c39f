"""The DNS interface helper and the server on KubeEdge's default address, inside a network
namespace this test creates (the host's interfaces are never touched)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from edgemesh.dns import iface

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for a network namespace"
)

DNS_IP = "169.254.96.16"
DEADLINE = 20.0

SERVER = """
import asyncio
from edgemesh.dns import ClusterZone, DNSServer, Forwarder
from edgemesh.dns.resolvconf import Upstreams
from edgemesh.model import ServiceTable

async def main():
    t = ServiceTable()
    t.upsert_service({"metadata": {"namespace": "default", "name": "web"}, "spec": {"clusterIP": "10.96.0.10"}})
    t.synced = True
    srv = DNSServer(ClusterZone(t), Forwarder(Upstreams(servers=[])), "@DNS_IP@", 53)
    await srv.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
""".replace("@DNS_IP@", DNS_IP)

CLIENT = """
from dnslib import DNSRecord
r = DNSRecord.parse(DNSRecord.question("web.default.svc.cluster.local").send("@DNS_IP@", 53, timeout=5))
print(" ".join(str(x.rdata) for x in r.rr))
r = DNSRecord.parse(DNSRecord.question("web.default.svc.cluster.local").send("@DNS_IP@", 53, tcp=True, timeout=5))
print(" ".join(str(x.rdata) for x in r.rr))
""".replace("@DNS_IP@", DNS_IP)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"emdns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_interface_is_idempotent_and_serves_dns(netns: str) -> None:
    assert await iface.addresses("edgemesh0", netns) is None
    assert await iface.ensure("edgemesh0", DNS_IP, netns) is True
    assert await iface.ensure("edgemesh0", DNS_IP, netns) is False  # second time: nothing to do
    assert DNS_IP in (await iface.addresses("edgemesh0", netns) or [])

    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, sys.executable, "-c", SERVER, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), DEADLINE)
        assert line.strip() == b"ready"
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(client.communicate(), DEADLINE)
        assert out.decode().split("\n")[:2] == ["10.96.0.10", "10.96.0.10"]  # UDP, then TCP
    finally:
        server.kill()
        await server.wait()

    assert await iface.remove("edgemesh0", netns) is True
    assert await iface.remove("edgemesh0", netns) is False
    assert await iface.addresses("edgemesh0", netns) is None
