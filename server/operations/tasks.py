"""What a schedule's firings leave to any server, run here: degradation checks, forecasts
and champion/challenger promotions (``kind`` of the task). Each task is claimed with a lease
(storage/schedules.py: one server at a time; a server that stops is replaced when the lease
runs out), and its result, the rows it writes, the alias it moves and its alert are written
in one transaction that finishes the task only while it is still this server's: so each
firing forecasts, promotes and alerts once, across replicas.

- degradation: the alias's version (when the schedule names one, else the newest live one)
  scored on the window that ends at the firing (server/operations/degradation.py).
- forecast: the alias's version, resolved when the task runs, forecasts from each series'
  latest hour with actuals; the points go to the forecast store (storage/forecasts.py) and a
  ``forecast_ready`` alert is sent.
- promotion: waits for the challenger's job; then the challenger and the alias's version
  (the champion) are scored on the same window (as :evaluate scores), and the alias moves
  only when the challenger is better by ``min_improvement`` on the policy's metric, and its
  job COMPLETED (its data checks passed). The decision, both scores, is the task's result
  and a ``promotion`` alert.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pandas as pd

from server.execution.evaluation import ModelEvaluator
from server.execution.forecasts import ModelServer
from server.operations.degradation import judge
from server.operations.periodic import Periodic
from storage import alerts, aliases, db, forecasts, jobs, models, schedules
from storage.errors import AliasNotFound
from storage.records import DegradationCheck, JobStatus, ModelVersion
from storage.tenancy import Scope
from trainers.errors import TrainingError
from trainers.spec import ModelType, TrainingSpec

log = logging.getLogger(__name__)
LEASE_SECONDS = 900.0  # a task claimed by a server that stopped is taken again after this
WAIT_FOR_JOB_SECONDS = 5.0  # a promotion looks at its challenger's job again after this
LOWER_IS_BETTER = ("mae", "rmse", "mape")
HIGHER_IS_BETTER = ("r2_score", "skill", "f1")
PROMOTION_METRICS = (*LOWER_IS_BETTER, *HIGHER_IS_BETTER)
DEFAULT_MIN_IMPROVEMENT = 0.02


def default_metric(model_type: str) -> str:
    return "mae" if model_type == ModelType.FORECAST.value else "f1"


def improvement(metric: str, champion: float, challenger: float) -> float:
    """How much better the challenger is, relative to the champion (0.05: 5 % better)."""
    gain = champion - challenger if metric in LOWER_IS_BETTER else challenger - champion
    return gain / abs(champion) if champion else (float("inf") if gain > 0 else 0.0)


def decide(
    policy: Mapping[str, Any], model_type: str, champion: Mapping[str, float] | None, challenger: Mapping[str, float]
) -> tuple[bool, str]:
    """Whether the challenger takes the alias, and why (both scores in words)."""
    metric = str(policy.get("metric") or default_metric(model_type))
    needed = float(policy.get("min_improvement", DEFAULT_MIN_IMPROVEMENT))
    if metric not in challenger:
        return False, f"the challenger has no {metric} on the window"
    if champion is None:
        return True, f"no champion yet: the challenger ({metric} {challenger[metric]:.4g}) takes the alias"
    if metric not in champion:
        return True, f"the champion has no {metric} on the window; the challenger ({challenger[metric]:.4g}) takes the alias"
    gain = improvement(metric, champion[metric], challenger[metric])
    said = f"{metric} {challenger[metric]:.4g} vs the champion's {champion[metric]:.4g} ({gain:+.1%}; needed {needed:+.1%})"
    return gain >= needed, ("promoted: " if gain >= needed else "kept the champion: ") + said


class FiringTasks(Periodic):
    name = "firing-tasks"

    def __init__(
        self, engine: db.Engine, dispatch_engine: db.Engine, evaluator: ModelEvaluator, models_in_use: ModelServer, *, interval: float = 2.0
    ) -> None:
        self.engine = engine  # service role: the task's tenant's transaction
        self.dispatch_engine = dispatch_engine  # claims tasks of every tenant
        self.evaluator = evaluator
        self.models_in_use = models_in_use
        self.interval = interval
        self.done: dict[str, int] = {}  # outcome -> count, for metrics
        self._kinds: Mapping[str, Callable[[DegradationCheck], Awaitable[DegradationCheck | None]]] = {
            "degradation": self._degradation,
            "forecast": self._forecast,
            "promotion": self._promotion,
        }

    async def run_pass(self) -> None:
        while await self.run_one():
            pass

    async def run_one(self) -> DegradationCheck | None:
        """Claim and run one task; the task as it ended (or was put back), or None when none waited."""
        async with db.transaction(self.dispatch_engine) as conn:
            task = await schedules.claim_check(conn, LEASE_SECONDS)
        if task is None:
            return None
        finished = await self._kinds[task.kind](task)
        return finished or task

    def _count(self, outcome: str) -> None:
        self.done[outcome] = self.done.get(outcome, 0) + 1

    async def _version(self, task: DegradationCheck) -> tuple[ModelVersion | None, str]:
        """The version a task runs: the alias's now (or, without an alias, the newest live
        one), and how it was found, in words."""
        async with db.transaction(self.engine, Scope.of(task.tenant_id)) as conn:
            if task.alias:
                try:
                    named = await aliases.resolve(conn, task.tenant_id, task.model_type, task.alias)
                except AliasNotFound:
                    return None, f"alias {task.alias} points at no {task.model_type} version"
                return named, f"alias {task.alias} (v{named.version})"
            newest = await models.current(conn, task.tenant_id, task.model_type)
            return newest, (f"newest live version v{newest.version}" if newest else f"no live {task.model_type} model version")

    async def _score(self, version: ModelVersion, task: DegradationCheck) -> dict[str, float]:
        spec = TrainingSpec.from_dict(version.config, model_type=version.model_type).with_window(task.window_start, task.window_end)
        return await self.evaluator.evaluate(version, spec)

    async def _degradation(self, task: DegradationCheck) -> DegradationCheck | None:
        version, which = await self._version(task)
        metrics: dict[str, float] = {}
        baseline: dict[str, float] = {}
        degraded: bool | None = None
        ok = False
        message = which
        if version is not None:
            baseline = {k: float(v) for k, v in version.metrics.items() if k in ("mae", "rmse", "mape", "skill", "baseline_mae")}
            try:
                metrics = await self._score(version, task)
            except TrainingError as exc:
                message = f"{which}: {exc.reason}: {exc.message}"
            else:
                ok = True
                degraded, verdict = judge(task.policy, metrics, baseline)
                message = f"{which}: {verdict}"
        async with db.transaction(self.engine, Scope.of(task.tenant_id)) as conn:
            finished = await schedules.finish_check(
                conn, task.check_id, ok=ok, model_id=version.model_id if version else None, metrics=metrics, baseline=baseline,
                degraded=degraded, message=message,
            )  # fmt: skip
            if finished is not None and degraded and version is not None:
                await alerts.add_event(
                    conn, task.tenant_id, "degradation", _alert("degradation", finished, version, reason="ModelDegraded")
                )
        self._count("degraded" if degraded else ("ok" if ok else "failed"))
        log.log(logging.WARNING if degraded or not ok else logging.INFO, "degradation check %s: %s", task.check_id, message,
                extra={"tenant_id": task.tenant_id})  # fmt: skip
        return finished

    async def _forecast(self, task: DegradationCheck) -> DegradationCheck | None:
        version, which = await self._version(task)
        rows: pd.DataFrame | None = None
        message = which
        if version is not None:
            spec = TrainingSpec.from_dict(version.config, model_type=version.model_type)
            horizon = int(task.policy.get("horizon_hours") or spec.forecast_horizon_hours)
            series = tuple(task.policy["series"]) if task.policy.get("series") else None
            try:
                rows = await self.models_in_use.forecast(version, spec, horizon_hours=horizon, origin=None, series=series, inputs=None)
            except TrainingError as exc:
                message = f"{which}: {exc.reason}: {exc.message}"
        points = [] if rows is None else [
            forecasts.Point(t.to_pydatetime(), s, float(f), o.to_pydatetime())
            for t, s, f, o in zip(rows["timestamp"], rows["series_id"], rows["forecast"], rows["origin"], strict=True)
        ]  # fmt: skip
        summary: dict[str, float] = {}
        if rows is not None:
            summary = {"points": float(len(points)), "series": float(rows["series_id"].nunique()), "horizon_hours": float(horizon)}
            message = f"{which}: {len(points)} points from {rows['origin'].max():%Y-%m-%dT%H:%M:%SZ}"
        async with db.transaction(self.engine, Scope.of(task.tenant_id)) as conn:
            finished = await schedules.finish_check(
                conn, task.check_id, ok=rows is not None, model_id=version.model_id if version else None, metrics=summary,
                baseline={}, degraded=None, message=message,
            )  # fmt: skip
            if finished is not None and rows is not None and version is not None:
                await forecasts.write(conn, version.model_id, task.alias or "", task.schedule_id, points)
                body = _alert("forecast_ready", finished, version, reason="ForecastReady")
                body["origin"] = f"{rows['origin'].max():%Y-%m-%dT%H:%M:%SZ}"
                body["link"] = f"/ai/training/forecasts?tenant_id={task.tenant_id}&alias={task.alias or ''}&model_id={version.model_id}"
                await alerts.add_event(conn, task.tenant_id, "forecast_ready", body)
        self._count("forecast" if rows is not None else "failed")
        log.log(logging.INFO if rows is not None else logging.WARNING, "scheduled forecast %s: %s", task.check_id, message,
                extra={"tenant_id": task.tenant_id})  # fmt: skip
        return finished

    async def _promotion(self, task: DegradationCheck) -> DegradationCheck | None:
        scope = Scope.of(task.tenant_id)
        async with db.transaction(self.engine, scope) as conn:
            job = await jobs.get(conn, task.job_id) if task.job_id else None
            if job is not None and not (job.status.is_terminal() and job.retry_at is None):
                await schedules.postpone_check(conn, task.check_id, WAIT_FOR_JOB_SECONDS)
                return None
            challenger = await models.of_job(conn, job.job_id) if job is not None and job.status == JobStatus.COMPLETED else None
        champion, which = await self._version(task)
        ours: dict[str, float] = {}
        theirs: dict[str, float] | None = None
        promoted: bool | None = False
        ok = True
        if challenger is None:
            ended = job.status.value if job is not None else "gone"
            why = f" ({job.error.reason}: {job.error.message})" if job is not None and job.error else ""
            message = f"kept {which}: the challenger's job {ended}{why}"
        else:
            try:
                ours = await self._score(challenger, task)
                theirs = await self._score(champion, task) if champion is not None and champion.model_id != challenger.model_id else None
            except TrainingError as exc:
                ok, promoted, message = False, None, f"could not score: {exc.reason}: {exc.message}"
            else:
                promoted, verdict = decide(task.policy, task.model_type, theirs if champion is not None else None, ours)
                message = f"{verdict} ({which}, challenger v{challenger.version})"
        async with db.transaction(self.engine, scope) as conn:
            finished = await schedules.finish_check(
                conn, task.check_id, ok=ok, model_id=challenger.model_id if challenger else None, metrics=ours,
                baseline=theirs or {}, degraded=None, message=message, promoted=promoted,
            )  # fmt: skip
            if finished is not None:
                if promoted and challenger is not None and task.alias:
                    await aliases.point(conn, challenger, task.alias, moved_by=f"schedule:{task.schedule_id}", reason=message)
                body = _alert("promotion", finished, challenger or champion, reason="Promoted" if promoted else "NotPromoted")
                body.update(promoted=bool(promoted), alias=task.alias, champion_model_id=str(champion.model_id) if champion else None)
                await alerts.add_event(conn, task.tenant_id, "promotion", body)
        self._count("promoted" if promoted else ("kept" if ok else "failed"))
        log.info("promotion %s: %s", task.check_id, message, extra={"tenant_id": task.tenant_id})
        return finished


def _alert(event: str, task: DegradationCheck, version: ModelVersion | None, *, reason: str) -> dict[str, Any]:
    return {
        "event": event,
        "tenant_id": task.tenant_id,
        "schedule_id": str(task.schedule_id) if task.schedule_id else None,
        "check_id": str(task.check_id),
        "model_id": str(version.model_id) if version else None,
        "version": version.version if version else None,
        "reason": reason,
        "message": task.message,
        "metrics": dict(task.metrics),
        "baseline": dict(task.baseline),
        "window_start": task.window_start.isoformat(),
        "window_end": task.window_end.isoformat(),
        "link": f"/ai/training/models/{version.model_id}" if version else f"/ai/training/schedules/{task.schedule_id}",
    }
