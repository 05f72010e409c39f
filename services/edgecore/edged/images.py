"""Images: pull policy (`ensure_image`), registry credentials from pull secrets, and image GC by disk usage.

Edge devices are often air-gapped: images arrive through `keadm image import`, and a registry may be out
of reach for days. So `Always` falls back to the local copy when the pull fails and one exists (the
kubelet would fail the container instead, which would stop an offline node from restarting its pods);
`Never` and `IfNotPresent` behave exactly as the kubelet's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .cri import CriClient, CriError, CriUnavailable, api

log = logging.getLogger(__name__)

ALWAYS: Final = "Always"
IF_NOT_PRESENT: Final = "IfNotPresent"
NEVER: Final = "Never"
ERR_IMAGE_PULL: Final = "ErrImagePull"
ERR_IMAGE_NEVER_PULL: Final = "ErrImageNeverPull"
DOCKER_HUB: Final = "docker.io"
# Keys under which docker config files name Docker Hub.
_DOCKER_HUB_KEYS: Final = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)


class ImagePullError(Exception):
    """The image cannot be made present; `reason` is the container's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def split_reference(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of an image reference; tag and digest may be ""."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag, digest
    return name, "", digest


def default_pull_policy(image: str) -> str:
    """The API server's default: Always for `:latest` or no tag (unless pinned by digest), else IfNotPresent."""
    _repo, tag, digest = split_reference(image)
    if digest:
        return IF_NOT_PRESENT
    return ALWAYS if tag in ("", "latest") else IF_NOT_PRESENT


def registry_of(image: str) -> str:
    """The registry host of a reference, with Docker's rule: the first component is a host only if it
    has a dot or a port, or is localhost."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def auth_for(image: str, pull_secrets: Iterable[Mapping[str, Any]]) -> api.AuthConfig | None:
    """Credentials for `image` from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson or
    kubernetes.io/dockercfg Secrets, as stored: base64 `data`); None when none match."""
    registry = registry_of(image)
    wanted = _DOCKER_HUB_KEYS if registry == DOCKER_HUB else (registry,)
    for secret in pull_secrets:
        data = secret.get("data") or {}
        try:
            if ".dockerconfigjson" in data:
                auths = json.loads(base64.b64decode(data[".dockerconfigjson"])).get("auths") or {}
            elif ".dockercfg" in data:
                auths = json.loads(base64.b64decode(data[".dockercfg"]))
            else:
                continue
        except (ValueError, binascii.Error, TypeError):
            log.warning("pull secret %s is not a valid docker config", secret.get("metadata", {}).get("name"))
            continue
        for key, entry in auths.items():
            host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
            if (key in wanted or host in wanted) and isinstance(entry, dict):
                username, password = entry.get("username", ""), entry.get("password", "")
                if not username and entry.get("auth"):
                    with_colon = base64.b64decode(entry["auth"]).decode(errors="replace")
                    username, _, password = with_colon.partition(":")
                return api.AuthConfig(
                    username=username,
                    password=password,
                    server_address=registry,
                    identity_token=entry.get("identitytoken", ""),
                    registry_token=entry.get("registrytoken", ""),
                )
    return None


async def ensure_image(
    cri: CriClient,
    image: str,
    policy: str,
    *,
    auth: api.AuthConfig | None = None,
    offline_fallback: bool = True,
) -> str:
    """Make `image` present per `policy` ("" = the default for the reference); returns the image ref
    (the runtime's image id). Raises ImagePullError; CriUnavailable (runtime down) passes through."""
    policy = policy or default_pull_policy(image)
    if policy not in (ALWAYS, IF_NOT_PRESENT, NEVER):
        raise ImagePullError(ERR_IMAGE_PULL, f"unknown imagePullPolicy {policy!r} for {image}")
    present = None if policy == ALWAYS and not offline_fallback else await cri.image_status(image)
    if policy == NEVER:
        if present is None:
            raise ImagePullError(
                ERR_IMAGE_NEVER_PULL,
                f'Container image "{image}" is not present with pull policy of Never',
            )
        return present.id
    if policy == IF_NOT_PRESENT and present is not None:
        return present.id
    try:
        return await cri.pull_image(image, auth=auth)
    except CriUnavailable:
        raise
    except CriError as e:
        if present is not None:
            log.warning("pull of %s failed (%s); using the local copy %s", image, e.details, present.id[:19])
            return present.id
        raise ImagePullError(ERR_IMAGE_PULL, f'failed to pull image "{image}": {e.details}') from None


# ---- garbage collection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageGCPolicy:
    """The kubelet's knobs and defaults: collect when the image filesystem is `high` percent full, down to
    `low` percent; images younger than `min_age_s` (since first seen) are kept."""

    high_threshold_percent: int = 85
    low_threshold_percent: int = 80
    min_age_s: float = 120.0
    period_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_threshold_percent <= self.high_threshold_percent <= 100:
            raise ValueError("image GC: need 0 <= low threshold <= high threshold <= 100")


@dataclass
class _Record:
    first_seen: float
    last_used: float
    size: int
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GCResult:
    usage_percent: float
    wanted_bytes: int
    freed_bytes: int
    removed: list[str]


@dataclass(frozen=True)
class FsStats:
    capacity_bytes: int
    available_bytes: int


def statvfs_stats(path: str) -> FsStats:
    st = os.statvfs(path)
    return FsStats(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


class ImageGC:
    """Removes least-recently-used images when the image filesystem fills up. Never removes an image
    that any container (running or exited) uses, a pinned image, or the sandbox image."""

    def __init__(
        self,
        cri: CriClient,
        *,
        policy: ImageGCPolicy | None = None,
        sandbox_image: str = "",
        clock: Callable[[], float] = time.time,
        fs_stats: Callable[[str], FsStats] = statvfs_stats,
    ) -> None:
        self.cri = cri
        self.policy = policy or ImageGCPolicy()
        self.sandbox_image = sandbox_image
        self.clock = clock
        self.fs_stats = fs_stats
        self._images: dict[str, _Record] = {}
        self.removed_total = 0

    async def detect(self) -> set[str]:
        """Refresh first-seen/last-used times; returns the ids of images in use."""
        now = self.clock()
        images = await self.cri.list_images()
        containers = await self.cri.list_containers()
        refs = (
            {c.image_ref for c in containers}
            | {c.image.image for c in containers}
            | {c.image_id for c in containers}
        )
        refs.discard("")
        if self.sandbox_image:
            # By id too: the configured name may be short ("pause:3.9") where the runtime lists it in full.
            sandbox = await self.cri.image_status(self.sandbox_image)
            refs.update([self.sandbox_image, sandbox.id] if sandbox is not None else [self.sandbox_image])
        in_use: set[str] = set()
        seen: dict[str, _Record] = {}
        for img in images:
            rec = self._images.get(img.id) or _Record(first_seen=now, last_used=0.0, size=img.size)
            rec.size, rec.names = img.size, [*img.repo_tags, *img.repo_digests]
            if img.pinned or img.id in refs or any(n in refs for n in rec.names):
                in_use.add(img.id)
                rec.last_used = now
            seen[img.id] = rec
        self._images = seen  # images removed behind our back are forgotten
        return in_use

    async def collect(self) -> GCResult:
        """One pass: free space down to the low threshold if usage is at or above the high one."""
        in_use = await self.detect()
        fs = await self.cri.image_fs_info()
        if not fs.image_filesystems:
            return GCResult(0.0, 0, 0, [])
        mountpoint = fs.image_filesystems[0].fs_id.mountpoint
        stats = await asyncio.to_thread(self.fs_stats, mountpoint)
        if stats.capacity_bytes <= 0:
            return GCResult(0.0, 0, 0, [])
        usage = 100.0 - stats.available_bytes * 100.0 / stats.capacity_bytes
        if usage < self.policy.high_threshold_percent:
            return GCResult(usage, 0, 0, [])
        wanted = (
            stats.capacity_bytes * (100 - self.policy.low_threshold_percent) // 100 - stats.available_bytes
        )
        freed, removed = await self._free(wanted, in_use)
        level = logging.WARNING if freed < wanted else logging.INFO
        log.log(
            level,
            "image GC: usage %.0f%%, wanted %d bytes, freed %d (%d images)",
            usage,
            wanted,
            freed,
            len(removed),
        )
        return GCResult(usage, wanted, freed, removed)

    async def _free(self, wanted: int, in_use: set[str]) -> tuple[int, list[str]]:
        now = self.clock()
        candidates = sorted(
            (
                (rec.last_used, rec.first_seen, image_id, rec)
                for image_id, rec in self._images.items()
                if image_id not in in_use and now - rec.first_seen >= self.policy.min_age_s
            ),
            key=lambda c: (c[0], c[1]),
        )
        freed, removed = 0, []
        for _last, _first, image_id, rec in candidates:
            if freed >= wanted:
                break
            try:
                await self.cri.remove_image(image_id)
            except CriUnavailable:
                raise
            except CriError as e:
                log.warning("image GC: cannot remove %s (%s): %s", image_id[:19], rec.names[:1], e.details)
                continue
            log.info("image GC: removed %s %s (%d bytes)", image_id[:19], rec.names[:1], rec.size)
            self._images.pop(image_id, None)
            freed += rec.size
            removed.append(image_id)
        self.removed_total += len(removed)
        return freed, removed

    async def run(self) -> None:
        """The GC loop, for the Supervisor: a failed pass (runtime down) is logged and retried next period."""
        while True:
            try:
                await self.collect()
            except CriError as e:
                log.warning("image GC pass failed: %s", e)
            await asyncio.sleep(self.policy.period_s)
