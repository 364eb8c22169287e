"""storage.db.transaction begins and ends transactions itself (BEGIN and the tenant scope in
one round trip; SQLAlchemy's engine in AUTOCOMMIT mode). What that must never do: leave a
pooled connection inside a transaction, let one transaction's tenant scope reach the next, or
report a commit that did not happen."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
import sqlalchemy as sa

from storage import db
from storage.errors import StorageError
from storage.tenancy import Scope

SETTING = sa.text("SELECT current_setting('aihub.tenant_id', true)")
IN_TRANSACTION = sa.text("SELECT now() = statement_timestamp()")  # false inside a transaction begun earlier
MAKE = sa.text("CREATE TABLE IF NOT EXISTS t_probe (v int)")
PUT = sa.text("INSERT INTO t_probe VALUES (:v)")
COUNT = sa.text("SELECT count(*) FROM t_probe")


@pytest_asyncio.fixture(loop_scope="session")
async def engine(database_url):
    engine = db.create_engine(database_url, role=None, pool_size=1)  # one connection: every transaction reuses it
    async with db.transaction(engine) as conn:
        await conn.execute(MAKE)
    yield engine
    await engine.dispose()


async def _count(engine) -> int:
    async with db.transaction(engine) as conn:
        return int((await conn.execute(COUNT)).scalar_one())


async def test_a_block_that_ends_commits_and_one_that_raises_rolls_back(engine):
    async with db.transaction(engine) as conn:
        await conn.execute(PUT, {"v": 1})
        rows = await db.fetch(conn, COUNT)  # the driver's statements see the same transaction
        assert rows[0]["count"] == 1
    with pytest.raises(RuntimeError):
        async with db.transaction(engine) as conn:
            await conn.execute(PUT, {"v": 2})
            raise RuntimeError("the caller failed")
    assert await _count(engine) == 1


async def test_the_scope_is_the_transactions_own(engine):
    async with db.transaction(engine, Scope.of("acme-corp")) as conn:
        assert (await conn.execute(SETTING)).scalar_one() == "acme-corp"
        await asyncio.sleep(0.01)
        assert (await conn.execute(IN_TRANSACTION)).scalar_one() is False  # BEGIN came first
    async with db.transaction(engine) as conn:  # the same pooled connection, no scope
        assert (await conn.execute(SETTING)).scalar_one() in (None, "")
    # Tenant ids are slugs (Scope.of refuses a quote); were one to get through, it is sent as data.
    async with db.transaction(engine, Scope("o'brien-co")) as conn:
        assert (await conn.execute(SETTING)).scalar_one() == "o'brien-co"


async def test_a_failed_statement_the_caller_swallowed_does_not_commit(engine):
    with pytest.raises(StorageError, match="aborted"):
        async with db.transaction(engine) as conn:
            await conn.execute(PUT, {"v": 3})
            with pytest.raises(Exception, match="division by zero"):
                await db.fetch(conn, sa.text("SELECT 1/0"))
    assert await _count(engine) == 0


@pytest.mark.parametrize("through", ["sqlalchemy", "driver"])
async def test_a_cancelled_transaction_leaves_no_open_transaction_behind(engine, through):
    async def slow() -> None:
        async with db.transaction(engine, Scope.of("acme-corp")) as conn:
            await conn.execute(PUT, {"v": 4})
            if through == "driver":
                await db.fetch(conn, sa.text("SELECT pg_sleep(5)"))
            else:
                await conn.execute(sa.text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The one pooled connection (or its replacement) is outside any transaction: the insert
    # is gone and the scope did not survive.
    async with db.transaction(engine) as conn:
        assert (await conn.execute(SETTING)).scalar_one() in (None, "")
    assert await _count(engine) == 0
