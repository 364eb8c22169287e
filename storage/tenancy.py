"""Who a transaction acts for. Every repository function over tenant data (jobs, logs,
models, features, quotas, keys) reads the :class:`Scope` of the transaction it runs in
(:func:`scope_of`) and filters by it in SQL; ``storage.db.transaction(engine, scope)`` sets
it, together with ``aihub.tenant_id``, the setting PostgreSQL's row-level security policies
check as a second wall (storage/migrations/versions/0006_tenants.py). A transaction with no
scope cannot call them (MissingTenantScope): only the dispatcher's queue statements run
without one, under their own role.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from storage.errors import InvalidTenantId, MissingTenantScope

if TYPE_CHECKING:
    from storage.db import Connection

TENANT_ID_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_ID = re.compile(TENANT_ID_PATTERN)

# The roles the service's sessions switch to (SET ROLE); neither owns a table.
SERVICE_ROLE = "aihub_service"  # the API and the Ray tasks: row-level security by tenant
DISPATCHER_ROLE = "aihub_dispatcher"  # the claim loop: every job
ALL_TENANTS = "*"


def check_tenant_id(tenant_id: str) -> str:
    """``tenant_id`` if it is a slug (lower-case letters, digits, ``_`` and ``-``, 1-63
    characters, starting with a letter or digit), else InvalidTenantId."""
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidTenantId(str(tenant_id), TENANT_ID_PATTERN)
    return tenant_id


@dataclass(frozen=True)
class Scope:
    """One tenant, or every tenant (``tenant_id`` None: admins)."""

    tenant_id: str | None
    ALL: ClassVar[Scope]

    @classmethod
    def of(cls, tenant_id: str) -> Scope:
        return cls(check_tenant_id(tenant_id))

    @property
    def setting(self) -> str:
        """The value of ``aihub.tenant_id`` for this scope."""
        return self.tenant_id or ALL_TENANTS

    def single(self) -> str:
        """The one tenant (feature data and quotas are always one tenant's)."""
        if self.tenant_id is None:
            raise MissingTenantScope("this operation needs one tenant, not every tenant")
        return self.tenant_id


Scope.ALL = Scope(None)


def scope_of(conn: Connection) -> Scope:
    scope = conn.scope
    if not isinstance(scope, Scope):
        raise MissingTenantScope("tenant data read or written in a transaction without a tenant scope")
    return scope


def feature_schema(tenant_id: str) -> str:
    """The schema of a tenant's feature tables (the same as SQL's aihub_feature_schema)."""
    check_tenant_id(tenant_id)
    return f"features_{tenant_id[:40]}_{hashlib.md5(tenant_id.encode()).hexdigest()[:8]}"  # noqa: S324 - a name, not security


# The filter a scoped statement writes out: one tenant's rows, or every tenant's when :tenant
# is NULL (admins); its value comes from ``tenant_param``.
IN_SCOPE = "(CAST(:tenant AS text) IS NULL OR tenant_id = :tenant)"


def tenant_param(conn: Connection) -> dict[str, str | None]:
    """The :tenant parameter of a scoped statement, from the transaction's scope."""
    return {"tenant": scope_of(conn).tenant_id}
