"""Build a small OCI image archive from the host's static busybox, byte for byte reproducibly.

No registry is reachable from an air-gapped edge device (nor from our test machines), so images are
built locally and imported into the runtime (`ctr images import`, `keadm image import`). The archive is
an OCI image layout (oci-layout, index.json, blobs/sha256/...) in a plain tar; the single layer holds
/bin/busybox, a symlink for each applet at its usual path, and a minimal /etc. Every timestamp, owner and
ordering is fixed, so the same busybox binary and spec give the same bytes and the same image id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image after this index annotation; the OCI one carries just the tag.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_OCI_REF = "org.opencontainers.image.ref.name"
# Fixed timestamp for every file, tar entry and the image `created` field (reproducibility).
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
GZIP_LEVEL = 6

DEFAULT_IMAGE = "kubeedge.local/busybox:latest"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}

ETC_FILES: dict[str, bytes] = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
}
# Directories present in the layer besides those implied by applet paths; tmp is world-writable+sticky.
DIRS: dict[str, int] = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "proc": 0o755,
    "root": 0o700,
    "sbin": 0o755,
    "sys": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
}


@dataclass(frozen=True)
class OciImageSpec:
    """What goes into the image: its name and the container defaults (Cmd, Env, WorkingDir, Entrypoint)."""

    name: str = DEFAULT_IMAGE
    cmd: tuple[str, ...] = ("sleep", "inf")
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH_ENV,)
    working_dir: str = "/"
    busybox: Path = Path("/bin/busybox")


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    name: str
    manifest_digest: str
    # The config digest is what runtimes report as the image id (`sha256:...`).
    config_digest: str
    layer_digest: str


def host_arch() -> str:
    machine = platform.machine()
    try:
        return _GOARCH[machine]
    except KeyError:
        raise ValueError(f"no OCI architecture known for machine type {machine!r}") from None


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (`bin/sh`, `usr/bin/wget`...), as this busybox build lists them."""
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    paths = {line.strip().lstrip("/") for line in out.splitlines() if line.strip()}
    paths.discard("bin/busybox")
    return sorted(paths)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tar_member(
    name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_layer(busybox: Path) -> bytes:
    """The uncompressed layer tar."""
    applets = busybox_applets(busybox)
    dirs = dict(DIRS)
    for applet in applets:
        for parent in PurePosixPath(applet).parents:
            if str(parent) != ".":
                dirs.setdefault(str(parent), 0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_tar_member(d + "/", kind=tarfile.DIRTYPE, mode=dirs[d]))
        binary = busybox.read_bytes()
        tar.addfile(_tar_member("bin/busybox", mode=0o755, size=len(binary)), io.BytesIO(binary))
        for applet in applets:
            link = _tar_member(applet, kind=tarfile.SYMTYPE, mode=0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        for path in sorted(ETC_FILES):
            data = ETC_FILES[path]
            tar.addfile(_tar_member(path, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of the build's name and time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=EPOCH) as gz:
        gz.write(data)
    return buf.getvalue()


def _split_name(name: str) -> str:
    """The tag part of `repo:tag` (`latest` when there is none), for the OCI ref annotation."""
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def build_blobs(spec: OciImageSpec) -> tuple[dict[str, bytes], dict[str, Any], BuiltImage]:
    """All blobs by digest, the index document, and the digests (path left empty)."""
    arch = host_arch()
    layer_tar = build_layer(spec.busybox)
    layer = gzip_bytes(layer_tar)
    container_config: dict[str, Any] = {
        "Env": list(spec.env),
        "Cmd": list(spec.cmd),
        "WorkingDir": spec.working_dir,
    }
    if spec.entrypoint:
        container_config["Entrypoint"] = list(spec.entrypoint)
    config = canonical_json(
        {
            "architecture": arch,
            "os": "linux",
            "created": CREATED,
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
            "history": [{"created": CREATED, "created_by": "kubeedge ociimage: busybox"}],
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
    )
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {
                    ANNOTATION_CONTAINERD_NAME: spec.name,
                    ANNOTATION_OCI_REF: _split_name(spec.name),
                },
            }
        ],
    }
    blobs = {sha256(b): b for b in (layer, config, manifest)}
    built = BuiltImage(
        path=Path(),
        name=spec.name,
        manifest_digest=sha256(manifest),
        config_digest=sha256(config),
        layer_digest=sha256(layer),
    )
    return blobs, index, built


def build_image(dest: Path, spec: OciImageSpec | None = None) -> BuiltImage:
    """Write the OCI archive to `dest` (atomically: a partial archive is never left under that name)."""
    spec = spec or OciImageSpec()
    blobs, index, built = build_blobs(spec)
    entries: list[tuple[str, bytes]] = [
        ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", canonical_json(index)),
    ]
    entries += [(f"blobs/sha256/{digest.removeprefix('sha256:')}", blobs[digest]) for digest in sorted(blobs)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("blobs/", "blobs/sha256/"):
            tar.addfile(_tar_member(d, kind=tarfile.DIRTYPE, mode=0o755))
        for name, data in entries:
            tar.addfile(_tar_member(name, size=len(data)), io.BytesIO(data))
    tmp.replace(dest)
    return replace(built, path=dest)
