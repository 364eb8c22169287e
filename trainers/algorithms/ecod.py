"""ECOD (Li et al., 2022: "ECOD: Unsupervised Outlier Detection Using Empirical Cumulative
Distribution Functions") for unlabelled anomaly detection: per input, how far out in either
tail of the training rows' empirical distribution a row lies, summed over the inputs (higher
= more anomalous). No hyperparameter to tune and no randomness beyond the sample.

Written here rather than taken from PyOD: PyOD's ECOD (and COPOD) re-estimate the
distributions on the training rows together with every batch they score, so a row's score
depends on which other rows are scored with it. A served model must give a row one score
whether it is scored alone, in a day or in a year (the zero-skew promise), so the
distributions here are the training rows' alone, fixed at fit. The scores follow PyOD's
formula otherwise: U_l = -log F(x), U_r = -log (1 - F(x-)), the tail the input's skewness
points to, and the larger of that and the two tails' mean, summed over inputs.

The model is the sorted sample of each input and its skewness sign, saved with safetensors
(no pickle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers.algorithms.base import RECONSTRUCTION, Algorithm, FitOptions, Param, Task, TrainData

PARAMS: Mapping[str, Param] = {
    "max_samples": Param(int, 100, 1_000_000, help="training rows the distributions are estimated from (a seeded sample)"),
}
DEFAULT_SAMPLES = 100_000


@dataclass
class ECODModel:
    sorted_columns: np.ndarray  # (samples, inputs), each column sorted
    skew_sign: np.ndarray  # (inputs,): -1, 0 or 1
    best_iteration: int | None = None
    context_rows: int = 0

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype="float64")
        n = self.sorted_columns.shape[0]
        left = np.empty_like(x)
        right = np.empty_like(x)
        for j in range(x.shape[1]):
            column = self.sorted_columns[:, j]
            # The row counted in with the training rows: never 0, so the logs stay finite.
            left[:, j] = (np.searchsorted(column, x[:, j], side="right") + 1) / (n + 1)
            right[:, j] = (n - np.searchsorted(column, x[:, j], side="left") + 1) / (n + 1)
        u_left, u_right = -np.log(left), -np.log(right)
        sign = self.skew_sign[None, :]
        u_skew = np.where(sign < 0, u_left, np.where(sign > 0, u_right, u_left + u_right))
        return np.asarray(np.maximum(u_skew, (u_left + u_right) / 2).sum(axis=1), dtype="float64")

    def save(self, directory: Path) -> Path:
        from safetensors.numpy import save_file

        path = directory / "model.safetensors"
        save_file({"sorted_columns": np.ascontiguousarray(self.sorted_columns), "skew_sign": self.skew_sign}, str(path))
        return path

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        return {}


def _skew_sign(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    spread = centred.std(axis=0)
    third = (centred**3).mean(axis=0)
    skew = np.divide(third, spread**3, out=np.zeros_like(third), where=spread > 0)
    return np.asarray(np.sign(skew), dtype="float64")


class ECOD(Algorithm):
    name = "ecod"
    library = "safetensors.numpy"

    def native_model(self, path: Path) -> Any:
        from safetensors.numpy import load_file

        return load_file(str(path))

    params = PARAMS
    tasks = frozenset({RECONSTRUCTION})  # anomaly detection only: it scores rows, predicts no target
    unlabelled_task = RECONSTRUCTION

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> ECODModel:
        x = np.asarray(data.x_train, dtype="float64")
        samples = int(hyperparameters.get("max_samples", DEFAULT_SAMPLES))
        if len(x) > samples:
            rng = np.random.default_rng(options.seed)
            x = x[np.sort(rng.choice(len(x), size=samples, replace=False))]
        model = ECODModel(np.sort(x, axis=0), _skew_sign(x))
        options.on_iteration(1, 1)
        return model

    def load(self, path: Path, task: Task) -> ECODModel:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        return ECODModel(tensors["sorted_columns"], tensors["skew_sign"])


ALGORITHMS = (ECOD(),)
