"""Which voxels get maps: the noise level of a slice, estimated from its own frames, and the background mask.

Noise
-----
Frames are magnitudes of complex images with Gaussian noise of standard deviation σ per real
channel (coil-combined images, as Gadgetron's GRAPPA/SENSE chains give). In air the magnitude is
Rayleigh, so the squared fingerprint norm of a background voxel over N frames is
``‖y‖² = σ²·χ²(2N)``: one tight population (the standard deviation of ``ln χ²(2N)`` is
``√ψ′(N)`` ≈ 0.2 for N = 25), far below tissue at any usable SNR. :func:`estimate_noise` looks
first for pure-noise *blocks* of the slice (16 × 16 voxels for a 128² slice) — blocks whose robust
spread of ``ln ‖y‖²`` is that of ``χ²(2N)`` (:data:`BLOCK_SPREAD_TOLERANCE`) — takes the darkest of
them and those within 2 of those standard deviations of it (the quietest air: a block holding an
EPI ghost, ringing or an edge of tissue is brighter, or wider), and sets
``σ² = median(‖y‖²) / median(χ²(2N))`` over their voxels (as the median of the blocks' medians).
Without such blocks (a flat list of voxels, a small image) it takes the lowest mode of the
``ln ‖y‖²`` histogram of the non-zero voxels, the voxels within ±3 standard deviations of it, and the
same median, re-centring the window on the estimate twice. A population is accepted as noise only
when its spread is that of ``χ²(2N)`` (:data:`SPREAD_TOLERANCE`) and it holds enough voxels
(:data:`MIN_BACKGROUND_VOXELS`, :data:`MIN_BACKGROUND_FRACTION`): a noise-free simulation, a field
of view without air, or air full of artefacts has none, and the estimate is then *unknown*
(``sigma`` None) rather than made up.

This is the noise of the *air*. After a parallel-imaging reconstruction the noise inside the object
differs (g-factor, coil combination); the uncertainty maps measure that one from the tissue itself
(:func:`drone_core.goodness_of_fit.tissue_sigma`).

Mask
----
With σ known the foreground is every voxel whose fingerprint RMS over the frames,
``‖y‖/√N``, is at least ``snr`` × σ (:data:`DEFAULT_MASK_SNR`; air has an RMS of √2·σ ≈ 1.41σ
with a standard deviation of ≈ 0.1σ for N = 25) and whose norm also reaches a floor of
:data:`DEFAULT_MASK_FLOOR` × the 99th-percentile norm (EPI ghosts and ringing: signal, not noise, and
above the noise at low noise; at high noise the noise threshold is the higher one). A fixed
``threshold`` (a fraction of the slice's 99th-percentile fingerprint norm, the rule before the noise
was estimated) still works when given, and is the fallback when the noise is unknown. ``despeckle``
then drops foreground voxels none of whose in-plane 8 neighbours is foreground (isolated noise
voxels; tissue is never one voxel alone).

This module holds no estimator: :func:`drone_core.reconstruct.reconstruct` uses it.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from scipy.special import gammaincinv, polygamma

__all__ = ["NoiseEstimate", "Foreground", "estimate_noise", "foreground", "despeckle", "percentile", "chi2_median",
           "DEFAULT_MASK_SNR", "DEFAULT_MASK_THRESHOLD", "DEFAULT_MASK_FLOOR", "MASK_PERCENTILE",
           "MIN_BACKGROUND_VOXELS", "MIN_BACKGROUND_FRACTION", "SPREAD_TOLERANCE", "BLOCK_SPREAD_TOLERANCE"]

#: Default foreground threshold: fingerprint RMS over the frames ≥ this × the estimated σ. Air has
#: √2 ≈ 1.41 (sd ≈ 0.10 for 25 frames); P(air ≥ 2.0) ≈ 3·10⁻⁵ per voxel before :func:`despeckle`.
DEFAULT_MASK_SNR = 2.0
#: The fixed-fraction rule's threshold (fraction of the 99th-percentile norm): used when the noise is unknown.
DEFAULT_MASK_THRESHOLD = 0.05
#: The noise rule's floor, as the same fraction: a voxel must also reach it. EPI's N/2 ghosts and the
#: reconstruction's ringing sit at a few percent of the tissue's signal — above the noise when the noise is
#: low (≈ 3.5–4.6 % of the 99th-percentile norm at 0.5–1 % noise in this project's raw GRAPPA EPI chain).
DEFAULT_MASK_FLOOR = 0.05
#: Percentile of the fingerprint norms that a fixed-fraction threshold is relative to.
MASK_PERCENTILE = 99.0
#: Fewest voxels a background population needs before σ is estimated from it …
MIN_BACKGROUND_VOXELS = 32
#: … and the smallest fraction of the slice's non-zero voxels it must hold.
MIN_BACKGROUND_FRACTION = 0.01
#: The population's robust spread of ln‖y‖² must be within this factor of χ²(2N)'s to count as noise.
SPREAD_TOLERANCE = 1.6
#: … and a block's (:func:`estimate_noise`, 16 × 16 voxels of a 128² slice: its robust spread has a sampling
#: error of ≈ 7 %), this factor.
BLOCK_SPREAD_TOLERANCE = 1.35
_WINDOW_SD = 3.0  # half-width of the background window, in sd of ln χ²(2N)
_BIN_FRACTION = 0.25  # histogram bin, in sd of ln χ²(2N)
_MAD_TO_SD = 1.482602218505602


class NoiseEstimate(NamedTuple):
    """The noise of one slice.

    Attributes:
        sigma: σ per real channel, in the frames' units; None when no noise-only population was found.
        n_background: voxels of the population σ was estimated from (0 when unknown).
        spread_ratio: that population's robust spread of ln‖y‖² over χ²(2N)'s (1 for pure noise;
            NaN when no candidate population was found).
        reason: why σ is unknown ("" when known).
    """

    sigma: float | None
    n_background: int
    spread_ratio: float
    reason: str = ""


class Foreground(NamedTuple):
    """The mask of one slice and how it was drawn.

    Attributes:
        mask: bool, the spatial shape.
        noise: the slice's :class:`NoiseEstimate`.
        rule: ``"noise"`` (RMS ≥ snr·σ) or ``"fraction"`` (fixed fraction of the 99th-percentile norm).
        norm_threshold: the fingerprint L2 norm below which a voxel is background (frames' units).
        n_despeckled: foreground voxels dropped as isolated.
    """

    mask: np.ndarray
    noise: NoiseEstimate
    rule: str
    norm_threshold: float
    n_despeckled: int


@functools.lru_cache(maxsize=8)
def _log_chi2_sd(n_frames: int) -> float:
    """Standard deviation of ln χ²(2N) (= √ψ′(N))."""
    return math.sqrt(float(polygamma(1, n_frames)))


@functools.lru_cache(maxsize=8)
def chi2_median(dof: float) -> float:
    """Median of χ²(``dof``)."""
    return 2.0 * float(gammaincinv(dof / 2.0, 0.5))


def _row_medians(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` with one partition per row (≈ 6× faster than ``np.median`` along an axis)."""
    n = a.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=1)[:, k]
    part = np.partition(a, (k - 1, k), axis=1)
    return 0.5 * (part[:, k - 1] + part[:, k])


def _block_size(shape: tuple[int, ...]) -> int:
    return int(min(max(min(shape[-2:]) // 8, 8), 32))


def _noise_blocks(squared_norms: np.ndarray, n_frames: int, need: int) -> NoiseEstimate | None:
    """σ from the darkest in-plane blocks whose voxels are pure noise (module docstring); None: too few such blocks."""
    sq = np.asarray(squared_norms, dtype=np.float64)
    b = _block_size(sq.shape)
    ny, nx = (sq.shape[-2] // b) * b, (sq.shape[-1] // b) * b
    if ny < 2 * b or nx < 2 * b:
        return None
    planes = sq.reshape((-1,) + sq.shape[-2:])[:, :ny, :nx]
    blocks = planes.reshape(planes.shape[0], ny // b, b, nx // b, b).transpose(0, 1, 3, 2, 4).reshape(-1, b * b)
    sd = _log_chi2_sd(n_frames)
    good = (blocks > 0).all(axis=1) & np.isfinite(blocks).all(axis=1)
    if not good.any():
        return None
    logs = np.log(blocks[good])
    medians = _row_medians(logs)
    spreads = _MAD_TO_SD * _row_medians(np.abs(logs - medians[:, None])) / sd
    noise_like = (spreads >= 1.0 / BLOCK_SPREAD_TOLERANCE) & (spreads <= BLOCK_SPREAD_TOLERANCE)
    if not noise_like.any():
        return None
    darkest = float(medians[noise_like].min())
    family = noise_like & (medians <= darkest + 2.0 * sd)  # the quietest air; brighter blocks hold ghosts or tissue
    n_voxels = int(family.sum()) * b * b
    if family.sum() < 2 or n_voxels < need:
        return None
    # The median of the blocks' medians of ln‖y‖² (each of 256 voxels: ± 0.016; over ~40 blocks: ± 0.003, i.e.
    # 0.15 % in σ) stands for the median over their voxels.
    sigma2 = math.exp(float(np.median(medians[family]))) / chi2_median(2 * n_frames)
    return NoiseEstimate(math.sqrt(sigma2), n_voxels, float(np.median(spreads[family])))


def estimate_noise(squared_norms: np.ndarray, n_frames: int) -> NoiseEstimate:
    """σ per real channel from the squared fingerprint norms of a slice's voxels (module docstring).

    Args:
        squared_norms: ``‖y‖²`` over the frames of every voxel: the slice's spatial shape ``(…, y, x)``
            (then the pure-noise blocks are looked for first), or a flat ``(n_voxels,)`` list (any float
            dtype; zeros — voxels outside the reconstructed field, exact-zero padding — are left out).
        n_frames: N, the frames each norm is over.

    Returns:
        :class:`NoiseEstimate`.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames: expected ≥ 1, got {n_frames}")
    arr = np.asarray(squared_norms, dtype=np.float64)
    if arr.ndim >= 2:
        total = int(np.count_nonzero(np.isfinite(arr) & (arr > 0)))
        found = _noise_blocks(arr, n_frames, max(MIN_BACKGROUND_VOXELS,
                                                 int(math.ceil(MIN_BACKGROUND_FRACTION * total))))
        if found is not None:
            return found
    sq = arr.ravel()
    sq = sq[np.isfinite(sq) & (sq > 0)]
    need = max(MIN_BACKGROUND_VOXELS, int(math.ceil(MIN_BACKGROUND_FRACTION * sq.size)))
    if sq.size < need:
        return NoiseEstimate(None, 0, float("nan"), f"{sq.size} non-zero voxels, fewer than {need}")
    log_sq = np.log(sq)
    sd = _log_chi2_sd(n_frames)
    lo, hi = float(log_sq.min()), float(log_sq.max())
    bin_width = _BIN_FRACTION * sd
    n_bins = max(int(math.ceil((hi - lo) / bin_width)), 1) + 1
    counts = np.bincount(((log_sq - lo) / bin_width).astype(np.int64), minlength=n_bins).astype(np.float64)
    # Smooth with a Gaussian of the noise population's own width, then walk up from the darkest bin to
    # the first local maximum that holds a population large enough to be the background.
    kernel_x = np.arange(-int(4 / _BIN_FRACTION), int(4 / _BIN_FRACTION) + 1) * _BIN_FRACTION
    kernel = np.exp(-0.5 * kernel_x ** 2)
    smooth = np.convolve(counts, kernel / kernel.sum(), mode="same")
    padded = np.concatenate(([-1.0], smooth, [-1.0]))
    peaks = np.flatnonzero((padded[1:-1] >= padded[:-2]) & (padded[1:-1] > padded[2:]))
    half = int(round(_WINDOW_SD / _BIN_FRACTION))
    centre = None
    for p in peaks:
        if counts[max(p - half, 0):p + half + 1].sum() >= need:
            centre = lo + (p + 0.5) * bin_width
            break
    if centre is None:
        return NoiseEstimate(None, 0, float("nan"), "no population of the slice's darkest voxels large enough")
    median_chi2 = chi2_median(2 * n_frames)
    sigma2 = math.nan
    window = np.zeros(0)
    for _ in range(3):
        window = sq[np.abs(log_sq - centre) <= _WINDOW_SD * sd]
        if window.size < need:
            return NoiseEstimate(None, 0, float("nan"), f"{window.size} voxels around the darkest mode, fewer "
                                                        f"than {need}")
        sigma2 = float(np.median(window)) / median_chi2
        centre = math.log(sigma2 * median_chi2)
    log_w = np.log(window)
    spread = _MAD_TO_SD * float(np.median(np.abs(log_w - np.median(log_w))))
    ratio = spread / sd
    if not (1.0 / SPREAD_TOLERANCE <= ratio <= SPREAD_TOLERANCE):
        return NoiseEstimate(None, 0, ratio, f"the darkest population's spread is {ratio:.2f}× that of noise "
                                             f"(χ²({2 * n_frames})): not a noise-only background")
    return NoiseEstimate(math.sqrt(sigma2), int(window.size), ratio)


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation), with one partition instead of a sort; 0 when empty."""
    if values.size == 0:
        return 0.0
    position = (values.size - 1) * q / 100.0
    lo = int(np.floor(position))
    hi = min(lo + 1, values.size - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (position - lo))


def despeckle(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its isolated voxels: those with no True among their in-plane 8 neighbours.

    In-plane is the last two axes (the last axis alone for a 1-D mask); a 0-D mask is returned as is.

    Args:
        mask: bool, ``(…, y, x)``.

    Returns:
        a new bool array of the same shape.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 0:
        return m.copy()
    plane = m.reshape((-1,) + m.shape[-2:]) if m.ndim >= 2 else m.reshape(1, 1, -1)
    padded = np.pad(plane, ((0, 0), (1, 1), (1, 1)))
    ny, nx = plane.shape[1:]
    neighbours = np.zeros(plane.shape, dtype=np.uint8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                neighbours += padded[:, dy:dy + ny, dx:dx + nx]
    return (plane & (neighbours > 0)).reshape(m.shape)


def foreground(squared_norms: np.ndarray, n_frames: int, *, threshold: float | None = None,
               snr: float = DEFAULT_MASK_SNR, floor: float = DEFAULT_MASK_FLOOR,
               remove_isolated: bool | None = None) -> Foreground:
    """The background mask of one slice (module docstring).

    Args:
        squared_norms: ``‖y‖²`` of every voxel over the N frames, the slice's spatial shape.
        n_frames: N.
        threshold: None — the noise rule, RMS ≥ ``snr`` × σ (the fixed fraction
            :data:`DEFAULT_MASK_THRESHOLD` when σ is unknown); a number in [0, 1) — the fraction of the
            :data:`MASK_PERCENTILE` th-percentile norm below which a voxel is background.
        snr: the noise rule's threshold, in units of σ (> 0).
        floor: the noise rule's floor, a fraction in [0, 1) of the 99th-percentile norm that a voxel must
            reach too (:data:`DEFAULT_MASK_FLOOR`; 0: the noise alone decides).
        remove_isolated: drop isolated foreground voxels (:func:`despeckle`; only for a 2-D or 3-D slice);
            None — with the noise-aware rule only (``threshold`` None).

    Returns:
        :class:`Foreground`; voxels with a zero norm are never foreground.
    """
    if threshold is not None and not (0.0 <= float(threshold) < 1.0):
        raise ValueError(f"threshold: expected None (noise-aware) or a number in [0, 1), got {threshold}")
    if not (isinstance(snr, (int, float, np.floating)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr: expected a number > 0, got {snr!r}")
    if not (isinstance(floor, (int, float, np.floating)) and 0.0 <= float(floor) < 1.0):
        raise ValueError(f"floor: expected a fraction in [0, 1), got {floor!r}")
    sq = np.asarray(squared_norms)
    noise = estimate_noise(sq, n_frames)
    norms = np.sqrt(sq)
    if threshold is None and noise.sigma is not None:
        rule, cut = "noise", float(snr) * noise.sigma * math.sqrt(n_frames)
        if floor > 0:
            cut = max(cut, float(floor) * percentile(norms.ravel(), MASK_PERCENTILE))
    else:
        rule = "fraction"
        frac = DEFAULT_MASK_THRESHOLD if threshold is None else float(threshold)
        cut = frac * percentile(norms.ravel(), MASK_PERCENTILE)
    mask = (norms > 0) & (norms >= cut)
    dropped = 0
    if remove_isolated is None:
        remove_isolated = threshold is None
    if remove_isolated and mask.ndim >= 2:  # a 1-D list of voxels is no image: nothing is isolated there
        kept = despeckle(mask)
        dropped = int(mask.sum() - kept.sum())
        mask = kept
    return Foreground(mask, noise, rule, cut, dropped)
