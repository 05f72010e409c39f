"""Who is asking (client certificate or bearer token) and whether they may (admin / node rules)."""

from __future__ import annotations

import csv
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ApiError, forbidden, unauthorized
from .nodegraph import NodeGraph
from .resources import ResourceInfo
from .selectors import FieldSelector

log = logging.getLogger(__name__)

ADMIN_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def node_name(self) -> str | None:
        if self.user.startswith(NODE_PREFIX) and NODES_GROUP in self.groups:
            return self.user[len(NODE_PREFIX) :]
        return None

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups


def identity_from_peercert(cert: dict[str, Any] | None) -> Identity | None:
    """Read CN (user) and O (groups) from the dict form of a verified TLS peer certificate."""
    if not cert:
        return None
    user = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                user = v
            elif k == "organizationName":
                groups.append(v)
    if not user:
        return None
    return Identity(user, (*groups, "system:authenticated"))


TokenCheck = Callable[[str], Identity | None]


class TokenAuthenticator:
    """Static bearer tokens (Kubernetes' token file format: token,user,uid,"group1,group2")
    plus pluggable checkers (service-account tokens come later)."""

    def __init__(self, path: Path | None = None) -> None:
        self._tokens: dict[str, Identity] = {}
        self.checkers: list[TokenCheck] = []
        if path is not None and path.exists():
            self.load(path)

    def load(self, path: Path) -> None:
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 3:
                    log.warning("%s: skipping a token line with fewer than 3 fields", path)
                    continue
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                self._tokens[row[0]] = Identity(row[1], (*groups, "system:authenticated"), row[2])

    def add(self, token: str, ident: Identity) -> None:
        self._tokens[token] = ident

    def authenticate(self, token: str) -> Identity | None:
        for known, ident in self._tokens.items():
            if hmac.compare_digest(known, token):
                return ident
        for check in self.checkers:
            found = check(token)
            if found is not None:
                return found
        return None


@dataclass
class Attributes:
    verb: str  # get list watch create update patch delete deletecollection
    info: ResourceInfo
    namespace: str
    name: str
    subresource: str = ""
    field_selector: FieldSelector | None = None
    # For creates/updates: the object in the request (node rules check what it says).
    obj: dict[str, Any] | None = None


def _deny(ident: Identity, a: Attributes, why: str) -> ApiError:
    res = a.info.plural + (f"/{a.subresource}" if a.subresource else "")
    where = f' in the namespace "{a.namespace}"' if a.namespace else ""
    subject = f'{a.info.plural} "{a.name}"' if a.name else a.info.plural
    return forbidden(
        f'{subject} is forbidden: User "{ident.user}" cannot {a.verb} resource "{res}" '
        f'in API group "{a.info.group}"{where}: {why}',
        a.info,
        a.name,
    )


SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
# What a service account may look at without RBAC: the subresources a read-only ("view") role covers.
_SA_READABLE_SUBRESOURCES = ("", "status", "scale", "log")


def service_account_of(ident: Identity) -> tuple[str, str] | None:
    """(namespace, name) when the identity is a service account (authenticated by its token)."""
    if not ident.user.startswith(SA_PREFIX) or SA_GROUP not in ident.groups:
        return None
    ns, _, name = ident.user[len(SA_PREFIX) :].partition(":")
    return (ns, name) if ns and name else None


def _service_account_rule(ns: str, a: Attributes) -> str:
    """There is no RBAC yet, so service accounts get a fixed read-only policy, close to binding the
    "view" role in their own namespace: read (get/list/watch) namespaced objects there, except
    Secrets (credentials are not for every pod). Discovery is open to any authenticated identity
    and never reaches the authorizer. '' when allowed, else the reason for the refusal."""
    if a.verb not in ("get", "list", "watch"):
        return "service accounts may only read (no RBAC policy grants more)"
    if not a.info.namespaced or a.namespace != ns:
        return f'service accounts may only read objects in their own namespace "{ns}"'
    if a.info.key == "secrets":
        return "service accounts may not read secrets"
    if a.subresource not in _SA_READABLE_SUBRESOURCES:
        return f"service accounts may not read {a.info.plural}/{a.subresource}"
    return ""


class Authorizer:
    """Admins may do everything; nodes may do what running their own pods needs; service accounts
    may read their namespace; nobody else."""

    def __init__(self, graph: NodeGraph) -> None:
        self.graph = graph

    def authorize(self, ident: Identity | None, a: Attributes) -> None:
        if ident is None:
            raise unauthorized()
        if ident.is_admin:
            return
        sa = service_account_of(ident)
        if sa is not None:
            why = _service_account_rule(sa[0], a)
            if why:
                raise _deny(ident, a, why)
            return
        node = ident.node_name
        if node is None:
            raise _deny(ident, a, "no policy grants this identity access")
        why = self._node_rule(node, a)
        if why:
            raise _deny(ident, a, why)

    def _node_rule(self, node: str, a: Attributes) -> str:
        """'' when allowed, else the reason for the refusal."""
        key = a.info.key
        v = a.verb
        fs = a.field_selector
        if key == "nodes":
            if v == "create":
                named = (a.obj or {}).get("metadata", {}).get("name")
                return "" if named == node else f"node '{node}' can only create its own Node"
            if v in ("list", "watch"):
                return "" if fs and fs.exact("metadata.name") == node else "nodes can list only themselves"
            if v in ("get", "update", "patch"):
                return "" if a.name == node else f"node '{node}' cannot access node '{a.name}'"
            return f"node '{node}' may not {v} nodes"
        if key == "leases.coordination.k8s.io":
            if a.namespace != NODE_LEASE_NAMESPACE:
                return f"node leases live in {NODE_LEASE_NAMESPACE}"
            if v in ("list", "watch"):
                return "" if fs and fs.exact("metadata.name") == node else "nodes can list only their lease"
            if v == "create":
                named = (a.obj or {}).get("metadata", {}).get("name")
                return "" if named == node else f"node '{node}' can only create its own Lease"
            return "" if a.name == node else f"node '{node}' cannot access lease '{a.name}'"
        if key == "pods":
            if v in ("list", "watch"):
                ok = fs is not None and fs.exact("spec.nodeName") == node
                return "" if ok else "nodes may list only pods with fieldSelector spec.nodeName=<own name>"
            if v in ("get", "delete") or (v in ("update", "patch") and a.subresource == "status"):
                bound = self.graph.node_of(a.namespace, a.name)
                return "" if bound == node else f"no relationship found between node '{node}' and this object"
            return f"node '{node}' may not {v} pods"
        if key in ("configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims"):
            name = a.name
            if v in ("list", "watch") and fs is not None:
                name = fs.exact("metadata.name") or ""
            elif v == "create" and a.subresource == "token" and key == "serviceaccounts":
                pass
            elif v != "get":
                return f"node '{node}' may only read {a.info.plural}"
            if name and self.graph.references(node, (key, a.namespace, name)):
                return ""
            return f"no relationship found between node '{node}' and this object"
        if key in ("services", "endpoints", "endpointslices.discovery.k8s.io"):
            # The mesh on every node resolves every service, so these are readable cluster-wide.
            return "" if v in ("get", "list", "watch") else f"node '{node}' may only read {a.info.plural}"
        if key == "events":
            return "" if v in ("create", "update", "patch") else f"node '{node}' may only write events"
        return f"node '{node}' has no access to {a.info.plural}"
