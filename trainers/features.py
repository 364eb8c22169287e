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


def lag(frame: pd.DataFrame, column: str, hours: int) -> pd.Series:
    """The value of ``column`` exactly ``hours`` hours earlier (NaN when that row is
    missing), looked up by timestamp so gaps in the data never shift a lag."""
    by_time = frame.set_index("timestamp")[column]
    wanted = frame["timestamp"] - pd.Timedelta(hours=hours)
    return pd.Series(by_time.reindex(wanted).to_numpy(), index=frame.index)


def derive(frame: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """A frame with ``timestamp``, every feature of the spec (in order) and the target.
    ``frame`` is sorted by timestamp with unique timestamps."""
    out = {"timestamp": frame["timestamp"]}
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
