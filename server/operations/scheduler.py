"""The scheduler: fires due schedules, on every server, once each.

Every ``interval`` seconds each server reads the schedules due (any tenant), then fires each
in its own tenant's transaction: the row is locked with ``FOR UPDATE SKIP LOCKED`` and checked
to be still due, the job (and/or degradation check) is created, and ``next_fire_at`` moves on,
all in one commit (storage/schedules.py). A second server looking at the same moment skips
the locked row, then finds it no longer due; a server that dies before the commit created
nothing. Each job also carries the request_id ``schedule-<id>-<firing>``: the job table's
unique (tenant, request_id) would refuse a second one for the same firing regardless.

Catch-up rule: a firing found late (every server was down, or busy) runs once, at once, for
the most recent firing time that has passed; earlier missed firings are skipped (counted in
``missed_firings`` and logged), never run in a burst. The training window of a late firing
still ends at its scheduled time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.observability import job_fields
from server.operations.cron import Cron, parse_duration
from server.operations.periodic import Periodic
from storage import db, jobs, schedules, tenants
from storage.errors import DatabaseUnavailable
from storage.records import DegradationCheck, Job, NewJob, Schedule
from storage.tenancy import Scope
from trainers import spec as specs

log = logging.getLogger(__name__)
DEFAULT_CHECK_WINDOW = "P7D"
TRAINS = ("train", "train_and_evaluate", "train_and_promote")
EVALUATES = ("evaluate", "train_and_evaluate")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_config(config: Mapping[str, Any], window: str | None, at: datetime) -> dict[str, Any]:
    """A firing's training config: with a rolling ``window``, the training range ends at the
    firing and is ``window`` long."""
    out = dict(config)
    if window:
        out["training_start"] = _iso(at - parse_duration(window))
        out["training_end"] = _iso(at)
    return out


def check_window(policy: Mapping[str, Any] | None, at: datetime) -> tuple[datetime, datetime]:
    span = parse_duration(str((policy or {}).get("window") or DEFAULT_CHECK_WINDOW), "degradation.window")
    return at - span, at


def request_id(schedule_id: uuid.UUID, at: datetime) -> str:
    """The request_id of a firing's job: one job per (schedule, firing time)."""
    return f"schedule-{schedule_id}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


@dataclass(frozen=True)
class Fired:
    job: Job | None
    check: DegradationCheck | None


async def fire(conn: db.Connection, schedule: Schedule, at: datetime, *, once_per_firing: bool = True) -> Fired:
    """Create what one firing of ``schedule`` at ``at`` creates, in the caller's transaction
    (the schedule's tenant's)."""
    job = check = None
    if schedule.action in EVALUATES:
        start, end = check_window(schedule.degradation, at)
        check = await schedules.add_check(conn, schedule, start, end)
    if schedule.action == "forecast":
        check = await schedules.add_check(conn, schedule, at, at, kind="forecast", policy=schedule.forecast or {})
    trained_until = at
    if schedule.action == "train_and_promote":  # the challenger trains before the window both are scored on
        trained_until = check_window(schedule.promotion, at)[0]
    if schedule.action in TRAINS:
        await tenants.check_scheduled_jobs(conn, schedule.tenant_id)
        spec = specs.build(job_config(schedule.config, schedule.window, trained_until), model_type=schedule.model_type)
        new = NewJob(
            tenant_id=schedule.tenant_id,
            model_type=spec.model_type.value,
            algorithm=spec.algorithm,
            priority=schedule.priority,
            config=spec.to_dict(),
            config_hash=spec.config_hash,
            metadata=schedule.metadata,
            request_id=request_id(schedule.schedule_id, at) if once_per_firing else None,
            schedule_id=schedule.schedule_id,
            scheduled_for=at,
        )
        job, _ = await jobs.create(conn, new)
    if schedule.action == "train_and_promote" and job is not None:
        start, end = check_window(schedule.promotion, at)
        check = await schedules.add_check(conn, schedule, start, end, kind="promotion", policy=schedule.promotion or {}, job_id=job.job_id)
    return Fired(job, check)


class Scheduler(Periodic):
    name = "scheduler"

    def __init__(
        self,
        engine: db.Engine,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.observe = observe  # told each firing's delay (seconds after its time)
        self.interval = interval
        self.clock = clock
        self.fired = 0  # firings done by this server (metrics)
        self.lateness: list[float] = []  # seconds each firing ran after its time (the last 100)

    async def run_pass(self) -> None:
        await self.fire_due()

    async def fire_due(self) -> int:
        """Fire every schedule due now; returns how many this server fired."""
        async with db.transaction(self.engine, Scope.ALL) as conn:
            due = await schedules.due(conn)
        count = 0
        for schedule_id, tenant_id in due:
            count += await self._fire_one(schedule_id, tenant_id)
        return count

    async def _fire_one(self, schedule_id: uuid.UUID, tenant_id: str) -> int:
        async with db.transaction(self.engine, Scope.of(tenant_id)) as conn:
            schedule = await schedules.lock_due(conn, schedule_id)
            if schedule is None:
                return 0  # another server is firing it, or just did
            now = self.clock()
            cron = Cron(schedule.cron, schedule.timezone)
            at, skipped = cron.catch_up(schedule.next_fire_at, now)
            following = cron.next_after(max(at, now))
            fired: Fired | None = None
            with job_fields(tenant_id=tenant_id):
                try:
                    async with db.savepoint(conn):
                        fired = await fire(conn, schedule, at)
                except DatabaseUnavailable:
                    raise
                except Exception as exc:  # noqa: BLE001 - a firing that cannot create its job is counted missed, not retried forever
                    log.warning("schedule %s could not fire for %s: %s", schedule_id, _iso(at), exc)
                if skipped:
                    log.warning(
                        "schedule %s: %d firings missed while no server ran; ran the latest (%s) only", schedule_id, skipped, _iso(at)
                    )
                await schedules.advance(conn, schedule_id, following, at if fired else None, skipped + (0 if fired else 1))
        if fired is None:
            return 0
        late = (now - at).total_seconds()
        self.fired += 1
        self.lateness = [*self.lateness[-99:], late]
        if self.observe is not None:
            self.observe(late)
        with job_fields(job_id=str(fired.job.job_id) if fired.job else "", tenant_id=tenant_id):
            log.info("schedule %s fired for %s (%.3f s after its time); next %s", schedule_id, _iso(at), late, _iso(following))
        return 1
