"""Pod spec → CRI configs, the way the kubelet builds them: sandbox (hostname, DNS, ports, security) and
containers (command/args/env, mounts, resources, security context, labels/annotations to find them again).

Pure: everything that needs I/O (ConfigMaps, Secrets, volume dirs, the pod IP, host resolv.conf) is
resolved by the caller into a `PodContext` first. The one exception is the subPath symlink check, which
must look at the filesystem to refuse a path that escapes its volume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeedge.kube.quantity import parse_quantity

from .cri import api
from .envs import ContainerConfigError, chain, container_env, expand, host_allocatable

__all__ = [
    "ANN_CONTAINER_HASH",
    "ANN_CONTAINER_PORTS",
    "ANN_PRESTOP_HANDLER",
    "ANN_RESTART_COUNT",
    "ANN_TERMINATION_GRACE",
    "ANN_TERMINATION_MESSAGE_PATH",
    "ANN_TERMINATION_MESSAGE_POLICY",
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "ContainerConfigError",
    "PodContext",
    "container_config",
    "container_hash",
    "dns_config",
    "etc_hosts",
    "pod_hostname",
    "qos_class",
    "sandbox_config",
    "termination_log_path",
]

Obj = dict[str, Any]

LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
ANN_RESTART_COUNT = "io.kubernetes.container.restartCount"
ANN_CONTAINER_HASH = "io.kubernetes.container.hash"
ANN_TERMINATION_GRACE = "io.kubernetes.pod.terminationGracePeriod"
ANN_TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
ANN_TERMINATION_MESSAGE_POLICY = "io.kubernetes.container.terminationMessagePolicy"
ANN_PRESTOP_HANDLER = "io.kubernetes.container.preStopHandler"
ANN_CONTAINER_PORTS = "io.kubernetes.container.ports"

# resolv.conf limits the kubelet enforces (glibc reads at most 3 nameservers; validation caps searches).
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCHES = 32
MAX_DNS_SEARCH_CHARS = 2048
DEFAULT_DNS_OPTIONS = ("ndots:5",)
MAX_HOSTNAME_LEN = 63

# CPU maths from the kubelet (pkg/kubelet/cm): shares per CPU and their bounds, CFS period and min quota.
SHARES_PER_CPU = 1024
MIN_SHARES = 2
MAX_SHARES = 262144
CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1000
# OOM score adjustments by QoS class (pkg/kubelet/qos). Guaranteed's -997 is clamped to 0 here: these
# machines cannot lower oom_score_adj (see containerd-here.md), and containerd would refuse it anyway.
GUARANTEED_OOM_ADJ = -997
BESTEFFORT_OOM_ADJ = 1000

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_GRACE_S = 30
ETC_HOSTS = "/etc/hosts"

# The kubelet's default masked and read-only /proc and /sys paths for non-privileged containers.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_PROTOCOLS = {"TCP": api.TCP, "UDP": api.UDP, "SCTP": api.SCTP}
_PROPAGATION = {
    None: api.PROPAGATION_PRIVATE,
    "None": api.PROPAGATION_PRIVATE,
    "HostToContainer": api.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": api.PROPAGATION_BIDIRECTIONAL,
}


@dataclass(frozen=True)
class PodContext:
    """Everything about a pod that is not in its spec, resolved by the caller before building configs."""

    node_name: str
    node_ip: str
    pod_ip: str
    pod_ips: tuple[str, ...]
    configmaps: Mapping[str, Obj]  # name -> ConfigMap in the pod's namespace (missing = absent)
    secrets: Mapping[str, Obj]
    volume_paths: Mapping[str, str]  # volume name -> host dir (from VolumeManager.prepare)
    service_env: Mapping[str, str] = field(default_factory=dict)
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    search_domains_host: tuple[str, ...] = ()
    host_resolv_nameservers: tuple[str, ...] = ()
    host_resolv_options: tuple[str, ...] = ()
    # The pod's own dir (VolumeManager.pod_dir). When set, containers get /etc/hosts and the termination
    # message file from it, and the caller must have run VolumeManager.prepare_container first.
    pod_dir: str = ""
    # Node allocatable (cpu, memory, ephemeral-storage) for downward-API limits a container leaves unset,
    # and the memory capacity for OOM scores; empty means "read the host".
    node_allocatable: Mapping[str, str] = field(default_factory=dict)


# ---- small accessors -----------------------------------------------------------------------------------


def _meta(pod: Obj) -> Obj:
    return pod.get("metadata") or {}


def _spec(pod: Obj) -> Obj:
    return pod.get("spec") or {}


def _ns(pod: Obj) -> str:
    return str(_meta(pod).get("namespace") or "default")


def _host_network(pod: Obj) -> bool:
    return bool(_spec(pod).get("hostNetwork"))


def _all_containers(pod: Obj) -> list[Obj]:
    spec = _spec(pod)
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---- hostname and DNS ----------------------------------------------------------------------------------


def pod_hostname(pod: Obj, cluster_domain: str) -> tuple[str, str]:
    """(hostname, domain) as the kubelet derives them: spec.hostname or the pod name, truncated to a DNS
    label; the domain `<subdomain>.<ns>.svc.<cluster domain>` only when a subdomain is set."""
    hostname = str(_spec(pod).get("hostname") or _meta(pod).get("name", ""))
    if len(hostname) > MAX_HOSTNAME_LEN:
        hostname = hostname[:MAX_HOSTNAME_LEN].rstrip("-.")
    subdomain = _spec(pod).get("subdomain")
    domain = f"{subdomain}.{_ns(pod)}.svc.{cluster_domain}" if subdomain else ""
    return hostname, domain


def _merge_options(base: list[str], extra: list[Obj]) -> list[str]:
    # The pod's dnsConfig options override same-named base options; "name" or "name:value".
    opts: dict[str, str | None] = {}
    for text in base:
        name, sep, value = text.partition(":")
        opts[name] = value if sep else None
    for op in extra:
        raw = op.get("value")
        opts[str(op.get("name", ""))] = None if raw in (None, "") else str(raw)
    return [name if value is None else f"{name}:{value}" for name, value in opts.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    out: list[str] = []
    total = 0
    for s in searches[:MAX_DNS_SEARCHES]:
        total += len(s) + (1 if out else 0)
        if total > MAX_DNS_SEARCH_CHARS:
            break
        out.append(s)
    return out


def dns_config(pod: Obj, ctx: PodContext) -> api.DNSConfig:
    """The sandbox's resolv.conf per dnsPolicy, as pkg/kubelet/network/dns does it."""
    spec = _spec(pod)
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host = _host_network(pod)
    if policy == "None":
        kind = "none"
    elif policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host):
        kind = "cluster"
    elif policy in ("ClusterFirst", "Default"):
        kind = "host"  # ClusterFirst on the host network falls back to Default
    else:
        kind = "cluster"  # unknown policies: the kubelet logs and uses ClusterFirst

    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if kind == "cluster" and not ctx.cluster_dns:
        kind = "host"  # no cluster DNS known: the kubelet falls back to Default
    if kind == "cluster":
        servers = list(ctx.cluster_dns)
        host_search = list(ctx.search_domains_host)
        if ctx.cluster_domain:
            d = ctx.cluster_domain
            searches = _dedupe([f"{_ns(pod)}.svc.{d}", f"svc.{d}", d, *host_search])
        else:
            searches = _dedupe(host_search)
        options = list(DEFAULT_DNS_OPTIONS)
    elif kind == "host":
        servers = list(ctx.host_resolv_nameservers)
        searches = list(ctx.search_domains_host)
        options = list(ctx.host_resolv_options)

    extra = spec.get("dnsConfig") or {}
    if extra:
        servers = _dedupe(servers + [str(s) for s in extra.get("nameservers") or []])
        searches = _dedupe(searches + [str(s) for s in extra.get("searches") or []])
        options = _merge_options(options, list(extra.get("options") or []))
    return api.DNSConfig(
        servers=servers[:MAX_DNS_NAMESERVERS], searches=_fit_searches(searches), options=options
    )


# ---- security contexts ---------------------------------------------------------------------------------


def _namespace_options(pod: Obj) -> api.NamespaceOption:
    spec = _spec(pod)
    if spec.get("hostPID"):
        pid = api.NODE
    elif spec.get("shareProcessNamespace"):
        pid = api.POD
    else:
        pid = api.CONTAINER
    return api.NamespaceOption(
        network=api.NODE if spec.get("hostNetwork") else api.POD,
        pid=pid,
        ipc=api.NODE if spec.get("hostIPC") else api.POD,
    )


def _seccomp(profile: Obj | None) -> api.SecurityProfile:
    # Without SeccompDefault (off in the kubelet by default) an unset profile means Unconfined.
    kind = (profile or {}).get("type")
    if kind == "RuntimeDefault":
        return api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)
    if kind == "Localhost":
        return api.SecurityProfile(
            profile_type=api.SecurityProfile.Localhost,
            localhost_ref=str((profile or {}).get("localhostProfile", "")),
        )
    return api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)


def _supplemental_groups(pod_sc: Obj) -> list[int]:
    groups: list[int] = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    groups.extend(int(g) for g in pod_sc.get("supplementalGroups") or [])
    return groups


def _privileged(container: Obj) -> bool:
    return bool((container.get("securityContext") or {}).get("privileged"))


# ---- sandbox -------------------------------------------------------------------------------------------


def _port_mappings(pod: Obj) -> list[api.PortMapping]:
    seen: set[tuple[int, int, str, str]] = set()
    out: list[api.PortMapping] = []
    for c in _spec(pod).get("containers") or []:
        for p in c.get("ports") or []:
            host_port = int(p.get("hostPort") or 0)
            if not host_port:
                continue
            proto = str(p.get("protocol") or "TCP")
            key = (int(p.get("containerPort") or 0), host_port, proto, str(p.get("hostIP") or ""))
            if key in seen:
                continue
            seen.add(key)
            out.append(
                api.PortMapping(
                    protocol=_PROTOCOLS.get(proto, api.TCP),
                    container_port=key[0],
                    host_port=host_port,
                    host_ip=key[3],
                )
            )
    return out


def pod_labels(pod: Obj) -> dict[str, str]:
    meta = _meta(pod)
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels[LABEL_POD_NAME] = str(meta.get("name", ""))
    labels[LABEL_POD_NAMESPACE] = _ns(pod)
    labels[LABEL_POD_UID] = str(meta.get("uid", ""))
    return labels


def sandbox_config(
    pod: Obj, ctx: PodContext, *, attempt: int, log_dir: str, cgroup_parent: str
) -> api.PodSandboxConfig:
    meta, spec = _meta(pod), _spec(pod)
    name, ns, uid = str(meta.get("name", "")), _ns(pod), str(meta.get("uid", ""))
    pod_sc = spec.get("securityContext") or {}
    hostname, _domain = pod_hostname(pod, ctx.cluster_domain)
    sc = api.LinuxSandboxSecurityContext(
        namespace_options=_namespace_options(pod),
        supplemental_groups=_supplemental_groups(pod_sc),
        privileged=any(_privileged(c) for c in _all_containers(pod)),
        seccomp=_seccomp(pod_sc.get("seccompProfile")),
    )
    if pod_sc.get("runAsUser") is not None:
        sc.run_as_user.value = int(pod_sc["runAsUser"])
    if pod_sc.get("runAsGroup") is not None:
        sc.run_as_group.value = int(pod_sc["runAsGroup"])
    sysctls = {str(s.get("name", "")): str(s.get("value", "")) for s in pod_sc.get("sysctls") or []}
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=ns, attempt=attempt),
        # On the host network the runtime keeps the node's hostname, as the kubelet leaves it empty.
        hostname="" if _host_network(pod) else hostname,
        log_directory=posixpath.join(log_dir, f"{ns}_{name}_{uid}"),
        dns_config=dns_config(pod, ctx),
        port_mappings=_port_mappings(pod),
        labels=pod_labels(pod),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        linux=api.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent, security_context=sc, sysctls=sysctls),
    )


# ---- resources and QoS ---------------------------------------------------------------------------------


def _milli(q: object) -> int:
    try:
        return math.ceil(parse_quantity(q) * 1000)  # type: ignore[arg-type]
    except (ValueError, ZeroDivisionError, TypeError) as err:
        raise ContainerConfigError(f"invalid quantity {q!r}") from err


def _bytes(q: object) -> int:
    try:
        return math.ceil(parse_quantity(q))  # type: ignore[arg-type]
    except (ValueError, ZeroDivisionError, TypeError) as err:
        raise ContainerConfigError(f"invalid quantity {q!r}") from err


def qos_class(pod: Obj) -> str:
    """Guaranteed, Burstable or BestEffort over cpu and memory of all containers (pkg/apis/core/helper/qos).

    Only positive amounts count; an unset request is its limit (the API server's defaulting, repeated here
    for pods that did not pass through it)."""
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    guaranteed = True
    for c in _all_containers(pod):
        res = c.get("resources") or {}
        lim = {k: _milli(v) for k, v in (res.get("limits") or {}).items() if k in ("cpu", "memory")}
        req = {k: _milli(v) for k, v in (res.get("requests") or {}).items() if k in ("cpu", "memory")}
        req = {**lim, **req}
        for k, v in req.items():
            if v > 0:
                requests[k] = requests.get(k, 0) + v
        positive = {k for k, v in lim.items() if v > 0}
        for k in positive:
            limits[k] = limits.get(k, 0) + lim[k]
        if positive != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def _memory_capacity(ctx: PodContext) -> int:
    raw = ctx.node_allocatable.get("memory") or host_allocatable()["memory"]
    return max(_bytes(raw), 1)


def _oom_score_adj(pod: Obj, container: Obj, ctx: PodContext) -> int:
    qos = qos_class(pod)
    if qos == "Guaranteed":
        adj = GUARANTEED_OOM_ADJ
    elif qos == "BestEffort":
        adj = BESTEFFORT_OOM_ADJ
    else:
        res = container.get("resources") or {}
        request = (res.get("requests") or {}).get("memory") or (res.get("limits") or {}).get("memory") or 0
        adj = 1000 - (1000 * _bytes(request)) // _memory_capacity(ctx)
        # Burstable stays above any Guaranteed score and below BestEffort, as in pkg/kubelet/qos.
        adj = max(adj, 1000 + GUARANTEED_OOM_ADJ)
        if adj == BESTEFFORT_OOM_ADJ:
            adj -= 1
    return max(adj, 0)


def _linux_resources(pod: Obj, container: Obj, ctx: PodContext) -> api.LinuxContainerResources:
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    cpu_limit = _milli(limits["cpu"]) if "cpu" in limits else 0
    cpu_request = _milli(requests["cpu"]) if "cpu" in requests else cpu_limit
    shares = MIN_SHARES if cpu_request == 0 else cpu_request * SHARES_PER_CPU // 1000
    shares = min(max(shares, MIN_SHARES), MAX_SHARES)
    quota = 0
    if cpu_limit:
        quota = max(cpu_limit * CFS_PERIOD_US // 1000, MIN_QUOTA_US)
    memory = _bytes(limits["memory"]) if "memory" in limits else 0
    return api.LinuxContainerResources(
        cpu_shares=shares,
        cpu_period=CFS_PERIOD_US,
        cpu_quota=quota,
        memory_limit_in_bytes=memory,
        oom_score_adj=_oom_score_adj(pod, container, ctx),
    )


# ---- container security --------------------------------------------------------------------------------


def _effective_sc(pod: Obj, container: Obj) -> Obj:
    """The container's securityContext with unset fields taken from the pod's (determineEffectiveSecurityContext)."""
    pod_sc = _spec(pod).get("securityContext") or {}
    sc = dict(container.get("securityContext") or {})
    for key in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions"):
        if sc.get(key) is None and pod_sc.get(key) is not None:
            sc[key] = pod_sc[key]
    return sc


def _check_non_root(container: Obj, sc: Obj, image_user: str | None) -> None:
    if not sc.get("runAsNonRoot"):
        return
    if sc.get("runAsUser") is not None:
        if int(sc["runAsUser"]) == 0:
            raise ContainerConfigError("container's runAsUser breaks non-root policy")
        return
    user = (image_user or "").split(":", 1)[0]
    if not user or user == "root":
        raise ContainerConfigError(
            f"container {container.get('name', '')!r} has runAsNonRoot and image will run as root"
        )
    if not user.isdigit():
        raise ContainerConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
        )
    if int(user) == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")


def _container_security(
    pod: Obj, container: Obj, image_user: str | None
) -> api.LinuxContainerSecurityContext:
    sc = _effective_sc(pod, container)
    _check_non_root(container, sc, image_user)
    caps = sc.get("capabilities") or {}
    privileged = bool(sc.get("privileged"))
    out = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(
            add_capabilities=[str(c) for c in caps.get("add") or []],
            drop_capabilities=[str(c) for c in caps.get("drop") or []],
        ),
        privileged=privileged,
        namespace_options=_namespace_options(pod),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        supplemental_groups=_supplemental_groups(_spec(pod).get("securityContext") or {}),
        # allowPrivilegeEscalation unset means "allowed" (AddNoNewPrivileges returns false).
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        seccomp=_seccomp(sc.get("seccompProfile")),
    )
    if sc.get("runAsUser") is not None:
        out.run_as_user.value = int(sc["runAsUser"])
    if sc.get("runAsGroup") is not None:
        out.run_as_group.value = int(sc["runAsGroup"])
    if not privileged and sc.get("procMount") != "Unmasked":
        out.masked_paths.extend(MASKED_PATHS)
        out.readonly_paths.extend(READONLY_PATHS)
    return out


# ---- mounts --------------------------------------------------------------------------------------------


def termination_log_path(pod_dir: str, container_name: str, attempt: int) -> str:
    """Host file behind the container's terminationMessagePath: one per attempt, so a restarted container
    never shows its predecessor's message (the kubelet uses a random name for the same reason)."""
    return posixpath.join(pod_dir, "containers", container_name, f"{attempt}.termination-log")


def etc_hosts_path(pod_dir: str) -> str:
    return posixpath.join(pod_dir, "etc-hosts")


def etc_hosts(pod: Obj, ctx: PodContext, host_hosts: str = "") -> str:
    """The kubelet-managed /etc/hosts: localhost lines and the pod's own name (or, on the host network,
    the node's file), then spec.hostAliases."""
    if _host_network(pod):
        lines = [host_hosts.rstrip("\n")] if host_hosts else []
    else:
        hostname, domain = pod_hostname(pod, ctx.cluster_domain)
        lines = [
            "# Kubernetes-managed hosts file.",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "fe00::0\tip6-localnet",
            "fe00::0\tip6-mcastprefix",
            "fe00::1\tip6-allnodes",
            "fe00::2\tip6-allrouters",
        ]
        for ip in ctx.pod_ips or ((ctx.pod_ip,) if ctx.pod_ip else ()):
            lines.append(f"{ip}\t{hostname}.{domain}\t{hostname}" if domain else f"{ip}\t{hostname}")
    aliases = _spec(pod).get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for a in aliases:
            lines.append(f"{a.get('ip', '')}\t" + "\t".join(str(h) for h in a.get("hostnames") or []))
    return "\n".join(lines) + "\n"


def _safe_subpath(volume_dir: str, sub_path: str) -> str:
    if posixpath.isabs(sub_path):
        raise ContainerConfigError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.split("/"):
        raise ContainerConfigError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    joined = posixpath.join(volume_dir, sub_path)
    # A symlink planted inside the volume (by a container) must not lead the bind mount out of it.
    real_vol, real = os.path.realpath(volume_dir), os.path.realpath(joined)
    if real != real_vol and not real.startswith(real_vol.rstrip("/") + "/"):
        raise ContainerConfigError(f"subpath {sub_path!r} escapes its volume")
    return real


def _mounts(
    pod: Obj, container: Obj, ctx: PodContext, env: Mapping[str, str], attempt: int
) -> list[api.Mount]:
    name = str(container.get("name", ""))
    mounts: list[api.Mount] = []
    for vm in container.get("volumeMounts") or []:
        vol = str(vm.get("name", ""))
        host = ctx.volume_paths.get(vol)
        if host is None:
            raise ContainerConfigError(f"cannot find volume {vol!r} to mount into container {name!r}")
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand(str(vm["subPathExpr"]), env)
        if sub:
            host = _safe_subpath(host, str(sub))
        propagation = vm.get("mountPropagation")
        if propagation not in _PROPAGATION:
            raise ContainerConfigError(f"invalid mountPropagation {propagation!r}")
        if propagation == "Bidirectional" and not _privileged(container):
            raise ContainerConfigError(
                "Bidirectional mount propagation is available only to privileged containers"
            )
        mounts.append(
            api.Mount(
                container_path=str(vm.get("mountPath", "")),
                host_path=host,
                readonly=bool(vm.get("readOnly")),
                propagation=_PROPAGATION[propagation],
            )
        )
    if ctx.pod_dir:
        has_ips = bool(ctx.pod_ips or ctx.pod_ip or _host_network(pod))
        if has_ips and all(m.container_path != ETC_HOSTS for m in mounts):
            mounts.append(api.Mount(container_path=ETC_HOSTS, host_path=etc_hosts_path(ctx.pod_dir)))
        term = container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
        if term:
            mounts.append(
                api.Mount(
                    container_path=str(term), host_path=termination_log_path(ctx.pod_dir, name, attempt)
                )
            )
    return mounts


# ---- container -----------------------------------------------------------------------------------------


def _normalized(value: Any) -> Any:
    # Empty lists/maps and nulls mean "unset": drop them so equivalent specs hash the same.
    if isinstance(value, Mapping):
        out = {str(k): _normalized(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    return value


def container_hash(container: Obj) -> str:
    """A stable hash of the container spec: the same for any key order or empty/unset spelling; edged
    restarts a container whose running hash differs from its spec's (the kubelet's HashContainer)."""
    doc = json.dumps(_normalized(container), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _grace_seconds(pod: Obj) -> int:
    grace = _spec(pod).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_S if grace is None else int(grace)


def container_labels(pod: Obj, container: Obj) -> dict[str, str]:
    meta = _meta(pod)
    return {
        LABEL_CONTAINER_NAME: str(container.get("name", "")),
        LABEL_POD_NAME: str(meta.get("name", "")),
        LABEL_POD_NAMESPACE: _ns(pod),
        LABEL_POD_UID: str(meta.get("uid", "")),
    }


def container_annotations(pod: Obj, container: Obj, attempt: int) -> dict[str, str]:
    ann = {
        ANN_CONTAINER_HASH: container_hash(container),
        ANN_RESTART_COUNT: str(attempt),
        ANN_TERMINATION_GRACE: str(_grace_seconds(pod)),
        ANN_TERMINATION_MESSAGE_PATH: str(
            container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
        ),
        ANN_TERMINATION_MESSAGE_POLICY: str(container.get("terminationMessagePolicy") or "File"),
    }
    # Kept on the container so an edged that restarts (and adopts it) can still run preStop correctly.
    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    if pre_stop:
        ann[ANN_PRESTOP_HANDLER] = json.dumps(pre_stop, sort_keys=True)
    if container.get("ports"):
        ann[ANN_CONTAINER_PORTS] = json.dumps(container["ports"], sort_keys=True)
    return ann


def container_config(
    pod: Obj,
    container: Obj,
    ctx: PodContext,
    *,
    attempt: int,
    log_dir_rel: str,
    image_ref: str,
    image_user: str | None = None,
) -> api.ContainerConfig:
    """The CRI ContainerConfig for one (init) container; raises ContainerConfigError like the kubelet.

    `log_dir_rel` is the container's log dir relative to the sandbox log_directory (normally its name);
    the log file is `<log_dir_rel>/<attempt>.log`. `image_user` is the image's configured user, needed to
    enforce runAsNonRoot without runAsUser (unknown counts as root, the safe side)."""
    envs = container_env(pod, container, ctx)
    env_map = dict(envs)
    lookup = chain(env_map)
    name = str(container.get("name", ""))
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name, attempt=attempt),
        image=api.ImageSpec(image=image_ref, user_specified_image=str(container.get("image", ""))),
        command=[expand(str(c), lookup) for c in container.get("command") or []],
        args=[expand(str(a), lookup) for a in container.get("args") or []],
        working_dir=str(container.get("workingDir") or ""),
        envs=[api.KeyValue(key=k, value=v) for k, v in envs],
        mounts=_mounts(pod, container, ctx, env_map, attempt),
        labels=container_labels(pod, container),
        annotations=container_annotations(pod, container, attempt),
        log_path=posixpath.join(log_dir_rel or name, f"{attempt}.log"),
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=api.LinuxContainerConfig(
            resources=_linux_resources(pod, container, ctx),
            security_context=_container_security(pod, container, image_user),
        ),
    )
