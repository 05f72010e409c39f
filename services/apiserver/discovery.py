"""Discovery documents built from the resource Registry.

Two flavours are served: the legacy per-group documents (/api, /apis, /api/v1, /apis/<g>/<v>) that the
official Python client's DynamicClient walks, and aggregated discovery (apidiscovery.k8s.io/v2) that
kubectl 1.37 asks for first so it can resolve short names and categories in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeedge.apiserver.resources import Obj, Registry, ResourceInfo


@dataclass(frozen=True)
class Subresource:
    """How a subresource is advertised; group/version/kind of None mean "same as the parent"."""

    verbs: tuple[str, ...]
    kind: str | None = None
    group: str | None = None
    version: str | None = None

    def gvk(self, parent: ResourceInfo) -> tuple[str, str, str]:
        kind = self.kind.replace("{Kind}", parent.kind) if self.kind else parent.kind
        if self.group is None:
            return parent.group, parent.version, kind
        return self.group, self.version or "v1", kind


# Verbs and response kinds as upstream advertises them, so clients pick the right request shape.
SUBRESOURCES: dict[str, Subresource] = {
    "status": Subresource(("get", "patch", "update")),
    "scale": Subresource(("get", "patch", "update"), "Scale", "autoscaling", "v1"),
    "binding": Subresource(("create",), "Binding", "", "v1"),
    "log": Subresource(("get",)),
    "exec": Subresource(("create", "get"), "PodExecOptions", "", "v1"),
    "attach": Subresource(("create", "get"), "PodAttachOptions", "", "v1"),
    "portforward": Subresource(("create", "get"), "PodPortForwardOptions", "", "v1"),
    "proxy": Subresource(("create", "delete", "get", "patch", "update"), "{Kind}ProxyOptions", "", "v1"),
    "eviction": Subresource(("create",), "Eviction", "policy", "v1"),
    "ephemeralcontainers": Subresource(("get", "patch", "update")),
    "resize": Subresource(("get", "patch", "update")),
    "token": Subresource(("create",), "TokenRequest", "authentication.k8s.io", "v1"),
    "finalize": Subresource(("update",)),
}
_UNKNOWN_SUBRESOURCE = Subresource(("get",))


def subresource(name: str) -> Subresource:
    return SUBRESOURCES.get(name, _UNKNOWN_SUBRESOURCE)


def _group_version(group: str, version: str) -> Obj:
    return {"groupVersion": f"{group}/{version}" if group else version, "version": version}


def _sorted(resources: list[ResourceInfo]) -> list[ResourceInfo]:
    return sorted(resources, key=lambda r: r.plural)


# --- legacy discovery -----------------------------------------------------------------------------


def api_versions() -> Obj:
    return {
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group_body(reg: Registry, group: str) -> Obj | None:
    versions = reg.groups().get(group)
    if not group or not versions:
        return None
    gvs = [_group_version(group, v) for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(reg: Registry) -> Obj:
    groups = [body for g in reg.groups() if (body := _group_body(reg, g)) is not None]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(reg: Registry, group: str) -> Obj | None:
    body = _group_body(reg, group)
    return None if body is None else {"kind": "APIGroup", "apiVersion": "v1", **body}


def _legacy_resource(r: ResourceInfo) -> Obj:
    entry: Obj = {
        "name": r.plural,
        "singularName": r.singular or r.kind.lower(),
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    return entry


def _legacy_subresource(r: ResourceInfo, name: str) -> Obj:
    sub = subresource(name)
    group, version, kind = sub.gvk(r)
    entry: Obj = {"name": f"{r.plural}/{name}", "singularName": "", "namespaced": r.namespaced}
    # Group and version are only spelled out when they differ from the list's own.
    if (group, version) != (r.group, r.version):
        entry["group"], entry["version"] = group, version
    entry["kind"] = kind
    entry["verbs"] = list(sub.verbs)
    return entry


def api_resource_list(reg: Registry, group: str, version: str) -> Obj | None:
    resources = _sorted(reg.in_group_version(group, version))
    if not resources:
        return None
    entries: list[Obj] = []
    for r in resources:
        entries.append(_legacy_resource(r))
        entries += [_legacy_subresource(r, s) for s in sorted(r.subresources)]
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


# --- aggregated discovery (apidiscovery.k8s.io/v2) ------------------------------------------------


def _response_kind(group: str, version: str, kind: str) -> Obj:
    return {"group": group, "version": version, "kind": kind}


def _aggregated_subresource(r: ResourceInfo, name: str) -> Obj:
    sub = subresource(name)
    return {"subresource": name, "responseKind": _response_kind(*sub.gvk(r)), "verbs": list(sub.verbs)}


def _aggregated_resource(r: ResourceInfo) -> Obj:
    entry: Obj = {
        "resource": r.plural,
        "responseKind": _response_kind(r.group, r.version, r.kind),
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular or r.kind.lower(),
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [_aggregated_subresource(r, s) for s in sorted(r.subresources)]
    return entry


def _aggregated_group(reg: Registry, group: str, versions: list[str]) -> Obj:
    # Version order is preference order: kubectl treats the first entry as preferred.
    return {
        "metadata": {"name": group},
        "versions": [
            {
                "version": v,
                "resources": [_aggregated_resource(r) for r in _sorted(reg.in_group_version(group, v))],
                "freshness": "Current",
            }
            for v in versions
        ],
    }


def aggregated_discovery(reg: Registry, core: bool) -> Obj:
    """APIGroupDiscoveryList: core=True answers /api (only the "" group), core=False answers /apis."""
    items = [
        _aggregated_group(reg, g, versions)
        for g, versions in reg.groups().items()
        if versions and (g == "") == core
    ]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
