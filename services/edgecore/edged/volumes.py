"""Pod volumes on the node: emptyDir (tmpfs for medium Memory), hostPath with type checks, and ConfigMap,
Secret, downwardAPI and projected volumes written with the atomic writer so running pods see updates.

Layout (the kubelet's): `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>`, plus per pod the
`etc-hosts` file and `containers/<name>/<attempt>.termination-log` files that podspec mounts. Secret and
projected volumes live on tmpfs, as in the kubelet, so secret bytes never reach the disk.
All filesystem work runs in a worker thread; one lock per pod serialises prepare/refresh/cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubeedge.kube.quantity import parse_quantity

from .atomicwriter import AtomicWriter, FileProjection, PayloadError
from .envs import (
    ContainerConfigError,
    configmap_data,
    field_value,
    find_container,
    resource_value,
    secret_data,
)
from .podspec import PodContext, etc_hosts, etc_hosts_path, termination_log_path

log = logging.getLogger(__name__)

Obj = dict[str, Any]

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
# The kubelet's defaults: ConfigMap/Secret/downwardAPI/projected files are world-readable unless the
# pod says otherwise; emptyDir is world-writable so any container user can use it.
DEFAULT_FILE_MODE = 0o644
EMPTY_DIR_MODE = 0o777
VOLUME_DIR_MODE = 0o755
POD_DIR_MODE = 0o750
TERMINATION_LOG_MODE = 0o666
HOST_ETC_HOSTS = Path("/etc/hosts")
MOUNTINFO = Path("/proc/self/mountinfo")

MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

_HOSTPATH_CHECKS: dict[str, tuple[Callable[[int], bool], str]] = {
    "Directory": (stat.S_ISDIR, "is not a directory"),
    "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
    "File": (stat.S_ISREG, "is not a file"),
    "FileOrCreate": (stat.S_ISREG, "is not a file"),
    "Socket": (stat.S_ISSOCK, "is not a socket file"),
    "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}

Payload = dict[str, FileProjection]


# ---- mounts --------------------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _mount_tmpfs(path: Path, options: str) -> None:
    rc = _c().mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")


def _umount(path: Path) -> None:
    if _c().umount2(os.fsencode(path), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY:
        # Still held (a container being torn down): detach now, the kernel frees it when released.
        if _c().umount2(os.fsencode(path), MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
    if err != errno.EINVAL:  # EINVAL: not a mount point (any more)
        raise OSError(err, f"umount {path}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below root, deepest first (the order to unmount them)."""
    # mountinfo lists resolved paths.
    root = Path(os.path.realpath(root))
    prefix = str(root).rstrip("/") + "/"
    found: list[Path] = []
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == str(root) or point.startswith(prefix):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: -len(p.parts))


def _is_mount(path: Path) -> bool:
    return Path(os.path.realpath(path)) in mounts_under(path)


# ---- payloads ------------------------------------------------------------------------------------------


def _mode(value: object, default: int) -> int:
    return default if value is None else int(value) & 0o777  # type: ignore[call-overload]


def _key_payload(
    kind: str,
    name: str,
    data: Mapping[str, bytes],
    items: list[Obj],
    mode: int,
    optional: bool,
) -> Payload:
    """configMap/secret items → files: every key when no items are listed, else only the listed ones."""
    if not items:
        return {k: FileProjection(v, mode) for k, v in data.items()}
    out: Payload = {}
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if optional:
                continue
            raise ContainerConfigError(f"{kind} {name!r} references non-existent {kind} key: {key}")
        out[str(item.get("path", key))] = FileProjection(data[key], _mode(item.get("mode"), mode))
    return out


def _configmap_payload(src: Obj, configmaps: Mapping[str, Obj], mode: int, ns: str) -> Payload:
    name = str(src.get("name", ""))
    optional = bool(src.get("optional"))
    cm = configmaps.get(name)
    if cm is None:
        if not optional:
            raise ContainerConfigError(f'configmap "{name}" not found in namespace {ns}')
        cm = {}
    data: dict[str, bytes] = {k: v.encode() for k, v in configmap_data(cm).items()}
    for k, v in (cm.get("binaryData") or {}).items():
        data[str(k)] = secret_data({"data": {k: v}})[str(k)]
    return _key_payload("configmap", name, data, list(src.get("items") or []), mode, optional)


def _secret_payload(src: Obj, secrets: Mapping[str, Obj], mode: int, ns: str) -> Payload:
    name = str(src.get("secretName") or src.get("name") or "")
    optional = bool(src.get("optional"))
    secret = secrets.get(name)
    if secret is None:
        if not optional:
            raise ContainerConfigError(f'secret "{name}" not found in namespace {ns}')
        secret = {}
    return _key_payload("secret", name, secret_data(secret), list(src.get("items") or []), mode, optional)


def _downward_payload(pod: Obj, items: list[Obj], mode: int) -> Payload:
    out: Payload = {}
    for item in items:
        if item.get("fieldRef") is not None:
            value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")))
        elif item.get("resourceFieldRef") is not None:
            ref = item["resourceFieldRef"]
            container = find_container(pod, str(ref.get("containerName", "")))
            if container is None:
                raise ContainerConfigError(f"downwardAPI: no container {ref.get('containerName')!r}")
            value = resource_value(container, ref)
        else:
            raise ContainerConfigError(f"downwardAPI item {item.get('path')!r} has no source")
        out[str(item.get("path", ""))] = FileProjection(value.encode(), _mode(item.get("mode"), mode))
    return out


def volume_payload(
    pod: Obj,
    volume: Obj,
    configmaps: Mapping[str, Obj],
    secrets: Mapping[str, Obj],
    sa_token: str | None,
) -> Payload | None:
    """The files of an atomic-writer volume, or None for other volume types."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "default")
    if volume.get("configMap") is not None:
        src = volume["configMap"]
        return _configmap_payload(src, configmaps, _mode(src.get("defaultMode"), DEFAULT_FILE_MODE), ns)
    if volume.get("secret") is not None:
        src = volume["secret"]
        return _secret_payload(src, secrets, _mode(src.get("defaultMode"), DEFAULT_FILE_MODE), ns)
    if volume.get("downwardAPI") is not None:
        src = volume["downwardAPI"]
        mode = _mode(src.get("defaultMode"), DEFAULT_FILE_MODE)
        return _downward_payload(pod, list(src.get("items") or []), mode)
    if volume.get("projected") is not None:
        src = volume["projected"]
        mode = _mode(src.get("defaultMode"), DEFAULT_FILE_MODE)
        out: Payload = {}
        for source in src.get("sources") or []:
            if source.get("configMap") is not None:
                out.update(_configmap_payload(source["configMap"], configmaps, mode, ns))
            elif source.get("secret") is not None:
                out.update(_secret_payload(source["secret"], secrets, mode, ns))
            elif source.get("downwardAPI") is not None:
                out.update(_downward_payload(pod, list(source["downwardAPI"].get("items") or []), mode))
            elif source.get("serviceAccountToken") is not None:
                path = str(source["serviceAccountToken"].get("path", "token"))
                if sa_token is None:
                    log.warning(
                        "pod %s/%s volume %s: no service account token available; %s not written",
                        ns,
                        (pod.get("metadata") or {}).get("name"),
                        volume.get("name"),
                        path,
                    )
                    continue
                out[path] = FileProjection(sa_token.encode(), mode)
            else:
                raise ContainerConfigError(f"projected volume {volume.get('name')!r}: unsupported source")
        return out
    return None


def _size_option(volume: Obj) -> str:
    limit = (volume.get("emptyDir") or {}).get("sizeLimit")
    if limit in (None, ""):
        return ""
    try:
        size = int(parse_quantity(limit))
    except (ValueError, ZeroDivisionError) as err:
        raise ContainerConfigError(f"emptyDir {volume.get('name')!r}: invalid sizeLimit {limit!r}") from err
    return f",size={size}" if size > 0 else ""


SUPPORTED = ("hostPath", "emptyDir", "configMap", "secret", "downwardAPI", "projected")


def check_volume(vol: Obj) -> None:
    """Refuse what cannot be set up, before anything is created."""
    name = str(vol.get("name", ""))
    if not name or "/" in name or name in (".", ".."):
        raise ContainerConfigError(f"bad volume name {name!r}")
    if not any(vol.get(kind) is not None for kind in SUPPORTED):
        kinds = sorted(k for k in vol if k != "name")
        raise ContainerConfigError(f"unsupported volume type {', '.join(kinds) or '(none)'}")
    if vol.get("emptyDir") is not None:
        medium = str(vol["emptyDir"].get("medium") or "")
        if medium not in ("", "Memory"):
            raise ContainerConfigError(f"emptyDir: unsupported medium {medium!r}")
        _size_option(vol)
    if vol.get("hostPath") is not None:
        path = str(vol["hostPath"].get("path", ""))
        if not path.startswith("/"):
            raise ContainerConfigError(f"hostPath {path} must be absolute")
        kind = str(vol["hostPath"].get("type") or "")
        if kind and kind not in _HOSTPATH_CHECKS:
            raise ContainerConfigError(f"hostPath {path}: unknown type {kind!r}")


def _check_host_path(path: Path, kind: str) -> None:
    if kind == "DirectoryOrCreate" and not path.exists():
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)
    check = _HOSTPATH_CHECKS.get(kind)
    if check is None:
        return  # no type: anything (or nothing) may be there
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = 0
    if not mode or not check[0](mode):
        raise ContainerConfigError(f"hostPath type check failed: {path} {check[1]}")


# ---- the manager ---------------------------------------------------------------------------------------


class VolumeManager:
    """Sets up, refreshes and removes the volumes of the node's pods under `root/pods/<uid>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods_root = root / "pods"
        self._locks: dict[str, asyncio.Lock] = {}

    def pod_dir(self, pod_uid: str) -> Path:
        if not pod_uid or "/" in pod_uid or pod_uid.startswith("."):
            raise ValueError(f"bad pod uid {pod_uid!r}")
        return self.pods_root / pod_uid

    def volume_dir(self, pod_uid: str, plugin: str, name: str) -> Path:
        return self.pod_dir(pod_uid) / "volumes" / PLUGIN_DIRS[plugin] / name

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    async def prepare(
        self,
        pod: Obj,
        configmaps: Mapping[str, Obj],
        secrets: Mapping[str, Obj],
        sa_token: str | None = None,
    ) -> dict[str, str]:
        """Set up every volume of the pod; volume name -> host path. Raises ContainerConfigError (before
        writing anything) for a missing non-optional ConfigMap/Secret/key or an unsupported volume."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        async with self._lock(uid):
            paths, _changed = await asyncio.to_thread(self._setup, pod, configmaps, secrets, sa_token, True)
            return paths

    async def refresh(
        self,
        pod: Obj,
        configmaps: Mapping[str, Obj],
        secrets: Mapping[str, Obj],
        sa_token: str | None = None,
    ) -> bool:
        """Rewrite ConfigMap/Secret/downwardAPI/projected volumes whose content changed; True if any did.
        A source that vanished keeps its last content (the kubelet does the same) and is logged."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        async with self._lock(uid):
            _paths, changed = await asyncio.to_thread(self._setup, pod, configmaps, secrets, sa_token, False)
            return changed

    async def prepare_container(self, pod: Obj, container: Obj, ctx: PodContext, attempt: int) -> None:
        """Write the pod's /etc/hosts file and create the container's empty termination-message file: the
        two files podspec.container_config mounts when ctx.pod_dir is set. Call before CreateContainer."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        async with self._lock(uid):
            await asyncio.to_thread(self._container_files, pod, container, ctx, attempt)

    async def cleanup(self, pod_uid: str) -> None:
        """Unmount the pod's tmpfs volumes and remove its dir (hostPath targets are never touched)."""
        async with self._lock(pod_uid):
            await asyncio.to_thread(self._remove, pod_uid)
        self._locks.pop(pod_uid, None)

    def orphans(self, keep_uids: set[str]) -> list[str]:
        """Pod dirs on disk whose pod is not in keep_uids (e.g. deleted while edged was down)."""
        try:
            entries = sorted(p.name for p in self.pods_root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []
        return [uid for uid in entries if uid not in keep_uids]

    # ---- worker-thread side ----

    def _setup(
        self,
        pod: Obj,
        configmaps: Mapping[str, Obj],
        secrets: Mapping[str, Obj],
        sa_token: str | None,
        strict: bool,
    ) -> tuple[dict[str, str], bool]:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        volumes = list((pod.get("spec") or {}).get("volumes") or [])
        # Resolve every payload first, so a missing ConfigMap fails the pod before anything is created.
        payloads: dict[str, Payload | None] = {}
        for vol in volumes:
            name = str(vol.get("name", ""))
            try:
                check_volume(vol)
                payloads[name] = volume_payload(pod, vol, configmaps, secrets, sa_token)
            except ContainerConfigError as err:
                if strict:
                    raise ContainerConfigError(f"volume {name!r}: {err}") from err
                log.warning(
                    "pod %s/%s volume %s not refreshed: %s",
                    meta.get("namespace"),
                    meta.get("name"),
                    name,
                    err,
                )
                payloads[name] = None
                continue
        pod_dir = self.pod_dir(uid)
        pod_dir.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)
        paths: dict[str, str] = {}
        changed = False
        for vol in volumes:
            name = str(vol.get("name", ""))
            try:
                path, wrote = self._setup_one(uid, vol, payloads.get(name), strict)
            except (OSError, PayloadError) as err:
                raise ContainerConfigError(f"volume {name!r}: {err}") from err
            if path is not None:
                paths[name] = str(path)
            changed = changed or wrote
        return paths, changed

    def _setup_one(
        self, uid: str, vol: Obj, payload: Payload | None, strict: bool
    ) -> tuple[Path | None, bool]:
        name = str(vol.get("name", ""))
        if vol.get("hostPath") is not None:
            src = vol["hostPath"]
            path = Path(str(src.get("path", "")))
            if strict:
                _check_host_path(path, str(src.get("type") or ""))
            return path, False
        if vol.get("emptyDir") is not None:
            medium = str(vol["emptyDir"].get("medium") or "")
            path = self.volume_dir(uid, "emptyDir", name)
            path.mkdir(parents=True, exist_ok=True)
            if medium == "Memory" and not _is_mount(path):
                _mount_tmpfs(path, f"mode={EMPTY_DIR_MODE:o}{_size_option(vol)}")
            path.chmod(EMPTY_DIR_MODE)
            return path, False
        for plugin in ("configMap", "secret", "downwardAPI", "projected"):
            if vol.get(plugin) is not None:
                path = self.volume_dir(uid, plugin, name)
                if not path.exists():
                    path.mkdir(mode=VOLUME_DIR_MODE, parents=True)
                if plugin in ("secret", "projected") and not _is_mount(path):
                    _mount_tmpfs(path, f"mode={VOLUME_DIR_MODE:o}")
                path.chmod(VOLUME_DIR_MODE)
                if payload is None:
                    return path, False  # refresh: the source is gone, keep what is there
                return path, AtomicWriter(path, what=f"pod {uid} volume {name}").write(payload)
        raise ContainerConfigError(f"volume {name!r}: unsupported volume type")

    def _container_files(self, pod: Obj, container: Obj, ctx: PodContext, attempt: int) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        pod_dir = self.pod_dir(uid)
        pod_dir.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)
        host_hosts = ""
        if (pod.get("spec") or {}).get("hostNetwork"):
            with contextlib.suppress(OSError):
                host_hosts = HOST_ETC_HOSTS.read_text()
        content = etc_hosts(pod, ctx, host_hosts).encode()
        hosts = Path(etc_hosts_path(str(pod_dir)))
        try:
            same = hosts.read_bytes() == content
        except FileNotFoundError:
            same = False
        if not same:
            # Rewritten in place (not renamed over): running containers bind-mount this inode.
            fd = os.open(hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, content)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
        term = Path(termination_log_path(str(pod_dir), str(container.get("name", "")), attempt))
        term.parent.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(term, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, TERMINATION_LOG_MODE)
        try:
            # Any container user may write its message; fchmod because the umask narrows open's mode.
            os.fchmod(fd, TERMINATION_LOG_MODE)
        finally:
            os.close(fd)

    def _remove(self, uid: str) -> None:
        pod_dir = self.pod_dir(uid)
        if not pod_dir.exists():
            return
        for point in mounts_under(pod_dir):
            _umount(point)
        left = mounts_under(pod_dir)
        if left:
            # Never rmtree through a mount: it could reach data that is not the pod's.
            raise OSError(errno.EBUSY, f"still mounted under {pod_dir}: {', '.join(map(str, left))}")
        shutil.rmtree(pod_dir)
        log.info("removed volumes of pod %s", uid)
