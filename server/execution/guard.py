"""Stops a job's Ray task from inside when the database says its attempt is over.

Cancelling (and a server handing its jobs back at shutdown) only changes the job's row;
nothing calls ``ray.cancel``. Ray 2.60's forced cancel races with a task that is just
returning: the driver's core worker then fails a ``RAY_CHECK`` ("Tried to complete task
that was not pending") and exits the whole server process. Stopping from inside the task
has no such race and works the same on a remote cluster.

While the attempt runs, a thread asks ``still_running()`` every ``interval`` seconds. When
the answer is no, it raises ``Superseded`` in the task's thread (delivered at the next
Python bytecode: between LightGBM/XGBoost rounds, torch batches, our own steps). If the
task is still inside the guarded block ``grace`` seconds later (stuck in native code),
the thread ends the worker process; Ray then reports the task as lost, which the
dispatcher treats as a no-op for an attempt that is no longer running.

The exception may land a little outside the block (it is delivered at the next check
point, which can be after the work ended). That is harmless: it only fires once the
attempt is already over, so every write it could interrupt is refused anyway. Whether
the task is still inside the block is read off the thread's stack, never off a flag that
the same exception could keep from being set.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Self

from trainers.errors import JobCancelled

log = logging.getLogger(__name__)

EXIT_CODE = 75  # what a Ray worker process ended by the guard exits with


class Superseded(JobCancelled):
    """Raised inside the task's thread when its attempt is no longer the running one."""

    def __init__(self, message: str = "the attempt is no longer running") -> None:
        super().__init__(message)


def raise_in(thread_id: int, exc: type[BaseException] | None) -> int:
    """Raise ``exc`` in the thread ``thread_id`` at its next Python bytecode (None: take back
    one not delivered yet)."""
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class AttemptGuard:
    """``with AttemptGuard(still_running):`` around an attempt's work, in the thread doing it."""

    def __init__(self, still_running: Callable[[], bool], *, interval: float = 0.5, grace: float = 5.0, name: str = "") -> None:
        self._still_running = still_running
        self._interval = interval
        self._grace = grace
        self._name = name
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._armed = False
        self._thread_id = 0
        self._owner: FrameType | None = None  # the frame that entered the block
        self.fired = False

    def __enter__(self) -> Self:
        self._thread_id = threading.get_ident()
        self._owner = sys._getframe(1)
        self._armed = True
        # The watcher logs with the task's job fields (a thread starts with an empty context).
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._watch,), name=f"aihub-guard-{self._name}", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False
            if self.fired:
                raise_in(self._thread_id, None)  # drop it if not delivered yet
        self._done.set()
        self._owner = None

    def _watch(self) -> None:
        while not self._done.wait(self._interval):
            try:
                running = self._still_running()
            except Exception as exc:  # noqa: BLE001 - the database may be back at the next look
                log.warning("%s: could not check the attempt: %s", self._name, exc)
                continue
            if running:
                continue
            with self._lock:
                if not self._armed:
                    return
                self.fired = True
                raise_in(self._thread_id, Superseded)
            log.info("%s: attempt no longer running; stopping the task", self._name)
            if self._done.wait(self._grace) or not self._inside():
                return
            log.error("%s: the task did not stop within %.0f s (stuck in native code); ending the worker process", self._name, self._grace)
            os._exit(EXIT_CODE)

    def _inside(self) -> bool:
        """Whether the guarded thread is still running the frame that entered the block."""
        frame = sys._current_frames().get(self._thread_id)
        while frame is not None:
            if frame is self._owner:
                return True
            frame = frame.f_back
        return False
