"""The claim loop: takes PENDING jobs in priority order and runs them on the executor.

Woken at once by a ``queued`` job event (a job created, retried, re-prioritised or
requeued; a run finished), with a slow poll as backstop. Claims use FOR UPDATE SKIP LOCKED
(storage.queue.CLAIM_HEAD), so any number of servers can share one database without running a
job twice; each claim records this server's ``server_id`` in ``claimed_by``. Each claim
takes a lease that a heartbeat renews; expired leases (a server that died) are requeued by
storage.queue.requeue_expired on every pass, at most ``max_lost_leases`` times a job.

Nothing a job's run produced is lost in a database outage: an outcome the run could not
write, or one the dispatcher decides (a lost Ray task, a time limit), is written by
``_record`` as soon as the database answers again, and the running jobs' leases are renewed
before any pass requeues expired ones. A server asked to stop drains first (``drain``): it
stops claiming and lets its running jobs finish for a while; what is left is handed back to
the queue (storage.queue.release), which does not use a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import tenacity

from server.execution.driver import DriverLost
from server.execution.executor import Executor
from server.execution.payloads import OUTAGE_BACKOFF, AttemptEnd, JobPayload, Outcome, TaskSettings, WorkerLost
from server.observability import job_fields
from storage import db, queue
from storage.errors import DatabaseUnavailable
from storage.notifications import RECONNECTED, JobEvent
from storage.records import Job, JobError, LogLevel
from trainers.errors import TrainingError, first_line
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
    """One claim's view of the resources: whether the queue's head may start now. ``held`` is
    what the running jobs of every server hold (storage.queue.held, read under the claim's
    lock), so that servers sharing a cluster never admit more than it has between them."""

    def __init__(self, dispatcher: Dispatcher, totals: dict[str, float], held: dict[uuid.UUID, dict[str, float]]) -> None:
        self.dispatcher, self.totals = dispatcher, totals
        # This server's own jobs count until their tasks end (a cancelled job's Ray task may
        # hold its CPUs a moment after its row says CANCELLED).
        holding = {**held, **dispatcher.committed}
        self.running = len(holding)
        self.free = {kind: total - sum(h.get(kind, 0.0) for h in holding.values()) for kind, total in totals.items()}
        self.taken: dict[uuid.UUID, dict[str, float]] = {}  # what each job taken in this claim holds
        self.waiting: list[tuple[Job, str]] = []

    def admit(self, job: Job, tenant_running: int) -> queue.Admission:
        try:
            spec = TrainingSpec.from_dict(job.config, model_type=job.model_type)
        except (KeyError, TypeError, ValueError):
            self.taken[job.job_id] = {}
            return "take"  # it fails at once, with the reason (Dispatcher._execute)
        need = self.dispatcher.executor.demand(spec, self.totals)
        fits = all(need[k] <= self.free.get(k, 0.0) + 1e-9 for k in need)
        reserve = self.dispatcher.reserved_slots_for(self.totals)
        if fits and reserve and tenant_running:
            kept = reserve * self.dispatcher.executor.job_cpus
            if self.free.get("CPU", 0.0) - need.get("CPU", 0.0) < kept - 1e-9:
                self.waiting.append(
                    (job, f"waiting: the last {reserve} free slot(s) are kept for tenants running no job (AIHUB_RESERVED_SLOTS)")
                )
                return "pass"  # a job of a tenant running none may still take it
        if fits:
            self.taken[job.job_id] = need
            for kind, amount in need.items():
                self.free[kind] = self.free.get(kind, 0.0) - amount
            return "take"
        if any(need[k] > self.totals.get(k, 0.0) + 1e-9 for k in need):
            self.waiting.append(
                (job, f"waiting for the cluster to grow: needs {_describe(need)}; its alive nodes have {_describe(self.totals)} in all")
            )
            return "pass"  # cannot start on the cluster as it is now: does not hold up the jobs behind it
        running = self.running + len(self.taken)
        self.waiting.append(
            (job, f"waiting for resources: needs {_describe(need)}; free now {_describe(self.free)} ({running} jobs running)")
        )
        return "wait"


CLAIM_BATCH = 16  # jobs claimed in one transaction at most


@dataclass(frozen=True)
class Limits:
    """How long a job may run and when it is worth a warning."""

    default_runtime_seconds: float = 86400.0  # a job without max_runtime_seconds
    stall_warning_seconds: float = 600.0  # progress unchanged this long: a WARNING
    max_lost_leases: int = queue.MAX_LOST_LEASES  # requeues after a lost server, then FAILED (WorkerLost)


@dataclass
class RunningJob:
    """One job this server runs: its task, its attempt, what it holds (CPU, GPU, memory),
    where its progress was last seen and since when, and whether this server handed it back."""

    task: asyncio.Task[None]
    attempt: int
    holds: dict[str, float]
    progress: tuple[int, str] | None = None
    since: float = 0.0
    warned: bool = False  # warned about this stall
    handed_back: bool = False


class AttemptObserver(Protocol):
    """Told of each attempt this server ran (metrics): the job as claimed, how it ended
    (COMPLETED, FAILED, CANCELLED, or RETURNED: handed back), the failure's reason, seconds run."""

    def __call__(self, job: Job, status: AttemptEnd, reason: str, seconds: float) -> None: ...


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
        limits: Limits | None = None,
        observer: AttemptObserver | None = None,
        reserved_slots: int | None = None,
    ) -> None:
        self.reserved_slots = reserved_slots  # None: 1 on a cluster of 4 or more slots, else 0
        self.observer = observer
        self.engine = engine
        self.executor = executor
        self.server_id = server_id
        self.task_settings = task_settings
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.stop_wait_seconds = stop_wait_seconds
        self.limits = limits or Limits()
        self._maintained_at = float("-inf")  # when leases and requeues were last seen to
        self._db_up, self._back_at = True, float("-inf")  # whether the database answered last; when it came back
        self.jobs: dict[uuid.UUID, RunningJob] = {}  # what this server runs now, one record each
        self._noted: dict[uuid.UUID, tuple[int, str]] = {}  # the last wait logged on each waiting job
        self._wake = asyncio.Event()
        self._paused = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> dict[uuid.UUID, asyncio.Task[None]]:
        """The task of each job this server runs."""
        return {job_id: r.task for job_id, r in self.jobs.items()}

    @property
    def committed(self) -> dict[uuid.UUID, dict[str, float]]:
        """What each running job holds (CPU, GPU, memory)."""
        return {job_id: r.holds for job_id, r in self.jobs.items()}

    # --- wiring ---------------------------------------------------------------------------
    def on_event(self, job_id: str, kind: str) -> None:
        """Job-event listener: new work wakes the loop (a lost and regained event stream may
        have hidden some, so that does too). A cancelled job's Ray task notices by itself
        that its attempt is over: server/execution/guard.py."""
        if kind == RECONNECTED:
            self._maintained_at = float("-inf")
        if kind in (JobEvent.QUEUED, RECONNECTED):
            self._wake.set()

    def reserved_slots_for(self, totals: dict[str, float]) -> int:
        """Job slots (``job_cpus`` CPUs each) that a tenant already running a job may not
        take: kept for a tenant running none, so that its job starts at once even while
        another tenant's long jobs fill the rest. AIHUB_RESERVED_SLOTS, else 1 on a cluster
        of 4 or more slots (at most a quarter held back from a tenant alone), else 0."""
        if self.reserved_slots is not None:
            return self.reserved_slots
        return 1 if totals.get("CPU", 0.0) // max(1, self.executor.job_cpus) >= 4 else 0

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) claiming; running jobs go on. For maintenance and tests."""
        self._paused = paused
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(), name="dispatcher"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]

    async def drain(self, seconds: float) -> None:
        """Stop claiming and give the running jobs up to ``seconds`` to finish (what is left
        is handed back by ``stop``)."""
        self.pause()
        pending = [r.task for r in self.jobs.values()]
        if pending and seconds > 0:
            log.info("draining: %d running jobs may finish within %.0f s", len(pending), seconds)
            _, still = await asyncio.wait(pending, timeout=seconds)
            if still:
                log.warning("drain: %d jobs still running after %.0f s; handing them back", len(still), seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.jobs:
            return
        # Hand our jobs back now (PENDING, next attempt, not one of their retries) rather
        # than when their lease runs out: another server, or this one restarted, takes them
        # at once, and their Ray tasks see that their attempt is over and stop.
        try:
            async with db.transaction(self.engine) as conn:
                released = await queue.release(conn, self.server_id)
            for job_id in released:
                if (record := self.jobs.get(job_id)) is not None:
                    record.handed_back = True
            for job_id in released:
                log.warning("handed back to the queue (server stopping)", extra={"job_id": str(job_id)})
        except Exception:
            log.exception("could not hand running jobs back; their leases will requeue them")
        pending = [r.task for r in self.jobs.values()]  # some may have ended meanwhile
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.stop_wait_seconds)
            for task in still:
                task.cancel()

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._pass()
            except DatabaseUnavailable as exc:
                log.warning("dispatch pass: %s", exc)
            except Exception:
                log.exception("dispatch pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def _pass(self) -> None:
        if time.monotonic() - self._maintained_at >= self.poll_interval:
            await self._maintain()
        if self._paused:
            return
        try:
            totals = await asyncio.to_thread(self.executor.totals)
        except Exception as exc:  # noqa: BLE001 - Ray unreachable: jobs wait PENDING until it is back
            log.warning("Ray unavailable; not claiming jobs: %s", exc)
            return
        await self._claim(totals)

    async def _maintain(self) -> None:
        """Leases, requeues and due retries: at most once per poll interval (every pass would
        add a transaction per job when the queue is busy)."""
        self._maintained_at = time.monotonic()
        try:
            async with db.transaction(self.engine) as conn:
                # Our own leases first: after an outage longer than a lease, our running jobs
                # are not taken for lost. Every server saw the outage: each gives the others
                # one lease to renew theirs before it requeues any.
                await queue.heartbeat(conn, self.server_id, list(self.jobs), lease_seconds=self.lease_seconds)
                requeued: list[uuid.UUID] = []
                lost: list[uuid.UUID] = []
                if time.monotonic() - self._back_at >= self.lease_seconds:
                    requeued, lost = await queue.requeue_expired(conn, max_lost=self.limits.max_lost_leases)
                retried = await queue.requeue_due_retries(conn)
        except DatabaseUnavailable:
            self._reachable(False)
            raise
        self._reachable(True)
        for job_id in requeued:
            log.warning("lease expired (its server was lost); queued again", extra={"job_id": str(job_id)})
        for job_id in lost:
            log.error("lease expired once more than AIHUB_MAX_LOST_LEASES allows; FAILED (WorkerLost)", extra={"job_id": str(job_id)})
        for job_id in retried:
            log.info("automatic retry", extra={"job_id": str(job_id)})

    async def _claim(self, totals: dict[str, float]) -> None:
        while not self.max_concurrent or len(self.jobs) < self.max_concurrent:
            room = self.max_concurrent - len(self.jobs) if self.max_concurrent else CLAIM_BATCH
            async with db.transaction(self.engine) as conn:
                ledger = _Ledger(self, totals, await queue.held(conn))
                taken = await queue.claim_many(
                    conn,
                    self.server_id,
                    lease_seconds=self.lease_seconds,
                    admit=ledger.admit,
                    holds=ledger.taken,
                    limit=min(room, CLAIM_BATCH),
                )
                for waiting, message in ledger.waiting:
                    if self._noted.get(waiting.job_id) != (waiting.attempt, message):
                        await queue.note(conn, waiting.job_id, waiting.attempt, message)
            # Remember only what waits now (a job cancelled while waiting is forgotten).
            self._noted = {waiting.job_id: (waiting.attempt, message) for waiting, message in ledger.waiting}
            for job in taken:
                with job_fields(job_id=str(job.job_id), tenant_id=job.tenant_id, attempt=job.attempt):
                    # The task copies this context: its log lines carry the job's fields.
                    task = asyncio.create_task(self._execute(job), name=f"job-{job.job_id}")
                self.jobs[job.job_id] = RunningJob(task, job.attempt, ledger.taken.get(job.job_id, {}))
            if len(taken) < CLAIM_BATCH:
                return

    async def _execute(self, job: Job) -> None:
        began, ended = time.monotonic(), (AttemptEnd.FAILED, "")
        try:
            try:
                spec = TrainingSpec.from_dict(job.config, model_type=job.model_type)
            except (KeyError, TypeError, ValueError) as exc:  # a stored config this release cannot read
                await self._fail(job, JobError("ConfigValidationError", f"the job's stored configuration is unreadable: {exc!r}"))
                return
            payload = JobPayload(job.job_id, job.attempt, job.tenant_id, spec, self.task_settings, retry_number=job.failed_attempts)
            limit = self.time_limit(spec)
            run = asyncio.ensure_future(self.executor.run(payload))
            try:
                done, _ = await asyncio.wait({run}, timeout=limit)
                if not done:
                    await self._time_out(job, limit)
                outcome = await run  # a timed-out attempt's guard stops it (as a cancel does)
                ended = self._ended(job, outcome, timed_out=not done)
                if not outcome.written:
                    await self._write_outcome(job, outcome)
            except DriverLost as exc:  # the cluster's head went away: the job waits for it, it does not fail
                why = f"the Ray cluster was lost while it ran ({exc})"
                ended = (AttemptEnd.RETURNED, "RayLost")
                await self._record("hand back", lambda conn: queue.hand_back(conn, self.server_id, job.job_id, job.attempt, why))
            except WorkerLost as exc:  # its worker was killed: back to the queue, not a retry (capped as a lost lease is)
                ended = (AttemptEnd.RETURNED, "WorkerLost")
                cap, lost = self.limits.max_lost_leases, exc.message
                await self._record(
                    "requeue",
                    lambda conn: queue.requeue_lost_worker(conn, self.server_id, job.job_id, job.attempt, lost, max_lost=cap),
                )
            except TrainingError as exc:  # what Ray saw run out (its memory monitor's kill): its own reason
                ended = (AttemptEnd.FAILED, exc.reason)
                await self._fail(job, JobError(exc.reason, exc.message, exc.details, retryable=exc.retryable))
            except Exception as exc:  # noqa: BLE001 - Ray task died: its Ray worker crashed or its node was lost
                message = f"the Ray task ended without a result: {type(exc).__name__}: {first_line(exc, 300)}"
                ended = (AttemptEnd.FAILED, "WorkerLost")
                await self._fail(job, JobError("WorkerLost", message, retryable=True))
            finally:
                if not run.done():
                    run.cancel()
        except asyncio.CancelledError:
            ended = (AttemptEnd.RETURNED, "ServerStopping")
            raise
        finally:
            if self.observer is not None:
                self.observer(job, *ended, time.monotonic() - began)
            self.jobs.pop(job.job_id, None)
            self._wake.set()

    def _ended(self, job: Job, outcome: Outcome, *, timed_out: bool) -> tuple[AttemptEnd, str]:
        """How the attempt ended, for the log and the observer: a job this server handed back
        as it stopped says so (its task saw its attempt end, as for a cancel)."""
        record = self.jobs.get(job.job_id)
        if record is not None and record.handed_back:
            log.info("attempt %d: handed back to the queue (server stopping)", job.attempt)
            return (AttemptEnd.RETURNED, "ServerStopping")
        log.info("attempt %d: %s", job.attempt, outcome.status)
        if timed_out:
            return (AttemptEnd.FAILED, "Timeout")
        return (outcome.status, outcome.error.reason if outcome.error else "")

    def time_limit(self, spec: TrainingSpec) -> float:
        """Seconds an attempt of ``spec`` may run: its ``max_runtime_seconds``, else this server's default."""
        return float(spec.max_runtime_seconds or self.limits.default_runtime_seconds)

    async def _time_out(self, job: Job, limit: float) -> None:
        error = JobError(
            "Timeout",
            f"the attempt ran longer than its time limit of {limit:g} s (max_runtime_seconds) and was stopped",
            {"max_runtime_seconds": f"{limit:g}"},
            retryable=False,
        )
        if await self._record("time limit", lambda conn: queue.fail(conn, job.job_id, job.attempt, error)):
            log.warning("stopped after %g s: its time limit", limit)

    async def _write_outcome(self, job: Job, outcome: Outcome) -> None:
        """The outcome the run could not write (the database was unreachable at its end)."""
        if outcome.status is AttemptEnd.COMPLETED:
            await self._record("outcome", lambda conn: queue.complete(conn, job.job_id, job.attempt, outcome.model_version))
        elif outcome.status is AttemptEnd.FAILED and outcome.error is not None:
            error = outcome.error
            await self._record("outcome", lambda conn: queue.fail(conn, job.job_id, job.attempt, error, retry_in=outcome.retry_in))

    async def _fail(self, job: Job, error: JobError) -> None:
        """Record a failure (with the retry policy), unless the attempt already ended (e.g.
        it was cancelled)."""
        retry_in = self.task_settings.retry.delay(job.failed_attempts, error.retryable)
        await self._record("failure", lambda conn: queue.fail(conn, job.job_id, job.attempt, error, retry_in=retry_in))

    async def _record(self, what: str, write: Callable[[db.Connection], Awaitable[bool]]) -> bool:
        """Run ``write`` in a transaction, waiting out a database outage (never giving up
        while this server runs): what a job's run ended with is never lost."""
        warned = False

        def note(state: tenacity.RetryCallState) -> None:
            nonlocal warned
            if not warned:
                exc = state.outcome.exception() if state.outcome else None
                log.warning("database unavailable; the %s is written when it is back (%s)", what, exc)
                warned = True

        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(DatabaseUnavailable),
            wait=OUTAGE_BACKOFF,
            before_sleep=note,
            reraise=True,
        ):
            with attempt:
                async with db.transaction(self.engine) as conn:
                    written = await write(conn)
        if warned:
            log.info("database back: the %s is written", what)
        return written

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with db.transaction(self.engine) as conn:
                    where = await queue.heartbeat(conn, self.server_id, list(self.jobs), lease_seconds=self.lease_seconds)
                    for job_id, attempt, message in self._stalled(where):
                        await queue.note(conn, job_id, attempt, message, level=LogLevel.WARNING)
            except DatabaseUnavailable as exc:
                self._reachable(False)
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            else:
                self._reachable(True)

    def _reachable(self, reachable: bool) -> None:
        """Note whether the database answers; when it is back after an outage, the time."""
        if reachable and not self._db_up:
            self._back_at = time.monotonic()
            log.info("database reachable again; running jobs keep their leases")
        self._db_up = reachable

    def _stalled(self, where: dict[uuid.UUID, tuple[int, str]]) -> list[tuple[uuid.UUID, int, str]]:
        """The running jobs whose progress has not moved for stall_warning_seconds (each
        warned once per stall)."""
        now, found = time.monotonic(), []
        for job_id, state in where.items():
            r = self.jobs.get(job_id)
            if r is None:
                continue
            if r.progress != state:
                r.progress, r.since, r.warned = state, now, False
            if not r.warned and now - r.since >= self.limits.stall_warning_seconds:
                progress, step = state
                message = f"no progress for {now - r.since:.0f} s (still {progress}% in step {step or 'start'})"
                with job_fields(job_id=str(job_id)):
                    log.warning("%s", message)
                found.append((job_id, r.attempt, message))
                r.warned = True
        return found
