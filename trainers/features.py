"""Feature derivation: calendar and holiday features from the timestamp; lags, rolling
statistics, differences and degree hours from a column (trainers.spec.recipes). Every
value derived from a column not known ahead ends at the forecast origin."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from trainers.spec import Holidays, TrainingSpec
from trainers.spec import recipes as r


def calendar(ts: pd.Series, name: str, timezone: str | None = None) -> pd.Series:
    """A calendar feature of each hour, read on the clock of ``timezone`` (an IANA zone,
    DST-aware) when given, else in UTC (a naive timestamp is UTC, as imports store them)."""
    if timezone:
        ts = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts).dt.tz_convert(timezone)
    dt = ts.dt
    values = {
        "hour_of_day": lambda: dt.hour,
        "day_of_week": lambda: dt.day_of_week,
        "day_of_month": lambda: dt.day,
        "day_of_year": lambda: dt.day_of_year,
        "week_of_year": lambda: dt.isocalendar().week.astype("int64"),
        "month": lambda: dt.month,
        "quarter": lambda: dt.quarter,
        "is_weekend": lambda: (dt.day_of_week >= 5).astype("int64"),
    }[name]()
    return pd.Series(values, index=ts.index).astype("float64")


SERIES = "series_id"


def lag(frame: pd.DataFrame, column: str, hours: int) -> pd.Series:
    """The value of ``column`` exactly ``hours`` hours earlier in the same series (NaN when
    that row is missing), looked up by timestamp so gaps in the data never shift a lag."""
    wanted = frame["timestamp"] - pd.Timedelta(hours=hours)
    if SERIES in frame.columns:
        fast = _lag_in_sorted_series(frame, column, hours)
        if fast is not None:
            return fast
        by_key = frame.set_index([SERIES, "timestamp"])[column]
        keys = pd.MultiIndex.from_arrays([frame[SERIES], wanted])
        return pd.Series(by_key.reindex(keys).to_numpy(), index=frame.index)
    fast = _lag_in_sorted_time(frame, column, hours)
    if fast is not None:
        return fast
    by_time = frame.set_index("timestamp")[column]
    return pd.Series(by_time.reindex(wanted).to_numpy(), index=frame.index)


def utc_times(times: pd.Series) -> np.ndarray | None:
    """A timestamp column as numpy datetime64 (UTC when aware), not Python objects; None
    for a column that is not one of times."""
    if times.dtype.kind != "M":
        return None
    return (times.dt.tz_convert(None) if times.dt.tz is not None else times).to_numpy()


def strictly_increasing(times: pd.Series) -> bool:
    """Whether the timestamps only go up (sorted, none repeated, none missing): what the
    database hands one series in, and what lets the checks and lags skip hashing."""
    stamps = utc_times(times)
    return stamps is not None and len(stamps) > 0 and bool((stamps[1:] > stamps[:-1]).all())


def one_series(frame: pd.DataFrame, *, allow_missing: bool = True) -> bool:
    """Whether the frame holds one series: no ``series_id`` column, or at most one value in
    it (``nunique() <= 1`` without hashing every id; missing ids are allowed unless
    ``allow_missing`` is False)."""
    if SERIES not in frame.columns:
        return True
    ids = frame[SERIES]
    if ids.hasnans:
        if not allow_missing:
            return False
        ids = ids[ids.notna()]
    return ids.empty or bool((ids == ids.iloc[0]).all())


def _lag_in_sorted_time(frame: pd.DataFrame, column: str, hours: int) -> pd.Series | None:
    """``lag`` of one series whose timestamps strictly increase (as the pipeline sorts them)
    and whose column is float: the same exact-timestamp lookup by binary search, without
    building a hash index of a million timestamps per lag. None when it does not apply."""
    values = frame[column]
    if values.dtype.kind != "f" or len(frame) < 2:
        return None
    stamps = utc_times(frame["timestamp"])
    if stamps is None or not (stamps[1:] > stamps[:-1]).all():  # unsorted, repeated or missing times: the general lookup
        return None
    wanted = stamps - np.timedelta64(hours, "h")
    at = np.minimum(np.searchsorted(stamps, wanted), len(stamps) - 1)
    found = stamps[at] == wanted
    return pd.Series(np.where(found, values.to_numpy()[at], np.nan), index=frame.index)


def _lag_in_sorted_series(frame: pd.DataFrame, column: str, hours: int) -> pd.Series | None:
    """``lag`` of several series in the order derive sorts them (a categorical series_id,
    then strictly increasing times in each, whole seconds, a float column): one binary search
    over (series, second) keys, each series' keys in a block of its own that no lag leaves,
    instead of a hash index of (series, timestamp) per lag. None when it does not apply."""
    values, ids = frame[column], frame[SERIES]
    if values.dtype.kind != "f" or len(frame) < 2 or not isinstance(ids.dtype, pd.CategoricalDtype):
        return None
    stamps = utc_times(frame["timestamp"])
    if stamps is None:
        return None
    whole = stamps.astype("datetime64[s]")
    if (whole != stamps).any():
        return None
    seconds = whole.astype("int64")
    rel = seconds - (seconds.min() - hours * 3600)  # >= hours * 3600: a lag stays >= 0, in its own block
    span = int(rel.max()) + 1
    codes = ids.cat.codes.to_numpy().astype("int64")
    if codes.min() < 0 or int(codes.max()) * span >= 2**62:
        return None
    keys = codes * span + rel
    if not (keys[1:] > keys[:-1]).all():
        return None
    wanted = keys - hours * 3600
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[at] == wanted
    return pd.Series(np.where(found, values.to_numpy()[at], np.nan), index=frame.index)


def rolling(frame: pd.DataFrame, column: str, end: int, hours: int, stat: str) -> pd.Series:
    """``stat`` of the ``hours`` hourly values of ``column`` ending ``end`` hours before each
    row's hour (same series; by timestamp, so gaps shorten a window instead of shifting it;
    NaN with fewer than half the window present)."""
    shifted = (lag(frame, column, end) if end else frame[column]).to_numpy(dtype="float64")
    stamps = utc_times(frame["timestamp"])
    times = pd.DatetimeIndex(stamps if stamps is not None else frame["timestamp"])
    window, least = f"{hours}h", hours // 2 + 1
    if SERIES not in frame.columns:
        rolled: pd.Series = getattr(pd.Series(shifted, index=times).rolling(window, min_periods=least), stat)()
        return pd.Series(rolled.to_numpy(dtype="float64"), index=frame.index)
    # Every series at once (pandas' grouped rolling: one pass, each series' windows its own).
    # Every series at once: pandas' grouped rolling, one pass, each series' windows its own. Its
    # answer runs group by group (in order of appearance), each group's rows in frame order.
    rows = pd.DataFrame({"v": shifted, "g": frame[SERIES].to_numpy(), "t": times})
    groups = rows.groupby("g", sort=False, observed=True, dropna=False)
    rolled_all: pd.Series = getattr(groups.rolling(window, on="t", min_periods=least)["v"], stat)()
    out = np.full(len(frame), np.nan)
    out[np.argsort(groups.ngroup().to_numpy(), kind="stable")] = rolled_all.to_numpy(dtype="float64")
    return pd.Series(out, index=frame.index)


def difference(frame: pd.DataFrame, column: str, end: int, hours: int) -> pd.Series:
    """The latest known value (``end`` hours before the row's hour) minus the value ``hours``
    before that."""
    latest = lag(frame, column, end) if end else frame[column]
    return latest - lag(frame, column, end + hours)


@functools.lru_cache(maxsize=32)
def _calendar_of(country: str, subdivision: str | None, first: int, last: int) -> frozenset[object]:
    import holidays as calendars

    return frozenset(calendars.country_holidays(country, subdiv=subdivision, years=range(first, last + 1)))


def holiday(ts: pd.Series, name: str, where: Holidays) -> pd.Series:
    """1.0 when the local date of the hour (in ``where.timezone``) is a holiday (or the day
    before / after one), else 0.0."""
    local = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts
    dates = local.dt.tz_convert(where.timezone).dt.tz_localize(None).dt.normalize()
    shift = {"is_holiday": 0, "is_day_before_holiday": 1, "is_day_after_holiday": -1}[name]
    probe = (dates + pd.Timedelta(days=shift)).dt.date
    days = _calendar_of(where.country, where.subdivision, min(probe).year, max(probe).year)
    return pd.Series(probe.isin(days).to_numpy(dtype="float64"), index=ts.index)


def feature(frame: pd.DataFrame, spec: TrainingSpec, name: str, horizon: int, known: frozenset[str]) -> pd.Series:
    """One feature of ``spec`` for every row of ``frame``, ``horizon`` hours ahead with the
    columns ``known`` ahead."""
    recipe = spec.recipes[name]
    end = r.end_lag(recipe.column, horizon=horizon, known_ahead=known) if recipe.column else 0
    if recipe.kind == r.LAGGED and recipe.column:
        return lag(frame, recipe.column, recipe.hours)
    if recipe.kind == r.ROLLING and recipe.column:
        return rolling(frame, recipe.column, end, recipe.hours, recipe.stat)
    if recipe.kind == r.DIFFERENCE and recipe.column:
        return difference(frame, recipe.column, end, recipe.hours)
    if recipe.kind == r.HEATING and recipe.column:
        return (recipe.hours - frame[recipe.column]).clip(lower=0.0)
    if recipe.kind == r.COOLING and recipe.column:
        return (frame[recipe.column] - recipe.hours).clip(lower=0.0)
    if recipe.kind == r.HOLIDAY and spec.holidays is not None:
        return holiday(frame["timestamp"], name, spec.holidays)
    if recipe.kind == r.CALENDAR:
        return calendar(frame["timestamp"], name, spec.timezone)
    return frame[name].astype("float64")


def derive(frame: pd.DataFrame, spec: TrainingSpec, names: tuple[str, ...] | None = None, horizon: int | None = None) -> pd.DataFrame:
    """A frame with ``timestamp`` (and ``series_id``), the spec's features (or ``names`` of
    them, as a direct model for ``horizon`` sees them), in order, and the target. ``frame``
    is sorted by series and time, one row per series and time."""
    out = {"timestamp": frame["timestamp"]}
    if SERIES in frame.columns:
        out[SERIES] = frame[SERIES]
    horizon = horizon or spec.forecast_horizon_hours
    known = spec.known(horizon)
    for name in spec.features if names is None else names:
        out[name] = feature(frame, spec, name, horizon, known)
    out[spec.target] = frame[spec.target]
    if spec.label_column:
        out[spec.label_column] = frame[spec.label_column]
    return pd.DataFrame(out, index=frame.index)
