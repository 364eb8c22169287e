"""Algorithm registry. Each algorithm module declares its hyperparameters (names, types,
ranges) without importing its library; the library is imported only when it trains."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trainers.errors import Violation


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type and the values allowed."""

    kind: type  # int, float or bool
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    also: tuple[Any, ...] = ()  # further allowed values outside the range (e.g. -1 = no limit)
    help: str = ""

    def check(self, path: str, value: Any) -> Violation | None:
        if value in self.also and not isinstance(value, bool):
            return None
        if self.kind is bool:
            return None if isinstance(value, bool) else Violation(path, "must be true or false")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Violation(path, f"must be a number, got {value!r}")
        if self.kind is int and not float(value).is_integer():
            return Violation(path, f"must be a whole number, got {value!r}")
        if not math.isfinite(value):
            return Violation(path, "must be finite")
        low_bad = self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum)
        high_bad = self.maximum is not None and value > self.maximum
        if low_bad or high_bad:
            return Violation(path, f"{value!r} is out of range: {self.describe()}")
        return None

    def describe(self) -> str:
        low = "" if self.minimum is None else (f"> {self.minimum}" if self.exclusive_minimum else f">= {self.minimum}")
        high = "" if self.maximum is None else f"<= {self.maximum}"
        rng = " and ".join(p for p in (low, high) if p) or "any value"
        extra = "".join(f" (or {a}{': ' + self.help if self.help else ''})" for a in self.also)
        return f"must be {rng}{extra}"


class FittedModel(Protocol):
    best_iteration: int | None

    def predict(self, features: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> Path:
        """Write the model in its library's own format; returns the file."""
        ...


@dataclass(frozen=True)
class TrainData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: tuple[str, ...]


class Algorithm(Protocol):
    name: str
    params: Mapping[str, Param]

    def fit(
        self,
        data: TrainData,
        hyperparameters: Mapping[str, Any],
        *,
        seed: int,
        early_stopping_rounds: int | None,
        num_threads: int,
        on_iteration: Callable[[int, int], None],
    ) -> FittedModel: ...


# Algorithms the guide promises. Only those in IMPLEMENTED run; the others are refused
# with a clear error instead of being silently replaced.
GUIDE_ALGORITHMS = ("lgbm", "xgboost", "rf", "mlp", "lstm")
IMPLEMENTED = {"lgbm": "trainers.algorithms.lgbm"}


def params_of(name: str) -> Mapping[str, Param]:
    return importlib.import_module(IMPLEMENTED[name]).PARAMS


def get(name: str) -> Algorithm:
    return importlib.import_module(IMPLEMENTED[name]).ALGORITHM
