"""edged's grace period for a deleted pod runs from the API's deletion request, not from when edged
hears of it."""

from __future__ import annotations

from typing import Any

from kubeedge.edgecore.edged.manager import stop_deadline
from kubeedge.edgecore.edged.status import rfc3339

NOW = 1_700_000_000.0


def deleted(at: float | None, grace: int | None, spec_grace: int = 30) -> dict[str, Any]:
    md: dict[str, Any] = {"name": "p", "uid": "u"}
    if at is not None:
        md["deletionTimestamp"] = rfc3339(at)
    if grace is not None:
        md["deletionGracePeriodSeconds"] = grace
    return {"metadata": md, "spec": {"terminationGracePeriodSeconds": spec_grace}}


def test_grace_counts_from_the_deletion_request() -> None:
    # Deleted 20 s ago with 30 s of grace (deletionTimestamp = request + grace): 10 s are left.
    assert stop_deadline(deleted(NOW + 10, 30), 30, NOW) == NOW + 10
    # Heard of only after the grace ran out (offline, or an edgecore restart): stop at once.
    assert stop_deadline(deleted(NOW - 5, 30), 30, NOW) == NOW - 5


def test_a_node_clock_behind_the_api_cannot_stretch_the_grace() -> None:
    assert stop_deadline(deleted(NOW + 500, 30), 30, NOW) == NOW + 30


def test_without_a_deletion_timestamp_the_whole_grace_from_now() -> None:
    assert stop_deadline(deleted(None, None, spec_grace=7), 30, NOW) == NOW + 7
    assert stop_deadline({"metadata": {}, "spec": {}}, 30, NOW) == NOW + 30
