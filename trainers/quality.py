"""Data checks of data_loading: what is wrong with a loaded window, counted.

Every check runs on every job; its count is a metric (``data_gaps``, ``data_duplicates``,
..., recorded with the evaluation's metrics) and a WARNING in the log when it finds something. ``data_checks.fail_on`` turns a check
into a DataLoadError naming it (gaps: when their share of the hourly index exceeds
``data_checks.max_gap_ratio``). Non-finite values are then treated as missing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainers.errors import DataLoadError
from trainers.ports import Reporter
from trainers.spec import TrainingSpec

SERIES = "series_id"


def inspect(frame: pd.DataFrame, spec: TrainingSpec) -> dict[str, float]:
    """The counts of every check on a loaded window (``timestamp``, optional ``series_id``,
    value columns)."""
    keys = [k for k in (SERIES, "timestamp") if k in frame.columns]
    values = [c for c in frame.columns if c not in keys]
    hours = frame.assign(timestamp=frame["timestamp"].dt.floor("h"))[keys].drop_duplicates()
    hour = pd.Timedelta(hours=1)
    if SERIES in hours.columns:
        by_series = hours.groupby(SERIES, observed=True)["timestamp"]
        spans = (by_series.max() - by_series.min()).to_numpy()
        expected = int(sum(span // hour.to_timedelta64() + 1 for span in spans))
    else:
        expected = int((hours["timestamp"].max() - hours["timestamp"].min()) // hour) + 1
    gaps = max(0, expected - len(hours))
    numeric = frame[values].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64") if values else np.empty((len(frame), 0))
    present = ~np.isnan(numeric)
    out = {
        "data_rows": float(len(frame)),
        "data_gaps": float(gaps),
        "data_gap_ratio": gaps / expected if expected else 0.0,
        "data_duplicates": float(frame.duplicated(keys).sum()),
        "data_missing_columns": float(sum(not present[:, i].any() for i in range(len(values)))),
        "data_constant_columns": float(
            sum(present[:, i].any() and np.nanmin(numeric[:, i]) == np.nanmax(numeric[:, i]) for i in range(len(values)))
        ),
        "data_nonfinite": float(np.isinf(numeric).sum()),
        "data_missing_values": float((~present).sum() - np.isinf(numeric).sum()),
    }
    checks = spec.data_checks
    if checks is not None and (checks.target_min is not None or checks.target_max is not None) and spec.target in frame.columns:
        y = frame[spec.target].to_numpy(dtype="float64")
        low = y < checks.target_min if checks.target_min is not None else np.zeros(len(y), bool)
        high = y > checks.target_max if checks.target_max is not None else np.zeros(len(y), bool)
        out["data_out_of_range"] = float((low | high).sum())
    return out


def _findings(counts: dict[str, float], frame: pd.DataFrame, spec: TrainingSpec) -> dict[str, str]:
    """check name -> what it found, for the checks that found something."""
    found = {}
    if counts["data_gaps"]:
        found["gaps"] = f"{int(counts['data_gaps'])} missing hours in the hourly index ({counts['data_gap_ratio']:.1%})"
    if counts["data_duplicates"]:
        found["duplicates"] = f"{int(counts['data_duplicates'])} duplicate timestamps (the last row of each is kept)"
    keys = {SERIES, "timestamp"}
    values = [c for c in frame.columns if c not in keys]
    numeric = frame[values].apply(pd.to_numeric, errors="coerce")
    if counts["data_missing_columns"]:
        names = [c for c in values if numeric[c].isna().all()]
        found["missing_columns"] = f"columns with no values: {', '.join(names)}"
    if counts["data_constant_columns"]:
        names = [c for c in values if numeric[c].notna().any() and numeric[c].nunique() == 1]
        found["constant_columns"] = f"columns with one value throughout: {', '.join(names)}"
    if counts["data_nonfinite"]:
        found["nonfinite"] = f"{int(counts['data_nonfinite'])} infinite values (treated as missing)"
    if counts.get("data_out_of_range"):
        c = spec.data_checks
        bounds = (
            f"[{c.target_min if c and c.target_min is not None else '-inf'}, {c.target_max if c and c.target_max is not None else 'inf'}]"
        )
        found["out_of_range"] = f"{int(counts['data_out_of_range'])} values of {spec.target} outside {bounds}"
    return found


def check(frame: pd.DataFrame, spec: TrainingSpec, reporter: Reporter) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run every check: a WARNING per finding, a DataLoadError for a finding the config fails
    on. Returns the frame with non-finite values made missing, and the counts."""
    counts = inspect(frame, spec)
    found = _findings(counts, frame, spec)
    checks = spec.data_checks
    fail_on: Sequence[str] = checks.fail_on if checks else ()
    for name, what in found.items():
        failing = name in fail_on and not (name == "gaps" and checks and counts["data_gap_ratio"] <= (checks.max_gap_ratio or 0.0))
        if failing:
            table = f"features.{spec.feature_table}"
            raise DataLoadError(f"data check {name} failed on {table}: {what}", details={"check": name, "reason": what, "table": table})
        reporter.log("WARNING", f"data check {name}: {what}")
    if counts["data_nonfinite"]:
        frame = frame.replace([np.inf, -np.inf], np.nan)
    return frame, counts
