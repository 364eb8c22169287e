"""Alembic environment: runs the migrations over an async (asyncpg) engine.

The URL comes from the caller (``storage.db.migrate`` sets ``sqlalchemy.url``);
`alembic upgrade head` from the shell reads DATABASE_URL via alembic.ini.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from storage.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # The shell entry point (`alembic upgrade head`): the URL comes from DATABASE_URL.
    asyncio.run(_main(config.get_main_option("sqlalchemy.url") or os.environ["DATABASE_URL"]))
