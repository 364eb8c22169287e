"""Forecasts from a trained model: the hours after an origin, their features derived by the
same code that derived the training and validation rows (``preparation.derive``).

The frame a forecast derives from is the feature table's rows up to the origin (history)
and, for each hour to forecast, only what is known at the origin: the known-ahead columns
(an imported weather forecast: rows of the table after the origin, or ``inputs``); the
target and every other column are missing there. A feature of a forecast hour reads nothing
newer than the origin (the config's leakage rules), so it equals the feature of that hour in
training: a model forecasts from an origin inside its validation window exactly what it
predicted there at the same horizon (tests/unit/test_forecast_skew.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from trainers import algorithms, features, intervals
from trainers.errors import ConfigValidationError, DataLoadError, Violation
from trainers.evaluation import predict_after
from trainers.preparation import derive
from trainers.spec import ModelType, TrainingSpec

MAX_HORIZON_HOURS = 24 * 14  # what one request may ask, whatever the model was trained for
MAX_POINTS = 500_000  # (series, hour) points one forecast may answer


def check_size(series: int, horizon_hours: int) -> None:
    """ConfigValidationError when ``series`` x ``horizon_hours`` points are more than one
    forecast answers (checked before anything is read or derived)."""
    if series * horizon_hours > MAX_POINTS:
        why = f"{series} series x {horizon_hours} h is more than the {MAX_POINTS} points one forecast may answer: name fewer series"
        raise ConfigValidationError([Violation("series", why)], message="Invalid forecast request")


HISTORY_SLACK_HOURS = 24  # read a day more than the features need: a gap does not starve a lag


def history_hours(spec: TrainingSpec) -> int:
    """Hours before the origin a forecast reads: what the lags and rolling windows look back,
    and an algorithm's context window (lstm), with a day to spare."""
    return spec.history_hours() + algorithms.get(spec.algorithm).context_rows(spec.hyperparameters) + HISTORY_SLACK_HOURS


def check_request(spec: TrainingSpec, horizon_hours: int) -> None:
    """ConfigValidationError unless ``spec`` forecasts and ``horizon_hours`` is within what it
    was trained for (and MAX_HORIZON_HOURS)."""
    if spec.model_type != ModelType.FORECAST:
        raise ConfigValidationError([Violation("model_type", "only a forecast model forecasts; score an anomaly model with :detect")])
    limit = min(spec.forecast_horizon_hours, MAX_HORIZON_HOURS)
    if not 1 <= horizon_hours <= limit:
        why = f"must be 1 to {limit}: this model forecasts up to {spec.forecast_horizon_hours} h ahead (forecast_horizon_hours)"
        raise ConfigValidationError([Violation("horizon_hours", why)], message="Invalid forecast request")


def future_frame(
    history: pd.DataFrame, spec: TrainingSpec, origin: pd.Timestamp, horizon_hours: int, inputs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The rows to derive from: ``history`` up to ``origin``, then each series' next
    ``horizon_hours`` hours with only the known-ahead columns (from ``inputs`` where given,
    else from the rows of ``history`` after the origin). A known-ahead value a feature needs
    and nobody gave is a DataLoadError naming the column and the first hour it lacks."""
    keys = ["timestamp", *([features.SERIES] if features.SERIES in history.columns else [])]
    past = history[history["timestamp"] <= origin]
    if past.empty:
        raise DataLoadError(f"no rows at or before the origin {origin:%Y-%m-%dT%H:%M:%S} in features.{spec.feature_table}")
    hours = pd.date_range(origin + pd.Timedelta(hours=1), periods=horizon_hours, freq="h")
    series = past[features.SERIES].drop_duplicates() if features.SERIES in past.columns else None
    grid = (
        pd.DataFrame({"timestamp": hours})
        if series is None
        else pd.merge(series.to_frame(), pd.DataFrame({"timestamp": hours}), how="cross")
    )
    known = sorted(spec.known() & {r.column for r in spec.recipes.values() if r.column})
    given = inputs if inputs is not None else history[history["timestamp"] > origin]
    ahead = given[[*keys, *[c for c in known if c in given.columns]]].drop_duplicates(keys, keep="last")
    future = grid.merge(ahead, on=keys, how="left")
    for column in known:
        missing = future[column].isna() if column in future.columns else pd.Series(True, index=future.index)
        if missing.any():
            first = future.loc[missing, "timestamp"].min()
            raise DataLoadError(
                f"known-ahead column {column} has no value for {first:%Y-%m-%dT%H:%M:%S}: import its forecast or send it in inputs",
                details={"field": "inputs", "column": column, "timestamp": f"{first:%Y-%m-%dT%H:%M:%S}"},
            )
    return pd.concat([past, future], ignore_index=True)


def forecast(
    model: algorithms.FittedModel,
    spec: TrainingSpec,
    history: pd.DataFrame,
    origin: pd.Timestamp,
    horizon_hours: int | None = None,
    inputs: pd.DataFrame | None = None,
    quantiles: Mapping[float, float] | None = None,
) -> pd.DataFrame:
    """``timestamp`` (and ``series_id``) and ``forecast`` for each hour after ``origin`` up
    to ``horizon_hours`` (default: the model's forecast_horizon_hours); with the version's
    quantile offsets (trainers.intervals), ``q<level>`` columns too."""
    horizon = horizon_hours or spec.forecast_horizon_hours
    check_request(spec, horizon)
    stamp = pd.Timestamp(origin)
    origin = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
    frame = future_frame(history, spec, origin, horizon, inputs)
    derived = derive(frame, spec, forecast_after=origin)
    rows = derived.frame
    x = rows[list(derived.inputs)].to_numpy(dtype="float64")
    ahead = (rows["timestamp"] > origin).to_numpy()
    if not ahead.any():
        raise DataLoadError(f"no hour after {origin:%Y-%m-%dT%H:%M:%S} has complete features", details={"field": "origin"})
    out = rows.loc[ahead, [c for c in ("timestamp", features.SERIES) if c in rows.columns]].reset_index(drop=True)
    if features.SERIES in out.columns:
        out[features.SERIES] = out[features.SERIES].astype(str)
    if not model.context_rows:  # each row on its own: one predict for every series
        out["forecast"] = model.predict(x[ahead])
        return _with_quantiles(out, quantiles)
    # A model that reads the rows before each one (lstm windows): per series, its own past first.
    forecast = np.full(len(rows), np.nan)
    groups = rows.groupby(features.SERIES, observed=True).indices if features.SERIES in rows.columns else {None: np.arange(len(rows))}
    for positions in groups.values():
        mine = ahead[positions]
        if mine.any():
            forecast[positions[mine]] = predict_after(model, x[positions[~mine]], x[positions[mine]])
    out["forecast"] = forecast[ahead]
    return _with_quantiles(out, quantiles)


def _with_quantiles(out: pd.DataFrame, quantiles: Mapping[float, float] | None) -> pd.DataFrame:
    for level, band in intervals.bands(out["forecast"].to_numpy(), quantiles or {}).items():
        out[intervals.column(level)] = band
    return out
