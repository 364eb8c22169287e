"""Bounds on open streams (job logs and job watches): each stream holds a place of its job's
tenant (``max_open_streams``, a tenant quota) and of the key that opened it (the setting
AIHUB_MAX_STREAMS_PER_KEY, default half the tenant's quota), so one tenant's open streams
cannot slow another's calls. Counted per server (each replica holds its own count: with N
replicas a tenant may hold up to N times its quota in all). One more stream than a limit
is refused with QuotaExceeded (HTTP 429) naming the limit."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from storage.errors import QuotaExceeded


class StreamGate:
    def __init__(self, *, per_key: int = 0) -> None:
        self.per_key = per_key  # 0: half the tenant's max_open_streams, at least one
        self.by_tenant: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()

    def key_limit(self, tenant_limit: int) -> int:
        return self.per_key or max(1, tenant_limit // 2)

    @contextlib.contextmanager
    def hold(self, tenant_id: str, key_id: str | None, tenant_limit: int) -> Iterator[None]:
        """A place for one stream of ``tenant_id``'s job opened with ``key_id`` (None: no key,
        or an admin's: the tenant's count only), for as long as the block runs."""
        open_now = self.by_tenant[tenant_id]
        if open_now >= tenant_limit:
            raise QuotaExceeded(
                tenant_id,
                "max_open_streams",
                tenant_limit,
                open_now + 1,
                f"tenant {tenant_id} already has {open_now} log or watch streams open on this server; "
                f"its quota max_open_streams is {tenant_limit}: close one first",
            )
        counted_key = key_id or ""  # "": not counted per key
        if counted_key:
            limit = self.key_limit(tenant_limit)
            if self.by_key[counted_key] >= limit:
                raise QuotaExceeded(
                    tenant_id,
                    "max_streams_per_key",
                    limit,
                    self.by_key[counted_key] + 1,
                    f"this API key already has {self.by_key[counted_key]} log or watch streams open on this server; "
                    f"one key may hold {limit} (max_streams_per_key, set by AIHUB_MAX_STREAMS_PER_KEY): close one first",
                )
            self.by_key[counted_key] += 1
        self.by_tenant[tenant_id] += 1
        try:
            yield
        finally:
            self.by_tenant[tenant_id] -= 1
            if self.by_tenant[tenant_id] <= 0:
                del self.by_tenant[tenant_id]
            if counted_key:
                self.by_key[counted_key] -= 1
                if self.by_key[counted_key] <= 0:
                    del self.by_key[counted_key]
