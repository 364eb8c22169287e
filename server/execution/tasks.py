"""The bodies of our Ray tasks: one attempt of a job (``run_attempt``) and the scoring of a
model version on another window (``evaluate_model``). They run in a Ray worker process,
on any node, with only their payload: the pipeline reads, reports and registers through
the PostgreSQL adapters, and an AttemptGuard stops the attempt from inside when the
database says it is over (cancelled, or handed to another server).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

from server import observability
from server.execution.adapters import DbDataSource, DbRegistry, DbReporter
from server.execution.artifacts import ArtifactStore
from server.execution.distributed import RayDistributor
from server.execution.guard import AttemptGuard, raise_in
from server.execution.memory import MemoryGuard, OverJobMemory, attempt_over
from server.execution.payloads import AttemptEnd, EvaluatePayload, JobPayload, Outcome, TaskSettings
from server.execution.runtime import TaskRuntime, runtime, trim_malloc
from server.execution.tracking import MlflowRun
from server.execution.tuning import RayTuner
from storage import db, queue
from storage.errors import DatabaseUnavailable
from storage.records import JobError
from storage.tenancy import Scope
from trainers import algorithms, evaluation, pipeline, preparation
from trainers.errors import JobCancelled, TrainingError, classify, no_rows_in_window
from trainers.ports import Level
from trainers.spec.resources import format_memory

log = logging.getLogger(__name__)
_logging_configured: tuple[str, str] | None = None


def _configure_logging(settings: TaskSettings) -> None:
    """Our loggers in this Ray worker process write in the server's format (Ray's own
    loggers are left alone); once per process, again only if the format changes."""
    global _logging_configured  # noqa: PLW0603 - per worker process
    wanted = (settings.log_format, settings.log_level)
    if _logging_configured != wanted:
        observability.configure(settings.log_format, settings.log_level, loggers=("server", "trainers"))
        _logging_configured = wanted


def run_attempt(payload: JobPayload) -> Outcome:
    """Run one attempt of a job to its end and record the outcome. Returns what happened;
    when the database is unreachable at the end, the outcome unwritten (``written=False``),
    for the dispatcher to write when it is back."""
    _configure_logging(payload.settings)
    with observability.job_fields(job_id=str(payload.job_id), tenant_id=payload.tenant_id, attempt=payload.attempt):
        return _run_attempt(payload)


def _run_attempt(payload: JobPayload) -> Outcome:
    s = payload.settings
    rt = runtime()
    engine = rt.engine(s.database_url)
    scope = Scope.of(payload.tenant_id)  # every write of the attempt runs as its tenant (row-level security)
    reporter = DbReporter(rt, engine, scope, payload.job_id, payload.attempt)
    registry = DbRegistry(rt, engine, ArtifactStore(Path(s.artifact_root)), payload)
    guard = AttemptGuard(
        lambda: rt.run(lambda: _still_running(engine, scope, payload), timeout=10),
        interval=s.guard_interval,
        grace=s.guard_grace,
        name=f"job {payload.job_id} attempt {payload.attempt}",
    )
    tracker = _tracker(payload, reporter, registry)
    memory = _memory_guard(payload)
    try:
        with guard, _held_to(memory):
            result = pipeline.run(
                payload.spec,
                data=DbDataSource(rt, engine, payload.tenant_id),
                reporter=reporter,
                registry=registry,
                num_threads=s.num_threads,
                tuner=RayTuner(cpus_per_trial=s.num_threads, seed=payload.spec.random_seed),
                distributor=_distributor(payload),
                tracker=tracker,
            )
            _log_peak(memory, reporter)
            if tracker is not None and registry.registered is not None:
                tracker.finish(result.metrics, result.artifact, result.model_version, str(registry.registered.model_id))
    except JobCancelled:
        if tracker is not None:
            tracker.end("KILLED")
        registry.discard()
        return Outcome(AttemptEnd.CANCELLED)
    except TrainingError as exc:
        reported = memory.error(memory.over) if isinstance(exc, OverJobMemory) and memory is not None else exc
        error = JobError(reported.reason, reported.message, reported.details, retryable=reported.retryable)
    except Exception as exc:  # noqa: BLE001 - any failure of the run is the job's failure
        log.error("attempt failed: %s", traceback.format_exc(limit=8))
        # A full disk or memory: its own reason, not retried unchanged.
        ran_out = classify(exc, reporter.current_step, disk_free=_disk_free(Path(s.artifact_root)))
        if ran_out is not None:
            error = JobError(ran_out.reason, ran_out.message, ran_out.details, retryable=ran_out.retryable)
        else:
            error = JobError("TrainingError", f"{type(exc).__name__}: {exc}", {"step": reporter.current_step}, retryable=True)
    else:
        try:

            async def complete(conn: db.Connection) -> bool:
                return await queue.complete(conn, payload.job_id, payload.attempt, result.model_version)

            if _finish(rt, engine, scope, complete, one_statement=True):
                return Outcome(AttemptEnd.COMPLETED, result.model_version)
        except DatabaseUnavailable:  # the dispatcher writes it when the database is back
            log.warning("the database is unreachable at the end of the attempt; the server records the outcome")
            return Outcome(AttemptEnd.COMPLETED, result.model_version, written=False)
        registry.discard()
        return Outcome(AttemptEnd.CANCELLED)

    if tracker is not None:
        tracker.end("FAILED")
    retry_in = s.retry.delay(payload.failed_attempts, error.retryable)
    try:
        failed = _finish(rt, engine, scope, lambda conn: queue.fail(conn, payload.job_id, payload.attempt, error, retry_in=retry_in))
    except DatabaseUnavailable:
        log.warning("the database is unreachable at the end of the attempt; the server records the outcome")
        return Outcome(AttemptEnd.FAILED, error=error, retry_in=retry_in, written=False)
    registry.discard()
    return Outcome(AttemptEnd.FAILED, error=error, retry_in=retry_in) if failed else Outcome(AttemptEnd.CANCELLED)


def _memory_guard(payload: JobPayload) -> MemoryGuard | None:
    """A single-node attempt held to AIHUB_JOB_MEMORY: crossing it raises OverJobMemory in
    this (the attempt's) thread at once, wherever the pipeline is (a distributed job's
    workers hold to their own memory_per_worker; its attempt only coordinates)."""
    limit = payload.settings.job_memory
    if not limit or payload.spec.workers:
        return None
    trim_malloc()  # what an earlier attempt in this Ray worker freed is not this one's
    thread = threading.get_ident()

    def interrupt(used: int) -> None:
        raise_in(thread, OverJobMemory)

    return MemoryGuard(limit, attempt_over(limit), on_over=interrupt)


def _log_peak(memory: MemoryGuard | None, reporter: DbReporter) -> None:
    if memory is not None:
        memory.sample()
        reporter.log(
            Level.INFO, f"the attempt's peak memory: {memory.peak / 2**30:.2f} GiB (AIHUB_JOB_MEMORY {format_memory(memory.limit)})"
        )


@contextlib.contextmanager
def _held_to(memory: MemoryGuard | None) -> Iterator[None]:
    try:
        yield
    finally:
        if memory is not None:
            memory.stop()
            raise_in(threading.get_ident(), None)  # one raised as the attempt ended, not delivered yet: dropped


def _disk_free(root: Path) -> int | None:
    """The bytes free on the artifact store's disk (None when it cannot be read)."""
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def _tracker(payload: JobPayload, reporter: DbReporter, registry: DbRegistry) -> MlflowRun | None:
    """The attempt's MLflow run, started (None when the job is not tracked, or MLflow could
    not be reached: a WARNING in its log says so)."""
    if payload.spec.mlflow_tracking is None:
        return None
    s = payload.settings
    run = MlflowRun(
        s.mlflow_uri,
        payload.spec,
        tenant_id=payload.tenant_id,
        job_id=str(payload.job_id),
        attempt=payload.attempt,
        warn=lambda message: reporter.log(Level.WARNING, message),
        artifact_root=s.mlflow_artifact_root,
    )
    run_id = run.start()
    if run_id is None:
        return None
    reporter.tracked(run_id)
    registry.mlflow_run_id = run_id
    reporter.log(Level.INFO, f"MLflow run {run_id} in experiment {payload.spec.mlflow_tracking.experiment_name!r}")
    return run


def _distributor(payload: JobPayload) -> RayDistributor | None:
    workers = payload.spec.workers
    if workers is None:
        return None
    return RayDistributor(workers, payload.settings.database_url, payload.tenant_id)


async def _still_running(engine: db.Engine, scope: Scope, payload: JobPayload) -> bool:
    async with db.transaction(engine, scope) as conn:
        return await queue.is_running(conn, payload.job_id, payload.attempt)


def _finish(
    rt: TaskRuntime, engine: db.Engine, scope: Scope, write: Callable[[db.Connection], Awaitable[bool]], *, one_statement: bool = False
) -> bool:
    """Write how the attempt ended; False when it was no longer running. A write that is one
    statement (queue.complete) needs no transaction around it: one round trip."""

    async def go() -> bool:
        async with db.single(engine, scope) if one_statement else db.transaction(engine, scope) as conn:
            return await write(conn)

    return rt.run(go)


def evaluate_model(payload: EvaluatePayload) -> dict[str, float]:
    """Load the version's artifact, read the window (and the hours before it that lags,
    baselines and context windows need), and compute the metrics it was trained with."""
    _configure_logging(payload.settings)
    rt = runtime()
    engine = rt.engine(payload.settings.database_url)
    spec = payload.spec
    since = spec.training_start - timedelta(hours=evaluation.history_hours(spec))
    frame = DbDataSource(rt, engine, payload.tenant_id).load(spec.feature_table, spec.table_columns(), since, spec.training_end)
    if frame.empty or frame["timestamp"].max() < spec.training_start:
        table = f"features.{spec.feature_table}"
        raise no_rows_in_window(spec.feature_table, spec.training_start, spec.training_end, table=table, tenant_id=payload.tenant_id)
    task = preparation.choose_task(spec, frame[spec.target])
    model = algorithms.get(spec.algorithm).load(Path(payload.artifact_path), task)
    return evaluation.score(model, frame, spec, payload.trained_metrics)
