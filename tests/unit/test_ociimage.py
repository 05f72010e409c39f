"""The OCI archive builder: reproducible bytes, a valid image layout, and digests that verify."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubeedge.edgecore.edged.ociimage import (
    ANNOTATION_CONTAINERD_NAME,
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    OciImageSpec,
    build_image,
)

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(autouse=True)
def _busybox() -> None:
    if not BUSYBOX.exists():
        pytest.fail("needs /bin/busybox: run `make test` (installs busybox-static)", pytrace=False)


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out: dict[str, bytes] = {}
        for m in tar.getmembers():
            assert m.mtime == 0 and m.uid == 0 and m.gid == 0, m.name
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
        return out


def blob(files: dict[str, bytes], digest: str) -> bytes:
    algo, hexdigest = digest.split(":")
    assert algo == "sha256"
    data = files[f"blobs/sha256/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest
    return data


def load(files: dict[str, bytes], digest: str) -> Any:
    return json.loads(blob(files, digest))


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    spec = OciImageSpec(name="example.local/app:v1", cmd=("httpd", "-f"), env=("A=1",), working_dir="/www")
    a = build_image(tmp_path / "a.tar", spec)
    b = build_image(tmp_path / "b.tar", spec)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert (a.manifest_digest, a.config_digest) == (b.manifest_digest, b.config_digest)
    # Only the config (and so the manifest) depends on Cmd; the layer is shared.
    c = build_image(tmp_path / "c.tar", OciImageSpec(name="example.local/app:v1", cmd=("sleep", "1")))
    assert c.layer_digest == a.layer_digest
    assert c.config_digest != a.config_digest and c.manifest_digest != a.manifest_digest


def test_layout_index_and_digests_verify(tmp_path: Path) -> None:
    spec = OciImageSpec(name="example.local/app:v1", cmd=("httpd", "-f"), env=("A=1",), working_dir="/www")
    built = build_image(tmp_path / "img.tar", spec)
    files = read_archive(built.path)

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["mediaType"] == MEDIA_MANIFEST
    assert entry["annotations"][ANNOTATION_CONTAINERD_NAME] == "example.local/app:v1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert entry["digest"] == built.manifest_digest
    assert entry["size"] == len(blob(files, entry["digest"]))

    manifest = load(files, entry["digest"])
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == MEDIA_CONFIG
    assert manifest["config"]["digest"] == built.config_digest
    assert manifest["config"]["size"] == len(blob(files, built.config_digest))
    [layer_desc] = manifest["layers"]
    assert layer_desc["mediaType"] == MEDIA_LAYER_GZIP
    layer_gz = blob(files, layer_desc["digest"])
    assert layer_desc["size"] == len(layer_gz)

    config = load(files, built.config_digest)
    assert config["os"] == "linux" and config["architecture"] == entry["platform"]["architecture"]
    assert config["config"]["Cmd"] == ["httpd", "-f"]
    assert config["config"]["Env"] == ["A=1"]
    assert config["config"]["WorkingDir"] == "/www"
    # diff_ids are digests of the *uncompressed* layer.
    layer_tar = gzip.decompress(layer_gz)
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()],
    }
    # Every blob in the archive is referenced; nothing extra.
    blobs = {n for n in files if n.startswith("blobs/")}
    assert blobs == {
        f"blobs/sha256/{d.split(':')[1]}"
        for d in (entry["digest"], built.config_digest, layer_desc["digest"])
    }


def test_layer_holds_busybox_and_applets(tmp_path: Path) -> None:
    built = build_image(tmp_path / "img.tar")
    files = read_archive(built.path)
    manifest = load(files, built.manifest_digest)
    layer_tar = gzip.decompress(blob(files, manifest["layers"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        names = [m.name for m in tar.getmembers()]
        bb = members["bin/busybox"]
        assert bb.isfile() and bb.mode == 0o755
        f = tar.extractfile(bb)
        assert f is not None and f.read() == BUSYBOX.read_bytes()
        for applet in ("bin/sh", "bin/sleep", "bin/cat"):
            assert members[applet].issym() and members[applet].linkname == "/bin/busybox"
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
        assert b"root:x:0:0" in (tar.extractfile(members["etc/passwd"]) or io.BytesIO()).read()
    assert len(names) == len(set(names))
    # Defaults: a sandbox-friendly image (runs `sleep inf`).
    config = load(files, built.config_digest)
    assert config["config"]["Cmd"] == ["sleep", "inf"]
