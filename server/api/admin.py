"""AdminService: API keys, tenant quotas and the audit trail, for admin keys only (or anyone
while authentication is off, on loopback: keys made then are marked local, and refused once
authentication is required). Key and quota changes are written to the audit trail in their
own transaction. gRPC in and out; storage does the work."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TypeAlias

import grpc

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import admin_pb2_grpc as admin_grpc
from server.api import auth, convert
from server.api.errors import RequestError
from storage import audit, db, keys, tenants
from storage.tenancy import Scope, check_tenant_id

log = logging.getLogger(__name__)
Context: TypeAlias = grpc.aio.ServicerContext


class AdminServicer(admin_grpc.AdminServiceServicer):
    def __init__(self, *, engine: db.Engine, authenticator: auth.Authenticator) -> None:
        self.engine = engine
        self.authenticator = authenticator

    async def CreateApiKey(self, request: admin_pb.CreateApiKeyRequest, context: Context) -> admin_pb.CreateApiKeyResponse:
        principal = auth.require_operator()
        if request.admin and request.tenant_id:
            raise RequestError("tenant_id", "an admin key acts for every tenant; leave tenant_id empty")
        if not request.admin and not request.tenant_id:
            raise RequestError("tenant_id", "is required (or ask for an admin key)")
        tenant_id = check_tenant_id(request.tenant_id) if request.tenant_id else None
        name = convert.checked_text(request.name, "name", max_len=128)
        expires_at = None
        if request.HasField("expires_at"):
            expires_at = request.expires_at.ToDatetime(tzinfo=UTC)
            if expires_at <= datetime.now(UTC):
                raise RequestError("expires_at", "must be in the future")
        local = not self.authenticator.required  # made with authentication off: refused once it is required
        key_id, secret = auth.new_key()
        async with db.transaction(self.engine, Scope.ALL) as conn:
            if tenant_id is not None:
                await tenants.get(conn, tenant_id)  # the tenant's row, with default quotas
            stored = await keys.create(
                conn, key_id, auth.hash_key(secret), tenant_id=tenant_id, admin=request.admin, name=name, local=local, expires_at=expires_at
            )
            details = {"admin": stored.admin, "local": local, "expires_at": expires_at.isoformat() if expires_at else ""}
            await _record(conn, principal, tenant_id, "key.create", stored.key_id, details)
        auth.audit.info(
            "%s created %s %s", principal.describe(), "admin key" if stored.admin else f"a key for tenant {tenant_id}:", stored.key_id
        )
        return admin_pb.CreateApiKeyResponse(key=secret, key_id=stored.key_id, tenant_id=stored.tenant_id or "", admin=stored.admin)

    async def ListApiKeys(self, request: admin_pb.ListApiKeysRequest, context: Context) -> admin_pb.ListApiKeysResponse:
        auth.require_operator()
        async with db.transaction(self.engine, Scope.of(request.tenant_id) if request.tenant_id else Scope.ALL) as conn:
            found = await keys.list_keys(conn)
        return admin_pb.ListApiKeysResponse(keys=[convert.api_key_to_pb(k) for k in found])

    async def RevokeApiKey(self, request: admin_pb.RevokeApiKeyRequest, context: Context) -> admin_pb.ApiKey:
        principal = auth.require_operator()
        key_id = convert.checked_text(request.key_id, "key_id", max_len=64, required=True)
        async with db.transaction(self.engine, Scope.ALL) as conn:
            revoked = await keys.revoke(conn, key_id)
            await _record(conn, principal, revoked.tenant_id, "key.revoke", revoked.key_id)
        self.authenticator.forget(revoked.key_id)
        auth.audit.info("%s revoked key %s", principal.describe(), revoked.key_id)
        return convert.api_key_to_pb(revoked)

    async def GetTenantQuota(self, request: admin_pb.GetTenantQuotaRequest, context: Context) -> admin_pb.TenantQuota:
        auth.require_operator()
        scope = Scope.of(request.tenant_id)
        async with db.transaction(self.engine, scope) as conn:
            return convert.quota_to_pb(await tenants.get(conn, scope.single()))

    async def UpdateTenantQuota(self, request: admin_pb.UpdateTenantQuotaRequest, context: Context) -> admin_pb.TenantQuota:
        principal = auth.require_operator()
        scope = Scope.of(request.tenant_id)
        changes = convert.quota_changes(request)
        async with db.transaction(self.engine, scope) as conn:
            quota = await tenants.update(conn, scope.single(), changes)
            shown = {k: getattr(v, "value", v) for k, v in changes.items()}
            await _record(conn, principal, quota.tenant_id, "quota.update", quota.tenant_id, shown)
        auth.audit.info("%s changed the quotas of tenant %s: %s", principal.describe(), quota.tenant_id, sorted(changes))
        return convert.quota_to_pb(quota)

    async def ListAuditEvents(self, request: admin_pb.ListAuditEventsRequest, context: Context) -> admin_pb.ListAuditEventsResponse:
        auth.require_operator()
        tenant_id = request.tenant_id or None  # "*": the calls made for every tenant
        if tenant_id not in (None, "*"):
            check_tenant_id(tenant_id)
        action = convert.checked_text(request.action, "action", max_len=64) or None
        if request.page_size < 0:
            raise RequestError("page_size", "must not be negative")
        size = min(request.page_size or 100, 1000)
        before = convert.decode_offset_token(request.page_token) or None
        async with db.transaction(self.engine, Scope.ALL) as conn:
            found = await audit.list_events(conn, tenant_id=tenant_id, action=action, before=before, limit=size + 1)
        more = len(found) > size
        page = found[:size]
        token = convert.encode_offset_token(page[-1].id) if more and page else ""
        return admin_pb.ListAuditEventsResponse(events=[convert.audit_event_to_pb(e) for e in page], next_page_token=token)


async def _record(
    conn: db.Connection, principal: auth.Principal, tenant_id: str | None, action: str, target: str, details: dict | None = None
) -> None:
    await audit.record(
        conn, actor=principal.describe(), key_id=principal.key_id, tenant_id=tenant_id, action=action, target=target, details=details
    )
