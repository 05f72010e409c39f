"""ansible/site.yml against three Debian hosts booted from a plain base tree (systemd-nspawn, each in
its own network namespace, sshd inside): a cloud and two edge nodes that end up Ready in the cloud.
Check mode works on the fresh hosts, a second run changes nothing, and ansible-lint passes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Final

import pytest

from tests.ansible.basetree import CACHE, REPO, base_tree
from tests.ansible.lab import Lab, running_lab, wait_until

ANSIBLE_DIR: Final = REPO / "ansible"
VENV_BIN: Final = Path(sys.executable).parent
CLOUD: Final = "cloud1"
EDGES: Final = ("edge1", "edge2")
VENV: Final = "/opt/kubeedge/venv"
KUBECONFIG: Final = "/var/lib/kubeedge/cloud/apiserver/admin.kubeconfig"
PLAYBOOK_TIMEOUT: Final = 900.0
READY_TIMEOUT: Final = 120.0
RECAP: Final = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)
# Run inside the cloud host with the project's Python: each Node's Ready status, straight from the API
# with the admin credentials of the kubeconfig keadm init wrote.
READY_SCRIPT: Final = """
import base64, json, ssl, sys, tempfile, urllib.request, yaml
kc = yaml.safe_load(open(sys.argv[1]))
cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
with tempfile.NamedTemporaryFile("wb") as crt, tempfile.NamedTemporaryFile("wb") as key:
    crt.write(base64.b64decode(user["client-certificate-data"])); crt.flush()
    key.write(base64.b64decode(user["client-key-data"])); key.flush()
    ctx.load_cert_chain(crt.name, key.name)
    nodes = json.load(urllib.request.urlopen(cluster["server"] + "/api/v1/nodes", context=ctx, timeout=10))
ready = {n["metadata"]["name"]: [c for c in n["status"].get("conditions", []) if c["type"] == "Ready"]
         for n in nodes["items"]}
print(json.dumps({name: c[0]["status"] if c and c[0]["status"] == "True"
                  else f"{c[0]['status']}: {c[0].get('reason')}: {c[0].get('message')}" if c else "no condition"
                  for name, c in ready.items()}))
"""


def _pip_wheel(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=PLAYBOOK_TIMEOUT,
    )


def build_wheels(dest: Path) -> Path:
    """What `make wheel` leaves in dist/wheels, built the same way: dependency wheels cached by the
    dependency list, the project wheel fresh from this checkout."""
    deps_key = hashlib.sha256(
        repr(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]).encode()
    ).hexdigest()[:12]
    deps = CACHE / f"wheels-{deps_key}"
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        _pip_wheel("--wheel-dir", str(deps), ".")
        (deps / ".complete").touch()
    project = dest / "project"
    _pip_wheel("--no-deps", "--wheel-dir", str(project), ".")
    out = dest / "wheels"
    out.mkdir()
    for whl in [*deps.glob("*.whl"), *project.glob("*.whl")]:
        if whl.parent == deps and whl.name.startswith("kubeedge_py-"):
            continue
        shutil.copy2(whl, out / whl.name)
    return out


def inventory(lab: Lab, key: Path) -> dict[str, object]:
    addr = {h.name: h.address for h in lab.hosts}
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_become": False,  # already root; the hosts have no sudo
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "children": {
                "cloud": {"hosts": {CLOUD: {"ansible_host": addr[CLOUD]}}},
                "edge": {
                    "vars": {"edgecore_labels": {"site": "lab"}},
                    "hosts": {
                        name: {"ansible_host": addr[name], "containerd_pod_subnet": f"10.88.{i + 1}.0/24"}
                        for i, name in enumerate(EDGES)
                    },
                },
            },
        }
    }


def ansible_env(tmp: Path) -> dict[str, str]:
    for d in ("local", "cp", "home"):
        (tmp / d).mkdir(exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_HOME": str(tmp / "home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }


def playbook(env: dict[str, str], inv: Path, wheels: Path, log: Path, *extra: str) -> dict[str, int]:
    """Run site.yml; return changed= per host from the recap (failing on any failed/unreachable)."""
    done = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inv),
            "-e",
            f"kubeedge_wheel_dir={wheels}",
            *extra,
            "site.yml",
        ],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT,
    )
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (
        f"ansible-playbook {' '.join(extra)} failed; see {log}:\n{done.stdout[-4000:]}"
    )
    recap = {m[1]: (int(m[3]), int(m[4]), int(m[5])) for m in RECAP.finditer(done.stdout)}
    assert set(recap) == {CLOUD, *EDGES}, done.stdout[-2000:]
    for host, (_, unreachable, failed) in recap.items():
        assert unreachable == failed == 0, f"{host}: unreachable={unreachable} failed={failed}; see {log}"
    return {host: changed for host, (changed, _, _) in recap.items()}


def node_ready(lab: Lab) -> dict[str, str]:
    """Ready status by node name, or {"error": ...} while the API cannot be asked."""
    cloud = next(h for h in lab.hosts if h.name == CLOUD)
    done = cloud.run(f"{VENV}/bin/python", "-c", READY_SCRIPT, KUBECONFIG)
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else str(done.returncode)
        }
    return dict(json.loads(done.stdout))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_site_playbook_provisions_cloud_and_edges(tmp_path: Path) -> None:
    base = base_tree()
    wheels = build_wheels(tmp_path)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = ansible_env(tmp_path)
    with running_lab([CLOUD, *EDGES], tmp_path, base, key.with_suffix(".pub")) as lab:
        inv = tmp_path / "inventory.yml"
        inv.write_text(json.dumps(inventory(lab, key), indent=2))  # JSON is YAML

        # Check mode on hosts that have nothing yet: it must get through without failing.
        playbook(env, inv, wheels, tmp_path / "check-fresh.log", "--check")
        assert all(h.run("test", "-e", VENV).returncode != 0 for h in lab.hosts), "check mode changed a host"

        first = playbook(env, inv, wheels, tmp_path / "first.log")
        assert all(first.values()), first

        seen: list[dict[str, str]] = []

        def edges_ready() -> bool:
            seen.append(node_ready(lab))
            return all(seen[-1].get(e) == "True" for e in EDGES)

        try:
            wait_until(edges_ready, deadline_s=READY_TIMEOUT, what="edge1 and edge2 Ready", interval=2.0)
        except AssertionError as e:
            raise AssertionError(f"{e}; nodes: {seen[-1]}") from None
        units = {
            CLOUD: ("cloudcore",),
            **{e: ("containerd", "mosquitto", "edgecore", "edgemesh") for e in EDGES},
        }
        for host in lab.hosts:
            for unit in units[host.name]:
                state = host.run("systemctl", "is-active", unit).stdout.strip()
                assert state == "active", f"{host.name}: {unit} is {state}"
                enabled = host.run("systemctl", "is-enabled", unit).stdout.strip()
                assert enabled == "enabled", f"{host.name}: {unit} is {enabled}"
            if host.name != CLOUD:
                toml = host.run("cat", "/etc/containerd/config.toml").stdout
                assert "restrict_oom_score_adj = true" in toml

        # The join token never shows in the playbook's output.
        token = (
            next(h for h in lab.hosts if h.name == CLOUD).run(f"{VENV}/bin/keadm", "gettoken").stdout.strip()
        )
        assert token and token not in (tmp_path / "first.log").read_text()

        second = playbook(env, inv, wheels, tmp_path / "second.log")
        assert second == dict.fromkeys([CLOUD, *EDGES], 0), f"second run changed something: {second}"
        check = playbook(env, inv, wheels, tmp_path / "check-done.log", "--check")
        assert check == dict.fromkeys([CLOUD, *EDGES], 0), f"check mode would change: {check}"


def test_ansible_lint_passes(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
