"""Container env resolution: $(VAR) expansion, every env source with its optional semantics, ordering."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubeedge.edgecore.edged.envs import (
    ContainerConfigError,
    container_env,
    expand,
    field_value,
    format_map,
    resource_value,
)
from kubeedge.edgecore.edged.podspec import ContainerConfigError as PodspecError
from kubeedge.edgecore.edged.podspec import PodContext


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "u-123",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": 'say "hi"\nbye'},
        },
        "spec": {"nodeName": "edge-1", "serviceAccountName": "robot", "containers": containers, **spec},
    }


def ctx(**kw: Any) -> PodContext:
    base: dict[str, Any] = {
        "node_name": "edge-1",
        "node_ip": "192.0.2.5",
        "pod_ip": "10.1.0.7",
        "pod_ips": ("10.1.0.7", "fd00::7"),
        "configmaps": {"cfg": {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "LEVEL": "3"}}},
        "secrets": {
            "creds": {"metadata": {"name": "creds"}, "data": {"password": b64("s3cret"), "USER": b64("bob")}}
        },
        "volume_paths": {},
        "node_allocatable": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"},
    }
    base.update(kw)
    return PodContext(**base)


def env_of(container: dict[str, Any], c: PodContext | None = None, **spec: Any) -> list[tuple[str, str]]:
    return container_env(pod([container], **spec), container, c or ctx())


def test_error_is_shared_with_podspec() -> None:
    assert PodspecError is ContainerConfigError
    assert ContainerConfigError.reason == "CreateContainerConfigError"


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("$(A)", {"A": "x"}, "x"),
        ("pre-$(A)-post", {"A": "x"}, "pre-x-post"),
        ("$(A)$(B)", {"A": "1", "B": "2"}, "12"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "x"}, "$(A)"),
        ("$$$(A)", {"A": "x"}, "$x"),
        ("$$", {}, "$"),
        ("$", {}, "$"),
        ("a$", {}, "a$"),
        ("$(A", {"A": "x"}, "$(A"),
        ("$(A $(B)", {"B": "y"}, "$(A $(B)"),
        ("$A", {"A": "x"}, "$A"),
        ("$()", {}, "$()"),
        ("$(A)", {"A": ""}, ""),
        ("no refs", {}, "no refs"),
        ("$(A)", {"A": "$(B)"}, "$(B)"),  # no recursive expansion
        ("ü$(A)ß", {"A": "é"}, "üéß"),
    ],
)
def test_expand(text: str, env: dict[str, str], want: str) -> None:
    assert expand(text, env) == want


def test_literal_values_and_expansion_uses_earlier_vars_and_service_env() -> None:
    c = {
        "name": "app",
        "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two"},
            {"name": "C", "value": "$(LATER)"},  # defined later: not expanded
            {"name": "LATER", "value": "x"},
            {"name": "D", "value": "$(SVC_HOST)"},
            {"name": "E"},
        ],
    }
    env = env_of(c, ctx(service_env={"SVC_HOST": "10.96.0.9", "A": "shadowed"}))
    assert env == [
        ("A", "one"),
        ("B", "one-two"),
        ("C", "$(LATER)"),
        ("LATER", "x"),
        ("D", "10.96.0.9"),
        ("E", ""),
        ("SVC_HOST", "10.96.0.9"),  # service env appended unless the pod defines the name
    ]


def test_env_from_with_prefix_then_env_overrides_in_place() -> None:
    c = {
        "name": "app",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}},
        ],
        "env": [{"name": "USER", "value": "alice"}, {"name": "X", "value": "$(CFG_mode)"}],
    }
    assert env_of(c) == [
        ("CFG_mode", "fast"),
        ("CFG_LEVEL", "3"),
        ("password", "s3cret"),
        ("USER", "alice"),
        ("X", "fast"),
    ]


def test_env_from_skips_invalid_names() -> None:
    c = {"name": "app", "envFrom": [{"configMapRef": {"name": "odd"}}]}
    cms = {"odd": {"data": {"1bad": "x", "ok.name-1": "y", "has space": "z"}}}
    assert env_of(c, ctx(configmaps=cms)) == [("ok.name-1", "y")]


def test_env_from_missing() -> None:
    c = {"name": "app", "envFrom": [{"configMapRef": {"name": "nope"}}]}
    with pytest.raises(ContainerConfigError, match='configmap "nope" not found'):
        env_of(c)
    c = {"name": "app", "envFrom": [{"secretRef": {"name": "nope"}}]}
    with pytest.raises(ContainerConfigError, match='secret "nope" not found'):
        env_of(c)
    c = {
        "name": "app",
        "envFrom": [
            {"configMapRef": {"name": "nope", "optional": True}},
            {"secretRef": {"name": "nope", "optional": True}},
        ],
    }
    assert env_of(c) == []


def test_key_refs() -> None:
    c = {
        "name": "app",
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        ],
    }
    assert env_of(c) == [("MODE", "fast"), ("PW", "s3cret")]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found in namespace shop'),
        (
            {"configMapKeyRef": {"name": "cfg", "key": "nokey"}},
            "couldn't find key nokey in ConfigMap shop/cfg",
        ),
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found in namespace shop'),
        ({"secretKeyRef": {"name": "creds", "key": "nokey"}}, "couldn't find key nokey in Secret shop/creds"),
    ],
)
def test_key_refs_missing(ref: dict[str, Any], message: str) -> None:
    c = {"name": "app", "env": [{"name": "V", "valueFrom": ref}]}
    with pytest.raises(ContainerConfigError) as err:
        env_of(c)
    assert str(err.value) == message
    # Optional: the variable is simply not defined (not even as empty).
    kind = next(iter(ref))
    c = {"name": "app", "env": [{"name": "V", "valueFrom": {kind: {**ref[kind], "optional": True}}}]}
    assert env_of(c) == []


def test_bad_base64_in_secret_is_a_config_error() -> None:
    c = {"name": "app", "env": [{"name": "V", "valueFrom": {"secretKeyRef": {"name": "bad", "key": "k"}}}]}
    with pytest.raises(ContainerConfigError, match="base64"):
        env_of(c, ctx(secrets={"bad": {"data": {"k": "!!!not base64"}}}))


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "u-123"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", 'say "hi"\nbye'),
        ("metadata.labels", 'app="web"\ntier="front"'),
        ("metadata.annotations", 'note="say \\"hi\\"\\nbye"'),
        ("spec.nodeName", "edge-1"),
        ("spec.serviceAccountName", "robot"),
        ("status.podIP", "10.1.0.7"),
        ("status.podIPs", "10.1.0.7,fd00::7"),
        ("status.hostIP", "192.0.2.5"),
    ],
)
def test_field_refs(path: str, want: str) -> None:
    c = {"name": "app", "env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}
    assert env_of(c) == [("F", want)]


def test_field_ref_node_name_falls_back_to_context_and_bad_paths_fail() -> None:
    p = pod([{"name": "app"}])
    del p["spec"]["nodeName"]
    assert field_value(p, "spec.nodeName", ctx(node_name="edge-9")) == "edge-9"
    with pytest.raises(ContainerConfigError, match="unsupported downward API fieldPath"):
        field_value(p, "spec.containers", ctx())
    # Volumes have no pod IP yet: status fields need a context.
    with pytest.raises(ContainerConfigError):
        field_value(p, "status.podIP")


def test_format_map_sorts() -> None:
    assert format_map({"b": "2", "a": "1"}) == 'a="1"\nb="2"'
    assert format_map({}) == ""


RES = {"limits": {"cpu": "1500m", "memory": "256Mi"}, "requests": {"cpu": "250m", "memory": "100Mi"}}


@pytest.mark.parametrize(
    ("resource", "divisor", "want"),
    [
        ("limits.cpu", None, "2"),  # 1.5 cores rounds up
        ("limits.cpu", "1m", "1500"),
        ("limits.cpu", "100m", "15"),
        ("requests.cpu", None, "1"),
        ("requests.cpu", "1m", "250"),
        ("limits.memory", None, str(256 * 2**20)),
        ("limits.memory", "1Mi", "256"),
        ("limits.memory", "1Gi", "1"),  # 0.25 Gi rounds up
        ("requests.memory", "1M", "105"),  # 104857600 / 10^6 = 104.86 -> 105
        ("limits.ephemeral-storage", "1Gi", "100"),  # unset limit: node allocatable
    ],
)
def test_resource_field_refs(resource: str, divisor: str | None, want: str) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    c = {"name": "app", "resources": RES, "env": [{"name": "R", "valueFrom": {"resourceFieldRef": ref}}]}
    assert env_of(c) == [("R", want)]


def test_resource_defaults() -> None:
    alloc = {"cpu": "4", "memory": "8Gi"}
    bare: dict[str, Any] = {"name": "app"}
    assert resource_value(bare, {"resource": "limits.cpu"}, alloc) == "4"
    assert resource_value(bare, {"resource": "limits.memory", "divisor": "1Gi"}, alloc) == "8"
    assert resource_value(bare, {"resource": "requests.cpu", "divisor": "1m"}, alloc) == "0"
    limited = {"name": "app", "resources": {"limits": {"memory": "64Mi"}}}
    assert resource_value(limited, {"resource": "requests.memory", "divisor": "1Mi"}, alloc) == "64"
    # Host facts when the caller knows no allocatable: at least one CPU and some memory.
    assert int(resource_value(bare, {"resource": "limits.cpu"})) >= 1
    assert int(resource_value(bare, {"resource": "limits.memory"})) > 0
    with pytest.raises(ContainerConfigError, match="unsupported"):
        resource_value(bare, {"resource": "limits.gpu"}, alloc)
    with pytest.raises(ContainerConfigError, match="invalid quantity"):
        resource_value(bare, {"resource": "limits.cpu", "divisor": "lots"}, alloc)


def test_resource_field_ref_of_another_container() -> None:
    side = {"name": "side", "resources": {"limits": {"memory": "32Mi"}}}
    app: dict[str, Any] = {
        "name": "app",
        "env": [
            {
                "name": "SIDE_MEM",
                "valueFrom": {
                    "resourceFieldRef": {
                        "containerName": "side",
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    }
                },
            }
        ],
    }
    p = pod([app, side])
    assert container_env(p, app, ctx()) == [("SIDE_MEM", "32")]
    app["env"][0]["valueFrom"]["resourceFieldRef"]["containerName"] = "ghost"
    with pytest.raises(ContainerConfigError, match="ghost"):
        container_env(p, app, ctx())
