"""edged's settings (the kubelet subset KubeEdge's edgecore.yaml exposes under modules.edged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_RUNTIME_ENDPOINT: Final = "unix:///run/containerd/containerd.sock"
DEFAULT_ROOT_DIR: Final = "/var/lib/kubeedge/edged"
DEFAULT_POD_LOG_DIR: Final = "/var/log/pods"
# Pods' cgroups live under this parent (cgroupfs driver); edged removes each pod's dir on teardown.
DEFAULT_CGROUP_PARENT: Final = "/kubeedge"


@dataclass(frozen=True)
class EdgedConfig:
    node_name: str
    runtime_endpoint: str = DEFAULT_RUNTIME_ENDPOINT
    root_dir: Path = Path(DEFAULT_ROOT_DIR)
    pod_log_dir: Path = Path(DEFAULT_POD_LOG_DIR)
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    node_ip: str = ""
    # Informational: the runtime's own config decides the sandbox image (containerd's sandbox_image).
    sandbox_image: str = ""
    # CrashLoopBackOff / ImagePullBackOff: first delay, cap, and how long a container must have been
    # left alone (no restart) before its back-off starts from the first delay again (kubelet: twice the cap).
    initial_backoff_s: float = 10.0
    max_backoff_s: float = 300.0
    backoff_reset_s: float = 600.0
    # Every pod is synced at least this often even when nothing was observed to change.
    sync_period_s: float = 10.0
    # How often the runtime's containers are listed to notice exits (the kubelet's PLEG relist).
    relist_period_s: float = 1.0
    # When the runtime is unreachable: the first retry delay, doubling up to the cap.
    runtime_retry_s: float = 1.0
    runtime_retry_max_s: float = 30.0
    # Used when neither deletionGracePeriodSeconds nor terminationGracePeriodSeconds says otherwise.
    default_grace_s: int = 30

    def __post_init__(self) -> None:
        if not self.node_name:
            raise ValueError("edged needs a node name")
        for name in (
            "initial_backoff_s",
            "max_backoff_s",
            "sync_period_s",
            "relist_period_s",
            "runtime_retry_s",
            "runtime_retry_max_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"edged {name} must be positive")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("edged max_backoff_s must be at least initial_backoff_s")
