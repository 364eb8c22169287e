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
from typing import TYPE_CHECKING, Any

from trainers.spec.recipes import LAGGED, Recipe, known_ahead, recipe, usable
from trainers.spec.resources import WorkerRequest, worker_request

if TYPE_CHECKING:  # trainers.preprocessors is imported only when a job names one
    from trainers.preprocessors import Preprocessor
from trainers.spec.tuning import Tuning


class ModelType(enum.StrEnum):
    FORECAST = "forecast"
    ANOMALY = "anomaly"


MODEL_TYPES = tuple(m.value for m in ModelType)
DEFAULT_TABLES = {ModelType.FORECAST: "load_forecasting", ModelType.ANOMALY: "anomaly_detection"}
DEFAULT_VALIDATION_SPLIT = 0.2
DEFAULT_SEED = 42

IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_HORIZON_HOURS = 1


@dataclass(frozen=True)
class Holidays:
    """Where holiday flags come from: a country (ISO 3166 code, as the ``holidays`` package
    knows it), optionally a subdivision, and the time zone whose local date is looked up."""

    country: str
    subdivision: str | None = None
    timezone: str = "UTC"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"country": self.country, "timezone": self.timezone}
        if self.subdivision:
            out["subdivision"] = self.subdivision
        return out


@dataclass(frozen=True)
class MlflowTracking:
    """The guide's mlflow_tracking: where each attempt is logged in MLflow."""

    experiment_name: str
    run_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"experiment_name": self.experiment_name}
        if self.run_name:
            out["run_name"] = self.run_name
        if self.tags:
            out["tags"] = dict(self.tags)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MlflowTracking:
        return cls(str(data["experiment_name"]), data.get("run_name") or None, tuple(sorted((data.get("tags") or {}).items())))


DATA_CHECKS = ("gaps", "duplicates", "constant_columns", "missing_columns", "nonfinite", "out_of_range")


@dataclass(frozen=True)
class DataChecks:
    """What data_loading refuses instead of warning about: the checks named in ``fail_on``
    fail the job (gaps: when their share of the hourly index exceeds ``max_gap_ratio``);
    ``target_min`` / ``target_max`` bound the target (out_of_range)."""

    max_gap_ratio: float | None = None
    target_min: float | None = None
    target_max: float | None = None
    fail_on: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v
            for k, v in (("max_gap_ratio", self.max_gap_ratio), ("target_min", self.target_min), ("target_max", self.target_max))
            if v is not None
        }
        if self.fail_on:
            out["fail_on"] = list(self.fail_on)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataChecks:
        fail_on = tuple(raw.get("fail_on") or ())
        if raw.get("max_gap_ratio") is not None and "gaps" not in fail_on:
            fail_on = (*fail_on, "gaps")  # a gap limit is a reason to fail
        bound = raw.get("target_min") is not None or raw.get("target_max") is not None
        if bound and "out_of_range" not in fail_on:
            fail_on = (*fail_on, "out_of_range")
        return cls(
            max_gap_ratio=raw.get("max_gap_ratio"),
            target_min=raw.get("target_min"),
            target_max=raw.get("target_max"),
            fail_on=fail_on,
        )


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
    forecast_horizon_hours: int = DEFAULT_HORIZON_HOURS  # the model forecasts this far past its origin
    known_ahead: tuple[str, ...] | None = None  # columns whose value for the target hour exists at the origin
    horizons: tuple[int, ...] = ()  # also score direct models at these horizons (mae_h24, ...)
    holidays: Holidays | None = None  # where is_holiday & co. come from
    data_checks: DataChecks | None = None  # data_loading's checks that fail the job
    preprocessor: str | None = None  # an installed preprocessor (entry point aihub.preprocessors)
    mlflow_tracking: MlflowTracking | None = None  # log each attempt in MLflow (not part of the config hash)

    @cached_property
    def recipes(self) -> Mapping[str, Recipe]:
        """How each feature is made (trainers.spec.recipes)."""
        return {f: recipe(f) for f in self.features}

    @cached_property
    def lags(self) -> Mapping[str, tuple[str, int]]:
        """Lag features: feature -> (the column it lags, hours)."""
        return {f: (r.column, r.hours) for f, r in self.recipes.items() if r.kind == LAGGED and r.column}

    def known(self, horizon: int | None = None) -> frozenset[str]:
        """The columns known ahead (trainers.spec.recipes): ``known_ahead`` when given;
        otherwise, one hour ahead, every plain feature column but the target."""
        return known_ahead(self.features, target=self.target, horizon=horizon or self.forecast_horizon_hours, declared=self.known_ahead)

    def table_columns(self) -> list[str]:
        """The columns to read from the feature table: the target, the columns features are
        made of (a preprocessor's outputs aside) and the preprocessor's inputs."""
        pre = self._preprocessor()
        made = frozenset(pre.outputs) if pre else frozenset()
        wanted = [self.target]
        wanted += [r.column for r in self.recipes.values() if r.column and r.column not in made]
        if self.label_column:
            wanted.append(self.label_column)
        return list(dict.fromkeys([*wanted, *(pre.inputs if pre else ())]))

    def _preprocessor(self) -> Preprocessor | None:
        """The installed preprocessor the spec names, if any."""
        if not self.preprocessor:
            return None
        from trainers import preprocessors  # entry points are read only when a job names one

        return preprocessors.get(self.preprocessor)

    def usable_at(self, horizon: int) -> tuple[str, ...]:
        """The features a direct model for ``horizon`` may use (recipes.usable)."""
        pre = self._preprocessor()
        outputs, safe = (frozenset(pre.outputs), int(pre.safe_horizon_hours)) if pre else (frozenset(), 0)
        known = self.known(horizon)
        return tuple(usable(self.features, target=self.target, horizon=horizon, known_ahead=known, outputs=outputs, safe_hours=safe))

    def history_hours(self) -> int:
        """The longest look back of any feature from its target hour (horizon included)."""
        horizon, known = self.forecast_horizon_hours, self.known()
        out = [r.history_hours + (0 if r.column in known else horizon) for r in self.recipes.values() if r.history_hours]
        return max([0, *out])

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
        out.update(self._forecasting_dict())
        if self.mlflow_tracking:
            out["mlflow_tracking"] = self.mlflow_tracking.to_dict()
        return out

    def _forecasting_dict(self) -> dict[str, Any]:
        """The horizon, features and data sections of the canonical form, when set (so a
        config without them keeps the form, and the hash, it had before they existed)."""
        out: dict[str, Any] = {}
        if self.forecast_horizon_hours != DEFAULT_HORIZON_HOURS:
            out["forecast_horizon_hours"] = self.forecast_horizon_hours
        if self.known_ahead is not None:
            out["known_ahead"] = list(self.known_ahead)
        if self.horizons:
            out["horizons"] = list(self.horizons)
        if self.holidays:
            out["holidays"] = self.holidays.to_dict()
        if self.data_checks:
            out["data_checks"] = self.data_checks.to_dict()
        if self.preprocessor:
            out["preprocessor"] = self.preprocessor
        return out

    @cached_property
    def config_hash(self) -> str:
        """SHA-256 of the canonical form: equal for two jobs that train the same model (where
        they are tracked is not part of it)."""
        form = self.to_dict()
        form.pop("mlflow_tracking", None)
        canonical = json.dumps(form, sort_keys=True, separators=(",", ":"))
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
            forecast_horizon_hours=int(config.get("forecast_horizon_hours") or DEFAULT_HORIZON_HOURS),
            known_ahead=tuple(config["known_ahead"]) if config.get("known_ahead") is not None else None,
            horizons=tuple(sorted({int(h) for h in config.get("horizons") or ()})),
            holidays=Holidays(**holidays) if (holidays := config.get("holidays")) else None,
            data_checks=DataChecks.from_dict(config["data_checks"]) if config.get("data_checks") else None,
            preprocessor=config.get("preprocessor") or None,
            mlflow_tracking=MlflowTracking.from_dict(config["mlflow_tracking"]) if config.get("mlflow_tracking") else None,
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
