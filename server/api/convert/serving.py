"""Conversions of the models in use: forecast requests and answers (protobuf, and the REST
answer's JSON, CSV and Parquet), aliases and their moves."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf import struct_pb2, timestamp_pb2

from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.convert.common import MODEL_TYPES, as_timestamp, checked_text, decode_offset_token, encode_offset_token, parse_model_id
from server.api.errors import RequestError
from storage import records
from storage.features import SERIES
from storage.tenancy import TENANT_ID_PATTERN
from trainers import forecasting, intervals
from trainers import spec as specs
from trainers.errors import ConfigValidationError, Violation, shown
from trainers.forecasting import MAX_HORIZON_HOURS

# A forecast request's bounds (each named in the 400 that refuses it).
MAX_SERIES = 5000  # series named in one request
MAX_INPUT_ROWS = 200_000  # inline known-ahead rows
MAX_POINTS = forecasting.MAX_POINTS  # (series, hour) points in one answer; rows one detection scores
MAX_SERIES_ID = 200
ALIAS = re.compile(TENANT_ID_PATTERN)
MAX_REASON = 500
FORMATS = ("json", "csv", "parquet")


def refused(field: str, why: str) -> ConfigValidationError:
    return ConfigValidationError([Violation(field, why)], message="Invalid forecast request")


def check_alias(value: str, field: str = "alias") -> str:
    if not ALIAS.fullmatch(value or ""):
        raise RequestError(
            field, f"{shown(value)} is not an alias: lower-case letters, digits, - and _, 1-63, starting with a letter or digit"
        )
    return value


def model_type_from_text(value: str, *, required: bool = True) -> specs.ModelType | None:
    """forecast or anomaly, any case (the alias calls take it from a query string)."""
    if not value:
        if required:
            raise RequestError("model_type", "is required: forecast or anomaly")
        return None
    try:
        return specs.ModelType(value.lower())
    except ValueError:
        raise RequestError("model_type", f"{shown(value)} is not one of forecast, anomaly") from None


@dataclass(frozen=True)
class ForecastQuery:
    """A forecast request's values, checked."""

    horizon_hours: int | None
    origin: datetime | None
    series: tuple[str, ...] | None
    inputs: pd.DataFrame | None
    history_hours: int = 0


def _plain(value: struct_pb2.Value) -> Any:
    """A Struct value as Python, read field by field (json_format refuses NaN and infinities,
    which the checks below name instead)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind in (None, "null_value"):
        return None
    return kind.removesuffix("_value")  # a list or an object: refused below by its kind's name


def rows_frame(rows: Sequence[Any], field: str) -> pd.DataFrame | None:
    """Rows sent inline ({"timestamp", "series_id"?, column: number}) as a frame like the
    feature table's (UTC timestamps, series_id '' when not given); None when there are none."""
    if not rows:
        return None
    if len(rows) > MAX_INPUT_ROWS:
        raise refused(field, f"has {len(rows)} rows; at most {MAX_INPUT_ROWS} are allowed in one request")
    records_: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        data = {key: _plain(value) for key, value in row.fields.items()}
        where = f"{field}[{i}]"
        stamp = data.pop("timestamp", None)
        try:
            when = specs.parse_time(stamp)
        except ValueError as exc:
            raise refused(f"{where}.timestamp", str(exc)) from None
        series = data.pop(SERIES, "")
        if not isinstance(series, str) or len(series) > MAX_SERIES_ID:
            raise refused(f"{where}.{SERIES}", f"must be text of at most {MAX_SERIES_ID} characters")
        out: dict[str, Any] = {"timestamp": when, SERIES: series}
        for key, value in data.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", key):
                raise refused(f"{where}.{key[:40]}", "is not a column name: lower-case letters, digits and _")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)):
                raise refused(f"{where}.{key}", f"{shown(value)} is not a finite number")
            out[key] = value
        records_.append(out)
    frame = pd.DataFrame.from_records(records_)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    dup = frame.duplicated([SERIES, "timestamp"])
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise refused(f"{field}[{i}]", "repeats the timestamp (and series_id) of an earlier row")
    return frame.sort_values([SERIES, "timestamp"], ignore_index=True)


def forecast_query(request: pb.ForecastModelVersionRequest) -> ForecastQuery:
    horizon = request.horizon_hours or None
    if horizon is not None and not 1 <= horizon <= MAX_HORIZON_HOURS:
        raise refused("horizon_hours", f"must be 1 to {MAX_HORIZON_HOURS} (14 days)")
    origin = None
    if request.origin:
        try:
            origin = specs.parse_time(request.origin)
        except ValueError as exc:
            raise refused("origin", str(exc)) from None
        if origin.minute or origin.second or origin.microsecond:
            raise refused("origin", "must be a whole hour: forecasts are hourly")
    series = None
    if request.series:
        if len(request.series) > MAX_SERIES:
            raise refused("series", f"names {len(request.series)} series; at most {MAX_SERIES} are allowed in one request")
        for i, name in enumerate(request.series):
            checked_text(name, f"series[{i}]", max_len=MAX_SERIES_ID)
        series = tuple(dict.fromkeys(request.series))
    if not 0 <= request.history_hours <= MAX_HORIZON_HOURS:
        raise refused("history_hours", f"must be 0 to {MAX_HORIZON_HOURS} (14 days)")
    return ForecastQuery(horizon, origin, series, rows_frame(request.inputs, "inputs"), request.history_hours)


def _iso(stamps: pd.Series) -> list[str]:
    """UTC timestamps as the API writes them ("2025-01-01T00:00:00Z"), a column at a time."""
    utc = pd.to_datetime(stamps, utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    return [text + "Z" for text in np.datetime_as_string(utc, unit="s").tolist()]


def _seconds(stamps: pd.Series) -> list[int]:
    return pd.to_datetime(stamps, utc=True).astype("datetime64[s, UTC]").astype("int64").tolist()


def split(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A forecast's rows as (points, history): rows with ``actual`` are the hours before the origin."""
    if "actual" not in rows.columns:
        return rows, None
    past = rows["forecast"].isna() if "forecast" in rows.columns else pd.Series(True, index=rows.index)
    return rows[~past], rows[past]


def forecast_to_pb(version: records.ModelVersion, alias: str, rows: pd.DataFrame) -> pb.ForecastModelVersionResponse:
    rows, history = split(rows)
    out = pb.ForecastModelVersionResponse(model_id=str(version.model_id), model_version=version.version, alias=alias)
    if history is not None:
        past = (_seconds(history["timestamp"]), history[SERIES].tolist(), history["actual"].tolist())
        out.history.extend(
            pb.HistoryPoint(timestamp=timestamp_pb2.Timestamp(seconds=t), series_id=s, actual=a) for t, s, a in zip(*past, strict=True)
        )
    out.origin.FromDatetime(rows["origin"].max().to_pydatetime())
    point, stamp = pb.ForecastPoint, timestamp_pb2.Timestamp
    columns = (_seconds(rows["timestamp"]), rows[SERIES].tolist(), rows["forecast"].tolist(), _seconds(rows["origin"]), _quantiles(rows))
    out.points.extend(
        point(timestamp=stamp(seconds=t), series_id=s, forecast=f, origin=stamp(seconds=o), quantiles=q)
        for t, s, f, o, q in zip(*columns, strict=True)
    )
    return out


def _quantiles(rows: pd.DataFrame) -> list[dict[str, float]]:
    """Each row's quantile forecasts ({"0.1": …, "0.9": …}) from its q<level> columns."""
    levels = intervals.columns(rows.columns)
    if not levels:
        return [{}] * len(rows)
    values = [rows[c].tolist() for c in levels]
    return [dict(zip(levels.values(), v, strict=True)) for v in zip(*values, strict=True)]


def forecast_json(version: records.ModelVersion, alias: str, rows: pd.DataFrame) -> dict[str, Any]:
    """The REST answer: {"model_id", "model_version", "alias", "origin", "points": [{"timestamp",
    "series_id"?, "forecast", "quantiles"?, "origin"?}]}; series_id when the table has
    series, quantiles when the model has them, a point's origin when not every series
    forecast from the answer's."""
    rows, history = split(rows)
    stamps, origins = _iso(rows["timestamp"]), _iso(rows["origin"])
    origin = max(origins) if origins else None
    points: list[dict[str, Any]] = []
    for t, s, f, o, q in zip(stamps, rows[SERIES].tolist(), rows["forecast"].tolist(), origins, _quantiles(rows), strict=True):
        point: dict[str, Any] = {"timestamp": t, "series_id": s, "forecast": f} if s else {"timestamp": t, "forecast": f}
        if q:
            point["quantiles"] = q
        if o != origin:
            point["origin"] = o
        points.append(point)
    out = {"model_id": str(version.model_id), "model_version": version.version, "alias": alias or None, "origin": origin, "points": points}
    if history is not None:
        out["history"] = [
            {"timestamp": t, "series_id": s, "actual": a} if s else {"timestamp": t, "actual": a}
            for t, s, a in zip(_iso(history["timestamp"]), history[SERIES].tolist(), history["actual"].tolist(), strict=True)
        ]
    return out


def forecast_file(rows: pd.DataFrame, fmt: str) -> tuple[bytes, str]:
    """The points as a CSV or Parquet file (timestamp, series_id, forecast, origin), and its
    content type."""
    rows, _ = split(rows)
    frame = pd.DataFrame(
        {
            "timestamp": _iso(rows["timestamp"]),
            SERIES: rows[SERIES].tolist(),
            "forecast": rows["forecast"].to_numpy(),
            "origin": _iso(rows["origin"]),
        }
    )
    for column in intervals.columns(rows.columns):
        frame[column] = rows[column].to_numpy()  # the quantile forecasts: q0.1, q0.9
    if fmt == "csv":
        return frame.to_csv(index=False).encode(), "text/csv; charset=utf-8"
    buf = io.BytesIO()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["origin"] = pd.to_datetime(frame["origin"], utc=True)
    frame.to_parquet(buf, index=False)
    return buf.getvalue(), "application/vnd.apache.parquet"


def detect_query(request: pb.DetectModelVersionRequest) -> tuple[datetime | None, datetime | None, pd.DataFrame | None]:
    """The window (start, end; either may be None with rows) and the rows sent inline."""
    rows = rows_frame(request.rows, "rows")
    if rows is None and not (request.start and request.end):
        raise refused("start", "is required, with end, unless rows are sent: the window of the feature table to score")
    window = []
    for name, value in (("start", request.start), ("end", request.end)):
        try:
            window.append(specs.parse_time(value) if value else None)
        except ValueError as exc:
            raise refused(name, str(exc)) from None
    start, end = window
    if start and end and end < start:
        raise refused("end", "is before start")
    return start, end, rows


def detect_to_pb(version: records.ModelVersion, rows: pd.DataFrame, threshold: float) -> pb.DetectModelVersionResponse:
    out = pb.DetectModelVersionResponse(model_id=str(version.model_id), model_version=version.version, threshold=threshold)
    series = rows[SERIES].tolist() if SERIES in rows.columns else [""] * len(rows)
    for stamp, sid, score, flag in zip(
        pd.to_datetime(rows["timestamp"], utc=True).dt.to_pydatetime(),
        series,
        rows["score"].tolist(),
        rows["flagged"].tolist(),
        strict=True,
    ):
        point = out.points.add(series_id=sid, score=score, flagged=bool(flag))
        point.timestamp.FromDatetime(stamp)
    return out


def detect_json(resp: pb.DetectModelVersionResponse) -> dict[str, Any]:
    """The REST answer: {"model_id", "model_version", "threshold", "points": [{"timestamp",
    "series_id"?, "score", "flagged"}]}."""
    points = []
    for p in resp.points:
        point: dict[str, Any] = {"timestamp": p.timestamp.ToJsonString()}
        if p.series_id:
            point["series_id"] = p.series_id
        point.update(score=p.score, flagged=p.flagged)
        points.append(point)
    return {"model_id": resp.model_id, "model_version": resp.model_version, "threshold": resp.threshold, "points": points}


MAX_STORED_PAGE = 50_000
DEFAULT_STORED_PAGE = 1000


def forecasts_query(request: pb.ListForecastsRequest) -> tuple[dict[str, Any], int, int]:
    """ListForecasts' filters (for storage.forecasts.list_points), page size and offset."""
    filters: dict[str, Any] = {}
    if request.alias:
        filters["alias"] = check_alias(request.alias)
    if request.model_id:
        filters["model_id"] = parse_model_id(request.model_id)
    if request.series_id:
        filters["series_id"] = checked_text(request.series_id, "series_id", max_len=MAX_SERIES_ID)
    for name in ("origin", "start", "end"):
        value = getattr(request, name)
        if value:
            try:
                filters[name] = specs.parse_time(value)
            except ValueError as exc:
                raise RequestError(name, str(exc)) from None
    size = request.page_size or DEFAULT_STORED_PAGE
    if not 1 <= size <= MAX_STORED_PAGE:
        raise RequestError("page_size", f"must be 1 to {MAX_STORED_PAGE}")
    return filters, size, decode_offset_token(request.page_token)


def forecasts_to_pb(found: Sequence[records.StoredForecast], size: int, offset: int) -> pb.ListForecastsResponse:
    out = pb.ListForecastsResponse(next_page_token=encode_offset_token(offset + size) if len(found) > size else "")
    for f in found[:size]:
        out.points.add(
            timestamp=as_timestamp(f.timestamp),
            series_id=f.series_id,
            forecast=f.forecast,
            origin=as_timestamp(f.origin),
            model_id=str(f.model_id),
            model_version=f.model_version,
            alias=f.alias,
            schedule_id=str(f.schedule_id) if f.schedule_id else "",
            created_at=as_timestamp(f.created_at),
        )
    return out


def alias_to_pb(found: records.ModelAlias) -> pb.ModelAlias:
    out = pb.ModelAlias(
        alias=found.alias,
        tenant_id=found.tenant_id,
        model_type=MODEL_TYPES[specs.ModelType(found.model_type)],
        model_id=str(found.model_id or ""),
        model_version=found.model_version or 0,
        updated_at=as_timestamp(found.updated_at),
    )
    for m in found.moves:
        out.moves.add(
            moved_at=as_timestamp(m.moved_at),
            from_model_id=str(m.from_model_id or ""),
            from_version=m.from_version or 0,
            to_model_id=str(m.to_model_id or ""),
            to_version=m.to_version or 0,
            moved_by=m.moved_by,
            reason=m.reason,
        )
    return out


def aliases_to_pb(found: Sequence[records.ModelAlias]) -> pb.ListModelAliasesResponse:
    return pb.ListModelAliasesResponse(aliases=[alias_to_pb(a) for a in found])


def reason(value: str) -> str:
    return checked_text(value, "reason", max_len=MAX_REASON)
