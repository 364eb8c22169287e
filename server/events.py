"""Job events from PostgreSQL (LISTEN) fanned out to this process's waiters.

Writers NOTIFY "<job_id>:<kind>" in the transaction that changes a job (storage.db.notify);
one LISTEN connection per server process wakes the dispatcher and every open
Watch/StreamLogs call. Waiters also time out after a short backstop interval, so a
lost notification (or a dropped LISTEN connection) only delays, never loses, an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import asyncpg

from storage.db import JOB_EVENTS_CHANNEL

log = logging.getLogger(__name__)

Listener = Callable[[str, str], None]


class EventHub:
    def __init__(self, dsn: str, *, reconnect_seconds: float = 1.0) -> None:
        self._dsn = dsn
        self._reconnect = reconnect_seconds
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listeners: list[Listener] = []
        self._task: asyncio.Task | None = None
        self._lost = asyncio.Event()

    def add_listener(self, fn: Listener) -> None:
        """``fn(job_id, kind)`` for every event (called on the event loop, must not block)."""
        self._listeners.append(fn)

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _connect(self) -> None:
        self._lost.clear()
        self._conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "aihub-events"})
        self._conn.add_termination_listener(lambda _c: self._lost.set())
        await self._conn.add_listener(JOB_EVENTS_CHANNEL, self._on_notify)

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            log.warning("LISTEN connection lost; reconnecting")
            self._wake_all()
            while True:
                await asyncio.sleep(self._reconnect)
                try:
                    await self._connect()
                    self._wake_all()
                    break
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("LISTEN reconnect failed: %s", exc)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        job_id, _, kind = payload.partition(":")
        for event in self._waiters.get(job_id, ()):
            event.set()
        for fn in self._listeners:
            try:
                fn(job_id, kind)
            except Exception:  # noqa: BLE001 - one bad listener must not starve the rest
                log.exception("event listener failed")

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn("", "reconnected")

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


async def wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` passes; then clears it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()
