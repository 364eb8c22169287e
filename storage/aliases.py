"""Aliases: per tenant and model type, named slugs (production, staging, ...) that point at a
version, and the record of every move. Every statement is named here with what it does and
the index that serves it; each is filtered by the transaction's scope (storage.tenancy)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from storage import audit, db
from storage.errors import AliasNotFound, ModelNotFound, VersionHasAliases
from storage.records import AliasMove, ModelAlias, ModelVersion
from storage.tenancy import scope_of

# lock_alias: serialises the moves of one alias until the transaction ends, so two moves at
# once record from/to in the order they happened. Index: none (no table read).
LOCK_ALIAS = db.sql("SELECT pg_advisory_xact_lock(hashtext(:key))")

# point_alias: make or move an alias; answers the version it pointed at before (NULL when
# new). Index: model_aliases_pkey (tenant_id, model_type, alias).
POINT_ALIAS = db.sql(
    """
    WITH before AS (SELECT model_id FROM model_aliases
                     WHERE tenant_id = :tenant_id AND model_type = :model_type AND alias = :alias)
    INSERT INTO model_aliases (tenant_id, model_type, alias, model_id, updated_at)
    VALUES (:tenant_id, :model_type, :alias, :model_id, clock_timestamp())
    ON CONFLICT (tenant_id, model_type, alias) DO UPDATE SET model_id = EXCLUDED.model_id, updated_at = EXCLUDED.updated_at
    RETURNING (SELECT model_id FROM before) AS before
    """
)

# drop_alias: remove an alias; answers the version it pointed at. Index: model_aliases_pkey.
DROP_ALIAS = db.sql(
    "DELETE FROM model_aliases WHERE tenant_id = :tenant_id AND model_type = :model_type AND alias = :alias RETURNING model_id"
)

# record_move: one row of an alias's history. Index: none (an insert).
RECORD_MOVE = db.sql(
    """
    INSERT INTO alias_moves (tenant_id, model_type, alias, from_model_id, to_model_id, moved_at, moved_by, reason)
    VALUES (:tenant_id, :model_type, :alias, :from_model_id, :to_model_id, clock_timestamp(), :moved_by, :reason)
    """
)

# list_aliases: the scope's aliases (or one) with their versions. Index: model_aliases_pkey.
LIST_ALIASES = db.sql(
    """
    SELECT a.alias, a.tenant_id, a.model_type, a.model_id, v.version AS model_version, a.updated_at
      FROM model_aliases a JOIN model_versions v ON v.id = a.model_id
     WHERE (CAST(:tenant AS text) IS NULL OR a.tenant_id = :tenant)
       AND (CAST(:model_type AS text) IS NULL OR a.model_type = :model_type)
       AND (CAST(:alias AS text) IS NULL OR a.alias = :alias)
     ORDER BY a.tenant_id, a.model_type, a.alias
    """
)

# list_moves: the moves of the scope's aliases (removed ones too), newest first, at most
# :per_alias each. Index: alias_moves_alias (tenant_id, model_type, alias, id DESC).
LIST_MOVES = db.sql(
    """
    SELECT * FROM (
      SELECT m.*, f.version AS from_version, t.version AS to_version,
             row_number() OVER (PARTITION BY m.tenant_id, m.model_type, m.alias ORDER BY m.id DESC) AS n
        FROM alias_moves m
        LEFT JOIN model_versions f ON f.id = m.from_model_id
        LEFT JOIN model_versions t ON t.id = m.to_model_id
       WHERE (CAST(:tenant AS text) IS NULL OR m.tenant_id = :tenant)
         AND (CAST(:model_type AS text) IS NULL OR m.model_type = :model_type)
         AND (CAST(:alias AS text) IS NULL OR m.alias = :alias)) moves
     WHERE n <= :per_alias ORDER BY tenant_id, model_type, alias, id DESC
    """
)

# resolve_alias: the version an alias points at. Index: model_aliases_pkey.
RESOLVE_ALIAS = db.sql(
    """
    SELECT v.* FROM model_aliases a JOIN model_versions v ON v.id = a.model_id
     WHERE a.tenant_id = :tenant_id AND a.model_type = :model_type AND a.alias = :alias
    """
)

# aliases_of: the aliases of some versions. Index: model_aliases_model (model_id).
ALIASES_OF = db.sql(
    "SELECT model_id, alias FROM model_aliases WHERE model_id = ANY(CAST(:ids AS uuid[])) "
    "AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) ORDER BY alias"
)

MAX_MOVES = 50  # listed per alias


async def point(conn: db.Connection, version: ModelVersion, alias: str, *, moved_by: str, reason: str = "") -> ModelAlias:
    """Point ``alias`` of the version's tenant and model type at it (made, or moved), and
    record the move; a move to the version it already points at is recorded too (it says
    who confirmed it, and why). ModelNotFound for a deleted version (nothing to run)."""
    if version.deleted_at is not None:
        raise ModelNotFound(version.model_id)
    key = {"tenant_id": version.tenant_id, "model_type": version.model_type, "alias": alias}
    await conn.execute(LOCK_ALIAS, {"key": f"alias:{version.tenant_id}:{version.model_type}:{alias}"})
    row = await conn.one(POINT_ALIAS, {**key, "model_id": version.model_id})
    await conn.execute(
        RECORD_MOVE, {**key, "from_model_id": row["before"], "to_model_id": version.model_id, "moved_by": moved_by, "reason": reason}
    )
    moved = {"model_type": version.model_type, "from": row["before"] or "", "to": version.model_id, "reason": reason}
    await audit.record(conn, actor=moved_by, key_id=None, tenant_id=version.tenant_id, action="alias.set", target=alias, details=moved)
    return await one(conn, version.tenant_id, version.model_type, alias)


async def remove(conn: db.Connection, tenant_id: str, model_type: str, alias: str, *, moved_by: str, reason: str = "") -> ModelAlias:
    """Remove an alias and record it (a move to no version); AliasNotFound when it is not there."""
    key = {"tenant_id": tenant_id, "model_type": model_type, "alias": alias}
    await conn.execute(LOCK_ALIAS, {"key": f"alias:{tenant_id}:{model_type}:{alias}"})
    row = await conn.fetchrow(DROP_ALIAS, key)
    if row is None:
        raise AliasNotFound(alias, model_type)
    await conn.execute(RECORD_MOVE, {**key, "from_model_id": row["model_id"], "to_model_id": None, "moved_by": moved_by, "reason": reason})
    moved = {"model_type": model_type, "from": row["model_id"], "to": "", "reason": reason}
    await audit.record(conn, actor=moved_by, key_id=None, tenant_id=tenant_id, action="alias.delete", target=alias, details=moved)
    moves = await _moves(conn, model_type, alias)
    return ModelAlias(alias, tenant_id, model_type, None, None, moves[0].moved_at, tuple(moves))


async def _moves(conn: db.Connection, model_type: str | None, alias: str | None) -> list[AliasMove]:
    params = {"tenant": scope_of(conn).tenant_id, "model_type": model_type, "alias": alias, "per_alias": MAX_MOVES}
    return [AliasMove.from_row(r) for r in await conn.fetch(LIST_MOVES, params)]


async def list_aliases(conn: db.Connection, model_type: str | None = None, alias: str | None = None) -> list[ModelAlias]:
    """The scope's aliases (of ``model_type``; only ``alias``), by model type and name, each
    with its moves (newest first)."""
    tenant = scope_of(conn).tenant_id
    rows = await conn.fetch(LIST_ALIASES, {"tenant": tenant, "model_type": model_type, "alias": alias})
    moves: dict[tuple[str, str, str], list[AliasMove]] = {}
    for r in await conn.fetch(LIST_MOVES, {"tenant": tenant, "model_type": model_type, "alias": alias, "per_alias": MAX_MOVES}):
        moves.setdefault((r["tenant_id"], r["model_type"], r["alias"]), []).append(AliasMove.from_row(r))
    return [
        ModelAlias(
            r["alias"],
            r["tenant_id"],
            r["model_type"],
            r["model_id"],
            r["model_version"],
            r["updated_at"],
            tuple(moves.get((r["tenant_id"], r["model_type"], r["alias"]), ())),
        )
        for r in rows
    ]


async def one(conn: db.Connection, tenant_id: str, model_type: str, alias: str) -> ModelAlias:
    for found in await list_aliases(conn, model_type, alias):
        if found.tenant_id == tenant_id:
            return found
    raise AliasNotFound(alias, model_type)


async def resolve(conn: db.Connection, tenant_id: str, model_type: str, alias: str) -> ModelVersion:
    """The version ``alias`` points at now; AliasNotFound when there is no such alias."""
    if scope_of(conn).tenant_id not in (None, tenant_id):
        raise AliasNotFound(alias, model_type)
    row = await conn.fetchrow(RESOLVE_ALIAS, {"tenant_id": tenant_id, "model_type": model_type, "alias": alias})
    if row is None:
        raise AliasNotFound(alias, model_type)
    return ModelVersion.from_row(row)


async def of_versions(conn: db.Connection, model_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Each version's aliases (only the versions that have some)."""
    found: dict[uuid.UUID, list[str]] = {}
    for r in await conn.fetch(ALIASES_OF, {"ids": [str(i) for i in model_ids], "tenant": scope_of(conn).tenant_id}):
        found.setdefault(r["model_id"], []).append(r["alias"])
    return found


async def check_unaliased(conn: db.Connection, model_id: uuid.UUID) -> None:
    """VersionHasAliases when an alias points at the version (it cannot be deleted)."""
    names = (await of_versions(conn, [model_id])).get(model_id)
    if names:
        raise VersionHasAliases(model_id, names)
