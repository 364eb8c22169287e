"""A child started with server.lifecycle.dying_with_parent ends when its parent is killed
with -9, and (where setpriv is) starts without a preexec_fn, so Python may vfork it: a
preexec_fn forces a plain fork, whose handlers (gRPC's) once aborted Envoy's child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from server import lifecycle

PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from server import lifecycle
    command, preexec = lifecycle.dying_with_parent(["sleep", "60"])
    child = subprocess.Popen(command, preexec_fn=preexec)
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def test_setpriv_takes_the_place_of_a_preexec_fn():
    command, preexec = lifecycle.dying_with_parent(["envoy", "-c", "x.yaml"])
    if lifecycle.SETPRIV is None:
        pytest.skip("no setpriv here: the preexec_fn is used, as before")
    assert command == [lifecycle.SETPRIV, "--pdeathsig", "TERM", "--", "envoy", "-c", "x.yaml"] and preexec is None


def test_the_child_ends_when_its_parent_is_killed_with_9():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 10
        while child.name() != "sleep" and time.monotonic() < deadline:  # setpriv has exec'd it
            time.sleep(0.05)
        assert child.name() == "sleep"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        child.wait(10)  # psutil.TimeoutExpired if the signal never came
    finally:
        parent.kill()
        parent.wait()
