"""Tenant feature tables in schema ``features``: (tenant_id, series_id, timestamp, numeric
columns...).

An import reads a CSV or Parquet file (:func:`read_file`) and upserts its rows
(:func:`import_frame`) on (tenant_id, series_id, timestamp), so loading the same file twice
changes nothing. Reads use COPY, the fastest way out of PostgreSQL. Table and column names
reach SQL only after :func:`check_identifier`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, cast

import asyncpg
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.errors import DatabaseUnavailable, FeatureColumnNotFound, FeatureTableNotFound, InvalidFeatureData
from storage.tables import FEATURE_SCHEMA

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED = ("tenant_id", "series_id", "timestamp")
SERIES = "series_id"  # optional: several series (meters, feeders) in one table, text ids


def check_identifier(name: str, what: str) -> str:
    if not _IDENT.match(name or ""):
        raise InvalidFeatureData(
            f"{what} {name!r} is not a valid name: lower-case letters, digits and _, starting with a letter or _",
            field=what,
        )
    return name


FileFormat = Literal["csv", "parquet"]


def read_file(data: bytes, fmt: FileFormat | None = None) -> pd.DataFrame:
    """A CSV or Parquet file as a frame (``fmt`` None: Parquet when it starts with its magic
    bytes, else CSV). A file that cannot be read is InvalidFeatureData on field ``data``."""
    if not data:
        raise InvalidFeatureData("the file is empty")
    if fmt is None:
        fmt = "parquet" if data[:4] == b"PAR1" else "csv"
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return cast(pd.DataFrame, pq.read_table(io.BytesIO(data)).to_pandas())
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        kind = "Parquet" if fmt == "parquet" else "CSV"
        raise InvalidFeatureData(f"cannot read the file as {kind}: {exc}") from exc


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn`` (for COPY)."""
    raw = (await conn.get_raw_connection()).driver_connection
    if raw is None:
        raise DatabaseUnavailable("the database connection is closed")
    return cast(asyncpg.Connection, raw)


def _with_nulls(values: np.ndarray) -> list[Any]:
    """A float column as a list, NaN as None (NULL)."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    return cast(list[Any], out.tolist())


def _q(name: str) -> str:
    return f'"{name}"'


async def columns_of(conn: AsyncConnection, table: str) -> list[str] | None:
    """The table's columns in order, or None when the table does not exist."""
    rows = (
        (
            await conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
                ),
                {"s": FEATURE_SCHEMA, "t": table},
            )
        )
        .scalars()
        .all()
    )
    return list(rows) or None


async def import_frame(conn: AsyncConnection, tenant_id: str, table: str, frame: pd.DataFrame) -> tuple[int, list[str]]:
    """Upsert ``frame`` (a ``timestamp`` column and numeric columns) as ``tenant_id``'s rows.
    Creates the table, and any new column, as needed. Returns (rows, numeric columns)."""
    check_identifier(table, "table")
    if not tenant_id:
        raise InvalidFeatureData("tenant_id is required", field="tenant_id")
    frame = frame.rename(columns=lambda c: str(c).strip())
    if "timestamp" not in frame.columns:
        raise InvalidFeatureData(f"the data has no 'timestamp' column (columns: {', '.join(map(str, frame.columns))})")
    frame = frame.drop(columns=[c for c in ("tenant_id",) if c in frame.columns])
    series = frame[SERIES].astype(str) if SERIES in frame.columns else pd.Series("", index=frame.index)
    value_cols = [c for c in frame.columns if c not in ("timestamp", SERIES)]
    if not value_cols:
        raise InvalidFeatureData("the data has no value columns besides 'timestamp'")
    for col in value_cols:
        check_identifier(col, "column")
    try:
        stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise InvalidFeatureData(f"column 'timestamp' holds values that are not timestamps: {exc}", field="timestamp") from exc
    values = {}
    for col in value_cols:
        converted = pd.to_numeric(frame[col], errors="coerce")
        bad = converted.isna() & frame[col].notna()
        if bad.any():
            example = frame[col][bad].iloc[0]
            raise InvalidFeatureData(f"column {col!r} holds a non-numeric value: {example!r}", field=col)
        values[col] = converted.astype("float64")
    dup = pd.DataFrame({"s": series.to_numpy(), "t": stamps.to_numpy()}).duplicated()
    if dup.any():
        where = f" of series {series[dup.to_numpy()].iloc[0]!r}" if SERIES in frame.columns else ""
        raise InvalidFeatureData(f"timestamp {stamps[dup.to_numpy()].iloc[0]}{where} appears twice", field="timestamp")

    await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {FEATURE_SCHEMA}"))
    await conn.execute(
        sa.text(
            f"CREATE TABLE IF NOT EXISTS {FEATURE_SCHEMA}.{_q(table)} ("
            "tenant_id text NOT NULL, series_id text NOT NULL DEFAULT '', \"timestamp\" timestamptz NOT NULL, "
            'PRIMARY KEY (tenant_id, series_id, "timestamp"))'
        )
    )
    for col in value_cols:
        await conn.execute(sa.text(f"ALTER TABLE {FEATURE_SCHEMA}.{_q(table)} ADD COLUMN IF NOT EXISTS {_q(col)} double precision"))

    raw = await _driver(conn)
    staging = f"_import_{table}"
    cols = ["tenant_id", SERIES, "timestamp", *value_cols]
    await raw.execute(f"CREATE TEMP TABLE {_q(staging)} (LIKE {FEATURE_SCHEMA}.{_q(table)} INCLUDING DEFAULTS) ON COMMIT DROP")
    stamp_values = stamps.dt.to_pydatetime()
    columns = [_with_nulls(values[c].to_numpy()) for c in value_cols]
    records = [(tenant_id, sid, ts, *row) for sid, ts, *row in zip(series.tolist(), stamp_values, *columns, strict=True)]
    await raw.copy_records_to_table(staging, records=records, columns=cols)
    updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in value_cols)
    col_list = ", ".join(_q(c) for c in cols)
    await raw.execute(
        f"INSERT INTO {FEATURE_SCHEMA}.{_q(table)} ({col_list}) SELECT {col_list} FROM {_q(staging)} "  # noqa: S608 - checked identifiers
        f'ON CONFLICT (tenant_id, series_id, "timestamp") DO UPDATE SET {updates}'
    )
    await raw.execute(f"DROP TABLE {_q(staging)}")
    return len(records), value_cols


async def read_frame(
    conn: AsyncConnection,
    tenant_id: str,
    table: str,
    columns: Sequence[str],
    start: datetime,
    end: datetime,
) -> pd.DataFrame:
    """The tenant's rows with ``start <= timestamp <= end``, ordered by series and time: a
    UTC ``timestamp`` column, ``series_id`` (text; '' for a table of one series) and the
    requested numeric columns."""
    check_identifier(table, "table")
    existing = await columns_of(conn, table)
    if existing is None:
        raise FeatureTableNotFound(table)
    for col in columns:
        if col not in existing or col in RESERVED:
            raise FeatureColumnNotFound(table, col)
    col_list = ", ".join(['"timestamp"', SERIES, *(_q(c) for c in columns)])
    raw = await _driver(conn)
    buf = io.BytesIO()
    query = (
        f"SELECT {col_list} FROM {FEATURE_SCHEMA}.{_q(table)} "  # noqa: S608 - checked identifiers
        f'WHERE tenant_id = $1 AND "timestamp" BETWEEN $2 AND $3 ORDER BY series_id, "timestamp"'
    )
    await raw.copy_from_query(query, tenant_id, start, end, output=buf, format="csv", header=True)
    buf.seek(0)
    if buf.getbuffer().nbytes == 0:
        return pd.DataFrame(columns=["timestamp", SERIES, *columns])
    frame = pd.read_csv(buf, engine="pyarrow", dtype={SERIES: "str", **dict.fromkeys(columns, "float64")})
    frame[SERIES] = frame[SERIES].fillna("").astype(str)  # '' (one series) reads back as missing
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


async def count_rows(conn: AsyncConnection, tenant_id: str, table: str) -> int:
    if await columns_of(conn, check_identifier(table, "table")) is None:
        return 0
    count = sa.text(f"SELECT count(*) FROM {FEATURE_SCHEMA}.{_q(table)} WHERE tenant_id = :t")  # noqa: S608 - checked identifier
    return int(await conn.scalar(count, {"t": tenant_id}) or 0)
