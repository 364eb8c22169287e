"""What every algorithm is made of: the tasks, a hyperparameter's declaration (``Param``),
the data an algorithm fits on (``TrainData``, ``FitOptions``), what it returns
(``FittedModel``) and the ``Algorithm`` protocol itself, with what an algorithm declares
about its own needs.

Tasks:
- ``regression``: predict the target (forecasting; unsupervised anomaly scores residuals),
- ``classification``: P(label = 1) for a 0/1 label target (supervised anomaly detection),
- ``reconstruction``: an anomaly score from the rows alone (LSTM autoencoder, isolation forest).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trainers.errors import Violation


class Task(enum.StrEnum):
    """What a model learns: the target (regression), a 0/1 label (classification), or its
    own inputs back (reconstruction, for anomaly scores)."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"
    RECONSTRUCTION = "reconstruction"


REGRESSION, CLASSIFICATION, RECONSTRUCTION = Task


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type and the values allowed.

    ``kind`` is int, float, bool, str or list (a list of ints); ``choices`` are further
    allowed strings; ``nullable`` allows null (e.g. rf's max_depth: None = unlimited)."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    also: tuple[Any, ...] = ()  # further allowed numbers outside the range (e.g. -1 = no limit)
    choices: tuple[str, ...] = ()
    nullable: bool = False
    float_too: bool = False  # an int parameter that also takes a fraction in (0, 1] (max_features)
    help: str = ""

    def check(self, path: str, value: Any) -> Violation | None:
        if value is None:
            return None if self.nullable else Violation(path, "must not be null")
        if isinstance(value, str):
            if value in self.choices:
                return None
            expected = f"one of {', '.join(map(repr, self.choices))} or a number" if self.choices else "a number"
            return (
                Violation(path, f"{value!r} is not {expected}")
                if self.kind is not str
                else Violation(path, f"{value!r} is not one of {', '.join(self.choices)}")
            )
        if self.kind is bool:
            return None if isinstance(value, bool) else Violation(path, "must be true or false")
        if self.kind is list:
            if not isinstance(value, list) or not value:
                return Violation(path, "must be a non-empty list of whole numbers, such as [64, 32]")
            bad = [
                v
                for v in value
                if isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not float(v).is_integer()
                or (self.minimum is not None and v < self.minimum)
                or (self.maximum is not None and v > self.maximum)
            ]
            return Violation(path, f"every size must be a whole number from {self.minimum:g} to {self.maximum:g}") if bad else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Violation(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            return Violation(path, "must be finite")
        if value in self.also:
            return None
        if self.float_too and isinstance(value, float) and not value.is_integer():
            return None if 0.0 < value <= 1.0 else Violation(path, f"{value!r} is out of range: a fraction must be in (0, 1]")
        if self.kind is int and not float(value).is_integer():
            return Violation(path, f"must be a whole number, got {value!r}")
        low_bad = self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum)
        high_bad = self.maximum is not None and value > self.maximum
        if low_bad or high_bad:
            return Violation(path, f"{value!r} is out of range: {self.describe()}")
        return None

    def describe(self) -> str:
        low = "" if self.minimum is None else (f"> {self.minimum:g}" if self.exclusive_minimum else f">= {self.minimum:g}")
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        rng = " and ".join(p for p in (low, high) if p) or "any value"
        extra = "".join(f" (or {a}{': ' + self.help if self.help else ''})" for a in self.also)
        return f"must be {rng}{extra}"


class FittedModel(Protocol):
    @property
    def best_iteration(self) -> int | None:
        """The best round or epoch on the tune part, when it stopped early."""
        ...

    @property
    def context_rows(self) -> int:
        """Rows before the first one it predicts that it needs (lstm: lookback - 1)."""
        ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Regression: the target; classification: P(label = 1); reconstruction: an
        anomaly score. One value per row after the first ``context_rows``."""
        ...

    def save(self, directory: Path) -> Path:
        """Write the model in its library's own safe format; returns the file."""
        ...

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        """Feature importance (normalised to sum 1), or {} when the model has none."""
        ...


@dataclass(frozen=True)
class TrainData:
    """Chronologically ordered parts: fit on train, stop early / tune thresholds on tune
    (the last part of the training range, possibly empty), evaluate on valid."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: tuple[str, ...]
    x_tune: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    y_tune: np.ndarray = field(default_factory=lambda: np.empty(0))
    # The series of each training row (rows are ordered by series, then time), when there
    # are several: a window of context never spans two series. None: one series.
    train_groups: np.ndarray | None = None
    tune_groups: np.ndarray | None = None  # the same for the tune rows


@dataclass(frozen=True)
class FitOptions:
    task: Task
    seed: int
    early_stopping_rounds: int | None
    num_threads: int
    batch_size: int | None
    use_gpu: bool
    on_iteration: Callable[[int, int], None]
    # A hyperparameter search: the metric the tune part is scored by (mae, rmse, mape,
    # r2_score; early stopping then watches it too), and where an algorithm that trains in
    # rounds reports it as it goes (round, score), so that bad trials can be stopped early.
    eval_metric: str | None = None
    on_score: Callable[[int, float], None] | None = None
    # Live metrics while training: an algorithm that trains in rounds or epochs calls it
    # after each (round, measure), ``measure()`` giving {"mae", "rmse"} of the model so far
    # on its monitor rows (``monitor_rows``: boosting libraries score them round by round as
    # an evaluation set; the neural loop measures them only when the caller will write).
    on_metrics: Callable[[int, Callable[[], Mapping[str, float]]], None] | None = None


SCORE_EVERY = 10  # rounds between two on_score reports
MONITOR_ROWS = 2_000  # without a tune part, live metrics are measured on this many fit rows


def monitor_rows(data: TrainData) -> tuple[np.ndarray, np.ndarray]:
    """The rows live metrics are measured on: the tune part, else an evenly spread sample of
    at most MONITOR_ROWS fit rows."""
    if len(data.y_tune):
        return data.x_tune, data.y_tune
    step = max(1, len(data.y_train) // MONITOR_ROWS)
    return data.x_train[::step], data.y_train[::step]


# The ways of data-parallel training (Algorithm.data_parallel).
LIGHTGBM_NETWORK, XGBOOST_COLLECTIVE, TORCH_DDP, ENSEMBLE = "lightgbm network", "xgboost collective", "torch DDP", "ensemble"
DATA_PARALLEL = (LIGHTGBM_NETWORK, XGBOOST_COLLECTIVE, TORCH_DDP, ENSEMBLE)


@dataclass(frozen=True)
class Peers:
    """One worker of a data-parallel fit: its ``rank`` among ``size`` workers, what the
    backend set up for it (``network``: LightGBM's machines and port), and ``stats``, the
    column means and standard deviations of the whole fit part (x_mean, x_std, y_mean,
    y_std), so that every worker scales its shard alike."""

    rank: int
    size: int
    network: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, np.ndarray] = field(default_factory=dict)
    bins: tuple[np.ndarray, np.ndarray] | None = None  # the fit part's bin sample (Algorithm.bin_sample)


def tuning_score(metric: str, native: float, y_tune: np.ndarray, *, squared: bool) -> float:
    """A library's own evaluation of the tune part, in the tuning metric's units: MAPE in
    percent, R² from the squared error (``squared``: ``native`` is the mean squared error,
    else its root)."""
    if metric == "mape":
        return native * 100.0
    if metric == "r2_score":
        mse = native if squared else native**2
        variance = float(np.var(y_tune))
        return 1.0 - mse / variance if variance > 0 else 0.0
    return native


MAX_WEIGHTS = 10_000_000  # trainable weights of one neural model
MAX_TREE_LEAVES = 20_000_000  # rounds x leaves of one boosted model


class Algorithm(Protocol):
    """One algorithm. Concrete algorithms subclass this and set what differs from the
    defaults below; the pipeline, the spec checks and the executor ask these, never the
    algorithm's name."""

    name: str
    library: str  # imported before the training step's clock starts
    params: Mapping[str, Param]
    tasks: frozenset[str]
    early_stopping: bool = False  # stops on the tune part (early_stopping_rounds applies)
    rounds_param: str = ""  # the hyperparameter that counts its rounds or epochs, when it stops early
    unlabelled_task: Task = REGRESSION  # anomaly detection on a signal, not a 0/1 label: score the residual
    supports_gpu: bool = False  # trains on a GPU when use_gpu asks and the node has one
    minibatch: bool = False  # trains in mini-batches (training_options.batch_size applies)
    scores_rounds: bool = False  # reports its tune score as it trains (FitOptions.on_score): a search can stop it early
    # How it trains on several workers (distributed=true), one of DATA_PARALLEL: the
    # library's own data-parallel boosting (LIGHTGBM_NETWORK, XGBOOST_COLLECTIVE: one model),
    # TORCH_DDP (one model), ENSEMBLE (each worker fits a part, ``combine`` joins them);
    # "" for one node only.
    data_parallel: str = ""
    # Rows of a uniform sample of the whole fit part that every worker gets, to agree on
    # histogram bins (bins found on each shard alone differ, and cost accuracy); 0: none.
    bin_sample: int = 0
    # MLflow's flavor for the library's own model object (its module under mlflow, and the
    # pip package the logged model needs); "" when MLflow has none: the files are logged.
    mlflow_flavor: tuple[str, str] = ("", "")
    # The built-in search space ("tuning": {"num_trials": N} alone): hyperparameter ->
    # {"type": "uniform" | "loguniform" | "randint" | "choice", ...}, the ones that matter most.
    search_space: Mapping[str, Mapping[str, Any]] = {}

    def native_model(self, path: Path) -> Any:
        """The library's own model object, loaded from a saved artifact (for MLflow's flavor);
        None without one."""
        return None

    def context_rows(self, hyperparameters: Mapping[str, Any]) -> int:
        """Rows before the first one it predicts that it needs (a window of context): 0 when
        every row stands alone. Such a model trains on consecutive rows, never a sample."""
        return 0

    def size_violations(self, hyperparameters: Mapping[str, Any], n_inputs: int) -> Iterator[tuple[str, str]]:
        """(hyperparameter, why) for each way the model's size would exceed what one job may
        train (weights, layers), given ``n_inputs`` input columns; checked at Validate."""
        return iter(())

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> FittedModel: ...

    def load(self, path: Path, task: Task) -> FittedModel: ...

    def fit_shard(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> FittedModel:
        """One worker's part of a data-parallel fit: ``data.x_train`` is this worker's shard,
        ``data.x_tune`` the whole tune part. A ``data_parallel`` algorithm implements it."""
        why = f"{self.name} trains on one node"
        raise NotImplementedError(why)

    def combine(self, models: Sequence[FittedModel]) -> FittedModel:
        """One model from the workers' parts (``data_parallel`` ENSEMBLE); the others
        return rank 0's model, which the collective training made whole."""
        return models[0]


def importance_from(values: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    values = np.asarray(values, dtype="float64")
    total = float(values.sum())
    if total <= 0:
        return {}
    return {n: float(v / total) for n, v in zip(names, values, strict=True)}
