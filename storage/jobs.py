"""The job repository: create, read, list, cancel, retry, re-prioritise, log lines.
The queue's own statements (claim, heartbeat, progress, finish, requeue) are in
storage/queue.py.

User-driven status changes go through ``_transition`` and the table in
``storage.records.TRANSITIONS``. Functions take an ``AsyncConnection`` whose
transaction the caller owns; they never commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import json_value, notify
from storage.errors import InvalidTransition, JobNotFound
from storage.records import Job, JobError, JobStatus, LogLevel, NewJob, Priority, sources_of

# Transition: move one job between states, only from the states the transition table
# allows. Served by the primary key.
TRANSITION = sa.text(
    """
    UPDATE training_jobs
       SET status = :target, updated_at = clock_timestamp()
     WHERE id = :id AND status = ANY(:sources)
    RETURNING *
    """
)

# Next log sequence number of a job; the row lock serialises writers. Primary key.
NEXT_LOG_SEQ = sa.text("UPDATE training_jobs SET log_seq = log_seq + 1 WHERE id = :id RETURNING log_seq")


def row_to_job(row: RowMapping, metrics: Mapping[str, float] | None = None) -> Job:
    error = None
    if row["error_reason"]:
        error = JobError(row["error_reason"], row["error_message"] or "", json_value(row["error_details"]) or {})
    return Job(
        job_id=row["id"],
        tenant_id=row["tenant_id"],
        model_type=row["model_type"],
        algorithm=row["algorithm"],
        status=JobStatus(row["status"]),
        priority=Priority.from_rank(row["priority"]),
        progress=row["progress"],
        current_step=row["current_step"],
        config=json_value(row["config"]),
        metadata=json_value(row["metadata"]),
        request_id=row["request_id"],
        attempt=row["attempt"],
        error=error,
        model_version=row["model_version"],
        metrics=dict(metrics or {}),
        claimed_by=row["claimed_by"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        retry_at=row["retry_at"],
    )


# The current attempt's metrics, as one JSON object, selected with the job row.
_SELECT_JOB = """
    SELECT j.*, (SELECT jsonb_object_agg(m.name, m.value) FROM job_metrics m
                  WHERE m.job_id = j.id AND m.attempt = j.attempt) AS metrics_json
      FROM training_jobs j
"""


def _with_metrics(rows: Sequence[RowMapping]) -> list[Job]:
    return [row_to_job(r, json_value(r["metrics_json"])) for r in rows]


async def get(conn: AsyncConnection, job_id: uuid.UUID) -> Job:
    row = (await conn.execute(sa.text(_SELECT_JOB + " WHERE j.id = :id"), {"id": job_id})).mappings().first()
    if row is None:
        raise JobNotFound(job_id)
    return _with_metrics([row])[0]


async def create(conn: AsyncConnection, new: NewJob) -> tuple[Job, bool]:
    """Insert a PENDING job and wake the dispatchers. Returns (job, created); with a
    request_id the tenant already used, the existing job and False."""
    params = {
        "id": uuid.uuid4(),
        "tenant_id": new.tenant_id,
        "model_type": new.model_type,
        "algorithm": new.algorithm,
        "priority": new.priority.rank,
        "config": json.dumps(new.config),
        "metadata": json.dumps(new.metadata),
        "request_id": new.request_id,
    }
    row = (
        (
            await conn.execute(
                sa.text(
                    """
                INSERT INTO training_jobs (id, tenant_id, model_type, algorithm, status, priority,
                                           config, metadata, request_id, created_at, updated_at)
                VALUES (:id, :tenant_id, :model_type, :algorithm, 'PENDING', :priority,
                        CAST(:config AS jsonb), CAST(:metadata AS jsonb), :request_id,
                        clock_timestamp(), clock_timestamp())
                ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING
                RETURNING *
                """
                ),
                params,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        existing = (
            (
                await conn.execute(
                    sa.text(_SELECT_JOB + " WHERE j.tenant_id = :t AND j.request_id = :r"),
                    {"t": new.tenant_id, "r": new.request_id},
                )
            )
            .mappings()
            .one()
        )
        return _with_metrics([existing])[0], False
    job = row_to_job(row)
    await append_log(conn, job.job_id, 1, LogLevel.INFO, "", f"job queued with priority {new.priority.value.lower()}")
    await notify(conn, job.job_id, "created")
    return job, True


async def list_jobs(
    conn: AsyncConnection,
    *,
    tenant_id: str | None = None,
    status: JobStatus | None = None,
    model_type: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[Job], tuple[datetime, uuid.UUID] | None]:
    """Newest first. ``before`` is the (created_at, id) of the last job of the previous
    page (keyset pagination); returns the jobs and the cursor of the next page, if any.
    Served by training_jobs_tenant_created / training_jobs_created."""
    where, params = [], {"limit": limit + 1}
    if tenant_id:
        where.append("j.tenant_id = :tenant_id")
        params["tenant_id"] = tenant_id
    if status:
        where.append("j.status = :status")
        params["status"] = status.value
    if model_type:
        where.append("j.model_type = :model_type")
        params["model_type"] = model_type
    if before:
        where.append("(j.created_at, j.id) < (:before_at, :before_id)")
        params["before_at"], params["before_id"] = before
    sql = _SELECT_JOB
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY j.created_at DESC, j.id DESC LIMIT :limit"
    rows = (await conn.execute(sa.text(sql), params)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    jobs = _with_metrics(rows)
    cursor = (rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return jobs, cursor


async def _transition(
    conn: AsyncConnection, job_id: uuid.UUID, target: JobStatus, only_from: frozenset[JobStatus] | None = None
) -> RowMapping:
    """Move a job to ``target`` if the transition table allows it from its current state
    (narrowed to ``only_from`` when the operation allows fewer)."""
    allowed = sources_of(target) if only_from is None else sources_of(target) & only_from
    row = (await conn.execute(TRANSITION, {"id": job_id, "target": target.value, "sources": [s.value for s in allowed]})).mappings().first()
    if row is None:
        current = await get(conn, job_id)  # raises JobNotFound
        raise InvalidTransition(job_id, current.status.value, target.value, frozenset(s.value for s in allowed))
    return row


async def cancel(conn: AsyncConnection, job_id: uuid.UUID) -> Job:
    """PENDING or RUNNING -> CANCELLED; also a FAILED job whose automatic retry is planned
    (which stops the retry)."""
    current = await get(conn, job_id)
    if current.status == JobStatus.FAILED and current.retry_at is None:
        raise InvalidTransition(
            job_id, current.status.value, JobStatus.CANCELLED.value, frozenset({"PENDING", "RUNNING", "FAILED with a retry planned"})
        )
    row = await _transition(conn, job_id, JobStatus.CANCELLED)
    await conn.execute(
        sa.text("UPDATE training_jobs SET finished_at = clock_timestamp(), lease_expires_at = NULL, retry_at = NULL WHERE id = :id"),
        {"id": job_id},
    )
    await conn.execute(
        sa.text(
            "UPDATE job_attempts SET status = 'CANCELLED', finished_at = clock_timestamp() "
            "WHERE job_id = :id AND attempt = :attempt AND finished_at IS NULL"
        ),
        {"id": job_id, "attempt": row["attempt"]},
    )
    await append_log(conn, job_id, row["attempt"], LogLevel.WARNING, "", "job cancelled")
    await notify(conn, job_id, "cancel")
    return await get(conn, job_id)


async def retry(conn: AsyncConnection, job_id: uuid.UUID) -> Job:
    """FAILED or CANCELLED -> PENDING as the next attempt."""
    row = await _transition(conn, job_id, JobStatus.PENDING, only_from=frozenset({JobStatus.FAILED, JobStatus.CANCELLED}))
    attempt = row["attempt"] + 1
    await conn.execute(
        sa.text(
            """
            UPDATE training_jobs
               SET attempt = :attempt, progress = 0, current_step = '', error_reason = NULL,
                   error_message = NULL, error_details = NULL, model_version = NULL,
                   started_at = NULL, finished_at = NULL, claimed_by = NULL, lease_expires_at = NULL,
                   retry_at = NULL
             WHERE id = :id
            """
        ),
        {"id": job_id, "attempt": attempt},
    )
    await append_log(conn, job_id, attempt, LogLevel.INFO, "", f"job queued again as attempt {attempt}")
    await notify(conn, job_id, "created")
    return await get(conn, job_id)


async def update_priority(conn: AsyncConnection, job_id: uuid.UUID, priority: Priority) -> Job:
    row = (
        await conn.execute(
            sa.text(
                "UPDATE training_jobs SET priority = :p, updated_at = clock_timestamp() "
                "WHERE id = :id AND status = 'PENDING' RETURNING attempt"
            ),
            {"id": job_id, "p": priority.rank},
        )
    ).first()
    if row is None:
        current = await get(conn, job_id)
        raise InvalidTransition(job_id, current.status.value, "a new priority", frozenset({"PENDING"}))
    await append_log(conn, job_id, row.attempt, LogLevel.INFO, "", f"priority changed to {priority.value.lower()}")
    await notify(conn, job_id, "created")  # the queue order changed: wake the dispatchers
    return await get(conn, job_id)


async def append_log(conn: AsyncConnection, job_id: uuid.UUID, attempt: int, level: LogLevel, step: str, message: str) -> int:
    seq = await conn.scalar(NEXT_LOG_SEQ, {"id": job_id})
    if seq is None:
        raise JobNotFound(job_id)
    await conn.execute(
        sa.text(
            "INSERT INTO job_logs (job_id, seq, attempt, ts, level, step, message) "
            "VALUES (:id, :seq, :attempt, clock_timestamp(), :level, :step, :message)"
        ),
        {"id": job_id, "seq": seq, "attempt": attempt, "level": level.value, "step": step, "message": message},
    )
    await notify(conn, job_id, "log")
    return seq


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.text("SELECT status, count(*) FROM training_jobs GROUP BY status"))
    counts = {s.value: 0 for s in JobStatus}
    counts.update({status: n for status, n in rows})
    return counts
