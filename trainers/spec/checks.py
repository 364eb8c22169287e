"""Checking a configuration, in three passes.

1. ``shape_violations``: what makes a config unsafe to read at all (too deep, too long,
   non-finite numbers, control characters), on the raw JSON.
2. The model (:class:`TrainingSpec`): every field's type, limits and default, unknown fields
   refused; its errors become violations at the guide's paths (``features[6]``).
3. The checks here, on the validated model: what needs more than one field (leakage, the
   window's order, a search against the algorithm's ranges) or what is installed (the
   holidays package's countries, preprocessors). What an algorithm allows (hyperparameters,
   tasks, early stopping, mini-batches, windows of rows) is asked of the algorithm itself.

``validate`` returns every violation, each with its field path as the guide's error details
show it; ``build`` returns the :class:`TrainingSpec` or raises ConfigValidationError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from trainers import algorithms, preprocessors
from trainers.algorithms import REGRESSION
from trainers.errors import ConfigValidationError, Violation, shown
from trainers.spec import recipes
from trainers.spec.fields import violations_of
from trainers.spec.model import MODEL_TYPES, ModelType, TrainingSpec, installed_preprocessors, parse_time
from trainers.spec.tuning import size_probe, tuning_violations

Config = Mapping[str, Any]

# Bounds on the shape of any config, checked before anything else reads it.
MAX_DEPTH = 6  # nesting of objects and lists
MAX_STRING = 256  # characters of any string value or key
MAX_ITEMS = 200  # entries of any list or object (features, hyperparameters, tags)
MAX_NUMBER = 1e15  # magnitude of any number
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shape_violations(value: Any, path: str = "", depth: int = 0) -> Iterator[Violation]:  # noqa: PLR0912 - one case per JSON kind
    """What makes a config unsafe to read at all: too deep, too long, non-finite or huge
    numbers, control characters. Each is reported once, at its path."""
    where = path or "config"
    if depth > MAX_DEPTH:
        yield Violation(where, f"is nested more than {MAX_DEPTH} levels deep")
    elif isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            yield Violation(where, f"has {len(value)} entries; at most {MAX_ITEMS} are allowed")
            return
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_STRING or _CONTROL.search(key):
                yield Violation(where, f"has a key that is not a name: {shown(key)}")
                continue
            yield from shape_violations(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            yield Violation(where, f"has {len(value)} items; at most {MAX_ITEMS} are allowed")
            return
        for i, item in enumerate(value):
            yield from shape_violations(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            yield Violation(where, f"is {len(value)} characters long; at most {MAX_STRING} are allowed")
        elif _CONTROL.search(value):
            yield Violation(where, "holds a control character")
    elif isinstance(value, float) and not math.isfinite(value):
        yield Violation(where, "must be a finite number")
    elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        yield Violation(where, f"is out of range (at most {MAX_NUMBER:g} in magnitude)")


Check = Callable[[TrainingSpec], Iterator[Violation]]


def _algorithm(spec: TrainingSpec) -> Iterator[Violation]:
    algorithm = algorithms.get(spec.algorithm)
    if REGRESSION not in algorithm.tasks and spec.model_type != ModelType.ANOMALY:
        yield Violation("algorithm", f"{spec.algorithm} detects anomalies: it needs model_type anomaly")
        return
    for name, value in spec.hyperparameters.items():
        if name not in algorithm.params:
            yield Violation(f"hyperparameters.{name}", f"is not a hyperparameter of {algorithm.name}; known: {', '.join(algorithm.params)}")
        elif (v := algorithm.params[name].check(f"hyperparameters.{name}", value)) is not None:
            yield v


def _model_size(spec: TrainingSpec) -> Iterator[Violation]:
    searched = spec.tuning is not None
    probe = size_probe(spec.hyperparameters, spec.tuning)
    for name, why in algorithms.get(spec.algorithm).size_violations(probe, len(spec.features)):
        where = "tuning.search_space" if searched else "hyperparameters"
        yield Violation(f"{where}.{name}", why + (" (at the largest values searched)" if searched else ""))


def _window(spec: TrainingSpec) -> Iterator[Violation]:
    if spec.training_end <= spec.training_start:
        yield Violation("training_end", "must be after training_start")


def _features(spec: TrainingSpec) -> Iterator[Violation]:
    if not spec.features:
        if spec.model_type != ModelType.ANOMALY:
            yield Violation("features", "at least one feature is required")
        elif spec.algorithm in algorithms.ALL and algorithms.get(spec.algorithm).unlabelled_task != algorithms.RECONSTRUCTION:
            alone = ", ".join(n for n in algorithms.ALL if algorithms.get(n).unlabelled_task == algorithms.RECONSTRUCTION)
            yield Violation("features", f"[] (the value alone) needs a detector that scores the value itself ({alone}); or name features")
        return
    seen: set[str] = set()
    for i, name in enumerate(spec.features):
        path = f"features[{i}]"
        if name in seen:
            yield Violation(path, f"{shown(name)} is listed twice")
        seen.add(name)
        if name == spec.target:
            yield Violation(path, f"{shown(name)} is the target itself (target leakage)")
        elif (problem := recipes.size_problem(name, recipes.recipe(name), spec.units)) is not None:
            yield Violation(path, problem)


def _threshold(spec: TrainingSpec) -> Iterator[Violation]:
    t = spec.threshold
    if t is None:
        return
    if spec.model_type != ModelType.ANOMALY:
        yield Violation("threshold", "applies to anomaly detection only")
        return
    if t.method == "percentile" and t.value is not None and not 0 < t.value < 100:
        yield Violation("threshold.value", "a percentile is above 0 and below 100 (99: the top 1 % of training scores)")
    elif t.method == "contamination" and (t.value is None or not 0 < t.value <= 0.5):
        yield Violation("threshold.value", "the expected anomaly rate is required: above 0 and at most 0.5 (0.01: 1 % of rows)")
    elif t.method == "fixed" and (t.value is None or not math.isfinite(t.value)):
        yield Violation("threshold.value", "a fixed threshold is required: the score at or above which a row is flagged")
    elif t.method == "labelled" and t.value is not None:
        yield Violation("threshold.value", "is not used by labelled (the best F1 on the labelled tune window is)")


def _quantiles(spec: TrainingSpec) -> Iterator[Violation]:
    if spec.quantiles and spec.model_type != ModelType.FORECAST:
        yield Violation("quantiles", "applies to forecasting only")


def _units(spec: TrainingSpec) -> Iterator[Violation]:
    read = {r.column for r in spec.recipes.values() if r.column}
    for column in spec.units:
        if column not in read:
            yield Violation(f"units.{column}", f"no feature reads {column}: units name the columns degree hours are made of")


def _timezone(spec: TrainingSpec) -> Iterator[Violation]:
    if spec.timezone is not None and not _is_timezone(spec.timezone):
        yield Violation("timezone", f"{shown(spec.timezone)} is not an IANA time zone such as Europe/Berlin")


def _horizon(spec: TrainingSpec) -> Iterator[Violation]:
    """The leakage forecast_horizon_hours, known_ahead and horizons decide."""
    horizon, target = spec.forecast_horizon_hours, spec.target
    if (horizon != 1 or spec.horizons) and spec.model_type == ModelType.ANOMALY:
        yield Violation("forecast_horizon_hours", "applies to forecasting only")
        return
    if spec.known_ahead is not None and target in spec.known_ahead:
        yield Violation("known_ahead", f"{shown(target)} is the target: it is never known ahead (leakage)")
    names = [f for f in spec.features if f != target]
    known = spec.known(horizon)
    outputs, safe = _preprocessor_outputs(spec.preprocessor)
    for i, name in enumerate(spec.features):
        if name == target:
            continue
        r = recipes.recipe(name)
        if r.column in outputs:
            if horizon > safe:
                why = f"preprocessor {spec.preprocessor}'s outputs are safe up to {safe} h ahead; the horizon is {horizon} h (leakage)"
                yield Violation(f"features[{i}]", f"{name}: {why}")
            continue
        if (leak := recipes.leakage(name, r, target=target, horizon=horizon, known_ahead=known)) is not None:
            yield Violation(f"features[{i}]", leak)
    for h in spec.horizons:
        usable = recipes.usable(names, target=target, horizon=h, known_ahead=spec.known(h), outputs=outputs, safe_hours=safe)
        if not usable:
            yield Violation(
                "horizons", f"no feature is usable {h} h ahead (every one would be leakage); add calendar features or longer lags"
            )


def _preprocessor_outputs(name: str | None) -> tuple[frozenset[str], int]:
    found = preprocessors.installed().get(name) if name else None
    if found is None or found.preprocessor is None:
        return frozenset(), 0
    return frozenset(found.preprocessor.outputs), int(found.preprocessor.safe_horizon_hours)


def _preprocessor(spec: TrainingSpec) -> Iterator[Violation]:
    name = spec.preprocessor
    if name is None:
        return
    installed = preprocessors.installed()
    found = installed.get(name)
    if found is None:
        yield Violation("preprocessor", f"{shown(name)} is not an installed preprocessor; installed: {installed_preprocessors()}")
    elif found.problem:
        yield Violation("preprocessor", f"{name} ({found.target}) {found.problem}")


def _holidays(spec: TrainingSpec) -> Iterator[Violation]:
    wants = [f for f in spec.features if f in recipes.HOLIDAY_FEATURES]
    if spec.holidays is None:
        if wants:
            yield Violation("holidays", f"{wants[0]} needs holidays.country (and optionally subdivision, timezone)")
        return
    import holidays as holiday_calendars  # the package, imported where used

    supported = holiday_calendars.list_supported_countries()
    country, subdivision, timezone = spec.holidays.country, spec.holidays.subdivision, spec.holidays.timezone
    if country not in supported:
        yield Violation(
            "holidays.country", f"{shown(country)} is not a country the holidays package knows (ISO 3166 codes such as DE, US, GB)"
        )
    elif subdivision is not None and subdivision not in supported[country]:
        some = ", ".join(supported[country][:12]) or "none"
        yield Violation("holidays.subdivision", f"{shown(subdivision)} is not a subdivision of {country}; known: {some}")
    if not _is_timezone(timezone):
        yield Violation("holidays.timezone", f"{shown(timezone)} is not an IANA time zone such as Europe/Berlin")


def _is_timezone(name: str) -> bool:
    import zoneinfo

    if not name or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _early_stopping(spec: TrainingSpec) -> Iterator[Violation]:
    if spec.early_stopping_rounds is not None and not algorithms.get(spec.algorithm).early_stopping:
        yield Violation("early_stopping_rounds", f"{spec.algorithm} has no early stopping (it trains in one pass); leave it unset")


def _backtest(spec: TrainingSpec) -> Iterator[Violation]:
    backtest = spec.backtest
    if backtest is None:
        return
    if spec.model_type != ModelType.FORECAST:
        yield Violation("backtest", "applies to forecasting only")
    if backtest.folds * backtest.horizon_hours * 3600 >= (spec.training_end - spec.training_start).total_seconds() / 2:
        yield Violation("backtest", "folds x horizon_hours must be less than half the training range")


def _label_column(spec: TrainingSpec) -> Iterator[Violation]:
    label = spec.label_column
    if label is None:
        return
    if spec.model_type != ModelType.ANOMALY:
        yield Violation("label_column", "applies to anomaly detection only")
    elif label == spec.target or label in spec.features:
        yield Violation("label_column", f"{shown(label)} is the target or a feature (label leakage)")


def _distribution(spec: TrainingSpec) -> Iterator[Violation]:
    algorithm = algorithms.get(spec.algorithm)
    if spec.distributed and not algorithm.data_parallel:
        users = ", ".join(algorithms.with_trait("data_parallel"))
        yield Violation("distributed", f"{algorithm.name} trains on one node; distributed training applies to {users}")


def _training_options(spec: TrainingSpec) -> Iterator[Violation]:
    algorithm = algorithms.get(spec.algorithm)
    if spec.batch_size is not None and not algorithm.minibatch:
        users = ", ".join(algorithms.with_trait("minibatch"))
        yield Violation(
            "training_options.batch_size",
            f"applies to the neural algorithms, which train in mini-batches ({users}), not to {spec.algorithm}",
        )
    if spec.use_sample is not None and spec.use_sample < 1.0 and algorithm.context_rows({}) > 0:
        yield Violation(
            "training_options.use_sample", f"{algorithm.name} trains on windows of consecutive rows; sampling rows would break them"
        )


def _tuning(spec: TrainingSpec) -> Iterator[Violation]:
    yield from tuning_violations(spec.tuning, algorithms.get(spec.algorithm), spec.model_type, spec.hyperparameters)


# Names PostgreSQL gives every table's system columns: no feature table can have a column so
# named (an import refuses it), and reading one would read PostgreSQL's, not the user's.
SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"})


def _system_columns(spec: TrainingSpec) -> Iterator[Violation]:
    named = [spec.target, *(r.column for r in spec.recipes.values() if r.column), spec.label_column]
    for column in dict.fromkeys(c for c in named if c):
        if column in SYSTEM_COLUMNS:
            field = "target" if column == spec.target else "label_column" if column == spec.label_column else "features"
            yield Violation(field, f"{column!r} is the name of a PostgreSQL system column; a feature table's columns cannot be so named")


# In the order the violations are reported (the model's own come first, in field order),
# each with the fields it reads: a check is left out while one of them is itself refused.
CHECKS: tuple[tuple[Check, frozenset[str]], ...] = tuple(
    (check, frozenset(reads.split()))
    for check, reads in (
        (_algorithm, "algorithm model_type hyperparameters"),
        (_model_size, "algorithm hyperparameters features tuning"),
        (_window, "training_start training_end"),
        (_features, "features target units model_type algorithm"),
        (_threshold, "threshold model_type"),
        (_quantiles, "quantiles model_type"),
        (_units, "units features"),
        (_timezone, "timezone"),
        (_horizon, "forecast_horizon_hours horizons known_ahead features target preprocessor model_type"),
        (_holidays, "holidays features"),
        (_preprocessor, "preprocessor"),
        (_early_stopping, "early_stopping_rounds algorithm"),
        (_backtest, "backtest model_type training_start training_end"),
        (_label_column, "label_column model_type target features"),
        (_distribution, "distributed algorithm"),
        (_training_options, "training_options algorithm"),
        (_tuning, "tuning algorithm model_type hyperparameters"),
        (_system_columns, "features target label_column"),
    )
)


def _across_fields(spec: TrainingSpec, refused: frozenset[str] = frozenset()) -> list[Violation]:
    return [v for check, reads in CHECKS if not reads & refused for v in check(spec)]


def _read(config: Config, model_type: str | None) -> tuple[TrainingSpec | None, list[Violation]]:
    """The spec, or why the config is not one."""
    unsafe = list(shape_violations(config))
    if unsafe:
        return None, unsafe
    own, job = config.get("model_type"), str(model_type or "")
    out = []
    if job and own in MODEL_TYPES and own != job:
        out.append(Violation("model_type", f"config says {own!r} but the job says {job!r}"))
    context = {"model_type": job or None}
    try:
        spec = TrainingSpec.model_validate(config, context=context)
    except ValidationError as exc:
        out += violations_of(exc, TrainingSpec)
        # The checks across fields still run on the rest, where the refused fields have
        # defaults (every problem at once); a refused required field stops them.
        refused = frozenset(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        try:
            rest = TrainingSpec.model_validate({k: v for k, v in config.items() if k not in refused}, context=context)
        except ValidationError:
            return None, out
        return None, out + _across_fields(rest, refused)
    return spec, out + _across_fields(spec)


def validate(config: Config, *, model_type: str | None = None) -> list[Violation]:
    """Every problem in ``config`` (an empty list when it is valid). ``model_type`` is the
    job's, for a config that does not say its own. A config whose fields do not fit the
    model gets those violations; the checks across fields run once every field fits."""
    return _read(config, model_type)[1]


def build(config: Config, *, model_type: str | None = None) -> TrainingSpec:
    """The validated spec, or ConfigValidationError listing every violation."""
    spec, violations = _read(config, model_type)
    if violations or spec is None:
        raise ConfigValidationError(violations)
    return spec


def window_violations(start: Any, end: Any, names: Sequence[str] = ("training_start", "training_end")) -> list[Violation]:
    """A time window's problems: each end readable, the end after the start."""
    out, parsed = [], []
    for name, value in zip(names, (start, end), strict=True):
        try:
            parsed.append(parse_time(value))
        except ValueError as exc:
            out.append(Violation(name, str(exc)))
    if len(parsed) == 2 and parsed[1] <= parsed[0]:
        out.append(Violation(names[1], f"must be after {names[0]}"))
    return out


def parse_window(start: Any, end: Any, *, names: Sequence[str], message: str) -> tuple[datetime, datetime]:
    """A time window given by the caller (``names`` are its fields), or ConfigValidationError."""
    violations = window_violations(start, end, names)
    if violations:
        raise ConfigValidationError(violations, message=message)
    return parse_time(start), parse_time(end)
