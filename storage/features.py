"""Tenant feature tables: (tenant_id, series_id, timestamp, numeric columns...), one schema
per tenant (``features_<tenant>_<md5>``, storage.tenancy.feature_schema), shown to users as
``features.<table>``.

An import reads a CSV or Parquet file in chunks (:func:`iter_file`) and upserts each chunk
(:func:`import_frame`) on (tenant_id, series_id, timestamp), so loading the same file twice
changes nothing. Tables and columns are created only through the SECURITY DEFINER function
aihub_prepare_feature_table, which works in the transaction's own tenant only and caps the
columns. Reads use COPY, the fastest way out of PostgreSQL. Table and column names reach
SQL only after :func:`check_identifier`; the tenant comes from the transaction's scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

import asyncpg
import numpy as np
import pandas as pd

from storage import db
from storage.errors import FeatureColumnNotFound, FeatureTableNotFound, InvalidFeatureData
from storage.tenancy import feature_schema, scope_of

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED = ("tenant_id", "series_id", "timestamp")
# PostgreSQL's system columns: every table has them, so no value column may take their names.
SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"})
SERIES = "series_id"  # optional: several series (meters, feeders) in one table, text ids
MAX_VALUE_COLUMNS = 200  # per table and tenant
CHUNK_ROWS = 100_000  # rows parsed and written at a time by an import

# prepare_feature_table: the tenant's schema and table, with any new value columns (at most
# the cap), made by the SECURITY DEFINER function of migration 0006. Index: none (catalog).
PREPARE_TABLE = db.sql("SELECT aihub_prepare_feature_table(:tenant, :table, CAST(:columns AS text[]), :max_columns)")

# table_columns: a tenant table's columns in order. Index: the catalog's.
TABLE_COLUMNS = db.sql(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
)


def check_identifier(name: str, what: str) -> str:
    if not _IDENT.match(name or ""):
        raise InvalidFeatureData(
            f"{what} {name!r} is not a valid name: lower-case letters, digits and _, starting with a letter or _",
            field=what,
        )
    if what == "column" and name in SYSTEM_COLUMNS:
        raise InvalidFeatureData(f"column {name!r} is the name of a PostgreSQL system column: rename it", field=what)
    return name


FileFormat = Literal["csv", "parquet"]


def iter_file(source: Path | IO[bytes], fmt: FileFormat | None = None, *, chunk_rows: int | None = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """A CSV or Parquet file as frames of at most ``chunk_rows`` rows (None: one frame), so
    memory stays bounded by the chunk, not the file. ``fmt`` None: Parquet when the file
    starts with its magic bytes, else CSV. A file that cannot be read is InvalidFeatureData
    on field ``data``."""
    stream = open(source, "rb") if isinstance(source, Path) else source  # noqa: SIM115 - closed below
    try:
        head = stream.read(4)
        if not head:
            raise InvalidFeatureData("the file is empty")
        stream.seek(0)
        fmt = fmt or ("parquet" if head == b"PAR1" else "csv")
        kind = "Parquet" if fmt == "parquet" else "CSV"
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(stream)
                if chunk_rows is None:
                    yield cast(pd.DataFrame, parquet.read().to_pandas())
                    return
                for batch in parquet.iter_batches(batch_size=chunk_rows):
                    yield cast(pd.DataFrame, batch.to_pandas())
                return
            if chunk_rows is None:
                yield pd.read_csv(stream)
                return
            with pd.read_csv(stream, chunksize=chunk_rows) as reader:
                yield from reader
        except InvalidFeatureData:
            raise
        except Exception as exc:
            message = str(exc)
            raise InvalidFeatureData(f"cannot read the file as {kind}: {message[:200]}") from exc
    finally:
        if isinstance(source, Path):
            stream.close()


def _micros(stamps: pd.Series) -> list[int]:
    """UTC timestamps as microseconds since the epoch."""
    return cast(list[int], stamps.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64).tolist())


# The staged microseconds (see FileImport._write) back to the table's timestamp.
STAGED_STAMP = "timestamptz 'epoch' + \"timestamp\" * interval '1 microsecond' AS \"timestamp\""


def _with_nulls(values: np.ndarray) -> list[Any]:
    """A float column as a list, NaN as None (NULL)."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    return cast(list[Any], out.tolist())


def _q(name: str) -> str:
    return f'"{name}"'


def table_name(tenant_id: str, table: str) -> str:
    """The schema-qualified, quoted name of a tenant's table (checked names only)."""
    return f"{_q(feature_schema(tenant_id))}.{_q(check_identifier(table, 'table'))}"


async def columns_of(conn: db.Connection, table: str) -> list[str] | None:
    """The columns, in order, of the scope tenant's table, or None when it does not exist."""
    tenant_id = scope_of(conn).single()
    rows = await conn.fetch(TABLE_COLUMNS, {"s": feature_schema(tenant_id), "t": check_identifier(table, "table")})
    return [row[0] for row in rows] or None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _timestamps(column: pd.Series) -> pd.Series:
    """An import's timestamps, in UTC; InvalidFeatureData for one that is unreadable or empty."""
    if pd.api.types.is_numeric_dtype(column):  # numbers are not ISO 8601 (and never epochs by accident)
        column = column.astype(str)
    try:
        stamps = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidFeatureData(
            f"column 'timestamp' holds values that are not timestamps: {_short(str(exc), 120)}", field="timestamp"
        ) from exc
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise InvalidFeatureData(f"column 'timestamp' is empty in data row {row + 1} of a chunk", field="timestamp")
    return stamps


async def _prepare_table(conn: db.Connection, tenant_id: str, table: str, value_cols: list[str]) -> None:
    """The tenant's table with these value columns, within the cap (checked here first, for
    a clear error; the database function checks again)."""
    existing = [c for c in (await columns_of(conn, table) or []) if c not in RESERVED]
    added = [c for c in value_cols if c not in existing]
    if len(existing) + len(added) > MAX_VALUE_COLUMNS:
        raise InvalidFeatureData(
            f"features.{table} would have {len(existing) + len(added)} value columns; at most {MAX_VALUE_COLUMNS} are allowed",
            field="columns",
        )
    await conn.execute(PREPARE_TABLE, {"tenant": tenant_id, "table": table, "columns": value_cols, "max_columns": MAX_VALUE_COLUMNS})


Duplicates = Literal["refuse", "first", "last", "mean"]
DUPLICATE_RULES: tuple[Duplicates, ...] = ("refuse", "first", "last", "mean")


@dataclass(frozen=True)
class Imported:
    rows: int  # rows written (inserted or replaced)
    columns: list[str]  # the numeric columns
    duplicates: int  # rows that repeated a (series, timestamp) and were merged by the rule


@dataclass(frozen=True)
class _Prepared:
    value_cols: list[str]
    records: list[tuple[Any, ...]]


class FileImport:
    """One import, chunk by chunk, in the caller's transaction: every chunk is checked and
    COPYed into one staging table (its rows numbered in file order); ``finish`` resolves a
    (series, timestamp) that appears more than once by the rule and upserts the table.

    ``duplicates``: ``refuse`` (an error naming the first repeated timestamp), ``first`` or
    ``last`` (the row that comes first or last in the file), ``mean`` (each column's mean of
    the repeated rows, missing values left out). Across chunks too: the rule is the file's."""

    def __init__(self, conn: db.Connection, table: str, duplicates: Duplicates = "refuse") -> None:
        if duplicates not in DUPLICATE_RULES:
            raise InvalidFeatureData(f"duplicates {duplicates!r} is not one of {', '.join(DUPLICATE_RULES)}", field="duplicates")
        self.conn, self.table, self.duplicates = conn, check_identifier(table, "table"), duplicates
        self.tenant_id = scope_of(conn).single()
        self.staging = f"_import_{table}"
        self.columns: list[str] = []
        self.staged = 0  # rows COPYed into the staging table
        self.numbered = 0  # rows read and numbered (_ord, the file's order)
        self.chunks = 0

    async def add(self, frame: pd.DataFrame) -> None:
        await self._write(self._prepare(frame))

    async def add_all(self, frames: Iterator[pd.DataFrame]) -> None:
        """Every frame of ``frames`` (a file's chunks): each is read and checked in a thread
        while the one before it is COPYed, so PostgreSQL and the parsing work side by side."""
        following = asyncio.ensure_future(asyncio.to_thread(self._prepare_next, frames))
        while (prepared := await following) is not None:
            following = asyncio.ensure_future(asyncio.to_thread(self._prepare_next, frames))
            try:
                await self._write(prepared)
            except BaseException:
                with contextlib.suppress(BaseException):
                    await following  # never leave the thread reading the file behind
                raise

    def _prepare_next(self, frames: Iterator[pd.DataFrame]) -> _Prepared | None:
        frame = next(frames, None)
        return None if frame is None else self._prepare(frame)

    def _prepare(self, frame: pd.DataFrame) -> _Prepared:
        """A chunk checked and turned into COPY records (CPU only: safe in a thread)."""
        series, stamps, values = self._checked(frame)
        value_cols = list(values)
        columns = [_with_nulls(values[c].to_numpy()) for c in value_cols]
        order = range(self.numbered, self.numbered + len(stamps))
        self.numbered += len(stamps)
        records = [
            (self.tenant_id, sid, ts, *row, n) for sid, ts, n, *row in zip(series.tolist(), _micros(stamps), order, *columns, strict=True)
        ]
        return _Prepared(value_cols, records)

    async def _write(self, prepared: _Prepared) -> None:
        value_cols, records = prepared.value_cols, prepared.records
        await _prepare_table(self.conn, self.tenant_id, self.table, value_cols)
        raw = self.conn.raw  # COPY, and statements whose identifiers are checked names
        if self.chunks == 0:
            name = table_name(self.tenant_id, self.table)
            await raw.execute(f"CREATE TEMP TABLE {_q(self.staging)} (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DROP")
            await raw.execute(f"ALTER TABLE {_q(self.staging)} ADD COLUMN _ord bigint")
            # Staged as microseconds since the epoch (an int per row: a datetime each costs
            # more to make and to encode than the rest of the row); finish turns them back.
            await raw.execute(f'ALTER TABLE {_q(self.staging)} ALTER COLUMN "timestamp" TYPE bigint USING 0')
        for col in value_cols:
            if col not in self.columns:
                await raw.execute(f"ALTER TABLE {_q(self.staging)} ADD COLUMN IF NOT EXISTS {_q(col)} double precision")
                self.columns.append(col)
        cols = ["tenant_id", SERIES, "timestamp", *value_cols, "_ord"]
        await raw.copy_records_to_table(self.staging, records=records, columns=cols)
        self.staged += len(records)
        self.chunks += 1

    def _checked(self, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, dict[str, pd.Series]]:
        """A chunk's series ids, UTC timestamps and numeric columns, or InvalidFeatureData;
        a timestamp repeated within the chunk is refused here (naming its row) under ``refuse``."""
        frame = frame.rename(columns=lambda c: str(c).strip())
        if "timestamp" not in frame.columns:
            raise InvalidFeatureData(f"the data has no 'timestamp' column (columns: {_short(', '.join(map(str, frame.columns)))})")
        frame = frame.drop(columns=[c for c in ("tenant_id",) if c in frame.columns])
        series = frame[SERIES].astype(str) if SERIES in frame.columns else pd.Series("", index=frame.index)
        value_cols = [c for c in frame.columns if c not in ("timestamp", SERIES)]
        if not value_cols:
            raise InvalidFeatureData("the data has no value columns besides 'timestamp'")
        for col in value_cols:
            check_identifier(col, "column")
        stamps = _timestamps(frame["timestamp"])
        values = {}
        for col in value_cols:
            converted = pd.to_numeric(frame[col], errors="coerce")
            bad = converted.isna() & frame[col].notna()
            if bad.any():
                example = frame[col][bad].iloc[0]
                raise InvalidFeatureData(f"column {col!r} holds a non-numeric value: {_short(repr(example))}", field=col)
            values[col] = converted.astype("float64")
        if self.duplicates == "refuse":
            # UTC datetime64 (to_numpy() of a tz-aware series makes a Timestamp per row)
            dup = pd.DataFrame({"s": series.to_numpy(), "t": stamps.dt.tz_convert(None).to_numpy()}).duplicated()
            if dup.any():
                where = f" of series {series[dup.to_numpy()].iloc[0]!r}" if SERIES in frame.columns else ""
                raise _repeated(stamps[dup.to_numpy()].iloc[0], where)
        return series, stamps, values

    async def finish(self) -> Imported:
        """Resolve repeated timestamps by the rule and upsert the table; what was written."""
        if not self.chunks:
            return Imported(0, [], 0)
        raw = self.conn.raw
        staging, name = _q(self.staging), table_name(self.tenant_id, self.table)
        keys = 'tenant_id, series_id, "timestamp"'
        # One import of a table at a time (until commit): so that "empty" below stays true.
        await raw.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"aihub-import:{name}")
        empty = await raw.fetchval(f"SELECT NOT EXISTS (SELECT 1 FROM {name})")  # noqa: S608
        value_list = ", ".join(_q(c) for c in self.columns)
        if self.duplicates == "mean":
            means = ", ".join(f"avg({_q(c)}) AS {_q(c)}" for c in self.columns)
            source = f"SELECT tenant_id, series_id, {STAGED_STAMP}, {means} FROM {staging} GROUP BY {keys}"  # noqa: S608
        elif self.duplicates in ("first", "last"):
            direction = "ASC" if self.duplicates == "first" else "DESC"
            source = (
                f"SELECT DISTINCT ON ({keys}) tenant_id, series_id, {STAGED_STAMP}, {value_list} FROM {staging} "  # noqa: S608
                f"ORDER BY {keys}, _ord {direction}"
            )
        else:
            source = f"SELECT tenant_id, series_id, {STAGED_STAMP}, {value_list} FROM {staging}"  # noqa: S608
        updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in self.columns)
        # Into an empty table a plain INSERT (about twice as fast as an upsert); either way a
        # (series, timestamp) the file repeats fails the statement, and is then looked up in
        # the staging table to be named (instead of looking for one in every import).
        upsert = "" if empty else f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        await raw.execute("SAVEPOINT aihub_import")
        try:
            status = await raw.execute(f"INSERT INTO {name} ({keys}, {value_list}) {source}{upsert}")
        except (asyncpg.UniqueViolationError, asyncpg.CardinalityViolationError):
            await raw.execute("ROLLBACK TO SAVEPOINT aihub_import")
            row = await raw.fetchrow(
                f'SELECT series_id, {STAGED_STAMP} FROM {staging} GROUP BY series_id, "timestamp" HAVING count(*) > 1 LIMIT 1'  # noqa: S608
            )
            if row is None:
                raise
            raise _repeated(pd.Timestamp(row["timestamp"]), f" of series {row['series_id']!r}" if row["series_id"] else "") from None
        await raw.execute("RELEASE SAVEPOINT aihub_import")
        await raw.execute(f"DROP TABLE {staging}")
        written = int(status.rsplit(" ", 1)[-1])
        return Imported(written, list(self.columns), self.staged - written)


def _repeated(stamp: pd.Timestamp, where: str) -> InvalidFeatureData:
    return InvalidFeatureData(
        f"timestamp {stamp}{where} appears twice; import with duplicates=first, last or mean to merge repeated timestamps",
        field="timestamp",
    )


async def import_frame(conn: db.Connection, table: str, frame: pd.DataFrame, *, duplicates: Duplicates = "refuse") -> tuple[int, list[str]]:
    """Upsert ``frame`` (a ``timestamp`` column and numeric columns) as the scope tenant's
    rows. Creates the table, and any new column (at most MAX_VALUE_COLUMNS in all), as
    needed. Returns (rows, numeric columns)."""
    load = FileImport(conn, table, duplicates)
    await load.add(frame)
    done = await load.finish()
    return done.rows, done.columns


async def read_frame(
    conn: db.Connection,
    table: str,
    columns: Sequence[str],
    start: datetime,
    end: datetime,
    series: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The scope tenant's rows with ``start <= timestamp <= end`` (of these ``series`` only,
    when given), ordered by series and time: a UTC ``timestamp`` column, ``series_id`` (text;
    '' for a table of one series) and the requested numeric columns."""
    return parse_rows(await copy_rows(conn, table, columns, start, end, series), columns)


async def copy_rows(
    conn: db.Connection,
    table: str,
    columns: Sequence[str],
    start: datetime,
    end: datetime,
    series: Sequence[str] | None = None,
) -> io.BytesIO:
    """``read_frame``'s rows as PostgreSQL's COPY writes them (CSV with a header), for
    ``parse_rows``: the I/O half, so that a caller whose event loop serves others parses in
    its own thread."""
    check_identifier(table, "table")
    tenant_id = scope_of(conn).single()
    existing = await columns_of(conn, table)
    if existing is None:
        raise FeatureTableNotFound(table)
    for col in columns:
        if col not in existing or col in RESERVED:
            raise FeatureColumnNotFound(table, col)
    buf = io.BytesIO()
    query, args = read_query(tenant_id, table, columns, start, end, series)
    await conn.raw.copy_from_query(query, *args, output=buf, format="csv", header=True)
    buf.seek(0)
    return buf


def read_query(
    tenant_id: str, table: str, columns: Sequence[str], start: datetime, end: datetime, series: Sequence[str] | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The statement (and its arguments) that reads a shard: the rows of ``series`` (all when
    None) with ``start <= timestamp <= end``; planned on the table's primary key (tenant_id,
    series_id, timestamp) whichever the shard is cut by (tests/integration/test_shard_reads.py)."""
    col_list = ", ".join(['"timestamp"', SERIES, *(_q(check_identifier(c, "column")) for c in columns)])
    query = (
        f"SELECT {col_list} FROM {table_name(tenant_id, table)} "  # noqa: S608 - checked identifiers
        f'WHERE tenant_id = $1 AND "timestamp" BETWEEN $2 AND $3 {"AND series_id = ANY($4::text[]) " if series is not None else ""}'
        'ORDER BY series_id, "timestamp"'
    )
    return query, (tenant_id, start, end, *([list(series)] if series is not None else []))


async def outline(conn: db.Connection, table: str, start: datetime, end: datetime) -> list[tuple[str, int, datetime, datetime]]:
    """Per series with rows in ``start..end``: (series_id, rows, first and last timestamp),
    in series order; what a distributed job cuts its shards by, read in the database (a
    walk of the primary key's range), not by loading the rows."""
    check_identifier(table, "table")
    tenant_id = scope_of(conn).single()
    if await columns_of(conn, table) is None:
        raise FeatureTableNotFound(table)
    rows = await conn.raw.fetch(*outline_query(tenant_id, table, start, end))
    return [(r["series_id"], int(r["n"]), r["first"], r["last"]) for r in rows]


def outline_query(tenant_id: str, table: str, start: datetime, end: datetime) -> tuple[str, str, datetime, datetime]:
    """The statement of :func:`outline` and its arguments: an index-only walk of the primary
    key (tests/integration/test_shard_reads.py)."""
    query = (
        f'SELECT series_id, count(*) AS n, min("timestamp") AS first, max("timestamp") AS last FROM {table_name(tenant_id, table)} '  # noqa: S608 - checked identifiers
        'WHERE tenant_id = $1 AND "timestamp" BETWEEN $2 AND $3 GROUP BY series_id ORDER BY series_id'
    )
    return query, tenant_id, start, end


def parse_rows(buf: io.BytesIO, columns: Sequence[str]) -> pd.DataFrame:
    """The frame of ``copy_rows``' CSV (see ``read_frame``)."""
    if buf.getbuffer().nbytes == 0:
        return pd.DataFrame(columns=["timestamp", SERIES, *columns])
    frame = pd.read_csv(buf, engine="pyarrow", dtype={SERIES: "str", **dict.fromkeys(columns, "float64")})
    frame[SERIES] = frame[SERIES].fillna("").astype(str)  # '' (one series) reads back as missing
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


async def latest_hours(conn: db.Connection, table: str, column: str, series: Sequence[str] | None = None) -> dict[str, datetime]:
    """Per series (these, or every series of the table), the latest timestamp at which
    ``column`` has a value; a series without one is left out. Each series is one backward
    walk of the primary key (tenant_id, series_id, timestamp), stopping at its first value;
    the table's series are found by a skip scan of the same index, not a scan of its rows."""
    check_identifier(table, "table")
    tenant_id = scope_of(conn).single()
    existing = await columns_of(conn, table)
    if existing is None:
        raise FeatureTableNotFound(table)
    if column not in existing or column in RESERVED:
        raise FeatureColumnNotFound(table, column)
    name = table_name(tenant_id, table)
    latest = (
        f'SELECT "timestamp" FROM {name} WHERE tenant_id = $1 AND series_id = s.series_id '  # noqa: S608 - checked identifiers
        f'AND {_q(column)} IS NOT NULL ORDER BY "timestamp" DESC LIMIT 1'
    )
    if series is not None:
        query = f"SELECT s.series_id, ({latest}) AS latest FROM unnest($2::text[]) AS s(series_id)"  # noqa: S608 - checked identifiers
        rows = await conn.raw.fetch(query, tenant_id, list(series))
    else:
        query = (
            "WITH RECURSIVE s(series_id) AS ("  # noqa: S608 - checked identifiers
            f"  (SELECT series_id FROM {name} WHERE tenant_id = $1 ORDER BY series_id LIMIT 1)"
            f"  UNION ALL SELECT (SELECT series_id FROM {name} WHERE tenant_id = $1 AND series_id > s.series_id "
            "                    ORDER BY series_id LIMIT 1) FROM s WHERE s.series_id IS NOT NULL) "
            f"SELECT s.series_id, ({latest}) AS latest FROM s WHERE s.series_id IS NOT NULL"
        )
        rows = await conn.raw.fetch(query, tenant_id)
    return {row["series_id"]: row["latest"] for row in rows if row["latest"] is not None}


async def count_rows(conn: db.Connection, table: str) -> int:
    """The scope tenant's rows in ``table`` (0 when it has none)."""
    tenant_id = scope_of(conn).single()
    if await columns_of(conn, table) is None:
        return 0
    count = db.sql(f"SELECT count(*) FROM {table_name(tenant_id, table)} WHERE tenant_id = :t")  # noqa: S608 - checked identifiers
    return int(await conn.fetchval(count, {"t": tenant_id}) or 0)
