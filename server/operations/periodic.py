"""The loop every unattended part runs on every server (alerts, degradation checks,
retention, the scheduler): a pass every ``interval`` seconds until stopped. A pass that
fails does not end the loop: the database being away is one WARNING line (it comes back),
anything else is logged with its traceback; the next pass runs on time either way. What must
happen once across servers is decided in PostgreSQL (row locks), not here."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from storage.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses set ``name`` (the task's name and the log's) and ``interval``, and define
    ``run_pass``."""

    name = "periodic"
    interval: float = 1.0
    _task: asyncio.Task[None] | None = None

    async def run_pass(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_pass()
            except DatabaseUnavailable as exc:
                log.warning("%s: %s", self.name, exc)
            except Exception:
                log.exception("%s: the pass failed", self.name)
            await asyncio.sleep(self.interval)
