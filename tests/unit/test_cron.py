"""Cron schedule parsing and evaluation (robfig/cron semantics), and the CronJob controller's pure
planning helpers."""

from __future__ import annotations

import datetime as dt

import pytest

from kubeedge.controllers import cron
from kubeedge.controllers.cronjob import job_from_template, job_name, jobs_to_prune, plan_run

UTC = dt.UTC


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def nxt(spec: str, after: str, tz: str | None = None) -> str:
    got = cron.parse(spec, tz).next_after(t(after))
    assert got is not None
    return got.isoformat().replace("+00:00", "Z")


# ---- parsing ------------------------------------------------------------------------------------


def test_fields_lists_ranges_steps() -> None:
    s = cron.parse("*/15 1-10/3 1,15,31 * *")
    assert s.minutes == {0, 15, 30, 45}
    assert s.hours == {1, 4, 7, 10}
    assert s.doms == {1, 15, 31}
    assert s.months == set(range(1, 13))
    assert s.dows == set(range(7))
    assert not s.dom_star and s.dow_star


def test_start_with_step_runs_to_max() -> None:
    assert cron.parse("50/5 * * * *").minutes == {50, 55}


def test_names_case_insensitive_and_sunday_7() -> None:
    s = cron.parse("0 0 * jan-Mar,DEC sun,7,Sat")
    assert s.months == {1, 2, 3, 12}
    assert s.dows == {0, 6}
    assert cron.parse("0 0 * * 5-7").dows == {5, 6, 0}
    assert cron.parse("0 0 * * MON-FRI").dows == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros(macro: str, expanded: str) -> None:
    assert cron.parse(macro) == cron.parse(expanded)


def test_star_rules_for_day_fields() -> None:
    # "*/1" and "?" are unrestricted; a step > 1 restricts (robfig).
    assert cron.parse("0 0 */1 * ?").dom_star and cron.parse("0 0 ? * *").dow_star
    assert not cron.parse("0 0 */2 * *").dom_star


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("60 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("* * 0 * *", "out of range"),
        ("* * 32 * *", "out of range"),
        ("* * * 13 *", "out of range"),
        ("* * * * 8", "out of range"),
        ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "invalid step"),
        ("*/x * * * *", "invalid step"),
        ("a * * * *", "invalid minute"),
        ("1,,2 * * * *", "empty element"),
        ("? * * * *", "only allowed in day fields"),
        ("* * * FOO *", "invalid month"),
        ("@fortnightly", "unknown schedule macro"),
        ("TZ=Mars/Base * * * * *", "unknown time zone"),
        ("", "expected 5 fields"),
    ],
)
def test_invalid_specs(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cron.parse(spec)


def test_tz_prefix_conflicts_with_time_zone() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        cron.parse("TZ=UTC * * * * *", "Europe/Berlin")
    with pytest.raises(ValueError, match="unknown time zone"):
        cron.parse("* * * * *", "Not/AZone")


# ---- next times ---------------------------------------------------------------------------------


def test_next_is_strictly_after() -> None:
    assert nxt("* * * * *", "2024-01-01T12:00:00Z") == "2024-01-01T12:01:00Z"
    assert nxt("* * * * *", "2024-01-01T12:00:30Z") == "2024-01-01T12:01:00Z"
    assert nxt("*/5 * * * *", "2024-01-01T12:03:00Z") == "2024-01-01T12:05:00Z"


def test_next_across_month_and_year_ends() -> None:
    assert nxt("0 0 1 * *", "2024-01-31T23:59:00Z") == "2024-02-01T00:00:00Z"
    assert nxt("@yearly", "2024-12-31T23:59:59Z") == "2025-01-01T00:00:00Z"
    # the 31st skips months without one
    assert nxt("0 0 31 * *", "2024-04-01T00:00:00Z") == "2024-05-31T00:00:00Z"
    # Feb 29 only in leap years
    assert nxt("0 0 29 2 *", "2024-03-01T00:00:00Z") == "2028-02-29T00:00:00Z"


def test_never_matching_schedule_has_no_next() -> None:
    assert cron.parse("0 0 30 2 *").next_after(t("2024-01-01T00:00:00Z")) is None


def test_dom_dow_or_rule() -> None:
    # both restricted: the 13th OR any Friday (2024-09-06 is a Friday, before the 13th)
    s = "0 0 13 * 5"
    assert nxt(s, "2024-09-01T00:00:00Z") == "2024-09-06T00:00:00Z"
    assert nxt(s, "2024-09-06T00:00:00Z") == "2024-09-13T00:00:00Z"
    assert nxt(s, "2024-09-13T00:00:00Z") == "2024-09-20T00:00:00Z"
    # dow unrestricted: only the 13th; dom unrestricted: only Fridays
    assert nxt("0 0 13 * *", "2024-09-01T00:00:00Z") == "2024-09-13T00:00:00Z"
    assert nxt("0 0 * * 5", "2024-09-07T00:00:00Z") == "2024-09-13T00:00:00Z"
    # "*/2" in dom counts as restricted (robfig), so the OR applies: odd days or Mondays
    assert nxt("0 0 */2 * 1", "2024-09-01T00:00:00Z") == "2024-09-02T00:00:00Z"  # Monday the 2nd


def test_time_zone_prefix_and_spec_field() -> None:
    # 09:00 in Berlin (UTC+2 in summer, UTC+1 in winter)
    assert nxt("CRON_TZ=Europe/Berlin 0 9 * * *", "2024-07-01T00:00:00Z") == "2024-07-01T07:00:00Z"
    assert nxt("TZ=Europe/Berlin 0 9 * * *", "2024-01-01T00:00:00Z") == "2024-01-01T08:00:00Z"
    assert nxt("0 9 * * *", "2024-01-01T00:00:00Z", "Europe/Berlin") == "2024-01-01T08:00:00Z"


def test_dst_gap_is_skipped() -> None:
    # 2024-03-10 02:30 does not exist in New York: the daily 02:30 run skips that day (robfig)
    ny = "America/New_York"
    assert nxt("30 2 * * *", "2024-03-09T08:00:00Z", ny) == "2024-03-11T06:30:00Z"
    # an hourly job simply has one run fewer
    s = cron.parse("0 * * * *", ny)
    assert s.missed_between(t("2024-03-10T05:00:00Z"), t("2024-03-10T09:00:00Z")).count == 4


def test_dst_repeated_hour_fires_twice() -> None:
    # 2024-11-03 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST)
    ny = "America/New_York"
    assert nxt("30 1 * * *", "2024-11-03T04:00:00Z", ny) == "2024-11-03T05:30:00Z"
    assert nxt("30 1 * * *", "2024-11-03T05:45:00Z", ny) == "2024-11-03T06:30:00Z"
    assert nxt("30 1 * * *", "2024-11-03T06:30:00Z", ny) == "2024-11-04T06:30:00Z"


def test_missed_between() -> None:
    s = cron.parse("*/10 * * * *")
    m = s.missed_between(t("2024-01-31T23:35:00Z"), t("2024-02-01T00:25:00Z"))
    assert m.count == 5 and m.last == t("2024-02-01T00:20:00Z") and not m.too_many
    # the end is inclusive, the start exclusive
    m = s.missed_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T00:10:00Z"))
    assert m.count == 1 and m.last == t("2024-01-01T00:10:00Z")
    assert s.missed_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T00:09:59Z")) == cron.Missed(0, None)
    assert s.missed_between(t("2024-01-02T00:00:00Z"), t("2024-01-01T00:00:00Z")) == cron.Missed(0, None)


def test_missed_between_stops_counting_past_limit() -> None:
    m = cron.parse("* * * * *").missed_between(t("2024-01-01T00:00:00Z"), t("2024-03-01T00:00:30Z"))
    assert m.too_many and m.count == cron.MAX_MISSED + 1
    assert m.last == t("2024-03-01T00:00:00Z")


# ---- controller planning --------------------------------------------------------------------------


def cronjob(**spec: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "cj",
            "namespace": "ns",
            "uid": "u1",
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"schedule": "* * * * *", **spec},
        "status": {},
    }


def test_plan_runs_most_recent_missed_and_wakes_at_next() -> None:
    cj = cronjob()
    p = plan_run(cj, cron.parse("*/5 * * * *"), t("2024-01-01T00:12:30Z"))
    assert p.run == t("2024-01-01T00:10:00Z")
    assert p.requeue == pytest.approx(150.1)
    assert p.events == []


def test_plan_respects_starting_deadline() -> None:
    sched = cron.parse("0 * * * *")
    p = plan_run(cronjob(startingDeadlineSeconds=60), sched, t("2024-01-01T05:00:30Z"))
    assert p.run == t("2024-01-01T05:00:00Z")
    # missed by more than the deadline: no run (the window starts after the schedule time)
    p = plan_run(cronjob(startingDeadlineSeconds=60), sched, t("2024-01-01T05:02:00Z"))
    assert p.run is None


def test_plan_warns_about_too_many_missed() -> None:
    p = plan_run(cronjob(), cron.parse("* * * * *"), t("2024-01-02T00:00:00Z"))
    assert p.run == t("2024-01-02T00:00:00Z")
    assert [e[1] for e in p.events] == ["TooManyMissedTimes"]


def test_job_from_template() -> None:
    cj = cronjob(jobTemplate={"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"spec": {}}}})
    job = job_from_template(cj, t("2024-01-01T00:10:00Z"))
    assert job["metadata"]["name"] == job_name("cj", t("2024-01-01T00:10:00Z")) == "cj-28401130"
    assert job["metadata"]["labels"] == {"a": "b"}
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == (
        "2024-01-01T00:10:00Z"
    )
    ref = job["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "CronJob" and ref["uid"] == "u1" and ref["controller"] and ref["blockOwnerDeletion"]
    assert job["spec"] == {"template": {"spec": {}}}


def test_jobs_to_prune_keeps_newest_per_kind() -> None:
    def job(name: str, kind: str | None, start: str | None) -> dict[str, object]:
        conds = [{"type": kind, "status": "True"}] if kind else []
        return {"metadata": {"name": name}, "status": {"conditions": conds, "startTime": start}}

    jobs = [
        job("ok1", "Complete", "2024-01-01T00:01:00Z"),
        job("ok3", "Complete", "2024-01-01T00:03:00Z"),
        job("ok2", "Complete", "2024-01-01T00:02:00Z"),
        job("bad1", "Failed", "2024-01-01T00:01:00Z"),
        job("bad2", "Failed", "2024-01-01T00:02:00Z"),
        job("running", None, "2024-01-01T00:00:00Z"),
    ]
    names = [j["metadata"]["name"] for j in jobs_to_prune(jobs, 1, 1)]
    assert names == ["ok1", "ok2", "bad1"]
    assert jobs_to_prune(jobs, 3, 2) == []
