"""Store failures; the API server maps each to a Kubernetes Status."""

from __future__ import annotations


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object's resourceVersion differs from the one the writer based its change on."""


class Expired(StoreError):
    """The requested revision is older than the kept history (maps to 410 Gone)."""


class TooSlow(StoreError):
    """A watcher fell further behind than its buffer allows and was closed."""


class Closed(StoreError):
    pass
