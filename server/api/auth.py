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
  request is written to the audit log (logger ``aihub.audit``) and to the audit trail
  (storage.audit, through :class:`AuditSink`: batched, off the request's path);
- with authentication off (``AIHUB_AUTH=off``, loopback only) a request without a key acts
  for the tenant it names, or every tenant, as before keys existed. Keys made then are
  marked ``local`` and refused once the server runs with authentication required.

Keys may expire (``expires_at``); each lookup stamps ``last_used_at``. Failed lookups (an
unknown, revoked, expired or local key) are counted per client (:class:`FailureLimiter`):
past the burst, that client's uncached keys get 429 RateLimited without a lookup, and a
WARNING names the client, until the bucket refills.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.api.errors import PermissionDenied, RateLimited, RequestError, Unauthenticated
from storage import audit as audit_trail
from storage import db, keys
from storage.errors import DatabaseUnavailable
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
# (caller, method, where its admin calls are recorded)
_current: contextvars.ContextVar[tuple[Principal, str, AuditSink | None]] = contextvars.ContextVar(
    "aihub_principal", default=(ANONYMOUS, "", None)
)


def current() -> Principal:
    return _current.get()[0]


def bind(principal: Principal, method: str) -> None:
    """The principal of the request being handled. The open principal (authentication off)
    is refused here: only :class:`Authenticator` binds it, for a server started with it off."""
    if principal.open:
        raise ValueError("the open principal is bound only by an Authenticator with authentication off")
    _current.set((principal, method, None))


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
    principal, method, sink = _current.get()
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
        name = method.rsplit("/", 1)[-1]
        audit.info(
            "%s: %s for %s",
            principal.describe(),
            name,
            f"tenant {requested}" if requested else "every tenant",
            extra={"key_id": principal.key_id, "tenant_id": requested or "*", "method": method},
        )
        if sink is not None:
            sink.add(principal, requested or None, "admin.call", name)
    return scope


@dataclass
class AuditSink:
    """Writes the admin calls ``scope_for`` sees to the audit trail, in batches, off the
    request's path (an admin listing every tenant's jobs costs it no extra round trip). A
    bounded queue: past ``limit`` waiting events, new ones are dropped with a WARNING (the
    audit logger still has them). Events still queued when the server is killed are lost;
    key, quota and alias events are written in their own transactions and are not."""

    engine: db.Engine
    limit: int = 10_000
    dropped: int = 0
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def add(self, principal: Principal, tenant_id: str | None, action: str, target: str) -> None:
        if self._queue.qsize() >= self.limit:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("the audit trail is behind: %d admin-call events dropped (the aihub.audit log has them)", self.dropped)
            return
        event = {"actor": principal.describe(), "key_id": principal.key_id, "tenant_id": tenant_id, "action": action, "target": target}
        self._queue.put_nowait(event)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-sink")

    async def flush(self) -> None:
        batch: list[dict[str, Any]] = []
        while not self._queue.empty() and len(batch) < 500:
            batch.append(self._queue.get_nowait())
        if not batch:
            return
        try:
            async with db.transaction(self.engine, Scope.ALL) as conn:
                for event in batch:
                    await audit_trail.record(conn, **event)
        except DatabaseUnavailable:
            for event in batch:  # kept for the next try (the queue's bound still holds)
                self._queue.put_nowait(event)
            raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self.flush()
            except DatabaseUnavailable:
                await asyncio.sleep(2)
            except Exception:
                log.exception("the audit trail could not be written")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            while not self._queue.empty():
                await self.flush()


class FailureLimiter:
    """A token bucket of failed key lookups per client: ``burst`` failures at once, then
    ``per_minute``. ``allowed(client)``: whether an uncached key from it is looked up."""

    def __init__(self, *, burst: int, per_minute: float) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._warned: dict[str, float] = {}

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def allowed(self, client: str) -> bool:
        return self._tokens(client, time.monotonic()) >= 1.0

    def retry_after(self, client: str) -> float:
        return max(0.0, (1.0 - self._tokens(client, time.monotonic())) / self.rate) if self.rate else 3600.0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        tokens = self._tokens(client, now) - 1.0
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[client] = (max(tokens, 0.0), now)
        if tokens < 1.0 and now - self._warned.get(client, -1e9) > 60:
            self._warned[client] = now
            log.warning("failed API key lookups from %s: more than %d; its unknown keys are refused (429) for now", client, self.burst)


def require_operator() -> Principal:
    principal = current()
    if not principal.operator:
        raise PermissionDenied("only an admin key may manage API keys and quotas")
    return principal


class Authenticator:
    """Resolves ``authorization`` metadata to a Principal, with a short cache so a request
    costs no database round trip (a key revoked on another server stops working within
    ``ttl`` seconds; on this one, at once)."""

    def __init__(self, engine: db.Engine, *, required: bool, ttl: float = 5.0, limiter: FailureLimiter | None = None) -> None:
        self.engine = engine
        self.required = required
        self.ttl = ttl
        self.limiter = limiter or FailureLimiter(burst=100, per_minute=60)
        self.sink: AuditSink | None = None  # where admin calls are recorded (the app sets it)
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None, client: str = "") -> Principal:
        token = _bearer(metadata or ())
        if token is None:
            return ANONYMOUS if self.required else LOCAL
        digest = hash_key(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        if not self.limiter.allowed(client):
            raise RateLimited(
                "too many failed API key lookups from this client; try again later", retry_after=self.limiter.retry_after(client)
            )
        async with db.transaction(self.engine, Scope.ALL) as conn:
            key = await keys.use(conn, digest)
        if key is None:
            self._cache.pop(digest, None)
            self.limiter.failed(client)
            raise Unauthenticated("the API key is not known, or was revoked")
        if key.local and self.required:
            self.limiter.failed(client)
            raise Unauthenticated(
                "this API key was made while authentication was off (a local key) and does not work while it is required; "
                "ask an admin for a new key"
            )
        found = Principal(key.key_id, key.tenant_id, key.admin)
        until = now + self.ttl
        if key.expires_at is not None:
            until = min(until, now + (key.expires_at - datetime.now(UTC)).total_seconds())
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (found, until)
        return found

    async def __call__(self, metadata: Sequence[tuple[str, str | bytes]] | None, method: str, peer: str = "") -> None:
        """The interceptor's hook: bind the caller of ``method``, or raise Unauthenticated."""
        principal = await self.principal(metadata, client_of(metadata or (), peer))
        if principal is ANONYMOUS and method not in PUBLIC_METHODS:
            raise Unauthenticated("this request needs an API key: send 'authorization: Bearer <key>'")
        _current.set((principal, method, self.sink))

    def forget(self, key_id: str) -> None:
        """A key was revoked here: stop honouring it at once."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                self._cache.pop(digest, None)


def client_of(metadata: Sequence[tuple[str, str | bytes]], peer: str) -> str:
    """Who is calling, for the failure limit: the peer's address, and for a call through our
    Envoy (which appends the real client's address to x-forwarded-for) that last entry. A
    local process may claim any x-forwarded-for: the limit is against remote guessing."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else kind or "unknown"  # unix:PATH: the socket
    forwarded = ""
    for name, value in metadata:
        if name.lower() == "x-forwarded-for":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            forwarded = text.rsplit(",", 1)[-1].strip()[:64]
    return f"{host}|{forwarded}" if forwarded else host


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
