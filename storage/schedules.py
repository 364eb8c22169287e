"""Cron schedules: create, read, list, pause and resume, delete, and the firing itself.

A firing happens in one transaction that locks the schedule's row (``FOR UPDATE SKIP
LOCKED``), checks it is still due, creates what it creates (a job, a degradation check) and
moves ``next_fire_at`` on; another server that looks at the same moment skips the locked row
and, after the commit, finds it no longer due. So each firing happens once, whatever the
number of servers and however often they restart. Every statement is named here with what it
does and the index that serves it; each is filtered by the transaction's scope (one tenant,
or every tenant when :tenant is NULL).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage import db
from storage.errors import ScheduleNotFound
from storage.records import DegradationCheck, JobStatus, NewSchedule, Schedule, ScheduledJob
from storage.tenancy import IN_SCOPE, scope_of, tenant_param

# insert_schedule: a new schedule. Index: schedules primary key.
INSERT_SCHEDULE = db.sql(
    """
    INSERT INTO schedules (id, tenant_id, name, cron, timezone, "window", action, model_type, priority, config,
                           metadata, degradation, paused, next_fire_at, created_at, updated_at, alias, forecast, promotion)
    VALUES (:id, :tenant_id, :name, :cron, :timezone, :window, :action, :model_type, :priority, CAST(:config AS jsonb),
            CAST(:metadata AS jsonb), CAST(:degradation AS jsonb), :paused, :next_fire_at, clock_timestamp(), clock_timestamp(),
            :alias, CAST(:forecast AS jsonb), CAST(:promotion AS jsonb))
    RETURNING *
    """
)

# get_schedule: one schedule. Index: schedules primary key.
GET_SCHEDULE = db.sql(f"SELECT * FROM schedules WHERE id = :id AND {IN_SCOPE}")  # noqa: S608 - constant fragment

# list_schedules: the scope's schedules, oldest first. Index: schedules_tenant (tenant_id, created_at).
LIST_SCHEDULES = db.sql(f"SELECT * FROM schedules WHERE {IN_SCOPE} ORDER BY tenant_id, created_at, id LIMIT :limit")  # noqa: S608

# set_paused: pause, or resume with the next firing from now (computed by the caller).
# Index: schedules primary key.
SET_PAUSED = db.sql(
    f"UPDATE schedules SET paused = :paused, next_fire_at = COALESCE(:next_fire_at, next_fire_at), updated_at = clock_timestamp() "  # noqa: S608
    f"WHERE id = :id AND {IN_SCOPE} RETURNING *"
)

# delete_schedule: the schedule goes; its jobs stay (their schedule_id becomes NULL).
# Index: schedules primary key.
DELETE_SCHEDULE = db.sql(f"DELETE FROM schedules WHERE id = :id AND {IN_SCOPE} RETURNING *")  # noqa: S608

# due_schedules: schedules whose next firing has come, soonest first (read without locks: each
# is then fired in its own tenant's transaction). Index: schedules_due (next_fire_at) WHERE NOT paused.
DUE_SCHEDULES = db.sql(
    "SELECT id, tenant_id FROM schedules WHERE NOT paused AND next_fire_at <= clock_timestamp() ORDER BY next_fire_at LIMIT :limit"
)

# lock_due: the schedule, if it is still due and no other server is firing it now.
# Index: schedules primary key.
LOCK_DUE = db.sql(
    f"SELECT * FROM schedules WHERE id = :id AND {IN_SCOPE} AND NOT paused AND next_fire_at <= clock_timestamp() "  # noqa: S608
    "FOR UPDATE SKIP LOCKED"
)

# lock_schedule: the schedule, locked until the transaction ends (run now).
# Index: schedules primary key.
LOCK_SCHEDULE = db.sql(f"SELECT * FROM schedules WHERE id = :id AND {IN_SCOPE} FOR UPDATE")  # noqa: S608

# advance: after a firing, the next one. Index: schedules primary key.
ADVANCE = db.sql(
    "UPDATE schedules SET next_fire_at = :next_fire_at, last_fired_at = COALESCE(:fired_at, last_fired_at), "
    "missed_firings = missed_firings + :missed, updated_at = clock_timestamp() WHERE id = :id RETURNING *"
)

# recent_jobs: a schedule's newest jobs. Index: training_jobs_schedule (schedule_id, created_at DESC).
RECENT_JOBS = db.sql(
    "SELECT id, status, scheduled_for, created_at FROM training_jobs WHERE schedule_id = :id ORDER BY created_at DESC LIMIT :limit"
)


async def create(conn: db.Connection, new: NewSchedule) -> Schedule:
    if scope_of(conn).single() != new.tenant_id:
        raise ScheduleNotFound("(another tenant's)")
    params = {
        "id": uuid.uuid4(),
        "tenant_id": new.tenant_id,
        "name": new.name,
        "cron": new.cron,
        "timezone": new.timezone,
        "window": new.window,
        "action": new.action,
        "model_type": new.model_type,
        "priority": new.priority.rank,
        "config": json.dumps(new.config),
        "metadata": json.dumps(new.metadata),
        "degradation": json.dumps(new.degradation) if new.degradation is not None else None,
        "paused": new.paused,
        "alias": new.alias,
        "forecast": json.dumps(new.forecast) if new.forecast is not None else None,
        "promotion": json.dumps(new.promotion) if new.promotion is not None else None,
        "next_fire_at": new.next_fire_at,
    }
    return Schedule.from_row((await conn.fetch(INSERT_SCHEDULE, params))[0])


async def get(conn: db.Connection, schedule_id: uuid.UUID) -> Schedule:
    rows = await conn.fetch(GET_SCHEDULE, {"id": schedule_id, **tenant_param(conn)})
    if not rows:
        raise ScheduleNotFound(schedule_id)
    return Schedule.from_row(rows[0])


async def list_schedules(conn: db.Connection, limit: int = 1000) -> list[Schedule]:
    return [Schedule.from_row(r) for r in await conn.fetch(LIST_SCHEDULES, {"limit": limit, **tenant_param(conn)})]


async def set_paused(conn: db.Connection, schedule_id: uuid.UUID, paused: bool, next_fire_at: datetime | None = None) -> Schedule:
    rows = await conn.fetch(SET_PAUSED, {"id": schedule_id, "paused": paused, "next_fire_at": next_fire_at, **tenant_param(conn)})
    if not rows:
        raise ScheduleNotFound(schedule_id)
    return Schedule.from_row(rows[0])


async def delete(conn: db.Connection, schedule_id: uuid.UUID) -> Schedule:
    rows = await conn.fetch(DELETE_SCHEDULE, {"id": schedule_id, **tenant_param(conn)})
    if not rows:
        raise ScheduleNotFound(schedule_id)
    return Schedule.from_row(rows[0])


async def due(conn: db.Connection, limit: int = 50) -> list[tuple[uuid.UUID, str]]:
    """(schedule id, tenant) of the schedules due now, across every tenant (the scheduler's
    own role)."""
    return [(r["id"], r["tenant_id"]) for r in await conn.fetch(DUE_SCHEDULES, {"limit": limit})]


async def lock_due(conn: db.Connection, schedule_id: uuid.UUID) -> Schedule | None:
    """The schedule, locked for this transaction, if it is still due and nobody else is
    firing it; else None."""
    rows = await conn.fetch(LOCK_DUE, {"id": schedule_id, **tenant_param(conn)})
    return Schedule.from_row(rows[0]) if rows else None


async def lock(conn: db.Connection, schedule_id: uuid.UUID) -> Schedule:
    rows = await conn.fetch(LOCK_SCHEDULE, {"id": schedule_id, **tenant_param(conn)})
    if not rows:
        raise ScheduleNotFound(schedule_id)
    return Schedule.from_row(rows[0])


async def advance(conn: db.Connection, schedule_id: uuid.UUID, next_fire_at: datetime, fired_at: datetime | None, missed: int) -> Schedule:
    rows = await conn.fetch(ADVANCE, {"id": schedule_id, "next_fire_at": next_fire_at, "fired_at": fired_at, "missed": missed})
    return Schedule.from_row(rows[0])


async def recent_jobs(conn: db.Connection, schedule_id: uuid.UUID, limit: int = 10) -> list[ScheduledJob]:
    rows = await conn.fetch(RECENT_JOBS, {"id": schedule_id, "limit": limit})
    return [ScheduledJob(r["id"], JobStatus(r["status"]), r["scheduled_for"], r["created_at"]) for r in rows]


# --- a firing's tasks: degradation checks, forecasts, promotions -----------------------------

# insert_check: a PENDING task of a schedule's firing. Index: degradation_checks primary key.
INSERT_CHECK = db.sql(
    """
    INSERT INTO degradation_checks (id, tenant_id, schedule_id, model_type, policy, status, window_start, window_end, created_at,
                                    kind, alias, job_id, due_at)
    VALUES (:id, :tenant_id, :schedule_id, :model_type, CAST(:policy AS jsonb), 'PENDING', :window_start, :window_end,
            clock_timestamp(), :kind, :alias, :job_id, clock_timestamp())
    RETURNING *
    """
)

# postpone_check: a claimed task back to PENDING until :seconds from now (a promotion whose
# challenger is still training). Index: degradation_checks primary key.
POSTPONE_CHECK = db.sql(
    "UPDATE degradation_checks SET status = 'PENDING', claimed_until = NULL, "
    "due_at = clock_timestamp() + make_interval(secs => :seconds) WHERE id = :id AND status = 'RUNNING'"
)

# claim_check: the oldest check to run (PENDING, or RUNNING on a server that stopped renewing
# it), now RUNNING here until :lease_seconds from now; other servers skip the locked row.
# Index: degradation_checks_due (due_at) WHERE status IN ('PENDING', 'RUNNING').
CLAIM_CHECK = db.sql(
    """
    UPDATE degradation_checks SET status = 'RUNNING', claimed_until = clock_timestamp() + make_interval(secs => :lease_seconds)
     WHERE id = (SELECT id FROM degradation_checks
                  WHERE (status = 'PENDING' AND due_at <= clock_timestamp())
                     OR (status = 'RUNNING' AND claimed_until < clock_timestamp())
                  ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING *
    """
)

# finish_check: a check's result. Index: degradation_checks primary key.
FINISH_CHECK = db.sql(
    """
    UPDATE degradation_checks SET status = :status, model_id = :model_id, metrics = CAST(:metrics AS jsonb),
           baseline = CAST(:baseline AS jsonb), degraded = :degraded, message = :message, promoted = :promoted,
           finished_at = clock_timestamp(), claimed_until = NULL
     WHERE id = :id AND status = 'RUNNING'
    RETURNING *
    """
)

# recent_checks: a schedule's newest checks. Index: degradation_checks_schedule (schedule_id, created_at DESC).
RECENT_CHECKS = db.sql("SELECT * FROM degradation_checks WHERE schedule_id = :id ORDER BY created_at DESC LIMIT :limit")


async def add_check(
    conn: db.Connection,
    schedule: Schedule,
    window_start: datetime,
    window_end: datetime,
    *,
    kind: str = "degradation",
    policy: Mapping[str, Any] | None = None,
    job_id: uuid.UUID | None = None,
) -> DegradationCheck:
    """A task of a firing: a degradation check (the default), a forecast or a promotion."""
    params = {
        "id": uuid.uuid4(),
        "tenant_id": schedule.tenant_id,
        "schedule_id": schedule.schedule_id,
        "model_type": schedule.model_type,
        "policy": json.dumps(dict(policy if policy is not None else (schedule.degradation or {}))),
        "window_start": window_start,
        "window_end": window_end,
        "kind": kind,
        "alias": schedule.alias,
        "job_id": job_id,
    }
    return DegradationCheck.from_row((await conn.fetch(INSERT_CHECK, params))[0])


async def claim_check(conn: db.Connection, lease_seconds: float) -> DegradationCheck | None:
    rows = await conn.fetch(CLAIM_CHECK, {"lease_seconds": lease_seconds})
    return DegradationCheck.from_row(rows[0]) if rows else None


async def finish_check(
    conn: db.Connection,
    check_id: uuid.UUID,
    *,
    ok: bool,
    model_id: uuid.UUID | None,
    metrics: dict[str, float],
    baseline: dict[str, float],
    degraded: bool | None,
    message: str,
    promoted: bool | None = None,
) -> DegradationCheck | None:
    params = {
        "id": check_id,
        "status": "DONE" if ok else "FAILED",
        "model_id": model_id,
        "metrics": json.dumps(metrics),
        "baseline": json.dumps(baseline),
        "degraded": degraded,
        "message": message,
        "promoted": promoted,
    }
    rows = await conn.fetch(FINISH_CHECK, params)
    return DegradationCheck.from_row(rows[0]) if rows else None


async def postpone_check(conn: db.Connection, check_id: uuid.UUID, seconds: float) -> None:
    await conn.execute(POSTPONE_CHECK, {"id": check_id, "seconds": seconds})


async def recent_checks(conn: db.Connection, schedule_id: uuid.UUID, limit: int = 10) -> list[DegradationCheck]:
    return [DegradationCheck.from_row(r) for r in await conn.fetch(RECENT_CHECKS, {"id": schedule_id, "limit": limit})]
