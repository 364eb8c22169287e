"""The job repository: create, read, list, and the user's operations (cancel, retry,
re-prioritise). The queue's own statements (claim, heartbeat, progress, finish, requeue)
are in storage/queue.py, log lines in storage/logs.py.

Every statement is named here with what it does and the index that serves it. Status
changes name their source states in SQL; each is an edge of ``storage.records.TRANSITIONS``
(checked by tests/unit/test_storage_sql.py). Functions take an ``db.Connection`` whose transaction the caller owns; they
never commit.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, NoReturn

from storage import db, logs, tenants
from storage.errors import InvalidTransition, JobNotFound, RequestIdReused
from storage.notifications import JOB_EVENTS_CHANNEL, JobEvent, notify, notify_sql
from storage.queue import NEXT_ATTEMPT
from storage.records import Job, JobStatus, LogLevel, NewJob, Priority, sources_of
from storage.tenancy import IN_SCOPE, scope_of, tenant_param

# Every statement below is filtered by the transaction's scope (storage.tenancy): one
# tenant's rows, or every tenant's when :tenant is NULL (admins).
# Each writes it out: (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant).

# insert_job: a new PENDING job and its event, unless the tenant already used its request_id
# or has :max_queued jobs queued (counted by this statement: run it under the tenant's lock,
# tenants.lock, and the count is exact). Index: training_jobs primary key;
# training_jobs_request_id (tenant_id, request_id) decides the conflict;
# training_jobs_tenant_active (tenant_id, status) counts.
INSERT_JOB = db.sql(
    f"""
    INSERT INTO training_jobs (id, tenant_id, model_type, algorithm, status, priority,
                               config, config_hash, metadata, request_id, request_hash, schedule_id, scheduled_for,
                               created_at, updated_at)
    SELECT :id, :tenant_id, :model_type, :algorithm, 'PENDING', :priority,
           CAST(:config AS jsonb), :config_hash, CAST(:metadata AS jsonb), :request_id, :request_hash,
           :schedule_id, :scheduled_for, clock_timestamp(), clock_timestamp()
     WHERE (SELECT count(*) FROM (SELECT 1 FROM training_jobs
                                   WHERE tenant_id = :tenant_id AND status = 'PENDING' LIMIT :max_queued) AS q) < :max_queued
    ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING
    RETURNING *, {notify_sql(JobEvent.QUEUED)}
    """  # noqa: S608 - constant fragments
)

# A job row with its current attempt's metrics as one JSON object (metrics_json).
_SELECT_JOB = """
    SELECT j.*, (SELECT jsonb_object_agg(m.name, m.value) FROM job_metrics m
                  WHERE m.job_id = j.id AND m.attempt = j.attempt) AS metrics_json
      FROM training_jobs j
"""

# get_job: one job with its metrics. Index: training_jobs primary key; job_metrics primary key.
GET_JOB = db.sql(_SELECT_JOB + " WHERE j.id = :id AND (CAST(:tenant AS text) IS NULL OR j.tenant_id = :tenant)")

# get_job_by_request_id: the tenant's job created with a request_id.
# Index: training_jobs_request_id (tenant_id, request_id).
GET_JOB_BY_REQUEST_ID = db.sql(_SELECT_JOB + " WHERE j.tenant_id = :tenant_id AND j.request_id = :request_id")

# list_jobs: newest first, keyset-paged by (created_at, id), with the filters given (a fixed
# fragment each, below). Index: training_jobs_tenant_created (tenant_id, created_at DESC,
# id DESC) with a tenant, else training_jobs_created (created_at DESC, id DESC);
# training_jobs_schedule (schedule_id, created_at DESC) with a schedule.
LIST_JOBS = _SELECT_JOB + " {where} ORDER BY j.created_at DESC, j.id DESC LIMIT :limit"
LIST_FILTERS = {
    "tenant": "j.tenant_id = :tenant",
    "status": "j.status = :status",
    "model_type": "j.model_type = :model_type",
    "schedule": "j.schedule_id = :schedule",
    "before": "(j.created_at, j.id) < (:before_at, :before_id)",
}

# cancel: PENDING, RUNNING, or FAILED while its automatic retry is planned (cancelling it
# stops the retry) -> CANCELLED. Index: training_jobs primary key.
CANCEL = db.sql(
    """
    UPDATE training_jobs
       SET status = 'CANCELLED', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
           lease_expires_at = NULL, retry_at = NULL
     WHERE id = :id AND status IN ('PENDING', 'RUNNING', 'FAILED') AND (status <> 'FAILED' OR retry_at IS NOT NULL)
       AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant)
    RETURNING id, attempt
    """
)

# cancel_attempt: the cancelled job's running attempt ends in its history row.
# Index: job_attempts primary key.
CANCEL_ATTEMPT = db.sql(
    "UPDATE job_attempts SET status = 'CANCELLED', finished_at = clock_timestamp() "
    "WHERE job_id = :id AND attempt = :attempt AND finished_at IS NULL"
)

# retry: a FAILED or CANCELLED job back to the queue as its next attempt (with a new cap of
# lost leases).
# Index: training_jobs primary key.
RETRY = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT}, lost_leases = 0 WHERE id = :id AND status IN ('FAILED', 'CANCELLED') "  # noqa: S608 - constant fragment
    "AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) RETURNING id, attempt, tenant_id, priority"
)

# set_priority: a PENDING job's new priority (its place in the queue). Index: training_jobs primary key.
SET_PRIORITY = db.sql(
    "UPDATE training_jobs SET priority = :priority, updated_at = clock_timestamp() "
    "WHERE id = :id AND status = 'PENDING' AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) RETURNING attempt"
)

# count_by_status: how many jobs are in each state (health). Index: training_jobs_tenant_created
# for one tenant; none (a scan of the jobs) for every tenant.
COUNT_BY_STATUS = db.sql(
    "SELECT status, count(*) FROM training_jobs WHERE (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) GROUP BY status"
)


async def get(conn: db.Connection, job_id: uuid.UUID) -> Job:
    """One job of the transaction's scope; JobNotFound for another tenant's (its existence
    is never revealed)."""
    rows = await conn.fetch(GET_JOB, {"id": job_id, **tenant_param(conn)})
    if not rows:
        raise JobNotFound(job_id)
    return Job.from_row(rows[0])


async def create(conn: db.Connection, new: NewJob) -> tuple[Job, bool]:
    """Insert a PENDING job and wake the dispatchers, within the tenant's quotas
    (QuotaExceeded). Returns (job, created); with a request_id the tenant already used, the
    existing job and False; RequestIdReused when that job was created by another request
    (AIP-155)."""
    scope_of(conn).single()  # a job is created for one tenant, the transaction's
    if new.request_id is not None:
        existing = await conn.fetchrow(GET_JOB_BY_REQUEST_ID, {"tenant_id": new.tenant_id, "request_id": new.request_id})
        if existing is not None:
            return _same_request(new, Job.from_row(existing)), False
    quota = await tenants.check_priority(conn, new.tenant_id, new.priority)
    await tenants.lock(conn, new.tenant_id)  # held to the commit: the insert's count is exact
    params = {
        "id": uuid.uuid4(),
        "tenant_id": new.tenant_id,
        "model_type": new.model_type,
        "algorithm": new.algorithm,
        "priority": new.priority.rank,
        "config": json.dumps(new.config),
        "config_hash": new.config_hash,
        "metadata": json.dumps(new.metadata),
        "request_id": new.request_id,
        "request_hash": new.request_hash,
        "schedule_id": new.schedule_id,
        "scheduled_for": new.scheduled_for,
        "max_queued": quota.max_queued_jobs,
        "channel": JOB_EVENTS_CHANNEL,
    }
    rows = await conn.fetch(INSERT_JOB, params)
    if rows:
        job = Job.from_row(rows[0])
        await logs.append(conn, job.job_id, 1, LogLevel.INFO, "", f"job queued with priority {new.priority.value}")
        return job, True
    if new.request_id is not None:  # a concurrent create with the same request_id won
        winner = await conn.fetch(GET_JOB_BY_REQUEST_ID, {"tenant_id": new.tenant_id, "request_id": new.request_id})
        if winner:
            return _same_request(new, Job.from_row(winner[0])), False
    raise tenants.queue_full(new.tenant_id, quota, await tenants.count_queued(conn, new.tenant_id, quota.max_queued_jobs + 1))


def _same_request(new: NewJob, existing: Job) -> Job:
    """The job a request_id created, if this is the request that created it (jobs created
    before fingerprints were stored always match)."""
    if existing.request_hash is not None and existing.request_hash != new.request_hash:
        raise RequestIdReused(str(new.request_id), existing.job_id)
    return existing


async def list_jobs(
    conn: db.Connection,
    *,
    status: JobStatus | None = None,
    model_type: str | None = None,
    schedule_id: uuid.UUID | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[Job], tuple[datetime, uuid.UUID] | None]:
    """Newest first. ``before`` is the (created_at, id) of the last job of the previous
    page (keyset pagination); returns the jobs and the cursor of the next page, if any. Only
    the transaction's scope: one tenant's jobs, or everyone's for an admin."""
    params: dict[str, Any] = {"limit": limit + 1}
    given = {
        "tenant": scope_of(conn).tenant_id,
        "status": status.value if status else None,
        "model_type": model_type,
        "schedule": schedule_id,
    }
    params.update({k: v for k, v in given.items() if v})
    if before:
        params["before_at"], params["before_id"] = before
    filters = [LIST_FILTERS[k] for k, v in (*given.items(), ("before", before)) if v]
    where = ("WHERE " + " AND ".join(filters)) if filters else ""
    rows = await conn.fetch(db.sql(LIST_JOBS.format(where=where)), params)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return [Job.from_row(r) for r in rows], cursor


async def _raise_invalid(conn: db.Connection, job_id: uuid.UUID, target: str, allowed: frozenset[str]) -> NoReturn:
    current = await get(conn, job_id)  # raises JobNotFound
    raise InvalidTransition(job_id, current.status.value, target, allowed)


async def cancel(conn: db.Connection, job_id: uuid.UUID) -> Job:
    """PENDING or RUNNING -> CANCELLED; also a FAILED job whose automatic retry is planned
    (which stops the retry)."""
    row = await conn.fetchrow(CANCEL, {"id": job_id, **tenant_param(conn)})
    if row is None:
        current = await get(conn, job_id)
        allowed = {s.value for s in sources_of(JobStatus.CANCELLED)}
        if current.status == JobStatus.FAILED:
            allowed = (allowed - {JobStatus.FAILED.value}) | {"FAILED with a retry planned"}
        raise InvalidTransition(job_id, current.status.value, JobStatus.CANCELLED.value, frozenset(allowed))
    await conn.execute(CANCEL_ATTEMPT, {"id": job_id, "attempt": row["attempt"]})
    await logs.append(conn, job_id, row["attempt"], LogLevel.WARNING, "", "job cancelled")
    await notify(conn, job_id, JobEvent.CANCELLED)
    return await get(conn, job_id)


async def retry(conn: db.Connection, job_id: uuid.UUID) -> Job:
    """FAILED or CANCELLED -> PENDING as the next attempt, within the tenant's quotas."""
    row = await conn.fetchrow(RETRY, {"id": job_id, **tenant_param(conn)})
    if row is None:
        await _raise_invalid(conn, job_id, JobStatus.PENDING.value, frozenset({JobStatus.FAILED.value, JobStatus.CANCELLED.value}))
    await tenants.admit(conn, row["tenant_id"], Priority.from_rank(row["priority"]), already_queued=1)
    await logs.append(conn, job_id, row["attempt"], LogLevel.INFO, "", f"job queued again as attempt {row['attempt']}")
    await notify(conn, job_id, JobEvent.QUEUED)
    return await get(conn, job_id)


async def update_priority(conn: db.Connection, job_id: uuid.UUID, priority: Priority) -> Job:
    """A PENDING job's new priority, if the tenant's quota allows it."""
    current = await get(conn, job_id)
    await tenants.check_priority(conn, current.tenant_id, priority)
    row = await conn.fetchrow(SET_PRIORITY, {"id": job_id, "priority": priority.rank, **tenant_param(conn)})
    if row is None:
        await _raise_invalid(conn, job_id, "a new priority", frozenset({JobStatus.PENDING.value}))
    await logs.append(conn, job_id, row["attempt"], LogLevel.INFO, "", f"priority changed to {priority.value}")
    await notify(conn, job_id, JobEvent.QUEUED)  # the queue order changed: wake the dispatchers
    return await get(conn, job_id)


async def count_by_status(conn: db.Connection) -> dict[str, int]:
    rows = await conn.fetch(COUNT_BY_STATUS, tenant_param(conn))
    counts = {s.value: 0 for s in JobStatus}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


# count_by_tenant: jobs by (status, priority, tenant), for metrics. Index: none (a scan of the
# jobs, once per scrape).
COUNT_BY_TENANT = db.sql(
    f"SELECT status, priority, tenant_id, count(*) AS n FROM training_jobs WHERE {IN_SCOPE} GROUP BY status, priority, tenant_id"  # noqa: S608
)


async def count_by_tenant(conn: db.Connection) -> list[tuple[str, str, str, int]]:
    rows = await conn.fetch(COUNT_BY_TENANT, tenant_param(conn))
    return [(r["status"], Priority.from_rank(r["priority"]).value, r["tenant_id"], int(r["n"])) for r in rows]
