"""The queue's side of the job repository: claiming work, leases and heartbeats, progress,
metrics and the end of an attempt, and requeueing the jobs of a server that stopped.

Every statement is named here with what it does and the index that serves it. Every write
by a running attempt is guarded by (job_id, attempt, status = 'RUNNING'), so a cancelled or
superseded run cannot change the job any more. Status changes follow the edges of
``storage.records.TRANSITIONS`` (checked by tests/unit/test_storage_sql.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from storage import db, logs
from storage.notifications import JOB_EVENTS_CHANNEL, JobEvent, notify, notify_sql
from storage.records import Job, JobError, LogLevel, Row, json_value

# events: a changed row's events (a log line was added; its state changed), queued for
# delivery at commit (storage.notifications).
_EVENTS = f"{notify_sql(JobEvent.LOG)}, {notify_sql(JobEvent.CHANGED)}"

# next_attempt: the SET list that puts a job back in the queue as its next attempt, with
# nothing of the last attempt left on the row. Shared by every requeue (lease expiry, a
# server's hand-back, an automatic retry, a user's retry).
NEXT_ATTEMPT = """
       status = 'PENDING', attempt = attempt + 1, progress = 0, current_step = '',
       error_reason = NULL, error_message = NULL, error_details = NULL, model_version = NULL,
       started_at = NULL, finished_at = NULL, claimed_by = NULL, lease_expires_at = NULL,
       retry_at = NULL, holds = NULL, updated_at = clock_timestamp()
"""

# claim_head: the next PENDING jobs for one server (the head of the queue first), skipping
# rows another server is claiming right now, locked until the claim's transaction ends.
# Priority first; within a priority, fair across tenants: the tenant with the fewest running
# jobs goes first (then the oldest job), so one tenant's burst does not hold every slot while
# another's jobs wait; a tenant at its max_running_jobs quota waits. Only the head of each
# tenant's queue is read (:candidates jobs each), never the whole queue.
# Index: training_jobs_tenant_queue (tenant_id, priority, created_at, id) WHERE status =
# 'PENDING'; training_jobs_running counts running jobs; tenants primary key.
CLAIM_HEAD = db.sql(
    """
    SELECT p.*, COALESCE(r.n, 0) AS tenant_running, t.max_running_jobs AS tenant_max_running
      FROM tenants t
      LEFT JOIN (SELECT tenant_id, count(*) AS n FROM training_jobs
                  WHERE status = 'RUNNING' GROUP BY tenant_id) r ON r.tenant_id = t.tenant_id
     CROSS JOIN LATERAL (SELECT * FROM training_jobs j
                          WHERE j.tenant_id = t.tenant_id AND j.status = 'PENDING'
                          ORDER BY j.priority, j.created_at, j.id
                          LIMIT :candidates
                            FOR UPDATE SKIP LOCKED) p
     WHERE t.max_running_jobs IS NULL OR COALESCE(r.n, 0) < t.max_running_jobs
     ORDER BY p.priority, COALESCE(r.n, 0), p.created_at, p.id
     LIMIT :candidates
    """
)

# claim_take_many: the admitted jobs of a claim (a batch), now RUNNING for this server, each
# with a lease the heartbeat renews, its attempt's history row, its "attempt N started" log
# line and its events, in one round trip. Index: training_jobs primary key; job_attempts
# primary key; job_logs primary key.
CLAIM_TAKE_MANY = db.sql(
    f"""
    WITH changed AS (
        UPDATE training_jobs
           SET status = 'RUNNING', claimed_by = :server_id, started_at = clock_timestamp(),
               updated_at = clock_timestamp(), progress = 0, current_step = '',
               lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds),
               log_seq = log_seq + 1, holds = CAST(:holds AS jsonb) -> id::text
         WHERE id = ANY(:ids) AND status = 'PENDING'
        RETURNING *, format('attempt %s started on %s', attempt, claimed_by) AS line),
    attempts AS (INSERT INTO job_attempts (job_id, attempt, status, claimed_by, started_at)
                 SELECT id, attempt, 'RUNNING', claimed_by, started_at FROM changed),
    lines AS ({logs.LINES_OF_CHANGED})
    SELECT changed.*, {_EVENTS} FROM changed
    """  # noqa: S608 - constant fragments
)

# heartbeat: extend the lease of the jobs one server is running; answers where each stands
# (a stalled one is noticed). Index: training_jobs primary key.
HEARTBEAT = db.sql(
    """
    UPDATE training_jobs
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_seconds)
     WHERE id = ANY(:ids) AND status = 'RUNNING' AND claimed_by = :server_id
    RETURNING id, progress, current_step
    """
)

# set_progress: the running attempt's step and progress (progress never goes back).
# Index: training_jobs primary key.
SET_PROGRESS = db.sql(
    """
    UPDATE training_jobs SET current_step = :step, progress = GREATEST(progress, :progress), updated_at = clock_timestamp()
     WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'
    """
)

# is_running: whether an attempt is the job's running one. Index: training_jobs primary key.
IS_RUNNING = db.sql("SELECT 1 FROM training_jobs WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'")

# is_running_locked: the same, keeping the row locked until the transaction ends.
# Index: training_jobs primary key.
IS_RUNNING_LOCKED = db.sql("SELECT 1 FROM training_jobs WHERE id = :id AND attempt = :attempt AND status = 'RUNNING' FOR UPDATE")

# record_metrics: an attempt's metrics, a row each (a name written again is replaced).
# Index: job_metrics primary key (job_id, attempt, name).
RECORD_METRICS = db.sql(
    "INSERT INTO job_metrics (job_id, attempt, name, value) "
    "SELECT :id, :attempt, * FROM unnest(CAST(:names AS text[]), CAST(:values AS float8[])) "
    "ON CONFLICT (job_id, attempt, name) DO UPDATE SET value = EXCLUDED.value"
)

# clear_metrics: an attempt's metrics so far (the live ones written while it trained), which
# the evaluation's metrics replace. Index: job_metrics primary key (job_id, attempt, name).
CLEAR_METRICS = db.sql("DELETE FROM job_metrics WHERE job_id = :id AND attempt = :attempt")

# set_mlflow_run: the MLflow run of the running attempt. Index: training_jobs primary key.
SET_MLFLOW_RUN = db.sql("UPDATE training_jobs SET mlflow_run_id = :run_id WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'")

# touch: mark the job changed (its metrics were written). Index: training_jobs primary key.
TOUCH = db.sql("UPDATE training_jobs SET updated_at = clock_timestamp() WHERE id = :id")

# complete: RUNNING -> COMPLETED for one attempt, with its model version, its attempt's
# history row, its log line and its events, in one round trip. Index: training_jobs primary
# key; job_attempts primary key; job_logs primary key.
COMPLETE = db.sql(
    f"""
    WITH changed AS (
        UPDATE training_jobs
           SET status = 'COMPLETED', finished_at = clock_timestamp(), updated_at = clock_timestamp(), progress = 100,
               error_reason = NULL, error_message = NULL, error_details = NULL,
               model_version = :model_version, lease_expires_at = NULL, retry_at = NULL, log_seq = log_seq + 1
         WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'
        RETURNING id, attempt, status, log_seq,
                  format('job completed (model version %s)', COALESCE(CAST(model_version AS text), 'None')) AS line),
    ended AS (UPDATE job_attempts a SET status = c.status, finished_at = clock_timestamp(), error_reason = NULL, error_message = NULL
                FROM changed c WHERE a.job_id = c.id AND a.attempt = c.attempt),
    lines AS ({logs.LINES_OF_CHANGED})
    SELECT id, {_EVENTS} FROM changed
    """  # noqa: S608 - constant fragments
)

# fail: RUNNING -> FAILED for one attempt, with the error and, when the retry policy allows
# one, the time it goes back to the queue by itself. Index: training_jobs primary key.
FAIL = db.sql(
    """
    UPDATE training_jobs
       SET status = 'FAILED', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
           error_reason = :reason, error_message = :message, error_details = CAST(:details AS jsonb),
           model_version = NULL, lease_expires_at = NULL,
           retry_at = CASE WHEN CAST(:retry_in AS float8) IS NULL THEN NULL
                           ELSE clock_timestamp() + make_interval(secs => :retry_in) END
     WHERE id = :id AND attempt = :attempt AND status = 'RUNNING'
    RETURNING id
    """
)

# finish_attempt: how an attempt ended, in its history row. Index: job_attempts primary key.
FINISH_ATTEMPT = db.sql(
    "UPDATE job_attempts SET status = :status, finished_at = clock_timestamp(), error_reason = :reason, error_message = :message "
    "WHERE job_id = :id AND attempt = :attempt"
)

# requeue_expired: RUNNING jobs whose lease ran out (their server stopped heartbeating) go
# back to the queue as their next attempt.
# Index: training_jobs_running (lease_expires_at) WHERE status = 'RUNNING'.
# Such a requeue does not use the job's retry budget (free_attempts), but counts against its
# own cap (lost_leases, AIHUB_MAX_LOST_LEASES): see fail_lost.
REQUEUE_EXPIRED = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT}, lost_leases = lost_leases + 1, free_attempts = free_attempts + 1 "  # noqa: S608 - constant fragment
    "WHERE status = 'RUNNING' AND lease_expires_at < clock_timestamp() AND lost_leases < :max_lost RETURNING id, attempt"
)

# fail_lost: RUNNING jobs whose lease ran out once more than the cap allows FAIL for good
# (a job that kills its worker every time must not loop forever).
# Index: training_jobs_running (lease_expires_at) WHERE status = 'RUNNING'.
FAIL_LOST = db.sql(
    """
    UPDATE training_jobs
       SET status = 'FAILED', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
           lost_leases = lost_leases + 1, error_reason = 'WorkerLost',
           error_message = format('its server was lost while it ran, %s times (the cap is %s requeues)',
                                  lost_leases + 1, CAST(:max_lost AS integer)),
           error_details = jsonb_build_object('lost_leases', (lost_leases + 1)::text,
                                              'max_lost_leases', CAST(CAST(:max_lost AS integer) AS text)),
           model_version = NULL, lease_expires_at = NULL, retry_at = NULL
     WHERE status = 'RUNNING' AND lease_expires_at < clock_timestamp() AND lost_leases >= :max_lost
    RETURNING id, attempt, error_message
    """
)

# requeue_lost_worker: one running attempt of this server whose Ray worker process died
# (killed, its node lost) goes back to the queue as the next attempt, not one of its retries,
# but counted against the lost-lease cap as a lost server is. Index: training_jobs primary key.
REQUEUE_LOST_WORKER = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT}, lost_leases = lost_leases + 1, free_attempts = free_attempts + 1 "  # noqa: S608 - constant fragment
    "WHERE id = :id AND attempt = :attempt AND status = 'RUNNING' AND claimed_by = :server_id AND lost_leases < :max_lost "
    "RETURNING id, attempt"
)

# fail_lost_worker: the same attempt when the job was lost once more than the cap allows:
# FAILED for good (WorkerLost, with the count). Index: training_jobs primary key.
FAIL_LOST_WORKER = db.sql(
    """
    UPDATE training_jobs
       SET status = 'FAILED', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
           lost_leases = lost_leases + 1, error_reason = 'WorkerLost',
           error_message = format('%s; lost %s times (the cap is %s requeues)', CAST(:why AS text),
                                  lost_leases + 1, CAST(:max_lost AS integer)),
           error_details = jsonb_build_object('lost_leases', (lost_leases + 1)::text,
                                              'max_lost_leases', CAST(CAST(:max_lost AS integer) AS text)),
           model_version = NULL, lease_expires_at = NULL, retry_at = NULL
     WHERE id = :id AND attempt = :attempt AND status = 'RUNNING' AND claimed_by = :server_id AND lost_leases >= :max_lost
    RETURNING id, attempt, error_message
    """
)

# release: the RUNNING jobs of a server that is stopping go back to the queue as their next
# attempt (not one of its retries: free_attempts). Index: training_jobs_running (lease_expires_at) WHERE status = 'RUNNING'.
RELEASE = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT}, free_attempts = free_attempts + 1 "  # noqa: S608 - constant fragment
    "WHERE status = 'RUNNING' AND claimed_by = :server_id RETURNING id, attempt"
)

# hand_back: one running attempt of this server goes back to the queue as the next attempt
# (its cluster was lost, or the server drained and stopped), not one of its retries. Index: training_jobs primary key.
HAND_BACK = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT}, free_attempts = free_attempts + 1 "  # noqa: S608 - constant fragment
    "WHERE id = :id AND attempt = :attempt AND status = 'RUNNING' AND claimed_by = :server_id RETURNING id, attempt"
)

# abandon_attempt: a requeued job's previous attempt ended because its server was lost.
# Index: job_attempts primary key.
ABANDON_ATTEMPT = db.sql(
    "UPDATE job_attempts SET status = 'FAILED', finished_at = clock_timestamp(), error_reason = 'WorkerLost', "
    "error_message = :why WHERE job_id = :id AND attempt = :attempt"
)

# requeue_due_retries: FAILED jobs whose planned automatic retry is due go back to the
# queue as their next attempt.
# Index: training_jobs_retry_due (retry_at) WHERE status = 'FAILED' AND retry_at IS NOT NULL.
REQUEUE_DUE_RETRIES = db.sql(
    f"UPDATE training_jobs SET {NEXT_ATTEMPT} "  # noqa: S608 - constant fragment
    "WHERE status = 'FAILED' AND retry_at IS NOT NULL AND retry_at <= clock_timestamp() RETURNING id, attempt"
)

ADMISSION_LOCK = 0x41494855  # "AIHU": pg_advisory_xact_lock's key for the claim

# admission_lock: one claim at a time, across every server, from the moment it reads what
# is held (HELD) until it commits what it took: two servers never both spend the same free
# CPUs. Claims are short (one round trip each way); a transaction-level advisory lock, so a
# server that dies mid-claim holds nothing. Index: none (an advisory lock reads no table).
LOCK_ADMISSION = db.sql("SELECT pg_advisory_xact_lock(:key)")

# held: what each RUNNING job of every server holds on the cluster (a claim's view; as many
# rows as jobs run at once). Index: training_jobs_running (lease_expires_at) WHERE status = 'RUNNING'.
HELD = db.sql("SELECT id, holds FROM training_jobs WHERE status = 'RUNNING' AND holds IS NOT NULL")


async def held(conn: db.Connection) -> dict[uuid.UUID, dict[str, float]]:
    """Lock admission for the rest of this transaction (ADMISSION_LOCK), then say what each
    running job of every server holds (CPU, GPU, memory): the cluster's free resources are
    its totals less their sum."""
    await conn.execute(LOCK_ADMISSION, {"key": ADMISSION_LOCK})
    return {row["id"]: {k: float(v) for k, v in json_value(row["holds"]).items()} for row in await conn.fetch(HELD)}


Admission = Literal["take", "wait", "pass"]
CANDIDATES = 20  # queued jobs a claim looks at: the head, and those it may pass over


async def claim_many(
    conn: db.Connection,
    server_id: str,
    *,
    lease_seconds: float = 60.0,
    admit: Callable[[Job, int], Admission] | None = None,
    holds: Mapping[uuid.UUID, Mapping[str, float]] | None = None,
    limit: int = 1,
) -> list[Job]:
    """Take up to ``limit`` jobs off the queue for the server ``server_id`` (RUNNING), in
    queue order, in this one transaction.

    ``admit(job, running)`` says whether a job may start now: "take" (its resources are free),
    "wait" (they will be: nothing more is claimed, and no job behind it passes it, so that
    a large job is not starved by a stream of small ones) or "pass" (it cannot start until
    the cluster grows, or its slot is kept for another tenant: it keeps its place but does
    not hold up the jobs behind it); ``running`` is how many jobs the job's tenant runs now
    (on every server, and taken in this batch). A tenant's max_running_jobs holds within the
    batch too. ``holds``, read once every job is admitted (``admit`` may fill it in), is what
    each taken job holds on the cluster: written on its row for the claims that follow (held)."""
    candidates = await conn.fetch(CLAIM_HEAD, {"candidates": max(CANDIDATES, limit) if admit else limit})
    chosen: list[uuid.UUID] = []
    per_tenant: dict[str, int] = {}
    for candidate in candidates:
        if len(chosen) >= limit:
            break
        tenant, cap = candidate["tenant_id"], candidate["tenant_max_running"]
        running = candidate["tenant_running"] + per_tenant.get(tenant, 0)  # on every server, and in this batch
        if cap is not None and running >= cap:
            continue  # the tenant is at its quota with what this batch took
        verdict = "take" if admit is None else admit(Job.from_row(candidate), running)
        if verdict == "wait":
            break
        if verdict == "take":
            chosen.append(candidate["id"])
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
    if not chosen:
        return []
    params = {
        "ids": chosen,
        "holds": json.dumps({str(job_id): dict(holds.get(job_id, {})) for job_id in chosen} if holds else {}),
        "server_id": server_id,
        "lease_seconds": float(lease_seconds),
        "level": LogLevel.INFO.value,
        "channel": JOB_EVENTS_CHANNEL,
    }
    rows = await conn.fetch(CLAIM_TAKE_MANY, params)
    order = {job_id: i for i, job_id in enumerate(chosen)}
    return [Job.from_row(row) for row in sorted(rows, key=lambda r: order[r["id"]])]


async def heartbeat(
    conn: db.Connection, server_id: str, job_ids: Sequence[uuid.UUID], *, lease_seconds: float = 60.0
) -> dict[uuid.UUID, tuple[int, str]]:
    """Renew the leases of the jobs this server runs; returns each one's (progress, step)."""
    if not job_ids:
        return {}
    rows = await conn.fetch(HEARTBEAT, {"ids": list(job_ids), "server_id": server_id, "lease_seconds": lease_seconds})
    return {job_id: (int(progress), step) for job_id, progress, step in rows}


async def set_progress(conn: db.Connection, job_id: uuid.UUID, attempt: int, step: str, progress: int) -> bool:
    """Record the running attempt's step and progress. False when that attempt is no
    longer running (cancelled, or superseded): the caller should stop."""
    changed = await conn.execute(SET_PROGRESS, {"id": job_id, "attempt": attempt, "step": step, "progress": int(progress)})
    if changed:
        await notify(conn, job_id, JobEvent.CHANGED)
    return bool(changed)


async def is_running(conn: db.Connection, job_id: uuid.UUID, attempt: int, *, lock: bool = False) -> bool:
    """Whether ``attempt`` is the job's running attempt. With ``lock`` the row stays locked
    until the transaction ends, so what the caller writes next lands before any cancel
    (a cancel waiting on the lock then sees those writes; one that came first makes this
    False)."""
    row = await conn.fetchval(IS_RUNNING_LOCKED if lock else IS_RUNNING, {"id": job_id, "attempt": attempt})
    return row is not None


async def record_metrics(
    conn: db.Connection, job_id: uuid.UUID, attempt: int, metrics: Mapping[str, float], *, final: bool = False
) -> None:
    """Write an attempt's metrics; ``final`` (the evaluation's) replace all it had before."""
    if final:
        await conn.execute(CLEAR_METRICS, {"id": job_id, "attempt": attempt})
    if not metrics:
        return
    params = {"id": job_id, "attempt": attempt, "names": list(metrics), "values": [float(v) for v in metrics.values()]}
    await conn.execute(RECORD_METRICS, params)
    await conn.execute(TOUCH, {"id": job_id})
    await notify(conn, job_id, JobEvent.CHANGED)


async def set_mlflow_run(conn: db.Connection, job_id: uuid.UUID, attempt: int, run_id: str) -> None:
    await conn.fetch(SET_MLFLOW_RUN, {"id": job_id, "attempt": attempt, "run_id": run_id})


async def complete(conn: db.Connection, job_id: uuid.UUID, attempt: int, model_version: int | None) -> bool:
    """RUNNING -> COMPLETED for this attempt; False when it is no longer running. One
    statement: it may run outside a transaction (db.single)."""
    params = {
        "id": job_id,
        "attempt": attempt,
        "model_version": model_version,
        "level": LogLevel.INFO.value,
        "channel": JOB_EVENTS_CHANNEL,
    }
    return bool(await conn.fetch(COMPLETE, params))


async def fail(conn: db.Connection, job_id: uuid.UUID, attempt: int, error: JobError, *, retry_in: float | None = None) -> bool:
    """RUNNING -> FAILED for this attempt; False when it is no longer running. With
    ``retry_in`` (seconds) the job goes back to the queue by itself then, as the next
    attempt (see requeue_due_retries)."""
    params = {
        "id": job_id,
        "attempt": attempt,
        "reason": error.reason,
        "message": error.message,
        "details": json.dumps(dict(error.details)),
        "retry_in": retry_in,
    }
    if (await conn.fetchrow(FAIL, params)) is None:
        return False
    await _attempt_ended(conn, job_id, attempt, "FAILED", error)
    await logs.append(conn, job_id, attempt, LogLevel.ERROR, "", f"job failed: {error.reason}: {error.message}")
    if retry_in is not None:
        await logs.append(conn, job_id, attempt, LogLevel.INFO, "", f"automatic retry in {retry_in:g} s, as attempt {attempt + 1}")
    await notify(conn, job_id, JobEvent.CHANGED)
    return True


async def _attempt_ended(conn: db.Connection, job_id: uuid.UUID, attempt: int, status: str, error: JobError | None) -> None:
    params = {
        "id": job_id,
        "attempt": attempt,
        "status": status,
        "reason": error.reason if error else None,
        "message": error.message if error else None,
    }
    await conn.execute(FINISH_ATTEMPT, params)


async def _requeue(conn: db.Connection, stmt: db.Query, params: Mapping[str, object], why: str, log_line: str) -> list[uuid.UUID]:
    rows = await conn.fetch(stmt, params)
    for job_id, attempt in rows:
        await conn.execute(ABANDON_ATTEMPT, {"id": job_id, "attempt": attempt - 1, "why": why})
        await logs.append(conn, job_id, attempt, LogLevel.WARNING, "", log_line.format(old=attempt - 1, new=attempt))
        await notify(conn, job_id, JobEvent.QUEUED)
    return [r[0] for r in rows]


MAX_LOST_LEASES = 3  # the default of AIHUB_MAX_LOST_LEASES


async def _fail_lost(conn: db.Connection, stmt: db.Query, params: Mapping[str, object]) -> list[Row]:
    """Run a fail-lost statement (FAIL_LOST, FAIL_LOST_WORKER): each job it FAILED gets its
    attempt's end, its log line and its event. Returns its rows (id, attempt, message)."""
    failed = await conn.fetch(stmt, params)
    for job_id, attempt, message in failed:
        await _attempt_ended(conn, job_id, attempt, "FAILED", JobError("WorkerLost", message))
        await logs.append(conn, job_id, attempt, LogLevel.ERROR, "", f"job failed: WorkerLost: {message}")
        await notify(conn, job_id, JobEvent.CHANGED)
    return failed


async def requeue_expired(conn: db.Connection, *, max_lost: int = MAX_LOST_LEASES) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """RUNNING jobs whose lease ran out (their server was lost): queued again as their next
    attempt, at most ``max_lost`` times each; a job lost once more FAILS for good
    (WorkerLost, with the count). Returns (requeued, failed)."""
    failed = await _fail_lost(conn, FAIL_LOST, {"max_lost": max_lost})
    requeued = await _requeue(
        conn,
        REQUEUE_EXPIRED,
        {"max_lost": max_lost},
        "lease expired",
        "the server running attempt {old} was lost (its lease expired); queued again as attempt {new}",
    )
    return requeued, [row[0] for row in failed]


async def release(conn: db.Connection, server_id: str) -> list[uuid.UUID]:
    """The jobs the server ``server_id`` is running go back to the queue as their next
    attempt (the server is shutting down); their running tasks can no longer write."""
    return await _requeue(
        conn,
        RELEASE,
        {"server_id": server_id},
        "server stopped",
        "the server running attempt {old} is stopping; queued again as attempt {new}",
    )


async def hand_back(conn: db.Connection, server_id: str, job_id: uuid.UUID, attempt: int, why: str) -> bool:
    """One attempt this server runs goes back to the queue as the next attempt (its Ray
    cluster was lost: it waits for it instead of failing). False when it no longer ran."""
    params = {"id": job_id, "attempt": attempt, "server_id": server_id}
    return bool(await _requeue(conn, HAND_BACK, params, why, "attempt {old} was lost with the Ray cluster; queued again as attempt {new}"))


async def requeue_lost_worker(
    conn: db.Connection, server_id: str, job_id: uuid.UUID, attempt: int, why: str, *, max_lost: int = MAX_LOST_LEASES
) -> bool:
    """The attempt's Ray worker died: queued again as the next attempt (not a retry) while
    the job has been lost fewer than ``max_lost`` times, else FAILED (WorkerLost). False
    when the attempt no longer ran (cancelled, or handed on: the guard ended its worker)."""
    params = {"id": job_id, "attempt": attempt, "server_id": server_id, "max_lost": max_lost}
    if await _fail_lost(conn, FAIL_LOST_WORKER, {**params, "why": why}):
        return True
    said = why.replace("{", "{{").replace("}", "}}")
    line = f"attempt {{old}}: {said}; queued again as attempt {{new}} (not one of its retries)"
    return bool(await _requeue(conn, REQUEUE_LOST_WORKER, params, why, line))


async def requeue_due_retries(conn: db.Connection) -> list[uuid.UUID]:
    rows = await conn.fetch(REQUEUE_DUE_RETRIES)
    for job_id, attempt in rows:
        await logs.append(conn, job_id, attempt, LogLevel.INFO, "", f"automatic retry: queued again as attempt {attempt}")
        await notify(conn, job_id, JobEvent.QUEUED)
    return [r[0] for r in rows]


async def note(conn: db.Connection, job_id: uuid.UUID, attempt: int, message: str, *, level: LogLevel = LogLevel.INFO) -> None:
    """A line in a job's log from the server, such as what it waits for."""
    await logs.append(conn, job_id, attempt, level, "", message)
