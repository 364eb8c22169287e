"""Engines, transactions, migrations, and the one place driver errors become storage errors.

The server holds an ``Engine`` and opens ``transaction(engine)`` blocks; it passes the
``Connection`` to the repositories and never writes SQL itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.errors import DatabaseUnavailable, InvalidData, StorageError
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


# set_scope: the tenant this transaction acts for, which row-level security checks; local to
# the transaction. Index: none (no table read).
SET_SCOPE = sa.text("SELECT set_config('aihub.tenant_id', :tenant, true)")
ROLES = (SERVICE_ROLE, DISPATCHER_ROLE)


def create_engine(url: str, *, role: str | None = SERVICE_ROLE, pool_size: int = 10) -> AsyncEngine:
    """An engine whose every session acts as ``role`` (SET ROLE on connect): the service's
    by default, the dispatcher's for the claim loop; None keeps the URL's own user (the
    tables' owner: migrations and administration only)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    engine = create_async_engine(
        async_url(url),
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


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine, scope: Scope | None = None) -> AsyncIterator[AsyncConnection]:
    """A transaction the caller owns, acting for ``scope`` (one tenant or every tenant; the
    repositories of tenant data need one). Driver failures surface as storage errors: a
    value PostgreSQL refuses (SQLSTATE class 22) as InvalidData, never its message."""
    try:
        async with engine.begin() as conn:
            if scope is not None:
                await conn.execute(SET_SCOPE, {"tenant": scope.setting})
            conn.info[SCOPE_KEY] = scope
            try:
                yield conn
            finally:
                # A connection whose statement was cancelled cannot even show its info; that
                # must not replace the CancelledError (or the error) that ends the block.
                with contextlib.suppress(SQLAlchemyError):
                    conn.info.pop(SCOPE_KEY, None)
    except StorageError:
        raise
    except (OperationalError, InterfaceError, OSError, asyncpg.exceptions.ConnectionDoesNotExistError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except DBAPIError as exc:
        sqlstate = _sqlstate(exc)
        if exc.connection_invalidated or _unavailable(sqlstate):
            raise DatabaseUnavailable(f"database unavailable (SQLSTATE {sqlstate})") from exc
        if sqlstate.startswith("22"):
            raise InvalidData(sqlstate) from exc
        raise StorageError(f"database error (SQLSTATE {sqlstate or 'unknown'})") from exc
    except (asyncpg.exceptions.DataError, UnicodeEncodeError) as exc:  # raw asyncpg (COPY) and strings PostgreSQL cannot hold
        raise InvalidData(getattr(exc, "sqlstate", None) or "22021") from exc
    except asyncpg.exceptions.PostgresError as exc:  # raw asyncpg, anything else
        if _unavailable(str(exc.sqlstate)):
            raise DatabaseUnavailable(f"database unavailable (SQLSTATE {exc.sqlstate})") from exc
        raise StorageError(f"database error (SQLSTATE {exc.sqlstate})") from exc


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
