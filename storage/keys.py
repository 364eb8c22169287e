"""API keys, kept only as SHA-256 hashes: who a key acts for (one tenant, or an admin),
whether it was made while authentication was off (``local``), when it expires, was last
used and was revoked. Every statement is named here with what it does and the index
that serves it; each is filtered by the transaction's scope (admin keys are seen only by
admins)."""

from __future__ import annotations

from datetime import datetime

from storage import db
from storage.errors import ApiKeyNotFound
from storage.records import ApiKey
from storage.tenancy import check_tenant_id, scope_of

# insert_key: a new key. Index: api_keys primary key; api_keys_hash (unique).
INSERT_KEY = db.sql(
    "INSERT INTO api_keys (key_id, key_hash, tenant_id, admin, name, created_at, local, expires_at) "
    "VALUES (:key_id, :key_hash, :tenant_id, :admin, :name, clock_timestamp(), :local, :expires_at) RETURNING *"
)

# ensure_admin_key: an admin key with this hash exists and is not revoked (start-up).
# Index: api_keys_hash (unique) decides the conflict.
ENSURE_ADMIN_KEY = db.sql(
    "INSERT INTO api_keys (key_id, key_hash, tenant_id, admin, name, created_at) "
    "VALUES (:key_id, :key_hash, NULL, true, 'bootstrap', clock_timestamp()) "
    "ON CONFLICT (key_hash) DO UPDATE SET admin = true, tenant_id = NULL, revoked_at = NULL, local = false, expires_at = NULL "
    "RETURNING *"
)

# use_key: the live key with this hash (not revoked, not expired), stamped as used now.
# Index: api_keys_hash.
USE_KEY = db.sql(
    "UPDATE api_keys SET last_used_at = clock_timestamp() "
    "WHERE key_hash = :key_hash AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > clock_timestamp()) RETURNING *"
)

# list_keys: the scope's keys, oldest first. Index: api_keys_tenant (tenant_id, created_at) for a tenant.
LIST_KEYS = db.sql("SELECT * FROM api_keys WHERE (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) ORDER BY created_at, key_id")

# revoke_key: stamp revoked_at (kept for the record). Index: api_keys primary key.
REVOKE_KEY = db.sql(
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, clock_timestamp()) "
    "WHERE key_id = :key_id AND (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant) RETURNING *"
)


async def create(
    conn: db.Connection,
    key_id: str,
    key_hash: str,
    *,
    tenant_id: str | None,
    admin: bool,
    name: str = "",
    local: bool = False,
    expires_at: datetime | None = None,
) -> ApiKey:
    """Store a new key's hash: a tenant's key, or an admin key (tenant_id None). ``local``:
    made while authentication is off (refused once it is required)."""
    if tenant_id is not None:
        check_tenant_id(tenant_id)
    scope_of(conn)
    params = {
        "key_id": key_id,
        "key_hash": key_hash,
        "tenant_id": tenant_id,
        "admin": admin,
        "name": name,
        "local": local,
        "expires_at": expires_at,
    }
    return ApiKey.from_row(await conn.one(INSERT_KEY, params))


async def ensure_admin(conn: db.Connection, key_id: str, key_hash: str) -> ApiKey:
    scope_of(conn)
    return ApiKey.from_row(await conn.one(ENSURE_ADMIN_KEY, {"key_id": key_id, "key_hash": key_hash}))


async def use(conn: db.Connection, key_hash: str) -> ApiKey | None:
    """The live key with this hash (None if unknown, revoked or expired), its last_used_at
    set to now."""
    scope_of(conn)
    row = await conn.fetchrow(USE_KEY, {"key_hash": key_hash})
    return ApiKey.from_row(row) if row else None


async def list_keys(conn: db.Connection) -> list[ApiKey]:
    return [ApiKey.from_row(r) for r in await conn.fetch(LIST_KEYS, {"tenant": scope_of(conn).tenant_id})]


async def revoke(conn: db.Connection, key_id: str) -> ApiKey:
    row = await conn.fetchrow(REVOKE_KEY, {"key_id": key_id, "tenant": scope_of(conn).tenant_id})
    if row is None:
        raise ApiKeyNotFound(key_id)
    return ApiKey.from_row(row)
