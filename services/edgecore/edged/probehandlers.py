"""The probe handlers, each run once against a real container: exec through CRI ExecSync, httpGet with
a small HTTP/1.1 client (redirects followed on the same host only, no body read), tcpSocket by
connecting. Scheduling and thresholds are probes.py's."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .cri import CriClient, CriError, CriUnavailable

# Same as the kubelet's http prober: redirects followed on the same host, and how much of a response
# head (status line + headers) we read at most.
MAX_REDIRECTS: Final = 10
MAX_RESPONSE_HEAD_BYTES: Final = 64 * 1024
USER_AGENT: Final = "kube-probe/1.37"
# Probe output quoted in a failure message (and so in logs/events).
MAX_MESSAGE_CHARS: Final = 300


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


# ---- handlers --------------------------------------------------------------------------------------


def _short(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def resolve_port(port: object, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        number = port
    elif isinstance(port, str) and port.isdigit():
        number = int(port)
    elif isinstance(port, str):
        for p in container.get("ports") or []:
            if p.get("name") == port:
                number = int(p.get("containerPort", 0))
                break
        else:
            raise ValueError(f"port {port!r} is not a named port of container {container.get('name')!r}")
    else:
        raise ValueError(f"probe port {port!r} is neither a number nor a name")
    if not 0 < number < 65536:
        raise ValueError(f"probe port {number} is out of range")
    return number


_TLS: ssl.SSLContext | None = None


def _insecure_tls() -> ssl.SSLContext:
    """HTTPS probes do not verify the certificate (Kubernetes semantics); one context serves all."""
    global _TLS
    if _TLS is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS = ctx
    return _TLS


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


async def http_get_once(
    scheme: str, host: str, port: int, path: str, headers: list[tuple[str, str]]
) -> tuple[int, str]:
    """One GET; returns (status, Location header or ""). Reads only the response head."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=_insecure_tls() if scheme == "https" else None, limit=MAX_RESPONSE_HEAD_BYTES
    )
    try:
        names = {k.lower() for k, _ in headers}
        lines = [f"GET {path or '/'} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {_host_header(host, port, scheme)}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept" not in names:
            lines.append("Accept: */*")
        lines += [f"{k}: {v}" for k, v in headers if k.lower() != "connection"]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    location = ""
    for line in header_lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == "location":
            location = value.strip()
    return int(parts[1]), location


async def http_probe(
    action: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout_s: float
) -> ProbeResult:
    scheme = str(action.get("scheme") or "HTTP").lower()
    if scheme not in ("http", "https"):
        return ProbeResult(False, f"httpGet scheme {action.get('scheme')!r} is not HTTP or HTTPS")
    host = str(action.get("host") or pod_ip)
    port = resolve_port(action.get("port"), container)
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = [(str(h.get("name", "")), str(h.get("value", ""))) for h in action.get("httpHeaders") or []]
    async with asyncio.timeout(timeout_s):
        for _ in range(MAX_REDIRECTS + 1):
            status, location = await http_get_once(scheme, host, port, path, headers)
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            target = urlsplit(location)
            if target.hostname not in (None, host) or (target.scheme and target.scheme != scheme):
                # The kubelet does not follow a redirect off the probed host; it is a (warned) success.
                return ProbeResult(True, f"probe terminated redirects to {location}")
            port = target.port or port
            path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        else:
            return ProbeResult(False, f"HTTP probe stopped after {MAX_REDIRECTS} redirects")
    if 200 <= status < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {status}")


async def tcp_probe(
    action: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout_s: float
) -> ProbeResult:
    host = str(action.get("host") or pod_ip)
    port = resolve_port(action.get("port"), container)
    async with asyncio.timeout(timeout_s):
        _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def exec_probe(cri: CriClient, container_id: str, command: list[str], timeout_s: float) -> ProbeResult:
    if not command:
        return ProbeResult(False, "exec probe has no command")
    try:
        r = await cri.exec_sync(container_id, command, timeout_s=max(1, int(timeout_s)))
    except CriUnavailable:
        raise  # the runtime is down: not the container's fault, see ProbeManager._probe_once
    except CriError as e:
        # containerd reports an exceeded ExecSync timeout as an error, as it does a vanished container.
        return ProbeResult(False, f"exec probe: {_short(e.details)}")
    if r.exit_code == 0:
        return ProbeResult(True)
    out = _short(r.stdout + r.stderr)
    return ProbeResult(False, f"command {command!r} exited with {r.exit_code}" + (f": {out}" if out else ""))
