"""XGBoost with the guide's hyperparameters. Models are saved as XGBoost JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trainers.algorithms.base import (
    CLASSIFICATION,
    REGRESSION,
    SCORE_EVERY,
    XGBOOST_COLLECTIVE,
    Algorithm,
    FitOptions,
    Param,
    Peers,
    Task,
    TrainData,
    importance_from,
    monitor_rows,
    tuning_score,
)

PARAMS: Mapping[str, Param] = {
    "n_estimators": Param(int, 1, 100_000, help="number of boosting rounds"),
    "learning_rate": Param(float, 0, 1, exclusive_minimum=True),
    "max_depth": Param(int, 1, 64, also=(0,), help="no limit"),
    "min_child_weight": Param(float, 0, None),
    "gamma": Param(float, 0, None),
    "subsample": Param(float, 0, 1, exclusive_minimum=True),
    "colsample_bytree": Param(float, 0, 1, exclusive_minimum=True),
    "reg_alpha": Param(float, 0, None),
    "reg_lambda": Param(float, 0, None),
}
# The guide's names -> XGBoost's native ones.
NATIVE = {"learning_rate": "eta", "reg_alpha": "alpha", "reg_lambda": "lambda"}
DEFAULTS = {"n_estimators": 100, "learning_rate": 0.1}


# XGBoost's name of each tuning metric (r2_score ranks trials as rmse does on a fixed tune part).
EVAL_METRICS = {"mae": "mae", "rmse": "rmse", "mape": "mape", "r2_score": "rmse"}


def booster_params(
    hyperparameters: Mapping[str, Any], *, seed: int, num_threads: int, task: Task = REGRESSION
) -> tuple[dict[str, Any], int]:
    hp = {**DEFAULTS, **hyperparameters}
    rounds = int(hp.pop("n_estimators"))
    params: dict[str, Any] = {
        "objective": "binary:logistic" if task == CLASSIFICATION else "reg:squarederror",
        "eval_metric": "logloss" if task == CLASSIFICATION else "rmse",
        "seed": seed,
        "nthread": num_threads,
        "tree_method": "hist",
        "verbosity": 0,
    }
    for name, value in hp.items():
        params[NATIVE.get(name, name)] = int(value) if PARAMS[name].kind is int else float(value)
    return params, rounds


@dataclass
class XGBModel:
    booster: Any
    best_iteration: int | None
    context_rows: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        rng = (0, self.best_iteration) if self.best_iteration else None
        matrix = xgb.DMatrix(features)
        return cast(np.ndarray, self.booster.predict(matrix, iteration_range=rng) if rng else self.booster.predict(matrix))

    def save(self, directory: Path) -> Path:
        path = directory / "model.json"
        booster = self.booster[: self.best_iteration] if self.best_iteration else self.booster
        booster.save_model(str(path))
        return path

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        gain = self.booster.get_score(importance_type="gain")
        return importance_from(np.array([gain.get(f"f{i}", 0.0) for i in range(len(names))]), names)


class XGBoost(Algorithm):
    name = "xgboost"
    library = "xgboost"
    mlflow_flavor = ("xgboost", "xgboost-cpu")
    search_space = {  # noqa: RUF012
        "learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.2},
        "max_depth": {"type": "randint", "lower": 3, "upper": 10},
        "n_estimators": {"type": "randint", "lower": 200, "upper": 1500},
        "min_child_weight": {"type": "loguniform", "lower": 0.5, "upper": 20.0},
        "subsample": {"type": "uniform", "lower": 0.6, "upper": 1.0},
        "colsample_bytree": {"type": "uniform", "lower": 0.6, "upper": 1.0},
    }

    def native_model(self, path: Path) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster

    params = PARAMS
    tasks = frozenset({REGRESSION, CLASSIFICATION})
    early_stopping = True
    rounds_param = "n_estimators"
    scores_rounds = True
    data_parallel = XGBOOST_COLLECTIVE

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> XGBModel:
        import xgboost as xgb

        params, rounds = booster_params(hyperparameters, seed=options.seed, num_threads=options.num_threads, task=options.task)
        if options.eval_metric:
            params["eval_metric"] = EVAL_METRICS[options.eval_metric]
        watched = params.get("eval_metric", "logloss" if options.task == CLASSIFICATION else "rmse")
        live = options.on_metrics if options.task == REGRESSION else None
        if live is not None and len(data.y_tune):  # early stopping watches the last metric: the one it watched stays last
            params["eval_metric"] = [*(m for m in ("mae", "rmse") if m != watched), watched]
        elif live is not None:  # nothing else is watched
            params["eval_metric"] = ["mae", "rmse"]
        train = xgb.DMatrix(data.x_train, data.y_train)

        class Report(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                options.on_iteration(epoch + 1, rounds)
                done = epoch + 1
                if live is not None and evals_log:
                    found = next(iter(evals_log.values()))
                    live(done, lambda: {"mae": float(found["mae"][-1]), "rmse": float(found["rmse"][-1])})
                if options.on_score and evals_log and (done % SCORE_EVERY == 0 or done == rounds):
                    native = float(evals_log["tune"][watched][-1])
                    options.on_score(done, tuning_score(options.eval_metric or "rmse", native, data.y_tune, squared=False))
                return False

        evals, stop = [], None
        if (options.early_stopping_rounds or options.on_score or live) and len(data.y_tune):
            evals = [(xgb.DMatrix(data.x_tune, data.y_tune), "tune")]
        elif live is not None:  # no tune part: a sample of the fit rows (XGBoost caches its predictions)
            evals = [(xgb.DMatrix(*monitor_rows(data)), "fit")]
        if options.early_stopping_rounds and len(data.y_tune):
            stop = options.early_stopping_rounds
        booster = xgb.train(
            params, train, num_boost_round=rounds, evals=evals, early_stopping_rounds=stop, callbacks=[Report()], verbose_eval=False
        )
        best = booster.best_iteration + 1 if stop else None
        return XGBModel(booster, best)

    def fit_shard(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> XGBModel:
        """Inside XGBoost's collective (its runner opens it: server/execution/distributed.py): each worker
        holds its rows, histograms and the tune metric are all-reduced, every worker grows
        the same trees."""
        return self.fit(data, hyperparameters, options)

    def load(self, path: Path, task: Task) -> XGBModel:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return XGBModel(booster, None)


ALGORITHMS = (XGBoost(),)
