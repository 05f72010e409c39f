"""Kubernetes' websocket channel framing (`v4`/`v5.channel.k8s.io`): every message is one channel byte
and a payload. The same framing carries exec/attach/port-forward through our own hops (API server →
stream server → tunnel → edge), so each hop relays messages without re-encoding them."""

from __future__ import annotations

from typing import Any, Final

import orjson

STDIN: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
ERROR: Final = 3
RESIZE: Final = 4
# v5: `[255, channel]` closes one direction of `channel` (stdin EOF); v4 has no way to say it.
CLOSE: Final = 255

V5: Final = "v5.channel.k8s.io"
V4: Final = "v4.channel.k8s.io"
EXEC_PROTOCOLS: Final = (V5, V4)
# Port-forward inside one of our hops: data on channel 0, an error text on channel 1.
PF_DATA: Final = 0
PF_ERROR: Final = 1


def frame(channel: int, data: bytes = b"") -> bytes:
    return bytes((channel,)) + data


def close_frame(channel: int) -> bytes:
    return bytes((CLOSE, channel))


def status(code: int, reason: str, message: str, *, exit_code: int | None = None) -> bytes:
    """A metav1.Status as the error channel carries it (exit codes the way kubectl reads them)."""
    st: dict[str, Any] = {"metadata": {}, "status": "Success" if code < 400 else "Failure"}
    if code >= 400:
        st.update(message=message, reason=reason, code=code)
    if exit_code is not None:
        st["details"] = {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}
    return orjson.dumps(st)
