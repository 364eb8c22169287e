"""A job's log lines: numbered per job, written by every part of the service (the API's
operations, the queue, the running attempt) through :func:`append`, read by sequence."""

from __future__ import annotations

import uuid

from storage import db
from storage.errors import JobNotFound
from storage.notifications import JOB_EVENTS_CHANNEL, JobEvent
from storage.records import LogLevel, LogLine
from storage.tenancy import scope_of

PAGE = 1000  # log lines one read returns at most (a stream reads again at once after a full page)

# append_log: one line, numbered by the job's counter (the row lock of the UPDATE serialises
# writers), and its event, in one round trip. Index: training_jobs primary key; job_logs
# primary key (job_id, seq).
APPEND_LOG = db.sql(
    """
    WITH counter AS (UPDATE training_jobs SET log_seq = log_seq + 1 WHERE id = :id RETURNING log_seq),
         line AS (INSERT INTO job_logs (job_id, seq, attempt, ts, level, step, message)
                  SELECT :id, log_seq, :attempt, clock_timestamp(), :level, :step, :message FROM counter RETURNING seq)
    SELECT seq, pg_notify(:channel, :event) FROM line
    """
)

# lines_of_changed: a fragment for the statements that write a job's change and its log line
# in one round trip (storage.queue): one line for each row of their CTE ``changed``, whose
# UPDATE of training_jobs took the line's number (SET log_seq = log_seq + 1, RETURNING
# log_seq) and says its text (a column ``line``), at level :level.
# Index: job_logs primary key (job_id, seq).
LINES_OF_CHANGED = (
    "INSERT INTO job_logs (job_id, seq, attempt, ts, level, step, message) "
    "SELECT id, log_seq, attempt, clock_timestamp(), :level, '', line FROM changed"
)

# lines_after: a job's lines above a sequence number, oldest first, if the job is in the
# transaction's scope. Index: job_logs primary key; training_jobs primary key.
LINES_AFTER = db.sql(
    "SELECT job_id, seq, attempt, ts, level, step, message FROM job_logs WHERE job_id = :id AND seq > :after "
    "AND EXISTS (SELECT 1 FROM training_jobs j WHERE j.id = :id AND (CAST(:tenant AS text) IS NULL OR j.tenant_id = :tenant)) "
    "ORDER BY seq LIMIT :limit"
)
MAX_MESSAGE = 8192  # characters of one line; a longer message is cut, saying so


async def append(conn: db.Connection, job_id: uuid.UUID, attempt: int, level: LogLevel, step: str, message: str) -> int:
    """Add a line to the job's log; returns its sequence number."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 40] + f" ... [{len(message) - MAX_MESSAGE + 40} characters cut]"
    message = message.replace("\x00", "\\0")  # PostgreSQL text cannot hold NUL
    params = {
        "id": job_id,
        "attempt": attempt,
        "level": level.value,
        "step": step,
        "message": message,
        "channel": JOB_EVENTS_CHANNEL,
        "event": f"{job_id}:{JobEvent.LOG.value}",
    }
    rows = await conn.fetch(APPEND_LOG, params)
    if not rows:
        raise JobNotFound(job_id)
    return int(rows[0]["seq"])


async def after(conn: db.Connection, job_id: uuid.UUID, after_sequence: int = 0, limit: int = PAGE) -> list[LogLine]:
    """Lines with a sequence above ``after_sequence``, oldest first."""
    params = {"id": job_id, "after": after_sequence, "limit": limit, "tenant": scope_of(conn).tenant_id}
    return [LogLine.from_row(r) for r in await conn.fetch(LINES_AFTER, params)]
