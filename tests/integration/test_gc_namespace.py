"""Garbage collector and namespace controller against a real API server running only them."""

from __future__ import annotations

import uuid
from typing import Any

from kubeedge.kube import CONFIGMAPS, CRDS, NAMESPACES, PODS, SECRETS, KubeClient, Res
from kubeedge.kube.errors import NotFound
from tests.apiserver_proc import ApiServerProc
from tests.cluster import wait_for

Obj = dict[str, Any]
DEVICES = Res("devices.kubeedge.io", "v1beta1", "devices", True, "Device")
HOLD = "test.kubeedge.io/hold"


# Only these controllers run (see tests/conftest.py: `server`, `kc` and `ns` come from there).
APISERVER_CONTROLLERS = "garbagecollector,namespace"


def ref(owner: Obj, *, block: bool = False, controller: bool = False) -> Obj:
    r: Obj = {
        "apiVersion": owner.get("apiVersion", "v1"),
        "kind": owner.get("kind", "ConfigMap"),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    if block:
        r["blockOwnerDeletion"] = True
    if controller:
        r["controller"] = True
    return r


async def cm(kc: KubeClient, ns: str, name: str, owners: list[Obj] | None = None, **md: Any) -> Obj:
    meta: Obj = {"name": name, **md}
    if owners:
        meta["ownerReferences"] = owners
    return await kc.create(CONFIGMAPS, {"metadata": meta, "data": {"k": name}}, namespace=ns)


async def get_or_none(kc: KubeClient, res: Res, name: str, ns: str | None = None) -> Obj | None:
    try:
        return await kc.get(res, name, ns)
    except NotFound:
        return None


async def gone(kc: KubeClient, res: Res, name: str, ns: str | None = None) -> None:
    async def check() -> bool:
        return await get_or_none(kc, res, name, ns) is None

    await wait_for(check, deadline_s=15, what=f"{res.plural} {ns}/{name} to be deleted")


def owner_uids(obj: Obj) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or ()]


# ---- garbage collector ---------------------------------------------------------------------------


async def test_background_deletes_dependents_whose_owners_are_all_gone(kc: KubeClient, ns: str) -> None:
    owner = await cm(kc, ns, "owner")
    other = await cm(kc, ns, "other-owner")
    only = await cm(kc, ns, "only", [ref(owner, controller=True)])
    shared = await cm(kc, ns, "shared", [ref(owner), ref(other)])
    grandchild = await cm(kc, ns, "grandchild", [ref(only)])
    await kc.delete(CONFIGMAPS, "owner", ns)
    await gone(kc, CONFIGMAPS, "only", ns)
    await gone(kc, CONFIGMAPS, "grandchild", ns)  # the cascade continues down the graph

    async def shared_lost_ref() -> Obj | None:
        obj = await kc.get(CONFIGMAPS, "shared", ns)
        return obj if owner_uids(obj) == [other["metadata"]["uid"]] else None

    # A dependent with another live owner stays, and only loses the reference to the gone owner.
    kept = await wait_for(shared_lost_ref, deadline_s=15, what="shared to drop the gone owner")
    assert kept is not None
    assert kept["metadata"]["uid"] == shared["metadata"]["uid"]
    assert grandchild["metadata"]["uid"] != kept["metadata"]["uid"]


async def test_dangling_owner_confirmed_absent(kc: KubeClient, ns: str) -> None:
    live = await cm(kc, ns, "live")
    never = {"apiVersion": "v1", "kind": "ConfigMap", "name": "never-existed", "uid": str(uuid.uuid4())}
    wrong_uid = {**ref(live), "uid": str(uuid.uuid4())}
    await cm(kc, ns, "orphaned-a", [never])
    await cm(kc, ns, "orphaned-b", [wrong_uid])
    keep = await cm(kc, ns, "keep", [ref(live)])
    await gone(kc, CONFIGMAPS, "orphaned-a", ns)
    await gone(kc, CONFIGMAPS, "orphaned-b", ns)
    # The live owner (same name as b's reference, other uid) and its real dependent are untouched.
    assert (await kc.get(CONFIGMAPS, "live", ns))["metadata"]["uid"] == live["metadata"]["uid"]
    assert owner_uids(await kc.get(CONFIGMAPS, "keep", ns)) == owner_uids(keep)


async def test_foreground_waits_for_blocking_dependents(kc: KubeClient, ns: str) -> None:
    owner = await cm(kc, ns, "fg-owner")
    await cm(kc, ns, "held", [ref(owner, block=True)], finalizers=[HOLD])
    await cm(kc, ns, "plain", [ref(owner, block=True)])
    await cm(kc, ns, "nonblocking", [ref(owner)])
    await kc.delete(CONFIGMAPS, "fg-owner", ns, propagation_policy="Foreground")
    await gone(kc, CONFIGMAPS, "plain", ns)
    await gone(kc, CONFIGMAPS, "nonblocking", ns)

    async def held_deleting() -> Obj | None:
        obj = await kc.get(CONFIGMAPS, "held", ns)
        return obj if obj["metadata"].get("deletionTimestamp") else None

    await wait_for(held_deleting, deadline_s=15, what="the held dependent to be deleting")
    # The owner waits for its blocking dependent: still there, marked as deleting its dependents.
    cur = await kc.get(CONFIGMAPS, "fg-owner", ns)
    assert cur["metadata"]["deletionTimestamp"]
    assert cur["metadata"]["finalizers"] == ["foregroundDeletion"]
    await kc.patch(CONFIGMAPS, "held", {"metadata": {"finalizers": None}}, ns)
    await gone(kc, CONFIGMAPS, "held", ns)
    await gone(kc, CONFIGMAPS, "fg-owner", ns)


async def test_foreground_without_dependents_completes(kc: KubeClient, ns: str) -> None:
    await cm(kc, ns, "lonely")
    await kc.delete(CONFIGMAPS, "lonely", ns, propagation_policy="Foreground")
    await gone(kc, CONFIGMAPS, "lonely", ns)


async def test_orphan_keeps_dependents_without_the_reference(kc: KubeClient, ns: str) -> None:
    owner = await cm(kc, ns, "orph-owner")
    other = await cm(kc, ns, "orph-other")
    a = await cm(kc, ns, "orph-a", [ref(owner, block=True)])
    b = await cm(kc, ns, "orph-b", [ref(owner), ref(other)])
    await kc.delete(CONFIGMAPS, "orph-owner", ns, propagation_policy="Orphan")
    await gone(kc, CONFIGMAPS, "orph-owner", ns)
    got_a = await kc.get(CONFIGMAPS, "orph-a", ns)
    got_b = await kc.get(CONFIGMAPS, "orph-b", ns)
    assert got_a["metadata"]["uid"] == a["metadata"]["uid"]
    assert not got_a["metadata"].get("ownerReferences")
    assert got_b["metadata"]["uid"] == b["metadata"]["uid"]
    assert owner_uids(got_b) == [other["metadata"]["uid"]]


def device(name: str, ns: str) -> Obj:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": "edge-1"},
    }


async def test_custom_resources_as_owners(kc: KubeClient, ns: str) -> None:
    dev = await kc.create(DEVICES, device("dev", ns), namespace=ns)
    await cm(kc, ns, "dev-config", [ref(dev)])
    await kc.delete(DEVICES, "dev", ns)
    await gone(kc, CONFIGMAPS, "dev-config", ns)


async def test_crd_created_later_is_watched(kc: KubeClient, ns: str) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.test.kubeedge.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    await kc.create(CRDS, crd)
    widgets = Res(group, "v1", "widgets", True, "Widget")

    async def served() -> Obj | None:
        try:
            return await kc.create(widgets, {"metadata": {"name": "w"}, "spec": {"x": 1}}, namespace=ns)
        except NotFound:
            return None

    w = await wait_for(served, deadline_s=10, what="the Widget CRD to be served")
    assert w is not None
    # A widget owning a configmap, and a configmap owning a widget: both directions are collected.
    owner = await cm(kc, ns, "widget-owner")
    await kc.create(widgets, {"metadata": {"name": "w2", "ownerReferences": [ref(owner)]}}, namespace=ns)
    await cm(kc, ns, "widget-dep", [ref(w)])
    await kc.delete(widgets, "w", ns)
    await gone(kc, CONFIGMAPS, "widget-dep", ns)
    await kc.delete(CONFIGMAPS, "widget-owner", ns)
    await gone(kc, widgets, "w2", ns)
    await kc.delete(CRDS, f"widgets.{group}")


# ---- namespace controller ----------------------------------------------------------------------


def pod(name: str, node: str = "") -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
        spec["terminationGracePeriodSeconds"] = 30
    return {"metadata": {"name": name}, "spec": spec}


async def test_namespace_deletion_removes_everything(kc: KubeClient, ns: str) -> None:
    await cm(kc, ns, "c1")
    await cm(kc, ns, "c2", finalizers=[HOLD])
    await kc.create(SECRETS, {"metadata": {"name": "s"}, "stringData": {"a": "b"}}, namespace=ns)
    await kc.create(PODS, pod("p"), namespace=ns)
    await kc.create(DEVICES, device("d", ns), namespace=ns)
    await kc.delete(NAMESPACES, ns)

    async def held_by_finalizer() -> Obj | None:
        obj = await kc.get(NAMESPACES, ns)
        conds = {c["type"]: c for c in obj.get("status", {}).get("conditions") or ()}
        c = conds.get("NamespaceFinalizersRemaining")
        return obj if c and c["status"] == "True" else None

    # Everything else goes; the configmap held by a finalizer keeps the namespace Terminating.
    term = await wait_for(held_by_finalizer, deadline_s=15, what="a NamespaceFinalizersRemaining condition")
    assert term is not None
    assert term["status"]["phase"] == "Terminating"
    conds = {c["type"]: c for c in term["status"]["conditions"]}
    assert conds["NamespaceContentRemaining"]["status"] == "True"
    assert "configmaps has 1 resource instances" in conds["NamespaceContentRemaining"]["message"]
    assert HOLD in conds["NamespaceFinalizersRemaining"]["message"]
    for res in (SECRETS, PODS, DEVICES):
        items, _ = await kc.list(res, ns)
        assert items == [], res.plural
    await kc.patch(CONFIGMAPS, "c2", {"metadata": {"finalizers": None}}, ns)
    await gone(kc, NAMESPACES, ns)
    for res in (CONFIGMAPS, SECRETS, PODS, DEVICES):
        items, _ = await kc.list(res, ns)
        assert items == [], res.plural


async def test_namespace_waits_for_pods_in_their_grace_period(kc: KubeClient, ns: str) -> None:
    await kc.create(PODS, pod("bound", node="edge-x"), namespace=ns)
    await kc.delete(NAMESPACES, ns)

    async def pod_terminating() -> Obj | None:
        p = await kc.get(PODS, "bound", ns)
        return p if p["metadata"].get("deletionTimestamp") else None

    await wait_for(pod_terminating, deadline_s=15, what="the bound pod to be terminating")
    assert (await kc.get(NAMESPACES, ns))["status"]["phase"] == "Terminating"
    # The node confirms the pod stopped (as a kubelet does): then the namespace can go.
    await kc.delete(PODS, "bound", ns, grace_period_seconds=0)
    await gone(kc, NAMESPACES, ns)


def test_kubectl_delete_namespace(server: ApiServerProc) -> None:
    name = f"gc-k-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    server.kubectl("create", "configmap", "x", "-n", name, "--from-literal=a=b")
    out = server.kubectl("delete", "ns", name, timeout=30).stdout
    assert out.strip() == f'namespace "{name}" deleted'
    res = server.kubectl("get", "ns", name, check=False)
    assert res.returncode != 0 and "NotFound" in res.stderr
