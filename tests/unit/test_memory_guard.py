"""A single-node attempt held to AIHUB_JOB_MEMORY (server/execution/memory.py): the moment its
resident memory crosses the limit, OverJobMemory is raised in the attempt's thread wherever
it is, and the job's error names the figure and the remedies. Through the service, on the
two-node cluster: tests/cluster/test_cluster.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from server.execution.guard import raise_in
from server.execution.memory import MemoryGuard, OverJobMemory, attempt_over


def test_crossing_the_limit_stops_the_work_where_it_is_and_the_error_names_the_remedies():
    limit = psutil.Process().memory_info().rss + 64 * 2**20
    thread = threading.get_ident()
    guard = MemoryGuard(limit, attempt_over(limit), on_over=lambda used: raise_in(thread, OverJobMemory))
    blocks = []
    try:
        with pytest.raises(OverJobMemory):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # 16 MiB at a time, written (so resident), up to 20 s
                blocks.append(np.ones(2 * 2**20))
                time.sleep(0.01)
    finally:
        guard.stop()
        raise_in(thread, None)
    held = 16 * 2**20 * len(blocks)
    assert 48 * 2**20 <= held <= 512 * 2**20, held  # stopped soon after the limit, not at the deadline
    error = guard.error(guard.over)
    assert error.reason == "OutOfMemory" and not error.retryable
    assert "a single-node job may use here (AIHUB_JOB_MEMORY" in error.message
    assert '"distributed": true' in error.message and "use_sample" in error.message
    assert int(error.details["used_bytes"]) > limit == int(error.details["job_memory_bytes"])


def test_under_the_limit_nothing_is_raised_and_the_peak_is_kept():
    guard = MemoryGuard(0, attempt_over(0))
    block = np.ones(8 * 2**20)  # 64 MiB
    time.sleep(0.3)
    guard.stop()
    guard.check()
    assert guard.peak >= block.nbytes and not guard.over
