"""The one way the service talks to PostgreSQL: asyncpg, with named SQL.

Every statement is a :class:`Query`: SQL written with ``:name`` parameters, turned into the
driver's ``$1, $2 ...`` once, where it is defined (a module constant), and run on an asyncpg
connection. SQLAlchemy describes the tables (storage/tables.py) for Alembic's migrations and
nothing else: there is no ORM, no compiled-statement cache, and one row type, asyncpg's
``Record`` (``storage.records.Row``, read by column name).

The server holds an :class:`Engine` (a pool of connections acting as one role) and opens
``transaction(engine, scope)`` blocks, or ``single(engine, scope)`` for one statement; it
passes the :class:`Connection` to the repositories and never writes SQL itself.
Transactions are begun and ended here and only here: BEGIN and the transaction's tenant
scope go in one round trip, COMMIT or ROLLBACK in another. A single statement runs outside a
transaction (it is its own), the scope a session setting of the pooled connection, sent only
when it changes. Driver failures become storage errors here too (``_storage_error``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, cast

import asyncpg
from sqlalchemy.engine import make_url

from storage.errors import DatabaseUnavailable, InvalidData, StorageError
from storage.records import Row
from storage.tenancy import ALL_TENANTS, DISPATCHER_ROLE, SERVICE_ROLE, Scope, check_tenant_id

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ROLES = (SERVICE_ROLE, DISPATCHER_ROLE)

# A :name parameter outside string literals, quoted identifiers, comments and :: casts (the
# rule SQLAlchemy's text() follows: not after a word character, a colon or a backslash).
_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|::|(?<![:\w\\]):([A-Za-z_]\w*)(?!:)""")


class Query:
    """A named statement: ``text`` as written (``:name`` parameters), ``sql`` as the driver
    takes it (``$1 ...``), and ``names``, the parameter each ``$n`` reads (a name used twice
    is read twice)."""

    __slots__ = ("names", "sql", "text")

    def __init__(self, text: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return match.group(0)
            # Each use its own $n, as SQLAlchemy numbers them: PostgreSQL infers each one's
            # type from where it stands (a NULL test and a comparison may want different ones).
            names.append(name)
            return f"${len(names)}"

        self.text = text
        self.sql = _TOKENS.sub(number, text)
        self.names = tuple(names)

    def args(self, params: Mapping[str, Any] | None) -> tuple[Any, ...]:
        """The positional arguments for ``params`` (every name the statement uses)."""
        if not self.names:
            return ()
        if params is None:
            raise KeyError(f"the statement needs {', '.join(self.names)}")
        return tuple(params[name] for name in self.names)

    def __repr__(self) -> str:
        return f"Query({self.text.strip()[:60]!r})"


def sql(text: str) -> Query:
    """A named statement (see :class:`Query`)."""
    return Query(text)


def _count(status: str) -> int:
    """The rows a command's status names ('UPDATE 3', 'INSERT 0 1', 'DELETE 0'), else 0."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class Connection:
    """A pooled asyncpg connection in a transaction (or a single statement), acting for
    ``scope`` (None: no tenant; row-level security then shows no tenant's rows)."""

    __slots__ = ("raw", "scope")

    def __init__(self, raw: asyncpg.Connection, scope: Scope | None) -> None:
        self.raw, self.scope = raw, scope

    async def fetch(self, query: Query, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await self.raw.fetch(query.sql, *query.args(params))

    async def fetchrow(self, query: Query, params: Mapping[str, Any] | None = None) -> Row | None:
        return await self.raw.fetchrow(query.sql, *query.args(params))

    async def one(self, query: Query, params: Mapping[str, Any] | None = None) -> Row:
        """The one row a statement returns (an INSERT ... RETURNING): StorageError if none."""
        row = await self.raw.fetchrow(query.sql, *query.args(params))
        if row is None:
            raise StorageError("a statement that returns a row returned none")
        return row

    async def fetchval(self, query: Query, params: Mapping[str, Any] | None = None) -> Any:
        return await self.raw.fetchval(query.sql, *query.args(params))

    async def execute(self, query: Query, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement for its effect: the rows it changed."""
        # Without arguments asyncpg uses the simple protocol: nothing is prepared.
        return _count(await self.raw.execute(query.sql, *query.args(params)))


def async_url(url: str) -> str:
    """Any postgres URL in the asyncpg dialect SQLAlchemy needs (Alembic's migrations)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    """The same URL as asyncpg itself takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _no_reset(_raw: asyncpg.Connection) -> None:
    """A connection back in the pool keeps its session: transaction() always ends its
    transaction itself (asyncpg rolls back one left open), and the session's tenant setting is
    ours to keep (``single`` sends it only when it changes). asyncpg's default reset would
    also undo SET ROLE and cost a round trip per use."""


class _Driver(asyncpg.Connection):
    """asyncpg's connection, remembering the session value of aihub.tenant_id it holds (set
    by ``single``; None: none we know of). Written only after PostgreSQL confirmed it."""

    __slots__ = ("_aihub_setting",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aihub_setting: str | None = None

    def tenant_setting(self) -> str | None:
        return self._aihub_setting

    def remember_tenant_setting(self, value: str | None) -> None:
        self._aihub_setting = value


class Engine:
    """A pool of connections to one database, each acting as ``role`` (SET ROLE when it
    connects): the service's by default, the dispatcher's for the claim loop; None keeps the
    URL's own user (the tables' owner: migrations and administration only). The pool is made
    on first use, in the event loop that uses it; ``dispose`` closes it (the next use opens
    a new one)."""

    def __init__(self, url: str, *, role: str | None = SERVICE_ROLE, pool_size: int = 10) -> None:
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.url, self.role, self.pool_size = url, role, pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None

    async def _init(self, raw: asyncpg.Connection) -> None:
        if self.role is not None:
            await raw.execute(f"SET ROLE {self.role}")  # one of ROLES, checked above

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    asyncpg_dsn(self.url),
                    min_size=0,
                    max_size=self.pool_size * 2,
                    init=self._init,
                    reset=_no_reset,
                    connection_class=_Driver,
                    max_inactive_connection_lifetime=1800,
                    statement_cache_size=256,
                    # Timestamps are timestamptz, read and written in UTC; JSONB goes as text.
                    server_settings={"timezone": "UTC", "application_name": "aihub-training"},
                )
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Driver]:
        pool = await self.pool()
        raw = cast(_Driver, await pool.acquire())  # a proxy of a _Driver: its methods are the driver's
        try:
            yield raw
        finally:
            await pool.release(raw)  # type: ignore[arg-type]  # the proxy acquire() gave

    async def dispose(self) -> None:
        """Close the pool: its idle connections now, the ones in use when they come back
        (or, past a few seconds, at once)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 5)
        except (TimeoutError, Exception):  # noqa: BLE001 - closing: whatever is left goes now
            pool.terminate()


def create_engine(url: str, *, role: str | None = SERVICE_ROLE, pool_size: int = 10) -> Engine:
    """An :class:`Engine` acting as ``role``."""
    return Engine(url, role=role, pool_size=pool_size)


# SQLSTATEs that mean "the database cannot serve now, try again": connection exceptions
# (class 08), shutting down or starting up (57P01 admin_shutdown, 57P02 crash_shutdown,
# 57P03 cannot_connect_now: "the database system is shutting down / starting up"), and too
# many connections (53300).
UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _setting(scope: Scope | None) -> str:
    """The value of aihub.tenant_id ``scope`` needs ('' for none: row-level security then
    shows nothing). A checked tenant slug or '*', so it can stand in the statement as it is:
    BEGIN and set_config go in one simple-protocol round trip, which takes no parameters."""
    value = scope.setting if scope is not None else ""
    return value if value in ("", ALL_TENANTS) else check_tenant_id(value)


def _discard(raw: asyncpg.Connection) -> None:
    """Close a connection that cannot be trusted any more (its statement was cancelled, it
    broke, or its transaction could not be ended): the pool opens a fresh one in its place."""
    with contextlib.suppress(Exception):
        raw.terminate()


async def _end(raw: asyncpg.Connection, how: str) -> str:
    try:
        if raw.is_closed():
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the connection is closed")
        return str(await raw.execute(how))
    except BaseException:
        _discard(raw)
        raise


@contextlib.asynccontextmanager
async def transaction(engine: Engine, scope: Scope | None = None) -> AsyncIterator[Connection]:
    """A transaction the caller owns, acting for ``scope`` (one tenant or every tenant; the
    repositories of tenant data need one). Committed when the block ends, rolled back when it
    raises. Driver failures surface as storage errors: a value PostgreSQL refuses (SQLSTATE
    class 22) as InvalidData, never its message."""
    try:
        async with engine.acquire() as raw:
            begin = f"BEGIN; SELECT set_config('aihub.tenant_id', '{_setting(scope)}', true)"  # checked: see _setting
            try:
                await raw.execute(begin)
            except BaseException:
                _discard(raw)
                raise
            try:
                yield Connection(raw, scope)
            except asyncio.CancelledError:
                _discard(raw)  # a cancelled statement may still occupy it: no ROLLBACK to wait for
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    await _end(raw, "ROLLBACK")
                raise
            if await _end(raw, "COMMIT") != "COMMIT":  # a statement failed and the caller went on
                raise StorageError("the transaction was aborted by an earlier error and rolled back")
    except Exception as exc:  # noqa: BLE001 - re-raised: as a storage error, or unchanged
        _raise_as_storage_error(exc)


@contextlib.asynccontextmanager
async def single(engine: Engine, scope: Scope | None = None) -> AsyncIterator[Connection]:
    """A connection for one statement outside an explicit transaction, acting for ``scope``:
    the statement is its own transaction (it sees the database as of its start, and what it
    writes commits when it ends). For a read (a job, a page of jobs) or a write that is one
    statement (queue.complete), this is what a transaction would give, in one round trip
    instead of three. Run more than one statement here only where each may stand alone.
    Errors surface as in ``transaction``."""
    try:
        async with engine.acquire() as raw:
            want = _setting(scope)
            if raw.tenant_setting() != want:
                raw.remember_tenant_setting(None)
                try:
                    await raw.execute(f"SELECT set_config('aihub.tenant_id', '{want}', false)")  # checked: see _setting
                except BaseException:
                    _discard(raw)
                    raise
                raw.remember_tenant_setting(want)
            try:
                yield Connection(raw, scope)
            except asyncio.CancelledError:
                _discard(raw)  # a cancelled statement may still occupy it: not back to the pool
                raise
    except Exception as exc:  # noqa: BLE001 - re-raised: as a storage error, or unchanged
        _raise_as_storage_error(exc)


def _raise_as_storage_error(exc: Exception) -> NoReturn:
    mapped = _storage_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _storage_error(exc: Exception) -> Exception:
    """The storage error a driver failure surfaces as (others pass through unchanged)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError | asyncpg.exceptions.InterfaceError | asyncpg.exceptions._base.InternalClientError):
        return DatabaseUnavailable(f"database unavailable: {type(exc).__name__}")  # it broke, or never connected
    if isinstance(exc, asyncpg.exceptions.DataError | UnicodeEncodeError):  # values PostgreSQL cannot hold
        return InvalidData(getattr(exc, "sqlstate", None) or "22021")
    if isinstance(exc, asyncpg.exceptions.PostgresError):
        state = str(exc.sqlstate or "")
        if state.startswith(UNAVAILABLE_STATES):
            return DatabaseUnavailable(f"database unavailable (SQLSTATE {state})")
        if state.startswith("22"):
            return InvalidData(state)
        return StorageError(f"database error (SQLSTATE {state or 'unknown'})")
    return exc


# ping: whether the database answers. Index: none.
PING = sql("SELECT 1")


async def ping(engine: Engine) -> None:
    """Raise DatabaseUnavailable unless the database answers."""
    async with single(engine) as conn:
        await conn.fetchval(PING)


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
async def savepoint(conn: Connection, name: str = "aihub_step") -> AsyncIterator[None]:
    """A part of the transaction that can fail alone: what it wrote is undone and its error
    raised; the transaction goes on. ``name`` is an identifier of ours (checked)."""
    if not SAVEPOINT_NAME.match(name):
        raise ValueError(f"not a savepoint name: {name!r}")
    await conn.raw.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        await conn.raw.execute(f"ROLLBACK TO SAVEPOINT {name}")
        raise
    await conn.raw.execute(f"RELEASE SAVEPOINT {name}")
