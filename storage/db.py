"""Engines, transactions, migrations, and the one place driver errors become storage errors.

The server holds an ``Engine`` and opens ``transaction(engine)`` blocks; it passes the
``Connection`` to the repositories and never writes SQL itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.errors import DatabaseUnavailable, StorageError

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


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping (it costs a round trip per request): a connection broken by a
        # database restart fails one transaction, which surfaces as DatabaseUnavailable.
        pool_recycle=1800,
        # Job rows carry JSONB; asyncpg's defaults are fine, timestamps are timestamptz in UTC.
        connect_args={"server_settings": {"timezone": "UTC", "application_name": "aihub-training"}},
    )


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction the caller owns; driver failures surface as storage errors."""
    try:
        async with engine.begin() as conn:
            yield conn
    except StorageError:
        raise
    except (OperationalError, InterfaceError, OSError, asyncpg.exceptions.ConnectionDoesNotExistError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig}") from exc


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (alembic upgrade head). Blocking."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
