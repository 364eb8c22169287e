"""The queue's side of the job repository: claiming work, leases and heartbeats,
progress, metrics and the end of an attempt, and requeueing the jobs of a server that
stopped. Its statements are named, each with the index that serves it. Every write by a
running attempt is guarded by (job_id, attempt, status = 'RUNNING'), so a cancelled or
superseded run cannot change the job any more.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import notify
from storage.jobs import append_log, row_to_job
from storage.records import Job, JobError, JobStatus, LogLevel

# Claim: the oldest PENDING job of the best priority, skipping rows another server is
# claiming right now. Served by the partial index training_jobs_queue (priority, created_at)
# WHERE status = 'PENDING'. The lease columns let a later recovery pass requeue jobs of a
# server that stopped heartbeating.
CLAIM = sa.text(
    """
    UPDATE training_jobs AS j
       SET status = 'RUNNING', claimed_by = :worker, started_at = clock_timestamp(),
           updated_at = clock_timestamp(), progress = 0, current_step = '',
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds)
     WHERE j.id = (SELECT id FROM training_jobs
                    WHERE status = 'PENDING'
                    ORDER BY priority, created_at, id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
    RETURNING j.*
    """
)

# Heartbeat: extend the lease of the jobs a server is running. Served by the primary key.
HEARTBEAT = sa.text(
    """
    UPDATE training_jobs
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds)
     WHERE id = ANY(:ids) AND status = 'RUNNING' AND claimed_by = :worker
    """
)


async def claim(conn: AsyncConnection, worker: str, *, lease_seconds: float = 60.0) -> Job | None:
    """Take the next job off the queue for ``worker`` (RUNNING), or None."""
    row = (await conn.execute(CLAIM, {"worker": worker, "lease_seconds": lease_seconds})).mappings().first()
    if row is None:
        return None
    await conn.execute(
        sa.text(
            "INSERT INTO job_attempts (job_id, attempt, status, claimed_by, started_at) "
            "VALUES (:id, :attempt, 'RUNNING', :worker, clock_timestamp())"
        ),
        {"id": row["id"], "attempt": row["attempt"], "worker": worker},
    )
    await append_log(conn, row["id"], row["attempt"], LogLevel.INFO, "", f"attempt {row['attempt']} started on {worker}")
    await notify(conn, row["id"], "changed")
    return row_to_job(row)


async def heartbeat(conn: AsyncConnection, worker: str, job_ids: Sequence[uuid.UUID], *, lease_seconds: float = 60.0) -> None:
    if job_ids:
        await conn.execute(HEARTBEAT, {"ids": list(job_ids), "worker": worker, "lease_seconds": lease_seconds})


async def set_progress(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, step: str, progress: int) -> bool:
    """Record the running attempt's step and progress. False when that attempt is no
    longer running (cancelled, or superseded): the caller should stop."""
    result = await conn.execute(
        sa.text(
            """
            UPDATE training_jobs SET current_step = :step, progress = GREATEST(progress, :progress),
                                     updated_at = clock_timestamp()
             WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'
            """
        ),
        {"id": job_id, "attempt": attempt, "step": step, "progress": int(progress)},
    )
    if result.rowcount:
        await notify(conn, job_id, "changed")
    return bool(result.rowcount)


async def is_running(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, *, lock: bool = False) -> bool:
    """Whether ``attempt`` is the job's running attempt. With ``lock`` the row stays locked
    until the transaction ends, so what the caller writes next lands before any cancel
    (a cancel waiting on the lock then sees those writes; one that came first makes this
    False)."""
    sql = "SELECT 1 FROM training_jobs WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'"
    row = await conn.scalar(sa.text(sql + (" FOR UPDATE" if lock else "")), {"id": job_id, "attempt": attempt})
    return row is not None


async def record_metrics(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, metrics: Mapping[str, float]) -> None:
    if not metrics:
        return
    await conn.execute(
        sa.text(
            "INSERT INTO job_metrics (job_id, attempt, name, value) "
            "SELECT :id, :attempt, * FROM unnest(CAST(:names AS text[]), CAST(:values AS float8[])) "
            "ON CONFLICT (job_id, attempt, name) DO UPDATE SET value = EXCLUDED.value"
        ),
        {"id": job_id, "attempt": attempt, "names": list(metrics), "values": [float(v) for v in metrics.values()]},
    )
    await conn.execute(sa.text("UPDATE training_jobs SET updated_at = clock_timestamp() WHERE id = :id"), {"id": job_id})
    await notify(conn, job_id, "changed")


async def complete(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, model_version: int | None) -> bool:
    """RUNNING -> COMPLETED for this attempt; False when it is no longer running."""
    return await _finish(conn, job_id, attempt, JobStatus.COMPLETED, None, model_version)


async def fail(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, error: JobError, *, retry_in: float | None = None) -> bool:
    """RUNNING -> FAILED for this attempt; False when it is no longer running. With
    ``retry_in`` (seconds) the job goes back to the queue by itself then, as the next
    attempt (see requeue_due_retries)."""
    return await _finish(conn, job_id, attempt, JobStatus.FAILED, error, None, retry_in)


async def _finish(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    attempt: int,
    status: JobStatus,
    error: JobError | None,
    model_version: int | None,
    retry_in: float | None = None,
) -> bool:
    row = (
        await conn.execute(
            sa.text(
                """
                UPDATE training_jobs
                   SET status = :status, finished_at = clock_timestamp(), updated_at = clock_timestamp(),
                       progress = CASE WHEN :status = 'COMPLETED' THEN 100 ELSE progress END,
                       error_reason = :reason, error_message = :message, error_details = CAST(:details AS jsonb),
                       model_version = :model_version, lease_expires_at = NULL,
                       retry_at = CASE WHEN CAST(:retry_in AS float8) IS NULL THEN NULL
                                       ELSE clock_timestamp() + make_interval(secs => :retry_in) END
                 WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'
                RETURNING id
                """
            ),
            {
                "id": job_id,
                "attempt": attempt,
                "status": status.value,
                "reason": error.reason if error else None,
                "message": error.message if error else None,
                "details": json.dumps(dict(error.details)) if error else None,
                "model_version": model_version,
                "retry_in": retry_in,
            },
        )
    ).first()
    if row is None:
        return False
    await conn.execute(
        sa.text(
            "UPDATE job_attempts SET status = :status, finished_at = clock_timestamp(), error_reason = :reason, "
            "error_message = :message WHERE job_id = :id AND attempt = :attempt"
        ),
        {
            "id": job_id,
            "attempt": attempt,
            "status": status.value,
            "reason": error.reason if error else None,
            "message": error.message if error else None,
        },
    )
    if error:
        await append_log(conn, job_id, attempt, LogLevel.ERROR, "", f"job failed: {error.reason}: {error.message}")
        if retry_in is not None:
            await append_log(conn, job_id, attempt, LogLevel.INFO, "", f"automatic retry in {retry_in:g} s, as attempt {attempt + 1}")
    else:
        await append_log(conn, job_id, attempt, LogLevel.INFO, "", f"job completed (model version {model_version})")
    await notify(conn, job_id, "changed")
    return True


# Requeue: RUNNING jobs go back to PENDING as a new attempt, either because their lease ran
# out (their server stopped heartbeating) or because their server is stopping and hands
# them back. Served by the partial index training_jobs_running (lease_expires_at)
# WHERE status = 'RUNNING'.
_REQUEUE = """
    UPDATE training_jobs
       SET status = 'PENDING', attempt = attempt + 1, progress = 0, current_step = '',
           claimed_by = NULL, lease_expires_at = NULL, started_at = NULL, updated_at = clock_timestamp()
     WHERE status = 'RUNNING' AND {which}
    RETURNING id, attempt
    """
REQUEUE_EXPIRED = sa.text(_REQUEUE.format(which="lease_expires_at < clock_timestamp()"))
RELEASE = sa.text(_REQUEUE.format(which="claimed_by = :worker"))


async def _requeue(conn: AsyncConnection, stmt: sa.TextClause, params: Mapping[str, object], why: str, log_line: str) -> list[uuid.UUID]:
    rows = (await conn.execute(stmt, params)).all()
    for job_id, attempt in rows:
        await conn.execute(
            sa.text(
                "UPDATE job_attempts SET status = 'FAILED', finished_at = clock_timestamp(), error_reason = 'WorkerLost', "
                "error_message = :why WHERE job_id = :id AND attempt = :attempt"
            ),
            {"id": job_id, "attempt": attempt - 1, "why": why},
        )
        await append_log(conn, job_id, attempt, LogLevel.WARNING, "", log_line.format(old=attempt - 1, new=attempt))
        await notify(conn, job_id, "created")
    return [r[0] for r in rows]


async def requeue_expired(conn: AsyncConnection) -> list[uuid.UUID]:
    return await _requeue(
        conn, REQUEUE_EXPIRED, {}, "lease expired", "the server running attempt {old} stopped; queued again as attempt {new}"
    )


async def release(conn: AsyncConnection, worker: str) -> list[uuid.UUID]:
    """The jobs ``worker`` is running go back to the queue as their next attempt (the
    worker is shutting down); their running tasks can no longer write."""
    return await _requeue(
        conn, RELEASE, {"worker": worker}, "server stopped", "the server running attempt {old} is stopping; queued again as attempt {new}"
    )


# Due retries: FAILED jobs whose planned retry time has come go back to PENDING as the next
# attempt. Served by the partial index training_jobs_retry_due.
REQUEUE_DUE_RETRIES = sa.text(
    """
    UPDATE training_jobs
       SET status = 'PENDING', attempt = attempt + 1, progress = 0, current_step = '',
           error_reason = NULL, error_message = NULL, error_details = NULL, model_version = NULL,
           started_at = NULL, finished_at = NULL, claimed_by = NULL, lease_expires_at = NULL,
           retry_at = NULL, updated_at = clock_timestamp()
     WHERE status = 'FAILED' AND retry_at IS NOT NULL AND retry_at <= clock_timestamp()
    RETURNING id, attempt
    """
)


async def requeue_due_retries(conn: AsyncConnection) -> list[uuid.UUID]:
    rows = (await conn.execute(REQUEUE_DUE_RETRIES)).all()
    for job_id, attempt in rows:
        await append_log(conn, job_id, attempt, LogLevel.INFO, "", f"automatic retry: queued again as attempt {attempt}")
        await notify(conn, job_id, "created")
    return [r[0] for r in rows]
