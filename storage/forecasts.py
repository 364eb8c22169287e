"""The tenant's forecast store: the points scheduled forecasts wrote, one row per (version,
origin, series, hour). One table for every tenant, filtered by row-level security like the
jobs (the feature tables have a schema per tenant because their columns differ; these rows
all have one shape). Writing a firing twice writes the same rows (an upsert on the key), so
a forecast run taken over by another server after a lost lease changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage import db
from storage.records import StoredForecast
from storage.tenancy import scope_of

# write_forecast: one run's points (COPY into a temporary table, then an upsert).
# Index: forecasts_pkey (tenant_id, model_id, origin, series_id, timestamp).
UPSERT = (
    'INSERT INTO forecasts (tenant_id, model_id, origin, series_id, "timestamp", forecast, alias, schedule_id, created_at) '
    'SELECT tenant_id, model_id, origin, series_id, "timestamp", forecast, alias, schedule_id, clock_timestamp() FROM _forecast_rows '
    'ON CONFLICT (tenant_id, model_id, origin, series_id, "timestamp") DO UPDATE SET forecast = EXCLUDED.forecast, '
    "alias = EXCLUDED.alias, schedule_id = EXCLUDED.schedule_id"
)

# list_forecasts: the scope's points with the filters given (a fixed fragment each), newest
# origin first. Index: forecasts_origin (tenant_id, origin DESC).
LIST = (
    "SELECT f.*, v.version AS model_version FROM forecasts f JOIN model_versions v ON v.id = f.model_id "
    "WHERE (CAST(:tenant AS text) IS NULL OR f.tenant_id = :tenant) {filters} "
    'ORDER BY f.origin DESC, f.model_id, f.series_id, f."timestamp" LIMIT :limit OFFSET :offset'
)
FILTERS = {
    "alias": "AND f.alias = :alias",
    "model_id": "AND f.model_id = :model_id",
    "origin": "AND f.origin = :origin",
    "series_id": "AND f.series_id = :series_id",
    "start": 'AND f."timestamp" >= :start',
    "end": 'AND f."timestamp" <= :end',
}


@dataclass(frozen=True)
class Point:
    timestamp: datetime
    series_id: str
    forecast: float
    origin: datetime


async def write(conn: db.Connection, model_id: uuid.UUID, alias: str, schedule_id: uuid.UUID | None, points: Sequence[Point]) -> int:
    """Store one run's points for the scope's tenant; returns how many."""
    tenant_id = scope_of(conn).single()
    raw = conn.raw
    await raw.execute(
        "CREATE TEMP TABLE _forecast_rows (tenant_id text, model_id uuid, origin timestamptz, series_id text, "
        '"timestamp" timestamptz, forecast double precision, alias text, schedule_id uuid) ON COMMIT DROP'
    )
    records = [(tenant_id, model_id, p.origin, p.series_id, p.timestamp, p.forecast, alias, schedule_id) for p in points]
    await raw.copy_records_to_table("_forecast_rows", records=records)
    await raw.execute(UPSERT)
    await raw.execute("DROP TABLE _forecast_rows")
    return len(records)


async def list_points(conn: db.Connection, *, limit: int, offset: int = 0, **filters: object) -> list[StoredForecast]:
    """The scope's points matching ``filters`` (alias, model_id, origin, series_id, start, end)."""
    given = {k: v for k, v in filters.items() if v is not None}
    sql = db.sql(LIST.format(filters=" ".join(FILTERS[k] for k in given)))
    params = {"tenant": scope_of(conn).tenant_id, "limit": limit, "offset": offset, **given}
    return [StoredForecast.from_row(r) for r in await conn.fetch(sql, params)]
