"""Container lifecycle hooks (postStart, preStop): exec through CRI, httpGet, or sleep.

A hook's failure is reported, never raised: preStop failing must not stop a termination, and the
caller decides what a failed postStart means (the kubelet kills the container).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

from .cri import CriClient, CriError
from .probehandlers import http_probe

log = logging.getLogger(__name__)

# A hook gets at least this long even when the grace period is (nearly) used up.
MIN_HOOK_TIMEOUT_S: Final = 1


async def run_hook(
    cri: CriClient,
    hook: Mapping[str, Any] | None,
    container: Mapping[str, Any],
    container_id: str,
    pod_ip: str,
    timeout_s: float,
) -> str | None:
    """Run one handler within `timeout_s`; None on success, else what went wrong."""
    if not hook:
        return None
    timeout = max(MIN_HOOK_TIMEOUT_S, int(timeout_s))
    try:
        if isinstance(hook.get("exec"), dict):
            cmd = [str(a) for a in hook["exec"].get("command") or []]
            if not cmd:
                return "exec hook without a command"
            r = await cri.exec_sync(container_id, cmd, timeout_s=timeout)
            if r.exit_code != 0:
                out = (r.stdout + r.stderr).decode(errors="replace").strip()[:300]
                return f"command {cmd!r} exited with {r.exit_code}: {out}"
            return None
        if isinstance(hook.get("httpGet"), dict):
            result = await http_probe(hook["httpGet"], container, pod_ip, float(timeout))
            return None if result.ok else result.message
        if isinstance(hook.get("sleep"), dict):
            # The hook itself asks edged to wait (Kubernetes' sleep action), bounded by the grace period.
            await asyncio.sleep(min(float(hook["sleep"].get("seconds") or 0), float(timeout)))
            return None
        return "hook has no exec, httpGet or sleep action"
    except (CriError, OSError, TimeoutError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
