"""A Ray worker process's runtime for our tasks: one background event loop and one small
engine per database, kept between tasks, so consecutive jobs on a warm Ray worker pay no
connection set-up. The task's own thread runs the pipeline and calls :meth:`run` for each
short database transaction."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from storage import db

T = TypeVar("T")


class TaskRuntime:
    def __init__(self) -> None:
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
