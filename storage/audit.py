"""The audit trail: who created or revoked a key, changed a tenant's quotas, moved an alias,
or acted as an admin for another tenant or for every tenant. One insert per event, in the
transaction of what it records where there is one (a key, a quota, an alias: the event
commits with it or not at all); read newest first by admins only (row-level security lets a
tenant's transaction insert but never read). Every statement is named here with what it
does and the index that serves it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage import db
from storage.errors import MissingTenantScope
from storage.records import AuditEvent
from storage.tenancy import ALL_TENANTS, scope_of

MAX_DETAIL = 500  # characters of one detail's value

# record_event: one event. Index: none (an insert).
RECORD_EVENT = db.sql(
    "INSERT INTO audit_events (actor, key_id, tenant_id, action, target, details) "
    "VALUES (:actor, :key_id, :tenant_id, :action, :target, CAST(:details AS jsonb))"
)

# list_events: newest first, before an id (paging), of one tenant and/or one action when
# given. Index: audit_events_tenant (tenant_id, id DESC), audit_events_action (action, id
# DESC), or the primary key backwards for every event.
LIST_EVENTS = db.sql(
    """
    SELECT * FROM audit_events
     WHERE (CAST(:tenant_id AS text) IS NULL OR tenant_id = :tenant_id)
       AND (CAST(:action AS text) IS NULL OR action = :action)
       AND (CAST(:before AS bigint) IS NULL OR id < :before)
     ORDER BY id DESC LIMIT :limit
    """
)


def _details(details: Mapping[str, Any] | None) -> str:
    return json.dumps({str(k)[:64]: str(v)[:MAX_DETAIL] for k, v in (details or {}).items()})


async def record(
    conn: db.Connection,
    *,
    actor: str,
    key_id: str | None,
    tenant_id: str | None,
    action: str,
    target: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add one event, in the caller's transaction. ``tenant_id`` None: every tenant."""
    scope_of(conn)  # any scope may write; only admins read
    params = {
        "actor": actor[:200],
        "key_id": key_id,
        "tenant_id": tenant_id or ALL_TENANTS,
        "action": action,
        "target": target[:200],
        "details": _details(details),
    }
    await conn.execute(RECORD_EVENT, params)


async def list_events(
    conn: db.Connection, *, tenant_id: str | None = None, action: str | None = None, before: int | None = None, limit: int = 100
) -> list[AuditEvent]:
    """The events, newest first (admins: a transaction for every tenant)."""
    if scope_of(conn).tenant_id is not None:
        raise MissingTenantScope("the audit trail is read by admins only, in a transaction for every tenant")
    rows = await conn.fetch(LIST_EVENTS, {"tenant_id": tenant_id, "action": action, "before": before, "limit": limit})
    return [AuditEvent.from_row(r) for r in rows]
