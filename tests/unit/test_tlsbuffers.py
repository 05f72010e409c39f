import asyncio.sslproto
import ssl

import pytest

from kubeedge.runtime.tlsbuffers import DEFAULT_TLS_READ_BUFFER, TLS_RECORD_MAX, set_tls_read_buffer


def test_sets_asyncio_tls_read_buffer_and_returns_the_old_size() -> None:
    original = asyncio.sslproto.SSLProtocol.max_size
    loop = asyncio.new_event_loop()
    try:
        assert set_tls_read_buffer() == original
        assert asyncio.sslproto.SSLProtocol.max_size == DEFAULT_TLS_READ_BUFFER < original
        # The buffer a new TLS connection allocates follows the class attribute.
        proto = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), None)
        assert len(proto.get_buffer(-1)) == DEFAULT_TLS_READ_BUFFER
        with pytest.raises(ValueError, match="at least one record"):
            set_tls_read_buffer(TLS_RECORD_MAX - 1)
    finally:
        set_tls_read_buffer(original)
        loop.close()
