"""Engines, transactions, migrations, and the one place driver errors become storage errors.

The server holds an ``Engine`` and opens ``transaction(engine)`` blocks; it passes the
``Connection`` to the repositories and never writes SQL itself.

Transactions are begun and ended here, not by SQLAlchemy (its engines run in AUTOCOMMIT
mode): BEGIN and the transaction's tenant scope go in one round trip. A single statement (a
read, or a write that is one statement, such as a job's completion) runs outside a
transaction (``single``), the scope a session setting of the pooled connection sent only when
it changes: one round trip. The hottest statements (reading a job; the queue's claim and
completion) run on the driver itself (``fetch`` below): SQLAlchemy's per-statement work was
most of the CPU a job read cost, and every round trip costs system calls."""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.errors import DatabaseUnavailable, InvalidData, StorageError
from storage.records import Row
from storage.tenancy import DISPATCHER_ROLE, SCOPE_KEY, SERVICE_ROLE, Scope

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# What the server holds and passes to the repositories.
Engine = AsyncEngine
Connection = AsyncConnection


def async_url(url: str) -> str:
    """Normalise any postgres URL to the asyncpg dialect SQLAlchemy needs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    """The same URL as asyncpg itself takes it (for LISTEN connections and COPY)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


ROLES = (SERVICE_ROLE, DISPATCHER_ROLE)


def create_engine(url: str, *, role: str | None = SERVICE_ROLE, pool_size: int = 10) -> AsyncEngine:
    """An engine whose every session acts as ``role`` (SET ROLE on connect): the service's
    by default, the dispatcher's for the claim loop; None keeps the URL's own user (the
    tables' owner: migrations and administration only)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    engine = create_async_engine(
        async_url(url),
        # transaction() begins and ends every transaction itself (see the module's doc).
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping (it costs a round trip per request): a connection broken by a
        # database restart fails one transaction, which surfaces as DatabaseUnavailable.
        pool_recycle=1800,
        # Job rows carry JSONB; asyncpg's defaults are fine, timestamps are timestamptz in UTC.
        connect_args={"server_settings": {"timezone": "UTC", "application_name": "aihub-training"}},
    )

    @event.listens_for(engine.sync_engine, "handle_error")
    def _broken_connection(context: Any) -> None:
        # A connection left mid-operation (its call was cancelled while PostgreSQL was
        # going away) fails its next use with asyncpg's InternalClientError: it is broken,
        # not the request; the pool drops it and the caller sees DatabaseUnavailable.
        cause = getattr(context.original_exception, "__cause__", None)
        if isinstance(cause, asyncpg.exceptions._base.InternalClientError):
            context.is_disconnect = True

    if role is not None:

        @event.listens_for(engine.sync_engine, "connect")
        def _as_role(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET ROLE {role}")  # one of ROLES, checked above
            cursor.close()

    return engine


# SQLSTATEs that mean "the database cannot serve now, try again": connection exceptions
# (class 08), shutting down or starting up (57P01 admin_shutdown, 57P02 crash_shutdown,
# 57P03 cannot_connect_now: "the database system is shutting down / starting up"), and too
# many connections (53300).
UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return str(state)
    return ""


def _unavailable(sqlstate: str) -> bool:
    return sqlstate.startswith(UNAVAILABLE_STATES)


RAW_KEY = "aihub.driver"  # conn.info: the asyncpg connection of a transaction or a single statement


def _literal(value: str) -> str:
    """A string as an SQL literal (standard_conforming_strings is on, PostgreSQL's default)."""
    if "\x00" in value:
        raise ValueError("a NUL character cannot be sent to PostgreSQL")
    return "'" + value.replace("'", "''") + "'"


# The value of aihub.tenant_id each pooled connection's session holds (set by ``single``; a
# connection not here holds none we know of). Written only after PostgreSQL confirmed it.
_SESSION_SCOPE: weakref.WeakKeyDictionary[asyncpg.Connection, str] = weakref.WeakKeyDictionary()


def _setting(scope: Scope | None) -> str:
    """The value of aihub.tenant_id ``scope`` needs ('' for none: row-level security then
    shows nothing)."""
    return scope.setting if scope is not None else ""


async def _enter(conn: AsyncConnection, scope: Scope | None, *, begin: bool) -> asyncpg.Connection:
    """The checked-out connection's driver, acting for ``scope``, in one simple-query round
    trip at most (no table read).

    In a transaction (``begin``) the scope is local to it, always sent with BEGIN: whatever
    the transaction ends with, the session keeps its own value. Outside one (``single``) it is
    the session's value, sent only when it changes: each statement then is its own
    transaction and the setting commits at once."""
    raw = cast(asyncpg.Connection, (await conn.get_raw_connection()).driver_connection)
    want = _setting(scope)
    if begin:
        script: str | None = f"BEGIN; SELECT set_config('aihub.tenant_id', {_literal(want)}, true)"
    else:
        script = None if _SESSION_SCOPE.get(raw) == want else f"SELECT set_config('aihub.tenant_id', {_literal(want)}, false)"
    try:
        if script:
            await raw.execute(script)
    except BaseException:
        _SESSION_SCOPE.pop(raw, None)
        with contextlib.suppress(Exception):
            await conn.invalidate()
        raise
    if not begin:
        _SESSION_SCOPE[raw] = want
    conn.info[SCOPE_KEY], conn.info[RAW_KEY] = scope, raw
    return raw


def _leave(conn: AsyncConnection) -> None:
    # An invalidated connection has nothing to forget (reading its info would make SQLAlchemy
    # start a new connection here, outside its greenlet: a coroutine never awaited). One
    # whose statement was cancelled cannot even show its info; that must not replace the
    # CancelledError (or the error) that ends the block.
    if conn.invalidated:
        return
    with contextlib.suppress(SQLAlchemyError):
        conn.info.pop(SCOPE_KEY, None)
        conn.info.pop(RAW_KEY, None)


async def _abandon(conn: AsyncConnection, raw: asyncpg.Connection) -> None:
    """End a transaction that did not complete: ROLLBACK, or, when the connection cannot even
    do that (it broke, or a cancelled statement still occupies it), drop it from the pool so
    no later transaction inherits its state."""
    try:
        if raw.is_closed():
            raise asyncpg.exceptions.ConnectionDoesNotExistError("closed")
        await raw.execute("ROLLBACK")
    except (Exception, asyncio.CancelledError) as exc:
        with contextlib.suppress(Exception):
            await conn.invalidate()
        if isinstance(exc, asyncio.CancelledError):
            raise


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine, scope: Scope | None = None) -> AsyncIterator[AsyncConnection]:
    """A transaction the caller owns, acting for ``scope`` (one tenant or every tenant; the
    repositories of tenant data need one). Committed when the block ends, rolled back when it
    raises. Driver failures surface as storage errors: a value PostgreSQL refuses (SQLSTATE
    class 22) as InvalidData, never its message."""
    try:
        async with engine.connect() as conn:
            raw = await _enter(conn, scope, begin=True)
            try:
                yield conn
            except BaseException:
                await _abandon(conn, raw)
                raise
            else:
                await _commit(conn, raw)
            finally:
                _leave(conn)
    except Exception as exc:  # noqa: BLE001 - re-raised: as a storage error, or unchanged
        _raise_as_storage_error(exc)


@contextlib.asynccontextmanager
async def single(engine: AsyncEngine, scope: Scope | None = None) -> AsyncIterator[AsyncConnection]:
    """A connection for one statement outside an explicit transaction, acting for ``scope``:
    the statement is its own transaction (it sees the database as of its start, and what it
    writes commits when it ends). For a read (a job, a page of jobs) or a write that is one
    statement (queue.complete), this is what a transaction would give, in one round trip
    instead of three. Run more than one statement here only where each may stand alone.
    Errors surface as in ``transaction``."""
    try:
        async with engine.connect() as conn:
            await _enter(conn, scope, begin=False)
            try:
                yield conn
            except asyncio.CancelledError:
                # A cancelled statement may still occupy the connection: not back to the pool.
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                raise
            finally:
                _leave(conn)
    except Exception as exc:  # noqa: BLE001 - re-raised: as a storage error, or unchanged
        _raise_as_storage_error(exc)


async def _commit(conn: AsyncConnection, raw: asyncpg.Connection) -> None:
    try:
        status = await raw.execute("COMMIT")
    except BaseException:
        await _abandon(conn, raw)
        raise
    if status != "COMMIT":  # a statement failed and the caller went on: nothing was written
        raise StorageError("the transaction was aborted by an earlier error and rolled back")


def _raise_as_storage_error(exc: Exception) -> NoReturn:
    mapped = _storage_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _storage_error(exc: Exception) -> Exception:
    """The storage error a driver failure surfaces as (others pass through unchanged)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OperationalError | InterfaceError | OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return DatabaseUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, asyncpg.exceptions.InterfaceError | asyncpg.exceptions._base.InternalClientError):  # raw: the connection broke
        return DatabaseUnavailable(f"database unavailable: {type(exc).__name__}")
    if isinstance(exc, DBAPIError):
        sqlstate = _sqlstate(exc)
        if exc.connection_invalidated or _unavailable(sqlstate):
            return DatabaseUnavailable(f"database unavailable (SQLSTATE {sqlstate})")
        if sqlstate.startswith("22"):
            return InvalidData(sqlstate)
        return StorageError(f"database error (SQLSTATE {sqlstate or 'unknown'})")
    if isinstance(exc, asyncpg.exceptions.DataError | UnicodeEncodeError):  # raw asyncpg and strings PostgreSQL cannot hold
        return InvalidData(getattr(exc, "sqlstate", None) or "22021")
    if isinstance(exc, asyncpg.exceptions.PostgresError):  # raw asyncpg, anything else
        if _unavailable(str(exc.sqlstate)):
            return DatabaseUnavailable(f"database unavailable (SQLSTATE {exc.sqlstate})")
        return StorageError(f"database error (SQLSTATE {exc.sqlstate})")
    return exc


_COMPILED: dict[sa.TextClause, tuple[str, tuple[str, ...]]] = {}


def _compiled(conn: AsyncConnection, stmt: sa.TextClause) -> tuple[str, tuple[str, ...]]:
    """The statement as the driver takes it ($1, $2 ...) and its parameters' names in order."""
    found = _COMPILED.get(stmt)
    if found is None:
        compiled = stmt.compile(dialect=conn.dialect)
        found = _COMPILED[stmt] = (compiled.string, tuple(compiled.positiontup or ()))
    return found


async def fetch(conn: AsyncConnection, stmt: sa.TextClause, params: Mapping[str, Any] | None = None) -> Sequence[Row]:
    """Run a named statement on the driver, in the transaction of ``conn``: its rows, read by
    column name as SQLAlchemy's mappings are. For the hot paths; errors surface through
    transaction() as storage errors. (A connection not opened by transaction(), such as a
    test's, runs it through SQLAlchemy.)"""
    params = params or {}
    raw = conn.info.get(RAW_KEY)
    if raw is None:
        return cast(Sequence[Row], (await conn.execute(stmt, params)).mappings().all())
    sql, names = _compiled(conn, stmt)
    return cast(Sequence[Row], await raw.fetch(sql, *(params[name] for name in names)))


# ping: whether the database answers. Index: none.
PING = sa.text("SELECT 1")


async def ping(engine: AsyncEngine) -> None:
    """Raise DatabaseUnavailable unless the database answers."""
    async with transaction(engine) as conn:
        await conn.execute(PING)


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (alembic upgrade head). Blocking."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


SAVEPOINT_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@contextlib.asynccontextmanager
async def savepoint(conn: AsyncConnection, name: str = "aihub_step") -> AsyncIterator[None]:
    """A part of the transaction that can fail alone: what it wrote is undone and its error
    raised; the transaction goes on. ``name`` is an identifier of ours (checked); the
    statements go to the driver as they are, nothing compiled or cached per call."""
    if not SAVEPOINT_NAME.match(name):
        raise ValueError(f"not a savepoint name: {name!r}")

    async def run(sql: str) -> None:
        raw = conn.info.get(RAW_KEY)
        if raw is None:
            await conn.exec_driver_sql(sql)
        else:
            await raw.execute(sql)

    await run(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        await run(f"ROLLBACK TO SAVEPOINT {name}")
        raise
    await run(f"RELEASE SAVEPOINT {name}")
