"""Which namespaced objects a pod's spec names (what a node must be able to read to run it).

Pure Kubernetes semantics shared by the API server's node authorizer and cloudcore's edgecontroller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
Ref = tuple[str, str, str]  # (API resource plural, namespace, name)

# Volume sources that carry a secretRef (credentials for the storage plugin).
_SECRET_REF_VOLUMES = ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "storageos", "iscsi", "azureFile")


def pod_refs(pod: Obj) -> set[Ref]:
    """Every ServiceAccount, Secret, ConfigMap and PersistentVolumeClaim a pod's spec names."""
    ns = (pod.get("metadata") or {}).get("namespace", "")
    spec = pod.get("spec") or {}
    refs: set[Ref] = set()

    def add(key: str, name: Any) -> None:
        if isinstance(name, str) and name:
            refs.add((key, ns, name))

    add("serviceaccounts", spec.get("serviceAccountName") or "default")
    for s in spec.get("imagePullSecrets") or ():
        add("secrets", s.get("name"))
    for v in spec.get("volumes") or ():
        add("configmaps", (v.get("configMap") or {}).get("name"))
        add("secrets", (v.get("secret") or {}).get("secretName"))
        add("persistentvolumeclaims", (v.get("persistentVolumeClaim") or {}).get("claimName"))
        for src in (v.get("projected") or {}).get("sources") or ():
            add("configmaps", (src.get("configMap") or {}).get("name"))
            add("secrets", (src.get("secret") or {}).get("name"))
        for kind in _SECRET_REF_VOLUMES:
            add("secrets", ((v.get(kind) or {}).get("secretRef") or {}).get("name"))
    for c in _containers(spec):
        for e in c.get("env") or ():
            vf = e.get("valueFrom") or {}
            add("configmaps", (vf.get("configMapKeyRef") or {}).get("name"))
            add("secrets", (vf.get("secretKeyRef") or {}).get("name"))
        for ef in c.get("envFrom") or ():
            add("configmaps", (ef.get("configMapRef") or {}).get("name"))
            add("secrets", (ef.get("secretRef") or {}).get("name"))
    return refs


def _containers(spec: Obj) -> Iterator[Obj]:
    for f in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(f) or ()
