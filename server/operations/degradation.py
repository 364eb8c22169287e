"""Degradation checks: a schedule with action EVALUATE (or TRAIN_AND_EVALUATE) queues a check
at each firing; any server runs it. The tenant's current model version (its newest live one of
the schedule's model type) is scored on the window that ends at the firing, exactly as
EvaluateModelVersion would, and compared with its own training metrics:

- degraded when MAE > (1 + max_mae_increase) x training MAE (default 0.2: 20 % worse), or
- skill < training skill - max_skill_drop (default 0.1), where skill is known.

The result is stored with the check (GetSchedule shows the recent ones); a degraded check
alerts the tenant's targets (event ``degradation``) in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from server.execution.evaluation import ModelEvaluator
from server.operations.periodic import Periodic
from storage import alerts, db, models, schedules
from storage.records import DegradationCheck, ModelVersion
from storage.tenancy import Scope
from trainers.errors import TrainingError
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)
DEFAULT_MAE_INCREASE = 0.2
DEFAULT_SKILL_DROP = 0.1
LEASE_SECONDS = 900.0  # a check claimed by a server that stopped is taken again after this


def judge(policy: Mapping[str, Any], metrics: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[bool, str]:
    """Whether ``metrics`` crossed the policy's thresholds against ``baseline``, and why."""
    mae_increase = float(policy.get("max_mae_increase", DEFAULT_MAE_INCREASE))
    skill_drop = float(policy.get("max_skill_drop", DEFAULT_SKILL_DROP))
    found = []
    if "mae" in metrics and baseline.get("mae"):
        limit = baseline["mae"] * (1 + mae_increase)
        if metrics["mae"] > limit:
            found.append(f"MAE {metrics['mae']:.4g} is above {limit:.4g} (training MAE {baseline['mae']:.4g} + {mae_increase:.0%})")
    if "skill" in metrics and "skill" in baseline:
        floor = baseline["skill"] - skill_drop
        if metrics["skill"] < floor:
            found.append(f"skill {metrics['skill']:.3f} is below {floor:.3f} (training skill {baseline['skill']:.3f} - {skill_drop:g})")
    if found:
        return True, "; ".join(found)
    return False, f"within thresholds (MAE {metrics.get('mae', float('nan')):.4g} vs training {baseline.get('mae', float('nan')):.4g})"


class DegradationChecker(Periodic):
    name = "degradation-checks"

    def __init__(self, engine: db.Engine, dispatch_engine: db.Engine, evaluator: ModelEvaluator, *, interval: float = 2.0) -> None:
        self.engine = engine  # service role: the check's tenant's transaction
        self.dispatch_engine = dispatch_engine  # claims checks of every tenant
        self.evaluator = evaluator
        self.interval = interval
        self.done: dict[str, int] = {}  # outcome -> count, for metrics

    async def run_pass(self) -> None:
        while await self.run_one():
            pass

    async def run_one(self) -> DegradationCheck | None:
        """Claim and run one check; the finished check, or None when none was waiting."""
        async with db.transaction(self.dispatch_engine) as conn:
            check = await schedules.claim_check(conn, LEASE_SECONDS)
        if check is None:
            return None
        scope = Scope.of(check.tenant_id)
        async with db.transaction(self.engine, scope) as conn:
            version = await models.current(conn, check.tenant_id, check.model_type)
        metrics: dict[str, float] = {}
        baseline: dict[str, float] = {}
        degraded: bool | None = None
        ok = False
        if version is None:
            message = f"no live {check.model_type} model version to check"
        else:
            baseline = {k: float(v) for k, v in version.metrics.items() if k in ("mae", "rmse", "mape", "skill", "baseline_mae")}
            try:
                metrics = await self._evaluate(version, check)
            except TrainingError as exc:
                message = f"{exc.reason}: {exc.message}"
            else:
                ok = True
                degraded, message = judge(check.policy, metrics, baseline)
        async with db.transaction(self.engine, scope) as conn:
            finished = await schedules.finish_check(
                conn,
                check.check_id,
                ok=ok,
                model_id=version.model_id if version else None,
                metrics=metrics,
                baseline=baseline,
                degraded=degraded,
                message=message,
            )
            if finished is not None and degraded and version is not None:
                await alerts.add_event(conn, check.tenant_id, "degradation", _alert(finished, version))
        outcome = "degraded" if degraded else ("ok" if ok else "failed")
        self.done[outcome] = self.done.get(outcome, 0) + 1
        log.log(logging.WARNING if degraded or not ok else logging.INFO, "degradation check %s: %s", check.check_id, message,
                extra={"tenant_id": check.tenant_id})  # fmt: skip
        return finished

    async def _evaluate(self, version: ModelVersion, check: DegradationCheck) -> dict[str, float]:
        spec = TrainingSpec.from_dict(version.config, model_type=version.model_type).with_window(check.window_start, check.window_end)
        return await self.evaluator.evaluate(version, spec)


def _alert(check: DegradationCheck, version: ModelVersion) -> dict[str, Any]:
    return {
        "event": "degradation",
        "tenant_id": check.tenant_id,
        "schedule_id": str(check.schedule_id) if check.schedule_id else None,
        "check_id": str(check.check_id),
        "model_id": str(version.model_id),
        "version": version.version,
        "reason": "ModelDegraded",
        "message": check.message,
        "metrics": dict(check.metrics),
        "baseline": dict(check.baseline),
        "window_start": check.window_start.isoformat(),
        "window_end": check.window_end.isoformat(),
        "link": f"/ai/training/models/{version.model_id}",
    }
