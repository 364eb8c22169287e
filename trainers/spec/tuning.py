"""A job's hyperparameter search: the ``tuning`` section, read into :class:`Tuning` and
checked against the algorithm's own parameter ranges.

    "tuning": {"num_trials": 16, "max_concurrent_trials": 2, "metric": "mae",
               "search_space": {"learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3},
                                "num_leaves": {"type": "randint", "lower": 15, "upper": 127},
                                "n_estimators": {"type": "choice", "values": [200, 500, 1000]}}}

``randint`` includes both bounds. A trial fits on the fit part of the training range and is
scored on the tune part; the validation part is never seen while searching.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trainers.algorithms import Algorithm
from trainers.errors import Violation, shown

METRICS = {"mae": "min", "rmse": "min", "mape": "min", "r2_score": "max"}
KINDS = ("choice", "uniform", "loguniform", "randint")
MAX_TRIALS = 100
MAX_CHOICES = 50
DEFAULT_TRIALS = 16
DEFAULT_CONCURRENCY = 2


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range: ``values`` for a choice, else ``lower``..``upper``."""

    kind: str
    lower: float | None = None
    upper: float | None = None
    values: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"type": "choice", "values": list(self.values)}
        return {"type": self.kind, "lower": self.lower, "upper": self.upper}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dimension:
        if data["type"] == "choice":
            return cls("choice", values=tuple(data["values"]))
        cast = int if data["type"] == "randint" else float
        return cls(data["type"], cast(data["lower"]), cast(data["upper"]))

    def largest(self) -> Any:
        return max(self.values) if self.kind == "choice" else self.upper


@dataclass(frozen=True)
class Tuning:
    num_trials: int
    max_concurrent_trials: int
    metric: str
    space: tuple[tuple[str, Dimension], ...]
    stop_bad_trials: bool = True

    @property
    def mode(self) -> str:
        return METRICS[self.metric]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_trials": self.num_trials,
            "max_concurrent_trials": self.max_concurrent_trials,
            "metric": self.metric,
            "mode": self.mode,
            "search_space": {name: dim.to_dict() for name, dim in self.space},
            "stop_bad_trials": self.stop_bad_trials,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tuning:
        return cls(
            num_trials=int(data.get("num_trials") or DEFAULT_TRIALS),
            max_concurrent_trials=int(data.get("max_concurrent_trials") or DEFAULT_CONCURRENCY),
            metric=str(data.get("metric") or "mae"),
            space=tuple((name, Dimension.from_dict(dim)) for name, dim in sorted(data["search_space"].items())),
            stop_bad_trials=bool(data.get("stop_bad_trials", True)),
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dimension_violations(path: str, dim: Any, algorithm: Algorithm, name: str) -> Iterator[Violation]:
    if not isinstance(dim, Mapping) or dim.get("type") not in KINDS:
        yield Violation(path, f'must be an object with "type": one of {", ".join(KINDS)}')
        return
    param = algorithm.params[name]
    kind = dim["type"]
    if kind == "choice":
        values = dim.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CHOICES:
            yield Violation(f"{path}.values", f"must be a list of 1 to {MAX_CHOICES} values")
            return
        for i, value in enumerate(values):
            if (v := param.check(f"{path}.values[{i}]", value)) is not None:
                yield v
        return
    extra = set(dim) - {"type", "lower", "upper"}
    if extra:
        yield Violation(path, f"has fields {sorted(extra)} that a {kind} range does not take")
    if not (_number(dim.get("lower")) and _number(dim.get("upper"))) or dim["lower"] >= dim["upper"]:
        yield Violation(path, "needs numbers lower < upper")
        return
    lower, upper = float(dim["lower"]), float(dim["upper"])
    if kind == "randint" and not (lower.is_integer() and upper.is_integer()):
        yield Violation(path, "randint takes whole-number bounds")
    if kind in ("uniform", "loguniform") and param.kind is int:
        yield Violation(path, f"{name} is a whole number: use randint or choice")
    if kind == "loguniform" and lower <= 0:
        yield Violation(f"{path}.lower", "must be greater than 0 for loguniform")
    for bound, value in (("lower", lower), ("upper", upper)):
        if (v := param.check(f"{path}.{bound}", int(value) if kind == "randint" else value)) is not None:
            yield v


def tuning_violations(config: Mapping[str, Any], algorithm: Algorithm | None, model_type: str | None) -> Iterator[Violation]:
    """Each problem of the ``tuning`` section (none when there is none)."""
    tuning = config.get("tuning")
    if not tuning:
        return
    if not isinstance(tuning, Mapping):
        yield Violation("tuning", "must be an object")
        return
    if model_type != "forecast":
        yield Violation("tuning", "applies to forecasting (model_type forecast)")
    yield from _search_settings(tuning)
    space = tuning.get("search_space")
    if not isinstance(space, Mapping) or not space:
        yield Violation("tuning.search_space", "is required: hyperparameter -> its range")
        return
    if algorithm is None:
        return  # the algorithm's own violation says why
    fixed = config.get("hyperparameters") or {}
    for name, dim in space.items():
        path = f"tuning.search_space.{name}"
        if name not in algorithm.params:
            yield Violation(path, f"is not a hyperparameter of {algorithm.name}; known: {', '.join(algorithm.params)}")
        elif isinstance(fixed, Mapping) and name in fixed:
            yield Violation(path, "is also fixed in hyperparameters: give it one place")
        else:
            yield from _dimension_violations(path, dim, algorithm, name)


def _search_settings(tuning: Mapping[str, Any]) -> Iterator[Violation]:
    trials = tuning.get("num_trials", DEFAULT_TRIALS)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        yield Violation("tuning.num_trials", f"must be a whole number from 1 to {MAX_TRIALS}")
    concurrent = tuning.get("max_concurrent_trials", DEFAULT_CONCURRENCY)
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or not 1 <= concurrent <= MAX_TRIALS:
        yield Violation("tuning.max_concurrent_trials", f"must be a whole number from 1 to {MAX_TRIALS}")
    metric = tuning.get("metric", "mae")
    if metric not in METRICS:
        yield Violation("tuning.metric", f"{shown(metric)} is not one of {', '.join(METRICS)}")
    elif tuning.get("mode") not in (None, "", METRICS[metric]):
        yield Violation("tuning.mode", f"{metric} is {'maximised' if METRICS[metric] == 'max' else 'minimised'}: mode {METRICS[metric]}")
    stop = tuning.get("stop_bad_trials")
    if stop is not None and not isinstance(stop, bool):
        yield Violation("tuning.stop_bad_trials", "must be true or false")


def size_probe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters with every searched one at its largest, for the size checks."""
    hp = dict(config.get("hyperparameters") or {})
    for name, dim in ((config.get("tuning") or {}).get("search_space") or {}).items():
        try:
            hp[name] = Dimension.from_dict(dim).largest()
        except (KeyError, TypeError, ValueError):
            continue  # malformed: reported by tuning_violations
    return hp
