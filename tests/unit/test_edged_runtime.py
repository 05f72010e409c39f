"""edged's runtime decisions: adoption (keep what runs as wanted), restarts, garbage, orphans, relist."""

from __future__ import annotations

from pathlib import Path

from kubeedge.edgecore.edged import runtime as rt
from kubeedge.edgecore.edged.cri import api
from kubeedge.edgecore.edged.podspec import ANN_CONTAINER_HASH, ANN_RESTART_COUNT, LABEL_CONTAINER_NAME
from kubeedge.edgecore.edged.status import CREATED, EXITED, RUNNING, ContainerView

A = rt.Action


def v(state: str, *, exit_code: int = 0, h: str = "h1", t: float = 0.0, cid: str = "") -> ContainerView:
    return ContainerView(
        id=cid or f"c{t}", name="web", state=state, exit_code=exit_code, spec_hash=h, created_at=t
    )


def test_running_container_with_the_wanted_hash_is_adopted_not_restarted() -> None:
    for policy in ("Always", "OnFailure", "Never"):
        assert rt.decide(v(RUNNING), "h1", policy) is A.KEEP
    # An adopted container from an edged that did not record a hash is kept too.
    assert rt.decide(v(RUNNING, h=""), "h1", "Always") is A.KEEP
    assert rt.decide(v(RUNNING), "h2", "Always") is A.REPLACE
    assert rt.decide(v(RUNNING), "h1", "Always", unhealthy=True) is A.REPLACE


def test_exited_containers_follow_the_restart_policy() -> None:
    assert rt.decide(None, "h1", "Never") is A.START
    table = {
        ("Always", 0): A.START,
        ("Always", 1): A.START,
        ("OnFailure", 0): A.DONE,
        ("OnFailure", 1): A.START,
        ("Never", 0): A.DONE,
        ("Never", 1): A.DONE,
    }
    for (policy, code), want in table.items():
        assert rt.decide(v(EXITED, exit_code=code), "h1", policy) is want, (policy, code)
    # Init containers: success is final even under Always; failure retries unless Never.
    assert rt.decide(v(EXITED), "h1", "Always", init=True) is A.DONE
    assert rt.decide(v(EXITED, exit_code=1), "h1", "Always", init=True) is A.START
    assert rt.decide(v(EXITED, exit_code=1), "h1", "Never", init=True) is A.DONE
    # Created but never started (a failed start) is a failed run.
    assert rt.decide(v(CREATED), "h1", "OnFailure") is A.START
    assert rt.decide(v(CREATED), "h1", "Never") is A.DONE


def test_garbage_keeps_the_current_and_one_previous_run() -> None:
    newest_first = [v(RUNNING, t=5), v(EXITED, t=4), v(EXITED, t=3), v(CREATED, t=2), v(EXITED, t=1)]
    assert [c.created_at for c in rt.garbage(newest_first)] == [3, 2, 1]
    assert rt.garbage(newest_first[:2]) == []
    assert rt.garbage([v(EXITED, t=2), v(RUNNING, t=1)]) == []  # never a running one


def test_orphans_and_relist_changes() -> None:
    assert rt.orphans({"a", "b", "c"}, ["a"]) == {"b", "c"}
    old = rt.Snapshot({"s1": ("u1", 0)}, {"c1": ("u1", 1), "c2": ("u2", 1)})
    new = rt.Snapshot({"s1": ("u1", 0), "s3": ("u3", 0)}, {"c1": ("u1", 2), "c2": ("u2", 1)})
    assert rt.changed_uids(old, new) == {"u1", "u3"}
    gone = rt.Snapshot({}, {})
    assert rt.changed_uids(new, gone) == {"u1", "u2", "u3"}
    assert rt.changed_uids(None, new) == {"u1", "u2", "u3"}


def test_view_of_reads_restart_count_and_hash_from_annotations() -> None:
    st = api.ContainerStatus(
        id="abc",
        metadata=api.ContainerMetadata(name="web", attempt=7),
        state=api.CONTAINER_EXITED,
        created_at=1_000_000_000,
        started_at=2_000_000_000,
        finished_at=3_500_000_000,
        exit_code=3,
        reason="Error",
        labels={LABEL_CONTAINER_NAME: "web"},
        annotations={ANN_RESTART_COUNT: "4", ANN_CONTAINER_HASH: "feed"},
    )
    c = rt.view_of(st, "sb1")
    assert (c.name, c.state, c.restart_count, c.spec_hash, c.sandbox_id) == ("web", EXITED, 4, "feed", "sb1")
    assert (c.started_at, c.finished_at, c.exit_code) == (2.0, 3.5, 3)
    st.annotations.clear()
    assert rt.view_of(st).restart_count == 7  # falls back to the CRI attempt


def test_pod_runtime_helpers() -> None:
    ready = api.PodSandbox(id="new", state=api.SANDBOX_READY, metadata=api.PodSandboxMetadata(attempt=1))
    dead = api.PodSandbox(id="old", state=api.SANDBOX_NOTREADY, metadata=api.PodSandboxMetadata(attempt=0))
    p = rt.PodRuntime("u", [ready, dead], [ContainerView(id="x", name="a", state=RUNNING, sandbox_id="new")])
    assert p.ready_sandbox() is ready and p.next_attempt() == 2
    assert list(p.by_name("old")) == [] and list(p.by_name("new")) == ["a"]
    assert rt.PodRuntime("u").next_attempt() == 0


def test_remove_cgroup_v2_layout(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    pod_dir = tmp_path / "kubeedge" / "podu1"
    (pod_dir / "child").mkdir(parents=True)
    assert rt.cgroup_dirs(rt.pod_cgroup("/kubeedge", "u1"), tmp_path) == [pod_dir]
    assert rt.remove_cgroup(rt.pod_cgroup("/kubeedge/", "u1"), tmp_path) == []
    assert not pod_dir.exists() and (tmp_path / "kubeedge").exists()


async def test_remove_cgroup_soon_reports_what_stays_busy(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    pod_dir = tmp_path / "kubeedge" / "podu2"
    # A file inside makes rmdir fail as a cgroup with processes does (ENOTEMPTY instead of EBUSY).
    pod_dir.mkdir(parents=True)
    (pod_dir / "busy").write_text("")
    assert await rt.remove_cgroup_soon(rt.pod_cgroup("/kubeedge", "u2"), tmp_path, within=0.3) == [pod_dir]
    (pod_dir / "busy").unlink()
    assert await rt.remove_cgroup_soon(rt.pod_cgroup("/kubeedge", "u2"), tmp_path, within=0.3) == []
    assert not pod_dir.exists()
