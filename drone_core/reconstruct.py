"""T1, T2 and M0 maps of one slice from its frames (the science call of the gadget).

``reconstruct(frames (N, y, x), estimator)`` returns maps with ``.t1``, ``.t2``, ``.m0`` and
``.mask`` (``DESIGN.md``, "Public interfaces"); the estimator is the network
(:class:`drone_core.model.DroneModel`) or dictionary matching (:class:`drone_core.matching.Matcher`).

B1: ``reconstruct(..., b1=map)`` passes each voxel's relative B1 (a map of the frames' spatial
shape, e.g. from a separate B1 scan) to an estimator that takes it (:func:`accepts_b1`: a model
trained with a B1 input, or a dictionary with a B1 axis). Foreground voxels whose B1 is not finite
or outside the estimator's B1 range get no estimate (maps 0, mask False) — nothing is computed with
a made-up B1. An estimator that estimates B1 itself (:func:`estimates_b1`) returns a B1 map too.

Mask: the L2 norm of every voxel's fingerprint over the N frames is compared with the slice's
99th-percentile norm; voxels below ``mask_threshold`` times it (and all-zero voxels) are
background and get T1 = T2 = M0 = 0, as do voxels the estimator cannot fit (NaN). Only
foreground voxels are passed to the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SliceMaps", "reconstruct", "estimate", "foreground_mask", "accepts_b1", "estimates_b1",
           "DEFAULT_MASK_THRESHOLD", "MASK_PERCENTILE"]

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
        b1: relative B1 estimated from the fingerprints (0 outside the mask), float32, or None
            when the estimator does not estimate B1.
    """

    t1: np.ndarray
    t2: np.ndarray
    m0: np.ndarray
    mask: np.ndarray
    b1: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"t1": …, "t2": …, "m0": …}`` (and ``"b1"`` when estimated)."""
        out = {"t1": self.t1, "t2": self.t2, "m0": self.m0}
        if self.b1 is not None:
            out["b1"] = self.b1
        return out


def accepts_b1(estimator: Any) -> bool:
    """True when ``estimator`` takes each voxel's B1 (a model with a B1 input, a dictionary with a B1 axis)."""
    b1_use = getattr(estimator, "b1", None)
    if hasattr(b1_use, "input"):
        return bool(b1_use.input)
    return getattr(estimator, "b1", None) is not None and hasattr(estimator, "match")


def estimates_b1(estimator: Any) -> bool:
    """True when ``estimator`` estimates B1 from the fingerprint itself (a model with a B1 output)."""
    return bool(getattr(getattr(estimator, "b1", None), "output", False))


def estimate(estimator: Any, signals: np.ndarray, b1: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """T1 (ms), T2 (ms), M0 [and B1] of ``signals`` ``(n, n_frames)`` with either estimator kind.

    Args:
        estimator: a :class:`drone_core.model.DroneModel` (``estimate(signals, b1)`` →
            ``(t1_ms, t2_ms, m0)``) or a :class:`drone_core.matching.Matcher` (``match(signals, b1=…)``).
        signals: ``(n, n_frames)`` magnitudes.
        b1: ``(n,)`` relative B1 of the voxels, or None (B1 = 1, or estimated by the estimator).

    Returns:
        ``(t1, t2, m0, b1_est)``: ``(n,)`` float32 arrays (NaN where the estimator could not fit);
        ``b1_est`` is None unless the estimator estimates B1.
    """
    b1_est = None
    if hasattr(estimator, "estimate"):
        if estimates_b1(estimator):
            (t1, t2, m0), b1_est = estimator.estimate_b1(signals)
        else:
            t1, t2, m0 = tuple(estimator.estimate(signals, b1))[:3]
    elif hasattr(estimator, "match"):
        result = estimator.match(signals) if b1 is None else estimator.match(signals, b1=b1)
        t1, t2, m0 = result.t1_ms, result.t2_ms, result.m0
    else:
        raise TypeError(f"estimator: expected a DroneModel or a Matcher, got {type(estimator).__name__}")
    return (np.asarray(t1, dtype=np.float32), np.asarray(t2, dtype=np.float32), np.asarray(m0, dtype=np.float32),
            None if b1_est is None else np.asarray(b1_est, dtype=np.float32))


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation), with one partition instead of a sort; 0 when empty."""
    if values.size == 0:
        return 0.0
    position = (values.size - 1) * q / 100.0
    lo = int(np.floor(position))
    hi = min(lo + 1, values.size - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (position - lo))


def _mask(norms: np.ndarray, mask_threshold: float) -> np.ndarray:
    """Foreground: a norm above 0 and at least ``mask_threshold`` × the :data:`MASK_PERCENTILE` th percentile."""
    return (norms > 0) & (norms >= mask_threshold * _percentile(norms, MASK_PERCENTILE))


def foreground_mask(frames: np.ndarray, mask_threshold: float = DEFAULT_MASK_THRESHOLD) -> np.ndarray:
    """The voxels :func:`reconstruct` passes to the estimator (before it drops those it cannot fit).

    Args:
        frames: ``(N, …)`` magnitudes (finite, ≥ 0; not checked here).
        mask_threshold: as for :func:`reconstruct`.

    Returns:
        bool, ``frames.shape[1:]``.
    """
    by_frame = np.ascontiguousarray(frames, dtype=np.float32).reshape(np.shape(frames)[0], -1)
    return _mask(np.sqrt(_squared_norms(by_frame)), mask_threshold).reshape(np.shape(frames)[1:])


def _squared_norms(by_frame: np.ndarray) -> np.ndarray:
    """``(n_voxels,)`` Σ over frames of the squares of ``(N, n_voxels)`` float32 (float64 where float32 overflows)."""
    sq = np.einsum("fv,fv->v", by_frame, by_frame)
    if not np.isfinite(sq).all() and np.isfinite(by_frame).all():
        sq = np.einsum("fv,fv->v", by_frame, by_frame, dtype=np.float64)
    return sq


def reconstruct(frames: np.ndarray, estimator: Any, *, mask_threshold: float = DEFAULT_MASK_THRESHOLD,
                b1: np.ndarray | None = None) -> SliceMaps:
    """Maps of one slice.

    Args:
        frames: ``(N, y, x)`` (or ``(N, z, y, x)``) magnitudes, N = the estimator's frame count,
            frames in acquisition order.
        estimator: a :class:`drone_core.model.DroneModel` or :class:`drone_core.matching.Matcher`.
        mask_threshold: fraction in [0, 1) of the slice's 99th-percentile fingerprint norm below
            which a voxel is background.
        b1: relative B1 map of spatial shape ``frames.shape[1:]`` (float), or None. Only for an
            estimator that :func:`accepts_b1`.

    Returns:
        :class:`SliceMaps` of spatial shape ``frames.shape[1:]``.

    Raises:
        ValueError: ``frames`` has fewer than 2 dimensions, non-finite or negative values, a
            bad ``mask_threshold``, a B1 map of another shape, or a B1 map for an estimator that
            takes none.
    """
    arr = np.asarray(frames)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"frames: expected shape (N, y, x), got {arr.shape}")
    if arr.dtype.kind == "c":
        arr = np.abs(arr)
    if not (0.0 <= float(mask_threshold) < 1.0):
        raise ValueError(f"mask_threshold: expected a number in [0, 1), got {mask_threshold}")
    n_frames, spatial = arr.shape[0], arr.shape[1:]
    by_frame = np.ascontiguousarray(arr, dtype=np.float32).reshape(n_frames, -1)  # (N, n_voxels)
    # One float32 pass gives the norms and, through them, finiteness (float64 only if the squares overflow).
    sq = _squared_norms(by_frame)
    if not np.isfinite(sq).all():
        raise ValueError(f"frames: {int((~np.isfinite(by_frame)).sum())} non-finite values")
    if by_frame.size and by_frame.min() < 0:
        raise ValueError("frames: expected magnitudes ≥ 0, got negative values")
    b1_flat = None
    if b1 is not None:
        b1_arr = np.asarray(b1, dtype=np.float64)
        if b1_arr.shape != spatial:
            raise ValueError(f"b1: expected a map of the frames' spatial shape {spatial}, got {b1_arr.shape}")
        if not accepts_b1(estimator):
            raise ValueError(f"b1: the estimator ({type(estimator).__name__}) takes no B1 map (a model trained with "
                             "a B1 input or a dictionary with a B1 axis does)")
        b1_flat = b1_arr.reshape(-1)
    mask = _mask(np.sqrt(sq), mask_threshold)
    t1 = np.zeros(mask.shape, dtype=np.float32)
    t2 = np.zeros_like(t1)
    m0 = np.zeros_like(t1)
    b1_map = np.zeros_like(t1) if estimates_b1(estimator) else None
    if mask.any():
        idx = np.flatnonzero(mask)
        # (n_foreground, N) rows, contiguous: one gather-and-transpose copy.
        signals = np.ascontiguousarray(by_frame.T if idx.size == mask.size else by_frame.T[idx])
        e1, e2, em, eb = estimate(estimator, signals, None if b1_flat is None else b1_flat[idx])
        ok = np.isfinite(e1) & np.isfinite(e2) & np.isfinite(em)
        if eb is not None:
            ok &= np.isfinite(eb)
        t1[idx[ok]], t2[idx[ok]], m0[idx[ok]] = e1[ok], e2[ok], em[ok]
        if b1_map is not None and eb is not None:
            b1_map[idx[ok]] = eb[ok]
        mask[idx[~ok]] = False
    return SliceMaps(t1.reshape(spatial), t2.reshape(spatial), m0.reshape(spatial), mask.reshape(spatial),
                     None if b1_map is None else b1_map.reshape(spatial))
