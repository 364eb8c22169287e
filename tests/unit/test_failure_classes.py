"""What ran out is named: trainers.errors.classify turns a full disk and a refused
allocation into their own reasons (not retried unchanged), and leaves any other failure alone."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from trainers.errors import OutOfMemory, ResourceExhausted, classify


def _chained() -> BaseException:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not save the model") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EDQUOT, "Disk quota exceeded"), _chained()],
)
def test_a_full_disk_is_resource_exhausted(exc):
    found = classify(exc, "registration")
    assert isinstance(found, ResourceExhausted) and not found.retryable
    assert found.reason == "ResourceExhausted" and "registration" in found.message and "free space" in found.message
    assert found.details["resource"] == "disk"


def test_a_refused_allocation_is_out_of_memory_with_the_remedy():
    torch_words = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 71936516096 bytes."
        + " Error code 12 (Cannot allocate memory)" * 100
    )
    try:
        np.empty(1 << 62, dtype=np.uint8)
    except MemoryError as exc:
        numpy_words = exc
    for exc in (MemoryError(), torch_words, numpy_words):
        found = classify(exc, "training")
        assert isinstance(found, OutOfMemory) and not found.retryable, exc
        assert "memory_per_worker" in found.message and '"distributed": true' in found.message
        assert len(found.message) < 600  # short, whatever the library said


@pytest.mark.parametrize("exc", [ValueError("bad"), RuntimeError("the loss is nan"), OSError(errno.EACCES, "Permission denied")])
def test_other_failures_are_left_alone(exc):
    assert classify(exc, "training") is None
