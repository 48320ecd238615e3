"""Input checks shared by the science modules: numbers that must be finite, with the field named."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["finite_number", "check_fields"]


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


def check_fields(data: Any, label: str, fields: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """``data`` as a JSON object holding every one of ``fields`` (but ``optional``) and nothing else.

    Raises:
        TypeError: not a dict; ValueError: missing or unknown fields, named with the expected ones.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{label}: expected a JSON object, got {type(data).__name__}")
    missing = [f for f in fields if f not in data and f not in optional]
    if missing:
        raise ValueError(f"{label}: missing field(s) {missing}; expected fields {list(fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{label}: unknown field(s) {unknown}; expected fields {list(fields)}")
    return data
