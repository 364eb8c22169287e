"""Forecasts and detections from a registered version, on Ray: a small pool of actors
(ModelWorker) that keep the versions they used last loaded, so a warm call reads its rows
and predicts, nothing more. Actors rather than Ray Serve: a forecast is one call of ours (no HTTP proxy,
autoscaling or deployment graph to run), and an actor is the Ray primitive that keeps state
between calls. The server picks a version's actor by its artifact, so the cache it hits is
the one that loaded it.

Each call runs with the payload's tenant only (row-level security), reads the artifact the
server resolved under its artifact root, and loads it in the library's own format (no
pickle), as evaluation does.
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from server.execution.adapters import DbDataSource
from server.execution.artifacts import ArtifactStore
from server.execution.payloads import DetectPayload, ForecastPayload, TaskSettings
from server.execution.runtime import runtime
from storage import db, features
from storage.errors import FeatureColumnNotFound, FeatureTableNotFound
from storage.records import ModelVersion
from storage.tenancy import Scope
from trainers import algorithms, evaluation, forecasting, intervals, preparation
from trainers.algorithms.base import Task
from trainers.errors import DataLoadError, no_rows_in_window
from trainers.spec import TrainingSpec

if TYPE_CHECKING:  # the executor runs these actors: a type only, not an import cycle
    from server.execution.executor import Executor

log = logging.getLogger(__name__)
LOADED_VERSIONS = 8  # per actor


class ModelWorker:
    """A Ray actor's state: the versions it loaded last (by artifact file and its stamp)."""

    def __init__(self) -> None:
        self.loaded: collections.OrderedDict[tuple[str, int, int, str], Loaded] = collections.OrderedDict()

    def model(self, spec: TrainingSpec, path: str, task: Task = algorithms.REGRESSION) -> Loaded:
        """The version at ``path``, loaded for ``task`` (a forecast's is regression; a
        detector's follows from the rows it scores, as evaluation's does)."""
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size, str(task))
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        model = algorithms.get(spec.algorithm).load(Path(path), task)
        self.loaded[key] = Loaded(model, intervals.read(Path(path).parent))
        while len(self.loaded) > LOADED_VERSIONS:
            self.loaded.popitem(last=False)
        return self.loaded[key]

    def forecast(self, payload: ForecastPayload) -> pd.DataFrame:
        return forecast_rows(payload, self.model(payload.spec, payload.artifact_path))

    def detect(self, payload: DetectPayload) -> tuple[pd.DataFrame, float]:
        spec = payload.spec
        frame = detect_frame(payload)
        task = preparation.choose_task(spec, frame[spec.target])  # a 0/1 target: the version is a classifier
        return evaluation.detect(self.model(spec, payload.artifact_path, task).model, frame, spec, payload.trained_metrics)


@dataclass(frozen=True)
class Loaded:
    """A version as an actor keeps it: the model, and its quantile offsets (if any)."""

    model: algorithms.FittedModel
    quantiles: dict[float, float] | None


def _origins(payload: ForecastPayload, engine: db.Engine) -> dict[str, datetime]:
    """Each series' origin: the payload's, or its latest hour with the target."""
    spec = payload.spec

    async def latest() -> dict[str, datetime]:
        async with db.transaction(engine, Scope.of(payload.tenant_id)) as conn:
            return await features.latest_hours(conn, spec.feature_table, spec.target, payload.series)

    try:
        found = runtime().run(latest)
    except (FeatureTableNotFound, FeatureColumnNotFound) as exc:
        raise DataLoadError(f"Failed to load forecast history: {exc}", details={"tenant_id": payload.tenant_id}) from exc
    if payload.series is not None:
        missing = [s for s in payload.series if s not in found]
        if missing:
            raise DataLoadError(
                f"series {missing[0]!r} has no value of {spec.target} in features.{spec.feature_table}",
                details={"field": "series", "series_id": missing[0], "table": f"features.{spec.feature_table}"},
            )
    if not found:
        raise DataLoadError(
            f"features.{spec.feature_table} has no value of {spec.target} to forecast from",
            details={"field": "origin", "table": f"features.{spec.feature_table}"},
        )
    if payload.origin is not None:
        return dict.fromkeys(found, payload.origin)
    return found


def forecast_rows(payload: ForecastPayload, loaded: Loaded) -> pd.DataFrame:
    """``timestamp``, ``series_id``, ``forecast`` and ``origin`` per series and hour: each
    series' history read from its origin back as far as its features look, and the known-ahead
    inputs after it (the table's rows, or the payload's). With ``history_hours``, also the
    actuals of that many hours up to each origin: rows with ``actual`` (and no forecast)."""
    rt = runtime()
    engine = rt.engine(payload.settings.database_url)
    spec = payload.spec
    origins = _origins(payload, engine)
    forecasting.check_size(len(origins), payload.horizon_hours)  # every series of the table: refused before any row is read
    back = timedelta(hours=max(forecasting.history_hours(spec), payload.history_hours))
    ahead = timedelta(hours=payload.horizon_hours)
    source = DbDataSource(rt, engine, payload.tenant_id)
    parts = []
    by_origin: dict[datetime, list[str]] = {}
    for series_id, origin in origins.items():
        by_origin.setdefault(origin, []).append(series_id)
    for origin, names in sorted(by_origin.items()):
        history = source.load(spec.feature_table, spec.table_columns(), origin - back, origin + ahead, names)
        inputs = None
        if payload.inputs is not None:
            inputs = payload.inputs[payload.inputs[features.SERIES].isin(names)]
        rows = forecasting.forecast(loaded.model, spec, history, pd.Timestamp(origin), payload.horizon_hours, inputs, loaded.quantiles)
        if features.SERIES not in rows.columns:
            rows.insert(1, features.SERIES, "")
        rows["origin"] = pd.Timestamp(origin)
        if payload.history_hours:
            since = pd.Timestamp(origin) - pd.Timedelta(hours=payload.history_hours)
            past = history[(history["timestamp"] > since) & (history["timestamp"] <= origin) & history[spec.target].notna()]
            parts.append(pd.DataFrame({"timestamp": past["timestamp"], features.SERIES: past[features.SERIES].astype(str),
                                       "actual": past[spec.target], "origin": pd.Timestamp(origin)}))  # fmt: skip
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def detect_frame(payload: DetectPayload) -> pd.DataFrame:
    """The rows a detection scores: the rows given, or the table's from as far back as the
    features look, up to the window's end."""
    spec = payload.spec
    frame = payload.rows
    if frame is None:
        rt = runtime()
        since = spec.training_start - timedelta(hours=evaluation.history_hours(spec))
        frame = DbDataSource(rt, rt.engine(payload.settings.database_url), payload.tenant_id).load(
            spec.feature_table, spec.table_columns(), since, spec.training_end
        )
    frame = frame[frame["timestamp"] <= pd.Timestamp(spec.training_end)]
    if frame.empty or frame["timestamp"].max() < pd.Timestamp(spec.training_start):
        raise no_rows_in_window(
            spec.feature_table, spec.training_start, spec.training_end, table=f"features.{spec.feature_table}", tenant_id=payload.tenant_id
        )
    return frame


@dataclass(frozen=True)
class ModelServer:
    """The server's side: a version's payloads, sent to the executor's model actors."""

    executor: Executor
    artifacts: ArtifactStore
    task_settings: TaskSettings

    async def forecast(
        self,
        version: ModelVersion,
        spec: TrainingSpec,
        *,
        horizon_hours: int,
        origin: datetime | None,
        series: tuple[str, ...] | None,
        inputs: pd.DataFrame | None,
        history_hours: int = 0,
    ) -> pd.DataFrame:
        payload = ForecastPayload(
            tenant_id=version.tenant_id,
            spec=spec,
            artifact_path=str(self.artifacts.model_file(version.artifact_uri)),
            horizon_hours=horizon_hours,
            origin=origin,
            series=series,
            inputs=inputs,
            settings=self.task_settings,
            history_hours=history_hours,
        )
        return await self.executor.forecast(payload)

    async def detect(self, version: ModelVersion, spec: TrainingSpec, rows: pd.DataFrame | None) -> tuple[pd.DataFrame, float]:
        payload = DetectPayload(
            tenant_id=version.tenant_id,
            spec=spec,
            artifact_path=str(self.artifacts.model_file(version.artifact_uri)),
            trained_metrics=version.metrics,
            rows=rows,
            settings=self.task_settings,
        )
        return await self.executor.detect(payload)
