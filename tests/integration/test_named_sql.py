"""Every named statement in storage/ is valid SQL for the migrated schema, with every
parameter's type known to PostgreSQL: each is prepared (not run) on the driver, as the
repositories run it. A parameter PostgreSQL cannot type (an argument of format() or
jsonb_build_object(), a bare ``:x IS NULL``) needs a CAST in the statement; this finds one
before a user's request does."""

from __future__ import annotations

import importlib
import pkgutil

import asyncpg
import pytest

import storage
from storage import db

pytestmark = pytest.mark.asyncio(loop_scope="session")


def named_statements() -> list[tuple[str, db.Query]]:
    out = []
    for info in pkgutil.iter_modules(storage.__path__):
        module = importlib.import_module(f"storage.{info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, db.Query):
                out.append((f"storage.{info.name}.{name}", value))
    return out


def test_the_statements_are_found():
    names = [name for name, _ in named_statements()]
    assert len(names) > 60 and "storage.queue.CLAIM_HEAD" in names and "storage.jobs.GET_JOB" in names


async def test_every_named_statement_prepares_with_typed_parameters(database_url):
    conn = await asyncpg.connect(db.asyncpg_dsn(database_url))
    problems = []
    try:
        for name, query in named_statements():
            try:
                await conn.prepare(query.sql)
            except asyncpg.PostgresError as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        await conn.close()
    assert not problems, "\n".join(problems)
