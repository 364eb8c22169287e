"""A Ray worker process's runtime for our tasks: one background event loop and one small
engine per database, kept between tasks, so consecutive jobs on a warm Ray worker pay no
connection set-up. The task's own thread runs the pipeline and calls :meth:`run` for each
short database transaction."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from server.execution import shipping
from storage import db

T = TypeVar("T")
log = logging.getLogger(__name__)

# glibc's malloc, tuned for a training process: arrays of a million rows (8 MB a column) come
# from the heap and are reused from step to step, instead of each being a fresh mmap whose
# pages fault in on first touch and go back to the kernel when freed (glibc's default for
# blocks over 128 KB until its dynamic threshold catches up). On 1 M rows that was ~0.4 s of
# a 4 s job (bench/README.md#pipeline_overhead). Freed memory is kept for the next step and
# the next attempt (handing it back after each attempt with malloc_trim made the next one fault
# it all in again: +0.4 s); glibc still returns free memory above TRIM_THRESHOLD_BYTES at the
# heap's top.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 256 << 20  # blocks this large or larger still get their own mapping
TRIM_THRESHOLD_BYTES = 512 << 20  # free memory at the heap's top kept for later use


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc's, not another libc
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Set the thresholds above in this process (glibc only; elsewhere nothing happens)."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not ok:
        log.warning("malloc thresholds not set: large arrays are mapped and unmapped each time")
    return ok


def trim_malloc() -> None:
    """Hand the heap's free memory back to the kernel now (glibc only): before an attempt is
    held to a memory limit, so what an earlier attempt of this worker freed does not count."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class TaskRuntime:
    def __init__(self) -> None:
        tune_malloc()
        shipping.receive()  # the preprocessors shipped with the jobs, where none is installed
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="aihub-db", daemon=True).start()
        self._engines: dict[str, db.Engine] = {}

    def engine(self, url: str) -> db.Engine:
        if url not in self._engines:
            self._engines[url] = db.create_engine(url, pool_size=2)
        return self._engines[url]

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 120.0) -> T:
        """Run a coroutine on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)


_runtime: TaskRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> TaskRuntime:
    """This process's runtime, made on first use."""
    global _runtime  # noqa: PLW0603 - one per worker process, on purpose
    with _runtime_lock:
        if _runtime is None:
            _runtime = TaskRuntime()
        return _runtime
