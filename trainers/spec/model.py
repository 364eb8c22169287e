"""The validated training specification and its one stored form.

A job's configuration takes one form inside the service: a :class:`TrainingSpec`, built
once (``trainers.spec.build``, which validates) when the job is created. What is stored
with the job and its model version, and what the API shows back, is the spec's canonical
form (:meth:`TrainingSpec.to_dict`: the guide's field names, defaults written in, times in
UTC); :meth:`TrainingSpec.from_dict` reads it back exactly, and :attr:`config_hash` is the
SHA-256 of it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from trainers.spec.resources import WorkerRequest, worker_request
from trainers.spec.tuning import Tuning


class ModelType(enum.StrEnum):
    FORECAST = "forecast"
    ANOMALY = "anomaly"


MODEL_TYPES = tuple(m.value for m in ModelType)
DEFAULT_TABLES = {ModelType.FORECAST: "load_forecasting", ModelType.ANOMALY: "anomaly_detection"}
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


@dataclass(frozen=True)
class TrainingSpec:
    model_type: ModelType
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
    tuning: Tuning | None = None  # a hyperparameter search before training
    workers: WorkerRequest | None = None  # distributed: data-parallel training on these Ray workers
    max_runtime_seconds: int | None = None  # the attempt's time limit (None: the server's default)

    @cached_property
    def lags(self) -> Mapping[str, tuple[str, int]]:
        """Lag features: feature -> (the column it lags, hours)."""
        return {f: (m["base"], int(m["hours"])) for f in self.features if (m := LAG.match(f))}

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

    def with_window(self, start: datetime, end: datetime) -> TrainingSpec:
        """The same model on another time window (to score a trained model on it)."""
        return dataclasses.replace(self, training_start=start, training_end=end)

    # --- the canonical form --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical form: what is stored and shown. Every default is written in, times
        are UTC without an offset (as the guide writes them), optional sections appear only
        when set."""
        out: dict[str, Any] = {
            "model_type": self.model_type.value,
            "algorithm": self.algorithm,
            "hyperparameters": dict(self.hyperparameters),
            "training_start": format_time(self.training_start),
            "training_end": format_time(self.training_end),
            "features": list(self.features),
            "target": self.target,
            "feature_table": self.feature_table,
            "validation_split": self.validation_split,
            "random_seed": self.random_seed,
        }
        if self.early_stopping_rounds is not None:
            out["early_stopping_rounds"] = self.early_stopping_rounds
        if self.max_runtime_seconds is not None:
            out["max_runtime_seconds"] = self.max_runtime_seconds
        options = {k: v for k, v in (("batch_size", self.batch_size), ("use_sample", self.use_sample)) if v is not None}
        if options:
            out["training_options"] = options
        if self.workers:
            out["distributed"] = True
            out["ray_config"] = self.workers.to_dict()
        elif self.use_gpu:
            out["ray_config"] = {"use_gpu": True}
        if self.label_column:
            out["label_column"] = self.label_column
        if self.backtest:
            out["backtest"] = {"folds": self.backtest[0], "horizon_hours": self.backtest[1]}
        if self.tuning:
            out["tuning"] = self.tuning.to_dict()
        return out

    @cached_property
    def config_hash(self) -> str:
        """SHA-256 of the canonical form: equal for two jobs that train the same model."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, model_type: str | None = None) -> TrainingSpec:
        """A spec from a configuration in the guide's shape that is known to be valid: the
        canonical form this class wrote (a stored job or model version), or a configuration
        ``trainers.spec.validate`` accepted. Nothing is checked here."""
        mt = ModelType(str(config.get("model_type") or model_type))
        options = config.get("training_options") or {}
        backtest = config.get("backtest")
        return cls(
            model_type=mt,
            algorithm=config["algorithm"],
            hyperparameters=dict(config.get("hyperparameters") or {}),
            training_start=parse_time(config["training_start"]),
            training_end=parse_time(config["training_end"]),
            features=tuple(config["features"]),
            target=config["target"],
            feature_table=config.get("feature_table") or DEFAULT_TABLES[mt],
            validation_split=float(config.get("validation_split", DEFAULT_VALIDATION_SPLIT)),
            random_seed=int(config.get("random_seed", DEFAULT_SEED)),
            early_stopping_rounds=config.get("early_stopping_rounds"),
            use_sample=options.get("use_sample"),
            batch_size=options.get("batch_size"),
            use_gpu=bool((config.get("ray_config") or {}).get("use_gpu")),
            label_column=config.get("label_column") or None,
            backtest=(backtest["folds"], backtest["horizon_hours"]) if backtest else None,
            tuning=Tuning.from_dict(config["tuning"]) if config.get("tuning") else None,
            workers=worker_request(config),
            max_runtime_seconds=config.get("max_runtime_seconds"),
        )


MIN_YEAR, MAX_YEAR = 1900, 2200  # times outside would overflow date arithmetic (lags, windows)


def parse_time(value: Any) -> datetime:
    """ISO 8601; a value without an offset is UTC (the guide writes "2024-01-01T00:00:00")."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be an ISO 8601 date-time such as 2024-01-01T00:00:00")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date-time such as 2024-01-01T00:00:00") from None
    try:
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value[:40]!r} is out of range in UTC") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"{value[:40]!r} is outside the years {MIN_YEAR}-{MAX_YEAR}")
    return parsed


def format_time(value: datetime) -> str:
    """UTC, without an offset: "2024-01-01T00:00:00" (fractions of a second when there are)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat()
