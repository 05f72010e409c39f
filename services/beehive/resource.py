"""KubeEdge resource strings, their mapping to Kubernetes kinds, and the ACK rule.

Wire forms (both directions)::

    <namespace>/<type>/<name>          default/pod/nginx, null/node/n1 (``null`` = cluster-scoped)
    <namespace>/<type>                 all objects of a type (queries)
    device/<ns>/<name>/<rest>          device twin/state events, e.g. device/default/d1/twin/edge_updated
    <bare-type>[/<rest>]               node (keepalive), membership, membership/detail

Inside a cloud a ``node/<nodeName>/`` prefix carries the target/origin node; it never goes on the wire.
Resources of the ``user`` group are free-form MQTT topics and are not parsed.

The forms overlap for namespaces literally named ``device`` or ``membership`` (and ``node`` when a prefix
may be present); KubeEdge has the same ambiguity. The parser resolves it as KubeEdge's modules do (the
special form wins) and the prefix is only recognised when the caller says it is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .message import (
    GROUP_USER,
    OP_DELETE,
    OP_DELETED,
    OP_INSERT,
    OP_PATCH,
    OP_UPDATE,
    OP_UPDATED,
    RESOURCE_TYPES,
    RT_CERTIFICATESIGNINGREQUEST,
    RT_CONFIGMAP,
    RT_CSR,
    RT_DEVICE,
    RT_DEVICEMODEL,
    RT_ENDPOINTS,
    RT_ENDPOINTSLICE,
    RT_EVENT,
    RT_LEASE,
    RT_MEMBERSHIP,
    RT_NODE,
    RT_NODEPATCH,
    RT_NODESTATUS,
    RT_PERSISTENTVOLUME,
    RT_PERSISTENTVOLUMECLAIM,
    RT_POD,
    RT_PODLIST,
    RT_PODPATCH,
    RT_PODSTATUS,
    RT_RULE,
    RT_RULEENDPOINT,
    RT_SECRET,
    RT_SERVICE,
    RT_SERVICEACCOUNTTOKEN,
    RT_VOLUMEATTACHMENT,
    Message,
)

NULL_NAMESPACE: Final = "null"
NODE_PREFIX: Final = "node"
DEVICE_PREFIX: Final = RT_DEVICE

# Types written without a namespace segment ("membership", "membership/detail").
_BARE_PREFIXES: Final = frozenset({RT_MEMBERSHIP})


class ResourceError(ValueError):
    """A malformed resource string."""


def _check_segment(seg: str, what: str, s: str) -> None:
    if not seg:
        raise ResourceError(f"resource {s!r}: empty {what}")
    if any(c.isspace() or not c.isprintable() for c in seg):
        raise ResourceError(f"resource {s!r}: {what} contains whitespace or control characters")


@dataclass(frozen=True, slots=True)
class Resource:
    """A parsed resource string; ``str(r)`` gives it back exactly.

    ``namespace`` None means cluster-scoped (``null`` on the wire); ``bare`` marks forms with no namespace
    segment at all (``node``, ``membership/detail``); ``rest`` is the tail after the name of device forms
    (``twin/edge_updated``) or after a bare type (``detail``); ``node`` is the cloud-internal prefix."""

    type: str
    namespace: str | None = None
    name: str | None = None
    node: str | None = None
    rest: str = ""
    bare: bool = False

    @classmethod
    def parse(cls, s: str, *, node_prefixed: bool = False) -> Resource:
        """Parse a wire resource string; with ``node_prefixed`` expect (and strip) ``node/<name>/``."""
        node: str | None = None
        body = s
        if node_prefixed:
            node, body = strip_node(s)
        if not body:
            raise ResourceError(f"resource {s!r}: empty")
        parts = body.split("/")
        for i, p in enumerate(parts):
            _check_segment(p, f"segment {i + 1}", s)

        if parts[0] == DEVICE_PREFIX and len(parts) >= 4:
            return cls(type=RT_DEVICE, namespace=parts[1], name=parts[2], node=node, rest="/".join(parts[3:]))
        if len(parts) == 1 or (parts[0] in _BARE_PREFIXES and parts[1] not in RESOURCE_TYPES):
            return cls(type=parts[0], node=node, rest="/".join(parts[1:]), bare=True)
        if len(parts) > 3:
            raise ResourceError(f"resource {s!r}: too many segments for <namespace>/<type>/<name>")
        ns = None if parts[0] == NULL_NAMESPACE else parts[0]
        return cls(type=parts[1], namespace=ns, name=parts[2] if len(parts) == 3 else None, node=node)

    @property
    def wire(self) -> str:
        """The string without the node prefix (what goes on the websocket)."""
        if self.bare:
            return f"{self.type}/{self.rest}" if self.rest else self.type
        ns = NULL_NAMESPACE if self.namespace is None else self.namespace
        if self.type == RT_DEVICE and self.rest:
            return f"{DEVICE_PREFIX}/{ns}/{self.name}/{self.rest}"
        return f"{ns}/{self.type}/{self.name}" if self.name is not None else f"{ns}/{self.type}"

    def __str__(self) -> str:
        return add_node(self.node, self.wire) if self.node is not None else self.wire

    @property
    def is_list(self) -> bool:
        """``<namespace>/<type>`` without a name: all objects of the type."""
        return not self.bare and self.name is None


def format_resource(namespace: str | None, rtype: str, name: str | None = None) -> str:
    """``<ns|null>/<type>[/<name>]`` — the common case, without building a Resource."""
    ns = NULL_NAMESPACE if namespace is None else namespace
    return f"{ns}/{rtype}/{name}" if name is not None else f"{ns}/{rtype}"


def device_resource(namespace: str, name: str, rest: str) -> str:
    """``device/<ns>/<name>/<rest>``, e.g. ``device_resource("default", "d1", "twin/edge_updated")``."""
    return f"{DEVICE_PREFIX}/{namespace}/{name}/{rest}"


def strip_node(s: str) -> tuple[str, str]:
    """Split the cloud-internal ``node/<nodeName>/<resource>`` into (nodeName, resource)."""
    parts = s.split("/", 2)
    if len(parts) < 3 or parts[0] != NODE_PREFIX:
        raise ResourceError(f"resource {s!r}: expected node/<nodeName>/<resource>")
    if not parts[1]:
        raise ResourceError(f"resource {s!r}: empty node name")
    return parts[1], parts[2]


def add_node(node: str, resource: str) -> str:
    """Prefix a wire resource with ``node/<node>/`` (cloud-internal routing)."""
    if not node or "/" in node:
        raise ResourceError(f"node name {node!r} is empty or contains '/'")
    return f"{NODE_PREFIX}/{node}/{resource}"


# --- resource type <-> Kubernetes kind ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindInfo:
    """How a KubeEdge resource type maps onto the Kubernetes API."""

    kind: str
    group: str  # API group, "" for core
    version: str
    plural: str  # the API resource name, e.g. "pods"
    namespaced: bool
    subresource: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: Final[dict[str, KindInfo]] = {
    RT_POD: KindInfo("Pod", "", "v1", "pods", True),
    RT_CONFIGMAP: KindInfo("ConfigMap", "", "v1", "configmaps", True),
    RT_SECRET: KindInfo("Secret", "", "v1", "secrets", True),
    RT_NODE: KindInfo("Node", "", "v1", "nodes", False),
    RT_SERVICE: KindInfo("Service", "", "v1", "services", True),
    RT_ENDPOINTS: KindInfo("Endpoints", "", "v1", "endpoints", True),
    RT_ENDPOINTSLICE: KindInfo("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
    RT_LEASE: KindInfo("Lease", "coordination.k8s.io", "v1", "leases", True),
    RT_EVENT: KindInfo("Event", "", "v1", "events", True),
    # The edge asks for a TokenRequest on a service account's ``token`` subresource.
    RT_SERVICEACCOUNTTOKEN: KindInfo(
        "TokenRequest", "authentication.k8s.io", "v1", "serviceaccounts", True, "token"
    ),
    RT_PERSISTENTVOLUME: KindInfo("PersistentVolume", "", "v1", "persistentvolumes", False),
    RT_PERSISTENTVOLUMECLAIM: KindInfo("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", True),
    RT_VOLUMEATTACHMENT: KindInfo("VolumeAttachment", "storage.k8s.io", "v1", "volumeattachments", False),
    RT_CERTIFICATESIGNINGREQUEST: KindInfo(
        "CertificateSigningRequest", "certificates.k8s.io", "v1", "certificatesigningrequests", False
    ),
    RT_DEVICE: KindInfo("Device", "devices.kubeedge.io", "v1beta1", "devices", True),
    RT_DEVICEMODEL: KindInfo("DeviceModel", "devices.kubeedge.io", "v1beta1", "devicemodels", True),
    RT_RULE: KindInfo("Rule", "rules.kubeedge.io", "v1", "rules", True),
    RT_RULEENDPOINT: KindInfo("RuleEndpoint", "rules.kubeedge.io", "v1", "ruleendpoints", True),
}

# Variant types that address the same Kubernetes object (a status or patch of it, or a list of it).
TYPE_ALIASES: Final[dict[str, str]] = {
    RT_PODLIST: RT_POD,
    RT_PODSTATUS: RT_POD,
    RT_PODPATCH: RT_POD,
    RT_NODESTATUS: RT_NODE,
    RT_NODEPATCH: RT_NODE,
    RT_CSR: RT_CERTIFICATESIGNINGREQUEST,
}

_BY_KIND: Final[dict[tuple[str, str], str]] = {(k.group, k.kind): t for t, k in KINDS.items()}
_BY_PLURAL: Final[dict[tuple[str, str], str]] = {
    (k.group, k.plural): t for t, k in KINDS.items() if not k.subresource
}


def base_type(rtype: str) -> str:
    """The object type a variant addresses: podpatch → pod, nodestatus → node; others unchanged."""
    return TYPE_ALIASES.get(rtype, rtype)


def kind_info(rtype: str) -> KindInfo | None:
    """The Kubernetes kind behind a KubeEdge resource type (variants resolved), or None if unknown."""
    return KINDS.get(base_type(rtype))


def type_for_kind(kind: str, group: str = "") -> str | None:
    """KubeEdge resource type for a Kubernetes kind in an API group (``""`` = core), or None."""
    return _BY_KIND.get((group, kind))


def type_for_api_resource(plural: str, group: str = "") -> str | None:
    """KubeEdge resource type for a Kubernetes API resource name (``pods``, ``devices``), or None."""
    return _BY_PLURAL.get((group, plural))


# --- ACK rule -----------------------------------------------------------------------------------------

# Status-like or request/response traffic that KubeEdge never acknowledges: losing one is repaired by the
# next report (patches, leases) or by the requester retrying (tokens, CSRs, membership).
NO_ACK_TYPES: Final = frozenset(
    {
        RT_PODPATCH,
        RT_NODEPATCH,
        RT_PODSTATUS,
        RT_LEASE,
        RT_CSR,
        RT_CERTIFICATESIGNINGREQUEST,
        RT_MEMBERSHIP,
        RT_SERVICEACCOUNTTOKEN,
    }
)

# Operations that change persisted state; only these are worth an ACK. Queries are answered by their
# response, keepalives and subscriptions carry no state.
ACK_OPERATIONS: Final = frozenset({OP_INSERT, OP_UPDATE, OP_PATCH, OP_DELETE, OP_UPDATED, OP_DELETED})


def resource_type_of(resource: str) -> str:
    """The type in a resource string, node-prefixed or not; "" when it is not a resource string.

    The wire form is tried first; the prefixed reading is preferred only when it yields a known type
    and the wire reading does not (``node/n1/membership`` reads as namespace "node", type "n1")."""
    try:
        plain = Resource.parse(resource).type
    except ResourceError:
        plain = ""
    if plain in RESOURCE_TYPES or not resource.startswith(NODE_PREFIX + "/"):
        return plain
    try:
        prefixed = Resource.parse(resource, node_prefixed=True).type
    except ResourceError:
        return plain
    return prefixed if prefixed in RESOURCE_TYPES else plain


def needs_ack(msg: Message) -> bool:
    """Whether the receiver must persist ``msg`` and reply ``response``/"OK" (KubeEdge's reliable sync)."""
    if msg.is_reply or msg.group == GROUP_USER or msg.operation not in ACK_OPERATIONS:
        return False
    return resource_type_of(msg.resource) not in NO_ACK_TYPES
