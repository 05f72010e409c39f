"""CRI (runtime.v1) gRPC client for containerd and CRI-O: `CriClient` and its error hierarchy.
api.proto is our hand-written subset of upstream's; api_pb2.py(i) is generated from it by `generate.py`."""

from . import api_pb2 as api
from .client import (
    CriClient,
    CriDeadlineExceeded,
    CriError,
    CriNotFound,
    CriUnavailable,
    CriUnimplemented,
    normalize_endpoint,
)

__all__ = [
    "CriClient",
    "CriDeadlineExceeded",
    "CriError",
    "CriNotFound",
    "CriUnavailable",
    "CriUnimplemented",
    "api",
    "normalize_endpoint",
]
