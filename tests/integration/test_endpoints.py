"""A real API server running the endpoints and endpointslice controllers: a Service's Endpoints and
EndpointSlices follow its pods' IPs and readiness (which the test sets, as no kubelet runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from kubeedge.kube import ENDPOINTS, ENDPOINTSLICES, NAMESPACES, PODS, SERVICES, KubeClient, KubeConfig
from kubeedge.kube.errors import NotFound
from tests.apiserver_proc import ApiServerProc
from tests.cluster import register_node, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

Obj = dict[str, Any]
SLICE_SELECTOR = "kubernetes.io/service-name={}"
ZONE = "topology.kubernetes.io/zone"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProc]:
    srv = ApiServerProc(
        tmp_path_factory.mktemp("endpoints"), extra_args=["--controllers", "endpoints,endpointslice"]
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kc(server: ApiServerProc) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.from_file(str(server.kubeconfig))) as client:
        await register_node(client, "edge-a", labels={ZONE: "zone-1"})
        await register_node(client, "edge-b")
        yield client


async def namespace(kc: KubeClient, name: str) -> str:
    await kc.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def service(name: str, **spec: Any) -> Obj:
    base: Obj = {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
    base.update(spec)
    return {"metadata": {"name": name}, "spec": base}


async def make_pod(
    kc: KubeClient, ns: str, name: str, app: str, node: str, ip: str, *, ready: bool, port: int = 8080
) -> Obj:
    body = {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "busybox", "ports": [{"name": "web", "containerPort": port}]}
            ],
        },
    }
    await kc.create(PODS, body, namespace=ns)
    return await set_status(kc, ns, name, ip, ready)


async def set_status(kc: KubeClient, ns: str, name: str, ip: str, ready: bool) -> Obj:
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return await kc.patch(PODS, name, {"status": status}, namespace=ns, subresource="status")


async def endpoints_of(kc: KubeClient, ns: str, name: str) -> Obj | None:
    try:
        return await kc.get(ENDPOINTS, name, ns)
    except NotFound:
        return None


async def slice_endpoints(kc: KubeClient, ns: str, svc: str) -> dict[str, Obj]:
    """Every endpoint in the service's slices, by pod name."""
    slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format(svc))
    return {e["targetRef"]["name"]: e for s in slices for e in s.get("endpoints") or ()}


def addresses(ep: Obj | None, field: str = "addresses") -> dict[str, Obj]:
    return {a["ip"]: a for s in (ep or {}).get("subsets") or () for a in s.get(field) or ()}


async def test_endpoints_and_slices_follow_pod_readiness(kc: KubeClient) -> None:
    ns = await namespace(kc, "shop")
    await kc.create(SERVICES, service("web"), namespace=ns)
    await make_pod(kc, ns, "web-1", "web", "edge-a", "10.244.1.5", ready=True)
    await make_pod(kc, ns, "web-2", "web", "edge-b", "10.244.2.5", ready=False)
    await make_pod(kc, ns, "other", "db", "edge-a", "10.244.1.9", ready=True)

    async def split() -> Obj | None:
        ep = await endpoints_of(kc, ns, "web")
        ok = set(addresses(ep)) == {"10.244.1.5"} and set(addresses(ep, "notReadyAddresses")) == {
            "10.244.2.5"
        }
        return ep if ok else None

    ep = await wait_for(split, deadline_s=15, what="Endpoints with one ready and one not-ready address")
    assert ep is not None
    ready = addresses(ep)["10.244.1.5"]
    assert ready["nodeName"] == "edge-a" and ready["targetRef"]["name"] == "web-1"
    assert addresses(ep, "notReadyAddresses")["10.244.2.5"]["nodeName"] == "edge-b"
    assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert "endpoints.kubernetes.io/last-change-trigger-time" in ep["metadata"]["annotations"]

    async def slices_split() -> dict[str, Obj] | None:
        eps = await slice_endpoints(kc, ns, "web")
        if set(eps) != {"web-1", "web-2"} or eps["web-2"]["conditions"]["ready"] is not False:
            return None
        return eps

    eps = await wait_for(slices_split, deadline_s=15, what="EndpointSlice with web-1 ready and web-2 not")
    assert eps is not None
    assert eps["web-1"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["web-1"]["nodeName"] == "edge-a" and eps["web-1"]["zone"] == "zone-1"
    assert eps["web-2"]["nodeName"] == "edge-b" and "zone" not in eps["web-2"]
    slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("web"))
    assert len(slices) == 1
    s = slices[0]
    svc = await kc.get(SERVICES, "web", ns)
    assert s["addressType"] == "IPv4" and s["metadata"]["name"].startswith("web-")
    assert (
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    )
    assert s["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]

    # web-2 turns ready: both addresses ready, in the same slice (updated, not replaced).
    await set_status(kc, ns, "web-2", "10.244.2.5", True)
    await wait_for(
        lambda: _ready_ips(kc, ns, "web", {"10.244.1.5", "10.244.2.5"}), deadline_s=15, what="both ready"
    )
    eps = await wait_for(
        lambda: _slice_ready(kc, ns, "web", {"web-1": True, "web-2": True}), deadline_s=15, what="slice ready"
    )
    slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("web"))
    assert [x["metadata"]["name"] for x in slices] == [s["metadata"]["name"]]

    # web-1 is deleted gracefully: it leaves Endpoints at once, stays in the slice as terminating...
    await kc.delete(PODS, "web-1", ns)
    await wait_for(lambda: _ready_ips(kc, ns, "web", {"10.244.2.5"}), deadline_s=15, what="web-1 gone")

    async def terminating() -> bool:
        e = (await slice_endpoints(kc, ns, "web")).get("web-1")
        return e is not None and e["conditions"] == {"ready": False, "serving": True, "terminating": True}

    await wait_for(terminating, deadline_s=15, what="web-1 terminating in the slice")
    # ... and leaves the slice when it is finally gone.
    await kc.delete(PODS, "web-1", ns, grace_period_seconds=0)
    await wait_for(lambda: _slice_ready(kc, ns, "web", {"web-2": True}), deadline_s=15, what="web-1 out")


async def _ready_ips(kc: KubeClient, ns: str, name: str, want: set[str]) -> bool:
    ep = await endpoints_of(kc, ns, name)
    return set(addresses(ep)) == want and not addresses(ep, "notReadyAddresses")


async def _slice_ready(kc: KubeClient, ns: str, name: str, want: dict[str, bool]) -> dict[str, Obj] | None:
    eps = await slice_endpoints(kc, ns, name)
    got = {k: e["conditions"]["ready"] for k, e in eps.items()}
    return eps if got == want else None


async def test_named_ports_publish_not_ready_and_headless(kc: KubeClient) -> None:
    ns = await namespace(kc, "ports")
    await kc.create(SERVICES, service("api", publishNotReadyAddresses=True), namespace=ns)
    await kc.create(
        SERVICES, service("api-headless", clusterIP="None", selector={"app": "api"}), namespace=ns
    )
    await make_pod(kc, ns, "api-1", "api", "edge-a", "10.244.3.1", ready=False, port=8080)
    await make_pod(kc, ns, "api-2", "api", "edge-b", "10.244.3.2", ready=True, port=9090)

    async def two_subsets() -> Obj | None:
        ep = await endpoints_of(kc, ns, "api")
        subsets = (ep or {}).get("subsets") or []
        got = {s["ports"][0]["port"]: [a["ip"] for a in s.get("addresses") or ()] for s in subsets}
        return ep if got == {8080: ["10.244.3.1"], 9090: ["10.244.3.2"]} else None

    # The named port resolves differently per pod, so each gets its own subset; publishing
    # not-ready addresses puts the unready api-1 among the addresses too.
    await wait_for(two_subsets, deadline_s=15, what="two subsets, one per resolved port")

    async def headless() -> Obj | None:
        ep = await endpoints_of(kc, ns, "api-headless")
        ok = set(addresses(ep)) == {"10.244.3.2"} and set(addresses(ep, "notReadyAddresses")) == {
            "10.244.3.1"
        }
        return ep if ok else None

    ep = await wait_for(headless, deadline_s=15, what="headless service endpoints")
    assert ep is not None
    assert ep["metadata"]["labels"]["service.kubernetes.io/headless"] == ""

    async def two_slices() -> list[Obj] | None:
        slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("api"))
        ports = sorted(x["ports"][0]["port"] for x in slices if x.get("endpoints"))
        return slices if ports == [8080, 9090] and len(slices) == 2 else None

    slices = await wait_for(two_slices, deadline_s=15, what="one slice per resolved port")
    assert slices is not None
    for x in slices:
        assert all(e["conditions"]["ready"] for e in x["endpoints"])  # publishNotReadyAddresses


async def test_selectorless_services_are_left_alone_and_deleted_services_cleaned_up(kc: KubeClient) -> None:
    ns = await namespace(kc, "cleanup")
    manual_eps = {
        "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.50"}], "ports": [{"port": 5432}]}],
    }
    await kc.create(
        SERVICES, {"metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}}, namespace=ns
    )
    await kc.create(ENDPOINTS, manual_eps, namespace=ns)
    await kc.create(SERVICES, service("gone"), namespace=ns)
    await make_pod(kc, ns, "gone-1", "gone", "edge-a", "10.244.4.1", ready=True)
    await wait_for(
        lambda: _ready_ips(kc, ns, "gone", {"10.244.4.1"}), deadline_s=15, what="endpoints of gone"
    )
    await wait_for(
        lambda: _slice_ready(kc, ns, "gone", {"gone-1": True}), deadline_s=15, what="slice of gone"
    )

    await kc.delete(SERVICES, "gone", ns)

    async def cleaned() -> bool:
        slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("gone"))
        return not slices and await endpoints_of(kc, ns, "gone") is None

    await wait_for(cleaned, deadline_s=15, what="Endpoints and slices of the deleted service removed")
    # The controllers processed this namespace after the selector-less service was made, and left
    # its hand-written Endpoints as they were (and made no slices for it).
    ep = await endpoints_of(kc, ns, "external")
    assert ep is not None and set(addresses(ep)) == {"192.0.2.50"}
    slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("external"))
    assert slices == []


async def test_slices_hold_at_most_100_endpoints_and_pods_without_ip_are_skipped(kc: KubeClient) -> None:
    ns = await namespace(kc, "big")
    await kc.create(SERVICES, service("big", ports=[{"port": 80, "targetPort": 8080}]), namespace=ns)
    n = 130

    async def one(i: int) -> None:
        await make_pod(kc, ns, f"big-{i}", "big", "edge-a", f"10.245.{i // 200}.{i % 200 + 1}", ready=True)

    await asyncio.gather(*(one(i) for i in range(n)))
    await kc.create(
        PODS,
        {
            "metadata": {"name": "no-ip", "labels": {"app": "big"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        },
        namespace=ns,
    )

    async def packed() -> list[Obj] | None:
        slices, _ = await kc.list(ENDPOINTSLICES, ns, label_selector=SLICE_SELECTOR.format("big"))
        sizes = sorted(len(x.get("endpoints") or ()) for x in slices)
        return slices if sum(sizes) == n else None

    slices = await wait_for(packed, deadline_s=30, what=f"{n} endpoints in slices")
    assert slices is not None
    assert all(len(x["endpoints"]) <= 100 for x in slices) and len(slices) == 2
    names = {e["targetRef"]["name"] for x in slices for e in x["endpoints"]}
    assert len(names) == n and "no-ip" not in names
    ep = await wait_for(lambda: _ready_count(kc, ns, "big", n), deadline_s=30, what=f"{n} ready addresses")
    assert ep is not None


async def _ready_count(kc: KubeClient, ns: str, name: str, n: int) -> Obj | None:
    ep = await endpoints_of(kc, ns, name)
    return ep if len(addresses(ep)) == n else None
