"""The hyperparameter search on the Ray cluster: trainers.ports.Tuner over Ray Tune.

Every trial runs trainers.tuning.run_trial in its own Ray worker with the job's CPUs; the
trial data (fit and tune parts, never the validation part) goes to the object store once
(``tune.with_parameters``), not to each trial. Trials are drawn by Optuna's TPE sampler
through Ray Tune's OptunaSearch (``"sampler": "random"``: Tune's BasicVariantGenerator),
at most ``max_concurrent_trials`` at once. Boosted trees report their nearest fold's tune
score every few rounds, so ASHA can stop a trial that falls behind (``stop_bad_trials``);
other algorithms report once, at the end. Sampling is seeded by the job's random_seed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from trainers import algorithms
from trainers.algorithms.base import SCORE_EVERY
from trainers.spec.tuning import Dimension
from trainers.tuning import TrialResult, TrialSetup, run_trial

log = logging.getLogger(__name__)
TPE_STARTUP = 8  # random trials before TPE models the scores (Optuna's default is 10; searches here are short)
MAX_REPORTS = 100_000 // SCORE_EVERY + 2  # the longest boosted run (n_estimators <= 100,000), and its final report


def _dimension(dim: Dimension) -> Any:
    from ray import tune

    if dim.kind == "choice":
        return tune.choice(list(dim.values or ()))
    lower, upper = float(dim.lower or 0.0), float(dim.upper or 0.0)
    if dim.kind == "uniform":
        return tune.uniform(lower, upper)
    if dim.kind == "loguniform":
        return tune.loguniform(lower, upper)
    return tune.randint(int(dim.lower or 0), int(dim.upper or 0) + 1)  # both bounds included


def _trainable(config: Mapping[str, Any], setup: TrialSetup) -> None:
    from ray import tune

    def report(done: int, score: float) -> None:
        tune.report({"score": score, "rounds": done, "final": False})

    scored = run_trial(setup, config, report if algorithms.get(setup.algorithm).scores_rounds else None)
    tune.report({"score": scored.score, "final": True, "best_rounds": scored.rounds or 0})


def _number(trial_id: str) -> int:
    """Tune's trial ids end in a counter: ``…_00003`` is the fourth trial."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) + 1 if tail.isdigit() else 0


def _result(trial_id: str, config: Mapping[str, Any], last: Mapping[str, Any] | None, error: bool) -> TrialResult:
    params = dict(config)
    if error:
        return TrialResult(_number(trial_id), params, None, "failed")
    if last and last.get("final"):
        rounds = int(last.get("best_rounds") or 0) or None
        return TrialResult(_number(trial_id), params, float(last["score"]), "completed", rounds)
    return TrialResult(_number(trial_id), params, None, "stopped early")


def _ended_class() -> type:
    """The Tune callback that hears each trial end (in the search's driver: the job's Ray
    task) and reports it. Made on first use, so that importing this module (every Ray
    worker that runs a job does) does not import Ray Tune; kept as a module attribute, so
    that Tune pickles it by reference, never with the job's reporter inside."""
    existing = globals().get("_Ended")
    if existing is not None:
        return cast(type, existing)
    from ray import tune

    class _Ended(tune.Callback):
        def __init__(self, seen: list[TrialResult], on_trial: Callable[[TrialResult], None]) -> None:
            self.seen, self.on_trial = seen, on_trial

        # Tune pickles its callbacks with the experiment's state; this one reports to the
        # job's database (not picklable) and is never restored, so it pickles as nothing.
        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.seen, self.on_trial = [], lambda trial: None

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.seen.append(_result(trial.trial_id, trial.config, trial.last_result, error=False))
            self.on_trial(self.seen[-1])

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.seen.append(_result(trial.trial_id, trial.config, None, error=True))
            self.on_trial(self.seen[-1])

    _Ended.__qualname__ = "_Ended"
    globals()["_Ended"] = _Ended
    return _Ended


@dataclass(frozen=True)
class RayTuner:
    cpus_per_trial: float = 1.0
    seed: int = 42

    def search(self, setup: TrialSetup, on_trial: Callable[[TrialResult], None]) -> list[TrialResult]:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        tuning = setup.tuning
        seen: list[TrialResult] = []
        ended = _ended_class()(seen, on_trial)
        scheduler = None
        if tuning.stop_bad_trials and algorithms.get(setup.algorithm).scores_rounds:
            # Rungs at 5, 15, 45, ... reports (SCORE_EVERY rounds each): a horizon longer than any
            # trial only adds rungs no trial reaches, so the tuner need not know how long each runs.
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=MAX_REPORTS, grace_period=5, reduction_factor=3)
        storage = tempfile.mkdtemp(prefix="aihub-tune-")
        try:
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(_trainable, setup=setup), {"cpu": self.cpus_per_trial}),
                param_space={name: _dimension(dim) for name, dim in (tuning.search_space or {}).items()},
                tune_config=tune.TuneConfig(
                    num_samples=tuning.num_trials,
                    metric="score",
                    mode=tuning.mode,
                    scheduler=scheduler,
                    search_alg=self._sampler(tuning.sampler, tuning.mode, tuning.max_concurrent_trials),
                    time_budget_s=tuning.time_budget_seconds,
                ),
                run_config=tune.RunConfig(storage_path=storage, name="search", verbose=0, log_to_file=False, callbacks=[ended]),
            )
            grid = tuner.fit()
        finally:
            shutil.rmtree(storage, ignore_errors=True)
        if len(seen) < len(grid):
            log.warning("tuning: %d of %d trials were not reported as they ended", len(grid) - len(seen), len(grid))
        return sorted(seen, key=lambda r: r.number)

    def _sampler(self, name: str, mode: str, concurrency: int) -> Any:
        """Ray Tune's search algorithm for ``name``: OptunaSearch with a seeded TPE sampler
        (the first trials random, then drawn where the completed ones scored best), limited
        to ``concurrency`` trials at once; or the seeded random generator."""
        from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

        if name == "random":
            return BasicVariantGenerator(max_concurrent=concurrency, random_state=self.seed)
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is the job's log, not Optuna's
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=TPE_STARTUP, multivariate=True)
        return ConcurrencyLimiter(OptunaSearch(metric="score", mode=mode, sampler=sampler), max_concurrent=concurrency)
