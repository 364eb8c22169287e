"""The body of a job's Ray task: runs the pipeline with a reporter, data source and
registry that write to PostgreSQL through storage/.

It runs in a Ray worker process. Each such process keeps one background event loop
and one small engine per database, so consecutive jobs on a warm worker pay no
connection set-up. Every write is its own short transaction; progress writes are
guarded by (job_id, attempt, RUNNING), so a cancelled or superseded run learns it
must stop at its next report; between reports an AttemptGuard (server/guard.py) checks
the same thing twice a second and stops the task from inside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.guard import AttemptGuard
from storage import db, features, jobs, models, queue
from storage.errors import FeatureColumnNotFound, FeatureTableNotFound
from storage.records import JobError, LogLevel, ModelVersion, NewModelVersion
from trainers import pipeline
from trainers.errors import DataLoadError, JobCancelled, TrainingError
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """The guide's automatic retry: after a failure that running again may fix, the job is
    queued again after base, 2x base, 4x base seconds (1, 2, 4 minutes by default), at most
    ``max_retries`` times. Data and configuration errors are not retried."""

    max_retries: int = 3
    base_seconds: float = 60.0

    def delay(self, attempt: int, retryable: bool) -> float | None:
        """Seconds until attempt ``attempt + 1`` starts, or None for no retry."""
        if not retryable or attempt > self.max_retries:
            return None
        return self.base_seconds * 2 ** (attempt - 1)


@dataclass(frozen=True)
class JobPayload:
    """Everything a Ray task needs; plain data, so it travels to any node."""

    job_id: uuid.UUID
    attempt: int
    tenant_id: str
    config: Mapping[str, Any]
    spec: TrainingSpec
    database_url: str
    artifact_root: str
    num_threads: int
    retry: RetryPolicy = RetryPolicy()
    guard_interval: float = 0.5  # how often the task checks that its attempt still runs
    guard_grace: float = 5.0  # how long a stopped task may take before its worker is ended


@dataclass(frozen=True)
class Outcome:
    status: str  # COMPLETED, FAILED or CANCELLED
    model_version: int | None = None
    error: JobError | None = None


class _Runtime:
    """A background event loop for this worker process, and its engines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="aihub-db", daemon=True).start()
        self._engines: dict[str, AsyncEngine] = {}

    def engine(self, url: str) -> AsyncEngine:
        if url not in self._engines:
            self._engines[url] = db.create_engine(url, pool_size=2)
        return self._engines[url]

    def run(self, make: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


class DbReporter:
    def __init__(self, rt: _Runtime, engine: AsyncEngine, job_id: uuid.UUID, attempt: int) -> None:
        self.rt, self.engine, self.job_id, self.attempt = rt, engine, job_id, attempt
        self.current_step = ""

    def _guarded(self, still_running: bool) -> None:
        if not still_running:
            raise JobCancelled(f"job {self.job_id} attempt {self.attempt} is no longer running")

    def step(self, name: str, progress: int) -> None:
        self.current_step = name

        async def go() -> bool:
            async with db.transaction(self.engine) as conn:
                ok = await queue.set_progress(conn, self.job_id, self.attempt, name, progress)
                if ok:
                    await jobs.append_log(conn, self.job_id, self.attempt, LogLevel.INFO, name, f"step {name} started")
                return ok

        self._guarded(self.rt.run(go))

    def progress(self, progress: int) -> None:
        async def go() -> bool:
            async with db.transaction(self.engine) as conn:
                return await queue.set_progress(conn, self.job_id, self.attempt, self.current_step, progress)

        self._guarded(self.rt.run(go))

    def log(self, level: str, message: str) -> None:
        self._while_running(lambda conn: jobs.append_log(conn, self.job_id, self.attempt, LogLevel(level), self.current_step, message))

    def metrics(self, values: Mapping[str, float]) -> None:
        self._while_running(lambda conn: queue.record_metrics(conn, self.job_id, self.attempt, values))

    def _while_running(self, write: Callable[[AsyncConnection], Awaitable[object]]) -> None:
        """``write`` in a transaction that holds the job row, only while this attempt runs."""

        async def go() -> bool:
            async with db.transaction(self.engine) as conn:
                if not await queue.is_running(conn, self.job_id, self.attempt, lock=True):
                    return False
                await write(conn)
                return True

        self._guarded(self.rt.run(go))


class DbDataSource:
    def __init__(self, rt: _Runtime, engine: AsyncEngine, tenant_id: str) -> None:
        self.rt, self.engine, self.tenant_id = rt, engine, tenant_id

    def load(self, table: str, columns: Sequence[str], start: datetime, end: datetime):
        async def go():
            async with db.transaction(self.engine) as conn:
                return await features.read_frame(conn, self.tenant_id, table, columns, start, end)

        try:
            return self.rt.run(go, timeout=3600)
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
    def __init__(self, rt: _Runtime, engine: AsyncEngine, payload: JobPayload) -> None:
        self.rt, self.engine, self.payload = rt, engine, payload
        self.registered: ModelVersion | None = None

    def _folder(self) -> Path:
        p = self.payload
        return Path(p.artifact_root) / p.tenant_id / p.spec.model_type / f"{p.job_id}-attempt{p.attempt}"

    def artifact_dir(self) -> Path:
        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def register(self, artifact: Path, spec: TrainingSpec, metrics: Mapping[str, float], importance: Mapping[str, float]) -> int:
        p = self.payload
        new = NewModelVersion(
            tenant_id=p.tenant_id,
            model_type=spec.model_type,
            job_id=p.job_id,
            algorithm=spec.algorithm,
            artifact_uri=artifact.resolve().as_uri(),
            features=tuple(spec.features),
            target=spec.target,
            training_start=spec.training_start,
            training_end=spec.training_end,
            metrics=dict(metrics),
            config=dict(p.config),
            feature_importance=dict(importance),
            config_hash=hashlib.sha256(json.dumps(p.config, sort_keys=True).encode()).hexdigest(),
        )

        async def go() -> ModelVersion:
            async with db.transaction(self.engine) as conn:
                if not await queue.is_running(conn, p.job_id, p.attempt, lock=True):
                    raise JobCancelled(f"job {p.job_id} is no longer running")
                return await models.register(conn, new)

        self.registered = self.rt.run(go)
        return self.registered.version

    def remove_artifacts(self) -> None:
        """Remove this attempt's artifact folder (an attempt that did not complete)."""
        shutil.rmtree(self._folder(), ignore_errors=True)


def run_job(payload: JobPayload) -> Outcome:
    """Run one attempt of a job to its end and record the outcome. Returns what happened;
    raises only if the database itself is unreachable."""
    rt = runtime()
    engine = rt.engine(payload.database_url)
    reporter = DbReporter(rt, engine, payload.job_id, payload.attempt)

    async def still_running() -> bool:
        async with db.transaction(engine) as conn:
            return await queue.is_running(conn, payload.job_id, payload.attempt)

    guard = AttemptGuard(
        lambda: rt.run(still_running, timeout=10),
        interval=payload.guard_interval,
        grace=payload.guard_grace,
        name=f"job {payload.job_id} attempt {payload.attempt}",
    )
    registry = DbRegistry(rt, engine, payload)
    try:
        with guard:
            result = pipeline.run(
                payload.spec,
                data=DbDataSource(rt, engine, payload.tenant_id),
                reporter=reporter,
                registry=registry,
                num_threads=payload.num_threads,
            )
    except JobCancelled:
        _discard(rt, engine, registry)
        return Outcome("CANCELLED")
    except TrainingError as exc:
        error = JobError(exc.reason, exc.message, exc.details, retryable=exc.retryable)
    except Exception as exc:  # noqa: BLE001 - any failure of the run is the job's failure
        detail = traceback.format_exc(limit=8)
        log.error("job %s failed: %s", payload.job_id, detail)
        error = JobError("TrainingError", f"{type(exc).__name__}: {exc}", {"step": reporter.current_step}, retryable=True)
    else:

        async def complete() -> bool:
            async with db.transaction(engine) as conn:
                return await queue.complete(conn, payload.job_id, payload.attempt, result.model_version)

        if rt.run(complete):
            return Outcome("COMPLETED", result.model_version)
        _discard(rt, engine, registry)
        return Outcome("CANCELLED")

    async def fail() -> bool:
        async with db.transaction(engine) as conn:
            retry_in = payload.retry.delay(payload.attempt, error.retryable)
            return await queue.fail(conn, payload.job_id, payload.attempt, error, retry_in=retry_in)

    failed = rt.run(fail)
    _discard(rt, engine, registry)
    return Outcome("FAILED", error=error) if failed else Outcome("CANCELLED")


def _discard(rt: _Runtime, engine: AsyncEngine, registry: DbRegistry) -> None:
    """The attempt did not complete (failed, cancelled or superseded): nothing it made may
    stay. A version it registered just before (say the cancel landed between registering
    and completing) is marked deleted, and its files go."""
    if registry.registered is not None:
        model_id = registry.registered.model_id

        async def unregister() -> None:
            async with db.transaction(engine) as conn:
                await models.mark_deleted(conn, model_id)

        rt.run(unregister)
        log.info(
            "job %s: ended without completing after registering version %d; the version is marked deleted",
            registry.payload.job_id,
            registry.registered.version,
        )
    registry.remove_artifacts()


@dataclass(frozen=True)
class EvaluatePayload:
    """Score a registered model on another window; plain data for a Ray task."""

    tenant_id: str
    spec: TrainingSpec  # the version's training spec with the window to score
    algorithm: str
    artifact_path: str
    trained_metrics: Mapping[str, float]
    database_url: str


def evaluate_model(payload: EvaluatePayload) -> dict[str, float]:
    """Load the version's artifact, read the window, and compute the training metrics."""
    from trainers import algorithms

    rt = runtime()
    engine = rt.engine(payload.database_url)
    spec = payload.spec
    since = spec.training_start - timedelta(hours=pipeline.history_hours(spec))
    frame = DbDataSource(rt, engine, payload.tenant_id).load(spec.feature_table, spec.table_columns(), since, spec.training_end)
    if frame.empty or frame["timestamp"].max() < spec.training_start:
        raise DataLoadError(
            f"No rows in features.{spec.feature_table} between {spec.training_start:%Y-%m-%dT%H:%M:%S} and {spec.training_end:%Y-%m-%dT%H:%M:%S}",
            details={"table": f"features.{spec.feature_table}", "tenant_id": payload.tenant_id},
        )
    task = pipeline.choose_task(spec, frame[spec.target])
    model = algorithms.get(payload.algorithm).load(Path(payload.artifact_path), task)
    return pipeline.score(model, frame, spec, payload.trained_metrics)
