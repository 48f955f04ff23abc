"""glibc malloc settings for a process that allocates and frees request-sized buffers all day.

Each Export arrives as one buffer of its size (a 1,000-record request is about 370 KB), copied
out of gRPC into a fresh bytes object and freed once counted. glibc serves a block that large
with mmap, or with heap memory it returns to the kernel as soon as the top of the heap is free,
so every request faulted its buffer's pages in afresh: 17-40 page faults per request on the
reference workload, about a fifth of the service's CPU per record. Raising both thresholds
keeps freed buffers for the next request (0.1 faults per request, 20% less CPU per record,
alternating runs in BENCHMARKS.md), at the price of keeping up to TRIM_THRESHOLD of freed
memory instead of giving it back.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks up to this size come from the heap: the ceiling glibc's own automatic adjustment of the
# threshold stops at on 64-bit systems, so past it nothing this service allocates is unusual.
MMAP_THRESHOLD = 32 * 1024 * 1024
# Freed memory kept for reuse before any is returned to the kernel: the queue's default bound.
TRIM_THRESHOLD = 64 * 1024 * 1024

# The variables glibc reads itself; an operator who sets one keeps its own settings.
_OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_OPERATOR_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def keep_freed_buffers() -> str:
    """Apply the thresholds; say what was done ("tuned", "operator", or "unsupported").

    "operator" when the environment already says how to allocate: glibc's own variables or
    tunables for these thresholds, or an allocator preloaded in glibc's place (LD_PRELOAD).
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (
        any(name in os.environ for name in _OPERATOR_VARIABLES)
        or any(name in tunables for name in _OPERATOR_TUNABLES)
        or os.environ.get("LD_PRELOAD")
    ):
        return "operator"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return "unsupported"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Trim first: a raised mmap threshold with the default trim threshold would be the worst
    # of both (big blocks on the heap, given back and faulted in again).
    if not mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return "unsupported"
    return "tuned" if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) else "unsupported"
