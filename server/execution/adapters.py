"""The pipeline's ports (trainers.ports) over PostgreSQL, for a job's Ray task: where a Ray
task writes its progress, log lines and metrics (``DbReporter``), reads its rows
(``DbDataSource``) and registers its model (``DbRegistry``).

Each write is its own short transaction through storage/, guarded by (job_id, attempt,
RUNNING): a cancelled or superseded attempt learns at its next report that it must stop
(JobCancelled). Writes that add a line, metrics or a version also lock the job row, so
nothing of the attempt lands after a cancel's own line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import tenacity

from server.execution.artifacts import ArtifactPathError, ArtifactStore
from server.execution.payloads import OUTAGE_BACKOFF, JobPayload
from server.execution.runtime import TaskRuntime
from server.observability import bind
from storage import db, features, logs, models, queue
from storage.errors import DatabaseUnavailable, FeatureColumnNotFound, FeatureTableNotFound
from storage.records import LogLevel, ModelVersion, NewModelVersion
from storage.tenancy import Scope
from trainers.errors import DataLoadError, JobCancelled
from trainers.ports import Level
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)


OUTAGE_SECONDS = 120.0  # how long a report waits for the database to come back before the attempt fails


class DbReporter:
    """Reports of a running attempt. A database outage pauses the attempt at its next report
    (each waits up to ``outage_seconds`` for the database) rather than failing it, so no line is
    lost and a short outage costs no work."""

    def __init__(
        self, rt: TaskRuntime, engine: db.Engine, scope: Scope, job_id: uuid.UUID, attempt: int, *, outage_seconds: float = OUTAGE_SECONDS
    ) -> None:
        self.rt, self.engine, self.scope, self.job_id, self.attempt = rt, engine, scope, job_id, attempt
        self.outage_seconds = outage_seconds
        self.current_step = ""

    def _guarded(self, go: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        """Run a report, waiting out a database outage of up to ``outage_seconds``."""
        waiting = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(DatabaseUnavailable),
            wait=OUTAGE_BACKOFF,
            stop=tenacity.stop_before_delay(self.outage_seconds),
            before_sleep=lambda _: log.warning("database unavailable; the report waits for it (up to %.0f s)", self.outage_seconds),
            reraise=True,
        )
        still_running: bool = waiting(self.rt.run, go)
        if not still_running:
            raise JobCancelled(f"job {self.job_id} attempt {self.attempt} is no longer running")

    def step(self, name: str, progress: int) -> None:
        self.current_step = name
        bind(step=name)

        async def go() -> bool:
            async with db.transaction(self.engine, self.scope) as conn:
                ok = await queue.set_progress(conn, self.job_id, self.attempt, name, progress)
                if ok:
                    await logs.append(conn, self.job_id, self.attempt, LogLevel.INFO, name, f"step {name} started")
                return ok

        self._guarded(go)
        log.info("step %s started", name)

    def progress(self, progress: int) -> None:
        async def go() -> bool:
            async with db.transaction(self.engine, self.scope) as conn:
                return await queue.set_progress(conn, self.job_id, self.attempt, self.current_step, progress)

        self._guarded(go)

    def log(self, level: Level, message: str) -> None:
        lvl = LogLevel(level.value)
        self._while_running(lambda conn: logs.append(conn, self.job_id, self.attempt, lvl, self.current_step, message))
        log.log(logging.getLevelName(lvl.value), "%s", message)

    def metrics(self, values: Mapping[str, float], *, final: bool = False) -> None:
        self._while_running(lambda conn: queue.record_metrics(conn, self.job_id, self.attempt, values, final=final))

    def tracked(self, run_id: str) -> None:
        """The attempt's MLflow run, on the job."""
        self._while_running(lambda conn: queue.set_mlflow_run(conn, self.job_id, self.attempt, run_id))

    def _while_running(self, write: Callable[[db.Connection], Awaitable[object]]) -> None:
        """``write`` in a transaction that holds the job row, only while this attempt runs."""

        async def go() -> bool:
            async with db.transaction(self.engine, self.scope) as conn:
                if not await queue.is_running(conn, self.job_id, self.attempt, lock=True):
                    return False
                await write(conn)
                return True

        self._guarded(go)


class DbDataSource:
    def __init__(self, rt: TaskRuntime, engine: db.Engine, tenant_id: str) -> None:
        self.rt, self.engine, self.tenant_id, self.scope = rt, engine, tenant_id, Scope.of(tenant_id)

    def load(self, table: str, columns: Sequence[str], start: datetime, end: datetime, series: Sequence[str] | None = None) -> pd.DataFrame:
        async def go() -> io.BytesIO:
            async with db.transaction(self.engine, self.scope) as conn:
                return await features.copy_rows(conn, table, columns, start, end, series)

        with self._named():
            # The runtime's loop only moves the bytes; this (the task's) thread parses them,
            # so the loop stays free for the attempt's guard, and the frame's memory is this
            # thread's (allocated where the pipeline goes on to use and free it).
            return features.parse_rows(self.rt.run(go, timeout=3600), columns)

    def outline(self, table: str, start: datetime, end: datetime) -> list[tuple[str, int, datetime, datetime]]:
        async def go() -> list[tuple[str, int, datetime, datetime]]:
            async with db.transaction(self.engine, self.scope) as conn:
                return await features.outline(conn, table, start, end)

        with self._named():
            return self.rt.run(go, timeout=600)

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """A missing table or column as the DataLoadError that names it."""
        try:
            yield
        except FeatureTableNotFound as exc:
            raise DataLoadError(
                f"Failed to load training data: {exc}",
                details={"reason": str(exc), "tenant_id": self.tenant_id, "table": f"features.{exc.table}"},
            ) from exc
        except FeatureColumnNotFound as exc:
            raise DataLoadError(
                f"Failed to load training data: {exc}",
                details={"reason": str(exc), "tenant_id": self.tenant_id, "table": f"features.{exc.table}", "column": exc.column},
            ) from exc


class DbRegistry:
    """Registers one attempt's model: its files in the attempt's folder of the artifact
    store, its version row through storage.models, only while the attempt runs."""

    def __init__(self, rt: TaskRuntime, engine: db.Engine, artifacts: ArtifactStore, payload: JobPayload) -> None:
        self.rt, self.engine, self.artifacts, self.payload = rt, engine, artifacts, payload
        self.scope = Scope.of(payload.tenant_id)
        self.registered: ModelVersion | None = None
        self.mlflow_run_id: str | None = None  # the attempt's MLflow run, stored with the version

    def _folder_key(self) -> tuple[str, str, uuid.UUID, int]:
        p = self.payload
        return p.tenant_id, p.spec.model_type.value, p.job_id, p.attempt

    def artifact_dir(self) -> Path:
        return self.artifacts.create_attempt_folder(*self._folder_key())

    def register(self, artifact: Path, spec: TrainingSpec, metrics: Mapping[str, float], importance: Mapping[str, float]) -> int:
        p = self.payload
        new = NewModelVersion(
            tenant_id=p.tenant_id,
            model_type=spec.model_type.value,
            job_id=p.job_id,
            algorithm=spec.algorithm,
            artifact_uri=self.artifacts.uri(artifact),
            features=tuple(spec.features),
            target=spec.target,
            training_start=spec.training_start,
            training_end=spec.training_end,
            metrics=dict(metrics),
            config=spec.to_dict(),
            feature_importance=dict(importance),
            config_hash=spec.config_hash,
            mlflow_run_id=self.mlflow_run_id,
        )

        async def go() -> ModelVersion:
            async with db.transaction(self.engine, self.scope) as conn:
                if not await queue.is_running(conn, p.job_id, p.attempt, lock=True):
                    raise JobCancelled(f"job {p.job_id} is no longer running")
                return await models.register(conn, new)

        self.registered = self.rt.run(go)
        return self.registered.version

    def discard(self) -> None:
        """The attempt did not complete (failed, cancelled or superseded): nothing it made
        may stay. A version it registered just before (say the cancel landed between
        registering and completing) is marked deleted, and its files go."""
        if self.registered is not None:
            model_id = self.registered.model_id

            async def unregister() -> None:
                async with db.transaction(self.engine, self.scope) as conn:
                    await models.mark_deleted(conn, model_id)

            self.rt.run(unregister)
            log.info("ended without completing after registering version %d; the version is marked deleted", self.registered.version)
        with contextlib.suppress(ArtifactPathError):  # a folder that cannot be named was never written
            self.artifacts.remove_attempt_folder(*self._folder_key())
