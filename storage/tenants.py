"""Tenants and their quotas: how many jobs may wait and run, the highest priority they may
use, the largest import. A tenant's row is made with the defaults the first time it is
used; admins change it. Every statement is named here with what it does and the index that
serves it."""

from __future__ import annotations

from typing import Any

from storage import db
from storage.errors import MissingTenantScope, QuotaExceeded
from storage.records import Priority, TenantQuota
from storage.tenancy import check_tenant_id, scope_of

# lock_tenant: serialises one tenant's admissions until the transaction ends, so two
# concurrent creates cannot both take the last queue place (the count that decides is read
# by a later statement, whose snapshot is taken after the lock). Index: none (no table read).
LOCK_TENANT = db.sql("SELECT pg_advisory_xact_lock(hashtext('tenant:' || :tenant_id))")

# ensure_tenant: the tenant's row with the default quotas, unless it exists.
# Index: tenants primary key.
ENSURE_TENANT = db.sql("INSERT INTO tenants (tenant_id) VALUES (:tenant_id) ON CONFLICT (tenant_id) DO NOTHING")

# get_tenant: one tenant's quotas. Index: tenants primary key.
GET_TENANT = db.sql("SELECT * FROM tenants WHERE tenant_id = :tenant_id")

# count_queued: a tenant's PENDING jobs, counted only up to :up_to (the quota decides at its
# limit; a create must not scan every queued job). Index: training_jobs_tenant_active (tenant_id, status).
COUNT_QUEUED = db.sql(
    "SELECT count(*) FROM (SELECT 1 FROM training_jobs WHERE tenant_id = :tenant_id AND status = 'PENDING' LIMIT :up_to) AS q"
)

# count_scheduled: jobs the tenant's schedules created in the last 24 hours, counted only up to
# :up_to. Index: training_jobs_scheduled (tenant_id, created_at) WHERE schedule_id IS NOT NULL.
COUNT_SCHEDULED = db.sql(
    "SELECT count(*) FROM (SELECT 1 FROM training_jobs WHERE tenant_id = :tenant_id AND schedule_id IS NOT NULL "
    "AND created_at > clock_timestamp() - interval '1 day' LIMIT :up_to) AS q"
)

# update_tenant: new quotas (only the columns given, a fixed fragment each). Index: tenants primary key.
UPDATE_TENANT = "UPDATE tenants SET {sets}, updated_at = clock_timestamp() WHERE tenant_id = :tenant_id RETURNING *"
SETTABLE = (
    "max_queued_jobs",
    "max_running_jobs",
    "max_priority",
    "max_import_bytes",
    "keep_versions",
    "min_schedule_interval_seconds",
    "max_scheduled_jobs_per_day",
    "max_open_streams",
)


async def get(conn: db.Connection, tenant_id: str) -> TenantQuota:
    """The tenant's quotas (its row is made with the defaults when missing)."""
    check_tenant_id(tenant_id)
    scope = scope_of(conn)
    if scope.tenant_id not in (None, tenant_id):
        raise MissingTenantScope(f"tenant {tenant_id}'s quotas read in another tenant's transaction")
    await conn.fetch(ENSURE_TENANT, {"tenant_id": tenant_id})
    return TenantQuota.from_row((await conn.fetch(GET_TENANT, {"tenant_id": tenant_id}))[0])


async def check_priority(conn: db.Connection, tenant_id: str, priority: Priority) -> TenantQuota:
    quota = await get(conn, tenant_id)
    if priority.rank < quota.max_priority.rank:
        raise QuotaExceeded(
            tenant_id,
            "max_priority",
            quota.max_priority.value,
            priority.value,
            f"tenant {tenant_id} may use priorities up to {quota.max_priority.value}; {priority.value} must be granted by an admin",
        )
    return quota


async def admit(conn: db.Connection, tenant_id: str, priority: Priority, *, already_queued: int = 0) -> None:
    """Whether one more queued job of ``priority`` fits the tenant's quotas (QuotaExceeded
    naming the limit if not). ``already_queued``: the job itself is counted already."""
    quota = await check_priority(conn, tenant_id, priority)
    await lock(conn, tenant_id)
    up_to = quota.max_queued_jobs + already_queued + 1
    queued = await count_queued(conn, tenant_id, up_to) - already_queued
    if queued >= quota.max_queued_jobs:
        raise queue_full(tenant_id, quota, queued)


async def lock(conn: db.Connection, tenant_id: str) -> None:
    """Serialise the tenant's admissions until the transaction ends: a count of its queued
    jobs read by a later statement is exact."""
    await conn.fetch(LOCK_TENANT, {"tenant_id": tenant_id})


async def count_queued(conn: db.Connection, tenant_id: str, up_to: int) -> int:
    """The tenant's queued jobs, counted up to ``up_to``."""
    return int((await conn.fetch(COUNT_QUEUED, {"tenant_id": tenant_id, "up_to": up_to}))[0]["count"])


def queue_full(tenant_id: str, quota: TenantQuota, queued: int) -> QuotaExceeded:
    return QuotaExceeded(
        tenant_id,
        "max_queued_jobs",
        quota.max_queued_jobs,
        queued + 1,
        f"tenant {tenant_id} already has {queued} queued jobs; its quota max_queued_jobs is {quota.max_queued_jobs}",
    )


def check_schedule_interval(quota: TenantQuota, shortest: float) -> None:
    """QuotaExceeded when a schedule would fire more often than the tenant's
    min_schedule_interval_seconds (``shortest``: the shortest gap between its firings)."""
    if shortest < quota.min_schedule_interval_seconds:
        raise QuotaExceeded(
            quota.tenant_id,
            "min_schedule_interval_seconds",
            quota.min_schedule_interval_seconds,
            int(shortest),
            f"this schedule fires as often as every {int(shortest)} s; tenant {quota.tenant_id}'s quota "
            f"min_schedule_interval_seconds is {quota.min_schedule_interval_seconds} (an admin may grant a shorter one)",
        )


async def check_scheduled_jobs(conn: db.Connection, tenant_id: str) -> None:
    """QuotaExceeded when the tenant's schedules already created max_scheduled_jobs_per_day
    jobs in the last 24 hours."""
    quota = await get(conn, tenant_id)
    limit = quota.max_scheduled_jobs_per_day
    made = int((await conn.fetch(COUNT_SCHEDULED, {"tenant_id": tenant_id, "up_to": limit + 1}))[0]["count"])
    if made >= limit:
        raise QuotaExceeded(
            tenant_id,
            "max_scheduled_jobs_per_day",
            limit,
            made + 1,
            f"tenant {tenant_id}'s schedules created {made} jobs in the last 24 hours; its quota max_scheduled_jobs_per_day is {limit}",
        )


def check_import_size(tenant_id: str, limit: int, received: int) -> None:
    """QuotaExceeded once an import has sent more than the tenant's max_import_bytes."""
    if received > limit:
        raise QuotaExceeded(
            tenant_id,
            "max_import_bytes",
            limit,
            received,
            f"the file is larger than tenant {tenant_id}'s max_import_bytes ({limit // 1024**2} MiB); split it",
        )


async def update(conn: db.Connection, tenant_id: str, changes: dict[str, Any]) -> TenantQuota:
    """Set some of a tenant's quotas (admins only, checked by the caller)."""
    await get(conn, tenant_id)
    unknown = set(changes) - set(SETTABLE)
    if unknown:
        raise ValueError(f"not quotas: {sorted(unknown)}")
    if not changes:
        return await get(conn, tenant_id)
    params = {**changes, "tenant_id": tenant_id}
    if isinstance(params.get("max_priority"), Priority):
        params["max_priority"] = params["max_priority"].rank
    sets = ", ".join(f"{name} = :{name}" for name in SETTABLE if name in changes)
    row = await conn.one(db.sql(UPDATE_TENANT.format(sets=sets)), params)
    return TenantQuota.from_row(row)
