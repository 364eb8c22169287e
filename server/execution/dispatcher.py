"""The claim loop: takes PENDING jobs in priority order and runs them on the executor.

Woken at once by a ``queued`` job event (a job created, retried, re-prioritised or
requeued; a run finished), with a slow poll as backstop. Claims use FOR UPDATE SKIP LOCKED
(storage.queue.CLAIM_HEAD), so any number of servers can share one database without running a
job twice; each claim records this server's ``server_id`` in ``claimed_by``. Each claim
takes a lease that a heartbeat renews; expired leases (a server that died) are requeued by
storage.queue.requeue_expired on every pass, and a server that stops hands its running
jobs back at once (storage.queue.release).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from server.execution.driver import DriverLost
from server.execution.executor import Executor
from server.execution.payloads import JobPayload, TaskSettings
from server.observability import job_fields
from storage import db, queue
from storage.notifications import RECONNECTED, JobEvent
from storage.records import Job, JobError
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)


def _describe(resources: dict[str, float]) -> str:
    parts = [f"{resources.get('CPU', 0.0):g} CPU"]
    if resources.get("GPU"):
        parts.append(f"{resources['GPU']:g} GPU")
    if resources.get("memory"):
        parts.append(f"{resources['memory'] / 1024**3:.3g} GiB memory")
    return ", ".join(parts)


class _Ledger:
    """One claim's view of the resources: whether the queue's head may start now."""

    def __init__(self, dispatcher: Dispatcher, totals: dict[str, float]) -> None:
        self.dispatcher, self.totals = dispatcher, totals
        self.free = dispatcher.free(totals)
        self.taken: dict[str, float] = {}
        self.waiting: list[tuple[Job, str]] = []

    def admit(self, job: Job) -> queue.Admission:
        try:
            spec = TrainingSpec.from_dict(job.config, model_type=job.model_type)
        except (KeyError, TypeError, ValueError):
            return "take"  # it fails at once, with the reason (Dispatcher._execute)
        need = self.dispatcher.executor.demand(spec, self.totals)
        if all(need[k] <= self.free.get(k, 0.0) + 1e-9 for k in need):
            self.taken = need
            return "take"
        if any(need[k] > self.totals.get(k, 0.0) + 1e-9 for k in need):
            self.waiting.append(
                (job, f"waiting for the cluster to grow: needs {_describe(need)}; its alive nodes have {_describe(self.totals)} in all")
            )
            return "pass"  # cannot start on the cluster as it is now: does not hold up the jobs behind it
        running = len(self.dispatcher.running)
        self.waiting.append(
            (job, f"waiting for resources: needs {_describe(need)}; free now {_describe(self.free)} ({running} jobs running)")
        )
        return "wait"


class Dispatcher:
    def __init__(
        self,
        engine: db.Engine,
        executor: Executor,
        *,
        server_id: str,
        task_settings: TaskSettings,
        max_concurrent: int = 0,
        poll_interval: float = 2.0,
        lease_seconds: float = 30.0,
        stop_wait_seconds: float = 8.0,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.server_id = server_id
        self.task_settings = task_settings
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.stop_wait_seconds = stop_wait_seconds
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.committed: dict[uuid.UUID, dict[str, float]] = {}  # what each running job holds (CPU, GPU, memory)
        self._noted: dict[uuid.UUID, tuple[int, str]] = {}  # the last wait logged on each waiting job
        self._wake = asyncio.Event()
        self._paused = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- wiring ---------------------------------------------------------------------------
    def on_event(self, job_id: str, kind: str) -> None:
        """Job-event listener: new work wakes the loop (a lost and regained event stream may
        have hidden some, so that does too). A cancelled job's Ray task notices by itself
        that its attempt is over: server/execution/guard.py."""
        if kind in (JobEvent.QUEUED, RECONNECTED):
            self._wake.set()

    def free(self, totals: dict[str, float]) -> dict[str, float]:
        """The cluster's resources less what this server's running jobs hold."""
        return {kind: total - sum(held.get(kind, 0.0) for held in self.committed.values()) for kind, total in totals.items()}

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
                released = await queue.release(conn, self.server_id)
            for job_id in released:
                log.warning("handed back to the queue (server stopping)", extra={"job_id": str(job_id)})
        except Exception:
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
            except Exception:
                log.exception("dispatch pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def _pass(self) -> None:
        async with db.transaction(self.engine) as conn:
            requeued = await queue.requeue_expired(conn)
            retried = await queue.requeue_due_retries(conn)
        for job_id in requeued:
            log.warning("lease expired (its server stopped); queued again", extra={"job_id": str(job_id)})
        for job_id in retried:
            log.info("automatic retry", extra={"job_id": str(job_id)})
        if self._paused:
            return
        try:
            totals = await asyncio.to_thread(self.executor.totals)
        except Exception as exc:  # noqa: BLE001 - Ray unreachable: jobs wait PENDING until it is back
            log.warning("Ray unavailable; not claiming jobs: %s", exc)
            return
        while not self.max_concurrent or len(self.running) < self.max_concurrent:
            ledger = _Ledger(self, totals)
            async with db.transaction(self.engine) as conn:
                job = await queue.claim(conn, self.server_id, lease_seconds=self.lease_seconds, admit=ledger.admit)
                for waiting, message in ledger.waiting:
                    if self._noted.get(waiting.job_id) != (waiting.attempt, message):
                        await queue.note(conn, waiting.job_id, waiting.attempt, message)
            # Remember only what waits now (a job cancelled while waiting is forgotten).
            self._noted = {waiting.job_id: (waiting.attempt, message) for waiting, message in ledger.waiting}
            if job is None:
                return
            self.committed[job.job_id] = ledger.taken
            with job_fields(job_id=str(job.job_id), tenant_id=job.tenant_id, attempt=job.attempt):
                # The task copies this context: its log lines carry the job's fields.
                self.running[job.job_id] = asyncio.create_task(self._execute(job), name=f"job-{job.job_id}")

    async def _execute(self, job: Job) -> None:
        try:
            try:
                spec = TrainingSpec.from_dict(job.config, model_type=job.model_type)
            except (KeyError, TypeError, ValueError) as exc:  # a stored config this release cannot read
                await self._fail(job, JobError("ConfigValidationError", f"the job's stored configuration is unreadable: {exc!r}"))
                return
            payload = JobPayload(job.job_id, job.attempt, job.tenant_id, spec, self.task_settings)
            try:
                outcome = await self.executor.run(payload)
                log.info("attempt %d: %s", job.attempt, outcome.status)
            except DriverLost as exc:  # the cluster's head went away: the job waits for it, it does not fail
                async with db.transaction(self.engine) as conn:
                    await queue.hand_back(conn, self.server_id, job.job_id, job.attempt, f"the Ray cluster was lost while it ran ({exc})")
            except Exception as exc:  # noqa: BLE001 - Ray task died: its Ray worker crashed or its node was lost
                message = f"the Ray task ended without a result: {type(exc).__name__}: {exc}"
                await self._fail(job, JobError("WorkerLost", message, retryable=True))
        finally:
            self.running.pop(job.job_id, None)
            self.committed.pop(job.job_id, None)
            self._wake.set()

    async def _fail(self, job: Job, error: JobError) -> None:
        """Record a failure (with the retry policy), unless the attempt already ended (e.g.
        it was cancelled)."""
        retry_in = self.task_settings.retry.delay(job.attempt, error.retryable)
        async with db.transaction(self.engine) as conn:
            await queue.fail(conn, job.job_id, job.attempt, error, retry_in=retry_in)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with db.transaction(self.engine) as conn:
                    await queue.heartbeat(conn, self.server_id, list(self.running), lease_seconds=self.lease_seconds)
            except Exception:
                log.exception("heartbeat failed")
