"""Cron schedules: the standard 5-field syntax with robfig/cron (Vixie) semantics, evaluated in a
time zone. Pure: no I/O, no clock.

Fields are minute hour day-of-month month day-of-week, each a comma list of `*`, `?` (dom/dow),
`N`, `A-B`, with an optional `/step`; months and weekdays also take names (JAN, SUN); weekday 7 is
Sunday. When both day fields are restricted a day matches if EITHER matches (Vixie cron); a field
counts as unrestricted when it starts with `*`/`?` and has no step above 1 (as robfig does).

Time zones: a `CRON_TZ=` / `TZ=` prefix or the CronJob's spec.timeZone. Times are enumerated in
wall-clock time as robfig does: a wall time skipped by a DST jump never fires, and a wall time
repeated when clocks go back fires at both instants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
# Upstream's "too many missed start times" threshold.
MAX_MISSED = 100
# robfig gives up looking for a next time after five years (e.g. "0 0 30 2 *" never fires).
HORIZON_DAYS = 5 * 366 + 1

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
DOW_NAMES = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    lo: int
    hi: int
    names: dict[str, int]


_FIELDS = (
    _FieldSpec("minute", 0, 59, {}),
    _FieldSpec("hour", 0, 23, {}),
    _FieldSpec("day-of-month", 1, 31, {}),
    _FieldSpec("month", 1, 12, MONTH_NAMES),
    # 7 is accepted as Sunday and folded onto 0 after expansion.
    _FieldSpec("day-of-week", 0, 7, DOW_NAMES),
)


@dataclass(frozen=True)
class Missed:
    """Schedule times in a window: how many (counting stops past MAX_MISSED) and the latest."""

    count: int
    last: dt.datetime | None

    @property
    def too_many(self) -> bool:
        return self.count > MAX_MISSED


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]
    dom_star: bool
    dow_star: bool
    tz: dt.tzinfo

    # ---- matching -------------------------------------------------------------------------------

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.doms
        dow = (day.isoweekday() % 7) in self.dows
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def _instants_on(self, day: dt.date) -> list[dt.datetime]:
        """Every UTC instant on this local day whose wall time matches, sorted."""
        if not self.day_matches(day):
            return []
        out: list[dt.datetime] = []
        for h in sorted(self.hours):
            for m in sorted(self.minutes):
                out += self._instants_of(dt.datetime(day.year, day.month, day.day, h, m))
        out.sort()
        return out

    def _instants_of(self, wall: dt.datetime) -> list[dt.datetime]:
        first = wall.replace(tzinfo=self.tz, fold=0)
        if first.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) != wall:
            return []  # inside a DST gap: this wall time does not exist today
        second = wall.replace(tzinfo=self.tz, fold=1)
        a, b = first.astimezone(UTC), second.astimezone(UTC)
        return [a] if a == b else sorted({a, b})

    # ---- queries --------------------------------------------------------------------------------

    def _forward(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """Schedule instants strictly after t, ascending, up to the horizon."""
        t = _aware(t)
        # Start a day early: a repeated wall hour can put instants of the previous local day after t.
        day = t.astimezone(self.tz).date() - dt.timedelta(days=1)
        for _ in range(HORIZON_DAYS):
            for inst in self._instants_on(day):
                if inst > t:
                    yield inst
            day += dt.timedelta(days=1)

    def _backward(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """Schedule instants at or before t, descending, up to the horizon."""
        t = _aware(t)
        day = t.astimezone(self.tz).date() + dt.timedelta(days=1)
        for _ in range(HORIZON_DAYS):
            for inst in reversed(self._instants_on(day)):
                if inst <= t:
                    yield inst
            day -= dt.timedelta(days=1)

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first schedule time strictly after t (UTC), or None if there is none in 5 years."""
        return next(self._forward(t), None)

    def prev_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        return next(self._backward(t), None)

    def missed_between(self, a: dt.datetime, b: dt.datetime) -> Missed:
        """Schedule times in (a, b]: the count (stops at MAX_MISSED + 1) and the most recent."""
        a, b = _aware(a), _aware(b)
        if b <= a:
            return Missed(0, None)
        count = 0
        for inst in self._forward(a):
            if inst > b:
                break
            count += 1
            if count > MAX_MISSED:
                break
        if count == 0:
            return Missed(0, None)
        return Missed(count, self.prev_at_or_before(b))


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _zone(name: str) -> dt.tzinfo:
    if name in ("UTC", "Etc/UTC", ""):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e


def _value(text: str, f: _FieldSpec) -> int:
    low = text.lower()
    if low in f.names:
        return f.names[low]
    if not text.isdigit():
        raise ValueError(f"invalid {f.name} value {text!r}")
    v = int(text)
    if not f.lo <= v <= f.hi:
        raise ValueError(f"{f.name} value {v} out of range {f.lo}-{f.hi}")
    return v


def _part(part: str, f: _FieldSpec) -> tuple[set[int], bool]:
    """One comma-separated element -> (values, whether it is an unrestricted star)."""
    rng, slash, step_s = part.partition("/")
    step = 1
    if slash:
        if not step_s.isdigit() or int(step_s) == 0:
            raise ValueError(f"invalid step {step_s!r} in {f.name} {part!r}")
        step = int(step_s)
    star = rng in ("*", "?")
    if rng == "?" and f.name not in ("day-of-month", "day-of-week"):
        raise ValueError(f"'?' is only allowed in day fields, not {f.name}")
    if star:
        lo, hi = f.lo, f.hi
        if f.name == "day-of-week":
            hi = 6  # 7 is an alias, not an extra day
    elif "-" in rng:
        a, _, b = rng.partition("-")
        lo, hi = _value(a, f), _value(b, f)
        if lo > hi:
            raise ValueError(f"{f.name} range {rng!r} is backwards")
    else:
        lo = _value(rng, f)
        # "N/step" means N through the maximum (robfig/Vixie).
        hi = f.hi if slash else lo
    return set(range(lo, hi + 1, step)), star and step == 1


def _field(text: str, f: _FieldSpec) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise ValueError(f"empty element in {f.name} {text!r}")
        v, s = _part(part, f)
        values |= v
        star = star or s
    if f.name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values), star


def parse(spec: str, time_zone: str | None = None) -> CronSchedule:
    """Parse a CronJob schedule; raises ValueError with the reason if it is invalid."""
    text = spec.strip()
    zone_name: str | None = None
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        zone_name = prefix.partition("=")[2]
        text = text.strip()
        if time_zone:
            raise ValueError("a TZ/CRON_TZ prefix in the schedule cannot be combined with spec.timeZone")
    if time_zone:
        zone_name = time_zone
    tz = _zone(zone_name) if zone_name is not None else UTC
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ValueError(f"unknown schedule macro {text!r}")
        text = MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    parsed = [_field(t, f) for t, f in zip(fields, _FIELDS, strict=True)]
    return CronSchedule(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        doms=parsed[2][0],
        months=parsed[3][0],
        dows=parsed[4][0],
        dom_star=parsed[2][1],
        dow_star=parsed[4][1],
        tz=tz,
    )
