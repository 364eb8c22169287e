"""Cron expressions in a time zone, and the ISO 8601 durations of rolling windows.

Five fields (minute hour day-of-month month day-of-week), or six with seconds first (for
tests and second-level schedules). Firings are computed in the schedule's time zone:

- a wall-clock time that does not exist (the hour skipped when DST starts) fires at the
  moment the clocks jump (02:30 on that day fires at 03:00), as cron does;
- a wall-clock time that happens twice (the hour repeated when DST ends) fires once, the
  first time, unless the expression fires every hour (then both hours fire: they are two
  different hours of elapsed time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAX_WINDOW = timedelta(days=366 * 20)
_DURATION = re.compile(r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?)?")
_INTERVAL_STEPS = 2000  # firings looked at for the shortest interval
_CATCH_UP_STEPS = 1000  # firings counted one by one after a downtime; beyond, the count is a bound


class CronError(ValueError):
    """A cron expression, time zone or duration that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Cron:
    expression: str  # as the user wrote it
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        fields = self.expression.split()
        if not fields or (len(fields) not in (5, 6) and not (len(fields) == 1 and fields[0].startswith("@"))):
            raise CronError(
                "schedule", f"{self.expression!r} is not a cron expression: five fields (minute hour day month weekday), e.g. '0 2 * * 0'"
            )
        if not croniter.is_valid(self._croniter_form):
            raise CronError("schedule", f"{self.expression!r} is not a valid cron expression")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError("timezone", f"{self.timezone!r} is not an IANA time zone (such as UTC or Europe/Berlin)") from None

    @property
    def _croniter_form(self) -> str:
        fields = self.expression.split()
        return " ".join([*fields[1:], fields[0]]) if len(fields) == 6 else self.expression  # croniter wants seconds last

    @property
    def _every_hour(self) -> bool:
        hours = croniter(self._croniter_form).expanded[1]
        return hours == ["*"] or len(hours) == 24

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after ``moment`` (an aware datetime), in UTC."""
        tz = ZoneInfo(self.timezone)
        it = croniter(self._croniter_form, moment.astimezone(tz))
        every_hour = self._every_hour
        for _ in range(4):
            fire: datetime = it.get_next(datetime)
            if every_hour or not _second_occurrence(fire, tz):
                return fire.astimezone(UTC)
        return fire.astimezone(UTC)

    def shortest_interval(self, start: datetime | None = None) -> float:
        """The shortest time between two consecutive firings, in seconds, over the next four
        years from ``start`` (or the first 2,000 firings, whichever ends first): what the
        tenant's min_schedule_interval_seconds quota is checked against. Infinity for an
        expression that fires at most once in that time. The firings are those of
        :meth:`next_after` (a repeated wall-clock hour fires once), walked by one iterator."""
        tz = ZoneInfo(self.timezone)
        moment = (start or datetime.now(UTC)).astimezone(tz)
        end = moment + timedelta(days=4 * 366)
        it = croniter(self._croniter_form, moment)
        every_hour = self._every_hour
        shortest, previous = float("inf"), None
        for _ in range(_INTERVAL_STEPS):
            fire: datetime = it.get_next(datetime)
            if fire > end:
                break
            if not every_hour and _second_occurrence(fire, tz):
                continue
            if previous is not None:
                shortest = min(shortest, (fire.astimezone(UTC) - previous).total_seconds())
                if shortest <= 1:
                    break
            previous = fire.astimezone(UTC)
        return shortest

    def catch_up(self, due: datetime, now: datetime) -> tuple[datetime, int]:
        """For a schedule due at ``due`` (<= now): the firing to run (the latest at or before
        ``now``) and how many earlier ones it skips."""
        latest, skipped = due, 0
        nxt = self.next_after(latest)
        while nxt <= now and skipped < _CATCH_UP_STEPS:
            latest, skipped = nxt, skipped + 1
            nxt = self.next_after(latest)
        if nxt <= now:  # a long downtime of a frequent schedule: jump to the end
            tz = ZoneInfo(self.timezone)
            latest = croniter(self._croniter_form, now.astimezone(tz) + timedelta(microseconds=1)).get_prev(datetime).astimezone(UTC)
        return latest, skipped


def _second_occurrence(fire: datetime, tz: ZoneInfo) -> bool:
    """Whether ``fire``'s wall-clock time already happened an hour earlier (DST ended)."""
    first = fire.replace(tzinfo=None).replace(tzinfo=tz, fold=0)
    return first.astimezone(UTC) != fire.astimezone(UTC)


def parse_duration(text: str, field: str = "window") -> timedelta:
    """An ISO 8601 duration in weeks, days, hours and minutes (P365D, P4W, PT48H)."""
    match = _DURATION.fullmatch(text.strip().upper())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise CronError(field, f"{text!r} is not an ISO 8601 duration in weeks, days, hours or minutes (such as P365D, P4W or PT48H)")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    value = timedelta(weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"])
    if value <= timedelta(0) or value > MAX_WINDOW:
        raise CronError(field, f"{text!r} must be longer than zero and at most {MAX_WINDOW.days} days")
    return value
