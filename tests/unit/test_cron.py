"""Cron in a time zone, DST included, the catch-up rule, and rolling windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.operations import scheduler
from server.operations.cron import Cron, CronError, parse_duration


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def firings(cron: Cron, start: datetime, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t = cron.next_after(t)
        out.append(t)
    return out


def test_the_guides_weekly_schedule_fires_sundays_at_two_utc():
    got = firings(Cron("0 2 * * 0"), utc(2026, 11, 27, 12), 3)
    assert got == [utc(2026, 11, 29, 2), utc(2026, 12, 6, 2), utc(2026, 12, 13, 2)]
    assert all(d.weekday() == 6 for d in got)


def test_a_time_zone_moves_the_firing_with_the_local_clock():
    berlin = Cron("0 2 * * *", "Europe/Berlin")
    assert berlin.next_after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)  # CET, UTC+1
    assert berlin.next_after(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)  # CEST, UTC+2


def test_the_hour_skipped_when_dst_starts_fires_when_the_clocks_jump():
    # 2026-03-29 in Berlin: 02:00 -> 03:00. A 02:30 schedule fires at 03:00 local (01:00 UTC), once.
    got = firings(Cron("30 2 * * *", "Europe/Berlin"), utc(2026, 3, 27, 12), 3)
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_the_hour_repeated_when_dst_ends_fires_a_daily_schedule_once():
    # 2026-10-25 in Berlin: 03:00 -> 02:00, so 02:30 happens twice; a daily job runs once.
    got = firings(Cron("30 2 * * *", "Europe/Berlin"), utc(2026, 10, 23, 12), 3)
    assert got == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_an_hourly_schedule_fires_both_repeated_hours():
    got = firings(Cron("0 * * * *", "Europe/Berlin"), utc(2026, 10, 24, 23, 30), 3)
    assert got == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]  # 02:00 CEST, 02:00 CET, 03:00 CET


def test_six_fields_put_seconds_first():
    assert firings(Cron("*/5 * * * * *"), utc(2026, 1, 1, 0, 0, 1), 2) == [utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 10)]


def test_catch_up_runs_the_latest_missed_firing_once_and_counts_the_rest():
    daily = Cron("0 2 * * *")
    at, skipped = daily.catch_up(utc(2026, 11, 20, 2), now=utc(2026, 11, 23, 9))
    assert (at, skipped) == (utc(2026, 11, 23, 2), 3)
    assert daily.catch_up(utc(2026, 11, 23, 2), now=utc(2026, 11, 23, 2, 0, 1)) == (utc(2026, 11, 23, 2), 0)
    every_second = Cron("* * * * * *")  # a long downtime of a frequent schedule: bounded work
    at, skipped = every_second.catch_up(utc(2026, 1, 1), now=utc(2026, 1, 2))
    assert at == utc(2026, 1, 2) and skipped == 1000


@pytest.mark.parametrize(
    ("expression", "timezone", "field"),
    [
        ("0 2 * *", "UTC", "schedule"),
        ("0 25 * * *", "UTC", "schedule"),
        ("every sunday", "UTC", "schedule"),
        ("0 2 * * 0", "Mars/Olympus", "timezone"),
    ],
)
def test_a_bad_expression_or_zone_names_its_field(expression, timezone, field):
    with pytest.raises(CronError) as err:
        Cron(expression, timezone)
    assert err.value.field == field


def test_rolling_windows_end_at_the_firing():
    assert parse_duration("P365D") == timedelta(days=365)
    assert parse_duration("p4w") == timedelta(weeks=4)
    assert parse_duration("PT48H") == timedelta(hours=48)
    for bad in ("P1Y", "P1M", "365", "P", "P0D", "-P1D", "P99999D"):
        with pytest.raises(CronError):
            parse_duration(bad)
    config = scheduler.job_config({"target": "load"}, "P7D", utc(2026, 11, 29, 2))
    assert config == {"target": "load", "training_start": "2026-11-22T02:00:00Z", "training_end": "2026-11-29T02:00:00Z"}
    assert scheduler.job_config({"training_start": "a", "training_end": "b"}, None, utc(2026, 1, 1)) == {
        "training_start": "a",
        "training_end": "b",
    }
