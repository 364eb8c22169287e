"""Alert targets (a tenant's webhooks) and the alert outbox. A delivery row is written in the
transaction that caused its event: a job that FAILS for good by the trigger aihub_job_failed
(storage/migrations/versions/0010_operations.py), a degradation by ``add_event``. Sending is
done by any server (``claim_due``: FOR UPDATE SKIP LOCKED, then a short claim so that no two
servers send one delivery at once), with retries. Every statement is named here with what it
does and the index that serves it; the tenant's own are filtered by the transaction's scope.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from storage import db
from storage.errors import AlertTargetNotFound
from storage.records import AlertDelivery, AlertTarget
from storage.tenancy import IN_SCOPE, scope_of, tenant_param

# insert_target: a new webhook. Index: alert_targets primary key.
INSERT_TARGET = db.sql(
    "INSERT INTO alert_targets (id, tenant_id, url, secret, events, created_at) "
    "VALUES (:id, :tenant_id, :url, :secret, :events, clock_timestamp()) RETURNING *"
)

# list_targets: the scope's webhooks, oldest first. Index: alert_targets_tenant (tenant_id).
LIST_TARGETS = db.sql(f"SELECT * FROM alert_targets WHERE {IN_SCOPE} ORDER BY tenant_id, created_at")  # noqa: S608

# delete_target: a webhook and its deliveries. Index: alert_targets primary key.
DELETE_TARGET = db.sql(f"DELETE FROM alert_targets WHERE id = :id AND {IN_SCOPE} RETURNING *")  # noqa: S608

# add_event: one delivery of an event to each of the tenant's targets that want it.
# Index: alert_targets_tenant (tenant_id).
ADD_EVENT = db.sql(
    """
    INSERT INTO alert_deliveries (tenant_id, target_id, event, body)
    SELECT tenant_id, id, :event, CAST(:body AS jsonb) FROM alert_targets
     WHERE tenant_id = :tenant_id AND :event = ANY(events)
    RETURNING id
    """
)

# list_deliveries: the scope's deliveries, newest first. Index: alert_deliveries_tenant (tenant_id, id DESC).
LIST_DELIVERIES = db.sql(f"SELECT * FROM alert_deliveries WHERE {IN_SCOPE} ORDER BY id DESC LIMIT :limit")  # noqa: S608

# claim_due: deliveries due now (every tenant's: the sender's own role), each claimed for
# :claim_seconds so that no other server sends it meanwhile; with its target's URL and secret.
# Index: alert_deliveries_due (next_attempt_at) WHERE status = 'PENDING'; alert_targets primary key.
CLAIM_DUE = db.sql(
    """
    WITH due AS (SELECT id FROM alert_deliveries WHERE status = 'PENDING' AND next_attempt_at <= clock_timestamp()
                  ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED),
    claimed AS (UPDATE alert_deliveries d SET next_attempt_at = clock_timestamp() + make_interval(secs => :claim_seconds)
                  FROM due WHERE d.id = due.id RETURNING d.*)
    SELECT claimed.*, t.url, t.secret FROM claimed JOIN alert_targets t ON t.id = claimed.target_id ORDER BY claimed.id
    """
)

# record_attempt: how one try went: DELIVERED, PENDING again after :retry_in seconds, or FAILED
# (the last try). Index: alert_deliveries primary key.
RECORD_ATTEMPT = db.sql(
    """
    UPDATE alert_deliveries
       SET attempts = attempts + 1, status = :status, last_error = :error, response_status = :response_status,
           next_attempt_at = clock_timestamp() + make_interval(secs => :retry_in),
           delivered_at = CASE WHEN :status = 'DELIVERED' THEN clock_timestamp() END
     WHERE id = :id AND status = 'PENDING'
    """
)


async def create_target(conn: db.Connection, tenant_id: str, url: str, secret: str, events: list[str]) -> AlertTarget:
    if scope_of(conn).single() != tenant_id:
        raise AlertTargetNotFound("(another tenant's)")
    params = {"id": uuid.uuid4(), "tenant_id": tenant_id, "url": url, "secret": secret, "events": events}
    return AlertTarget.from_row((await conn.fetch(INSERT_TARGET, params))[0])


async def list_targets(conn: db.Connection) -> list[AlertTarget]:
    return [AlertTarget.from_row(r) for r in await conn.fetch(LIST_TARGETS, tenant_param(conn))]


async def delete_target(conn: db.Connection, target_id: uuid.UUID) -> AlertTarget:
    rows = await conn.fetch(DELETE_TARGET, {"id": target_id, **tenant_param(conn)})
    if not rows:
        raise AlertTargetNotFound(target_id)
    return AlertTarget.from_row(rows[0])


async def add_event(conn: db.Connection, tenant_id: str, event: str, body: Mapping[str, Any]) -> int:
    """Queue ``event`` for each of the tenant's targets that want it; how many."""
    rows = await conn.fetch(ADD_EVENT, {"tenant_id": tenant_id, "event": event, "body": json.dumps(body, default=str)})
    return len(rows)


async def list_deliveries(conn: db.Connection, limit: int = 50) -> list[AlertDelivery]:
    return [AlertDelivery.from_row(r) for r in await conn.fetch(LIST_DELIVERIES, {"limit": limit, **tenant_param(conn)})]


async def claim_due(conn: db.Connection, *, limit: int, claim_seconds: float) -> list[AlertDelivery]:
    return [AlertDelivery.from_row(r) for r in await conn.fetch(CLAIM_DUE, {"limit": limit, "claim_seconds": claim_seconds})]


async def record_attempt(
    conn: db.Connection, delivery_id: int, *, status: str, error: str | None, response_status: int | None, retry_in: float
) -> None:
    params = {"id": delivery_id, "status": status, "error": error, "response_status": response_status, "retry_in": retry_in}
    await conn.fetch(RECORD_ATTEMPT, params)
