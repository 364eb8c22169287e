"""A job's hyperparameter search: the ``tuning`` section, read into :class:`Tuning` and
checked against the algorithm's own parameter ranges.

    "tuning": {"num_trials": 16, "max_concurrent_trials": 2, "metric": "mae",
               "search_space": {"learning_rate": {"type": "loguniform", "lower": 0.01, "upper": 0.3},
                                "num_leaves": {"type": "randint", "lower": 15, "upper": 127},
                                "n_estimators": {"type": "choice", "values": [200, 500, 1000]}}}

``randint`` includes both bounds. Trials are drawn by Optuna's TPE (``"sampler": "random"``
for plain random sampling). A trial is scored on ``folds`` rolling-origin tune slices (the
last one the tune part, each earlier one as long and just before it), each fitted on the
rows before its slice; the validation part is never seen while searching.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from trainers.algorithms import Algorithm
from trainers.errors import Violation
from trainers.spec.fields import REQUIRED, Checked, Flag, OneOf, Section, Whole, is_number, refuse

METRICS = {"mae": "min", "rmse": "min", "mape": "min", "r2_score": "max"}
KINDS = ("choice", "uniform", "loguniform", "randint")
MAX_TRIALS = 100
MAX_CHOICES = 50
DEFAULT_TRIALS = 16
DEFAULT_CONCURRENCY = 2
SAMPLERS = ("tpe", "random")  # Optuna's TPE (model-based, the default) or plain random sampling
MAX_FOLDS = 5
DEFAULT_FOLDS = 3  # rolling-origin tune slices a trial is scored on, averaged
_KIND_REASON = f'must be an object with "type": one of {", ".join(KINDS)}'


class Dimension(Section):
    """One hyperparameter's range: ``values`` for a choice, else ``lower``..``upper``
    (``randint`` includes both bounds)."""

    type: str
    lower: float | int | None = None
    upper: float | int | None = None
    values: tuple[Any, ...] | None = Field(None, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("type") not in KINDS:
            raise refuse(_KIND_REASON)
        kind = data["type"]
        if kind == "choice":
            return {"type": kind, "values": data.get("values")}  # a choice's bounds are not read
        extra = set(data) - {"type", "lower", "upper"}
        if extra:
            raise refuse(f"has fields {sorted(extra)} that a {kind} range does not take")
        lower: Any = data.get("lower")
        upper: Any = data.get("upper")
        if not (is_number(lower) and is_number(upper)) or lower >= upper:
            raise refuse("needs numbers lower < upper")
        if kind == "randint":
            if not (float(lower).is_integer() and float(upper).is_integer()):
                raise refuse("randint takes whole-number bounds")
            return {"type": kind, "lower": int(lower), "upper": int(upper)}
        return {"type": kind, "lower": float(lower), "upper": float(upper)}

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("type") != "choice":
            return None
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_CHOICES:
            raise refuse(f"must be a list of 1 to {MAX_CHOICES} values")
        return tuple(value)

    @property
    def kind(self) -> str:
        return self.type

    def largest(self) -> Any:
        return max(self.values or ()) if self.type == "choice" else self.upper


MAX_BUDGET_SECONDS = 7 * 24 * 3600


def built_in(algorithm: Algorithm, fixed: Mapping[str, Any]) -> dict[str, Dimension] | None:
    """The algorithm's own search space (Algorithm.search_space) without the hyperparameters
    ``fixed``; None when nothing is left."""
    space = {name: Dimension.model_validate(dim) for name, dim in algorithm.search_space.items() if name not in fixed}
    return dict(sorted(space.items())) or None


def _space(value: Any) -> Any:
    if value is None or value == {}:
        return None  # the algorithm's built-in space (TrainingSpec fills it in)
    if not isinstance(value, Mapping):
        raise ValueError("must be an object: hyperparameter -> its range")
    return dict(sorted(value.items()))


class Tuning(Section):
    """The ``tuning`` section: a search over ``search_space`` scored by ``metric`` on the
    tune part (the validation part is never seen while searching)."""

    num_trials: Annotated[int, Whole(1, MAX_TRIALS)] = DEFAULT_TRIALS
    max_concurrent_trials: Annotated[int, Whole(1, MAX_TRIALS)] = DEFAULT_CONCURRENCY
    metric: Annotated[str, OneOf(tuple(METRICS))] = "mae"
    mode: str = REQUIRED  # the metric's direction, written in
    # hyperparameter -> range; left out: the algorithm's built-in space (written in by TrainingSpec)
    search_space: Annotated[dict[str, Dimension] | None, Checked(_space, nullable=True)] = None
    stop_bad_trials: Annotated[bool, Flag] = True
    # stop starting trials after this long (the guide's time-constrained training); None: num_trials only
    time_budget_seconds: Annotated[int | None, Whole(10, MAX_BUDGET_SECONDS, unit="seconds", nullable=True)] = None
    # how the next trial's hyperparameters are drawn: tpe (Optuna's model-based sampler) or random
    sampler: Annotated[str, OneOf(SAMPLERS)] = "tpe"
    # rolling-origin folds: a trial is scored on this many consecutive tune slices, the last
    # ending where validation starts, each fitted on everything before it; the mean decides
    folds: Annotated[int, Whole(1, MAX_FOLDS)] = DEFAULT_FOLDS

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any, info: ValidationInfo) -> str:
        metric = info.data.get("metric")
        if metric is None:
            return ""  # the metric's own violation says why
        if value not in (None, "", METRICS[metric]):
            direction = "maximised" if METRICS[metric] == "max" else "minimised"
            raise refuse(f"{metric} is {direction}: mode {METRICS[metric]}")
        return METRICS[metric]

    @field_validator("stop_bad_trials", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        return True if value is None else value  # not given: stop them


def tuning_violations(tuning: Tuning | None, algorithm: Algorithm, model_type: str, fixed: Mapping[str, Any]) -> Iterator[Violation]:
    """What the ``tuning`` section asks that the job cannot do: a search for anomaly
    detection, a hyperparameter the algorithm lacks or that is also fixed, a range outside
    the algorithm's own limits."""
    if tuning is None:
        return
    if model_type != "forecast":
        yield Violation("tuning", "applies to forecasting (model_type forecast)")
    if not tuning.search_space:
        yield Violation("tuning.search_space", f"is required: {algorithm.name} has no built-in space left to search")
        return
    for name, dim in tuning.search_space.items():
        path = f"tuning.search_space.{name}"
        if name not in algorithm.params:
            yield Violation(path, f"is not a hyperparameter of {algorithm.name}; known: {', '.join(algorithm.params)}")
        elif name in fixed:
            yield Violation(path, "is also fixed in hyperparameters: give it one place")
        else:
            yield from _range_violations(path, dim, algorithm, name)


def _range_violations(path: str, dim: Dimension, algorithm: Algorithm, name: str) -> Iterator[Violation]:
    param = algorithm.params[name]
    if dim.type == "choice":
        for i, value in enumerate(dim.values or ()):
            if (v := param.check(f"{path}.values[{i}]", value)) is not None:
                yield v
        return
    if dim.type in ("uniform", "loguniform") and param.kind is int:
        yield Violation(path, f"{name} is a whole number: use randint or choice")
    if dim.type == "loguniform" and (dim.lower or 0) <= 0:
        yield Violation(f"{path}.lower", "must be greater than 0 for loguniform")
    for bound, value in (("lower", dim.lower), ("upper", dim.upper)):
        if (v := param.check(f"{path}.{bound}", value)) is not None:
            yield v


def size_probe(hyperparameters: Mapping[str, Any], tuning: Tuning | None) -> dict[str, Any]:
    """The hyperparameters with every searched one at its largest, for the size checks."""
    hp = dict(hyperparameters)
    for name, dim in ((tuning.search_space or {}) if tuning else {}).items():
        hp[name] = dim.largest()
    return hp
