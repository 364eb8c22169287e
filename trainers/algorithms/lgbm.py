"""LightGBM with the guide's hyperparameters. Models are saved in LightGBM's own text
format (no pickle)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trainers.algorithms.base import (
    CLASSIFICATION,
    LIGHTGBM_NETWORK,
    MAX_TREE_LEAVES,
    REGRESSION,
    SCORE_EVERY,
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
    "max_depth": Param(int, 1, 64, also=(-1,), help="no limit"),
    "num_leaves": Param(int, 2, 131_072),
    "min_data_in_leaf": Param(int, 0, None),
    "feature_fraction": Param(float, 0, 1, exclusive_minimum=True),
    "bagging_fraction": Param(float, 0, 1, exclusive_minimum=True),
    "bagging_freq": Param(int, 0, None),
    "lambda_l1": Param(float, 0, None),
    "lambda_l2": Param(float, 0, None),
}

DEFAULTS = {"n_estimators": 100, "learning_rate": 0.1}
BIN_SAMPLE = 200_000  # LightGBM's own bin_construct_sample_cnt
# LightGBM's name of each tuning metric (r2_score ranks trials as l2 does on a fixed tune part).
EVAL_METRICS = {"mae": "l1", "rmse": "rmse", "mape": "mape", "r2_score": "l2"}


def booster_params(
    hyperparameters: Mapping[str, Any], *, seed: int, num_threads: int, task: Task = REGRESSION
) -> tuple[dict[str, Any], int]:
    """LightGBM's parameter dict and the number of rounds, from the guide's names.
    Shared with the benchmarks' plain scripts so both train the same model."""
    hp = {**DEFAULTS, **hyperparameters}
    rounds = int(hp.pop("n_estimators"))
    params: dict[str, Any] = {
        "objective": "binary" if task == CLASSIFICATION else "regression",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
    }
    for name, value in hp.items():
        params[name] = int(value) if PARAMS[name].kind is int else float(value)
    return params, rounds


@dataclass
class LGBMModel:
    booster: Any
    best_iteration: int | None
    context_rows: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, self.booster.predict(features, num_iteration=self.best_iteration or None))

    def save(self, directory: Path) -> Path:
        path = directory / "model.txt"
        self.booster.save_model(str(path), num_iteration=self.best_iteration or None)
        return path

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        return importance_from(self.booster.feature_importance(importance_type="gain"), names)


class LightGBM(Algorithm):
    name = "lgbm"
    library = "lightgbm"
    mlflow_flavor = ("lightgbm", "lightgbm")
    search_space = {  # noqa: RUF012
        "learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.2},
        "num_leaves": {"type": "randint", "lower": 15, "upper": 127},
        "n_estimators": {"type": "randint", "lower": 200, "upper": 1500},
        "min_data_in_leaf": {"type": "randint", "lower": 5, "upper": 100},
        "feature_fraction": {"type": "uniform", "lower": 0.6, "upper": 1.0},
        "lambda_l2": {"type": "loguniform", "lower": 0.001, "upper": 10.0},
    }

    def native_model(self, path: Path) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path))

    params = PARAMS
    tasks = frozenset({REGRESSION, CLASSIFICATION})
    early_stopping = True
    rounds_param = "n_estimators"
    scores_rounds = True
    data_parallel = LIGHTGBM_NETWORK
    bin_sample = BIN_SAMPLE

    def size_violations(self, hyperparameters: Mapping[str, Any], n_inputs: int) -> Iterator[tuple[str, str]]:
        rounds, leaves = hyperparameters.get("n_estimators", 100), hyperparameters.get("num_leaves", 31)
        if isinstance(rounds, int) and isinstance(leaves, int) and rounds * leaves > MAX_TREE_LEAVES:
            yield "n_estimators", f"n_estimators x num_leaves is {rounds * leaves:,}; at most {MAX_TREE_LEAVES:,} are allowed"

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> LGBMModel:
        return self._fit(data, hyperparameters, options, {})

    def fit_shard(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> LGBMModel:
        """LightGBM's data-parallel learner: each worker holds its rows (pre_partition), the
        histograms are summed over the network, every worker grows the same trees. Every
        worker has the whole tune part, so early stopping stops all of them at one round.
        Bin bounds come from the fit part's bin sample (the same on every worker, as on one
        node), not from each shard."""
        network = {**peers.network, "tree_learner": "data_parallel", "pre_partition": True} if peers.size > 1 else {}
        return self._fit(data, hyperparameters, options, network, peers.bins)

    def _fit(
        self,
        data: TrainData,
        hyperparameters: Mapping[str, Any],
        options: FitOptions,
        network: Mapping[str, Any],
        bins: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> LGBMModel:
        import lightgbm as lgb

        params, rounds = booster_params(hyperparameters, seed=options.seed, num_threads=options.num_threads, task=options.task)
        params.update(network)
        if options.eval_metric:
            params["metric"] = EVAL_METRICS[options.eval_metric]
        live = options.on_metrics if options.task == REGRESSION else None
        if live is not None and len(data.y_tune):  # after the metric early stopping and on_score watch, which stays first
            params["metric"] = list(dict.fromkeys([params.get("metric", "l2"), "l1", "rmse"]))
        elif live is not None:  # nothing else is watched
            params["metric"] = ["l1", "rmse"]
        names = list(data.feature_names)
        reference = lgb.Dataset(bins[0], bins[1], feature_name=names, params=params) if bins is not None else None
        train = lgb.Dataset(data.x_train, data.y_train, feature_name=names, free_raw_data=True, reference=reference, params=params)

        def report(env: Any) -> None:
            options.on_iteration(env.iteration + 1, env.end_iteration)
            done = env.iteration + 1
            results = env.evaluation_result_list
            if live is not None and results:
                live(done, lambda: {"mae": _result(results, "l1"), "rmse": _result(results, "rmse")})
            if options.on_score and results and (done % SCORE_EVERY == 0 or done == env.end_iteration):
                native = float(results[0][2])
                options.on_score(done, tuning_score(options.eval_metric or "rmse", native, data.y_tune, squared=True))

        callbacks = [report]
        valid_sets = []
        stop_after = options.early_stopping_rounds if len(data.y_tune) else None
        if (options.early_stopping_rounds or options.on_score or live) and len(data.y_tune):
            valid_sets = [lgb.Dataset(data.x_tune, data.y_tune, reference=train)]
        elif live is not None:  # no tune part: a sample of the fit rows, scored tree by tree as LightGBM does any valid set
            valid_sets = [lgb.Dataset(*monitor_rows(data), reference=train)]
        if stop_after:
            callbacks.append(lgb.early_stopping(stop_after, first_metric_only=True, verbose=False))
        booster = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
        best = booster.best_iteration if stop_after and booster.best_iteration > 0 else None
        return LGBMModel(booster, best)

    def load(self, path: Path, task: Task) -> LGBMModel:
        import lightgbm as lgb

        return LGBMModel(lgb.Booster(model_file=str(path)), None)


def _result(results: list[Any], metric: str) -> float:
    """A metric of the (only) valid set from LightGBM's evaluation results."""
    return float(next(r[2] for r in results if r[1] == metric))


ALGORITHMS = (LightGBM(),)
