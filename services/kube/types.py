"""Resource descriptors and small shared types for the REST client.

`Res` deliberately mirrors only what a client needs to build URLs. It does not import the API
server's registry: the client must also run against a real kube-apiserver, where our registry is
irrelevant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Res:
    """How to address one resource type: `/api[s]/<group>/<version>[/namespaces/<ns>]/<plural>`."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    kind: str = ""  # optional; used to fill `kind` into list items, which servers omit

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @classmethod
    def of(cls, api_version: str, plural: str, namespaced: bool, kind: str = "") -> Res:
        """Build from an `apiVersion` string such as "apps/v1" or "v1"."""
        group, _, version = api_version.rpartition("/")
        return cls(group, version, plural, namespaced, kind)

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        # A namespace on a cluster-scoped resource is ignored rather than rejected, so callers can
        # pass `obj["metadata"].get("namespace")` uniformly.
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return base


def obj_key(obj: Obj) -> tuple[str, str]:
    """The (namespace, name) cache key of an object; namespace is "" for cluster-scoped objects."""
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


def resource_version_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


PODS = Res("", "v1", "pods", True, "Pod")
NODES = Res("", "v1", "nodes", False, "Node")
NAMESPACES = Res("", "v1", "namespaces", False, "Namespace")
SERVICES = Res("", "v1", "services", True, "Service")
ENDPOINTS = Res("", "v1", "endpoints", True, "Endpoints")
CONFIGMAPS = Res("", "v1", "configmaps", True, "ConfigMap")
SECRETS = Res("", "v1", "secrets", True, "Secret")
EVENTS = Res("", "v1", "events", True, "Event")
SERVICEACCOUNTS = Res("", "v1", "serviceaccounts", True, "ServiceAccount")
PERSISTENTVOLUMECLAIMS = Res("", "v1", "persistentvolumeclaims", True, "PersistentVolumeClaim")
ENDPOINTSLICES = Res("discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice")
LEASES = Res("coordination.k8s.io", "v1", "leases", True, "Lease")
DEPLOYMENTS = Res("apps", "v1", "deployments", True, "Deployment")
REPLICASETS = Res("apps", "v1", "replicasets", True, "ReplicaSet")
DAEMONSETS = Res("apps", "v1", "daemonsets", True, "DaemonSet")
STATEFULSETS = Res("apps", "v1", "statefulsets", True, "StatefulSet")
CONTROLLERREVISIONS = Res("apps", "v1", "controllerrevisions", True, "ControllerRevision")
JOBS = Res("batch", "v1", "jobs", True, "Job")
CRDS = Res("apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition")
