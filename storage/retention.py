"""Retention: old log lines, finished jobs and sent alerts, deleted in small batches (each its
own short transaction: no long locks). Runs as the sweep's own role (every tenant). Model
versions past a tenant's keep_versions are in storage/models.py (expire_versions). Every
statement is named here with what it does and the index that serves it."""

from __future__ import annotations

from datetime import datetime

from storage import db

# A job that is over for good: final, and no automatic retry planned.
_OVER = "j.status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND j.retry_at IS NULL AND j.finished_at < :before"

# prune_logs: a batch of the log lines of jobs over before :before.
# Index: training_jobs_finished (finished_at); job_logs primary key (job_id, seq).
PRUNE_LOGS = db.sql(
    f"""
    DELETE FROM job_logs WHERE ctid = ANY(ARRAY(
        SELECT l.ctid FROM training_jobs j JOIN job_logs l ON l.job_id = j.id WHERE {_OVER} LIMIT :batch))
    """  # noqa: S608 - constant fragment
)

# prune_jobs: a batch of jobs over before :before that no model version comes from (their
# attempts, metrics and log lines go with them). Index: training_jobs_finished (finished_at);
# model_versions_job (job_id).
PRUNE_JOBS = db.sql(
    f"""
    DELETE FROM training_jobs WHERE id = ANY(ARRAY(
        SELECT j.id FROM training_jobs j
         WHERE {_OVER} AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE v.job_id = j.id) LIMIT :batch))
    """  # noqa: S608 - constant fragment
)

# prune_deliveries: a batch of alerts delivered or given up before :before.
# Index: none beyond the primary key (a scan of the outbox, which stays small).
PRUNE_DELIVERIES = db.sql(
    """
    DELETE FROM alert_deliveries WHERE id = ANY(ARRAY(
        SELECT id FROM alert_deliveries WHERE status <> 'PENDING' AND created_at < :before LIMIT :batch))
    """
)

PRUNERS = {"log_lines": PRUNE_LOGS, "jobs": PRUNE_JOBS, "alert_deliveries": PRUNE_DELIVERIES}


async def prune_batch(conn: db.Connection, what: str, before: datetime, batch: int) -> int:
    """Delete one batch of ``what`` (log_lines, jobs, alert_deliveries) older than ``before``;
    how many rows went."""
    return await conn.execute(PRUNERS[what], {"before": before, "batch": batch})
