"""Data checks of data_loading: what is wrong with a loaded window, counted.

Every check runs on every job; its count is a metric (``data_gaps``, ``data_duplicates``,
..., recorded with the evaluation's metrics) and a WARNING in the log when it finds
something. ``data_checks.fail_on`` turns a check into a DataLoadError naming it (gaps: when
their share of the hourly index exceeds ``data_checks.max_gap_ratio``). Infinite values are
treated as missing (preparation.derive)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainers.errors import DataLoadError
from trainers.features import one_series, strictly_increasing, utc_times
from trainers.ports import Level, Reporter
from trainers.spec import TrainingSpec

SERIES = "series_id"


def _values(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The value columns (all but the keys) and their values as floats (non-numbers NaN)."""
    names = [c for c in frame.columns if c not in (SERIES, "timestamp")]
    if all(pd.api.types.is_numeric_dtype(frame[c]) for c in names):
        return names, frame[names].to_numpy(dtype="float64")
    return names, frame[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")


def _empty_and_constant(names: list[str], numeric: np.ndarray) -> tuple[list[str], list[str]]:
    present = ~np.isnan(numeric)
    empty = [n for i, n in enumerate(names) if not present[:, i].any()]
    constant = [n for i, n in enumerate(names) if present[:, i].any() and np.nanmin(numeric[:, i]) == np.nanmax(numeric[:, i])]
    return empty, constant


def _hours(frame: pd.DataFrame) -> tuple[int, int, int]:
    """(hours the window spans, per series; hours with a row; rows repeating a (series,
    timestamp) key). One series in time order, as the database hands it over, is counted by
    comparing neighbours; anything else by hashing the keys."""
    hour = pd.Timedelta(hours=1)
    floored = frame["timestamp"].dt.floor("h")
    stamps = utc_times(floored)
    if stamps is not None and one_series(frame, allow_missing=False) and strictly_increasing(frame["timestamp"]):
        present = 1 + int((stamps[1:] != stamps[:-1]).sum())
        return int((stamps[-1] - stamps[0]) // hour.to_timedelta64()) + 1, present, 0
    keys = [k for k in (SERIES, "timestamp") if k in frame.columns]
    hours = frame.assign(timestamp=floored)[keys].drop_duplicates()
    if SERIES in hours.columns:
        by_series = hours.groupby(SERIES, observed=True)["timestamp"]
        spans = (by_series.max() - by_series.min()).to_numpy()
        expected = int(sum(span // hour.to_timedelta64() + 1 for span in spans))
    else:
        expected = int((hours["timestamp"].max() - hours["timestamp"].min()) // hour) + 1
    return expected, len(hours), int(frame.duplicated(keys).sum())


def inspect(frame: pd.DataFrame, spec: TrainingSpec, names: list[str], numeric: np.ndarray) -> tuple[dict[str, float], dict[str, str]]:
    """The counts of every check on a loaded window (``timestamp``, optional ``series_id``,
    value columns ``names`` with their ``numeric`` values), and what each check that found
    something found (check -> words)."""
    expected, present, duplicates = _hours(frame)
    gaps = max(0, expected - present)
    infinite = int(np.isinf(numeric).sum())
    empty, constant = _empty_and_constant(names, numeric)
    counts = {
        "data_rows": float(len(frame)),
        "data_gaps": float(gaps),
        "data_gap_ratio": gaps / expected if expected else 0.0,
        "data_duplicates": float(duplicates),
        "data_missing_columns": float(len(empty)),
        "data_constant_columns": float(len(constant)),
        "data_nonfinite": float(infinite),
        "data_missing_values": float(np.isnan(numeric).sum()),
    }
    found = {}
    if gaps:
        found["gaps"] = f"{gaps} missing hours in the hourly index ({counts['data_gap_ratio']:.1%})"
    if duplicates:
        found["duplicates"] = f"{duplicates} duplicate timestamps (the last row of each is kept)"
    if empty:
        found["missing_columns"] = f"columns with no values: {', '.join(empty)}"
    if constant:
        found["constant_columns"] = f"columns with one value throughout: {', '.join(constant)}"
    if infinite:
        found["nonfinite"] = f"{infinite} infinite values (treated as missing)"
    checks = spec.data_checks
    if checks is not None and (checks.target_min is not None or checks.target_max is not None) and spec.target in frame.columns:
        y = frame[spec.target].to_numpy(dtype="float64")
        low = y < checks.target_min if checks.target_min is not None else np.zeros(len(y), bool)
        high = y > checks.target_max if checks.target_max is not None else np.zeros(len(y), bool)
        outside = int((low | high).sum())
        counts["data_out_of_range"] = float(outside)
        if outside:
            lo = "-inf" if checks.target_min is None else checks.target_min
            hi = "inf" if checks.target_max is None else checks.target_max
            found["out_of_range"] = f"{outside} values of {spec.target} outside [{lo}, {hi}]"
    return counts, found


def check(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run every check: a WARNING per finding, a DataLoadError for a finding the config fails
    on. Returns the frame (infinite values are made missing by preparation.derive) and the
    counts."""
    counts, found = inspect(frame, spec, *_values(frame))
    checks = spec.data_checks
    fail_on: Sequence[str] = checks.fail_on if checks else ()
    for name, what in found.items():
        failing = name in fail_on and not (name == "gaps" and checks and counts["data_gap_ratio"] <= (checks.max_gap_ratio or 0.0))
        if failing:
            table = f"features.{spec.feature_table}"
            raise DataLoadError(f"data check {name} failed on {table}: {what}", details={"check": name, "reason": what, "table": table})
        reporter.log(Level.WARNING, f"data check {name}: {what}")
    return frame, counts
