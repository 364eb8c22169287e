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
