"""What a feature name means, and when its value is known.

A feature is a column of the feature table, a calendar value of the target hour, a holiday
flag, a preprocessor's output, or a value derived from a column by its name:

- ``<col>_lag_<k>``: the value k hours before the target hour;
- ``<col>_roll<w>_<stat>``: mean / min / max / std / sum of the w hourly values ending at the
  latest hour the column is known (see below);
- ``<col>_diff_<k>``: the latest known value minus the value k hours before it;
- ``<col>_hdh_<base>`` / ``<col>_cdh_<base>``: heating / cooling degree hours of the target
  hour, max(0, base - col) / max(0, col - base), base in °C (0-40).

**Leakage.** A model forecasts ``forecast_horizon_hours`` (h) past its origin: the value at
the target hour t is predicted at t - h. A column is *known ahead* (its value for hour t
exists at the origin: weather forecasts, schedules, calendar) only when the config says so
(``known_ahead``); the target never is. So a lag shorter than h of a column not known ahead
is leakage, a plain feature (or degree hours) of such a column too, and rolling statistics
and differences end at the origin (t - h) for such a column, at t for a known-ahead one.
With h = 1 and no ``known_ahead``, every plain feature column is taken as known ahead, as
the guide's quick start uses temperature and humidity.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

CALENDAR_FEATURES = (
    "hour_of_day",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "week_of_year",
    "month",
    "quarter",
    "is_weekend",
)
# Of the configured country/region (``holidays``), on the local date of the target hour.
HOLIDAY_FEATURES = ("is_holiday", "is_day_before_holiday", "is_day_after_holiday")
ROLL_STATS = ("mean", "min", "max", "std", "sum")

_COL = r"(?P<column>[a-z_][a-z0-9_]*?)"
LAG = re.compile(rf"^{_COL}_lag_(?P<hours>\d+)$")
ROLL = re.compile(rf"^{_COL}_roll(?P<hours>\d+)_(?P<stat>{'|'.join(ROLL_STATS)})$")
DIFF = re.compile(rf"^{_COL}_diff_(?P<hours>\d+)$")
DEGREE = re.compile(rf"^{_COL}_(?P<kind>hdh|cdh)_(?P<hours>\d+)$")
MAX_LAG_HOURS = 24 * 366
MAX_WINDOW_HOURS = 24 * 31
MAX_DEGREE_BASE = 40


class Kind(enum.StrEnum):
    """What a feature name means (see :func:`recipe`)."""

    COLUMN = "column"
    CALENDAR = "calendar"
    HOLIDAY = "holiday"
    LAGGED = "lag"
    ROLLING = "rolling"
    DIFFERENCE = "difference"
    HEATING = "hdh"
    COOLING = "cdh"


COLUMN, CALENDAR, HOLIDAY, LAGGED, ROLLING, DIFFERENCE, HEATING, COOLING = Kind
# Kinds that read their column at the target hour itself.
AT_TARGET_HOUR = frozenset({COLUMN, HEATING, COOLING})


@dataclass(frozen=True)
class Recipe:
    """How one feature is made: its kind, the table column it reads (None for calendar and
    holiday features), and its hours (lag, window, difference; the base of degree hours)."""

    kind: Kind
    column: str | None
    hours: int = 0
    stat: str = ""

    @property
    def history_hours(self) -> int:
        """How far back before the target hour (beyond the horizon) it reads."""
        return self.hours if self.kind in (LAGGED, ROLLING, DIFFERENCE) else 0


def recipe(name: str) -> Recipe:
    """The recipe a feature name stands for (the name is a checked identifier)."""
    if name in CALENDAR_FEATURES:
        return Recipe(CALENDAR, None)
    if name in HOLIDAY_FEATURES:
        return Recipe(HOLIDAY, None)
    for pattern, kind in ((LAG, LAGGED), (ROLL, ROLLING), (DIFF, DIFFERENCE)):
        if (m := pattern.match(name)) is not None:
            return Recipe(kind, m["column"], int(m["hours"]), m.groupdict().get("stat") or "")
    if (m := DEGREE.match(name)) is not None:
        return Recipe(HEATING if m["kind"] == "hdh" else COOLING, m["column"], int(m["hours"]))
    return Recipe(COLUMN, name)


DEGREE_BASES = {"C": (0, MAX_DEGREE_BASE), "F": (32, 104)}  # the same range of plausible bases in each unit


def size_problem(name: str, r: Recipe, units: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with a derived feature's numbers, if anything (degree-hour bases in the
    unit ``units`` gives their column, else °C)."""
    if r.kind == LAGGED and r.hours == 0:
        return f"{name} is a lag of 0 hours, the current value itself (target leakage)"
    if r.kind in (LAGGED, DIFFERENCE) and not 1 <= r.hours <= MAX_LAG_HOURS:
        return f"{name}: lags and differences are 1 to {MAX_LAG_HOURS} hours"
    if r.kind == ROLLING and not 2 <= r.hours <= MAX_WINDOW_HOURS:
        return f"{name}: rolling windows are 2 to {MAX_WINDOW_HOURS} hours"
    if r.kind in (HEATING, COOLING):
        unit = (units or {}).get(r.column or "", "C")
        low, high = DEGREE_BASES[unit]
        if not low <= r.hours <= high:
            declare = ' (declare "units": {"' + str(r.column) + '": "F"} for a column in °F)' if unit == "C" else ""
            return f"{name}: the base temperature of degree hours is {low} to {high} °{unit}{declare}"
    return None


def leakage(name: str, r: Recipe, *, target: str, horizon: int, known_ahead: frozenset[str]) -> str | None:
    """Why a feature would use a value newer than the forecast origin, if it does."""
    if r.column is None or r.column in known_ahead:
        return None
    what = "the target" if r.column == target else f"{r.column}, which is not in known_ahead,"
    if r.kind == LAGGED and r.hours < horizon:
        return (
            f"{name} is {r.hours} h before the target hour, after the forecast origin {horizon} h before it: "
            f"{what} is not known then (leakage); use a lag of at least {horizon} h"
        )
    if r.kind in AT_TARGET_HOUR:
        fix = f"list {r.column} in known_ahead if its forecast exists at the origin, or use {r.column}_lag_{horizon}"
        if r.column == target:
            fix = f"use {r.column}_lag_{horizon} or longer"
        return f"{name} reads {what} at the target hour, {horizon} h after the forecast origin (leakage); {fix}"
    return None


def known_ahead(
    names: list[str] | tuple[str, ...], *, target: str, horizon: int, declared: list[str] | tuple[str, ...] | None
) -> frozenset[str]:
    """The columns known ahead: ``declared`` (the config's ``known_ahead``) when given;
    otherwise, one hour ahead, every column a feature of ``names`` reads at the target hour;
    never the target."""
    if declared is not None:
        return frozenset(declared) - {target}
    if horizon > 1:
        return frozenset()
    return frozenset(r.column for n in names if (r := recipe(n)).kind in AT_TARGET_HOUR and r.column and r.column != target)


def end_lag(column: str, *, horizon: int, known_ahead: frozenset[str]) -> int:
    """Hours between the target hour and the latest value of ``column`` known at the origin."""
    return 0 if column in known_ahead else horizon


def seasonal_lags(horizon: int) -> tuple[int, int]:
    """The seasonal-naive baselines' lags for a horizon: the day and the week before the
    target hour, or the nearest whole days / weeks at or beyond the horizon."""
    day = 24 * -(-horizon // 24)
    week = 168 * -(-horizon // 168)
    return day, week


def usable(
    names: list[str] | tuple[str, ...],
    *,
    target: str,
    horizon: int,
    known_ahead: frozenset[str],
    outputs: frozenset[str] = frozenset(),
    safe_hours: int = 0,
) -> list[str]:
    """The features of ``names`` that use nothing newer than an origin ``horizon`` hours
    before the target hour: what a direct model for that horizon may use. ``outputs``: a
    preprocessor's columns, safe up to ``safe_hours`` ahead."""
    out = []
    for name in names:
        r = recipe(name)
        if r.column in outputs:
            ok = horizon <= safe_hours
        else:
            ok = leakage(name, r, target=target, horizon=horizon, known_ahead=known_ahead) is None
        if ok:
            out.append(name)
    return out
