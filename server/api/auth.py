"""Who is calling, and which tenant a request may act for.

A caller sends ``authorization: Bearer <key>`` (gRPC metadata; the same HTTP header through
Envoy). A key belongs to one tenant, or is an admin key; only its SHA-256 is stored
(storage.keys). :class:`Authenticator` resolves the key to a :class:`Principal` (cached for
a few seconds; a revoke on this server drops the entry at once), and :func:`scope_for`
turns the principal and the request's ``tenant_id`` into the storage Scope the handler's
transaction runs in:

- a tenant key acts for its tenant; a request naming another tenant is PermissionDenied;
  omitting ``tenant_id`` means the key's tenant;
- an admin key acts for the tenant a request names, or for every tenant, and each such
  request is written to the audit log (logger ``aihub.audit``);
- with authentication off (``AIHUB_AUTH=off``, loopback only) a request without a key acts
  for the tenant it names, or every tenant, as before keys existed.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from server.api.errors import PermissionDenied, RequestError, Unauthenticated
from storage import db, keys
from storage.tenancy import Scope, check_tenant_id

log = logging.getLogger(__name__)
audit = logging.getLogger("aihub.audit")

KEY_PREFIX = "aihub_"
MAX_KEY_LENGTH = 256
MIN_BOOTSTRAP_KEY_LENGTH = 32
PUBLIC_METHODS = frozenset({"/aihub.training.v1.TrainingService/GetHealth"})  # answer without a key


@dataclass(frozen=True)
class Principal:
    """The caller. ``key_id`` None: no key (``open``: authentication is off, so the caller
    acts as before keys existed; else only public methods such as health answer)."""

    key_id: str | None
    tenant_id: str | None
    admin: bool
    open: bool = False

    @property
    def operator(self) -> bool:
        """May manage keys and quotas: an admin key, or anyone while authentication is off."""
        return self.admin or self.open

    def describe(self) -> str:
        if self.key_id is None:
            return "no key (authentication off)" if self.open else "no key"
        return f"{'admin key' if self.admin else 'key'} {self.key_id}"


LOCAL = Principal(None, None, admin=False, open=True)
ANONYMOUS = Principal(None, None, admin=False)
# Code that runs outside a request (or before the interceptor bound its caller) acts as nobody:
# the open principal is bound only by an Authenticator whose server runs with authentication off.
_current: contextvars.ContextVar[tuple[Principal, str]] = contextvars.ContextVar("aihub_principal", default=(ANONYMOUS, ""))


def current() -> Principal:
    return _current.get()[0]


def bind(principal: Principal, method: str) -> None:
    """The principal of the request being handled. The open principal (authentication off)
    is refused here: only :class:`Authenticator` binds it, for a server started with it off."""
    if principal.open:
        raise ValueError("the open principal is bound only by an Authenticator with authentication off")
    _current.set((principal, method))


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key): the key is shown once; only its hash is stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    # Keys are 256-bit random secrets: a plain SHA-256 is enough (no dictionary to guess from).
    return hashlib.sha256(key.encode()).hexdigest()


def bootstrap_key_id(key: str) -> str:
    return "boot-" + hash_key(key)[:8]


def scope_for(requested: str, *, required: bool = False) -> Scope:
    """The scope a request that names ``requested`` (possibly "") runs in, for the current
    principal. ``required``: the operation needs one tenant (create, import, quotas)."""
    principal, method = _current.get()
    if requested:
        check_tenant_id(requested)
    if principal.tenant_id is not None:
        if requested and requested != principal.tenant_id:
            raise PermissionDenied(f"this API key belongs to another tenant; it cannot act for tenant {requested!r}")
        return Scope.of(principal.tenant_id)
    if not (principal.admin or principal.open):
        raise Unauthenticated("this request needs an API key: send 'authorization: Bearer <key>'")
    if not requested and required:
        raise RequestError("tenant_id", "is required")
    scope = Scope.of(requested) if requested else Scope.ALL
    if principal.admin:
        audit.info(
            "%s: %s for %s",
            principal.describe(),
            method.rsplit("/", 1)[-1],
            f"tenant {requested}" if requested else "every tenant",
            extra={"key_id": principal.key_id, "tenant_id": requested or "*", "method": method},
        )
    return scope


def require_operator() -> Principal:
    principal = current()
    if not principal.operator:
        raise PermissionDenied("only an admin key may manage API keys and quotas")
    return principal


class Authenticator:
    """Resolves ``authorization`` metadata to a Principal, with a short cache so a request
    costs no database round trip (a key revoked on another server stops working within
    ``ttl`` seconds; on this one, at once)."""

    def __init__(self, engine: db.Engine, *, required: bool, ttl: float = 5.0) -> None:
        self.engine = engine
        self.required = required
        self.ttl = ttl
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        token = _bearer(metadata or ())
        if token is None:
            return ANONYMOUS if self.required else LOCAL
        digest = hash_key(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        async with db.transaction(self.engine, Scope.ALL) as conn:
            key = await keys.find_active(conn, digest)
        if key is None:
            self._cache.pop(digest, None)
            raise Unauthenticated("the API key is not known, or was revoked")
        found = Principal(key.key_id, key.tenant_id, key.admin)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (found, now + self.ttl)
        return found

    async def __call__(self, metadata: Sequence[tuple[str, str | bytes]] | None, method: str) -> None:
        """The interceptor's hook: bind the caller of ``method``, or raise Unauthenticated."""
        principal = await self.principal(metadata)
        if principal is ANONYMOUS and method not in PUBLIC_METHODS:
            raise Unauthenticated("this request needs an API key: send 'authorization: Bearer <key>'")
        _current.set((principal, method))

    def forget(self, key_id: str) -> None:
        """A key was revoked here: stop honouring it at once."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                self._cache.pop(digest, None)


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for name, value in metadata:
        if name.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization header must be 'Bearer <key>'")
        if len(token) > MAX_KEY_LENGTH:
            raise Unauthenticated("the API key is not known, or was revoked")
        return token
    return None
