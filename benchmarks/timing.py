"""Wall-clock timing for the benchmark scripts (``from timing import runs``; the scripts run from this folder)."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["runs"]


def runs(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out
