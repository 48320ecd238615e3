"""Input checks shared by the science modules: numbers that must be finite, with the field named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["finite_number"]


def finite_number(value: Any, label: str) -> float:
    """``value`` as a float, refusing booleans, non-numbers and NaN/inf with ``label`` in the message.

    Args:
        value: the input.
        label: how the input is named in errors, e.g. ``"schedule field 'te_ms'"``.

    Raises:
        TypeError: not a real number (booleans included); ValueError: not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{label}: expected a number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{label}: expected a finite number, got {out}")
    return out
