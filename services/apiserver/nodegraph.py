"""Which objects each node may read: the ConfigMaps, Secrets, ServiceAccounts and claims its pods use.

Kept exact by listening to committed pod changes synchronously (no lag behind a binding).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

from kubeedge.store import DELETED, Event, Record

Obj = dict[str, Any]
Ref = tuple[str, str, str]  # (resource key, namespace, name)


def pod_refs(pod: Obj) -> set[Ref]:
    """Every namespaced object a pod's spec names (what a kubelet must fetch to run it)."""
    ns = pod.get("metadata", {}).get("namespace", "")
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
        for kind in ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "storageos", "iscsi", "azureFile"):
            ref = (v.get(kind) or {}).get("secretRef") or {}
            add("secrets", ref.get("name"))
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


class NodeGraph:
    def __init__(self) -> None:
        # pod (ns, name) -> (node, refs) for bound pods only
        self._pods: dict[tuple[str, str], tuple[str, set[Ref]]] = {}
        self._refs: dict[str, collections.Counter[Ref]] = collections.defaultdict(collections.Counter)

    def load(self, pods: Iterable[Record]) -> None:
        for rec in pods:
            self._set(rec.obj)

    def on_events(self, events: list[Event]) -> None:
        for ev in events:
            if ev.key != "pods":
                continue
            if ev.type == DELETED:
                self._drop((ev.namespace, ev.name))
            else:
                self._set(ev.obj)

    def _set(self, pod: Obj) -> None:
        md = pod.get("metadata") or {}
        k = (md.get("namespace", ""), md.get("name", ""))
        self._drop(k)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        refs = pod_refs(pod)
        self._pods[k] = (node, refs)
        self._refs[node].update(refs)

    def _drop(self, k: tuple[str, str]) -> None:
        old = self._pods.pop(k, None)
        if old is None:
            return
        node, refs = old
        c = self._refs[node]
        c.subtract(refs)
        for r in refs:
            if c[r] <= 0:
                del c[r]
        if not c:
            del self._refs[node]

    def node_of(self, namespace: str, pod: str) -> str | None:
        entry = self._pods.get((namespace, pod))
        return entry[0] if entry else None

    def references(self, node: str, ref: Ref) -> bool:
        return self._refs.get(node, collections.Counter())[ref] > 0
