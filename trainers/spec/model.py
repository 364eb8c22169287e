"""The job config, declared once: the pydantic models of the guide's TrainingConfig.

A job's configuration takes one form inside the service: a :class:`TrainingSpec`, built
once (``trainers.spec.build``, which also runs the checks that need more than one field)
when the job is created. Each field states its type, default, limits and the reason it
refuses a value with (:mod:`trainers.spec.fields`); unknown fields are refused. What is
stored with the job and its model version, and what the API shows back, is the spec's
canonical form (:meth:`TrainingSpec.to_dict`: pydantic's dump of the model: the guide's field
names, defaults written in, times in UTC, optional sections only when set);
:meth:`TrainingSpec.from_dict` reads it back, and :attr:`config_hash` is the SHA-256 of it.
The API's TrainingConfig message has the same fields by the same names (a test holds them
equal), so the proto <-> spec mapping is json_format's, field for field.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationInfo, field_serializer, field_validator

from trainers import algorithms
from trainers.errors import shown
from trainers.spec.fields import (
    IDENT,
    REQUIRED,
    Checked,
    Flag,
    ListOf,
    Name,
    NoneIfEmpty,
    NoSection,
    Number,
    OneOf,
    Section,
    Text,
    Unset,
    Whole,
    is_whole,
    refuse,
)
from trainers.spec.recipes import LAGGED, Recipe, known_ahead, recipe, usable
from trainers.spec.resources import RayConfig, WorkerRequest
from trainers.spec.tuning import Tuning, built_in

if TYPE_CHECKING:  # trainers.preprocessors is imported only when a job names one
    from trainers.preprocessors import Preprocessor

__all__ = ["IDENT", "DataChecks", "Holidays", "MlflowTracking", "ModelType", "TrainingSpec"]


class ModelType(enum.StrEnum):
    FORECAST = "forecast"
    ANOMALY = "anomaly"


MODEL_TYPES = tuple(m.value for m in ModelType)
DEFAULT_TABLES = {ModelType.FORECAST: "load_forecasting", ModelType.ANOMALY: "anomaly_detection"}
DEFAULT_VALIDATION_SPLIT = 0.2
DEFAULT_SEED = 42
DEFAULT_HORIZON_HOURS = 1
MAX_HORIZON_HOURS = 24 * 30
MAX_HORIZONS = 8
MAX_BACKTEST_HOURS = 24 * 366
DATA_CHECKS = ("gaps", "duplicates", "constant_columns", "missing_columns", "nonfinite", "out_of_range")
MLFLOW_NAME_MAX, MLFLOW_TAGS_MAX, MLFLOW_TAG_KEY_MAX, MLFLOW_TAG_VALUE_MAX = 256, 50, 250, 5000
RESERVED_TAG_PREFIXES = ("aihub.", "mlflow.")  # the service's own tags, and MLflow's
COLUMN_NAMES = "must be a list of column names (lower-case letters, digits and _)"
TEMPERATURE_UNITS = ("C", "F")


def _country(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a country the holidays package knows (ISO 3166 codes such as DE, US, GB)")
    return value


def _zone_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not an IANA time zone such as Europe/Berlin")
    return value


class Holidays(Section):
    """Where holiday flags come from: a country (ISO 3166 code, as the ``holidays`` package
    knows it), optionally a subdivision, and the time zone whose local date is looked up."""

    country: Annotated[str, Checked(_country)] = REQUIRED  # known to the package: checks._holidays
    subdivision: Annotated[str | None, Unset] = None
    timezone: Annotated[str, Checked(_zone_name)] = "UTC"  # an IANA zone: checks._holidays


def _tag_name(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MLFLOW_TAG_KEY_MAX or not key.isprintable():
        raise ValueError(f"a tag name is printable text of 1-{MLFLOW_TAG_KEY_MAX} characters")
    if key.startswith(RESERVED_TAG_PREFIXES):
        raise ValueError(f"tags starting with {' or '.join(RESERVED_TAG_PREFIXES)} are set by the service and MLflow")
    return key


def _tag_value(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MLFLOW_TAG_VALUE_MAX:
        raise ValueError(f"must be text of at most {MLFLOW_TAG_VALUE_MAX} characters")
    return value


def _tags(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MLFLOW_TAGS_MAX:
        raise ValueError(f"must be an object of at most {MLFLOW_TAGS_MAX} text values")
    return dict(sorted(value.items(), key=lambda kv: str(kv[0])))


class MlflowTracking(Section):
    """The guide's mlflow_tracking: where each attempt is logged in MLflow."""

    experiment_name: Annotated[str, Text(MLFLOW_NAME_MAX, required=True)] = REQUIRED
    run_name: Annotated[str | None, Text(MLFLOW_NAME_MAX, nullable=True), Unset] = None
    tags: Annotated[dict[Annotated[str, Checked(_tag_name)], Annotated[str, Checked(_tag_value)]], Checked(_tags)] = Field(
        default_factory=dict, exclude_if=lambda v: not v
    )


def _check_name(value: Any) -> str:
    if value not in DATA_CHECKS:
        raise ValueError(f"{shown(value)} is not a check; known: {', '.join(DATA_CHECKS)}")
    return str(value)


class DataChecks(Section):
    """What data_loading refuses instead of warning about: the checks named in ``fail_on``
    fail the job (gaps: when their share of the hourly index exceeds ``max_gap_ratio``);
    ``target_min`` / ``target_max`` bound the target (out_of_range). A limit names its check
    itself: ``fail_on`` is written with it."""

    max_gap_ratio: Annotated[int | float | None, Number("must be a fraction from 0.0 to 1.0", low=0.0, high=1.0, nullable=True)] = None
    target_min: Annotated[int | float | None, Number(nullable=True)] = None
    target_max: Annotated[int | float | None, Number(nullable=True)] = None
    fail_on: Annotated[
        tuple[Annotated[str, Checked(_check_name)], ...],
        ListOf(reason=f"must be a list of check names: {', '.join(DATA_CHECKS)}", nullable=True),
    ] = Field((), validate_default=True, exclude_if=lambda v: not v)

    @field_validator("target_max", mode="after")
    @classmethod
    def _above_min(cls, value: float | None, info: ValidationInfo) -> float | None:  # an int is a float here
        low = info.data.get("target_min")
        if value is not None and low is not None and low >= value:
            raise refuse("must be greater than target_min")
        return value

    @field_validator("fail_on", mode="after")
    @classmethod
    def _implied(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...]:
        fail_on = value or ()
        if info.data.get("max_gap_ratio") is not None and "gaps" not in fail_on:
            fail_on = (*fail_on, "gaps")  # a gap limit is a reason to fail
        if (info.data.get("target_min") is not None or info.data.get("target_max") is not None) and "out_of_range" not in fail_on:
            fail_on = (*fail_on, "out_of_range")
        return fail_on


class Backtest(Section):
    """Forecasting: a rolling-origin backtest of ``folds`` windows of ``horizon_hours``."""

    folds: Annotated[int, Whole(1, 20)] = REQUIRED
    horizon_hours: Annotated[int, Whole(1, MAX_BACKTEST_HOURS)] = REQUIRED


THRESHOLD_METHODS = ("percentile", "contamination", "labelled", "fixed")
DEFAULT_PERCENTILE = 99.0


class Threshold(Section):
    """Anomaly detection: how the score threshold is chosen on the training range.

    - ``percentile``: this percentile (0-100) of the training rows' scores; default 99;
    - ``contamination``: the expected anomaly rate (0-0.5): that share of training rows is above;
    - ``labelled``: the best F1 on the labelled last tenth of the training range (a label
      column, or a 0/1 target); without a labelled anomaly there, the training label rate as
      contamination, else the 99th percentile, and the log says so;
    - ``fixed``: this score."""

    method: Annotated[str, OneOf(lambda: THRESHOLD_METHODS, required="is required: one of {options}")] = REQUIRED
    value: Annotated[int | float | None, Number("must be a number", nullable=True)] = None


class TrainingOptions(Section):
    """Options for large data: mini-batches of the neural algorithms, a sample of the rows."""

    batch_size: Annotated[int | None, Whole(1, nullable=True)] = None
    use_sample: Annotated[
        int | float | None, Number("must be a fraction greater than 0.0 and at most 1.0", above=0.0, high=1.0, nullable=True)
    ] = None

    @property
    def empty(self) -> bool:
        return self.batch_size is None and self.use_sample is None


def _horizons(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    if len(value) > MAX_HORIZONS or not all(is_whole(h) and 1 <= h <= MAX_HORIZON_HOURS for h in value):
        raise ValueError(f"must be a list of at most {MAX_HORIZONS} whole numbers of hours from 1 to {MAX_HORIZON_HOURS}")
    return tuple(sorted(set(value)))


def _known_ahead(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    if not all(isinstance(k, str) and IDENT.match(k) for k in value):
        raise ValueError(COLUMN_NAMES)
    return tuple(value)


def _hyperparameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("must be an object")
    return dict(value)


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_time(value)


def _one_or_default(value: Any) -> Any:
    return DEFAULT_HORIZON_HOURS if value is None else value


def installed_preprocessors() -> str:
    """The preprocessors a config may name, for its refusal."""
    from trainers import preprocessors  # entry points are read only when a config needs them

    return ", ".join(sorted(n for n, p in preprocessors.installed().items() if p.preprocessor)) or "none are installed"


def _preprocessor_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not an installed preprocessor; installed: {installed_preprocessors()}")
    return value


def _units(value: Any) -> dict[str, str]:
    """Column -> C or F (any case): the unit a temperature column is in."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError('must be an object such as {"temperature": "F"}')
    out = {}
    for column, unit in value.items():
        if not isinstance(column, str) or not IDENT.match(column):
            raise ValueError(f"{shown(column)}: {COLUMN_NAMES}")
        if not isinstance(unit, str) or unit.upper() not in TEMPERATURE_UNITS:
            raise ValueError(f"{column}: {shown(unit)} is not a temperature unit: C or F")
        out[column] = unit.upper()
    return out


MAX_QUANTILES = 9


def _levels(value: Any) -> tuple[float, ...]:
    """Quantile levels in (0, 1), each once, in order."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of levels such as [0.1, 0.5, 0.9]")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ValueError(f"{shown(v)} is not a level between 0 and 1 (both excluded)")
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError("a level is listed twice")
    if len(out) > MAX_QUANTILES:
        raise ValueError(f"at most {MAX_QUANTILES} levels")
    return tuple(sorted(out))


Time = Annotated[datetime, Checked(_time)]
Columns = Annotated[tuple[Annotated[str, Name()], ...], ListOf(nullable=True), Checked(lambda v: () if v is None else v, nullable=True)]


class TrainingSpec(Section):
    """The guide's TrainingConfig, validated. The fields are declared in the order their
    problems are reported; the properties below derive what the pipeline asks of it."""

    model_type: ModelType = REQUIRED
    algorithm: Annotated[str, OneOf(lambda: algorithms.ALL, required="is required: one of {options}")] = REQUIRED
    hyperparameters: Annotated[dict[str, Any], Checked(_hyperparameters)] = Field(default_factory=dict)
    training_start: Time = REQUIRED
    training_end: Time = REQUIRED
    target: Annotated[str, Name(required="is required (the column to predict, such as load)")] = REQUIRED
    features: Columns = ()  # none: an anomaly detector's input is the value alone (checks._features)
    # the model forecasts this far past its origin
    forecast_horizon_hours: Annotated[int, Whole(1, MAX_HORIZON_HOURS, unit="hours"), Checked(_one_or_default)] = Field(
        DEFAULT_HORIZON_HOURS, exclude_if=lambda v: v == DEFAULT_HORIZON_HOURS
    )
    # forecast these quantiles too (split conformal on the tune part: trainers.intervals)
    quantiles: Annotated[tuple[float, ...], Checked(_levels)] = Field((), exclude_if=lambda v: not v)
    # also score direct models at these horizons (mae_h24, ...)
    horizons: Annotated[tuple[int, ...], Checked(_horizons)] = Field((), exclude_if=lambda v: not v)
    # columns whose value for the target hour exists at the origin
    known_ahead: Annotated[tuple[str, ...] | None, Checked(_known_ahead, nullable=True)] = None
    # the IANA zone calendar (and, unless holidays names its own, holiday) features are read in
    timezone: Annotated[str | None, Checked(_zone_name, nullable=True), Unset] = None
    holidays: Annotated[Holidays | None, NoSection] = None
    # the unit of a temperature column (C or F): degree-hour bases are read in it
    units: Annotated[dict[str, str], Checked(_units)] = Field(default_factory=dict, exclude_if=lambda v: not v)
    # an installed preprocessor (entry point aihub.preprocessors): checks._preprocessor
    preprocessor: Annotated[str | None, Checked(_preprocessor_name, nullable=True), Unset] = None
    data_checks: Annotated[DataChecks | None, NoSection] = None
    validation_split: Annotated[float, Number("Must be between 0.0 and 1.0", above=0.0, below=1.0)] = DEFAULT_VALIDATION_SPLIT
    random_seed: Annotated[int, Whole(0, 2**31 - 1)] = DEFAULT_SEED
    early_stopping_rounds: Annotated[int | None, Whole(1, nullable=True)] = None
    # the attempt's time limit (None: the server's default)
    max_runtime_seconds: Annotated[int | None, Whole(1, unit="seconds", nullable=True)] = None
    backtest: Annotated[Backtest | None, NoSection] = None
    label_column: Annotated[str | None, Name(nullable=True), NoneIfEmpty] = None
    threshold: Annotated[Threshold | None, NoSection] = None  # anomaly: how the score threshold is chosen
    feature_table: Annotated[str, Name("table")] = REQUIRED  # default: the model type's table
    distributed: Annotated[bool, Flag] = Field(False, exclude_if=lambda v: not v)
    ray_config: Annotated[RayConfig | None, NoSection] = Field(None, validate_default=True)
    # log each attempt in MLflow (not part of the config hash)
    mlflow_tracking: MlflowTracking | None = None
    training_options: Annotated[TrainingOptions | None, NoSection] = Field(None, exclude_if=lambda v: v is None or v.empty)
    tuning: Annotated[Tuning | None, NoSection] = None  # a hyperparameter search before training

    @field_validator("tuning", mode="after")
    @classmethod
    def _built_in_space(cls, value: Tuning | None, info: ValidationInfo) -> Tuning | None:
        """A search without search_space searches the algorithm's built-in one, written in (the
        stored form says exactly what was searched)."""
        algorithm = info.data.get("algorithm")
        if value is None or value.search_space or not algorithm:
            return value
        space = built_in(algorithms.get(algorithm), info.data.get("hyperparameters") or {})
        return value.model_copy(update={"search_space": space}) if space else value

    @field_validator("model_type", mode="before")
    @classmethod
    def _model_type(cls, value: Any, info: ValidationInfo) -> ModelType:
        value = value or (info.context or {}).get("model_type")  # the job's, for a config without its own
        if not value:
            raise refuse(f"is required: one of {', '.join(MODEL_TYPES)}")
        if value not in MODEL_TYPES:
            raise refuse(f"{shown(value)} is not one of {', '.join(MODEL_TYPES)}")
        return ModelType(value)

    @field_validator("mlflow_tracking", mode="before")
    @classmethod
    def _mlflow_installed(cls, value: Any, info: ValidationInfo) -> Any:
        stored = (info.context or {}).get("stored")
        if value is not None and not stored and importlib.util.find_spec("mlflow") is None:
            raise refuse("MLflow is not installed on this server (pip install 'aihub-training[mlflow]'); leave it unset")
        return value

    @field_validator("feature_table", mode="before")
    @classmethod
    def _default_table(cls, value: Any, info: ValidationInfo) -> Any:
        model_type = info.data.get("model_type")
        if not value:
            return DEFAULT_TABLES[model_type] if model_type else "unknown"  # no model type: its own violation says why
        return value

    @field_validator("holidays", mode="after")
    @classmethod
    def _local_holidays(cls, value: Holidays | None, info: ValidationInfo) -> Holidays | None:
        """The config's timezone is the holidays' when they name none (written in, so the
        stored form says it)."""
        zone = info.data.get("timezone")
        if value is not None and zone and "timezone" not in value.model_fields_set:
            return Holidays.model_validate({"country": value.country, "subdivision": value.subdivision, "timezone": zone})
        return value

    @field_serializer("training_start", "training_end")
    def _utc(self, value: datetime) -> str:
        return format_time(value)

    @field_validator("ray_config", mode="after")
    @classmethod
    def _canonical_ray_config(cls, value: RayConfig | None, info: ValidationInfo) -> RayConfig | None:
        """Distributed: every worker field written in (memory in the largest exact unit,
        use_gpu only for an algorithm that uses one); single node: only use_gpu, when set."""
        if info.data.get("distributed"):
            algorithm = info.data.get("algorithm")
            return RayConfig.model_validate((value or RayConfig()).request(algorithm).to_dict()) if algorithm else value
        if value is not None and value.model_fields_set - {"use_gpu"}:
            raise refuse("num_workers, cpus_per_worker and memory_per_worker apply only with distributed=true")
        return RayConfig(use_gpu=True) if value is not None and value.use_gpu else None

    # --- what the pipeline reads ---------------------------------------------------------
    @property
    def use_gpu(self) -> bool:
        return bool(self.ray_config and self.ray_config.use_gpu)

    @cached_property
    def workers(self) -> WorkerRequest | None:
        """Distributed: data-parallel training on these Ray workers."""
        return (self.ray_config or RayConfig()).request(self.algorithm) if self.distributed else None

    @property
    def batch_size(self) -> int | None:
        return self.training_options.batch_size if self.training_options else None

    @property
    def use_sample(self) -> float | None:
        return self.training_options.use_sample if self.training_options else None

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

    def replace(self, **changes: Any) -> TrainingSpec:
        """The same spec with ``changes`` (values in the model's form), its derived values anew."""
        changed = self.model_copy(update=changes)
        for name in ("workers", "recipes", "lags", "config_hash"):
            changed.__dict__.pop(name, None)  # cached_property values of the original
        return changed

    def with_window(self, start: datetime, end: datetime) -> TrainingSpec:
        """The same model on another time window (to score a trained model on it)."""
        return self.replace(training_start=start, training_end=end)

    # --- the canonical form --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical form: what is stored and shown. Every default is written in, times
        are UTC without an offset (as the guide writes them), optional sections appear only
        when set (so a config without a newer field keeps the form, and the hash, it had
        before the field existed)."""
        return self.model_dump(mode="json", exclude_none=True)

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
        ``trainers.spec.build`` accepted. Only its fields are read again; what needs the
        installed packages or several fields at once is not checked again."""
        return cls.model_validate(config, context={"model_type": model_type, "stored": True})


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
