"""The KubeEdge message: header, route, content — plus the operation, group and resource-type names.

The names are KubeEdge's (reference/kubeedge-wire.md); a KubeEdge peer ignores operations it does not
know, so our own extensions are simply new operation strings.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Final

# --- operations -------------------------------------------------------------------------------------
OP_INSERT: Final = "insert"
OP_UPDATE: Final = "update"
OP_PATCH: Final = "patch"
OP_DELETE: Final = "delete"
OP_QUERY: Final = "query"
OP_RESPONSE: Final = "response"
OP_ERROR: Final = "error"
OP_UPLOAD: Final = "upload"
OP_KEEPALIVE: Final = "keepalive"
OP_CONNECT: Final = "connect"
OP_SUBSCRIBE: Final = "subscribe"
OP_UNSUBSCRIBE: Final = "unsubscribe"
OP_PUBLISH: Final = "publish"
OP_GET: Final = "get"
OP_GET_RESULT: Final = "get_result"
OP_LIST: Final = "list"
OP_DETAIL: Final = "detail"
OP_DELTA: Final = "delta"
OP_DOCUMENT: Final = "document"
OP_UPDATED: Final = "updated"
OP_DELETED: Final = "deleted"
OP_INVENTORY: Final = "inventory"  # ours (edge's uid→rv list on connect); = cloudcore.hubapi.OP_INVENTORY

OPERATIONS: Final[frozenset[str]] = frozenset(
    {
        OP_INSERT,
        OP_UPDATE,
        OP_PATCH,
        OP_DELETE,
        OP_QUERY,
        OP_RESPONSE,
        OP_ERROR,
        OP_UPLOAD,
        OP_KEEPALIVE,
        OP_CONNECT,
        OP_SUBSCRIBE,
        OP_UNSUBSCRIBE,
        OP_PUBLISH,
        OP_GET,
        OP_GET_RESULT,
        OP_LIST,
        OP_DETAIL,
        OP_DELTA,
        OP_DOCUMENT,
        OP_UPDATED,
        OP_DELETED,
    }
)

# Connection-level control operations: answered by the hub with content "ack", never routed to a module.
OP_PING: Final = "ping"
OP_PONG: Final = "pong"
OP_CONFIG: Final = "config"
CONTROL_OPERATIONS: Final[frozenset[str]] = frozenset({OP_PING, OP_PONG, OP_CONFIG})

# Content a KubeEdge peer sends/expects for ACKs and keepalives.
CONTENT_OK: Final = "OK"
CONTENT_PING: Final = "ping"
CONTENT_ACK: Final = "ack"

# --- groups -----------------------------------------------------------------------------------------
GROUP_RESOURCE: Final = "resource"
GROUP_TWIN: Final = "twin"
GROUP_USER: Final = "user"
GROUP_META: Final = "meta"
GROUP_FUNC: Final = "func"
GROUPS: Final[frozenset[str]] = frozenset({GROUP_RESOURCE, GROUP_TWIN, GROUP_USER, GROUP_META, GROUP_FUNC})

# --- resource types ---------------------------------------------------------------------------------
RT_POD: Final = "pod"
RT_PODLIST: Final = "podlist"
RT_PODSTATUS: Final = "podstatus"
RT_PODPATCH: Final = "podpatch"
RT_NODE: Final = "node"
RT_NODESTATUS: Final = "nodestatus"
RT_NODEPATCH: Final = "nodepatch"
RT_CONFIGMAP: Final = "configmap"
RT_SECRET: Final = "secret"
RT_EVENT: Final = "event"
RT_LEASE: Final = "lease"
RT_SERVICEACCOUNTTOKEN: Final = "serviceaccounttoken"
RT_SERVICE: Final = "service"
RT_ENDPOINTS: Final = "endpoints"
RT_PERSISTENTVOLUME: Final = "persistentvolume"
RT_PERSISTENTVOLUMECLAIM: Final = "persistentvolumeclaim"
RT_VOLUMEATTACHMENT: Final = "volumeattachment"
RT_CERTIFICATESIGNINGREQUEST: Final = "certificatesigningrequest"
RT_RULE: Final = "rule"
RT_RULEENDPOINT: Final = "ruleendpoint"
RT_DEVICE: Final = "device"
RT_DEVICEMODEL: Final = "devicemodel"
RT_MEMBERSHIP: Final = "membership"
# Short form some KubeEdge code paths use for CSRs; listed so the ACK rule recognises it.
RT_CSR: Final = "csr"
# Ours, not KubeEdge's: EndpointSlices for EdgeMesh. A KubeEdge edge never asks for it.
RT_ENDPOINTSLICE: Final = "endpointslice"
# Ours: a local app's write to the MetaServer, forwarded for the cloud to perform as the node
# (``null/apirequest/<node>``, operation query, content: beehive.apirequest).
RT_APIREQUEST: Final = "apirequest"

RESOURCE_TYPES: Final[frozenset[str]] = frozenset(
    {
        RT_POD,
        RT_PODLIST,
        RT_PODSTATUS,
        RT_PODPATCH,
        RT_NODE,
        RT_NODESTATUS,
        RT_NODEPATCH,
        RT_CONFIGMAP,
        RT_SECRET,
        RT_EVENT,
        RT_LEASE,
        RT_SERVICEACCOUNTTOKEN,
        RT_SERVICE,
        RT_ENDPOINTS,
        RT_PERSISTENTVOLUME,
        RT_PERSISTENTVOLUMECLAIM,
        RT_VOLUMEATTACHMENT,
        RT_CERTIFICATESIGNINGREQUEST,
        RT_RULE,
        RT_RULEENDPOINT,
        RT_DEVICE,
        RT_DEVICEMODEL,
        RT_MEMBERSHIP,
        RT_CSR,
        RT_ENDPOINTSLICE,
        RT_APIREQUEST,
    }
)


def now_ms() -> int:
    """Unix time in milliseconds, the unit of header.timestamp."""
    return time.time_ns() // 1_000_000


def new_msg_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: str
    parent_msg_id: str = ""
    timestamp: int = 0
    resource_version: str = ""
    sync: bool = False
    type: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    source: str = ""
    destination: str = ""
    group: str = ""
    operation: str = ""
    resource: str = ""


@dataclass(frozen=True, slots=True)
class RawJSON:
    """Already-serialized JSON (e.g. an object as stored), spliced into frames without a decode/encode.

    Message content of this type is encoded verbatim; the bytes must be valid JSON (not checked: the
    point is to not parse them)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """One KubeEdge message.

    Frozen so one instance can be fanned out to several modules safely; ``content`` itself (a dict or
    list) is shared, so receivers treat it as read-only. Content shapes: dict/list for objects, str for
    patches and text (and base64 of bytes after decoding), bytes for raw data, RawJSON for pre-serialized
    objects, None when absent."""

    header: Header
    route: Route
    content: Any = None

    # --- constructors ---------------------------------------------------------------------------------
    @classmethod
    def new(
        cls,
        source: str,
        group: str,
        operation: str,
        resource: str,
        content: Any = None,
        *,
        parent: Message | str | None = None,
        resource_version: str = "",
        sync: bool = False,
        destination: str = "",
        msg_type: str = "",
    ) -> Message:
        parent_id = parent.msg_id if isinstance(parent, Message) else (parent or "")
        return cls(
            Header(
                msg_id=new_msg_id(),
                parent_msg_id=parent_id,
                timestamp=now_ms(),
                resource_version=resource_version,
                sync=sync,
                type=msg_type,
            ),
            Route(
                source=source, destination=destination, group=group, operation=operation, resource=resource
            ),
            content,
        )

    def response(self, content: Any = CONTENT_OK, source: str | None = None) -> Message:
        """The reply to this message: new id, parent = our id, source/group/resource copied.

        KubeEdge copies the *request's* source into the reply (receivers match on parent_msg_id, not on
        who answered); ``source`` overrides that for callers that want to name themselves."""
        return self._reply(OP_RESPONSE, content, source)

    def error(self, text: str, source: str | None = None) -> Message:
        """An ``error`` reply carrying the error text as content."""
        return self._reply(OP_ERROR, text, source)

    def _reply(self, operation: str, content: Any, source: str | None) -> Message:
        return Message(
            Header(
                msg_id=new_msg_id(),
                parent_msg_id=self.header.msg_id,
                timestamp=now_ms(),
                type=self.header.type,
            ),
            Route(
                source=self.route.source if source is None else source,
                group=self.route.group,
                operation=operation,
                resource=self.route.resource,
            ),
            content,
        )

    def with_content(self, content: Any) -> Message:
        return replace(self, content=content)

    def with_route(self, **changes: str) -> Message:
        return replace(self, route=replace(self.route, **changes))

    # --- shortcuts ------------------------------------------------------------------------------------
    @property
    def msg_id(self) -> str:
        return self.header.msg_id

    @property
    def parent_msg_id(self) -> str:
        return self.header.parent_msg_id

    @property
    def source(self) -> str:
        return self.route.source

    @property
    def group(self) -> str:
        return self.route.group

    @property
    def operation(self) -> str:
        return self.route.operation

    @property
    def resource(self) -> str:
        return self.route.resource

    @property
    def is_reply(self) -> bool:
        return self.route.operation in (OP_RESPONSE, OP_ERROR)
