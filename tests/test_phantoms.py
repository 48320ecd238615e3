"""drone_core.phantoms: label maps, reference values, layout, spread, frames and the image noise level."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch

from drone_core.epg import simulate
from drone_core.noise import add_noise
from drone_core.phantoms import (BRAIN_DATA_FILE, NIST_LAYOUT, SPREAD_TRUNCATION_SD, Phantom, Tissue, brain_phantom,
                                 image_noise_sigma, nist_phantom, simulate_frames)
from drone_core.schedule import Schedule, default_schedule

# The reference tables, copied here independently from shared/reference/phantom-values.md
# (so a typo in drone_core.phantoms cannot hide behind itself). T1 ms, T2 ms.
PAPER = {"WM": (663.0, 83.0, 0.77), "GM": (1110.0, 96.0, 0.86), "CSF": (3799.0, 870.0, 1.0)}
BRAINWEB = {"CSF": (2569.0, 329.0, 1.0), "GM": (833.0, 83.0, 0.86), "WM": (500.0, 70.0, 0.77)}
NIST_T1 = ([2033, 1489, 1012, 730.8, 514.1, 367.9, 260.1, 184.6, 132.7, 92.7, 65.4, 46.32, 32.45, 22.859],
           [1669, 1244, 859.3, 628.5, 446.3, 321.2, 227.7, 161.9, 117.1, 81.9, 57.7, 41.0, 28.7, 20.2])
NIST_T2 = ([2736, 2183, 1870, 1539, 1237, 1030, 752.2, 550.2, 413.4, 292.9, 194.9, 160.2, 106.4, 83.33],
           [939.4, 594.3, 416.5, 267.0, 184.9, 140.6, 91.76, 64.84, 45.28, 30.62, 19.76, 15.99, 10.47, 8.15])

#: simulate_frames and the direct call are both float64 EPG; the frames are stored as complex64
#: (relative rounding 6e-8 of the frame's peak).
FRAME_RTOL = 1e-6
#: The noise σ estimated from n ≈ 10⁵–10⁶ Gaussian draws has a relative standard error of 1/√(2n) < 0.3 %.
SIGMA_RTOL = 0.02


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return default_schedule()


# --------------------------------------------------------------------------- the shipped data
def test_data_file_is_small_uint8_with_provenance() -> None:
    ref = resources.files("drone_core.phantom_data").joinpath(BRAIN_DATA_FILE)
    raw = ref.read_bytes()
    assert len(raw) < 100_000
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as data:
        labels = data["labels"]
        assert labels.dtype == np.uint8 and labels.shape == (7, 128, 128)
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        assert list(data["label_names"]) == ["background", "CSF", "GM", "WM"]
        np.testing.assert_array_equal(data["slice_z_mm"], [0, 5, 10, 15, 20, 25, 30])
        text = str(data["provenance"])
        assert "MNI" in text and "nilearn" in text and "Louis Collins" in text
    readme = resources.files("drone_core.phantom_data").joinpath("README.md").read_text(encoding="utf-8")
    assert "Permission to use, copy, modify, and distribute" in readme and "ICBM152 2009a" in readme


# --------------------------------------------------------------------------- brain
def test_brain_labels_and_paper_values() -> None:
    p = brain_phantom()
    assert p.shape == (1, 128, 128) and p.labels.dtype == np.uint8
    assert p.fov_mm == (256.0, 256.0) and p.pixel_mm == (2.0, 2.0) and p.slice_thickness_mm == 5.0
    assert p.slice_positions_mm == (15.0,)
    assert set(np.unique(p.labels)) == {0, 1, 2, 3}
    counts = {t.name: int((p.labels == k).sum()) for k, t in p.tissues.items()}
    assert counts["WM"] > 2000 and counts["GM"] > 2000 and counts["CSF"] > 150  # ventricles are in the slice
    assert {t.name: (t.t1_ms, t.t2_ms, t.m0) for t in p.tissues.values()} == PAPER
    maps = p.maps()
    for k, t in p.tissues.items():
        w = p.labels == k
        assert np.all(maps["t1"][w] == np.float32(t.t1_ms)) and np.all(maps["t2"][w] == np.float32(t.t2_ms))
        assert np.all(maps["m0"][w] == np.float32(t.m0))
    for m in maps.values():
        assert m.dtype == np.float32 and m.shape == p.shape and np.all(m[p.labels == 0] == 0)
    assert not p.has_spread


def test_brain_brainweb_values() -> None:
    p = brain_phantom(values="brainweb")
    assert {t.name: (t.t1_ms, t.t2_ms, t.m0) for t in p.tissues.values()} == BRAINWEB
    np.testing.assert_array_equal(p.labels, brain_phantom().labels)


@pytest.mark.parametrize(("n", "z_mm"), [(1, [15]), (2, [15, 20]), (3, [10, 15, 20]), (7, [0, 5, 10, 15, 20, 25, 30])])
def test_brain_slice_selection(n: int, z_mm: list[float]) -> None:
    p = brain_phantom(n)
    assert p.shape == (n, 128, 128) and list(p.slice_positions_mm) == z_mm
    assert all((p.labels[s] == 1).any() for s in range(n))


@pytest.mark.parametrize("kwargs", [{"n_slices": 0}, {"n_slices": 8}, {"values": "stanisz"}, {"matrix": (4, 128)},
                                    {"matrix": (128,)}])
def test_brain_refuses_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        brain_phantom(**kwargs)


def test_brain_non_square_matrix() -> None:
    p = brain_phantom(2, matrix=(96, 160))
    assert p.shape == (2, 96, 160) and p.fov_mm == (256.0, 256.0)
    assert p.pixel_mm == (256.0 / 96, 1.6)
    ref = brain_phantom(2)
    # Nearest-neighbour resampling keeps the tissue fractions within a few per cent of the field of view.
    for k in (0, 1, 2, 3):
        assert abs((p.labels == k).mean() - (ref.labels == k).mean()) < 0.01


def test_brain_spread_is_seeded_truncated_and_has_the_paper_sd() -> None:
    a = brain_phantom(7, spread=True, seed=3)
    b = brain_phantom(7, spread=True, seed=3)
    c = brain_phantom(7, spread=True, seed=4)
    ma, mb, mc = a.maps(), b.maps(), c.maps()
    np.testing.assert_array_equal(ma["t1"], mb["t1"])
    np.testing.assert_array_equal(ma["t2"], mb["t2"])
    assert not np.array_equal(ma["t1"], mc["t1"])
    assert a.has_spread and a.metadata["seed"] == 3
    np.testing.assert_array_equal(ma["m0"], brain_phantom(7).maps()["m0"])  # no M0 spread
    sd = {"WM": (30.0, 7.9), "GM": (59.0, 13.0), "CSF": (422.0, 191.0)}
    # A Gaussian truncated at ±2.5 sd has sd 0.9462·sd; thousands of voxels per tissue → ±5 % is ≥ 4 standard errors.
    shrink = 0.9462
    for k, t in a.tissues.items():
        w = a.labels == k
        for key, mean, s in (("t1", t.t1_ms, sd[t.name][0]), ("t2", t.t2_ms, sd[t.name][1])):
            v = ma[key][w].astype(np.float64)
            assert abs(v.mean() - mean) < 4 * s / math.sqrt(v.size)
            assert v.std() == pytest.approx(shrink * s, rel=0.05)
            assert np.abs(v - mean).max() <= SPREAD_TRUNCATION_SD * s * (1 + 1e-6)
    assert ma["t1"].max() < 5000.0  # inside the paper dictionary


def test_brain_spread_with_brainweb_values_is_relative() -> None:
    p = brain_phantom(7, (128, 128), "brainweb", spread=True, seed=0)
    m = p.maps()
    w = p.labels == 3  # WM: BrainWeb 500 ms, paper sd 30/663 relative
    assert m["t1"][w].std() == pytest.approx(0.9462 * 500.0 * 30.0 / 663.0, rel=0.05)


# --------------------------------------------------------------------------- NIST
@pytest.mark.parametrize(("array", "table", "excluded"), [("T1", NIST_T1, [13, 14]), ("T2", NIST_T2, [11, 12, 13, 14])])
def test_nist_values_exactly_from_the_reference(array: str, table, excluded: list[int]) -> None:
    p = nist_phantom(array)
    for k in range(1, 15):
        t = p.tissues[k]
        assert (t.t1_ms, t.t2_ms, t.m0) == (float(table[0][k - 1]), float(table[1][k - 1]), 1.0)
        assert t.name == f"sphere {k}"
    assert p.metadata["excluded_labels"] == excluded  # the paper's T2 < 30 ms rule
    assert all(p.tissues[k].t2_ms < 30 for k in excluded)
    assert set(np.unique(p.labels)) == set(range(16))  # nothing excluded from the phantom itself
    assert p.tissues[15].t1_ms == 3000.0 and p.tissues[15].t2_ms == 2000.0


def test_nist_default_is_the_t1_array_the_paper_describes() -> None:
    p = nist_phantom()
    assert p.metadata["array"] == "T1"
    assert p.metadata["excluded_labels"] == [13, 14] and p.metadata["long_t2_labels"] == [1, 2]


@pytest.mark.parametrize("matrix", [(128, 128), (96, 160), (64, 48)])
def test_nist_layout_inside_the_fov(matrix: tuple[int, int]) -> None:
    p = nist_phantom("T2", matrix)
    ny, nx = matrix
    assert p.shape == (1, ny, nx)
    dy, dx = p.pixel_mm
    rows, cols = np.indices(matrix)
    y_mm, x_mm = (rows + 0.5 - ny / 2) * dy, (cols + 0.5 - nx / 2) * dx
    lab = p.labels[0]
    half = NIST_LAYOUT["fov_mm"] / 2
    assert NIST_LAYOUT["ring_radius_mm"] + NIST_LAYOUT["sphere_radius_mm"] < NIST_LAYOUT["disc_radius_mm"] < half
    r = NIST_LAYOUT["sphere_radius_mm"]
    pixel = max(dy, dx)
    centroids = {}
    for k in range(1, 15):
        w = lab == k
        expected_area = math.pi * r ** 2 / (dy * dx)
        assert abs(w.sum() - expected_area) < 0.35 * expected_area + 4
        cy, cx = y_mm[w].mean(), x_mm[w].mean()
        centroids[k] = (cy, cx)
        assert math.hypot(cy, cx) == pytest.approx(NIST_LAYOUT["ring_radius_mm"], abs=pixel)
        assert np.all(np.hypot(y_mm[w], x_mm[w]) < NIST_LAYOUT["disc_radius_mm"])  # inside the disc
        assert np.all(np.hypot(y_mm[w] - cy, x_mm[w] - cx) <= r + pixel)
    # Disc of water around them, air outside it.
    assert np.all(lab[np.hypot(y_mm, x_mm) > NIST_LAYOUT["disc_radius_mm"] + pixel] == 0)
    # Sphere 1 at 12 o'clock (top of the display, row 0), sphere 2 clockwise (to the right), 8 opposite 1.
    assert centroids[1][0] < 0 and abs(centroids[1][1]) < pixel
    assert centroids[2][1] > 0 and centroids[14][1] < 0
    assert centroids[8][0] > 0 and abs(centroids[8][1]) < pixel
    # Spheres do not touch.
    ks = list(centroids)
    gaps = [math.dist(centroids[a], centroids[b]) for i, a in enumerate(ks) for b in ks[i + 1:]]
    assert min(gaps) > 2 * r


def test_nist_without_background_and_bad_arguments() -> None:
    p = nist_phantom("T1", background=None)
    assert 15 not in p.tissues and set(np.unique(p.labels)) == set(range(15))
    with pytest.raises(ValueError, match="array"):
        nist_phantom("PD")
    with pytest.raises(ValueError, match="matrix"):
        nist_phantom("T1", (8, 8))  # too coarse: some sphere covers no voxel centre


# --------------------------------------------------------------------------- Phantom validation
def test_phantom_validation() -> None:
    labels = np.array([[0, 1], [2, 1]], dtype=np.int16)
    p = Phantom(labels, {1: ("a", 100, 10, 1.0), 2: Tissue("b", 200.0, 20.0, 0.5)})
    assert p.shape == (2, 2) and p.n_slices == 1 and p.tissues[1] == Tissue("a", 100.0, 10.0, 1.0)
    with pytest.raises(ValueError, match=r"labels \[2\]"):
        Phantom(labels, {1: ("a", 100, 10, 1.0)})
    with pytest.raises(ValueError, match="air"):
        Phantom(labels, {0: ("x", 1, 1, 1), 1: ("a", 100, 10, 1.0), 2: ("b", 200, 20, 0.5)})
    with pytest.raises(ValueError, match="T1, T2 > 0"):
        Phantom(labels, {1: ("a", 100, 0, 1.0), 2: ("b", 200, 20, 0.5)})
    with pytest.raises(ValueError, match="labels"):
        Phantom(labels.astype(float), {1: ("a", 100, 10, 1.0), 2: ("b", 200, 20, 0.5)})
    with pytest.raises(ValueError, match="≤ 0"):
        Phantom(labels, {1: ("a", 100, 10, 1.0), 2: ("b", 200, 20, 0.5)}, t2_offset_ms=np.full((2, 2), -30.0))
    with pytest.raises(ValueError, match="slice_positions_mm"):
        Phantom(labels[None], {1: ("a", 100, 10, 1.0), 2: ("b", 200, 20, 0.5)}, slice_positions_mm=(0.0, 1.0))


# --------------------------------------------------------------------------- frames
def test_frames_equal_direct_epg_for_some_voxels(schedule: Schedule) -> None:
    p = brain_phantom(2, spread=True, seed=1)
    frames = simulate_frames(p, schedule, magnitude=False)
    assert frames.shape == (schedule.n_frames, 2, 128, 128) and frames.dtype == np.complex64
    maps = p.maps()
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        zz, yy, xx = np.nonzero(p.labels == k)
        pick = rng.choice(zz.size, 3, replace=False)
        t1 = maps["t1"][zz[pick], yy[pick], xx[pick]].astype(np.float64)
        t2 = maps["t2"][zz[pick], yy[pick], xx[pick]].astype(np.float64)
        m0 = maps["m0"][zz[pick], yy[pick], xx[pick]].astype(np.float64)
        direct = np.asarray(simulate(schedule, t1, t2, dtype=torch.float64)) * m0[:, None]
        got = frames[:, zz[pick], yy[pick], xx[pick]].T
        np.testing.assert_allclose(got, direct, rtol=0, atol=FRAME_RTOL * np.abs(direct).max())
    assert np.all(frames[:, p.labels == 0] == 0)
    mag = simulate_frames(p, schedule)
    assert mag.dtype == np.float32
    np.testing.assert_allclose(mag, np.abs(frames), rtol=1e-6, atol=1e-9)


def test_frames_with_a_b1_map(schedule: Schedule) -> None:
    p = nist_phantom("T2", (64, 64))
    b1 = np.linspace(0.7, 1.2, 64)[None, None, :] * np.ones(p.shape)
    frames = simulate_frames(p, schedule, b1=b1, magnitude=False)
    for (y, x) in ((10, 32), (32, 50), (40, 20)):
        k = int(p.labels[0, y, x])
        t = p.tissues[k]
        direct = np.asarray(simulate(schedule, t.t1_ms, t.t2_ms, b1[0, y, x], dtype=torch.float64))[0] * t.m0
        np.testing.assert_allclose(frames[:, 0, y, x], direct, rtol=0, atol=FRAME_RTOL * np.abs(direct).max())
    uniform = simulate_frames(p, schedule, b1=0.8)
    direct = np.abs(np.asarray(simulate(schedule, p.tissues[15].t1_ms, p.tissues[15].t2_ms, 0.8, dtype=torch.float64)))
    np.testing.assert_allclose(uniform[:, 0, 32, 32], direct[0], rtol=FRAME_RTOL)
    with pytest.raises(ValueError, match="b1"):
        simulate_frames(p, schedule, b1=np.ones((64, 64)))


def test_noise_level_is_relative_to_the_brightest_voxel(schedule: Schedule) -> None:
    p = brain_phantom(7)
    clean = simulate_frames(p, schedule, magnitude=False)
    level = 0.01
    noisy = simulate_frames(p, schedule, level, seed=5, magnitude=False)
    sigma = image_noise_sigma(clean, level)
    assert sigma == pytest.approx(level * np.abs(clean).max())
    # The brightest voxel is CSF (M0 = 1): σ = level × the CSF fingerprint's peak.
    csf = np.abs(np.asarray(simulate(schedule, 3799.0, 870.0, dtype=torch.float64)))[0]
    assert sigma == pytest.approx(level * csf.max(), rel=1e-6)
    residual = (noisy - clean).astype(np.complex128)
    for part in (residual.real, residual.imag):  # one σ everywhere: air, WM, GM and CSF alike
        for k in (0, 1, 2, 3):
            values = part[:, p.labels == k]
            assert values.std() == pytest.approx(sigma, rel=SIGMA_RTOL)
            assert abs(values.mean()) < 5 * sigma / math.sqrt(values.size)
    np.testing.assert_array_equal(noisy, simulate_frames(p, schedule, level, seed=5, magnitude=False))
    assert not np.array_equal(noisy, simulate_frames(p, schedule, level, seed=6, magnitude=False))
    mag = simulate_frames(p, schedule, level, seed=5)
    np.testing.assert_allclose(mag, np.abs(noisy), rtol=1e-6, atol=1e-9)  # magnitude after the noise (Rician)
    assert np.all(mag >= 0) and mag[:, p.labels == 0].mean() > 0


def test_one_tissue_image_noise_matches_add_noise(schedule: Schedule) -> None:
    """For an image of one tissue the image σ is exactly add_noise's σ for that fingerprint."""
    p = Phantom(np.ones((40, 30), dtype=np.uint8), {1: ("GM", 1110.0, 96.0, 0.86)})
    clean = simulate_frames(p, schedule, magnitude=False)
    atom = np.asarray(simulate(schedule, 1110.0, 96.0, dtype=torch.float64)) * 0.86
    assert image_noise_sigma(clean, 0.02) == pytest.approx(0.02 * np.abs(atom).max(), rel=1e-6)
    ours = simulate_frames(p, schedule, 0.02, seed=1).reshape(schedule.n_frames, -1).T
    theirs = add_noise(np.repeat(atom, 1200, axis=0), 0.02, generator=np.random.default_rng(1))
    # Same σ: the spread of the magnitudes about the clean fingerprint agrees statistically.
    assert ours.std(axis=0).mean() == pytest.approx(theirs.std(axis=0).mean(), rel=0.05)


def test_simulate_frames_refuses_bad_input(schedule: Schedule) -> None:
    p = nist_phantom("T1", (32, 32))
    with pytest.raises(ValueError, match="noise_level"):
        simulate_frames(p, schedule, -0.1)
    with pytest.raises(TypeError, match="phantom"):
        simulate_frames(np.zeros((3, 3)), schedule)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schedule"):
        simulate_frames(p, json.dumps(schedule.to_dict()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the 3 T-like B1 field
#: b1_field is closed-form float64: its values at chosen points match the formula to rounding.
FIELD_RTOL = 1e-12


def test_b1_field_profile_values_and_shapes() -> None:
    from drone_core.b1_field import b1_field

    # (y, x) = (40, 56) over a 160 × 224 mm FOV: 4 mm pixels; pixel centres at (j + ½ − n/2)·4 mm.
    field = b1_field((40, 56), centre=1.25, edge=0.75, fov_mm=(160.0, 224.0), radius_mm=(60.0, 80.0),
                     offset_mm=(-10.0, 14.0))
    assert field.shape == (40, 56) and field.dtype == np.float64 and np.all(field > 0)
    y_mm = (np.arange(40) + 0.5 - 20) * 4.0
    x_mm = (np.arange(56) + 0.5 - 28) * 4.0
    j0, i0 = int(np.argmin(np.abs(y_mm + 10.0))), int(np.argmin(np.abs(x_mm - 14.0)))
    assert np.unravel_index(np.argmax(field), field.shape) == (j0, i0)  # the maximum is at the offset

    def formula(y: float, x: float) -> float:
        rho2 = ((y + 10.0) / 60.0) ** 2 + ((x - 14.0) / 80.0) ** 2
        return 1.25 * (0.75 / 1.25) ** rho2

    for j, i in ((0, 0), (j0, i0), (17, 41), (39, 55)):
        np.testing.assert_allclose(field[j, i], formula(y_mm[j], x_mm[i]), rtol=FIELD_RTOL)
    # On the ellipse ρ = 1 (a point 60 mm along y from the maximum, x at the maximum) B1 = edge.
    assert formula(-10.0 + 60.0, 14.0) == pytest.approx(0.75, rel=FIELD_RTOL)
    # Monotone away from the maximum along its row and column.
    assert np.all(np.diff(field[j0, i0:]) < 0) and np.all(np.diff(field[:j0 + 1, i0]) > 0)
    # Default radius: half the FOV, so B1 = edge half a pixel inside the middle of each side.
    default = b1_field((64, 48), centre=1.2, edge=0.8, fov_mm=(256.0, 192.0))
    half = 0.5 / 32  # half a pixel in units of the semi-axis
    np.testing.assert_allclose(default[0, 24], 1.2 * (0.8 / 1.2) ** ((1 - half) ** 2 + (0.5 / 24) ** 2),
                               rtol=FIELD_RTOL)
    # 3-D: each slice is the 2-D field times a gentle through-slice factor (edge/centre)^((z − z0)²/r_z²).
    vol = b1_field((3, 64, 48), fov_mm=(256.0, 192.0), slice_positions_mm=(10.0, 15.0, 20.0), z_radius_mm=100.0)
    for s, z in enumerate((10.0, 15.0, 20.0)):
        np.testing.assert_allclose(vol[s], default * (0.8 / 1.2) ** ((z / 100.0) ** 2), rtol=FIELD_RTOL)
    assert 0.98 < vol[2].max() / vol[0].max() < 1.0  # gentle: ~1 % over 10 mm near the centre
    flat = b1_field((2, 16, 16), z_radius_mm=None)
    np.testing.assert_array_equal(flat[0], flat[1])
    # step: the nearest multiple of the step (0.1 %), far fewer distinct values
    smooth = b1_field((3, 64, 48), fov_mm=(256.0, 192.0))
    stepped = b1_field((3, 64, 48), fov_mm=(256.0, 192.0), step=0.001)
    assert np.abs(stepped - smooth).max() <= 0.0005 + 1e-12
    np.testing.assert_allclose(stepped / 0.001, np.round(stepped / 0.001), atol=1e-9)
    assert len(np.unique(stepped)) <= round((smooth.max() - smooth.min()) / 0.001) + 2 < len(np.unique(smooth)) / 2


def test_b1_field_refusals() -> None:
    from drone_core.b1_field import b1_field, head_b1_field

    with pytest.raises(ValueError, match="shape"):
        b1_field((4,))
    with pytest.raises(ValueError, match="centre"):
        b1_field((8, 8), centre=0.0)
    with pytest.raises(ValueError, match="edge"):
        b1_field((8, 8), edge=float("nan"))
    with pytest.raises(ValueError, match="radius_mm"):
        b1_field((8, 8), radius_mm=(10.0, -1.0))
    with pytest.raises(ValueError, match="slice_positions_mm"):
        b1_field((3, 8, 8), slice_positions_mm=(0.0, 5.0))
    with pytest.raises(ValueError, match="z_radius_mm"):
        b1_field((3, 8, 8), z_radius_mm=0.0)
    with pytest.raises(ValueError, match="step"):
        b1_field((8, 8), step=-0.01)
    with pytest.raises(TypeError, match="phantom"):
        head_b1_field(np.zeros((8, 8)))  # type: ignore[arg-type]
    empty = Phantom(np.zeros((8, 8), dtype=np.uint8), {})
    with pytest.raises(ValueError, match="no non-air voxel"):
        head_b1_field(empty)


def test_head_b1_field_fits_the_head() -> None:
    """Centre ≈ 1.2 inside the brain, ≈ 0.8 at its outline, within the 3 T range (≈ 0.7–1.3) all over it."""
    from drone_core.b1_field import head_b1_field

    p = brain_phantom(3, (96, 80))
    field = head_b1_field(p)
    assert field.shape == p.shape
    tissue = p.labels != 0
    assert 1.15 < field[tissue].max() <= 1.2 and 0.7 < field[tissue].min() < 0.85
    # No offset, no through-slice term: exactly edge half a pixel outside the outermost tissue pixel centres,
    # i.e. the outermost tissue columns are just above edge, and symmetric.
    sym = head_b1_field(p, offset_fraction=(0.0, 0.0), z_radius_mm=None)
    cols = np.nonzero(tissue.any(axis=(0, 1)))[0]
    rows = np.nonzero(tissue.any(axis=(0, 2)))[0]
    yc, xc = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    for value in (sym[0, yc, cols[0]], sym[0, yc, cols[-1]], sym[0, rows[0], xc], sym[0, rows[-1], xc]):
        assert 0.8 < value < 0.82
    np.testing.assert_array_equal(sym[0], sym[1])
    # A 2-D phantom gives a 2-D field; centre/edge pass through.
    flat = Phantom(p.labels[1], p.tissues, fov_mm=p.fov_mm)
    f2 = head_b1_field(flat, centre=1.1, edge=0.9)
    assert f2.shape == flat.shape and 1.05 < f2[flat.labels != 0].max() <= 1.1
