"""Pull policies, pull-secret credentials and image GC decisions, against a small in-memory CRI image
service (the real containerd is exercised in tests/integration/test_keadm_image.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest

from kubeedge.edgecore.edged.cri import CriError, CriUnavailable, api
from kubeedge.edgecore.edged.images import (
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    FsStats,
    ImageGC,
    ImageGCPolicy,
    ImagePullError,
    auth_for,
    default_pull_policy,
    ensure_image,
    registry_of,
    split_reference,
)

GiB = 1024**3


class FakeImages:
    """CRI image calls over a dict; `pullable` names can be pulled, anything else fails like a registry."""

    def __init__(self) -> None:
        self.images: dict[str, api.Image] = {}
        self.containers: list[api.Container] = []
        self.pullable: set[str] = set()
        self.pulls: list[tuple[str, api.AuthConfig | None]] = []
        self.removed: list[str] = []
        self.down = False
        self.refuse_remove: set[str] = set()

    def add(self, image_id: str, *tags: str, size: int = GiB, pinned: bool = False) -> None:
        self.images[image_id] = api.Image(id=image_id, repo_tags=list(tags), size=size, pinned=pinned)

    def _find(self, ref: str) -> api.Image | None:
        for img in self.images.values():
            if ref == img.id or ref in img.repo_tags:
                return img
        return None

    async def image_status(self, image: str) -> api.Image | None:
        return self._find(image)

    async def pull_image(self, image: str, *, auth: api.AuthConfig | None = None) -> str:
        self.pulls.append((image, auth))
        if self.down:
            raise CriUnavailable("PullImage", grpc.StatusCode.UNAVAILABLE, "connection refused")
        if image not in self.pullable:
            raise CriError("PullImage", grpc.StatusCode.UNKNOWN, f"failed to resolve reference {image!r}")
        image_id = "sha256:" + f"{len(self.images):064d}"
        existing = self._find(image)
        if existing is None:
            self.add(image_id, image)
            return image_id
        return existing.id

    async def list_images(self) -> list[api.Image]:
        return list(self.images.values())

    async def list_containers(self) -> list[api.Container]:
        return list(self.containers)

    async def image_fs_info(self) -> api.ImageFsInfoResponse:
        used = sum(i.size for i in self.images.values())
        return api.ImageFsInfoResponse(
            image_filesystems=[
                api.FilesystemUsage(
                    fs_id=api.FilesystemIdentifier(mountpoint="/var/lib/ctrd"),
                    used_bytes=api.UInt64Value(value=used),
                )
            ]
        )

    async def remove_image(self, image: str) -> None:
        if image in self.refuse_remove:
            raise CriError("RemoveImage", grpc.StatusCode.UNKNOWN, "image is in use")
        img = self._find(image)
        if img is not None:
            del self.images[img.id]
            self.removed.append(img.id)


def cri(fake: FakeImages) -> Any:
    return fake


def test_references_and_default_policy() -> None:
    assert split_reference("busybox") == ("busybox", "", "")
    assert split_reference("localhost:5000/a/b:1.2") == ("localhost:5000/a/b", "1.2", "")
    assert split_reference("reg:5000/x@sha256:ab") == ("reg:5000/x", "", "sha256:ab")
    assert default_pull_policy("busybox") == "Always"
    assert default_pull_policy("busybox:latest") == "Always"
    assert default_pull_policy("localhost:5000/busybox") == "Always"  # the port is not a tag
    assert default_pull_policy("busybox:1.36") == "IfNotPresent"
    assert default_pull_policy("busybox@sha256:" + "a" * 64) == "IfNotPresent"
    assert registry_of("busybox") == "docker.io" and registry_of("library/busybox") == "docker.io"
    assert registry_of("quay.io/x/y:1") == "quay.io" and registry_of("localhost/x") == "localhost"
    assert registry_of("reg:5000/x") == "reg:5000"


async def test_never_and_if_not_present() -> None:
    fake = FakeImages()
    fake.add("sha256:local", "kubeedge.local/app:1")
    assert await ensure_image(cri(fake), "kubeedge.local/app:1", "Never") == "sha256:local"
    with pytest.raises(ImagePullError) as err:
        await ensure_image(cri(fake), "kubeedge.local/other:1", "Never")
    assert err.value.reason == ERR_IMAGE_NEVER_PULL and "not present" in err.value.message
    assert await ensure_image(cri(fake), "kubeedge.local/app:1", "IfNotPresent") == "sha256:local"
    assert fake.pulls == []
    fake.pullable.add("quay.io/x/y:2")
    ref = await ensure_image(cri(fake), "quay.io/x/y:2", "")  # default for a tag: IfNotPresent
    assert fake.pulls == [("quay.io/x/y:2", None)] and ref == fake.images[ref].id
    with pytest.raises(ImagePullError) as err:
        await ensure_image(cri(fake), "quay.io/x/missing:2", "IfNotPresent")
    assert err.value.reason == ERR_IMAGE_PULL and "failed to resolve" in err.value.message
    with pytest.raises(ImagePullError, match="unknown imagePullPolicy"):
        await ensure_image(cri(fake), "quay.io/x/y:2", "Sometimes")


async def test_always_pulls_and_falls_back_offline() -> None:
    fake = FakeImages()
    fake.add("sha256:local", "kubeedge.local/app:latest")
    fake.pullable.add("kubeedge.local/app:latest")
    assert await ensure_image(cri(fake), "kubeedge.local/app:latest", "Always") == "sha256:local"
    assert len(fake.pulls) == 1
    fake.pullable.clear()  # the registry is out of reach: the local copy serves
    assert await ensure_image(cri(fake), "kubeedge.local/app:latest", "") == "sha256:local"
    with pytest.raises(ImagePullError) as err:
        await ensure_image(cri(fake), "kubeedge.local/app:latest", "Always", offline_fallback=False)
    assert err.value.reason == ERR_IMAGE_PULL
    with pytest.raises(ImagePullError):
        await ensure_image(cri(fake), "kubeedge.local/gone:latest", "Always")
    fake.down = True  # the runtime itself is down: not an image problem
    with pytest.raises(CriUnavailable):
        await ensure_image(cri(fake), "kubeedge.local/new:latest", "Always")


def dockerconfig(auths: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return {
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": raw},
    }


async def test_pull_secrets() -> None:
    b64 = base64.b64encode(b"robot:s3cret").decode()
    secrets = [
        {"metadata": {"name": "broken"}, "data": {".dockerconfigjson": "not base64 json"}},
        dockerconfig({"https://quay.io/v2/": {"auth": b64}}),
        dockerconfig({"https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}),
    ]
    quay = auth_for("quay.io/team/app:1", secrets)
    assert quay is not None and (quay.username, quay.password, quay.server_address) == (
        "robot",
        "s3cret",
        "quay.io",
    )
    hub = auth_for("busybox:1.36", secrets)
    assert hub is not None and (hub.username, hub.password) == ("hub", "pw")
    assert auth_for("ghcr.io/x/y:1", secrets) is None
    fake = FakeImages()
    fake.pullable.add("quay.io/team/app:1")
    await ensure_image(cri(fake), "quay.io/team/app:1", "Always", auth=quay)
    assert fake.pulls[-1][1] is quay


def gc_for(fake: FakeImages, capacity: int, available: int, now: list[float], **policy: Any) -> ImageGC:
    return ImageGC(
        cri(fake),
        policy=ImageGCPolicy(**policy),
        sandbox_image="kubeedge.local/pause:1",
        clock=lambda: now[0],
        fs_stats=lambda mountpoint: FsStats(capacity, available),
    )


async def test_gc_below_threshold_does_nothing() -> None:
    fake = FakeImages()
    fake.add("sha256:a", "a:1")
    gc = gc_for(fake, 100 * GiB, 20 * GiB, [1000.0], min_age_s=0)  # 80% used < 85%
    r = await gc.collect()
    assert r.removed == [] and r.usage_percent == pytest.approx(80.0)


async def test_gc_frees_lru_down_to_low_threshold_and_keeps_what_is_needed() -> None:
    fake = FakeImages()
    now = [1000.0]
    for image_id, tag in [
        ("sha256:old", "old:1"),
        ("sha256:older", "older:1"),
        ("sha256:used", "used:1"),
        ("sha256:exited", "exited:1"),
        ("sha256:pause", "kubeedge.local/pause:1"),
        ("sha256:pinned", "pinned:1"),
        ("sha256:stuck", "stuck:1"),
    ]:
        fake.add(image_id, tag, size=3 * GiB, pinned=image_id == "sha256:pinned")
    fake.refuse_remove.add("sha256:stuck")
    running = api.Container(id="c1", image=api.ImageSpec(image="used:1"), image_ref="sha256:used")
    exited = api.Container(id="c2", image_ref="sha256:exited", state=api.CONTAINER_EXITED)
    fake.containers = [running, exited]
    # 90% used; down to 80% means freeing 10 GiB of the 100: four 3 GiB images if there were enough.
    gc = gc_for(fake, 100 * GiB, 10 * GiB, now, min_age_s=100)
    await gc.detect()  # first seen at t=1000
    fake.containers = [running, exited]
    now[0] = 1030.0
    fake.add("sha256:young", "young:1", size=3 * GiB)  # first seen now: too young to remove
    # "older" was in use until t=1030, so "old" is less recently used and goes first.
    fake.containers = [running, exited, api.Container(id="c3", image_ref="sha256:older")]
    await gc.detect()
    fake.containers = [running, exited]
    now[0] = 1100.0
    r = await gc.collect()
    assert r.wanted_bytes == 10 * GiB
    assert r.removed == ["sha256:old", "sha256:older"]
    assert r.freed_bytes == 6 * GiB  # short of the goal: nothing else may go
    assert set(fake.images) == {
        "sha256:used",
        "sha256:exited",
        "sha256:pause",
        "sha256:pinned",
        "sha256:stuck",
        "sha256:young",
    }
    now[0] = 1200.0
    r = await gc.collect()
    assert r.removed == ["sha256:young"] and gc.removed_total == 3


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ImageGCPolicy(high_threshold_percent=70, low_threshold_percent=80)
