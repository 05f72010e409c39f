"""fieldValidation and custom-resource schemas end to end, with the real kubectl.

kubectl 1.37 sends fieldValidation=Strict by default (`--validate=strict`), Warn for `--validate=warn`
and Ignore for `--validate=false`; the messages asserted here are kube-apiserver's, as kubectl prints them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from tests.apiserver_proc import ApiServerProc

TYPO = "spec.template.spec.containers[0].imagee"


@pytest.fixture
def ns(apiserver: ApiServerProc) -> str:
    name = f"fv-{uuid.uuid4().hex[:8]}"
    apiserver.kubectl("create", "namespace", name)
    return name


def deployment(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "nginx:1.27", **extra}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def kubectl_apply(srv: ApiServerProc, doc: dict[str, Any], *args: str) -> Any:
    return srv.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump(doc), check=False)


def get(srv: ApiServerProc, *args: str) -> Any:
    return json.loads(srv.kubectl("get", *args, "-o", "json").stdout)


def test_apply_strict_refuses_a_misspelled_field(apiserver: ApiServerProc, ns: str) -> None:
    res = kubectl_apply(apiserver, deployment("web", ns, imagee="x"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be '
        f'handled as a Deployment: strict decoding error: unknown field "{TYPO}"'
    )
    assert apiserver.kubectl("get", "deployment", "web", "-n", ns, check=False).returncode == 1


def test_apply_without_validation_drops_the_field(apiserver: ApiServerProc, ns: str) -> None:
    res = kubectl_apply(apiserver, deployment("quiet", ns, imagee="x"), "--validate=false")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "deployment.apps/quiet created"
    assert "Warning" not in res.stderr
    container = get(apiserver, "deployment", "quiet", "-n", ns)["spec"]["template"]["spec"]["containers"][0]
    assert "imagee" not in container and container["image"] == "nginx:1.27"


def test_apply_warn_prints_a_warning(apiserver: ApiServerProc, ns: str) -> None:
    res = kubectl_apply(apiserver, deployment("loud", ns, imagee="x", bogus=1), "--validate=warn")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "deployment.apps/loud created"
    # One Warning header per unknown field, in document order (yaml.safe_dump sorts the keys).
    assert res.stderr.splitlines() == [
        'Warning: unknown field "spec.template.spec.containers[0].bogus"',
        f'Warning: unknown field "{TYPO}"',
    ]
    container = get(apiserver, "deployment", "loud", "-n", ns)["spec"]["template"]["spec"]["containers"][0]
    assert "imagee" not in container


def test_reapply_with_a_typo_is_refused_as_an_invalid_patch(apiserver: ApiServerProc, ns: str) -> None:
    assert kubectl_apply(apiserver, deployment("again", ns)).returncode == 0
    res = kubectl_apply(apiserver, deployment("again", ns, imagee="x"))
    assert res.returncode == 1
    # Upstream quotes the strategic merge patch kubectl computed, in Go's %+v notation.
    assert res.stderr.startswith('The request is invalid: patch: Invalid value: "map[')
    assert res.stderr.strip().endswith(f'strict decoding error: unknown field "{TYPO}"')
    # A plain kubectl patch (no fieldValidation sent) gets the default, Warn.
    res = apiserver.kubectl("patch", "deployment", "again", "-n", ns, "-p", '{"spec":{"wat":1}}')
    assert res.stderr.strip() == 'Warning: unknown field "spec.wat"'
    assert "wat" not in get(apiserver, "deployment", "again", "-n", ns)["spec"]


def device(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": "edge-1", **spec},
    }


def test_device_unknown_field_and_wrong_type(apiserver: ApiServerProc, ns: str) -> None:
    res = kubectl_apply(apiserver, device("d1", ns, notInSchema=True))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Device in version "v1beta1" cannot be '
        'handled as a Device: strict decoding error: unknown field "spec.notInSchema"'
    )
    res = kubectl_apply(apiserver, device("d1", ns, properties=[{"name": "temp", "reportCycle": "x"}]))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        'The Device "d1" is invalid: spec.properties[0].reportCycle: Invalid value: "string": '
        'spec.properties[0].reportCycle in body must be of type integer: "string"'
    )
    # Warn keeps the object and drops the field.
    res = kubectl_apply(apiserver, device("d1", ns, notInSchema=True), "--validate=warn")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == 'Warning: unknown field "spec.notInSchema"'
    assert "notInSchema" not in get(apiserver, "device", "d1", "-n", ns)["spec"]


def widget_crd(group: str) -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "properties": {
            "size": {"type": "integer", "default": 3, "minimum": 1},
            "mode": {"type": "string", "enum": ["fast", "safe"], "default": "safe"},
            "tuning": {
                "type": "object",
                "default": {},
                "properties": {"level": {"type": "integer", "default": 7}},
            },
            "ports": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "protocol": {"type": "string", "default": "TCP"},
                    },
                },
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}},
                }
            ],
        },
    }


def test_crd_defaults_are_applied(apiserver: ApiServerProc, ns: str) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget_crd(group)))
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": ns},
        "spec": {"ports": [{"name": "http"}, {"name": "dns", "protocol": "UDP"}]},
    }
    res = kubectl_apply(apiserver, widget)
    assert res.returncode == 0, res.stderr
    spec = get(apiserver, f"widgets.{group}", "w1", "-n", ns)["spec"]
    assert spec == {
        "size": 3,
        "mode": "safe",
        "tuning": {"level": 7},
        "ports": [{"name": "http", "protocol": "TCP"}, {"name": "dns", "protocol": "UDP"}],
    }
    # Validation runs on the defaulted object; an enum violation is an Unsupported value.
    widget["spec"] = {"mode": "slow", "size": 0}
    res = kubectl_apply(apiserver, widget)
    assert res.returncode == 1
    assert 'spec.mode: Unsupported value: "slow": supported values: "fast", "safe"' in res.stderr
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in res.stderr
