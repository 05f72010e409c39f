"""Per-connection TLS read buffer size for asyncio's TLS transport.

asyncio's SSLProtocol allocates (and zero-fills, so it is resident) a 256 KiB read buffer for every
TLS connection. A cloudcore holding thousands of mostly idle node websockets paid ~256 KiB of RSS per
node for it — more than everything else per node together. A TLS record carries at most 16 KiB of
plaintext, so a few records' worth reads just as well. The size is a class attribute with no public
knob; this module is the one place that sets it.
"""

from __future__ import annotations

import asyncio.sslproto
from typing import Final

TLS_RECORD_MAX: Final = 16 * 1024 + 256  # plaintext limit + record overhead
DEFAULT_TLS_READ_BUFFER: Final = 4 * TLS_RECORD_MAX


def set_tls_read_buffer(size: int = DEFAULT_TLS_READ_BUFFER) -> int:
    """Use ``size``-byte read buffers for TLS connections made from now on; returns the old size."""
    if size < TLS_RECORD_MAX:
        raise ValueError(f"TLS read buffer must hold at least one record ({TLS_RECORD_MAX} bytes)")
    proto = asyncio.sslproto.SSLProtocol
    old = int(proto.max_size)
    proto.max_size = size
    return old
