"""Job events fanned out to this process's waiters.

One LISTEN connection per server process (storage.notifications.JobEventListener) wakes
the dispatcher and every open Watch/StreamLogs call. Waiters also time out after a short
backstop interval, so a lost notification (or a dropped LISTEN connection) only delays,
never loses, an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from storage.notifications import RECONNECTED, JobEventListener

log = logging.getLogger(__name__)

Listener = Callable[[str, str], None]


class EventHub:
    def __init__(self, dsn: str, *, reconnect_seconds: float = 1.0) -> None:
        self._listener = JobEventListener(dsn, self._on_event, self._wake_all, reconnect_seconds=reconnect_seconds)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listeners: list[Listener] = []

    def add_listener(self, fn: Listener) -> None:
        """``fn(job_id, kind)`` for every event (called on the event loop, must not block)."""
        self._listeners.append(fn)

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _on_event(self, job_id: str, kind: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()
        for fn in self._listeners:
            try:
                fn(job_id, kind)
            except Exception:
                log.exception("event listener failed")

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn("", RECONNECTED)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An Event set whenever ``job_id`` changes. Subscribe before reading the state,
        then clear the event before each read, so no change falls between."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]


async def wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass; then clears it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    event.clear()
