"""The model registry: one numbered version per (tenant, model_type). Every statement is
named here with what it does and the index that serves it."""

from __future__ import annotations

import json
import uuid

from storage import aliases, db
from storage.errors import ModelNotFound
from storage.records import ModelVersion, NewModelVersion
from storage.tenancy import scope_of

# Each statement is filtered by the transaction's scope (storage.tenancy): one tenant's
# versions, or every tenant's when :tenant is NULL (admins).

# lock_model_versions: serialises registrations of one (tenant, model_type) until the
# transaction ends (a transaction-scoped advisory lock). Index: none (no table read).
LOCK_MODEL_VERSIONS = db.sql("SELECT pg_advisory_xact_lock(hashtext(:key))")

# register_version: the next version number of (tenant, model_type).
# Index: model_versions_tenant (tenant_id, model_type, version DESC) finds the highest.
REGISTER_VERSION = db.sql(
    """
    INSERT INTO model_versions (id, tenant_id, model_type, version, job_id, algorithm, artifact_uri,
                                features, target, training_start, training_end, metrics, config, created_at,
                                feature_importance, config_hash, mlflow_run_id)
    SELECT :id, :tenant_id, :model_type, COALESCE(MAX(version), 0) + 1, :job_id, :algorithm, :artifact_uri,
           CAST(:features AS jsonb), :target, :training_start, :training_end,
           CAST(:metrics AS jsonb), CAST(:config AS jsonb), clock_timestamp(),
           CAST(:importance AS jsonb), :config_hash, :mlflow_run_id
      FROM model_versions WHERE tenant_id = :tenant_id AND model_type = :model_type
    RETURNING *
    """
)

# list_versions: a tenant's versions, newest first per model type, with the filters given (a
# fixed fragment each). Index: model_versions_tenant (tenant_id, model_type, version DESC).
# Both read a version's aliases too, by model_aliases_model (model_id).
LIST_VERSIONS = (
    "SELECT *, ARRAY(SELECT a.alias FROM model_aliases a WHERE a.model_id = model_versions.id ORDER BY a.alias) AS aliases "
    "FROM model_versions WHERE (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) {filters} "
    "ORDER BY tenant_id, model_type, version DESC"
)
LIST_FILTERS = {"model_type": "AND model_type = :model_type", "live": "AND deleted_at IS NULL"}

# get_version: one version by id (deleted ones too). Index: model_versions primary key.
GET_VERSION = db.sql(
    "SELECT *, ARRAY(SELECT a.alias FROM model_aliases a WHERE a.model_id = model_versions.id ORDER BY a.alias) AS aliases "
    "FROM model_versions WHERE id = :id AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant)"
)

# version_of_job: the version a job registered (a job registers at most one; the newest when
# not). Index: model_versions_job (job_id).
VERSION_OF_JOB = db.sql(
    "SELECT * FROM model_versions WHERE job_id = :job_id AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) "
    "ORDER BY version DESC LIMIT 1"
)

# mark_deleted: stamp deleted_at (the row stays, for lineage). Index: model_versions primary key.
MARK_DELETED = db.sql(
    "UPDATE model_versions SET deleted_at = COALESCE(deleted_at, clock_timestamp()) "
    "WHERE id = :id AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) RETURNING *"
)


async def register(conn: db.Connection, new: NewModelVersion) -> ModelVersion:
    """Insert the next version for (tenant, model_type), in that tenant's transaction."""
    if scope_of(conn).single() != new.tenant_id:
        raise ModelNotFound(new.job_id)  # a version is registered in its own tenant's transaction only
    await conn.execute(LOCK_MODEL_VERSIONS, {"key": f"model:{new.tenant_id}:{new.model_type}"})
    params = {
        "id": uuid.uuid4(),
        "tenant_id": new.tenant_id,
        "model_type": new.model_type,
        "job_id": new.job_id,
        "algorithm": new.algorithm,
        "artifact_uri": new.artifact_uri,
        "features": json.dumps(list(new.features)),
        "target": new.target,
        "training_start": new.training_start,
        "training_end": new.training_end,
        "metrics": json.dumps(dict(new.metrics)),
        "config": json.dumps(dict(new.config)),
        "importance": json.dumps(dict(new.feature_importance)),
        "config_hash": new.config_hash,
        "mlflow_run_id": new.mlflow_run_id,
    }
    return ModelVersion.from_row(await conn.one(REGISTER_VERSION, params))


async def list_versions(conn: db.Connection, model_type: str | None = None, *, include_deleted: bool = False) -> list[ModelVersion]:
    """The scope's versions, newest first per model type."""
    filters = [LIST_FILTERS[k] for k, on in (("model_type", bool(model_type)), ("live", not include_deleted)) if on]
    sql = db.sql(LIST_VERSIONS.format(filters=" ".join(filters)))
    params = {"tenant": scope_of(conn).tenant_id, **({"model_type": model_type} if model_type else {})}
    return [ModelVersion.from_row(r) for r in await conn.fetch(sql, params)]


async def get(conn: db.Connection, model_id: uuid.UUID) -> ModelVersion:
    """One version of the scope by id, deleted ones too; ModelNotFound for another tenant's."""
    row = await conn.fetchrow(GET_VERSION, {"id": model_id, "tenant": scope_of(conn).tenant_id})
    if row is None:
        raise ModelNotFound(model_id)
    return ModelVersion.from_row(row)


async def of_job(conn: db.Connection, job_id: uuid.UUID) -> ModelVersion | None:
    """The version a job of the scope registered, or None."""
    rows = await conn.fetch(VERSION_OF_JOB, {"job_id": job_id, "tenant": scope_of(conn).tenant_id})
    return ModelVersion.from_row(rows[0]) if rows else None


async def mark_deleted(conn: db.Connection, model_id: uuid.UUID) -> ModelVersion:
    """Keep the row (lineage), stamp deleted_at; the caller removes the artifact.
    VersionHasAliases when an alias points at it."""
    await aliases.check_unaliased(conn, model_id)
    row = await conn.fetchrow(MARK_DELETED, {"id": model_id, "tenant": scope_of(conn).tenant_id})
    if row is None:
        raise ModelNotFound(model_id)
    return ModelVersion.from_row(row)


# current_version: the tenant's newest live version of a model type (the one in use).
# Index: model_versions_tenant (tenant_id, model_type, version DESC).
CURRENT_VERSION = db.sql(
    "SELECT * FROM model_versions WHERE tenant_id = :tenant_id AND model_type = :model_type AND deleted_at IS NULL "
    "ORDER BY version DESC LIMIT 1"
)

# set_keep: protect a version from retention (or not). Index: model_versions primary key.
SET_KEEP = db.sql(
    "UPDATE model_versions SET keep = :keep WHERE id = :id AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) RETURNING *"
)

# expired_versions: live versions past a tenant's keep_versions (the newest N per model type
# stay, and every kept one or one an alias points at), oldest first, every tenant with a policy (the sweep's own role),
# marked deleted here. Index: model_versions_tenant (tenant_id, model_type, version DESC).
EXPIRE_VERSIONS = db.sql(
    """
    WITH ranked AS (
        SELECT v.id, row_number() OVER (PARTITION BY v.tenant_id, v.model_type ORDER BY v.version DESC) AS rank, t.keep_versions
          FROM model_versions v JOIN tenants t ON t.tenant_id = v.tenant_id
         WHERE t.keep_versions IS NOT NULL AND v.deleted_at IS NULL),
    doomed AS (SELECT r.id FROM ranked r JOIN model_versions v ON v.id = r.id
                WHERE r.rank > r.keep_versions AND NOT v.keep
                  AND NOT EXISTS (SELECT 1 FROM model_aliases a WHERE a.model_id = v.id) LIMIT :limit)
    UPDATE model_versions SET deleted_at = clock_timestamp() FROM doomed WHERE model_versions.id = doomed.id
    RETURNING model_versions.*
    """
)


async def current(conn: db.Connection, tenant_id: str, model_type: str) -> ModelVersion | None:
    rows = await conn.fetch(CURRENT_VERSION, {"tenant_id": tenant_id, "model_type": model_type})
    return ModelVersion.from_row(rows[0]) if rows else None


async def set_keep(conn: db.Connection, model_id: uuid.UUID, keep: bool) -> ModelVersion:
    rows = await conn.fetch(SET_KEEP, {"id": model_id, "keep": keep, "tenant": scope_of(conn).tenant_id})
    if not rows:
        raise ModelNotFound(model_id)
    return ModelVersion.from_row(rows[0])


async def expire_versions(conn: db.Connection, limit: int = 100) -> list[ModelVersion]:
    """Mark deleted (and answer) the versions past their tenant's keep_versions, at most ``limit``."""
    return [ModelVersion.from_row(r) for r in await conn.fetch(EXPIRE_VERSIONS, {"limit": limit})]
