"""AdminService: API keys and tenant quotas, for admin keys only (or anyone while
authentication is off, on loopback). gRPC in and out; storage does the work."""

from __future__ import annotations

import logging
from typing import TypeAlias

import grpc

from client._gen.aihub.training.v1 import admin_pb2 as admin_pb
from client._gen.aihub.training.v1 import admin_pb2_grpc as admin_grpc
from server.api import auth, convert
from server.api.errors import RequestError
from storage import db, keys, tenants
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
        key_id, secret = auth.new_key()
        async with db.transaction(self.engine, Scope.ALL) as conn:
            if tenant_id is not None:
                await tenants.get(conn, tenant_id)  # the tenant's row, with default quotas
            stored = await keys.create(conn, key_id, auth.hash_key(secret), tenant_id=tenant_id, admin=request.admin, name=name)
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
        auth.audit.info("%s changed the quotas of tenant %s: %s", principal.describe(), quota.tenant_id, sorted(changes))
        return convert.quota_to_pb(quota)
