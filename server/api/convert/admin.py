"""AdminService (admin.proto): API keys and tenant quotas as messages, and a quota update
request as the changes it asks for."""

from __future__ import annotations

from typing import Any

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from server.api.convert.common import PRIORITIES, as_timestamp, priority_from_pb
from server.api.errors import RequestError
from storage import records


# --- administration ------------------------------------------------------------------------------
def api_key_to_pb(key: records.ApiKey) -> admin_pb.ApiKey:
    return admin_pb.ApiKey(
        key_id=key.key_id,
        tenant_id=key.tenant_id or "",
        admin=key.admin,
        name=key.name,
        created_at=as_timestamp(key.created_at),
        revoked_at=as_timestamp(key.revoked_at),
        local=key.local,
        expires_at=as_timestamp(key.expires_at),
        last_used_at=as_timestamp(key.last_used_at),
    )


def audit_event_to_pb(event: records.AuditEvent) -> admin_pb.AuditEvent:
    return admin_pb.AuditEvent(
        id=event.id,
        at=as_timestamp(event.at),
        actor=event.actor,
        key_id=event.key_id or "",
        tenant_id=event.tenant_id,
        action=event.action,
        target=event.target,
        details={str(k): str(v) for k, v in event.details.items()},
    )


def quota_to_pb(quota: records.TenantQuota) -> admin_pb.TenantQuota:
    return admin_pb.TenantQuota(
        tenant_id=quota.tenant_id,
        max_queued_jobs=quota.max_queued_jobs,
        max_running_jobs=quota.max_running_jobs or 0,
        max_priority=PRIORITIES[quota.max_priority],
        max_import_bytes=quota.max_import_bytes,
        updated_at=as_timestamp(quota.updated_at),
        keep_versions=quota.keep_versions or 0,
        min_schedule_interval_seconds=quota.min_schedule_interval_seconds,
        max_scheduled_jobs_per_day=quota.max_scheduled_jobs_per_day,
        max_open_streams=quota.max_open_streams,
    )


def quota_changes(request: admin_pb.UpdateTenantQuotaRequest) -> dict[str, Any]:
    """The quotas an update sets, checked (each a RequestError naming the field)."""
    changes: dict[str, Any] = {}
    for name in (
        "max_queued_jobs",
        "max_running_jobs",
        "max_import_bytes",
        "keep_versions",
        "min_schedule_interval_seconds",
        "max_scheduled_jobs_per_day",
        "max_open_streams",
    ):
        if request.HasField(name):
            value = getattr(request, name)
            if value < 0:
                raise RequestError(name, "must not be negative")
            changes[name] = value
    if changes.get("min_schedule_interval_seconds") == 0:
        raise RequestError("min_schedule_interval_seconds", "must be at least 1 (second)")
    for name in ("max_running_jobs", "keep_versions"):  # 0: no limit
        if changes.get(name) == 0:
            changes[name] = None
    if request.max_priority != pb.PRIORITY_UNSPECIFIED:
        changes["max_priority"] = priority_from_pb(request.max_priority)
    return changes
