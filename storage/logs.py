"""Reading a job's log lines (they are written by storage.jobs.append_log)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.records import LogLevel, LogLine


async def after(conn: AsyncConnection, job_id: uuid.UUID, after_sequence: int = 0, limit: int = 1000) -> list[LogLine]:
    """Lines with a sequence above ``after_sequence``, oldest first. Primary key (job_id, seq)."""
    rows = await conn.execute(
        sa.text(
            "SELECT job_id, seq, attempt, ts, level, step, message FROM job_logs "
            "WHERE job_id = :id AND seq > :after ORDER BY seq LIMIT :limit"
        ),
        {"id": job_id, "after": after_sequence, "limit": limit},
    )
    return [LogLine(r.job_id, r.seq, r.attempt, r.ts, LogLevel(r.level), r.step, r.message) for r in rows]
