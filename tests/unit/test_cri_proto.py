"""Our hand-written CRI subset must stay wire-compatible with upstream k8s.io/cri-api runtime/v1."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from kubeedge.edgecore.edged.cri import CriClient, CriUnavailable, api, normalize_endpoint

# (message, field) -> number, read from upstream pkg/apis/runtime/v1/api.proto. Fields whose numbers are
# out of declaration order upstream are the ones a hand-written copy gets wrong, so most are listed here.
UPSTREAM_NUMBERS = {
    ("PodSandboxConfig", "log_directory"): 3,
    ("PodSandboxConfig", "linux"): 8,
    ("LinuxPodSandboxConfig", "sysctls"): 3,
    ("LinuxSandboxSecurityContext", "run_as_group"): 8,
    ("LinuxSandboxSecurityContext", "privileged"): 6,
    ("LinuxSandboxSecurityContext", "seccomp"): 9,
    ("LinuxContainerSecurityContext", "run_as_group"): 12,
    ("LinuxContainerSecurityContext", "run_as_username"): 6,
    ("LinuxContainerSecurityContext", "no_new_privs"): 11,
    ("LinuxContainerSecurityContext", "masked_paths"): 13,
    ("LinuxContainerSecurityContext", "apparmor"): 16,
    ("LinuxContainerResources", "unified"): 9,
    ("LinuxContainerResources", "memory_swap_limit_in_bytes"): 10,
    ("ImageSpec", "user_specified_image"): 18,
    ("ImageSpec", "runtime_handler"): 19,
    ("Mount", "propagation"): 5,
    ("Mount", "recursive_read_only"): 8,
    ("ContainerConfig", "log_path"): 11,
    ("ContainerConfig", "tty"): 14,
    ("ContainerConfig", "linux"): 15,
    ("ContainerStatus", "reason"): 10,
    ("ContainerStatus", "log_path"): 15,
    ("ContainerStatus", "image_id"): 17,
    ("Container", "image_id"): 10,
    ("PodSandboxStatus", "network"): 5,
    ("PodSandboxStatus", "runtime_handler"): 9,
    ("PodSandboxStatusResponse", "containers_statuses"): 3,
    ("PodSandboxNetworkStatus", "additional_ips"): 2,
    ("Namespace", "options"): 2,
    ("ExecSyncResponse", "exit_code"): 3,
    ("AttachRequest", "tty"): 3,
    ("Image", "pinned"): 8,
    ("ImageFsInfoResponse", "container_filesystems"): 2,
}

RUNTIME_METHODS = {
    "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "ListPodSandbox",
    "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "ListContainers",
    "ContainerStatus", "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec", "Attach",
    "PortForward", "ContainerStats", "ListContainerStats", "Status",
}  # fmt: skip
IMAGE_METHODS = {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}


@pytest.mark.parametrize(
    ("message", "field", "number"), [(m, f, n) for (m, f), n in UPSTREAM_NUMBERS.items()]
)
def test_field_numbers_match_upstream(message: str, field: str, number: int) -> None:
    assert api.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_enum_values_match_upstream() -> None:
    assert (api.CONTAINER_CREATED, api.CONTAINER_RUNNING, api.CONTAINER_EXITED, api.CONTAINER_UNKNOWN) == (
        0,
        1,
        2,
        3,
    )
    assert (api.SANDBOX_READY, api.SANDBOX_NOTREADY) == (0, 1)
    assert (api.POD, api.CONTAINER, api.NODE, api.TARGET) == (0, 1, 2, 3)
    assert api.PROPAGATION_BIDIRECTIONAL == 2 and api.SCTP == 2


def test_services_and_method_paths() -> None:
    runtime = api.DESCRIPTOR.services_by_name["RuntimeService"]
    images = api.DESCRIPTOR.services_by_name["ImageService"]
    # The gRPC method path is /<package>.<Service>/<Method>: the package must be runtime.v1.
    assert runtime.full_name == "runtime.v1.RuntimeService" and images.full_name == "runtime.v1.ImageService"
    assert set(runtime.methods_by_name) == RUNTIME_METHODS
    assert set(images.methods_by_name) == IMAGE_METHODS


def test_hand_encoded_bytes_decode() -> None:
    # ContainerMetadata{name: "c" (field 1, len-delimited), attempt: 2 (field 2, varint)}, as any CRI
    # implementation would put it on the wire.
    meta = api.ContainerMetadata.FromString(b"\x0a\x01c\x10\x02")
    assert (meta.name, meta.attempt) == ("c", 2)
    # ContainerStatus{exit_code: 137 (field 7 varint), reason: "Error" (field 10)}
    st = api.ContainerStatus.FromString(b"\x38\x89\x01\x52\x05Error")
    assert (st.exit_code, st.reason) == (137, "Error")
    # Unknown fields (a newer runtime's additions) are skipped, not fatal: field 99, varint 1.
    assert api.ExecSyncResponse.FromString(b"\x98\x06\x01\x18\x05").exit_code == 5


def test_round_trip_sandbox_and_container_config() -> None:
    sandbox = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web", uid="u-1", namespace="default", attempt=1),
        hostname="web",
        log_directory="/var/log/pods/default_web_u-1",
        dns_config=api.DNSConfig(servers=["10.96.0.10"], searches=["svc.cluster.local"], options=["ndots:5"]),
        port_mappings=[
            api.PortMapping(protocol=api.UDP, container_port=53, host_port=5353, host_ip="0.0.0.0")
        ],
        labels={"app": "web"},
        annotations={"a": "b"},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/podu-1",
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE, pid=api.CONTAINER),
                run_as_user=api.Int64Value(value=1000),
                privileged=True,
            ),
        ),
    )
    container = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c", attempt=3),
        image=api.ImageSpec(image="busybox:latest", user_specified_image="busybox"),
        command=["sh", "-c"],
        args=["echo $(X)"],
        working_dir="/w",
        envs=[api.KeyValue(key="X", value="1")],
        mounts=[
            api.Mount(
                container_path="/data",
                host_path="/srv/data",
                readonly=True,
                selinux_relabel=True,
                propagation=api.PROPAGATION_HOST_TO_CONTAINER,
            )
        ],
        devices=[api.Device(container_path="/dev/ttyS0", host_path="/dev/ttyS1", permissions="rw")],
        log_path="c/3.log",
        stdin=True,
        stdin_once=True,
        tty=True,
        linux=api.LinuxContainerConfig(
            resources=api.LinuxContainerResources(
                cpu_period=100000,
                cpu_quota=50000,
                cpu_shares=512,
                memory_limit_in_bytes=1 << 28,
                oom_score_adj=500,
                hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=1 << 21)],
            ),
            security_context=api.LinuxContainerSecurityContext(
                capabilities=api.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"]),
                run_as_user=api.Int64Value(value=0),
                run_as_group=api.Int64Value(value=0),
                readonly_rootfs=True,
                supplemental_groups=[10, 20],
                no_new_privs=True,
            ),
        ),
    )
    request = api.CreateContainerRequest(pod_sandbox_id="s", config=container, sandbox_config=sandbox)
    decoded = api.CreateContainerRequest.FromString(request.SerializeToString())
    assert decoded == request
    # Wrapper messages keep "set to 0" apart from "not set".
    sc = decoded.config.linux.security_context
    assert sc.HasField("run_as_user") and sc.run_as_user.value == 0
    assert not decoded.sandbox_config.linux.security_context.HasField("run_as_group")


def test_round_trip_statuses() -> None:
    status = api.PodSandboxStatusResponse(
        status=api.PodSandboxStatus(
            id="s",
            state=api.SANDBOX_READY,
            created_at=1,
            network=api.PodSandboxNetworkStatus(ip="10.88.0.2", additional_ips=[api.PodIP(ip="fd00::2")]),
        ),
        containers_statuses=[
            api.ContainerStatus(
                id="c",
                state=api.CONTAINER_EXITED,
                created_at=1,
                started_at=2,
                finished_at=3,
                exit_code=1,
                reason="Error",
                message="boom",
                image=api.ImageSpec(image="busybox"),
                image_ref="sha256:ab",
                log_path="/var/log/pods/x/c/0.log",
            )
        ],
    )
    assert api.PodSandboxStatusResponse.FromString(status.SerializeToString()) == status


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("unix:/run/crio/crio.sock", "unix:///run/crio/crio.sock"),
        ("/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ],
)
def test_normalize_endpoint(given: str, target: str) -> None:
    assert normalize_endpoint(given) == target


def test_normalize_endpoint_rejects_tcp() -> None:
    with pytest.raises(ValueError, match="unix socket"):
        normalize_endpoint("tcp://127.0.0.1:1234")


async def test_missing_socket_is_unavailable(tmp_path: Path) -> None:
    async with CriClient(f"unix://{tmp_path}/none.sock", timeout=5) as cri:
        with pytest.raises(CriUnavailable) as err:
            await cri.version()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.method == "Version"
