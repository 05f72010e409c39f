from __future__ import annotations

from typing import Any

from kubeedge.apiserver.discovery import (
    aggregated_discovery,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
)
from kubeedge.apiserver.openapi import openapi_v3_document, openapi_v3_index
from kubeedge.apiserver.resources import BUILTIN, Registry, ResourceInfo

CRD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
DEVICE = ResourceInfo(
    group="devices.kubeedge.io",
    version="v1beta1",
    plural="devices",
    kind="Device",
    namespaced=True,
    singular="device",
    short_names=("dev",),
    categories=("kubeedge",),
    subresources=("status",),
    schema=CRD_SCHEMA,
    crd=True,
)


def registry(*extra: ResourceInfo) -> Registry:
    return Registry([*BUILTIN, *extra])


def entries(doc: dict) -> dict[str, dict]:
    return {e["name"]: e for e in doc["resources"]}


# --- legacy discovery -----------------------------------------------------------------------------


def test_api_versions() -> None:
    assert api_versions() == {
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def test_group_list_excludes_core_and_is_valid_when_empty() -> None:
    doc = api_group_list(registry())
    names = [g["name"] for g in doc["groups"]]
    assert "" not in names and {"apps", "batch", "discovery.k8s.io", "coordination.k8s.io"} <= set(names)
    apps = next(g for g in doc["groups"] if g["name"] == "apps")
    assert apps["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert apps["versions"] == [{"groupVersion": "apps/v1", "version": "v1"}]
    assert api_group_list(Registry([])) == {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}


def test_api_group() -> None:
    g = api_group(registry(), "batch")
    assert g is not None and (g["kind"], g["name"]) == ("APIGroup", "batch")
    assert api_group(registry(), "nope.example.com") is None
    assert api_group(registry(), "") is None


def test_core_resource_list_with_subresources() -> None:
    doc = api_resource_list(registry(), "", "v1")
    assert doc is not None and (doc["kind"], doc["groupVersion"]) == ("APIResourceList", "v1")
    e = entries(doc)
    assert e["pods"] == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["po"],
        "categories": ["all"],
    }
    assert e["pods/status"] == {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "patch", "update"],
    }
    assert (e["pods/log"]["verbs"], e["pods/log"]["kind"]) == (["get"], "Pod")
    assert (e["pods/exec"]["verbs"], e["pods/exec"]["kind"]) == (["create", "get"], "PodExecOptions")
    assert (e["pods/binding"]["verbs"], e["pods/binding"]["kind"]) == (["create"], "Binding")
    assert e["pods/eviction"]["group"] == "policy" and e["pods/eviction"]["verbs"] == ["create"]
    token = e["serviceaccounts/token"]
    assert (token["group"], token["version"], token["kind"], token["verbs"]) == (
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        ["create"],
    )
    assert e["namespaces/finalize"]["verbs"] == ["update"]
    assert e["nodes"]["namespaced"] is False and "categories" not in e["nodes"]


def test_scale_subresource_and_unknown_group_version() -> None:
    doc = api_resource_list(registry(), "apps", "v1")
    assert doc is not None and doc["groupVersion"] == "apps/v1"
    scale = entries(doc)["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"], scale["verbs"]) == (
        "autoscaling",
        "v1",
        "Scale",
        ["get", "patch", "update"],
    )
    assert api_resource_list(registry(), "apps", "v2") is None


# --- aggregated discovery -------------------------------------------------------------------------


def test_aggregated_core_only_has_core_group() -> None:
    doc = aggregated_discovery(registry(), core=True)
    assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    assert [i["metadata"]["name"] for i in doc["items"]] == [""]
    (v1,) = doc["items"][0]["versions"]
    assert (v1["version"], v1["freshness"]) == ("v1", "Current")
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert (pods["scope"], pods["singularResource"], pods["shortNames"], pods["categories"]) == (
        "Namespaced",
        "pod",
        ["po"],
        ["all"],
    )
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert subs["status"] == {
        "subresource": "status",
        "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
        "verbs": ["get", "patch", "update"],
    }
    assert subs["eviction"]["responseKind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    nodes = next(r for r in v1["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster"


def test_aggregated_non_core_includes_crd_groups() -> None:
    doc = aggregated_discovery(registry(DEVICE), core=False)
    names = [i["metadata"]["name"] for i in doc["items"]]
    assert "" not in names and "apps" in names and "devices.kubeedge.io" in names
    group = next(i for i in doc["items"] if i["metadata"]["name"] == "devices.kubeedge.io")
    (dev,) = group["versions"][0]["resources"]
    assert (dev["resource"], dev["shortNames"], dev["categories"]) == ("devices", ["dev"], ["kubeedge"])
    assert dev["responseKind"] == {"group": "devices.kubeedge.io", "version": "v1beta1", "kind": "Device"}
    deploy = next(
        r for i in doc["items"] if i["metadata"]["name"] == "apps" for r in i["versions"][0]["resources"]
    )
    assert deploy["resource"] == "controllerrevisions"  # sorted by resource name


def test_crd_removal_disappears_from_discovery() -> None:
    reg = registry(DEVICE)
    assert api_resource_list(reg, "devices.kubeedge.io", "v1beta1") is not None
    reg.remove("devices.kubeedge.io", "v1beta1", "devices")
    assert api_resource_list(reg, "devices.kubeedge.io", "v1beta1") is None
    assert "devices.kubeedge.io" not in [g["name"] for g in api_group_list(reg)["groups"]]


# --- OpenAPI v3 -----------------------------------------------------------------------------------


def param_names(op: dict) -> set[str]:
    return {p["name"] for p in op["parameters"] if p["in"] == "query"}


def test_index_lists_documents_with_content_hashes() -> None:
    reg = registry()
    idx = openapi_v3_index(reg)["paths"]
    assert {"api", "api/v1", "apis", "apis/apps", "apis/apps/v1", "apis/batch/v1"} <= set(idx)
    url = idx["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    for path in idx:
        assert openapi_v3_document(reg, path) is not None, path
    reg.add(ResourceInfo("apps", "v1", "widgets", "Widget", True))
    after = openapi_v3_index(reg)["paths"]
    assert after["apis/apps/v1"]["serverRelativeURL"] != url
    assert after["apis/batch/v1"] == idx["apis/batch/v1"]


def test_group_version_document_paths_and_operations() -> None:
    doc = openapi_v3_document(registry(), "apis/apps/v1")
    assert doc is not None and doc["openapi"].startswith("3.0")
    paths = doc["paths"]
    coll, item = (
        paths["/apis/apps/v1/namespaces/{namespace}/deployments"],
        paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"],
    )
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    actions = {m: op["x-kubernetes-action"] for m, op in {**coll, **item}.items() if m != "parameters"}
    assert {m: op["x-kubernetes-action"] for m, op in coll.items() if m != "parameters"} == {
        "get": "list",
        "post": "post",
        "delete": "deletecollection",
    }
    assert {m: op["x-kubernetes-action"] for m, op in item.items() if m != "parameters"} == {
        "get": "get",
        "put": "put",
        "patch": "patch",
        "delete": "delete",
    }
    assert actions
    for method in ("get", "post"):
        assert coll[method]["x-kubernetes-group-version-kind"] == gvk
    assert {"fieldValidation", "fieldManager", "dryRun"} <= param_names(coll["post"])
    assert {"fieldValidation", "fieldManager", "dryRun"} <= param_names(item["put"])
    assert {"fieldValidation", "fieldManager", "dryRun", "force"} <= param_names(item["patch"])
    assert {"limit", "continue", "watch", "labelSelector"} <= param_names(coll["get"])
    assert "/apis/apps/v1/deployments" in paths  # all-namespaces list
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
    }


def test_every_patch_operation_declares_field_validation() -> None:
    # kubectl stops at the first PATCH operation for the GVK, whichever path it is on.
    reg = registry(DEVICE)
    for path in openapi_v3_index(reg)["paths"]:
        doc = openapi_v3_document(reg, path)
        assert doc is not None
        for ops in doc["paths"].values():
            for method in ("post", "put", "patch"):
                if method in ops:
                    assert "fieldValidation" in param_names(ops[method])


def test_patch_does_not_advertise_strategic_merge() -> None:
    doc = openapi_v3_document(registry(), "api/v1")
    assert doc is not None
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    content = patch["requestBody"]["content"]
    assert "application/strategic-merge-patch+json" not in content
    assert {
        "application/apply-patch+yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
    } <= set(content)


def test_schemas_carry_gvk_and_refs_resolve() -> None:
    doc = openapi_v3_document(registry(), "api/v1")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    assert pod["type"] == "object" and {"apiVersion", "kind", "metadata", "spec", "status"} <= set(
        pod["properties"]
    )
    assert schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"][0]["kind"] == "PodList"
    assert "io.k8s.api.policy.v1.Eviction" in schemas

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_crd_document_uses_its_schema() -> None:
    reg = registry(DEVICE)
    assert "apis/devices.kubeedge.io/v1beta1" in openapi_v3_index(reg)["paths"]
    doc = openapi_v3_document(reg, "apis/devices.kubeedge.io/v1beta1")
    assert doc is not None
    schema = doc["components"]["schemas"]["io.kubeedge.devices.v1beta1.Device"]
    assert schema["properties"]["spec"] == CRD_SCHEMA["properties"]["spec"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "devices.kubeedge.io", "version": "v1beta1", "kind": "Device"}
    ]
    assert "metadata" not in CRD_SCHEMA["properties"]  # the registry's copy is left alone
    status = doc["paths"]["/apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/devices/{name}/status"]
    assert status["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Device"
    assert openapi_v3_document(reg, "apis/devices.kubeedge.io/v9") is None
    assert openapi_v3_document(reg, "nonsense") is None
