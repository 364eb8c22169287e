"""Checking a configuration: one checker per section of the guide's TrainingConfig.

``validate`` returns every violation, each with its field path relative to the config as
the guide's error details show it (``validation_split``, ``hyperparameters.learning_rate``);
``build`` returns a :class:`TrainingSpec` or raises ConfigValidationError. What an
algorithm allows (hyperparameters, tasks, early stopping, mini-batches, windows of rows) is
asked of the algorithm itself.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trainers import algorithms, preprocessors
from trainers.algorithms import REGRESSION, Algorithm
from trainers.errors import ConfigValidationError, Violation, shown
from trainers.spec import recipes
from trainers.spec.model import (
    DATA_CHECKS,
    DEFAULT_HORIZON_HOURS,
    DEFAULT_SEED,
    DEFAULT_VALIDATION_SPLIT,
    IDENT,
    MODEL_TYPES,
    ModelType,
    TrainingSpec,
    parse_time,
)
from trainers.spec.resources import ray_config_violations
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


@dataclass(frozen=True)
class _Read:
    """What later sections need of earlier ones, read once."""

    model_type: str | None  # the config's model_type, else the job's
    algorithm: Algorithm | None  # None when missing or unknown
    start: datetime | None  # None when missing or unreadable
    end: datetime | None

    @classmethod
    def of(cls, config: Config, model_type: str | None) -> _Read:
        name = config.get("algorithm")
        times: list[datetime | None] = []
        for key in ("training_start", "training_end"):
            try:
                times.append(parse_time(config.get(key)))
            except ValueError:
                times.append(None)
        return cls(
            model_type=config.get("model_type") or model_type,
            algorithm=algorithms.get(name) if isinstance(name, str) and name in algorithms.ALL else None,
            start=times[0],
            end=times[1],
        )


Check = Callable[[Config, _Read], Iterator[Violation]]


def _model_type(config: Config, read: _Read, job_model_type: str | None) -> Iterator[Violation]:
    mt = read.model_type
    if not mt:
        yield Violation("model_type", f"is required: one of {', '.join(MODEL_TYPES)}")
    elif mt not in MODEL_TYPES:
        yield Violation("model_type", f"{shown(mt)} is not one of {', '.join(MODEL_TYPES)}")
    elif job_model_type and config.get("model_type") and config["model_type"] != job_model_type:
        yield Violation("model_type", f"config says {shown(config['model_type'])} but the job says {shown(job_model_type)}")


def _algorithm(config: Config, read: _Read) -> Iterator[Violation]:
    name = config.get("algorithm") or ""
    if not name:
        yield Violation("algorithm", f"is required: one of {', '.join(algorithms.ALL)}")
    elif read.algorithm is None:
        yield Violation("algorithm", f"{shown(name)} is not one of {', '.join(algorithms.ALL)}")
    elif REGRESSION not in read.algorithm.tasks and read.model_type != ModelType.ANOMALY:
        yield Violation("algorithm", f"{name} detects anomalies: it needs model_type anomaly")
    else:
        yield from _hyperparameters(config, read.algorithm)


def _hyperparameters(config: Config, algorithm: Algorithm) -> Iterator[Violation]:
    hp = config.get("hyperparameters") or {}
    if not isinstance(hp, Mapping):
        yield Violation("hyperparameters", "must be an object of name: value")
        return
    for name, value in hp.items():
        if name not in algorithm.params:
            yield Violation(f"hyperparameters.{name}", f"is not a hyperparameter of {algorithm.name}; known: {', '.join(algorithm.params)}")
        elif (v := algorithm.params[name].check(f"hyperparameters.{name}", value)) is not None:
            yield v


def _model_size(config: Config, read: _Read) -> Iterator[Violation]:
    hp = config.get("hyperparameters") or {}
    if read.algorithm is None or not isinstance(hp, Mapping):
        return
    n_inputs = len(list(config.get("features") or [])) or 1
    searched = set((config.get("tuning") or {}).get("search_space") or {}) if isinstance(config.get("tuning"), Mapping) else set()
    for name, why in read.algorithm.size_violations(size_probe(config) if searched else hp, n_inputs):
        where = "tuning.search_space" if searched else "hyperparameters"
        yield Violation(f"{where}.{name}", why + (" (at the largest values searched)" if searched else ""))


def _tuning(config: Config, read: _Read) -> Iterator[Violation]:
    yield from tuning_violations(config, read.algorithm, read.model_type)


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


def _window(config: Config, read: _Read) -> Iterator[Violation]:
    yield from window_violations(config.get("training_start"), config.get("training_end"))


def _target_and_features(config: Config, read: _Read) -> Iterator[Violation]:
    target = config.get("target") or ""
    if not target:
        yield Violation("target", "is required (the column to predict, such as load)")
    elif not isinstance(target, str) or not IDENT.match(target):
        yield Violation("target", f"{shown(target)} is not a column name (lower-case letters, digits and _)")
    features = list(config.get("features") or [])
    if not features:
        yield Violation("features", "at least one feature is required")
    seen: set[str] = set()
    for i, name in enumerate(features):
        path = f"features[{i}]"
        if not isinstance(name, str) or not IDENT.match(name):
            yield Violation(path, f"{shown(name)} is not a column name (lower-case letters, digits and _)")
            continue
        if name in seen:
            yield Violation(path, f"{shown(name)} is listed twice")
        seen.add(name)
        if name == target:
            yield Violation(path, f"{shown(name)} is the target itself (target leakage)")
        elif (problem := recipes.size_problem(name, recipes.recipe(name))) is not None:
            yield Violation(path, problem)


MAX_HORIZON_HOURS = 24 * 30
MAX_HORIZONS = 8


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def _horizon(config: Config, read: _Read) -> Iterator[Violation]:  # noqa: PLR0912 - one case per field
    """forecast_horizon_hours, known_ahead, horizons, and the leakage they decide."""
    horizon = config.get("forecast_horizon_hours")
    horizon = DEFAULT_HORIZON_HOURS if horizon is None else horizon
    horizons = config.get("horizons") or []
    known = config.get("known_ahead")
    target = _target_name(config)
    if not _whole(horizon, 1, MAX_HORIZON_HOURS):
        yield Violation("forecast_horizon_hours", f"must be a whole number of hours from 1 to {MAX_HORIZON_HOURS}")
        return
    if (horizon != 1 or horizons) and read.model_type == ModelType.ANOMALY:
        yield Violation("forecast_horizon_hours", "applies to forecasting only")
        return
    if not isinstance(horizons, list) or len(horizons) > MAX_HORIZONS or not all(_whole(h, 1, MAX_HORIZON_HOURS) for h in horizons):
        yield Violation("horizons", f"must be a list of at most {MAX_HORIZONS} whole numbers of hours from 1 to {MAX_HORIZON_HOURS}")
        horizons = []
    if known is not None:
        if not isinstance(known, list) or not all(isinstance(k, str) and IDENT.match(k) for k in known):
            yield Violation("known_ahead", "must be a list of column names (lower-case letters, digits and _)")
            return
        if target in known:
            yield Violation("known_ahead", f"{shown(target)} is the target: it is never known ahead (leakage)")
    names = [f for f in config.get("features") or [] if isinstance(f, str) and IDENT.match(f) and f != target]
    known_set = _known_ahead(config, names, horizon)
    outputs, safe = _preprocessor_outputs(config)
    for i, name in enumerate(config.get("features") or []):
        if name not in names:
            continue
        r = recipes.recipe(name)
        if r.column in outputs:
            if horizon > safe:
                pre = config.get("preprocessor")
                why = f"preprocessor {pre}'s outputs are safe up to {safe} h ahead; the horizon is {horizon} h (leakage)"
                yield Violation(f"features[{i}]", f"{name}: {why}")
            continue
        if (leak := recipes.leakage(name, r, target=target, horizon=horizon, known_ahead=known_set)) is not None:
            yield Violation(f"features[{i}]", leak)
    for h in horizons:
        if not usable_at(config, names, h):
            yield Violation(
                "horizons", f"no feature is usable {h} h ahead (every one would be leakage); add calendar features or longer lags"
            )


def _target_name(config: Config) -> str:
    target = config.get("target")
    return target if isinstance(target, str) else ""


def _known_ahead(config: Config, names: Sequence[str], horizon: int) -> frozenset[str]:
    """TrainingSpec.known, on a config not yet checked."""
    known = config.get("known_ahead")
    declared = [k for k in known if isinstance(k, str)] if isinstance(known, list) else None
    return recipes.known_ahead(list(names), target=_target_name(config), horizon=horizon, declared=declared)


def usable_at(config: Config, names: Sequence[str], horizon: int) -> list[str]:
    """recipes.usable on a config not yet checked."""
    outputs, safe = _preprocessor_outputs(config)
    known = _known_ahead(config, names, horizon)
    return recipes.usable(list(names), target=_target_name(config), horizon=horizon, known_ahead=known, outputs=outputs, safe_hours=safe)


def _preprocessor_outputs(config: Config) -> tuple[frozenset[str], int]:
    name = config.get("preprocessor")
    found = preprocessors.installed().get(name) if isinstance(name, str) else None
    if found is None or found.preprocessor is None:
        return frozenset(), 0
    return frozenset(found.preprocessor.outputs), int(found.preprocessor.safe_horizon_hours)


def _preprocessor(config: Config, read: _Read) -> Iterator[Violation]:
    name = config.get("preprocessor")
    if name is None or name == "":
        return
    installed = preprocessors.installed()
    found = installed.get(name) if isinstance(name, str) else None
    if found is None:
        usable = ", ".join(sorted(n for n, p in installed.items() if p.preprocessor)) or "none are installed"
        yield Violation("preprocessor", f"{shown(name)} is not an installed preprocessor; installed: {usable}")
    elif found.problem:
        yield Violation("preprocessor", f"{name} ({found.target}) {found.problem}")


def _holidays(config: Config, read: _Read) -> Iterator[Violation]:
    spec = config.get("holidays")
    wants = [f for f in config.get("features") or [] if f in recipes.HOLIDAY_FEATURES]
    if not spec:
        if wants:
            yield Violation("holidays", f"{wants[0]} needs holidays.country (and optionally subdivision, timezone)")
        return
    if not isinstance(spec, Mapping):
        yield Violation("holidays", "must be an object {country, subdivision, timezone}")
        return
    for key in set(spec) - {"country", "subdivision", "timezone"}:
        yield Violation(f"holidays.{key}", "is not a field of holidays (country, subdivision, timezone)")
    import holidays as holiday_calendars  # the package, imported where used

    supported = holiday_calendars.list_supported_countries()
    country, subdivision, timezone = spec.get("country"), spec.get("subdivision"), spec.get("timezone", "UTC")
    if not isinstance(country, str) or country not in supported:
        yield Violation(
            "holidays.country", f"{shown(country)} is not a country the holidays package knows (ISO 3166 codes such as DE, US, GB)"
        )
    elif subdivision is not None and subdivision not in supported[country]:
        some = ", ".join(supported[country][:12]) or "none"
        yield Violation("holidays.subdivision", f"{shown(subdivision)} is not a subdivision of {country}; known: {some}")
    if not _is_timezone(timezone):
        yield Violation("holidays.timezone", f"{shown(timezone)} is not an IANA time zone such as Europe/Berlin")


def _is_timezone(name: Any) -> bool:
    import zoneinfo

    if not isinstance(name, str) or not name or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _data_checks(config: Config, read: _Read) -> Iterator[Violation]:
    checks = config.get("data_checks")
    if not checks:
        return
    if not isinstance(checks, Mapping):
        yield Violation("data_checks", "must be an object {max_gap_ratio, target_min, target_max, fail_on}")
        return
    for key in set(checks) - {"max_gap_ratio", "target_min", "target_max", "fail_on"}:
        yield Violation(f"data_checks.{key}", "is not a field of data_checks (max_gap_ratio, target_min, target_max, fail_on)")
    ratio = checks.get("max_gap_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0):
        yield Violation("data_checks.max_gap_ratio", "must be a fraction from 0.0 to 1.0")
    low, high = checks.get("target_min"), checks.get("target_max")
    for key, value in (("target_min", low), ("target_max", high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            yield Violation(f"data_checks.{key}", "must be a number")
    if isinstance(low, int | float) and isinstance(high, int | float) and low >= high:
        yield Violation("data_checks.target_max", "must be greater than target_min")
    fail_on = checks.get("fail_on") or []
    if not isinstance(fail_on, list):
        yield Violation("data_checks.fail_on", f"must be a list of check names: {', '.join(DATA_CHECKS)}")
        return
    for i, name in enumerate(fail_on):
        if name not in DATA_CHECKS:
            yield Violation(f"data_checks.fail_on[{i}]", f"{shown(name)} is not a check; known: {', '.join(DATA_CHECKS)}")


def _split_and_seed(config: Config, read: _Read) -> Iterator[Violation]:
    split = config.get("validation_split", DEFAULT_VALIDATION_SPLIT)
    if isinstance(split, bool) or not isinstance(split, int | float) or not 0.0 < split < 1.0:
        yield Violation("validation_split", "Must be between 0.0 and 1.0")
    seed = config.get("random_seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        yield Violation("random_seed", "must be a whole number from 0 to 2147483647")


def _early_stopping(config: Config, read: _Read) -> Iterator[Violation]:
    esr = config.get("early_stopping_rounds")
    if esr is None:
        return
    if isinstance(esr, bool) or not isinstance(esr, int) or esr < 1:
        yield Violation("early_stopping_rounds", "must be a whole number >= 1")
    elif read.algorithm is not None and not read.algorithm.early_stopping:
        yield Violation("early_stopping_rounds", f"{read.algorithm.name} has no early stopping (it trains in one pass); leave it unset")


def _max_runtime(config: Config, read: _Read) -> Iterator[Violation]:
    limit = config.get("max_runtime_seconds")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        yield Violation("max_runtime_seconds", "must be a whole number of seconds >= 1")


def _backtest(config: Config, read: _Read) -> Iterator[Violation]:
    backtest = config.get("backtest")
    if not backtest:
        return
    folds, horizon = backtest.get("folds", 0), backtest.get("horizon_hours", 0)
    if read.model_type != ModelType.FORECAST:
        yield Violation("backtest", "applies to forecasting only")
    if not isinstance(folds, int) or not 1 <= folds <= 20:
        yield Violation("backtest.folds", "must be a whole number from 1 to 20")
    if not isinstance(horizon, int) or not 1 <= horizon <= 24 * 366:
        yield Violation("backtest.horizon_hours", f"must be a whole number from 1 to {24 * 366}")
    elif (
        read.start
        and read.end
        and isinstance(folds, int)
        and folds >= 1
        and folds * horizon * 3600 >= (read.end - read.start).total_seconds() / 2
    ):
        yield Violation("backtest", "folds x horizon_hours must be less than half the training range")


def _label_column(config: Config, read: _Read) -> Iterator[Violation]:
    label = config.get("label_column") or ""
    if not label:
        return
    if read.model_type != ModelType.ANOMALY:
        yield Violation("label_column", "applies to anomaly detection only")
    elif not IDENT.match(label):
        yield Violation("label_column", f"{shown(label)} is not a column name (lower-case letters, digits and _)")
    elif label == config.get("target") or label in list(config.get("features") or []):
        yield Violation("label_column", f"{shown(label)} is the target or a feature (label leakage)")


def _feature_table(config: Config, read: _Read) -> Iterator[Violation]:
    table = config.get("feature_table") or ""
    if table and not IDENT.match(table):
        yield Violation("feature_table", f"{shown(table)} is not a table name (lower-case letters, digits and _)")


def _distribution(config: Config, read: _Read) -> Iterator[Violation]:
    malformed = list(ray_config_violations(config))
    yield from malformed
    distributed = config.get("distributed")
    if distributed is not None and not isinstance(distributed, bool):
        yield Violation("distributed", "must be true or false")
    elif distributed:
        algorithm = read.algorithm
        if algorithm is not None and not algorithm.data_parallel:
            users = ", ".join(algorithms.with_trait("data_parallel"))
            yield Violation("distributed", f"{algorithm.name} trains on one node; distributed training applies to {users}")
    elif isinstance(config.get("ray_config"), Mapping) and set(config["ray_config"]) - {"use_gpu"}:
        yield Violation("ray_config", "num_workers, cpus_per_worker and memory_per_worker apply only with distributed=true")


MLFLOW_NAME_MAX, MLFLOW_TAGS_MAX, MLFLOW_TAG_KEY_MAX, MLFLOW_TAG_VALUE_MAX = 256, 50, 250, 5000
RESERVED_TAG_PREFIXES = ("aihub.", "mlflow.")  # the service's own tags, and MLflow's


def _mlflow(config: Config, read: _Read) -> Iterator[Violation]:
    tracking = config.get("mlflow_tracking")
    if tracking is None:  # {} (set, but empty) is checked: it names no experiment
        return
    if importlib.util.find_spec("mlflow") is None:
        yield Violation("mlflow_tracking", "MLflow is not installed on this server (pip install 'aihub-training[mlflow]'); leave it unset")
        return
    for key in tracking:
        if key not in ("experiment_name", "run_name", "tags"):
            yield Violation(f"mlflow_tracking.{key}", "is not a field of mlflow_tracking (experiment_name, run_name, tags)")
    for key, required in (("experiment_name", True), ("run_name", False)):
        value = tracking.get(key)
        if value is None or value == "":
            if required:
                yield Violation(f"mlflow_tracking.{key}", "is required")
        elif not isinstance(value, str) or len(value) > MLFLOW_NAME_MAX or not value.isprintable():
            yield Violation(f"mlflow_tracking.{key}", f"must be printable text of at most {MLFLOW_NAME_MAX} characters")
    yield from _mlflow_tags(tracking.get("tags") or {})


def _mlflow_tags(tags: Any) -> Iterator[Violation]:
    if not isinstance(tags, Mapping) or len(tags) > MLFLOW_TAGS_MAX:
        yield Violation("mlflow_tracking.tags", f"must be an object of at most {MLFLOW_TAGS_MAX} text values")
        return
    for key, value in tags.items():
        where = f"mlflow_tracking.tags.{str(key)[:60]}"
        if not isinstance(key, str) or not key or len(key) > MLFLOW_TAG_KEY_MAX or not key.isprintable():
            yield Violation(where, f"a tag name is printable text of 1-{MLFLOW_TAG_KEY_MAX} characters")
        elif key.startswith(RESERVED_TAG_PREFIXES):
            yield Violation(where, f"tags starting with {' or '.join(RESERVED_TAG_PREFIXES)} are set by the service and MLflow")
        if not isinstance(value, str) or len(value) > MLFLOW_TAG_VALUE_MAX:
            yield Violation(where, f"must be text of at most {MLFLOW_TAG_VALUE_MAX} characters")


def _training_options(config: Config, read: _Read) -> Iterator[Violation]:
    options = config.get("training_options") or {}
    algorithm = read.algorithm
    batch = options.get("batch_size")
    if batch is not None:
        if algorithm is None or not algorithm.minibatch:
            users = ", ".join(algorithms.with_trait("minibatch"))
            yield Violation(
                "training_options.batch_size",
                f"applies to the neural algorithms, which train in mini-batches ({users}), "
                f"not to {config.get('algorithm') or 'this algorithm'}",
            )
        elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            yield Violation("training_options.batch_size", "must be a whole number >= 1")
    sample = options.get("use_sample")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int | float) or not 0.0 < sample <= 1.0):
        yield Violation("training_options.use_sample", "must be a fraction greater than 0.0 and at most 1.0")
    elif sample is not None and sample < 1.0 and algorithm is not None and algorithm.context_rows({}) > 0:
        yield Violation(
            "training_options.use_sample", f"{algorithm.name} trains on windows of consecutive rows; sampling rows would break them"
        )


# In the order the violations are reported.
CHECKS: tuple[Check, ...] = (
    _algorithm,
    _model_size,
    _window,
    _target_and_features,
    _horizon,
    _holidays,
    _preprocessor,
    _data_checks,
    _split_and_seed,
    _early_stopping,
    _max_runtime,
    _backtest,
    _label_column,
    _feature_table,
    _distribution,
    _mlflow,
    _training_options,
    _tuning,
)


# Fields the checks read as lists or objects: anything else is refused first.
_TYPED: tuple[tuple[str, type], ...] = (
    ("features", list),
    ("known_ahead", list),
    ("horizons", list),
    ("hyperparameters", Mapping),
    ("holidays", Mapping),
    ("data_checks", Mapping),
    ("training_options", Mapping),
    ("backtest", Mapping),
    ("tuning", Mapping),
    ("ray_config", Mapping),
    ("mlflow_tracking", Mapping),
)


def validate(config: Config, *, model_type: str | None = None) -> list[Violation]:
    """Every problem in ``config`` (an empty list when it is valid). ``model_type`` is the
    job's, for a config that does not say its own."""
    unsafe = list(shape_violations(config))
    if unsafe:
        return unsafe
    mistyped = [
        Violation(key, "must be a list" if kind is list else "must be an object")
        for key, kind in _TYPED
        if config.get(key) is not None and not isinstance(config[key], kind)
    ]
    if mistyped:
        return mistyped
    read = _Read.of(config, model_type)
    out = list(_model_type(config, read, model_type))
    for check in CHECKS:
        out.extend(check(config, read))
    return out


def build(config: Config, *, model_type: str | None = None) -> TrainingSpec:
    """The validated spec, or ConfigValidationError listing every violation."""
    violations = validate(config, model_type=model_type)
    if violations:
        raise ConfigValidationError(violations)
    return TrainingSpec.from_dict(config, model_type=model_type)


def parse_window(start: Any, end: Any, *, names: Sequence[str], message: str) -> tuple[datetime, datetime]:
    """A time window given by the caller (``names`` are its fields), or ConfigValidationError."""
    violations = window_violations(start, end, names)
    if violations:
        raise ConfigValidationError(violations, message=message)
    return parse_time(start), parse_time(end)
