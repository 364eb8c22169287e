"""Feature derivation: calendar features from the timestamp, lags from past values."""

from __future__ import annotations

import pandas as pd

from trainers.spec import TrainingSpec


def calendar(ts: pd.Series, name: str) -> pd.Series:
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
        by_key = frame.set_index([SERIES, "timestamp"])[column]
        keys = pd.MultiIndex.from_arrays([frame[SERIES], wanted])
        return pd.Series(by_key.reindex(keys).to_numpy(), index=frame.index)
    by_time = frame.set_index("timestamp")[column]
    return pd.Series(by_time.reindex(wanted).to_numpy(), index=frame.index)


def derive(frame: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """A frame with ``timestamp`` (and ``series_id``), every feature of the spec (in order)
    and the target. ``frame`` is sorted by series and time, one row per series and time."""
    out = {"timestamp": frame["timestamp"]}
    if SERIES in frame.columns:
        out[SERIES] = frame[SERIES]
    for name in spec.features:
        if name in spec.lags:
            out[name] = lag(frame, *spec.lags[name])
        elif name in frame.columns:
            out[name] = frame[name]
        else:
            out[name] = calendar(frame["timestamp"], name)
    out[spec.target] = frame[spec.target]
    if spec.label_column:
        out[spec.label_column] = frame[spec.label_column]
    return pd.DataFrame(out, index=frame.index)
