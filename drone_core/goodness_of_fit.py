"""Does the model explain a voxel? The residual between its fingerprint and the atom at its estimate.

For a voxel with magnitudes ``y`` (N frames) and estimate (T1, T2, B1), the atom
``a = |simulate(T1, T2, B1)|`` is simulated (the schedule's slice profile) and scaled by the
least-squares M0 (``⟨y, a⟩/‖a‖²``). The goodness of fit is the residual in units of what noise alone
leaves::

    fit = ‖y − M0·a‖ / (σ · √(N − p))

with σ the slice's noise per real channel and p the parameters fitted (M0, T1, T2, and B1 when it
is estimated). Where the signal model explains the voxel, ``fit`` ≈ 1 (above 1 by Rician bias at low
SNR, and by the estimator's own error); partial volume of two tissues, flow, motion or artefacts
leave a residual that noise does not, and ``fit`` grows with it. Measured at 1 % noise (the shipped
network, ``tests/test_uncertainty.py``): a voxel half WM, half CSF ≈ 3.2, half GM, half CSF ≈ 2.6,
80 % WM and 20 % CSF ≈ 2.0, pure tissue ≈ 0.98 — and half WM, half GM ≈ 1.0: two tissues whose
fingerprints are this alike are explained by one atom between them.

The noise inside tissue (:func:`tissue_sigma`): the same residual over the slice's bright voxels has the
median ``σ²·median(χ²(N − p))`` at high SNR, so it measures the noise where the tissue is — which, after a
parallel-imaging reconstruction, is not the noise of the air around it (GRAPPA's g-factor, the coil
combination: ≈ 2× the air's in this project's raw EPI chain, docs/GADGET.md) — plus whatever the signal
model does not explain in typical tissue. The uncertainty maps use it.

Cost: one EPG simulation per voxel (over :data:`N_POSITIONS` slice positions when the schedule has
a profile), about 17 µs a voxel on this project's 2-core reference machine — an optional map.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .epg import simulate
from .masking import chi2_median
from .schedule import Schedule

__all__ = ["residual_norms", "goodness_of_fit", "tissue_sigma", "N_POSITIONS", "BRIGHT_FRACTION", "TISSUE_SAMPLE"]

#: Slice positions of the simulated atoms (as the model's per-voxel M0 fit: 0.25 % of the converged norm).
N_POSITIONS = 12
#: :func:`tissue_sigma` uses the voxels whose fingerprint norm is at least this fraction of the slice's
#: 99th-percentile norm (tissue at an SNR where the magnitude's noise is Gaussian) …
BRIGHT_FRACTION = 0.25
#: … at most this many of them (a seeded draw): the median of 1,000 χ²(22) sets σ to ≈ 0.6 %.
TISSUE_SAMPLE = 1000


def residual_norms(schedule: Schedule, signals: np.ndarray, t1_ms: np.ndarray, t2_ms: np.ndarray,
                   b1: Any = None, *, chunk_size: int = 16384) -> np.ndarray:
    """``‖y − M0·a‖`` per voxel with the least-squares M0 (module docstring).

    Args:
        schedule: the acquisition schedule (the estimator's).
        signals: ``(n, n_frames)`` magnitudes.
        t1_ms, t2_ms: ``(n,)`` the estimates (finite, > 0).
        b1: ``(n,)`` relative B1 of the estimates, a number, or None (1).
        chunk_size: voxels per simulation call (bounds memory).

    Returns:
        float32 ``(n,)`` in the signals' units.
    """
    y = np.abs(np.asarray(signals, dtype=np.float32))
    if y.ndim != 2 or y.shape[1] != schedule.n_frames:
        raise ValueError(f"signals: expected (n, {schedule.n_frames}) magnitudes, got {y.shape}")
    t1 = np.asarray(t1_ms, dtype=np.float64).ravel()
    t2 = np.asarray(t2_ms, dtype=np.float64).ravel()
    if t1.shape != (y.shape[0],) or t2.shape != t1.shape:
        raise ValueError(f"t1_ms, t2_ms: expected ({y.shape[0]},) each, got {t1.shape} and {t2.shape}")
    if not (np.isfinite(t1).all() and np.isfinite(t2).all() and (t1 > 0).all() and (t2 > 0).all()):
        raise ValueError("t1_ms, t2_ms: expected finite estimates > 0")
    b = np.broadcast_to(np.ones(1) if b1 is None else np.asarray(b1, dtype=np.float64), t1.shape).copy()
    out = np.empty(t1.shape, dtype=np.float32)
    for start in range(0, t1.size, int(chunk_size)):
        sl = slice(start, start + int(chunk_size))
        atoms = np.abs(np.asarray(simulate(schedule, t1[sl], t2[sl], b[sl],
                                           n_positions=N_POSITIONS, dtype=torch.float32)))
        ys = y[sl]
        aa = np.einsum("vf,vf->v", atoms, atoms)
        ya = np.einsum("vf,vf->v", ys, atoms)
        scale = np.divide(ya, aa, out=np.zeros_like(ya), where=aa > 0)
        out[sl] = np.linalg.norm(ys - scale[:, None] * atoms, axis=1)
    return out


def goodness_of_fit(residuals: np.ndarray, sigma: float, n_frames: int, n_parameters: int = 3) -> np.ndarray:
    """``fit = ‖y − M0·a‖ / (σ·√(N − p))`` from :func:`residual_norms` (module docstring).

    Args:
        residuals: ``(n,)`` residual norms.
        sigma: noise σ per real channel (> 0), the residuals' units.
        n_frames: N.
        n_parameters: p, the parameters fitted (< N).
    """
    if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma: expected a noise level > 0, got {sigma!r}")
    if not 0 <= n_parameters < n_frames:
        raise ValueError(f"n_parameters: expected 0 ≤ p < n_frames = {n_frames}, got {n_parameters}")
    return (np.asarray(residuals, dtype=np.float32) / np.float32(sigma * math.sqrt(n_frames - n_parameters)))


def tissue_sigma(residuals: np.ndarray, n_frames: int, n_parameters: int = 3) -> float | None:
    """σ per real channel from the residual norms of tissue voxels (module docstring): ``√(median(r²) /
    median(χ²(N − p)))``; None with fewer than 32 residuals.

    Args:
        residuals: ``(n,)`` :func:`residual_norms` of bright tissue voxels.
        n_frames: N.
        n_parameters: p, the parameters fitted (< N).
    """
    r = np.asarray(residuals, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 32 or not 0 <= n_parameters < n_frames:
        return None
    return math.sqrt(float(np.median(r * r)) / chi2_median(n_frames - n_parameters))
