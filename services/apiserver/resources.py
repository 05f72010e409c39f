"""The catalogue of resources the API serves: built-in kinds and, at run time, CRD-defined ones.

Every other part of the API server (routing, discovery, OpenAPI, tables, defaults, validation,
authorization) looks resources up here instead of hard-coding paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

READ_VERBS = ("get", "list", "watch")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    """A Table column; `json_path` is a simple dotted path (CRD additionalPrinterColumns)."""

    name: str
    type: str
    json_path: str = ""
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # Subresources served under .../<name>/<sub>: "status", "scale", "binding", "log", "exec", ...
    subresources: tuple[str, ...] = ()
    # Whether spec changes bump metadata.generation (everything with a spec, plus CRDs).
    has_generation: bool = True
    # CRD-only: printer columns and the stored schema (openAPIV3Schema) for validation/OpenAPI.
    printer_columns: tuple[PrinterColumn, ...] = ()
    schema: Obj | None = field(default=None, compare=False, hash=False)
    crd: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def key(self) -> str:
        """Storage key of the resource: plural, group-qualified outside the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


def _r(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    *,
    short: Iterable[str] = (),
    cats: Iterable[str] = (),
    subs: Iterable[str] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
    generation: bool = True,
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=tuple(short),
        categories=tuple(cats),
        subresources=tuple(subs),
        verbs=verbs,
        has_generation=generation,
    )


BUILTIN: tuple[ResourceInfo, ...] = (
    _r(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short=["ns"],
        subs=["status", "finalize"],
        generation=False,
    ),
    _r("", "v1", "nodes", "Node", False, short=["no"], subs=["status"]),
    _r(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        short=["po"],
        cats=["all"],
        subs=["status", "binding", "log", "exec", "attach", "portforward", "eviction", "ephemeralcontainers"],
    ),
    _r("", "v1", "configmaps", "ConfigMap", True, short=["cm"], generation=False),
    _r("", "v1", "secrets", "Secret", True, generation=False),
    _r("", "v1", "services", "Service", True, short=["svc"], cats=["all"], subs=["status"]),
    _r("", "v1", "endpoints", "Endpoints", True, short=["ep"], generation=False),
    _r("", "v1", "events", "Event", True, short=["ev"], generation=False),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, short=["sa"], subs=["token"], generation=False),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, short=["pvc"], subs=["status"]),
    _r(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        short=["deploy"],
        cats=["all"],
        subs=["status", "scale"],
    ),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, short=["rs"], cats=["all"], subs=["status", "scale"]),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, short=["ds"], cats=["all"], subs=["status"]),
    _r(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        True,
        short=["sts"],
        cats=["all"],
        subs=["status", "scale"],
    ),
    _r("apps", "v1", "controllerrevisions", "ControllerRevision", True, generation=False),
    _r("batch", "v1", "jobs", "Job", True, cats=["all"], subs=["status"]),
    _r("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, generation=False),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True, generation=False),
    # Kinds common in real manifests that are stored and served (CRUD, watch, Tables) but not
    # enforced by anything here yet: RBAC, policies, ingress, autoscaling, storage, quotas, webhooks.
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, short=["pv"], subs=["status"]),
    _r("", "v1", "limitranges", "LimitRange", True, short=["limits"]),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, short=["quota"], subs=["status"]),
    _r("", "v1", "podtemplates", "PodTemplate", True, generation=False),
    _r(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        True,
        short=["rc"],
        cats=["all"],
        subs=["status", "scale"],
    ),
    _r("batch", "v1", "cronjobs", "CronJob", True, short=["cj"], cats=["all"], subs=["status"]),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, short=["pdb"], subs=["status"]),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, short=["ing"], subs=["status"]),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, short=["netpol"]),
    _r(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        short=["hpa"],
        cats=["all"],
        subs=["status"],
    ),
    _r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short=["pc"], generation=False),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, short=["sc"], generation=False),
    _r("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False),
    _r("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", False, subs=["status"]),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True, generation=False),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, generation=False),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, generation=False),
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        generation=False,
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        generation=False,
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        generation=False,
    ),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short=["crd", "crds"],
        cats=["api-extensions"],
        subs=["status"],
    ),
)


class Registry:
    """Resources by group/version/plural; CRDs are added and removed while the server runs."""

    def __init__(self, resources: Iterable[ResourceInfo] = BUILTIN) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_kind: dict[tuple[str, str], ResourceInfo] = {}
        # Group -> versions in preference order (first is preferred).
        self._groups: dict[str, list[str]] = {}
        self.generation = 0  # bumped on every change, so discovery caches know when to rebuild
        for r in resources:
            self.add(r)

    def add(self, r: ResourceInfo) -> None:
        self._by_path[(r.group, r.version, r.plural)] = r
        self._by_kind[(r.group_version, r.kind)] = r
        versions = self._groups.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
        self.generation += 1

    def remove(self, group: str, version: str, plural: str) -> None:
        r = self._by_path.pop((group, version, plural), None)
        if r is None:
            return
        self._by_kind.pop((r.group_version, r.kind), None)
        if not any(k[0] == group and k[1] == version for k in self._by_path):
            self._groups[group].remove(version)
            if not self._groups[group]:
                del self._groups[group]
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((api_version, kind))

    def by_key(self, key: str) -> ResourceInfo | None:
        """The preferred-version resource for a storage key."""
        plural, _, group = key.partition(".")
        for v in self._groups.get(group, []):
            r = self._by_path.get((group, v, plural))
            if r is not None:
                return r
        return None

    def groups(self) -> dict[str, list[str]]:
        return {g: list(vs) for g, vs in self._groups.items()}

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [r for (g, v, _), r in self._by_path.items() if g == group and v == version]

    def all(self) -> list[ResourceInfo]:
        return list(self._by_path.values())
