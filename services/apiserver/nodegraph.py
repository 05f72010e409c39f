"""Which objects each node may read: the ConfigMaps, Secrets, ServiceAccounts and claims its pods use.

Kept exact by listening to committed pod changes synchronously (no lag behind a binding).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from kubeedge.kube.podrefs import Ref, pod_refs
from kubeedge.store import DELETED, Event, Record

Obj = dict[str, Any]


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
