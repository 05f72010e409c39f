"""Pod spec → CRI configs: DNS per policy, hostname, ports, labels, resources maths, security, mounts."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from kubeedge.edgecore.edged import podspec
from kubeedge.edgecore.edged.cri import api
from kubeedge.edgecore.edged.podspec import (
    ANN_CONTAINER_HASH,
    ANN_RESTART_COUNT,
    ANN_TERMINATION_GRACE,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerConfigError,
    PodContext,
    container_config,
    container_hash,
    dns_config,
    etc_hosts,
    qos_class,
    sandbox_config,
)


def make_pod(containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "u-123",
            "labels": {"app": "web"},
            "annotations": {"a": "b"},
        },
        "spec": {"nodeName": "edge-1", "containers": containers or [{"name": "app", "image": "img"}], **spec},
    }


def make_ctx(**kw: Any) -> PodContext:
    base: dict[str, Any] = {
        "node_name": "edge-1",
        "node_ip": "192.0.2.5",
        "pod_ip": "10.1.0.7",
        "pod_ips": ("10.1.0.7",),
        "configmaps": {},
        "secrets": {},
        "volume_paths": {},
        "cluster_dns": ("10.96.0.10",),
        "search_domains_host": ("corp.example", "example"),
        "host_resolv_nameservers": ("192.0.2.53", "192.0.2.54"),
        "host_resolv_options": ("timeout:2",),
        "node_allocatable": {"cpu": "4", "memory": "4Gi"},
    }
    base.update(kw)
    return PodContext(**base)


def dns(pod: dict[str, Any], ctx: PodContext | None = None) -> tuple[list[str], list[str], list[str]]:
    d = dns_config(pod, ctx or make_ctx())
    return list(d.servers), list(d.searches), list(d.options)


CLUSTER_SEARCH = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "example"]


def test_dns_cluster_first() -> None:
    assert dns(make_pod()) == (["10.96.0.10"], CLUSTER_SEARCH, ["ndots:5"])
    assert dns(make_pod(dnsPolicy="ClusterFirst")) == (["10.96.0.10"], CLUSTER_SEARCH, ["ndots:5"])


def test_dns_cluster_first_on_host_network_is_default_unless_with_host_net() -> None:
    host = (["192.0.2.53", "192.0.2.54"], ["corp.example", "example"], ["timeout:2"])
    assert dns(make_pod(dnsPolicy="ClusterFirst", hostNetwork=True)) == host
    assert dns(make_pod(dnsPolicy="ClusterFirstWithHostNet", hostNetwork=True)) == (
        ["10.96.0.10"],
        CLUSTER_SEARCH,
        ["ndots:5"],
    )
    assert dns(make_pod(dnsPolicy="Default")) == host


def test_dns_cluster_first_without_cluster_dns_falls_back_to_default() -> None:
    assert dns(make_pod(), make_ctx(cluster_dns=())) == (
        ["192.0.2.53", "192.0.2.54"],
        ["corp.example", "example"],
        ["timeout:2"],
    )


def test_dns_cluster_first_without_domain_uses_host_search() -> None:
    assert dns(make_pod(), make_ctx(cluster_domain=""))[1] == ["corp.example", "example"]


def test_dns_none_uses_only_dns_config() -> None:
    assert dns(make_pod(dnsPolicy="None")) == ([], [], [])
    cfg = {
        "nameservers": ["1.1.1.1"],
        "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    assert dns(make_pod(dnsPolicy="None", dnsConfig=cfg)) == (
        ["1.1.1.1"],
        ["a.example"],
        ["ndots:2", "edns0"],
    )


def test_dns_config_merges_and_overrides_options() -> None:
    cfg = {
        "nameservers": ["10.96.0.10", "1.1.1.1"],  # duplicate dropped
        "searches": ["svc.cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}],
    }
    servers, searches, options = dns(make_pod(dnsConfig=cfg))
    assert servers == ["10.96.0.10", "1.1.1.1"]
    assert searches == [*CLUSTER_SEARCH, "extra.example"]
    assert options == ["ndots:1", "single-request-reopen"]


def test_dns_limits() -> None:
    cfg = {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "searches": [f"d{i}.example" for i in range(40)]}
    servers, searches, _ = dns(make_pod(dnsConfig=cfg))
    assert servers == ["10.96.0.10", "1.1.1.1", "2.2.2.2"]
    assert len(searches) == 32
    long = {"searches": ["x" * 250 + f".{i}" for i in range(10)]}
    _, searches, _ = dns(make_pod(dnsPolicy="None", dnsConfig=long))
    assert sum(len(s) + 1 for s in searches) - 1 <= 2048 and len(searches) == 8


def test_sandbox_config() -> None:
    containers: list[dict[str, Any]] = [
        {
            "name": "app",
            "image": "img",
            "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 9000},  # no hostPort: no mapping
            ],
        },
        {"name": "side", "image": "img", "ports": [{"containerPort": 80, "hostPort": 8080}]},
    ]
    pod = make_pod(
        containers,
        securityContext={
            "runAsUser": 1000,
            "runAsGroup": 2000,
            "fsGroup": 3000,
            "supplementalGroups": [4000],
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
    )
    cfg = sandbox_config(
        pod, make_ctx(), attempt=2, log_dir="/var/log/pods", cgroup_parent="/kubepods/podu-123"
    )
    assert (cfg.metadata.name, cfg.metadata.namespace, cfg.metadata.uid, cfg.metadata.attempt) == (
        "web-1",
        "shop",
        "u-123",
        2,
    )
    assert cfg.hostname == "web-1"
    assert cfg.log_directory == "/var/log/pods/shop_web-1_u-123"
    assert [(p.container_port, p.host_port, p.protocol, p.host_ip) for p in cfg.port_mappings] == [
        (80, 8080, api.TCP, ""),
        (53, 5353, api.UDP, "127.0.0.1"),
    ]
    assert dict(cfg.labels) == {
        "app": "web",
        LABEL_POD_NAME: "web-1",
        LABEL_POD_NAMESPACE: "shop",
        LABEL_POD_UID: "u-123",
    }
    assert dict(cfg.annotations) == {"a": "b"}
    assert cfg.linux.cgroup_parent == "/kubepods/podu-123"
    sc = cfg.linux.security_context
    assert (sc.run_as_user.value, sc.run_as_group.value) == (1000, 2000)
    assert list(sc.supplemental_groups) == [3000, 4000]
    assert (sc.namespace_options.network, sc.namespace_options.pid, sc.namespace_options.ipc) == (
        api.POD,
        api.CONTAINER,
        api.POD,
    )
    assert not sc.privileged
    assert sc.seccomp.profile_type == api.SecurityProfile.Unconfined
    assert dict(cfg.linux.sysctls) == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert list(cfg.dns_config.servers) == ["10.96.0.10"]


def test_sandbox_hostname_namespaces_and_privilege() -> None:
    ctx = make_ctx()
    cfg = sandbox_config(
        make_pod(hostname="custom", subdomain="sub"), ctx, attempt=0, log_dir="/l", cgroup_parent=""
    )
    assert cfg.hostname == "custom"
    cfg = sandbox_config(make_pod(subdomain="sub"), ctx, attempt=0, log_dir="/l", cgroup_parent="")
    assert cfg.hostname == "web-1"  # a subdomain alone does not change the hostname
    long_name = make_pod()
    long_name["metadata"]["name"] = "a" * 62 + "-b"
    cfg = sandbox_config(long_name, ctx, attempt=0, log_dir="/l", cgroup_parent="")
    assert cfg.hostname == "a" * 62  # truncated to 63, trailing '-' trimmed
    host = make_pod(
        [{"name": "app", "securityContext": {"privileged": True}}],
        hostNetwork=True,
        hostPID=True,
        hostIPC=True,
    )
    cfg = sandbox_config(host, ctx, attempt=0, log_dir="/l", cgroup_parent="")
    assert cfg.hostname == ""
    ns = cfg.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (api.NODE, api.NODE, api.NODE)
    assert cfg.linux.security_context.privileged
    shared = sandbox_config(
        make_pod(shareProcessNamespace=True), ctx, attempt=0, log_dir="/l", cgroup_parent=""
    )
    assert shared.linux.security_context.namespace_options.pid == api.POD
    rd = make_pod(securityContext={"seccompProfile": {"type": "RuntimeDefault"}})
    cfg = sandbox_config(rd, ctx, attempt=0, log_dir="/l", cgroup_parent="")
    assert cfg.linux.security_context.seccomp.profile_type == api.SecurityProfile.RuntimeDefault
    assert not cfg.linux.security_context.HasField("run_as_user")


def cconfig(container: dict[str, Any], pod: dict[str, Any] | None = None, **kw: Any) -> api.ContainerConfig:
    pod = pod or make_pod([container])
    ctx = kw.pop("ctx", None) or make_ctx()
    return container_config(
        pod,
        container,
        ctx,
        attempt=kw.pop("attempt", 0),
        log_dir_rel=container["name"],
        image_ref="sha256:abc",
        **kw,
    )


def test_container_basics() -> None:
    c = {
        "name": "app",
        "image": "busybox:1",
        "command": ["sh", "-c", "echo $(GREETING) $$(HOME) $(NOPE)"],
        "args": ["$(GREETING)", "plain"],
        "workingDir": "/srv",
        "env": [{"name": "GREETING", "value": "hi"}],
        "stdin": True,
        "tty": True,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = make_pod([c], terminationGracePeriodSeconds=7)
    cfg = cconfig(c, pod, attempt=3)
    assert (cfg.metadata.name, cfg.metadata.attempt) == ("app", 3)
    assert cfg.image.image == "sha256:abc" and cfg.image.user_specified_image == "busybox:1"
    assert list(cfg.command) == ["sh", "-c", "echo hi $(HOME) $(NOPE)"]
    assert list(cfg.args) == ["hi", "plain"]
    assert cfg.working_dir == "/srv"
    assert [(e.key, e.value) for e in cfg.envs] == [("GREETING", "hi")]
    assert cfg.log_path == "app/3.log"
    assert cfg.stdin and cfg.tty and not cfg.stdin_once
    assert dict(cfg.labels) == {
        LABEL_CONTAINER_NAME: "app",
        LABEL_POD_NAME: "web-1",
        LABEL_POD_NAMESPACE: "shop",
        LABEL_POD_UID: "u-123",
    }
    ann = dict(cfg.annotations)
    assert ann[ANN_RESTART_COUNT] == "3"
    assert ann[ANN_CONTAINER_HASH] == container_hash(c)
    assert ann[ANN_TERMINATION_GRACE] == "7"
    assert ann[podspec.ANN_TERMINATION_MESSAGE_PATH] == "/dev/termination-log"
    assert ann[podspec.ANN_TERMINATION_MESSAGE_POLICY] == "FallbackToLogsOnError"
    assert cconfig({"name": "x"}).annotations[ANN_TERMINATION_GRACE] == "30"


def test_container_config_error_from_env() -> None:
    c = {
        "name": "app",
        "env": [{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}],
    }
    with pytest.raises(ContainerConfigError) as err:
        cconfig(c)
    assert err.value.reason == "CreateContainerConfigError"


def test_container_hash_stability() -> None:
    a: dict[str, Any] = {"name": "app", "image": "img", "env": [{"name": "A", "value": "1"}], "ports": []}
    b = {"ports": [], "env": [{"value": "1", "name": "A"}], "image": "img", "name": "app", "args": None}
    assert container_hash(a) == container_hash(b)
    assert container_hash(a) == container_hash(
        {"name": "app", "image": "img", "env": [{"name": "A", "value": "1"}]}
    )
    changed = copy.deepcopy(a)
    changed["env"][0]["value"] = "2"
    assert container_hash(changed) != container_hash(a)
    assert container_hash({**a, "image": "img2"}) != container_hash(a)


def resources(c: dict[str, Any], pod: dict[str, Any] | None = None) -> api.LinuxContainerResources:
    return cconfig(c, pod).linux.resources


def test_resources_maths() -> None:
    r = resources(
        {
            "name": "a",
            "resources": {
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "128Mi"},
            },
        }
    )
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes) == (
        256,
        50_000,
        100_000,
        128 * 2**20,
    )
    # Request unset: shares follow the limit. Tiny limits hit the minimum quota.
    r = resources({"name": "a", "resources": {"limits": {"cpu": "2"}}})
    assert (r.cpu_shares, r.cpu_quota) == (2048, 200_000)
    r = resources({"name": "a", "resources": {"limits": {"cpu": "5m"}, "requests": {"cpu": "1m"}}})
    assert (r.cpu_shares, r.cpu_quota) == (2, 1000)
    # Nothing set: minimum shares, no quota, no memory limit.
    r = resources({"name": "a"})
    assert (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes) == (2, 0, 0)
    r = resources({"name": "a", "resources": {"requests": {"cpu": "1000"}}})
    assert r.cpu_shares == 262144
    with pytest.raises(ContainerConfigError, match="invalid quantity"):
        resources({"name": "a", "resources": {"limits": {"memory": "lots"}}})


def test_qos_and_oom_score_never_negative() -> None:
    guaranteed = {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    pod = make_pod([guaranteed])
    assert qos_class(pod) == "Guaranteed"
    assert resources(guaranteed, pod).oom_score_adj == 0  # -997 upstream; clamped here
    best = {"name": "a"}
    assert qos_class(make_pod([best])) == "BestEffort"
    assert resources(best).oom_score_adj == 1000
    # Burstable: 1000 - 1000 * request / capacity (4Gi) = 750.
    burst = {"name": "a", "resources": {"requests": {"memory": "1Gi"}}}
    assert qos_class(make_pod([burst])) == "Burstable"
    assert resources(burst).oom_score_adj == 750
    # A burstable container without a memory request would tie BestEffort: one below it.
    cpu_only = {"name": "a", "resources": {"requests": {"cpu": "100m"}}}
    assert resources(cpu_only).oom_score_adj == 999
    huge = {"name": "a", "resources": {"requests": {"memory": "8Gi"}}}
    assert resources(huge).oom_score_adj == 3
    # Guaranteed needs every container to have equal cpu+memory limits and requests.
    mixed = make_pod([guaranteed, best])
    assert qos_class(mixed) == "Burstable"
    unequal = {
        "name": "a",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
    }
    assert qos_class(make_pod([unequal])) == "Burstable"
    zero = {"name": "a", "resources": {"limits": {"cpu": "0"}}}
    assert qos_class(make_pod([zero])) == "BestEffort"


def security(
    c: dict[str, Any], pod: dict[str, Any] | None = None, **kw: Any
) -> api.LinuxContainerSecurityContext:
    return cconfig(c, pod, **kw).linux.security_context


def test_security_context() -> None:
    c = {
        "name": "a",
        "securityContext": {
            "runAsUser": 1001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod = make_pod([c], securityContext={"runAsUser": 5, "runAsGroup": 7, "fsGroup": 9})
    sc = security(c, pod)
    assert (sc.run_as_user.value, sc.run_as_group.value) == (1001, 7)  # container wins, pod fills in
    assert sc.readonly_rootfs and sc.no_new_privs and not sc.privileged
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert sc.seccomp.profile_type == api.SecurityProfile.RuntimeDefault
    assert list(sc.supplemental_groups) == [9]
    assert "/proc/kcore" in sc.masked_paths and "/proc/sys" in sc.readonly_paths

    plain = security({"name": "a"})
    assert not plain.no_new_privs  # unset allowPrivilegeEscalation allows it
    assert plain.seccomp.profile_type == api.SecurityProfile.Unconfined
    assert not plain.HasField("run_as_user")
    assert not security({"name": "a", "securityContext": {"allowPrivilegeEscalation": True}}).no_new_privs

    priv = security({"name": "a", "securityContext": {"privileged": True}})
    assert priv.privileged and not priv.masked_paths and not priv.readonly_paths


def test_run_as_non_root() -> None:
    ok = {"name": "a", "securityContext": {"runAsNonRoot": True, "runAsUser": 1000}}
    assert security(ok).run_as_user.value == 1000
    with pytest.raises(ContainerConfigError, match="breaks non-root policy"):
        security({"name": "a", "securityContext": {"runAsNonRoot": True, "runAsUser": 0}})
    nonroot = {"name": "a", "securityContext": {"runAsNonRoot": True}}
    with pytest.raises(ContainerConfigError, match="will run as root"):
        security(nonroot)  # image user unknown: treated as root
    with pytest.raises(ContainerConfigError, match="will run as root"):
        security(nonroot, image_user="0:0")
    with pytest.raises(ContainerConfigError, match="non-numeric user"):
        security(nonroot, image_user="nobody")
    assert security(nonroot, image_user="65534").run_as_user.value == 0  # not forced; the image's user runs
    # The pod-level flag applies too.
    with pytest.raises(ContainerConfigError):
        security({"name": "a"}, make_pod([{"name": "a"}], securityContext={"runAsNonRoot": True}))


def test_mounts(tmp_path: Path) -> None:
    cfgvol = tmp_path / "cfg"
    (cfgvol / "conf.d").mkdir(parents=True)
    c = {
        "name": "app",
        "env": [{"name": "SUB", "value": "conf.d"}],
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
            {"name": "cfg", "mountPath": "/etc/app.d", "subPath": "conf.d"},
            {"name": "cfg", "mountPath": "/etc/exp", "subPathExpr": "$(SUB)"},
            {"name": "data", "mountPath": "/data", "mountPropagation": "HostToContainer"},
        ],
    }
    ctx = make_ctx(
        volume_paths={"cfg": str(cfgvol), "data": "/srv/data"}, pod_dir="/var/lib/edged/pods/u-123"
    )
    cfg = cconfig(c, ctx=ctx, attempt=2)
    got = [(m.container_path, m.host_path, m.readonly, m.propagation) for m in cfg.mounts]
    assert got == [
        ("/etc/app", str(cfgvol), True, api.PROPAGATION_PRIVATE),
        ("/etc/app.d", str(cfgvol / "conf.d"), False, api.PROPAGATION_PRIVATE),
        ("/etc/exp", str(cfgvol / "conf.d"), False, api.PROPAGATION_PRIVATE),
        ("/data", "/srv/data", False, api.PROPAGATION_HOST_TO_CONTAINER),
        ("/etc/hosts", "/var/lib/edged/pods/u-123/etc-hosts", False, api.PROPAGATION_PRIVATE),
        (
            "/dev/termination-log",
            "/var/lib/edged/pods/u-123/containers/app/2.termination-log",
            False,
            api.PROPAGATION_PRIVATE,
        ),
    ]
    # Without a pod dir (or without a pod IP) there is no /etc/hosts; a custom message path is honoured.
    c2 = {"name": "app", "terminationMessagePath": "/tmp/msg"}
    paths = [m.container_path for m in cconfig(c2, ctx=make_ctx(pod_dir="/p", pod_ip="", pod_ips=())).mounts]
    assert paths == ["/tmp/msg"]
    assert list(cconfig(c2).mounts) == []
    # A container that mounts its own /etc/hosts keeps it.
    own = {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/etc/hosts"}]}
    paths = [m.container_path for m in cconfig(own, ctx=ctx).mounts]
    assert paths.count("/etc/hosts") == 1


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ({"name": "ghost", "mountPath": "/x"}, "cannot find volume 'ghost'"),
        ({"name": "v", "mountPath": "/x", "subPath": "/abs"}, "must not be an absolute path"),
        ({"name": "v", "mountPath": "/x", "subPath": "a/../../etc"}, "must not contain '..'"),
        ({"name": "v", "mountPath": "/x", "mountPropagation": "Bidirectional"}, "only to privileged"),
        ({"name": "v", "mountPath": "/x", "mountPropagation": "Sideways"}, "invalid mountPropagation"),
    ],
)
def test_mount_errors(mount: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        cconfig({"name": "app", "volumeMounts": [mount]}, ctx=make_ctx(volume_paths={"v": "/vol"}))


def test_subpath_symlink_escape_is_refused(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    os.symlink("/etc", vol / "evil")
    c: dict[str, Any] = {"name": "app", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "evil"}]}
    with pytest.raises(ContainerConfigError, match="escapes its volume"):
        cconfig(c, ctx=make_ctx(volume_paths={"v": str(vol)}))
    os.symlink("inside", vol / "fine")
    (vol / "inside").mkdir()
    c["volumeMounts"][0]["subPath"] = "fine"
    assert cconfig(c, ctx=make_ctx(volume_paths={"v": str(vol)})).mounts[0].host_path == str(vol / "inside")


def test_privileged_bidirectional_allowed() -> None:
    c = {
        "name": "app",
        "securityContext": {"privileged": True},
        "volumeMounts": [{"name": "v", "mountPath": "/x", "mountPropagation": "Bidirectional"}],
    }
    assert (
        cconfig(c, ctx=make_ctx(volume_paths={"v": "/vol"})).mounts[0].propagation
        == api.PROPAGATION_BIDIRECTIONAL
    )


def test_etc_hosts() -> None:
    pod = make_pod(hostname="h", subdomain="sub", hostAliases=[{"ip": "192.0.2.1", "hostnames": ["a", "b"]}])
    text = etc_hosts(pod, make_ctx())
    lines = text.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.1.0.7\th.sub.shop.svc.cluster.local\th" in lines
    assert lines[-1] == "192.0.2.1\ta\tb"
    assert "10.1.0.7\tweb-1" in etc_hosts(make_pod(), make_ctx()).splitlines()
    hostnet = etc_hosts(
        make_pod(hostNetwork=True), make_ctx(), host_hosts="127.0.0.1 localhost\n10.0.0.1 box\n"
    )
    assert hostnet == "127.0.0.1 localhost\n10.0.0.1 box\n"
