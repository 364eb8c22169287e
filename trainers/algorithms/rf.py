"""Random forests (scikit-learn) with the guide's hyperparameters. Models are saved with
skops, and loaded back trusting only scikit-learn's and NumPy's own types (no pickle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trainers.algorithms.base import (
    CLASSIFICATION,
    ENSEMBLE,
    REGRESSION,
    Algorithm,
    FitOptions,
    FittedModel,
    Param,
    Peers,
    Task,
    TrainData,
    importance_from,
)

PARAMS: Mapping[str, Param] = {
    "n_estimators": Param(int, 1, 10_000),
    "max_depth": Param(int, 1, 1_000, nullable=True, help="null: unlimited"),
    "min_samples_split": Param(int, 2, None),
    "min_samples_leaf": Param(int, 1, None),
    "max_features": Param(int, 1, None, choices=("sqrt", "log2"), nullable=True, float_too=True),
    "bootstrap": Param(bool),
}
DEFAULTS = {"n_estimators": 100}


def save_skops(model: Any, directory: Path) -> Path:
    import skops.io as sio

    path = directory / "model.skops"
    sio.dump(model, path)
    return path


def load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    unexpected = [t for t in untrusted if not t.startswith(("sklearn.", "numpy."))]
    if unexpected:
        raise ValueError(f"{path} holds types outside scikit-learn and NumPy: {unexpected}")
    return sio.load(path, trusted=untrusted)


@dataclass
class SklearnModel:
    model: Any
    task: Task
    best_iteration: int | None = None
    context_rows: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.task == CLASSIFICATION:
            return cast(np.ndarray, self.model.predict_proba(features)[:, list(self.model.classes_).index(1.0)])
        return cast(np.ndarray, self.model.predict(features))

    def save(self, directory: Path) -> Path:
        return save_skops(self.model, directory)

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        return importance_from(self.model.feature_importances_, names)


class RandomForest(Algorithm):
    name = "rf"
    library = "sklearn.ensemble"
    mlflow_flavor = ("sklearn", "scikit-learn")
    search_space = {  # noqa: RUF012
        "n_estimators": {"type": "randint", "lower": 100, "upper": 400},
        "max_depth": {"type": "randint", "lower": 8, "upper": 32},
        "min_samples_leaf": {"type": "randint", "lower": 1, "upper": 10},
    }

    def native_model(self, path: Path) -> Any:
        return load_skops(path)

    params = PARAMS
    tasks = frozenset({REGRESSION, CLASSIFICATION})
    data_parallel = ENSEMBLE

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> SklearnModel:
        return self._fit(data, {**DEFAULTS, **hyperparameters}, options, options.seed)

    def fit_shard(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> SklearnModel:
        """This worker's batch of trees (n_estimators shared out over the workers), grown on
        its shard with its own seed; ``combine`` joins the batches into one forest."""
        hp = {**DEFAULTS, **hyperparameters}
        total = int(hp["n_estimators"])
        if total < peers.size:
            raise ValueError(f"n_estimators {total} is fewer than the {peers.size} workers: each worker grows at least one tree")
        hp["n_estimators"] = total // peers.size + (1 if peers.rank < total % peers.size else 0)
        return self._fit(data, hp, options, options.seed + peers.rank)

    def combine(self, models: Sequence[FittedModel]) -> SklearnModel:
        forests = [m for m in models if isinstance(m, SklearnModel)]
        first = forests[0]
        for other in forests[1:]:
            if first.task == CLASSIFICATION and list(other.model.classes_) != list(first.model.classes_):
                raise ValueError("a worker's shard lacks one of the label's classes (0 or 1): train on fewer workers")
        forest = first.model
        forest.estimators_ = [tree for f in forests for tree in f.model.estimators_]
        forest.n_estimators = len(forest.estimators_)
        return SklearnModel(forest, first.task)

    def _fit(self, data: TrainData, hp: dict[str, Any], options: FitOptions, seed: int) -> SklearnModel:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        for key in ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf"):
            if hp.get(key) is not None:
                hp[key] = int(hp[key])
        if isinstance(hp.get("max_features"), float) and hp["max_features"].is_integer() and hp["max_features"] > 1:
            hp["max_features"] = int(hp["max_features"])
        cls = RandomForestClassifier if options.task == CLASSIFICATION else RandomForestRegressor
        model = cls(**hp, random_state=seed, n_jobs=options.num_threads)
        model.fit(data.x_train, data.y_train)
        options.on_iteration(1, 1)
        return SklearnModel(model, options.task)

    def load(self, path: Path, task: Task) -> SklearnModel:
        return SklearnModel(load_skops(path), task)


ALGORITHMS = (RandomForest(),)
