"""The validated training specification, built from the guide's TrainingConfig.

``validate`` returns every violation (field path relative to the config, as the guide's
error details show it: ``validation_split``, ``hyperparameters.learning_rate``);
``build`` returns a :class:`TrainingSpec` or raises ConfigValidationError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trainers import algorithms
from trainers.errors import ConfigValidationError, Violation

MODEL_TYPES = ("forecast", "anomaly")
DEFAULT_TABLES = {"forecast": "load_forecasting", "anomaly": "anomaly_detection"}
DEFAULT_VALIDATION_SPLIT = 0.2
DEFAULT_SEED = 42

# Derived from the timestamp, so a feature table needs no such columns.
CALENDAR_FEATURES = (
    "hour_of_day",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "week_of_year",
    "month",
    "quarter",
    "is_weekend",
)
LAG = re.compile(r"^(?P<base>[a-z_][a-z0-9_]*?)_lag_(?P<hours>\d+)$")
IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_LAG_HOURS = 24 * 366
NEURAL = ("mlp", "lstm")


@dataclass(frozen=True)
class TrainingSpec:
    model_type: str
    algorithm: str
    hyperparameters: Mapping[str, Any]
    training_start: datetime
    training_end: datetime
    features: tuple[str, ...]
    target: str
    feature_table: str
    validation_split: float = DEFAULT_VALIDATION_SPLIT
    random_seed: int = DEFAULT_SEED
    early_stopping_rounds: int | None = None
    use_sample: float | None = None
    batch_size: int | None = None
    use_gpu: bool = False
    label_column: str | None = None
    backtest: tuple[int, int] | None = None  # (folds, horizon hours)
    lags: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # feature -> (column, hours)

    def table_columns(self) -> list[str]:
        """The columns to read from the feature table: the target, the plain features and
        the columns lags are taken from."""
        wanted = [self.target]
        for f in self.features:
            if f in CALENDAR_FEATURES:
                continue
            wanted.append(self.lags[f][0] if f in self.lags else f)
        if self.label_column:
            wanted.append(self.label_column)
        return list(dict.fromkeys(wanted))


def parse_time(value: Any) -> datetime:
    """ISO 8601; a value without an offset is UTC (the guide writes "2024-01-01T00:00:00")."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be an ISO 8601 date-time such as 2024-01-01T00:00:00")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time such as 2024-01-01T00:00:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _not_available(what: str) -> str:
    return f"{what} is not available yet in this release; leave it unset"


def validate(config: Mapping[str, Any], *, model_type: str | None = None) -> list[Violation]:
    """Every problem in ``config`` (an empty list when it is valid)."""
    out: list[Violation] = []
    add = lambda f, d: out.append(Violation(f, d))  # noqa: E731

    mt = config.get("model_type") or model_type
    if not mt:
        add("model_type", f"is required: one of {', '.join(MODEL_TYPES)}")
    elif mt not in MODEL_TYPES:
        add("model_type", f"{mt!r} is not one of {', '.join(MODEL_TYPES)}")
    elif model_type and config.get("model_type") and config["model_type"] != model_type:
        add("model_type", f"config says {config['model_type']!r} but the job says {model_type!r}")

    algo = config.get("algorithm") or ""
    if not algo:
        add("algorithm", f"is required: one of {', '.join(algorithms.ALL)}")
    elif algo not in algorithms.ALL:
        add("algorithm", f"{algo!r} is not one of {', '.join(algorithms.ALL)}")
    elif algo == "isolation_forest" and mt != "anomaly":
        add("algorithm", "isolation_forest detects anomalies: it needs model_type anomaly")
    else:
        params = algorithms.params_of(algo)
        hp = config.get("hyperparameters") or {}
        if not isinstance(hp, Mapping):
            add("hyperparameters", "must be an object of name: value")
        else:
            for name, value in hp.items():
                if name not in params:
                    add(f"hyperparameters.{name}", f"is not a hyperparameter of {algo}; known: {', '.join(params)}")
                elif (v := params[name].check(f"hyperparameters.{name}", value)) is not None:
                    out.append(v)

    start = end = None
    for key in ("training_start", "training_end"):
        try:
            parsed = parse_time(config.get(key))
        except ValueError as exc:
            add(key, str(exc))
            continue
        if key == "training_start":
            start = parsed
        else:
            end = parsed
    if start and end and end <= start:
        add("training_end", "must be after training_start")

    target = config.get("target") or ""
    if not target:
        add("target", "is required (the column to predict, such as load)")
    elif not IDENT.match(target):
        add("target", f"{target!r} is not a column name (lower-case letters, digits and _)")

    features = list(config.get("features") or [])
    if not features:
        add("features", "at least one feature is required")
    seen: set[str] = set()
    for i, name in enumerate(features):
        path = f"features[{i}]"
        if name in seen:
            add(path, f"{name!r} is listed twice")
        seen.add(name)
        if not isinstance(name, str) or not IDENT.match(name):
            add(path, f"{name!r} is not a column name (lower-case letters, digits and _)")
        elif name == target:
            add(path, f"{name!r} is the target itself (target leakage)")
        elif (m := LAG.match(name)) is not None:
            hours = int(m["hours"])
            if hours == 0:
                add(path, f"{name!r} is a lag of 0 hours, the current value itself (target leakage)")
            elif hours > MAX_LAG_HOURS:
                add(path, f"{name!r}: lags are limited to {MAX_LAG_HOURS} hours")

    split = config.get("validation_split", DEFAULT_VALIDATION_SPLIT)
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0.0 < split < 1.0:
        add("validation_split", "Must be between 0.0 and 1.0")

    seed = config.get("random_seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        add("random_seed", "must be a whole number from 0 to 2147483647")

    esr = config.get("early_stopping_rounds")
    if esr is not None and (isinstance(esr, bool) or not isinstance(esr, int) or esr < 1):
        add("early_stopping_rounds", "must be a whole number >= 1")
    elif esr is not None and algo in algorithms.ALL and not algorithms.get(algo).early_stopping:
        add("early_stopping_rounds", f"{algo} has no early stopping (it trains in one pass); leave it unset")

    backtest = config.get("backtest")
    if backtest:
        folds, horizon = backtest.get("folds", 0), backtest.get("horizon_hours", 0)
        if mt != "forecast":
            add("backtest", "applies to forecasting only")
        if not isinstance(folds, int) or not 1 <= folds <= 20:
            add("backtest.folds", "must be a whole number from 1 to 20")
        if not isinstance(horizon, int) or not 1 <= horizon <= 24 * 366:
            add("backtest.horizon_hours", f"must be a whole number from 1 to {24 * 366}")
        elif start and end and isinstance(folds, int) and folds >= 1 and folds * horizon * 3600 >= (end - start).total_seconds() / 2:
            add("backtest", "folds x horizon_hours must be less than half the training range")

    label = config.get("label_column") or ""
    if label:
        if mt != "anomaly":
            add("label_column", "applies to anomaly detection only")
        elif not IDENT.match(label):
            add("label_column", f"{label!r} is not a column name (lower-case letters, digits and _)")
        elif label == target or label in features:
            add("label_column", f"{label!r} is the target or a feature (label leakage)")

    table = config.get("feature_table") or ""
    if table and not IDENT.match(table):
        add("feature_table", f"{table!r} is not a table name (lower-case letters, digits and _)")

    if config.get("distributed"):
        add("distributed", _not_available("distributed training"))
    ray_config = dict(config.get("ray_config") or {})
    ray_config.pop("use_gpu", None)
    if ray_config:
        add(
            "ray_config",
            "num_workers, cpus_per_worker and memory_per_worker apply only with distributed=true; "
            + _not_available("distributed training"),
        )
    if config.get("mlflow_tracking"):
        add("mlflow_tracking", _not_available("MLflow tracking"))
    options = config.get("training_options") or {}
    batch = options.get("batch_size")
    if batch is not None:
        if algo not in NEURAL:
            add("training_options.batch_size", f"applies to the neural algorithms (mlp, lstm), not to {algo or 'this algorithm'}")
        elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            add("training_options.batch_size", "must be a whole number >= 1")
    sample = options.get("use_sample")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0.0 < sample <= 1.0):
        add("training_options.use_sample", "must be a fraction greater than 0.0 and at most 1.0")
    elif sample is not None and sample < 1.0 and algo == "lstm":
        add("training_options.use_sample", "lstm trains on windows of consecutive rows; sampling rows would break them")
    return out


def build(config: Mapping[str, Any], *, model_type: str | None = None) -> TrainingSpec:
    violations = validate(config, model_type=model_type)
    if violations:
        raise ConfigValidationError(violations)
    mt = config.get("model_type") or model_type
    features = tuple(config["features"])
    lags = {f: (m["base"], int(m["hours"])) for f in features if (m := LAG.match(f))}
    return TrainingSpec(
        model_type=mt,
        algorithm=config["algorithm"],
        hyperparameters=dict(config.get("hyperparameters") or {}),
        training_start=parse_time(config["training_start"]),
        training_end=parse_time(config["training_end"]),
        features=features,
        target=config["target"],
        feature_table=config.get("feature_table") or DEFAULT_TABLES[mt],
        validation_split=float(config.get("validation_split", DEFAULT_VALIDATION_SPLIT)),
        random_seed=int(config.get("random_seed", DEFAULT_SEED)),
        early_stopping_rounds=config.get("early_stopping_rounds"),
        use_sample=(config.get("training_options") or {}).get("use_sample"),
        batch_size=(config.get("training_options") or {}).get("batch_size"),
        use_gpu=bool((config.get("ray_config") or {}).get("use_gpu")),
        label_column=config.get("label_column") or None,
        backtest=(config["backtest"]["folds"], config["backtest"]["horizon_hours"]) if config.get("backtest") else None,
        lags=lags,
    )


def effective_config(config: Mapping[str, Any], spec: TrainingSpec) -> dict[str, Any]:
    """The config as submitted, with the defaults the job will use written in."""
    out = dict(config)
    out.update(
        model_type=spec.model_type,
        feature_table=spec.feature_table,
        validation_split=spec.validation_split,
        random_seed=spec.random_seed,
    )
    return out
