"""A forecast version as an MLflow ``pyfunc`` model that carries its feature derivation: the
model file, the job's config and this package (``code_paths``), so that

    mlflow.pyfunc.load_model(uri).predict(frame)

in any process, with no server, forecasts what the service forecasts. ``frame`` holds each
series' history and the hours to forecast: ``timestamp``, ``series_id`` (optional), the
target and the columns the features are made of. Per series, the origin is the last hour
with the target; the rows after it are the hours to forecast, carrying only the known-ahead
columns (an imported weather forecast). The answer: ``timestamp``, ``series_id``,
``forecast``, ``origin``, from trainers.forecasting, the code the service runs.

An operator's preprocessor (``preprocessor`` in the config) must be installed where the model
is loaded, as on the service's nodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from trainers import algorithms, features, forecasting, intervals, preparation
from trainers.errors import DataLoadError
from trainers.spec import ModelType, TrainingSpec

CONFIG = "config"  # artifact: {"model_type", "config"}
MODEL_DIR = "model_dir"  # artifact: the version's folder (the model file and what it needs)


def write_config(spec: TrainingSpec, model_file: Path, path: Path) -> Path:
    """The config artifact: the spec in its canonical form and the model file's name."""
    path.write_text(json.dumps({"model_type": spec.model_type.value, "config": spec.to_dict(), "model_file": model_file.name}))
    return path


def input_example(spec: TrainingSpec) -> pd.DataFrame:
    """A frame of the shape predict takes: enough hourly history for the features, then the
    forecast horizon with only the known-ahead columns (timestamps as ISO 8601 text, which
    predict reads, as it reads datetimes)."""
    hours = forecasting.history_hours(spec) + spec.forecast_horizon_hours
    stamps = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), features.SERIES: "meter_1"})
    known = spec.known()
    future = np.arange(hours) >= hours - spec.forecast_horizon_hours
    for column in spec.table_columns():
        values = np.linspace(1.0, 2.0, hours)
        frame[column] = np.where(future & (column not in known), np.nan, values)
    return frame


def signature(model: algorithms.FittedModel, spec: TrainingSpec, quantiles: dict[float, float] | None = None) -> Any:
    """The model's signature, from the input example and its forecast: ``timestamp`` as ISO
    8601 text, ``series_id`` optional (one series without it), the target optional (missing
    on the hours to forecast)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    example = input_example(spec)
    inferred = infer_signature(example, forecast_frame(model, spec, example, quantiles))
    inputs: list[Any] = [ColSpec(c.type, c.name, required=c.required and c.name != features.SERIES) for c in inferred.inputs.inputs]
    return ModelSignature(inputs=Schema(inputs), outputs=inferred.outputs)


class ForecastModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """The pyfunc model: loads the config and the model file, forecasts per series."""

    def load_context(self, context: Any) -> None:
        stored = json.loads(Path(context.artifacts[CONFIG]).read_text())
        self.spec = TrainingSpec.from_dict(stored["config"], model_type=stored["model_type"])
        folder = Path(context.artifacts[MODEL_DIR])
        algorithm = algorithms.get(self.spec.algorithm)
        task = preparation.choose_task(self.spec, pd.Series(dtype="float64"))
        self.model = algorithm.load(folder / stored["model_file"], task)
        self.quantiles = intervals.read(folder)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return forecast_frame(self.model, self.spec, model_input, self.quantiles)


def forecast_frame(
    model: algorithms.FittedModel, spec: TrainingSpec, frame: pd.DataFrame, quantiles: dict[float, float] | None = None
) -> pd.DataFrame:
    """predict's answer for ``frame`` (see the module's words)."""
    if spec.model_type != ModelType.FORECAST:
        raise DataLoadError("only a forecast model forecasts")
    frame = frame.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    if features.SERIES not in frame.columns:
        frame[features.SERIES] = ""
    frame[features.SERIES] = frame[features.SERIES].astype(str)
    for column in spec.table_columns():
        if column not in frame.columns:
            frame[column] = np.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    parts = []
    for series_id, group in frame.groupby(features.SERIES, sort=True):
        rows = group.sort_values("timestamp", ignore_index=True)
        actual = rows.loc[rows[spec.target].notna(), "timestamp"]
        if actual.empty:
            raise DataLoadError(f"series {series_id!r} has no value of {spec.target} to forecast from")
        origin = actual.max()
        later = rows[rows["timestamp"] > origin]
        horizon = int((later["timestamp"].max() - origin) / pd.Timedelta(hours=1)) if len(later) else spec.forecast_horizon_hours
        history = rows[rows["timestamp"] <= origin]
        inputs = later[["timestamp", features.SERIES, *[c for c in spec.table_columns() if c != spec.target]]] if len(later) else None
        out = forecasting.forecast(model, spec, history, origin, horizon, inputs, quantiles)
        if features.SERIES not in out.columns:
            out.insert(1, features.SERIES, series_id)
        out["origin"] = origin
        parts.append(out)
    return pd.concat(parts, ignore_index=True)
