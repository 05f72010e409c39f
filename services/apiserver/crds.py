"""CustomResourceDefinitions: their accepted status, and serving their resources dynamically."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from .resources import PrinterColumn, Registry, ResourceInfo

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def infos_for(crd: Obj) -> list[ResourceInfo]:
    """One ResourceInfo per served version, the storage version first."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    versions = [v for v in spec.get("versions") or () if v.get("served", True)]
    versions.sort(key=lambda v: not v.get("storage", False))
    out = []
    for v in versions:
        subs = v.get("subresources") or {}
        cols = tuple(
            PrinterColumn(
                name=c.get("name", ""),
                type=c.get("type", "string"),
                json_path=c.get("jsonPath", ""),
                description=c.get("description", ""),
                priority=int(c.get("priority", 0)),
                format=c.get("format", ""),
            )
            for c in v.get("additionalPrinterColumns") or ()
        )
        out.append(
            ResourceInfo(
                group=group,
                version=v.get("name", ""),
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(s for s in ("status", "scale") if s in subs),
                has_generation=True,
                printer_columns=cols,
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                crd=True,
            )
        )
    return out


def accept(crd: Obj) -> None:
    """Fill in the status a CRD gets once its names are accepted and it is served."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    status = crd.setdefault("status", {})
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = {c.get("type"): c for c in status.get("conditions") or ()}

    def cond(t: str, reason: str, msg: str) -> Obj:
        prev = old.get(t)
        if prev and prev.get("status") == "True":
            return prev
        return {"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg}

    status["conditions"] = [
        cond("NamesAccepted", "NoConflicts", "no conflicts found"),
        cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    status["acceptedNames"] = names
    stored = list(status.get("storedVersions") or [])
    for v in spec.get("versions") or ():
        if v.get("storage") and v.get("name") not in stored:
            stored.append(v["name"])
    status["storedVersions"] = stored


class CrdServing:
    """Keeps the registry in step with stored CRDs (at start, and on every write)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._served: dict[str, list[ResourceInfo]] = {}

    def on_write(self, op: str, crd: Obj) -> None:
        name = crd.get("metadata", {}).get("name", "")
        for info in self._served.pop(name, []):
            self.registry.remove(info.group, info.version, info.plural)
        if op == "delete":
            log.info("stopped serving custom resource %s", name)
            return
        infos = infos_for(crd)
        for info in infos:
            existing = self.registry.get(info.group, info.version, info.plural)
            if existing is not None and not existing.crd:
                log.error("CRD %s would shadow built-in %s; not serving it", name, info.key)
                return
        for info in infos:
            self.registry.add(info)
        self._served[name] = infos
        log.info("serving custom resource %s (%s)", name, ", ".join(i.version for i in infos))
