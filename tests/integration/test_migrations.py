"""The table definitions in storage/tables.py match what the migrations create: Alembic's
autogenerate finds nothing to add, drop or change."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from storage import db
from storage.tables import metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _diff(connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(context, metadata)


async def test_autogenerate_finds_no_difference(database_url):
    engine = create_async_engine(db.async_url(database_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []


async def test_the_comparison_sees_a_missing_index(database_url):
    # The check itself: an index the model declares but the database lacks is reported.
    engine = create_async_engine(db.async_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP INDEX training_jobs_running")
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert [d[0] for d in diff] == ["add_index"] and diff[0][1].name == "training_jobs_running"


async def test_0006_moves_shared_feature_tables_into_tenant_schemas_and_loses_nothing(pg_url):
    import asyncio

    import asyncpg
    from alembic import command
    from alembic.config import Config

    from storage.tenancy import feature_schema
    from tests.conftest import empty_database

    url = await empty_database(pg_url, "before_0006")
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.async_url(url).replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, cfg, "0005")
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        # The shared table as 0005 left it: two tenants, a junk column only one of them filled,
        # and rows of a tenant id that is not a slug.
        await conn.execute("CREATE SCHEMA IF NOT EXISTS features")
        await conn.execute(
            "CREATE TABLE features.load_forecasting (tenant_id text NOT NULL, series_id text NOT NULL DEFAULT '', "
            '"timestamp" timestamptz NOT NULL, load float8, temperature float8, junk float8, '
            'PRIMARY KEY (tenant_id, series_id, "timestamp"))'
        )
        await conn.execute(
            'INSERT INTO features.load_forecasting (tenant_id, "timestamp", load, temperature, junk) VALUES '
            "('acme-corp', '2024-01-01T00:00Z', 1, 10, NULL), ('acme-corp', '2024-01-01T01:00Z', 2, 11, NULL), "
            "('globex', '2024-01-01T00:00Z', 5, NULL, 7), ('../x', '2024-01-01T00:00Z', 9, 9, 9)"
        )
        await asyncio.to_thread(command.upgrade, cfg, "head")
        acme, globex = feature_schema("acme-corp"), feature_schema("globex")
        rows = await conn.fetch(f'SELECT "timestamp", load, temperature FROM "{acme}".load_forecasting ORDER BY 1')  # noqa: S608
        assert [(r["load"], r["temperature"]) for r in rows] == [(1, 10), (2, 11)]
        acme_columns = {
            r["column_name"] for r in await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1", acme)
        }
        assert acme_columns == {"tenant_id", "series_id", "timestamp", "load", "temperature"}  # not globex's junk
        assert await conn.fetchval(f'SELECT junk FROM "{globex}".load_forecasting') == 7  # noqa: S608
        # The old table is kept, whole, including the rows no slug owns.
        assert await conn.fetchval("SELECT count(*) FROM features_legacy.load_forecasting") == 4
        assert await conn.fetchval("SELECT to_regnamespace('features')") is None
    finally:
        await conn.close()
