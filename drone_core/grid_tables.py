"""What the model file's lookup tables share: a uniform axis, the values stored beside the weights, and
their flattened copy on each device (:mod:`drone_core.atom_norms`, :mod:`drone_core.uncertainty`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["uniform_axis", "recorded_array", "flat_on_device"]


def uniform_axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced values from ``lo`` to ``hi`` (just ``lo`` for one)."""
    return np.linspace(float(lo), float(hi), int(n)) if n > 1 else np.array([float(lo)])


def recorded_array(meta: Mapping[str, Any], tensor: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """A table's values from a model file, checked against the shape its JSON entry records.

    Raises:
        ValueError: another shape than recorded (naming ``what``); KeyError/TypeError: no or a bad ``shape``.
    """
    shape = tuple(int(v) for v in meta["shape"])
    arr = np.asarray(tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else tensor)
    if arr.shape != shape:
        raise ValueError(f"the {what} holds {arr.shape} values, its metadata says {shape}")
    return arr


def flat_on_device(owner: Any, values: np.ndarray, device: torch.device) -> torch.Tensor:
    """``values`` as a flat float32 tensor on ``device``, made once per device and kept on ``owner``."""
    cache: dict[str, torch.Tensor] = owner.__dict__.setdefault("_flat_tables", {})
    key = str(device)
    if key not in cache:
        cache[key] = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1).contiguous()
    return cache[key]
