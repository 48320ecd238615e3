"""Uncertainty maps (t1_sd, t2_sd) and the goodness-of-fit map.

The goal (issue 13): in a uniform tissue the mean predicted sd matches the empirical sd of the map over that
tissue — mean predicted / empirical within 0.75–1.33 for T1 and T2 in WM and GM at 1 % and 3 % noise —
checked on scans the table never saw (other seeds, BrainWeb's values, a B1 field given as a map). The
table's nodes are checked against an independent Monte Carlo of the network (fresh draws, 8× as many), and
the goodness of fit against exact residuals (a component orthogonal to the atom).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drone_core.epg import simulate
from drone_core.goodness_of_fit import goodness_of_fit, residual_norms
from drone_core.model import DroneModel, default_model
from drone_core.phantoms import brain_phantom, simulate_frames
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule
from drone_core.uncertainty import UncertaintyTable

SCHEDULE = default_schedule()
#: The issue's bounds on mean predicted sd / empirical sd.
SD_RATIO = (0.75, 1.33)
#: A node of the table against 8,192 fresh draws: the table's 1,024 draws give each sd a relative sampling error
#: of ≈ 2.2 % (and the reference ≈ 0.8 %); 10 % is > 4 sd of their difference.
NODE_RTOL = 0.10


@pytest.fixture(scope="module")
def model() -> DroneModel:
    return default_model()


def _maps(phantom, level: float, seed: int, model: DroneModel, b1=None):
    frames = simulate_frames(phantom, SCHEDULE, level, seed=seed, b1=b1)
    return [reconstruct(frames[:, z], model, uncertainty=True, goodness_of_fit=True,
                        b1=None if b1 is None else b1[z]) for z in range(frames.shape[1])]


@pytest.mark.parametrize("values, level, seed, with_b1", [
    ("paper", 0.01, 31, False), ("paper", 0.03, 32, False),
    ("brainweb", 0.01, 33, False), ("brainweb", 0.03, 34, False), ("paper", 0.03, 35, True),
])
def test_predicted_sd_matches_the_maps_sd_over_a_uniform_tissue(model: DroneModel, values: str, level: float,
                                                                seed: int, with_b1: bool) -> None:
    phantom = brain_phantom(3, values=values)
    # with a B1 map: a uniform B1 of 0.85 (a uniform tissue stays uniform: its sd is the estimator's alone)
    b1 = np.full(phantom.shape, 0.85) if with_b1 else None
    maps = _maps(phantom, level, seed, model, b1)
    stack = {k: np.stack([getattr(m, k) for m in maps]) for k in ("t1", "t2", "t1_sd", "t2_sd", "mask")}
    for name in ("WM", "GM"):
        where = phantom.tissue_mask(name) & stack["mask"]
        for q in ("t1", "t2"):
            ratio = stack[f"{q}_sd"][where].mean() / stack[q][where].std()
            assert SD_RATIO[0] <= ratio <= SD_RATIO[1], (name, q, ratio)


def test_table_nodes_match_an_independent_monte_carlo(model: DroneModel) -> None:
    table = model.uncertainty_table
    assert table is not None and table.n_draws >= 1024
    rng = np.random.default_rng(2024)
    for t1, t2, b1, snr in [(663.0, 83.0, 1.0, 30.0), (1110.0, 96.0, 0.75, 100.0), (3799.0, 870.0, 1.25, 60.0),
                            (300.0, 40.0, 1.0, 200.0)]:
        atom = np.asarray(simulate(SCHEDULE, [t1], [t2], [b1], dtype=torch.float64))[0]
        k = 8192
        y = np.abs(atom[None] + (rng.standard_normal((k, 25)) + 1j * rng.standard_normal((k, 25))) / snr)
        e1, e2 = model.predict(y.astype(np.float32), np.full(k, b1, np.float32))
        sd1, sd2 = model.estimate_std([t1], [t2], [1.0], 1.0 / snr, [b1])
        assert sd1[0] == pytest.approx(e1.std(), rel=NODE_RTOL), (t1, t2, b1, snr)
        assert sd2[0] == pytest.approx(e2.std(), rel=NODE_RTOL), (t1, t2, b1, snr)


def test_sd_scales_as_one_over_snr_above_the_table_and_refuses_nonsense(model: DroneModel) -> None:
    hi = model.uncertainty_table.snr_range[1]
    a1, a2 = model.estimate_std([800.0], [70.0], [hi], 1.0)
    b1_, b2 = model.estimate_std([800.0], [70.0], [4 * hi], 1.0)
    assert b1_[0] == pytest.approx(a1[0] / 4, rel=1e-5) and b2[0] == pytest.approx(a2[0] / 4, rel=1e-5)
    sd1, _ = model.estimate_std([800.0, np.nan, 800.0], [70.0, 70.0, 70.0], [100.0, 100.0, 0.0], 1.0)
    assert np.isfinite(sd1[0]) and np.isnan(sd1[1:]).all()
    with pytest.raises(ValueError, match="sigma: expected a noise level > 0"):
        model.estimate_std([800.0], [70.0], [100.0], 0.0)


def test_the_table_travels_with_the_model_and_belongs_to_its_weights(model: DroneModel, tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    model.save(path)
    again = DroneModel.load(path)
    np.testing.assert_array_equal(again.uncertainty_table.log_sd, model.uncertainty_table.log_sd)
    other = DroneModel.load(path)
    with torch.no_grad():
        next(other.network.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="measured for other weights"):
        DroneModel(other.network, other.schedule, other.t1_range_ms, other.t2_range_ms, b1=other.b1,
                   m0_table=other.m0_table, uncertainty_table=model.uncertainty_table)
    bare = DroneModel(other.network, other.schedule, other.t1_range_ms, other.t2_range_ms, b1=other.b1,
                      m0_table=other.m0_table)
    with pytest.raises(ValueError, match="no uncertainty table"):
        bare.estimate_std([800.0], [70.0], [100.0], 0.01)
    with pytest.raises(ValueError, match="has no uncertainty table"):
        reconstruct(np.ones((25, 4, 4), np.float32), bare, uncertainty=True)
    # a small table measured here: its nodes are finite and T2 ≥ T1 nodes are filled from valid ones
    small = UncertaintyTable.build(bare, network_digest=bare.network_digest(), shape=(1, 6, 6, 3), n_draws=64)
    assert small.log_sd.shape == (2, 1, 6, 6, 3) and np.isfinite(small.log_sd).all()
    bare.uncertainty_table = small
    sd1, sd2 = bare.estimate_std([800.0], [70.0], [100.0], 0.01)
    assert sd1[0] > 0 and sd2[0] > 0


# =========================================================================== goodness of fit
def test_residual_norms_are_exact() -> None:
    t1, t2, b1 = np.array([663.0, 1500.0]), np.array([83.0, 200.0]), np.array([1.0, 0.8])
    atoms = np.abs(np.asarray(simulate(SCHEDULE, t1, t2, b1, n_positions=12, dtype=torch.float64)))
    rng = np.random.default_rng(4)
    e = rng.standard_normal(atoms.shape)
    e -= (np.einsum("vf,vf->v", e, atoms) / np.einsum("vf,vf->v", atoms, atoms))[:, None] * atoms  # ⟂ the atom
    y = 3.0 * atoms + 0.002 * e
    assert y.min() > 0  # magnitudes: a negative value would be folded by |·|
    got = residual_norms(SCHEDULE, y.astype(np.float32), t1, t2, b1)
    # float32 atoms and signals (relative rounding ~1e-7 of ‖y‖ ≈ 5): the residual is exact to ≪ 1 %
    np.testing.assert_allclose(got, 0.002 * np.linalg.norm(e, axis=1), rtol=5e-3)
    np.testing.assert_allclose(residual_norms(SCHEDULE, (3.0 * atoms).astype(np.float32), t1, t2, b1), 0.0,
                               atol=1e-5 * 3.0 * float(np.linalg.norm(atoms)))
    assert goodness_of_fit(np.array([2.0]), 0.5, 25, 3)[0] == pytest.approx(2.0 / (0.5 * math.sqrt(22)))
    with pytest.raises(ValueError, match="t1_ms, t2_ms: expected finite estimates"):
        residual_norms(SCHEDULE, y, np.array([np.nan, 1.0]), t2)


def test_fit_is_one_where_the_model_explains_the_voxel_and_flags_partial_volume(model: DroneModel) -> None:
    phantom = brain_phantom(1)
    frames = simulate_frames(phantom, SCHEDULE, 0.01, seed=41)
    maps = reconstruct(frames[:, 0], model, goodness_of_fit=True)
    tissue = (phantom.labels[0] != 0) & maps.mask
    # noise alone: ‖y − M0·a‖²/σ² ~ χ²(N − 3) at high SNR, so the median of fit is ≈ √(21.3/22) ≈ 0.98–1.0;
    # the network's own error adds a little
    assert 0.9 <= np.median(maps.fit[tissue]) <= 1.15
    # a voxel half WM, half CSF (same M0 scale) at the same noise: no single atom explains it
    wm = np.asarray(simulate(SCHEDULE, [663.0], [83.0], dtype=torch.float64))[0] * 0.77
    csf = np.asarray(simulate(SCHEDULE, [3799.0], [870.0], dtype=torch.float64))[0]
    sigma = maps.noise_sigma
    rng = np.random.default_rng(42)
    mix = 0.5 * (wm + csf)
    y = np.abs(mix[None] + sigma * (rng.standard_normal((64, 25)) + 1j * rng.standard_normal((64, 25))))
    patch = frames[:, 0].copy()
    patch[:, :8, :8] = y.T.reshape(25, 8, 8)  # an 8 × 8 block of them, in the air of the corner
    mixed = reconstruct(patch, model, goodness_of_fit=True)
    pv = mixed.fit[:8, :8][mixed.mask[:8, :8]]
    # measured 3.15 (pure tissue 0.98); a median of 64 voxels varies by ≈ 0.1 between draws
    assert pv.size == 64 and np.median(pv) > 2.5, np.median(pv)
