"""How much memory a job's processes use, measured, and the limits they are held to: a
distributed job's workers to ``ray_config.memory_per_worker``, a single-node attempt to
AIHUB_JOB_MEMORY. Ray's ``memory`` resource only books memory; these hold a process to it,
so a job over its memory fails with OutOfMemory naming the remedies instead of being killed
by the node's memory monitor (or the kernel) without one."""

from __future__ import annotations

import threading
from collections.abc import Callable

from trainers.errors import OutOfMemory
from trainers.spec.resources import format_memory


class MemoryGuard:
    """A process's resident memory (Python, the libraries, its data, the model), read every
    CHECK_SECONDS in a thread of its own, and its peak kept. Once it crossed ``limit`` (0:
    none), ``check()`` raises ``error(used)``, and ``on_over(used)``, when given, is called
    once from the guard's thread (to interrupt the work at once: see server/execution/tasks.py)."""

    CHECK_SECONDS = 0.1

    def __init__(self, limit: int, error: Callable[[int], OutOfMemory], *, on_over: Callable[[int], None] | None = None) -> None:
        import psutil

        self.limit, self.error, self.on_over = limit, error, on_over
        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self.over = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aihub-memory-guard", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.CHECK_SECONDS):
            self.sample()

    def sample(self) -> int:
        rss = self._process.memory_info().rss
        self.peak = max(self.peak, rss)
        if self.limit and rss > self.limit and not self.over:
            self.over = rss
            if self.on_over is not None:
                self.on_over(rss)
        return rss

    def check(self) -> None:
        if self.over:
            raise self.error(self.over)

    def stop(self) -> None:
        self._stop.set()
        self.sample()


def worker_over(rank: int, limit: int) -> Callable[[int], OutOfMemory]:
    """The error of a distributed job's worker over its memory_per_worker."""

    def error(used: int) -> OutOfMemory:
        return OutOfMemory(
            f"training worker {rank} used {used / 2**30:.2f} GiB, more than its ray_config.memory_per_worker "
            f"{format_memory(limit)} (the process's whole resident memory: Python and the libraries, its shard, the "
            "model): give each worker more memory_per_worker, cut the shards smaller with more num_workers, or use "
            "training_options.use_sample",
            details={"rank": rank, "used_bytes": used, "memory_per_worker_bytes": limit},
        )

    return error


class OverJobMemory(OutOfMemory):
    """Raised in a single-node attempt's thread the moment it crosses AIHUB_JOB_MEMORY (its
    task then reports :func:`attempt_over`)."""

    def __init__(self, message: str = "the attempt crossed AIHUB_JOB_MEMORY") -> None:
        super().__init__(message)


def attempt_over(limit: int) -> Callable[[int], OutOfMemory]:
    """The error of a single-node attempt over AIHUB_JOB_MEMORY."""

    def error(used: int) -> OutOfMemory:
        return OutOfMemory(
            f"the job used {used / 2**30:.2f} GiB, more than the {format_memory(limit)} a single-node job may use here "
            "(AIHUB_JOB_MEMORY; the attempt's whole resident memory: the window, its features, the model): train it with "
            '"distributed": true and enough ray_config.num_workers (each worker then reads and prepares only its own shard), '
            "ask the operator for more memory per job, or use training_options.use_sample",
            details={"resource": "memory", "used_bytes": used, "job_memory_bytes": limit},
        )

    return error
