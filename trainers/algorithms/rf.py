"""Random forests (scikit-learn) with the guide's hyperparameters. Models are saved with
skops, and loaded back trusting only scikit-learn's and NumPy's own types (no pickle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from trainers.algorithms.base import CLASSIFICATION, REGRESSION, Algorithm, FitOptions, Param, TrainData, importance_from

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
    task: str
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
    params = PARAMS
    tasks = frozenset({REGRESSION, CLASSIFICATION})

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> SklearnModel:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        hp = {**DEFAULTS, **hyperparameters}
        for key in ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf"):
            if hp.get(key) is not None:
                hp[key] = int(hp[key])
        if isinstance(hp.get("max_features"), float) and hp["max_features"].is_integer() and hp["max_features"] > 1:
            hp["max_features"] = int(hp["max_features"])
        cls = RandomForestClassifier if options.task == CLASSIFICATION else RandomForestRegressor
        model = cls(**hp, random_state=options.seed, n_jobs=options.num_threads)
        model.fit(data.x_train, data.y_train)
        options.on_iteration(1, 1)
        return SklearnModel(model, options.task)

    def load(self, path: Path, task: str) -> SklearnModel:
        return SklearnModel(load_skops(path), task)


ALGORITHMS = (RandomForest(),)
