"""edgecore.yaml's edged section: our keys and KubeEdge's spellings of the CRI socket and DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeedge.edgecore import config as ec
from kubeedge.edgecore.edged.config import EdgedConfig


def doc(edged: dict[str, Any]) -> dict[str, Any]:
    return {"modules": {"edgeHub": {"websocket": {"server": "cloud:10000"}}, "edged": edged}}


def test_defaults_turn_edged_on_as_kubeedge_does() -> None:
    cfg = ec.from_dict(doc({"hostnameOverride": "n1"}))
    assert cfg.edged.enable is True
    assert cfg.edged_root == Path(ec.DEFAULT_DATA_DIR) / "edged"
    assert (cfg.edged.image_gc_high_threshold, cfg.edged.image_gc_low_threshold) == (80, 40)
    assert ec.from_dict(doc({"enable": False})).edged.enable is False


def test_reserved_and_image_gc_settings() -> None:
    cfg = ec.from_dict(
        doc(
            {
                "imageGCHighThreshold": 70,  # KubeEdge before 1.15
                "tailoredKubeletConfig": {
                    "systemReserved": {"cpu": "100m", "memory": "128Mi"},
                    "kubeReserved": {"memory": 64},
                    "imageGCLowThresholdPercent": 50,
                },
            }
        )
    )
    ed = cfg.edged
    assert ed.system_reserved == {"cpu": "100m", "memory": "128Mi"} and ed.kube_reserved == {"memory": "64"}
    assert (ed.image_gc_high_threshold, ed.image_gc_low_threshold) == (70, 50)
    with pytest.raises(ec.ConfigError, match="imageGCLowThreshold"):
        ec.from_dict(doc({"tailoredKubeletConfig": {"imageGCHighThresholdPercent": 30}}))
    with pytest.raises(ec.ConfigError, match=r"systemReserved\.memory"):
        ec.from_dict(doc({"tailoredKubeletConfig": {"systemReserved": {"memory": "lots"}}}))


def test_kubeedge_tailored_kubelet_config_is_understood() -> None:
    cfg = ec.from_dict(
        doc(
            {
                "enable": True,
                "hostnameOverride": "n1",
                "rootDirectory": "/var/lib/edged",
                "tailoredKubeletConfig": {
                    "containerRuntimeEndpoint": "unix:///run/k3s/containerd.sock",
                    "clusterDNS": ["169.254.96.16"],
                    "clusterDomain": "edge.local",
                    "cgroupRoot": "/edge",
                },
            }
        )
    )
    ed = cfg.edged
    assert (ed.enable, ed.runtime_endpoint, ed.cluster_dns, ed.cluster_domain, ed.cgroup_root) == (
        True,
        "unix:///run/k3s/containerd.sock",
        ("169.254.96.16",),
        "edge.local",
        "/edge",
    )
    assert cfg.edged_root == Path("/var/lib/edged")
    # Ours wins over KubeEdge's spellings; the pre-1.15 flag spelling still works.
    ours = ec.from_dict(
        doc({"runtimeEndpoint": "/run/a.sock", "tailoredKubeletConfig": {"containerRuntimeEndpoint": "/b"}})
    )
    assert ours.edged.runtime_endpoint == "/run/a.sock"
    old = ec.from_dict(doc({"tailoredKubeletFlag": {"remoteRuntimeEndpoint": "unix:///c.sock"}}))
    assert old.edged.runtime_endpoint == "unix:///c.sock"


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ec.ConfigError, match="runtimeEndpoint"):
        ec.from_dict(doc({"enable": True, "runtimeEndpoint": "tcp://1.2.3.4:1"}))
    with pytest.raises(ec.ConfigError, match="unknown key"):
        ec.from_dict(doc({"tailoredKubeletConfig": {"nosuch": 1}}))
    with pytest.raises(ec.ConfigError, match="clusterDNS"):
        ec.from_dict(doc({"tailoredKubeletConfig": {"clusterDNS": [1]}}))


def test_edged_config_validates() -> None:
    with pytest.raises(ValueError):
        EdgedConfig(node_name="")
    with pytest.raises(ValueError):
        EdgedConfig(node_name="n", initial_backoff_s=10, max_backoff_s=5)
    assert EdgedConfig(node_name="n").max_backoff_s == 300
