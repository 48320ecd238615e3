"""The noise-aware background mask: σ from the slice's own background, the mask in units of it.

References, independent of :func:`drone_core.masking.estimate_noise`: the Rayleigh maximum-likelihood σ
over the phantom's *known* air voxels (σ² = Σ|y|² / (2 · n_values)) and the σ the frames were simulated
with. Goals (issue 13): brain phantom at 1 % and 3 % noise, background voxels with maps ≤ 1 % of the
background, tissue voxels lost ≤ 0.5 %; NIST phantom: no sphere voxel lost at 3 % noise — checked on
scans with other seeds, slice counts and tissue values than the ones the defaults were chosen on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from drone_core.masking import (DEFAULT_MASK_SNR, MASK_PERCENTILE, despeckle, estimate_noise, foreground,
                                percentile)
from drone_core.phantoms import brain_phantom, image_noise_sigma, nist_phantom, simulate_frames
from drone_core.reconstruct import foreground_mask
from drone_core.schedule import default_schedule

SCHEDULE = default_schedule()
N = SCHEDULE.n_frames
#: σ from ~8,000–11,000 air voxels: the median of χ²(50) over them has a relative sd of ≈ 0.3 % (in σ²),
#: the window's truncation at ±3 sd biases it by < 0.1 %: 1 % is ≥ 5 sd.
SIGMA_RTOL = 0.01
#: Goals of the issue.
MAX_BACKGROUND_WITH_MAPS = 0.01
MAX_TISSUE_LOST = 0.005


def _squared_norms(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames, dtype=np.float64)
    return (f * f).sum(axis=0)


def _scan(phantom, level: float, seed: int) -> tuple[np.ndarray, float]:
    clean = simulate_frames(phantom, SCHEDULE, 0.0, magnitude=False)
    return simulate_frames(phantom, SCHEDULE, level, seed=seed), image_noise_sigma(clean, level)


@pytest.mark.parametrize("level", [0.003, 0.01, 0.03, 0.1])
def test_sigma_is_the_background_s_rayleigh_sigma(level: float) -> None:
    phantom = brain_phantom(1, values="brainweb")
    frames, sigma = _scan(phantom, level, seed=21)
    air = phantom.labels[0] == 0
    rayleigh_mle = math.sqrt(float((frames[:, 0][:, air].astype(np.float64) ** 2).sum()) / (2 * N * air.sum()))
    est = estimate_noise(_squared_norms(frames[:, 0]), N)
    assert est.sigma is not None, est
    assert est.sigma == pytest.approx(rayleigh_mle, rel=SIGMA_RTOL)
    assert est.sigma == pytest.approx(sigma, rel=SIGMA_RTOL)
    assert 0.8 < est.spread_ratio < 1.25 and est.n_background > 0.9 * air.sum()


def test_no_noise_only_background_gives_no_sigma() -> None:
    phantom = brain_phantom(1)
    clean = simulate_frames(phantom, SCHEDULE, 0.0)  # air is exactly 0, tissue noise-free
    est = estimate_noise(_squared_norms(clean[:, 0]), N)
    assert est.sigma is None and "not a noise-only background" in est.reason
    # a field of view of tissue only (no air): the darkest population is tissue, not noise
    noisy, _ = _scan(phantom, 0.01, seed=3)
    inside = noisy[:, 0, 50:78, 40:88]
    assert (phantom.labels[0, 50:78, 40:88] != 0).all()
    est = estimate_noise(_squared_norms(inside), N)
    assert est.sigma is None, est
    assert estimate_noise(np.ones(10), N).sigma is None  # too few voxels
    fg = foreground(_squared_norms(clean[:, 0]), N)  # falls back to the fixed fraction
    assert fg.rule == "fraction" and fg.noise.sigma is None
    assert fg.mask.sum() == (phantom.labels[0] != 0).sum()


@pytest.mark.parametrize("values, n_slices, level, seed", [
    ("paper", 3, 0.01, 101), ("paper", 3, 0.03, 102), ("brainweb", 2, 0.01, 103), ("brainweb", 5, 0.03, 104),
])
def test_brain_mask_goals(values: str, n_slices: int, level: float, seed: int) -> None:
    phantom = brain_phantom(n_slices, values=values)
    frames, _ = _scan(phantom, level, seed)
    air = phantom.labels == 0
    mask = np.stack([foreground_mask(frames[:, z]) for z in range(n_slices)])
    assert mask[air].mean() <= MAX_BACKGROUND_WITH_MAPS, mask[air].mean()
    assert (~mask[~air]).mean() <= MAX_TISSUE_LOST, (~mask[~air]).mean()
    # the fixed-fraction rule it replaces fails the background goal at 3 % (it masks nothing there)
    old = np.stack([foreground_mask(frames[:, z], 0.05) for z in range(n_slices)])
    if level >= 0.03:
        assert old[air].mean() > 0.5


@pytest.mark.parametrize("array", ["T1", "T2"])
def test_nist_spheres_are_kept_at_3_percent_noise(array: str) -> None:
    phantom = nist_phantom(array)
    frames, sigma = _scan(phantom, 0.03, seed=7)
    mask = foreground_mask(frames[:, 0])
    labels = phantom.labels[0]
    air = labels == 0
    assert mask[air].mean() <= MAX_BACKGROUND_WITH_MAPS
    clean = simulate_frames(phantom, SCHEDULE, 0.0)[:, 0].astype(np.float64)
    for k in phantom.metadata["sphere_labels"]:
        inside = labels == k
        rms = float(np.sqrt((clean[:, inside] ** 2).mean()))
        if array == "T2" and rms < 3 * sigma:
            # T2 spheres 13 and 14 (T2 10 and 8 ms, TE 23 ms): a noise-free RMS of 2.4σ and 1.3σ — about air's
            # √2 σ; no voxelwise mask can tell them from noise. Reported, not a goal (the goal's phantom is the T1
            # array).
            continue
        assert mask[inside].all(), (array, k, int((~mask[inside]).sum()))


def test_explicit_fraction_keeps_the_older_rule() -> None:
    frames, _ = _scan(brain_phantom(1), 0.005, seed=5)
    norms = np.sqrt(_squared_norms(frames[:, 0].astype(np.float32)))
    for threshold in (0.0, 0.05, 0.2):
        expected = (norms > 0) & (norms >= threshold * np.percentile(norms, MASK_PERCENTILE))
        np.testing.assert_array_equal(foreground_mask(frames[:, 0], threshold), expected)
    assert percentile(np.array([]), 50) == 0.0


def test_the_threshold_is_mask_snr_sigma() -> None:
    frames, sigma = _scan(brain_phantom(1), 0.01, seed=9)
    sq = _squared_norms(frames[:, 0])
    for snr in (1.8, DEFAULT_MASK_SNR, 10.0):
        fg = foreground(sq, N, snr=snr, floor=0.0, remove_isolated=False)
        assert fg.rule == "noise"
        assert fg.norm_threshold == pytest.approx(snr * fg.noise.sigma * math.sqrt(N))
        np.testing.assert_array_equal(fg.mask, np.sqrt(sq) >= fg.norm_threshold)
    with pytest.raises(ValueError, match="snr: expected a number > 0"):
        foreground(sq, N, snr=0.0)
    with pytest.raises(ValueError, match="threshold: expected None"):
        foreground(sq, N, threshold=1.0)


def test_despeckle_drops_isolated_voxels_only() -> None:
    mask = np.zeros((2, 6, 7), dtype=bool)
    mask[0, 1, 1] = True  # alone
    mask[0, 4, 4] = mask[0, 5, 5] = True  # diagonal pair: kept
    mask[1, 0, 6] = True  # alone in its corner (plane 1)
    mask[1, 2:5, 1:4] = True  # a block
    out = despeckle(mask)
    expected = mask.copy()
    expected[0, 1, 1] = expected[1, 0, 6] = False
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(despeckle(mask[0]), expected[0])  # 2-D
    # the mask drops them only with the noise rule (or when asked), never in a 1-D list of voxels
    frames, _ = _scan(brain_phantom(1), 0.03, seed=11)
    plain = foreground(_squared_norms(frames[:, 0]), N, remove_isolated=False)
    cleaned = foreground(_squared_norms(frames[:, 0]), N)
    np.testing.assert_array_equal(cleaned.mask, despeckle(plain.mask))
    assert cleaned.n_despeckled == int(plain.mask.sum() - cleaned.mask.sum())
    row = foreground(np.array([0.0, 1.0, 0.0, 1.0]), N, threshold=0.0)
    assert row.mask.tolist() == [False, True, False, True]


def test_the_floor_masks_ghost_like_signal_that_the_noise_alone_keeps() -> None:
    """EPI N/2 ghosts: a copy of the head at a few percent of its signal, in the air — signal, not noise, and far
    above it at low noise. The floor (5 % of the 99th-percentile norm) masks a 3.5 % ghost; the noise alone does not."""
    phantom = brain_phantom(1)
    clean = simulate_frames(phantom, SCHEDULE, 0.0, magnitude=False)[:, 0]
    ghost = 0.035 * np.roll(clean, clean.shape[-2] // 2, axis=-2)  # shifted by half the field of view
    outside = phantom.labels[0] == 0
    ghost[:, ~outside] = 0
    sigma = image_noise_sigma(clean, 0.005)
    rng = np.random.default_rng(12)
    frames = np.abs(clean + ghost + sigma * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)))
    sq = _squared_norms(frames)
    in_ghost = outside & (np.abs(ghost).max(axis=0) > 0)
    assert in_ghost.sum() > 500
    no_floor = foreground(sq, N, floor=0.0)
    with_floor = foreground(sq, N)
    assert no_floor.rule == with_floor.rule == "noise"
    assert no_floor.mask[in_ghost].mean() > 0.5
    assert with_floor.mask[in_ghost].mean() < 0.01
    assert with_floor.mask[~outside].all()
    with pytest.raises(ValueError, match="floor: expected a fraction"):
        foreground(sq, N, floor=1.0)
