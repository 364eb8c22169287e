"""Job events through PostgreSQL's NOTIFY/LISTEN.

Writers queue ``NOTIFY aihub_job_events '<job_id>:<kind>'`` in the transaction that changes
a job (:func:`notify`); PostgreSQL delivers it when that transaction commits. A server
process keeps one LISTEN connection (:class:`JobEventListener`) and hands each event to its
callback; the server fans them out (server/api/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable

import asyncpg

from storage import db

log = logging.getLogger(__name__)

JOB_EVENTS_CHANNEL = "aihub_job_events"


class JobEvent(enum.StrEnum):
    """What happened to a job (the kind in a notification)."""

    QUEUED = "queued"  # the job is PENDING and can be claimed: created, retried, requeued, re-prioritised
    CHANGED = "changed"  # state, progress, step or metrics changed
    LOG = "log"  # a log line was added
    CANCELLED = "cancelled"


# Not a notification: what a server's own listeners are told when its LISTEN connection was
# lost and came back (events may have been missed meanwhile).
RECONNECTED = "reconnected"


# notify: one job event. Index: none.
NOTIFY = db.sql("SELECT pg_notify(:channel, :payload)")


async def notify(conn: db.Connection, job_id: object, event: JobEvent) -> None:
    """Queue a job event; PostgreSQL delivers it when the transaction commits."""
    await conn.fetch(NOTIFY, {"channel": JOB_EVENTS_CHANNEL, "payload": f"{job_id}:{event.value}"})


def notify_sql(event: JobEvent) -> str:
    """The same event inside a statement, for each row it returns: an SQL expression over the
    row's ``id`` (the channel is the statement's :channel parameter, JOB_EVENTS_CHANNEL)."""
    return f"pg_notify(:channel, id::text || ':' || '{event.value}')"


class JobEventListener:
    """One LISTEN connection. ``on_event(job_id, kind)`` runs for every notification and
    ``on_reconnect()`` after the connection was lost and came back (events may have been
    missed meanwhile). Both are called on the event loop and must not block."""

    def __init__(
        self,
        dsn: str,
        on_event: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
        *,
        reconnect_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._on_event = on_event
        self._on_reconnect = on_reconnect
        self._reconnect = reconnect_seconds
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="job-event-listener")

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
        await self._conn.add_listener(JOB_EVENTS_CHANNEL, self._notified)

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            log.warning("LISTEN connection lost; reconnecting")
            self._on_reconnect()
            while True:
                await asyncio.sleep(self._reconnect)
                try:
                    await self._connect()
                    self._on_reconnect()
                    break
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("LISTEN reconnect failed: %s", exc)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        job_id, _, kind = str(payload).partition(":")
        self._on_event(job_id, kind)
