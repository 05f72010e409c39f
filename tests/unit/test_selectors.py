"""Label and field selector parsing and matching."""

from __future__ import annotations

import pytest

from kubeedge.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    supported_field_selectors,
)

FULL = "a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j"


class TestLabelSelectorParse:
    def test_all_operators(self) -> None:
        sel = LabelSelector.parse(FULL)
        base = {"a": "b", "c": "d", "g": "x", "i": ""}
        assert sel.matches(base)
        assert sel.matches({**base, "e": "other", "h": "other"})
        assert not sel.matches({**base, "e": "f"})  # !=
        assert not sel.matches({**base, "g": "w"})  # in
        assert not sel.matches({**base, "h": "z"})  # notin
        assert not sel.matches({k: v for k, v in base.items() if k != "i"})  # exists
        assert not sel.matches({**base, "j": "1"})  # !j

    def test_empty_matches_everything(self) -> None:
        for text in ("", "   "):
            sel = LabelSelector.parse(text)
            assert sel.empty()
            assert sel.matches({}) and sel.matches(None) and sel.matches({"x": "y"})

    def test_notin_and_not_equals_match_missing_label(self) -> None:
        assert LabelSelector.parse("e!=f").matches({})
        assert LabelSelector.parse("h notin (z)").matches({})
        assert not LabelSelector.parse("g in (x)").matches({})

    def test_whitespace_and_empty_value(self) -> None:
        sel = LabelSelector.parse(" env in ( prod , dev ) , tier = ")
        assert sel.matches({"env": "dev", "tier": ""})
        assert not sel.matches({"env": "dev", "tier": "web"})

    def test_trailing_comma_in_set_is_empty_value(self) -> None:
        sel = LabelSelector.parse("x in (a,)")
        assert sel.matches({"x": ""}) and sel.matches({"x": "a"}) and not sel.matches({"x": "b"})

    def test_gt_lt(self) -> None:
        assert LabelSelector.parse("n>5").matches({"n": "6"})
        assert not LabelSelector.parse("n>5").matches({"n": "5"})
        assert LabelSelector.parse("n<5").matches({"n": "-1"})
        assert not LabelSelector.parse("n<5").matches({"n": "abc"})

    def test_equality_requirements(self) -> None:
        sel = LabelSelector.parse("a=b,c==d,e!=f,g in (x),h in (y,z),i")
        assert sel.equality_requirements() == {"a": "b", "c": "d", "g": "x"}

    def test_round_trip_string(self) -> None:
        sel = LabelSelector.parse(FULL)
        assert LabelSelector.parse(str(sel)).requirements == sel.requirements

    @pytest.mark.parametrize(
        "text",
        [
            "a b",
            "a=b,",
            ",a=b",
            "=b",
            "a in x",
            "a in (x",
            "a in ()",
            "a notin ()",
            "a=b=c",
            "!",
            "a>x",
            "a=(b)",
            "Foo_/x=y",
            "a=" + "v" * 64,
            "a=-bad",
            "x/y/z",
        ],
    )
    def test_syntax_errors(self, text: str) -> None:
        with pytest.raises(SelectorError):
            LabelSelector.parse(text)

    def test_error_message_names_the_problem(self) -> None:
        with pytest.raises(SelectorError, match="found 'b', expected"):
            LabelSelector.parse("a b")
        with pytest.raises(SelectorError, match="values set can't be empty"):
            LabelSelector.parse("a in ()")


class TestLabelSelectorFromApi:
    def test_none_matches_nothing(self) -> None:
        sel = LabelSelector.from_api(None)
        assert not sel.matches({}) and not sel.matches({"a": "b"})
        assert not sel.empty()

    def test_empty_object_matches_everything(self) -> None:
        sel = LabelSelector.from_api({})
        assert sel.empty() and sel.matches({"a": "b"}) and sel.matches(None)

    def test_match_labels_and_expressions(self) -> None:
        sel = LabelSelector.from_api(
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "team", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            }
        )
        ok = {"app": "web", "tier": "fe", "team": "x"}
        assert sel.matches(ok)
        assert not sel.matches({**ok, "env": "dev"})
        assert not sel.matches({**ok, "legacy": "1"})
        assert not sel.matches({**ok, "app": "db"})
        assert sel.equality_requirements() == {"app": "web"}

    @pytest.mark.parametrize(
        "sel",
        [
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            {"matchLabels": {"bad key": "x"}},
        ],
    )
    def test_invalid(self, sel: dict) -> None:
        with pytest.raises(SelectorError):
            LabelSelector.from_api(sel)


POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "edge-1", "hostNetwork": True},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
}


class TestFieldSelector:
    def test_parse_operators(self) -> None:
        sel = FieldSelector.parse("a=b,c==d,e!=f")
        assert sel.requirements() == [("a", "=", "b"), ("c", "=", "d"), ("e", "!=", "f")]
        assert sel.exact("a") == "b" and sel.exact("c") == "d"
        assert sel.exact("e") is None and sel.exact("zzz") is None

    def test_escapes(self) -> None:
        sel = FieldSelector.parse(r"metadata.name=a\,b\=c\\d\!e,x!=y")
        assert sel.requirements() == [("metadata.name", "=", "a,b=c\\d!e"), ("x", "!=", "y")]
        assert FieldSelector.parse(str(sel)).requirements() == sel.requirements()

    def test_empty_terms_and_text(self) -> None:
        assert FieldSelector.parse("").requirements() == []
        assert FieldSelector.parse("a=b,,c=d").requirements() == [("a", "=", "b"), ("c", "=", "d")]
        assert FieldSelector.parse("spec.nodeName=").exact("spec.nodeName") == ""

    @pytest.mark.parametrize("text", ["abc", "a=b=c", r"a=b\x", "a=b\\", "=x"])
    def test_errors(self, text: str) -> None:
        with pytest.raises(SelectorError):
            FieldSelector.parse(text)

    def test_matches_paths(self) -> None:
        assert FieldSelector.parse("metadata.name=web-1,spec.nodeName=edge-1").matches(POD)
        assert FieldSelector.parse("status.phase!=Pending").matches(POD)
        assert not FieldSelector.parse("status.phase=Pending").matches(POD)
        assert FieldSelector.parse("spec.hostNetwork=true").matches(POD)
        with pytest.raises(SelectorError):  # an unescaped ',' starts a new (here operator-less) term
            FieldSelector.parse("status.podIPs=10.0.0.1,fd00::1")
        assert FieldSelector.parse(r"status.podIPs=10.0.0.1\,fd00::1").matches(POD)

    def test_missing_field_compares_as_empty(self) -> None:
        assert FieldSelector.parse("spec.nodeName=").matches({"spec": {}})
        assert FieldSelector.parse("spec.nodeName!=x").matches({})
        assert FieldSelector.parse("status.podIP=").matches(POD)

    def test_typed_zero_values(self) -> None:
        assert FieldSelector.parse("spec.unschedulable=false").matches({"spec": {}})
        assert FieldSelector.parse("spec.unschedulable=true").matches({"spec": {"unschedulable": True}})
        assert FieldSelector.parse("status.replicas=0").matches({})
        assert FieldSelector.parse("status.successful=2").matches({"status": {"successful": 2}})

    def test_event_fields(self) -> None:
        event = {
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"},
            "reason": "Started",
            "source": {"component": "kubelet"},
            "type": "Normal",
        }
        sel = FieldSelector.parse(
            "involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u1,source=kubelet"
        )
        assert sel.matches(event)
        assert not FieldSelector.parse("type=Warning").matches(event)

    def test_validate_fields(self) -> None:
        sel = FieldSelector.parse("metadata.name=a,spec.nodeName=b")
        sel.validate_fields(None)
        sel.validate_fields(supported_field_selectors("Pod"))
        with pytest.raises(SelectorError, match=r"field label not supported: spec\.nodeName"):
            sel.validate_fields(supported_field_selectors("ConfigMap"))


def test_supported_field_selectors() -> None:
    common = {"metadata.name", "metadata.namespace"}
    assert supported_field_selectors("Widget") == common
    pod = supported_field_selectors("Pod")
    assert {"spec.nodeName", "status.phase", "status.podIP", "spec.schedulerName"} <= pod
    assert {"involvedObject.uid", "reason", "source", "type"} <= supported_field_selectors("Event")
    assert supported_field_selectors("Secret") == common | {"type"}
    assert supported_field_selectors("Node") == common | {"spec.unschedulable"}
    assert supported_field_selectors("Namespace") == common | {"status.phase"}
    assert supported_field_selectors("ReplicaSet") == common | {"status.replicas"}
    assert supported_field_selectors("Job") == common | {"status.successful"}
    # Callers may mutate the result without affecting later calls.
    pod.add("x")
    assert "x" not in supported_field_selectors("Pod")
