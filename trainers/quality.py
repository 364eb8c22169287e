"""Data checks of data_loading: what is wrong with a loaded window, counted.

Every check runs on every job; its count is a metric (``data_gaps``, ``data_duplicates``,
..., recorded with the evaluation's metrics) and a WARNING in the log when it finds
something. ``data_checks.fail_on`` turns a check into a DataLoadError naming it (gaps: when
their share of the hourly index exceeds ``data_checks.max_gap_ratio``). Infinite values are
treated as missing (preparation.derive)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Partial:
    """What the checks count on some rows of a window, in a form that adds up: the rows of
    one node, or of each worker's shard (disjoint, cut on whole hours), combine into the
    counts of the whole window (:func:`combine`)."""

    rows: int
    spans: Mapping[str, tuple[int, int]]  # series ('' for one) -> its first and last hour (ns)
    present: int  # (series, hour) pairs with a row
    duplicates: int  # rows repeating a (series, timestamp) key
    names: tuple[str, ...]  # the value columns
    seen: np.ndarray  # per column: has a value
    low: np.ndarray  # per column: its least value (NaN: none)
    high: np.ndarray  # per column: its largest value (NaN: none)
    infinite: int
    missing: int
    out_of_range: int | None  # None: no target range to check


def _hours(frame: pd.DataFrame) -> tuple[dict[str, tuple[int, int]], int, int]:
    """(per series, its first and last hour; (series, hour) pairs with a row; rows repeating
    a (series, timestamp) key). One series in time order, as the database hands it over, is
    counted by comparing neighbours; anything else by hashing the keys."""
    if frame.empty:
        return {}, 0, 0
    floored = frame["timestamp"].dt.floor("h")
    stamps = utc_times(floored)
    if stamps is not None and one_series(frame, allow_missing=False) and strictly_increasing(frame["timestamp"]):
        present = 1 + int((stamps[1:] != stamps[:-1]).sum())
        name = str(frame[SERIES].iloc[0]) if SERIES in frame.columns else ""
        ns = stamps[[0, -1]].astype("datetime64[ns]").astype("int64")
        return {name: (int(ns[0]), int(ns[1]))}, present, 0
    keys = [k for k in (SERIES, "timestamp") if k in frame.columns]
    hours = frame.assign(timestamp=floored)[keys].drop_duplicates()
    as_ns = hours["timestamp"].dt.as_unit("ns").astype("int64")
    if SERIES in hours.columns:
        by_series = as_ns.groupby(hours[SERIES].astype(str), observed=True)
        first, last = by_series.min(), by_series.max()
        spans = {str(k): (int(first[k]), int(last[k])) for k in first.index}
    else:
        spans = {"": (int(as_ns.min()), int(as_ns.max()))}
    return spans, len(hours), int(frame.duplicated(keys).sum())


def summarize(frame: pd.DataFrame, spec: TrainingSpec) -> Partial:
    """The checks' part of these rows (``timestamp``, optional ``series_id``, value columns)."""
    names, numeric = _values(frame)
    spans, present, duplicates = _hours(frame)
    seen = (~np.isnan(numeric)).any(axis=0) if len(numeric) else np.zeros(len(names), bool)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: NaN, as meant
        low = np.nanmin(numeric, axis=0) if len(numeric) else np.full(len(names), np.nan)
        high = np.nanmax(numeric, axis=0) if len(numeric) else np.full(len(names), np.nan)
    outside = None
    checks = spec.data_checks
    if checks is not None and (checks.target_min is not None or checks.target_max is not None) and spec.target in frame.columns:
        y = frame[spec.target].to_numpy(dtype="float64")
        below = y < checks.target_min if checks.target_min is not None else np.zeros(len(y), bool)
        above = y > checks.target_max if checks.target_max is not None else np.zeros(len(y), bool)
        outside = int((below | above).sum())
    return Partial(
        len(frame), spans, present, duplicates, tuple(names), seen, low, high,
        int(np.isinf(numeric).sum()), int(np.isnan(numeric).sum()), outside,
    )  # fmt: skip


def combine(parts: Sequence[Partial], spec: TrainingSpec) -> tuple[dict[str, float], dict[str, str]]:
    """The counts of every check over the rows of ``parts``, and what each check that found
    something found (check -> words)."""
    hour = pd.Timedelta(hours=1).value
    spans: dict[str, tuple[int, int]] = {}
    for part in parts:
        for name, (a, b) in part.spans.items():
            was = spans.get(name)
            spans[name] = (a, b) if was is None else (min(was[0], a), max(was[1], b))
    expected = sum((b - a) // hour + 1 for a, b in spans.values())
    present = sum(p.present for p in parts)
    duplicates = sum(p.duplicates for p in parts)
    gaps = max(0, expected - present)
    infinite = sum(p.infinite for p in parts)
    names = parts[0].names
    seen = np.logical_or.reduce([p.seen for p in parts])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanmin(np.vstack([p.low for p in parts]), axis=0)
        high = np.nanmax(np.vstack([p.high for p in parts]), axis=0)
    empty = [n for i, n in enumerate(names) if not seen[i]]
    constant = [n for i, n in enumerate(names) if seen[i] and low[i] == high[i]]
    counts = {
        "data_rows": float(sum(p.rows for p in parts)),
        "data_gaps": float(gaps),
        "data_gap_ratio": gaps / expected if expected else 0.0,
        "data_duplicates": float(duplicates),
        "data_missing_columns": float(len(empty)),
        "data_constant_columns": float(len(constant)),
        "data_nonfinite": float(infinite),
        "data_missing_values": float(sum(p.missing for p in parts)),
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
    if (outside := [p.out_of_range for p in parts if p.out_of_range is not None]) and checks is not None:
        total = sum(outside)
        counts["data_out_of_range"] = float(total)
        if total:
            lo = "-inf" if checks.target_min is None else checks.target_min
            hi = "inf" if checks.target_max is None else checks.target_max
            found["out_of_range"] = f"{total} values of {spec.target} outside [{lo}, {hi}]"
    return counts, found


def check(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run every check: a WARNING per finding, a DataLoadError for a finding the config fails
    on. Returns the frame (infinite values are made missing by preparation.derive) and the
    counts."""
    return frame, judge([summarize(frame, spec)], spec, reporter)


def judge(parts: Sequence[Partial], spec: TrainingSpec, reporter: Reporter) -> dict[str, float]:
    """:func:`check` over the parts of a window (a distributed job's shards): the counts."""
    counts, found = combine(parts, spec)
    checks = spec.data_checks
    fail_on: Sequence[str] = checks.fail_on if checks else ()
    for name, what in found.items():
        failing = name in fail_on and not (name == "gaps" and checks and counts["data_gap_ratio"] <= (checks.max_gap_ratio or 0.0))
        if failing:
            table = f"features.{spec.feature_table}"
            raise DataLoadError(f"data check {name} failed on {table}: {what}", details={"check": name, "reason": what, "table": table})
        reporter.log(Level.WARNING, f"data check {name}: {what}")
    return counts
