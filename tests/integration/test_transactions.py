"""storage.db.transaction begins and ends transactions itself on the pooled asyncpg
connection, and the tenant scope is a session setting of each pooled connection, sent only
when it changes; storage.db.single runs one statement without a transaction. What that must never do:
leave a pooled connection inside a transaction, let one caller's tenant scope reach the next,
or report a commit that did not happen."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from storage import db
from storage.errors import InvalidTenantId, StorageError
from storage.tenancy import Scope

# A coroutine left unawaited (a connection reopened outside its task) fails the test.
pytestmark = [
    pytest.mark.filterwarnings("error:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

SETTING = db.sql("SELECT current_setting('aihub.tenant_id', true)")
IN_TRANSACTION = db.sql("SELECT now() = statement_timestamp()")  # false inside a transaction begun earlier
MAKE = db.sql("CREATE TABLE IF NOT EXISTS t_probe (v int)")
PUT = db.sql("INSERT INTO t_probe VALUES (:v)")
COUNT = db.sql("SELECT count(*) FROM t_probe")


@pytest_asyncio.fixture(loop_scope="session")
async def engine(database_url):
    engine = db.create_engine(database_url, role=None, pool_size=1)  # one connection: every transaction reuses it
    async with db.transaction(engine) as conn:
        await conn.execute(MAKE)
    yield engine
    await engine.dispose()


async def _count(engine) -> int:
    async with db.transaction(engine) as conn:
        return int(await conn.fetchval(COUNT))


async def test_a_block_that_ends_commits_and_one_that_raises_rolls_back(engine):
    async with db.transaction(engine) as conn:
        await conn.execute(PUT, {"v": 1})
        rows = await conn.fetch(COUNT)  # every statement of the block sees the same transaction
        assert rows[0]["count"] == 1
    with pytest.raises(RuntimeError):
        async with db.transaction(engine) as conn:
            await conn.execute(PUT, {"v": 2})
            raise RuntimeError("the caller failed")
    assert await _count(engine) == 1


async def test_the_scope_is_the_transactions_own(engine):
    async with db.transaction(engine, Scope.of("acme-corp")) as conn:
        assert await conn.fetchval(SETTING) == "acme-corp"
        await asyncio.sleep(0.01)
        assert await conn.fetchval(IN_TRANSACTION) is False  # BEGIN came first
    async with db.transaction(engine) as conn:  # the same pooled connection, no scope
        assert await conn.fetchval(SETTING) in (None, "")
    async with db.single(engine, Scope.of("globex")) as conn:
        assert (await conn.fetch(SETTING))[0][0] == "globex"
    async with db.single(engine, Scope.ALL) as conn:
        assert await conn.fetchval(SETTING) == "*"
    async with db.single(engine) as conn:
        assert await conn.fetchval(SETTING) in (None, "")
    # Tenant ids are slugs (Scope.of refuses a quote); were one to get past it, the transaction
    # refuses it before anything is sent (the setting stands in BEGIN's script as it is).
    with pytest.raises(InvalidTenantId):
        async with db.transaction(engine, Scope("o'brien-co")):
            pass
    with pytest.raises(InvalidTenantId):
        async with db.single(engine, Scope("x', true); DROP TABLE t_probe; --")):
            pass
    assert await _count(engine) == 0  # t_probe is still there


async def test_a_failed_statement_the_caller_swallowed_does_not_commit(engine):
    with pytest.raises(StorageError, match="aborted"):
        async with db.transaction(engine) as conn:
            await conn.execute(PUT, {"v": 3})
            with pytest.raises(Exception, match="division by zero"):
                await conn.fetch(db.sql("SELECT 1/0"))
    assert await _count(engine) == 0


async def test_a_transaction_that_rolls_back_leaves_no_scope_behind(engine):
    async with db.single(engine, Scope.of("initech")) as conn:  # the session's scope
        await conn.execute(SETTING)
    with pytest.raises(RuntimeError):
        async with db.transaction(engine, Scope.of("hooli")) as conn:
            assert await conn.fetchval(SETTING) == "hooli"
            raise RuntimeError("refused")
    async with db.transaction(engine) as conn:  # no scope: none, whatever the session holds
        assert await conn.fetchval(SETTING) == ""
    async with db.single(engine, Scope.of("hooli")) as conn:
        assert await conn.fetchval(SETTING) == "hooli"
    async with db.single(engine, Scope.of("initech")) as conn:
        assert await conn.fetchval(SETTING) == "initech"


async def test_a_single_statement_commits_what_it_writes(engine):
    async with db.single(engine) as conn:
        await conn.fetch(PUT, {"v": 5})
    assert await _count(engine) == 1


async def test_a_new_connection_gets_its_scope_sent_not_assumed(engine):
    async with db.transaction(engine, Scope.of("acme-corp")):
        pass
    # The pool drops the connection (as after an error): the next caller's connection is new,
    # and the scope it needs is sent to it even though the last one asked for the same.
    async with db.single(engine) as conn:
        conn.raw.terminate()
    async with db.single(engine, Scope.of("acme-corp")) as conn:
        assert await conn.fetchval(SETTING) == "acme-corp"


async def test_a_cancelled_single_statement_does_not_hand_a_busy_connection_to_the_next_caller(engine):
    async def slow() -> None:
        async with db.single(engine, Scope.of("acme-corp")) as conn:
            await conn.fetch(db.sql("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.single(engine, Scope.of("globex")) as conn:  # answers at once, with its own scope
        assert (await asyncio.wait_for(conn.fetch(SETTING), 2))[0][0] == "globex"


@pytest.mark.parametrize("through", ["fetch", "execute"])
async def test_a_cancelled_transaction_leaves_no_open_transaction_behind(engine, through):
    async def slow() -> None:
        async with db.transaction(engine, Scope.of("acme-corp")) as conn:
            await conn.execute(PUT, {"v": 4})
            if through == "fetch":
                await conn.fetch(db.sql("SELECT pg_sleep(5)"))
            else:
                await conn.execute(db.sql("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The one pooled connection (or its replacement) is outside any transaction: the insert
    # is gone and the scope did not survive.
    async with db.transaction(engine) as conn:
        assert await conn.fetchval(SETTING) in (None, "")
    assert await _count(engine) == 0


PREPARED = db.sql("SELECT count(*) FROM pg_prepared_statements")


async def test_a_savepoint_undoes_its_part_alone_and_prepares_nothing_per_call(engine):
    async def rounds(n: int) -> None:
        for _ in range(n):
            async with db.transaction(engine) as conn:
                async with db.savepoint(conn):
                    await conn.execute(PUT, {"v": 9})
                with pytest.raises(RuntimeError):
                    async with db.savepoint(conn):
                        await conn.execute(PUT, {"v": 10})
                        raise RuntimeError("this part fails")

    async def prepared() -> int:
        async with db.single(engine) as conn:  # the same pooled connection (one at a time)
            return int(await conn.fetchval(PREPARED))

    await rounds(1)
    assert await _count(engine) == 1
    before = await prepared()
    await rounds(19)
    assert await _count(engine) == 20  # every kept part, none of the failed ones
    assert await prepared() == before  # a savepoint is not a new statement to prepare and keep
    with pytest.raises(ValueError, match="savepoint name"):
        async with db.transaction(engine) as conn, db.savepoint(conn, "x; DROP TABLE t_probe"):
            pass
