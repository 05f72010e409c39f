"""Kubernetes label and field selectors: parsing (query-string and API forms) and matching.

Pure functions only; the HTTP layer turns `SelectorError` into a 400 BadRequest Status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubeedge.apiserver.resources import Obj

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "supported_field_selectors",
]


class SelectorError(ValueError):
    """A malformed or unsupported selector; the message is shown to the client as-is."""


# --------------------------------------------------------------------------------------------------
# Label syntax (shared with validation.py through these helpers)

_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    f"validation is '{DNS1123_SUBDOMAIN_FMT}')"
)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
    f"is '{QUALIFIED_NAME_FMT}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    f"'12345', regex used for validation is '{LABEL_VALUE_FMT}')"
)


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(DNS1123_SUBDOMAIN_MSG)
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """Errors for a label/annotation key: `[dns-subdomain-prefix/]name` (upstream IsQualifiedName)."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        prefix_errs = dns1123_subdomain_errors(prefix)
        if prefix_errs:
            return ["prefix part " + e for e in prefix_errs]
    else:
        return [
            "a qualified name "
            + _QUALIFIED_NAME_MSG
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    errs = []
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME_RE.match(name):
        errs.append("name part " + _QUALIFIED_NAME_MSG)
    return errs


def label_value_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


# --------------------------------------------------------------------------------------------------
# Label selectors

# Operators as written in the query-string form; API-form operators are mapped onto these.
IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GT, LT = "exists", "!", "gt", "lt"

_API_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in (IN, EQUALS, DOUBLE_EQUALS):
            return present and value in self.values
        if self.op in (NOT_IN, NOT_EQUALS):
            return not present or value not in self.values
        if self.op == EXISTS:
            return present
        if self.op == DOES_NOT_EXIST:
            return not present
        # Gt/Lt: both sides must be integers; a non-integer label simply does not match.
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == GT else have < want

    def __str__(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == DOES_NOT_EXIST:
            return "!" + self.key
        if self.op in (IN, NOT_IN):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        sym = {GT: ">", LT: "<"}.get(self.op, self.op)
        return f"{self.key}{sym}{self.values[0]}"


def _new_requirement(key: str, op: str, values: Iterable[str]) -> Requirement:
    """Build a requirement after the same checks upstream's labels.NewRequirement makes."""
    vals = tuple(values)
    for err in qualified_name_errors(key):
        raise SelectorError(f'invalid label key "{key}": {err}')
    if op in (IN, NOT_IN) and not vals:
        raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
    if op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(vals) != 1:
        raise SelectorError("exact-match compatibility requires one single value")
    if op in (EXISTS, DOES_NOT_EXIST) and vals:
        raise SelectorError("values set must be empty for exists and does not exist")
    if op in (GT, LT):
        if len(vals) != 1:
            raise SelectorError("for 'Gt', 'Lt' operators, exactly one value is required")
        if not re.fullmatch(r"-?\d+", vals[0]):
            raise SelectorError(f"for 'Gt', 'Lt' operators, the value must be an integer: {vals[0]!r}")
    else:
        for v in vals:
            for err in label_value_errors(v):
                raise SelectorError(f'invalid label value: "{v}": {err}')
    return Requirement(key, op, vals)


# Lexer for the query-string form. Identifiers run until whitespace or one of the special characters.
_SPECIAL = set("!=,()<>")
_TOKEN_RE = re.compile(r"\s*(!=|==|=|!|,|\(|\)|<|>|[^\s!=,()<>]+)")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts every non-space character
            raise SelectorError(f"unable to parse requirement: unexpected input at {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _is_identifier(tok: str | None) -> bool:
    return tok is not None and tok[0] not in _SPECIAL


class _Parser:
    """Recursive-descent parser mirroring upstream's grammar:

    selector  := requirement (',' requirement)*
    requirement := ['!'] KEY | KEY op VALUE | KEY ('in'|'notin') '(' [VALUE (',' VALUE)*] ')'
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def fail(self, found: str | None, expected: str) -> SelectorError:
        shown = "end of string" if found is None else found
        return SelectorError(f"unable to parse requirement: found '{shown}', expected: {expected}")

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        if self.peek() is None:
            return reqs
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                return reqs
            if tok != ",":
                raise self.fail(tok, "',' or 'end of string'")
            if self.peek() is None:
                raise self.fail(None, "identifier after ','")

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok == "!":
            key = self.take()
            if not _is_identifier(key):
                raise self.fail(key, "identifier after '!'")
            assert key is not None
            return _new_requirement(key, DOES_NOT_EXIST, ())
        if not _is_identifier(tok):
            raise self.fail(tok, "'!' or identifier")
        assert tok is not None
        nxt = self.peek()
        if nxt is None or nxt == ",":
            return _new_requirement(tok, EXISTS, ())
        op = self.take()
        if op in ("in", "notin"):
            return _new_requirement(tok, op, self.value_set())
        if op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS, "<", ">"):
            return _new_requirement(tok, {"<": LT, ">": GT}.get(op, op), [self.single_value()])
        raise self.fail(op, "'=', '!=', '==', 'in', 'notin', '<' or '>'")

    def single_value(self) -> str:
        # `a=` is legal upstream and means "label a has the empty value".
        nxt = self.peek()
        if nxt is None or nxt == ",":
            return ""
        tok = self.take()
        if not _is_identifier(tok):
            raise self.fail(tok, "identifier")
        assert tok is not None
        return tok

    def value_set(self) -> list[str]:
        tok = self.take()
        if tok != "(":
            raise self.fail(tok, "'('")
        values: list[str] = []
        if self.peek() == ")":
            self.take()
            return values
        while True:
            tok = self.peek()
            # An empty slot, as in `(a,)`, is the empty value like upstream.
            if tok is not None and _is_identifier(tok):
                values.append(tok)
                self.pos += 1
            else:
                values.append("")
            tok = self.take()
            if tok == ")":
                return values
            if tok != ",":
                raise self.fail(tok, "',' or ')'")


class LabelSelector:
    """A conjunction of label requirements. `nothing()` (from a nil API selector) never matches."""

    def __init__(self, requirements: Iterable[Requirement] = (), *, match_nothing: bool = False) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(requirements)
        self.match_nothing = match_nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(match_nothing=True)

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the `labelSelector` query-string form; empty text selects everything."""
        if not text or not text.strip():
            return cls()
        return cls(_Parser(text).parse())

    @classmethod
    def from_api(cls, sel: Obj | None) -> LabelSelector:
        """A metav1.LabelSelector object. Like upstream, None selects nothing and {} selects everything."""
        if sel is None:
            return cls.nothing()
        if not isinstance(sel, dict):
            raise SelectorError("label selector must be an object")
        reqs = [
            _new_requirement(k, EQUALS, [str(v)]) for k, v in sorted((sel.get("matchLabels") or {}).items())
        ]
        for expr in sel.get("matchExpressions") or []:
            op = _API_OPERATORS.get(expr.get("operator", ""))
            if op is None:
                raise SelectorError(f'"{expr.get("operator", "")}" is not a valid label selector operator')
            reqs.append(_new_requirement(str(expr.get("key", "")), op, expr.get("values") or ()))
        return cls(reqs)

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.match_nothing and not self.requirements

    def equality_requirements(self) -> dict[str, str]:
        """Exact `label=value` constraints, usable to narrow a lookup through an index."""
        out: dict[str, str] = {}
        for r in self.requirements:
            if r.op in (EQUALS, DOUBLE_EQUALS) or (r.op == IN and len(r.values) == 1):
                out[r.key] = r.values[0]
        return out

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self.match_nothing else f"LabelSelector({str(self)!r})"


# --------------------------------------------------------------------------------------------------
# Field selectors

_FIELD_OPERATORS = ("!=", "==", "=")  # longest first, as upstream's splitTerm
_ESCAPABLE = "\\,=!"


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, escaped = [], [], False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        cur.append("\\")
    parts.append("".join(cur))
    return parts


def _split_term(term: str) -> tuple[str, str, str]:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in _FIELD_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
        i += 1
    raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")


def _unescape(value: str) -> str:
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in _ESCAPABLE:
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: invalid selector: unescaped {ch} in value")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


# Fields whose upstream value is computed rather than a plain path, with the value used when absent.
_FIELD_ALIASES = {"source": "source.component"}
_FIELD_ABSENT = {
    "spec.unschedulable": "false",
    "spec.hostNetwork": "false",
    "status.replicas": "0",
    "status.successful": "0",
}


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        # e.g. status.podIPs: [{"ip": ...}] is exposed upstream as a comma-joined list
        return ",".join(_render(v.get("ip", "") if isinstance(v, dict) else v) for v in value)
    if value is None:
        return ""
    return str(value)


def field_value(obj: Obj, field: str) -> str:
    """The string a field selector compares against; absent fields read as upstream's zero value."""
    cur: Any = obj
    for part in _FIELD_ALIASES.get(field, field).split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _FIELD_ABSENT.get(field, "")
        cur = cur[part]
    return _render(cur) or _FIELD_ABSENT.get(field, "")


class FieldSelector:
    """A conjunction of `field=value` / `field!=value` terms over an object's (dotted) fields."""

    def __init__(self, requirements: Iterable[tuple[str, str, str]] = ()) -> None:
        self._reqs: list[tuple[str, str, str]] = list(requirements)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        reqs: list[tuple[str, str, str]] = []
        for term in _split_unescaped(text or "", ","):
            if not term.strip():
                continue
            lhs, op, rhs = _split_term(term)
            field = _unescape(lhs).strip()
            if not field:
                raise SelectorError(f"invalid selector: '{term}'; field name must be non-empty")
            reqs.append((field, "!=" if op == "!=" else "=", _unescape(rhs)))
        return cls(reqs)

    def matches(self, obj: Obj) -> bool:
        for field, op, want in self._reqs:
            if (field_value(obj, field) == want) != (op == "="):
                return False
        return True

    def requirements(self) -> list[tuple[str, str, str]]:
        return list(self._reqs)

    def empty(self) -> bool:
        return not self._reqs

    def exact(self, field: str) -> str | None:
        for f, op, value in self._reqs:
            if f == field and op == "=":
                return value
        return None

    def validate_fields(self, allowed: set[str] | None) -> None:
        if allowed is None:
            return
        for field, _, _ in self._reqs:
            if field not in allowed:
                raise SelectorError(f"field label not supported: {field}")

    def __str__(self) -> str:
        def esc(s: str) -> str:
            return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")

        return ",".join(f"{f}{op}{esc(v)}" for f, op, v in self._reqs)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"


_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        }
    ),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "Secret": frozenset({"type"}),
    "Node": frozenset({"spec.unschedulable"}),
    "Namespace": frozenset({"status.phase"}),
    "ReplicaSet": frozenset({"status.replicas"}),
    "Job": frozenset({"status.successful"}),
}


def supported_field_selectors(kind: str) -> set[str]:
    """Field labels kube-apiserver accepts for a kind; CRD kinds get only the metadata ones."""
    return set(_COMMON_FIELDS | _KIND_FIELDS.get(kind, frozenset()))
