"""What the CPU is: its model name and feature flags (Linux ``/proc/cpuinfo``), for speed choices
and for recording where a figure was measured; and :func:`keep_freed_memory`, the allocator setting
that a process reconstructing slice after slice wants."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import sys

__all__ = ["cpu_model", "cpu_flags", "keep_freed_memory", "MMAP_THRESHOLD_BYTES"]

#: Allocations up to this size come from the heap once :func:`keep_freed_memory` ran (glibc's default
#: starts at 128 KiB): a slice's tensors (a 128 × 128 slice's 64-wide activations are 4 MiB).
MMAP_THRESHOLD_BYTES = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=1)
def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == name), None)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's ``model name`` (``platform.processor()`` where /proc/cpuinfo is missing)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature ``flags`` (empty where /proc/cpuinfo is missing)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of returning each large block to the kernel.

    By default every array above ~128 KiB–32 MiB is a fresh ``mmap``, so each new tensor of a slice
    pays a page fault per 4 KiB on first touch: for a 128 × 128 slice through the shipped 64-64 network
    ``reconstruct`` takes 9.3 ms that way against 7.7 ms with this setting (docs/BENCHMARKS.md). With it
    (``mallopt``: ``M_MMAP_THRESHOLD`` = :data:`MMAP_THRESHOLD_BYTES`, ``M_TRIM_THRESHOLD`` = 4 × that) such blocks
    come from the heap and are reused; the process keeps up to its high-water mark of them. Called
    once by the processes that reconstruct (the gadget, ``drone`` commands, benchmarks), never on
    import. A no-op returning False where the C library is not glibc (macOS, musl).

    Returns:
        True when the setting was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD_BYTES))
