"""A Ray worker's malloc is tuned for training (server.execution.runtime.tune_malloc): a
million-row column comes from the heap, not from a mapping of its own that faults in page by
page and goes back to the kernel when freed. Checked in a fresh interpreter with glibc's
own counters (mallinfo2: bytes in mapped blocks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from server.execution import runtime

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "tuned":
        from server.execution.runtime import tune_malloc
        assert tune_malloc()
    before = libc.mallinfo2().hblkhd
    column = np.ones(1_000_000)  # 8 MB, as one column of a million rows
    print(libc.mallinfo2().hblkhd - before)
    """
)


def _mapped_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout.strip())


@pytest.mark.skipif(runtime._libc() is None, reason="not glibc: tune_malloc does nothing there")
def test_a_tuned_worker_takes_a_million_row_column_from_the_heap():
    assert _mapped_bytes("default") >= 8_000_000  # glibc's default: a mapping of its own
    assert _mapped_bytes("tuned") == 0
