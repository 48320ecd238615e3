"""T1, T2 and M0 maps of one slice from its frames (the science call of the gadget).

``reconstruct(frames (N, y, x), estimator)`` returns maps with ``.t1``, ``.t2``, ``.m0`` and
``.mask`` (``DESIGN.md``, "Public interfaces"); the estimator is the network
(:class:`drone_core.model.DroneModel`) or dictionary matching (:class:`drone_core.matching.Matcher`).

Mask: the L2 norm of every voxel's fingerprint over the N frames is compared with the slice's
99th-percentile norm; voxels below ``mask_threshold`` times it (and all-zero voxels) are
background and get T1 = T2 = M0 = 0, as do voxels the estimator cannot fit (NaN). Only
foreground voxels are passed to the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SliceMaps", "reconstruct", "estimate", "DEFAULT_MASK_THRESHOLD", "MASK_PERCENTILE"]

#: Default background threshold, as a fraction of the slice's 99th-percentile fingerprint norm.
DEFAULT_MASK_THRESHOLD = 0.05
#: Percentile of the fingerprint norms that the threshold is relative to (robust to a few hot voxels).
MASK_PERCENTILE = 99.0


@dataclass(frozen=True, eq=False)
class SliceMaps:
    """Maps of one slice; every array has the spatial shape of the frames (e.g. ``(y, x)``).

    Attributes:
        t1: T1, ms, float32 (0 outside the mask).
        t2: T2, ms, float32 (0 outside the mask).
        m0: M0 in the units of the frames' magnitudes, float32 (0 outside the mask).
        mask: bool, True where the maps hold an estimate.
    """

    t1: np.ndarray
    t2: np.ndarray
    m0: np.ndarray
    mask: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"t1": …, "t2": …, "m0": …}``."""
        return {"t1": self.t1, "t2": self.t2, "m0": self.m0}


def estimate(estimator: Any, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 (ms), T2 (ms) and M0 of ``signals`` ``(n, n_frames)`` with either estimator kind.

    Args:
        estimator: a :class:`drone_core.model.DroneModel` (anything with ``estimate(signals)`` →
            ``(t1_ms, t2_ms, m0)``) or a :class:`drone_core.matching.Matcher` (``match(signals)``).
        signals: ``(n, n_frames)`` magnitudes.

    Returns:
        three ``(n,)`` float32 arrays (NaN where the estimator could not fit).
    """
    if hasattr(estimator, "estimate"):
        t1, t2, m0 = tuple(estimator.estimate(signals))[:3]
    elif hasattr(estimator, "match"):
        result = estimator.match(signals)
        t1, t2, m0 = result.t1_ms, result.t2_ms, result.m0
    else:
        raise TypeError(f"estimator: expected a DroneModel or a Matcher, got {type(estimator).__name__}")
    return (np.asarray(t1, dtype=np.float32), np.asarray(t2, dtype=np.float32), np.asarray(m0, dtype=np.float32))


def reconstruct(frames: np.ndarray, estimator: Any, *, mask_threshold: float = DEFAULT_MASK_THRESHOLD) -> SliceMaps:
    """Maps of one slice.

    Args:
        frames: ``(N, y, x)`` (or ``(N, z, y, x)``) magnitudes, N = the estimator's frame count,
            frames in acquisition order.
        estimator: a :class:`drone_core.model.DroneModel` or :class:`drone_core.matching.Matcher`.
        mask_threshold: fraction in [0, 1) of the slice's 99th-percentile fingerprint norm below
            which a voxel is background.

    Returns:
        :class:`SliceMaps` of spatial shape ``frames.shape[1:]``.

    Raises:
        ValueError: ``frames`` has fewer than 2 dimensions, non-finite or negative values, or a
            bad ``mask_threshold``.
    """
    arr = np.asarray(frames)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"frames: expected shape (N, y, x), got {arr.shape}")
    if arr.dtype.kind == "c":
        arr = np.abs(arr)
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"frames: {int((~np.isfinite(arr)).sum())} non-finite values")
    if (arr < 0).any():
        raise ValueError("frames: expected magnitudes ≥ 0, got negative values")
    if not (0.0 <= float(mask_threshold) < 1.0):
        raise ValueError(f"mask_threshold: expected a number in [0, 1), got {mask_threshold}")
    n_frames, spatial = arr.shape[0], arr.shape[1:]
    signals = arr.reshape(n_frames, -1).T  # (n_voxels, N)
    norms = np.sqrt(np.einsum("vf,vf->v", signals.astype(np.float64), signals.astype(np.float64)))
    reference = float(np.percentile(norms, MASK_PERCENTILE)) if norms.size else 0.0
    mask = (norms > 0) & (norms >= mask_threshold * reference)
    t1 = np.zeros(norms.shape, dtype=np.float32)
    t2 = np.zeros_like(t1)
    m0 = np.zeros_like(t1)
    if mask.any():
        idx = np.flatnonzero(mask)
        e1, e2, em = estimate(estimator, np.ascontiguousarray(signals[idx]))
        ok = np.isfinite(e1) & np.isfinite(e2) & np.isfinite(em)
        t1[idx[ok]], t2[idx[ok]], m0[idx[ok]] = e1[ok], e2[ok], em[ok]
        mask[idx[~ok]] = False
    return SliceMaps(t1.reshape(spatial), t2.reshape(spatial), m0.reshape(spatial), mask.reshape(spatial))
