"""The model registry: one numbered version per (tenant, model_type)."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import json_value
from storage.errors import ModelNotFound
from storage.records import ModelVersion, NewModelVersion


def _record(row) -> ModelVersion:
    return ModelVersion(
        model_id=row["id"],
        tenant_id=row["tenant_id"],
        model_type=row["model_type"],
        version=row["version"],
        job_id=row["job_id"],
        algorithm=row["algorithm"],
        artifact_uri=row["artifact_uri"],
        features=tuple(json_value(row["features"])),
        target=row["target"],
        training_start=row["training_start"],
        training_end=row["training_end"],
        metrics=json_value(row["metrics"]),
        feature_importance=json_value(row["feature_importance"]),
        config=json_value(row["config"]),
        config_hash=row["config_hash"],
        created_at=row["created_at"],
        deleted_at=row["deleted_at"],
    )


async def register(conn: AsyncConnection, new: NewModelVersion) -> ModelVersion:
    """Insert the next version for (tenant, model_type). A transaction-scoped advisory
    lock on the pair serialises concurrent registrations."""
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"model:{new.tenant_id}:{new.model_type}"})
    row = (
        (
            await conn.execute(
                sa.text(
                    """
                INSERT INTO model_versions (id, tenant_id, model_type, version, job_id, algorithm, artifact_uri,
                                            features, target, training_start, training_end, metrics, config, created_at,
                                            feature_importance, config_hash)
                SELECT :id, :tenant_id, :model_type, COALESCE(MAX(version), 0) + 1, :job_id, :algorithm, :artifact_uri,
                       CAST(:features AS jsonb), :target, :training_start, :training_end,
                       CAST(:metrics AS jsonb), CAST(:config AS jsonb), clock_timestamp(),
                       CAST(:importance AS jsonb), :config_hash
                  FROM model_versions WHERE tenant_id = :tenant_id AND model_type = :model_type
                RETURNING *
                """
                ),
                {
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
                },
            )
        )
        .mappings()
        .one()
    )
    return _record(row)


async def list_versions(
    conn: AsyncConnection, tenant_id: str, model_type: str | None = None, *, include_deleted: bool = False
) -> list[ModelVersion]:
    """Newest first per model type. Served by model_versions_tenant."""
    sql = "SELECT * FROM model_versions WHERE tenant_id = :t"
    params = {"t": tenant_id}
    if model_type:
        sql += " AND model_type = :m"
        params["m"] = model_type
    if not include_deleted:
        sql += " AND deleted_at IS NULL"
    rows = await conn.execute(sa.text(sql + " ORDER BY model_type, version DESC"), params)
    return [_record(r) for r in rows.mappings()]


async def get(conn: AsyncConnection, model_id: uuid.UUID, tenant_id: str | None = None) -> ModelVersion:
    """One version by id (tenant-scoped when ``tenant_id`` is given); deleted ones too."""
    sql = "SELECT * FROM model_versions WHERE id = :id" + (" AND tenant_id = :t" if tenant_id else "")
    row = (await conn.execute(sa.text(sql), {"id": model_id, "t": tenant_id})).mappings().first()
    if row is None:
        raise ModelNotFound(model_id)
    return _record(row)


async def mark_deleted(conn: AsyncConnection, model_id: uuid.UUID, tenant_id: str | None = None) -> ModelVersion:
    """Keep the row (lineage), stamp deleted_at; the caller removes the artifact."""
    sql = "UPDATE model_versions SET deleted_at = COALESCE(deleted_at, clock_timestamp()) WHERE id = :id"
    sql += (" AND tenant_id = :t" if tenant_id else "") + " RETURNING *"
    row = (await conn.execute(sa.text(sql), {"id": model_id, "t": tenant_id})).mappings().first()
    if row is None:
        raise ModelNotFound(model_id)
    return _record(row)
