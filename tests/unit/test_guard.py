"""AttemptGuard: a task stops itself when its attempt is over; a stuck one ends its process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from server.execution.guard import EXIT_CODE, AttemptGuard, Superseded
from tests.conftest import ROOT


class Flag:
    def __init__(self, running: bool = True) -> None:
        self.running = running
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.running


def test_a_python_loop_is_interrupted_soon_after_the_attempt_ends():
    flag = Flag()
    t0 = time.monotonic()
    with pytest.raises(Superseded), AttemptGuard(flag, interval=0.05, grace=5):
        while True:
            time.sleep(0.01)
            if time.monotonic() - t0 > 0.3:
                flag.running = False
            assert time.monotonic() - t0 < 5, "never interrupted"
    assert 0.3 <= time.monotonic() - t0 < 2.0  # checked every 0.05 s; slack for a loaded machine


def test_work_that_ends_first_sees_nothing_and_the_check_stops():
    flag = Flag(running=False)
    with AttemptGuard(flag, interval=0.2, grace=5) as guard:
        pass
    time.sleep(0.5)  # a late interrupt would land here
    assert not guard.fired and flag.calls == 0


def test_a_failing_check_does_not_stop_the_work():
    def broken() -> bool:
        raise OSError("database unreachable")

    with AttemptGuard(broken, interval=0.02, grace=0.1) as guard:
        time.sleep(0.3)
    assert not guard.fired


def _run(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent("""
        import ctypes, time
        from server.execution.guard import AttemptGuard, Superseded
        libc = ctypes.CDLL(None)
        """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_task_stuck_in_native_code_ends_its_process():
    t0 = time.monotonic()
    result = _run("""
        with AttemptGuard(lambda: False, interval=0.05, grace=0.5):
            libc.sleep(30)  # no Python bytecode runs: the exception cannot be delivered
        print("survived")
        """)
    assert result.returncode == EXIT_CODE and "survived" not in result.stdout
    assert time.monotonic() - t0 < 15


def test_a_thread_that_left_the_block_is_not_ended():
    # As if the exception had landed just as the block closed, so that its exit never ran:
    # the thread is elsewhere (here: in native code) when the grace period ends.
    result = _run("""
        def attempt():
            guard = AttemptGuard(lambda: False, interval=0.05, grace=0.5)
            guard.__enter__()
            try:
                while True:
                    time.sleep(0.01)
            except Superseded:
                return
        attempt()
        libc.sleep(2)
        print("alive")
        """)
    assert result.returncode == 0 and "alive" in result.stdout, result.stderr
