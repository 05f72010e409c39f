"""The real kubectl 1.37 against our API server: apply, get (tables, formats, selectors, paging, watch),
describe, label/annotate/patch/scale, delete (with namespace cascade), wait, discovery, typed create,
and the error statuses kubectl renders."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeedge.pki import certs
from tests.apiserver_proc import KUBECTL, ApiServerProc

# API-level tests: only the controllers that finish deletions (namespaces, cascades) run.
APISERVER_CONTROLLERS = "namespace,garbagecollector"

# ---- helpers -------------------------------------------------------------------------------------


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def kjson(srv: ApiServerProc, *args: str) -> Any:
    return json.loads(srv.kubectl(*args, "-o", "json").stdout)


def apply(srv: ApiServerProc, docs: list[dict[str, Any]] | dict[str, Any], *args: str) -> str:
    # JSON documents (valid YAML) sidestep YAML 1.1 surprises such as an unquoted `y` being a bool.
    text = "\n---\n".join(json.dumps(d) for d in (docs if isinstance(docs, list) else [docs]))
    return srv.kubectl("apply", "-f", "-", *args, input=text).stdout


def fails(srv: ApiServerProc, *args: str, input: str | None = None) -> str:
    res = srv.kubectl(*args, input=input, check=False)
    assert res.returncode != 0, f"kubectl {' '.join(args)} unexpectedly succeeded:\n{res.stdout}"
    return res.stderr


def table(text: str) -> list[dict[str, str]]:
    """Parse kubectl's column output: cells are cut at the header's column starts."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "empty table output"
    header = lines[0]
    cols = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for ln in lines[1:]:
        row = {}
        for i, (name, start) in enumerate(cols):
            end = cols[i + 1][1] if i + 1 < len(cols) else None
            row[name] = ln[start:end].strip()
        rows.append(row)
    return rows


def headers(text: str) -> list[str]:
    return re.findall(r"\S+(?: \S+)*", text.splitlines()[0])


def by_name(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["NAME"]: r for r in rows}


def create_namespace(srv: ApiServerProc, name: str) -> None:
    # A typed `create` (protobuf request body).
    assert srv.kubectl("create", "namespace", name).stdout.strip() == f"namespace/{name} created"


@pytest.fixture
def ns(apiserver: ApiServerProc, request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    name = uid(base)
    create_namespace(apiserver, name)
    return name


class Background:
    """kubectl as a subprocess (`get -w`, `wait`); its output is read on threads so waits have deadlines."""

    def __init__(self, srv: ApiServerProc, *args: str) -> None:
        env = dict(os.environ, KUBECONFIG=str(srv.kubeconfig))
        self.proc = subprocess.Popen(
            [KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err_lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.seen_err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err_lines), daemon=True),
        ]
        for t in self.pumps:
            t.start()

    @staticmethod
    def _pump(stream: Any, q: queue.Queue[str]) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))

    def expect(self, pred: Any, what: str, timeout: float = 15.0, stderr: bool = False) -> str:
        """Read stdout (or stderr) lines until pred(line.split()) holds."""
        q, seen = (self.err_lines, self.seen_err) if stderr else (self.lines, self.seen)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line with {what} within {timeout}s; saw {self.seen}; stderr {self.seen_err[-5:]}"
                )
            try:
                line = q.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(line)
            if pred(line.split()):
                return line

    def next_json(self, timeout: float = 15.0) -> Any:
        """The next JSON document (kubectl prints one per line, or pretty ones ending in a `}` line)."""
        start = len(self.seen)
        self.expect(lambda _: self.seen[-1] in ("}",) or self.seen[-1].startswith('{"'), "JSON", timeout)
        return json.loads("\n".join(self.seen[start:]))

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        """Wait for exit; the return code and all of stdout."""
        rc = self.proc.wait(timeout)
        for t in self.pumps:
            t.join(5)  # they end at EOF
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        while not self.err_lines.empty():
            self.seen_err.append(self.err_lines.get_nowait())
        return rc, "\n".join(self.seen)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def deployment(name: str, ns: str, image: str = "nginx:1.25", **extra: Any) -> dict[str, Any]:
    labels = {"app": name}
    d: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "MODE", "value": "one"}],
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]},
                    ]
                },
            },
        },
    }
    d["spec"].update(extra)
    return d


def service(name: str, ns: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "protocol": "TCP"},
            ],
        },
    }


def configmap(name: str, ns: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data or {"k": "v"}}


def pod(name: str, ns: str, node: str = "", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "nginx:1.25"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": spec,
    }


def device(name: str, ns: str, node: str = "edge-1", model: str = "thermometer") -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "deviceModelRef": {"name": model},
            "nodeName": node,
            "protocol": {"protocolName": "modbus", "configData": {"slaveID": 1}},
            "properties": [{"name": "temperature", "desired": {"value": "20"}}],
        },
    }


def node(name: str, ready: bool = True, ip: str = "192.168.1.10") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""},
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "EdgeReady",
                    "message": "edge node is posting ready status",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "nodeInfo": {
                "machineID": "m-1",
                "systemUUID": "s-1",
                "bootID": "b-1",
                "kernelVersion": "6.1.0-edge",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.0",
                "kubeletVersion": "v1.37.0-kubeedge",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def set_pod_running(srv: ApiServerProc, ns: str, name: str, ip: str, restarts: int = 0) -> None:
    status = {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": restarts,
                    "image": "nginx:1.25",
                    "imageID": "",
                    "started": True,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    srv.kubectl(
        "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


# ---- discovery -----------------------------------------------------------------------------------


def test_version(apiserver: ApiServerProc) -> None:
    out = json.loads(apiserver.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["major"] == "1"
    assert out["serverVersion"]["minor"] == "37"
    assert out["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert out["clientVersion"]["minor"] == "37"
    plain = apiserver.kubectl("version")
    assert "Server Version: v1.37." in plain.stdout
    assert "WARNING" not in plain.stderr  # no version-skew warning


def test_api_resources(apiserver: ApiServerProc) -> None:
    out = apiserver.kubectl("api-resources").stdout
    assert headers(out) == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    rows = by_name(table(out))
    assert rows["pods"] == {
        "NAME": "pods",
        "SHORTNAMES": "po",
        "APIVERSION": "v1",
        "NAMESPACED": "true",
        "KIND": "Pod",
    }
    assert rows["deployments"]["SHORTNAMES"] == "deploy"
    assert rows["deployments"]["APIVERSION"] == "apps/v1"
    assert rows["devices"] == {
        "NAME": "devices",
        "SHORTNAMES": "dev",
        "APIVERSION": "devices.kubeedge.io/v1beta1",
        "NAMESPACED": "true",
        "KIND": "Device",
    }
    assert rows["nodes"]["NAMESPACED"] == "false"
    # The filtered forms work too.
    names = apiserver.kubectl("api-resources", "--api-group=devices.kubeedge.io", "-o", "name").stdout
    assert set(names.split()) == {"devices.devices.kubeedge.io", "devicemodels.devices.kubeedge.io"}
    # Shortnames resolve through discovery.
    assert apiserver.kubectl("get", "dev", "-A").returncode == 0


def test_api_versions(apiserver: ApiServerProc) -> None:
    versions = apiserver.kubectl("api-versions").stdout.split()
    for v in ("v1", "apps/v1", "batch/v1", "apiextensions.k8s.io/v1", "devices.kubeedge.io/v1beta1"):
        assert v in versions


def test_explain_pods(apiserver: ApiServerProc) -> None:
    out = apiserver.kubectl("explain", "pods").stdout
    assert re.search(r"KIND:\s+Pod", out)
    assert re.search(r"VERSION:\s+v1", out)
    for field in ("apiVersion", "kind", "metadata", "spec", "status"):
        assert re.search(rf"^\s+{field}\s", out, re.M), field


# ---- apply -------------------------------------------------------------------------------------


def test_apply_creates_all_kinds(apiserver: ApiServerProc, ns: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": ns},
        "type": "Opaque",
        "stringData": {"password": "s3cret"},
    }
    docs = [
        deployment("web", ns),
        service("web", ns),
        configmap("conf", ns, a="1"),
        secret,
        device("dev1", ns),
    ]
    out = apply(apiserver, docs)
    assert out.splitlines() == [
        "deployment.apps/web created",
        "service/web created",
        "configmap/conf created",
        "secret/creds created",
        "device.devices.kubeedge.io/dev1 created",
    ]
    d = kjson(apiserver, "get", "deployment", "web", "-n", ns)
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["app", "sidecar"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in d["metadata"]["annotations"]
    svc = kjson(apiserver, "get", "svc", "web", "-n", ns)
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", svc["spec"]["clusterIP"])
    s = kjson(apiserver, "get", "secret", "creds", "-n", ns)
    assert s["data"]["password"] == "czNjcmV0"  # stringData folded into base64 data
    dev = kjson(apiserver, "get", "device", "dev1", "-n", ns)
    assert dev["spec"]["protocol"]["configData"] == {"slaveID": 1}
    assert dev["metadata"]["uid"]


def test_apply_sends_strict_field_validation(apiserver: ApiServerProc, ns: str) -> None:
    """Default `kubectl apply` finds fieldValidation in our OpenAPI v3 and asks the server to be strict."""
    res = apiserver.kubectl("apply", "-v=6", "-f", "-", input=yaml.safe_dump(configmap("strict", ns)))
    assert res.stdout.strip() == "configmap/strict created"
    post = [ln for ln in res.stderr.splitlines() if 'verb="POST"' in ln]
    assert post and "fieldValidation=Strict" in post[0] and 'status="201 Created"' in post[0], res.stderr
    assert "fieldManager=kubectl-client-side-apply" in post[0]
    cm = kjson(apiserver, "get", "cm", "strict", "-n", ns)
    res = apiserver.kubectl("apply", "-v=6", "-f", "-", input=yaml.safe_dump(configmap("strict", ns, k="2")))
    assert res.stdout.strip() == "configmap/strict configured"
    patch = [ln for ln in res.stderr.splitlines() if 'verb="PATCH"' in ln]
    assert patch and "fieldValidation=Strict" in patch[0] and 'status="200 OK"' in patch[0], res.stderr
    assert kjson(apiserver, "get", "cm", "strict", "-n", ns)["metadata"]["uid"] == cm["metadata"]["uid"]


def test_apply_strict_validation_rejects_unknown_fields(apiserver: ApiServerProc, ns: str) -> None:
    bad = configmap("strict", ns)
    bad["bogusField"] = 1
    err = fails(apiserver, "apply", "-f", "-", input=json.dumps(bad))
    assert err.startswith("Error from server (BadRequest):"), err
    assert 'strict decoding error: unknown field "bogusField"' in err
    dev = device("strictdev", ns)
    dev["spec"]["notInSchema"] = True
    err = fails(apiserver, "apply", "-f", "-", input=json.dumps(dev))
    assert 'strict decoding error: unknown field "spec.notInSchema"' in err
    assert apiserver.kubectl("get", "cm,device", "-n", ns, "-o", "name").stdout.strip() == ""
    # Without validation the unknown field is dropped, as a typed decode would.
    out = apiserver.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(bad)).stdout
    assert out.strip() == "configmap/strict created"
    got = kjson(apiserver, "get", "cm", "strict", "-n", ns)
    assert "bogusField" not in got
    assert got["data"] == {"k": "v"}


def test_apply_reapply_configured_and_unchanged(apiserver: ApiServerProc, ns: str) -> None:
    first = deployment("web", ns)
    assert apply(apiserver, first).strip() == "deployment.apps/web created"
    gen = kjson(apiserver, "get", "deployment", "web", "-n", ns)["metadata"]["generation"]
    assert apply(apiserver, first).strip() == "deployment.apps/web unchanged"
    assert kjson(apiserver, "get", "deployment", "web", "-n", ns)["metadata"]["generation"] == gen
    # Change one container's image and its env: containers and env merge by name.
    changed = deployment("web", ns, image="nginx:1.27")
    app = changed["spec"]["template"]["spec"]["containers"][0]
    app["env"] = [{"name": "MODE", "value": "two"}, {"name": "EXTRA", "value": "3"}]
    assert apply(apiserver, changed).strip() == "deployment.apps/web configured"
    d = kjson(apiserver, "get", "deployment", "web", "-n", ns)
    assert d["metadata"]["generation"] == gen + 1
    containers = {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]}
    assert list(containers) == ["app", "sidecar"]
    assert containers["app"]["image"] == "nginx:1.27"
    assert containers["app"]["ports"][0]["containerPort"] == 80
    assert containers["sidecar"]["image"] == "busybox:1.36"
    assert containers["sidecar"]["command"] == ["sleep", "3600"]
    assert [(e["name"], e["value"]) for e in containers["app"]["env"]] == [("MODE", "two"), ("EXTRA", "3")]
    assert apply(apiserver, changed).strip() == "deployment.apps/web unchanged"
    # Someone else adds an env var to the live object: the next apply keeps it (three-way merge)
    # while removing what was dropped from the applied configuration.
    live = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "LIVE", "value": "x"}]}]}}
        }
    }
    apiserver.kubectl("patch", "deployment", "web", "-n", ns, "-p", json.dumps(live))
    del app["env"][1]
    assert apply(apiserver, changed).strip() == "deployment.apps/web configured"
    d = kjson(apiserver, "get", "deployment", "web", "-n", ns)
    env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"MODE": "two", "LIVE": "x"}
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["app", "sidecar"]


def test_apply_device_reapply(apiserver: ApiServerProc, ns: str) -> None:
    assert "created" in apply(apiserver, device("d1", ns))
    dev = device("d1", ns, node="edge-2")
    assert apply(apiserver, dev).strip() == "device.devices.kubeedge.io/d1 configured"
    assert apply(apiserver, dev).strip() == "device.devices.kubeedge.io/d1 unchanged"
    got = kjson(apiserver, "get", "devices.devices.kubeedge.io", "d1", "-n", ns)
    assert got["spec"]["nodeName"] == "edge-2"


def test_apply_server_side(apiserver: ApiServerProc, ns: str) -> None:
    cm = configmap("ssa", ns, a="1", b="2")
    out = apply(apiserver, cm, "--server-side")
    assert out.strip() == "configmap/ssa serverside-applied"
    got = kjson(apiserver, "get", "cm", "ssa", "-n", ns, "--show-managed-fields")
    assert got["data"] == {"a": "1", "b": "2"}
    managers = {m["manager"]: m for m in got["metadata"]["managedFields"]}
    assert managers["kubectl"]["operation"] == "Apply"
    # Update: a changed value and a dropped key (owned by the same manager, so removed).
    cm["data"] = {"a": "10"}
    assert apply(apiserver, cm, "--server-side").strip() == "configmap/ssa serverside-applied"
    assert kjson(apiserver, "get", "cm", "ssa", "-n", ns)["data"] == {"a": "10"}
    # A second manager wanting a different value for a field kubectl owns: conflict.
    other = configmap("ssa", ns, a="20")
    err = fails(
        apiserver, "apply", "--server-side", "--field-manager=other", "-f", "-", input=yaml.safe_dump(other)
    )
    assert "conflict" in err.lower()
    assert "kubectl" in err and ".data.a" in err
    assert kjson(apiserver, "get", "cm", "ssa", "-n", ns)["data"] == {"a": "10"}
    out = apply(apiserver, other, "--server-side", "--field-manager=other", "--force-conflicts")
    assert out.strip() == "configmap/ssa serverside-applied"
    got = kjson(apiserver, "get", "cm", "ssa", "-n", ns, "--show-managed-fields")
    assert got["data"] == {"a": "20"}
    assert {m["manager"] for m in got["metadata"]["managedFields"]} >= {"other"}
    # Server-side apply of a Device CR (create then update).
    assert apply(apiserver, device("sd", ns), "--server-side").strip() == (
        "device.devices.kubeedge.io/sd serverside-applied"
    )
    apply(apiserver, device("sd", ns, node="edge-9"), "--server-side")
    assert kjson(apiserver, "get", "device", "sd", "-n", ns)["spec"]["nodeName"] == "edge-9"


# ---- get: tables -------------------------------------------------------------------------------


def test_get_pods_table_and_wide(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, [pod("p1", ns, node="edge-1"), pod("p2", ns)])
    set_pod_running(apiserver, ns, "p1", "10.244.1.7", restarts=2)
    out = apiserver.kubectl("get", "pods", "-n", ns).stdout
    assert headers(out) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = by_name(table(out))
    assert rows["p1"]["READY"] == "1/1"
    assert rows["p1"]["STATUS"] == "Running"
    assert rows["p1"]["RESTARTS"] == "2"
    assert re.fullmatch(r"\d+s", rows["p1"]["AGE"])
    assert rows["p2"]["READY"] == "0/1"
    assert rows["p2"]["STATUS"] == "Pending"
    assert rows["p2"]["RESTARTS"] == "0"
    wide = apiserver.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout
    assert headers(wide) == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    rows = by_name(table(wide))
    assert rows["p1"]["IP"] == "10.244.1.7"
    assert rows["p1"]["NODE"] == "edge-1"
    assert rows["p2"]["IP"] == "<none>"
    assert rows["p2"]["NODE"] == "<none>"
    # A single object by name is a table too.
    one = table(apiserver.kubectl("get", "pod", "p1", "-n", ns).stdout)
    assert [r["NAME"] for r in one] == ["p1"]
    # --show-labels adds LABELS.
    lab = apiserver.kubectl("get", "pods", "-n", ns, "--show-labels").stdout
    assert headers(lab)[-1] == "LABELS"
    assert by_name(table(lab))["p1"]["LABELS"] == "app=p1"


def test_get_deployments_and_services_tables(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, [deployment("web", ns), service("web", ns)])
    out = apiserver.kubectl("get", "deployments", "-n", ns).stdout
    assert headers(out) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    row = by_name(table(out))["web"]
    assert row["READY"] == "0/2"
    assert row["UP-TO-DATE"] == "0"
    assert row["AVAILABLE"] == "0"
    wide = apiserver.kubectl("get", "deploy", "-n", ns, "-o", "wide").stdout
    assert headers(wide) == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    row = by_name(table(wide))["web"]
    assert row["CONTAINERS"] == "app,sidecar"
    assert row["IMAGES"] == "nginx:1.25,busybox:1.36"
    assert row["SELECTOR"] == "app=web"

    ip = kjson(apiserver, "get", "svc", "web", "-n", ns)["spec"]["clusterIP"]
    out = apiserver.kubectl("get", "services", "-n", ns).stdout
    assert headers(out) == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    row = by_name(table(out))["web"]
    assert row["TYPE"] == "ClusterIP"
    assert row["CLUSTER-IP"] == ip
    assert row["EXTERNAL-IP"] == "<none>"
    assert row["PORT(S)"] == "80/TCP,443/TCP"
    wide = apiserver.kubectl("get", "svc", "-n", ns, "-o", "wide").stdout
    assert headers(wide)[-1] == "SELECTOR"
    assert by_name(table(wide))["web"]["SELECTOR"] == "app=web"


def test_get_nodes_registered_by_apply(apiserver: ApiServerProc) -> None:
    name = uid("edge")
    assert apply(apiserver, node(name)).strip() == f"node/{name} created"
    got = kjson(apiserver, "get", "node", name)
    assert got["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.0-kubeedge"
    out = apiserver.kubectl("get", "nodes", name).stdout
    assert headers(out) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    row = by_name(table(out))[name]
    assert row["STATUS"] == "Ready"
    assert row["ROLES"] == "agent,edge"
    assert row["VERSION"] == "v1.37.0-kubeedge"
    wide = apiserver.kubectl("get", "no", name, "-o", "wide").stdout
    assert headers(wide) == [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]
    row = by_name(table(wide))[name]
    assert row["INTERNAL-IP"] == "192.168.1.10"
    assert row["EXTERNAL-IP"] == "<none>"
    assert row["OS-IMAGE"] == "Debian GNU/Linux 12 (bookworm)"
    assert row["KERNEL-VERSION"] == "6.1.0-edge"
    assert row["CONTAINER-RUNTIME"] == "containerd://1.7.0"
    apiserver.kubectl("cordon", name)
    row = by_name(table(apiserver.kubectl("get", "node", name).stdout))[name]
    assert row["STATUS"] == "Ready,SchedulingDisabled"
    apiserver.kubectl("delete", "node", name)


def test_get_device_printer_columns(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, [device("d1", ns, node="edge-1", model="thermo"), device("d2", ns, node="edge-2")])
    apiserver.kubectl(
        "patch",
        "device",
        "d1",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"state":"online"}}',
    )
    out = apiserver.kubectl("get", "devices", "-n", ns).stdout
    assert headers(out) == ["NAME", "MODEL", "NODE", "STATE", "AGE"]
    rows = by_name(table(out))
    assert rows["d1"]["MODEL"] == "thermo"
    assert rows["d1"]["NODE"] == "edge-1"
    assert rows["d1"]["STATE"] == "online"
    assert rows["d2"]["NODE"] == "edge-2"
    assert rows["d2"]["STATE"] == ""  # a CRD column with no value is an empty cell
    # Short name and fully-qualified resource work the same.
    assert by_name(table(apiserver.kubectl("get", "dev", "-n", ns).stdout)).keys() == {"d1", "d2"}


# ---- get: output formats and selection ------------------------------------------------------------


def test_get_output_formats(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, [configmap("a", ns, x="1"), configmap("b", ns, z="2")])
    lst = kjson(apiserver, "get", "configmaps", "-n", ns)
    assert lst["kind"] == "List"
    assert [i["metadata"]["name"] for i in lst["items"]] == ["a", "b"]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in lst["items"])
    one = kjson(apiserver, "get", "cm", "a", "-n", ns)
    assert one["kind"] == "ConfigMap"
    assert one["apiVersion"] == "v1"
    assert one["data"] == {"x": "1"}
    y = yaml.safe_load(apiserver.kubectl("get", "cm", "b", "-n", ns, "-o", "yaml").stdout)
    assert y["kind"] == "ConfigMap"
    assert y["metadata"]["namespace"] == ns
    assert y["data"] == {"z": "2"}
    names = apiserver.kubectl("get", "cm", "a", "b", "-n", ns, "-o", "name").stdout.split()
    assert names == ["configmap/a", "configmap/b"]
    jp = apiserver.kubectl("get", "cm", "a", "-n", ns, "-o", "jsonpath={.data.x}").stdout
    assert jp == "1"
    jp = apiserver.kubectl(
        "get",
        "cm",
        "a",
        "b",
        "-n",
        ns,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.metadata.namespace};{end}",
    ).stdout
    assert jp == f"a={ns};b={ns};"
    cc = apiserver.kubectl(
        "get", "cm", "a", "-n", ns, "-o", "custom-columns=N:.metadata.name,X:.data.x"
    ).stdout
    assert table(cc) == [{"N": "a", "X": "1"}]


def test_get_label_and_field_selectors(apiserver: ApiServerProc, ns: str) -> None:
    apply(
        apiserver,
        [
            configmap("red1", ns, labels={"color": "red", "tier": "fe"}),
            configmap("red2", ns, labels={"color": "red", "tier": "be"}),
            configmap("blue", ns, labels={"color": "blue"}),
            pod("run", ns),
            pod("wait", ns),
        ],
    )
    set_pod_running(apiserver, ns, "run", "10.0.0.9")

    def names(*args: str) -> list[str]:
        return sorted(apiserver.kubectl("get", *args, "-n", ns, "-o", "name").stdout.split())

    assert names("cm", "-l", "color=red") == ["configmap/red1", "configmap/red2"]
    assert names("cm", "-l", "color=red,tier!=fe") == ["configmap/red2"]
    assert names("cm", "-l", "color in (blue)") == ["configmap/blue"]
    assert names("cm", "-l", "tier") == ["configmap/red1", "configmap/red2"]
    assert names("cm", "-l", "!tier,color") == ["configmap/blue"]
    assert names("cm", "--field-selector", "metadata.name=blue") == ["configmap/blue"]
    assert "configmap/blue" not in names("cm", "--field-selector", "metadata.name!=blue")
    assert names("pods", "--field-selector", "status.phase=Running") == ["pod/run"]
    assert names("pods", "--field-selector", "status.phase!=Running") == ["pod/wait"]
    assert names("cm", "-l", "color=red", "--field-selector", "metadata.name=red2") == ["configmap/red2"]
    # Tables honour selectors too.
    rows = table(apiserver.kubectl("get", "cm", "-n", ns, "-l", "color=blue").stdout)
    assert [r["NAME"] for r in rows] == ["blue"]
    assert headers(apiserver.kubectl("get", "cm", "-n", ns, "-l", "color=blue").stdout) == [
        "NAME",
        "DATA",
        "AGE",
    ]
    assert rows[0]["DATA"] == "1"
    # Unsupported field selectors are rejected.
    err = fails(apiserver, "get", "cm", "-n", ns, "--field-selector", "data.k=v")
    assert "field label not supported" in err or "not supported" in err


def test_get_all_namespaces(apiserver: ApiServerProc, ns: str) -> None:
    other = uid("allns-other")
    create_namespace(apiserver, other)
    marker = uid("m")
    apply(
        apiserver,
        [configmap("c1", ns, labels={"mark": marker}), configmap("c2", other, labels={"mark": marker})],
    )
    out = apiserver.kubectl("get", "cm", "--all-namespaces", "-l", f"mark={marker}").stdout
    assert headers(out) == ["NAMESPACE", "NAME", "DATA", "AGE"]
    rows = table(out)
    assert sorted((r["NAMESPACE"], r["NAME"]) for r in rows) == sorted([(ns, "c1"), (other, "c2")])
    lst = kjson(apiserver, "get", "cm", "-A", "-l", f"mark={marker}")
    assert sorted(i["metadata"]["namespace"] for i in lst["items"]) == sorted([ns, other])
    nss = table(apiserver.kubectl("get", "namespaces").stdout)
    assert {"default", "kube-system", ns, other} <= {r["NAME"] for r in nss}
    assert by_name(nss)[ns]["STATUS"] == "Active"


def test_get_all(apiserver: ApiServerProc, ns: str) -> None:
    apply(
        apiserver, [deployment("web", ns), service("web", ns), pod("solo", ns), configmap("notincluded", ns)]
    )
    out = apiserver.kubectl("get", "all", "-n", ns).stdout
    for name in ("pod/solo", "service/web", "deployment.apps/web"):
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), (name, out)
    assert "configmap" not in out
    names = apiserver.kubectl("get", "all", "-n", ns, "-o", "name").stdout.split()
    assert {"pod/solo", "service/web", "deployment.apps/web"} <= set(names)
    # Each section keeps its own table header.
    assert re.search(r"^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE$", out, re.M)
    assert re.search(r"^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE$", out, re.M)


def test_get_chunked_pagination(apiserver: ApiServerProc, ns: str) -> None:
    want = [f"cm-{i:02d}" for i in range(11)]
    apply(apiserver, [configmap(n, ns, labels={"paged": "yes"}) for n in want])
    names = apiserver.kubectl("get", "cm", "-n", ns, "-l", "paged=yes", "--chunk-size=2", "-o", "name").stdout
    assert names.split() == [f"configmap/{n}" for n in want]
    rows = table(apiserver.kubectl("get", "cm", "-n", ns, "-l", "paged=yes", "--chunk-size=2").stdout)
    assert [r["NAME"] for r in rows] == want
    lst = kjson(apiserver, "get", "cm", "-n", ns, "-l", "paged=yes", "--chunk-size=3")
    assert [i["metadata"]["name"] for i in lst["items"]] == want
    rows = table(apiserver.kubectl("get", "cm", "-A", "-l", "paged=yes", "--chunk-size=2").stdout)
    assert [r["NAME"] for r in rows if r["NAMESPACE"] == ns] == want


# ---- get -w ------------------------------------------------------------------------------------


def test_get_watch_rows(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, configmap("before", ns))
    w = Background(apiserver, "get", "configmaps", "-n", ns, "-w")
    try:
        first = w.expect(lambda t: t[:1] == ["NAME"], "the header")
        assert first.split() == ["NAME", "DATA", "AGE"]
        w.expect(lambda t: t[:2] == ["before", "1"], "the existing object")
        apply(apiserver, configmap("later", ns, a="1", b="2"))
        w.expect(lambda t: t[:2] == ["later", "2"], "the created object")
        apiserver.kubectl("patch", "cm", "later", "-n", ns, "--type=merge", "-p", '{"data":{"c":"3"}}')
        w.expect(lambda t: t[:2] == ["later", "3"], "the modified object")
        apiserver.kubectl("delete", "cm", "before", "-n", ns)
        w.expect(lambda t: t[:1] == ["before"], "the deleted object")
    finally:
        w.close()


def test_get_watch_output_events(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, pod("p0", ns))
    w = Background(apiserver, "get", "pods", "-n", ns, "-w", "--output-watch-events")
    try:
        hdr = w.expect(lambda t: t[:1] == ["EVENT"], "the header")
        assert hdr.split() == ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        w.expect(lambda t: t[:2] == ["ADDED", "p0"], "ADDED p0")
        apply(apiserver, pod("p1", ns))
        w.expect(lambda t: t[:5] == ["ADDED", "p1", "0/1", "Pending", "0"], "ADDED p1")
        set_pod_running(apiserver, ns, "p1", "10.1.1.1")
        w.expect(lambda t: t[:5] == ["MODIFIED", "p1", "1/1", "Running", "0"], "MODIFIED p1")
        apiserver.kubectl("delete", "pod", "p1", "-n", ns, "--wait=false")
        w.expect(lambda t: t[:2] == ["DELETED", "p1"], "DELETED p1")
    finally:
        w.close()
    # Watch of a single named object, with JSON events.
    w = Background(apiserver, "get", "pod", "p0", "-n", ns, "-w", "--output-watch-events", "-o", "json")
    try:
        added = w.next_json()
        assert added["type"] == "ADDED"
        assert added["object"]["metadata"]["name"] == "p0"
        assert "seen" not in added["object"]["metadata"].get("labels", {})
        apiserver.kubectl("label", "pod", "p0", "-n", ns, "seen=yes")
        mod = w.next_json()
        assert mod["type"] == "MODIFIED"
        assert mod["object"]["kind"] == "Pod"
        assert mod["object"]["metadata"]["labels"]["seen"] == "yes"
    finally:
        w.close()


# ---- describe ----------------------------------------------------------------------------------


def _event(
    ns: str, name: str, obj_kind: str, obj_name: str, obj_uid: str, reason: str, msg: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": obj_kind,
            "name": obj_name,
            "namespace": ns,
            "uid": obj_uid,
            "apiVersion": "v1",
        },
        "reason": reason,
        "message": msg,
        "type": "Warning",
        "count": 3,
        "source": {"component": "edged", "host": "edge-1"},
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:01:00Z",
    }


def test_describe_pod_with_events(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, pod("web-0", ns, node="edge-1", labels={"app": "web"}))
    set_pod_running(apiserver, ns, "web-0", "10.244.0.5")
    pod_uid = kjson(apiserver, "get", "pod", "web-0", "-n", ns)["metadata"]["uid"]
    apply(
        apiserver, _event(ns, "web-0.1", "Pod", "web-0", pod_uid, "BackOff", "Back-off pulling image nginx")
    )
    out = apiserver.kubectl("describe", "pod", "web-0", "-n", ns).stdout
    assert re.search(r"^Name:\s+web-0$", out, re.M)
    assert re.search(rf"^Namespace:\s+{ns}$", out, re.M)
    assert re.search(r"^Node:\s+edge-1", out, re.M)
    assert re.search(r"^Labels:\s+app=web$", out, re.M)
    assert re.search(r"^Status:\s+Running$", out, re.M)
    assert re.search(r"^IP:\s+10\.244\.0\.5$", out, re.M)
    assert re.search(r"^\s+main:$", out, re.M)
    assert re.search(r"^\s+Image:\s+nginx:1\.25$", out, re.M)
    assert re.search(r"^Events:$", out, re.M)
    assert re.search(r"^\s+Type\s+Reason\s+Age\s+From\s+Message$", out, re.M)
    assert re.search(r"^\s+Warning\s+BackOff\s+.*edged.*Back-off pulling image nginx$", out, re.M), out
    # Events are also listable with a field selector on the involved object.
    ev = table(
        apiserver.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=web-0").stdout
    )
    assert [(r["TYPE"], r["REASON"], r["OBJECT"]) for r in ev] == [("Warning", "BackOff", "pod/web-0")]


def test_describe_deployment_service_namespace(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, [deployment("web", ns), service("web", ns)])
    out = apiserver.kubectl("describe", "deployment", "web", "-n", ns).stdout
    assert re.search(r"^Name:\s+web$", out, re.M)
    assert re.search(r"^Selector:\s+app=web$", out, re.M)
    assert re.search(r"^Replicas:\s+2 desired", out, re.M)
    assert re.search(r"^StrategyType:\s+RollingUpdate$", out, re.M)
    assert re.search(r"^\s+app:$", out, re.M) and re.search(r"^\s+sidecar:$", out, re.M)
    assert re.search(r"^\s+MODE:\s+one$", out, re.M)

    ip = kjson(apiserver, "get", "svc", "web", "-n", ns)["spec"]["clusterIP"]
    out = apiserver.kubectl("describe", "service", "web", "-n", ns).stdout
    assert re.search(r"^Name:\s+web$", out, re.M)
    assert re.search(r"^Type:\s+ClusterIP$", out, re.M)
    assert re.search(rf"^IP:\s+{re.escape(ip)}$", out, re.M)
    assert re.search(r"^Port:\s+http\s+80/TCP$", out, re.M)
    assert re.search(r"^TargetPort:\s+8080/TCP$", out, re.M)
    assert re.search(r"^Selector:\s+app=web$", out, re.M)

    out = apiserver.kubectl("describe", "namespace", ns).stdout
    assert re.search(rf"^Name:\s+{ns}$", out, re.M)
    assert re.search(r"^Status:\s+Active$", out, re.M)


def test_describe_node(apiserver: ApiServerProc) -> None:
    name = uid("edge-desc")
    apply(apiserver, node(name, ip="10.9.8.7"))
    out = apiserver.kubectl("describe", "node", name).stdout
    assert re.search(rf"^Name:\s+{name}$", out, re.M)
    assert re.search(r"^Roles:\s+agent,edge$", out, re.M)
    assert re.search(r"^\s+InternalIP:\s+10\.9\.8\.7$", out, re.M)
    assert re.search(r"^\s+Ready\s+True\s+.*EdgeReady\s+edge node is posting ready status$", out, re.M), out
    assert re.search(r"^\s+Kernel Version:\s+6\.1\.0-edge$", out, re.M)
    assert re.search(r"^\s+Container Runtime Version:\s+containerd://1\.7\.0$", out, re.M)
    apiserver.kubectl("delete", "node", name)


# ---- label / annotate / patch / scale --------------------------------------------------------------


def test_label(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, configmap("c", ns))
    assert apiserver.kubectl("label", "cm", "c", "-n", ns, "env=dev").stdout.strip() == "configmap/c labeled"
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"]["labels"] == {"env": "dev"}
    err = fails(apiserver, "label", "cm", "c", "-n", ns, "env=prod")
    assert "'env' already has a value (dev)" in err and "--overwrite" in err
    apiserver.kubectl("label", "cm", "c", "-n", ns, "env=prod", "--overwrite")
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"]["labels"] == {"env": "prod"}
    apiserver.kubectl("label", "cm", "c", "-n", ns, "team=edge")
    assert apiserver.kubectl("label", "cm", "c", "-n", ns, "env-").stdout.strip() == "configmap/c unlabeled"
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"]["labels"] == {"team": "edge"}
    # Label a CR as well.
    apply(apiserver, device("d", ns))
    apiserver.kubectl("label", "device", "d", "-n", ns, "zone=a")
    assert kjson(apiserver, "get", "device", "d", "-n", ns)["metadata"]["labels"] == {"zone": "a"}


def test_annotate(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, configmap("c", ns))
    out = apiserver.kubectl("annotate", "cm", "c", "-n", ns, "note=hello world").stdout
    assert out.strip() == "configmap/c annotated"
    ann = kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"]["annotations"]
    assert ann["note"] == "hello world"
    err = fails(apiserver, "annotate", "cm", "c", "-n", ns, "note=other")
    assert "already has a value" in err
    apiserver.kubectl("annotate", "cm", "c", "-n", ns, "note=other", "--overwrite")
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"]["annotations"]["note"] == "other"
    apiserver.kubectl("annotate", "cm", "c", "-n", ns, "note-")
    ann = kjson(apiserver, "get", "cm", "c", "-n", ns)["metadata"].get("annotations") or {}
    assert "note" not in ann


def test_patch_types(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, deployment("web", ns))

    def get() -> dict[str, Any]:
        return kjson(apiserver, "get", "deploy", "web", "-n", ns)

    # Strategic merge: containers merge by name, so the sidecar survives.
    sm = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.30"}]}}}}
    out = apiserver.kubectl("patch", "deploy", "web", "-n", ns, "--type", "strategic", "-p", json.dumps(sm))
    assert out.stdout.strip() == "deployment.apps/web patched"
    cs = get()["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in cs] == [("app", "nginx:1.30"), ("sidecar", "busybox:1.36")]
    # Merge patch: lists are replaced wholesale; null deletes a key.
    mp = {
        "metadata": {"labels": {"app": None, "patched": "merge"}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "alpine:3"}]}}},
    }
    apiserver.kubectl("patch", "deploy", "web", "-n", ns, "--type", "merge", "-p", json.dumps(mp))
    d = get()
    assert d["metadata"]["labels"] == {"patched": "merge"}
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["only"]
    # JSON patch: precise operations, with a failing test op rejected.
    jp = [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/labels/json", "value": "yes"},
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "alpine:3"},
    ]
    apiserver.kubectl("patch", "deploy", "web", "-n", ns, "--type", "json", "-p", json.dumps(jp))
    d = get()
    assert d["spec"]["replicas"] == 5
    assert d["metadata"]["labels"] == {"patched": "merge", "json": "yes"}
    bad = [{"op": "test", "path": "/spec/replicas", "value": 1}]
    fails(apiserver, "patch", "deploy", "web", "-n", ns, "--type", "json", "-p", json.dumps(bad))
    # An unchanged patch is reported as such.
    out = apiserver.kubectl(
        "patch", "deploy", "web", "-n", ns, "--type", "merge", "-p", '{"spec":{"replicas":5}}'
    )
    assert out.stdout.strip() == "deployment.apps/web patched (no change)"
    # Merge patch on a CR.
    apply(apiserver, device("d", ns))
    apiserver.kubectl(
        "patch", "device", "d", "-n", ns, "--type=merge", "-p", '{"spec":{"nodeName":"edge-7"}}'
    )
    assert kjson(apiserver, "get", "device", "d", "-n", ns)["spec"]["nodeName"] == "edge-7"


def test_scale(apiserver: ApiServerProc, ns: str) -> None:
    apply(apiserver, deployment("web", ns))
    out = apiserver.kubectl("scale", "deployment", "web", "-n", ns, "--replicas=4").stdout
    assert out.strip() == "deployment.apps/web scaled"
    assert kjson(apiserver, "get", "deploy", "web", "-n", ns)["spec"]["replicas"] == 4
    # --current-replicas is a precondition.
    err = fails(apiserver, "scale", "deployment/web", "-n", ns, "--current-replicas=1", "--replicas=3")
    assert "Expected replicas to be 1, was 4" in err
    apiserver.kubectl("scale", "deployment/web", "-n", ns, "--current-replicas=4", "--replicas=0")
    row = by_name(table(apiserver.kubectl("get", "deploy", "-n", ns).stdout))["web"]
    assert row["READY"] == "0/0"


# ---- delete ------------------------------------------------------------------------------------


def test_delete_objects(apiserver: ApiServerProc, ns: str, tmp_path: Path) -> None:
    apply(apiserver, [configmap("one", ns), configmap("two", ns), device("dv", ns)])
    out = apiserver.kubectl("delete", "cm", "one", "-n", ns).stdout
    assert out.strip() == f'configmap "one" deleted from {ns} namespace'
    assert "NotFound" in fails(apiserver, "get", "cm", "one", "-n", ns)
    out = apiserver.kubectl("delete", "device", "dv", "-n", ns).stdout
    assert out.strip() == f'device.devices.kubeedge.io "dv" deleted from {ns} namespace'
    # delete -f
    f = tmp_path / "objs.yaml"
    f.write_text(yaml.safe_dump_all([configmap("f1", ns), service("f2", ns)]))
    apiserver.kubectl("apply", "-f", str(f))
    out = apiserver.kubectl("delete", "-f", str(f)).stdout
    assert out.splitlines() == [
        f'configmap "f1" deleted from {ns} namespace',
        f'service "f2" deleted from {ns} namespace',
    ]
    assert apiserver.kubectl("get", "cm,svc", "-n", ns, "-o", "name").stdout.split() == ["configmap/two"]
    # delete -l
    apply(
        apiserver,
        [configmap(f"l{i}", ns, labels={"batch": "x"}) for i in range(3)]
        + [configmap("keep", ns, labels={"batch": "y"})],
    )
    out = apiserver.kubectl("delete", "cm", "-n", ns, "-l", "batch=x").stdout
    assert sorted(out.splitlines()) == [f'configmap "l{i}" deleted from {ns} namespace' for i in range(3)]
    assert apiserver.kubectl("get", "cm", "-n", ns, "-o", "name").stdout.split() == [
        "configmap/keep",
        "configmap/two",
    ]
    # Deleting what is not there.
    err = fails(apiserver, "delete", "cm", "nothere", "-n", ns)
    assert 'Error from server (NotFound): configmaps "nothere" not found' in err
    assert apiserver.kubectl("delete", "cm", "nothere", "-n", ns, "--ignore-not-found").stdout == ""


def test_delete_namespace_cascades(apiserver: ApiServerProc) -> None:
    name = uid("doomed")
    create_namespace(apiserver, name)
    apply(apiserver, [configmap("c", name), deployment("web", name), service("web", name), device("d", name)])
    apply(apiserver, pod("p", name))
    out = apiserver.kubectl("delete", "namespace", name, timeout=60).stdout
    assert out.strip() == f'namespace "{name}" deleted'
    err = fails(apiserver, "get", "ns", name)
    assert f'Error from server (NotFound): namespaces "{name}" not found' in err
    for kind in ("configmaps", "deployments", "services", "pods", "devices"):
        lst = kjson(apiserver, "get", kind, "-n", name)
        assert lst["items"] == [], kind
    # The namespace name is free again.
    create_namespace(apiserver, name)
    assert kjson(apiserver, "get", "cm", "-n", name, "-l", "!kubernetes.io/metadata.name")["items"] == []
    apiserver.kubectl("delete", "ns", name)


# ---- wait --------------------------------------------------------------------------------------


def test_wait(apiserver: ApiServerProc, ns: str) -> None:
    out = apiserver.kubectl(
        "wait", "--for=condition=Established", "crd/devices.devices.kubeedge.io", "--timeout=10s"
    ).stdout
    assert (
        out.strip()
        == "customresourcedefinition.apiextensions.k8s.io/devices.devices.kubeedge.io condition met"
    )
    name = uid("edge-wait")
    apply(apiserver, node(name, ready=True))
    out = apiserver.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=10s").stdout
    assert out.strip() == f"node/{name} condition met"
    # A condition that does not hold times out.
    err = fails(apiserver, "wait", "--for=condition=Ready=False", f"node/{name}", "--timeout=1s")
    assert "timed out waiting for the condition" in err
    # jsonpath on a Device, satisfied by a later status write.
    apply(apiserver, device("dw", ns))
    # Each waiter runs with -v=6 so we can see (on stderr) when its watch is established before we change
    # anything: the change must then arrive through the watch (WatchList + initial-events-end bookmark).
    waiter = Background(
        apiserver,
        "wait",
        "-v=6",
        "--for=jsonpath={.status.state}=online",
        "device/dw",
        "-n",
        ns,
        "--timeout=20s",
    )
    try:
        waiter.expect(
            lambda t: "Caches populated" in " ".join(t), "the waiter's watch being synced", stderr=True
        )
        status = '{"status":{"state":"online"}}'
        apiserver.kubectl(
            "patch", "device", "dw", "-n", ns, "--subresource=status", "--type=merge", "-p", status
        )
        rc, wout = waiter.finish()
    finally:
        waiter.close()
    assert rc == 0, waiter.seen_err[-5:]
    assert wout.strip() == "device.devices.kubeedge.io/dw condition met"
    # --for=delete returns once the object is gone.
    apply(apiserver, configmap("bye", ns))
    waiter = Background(apiserver, "wait", "-v=6", "--for=delete", "cm/bye", "-n", ns, "--timeout=20s")
    try:
        waiter.expect(
            lambda t: "Caches populated" in " ".join(t), "the waiter's watch being synced", stderr=True
        )
        apiserver.kubectl("delete", "cm", "bye", "-n", ns)
        rc, wout = waiter.finish()
    finally:
        waiter.close()
    assert rc == 0, waiter.seen_err[-5:]
    assert wout.strip() == "configmap/bye condition met"
    # And for something already gone.
    assert apiserver.kubectl("wait", "--for=delete", "cm/bye", "-n", ns, "--timeout=5s").returncode == 0
    apiserver.kubectl("delete", "node", name)


# ---- typed create / run (protobuf bodies) ----------------------------------------------------------


def test_create_namespace(apiserver: ApiServerProc) -> None:
    name = uid("typed-ns")
    out = apiserver.kubectl("create", "namespace", name).stdout
    assert out.strip() == f"namespace/{name} created"
    assert kjson(apiserver, "get", "ns", name)["status"]["phase"] == "Active"
    err = fails(apiserver, "create", "namespace", name)
    assert err.strip() == f'Error from server (AlreadyExists): namespaces "{name}" already exists'
    apiserver.kubectl("delete", "ns", name)


def test_create_configmap_and_secret(apiserver: ApiServerProc, ns: str) -> None:
    out = apiserver.kubectl(
        "create", "configmap", "cm1", "-n", ns, "--from-literal=a=1", "--from-literal=b=2"
    )
    assert out.stdout.strip() == "configmap/cm1 created"
    assert kjson(apiserver, "get", "cm", "cm1", "-n", ns)["data"] == {"a": "1", "b": "2"}
    out = apiserver.kubectl("create", "secret", "generic", "s1", "-n", ns, "--from-literal=password=pw")
    assert out.stdout.strip() == "secret/s1 created"
    s = kjson(apiserver, "get", "secret", "s1", "-n", ns)
    assert s["type"] == "Opaque"
    assert s["data"] == {"password": "cHc="}


def test_create_deployment_service_job_run(apiserver: ApiServerProc, ns: str) -> None:
    out = apiserver.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx:1.25", "--replicas=3")
    assert out.stdout.strip() == "deployment.apps/web created"
    d = kjson(apiserver, "get", "deploy", "web", "-n", ns)
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"]["matchLabels"] == {"app": "web"}
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    out = apiserver.kubectl("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")
    assert out.stdout.strip() == "service/web created"
    svc = kjson(apiserver, "get", "svc", "web", "-n", ns)
    assert svc["spec"]["ports"][0]["port"] == 80
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    assert svc["spec"]["clusterIP"]
    out = apiserver.kubectl("create", "job", "once", "-n", ns, "--image=busybox:1.36", "--", "echo", "hi")
    assert out.stdout.strip() == "job.batch/once created"
    job = kjson(apiserver, "get", "job", "once", "-n", ns)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    out = apiserver.kubectl("run", "solo", "-n", ns, "--image=nginx:1.25", "--labels=tier=edge", "--port=80")
    assert out.stdout.strip() == "pod/solo created"
    p = kjson(apiserver, "get", "pod", "solo", "-n", ns)
    assert p["metadata"]["labels"] == {"tier": "edge"}
    assert p["spec"]["containers"][0]["ports"][0]["containerPort"] == 80


# ---- errors ------------------------------------------------------------------------------------


def test_error_already_exists(apiserver: ApiServerProc, ns: str) -> None:
    text = yaml.safe_dump(configmap("dup", ns))
    apiserver.kubectl("create", "-f", "-", input=text)
    err = fails(apiserver, "create", "-f", "-", input=text)
    assert (
        err.strip()
        == 'Error from server (AlreadyExists): error when creating "STDIN": configmaps "dup" already exists'
    )
    text = yaml.safe_dump(device("dup", ns))
    apiserver.kubectl("create", "-f", "-", input=text)
    err = fails(apiserver, "create", "-f", "-", input=text)
    assert 'devices.devices.kubeedge.io "dup" already exists' in err


def test_error_not_found(apiserver: ApiServerProc, ns: str) -> None:
    err = fails(apiserver, "get", "pod", "ghost", "-n", ns)
    assert err.strip() == 'Error from server (NotFound): pods "ghost" not found'
    err = fails(apiserver, "get", "device", "ghost", "-n", ns)
    assert err.strip() == 'Error from server (NotFound): devices.devices.kubeedge.io "ghost" not found'
    err = fails(apiserver, "get", "cm", "-n", uid("no-such-ns"), "x")
    assert "(NotFound)" in err
    err = fails(apiserver, "get", "notakind")
    assert 'the server doesn\'t have a resource type "notakind"' in err


def test_error_invalid(apiserver: ApiServerProc, ns: str) -> None:
    bad_name = configmap("Bad_Name", ns)
    err = fails(apiserver, "apply", "-f", "-", input=yaml.safe_dump(bad_name))
    assert 'The ConfigMap "Bad_Name" is invalid' in err
    assert 'metadata.name: Invalid value: "Bad_Name"' in err
    no_containers = pod("empty", ns)
    no_containers["spec"]["containers"] = []
    err = fails(apiserver, "apply", "-f", "-", input=yaml.safe_dump(no_containers))
    assert 'The Pod "empty" is invalid' in err
    assert "spec.containers: Required value" in err
    mismatch = deployment("mis", ns)
    mismatch["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    err = fails(apiserver, "apply", "-f", "-", input=yaml.safe_dump(mismatch))
    assert 'The Deployment "mis" is invalid' in err
    assert "spec.template.metadata.labels: Invalid value" in err
    assert "`selector` does not match template `labels`" in err
    assert apiserver.kubectl("get", "cm,pod,deploy", "-n", ns, "-o", "name").stdout.strip() == ""


def test_error_forbidden_for_node_identity(apiserver: ApiServerProc, ns: str, tmp_path: Path) -> None:
    pki = apiserver.data_dir / "pki"
    ca = certs.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    pair = certs.issue(ca, "system:node:edge-1", organizations=["system:nodes"], client=True)
    kc = tmp_path / "node.kubeconfig"
    kc.write_text(certs.kubeconfig(apiserver.url, ca.cert_pem, "system:node:edge-1", pair))
    env = dict(os.environ, KUBECONFIG=str(kc))

    def as_node(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=30)

    res = as_node("get", "secrets", "-n", ns)
    assert res.returncode != 0
    assert res.stderr.startswith("Error from server (Forbidden):"), res.stderr
    assert 'User "system:node:edge-1" cannot list resource "secrets"' in res.stderr
    res = as_node("delete", "namespace", ns)
    assert res.returncode != 0
    assert "(Forbidden)" in res.stderr
    assert kjson(apiserver, "get", "ns", ns)["status"]["phase"] == "Active"


def test_error_conflict_on_stale_replace(apiserver: ApiServerProc, ns: str, tmp_path: Path) -> None:
    apply(apiserver, configmap("c", ns, v="1"))
    old = apiserver.kubectl("get", "cm", "c", "-n", ns, "-o", "yaml").stdout
    apiserver.kubectl("patch", "cm", "c", "-n", ns, "--type=merge", "-p", '{"data":{"v":"2"}}')
    f = tmp_path / "stale.yaml"
    f.write_text(old.replace('v: "1"', 'v: "3"').replace("v: '1'", "v: '3'"))
    err = fails(apiserver, "replace", "-f", str(f))
    assert err.startswith("Error from server (Conflict):"), err
    assert 'Operation cannot be fulfilled on configmaps "c": the object has been modified' in err
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["data"] == {"v": "2"}
    # A fresh copy replaces fine.
    fresh = kjson(apiserver, "get", "cm", "c", "-n", ns)
    fresh["data"] = {"v": "4"}
    out = apiserver.kubectl("replace", "-f", "-", input=json.dumps(fresh)).stdout
    assert out.strip() == "configmap/c replaced"
    assert kjson(apiserver, "get", "cm", "c", "-n", ns)["data"] == {"v": "4"}
