"""OperationsService (operations.proto): schedules, degradation checks and policies, alert
targets and deliveries as messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from client._gen.aihub.training.v1 import operations_pb2 as ops_pb
from server.api.convert.common import PRIORITIES, STATUSES, as_timestamp, checked_text, model_type_to_pb
from server.api.convert.training import config_to_pb
from server.api.errors import RequestError
from storage import records

# --- operations: schedules, alerts, degradation checks ----------------------------------------
ACTIONS: Mapping[str, int] = {
    "train": ops_pb.TRAIN,
    "evaluate": ops_pb.EVALUATE,
    "train_and_evaluate": ops_pb.TRAIN_AND_EVALUATE,
    "forecast": ops_pb.SCHEDULE_ACTION_FORECAST,
    "train_and_promote": ops_pb.TRAIN_AND_PROMOTE,
}
METRICS_OF_PROMOTION = ("mae", "rmse", "mape", "r2_score", "skill", "f1")
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}


def degradation_policy(policy: ops_pb.DegradationPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if policy.window:
        out["window"] = policy.window
    for name in ("max_mae_increase", "max_skill_drop"):
        if policy.HasField(name):
            value = getattr(policy, name)
            if not (0 <= value <= 100):
                raise RequestError(f"degradation.{name}", "must be between 0 and 100")
            out[name] = value
    return out


def forecast_policy(policy: ops_pb.ForecastPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if policy.horizon_hours:
        if not 1 <= policy.horizon_hours <= 24 * 14:
            raise RequestError("forecast.horizon_hours", "must be 1 to 336 (14 days)")
        out["horizon_hours"] = policy.horizon_hours
    if policy.series:
        if len(policy.series) > 5000:
            raise RequestError("forecast.series", "names more than 5000 series")
        out["series"] = list(dict.fromkeys(checked_text(s, "forecast.series", max_len=200) for s in policy.series))
    return out


def promotion_policy(policy: ops_pb.PromotionPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"window": policy.window.strip().upper() or "P7D"}
    if policy.metric:
        if policy.metric not in METRICS_OF_PROMOTION:
            raise RequestError("promotion.metric", f"must be one of {', '.join(METRICS_OF_PROMOTION)}")
        out["metric"] = policy.metric
    if policy.HasField("min_improvement"):
        if not 0 <= policy.min_improvement < 1:
            raise RequestError("promotion.min_improvement", "must be at least 0 and below 1 (0.02: the challenger is 2 % better)")
        out["min_improvement"] = policy.min_improvement
    return out


def check_to_pb(check: records.DegradationCheck) -> ops_pb.DegradationCheck:
    msg = ops_pb.DegradationCheck(
        check_id=str(check.check_id),
        model_id=str(check.model_id) if check.model_id else "",
        status=check.status,
        window_start=as_timestamp(check.window_start),
        window_end=as_timestamp(check.window_end),
        metrics=dict(check.metrics),
        baseline=dict(check.baseline),
        degraded=bool(check.degraded),
        message=check.message,
        created_at=as_timestamp(check.created_at),
        finished_at=as_timestamp(check.finished_at),
        kind=check.kind,
        alias=check.alias or "",
        job_id=str(check.job_id) if check.job_id else "",
    )
    if check.promoted is not None:
        msg.promoted = check.promoted
    return msg


def schedule_to_pb(
    schedule: records.Schedule,
    recent: Sequence[records.ScheduledJob] = (),
    checks: Sequence[records.DegradationCheck] = (),
) -> ops_pb.Schedule:
    policy = schedule.degradation or {}
    msg = ops_pb.Schedule(
        schedule_id=str(schedule.schedule_id),
        tenant_id=schedule.tenant_id,
        name=schedule.name,
        schedule=schedule.cron,
        timezone=schedule.timezone,
        window=schedule.window or "",
        action=ACTIONS[schedule.action],  # type: ignore[arg-type]
        model_type=model_type_to_pb(schedule.model_type),
        priority=PRIORITIES[schedule.priority],
        config=config_to_pb(schedule.config),
        metadata=dict(schedule.metadata),
        paused=schedule.paused,
        next_fire_at=as_timestamp(schedule.next_fire_at),
        last_fired_at=as_timestamp(schedule.last_fired_at),
        missed_firings=schedule.missed_firings,
        recent_jobs=[
            ops_pb.ScheduledJob(
                job_id=str(j.job_id),
                status=STATUSES[j.status],
                scheduled_for=as_timestamp(j.scheduled_for),
                created_at=as_timestamp(j.created_at),
            )
            for j in recent
        ],
        recent_checks=[check_to_pb(c) for c in checks],
        created_at=as_timestamp(schedule.created_at),
        updated_at=as_timestamp(schedule.updated_at),
    )
    if policy:
        msg.degradation.window = str(policy.get("window", ""))
        for name in ("max_mae_increase", "max_skill_drop"):
            if name in policy:
                setattr(msg.degradation, name, float(policy[name]))
    msg.alias = schedule.alias or ""
    if schedule.forecast:
        msg.forecast.horizon_hours = int(schedule.forecast.get("horizon_hours", 0))
        msg.forecast.series.extend(schedule.forecast.get("series", []))
    if schedule.promotion:
        msg.promotion.window = str(schedule.promotion.get("window", ""))
        msg.promotion.metric = str(schedule.promotion.get("metric", ""))
        if "min_improvement" in schedule.promotion:
            msg.promotion.min_improvement = float(schedule.promotion["min_improvement"])
    return msg


def target_to_pb(target: records.AlertTarget, *, with_secret: bool = False) -> ops_pb.AlertTarget:
    return ops_pb.AlertTarget(
        target_id=str(target.target_id),
        tenant_id=target.tenant_id,
        url=target.url,
        events=list(target.events),
        secret=target.secret if with_secret else "",
        created_at=as_timestamp(target.created_at),
    )


def delivery_to_pb(delivery: records.AlertDelivery) -> ops_pb.AlertDelivery:
    return ops_pb.AlertDelivery(
        delivery_id=delivery.delivery_id,
        target_id=str(delivery.target_id),
        event=delivery.event,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error or "",
        response_status=delivery.response_status or 0,
        body=json.dumps(delivery.body, sort_keys=True, default=str),
        created_at=as_timestamp(delivery.created_at),
        delivered_at=as_timestamp(delivery.delivered_at),
    )
