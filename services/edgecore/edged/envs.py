"""Container environment as the kubelet builds it: `$(VAR)` expansion, env/envFrom and the downward API.

Pure functions over the pod and what the caller resolved beforehand (a `podspec.PodContext`). The
downward-API field and resource lookups live here because both env vars and downwardAPI volumes use them.
Where the kubelet iterates Go maps (random order), we keep declaration order so configs are reproducible.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

from kubeedge.kube.quantity import parse_quantity

if TYPE_CHECKING:
    from .podspec import PodContext

Obj = dict[str, Any]
V = TypeVar("V")


class ContainerConfigError(Exception):
    """The pod spec cannot be turned into a container config (missing ConfigMap, bad subPath, ...).

    The kubelet reports this as the waiting reason CreateContainerConfigError and retries on its own
    schedule; so does edged. Defined here (and re-exported by podspec) so envs need not import podspec."""

    reason = "CreateContainerConfigError"


# ---- $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion) --------------------------


def expand(s: str, env: Mapping[str, str] | Callable[[str], str | None]) -> str:
    """Expand `$(VAR)` from env; `$$` is a literal `$`; unknown or unterminated references stay as written.

    `env` is a mapping or a lookup returning None for "unknown" (so several sources can be chained)."""
    lookup: Callable[[str], str | None] = env.get if isinstance(env, Mapping) else env
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = s.find(")", i + 2)
            if close < 0:
                # An unterminated reference is kept verbatim (the rest of the string then copies through).
                out.append("$(")
                i += 2
                continue
            name = s[i + 2 : close]
            value = lookup(name)
            out.append(value if value is not None else f"$({name})")
            i = close + 1
        else:
            # A `$` that starts no expression is kept together with the character after it.
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def chain(*sources: Mapping[str, str]) -> Callable[[str], str | None]:
    """A lookup that tries each mapping in turn (the kubelet's MappingFuncFor)."""

    def lookup(name: str) -> str | None:
        for src in sources:
            if name in src:
                return src[name]
        return None

    return lookup


# ---- object helpers ------------------------------------------------------------------------------------


def configmap_data(cm: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in (cm.get("data") or {}).items()}


def secret_data(secret: Obj) -> dict[str, bytes]:
    """A Secret's data, base64-decoded (stored objects carry `data` only; stringData is folded in by the API)."""
    out: dict[str, bytes] = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True)
        except (binascii.Error, ValueError) as err:
            raise ContainerConfigError(f"secret key {k!r} is not valid base64") from err
    for k, v in (secret.get("stringData") or {}).items():
        out[str(k)] = str(v).encode()
    return out


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _namespace(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or "default")


# The kubelet's env var name rule (IsEnvVarName): a C identifier, with '.' and '-' also allowed.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def is_env_var_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


# ---- downward API: fields ------------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def go_quote(s: str) -> str:
    """Go's %q for the strings labels/annotations hold: double-quoted, backslash escapes."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(m: Mapping[str, str]) -> str:
    """Labels/annotations as the downward API prints them: sorted `key="value"` lines."""
    return "\n".join(f"{k}={go_quote(str(m[k]))}" for k in sorted(m))


def field_value(pod: Obj, field_path: str, ctx: PodContext | None = None) -> str:
    """The value of a downward-API fieldRef; status/spec fields that only the node knows come from ctx."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if field_path == "metadata.name":
        return str(meta.get("name", ""))
    if field_path == "metadata.namespace":
        return _namespace(pod)
    if field_path == "metadata.uid":
        return str(meta.get("uid", ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(field_path.split(".")[1]) or {})
    m = _SUBSCRIPT.match(field_path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if field_path == "spec.nodeName":
        return str(spec.get("nodeName") or (ctx.node_name if ctx else ""))
    if field_path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName", ""))
    if ctx is not None:
        if field_path == "status.podIP":
            return ctx.pod_ip
        if field_path == "status.podIPs":
            return ",".join(ctx.pod_ips or ((ctx.pod_ip,) if ctx.pod_ip else ()))
        if field_path == "status.hostIP":
            return ctx.node_ip
        if field_path == "status.hostIPs":
            return ctx.node_ip
    raise ContainerConfigError(f"unsupported downward API fieldPath {field_path!r}")


# ---- downward API: resources ---------------------------------------------------------------------------


def host_allocatable() -> dict[str, str]:
    """What the host offers, for limits a container leaves unset (the kubelet uses node allocatable)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        st = os.statvfs("/")
        storage = st.f_blocks * st.f_frsize
    except OSError:
        storage = 0
    return {"cpu": str(cpus), "memory": str(memory), "ephemeral-storage": str(storage)}


def _quantity(value: object, what: str) -> Fraction:
    try:
        return parse_quantity(value)  # type: ignore[arg-type]
    except (ValueError, ZeroDivisionError, TypeError) as err:
        raise ContainerConfigError(f"invalid quantity {value!r} for {what}") from err


def find_container(pod: Obj, name: str) -> Obj | None:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == name:
            return dict(c)
    return None


def resource_value(container: Obj, ref: Obj, allocatable: Mapping[str, str] | None = None) -> str:
    """A resourceFieldRef (limits.cpu, requests.memory, ...) divided by its divisor, rounded up like the kubelet.

    An unset limit is the node's allocatable amount; an unset request is the limit if set (API defaulting
    the kubelet repeats), else 0."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    if kind == "limits":
        raw = limits.get(name)
        if raw is None:
            raw = (allocatable if allocatable is not None else host_allocatable()).get(name, "0")
    else:
        raw = requests.get(name, limits.get(name, "0"))
    value = _quantity(raw, resource)
    divisor = _quantity(ref.get("divisor") or "1", f"{resource} divisor")
    if divisor <= 0:
        raise ContainerConfigError(f"divisor of {resource} must be positive")
    if name == "cpu":
        # MilliValue() on both sides, as in convertResourceCPUToString.
        milli, div_milli = math.ceil(value * 1000), math.ceil(divisor * 1000)
        return str(math.ceil(Fraction(milli, div_milli)))
    return str(math.ceil(Fraction(math.ceil(value)) / math.ceil(divisor)))


# ---- the container environment -------------------------------------------------------------------------


def _optional(ref: Obj) -> bool:
    return bool(ref.get("optional"))


def container_env(pod: Obj, container: Obj, ctx: PodContext) -> list[tuple[str, str]]:
    """The container's environment, in order: envFrom, then env (later entries win, keeping the first
    position), then service env vars the pod did not define. Raises ContainerConfigError like the kubelet
    for a missing non-optional ConfigMap/Secret/key."""
    ns = _namespace(pod)
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        items: Iterable[tuple[str, str]]
        if src.get("configMapRef") is not None:
            ref = src["configMapRef"]
            cm = ctx.configmaps.get(str(ref.get("name", "")))
            if cm is None:
                if _optional(ref):
                    continue
                raise ContainerConfigError(f'configmap "{ref.get("name", "")}" not found in namespace {ns}')
            items = configmap_data(cm).items()
        elif src.get("secretRef") is not None:
            ref = src["secretRef"]
            secret = ctx.secrets.get(str(ref.get("name", "")))
            if secret is None:
                if _optional(ref):
                    continue
                raise ContainerConfigError(f'secret "{ref.get("name", "")}" not found in namespace {ns}')
            items = ((k, v.decode(errors="replace")) for k, v in secret_data(secret).items())
        else:
            continue
        for key, value in items:
            # Keys that are not valid variable names are skipped (the kubelet records an event).
            if is_env_var_name(prefix + key):
                env[prefix + key] = value

    lookup = chain(env, ctx.service_env)
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        value = var.get("value")
        source = var.get("valueFrom")
        if value:
            env[name] = expand(str(value), lookup)
            continue
        if not source:
            env[name] = ""
            continue
        resolved = _value_from(pod, container, source, ctx, ns)
        if resolved is not None:
            env[name] = resolved

    out = list(env.items())
    out.extend((k, v) for k, v in ctx.service_env.items() if k not in env)
    return out


def _key_ref(
    ref: Obj, objects: Mapping[str, Obj], data_of: Callable[[Obj], Mapping[str, V]], kind: str, ns: str
) -> V | None:
    """A configMapKeyRef or secretKeyRef, with the kubelet's messages; None: optional and absent."""
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    obj = objects.get(name)
    if obj is None:
        if _optional(ref):
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found in namespace {ns}')
    data = data_of(obj)
    if key not in data:
        if _optional(ref):
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {ns}/{name}")
    return data[key]


def _value_from(pod: Obj, container: Obj, source: Obj, ctx: PodContext, ns: str) -> str | None:
    """One valueFrom; None means "optional and absent: define nothing"."""
    if source.get("fieldRef") is not None:
        return field_value(pod, str(source["fieldRef"].get("fieldPath", "")), ctx)
    if source.get("resourceFieldRef") is not None:
        ref = source["resourceFieldRef"]
        target = container
        if ref.get("containerName") and ref["containerName"] != container.get("name"):
            found = find_container(pod, str(ref["containerName"]))
            if found is None:
                raise ContainerConfigError(f"resourceFieldRef: no container {ref['containerName']!r}")
            target = found
        return resource_value(target, ref, ctx.node_allocatable or None)
    if source.get("configMapKeyRef") is not None:
        return _key_ref(source["configMapKeyRef"], ctx.configmaps, configmap_data, "ConfigMap", ns)
    if source.get("secretKeyRef") is not None:
        raw = _key_ref(source["secretKeyRef"], ctx.secrets, secret_data, "Secret", ns)
        return None if raw is None else raw.decode(errors="replace")
    raise ContainerConfigError(f"unsupported valueFrom {json.dumps(sorted(source))}")
