"""The images, built once per session (`make image` for each profile; incremental) and their root
partitions mounted read-only, shared by every module that boots them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image import machine as m


@pytest.fixture(scope="session")
def image_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kubeedge-images-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def edge_disk() -> Path:
    return m.build_image(m.PROFILE)


@pytest.fixture(scope="session")
def cloud_disk() -> Path:
    return m.build_image(m.CLOUD_PROFILE)


@pytest.fixture(scope="session")
def edge_root(edge_disk: Path, image_tmp: Path) -> Iterator[Path]:
    with m.mounted_root(edge_disk, image_tmp / "edge-root") as root:
        yield root


@pytest.fixture(scope="session")
def cloud_root(cloud_disk: Path, image_tmp: Path) -> Iterator[Path]:
    with m.mounted_root(cloud_disk, image_tmp / "cloud-root") as root:
        yield root
