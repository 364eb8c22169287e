"""The claim loop: takes PENDING jobs in priority order and runs them on the executor.

Woken at once by NOTIFY (a job created, retried or re-prioritised; a run finished),
with a slow poll as backstop. Claims use FOR UPDATE SKIP LOCKED (storage.queue.CLAIM),
so any number of servers can share one database without running a job twice. Each
claim takes a lease that a heartbeat renews; expired leases (a server that died) are
requeued by storage.queue.requeue_expired on every pass, and a server that stops hands
its running jobs back at once (storage.queue.release).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from server.executor import RayExecutor
from server.worker import JobPayload, RetryPolicy
from storage import db, queue
from storage.records import Job, JobError
from trainers import spec as specs
from trainers.errors import TrainingError

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        executor: RayExecutor,
        *,
        worker_id: str,
        database_url: str,
        artifact_root: str,
        max_concurrent: int = 0,
        poll_interval: float = 2.0,
        lease_seconds: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        on_claim: Callable[[Job], None] | None = None,
        stop_wait_seconds: float = 8.0,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.worker_id = worker_id
        self.database_url = database_url
        self.artifact_root = artifact_root
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.retry = retry
        self.on_claim = on_claim
        self.stop_wait_seconds = stop_wait_seconds
        self.running: dict[uuid.UUID, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._paused = False
        self._tasks: list[asyncio.Task] = []

    # --- wiring ---------------------------------------------------------------------------
    def on_event(self, job_id: str, kind: str) -> None:
        """EventHub listener: new work wakes the loop. (A cancelled job's Ray task notices
        by itself that its attempt is over: server/guard.py.)"""
        if kind in ("created", "reconnected"):
            self._wake.set()

    def capacity(self) -> int:
        return self.max_concurrent or self.executor.capacity()

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) claiming; running jobs go on. For maintenance and tests."""
        self._paused = paused
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(), name="dispatcher"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.running:
            return
        # Hand our jobs back now (PENDING, next attempt) rather than when their lease runs
        # out: another server, or this one restarted, takes them at once, and their Ray
        # tasks see that their attempt is over and stop.
        try:
            async with db.transaction(self.engine) as conn:
                released = await queue.release(conn, self.worker_id)
            for job_id in released:
                log.warning("job %s: handed back to the queue (server stopping)", job_id)
        except Exception:  # noqa: BLE001 - the lease will requeue them instead
            log.exception("could not hand running jobs back; their leases will requeue them")
        pending = list(self.running.values())  # some may have ended meanwhile
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.stop_wait_seconds)
            for task in still:
                task.cancel()

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._pass()
            except Exception:  # noqa: BLE001 - keep dispatching; the database may come back
                log.exception("dispatch pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def _pass(self) -> None:
        async with db.transaction(self.engine) as conn:
            requeued = await queue.requeue_expired(conn)
            retried = await queue.requeue_due_retries(conn)
        for job_id in requeued:
            log.warning("job %s: lease expired (its server stopped); queued again", job_id)
        for job_id in retried:
            log.info("job %s: automatic retry", job_id)
        if self._paused:
            return
        while len(self.running) < self.capacity():
            async with db.transaction(self.engine) as conn:
                job = await queue.claim(conn, self.worker_id, lease_seconds=self.lease_seconds)
            if job is None:
                return
            if self.on_claim:
                self.on_claim(job)
            self.running[job.job_id] = asyncio.create_task(self._execute(job), name=f"job-{job.job_id}")

    async def _execute(self, job: Job) -> None:
        try:
            try:
                spec = specs.build(job.config, model_type=job.model_type)
            except TrainingError as exc:
                await self._fail(job, JobError(exc.reason, str(exc), exc.details))
                return
            payload = JobPayload(
                job_id=job.job_id,
                attempt=job.attempt,
                tenant_id=job.tenant_id,
                config=job.config,
                spec=spec,
                database_url=self.database_url,
                artifact_root=self.artifact_root,
                num_threads=self.executor.job_cpus,
                retry=self.retry,
            )
            try:
                outcome = await self.executor.run(payload)
                log.info("job %s attempt %d: %s", job.job_id, job.attempt, outcome.status)
            except Exception as exc:  # noqa: BLE001 - Ray task died: worker crash or cancellation
                await self._fail(
                    job, JobError("WorkerLost", f"the Ray task ended without a result: {type(exc).__name__}: {exc}", retryable=True)
                )
        finally:
            self.running.pop(job.job_id, None)
            self._wake.set()

    async def _fail(self, job: Job, error: JobError) -> None:
        """Record a failure (with the retry policy), unless the attempt already ended (e.g.
        it was cancelled)."""
        async with db.transaction(self.engine) as conn:
            await queue.fail(conn, job.job_id, job.attempt, error, retry_in=self.retry.delay(job.attempt, error.retryable))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with db.transaction(self.engine) as conn:
                    await queue.heartbeat(conn, self.worker_id, list(self.running), lease_seconds=self.lease_seconds)
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")
