"""The loop of the unattended parts (server/operations/periodic.py): a failing pass is
logged and the next one runs on time; stop ends the loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.operations.periodic import Periodic
from storage.errors import DatabaseUnavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Flaky(Periodic):
    name = "flaky"
    interval = 0.01

    def __init__(self) -> None:
        self.passes = 0
        self.done = asyncio.Event()

    async def run_pass(self) -> None:
        self.passes += 1
        if self.passes == 1:
            raise DatabaseUnavailable("database unavailable: gone for a moment")
        if self.passes == 2:
            raise RuntimeError("a bug in one pass")
        if self.passes >= 4:
            self.done.set()


async def test_a_failing_pass_is_logged_and_the_loop_goes_on(caplog):
    loop = Flaky()
    with caplog.at_level(logging.WARNING, logger="server.operations.periodic"):
        loop.start()
        await asyncio.wait_for(loop.done.wait(), 10)
        await loop.stop()
    said = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert said[:2] == [("WARNING", "flaky: database unavailable: gone for a moment", False), ("ERROR", "flaky: the pass failed", True)]
    passes = loop.passes
    await asyncio.sleep(0.05)
    assert loop.passes == passes  # stopped
