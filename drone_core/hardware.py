"""What the CPU is: its model name and feature flags (Linux ``/proc/cpuinfo``), for speed choices
and for recording where a figure was measured."""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_model", "cpu_flags"]


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
