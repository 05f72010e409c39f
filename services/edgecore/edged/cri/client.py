"""Async CRI client: one method per RPC of runtime.v1 RuntimeService and ImageService.

Methods are called through `grpc.aio.Channel.unary_unary` with the generated message classes, not through
generated `_pb2_grpc` stubs: the stubs pin a grpcio version of their own and add nothing we need. Only
standard CRI calls are made, so the same client drives containerd and CRI-O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from . import api_pb2 as api

# Default per-call deadline. Generous because an edge device under load (or a runtime that is just
# restarting) can be slow; a hung runtime must still surface as an error rather than hang edged forever.
DEFAULT_TIMEOUT_S = 30.0
# Pulls transfer whole images over slow links; they get their own, much longer deadline.
PULL_TIMEOUT_S = 600.0
# Extra time granted to calls that themselves wait (StopContainer's grace period, ExecSync's timeout).
CALL_MARGIN_S = 10.0
# Same cap as the kubelet: ListContainers/ListPodSandbox on a busy node can exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# What we send in VersionRequest: the CRI API version this client speaks.
CRI_API_VERSION = "v1"

RUNTIME = "/runtime.v1.RuntimeService/"
IMAGES = "/runtime.v1.ImageService/"

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class CriError(Exception):
    """A CRI call failed; `code` is the gRPC status code and `details` the runtime's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class CriNotFound(CriError):
    """The sandbox, container or image named in the call does not exist."""


class CriUnavailable(CriError):
    """The runtime is not reachable (socket missing, runtime down or restarting)."""


class CriDeadlineExceeded(CriError):
    """The call did not finish within its deadline."""


class CriUnimplemented(CriError):
    """The runtime does not implement this call (or this CRI version)."""


_ERRORS: dict[grpc.StatusCode, type[CriError]] = {
    grpc.StatusCode.NOT_FOUND: CriNotFound,
    grpc.StatusCode.UNAVAILABLE: CriUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: CriDeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: CriUnimplemented,
}


def _error(method: str, err: grpc.aio.AioRpcError) -> CriError:
    code = err.code()
    return _ERRORS.get(code, CriError)(method, code, err.details() or "")


def normalize_endpoint(endpoint: str) -> str:
    """Accept `unix:///run/x.sock`, `unix:/run/x.sock` or a bare `/run/x.sock`; return a gRPC target."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("unix:"):
        return "unix://" + endpoint[len("unix:") :]
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    raise ValueError(f"CRI endpoint must be a unix socket (unix:///path or /path), got {endpoint!r}")


class CriClient:
    """One gRPC channel to a CRI runtime. Use `async with CriClient(...)` or call `close()`."""

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(
            self.endpoint,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    async def __aenter__(self) -> CriClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, path: str, request: Req, response_type: type[Resp], deadline_s: float | None = None
    ) -> Resp:
        call = self._calls.get(path)
        if call is None:
            deserialize: Callable[[bytes], Resp] = response_type.FromString
            call = self._channel.unary_unary(
                path, request_serializer=type(request).SerializeToString, response_deserializer=deserialize
            )
            self._calls[path] = call
        try:
            response: Resp = await call(request, timeout=self.timeout if deadline_s is None else deadline_s)
        except grpc.aio.AioRpcError as err:
            raise _error(path.rsplit("/", 1)[-1], err) from None
        return response

    async def _idempotent(
        self,
        path: str,
        request: Req,
        response_type: type[Resp],
        missing_ok: bool,
        deadline_s: float | None = None,
    ) -> None:
        """Stop/remove calls. CRI defines them as idempotent, but containerd 1.6 answers NOT_FOUND once the
        object is gone; with `missing_ok` that counts as done, as the kubelet treats it."""
        try:
            await self._call(path, request, response_type, deadline_s)
        except CriNotFound:
            if not missing_ok:
                raise

    # ---- runtime -----------------------------------------------------------------------------------

    async def version(self) -> api.VersionResponse:
        return await self._call(
            RUNTIME + "Version", api.VersionRequest(version=CRI_API_VERSION), api.VersionResponse
        )

    async def status(self, *, verbose: bool = False) -> api.StatusResponse:
        return await self._call(RUNTIME + "Status", api.StatusRequest(verbose=verbose), api.StatusResponse)

    # ---- pod sandboxes -----------------------------------------------------------------------------

    async def run_pod_sandbox(self, config: api.PodSandboxConfig, *, runtime_handler: str = "") -> str:
        """Create and start the sandbox; returns its id."""
        request = api.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        response = await self._call(RUNTIME + "RunPodSandbox", request, api.RunPodSandboxResponse)
        return response.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str, *, missing_ok: bool = True) -> None:
        request = api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._idempotent(RUNTIME + "StopPodSandbox", request, api.StopPodSandboxResponse, missing_ok)

    async def remove_pod_sandbox(self, sandbox_id: str, *, missing_ok: bool = True) -> None:
        request = api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._idempotent(
            RUNTIME + "RemovePodSandbox", request, api.RemovePodSandboxResponse, missing_ok
        )

    async def pod_sandbox_status(
        self, sandbox_id: str, *, verbose: bool = False
    ) -> api.PodSandboxStatusResponse:
        request = api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
        return await self._call(RUNTIME + "PodSandboxStatus", request, api.PodSandboxStatusResponse)

    async def list_pod_sandbox(
        self,
        *,
        sandbox_id: str = "",
        state: api.PodSandboxState | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[api.PodSandbox]:
        flt = api.PodSandboxFilter(id=sandbox_id, label_selector=dict(labels or {}))
        if state is not None:
            flt.state.state = state
        request = api.ListPodSandboxRequest(filter=flt)
        response = await self._call(RUNTIME + "ListPodSandbox", request, api.ListPodSandboxResponse)
        return list(response.items)

    # ---- containers --------------------------------------------------------------------------------

    async def create_container(
        self, sandbox_id: str, config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig
    ) -> str:
        """Create (not start) a container in the sandbox; returns its id."""
        request = api.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
        )
        response = await self._call(RUNTIME + "CreateContainer", request, api.CreateContainerResponse)
        return response.container_id

    async def start_container(self, container_id: str) -> None:
        request = api.StartContainerRequest(container_id=container_id)
        await self._call(RUNTIME + "StartContainer", request, api.StartContainerResponse)

    async def stop_container(self, container_id: str, *, timeout_s: int = 0, missing_ok: bool = True) -> None:
        """SIGTERM, then SIGKILL after `timeout_s` seconds (0: kill at once)."""
        request = api.StopContainerRequest(container_id=container_id, timeout=timeout_s)
        await self._idempotent(
            RUNTIME + "StopContainer",
            request,
            api.StopContainerResponse,
            missing_ok,
            deadline_s=self.timeout + timeout_s + CALL_MARGIN_S,
        )

    async def remove_container(self, container_id: str, *, missing_ok: bool = True) -> None:
        request = api.RemoveContainerRequest(container_id=container_id)
        await self._idempotent(RUNTIME + "RemoveContainer", request, api.RemoveContainerResponse, missing_ok)

    async def list_containers(
        self,
        *,
        container_id: str = "",
        sandbox_id: str = "",
        state: api.ContainerState | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[api.Container]:
        flt = api.ContainerFilter(
            id=container_id, pod_sandbox_id=sandbox_id, label_selector=dict(labels or {})
        )
        if state is not None:
            flt.state.state = state
        request = api.ListContainersRequest(filter=flt)
        response = await self._call(RUNTIME + "ListContainers", request, api.ListContainersResponse)
        return list(response.containers)

    async def container_status(
        self, container_id: str, *, verbose: bool = False
    ) -> api.ContainerStatusResponse:
        request = api.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return await self._call(RUNTIME + "ContainerStatus", request, api.ContainerStatusResponse)

    async def update_container_resources(
        self,
        container_id: str,
        linux: api.LinuxContainerResources,
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        request = api.UpdateContainerResourcesRequest(
            container_id=container_id, linux=linux, annotations=dict(annotations or {})
        )
        await self._call(RUNTIME + "UpdateContainerResources", request, api.UpdateContainerResourcesResponse)

    async def reopen_container_log(self, container_id: str) -> None:
        request = api.ReopenContainerLogRequest(container_id=container_id)
        await self._call(RUNTIME + "ReopenContainerLog", request, api.ReopenContainerLogResponse)

    # ---- exec, attach, port-forward ----------------------------------------------------------------

    async def exec_sync(
        self, container_id: str, cmd: list[str], *, timeout_s: int = 0
    ) -> api.ExecSyncResponse:
        """Run `cmd` in the container and wait. A non-zero exit is not an error: see `exit_code`.
        `timeout_s` = 0 lets the command run until the call's own deadline."""
        request = api.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout_s)
        deadline = self.timeout + timeout_s + CALL_MARGIN_S if timeout_s else self.timeout
        return await self._call(RUNTIME + "ExecSync", request, api.ExecSyncResponse, deadline_s=deadline)

    async def exec(
        self,
        container_id: str,
        cmd: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """Returns the runtime's streaming-server URL for this exec session."""
        request = api.ExecRequest(
            container_id=container_id, cmd=cmd, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr and not tty
        )
        response = await self._call(RUNTIME + "Exec", request, api.ExecResponse)
        return response.url

    async def attach(
        self,
        container_id: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        request = api.AttachRequest(
            container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr and not tty
        )
        response = await self._call(RUNTIME + "Attach", request, api.AttachResponse)
        return response.url

    async def port_forward(self, sandbox_id: str, ports: list[int]) -> str:
        request = api.PortForwardRequest(pod_sandbox_id=sandbox_id, port=ports)
        response = await self._call(RUNTIME + "PortForward", request, api.PortForwardResponse)
        return response.url

    # ---- stats -------------------------------------------------------------------------------------

    async def container_stats(self, container_id: str) -> api.ContainerStats:
        request = api.ContainerStatsRequest(container_id=container_id)
        response = await self._call(RUNTIME + "ContainerStats", request, api.ContainerStatsResponse)
        return response.stats

    async def list_container_stats(
        self, *, sandbox_id: str = "", labels: Mapping[str, str] | None = None
    ) -> list[api.ContainerStats]:
        flt = api.ContainerStatsFilter(pod_sandbox_id=sandbox_id, label_selector=dict(labels or {}))
        request = api.ListContainerStatsRequest(filter=flt)
        response = await self._call(RUNTIME + "ListContainerStats", request, api.ListContainerStatsResponse)
        return list(response.stats)

    # ---- images ------------------------------------------------------------------------------------

    async def list_images(self, *, image: str = "") -> list[api.Image]:
        request = api.ListImagesRequest(filter=api.ImageFilter(image=api.ImageSpec(image=image)))
        response = await self._call(IMAGES + "ListImages", request, api.ListImagesResponse)
        return list(response.images)

    async def image_status(self, image: str) -> api.Image | None:
        """None when the runtime does not have the image (CRI answers that without an error)."""
        request = api.ImageStatusRequest(image=api.ImageSpec(image=image))
        response = await self._call(IMAGES + "ImageStatus", request, api.ImageStatusResponse)
        return response.image if response.HasField("image") else None

    async def pull_image(
        self,
        image: str,
        *,
        auth: api.AuthConfig | None = None,
        sandbox_config: api.PodSandboxConfig | None = None,
        timeout_s: float = PULL_TIMEOUT_S,
    ) -> str:
        """Returns the image reference (for containerd: the image id, `sha256:...`)."""
        request = api.PullImageRequest(
            image=api.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        response = await self._call(
            IMAGES + "PullImage", request, api.PullImageResponse, deadline_s=timeout_s
        )
        return response.image_ref

    async def remove_image(self, image: str, *, missing_ok: bool = True) -> None:
        request = api.RemoveImageRequest(image=api.ImageSpec(image=image))
        await self._idempotent(IMAGES + "RemoveImage", request, api.RemoveImageResponse, missing_ok)

    async def image_fs_info(self) -> api.ImageFsInfoResponse:
        return await self._call(IMAGES + "ImageFsInfo", api.ImageFsInfoRequest(), api.ImageFsInfoResponse)
