"""T1, T2 and M0 maps of one slice from its frames (the science call of the gadget).

``reconstruct(frames (N, y, x), estimator)`` returns maps with ``.t1``, ``.t2``, ``.m0`` and
``.mask`` (``DESIGN.md``, "Public interfaces"); the estimator is the network
(:class:`drone_core.model.DroneModel`) or dictionary matching (:class:`drone_core.matching.Matcher`).

B1: ``reconstruct(..., b1=map)`` passes each voxel's relative B1 (a map of the frames' spatial
shape, e.g. from a separate B1 scan) to an estimator that takes it (:func:`accepts_b1`: a model
trained with a B1 input, or a dictionary with a B1 axis). Foreground voxels whose B1 is not finite
or outside the estimator's B1 range get no estimate (maps 0, mask False) — nothing is computed with
a made-up B1. An estimator that estimates B1 itself (:func:`estimates_b1`) returns a B1 map too.

Mask (:mod:`drone_core.masking`): by default noise-aware — the noise σ of the slice is estimated
from its own background (the darkest population of fingerprint norms, χ²-distributed in air) and a
voxel is foreground when its fingerprint RMS over the frames is at least ``mask_snr`` × σ and its
norm reaches ``mask_floor`` × the 99th-percentile norm (EPI ghosts and ringing); isolated foreground
voxels are then dropped. ``mask_threshold`` = a fraction keeps the older rule: voxels
below that fraction of the slice's 99th-percentile fingerprint norm are background (it is also the
fallback, at :data:`DEFAULT_MASK_THRESHOLD`, when the slice has no noise-only background, e.g. a
noise-free simulation). Background voxels, all-zero voxels and voxels the estimator cannot fit (NaN)
get T1 = T2 = M0 = 0. Only foreground voxels are passed to the estimator.

Optional maps: ``uncertainty=True`` adds ``t1_sd``/``t2_sd``, each voxel's predicted standard
deviation (ms) at its estimate and SNR (:mod:`drone_core.uncertainty`; a model with an
uncertainty table); ``goodness_of_fit=True`` adds ``fit``, the residual between the fingerprint and
the atom at its estimate in units of the noise (:mod:`drone_core.goodness_of_fit`). Both use the
noise σ *inside the tissue*, measured from the residuals of the slice's bright voxels
(``tissue_sigma``; after a parallel-imaging reconstruction it is not the air's); where it cannot be
measured they are 0 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .masking import (DEFAULT_MASK_FLOOR, DEFAULT_MASK_SNR, DEFAULT_MASK_THRESHOLD, MASK_PERCENTILE, NoiseEstimate,
                      foreground, percentile)

__all__ = ["SliceMaps", "reconstruct", "estimate", "foreground_mask", "accepts_b1", "estimates_b1",
           "DEFAULT_MASK_THRESHOLD", "DEFAULT_MASK_SNR", "DEFAULT_MASK_FLOOR", "MASK_PERCENTILE", "OPTIONAL_MAPS"]

#: Maps :func:`reconstruct` adds on request, besides T1, T2, M0 (and B1).
OPTIONAL_MAPS: tuple[str, ...] = ("t1_sd", "t2_sd", "fit")


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
        noise: the slice's noise estimate (:class:`~drone_core.masking.NoiseEstimate`; ``sigma`` None
            when the slice has no noise-only background).
        mask_rule: ``"noise"`` (RMS ≥ ``mask_snr``·σ) or ``"fraction"`` (of the 99th-percentile norm).
        t1_sd, t2_sd: predicted standard deviation of T1 and T2, ms, float32 (0 outside the mask), or
            None when not asked for.
        fit: goodness of fit (residual in units of the noise; ≈ 1 where the model explains the voxel),
            float32 (0 outside the mask), or None when not asked for.
        n_unestimated: foreground voxels the estimator gave no estimate (B1 unknown or out of its range, NaN).
        tissue_sigma: the noise σ inside the tissue, from the residuals of its bright voxels
            (:func:`drone_core.goodness_of_fit.tissue_sigma`), which the t1_sd/t2_sd/fit maps use; None when
            they were not asked for or it could not be estimated.
    """

    t1: np.ndarray
    t2: np.ndarray
    m0: np.ndarray
    mask: np.ndarray
    b1: np.ndarray | None = None
    noise: NoiseEstimate | None = None
    mask_rule: str = "fraction"
    t1_sd: np.ndarray | None = None
    t2_sd: np.ndarray | None = None
    fit: np.ndarray | None = None
    n_unestimated: int = 0
    tissue_sigma: float | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"t1": …, "t2": …, "m0": …}``, and ``"b1"``, ``"t1_sd"``, ``"t2_sd"``, ``"fit"`` when present."""
        out = {"t1": self.t1, "t2": self.t2, "m0": self.m0}
        for name in ("b1",) + OPTIONAL_MAPS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @property
    def noise_sigma(self) -> float | None:
        """The slice's estimated noise σ per real channel (frames' units), or None when unknown."""
        return None if self.noise is None else self.noise.sigma


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


def foreground_mask(frames: np.ndarray, mask_threshold: float | None = None, *,
                    mask_snr: float = DEFAULT_MASK_SNR, mask_floor: float = DEFAULT_MASK_FLOOR,
                    despeckle: bool | None = None) -> np.ndarray:
    """The voxels :func:`reconstruct` passes to the estimator (before it drops those it cannot fit).

    Args:
        frames: ``(N, …)`` magnitudes (finite, ≥ 0; not checked here).
        mask_threshold, mask_snr, mask_floor, despeckle: as for :func:`reconstruct`.

    Returns:
        bool, ``frames.shape[1:]``.
    """
    by_frame = np.ascontiguousarray(frames, dtype=np.float32).reshape(np.shape(frames)[0], -1)
    spatial = np.shape(frames)[1:]
    fg = foreground(_squared_norms(by_frame).reshape(spatial), by_frame.shape[0], threshold=mask_threshold,
                    snr=mask_snr, floor=mask_floor, remove_isolated=despeckle)
    return fg.mask


def _squared_norms(by_frame: np.ndarray) -> np.ndarray:
    """``(n_voxels,)`` Σ over frames of the squares of ``(N, n_voxels)`` float32 (float64 where float32 overflows)."""
    sq = np.einsum("fv,fv->v", by_frame, by_frame)
    if not np.isfinite(sq).all() and np.isfinite(by_frame).all():
        sq = np.einsum("fv,fv->v", by_frame, by_frame, dtype=np.float64)
    return sq


def reconstruct(frames: np.ndarray, estimator: Any, *, mask_threshold: float | None = None,
                mask_snr: float = DEFAULT_MASK_SNR, mask_floor: float = DEFAULT_MASK_FLOOR,
                despeckle: bool | None = None, b1: np.ndarray | None = None,
                uncertainty: bool = False, goodness_of_fit: bool = False) -> SliceMaps:
    """Maps of one slice.

    Args:
        frames: ``(N, y, x)`` (or ``(N, z, y, x)``) magnitudes, N = the estimator's frame count,
            frames in acquisition order.
        estimator: a :class:`drone_core.model.DroneModel` or :class:`drone_core.matching.Matcher`.
        mask_threshold: None — the noise-aware mask (module docstring); a fraction in [0, 1) of the
            slice's 99th-percentile fingerprint norm below which a voxel is background.
        mask_snr: the noise-aware mask's threshold: fingerprint RMS over the frames ≥ this × σ (> 0).
        mask_floor: the noise-aware mask's floor: the norm must also reach this fraction of the slice's
            99th-percentile norm (in [0, 1); EPI ghosts and ringing, :mod:`drone_core.masking`).
        despeckle: drop isolated foreground voxels; None — only with the noise-aware mask.
        b1: relative B1 map of spatial shape ``frames.shape[1:]`` (float), or None. Only for an
            estimator that :func:`accepts_b1`.
        uncertainty: add the ``t1_sd``/``t2_sd`` maps (a model with an uncertainty table).
        goodness_of_fit: add the ``fit`` map (an estimator with a schedule).

    Returns:
        :class:`SliceMaps` of spatial shape ``frames.shape[1:]``.

    Raises:
        ValueError: ``frames`` has fewer than 2 dimensions, non-finite or negative values, a
            bad ``mask_threshold`` or ``mask_snr``, a B1 map of another shape, a B1 map for an
            estimator that takes none, or an optional map the estimator cannot give.
    """
    arr = np.asarray(frames)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"frames: expected shape (N, y, x), got {arr.shape}")
    if arr.dtype.kind == "c":
        arr = np.abs(arr)
    if mask_threshold is not None and not (0.0 <= float(mask_threshold) < 1.0):
        raise ValueError(f"mask_threshold: expected None (noise-aware) or a number in [0, 1), got {mask_threshold}")
    if not (isinstance(mask_snr, (int, float, np.floating)) and np.isfinite(mask_snr) and mask_snr > 0):
        raise ValueError(f"mask_snr: expected a number > 0, got {mask_snr!r}")
    if uncertainty and getattr(estimator, "uncertainty_table", None) is None:
        raise ValueError(f"uncertainty: the estimator ({type(estimator).__name__}) has no uncertainty table (a DRONE "
                         "model with one: the shipped model, or DroneModel.with_uncertainty_table())")
    if goodness_of_fit and getattr(estimator, "schedule", None) is None:
        raise ValueError(f"goodness_of_fit: the estimator ({type(estimator).__name__}) has no schedule to simulate "
                         "the atoms with")
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
    fg = foreground(sq.reshape(spatial), n_frames, threshold=mask_threshold, snr=mask_snr, floor=mask_floor,
                    remove_isolated=despeckle)
    mask = fg.mask.reshape(-1).copy()
    t1 = np.zeros(mask.shape, dtype=np.float32)
    t2 = np.zeros_like(t1)
    m0 = np.zeros_like(t1)
    b1_map = np.zeros_like(t1) if estimates_b1(estimator) else None
    tissue_sigma = None
    extra = {name: np.zeros_like(t1) for name, wanted in
             (("t1_sd", uncertainty), ("t2_sd", uncertainty), ("fit", goodness_of_fit)) if wanted}
    if mask.any():
        idx = np.flatnonzero(mask)
        # (n_foreground, N) rows, contiguous: one gather-and-transpose copy.
        signals = np.ascontiguousarray(by_frame.T if idx.size == mask.size else by_frame.T[idx])
        e1, e2, em, eb = estimate(estimator, signals, None if b1_flat is None else b1_flat[idx])
        ok = np.isfinite(e1) & np.isfinite(e2) & np.isfinite(em)
        if eb is not None:
            ok &= np.isfinite(eb)
        keep = idx[ok]
        t1[keep], t2[keep], m0[keep] = e1[ok], e2[ok], em[ok]
        if b1_map is not None and eb is not None:
            b1_map[keep] = eb[ok]
        mask[idx[~ok]] = False
        b1_of = eb if eb is not None else (None if b1_flat is None else b1_flat[idx])
        if extra and ok.any():
            tissue_sigma = _optional_maps(estimator, extra, keep, signals[ok], np.sqrt(sq[keep]), e1[ok], e2[ok],
                                          em[ok], None if b1_of is None else b1_of[ok],
                                          n_params=3 + int(eb is not None), fit=goodness_of_fit,
                                          uncertainty=uncertainty)
    return SliceMaps(t1.reshape(spatial), t2.reshape(spatial), m0.reshape(spatial), mask.reshape(spatial),
                     None if b1_map is None else b1_map.reshape(spatial), fg.noise, fg.rule,
                     **{name: value.reshape(spatial) for name, value in extra.items()},
                     n_unestimated=int(fg.mask.sum() - mask.sum()), tissue_sigma=tissue_sigma)


def _optional_maps(estimator: Any, extra: dict[str, np.ndarray], keep: np.ndarray, signals: np.ndarray,
                   norms: np.ndarray, t1: np.ndarray, t2: np.ndarray, m0: np.ndarray, b1: np.ndarray | None, *,
                   n_params: int, fit: bool, uncertainty: bool) -> float | None:
    """Fill the t1_sd/t2_sd/fit maps (``extra``, flat) at ``keep`` from the valid voxels' estimates (``signals``
    and their fingerprint ``norms``); the noise is σ inside the tissue
    (:func:`drone_core.goodness_of_fit.tissue_sigma`). Returns it (None: unknown, maps 0)."""
    from .goodness_of_fit import BRIGHT_FRACTION, TISSUE_SAMPLE, goodness_of_fit, residual_norms
    from .goodness_of_fit import tissue_sigma as sigma_of

    schedule = estimator.schedule
    n_frames = signals.shape[1]
    t1c, t2c = np.clip(t1, 1e-3, None), np.clip(t2, 1e-3, None)
    bright = np.flatnonzero(norms >= BRIGHT_FRACTION * percentile(norms, 99.0))
    if fit:  # every voxel's residual is needed anyway
        res = residual_norms(schedule, signals, t1c, t2c, b1)
        sample_res = res[bright]
    else:
        rng = np.random.default_rng(0)
        sample = bright if bright.size <= TISSUE_SAMPLE else np.sort(rng.choice(bright, TISSUE_SAMPLE, replace=False))
        sample_res = residual_norms(schedule, signals[sample], t1c[sample], t2c[sample],
                                    None if b1 is None else b1[sample])
    sigma = sigma_of(sample_res, n_frames, n_params)
    if sigma is None or not sigma > 0:
        return None
    if uncertainty:
        sd1, sd2 = estimator.estimate_std(t1, t2, m0, sigma, b1)
        extra["t1_sd"][keep] = np.nan_to_num(sd1, nan=0.0)
        extra["t2_sd"][keep] = np.nan_to_num(sd2, nan=0.0)
    if fit:
        extra["fit"][keep] = goodness_of_fit(res, sigma, n_frames, n_params)
    return sigma
