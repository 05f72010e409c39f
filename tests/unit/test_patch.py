"""Unit tests for the PATCH engine (kubeedge.apiserver.patch)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeedge.apiserver.patch import (
    APPLY_CBOR,
    APPLY_YAML,
    JSON_PATCH,
    MERGE,
    STRATEGIC,
    PatchError,
    apply_patch,
    decode_apply_body,
    json_merge_patch,
    json_patch,
    server_side_apply,
    strategic_merge_patch,
    update_managed_fields,
)

T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-02T00:00:00Z"
T2 = "2024-01-03T00:00:00Z"


def names(items: list[dict[str, Any]]) -> list[Any]:
    return [i.get("name") for i in items]


def pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web", "tier": "fe"}},
        "spec": {
            "containers": [
                {
                    "name": "c1",
                    "image": "nginx:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "c2", "image": "busybox"},
                {"name": "c3", "image": "redis"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cm"}}],
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
        },
    }
    base["spec"].update(spec)
    return base


# ------------------------------------------------------------------------------------------------
# JSON merge patch


class TestJSONMergePatch:
    def test_null_deletes_and_objects_merge(self) -> None:
        target = {"a": "b", "c": {"d": "e", "f": "g"}}
        assert json_merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}

    def test_rfc7386_examples(self) -> None:
        cases: list[tuple[Any, Any, Any]] = [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
            ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
            ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
            (["a", "b"], ["c", "d"], ["c", "d"]),
            ({"a": "b"}, ["c"], ["c"]),
            ({"a": "foo"}, None, None),
            ({"a": "foo"}, "bar", "bar"),
            ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
            ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
            ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ]
        for target, patch, want in cases:
            assert json_merge_patch(target, patch) == want, (target, patch)

    def test_does_not_mutate(self) -> None:
        target = {"a": {"b": 1}}
        patch = {"a": {"c": {"d": 2}}}
        out = json_merge_patch(target, patch)
        out["a"]["c"]["d"] = 99
        assert target == {"a": {"b": 1}}
        assert patch == {"a": {"c": {"d": 2}}}

    def test_label_removal_via_apply_patch(self) -> None:
        cur = pod()
        out = apply_patch(MERGE, cur, b'{"metadata":{"labels":{"tier":null}}}', "Pod", True)
        assert out["metadata"]["labels"] == {"app": "web"}
        # Lists are replaced wholesale by a merge patch.
        out = apply_patch(MERGE, cur, b'{"spec":{"containers":[{"name":"x","image":"y"}]}}', "Pod", True)
        assert out["spec"]["containers"] == [{"name": "x", "image": "y"}]


# ------------------------------------------------------------------------------------------------
# JSON patch


class TestJSONPatch:
    doc: dict[str, Any] = {"a": {"b": [1, 2, 3], "c": "x"}, "k/s": 1, "t~": 2}

    def apply(self, *ops: dict[str, Any]) -> dict[str, Any]:
        return json_patch(self.doc, list(ops))

    def test_add(self) -> None:
        assert self.apply({"op": "add", "path": "/a/d", "value": {"e": 1}})["a"]["d"] == {"e": 1}
        assert self.apply({"op": "add", "path": "/a/b/1", "value": 9})["a"]["b"] == [1, 9, 2, 3]
        assert self.apply({"op": "add", "path": "/a/b/-", "value": 9})["a"]["b"] == [1, 2, 3, 9]
        assert self.apply({"op": "add", "path": "/a/b/3", "value": 9})["a"]["b"] == [1, 2, 3, 9]
        assert self.apply({"op": "add", "path": "/a/c", "value": None})["a"]["c"] is None
        # Adding the root replaces the whole document.
        assert self.apply({"op": "add", "path": "", "value": {"z": 1}}) == {"z": 1}

    def test_remove(self) -> None:
        out = self.apply({"op": "remove", "path": "/a/b/0"}, {"op": "remove", "path": "/a/c"})
        assert out["a"] == {"b": [2, 3]}

    def test_replace(self) -> None:
        out = self.apply(
            {"op": "replace", "path": "/a/c", "value": [1]}, {"op": "replace", "path": "/a/b/2", "value": 7}
        )
        assert out["a"] == {"b": [1, 2, 7], "c": [1]}

    def test_move(self) -> None:
        out = self.apply({"op": "move", "from": "/a/c", "path": "/z"})
        assert out["z"] == "x" and "c" not in out["a"]
        out = self.apply({"op": "move", "from": "/a/b/0", "path": "/a/b/-"})
        assert out["a"]["b"] == [2, 3, 1]
        assert self.apply({"op": "move", "from": "/a", "path": "/a"}) == self.doc

    def test_copy(self) -> None:
        out = self.apply({"op": "copy", "from": "/a/b", "path": "/copy"})
        assert out["copy"] == [1, 2, 3]
        out["copy"].append(4)
        assert out["a"]["b"] == [1, 2, 3], "copy must be deep"

    def test_test(self) -> None:
        assert self.apply({"op": "test", "path": "/a/b", "value": [1, 2, 3]}) == self.doc
        assert self.apply({"op": "test", "path": "/a/b/0", "value": 1.0}) == self.doc
        with pytest.raises(PatchError) as e:
            self.apply({"op": "test", "path": "/a/c", "value": "y"})
        assert e.value.code == 422 and e.value.reason == "Invalid"
        # JSON true is not the number 1.
        with pytest.raises(PatchError):
            json_patch({"x": 1}, [{"op": "test", "path": "/x", "value": True}])

    def test_escapes(self) -> None:
        out = self.apply({"op": "replace", "path": "/k~1s", "value": 10}, {"op": "remove", "path": "/t~0"})
        assert out["k/s"] == 10 and "t~" not in out
        with pytest.raises(PatchError):
            self.apply({"op": "remove", "path": "/t~2"})

    def test_atomic_and_non_mutating(self) -> None:
        before = copy.deepcopy(self.doc)
        with pytest.raises(PatchError):
            self.apply({"op": "remove", "path": "/a/c"}, {"op": "remove", "path": "/missing"})
        assert self.doc == before

    @pytest.mark.parametrize(
        "op",
        [
            {"op": "remove", "path": "/nope"},
            {"op": "replace", "path": "/nope", "value": 1},
            {"op": "add", "path": "/nope/deeper", "value": 1},
            {"op": "add", "path": "/a/b/5", "value": 1},
            {"op": "add", "path": "/a/b/01", "value": 1},
            {"op": "remove", "path": "/a/b/-"},
            {"op": "remove", "path": "/a/b/3"},
            {"op": "add", "path": "/a/c/x", "value": 1},
            {"op": "add", "path": "a/b", "value": 1},
            {"op": "add", "path": "/a/x"},
            {"op": "test", "path": "/a/c"},
            {"op": "move", "from": "/a", "path": "/a/b/x"},
            {"op": "move", "path": "/x"},
            {"op": "copy", "from": "/nope", "path": "/x"},
            {"op": "frobnicate", "path": "/a"},
            {"path": "/a"},
            {"op": "add", "value": 1},
            {"op": "remove", "path": ""},
            {"op": "replace", "path": "", "value": [1]},
        ],
    )
    def test_errors_are_422(self, op: dict[str, Any]) -> None:
        with pytest.raises(PatchError) as e:
            self.apply(op)
        assert e.value.code == 422
        assert e.value.reason == "Invalid"
        assert str(e.value)

    @pytest.mark.parametrize(
        "ops", [{"op": "add"}, "x", [1, 2], [{"op": "add", "path": "/a", "value": 1}, []]]
    )
    def test_bad_body_is_400(self, ops: Any) -> None:
        with pytest.raises(PatchError) as e:
            json_patch({}, ops)
        assert (e.value.code, e.value.reason) == (400, "BadRequest")

    def test_too_many_operations(self) -> None:
        ops = [{"op": "test", "path": "", "value": {}}] * 10001
        with pytest.raises(PatchError) as e:
            json_patch({}, ops)
        assert e.value.code == 413

    def test_via_apply_patch(self) -> None:
        cur = pod()
        body = json.dumps([{"op": "replace", "path": "/spec/containers/1/image", "value": "alpine"}]).encode()
        out = apply_patch(JSON_PATCH, cur, body, "Pod", True)
        assert out["spec"]["containers"][1]["image"] == "alpine"
        assert cur["spec"]["containers"][1]["image"] == "busybox"


# ------------------------------------------------------------------------------------------------
# Strategic merge patch


class TestStrategicMergePatch:
    def test_container_merge_by_name_keeps_others(self) -> None:
        cur = pod()
        out = strategic_merge_patch(cur, {"spec": {"containers": [{"name": "c2", "image": "alpine"}]}}, "Pod")
        cs = out["spec"]["containers"]
        assert names(cs) == ["c1", "c2", "c3"]
        assert cs[1] == {"name": "c2", "image": "alpine"}
        assert cs[0] == cur["spec"]["containers"][0]
        assert cur["spec"]["containers"][1]["image"] == "busybox", "target must not be mutated"

    def test_new_container_goes_first_like_upstream(self) -> None:
        # Without $setElementOrder upstream puts patch items before the server-only ones.
        out = strategic_merge_patch(pod(), {"spec": {"containers": [{"name": "c9", "image": "x"}]}}, "Pod")
        assert names(out["spec"]["containers"]) == ["c9", "c1", "c2", "c3"]

    def test_patch_order_reorders_named_items(self) -> None:
        patch = {"spec": {"containers": [{"name": "c3", "image": "x"}, {"name": "c1", "image": "y"}]}}
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert names(out["spec"]["containers"]) == ["c2", "c3", "c1"]

    def test_env_merge(self) -> None:
        patch = {
            "spec": {
                "containers": [
                    {"name": "c1", "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "9"}]}
                ]
            }
        }
        env = strategic_merge_patch(pod(), patch, "Pod")["spec"]["containers"][0]["env"]
        assert {e["name"]: e["value"] for e in env} == {"A": "9", "B": "2", "C": "3"}

    def test_ports_merge_by_container_port(self) -> None:
        patch = {"spec": {"containers": [{"name": "c1", "ports": [{"containerPort": 443, "name": "https"}]}]}}
        ports = strategic_merge_patch(pod(), patch, "Pod")["spec"]["containers"][0]["ports"]
        assert sorted(ports, key=lambda p: p["containerPort"]) == [
            {"containerPort": 80, "name": "http"},
            {"containerPort": 443, "name": "https"},
        ]

    def test_volume_mounts_merge_by_mount_path(self) -> None:
        patch = {
            "spec": {"containers": [{"name": "c1", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/x"}]}]}
        }
        vms = strategic_merge_patch(pod(), patch, "Pod")["spec"]["containers"][0]["volumeMounts"]
        assert {v["mountPath"] for v in vms} == {"/data", "/etc/x"}

    def test_patch_delete_list_element(self) -> None:
        patch = {"spec": {"containers": [{"name": "c2", "$patch": "delete"}]}}
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert names(out["spec"]["containers"]) == ["c1", "c3"]

    def test_patch_replace_list(self) -> None:
        patch = {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]

    def test_patch_replace_and_delete_map(self) -> None:
        out = strategic_merge_patch(pod(), {"metadata": {"labels": {"$patch": "replace", "new": "1"}}}, "Pod")
        assert out["metadata"]["labels"] == {"new": "1"}
        out = strategic_merge_patch(pod(), {"metadata": {"labels": {"$patch": "delete"}}}, "Pod")
        assert out["metadata"]["labels"] == {}
        out = strategic_merge_patch(pod(), {"metadata": {"labels": {"$patch": "merge", "x": "y"}}}, "Pod")
        assert out["metadata"]["labels"] == {"app": "web", "tier": "fe", "x": "y"}

    def test_set_element_order(self) -> None:
        patch = {
            "spec": {
                "$setElementOrder/containers": [{"name": "c3"}, {"name": "c1"}, {"name": "c2"}],
                "containers": [{"name": "c1", "image": "new"}],
            }
        }
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert names(out["spec"]["containers"]) == ["c3", "c1", "c2"]
        assert out["spec"]["containers"][1]["image"] == "new"

    def test_set_element_order_with_new_and_deleted_items(self) -> None:
        patch = {
            "spec": {
                "$setElementOrder/containers": [{"name": "c1"}, {"name": "c4"}, {"name": "c3"}],
                "containers": [{"name": "c4", "image": "x"}, {"name": "c2", "$patch": "delete"}],
            }
        }
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert names(out["spec"]["containers"]) == ["c1", "c4", "c3"]

    def test_set_element_order_must_cover_patch(self) -> None:
        patch = {
            "spec": {
                "$setElementOrder/containers": [{"name": "c1"}],
                "containers": [{"name": "c4", "image": "x"}],
            }
        }
        with pytest.raises(PatchError) as e:
            strategic_merge_patch(pod(), patch, "Pod")
        assert e.value.code == 400

    def test_kubectl_client_side_apply_patch(self) -> None:
        # The shape kubectl apply sends on a second apply: change c2's image, drop env B from c1.
        patch = {
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}, {"name": "c3"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}],
                        "env": [{"$patch": "delete", "name": "B"}],
                        "name": "c1",
                    },
                    {"image": "busybox:2", "name": "c2"},
                ],
            },
        }
        out = strategic_merge_patch(pod(), patch, "Pod")
        cs = out["spec"]["containers"]
        assert names(cs) == ["c1", "c2", "c3"]
        assert cs[0]["env"] == [{"name": "A", "value": "1"}]
        assert cs[1]["image"] == "busybox:2"
        assert cs[0]["ports"] == pod()["spec"]["containers"][0]["ports"]
        assert "kubectl.kubernetes.io/last-applied-configuration" in out["metadata"]["annotations"]

    def test_finalizers_union_delete_and_order(self) -> None:
        cur = pod()
        cur["metadata"]["finalizers"] = ["f1", "f2"]
        out = strategic_merge_patch(cur, {"metadata": {"finalizers": ["f3", "f1"]}}, "Pod")
        assert sorted(out["metadata"]["finalizers"]) == ["f1", "f2", "f3"]
        out = strategic_merge_patch(cur, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}, "Pod")
        assert out["metadata"]["finalizers"] == ["f2"]
        patch = {"metadata": {"$setElementOrder/finalizers": ["f2", "f9", "f1"], "finalizers": ["f9"]}}
        assert strategic_merge_patch(cur, patch, "Pod")["metadata"]["finalizers"] == ["f2", "f9", "f1"]

    def test_retain_keys(self) -> None:
        patch = {
            "spec": {
                "volumes": [{"name": "cfg", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]
            }
        }
        vols = strategic_merge_patch(pod(), patch, "Pod")["spec"]["volumes"]
        assert vols[1] == {"name": "cfg", "secret": {"secretName": "s"}}
        bad = {"spec": {"volumes": [{"name": "cfg", "$retainKeys": ["name"], "secret": {"secretName": "s"}}]}}
        with pytest.raises(PatchError) as e:
            strategic_merge_patch(pod(), bad, "Pod")
        assert e.value.code == 400

    def test_deployment_strategy_retain_keys(self) -> None:
        dep = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
        }
        patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}}
        assert strategic_merge_patch(dep, patch, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}

    def test_tolerations_replaced(self) -> None:
        patch = {"spec": {"tolerations": [{"key": "c", "operator": "Exists"}]}}
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert out["spec"]["tolerations"] == [{"key": "c", "operator": "Exists"}]

    def test_labels_null_removes(self) -> None:
        out = strategic_merge_patch(pod(), {"metadata": {"labels": {"tier": None, "absent": None}}}, "Pod")
        assert out["metadata"]["labels"] == {"app": "web"}

    def test_nulls_dropped_in_new_values(self) -> None:
        patch = {
            "spec": {
                "containers": [{"name": "c9", "image": "x", "workingDir": None}],
                "x": {"a": None, "b": 1},
            }
        }
        out = strategic_merge_patch(pod(), patch, "Pod")
        assert out["spec"]["containers"][0] == {"name": "c9", "image": "x"}
        assert out["spec"]["x"] == {"b": 1}

    def test_service_ports_by_port(self) -> None:
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]},
        }
        out = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, "Service")
        assert {p["port"]: p["targetPort"] for p in out["spec"]["ports"]} == {80: 9090, 443: 8443}

    def test_workload_template_paths(self) -> None:
        for kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"):
            obj = {"kind": kind, "spec": {"template": {"spec": pod()["spec"]}}}
            patch = {"spec": {"template": {"spec": {"containers": [{"name": "c1", "image": "nginx:2"}]}}}}
            out = strategic_merge_patch(obj, patch, kind)
            cs = out["spec"]["template"]["spec"]["containers"]
            assert names(cs) == ["c1", "c2", "c3"], kind
            assert cs[0]["image"] == "nginx:2" and cs[0]["env"], kind

    def test_conditions_merge_by_type(self) -> None:
        node = {
            "kind": "Node",
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "DiskPressure", "status": "False"},
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": "n"},
                ],
            },
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]},
        }
        patch = {
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
            },
            "spec": {"taints": [{"key": "c", "effect": "NoExecute"}]},
        }
        out = strategic_merge_patch(node, patch, "Node")
        assert {c["type"]: c["status"] for c in out["status"]["conditions"]} == {
            "Ready": "False",
            "DiskPressure": "False",
        }
        assert {a["type"]: a["address"] for a in out["status"]["addresses"]} == {
            "InternalIP": "10.0.0.2",
            "Hostname": "n",
        }
        assert out["spec"]["taints"] == [{"key": "c", "effect": "NoExecute"}]

    def test_container_statuses_replaced(self) -> None:
        p = pod()
        p["status"] = {"containerStatuses": [{"name": "c1", "ready": True}, {"name": "c2", "ready": True}]}
        out = strategic_merge_patch(
            p, {"status": {"containerStatuses": [{"name": "c1", "ready": False}]}}, "Pod"
        )
        assert out["status"]["containerStatuses"] == [{"name": "c1", "ready": False}]

    def test_unknown_kind_replaces_lists(self) -> None:
        obj = {"kind": "Widget", "spec": {"items": [{"name": "a"}, {"name": "b"}]}}
        out = strategic_merge_patch(obj, {"spec": {"items": [{"name": "c"}]}}, "Widget")
        assert out["spec"]["items"] == [{"name": "c"}]

    @pytest.mark.parametrize(
        "patch",
        [
            {"spec": {"$bogus": 1}},
            {"spec": {"containers": [{"name": "c1", "$patch": "frobnicate"}]}},
            {"spec": {"$patch": "frobnicate"}},
            {"spec": {"containers": [{"image": "no-name"}]}},
            {"spec": {"containers": [{"$patch": "delete"}]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "f1"}},
            {"metadata": {"finalizers": [{"a": 1}]}},
        ],
    )
    def test_bad_patches_are_400(self, patch: dict[str, Any]) -> None:
        with pytest.raises(PatchError) as e:
            strategic_merge_patch(pod(), patch, "Pod")
        assert (e.value.code, e.value.reason) == (400, "BadRequest")

    def test_crd_schema_dollar_keys_are_data(self) -> None:
        crd = {"kind": "CustomResourceDefinition", "spec": {"versions": []}}
        patch = {"spec": {"x": {"$ref": "#/definitions/a"}}}
        out = strategic_merge_patch(crd, patch, "CustomResourceDefinition")
        assert out["spec"]["x"] == {"$ref": "#/definitions/a"}


# ------------------------------------------------------------------------------------------------
# apply_patch dispatch


class TestApplyPatch:
    def test_content_type_parameters_ignored(self) -> None:
        body = b'{"spec":{"containers":[{"name":"c2","image":"alpine"}]}}'
        out = apply_patch(STRATEGIC + "; charset=utf-8", pod(), body, "Pod", True)
        assert names(out["spec"]["containers"]) == ["c1", "c2", "c3"]

    def test_strategic_on_custom_resource_is_415(self) -> None:
        cr = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        with pytest.raises(PatchError) as e:
            apply_patch(STRATEGIC, cr, b"{}", "Widget", False)
        assert (e.value.code, e.value.reason) == (415, "UnsupportedMediaType")
        assert str(e.value) == (
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        )
        # Merge patch is fine on a custom resource.
        out = apply_patch(MERGE, cr, b'{"spec":{"a":1}}', "Widget", False)
        assert out["spec"] == {"a": 1}

    @pytest.mark.parametrize("ctype", ["text/plain", APPLY_CBOR, "application/json"])
    def test_unsupported_types(self, ctype: str) -> None:
        with pytest.raises(PatchError) as e:
            apply_patch(ctype, pod(), b"{}", "Pod", True)
        assert e.value.code == 415

    @pytest.mark.parametrize(
        ("ctype", "body"),
        [
            (MERGE, b"{not json"),
            (MERGE, b"[1]"),
            (STRATEGIC, b'"str"'),
            (JSON_PATCH, b"{}"),
            (JSON_PATCH, b"\xff\xfe\x00"),
            (MERGE, b'{"a": NaN}'),
        ],
    )
    def test_bad_bodies_are_400(self, ctype: str, body: bytes) -> None:
        with pytest.raises(PatchError) as e:
            apply_patch(ctype, pod(), body, "Pod", True)
        assert (e.value.code, e.value.reason) == (400, "BadRequest")

    def test_never_mutates_current(self) -> None:
        cur = pod()
        snapshot = copy.deepcopy(cur)
        apply_patch(
            STRATEGIC,
            cur,
            b'{"spec":{"containers":[{"name":"c1","env":[{"name":"Z","value":"z"}]}]}}',
            "Pod",
            True,
        )
        apply_patch(MERGE, cur, b'{"metadata":{"labels":null}}', "Pod", True)
        apply_patch(JSON_PATCH, cur, b'[{"op":"remove","path":"/spec/containers/0/env/0"}]', "Pod", True)
        apply_patch(
            APPLY_YAML,
            cur,
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
            "Pod",
            True,
            manager="m",
            now=T0,
        )
        assert cur == snapshot

    def test_apply_yaml(self) -> None:
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  day: 2024-01-01\n  n: '1'\n"
        out = apply_patch(APPLY_YAML, None, body, "ConfigMap", True, manager="kubectl", now=T0)
        assert out["data"] == {"day": "2024-01-01", "n": "1"}, "YAML timestamps must stay strings"
        assert out["metadata"]["managedFields"][0]["manager"] == "kubectl"
        with pytest.raises(PatchError) as e:
            apply_patch(APPLY_YAML, None, body, "ConfigMap", True)
        assert e.value.code == 400

    def test_decode_apply_body(self) -> None:
        assert decode_apply_body(b'{"kind": "Pod"}') == {"kind": "Pod"}
        assert decode_apply_body("kind: Pod\nspec: {a: [1, 2]}\n") == {"kind": "Pod", "spec": {"a": [1, 2]}}
        for bad in (b"- a\n- b\n", b"a: [", b"\xff"):
            with pytest.raises(PatchError) as e:
                decode_apply_body(bad)
            assert e.value.code == 400


# ------------------------------------------------------------------------------------------------
# Server-side apply


def deployment(replicas: int | None = 2, image: str = "nginx", extra_label: bool = True) -> dict[str, Any]:
    labels = {"app": "web", "tier": "fe"} if extra_label else {"app": "web"}
    d: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default", "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c1", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }
    if replicas is not None:
        d["spec"]["replicas"] = replicas
    return d


def entry(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    matches = [m for m in obj["metadata"].get("managedFields", []) if m["manager"] == manager]
    assert len(matches) == 1, obj["metadata"].get("managedFields")
    return matches[0]


def managers(obj: dict[str, Any]) -> list[str]:
    return [m["manager"] for m in obj["metadata"].get("managedFields", [])]


class TestServerSideApply:
    def test_create(self) -> None:
        cfg = deployment()
        out = server_side_apply(None, cfg, "Deployment", "mgr-a", False, T0)
        e = entry(out, "mgr-a")
        assert {k: e[k] for k in ("operation", "apiVersion", "time", "fieldsType")} == {
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
        }
        f = e["fieldsV1"]
        assert f["f:metadata"] == {"f:labels": {"f:app": {}, "f:tier": {}}}
        assert f["f:spec"]["f:replicas"] == {}
        c1 = f["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c1"}']
        assert c1["."] == {} and c1["f:image"] == {} and c1["f:name"] == {}
        assert c1["f:ports"]['k:{"containerPort":80,"protocol":"TCP"}'] == {".": {}, "f:containerPort": {}}
        assert "f:apiVersion" not in f and "f:name" not in f["f:metadata"]
        out_wo = dict(out, metadata={k: v for k, v in out["metadata"].items() if k != "managedFields"})
        assert out_wo == cfg
        assert "managedFields" not in cfg["metadata"]

    def test_set_list_members(self) -> None:
        cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["x/y"]}}
        out = server_side_apply(None, cfg, "ConfigMap", "m", False, T0)
        assert entry(out, "m")["fieldsV1"] == {"f:metadata": {"f:finalizers": {'v:"x/y"': {}}}}

    def test_reapply_removes_omitted_fields(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        cfg = deployment(extra_label=False)
        cfg["spec"]["template"]["spec"]["containers"].append({"name": "c2", "image": "busybox"})
        out = server_side_apply(live, cfg, "Deployment", "mgr-a", False, T1)
        assert out["metadata"]["labels"] == {"app": "web"}
        assert "f:tier" not in entry(out, "mgr-a")["fieldsV1"]["f:metadata"]["f:labels"]
        assert names(out["spec"]["template"]["spec"]["containers"]) == ["c1", "c2"]
        # Dropping c2 and replicas again removes them.
        out2 = server_side_apply(
            out, deployment(replicas=None, extra_label=False), "Deployment", "mgr-a", False, T2
        )
        assert names(out2["spec"]["template"]["spec"]["containers"]) == ["c1"]
        assert "replicas" not in out2["spec"]
        assert entry(out2, "mgr-a")["time"] == T2

    def test_omitted_field_kept_when_other_manager_owns_it(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        shared = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"tier": "fe"}},
        }
        live = server_side_apply(live, shared, "Deployment", "mgr-b", False, T1)
        assert sorted(managers(live)) == ["mgr-a", "mgr-b"]
        out = server_side_apply(live, deployment(extra_label=False), "Deployment", "mgr-a", False, T2)
        assert out["metadata"]["labels"] == {"app": "web", "tier": "fe"}

    def test_conflict_and_force(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        other = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 5},
        }
        with pytest.raises(PatchError) as e:
            server_side_apply(live, other, "Deployment", "mgr-b", False, T1)
        err = e.value
        assert (err.code, err.reason) == (409, "Conflict")
        assert str(err) == 'Apply failed with 1 conflict: conflict with "mgr-a": .spec.replicas'
        assert err.causes == [
            {"reason": "FieldManagerConflict", "message": 'conflict with "mgr-a"', "field": ".spec.replicas"}
        ]

        out = server_side_apply(live, other, "Deployment", "mgr-b", True, T1)
        assert out["spec"]["replicas"] == 5
        assert entry(out, "mgr-b")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
        assert "f:replicas" not in entry(out, "mgr-a")["fieldsV1"]["f:spec"]
        # mgr-a no longer owns replicas: re-applying without it leaves the value alone...
        out2 = server_side_apply(out, deployment(replicas=None), "Deployment", "mgr-a", False, T2)
        assert out2["spec"]["replicas"] == 5
        # ...and re-applying its old value now conflicts with mgr-b.
        with pytest.raises(PatchError) as e:
            server_side_apply(out, deployment(replicas=2), "Deployment", "mgr-a", False, T2)
        assert e.value.causes[0]["message"] == 'conflict with "mgr-b"'

    def test_same_value_is_shared_not_conflict(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        same = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 2},
        }
        out = server_side_apply(live, same, "Deployment", "mgr-b", False, T1)
        assert entry(out, "mgr-a")["fieldsV1"]["f:spec"]["f:replicas"] == {}
        assert entry(out, "mgr-b")["fieldsV1"]["f:spec"]["f:replicas"] == {}

    def test_conflict_with_update_manager_in_list_item(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        edited = copy.deepcopy(live)
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
        edited["spec"]["replicas"] = 3
        update_managed_fields(live, edited, "kubectl-edit", "Update", T1)
        with pytest.raises(PatchError) as e:
            server_side_apply(edited, deployment(), "Deployment", "mgr-a", False, T2)
        assert str(e.value) == (
            'Apply failed with 2 conflicts: conflicts with "kubectl-edit" using apps/v1:\n'
            "- .spec.replicas\n"
            '- .spec.template.spec.containers[name="c1"].image'
        )
        fields = {c["field"] for c in e.value.causes}
        assert fields == {".spec.replicas", '.spec.template.spec.containers[name="c1"].image'}

    def test_first_apply_to_untracked_object_conflicts(self) -> None:
        live = deployment(replicas=3)
        with pytest.raises(PatchError) as e:
            server_side_apply(live, deployment(replicas=4), "Deployment", "mgr-a", False, T0)
        assert "before-first-apply" in str(e.value)
        out = server_side_apply(live, deployment(replicas=3), "Deployment", "mgr-a", False, T0)
        assert sorted(managers(out)) == ["before-first-apply", "mgr-a"]

    def test_noop_reapply_returns_current(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        again = server_side_apply(live, deployment(), "Deployment", "mgr-a", False, T1)
        assert again == live
        assert entry(again, "mgr-a")["time"] == T0

    def test_server_metadata_preserved(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        live["metadata"].update(uid="u1", resourceVersion="7", creationTimestamp=T0)
        cfg = deployment(image="nginx:2")
        cfg["metadata"]["uid"] = "other"
        out = server_side_apply(live, cfg, "Deployment", "mgr-a", False, T1)
        assert (out["metadata"]["uid"], out["metadata"]["resourceVersion"]) == ("u1", "7")
        assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"

    @pytest.mark.parametrize(
        "containers",
        [[{"image": "x"}], [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]],
    )
    def test_invalid_associative_lists(self, containers: list[dict[str, Any]]) -> None:
        cfg = deployment()
        cfg["spec"]["template"]["spec"]["containers"] = containers
        with pytest.raises(PatchError) as e:
            server_side_apply(None, cfg, "Deployment", "mgr-a", False, T0)
        assert e.value.code == 422

    def test_associative_merge_keeps_other_items(self) -> None:
        live = server_side_apply(None, deployment(), "Deployment", "mgr-a", False, T0)
        sidecar = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "envoy"}]}}},
        }
        out = server_side_apply(live, sidecar, "Deployment", "injector", False, T1)
        assert names(out["spec"]["template"]["spec"]["containers"]) == ["c1", "side"]
        out2 = server_side_apply(out, deployment(image="nginx:2"), "Deployment", "mgr-a", False, T2)
        assert names(out2["spec"]["template"]["spec"]["containers"]) == ["c1", "side"]


class TestUpdateManagedFields:
    def test_create_and_update(self) -> None:
        new: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}},
            "data": {"k": "v"},
        }
        update_managed_fields(None, new, "kubectl-create", "Update", T0)
        e = entry(new, "kubectl-create")
        assert (e["operation"], e["apiVersion"], e["time"]) == ("Update", "v1", T0)
        assert e["fieldsV1"] == {
            "f:data": {".": {}, "f:k": {}},
            "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
        }

        newer = copy.deepcopy(new)
        newer["data"]["k"] = "v2"
        newer["data"]["k2"] = "x"
        update_managed_fields(new, newer, "editor", "Update", T1)
        assert entry(newer, "editor")["fieldsV1"] == {"f:data": {"f:k": {}, "f:k2": {}}}
        assert entry(newer, "kubectl-create")["fieldsV1"] == {
            "f:data": {},
            "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
        }

    def test_noop_update_adds_nothing(self) -> None:
        old = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
        new = copy.deepcopy(old)
        update_managed_fields(old, new, "m", "Update", T0)
        assert "managedFields" not in new["metadata"]

    def test_removed_fields_leave_sets(self) -> None:
        old: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"k": "v", "j": "w"},
        }
        update_managed_fields(None, old, "a", "Update", T0)
        new = copy.deepcopy(old)
        del new["data"]["j"]
        update_managed_fields(old, new, "b", "Update", T1)
        assert entry(new, "a")["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
        assert managers(new) == ["a"], "b changed nothing it could own"


# ------------------------------------------------------------------------------------------------
# Properties

json_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False),
)
keys = st.text(alphabet="abc/~$", min_size=1, max_size=3)
# No nulls anywhere: a null in a merge patch means "delete".
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=4)


def merge_diff(a: Any, b: Any) -> Any:
    """The RFC 7386 patch that turns a into b."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b
    patch: dict[str, Any] = {k: None for k in a if k not in b}
    for k, v in b.items():
        if k not in a:
            patch[k] = v
        elif a[k] != v or type(a[k]) is not type(v):
            patch[k] = merge_diff(a[k], v)
    return patch


def pointer(path: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_merge_patch_of_diff_reproduces_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert json_merge_patch(a, merge_diff(a, b)) == b


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_json_patch_add_then_remove_roundtrips(doc: dict[str, Any], extra: dict[str, Any]) -> None:
    new_keys = [k for k in extra if k not in doc]
    ops: list[dict[str, Any]] = [{"op": "add", "path": pointer([k]), "value": extra[k]} for k in new_keys]
    added = json_patch(doc, ops)
    assert all(added[k] == extra[k] for k in new_keys)
    assert json_patch(added, [{"op": "remove", "path": pointer([k])} for k in new_keys]) == doc
    # test ops succeed on every value that is there
    assert json_patch(doc, [{"op": "test", "path": pointer([k]), "value": v} for k, v in doc.items()]) == doc


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_strategic_without_merge_lists_equals_merge_patch(a: dict[str, Any], b: dict[str, Any]) -> None:
    # With no merge lists in play (an unknown kind) and no directives, SMP is a JSON merge patch.
    patch = merge_diff(a, b)

    def has_dollar(v: Any) -> bool:
        if isinstance(v, dict):
            return any(k.startswith("$") or has_dollar(x) for k, x in v.items())
        if isinstance(v, list):
            return any(has_dollar(x) for x in v)
        return False

    if has_dollar(patch):
        with pytest.raises(PatchError):
            strategic_merge_patch(a, patch, "Widget")
    else:
        assert strategic_merge_patch(a, patch, "Widget") == b
