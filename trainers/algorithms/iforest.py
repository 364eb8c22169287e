"""Isolation forest (scikit-learn) for unlabeled anomaly detection: the score of a row is
how easily it is isolated (higher = more anomalous). Saved with skops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trainers.algorithms.base import RECONSTRUCTION, Algorithm, FitOptions, Param, Task, TrainData
from trainers.algorithms.rf import load_skops, save_skops

PARAMS: Mapping[str, Param] = {
    "n_estimators": Param(int, 1, 10_000),
    "max_samples": Param(int, 1, None, choices=("auto",), float_too=True),
    "max_features": Param(float, 0, 1, exclusive_minimum=True),
    "bootstrap": Param(bool),
}


@dataclass
class IsolationModel:
    model: Any
    best_iteration: int | None = None
    context_rows: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, -self.model.score_samples(features))

    def save(self, directory: Path) -> Path:
        return save_skops(self.model, directory)

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        return {}


class IsolationForest(Algorithm):
    name = "isolation_forest"
    library = "sklearn.ensemble"
    mlflow_flavor = ("sklearn", "scikit-learn")

    def native_model(self, path: Path) -> Any:
        return load_skops(path)

    params = PARAMS
    tasks = frozenset({RECONSTRUCTION})  # anomaly detection only: it scores rows, predicts no target
    unlabelled_task = RECONSTRUCTION

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> IsolationModel:
        from sklearn.ensemble import IsolationForest as SkIsolationForest

        hp = dict(hyperparameters)
        if "n_estimators" in hp:
            hp["n_estimators"] = int(hp["n_estimators"])
        model = SkIsolationForest(**hp, random_state=options.seed, n_jobs=options.num_threads)
        model.fit(data.x_train)
        options.on_iteration(1, 1)
        return IsolationModel(model)

    def load(self, path: Path, task: Task) -> IsolationModel:
        return IsolationModel(load_skops(path))


ALGORITHMS = (IsolationForest(),)
