"""Revisioned, watched Kubernetes-shaped object store on SQLite (WAL, group commit).

Backs the cloud's embedded API, the edge's MetaManager and EdgeSite; only the API server uses it."""

from .errors import AlreadyExists, Closed, Conflict, Expired, NotFound, StoreError, TooSlow
from .records import ADDED, DELETED, MODIFIED, Event, Obj, Record
from .sqlite import ListResult, Store, StoreConfig
from .watch import Delivery, Predicate, Watcher

__all__ = [
    "ADDED",
    "DELETED",
    "MODIFIED",
    "AlreadyExists",
    "Closed",
    "Conflict",
    "Delivery",
    "Event",
    "Expired",
    "ListResult",
    "NotFound",
    "Obj",
    "Predicate",
    "Record",
    "Store",
    "StoreConfig",
    "StoreError",
    "TooSlow",
    "Watcher",
]
