"""PostgreSQL storage: tables, Alembic migrations, repositories and the embedded server.

Repositories are plain ``async def f(conn, ...)`` functions over a
``storage.db.Connection`` (asyncpg, named SQL); the caller owns the transaction. They return the frozen
records of :mod:`storage.records`, never rows. This package imports nothing else
of the project.
"""
