"""OperationsService: schedules, alert targets and deliveries. gRPC in and out only; the
firing itself is server.operations.scheduler's (RunSchedule fires through it too)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from client._gen.aihub.training.v1 import operations_pb2_grpc as ops_grpc
from server.api import auth, convert
from server.api.convert.serving import check_alias
from server.api.errors import RequestError
from server.execution.clusters import ClusterMonitor
from server.operations import alerts as alerting
from server.operations import scheduler
from server.operations.cron import Cron, CronError, parse_duration
from storage import alerts, db, schedules, tenants
from storage.records import NewSchedule, Priority, Schedule
from storage.tenancy import Scope
from trainers import spec as specs
from trainers.errors import ConfigValidationError, Violation

MAX_NAME = 200
MIN_SECRET = 16


@contextlib.contextmanager
def _named_field() -> Iterator[None]:
    """A cron, time zone or duration problem as a request error naming its field."""
    try:
        yield
    except CronError as exc:
        raise RequestError(exc.field, str(exc)) from None


def _uses(
    request: ops_pb.CreateScheduleRequest, action: str, model_type: specs.ModelType
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The schedule's alias and its forecast and promotion policies, checked for its action."""
    alias = check_alias(request.alias) if request.alias else None
    if action in ("forecast", "train_and_promote") and alias is None:
        raise RequestError(
            "alias", f"is required by action {action}: the alias whose version it {'runs' if action == 'forecast' else 'challenges'}"
        )
    if action in ("train", "train_and_evaluate") and alias is not None:
        raise RequestError("alias", f"is not used by action {action} (evaluate, forecast and train_and_promote use one)")
    if request.HasField("forecast") and action != "forecast":
        raise RequestError("forecast", "is used by action forecast only")
    if request.HasField("promotion") and action != "train_and_promote":
        raise RequestError("promotion", "is used by action train_and_promote only")
    if action == "forecast" and model_type != specs.ModelType.FORECAST:
        raise RequestError("model_type", "must be forecast for action forecast (an anomaly model detects)")
    forecast = convert.forecast_policy(request.forecast) if action == "forecast" else None
    promotion = convert.promotion_policy(request.promotion) if action == "train_and_promote" else None
    if promotion is not None:
        with _named_field():
            parse_duration(promotion["window"], "promotion.window")
    return alias, forecast, promotion


class OperationsServicer(ops_grpc.OperationsServiceServicer):
    def __init__(self, *, engine: db.Engine, clusters: ClusterMonitor, allow_private_targets: bool = False) -> None:
        self.engine = engine
        self.clusters = clusters
        self.allow_private_targets = allow_private_targets

    # --- schedules ------------------------------------------------------------------------
    async def CreateSchedule(self, request: ops_pb.CreateScheduleRequest, context: Any) -> ops_pb.Schedule:
        scope = auth.scope_for(request.tenant_id, required=True)
        tenant_id = scope.single()
        if not request.schedule.strip():
            raise RequestError("schedule", "is required: a cron expression such as '0 2 * * 0' (Sundays at 02:00)")
        with _named_field():
            cron = Cron(request.schedule.strip(), request.timezone.strip() or "UTC")
        model_type = convert.model_type_from_pb(request.model_type)
        if model_type is None:
            raise RequestError("model_type", "is required: forecast or anomaly")
        name = convert.checked_text(request.name, "name", max_len=MAX_NAME)
        metadata = convert.metadata(request.metadata)
        action = convert.ACTION_NAMES.get(request.action or ops_pb.TRAIN)
        if action is None:
            raise RequestError("action", f"unknown action value {request.action}: one of {', '.join(convert.ACTIONS)}")
        alias, forecast, promotion = _uses(request, action, model_type)
        if action == "forecast":
            if request.HasField("config"):
                raise RequestError("config", "is not used by action forecast: the alias's version forecasts with its own")
        elif not request.HasField("config"):
            raise RequestError("config", "is required")
        config = convert.config_to_dict(request.config) if action != "forecast" else {}
        window = request.window.strip().upper() or None
        if window:
            with _named_field():
                parse_duration(window, "window")
            given = [f"config.{k}" for k in ("training_start", "training_end") if config.get(k)]
            if given:
                raise ConfigValidationError(
                    [Violation(g, "must not be set with window: each firing's window ends at the firing") for g in given],
                    message="A schedule's training window is either rolling (window) or fixed (training_start/end)",
                )
        policy = convert.degradation_policy(request.degradation)
        if policy.get("window"):
            with _named_field():
                parse_duration(policy["window"], "degradation.window")
        if request.HasField("degradation") and action not in scheduler.EVALUATES:
            raise RequestError("degradation", "is used by action evaluate or train_and_evaluate only")
        if action == "train_and_promote" and not window:
            raise RequestError(
                "window", "is required by train_and_promote: the challenger trains on a rolling window before the scoring window"
            )
        now = datetime.now(UTC)
        if action != "forecast":
            await self.clusters.check_fits(specs.worker_request(config))
            specs.build(scheduler.job_config(config, window, now), model_type=model_type.value)  # every problem now, not at 2 AM
        priority = convert.priority_from_pb(request.priority, default=Priority.HIGH)
        new = NewSchedule(
            tenant_id=tenant_id,
            name=name,
            cron=cron.expression,
            timezone=cron.timezone,
            window=window,
            action=action,
            model_type=model_type.value,
            priority=priority,
            config=config,
            metadata=metadata,
            degradation=policy if action in scheduler.EVALUATES else None,
            paused=request.paused,
            next_fire_at=cron.next_after(now),
            alias=alias,
            forecast=forecast,
            promotion=promotion,
        )
        shortest = await asyncio.to_thread(cron.shortest_interval, now)  # up to ~0.1 s of croniter: off the loop
        async with db.transaction(self.engine, scope) as conn:
            quota = await tenants.check_priority(conn, tenant_id, priority)
            tenants.check_schedule_interval(quota, shortest)
            created = await schedules.create(conn, new)
        return convert.schedule_to_pb(created)

    async def _full(self, conn: db.Connection, schedule: Schedule) -> ops_pb.Schedule:
        recent = await schedules.recent_jobs(conn, schedule.schedule_id)
        checks = await schedules.recent_checks(conn, schedule.schedule_id)
        return convert.schedule_to_pb(schedule, recent, checks)

    async def GetSchedule(self, request: ops_pb.GetScheduleRequest, context: Any) -> ops_pb.Schedule:
        schedule_id = _schedule_id(request.schedule_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            return await self._full(conn, await schedules.get(conn, schedule_id))

    async def ListSchedules(self, request: ops_pb.ListSchedulesRequest, context: Any) -> ops_pb.ListSchedulesResponse:
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            found = await schedules.list_schedules(conn)
        return ops_pb.ListSchedulesResponse(schedules=[convert.schedule_to_pb(s) for s in found])

    async def PauseSchedule(self, request: ops_pb.PauseScheduleRequest, context: Any) -> ops_pb.Schedule:
        schedule_id = _schedule_id(request.schedule_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            return await self._full(conn, await schedules.set_paused(conn, schedule_id, True))

    async def ResumeSchedule(self, request: ops_pb.ResumeScheduleRequest, context: Any) -> ops_pb.Schedule:
        schedule_id = _schedule_id(request.schedule_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            current = await schedules.lock(conn, schedule_id)
            following = Cron(current.cron, current.timezone).next_after(datetime.now(UTC)) if current.paused else None
            return await self._full(conn, await schedules.set_paused(conn, schedule_id, False, following))

    async def RunSchedule(self, request: ops_pb.RunScheduleRequest, context: Any) -> ops_pb.RunScheduleResponse:
        schedule_id = _schedule_id(request.schedule_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            visible = await schedules.get(conn, schedule_id)  # ScheduleNotFound for another tenant's
        async with db.transaction(self.engine, Scope.of(visible.tenant_id)) as conn:  # a job is created in its tenant's transaction
            schedule = await schedules.lock(conn, schedule_id)
            now = datetime.now(UTC)
            fired = await scheduler.fire(conn, schedule, now, once_per_firing=False)
            schedule = await schedules.advance(conn, schedule_id, schedule.next_fire_at, now, 0)
            out = ops_pb.RunScheduleResponse(schedule=await self._full(conn, schedule))
            if fired.job is not None:
                out.job.CopyFrom(convert.job_to_pb(fired.job))
            if fired.check is not None:
                out.check.CopyFrom(convert.check_to_pb(fired.check))
        return out

    async def DeleteSchedule(self, request: ops_pb.DeleteScheduleRequest, context: Any) -> ops_pb.Schedule:
        schedule_id = _schedule_id(request.schedule_id)
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            return convert.schedule_to_pb(await schedules.delete(conn, schedule_id))

    # --- alerts ---------------------------------------------------------------------------
    async def CreateAlertTarget(self, request: ops_pb.CreateAlertTargetRequest, context: Any) -> ops_pb.AlertTarget:
        scope = auth.scope_for(request.tenant_id, required=True)
        events = list(dict.fromkeys(request.events)) or list(alerting.EVENTS)
        unknown = [e for e in events if e not in alerting.EVENTS]
        if unknown:
            raise RequestError("events", f"{', '.join(map(repr, unknown))} not known: use {', '.join(alerting.EVENTS)}")
        secret = request.secret or secrets.token_urlsafe(32)
        if len(secret) < MIN_SECRET:
            raise RequestError("secret", f"must be at least {MIN_SECRET} characters (or left out: one is made)")
        convert.checked_text(secret, "secret", max_len=256)
        url = convert.checked_text(request.url.strip(), "url", max_len=2000, required=True)
        try:
            alerting.check_url(url, allow_private=self.allow_private_targets)  # resolves the host: last
        except alerting.TargetRefused as exc:
            raise RequestError("url", str(exc)) from None
        async with db.transaction(self.engine, scope) as conn:
            target = await alerts.create_target(conn, scope.single(), url, secret, events)
        return convert.target_to_pb(target, with_secret=True)

    async def ListAlertTargets(self, request: ops_pb.ListAlertTargetsRequest, context: Any) -> ops_pb.ListAlertTargetsResponse:
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            found = await alerts.list_targets(conn)
        return ops_pb.ListAlertTargetsResponse(targets=[convert.target_to_pb(t) for t in found])

    async def DeleteAlertTarget(self, request: ops_pb.DeleteAlertTargetRequest, context: Any) -> ops_pb.AlertTarget:
        target_id = convert.parse_uuid(request.target_id, "target_id", "an alert target id")
        async with db.transaction(self.engine, auth.scope_for("")) as conn:
            return convert.target_to_pb(await alerts.delete_target(conn, target_id))

    async def ListAlertDeliveries(self, request: ops_pb.ListAlertDeliveriesRequest, context: Any) -> ops_pb.ListAlertDeliveriesResponse:
        if request.page_size < 0:
            raise RequestError("page_size", "must not be negative")
        async with db.transaction(self.engine, auth.scope_for(request.tenant_id)) as conn:
            found = await alerts.list_deliveries(conn, min(request.page_size or 50, 1000))
        return ops_pb.ListAlertDeliveriesResponse(deliveries=[convert.delivery_to_pb(d) for d in found])


def _schedule_id(value: str) -> uuid.UUID:
    return convert.parse_uuid(value, "schedule_id", "a schedule id")
