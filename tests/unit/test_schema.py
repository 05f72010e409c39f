"""Schema handling of request bodies: unknown fields (fieldValidation) and the CR structural pipeline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeedge.apiserver import schema
from kubeedge.apiserver.crds import infos_for
from kubeedge.apiserver.resources import BUILTIN, ResourceInfo

ROOT = Path(__file__).resolve().parents[2]
BY_KIND = {r.kind: r for r in BUILTIN}


def cr_info(spec_schema: dict[str, Any], **root: Any) -> ResourceInfo:
    """A custom resource whose openAPIV3Schema has `spec_schema` under spec (plus extra root keys)."""
    s = {"type": "object", "properties": {"spec": spec_schema, **root.pop("props", {})}, **root}
    return ResourceInfo("example.com", "v1", "widgets", "Widget", True, schema=s, crd=True)


def cr(spec: Any, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
        **extra,
    }


def causes_of(info: ResourceInfo, obj: dict[str, Any]) -> list[tuple[str, str]]:
    _, causes, _ = schema.prune_default_validate(info, obj)
    return [(c["field"], c["message"]) for c in causes]


# --------------------------------------------------------------------------------------------------
# pruning


def test_prune_drops_undeclared_and_reports_sorted_paths():
    info = cr_info({"type": "object", "properties": {"a": {"type": "string"}}})
    obj = cr({"a": "x", "zz": 1, "b": {"c": 1}}, extra=True)
    obj["metadata"]["bogus"] = 1
    out, causes, pruned = schema.prune_default_validate(info, obj)
    assert out is obj and causes == []
    assert obj["spec"] == {"a": "x"} and "extra" not in obj
    assert pruned == ["extra", "metadata.bogus", "spec.b", "spec.zz"]
    assert obj["apiVersion"] == "example.com/v1" and obj["kind"] == "Widget"


def test_preserve_unknown_fields_keeps_unknown_but_prunes_declared_children():
    info = cr_info(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}},
        }
    )
    obj = cr({"free": {"deep": [1, {"x": 2}]}, "known": {"a": "x", "b": 1}})
    _, _, pruned = schema.prune_default_validate(info, obj)
    assert obj["spec"] == {"free": {"deep": [1, {"x": 2}]}, "known": {"a": "x"}}
    assert pruned == ["spec.known.b"]


def test_preserve_unknown_fields_at_root_keeps_everything():
    info = ResourceInfo(
        "example.com",
        "v1",
        "things",
        "Thing",
        True,
        schema={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        crd=True,
    )
    obj = cr({"anything": 1}, other={"x": 1})
    _, causes, pruned = schema.prune_default_validate(info, obj)
    assert (causes, pruned) == ([], [])
    assert obj["other"] == {"x": 1}


def test_additional_properties_map_prunes_inside_values():
    info = cr_info(
        {
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"port": {"type": "integer"}}},
                },
            },
        }
    )
    obj = cr({"labels": {"a": "b", "c": "d"}, "ports": {"http": {"port": 80, "junk": 1}}})
    _, causes, pruned = schema.prune_default_validate(info, obj)
    assert obj["spec"] == {"labels": {"a": "b", "c": "d"}, "ports": {"http": {"port": 80}}}
    assert pruned == ["spec.ports.http.junk"] and causes == []


def test_arrays_of_objects_are_pruned_per_item():
    info = cr_info(
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"n": {"type": "string"}}},
                }
            },
        }
    )
    obj = cr({"items": [{"n": "a"}, {"n": "b", "x": 1}]})
    _, _, pruned = schema.prune_default_validate(info, obj)
    assert pruned == ["spec.items[1].x"]


def test_embedded_resource_keeps_type_and_metadata():
    info = cr_info(
        {
            "type": "object",
            "properties": {
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}},
                }
            },
        }
    )
    tmpl = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": "1", "b": 2}}
    obj = cr({"template": tmpl})
    _, _, pruned = schema.prune_default_validate(info, obj)
    assert obj["spec"]["template"]["kind"] == "Pod" and obj["spec"]["template"]["metadata"] == {"name": "x"}
    assert pruned == ["spec.template.spec.b"]


def test_int_or_string_accepts_both_and_refuses_others():
    info = cr_info({"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": True}}})
    assert causes_of(info, cr({"port": 80})) == []
    assert causes_of(info, cr({"port": "http"})) == []
    assert causes_of(info, cr({"port": True})) == [
        (
            "spec.port",
            'Invalid value: "boolean": spec.port in body must be of type integer-or-string: "boolean"',
        )
    ]


# --------------------------------------------------------------------------------------------------
# defaulting


def test_defaults_fill_missing_fields_and_nested_objects_when_parent_exists():
    info = cr_info(
        {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "strategy": {
                    "type": "object",
                    "default": {},
                    "properties": {"type": {"type": "string", "default": "Rolling"}},
                },
                "absent": {"type": "object", "properties": {"x": {"type": "string", "default": "no"}}},
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"w": {"type": "integer", "default": 5}}},
                },
            },
        }
    )
    obj = cr({"items": [{}, {"w": 2}]})
    _, causes, _ = schema.prune_default_validate(info, obj)
    assert causes == []
    assert obj["spec"] == {
        "items": [{"w": 5}, {"w": 2}],
        "replicas": 1,
        "strategy": {"type": "Rolling"},
    }


def test_defaults_are_copies_and_null_non_nullable_gets_default():
    info = cr_info({"type": "object", "properties": {"tags": {"type": "array", "default": ["a"]}}})
    one, two = cr({}), cr({"tags": None})
    schema.prune_default_validate(info, one)
    schema.prune_default_validate(info, two)
    one["spec"]["tags"].append("b")
    assert two["spec"]["tags"] == ["a"]


def test_null_without_default_is_dropped_unless_nullable():
    info = cr_info(
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string", "nullable": True}},
        }
    )
    obj = cr({"a": None, "b": None})
    assert causes_of(info, obj) == []
    assert obj["spec"] == {"b": None}


# --------------------------------------------------------------------------------------------------
# validation rules


INT = {"type": "integer"}


@pytest.mark.parametrize(
    ("prop", "value", "expected"),
    [
        (INT, "string", 'Invalid value: "string": spec.v in body must be of type integer: "string"'),
        (INT, 1.5, 'Invalid value: "number": spec.v in body must be of type integer: "number"'),
        ({"type": "number"}, 3, None),
        (
            {"type": "boolean"},
            1,
            'Invalid value: "integer": spec.v in body must be of type boolean: "integer"',
        ),
        ({"type": "object"}, [1], 'Invalid value: "array": spec.v in body must be of type object: "array"'),
        (
            {"type": "string", "enum": ["a", "b"]},
            "c",
            'Unsupported value: "c": supported values: "a", "b"',
        ),
        (
            {"type": "integer", "minimum": 1},
            0,
            "Invalid value: 0: spec.v in body should be greater than or equal to 1",
        ),
        (
            {"type": "integer", "maximum": 10},
            11,
            "Invalid value: 11: spec.v in body should be less than or equal to 10",
        ),
        (
            {"type": "integer", "maximum": 10, "exclusiveMaximum": True},
            10,
            "Invalid value: 10: spec.v in body should be less than 10",
        ),
        (
            {"type": "integer", "multipleOf": 2},
            3,
            "Invalid value: 3: spec.v in body should be a multiple of 2",
        ),
        ({"type": "string", "maxLength": 3}, "abcd", "Too long: must have at most 3 bytes"),
        (
            {"type": "string", "minLength": 3},
            "ab",
            'Invalid value: "ab": spec.v in body should be at least 3 chars long',
        ),
        (
            {"type": "string", "pattern": "^[a-z]+$"},
            "A1",
            "Invalid value: \"A1\": spec.v in body should match '^[a-z]+$'",
        ),
        ({"type": "array", "maxItems": 1}, [1, 2], "Too many: 2: must have at most 1 items"),
        (
            {"type": "array", "minItems": 2},
            [1],
            "Invalid value: [1]: spec.v in body should have at least 2 items",
        ),
        (
            {"type": "object", "maxProperties": 1},
            {"a": 1, "b": 2},
            "Too many: 2: must have at most 1 properties",
        ),
        ({"type": "string", "nullable": True}, None, None),
    ],
)
def test_validation_rules(prop: dict[str, Any], value: Any, expected: str | None):
    prop = {**prop, "x-kubernetes-preserve-unknown-fields": True} if prop.get("type") == "object" else prop
    info = cr_info({"type": "object", "properties": {"v": prop}})
    got = causes_of(info, cr({"v": value}))
    assert got == ([] if expected is None else [("spec.v", expected)])


def test_type_error_reason_and_required():
    info = cr_info(
        {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "n": INT}}
    )
    _, causes, _ = schema.prune_default_validate(info, cr({"n": "x"}))
    assert causes == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.name"},
        {
            "reason": "FieldValueTypeInvalid",
            "message": 'Invalid value: "string": spec.n in body must be of type integer: "string"',
            "field": "spec.n",
        },
    ]


def test_required_at_root():
    info = cr_info({"type": "object"}, required=["spec"])
    assert causes_of(info, {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}}) == [
        ("spec", "Required value")
    ]


def test_list_type_set_and_map_uniqueness():
    info = cr_info(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                    },
                },
            },
        }
    )
    obj = cr({"tags": ["a", "b", "a"], "ports": [{"name": "x", "port": 1}, {"name": "x", "port": 2}]})
    assert causes_of(info, obj) == [
        ("spec.tags[2]", 'Duplicate value: "a"'),
        ("spec.ports[1]", 'Duplicate value: map[string]interface {}{"name":"x"}'),
    ]


def test_device_crd_reports_wrong_type_and_prunes_unknown():
    docs = list(yaml.safe_load_all((ROOT / "manifests/crds/devices.kubeedge.io.yaml").read_text()))
    info = next(i for d in docs for i in infos_for(d) if i.kind == "Device")
    obj = {
        "apiVersion": info.api_version,
        "kind": "Device",
        "metadata": {"name": "d"},
        "spec": {"bogus": 1, "properties": [{"name": "temp", "reportCycle": "x"}]},
    }
    _, causes, pruned = schema.prune_default_validate(info, obj)
    assert pruned == ["spec.bogus"]
    assert [c["field"] for c in causes] == ["spec.properties[0].reportCycle"]


def test_non_crd_passes_through():
    obj = {"spec": {"x": 1}}
    assert schema.prune_default_validate(BY_KIND["Pod"], obj) == (obj, [], [])


# --------------------------------------------------------------------------------------------------
# unknown fields of built-in kinds


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"any-key": "v"}, "annotations": {"a/b": "c"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "nginx",
                            "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                            "env": [{"name": "A", "value": "1"}],
                        }
                    ]
                },
            },
        },
    }


def test_valid_builtins_have_no_unknown_fields():
    for kind, obj in (
        ("Deployment", deployment()),
        ("Service", {"spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"a": "b"}}}),
        ("ConfigMap", {"data": {"any": "x"}, "binaryData": {"b": "eA=="}}),
        ("Pod", {"metadata": {"managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]}}),
    ):
        assert schema.unknown_fields(BY_KIND[kind], obj) == [], kind


def test_strict_reports_nested_unknown_fields_in_document_order():
    obj = deployment()
    obj["spec"]["foo"] = 1
    obj["spec"]["template"]["spec"]["containers"][0]["bar"] = 2
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["nope"] = 3
    obj["template"] = {}
    causes, warnings = schema.check_fields(BY_KIND["Deployment"], obj, "Strict")
    assert warnings == []
    assert [c["message"] for c in causes] == [
        'unknown field "spec.template.spec.containers[0].ports[0].nope"',
        'unknown field "spec.template.spec.containers[0].bar"',
        'unknown field "spec.foo"',
        'unknown field "template"',
    ]
    assert obj == deployment()  # dropped in every mode, as the Go decoder does
    err = schema.strict_error(BY_KIND["Deployment"], obj, causes[:1])
    assert (err.code, err.reason) == (400, "BadRequest")
    assert err.message == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].ports[0].nope"'
    )


def test_warn_is_the_default_and_ignore_is_silent():
    for mode, expect in (
        ("", ['unknown field "spec.x"']),
        ("Warn", ['unknown field "spec.x"']),
        ("Ignore", []),
    ):
        obj = {"spec": {"x": 1, "containers": []}}
        assert schema.check_fields(BY_KIND["Pod"], obj, mode) == ([], expect)
        assert obj == {"spec": {"containers": []}}


def test_maps_int_or_string_and_free_form_fields_are_leaves():
    svc = {"spec": {"ports": [{"port": 80, "targetPort": {"weird": 1}}], "selector": {"x": "y"}}}
    assert schema.unknown_fields(BY_KIND["Service"], svc) == []
    pod: dict[str, Any] = {
        "spec": {"containers": [{"name": "a", "resources": {"requests": {"example.com/gpu": "1"}}}]}
    }
    assert schema.unknown_fields(BY_KIND["Pod"], pod) == []
    pod["spec"]["nodeSelector"] = {"k": "v"}
    pod["spec"]["containers"][0]["resources"]["bogus"] = {}
    assert schema.unknown_fields(BY_KIND["Pod"], pod) == ["spec.containers[0].resources.bogus"]


def test_service_and_crd_and_event_models():
    assert schema.unknown_fields(BY_KIND["Service"], {"spec": {"clusterIPs": [], "typo": 1}}) == ["spec.typo"]
    crd = {
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                            "properties": {"spec": {"type": "object", "bogus": 1}},
                        }
                    },
                    "selectableFieldz": [],
                }
            ]
        }
    }
    assert schema.unknown_fields(BY_KIND["CustomResourceDefinition"], crd) == [
        "spec.versions[0].schema.openAPIV3Schema.properties.spec.bogus",
        "spec.versions[0].selectableFieldz",
    ]
    assert schema.unknown_fields(BY_KIND["Event"], {"involvedObject": {"kind": "Pod"}, "x": 1}) == ["x"]


def test_patched_object_does_not_blame_fields_already_stored():
    cur = {"spec": {"legacy": 1, "containers": []}}
    new = copy.deepcopy(cur)
    new["spec"]["fresh"] = 2
    causes, _ = schema.check_fields(BY_KIND["Pod"], new, "Strict", current=cur)
    assert [c["field"] for c in causes] == ["spec.fresh"]
    assert new == {"spec": {"containers": []}}


def test_custom_resources_use_pruning_for_unknown_fields():
    info = cr_info({"type": "object", "properties": {"a": {"type": "string"}}})
    obj = cr({"a": "x", "b": 1})
    assert schema.check_fields(info, obj, "Warn") == ([], ['unknown field "spec.b"'])
    assert obj["spec"] == {"a": "x"}


def test_patch_strict_error_and_go_values():
    assert schema.go_value({"spec": {"wat": 1, "a": [1.5, None, True, "s"]}}) == (
        "map[spec:map[a:[1.5 <nil> true s] wat:1]]"
    )
    err = schema.patch_strict_error("map[spec:map[wat:1]]", [{"message": 'unknown field "spec.wat"'}])
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message == (
        ' "" is invalid: patch: Invalid value: "map[spec:map[wat:1]]": '
        'strict decoding error: unknown field "spec.wat"'
    )
    assert err.details == {
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "map[spec:map[wat:1]]": strict decoding error: unknown field "spec.wat"',
                "field": "patch",
            }
        ]
    }
