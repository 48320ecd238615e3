"""drone_core.encoding: receive coils (Biot–Savart sensitivities, noise covariance, correlated noise) and
EPI k-space sampling (the trapezoid readout's trajectory, the samples of a multi-coil object, the line
patterns of GRAPPA and ACS), each against a reference computed independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import cumulative_trapezoid, quad

from drone_core.encoding import (EpiGhost, EpiReadout, calibration_lines, coil_sensitivities, correlated_noise,
                                 encode_lines, noise_covariance, phase_encode, readout_operator, undersampled_lines)

#: Half-length of the numerical Biot–Savart wire, mm (±20 m ≫ the FOV). A finite wire's field differs from
#: the infinite one's (the module's model) by a relative ≈ ρ²/(2L²) ≈ 1e-4 at ρ ≈ 300 mm.
WIRE_HALF_LENGTH_MM = 20_000.0
#: Relative sensitivities (ratio to a reference pixel) against the finite-wire field: 10× the length error.
COIL_RTOL = 1e-3
#: Outputs that are complex64 (encode_lines' default dtype): float32 rounding of O(1) samples (ε ≈ 6e-8)
#: accumulated over the ≈ 100-term sums is far below this.
COMPLEX64_ATOL = 1e-5
#: float64 computations compared with float64 references: only round-off.
FLOAT64_ATOL = 1e-10
#: Standard errors allowed for a seeded statistical estimate (the chance of a false alarm per
#: comparison is < 1e-6, and the seed makes it reproducible anyway).
N_SE = 5.0


# --------------------------------------------------------------------------- coils
def _pixel_centre_mm(j: int, i: int, matrix: tuple[int, int], fov_mm: tuple[float, float]) -> tuple[float, float]:
    """(x, y) in mm of pixel (row j, column i): pixel centres, the FOV centred on the origin."""
    (ny, nx), (fy, fx) = matrix, fov_mm
    return ((i + 0.5) * fx / nx - fx / 2, (j + 0.5) * fy / ny - fy / 2)


def _biot_savart_b1_minus(point_xy: tuple[float, float], wire_xy: tuple[float, float]) -> complex:
    """B₁⁻ = B_x − i·B_y at ``point_xy`` (z = 0) of a straight wire along +z through ``wire_xy``, from
    z = −L to +L, by numerical Biot–Savart: B = ∫ dl × r / |r|³ (the constant μ₀I/4π dropped)."""
    p = np.array([point_xy[0], point_xy[1], 0.0])

    def component(z: float, axis: int) -> float:
        r = p - np.array([wire_xy[0], wire_xy[1], z])
        return float(np.cross([0.0, 0.0, 1.0], r)[axis] / np.linalg.norm(r) ** 3)

    b = []
    for axis in (0, 1):
        # split where the integrand is concentrated (|z| ≲ a few ρ) so that quad resolves the peak
        edges = (-WIRE_HALF_LENGTH_MM, -2000.0, 0.0, 2000.0, WIRE_HALF_LENGTH_MM)
        b.append(sum(quad(component, lo, hi, args=(axis,), epsabs=0.0, epsrel=1e-11, limit=200)[0]
                     for lo, hi in zip(edges[:-1], edges[1:])))
    return complex(b[0], -b[1])


@pytest.mark.parametrize("n_coils, matrix, fov_mm, ring_radius_mm",
                         [(6, (16, 20), (200.0, 240.0), None), (3, (10, 10), (256.0, 256.0), 150.0)])
def test_coil_sensitivities_match_a_numerical_biot_savart_field(n_coils, matrix, fov_mm, ring_radius_mm) -> None:
    sens = coil_sensitivities(n_coils, matrix, fov_mm, ring_radius_mm=ring_radius_mm, normalise=False)
    assert sens.shape == (n_coils,) + matrix and sens.dtype == np.complex128
    radius = 0.75 * max(fov_mm) if ring_radius_mm is None else ring_radius_mm
    ny, nx = matrix
    pixels = [(0, 0), (ny - 1, nx - 1), (ny // 2, nx // 3), (2, nx - 2), (ny - 3, 1)]
    reference = (ny // 2, nx // 2)
    for c in range(n_coils):
        angle = 2 * math.pi * c / n_coils  # coil 0 at +x (the patient's left), counter-clockwise
        wire = (radius * math.cos(angle), radius * math.sin(angle))
        b_ref = _biot_savart_b1_minus(_pixel_centre_mm(*reference, matrix, fov_mm), wire)
        for j, i in pixels:
            expected = _biot_savart_b1_minus(_pixel_centre_mm(j, i, matrix, fov_mm), wire) / b_ref
            got = sens[c, j, i] / sens[c, reference[0], reference[1]]
            assert abs(got - expected) <= COIL_RTOL * abs(expected), (c, j, i, got, expected)


def test_normalised_sensitivities_have_unit_root_sum_of_squares() -> None:
    raw = coil_sensitivities(5, (12, 14), (256.0, 256.0), normalise=False)
    sens = coil_sensitivities(5, (12, 14), (256.0, 256.0))
    np.testing.assert_allclose(np.sum(np.abs(sens) ** 2, axis=0), 1.0, rtol=0, atol=FLOAT64_ATOL)
    # normalising divides every coil by the same real positive number per pixel
    np.testing.assert_allclose(sens, raw / np.sqrt(np.sum(np.abs(raw) ** 2, axis=0)), rtol=0, atol=FLOAT64_ATOL)
    # no two coils alike, and the nearest coil is the brightest: coil 0 (at +x) at the right-most column
    assert np.argmax(np.abs(sens[:, 6, -1])) == 0
    assert min(np.abs(sens[a] - sens[b]).max() for a in range(5) for b in range(a)) > 0.1
    one = coil_sensitivities(1, (4, 6), (256.0, 256.0))
    np.testing.assert_allclose(np.abs(one), 1.0, rtol=0, atol=FLOAT64_ATOL)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_coils=0), "n_coils"), (dict(n_coils=True), "n_coils"), (dict(n_coils=2.0), "n_coils"),
    (dict(matrix=(0, 8)), "matrix"), (dict(fov_mm=(256.0, -1.0)), "fov_mm"), (dict(fov_mm=(math.nan, 256.0)), "fov_mm"),
    (dict(ring_radius_mm=128.0), "ring_radius_mm"),  # on the inscribed circle of a 256 mm FOV: inside, refused
    (dict(ring_radius_mm=100.0), "ring_radius_mm"), (dict(ring_radius_mm=math.inf), "ring_radius_mm"),
])
def test_coil_sensitivities_refuse_bad_arguments(kwargs, message) -> None:
    args = dict(n_coils=4, matrix=(8, 8), fov_mm=(256.0, 256.0)) | kwargs
    with pytest.raises(ValueError, match=message):
        coil_sensitivities(args.pop("n_coils"), args.pop("matrix"), args.pop("fov_mm"), **args)
    coil_sensitivities(4, (8, 8), (256.0, 256.0), ring_radius_mm=128.5)  # just outside: accepted


# --------------------------------------------------------------------------- noise
@pytest.mark.parametrize("n_coils, rho, spread", [(8, 0.2, 0.15), (5, 0.45, 0.5), (2, 0.3, 0.0), (1, 0.2, 0.15)])
def test_noise_covariance_is_a_valid_ring_covariance(n_coils, rho, spread) -> None:
    psi = noise_covariance(n_coils, neighbour_correlation=rho, gain_spread=spread, seed=3)
    assert psi.shape == (n_coils, n_coils) and psi.dtype == np.complex128
    np.testing.assert_allclose(psi, psi.conj().T, rtol=0, atol=0)  # Hermitian
    assert np.linalg.eigvalsh(psi).min() > 0  # positive definite
    diag = np.real(np.diag(psi))
    assert abs(diag.mean() - 1.0) <= FLOAT64_ATOL
    # gains within ±spread: the diagonal (gain²) spans at most ((1+s)/(1−s))²
    assert diag.max() / diag.min() <= ((1 + spread) / (1 - spread)) ** 2 + FLOAT64_ATOL
    corr = np.abs(psi) / np.sqrt(np.outer(diag, diag))
    for i in range(n_coils):
        for j in range(n_coils):
            d = min(abs(i - j), n_coils - abs(i - j))  # distance around the ring
            assert abs(corr[i, j] - rho ** d) <= FLOAT64_ATOL, (i, j, corr[i, j])
    # seeded: the same seed, the same gains; another seed, others (when there is a spread)
    np.testing.assert_array_equal(psi, noise_covariance(n_coils, neighbour_correlation=rho, gain_spread=spread,
                                                        seed=3))
    if spread and n_coils > 1:
        assert not np.allclose(psi, noise_covariance(n_coils, neighbour_correlation=rho, gain_spread=spread, seed=4))


@pytest.mark.parametrize("kwargs", [dict(neighbour_correlation=0.5), dict(neighbour_correlation=-0.1),
                                    dict(gain_spread=1.0), dict(gain_spread=-0.01)])
def test_noise_covariance_refuses_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        noise_covariance(4, **kwargs)
    with pytest.raises(ValueError, match="n_coils"):
        noise_covariance(0)


def test_correlated_noise_has_covariance_two_sigma_squared_psi() -> None:
    psi = noise_covariance(4, neighbour_correlation=0.3, gain_spread=0.3, seed=1)
    sigma, shape = 0.7, (50, 400)
    m = shape[0] * shape[1]
    noise = correlated_noise(np.random.default_rng(12), psi, shape, sigma)
    assert noise.shape == (4,) + shape and np.iscomplexobj(noise)
    flat = noise.reshape(4, m)
    expected = 2 * sigma ** 2 * psi
    sample = flat @ flat.conj().T / m
    # For circular complex Gaussian a, b: Var(a·b̄) = E|a|²·E|b|², so the standard error of each
    # covariance entry is √(C_ii·C_jj / M); the pseudo-covariance E[n nᵀ] is 0 with the same standard error.
    se = np.sqrt(np.outer(np.real(np.diag(expected)), np.real(np.diag(expected))) / m)
    assert np.all(np.abs(sample - expected) <= N_SE * se), np.abs(sample - expected) / se
    assert np.all(np.abs(flat @ flat.T / m) <= N_SE * se)
    # real and imaginary parts: σ²·Ψ_ii each (standard error of a variance: √(2/M) of it)
    for part in (flat.real, flat.imag):
        var = np.mean(part ** 2, axis=1)
        assert np.all(np.abs(var / (sigma ** 2 * np.real(np.diag(psi))) - 1) <= N_SE * math.sqrt(2 / m))
    assert np.all(np.abs(flat.mean(axis=1)) <= N_SE * np.sqrt(np.real(np.diag(expected)) / m))
    # seeded: reproducible
    np.testing.assert_array_equal(noise, correlated_noise(np.random.default_rng(12), psi, shape, sigma))


# --------------------------------------------------------------------------- the readout trajectory
def _numerical_kx(up: float, flat: float, down: float, dwell: float, n: int, encode_nx: int,
                  step_us: float = 0.01) -> tuple[np.ndarray, float]:
    """Gadgetron's trajectory convention from the gradient waveform, numerically: the trapezoid G(t) (1 on
    the flat top) integrated on a fine grid, read at the end of each dwell t_n = delay + (n+1)·dwell of a
    window centred on the lobe, minus half the lobe's area, scaled so that the sampled area is encode_nx.
    Returns (k, k per µs on the flat top)."""
    lobe = up + flat + down
    delay = 0.5 * (lobe - n * dwell)
    t = np.linspace(0.0, lobe, int(round(lobe / step_us)) + 1)
    g = np.interp(t, [0.0, up, up + flat, lobe], [0.0, 1.0, 1.0, 0.0])
    area = cumulative_trapezoid(g, t, initial=0.0)  # exact for a piecewise-linear G with its corners on the grid

    def area_at(time: np.ndarray | float) -> np.ndarray:
        return np.interp(time, t, area)

    sampled = float(area_at(delay + n * dwell) - area_at(delay))
    t_n = delay + (np.arange(n) + 1.0) * dwell
    scale = encode_nx / sampled
    return (area_at(t_n) - 0.5 * area[-1]) * scale, scale


#: Numerical trajectory vs the closed form: the grid's round-off and np.interp between grid points
#: (the sample times are on the 0.01 µs grid, so the interpolation is exact up to round-off).
KX_ATOL = 1e-8

READOUTS = {
    "flat-top 2x": dict(encode_nx=32),
    "flat-top 2x, 64": dict(encode_nx=64),
    "flat-top 1x": dict(encode_nx=24, oversampling=1, dwell_time_us=4.0, ramp_us=60.0),
    "ramp-sampled": dict(encode_nx=32, ramp_sampling=True),
    "ramp-sampled, window from the ramp": dict(encode_nx=32, ramp_sampling=True, dwell_time_us=3.0),
    "ramp-sampled, 12": dict(encode_nx=12, ramp_us=20.0, ramp_sampling=True),
}


@pytest.mark.parametrize("name", list(READOUTS))
def test_kx_matches_the_integrated_trapezoid(name) -> None:
    kwargs = dict(READOUTS[name])
    nx = kwargs.pop("encode_nx")
    ro = EpiReadout.design(nx, **kwargs)
    expected, scale = _numerical_kx(ro.ramp_up_us, ro.flat_top_us, ro.ramp_down_us, ro.dwell_time_us, ro.n_samples, nx)
    k = ro.kx()
    assert k.shape == (ro.n_samples,) and k.dtype == np.float64
    np.testing.assert_allclose(k, expected, rtol=0, atol=KX_ATOL)
    assert ro.ramp_sampling == bool(kwargs.get("ramp_sampling", False))
    assert ro.n_samples % 2 == 0
    # k = 0 exactly (EPIReconX's off-centre correction looks for traj == 0.0) at sample n/2 − 1: the lobe's centre
    assert k[ro.n_samples // 2 - 1] == 0.0
    np.testing.assert_allclose(ro.k_per_us(), scale, rtol=1e-12)


@pytest.mark.parametrize("nx", [32, 64])
def test_flat_top_readout_is_uniform(nx) -> None:
    ro = EpiReadout.design(nx)
    n = ro.n_samples
    assert n == 2 * nx and not ro.ramp_sampling
    k = ro.kx()
    # EPIReconX's flat-top trajectory: (encode_nx/N)·(n + 1 − N/2)
    np.testing.assert_allclose(k, (nx / n) * (np.arange(n) + 1 - n / 2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diff(k), nx / n, rtol=0, atol=1e-12)
    assert k[n // 2 - 1] == 0.0
    assert ro.acq_delay_us == ro.ramp_up_us  # the window is the flat top
    np.testing.assert_allclose(ro.k_per_us(), nx / n / ro.dwell_time_us, rtol=1e-12)


def test_kx_uses_gadgetrons_read_area_when_the_window_is_shorter_than_the_flat_top() -> None:
    """Gadgetron's EPIReconXObjectTrapezoid computes the sampled ('read') area as the lobe's area minus
    ½·delay²/ramp_up and ½·(time after the window)²/ramp_down, which is the sampled area only when the
    window starts and ends on the ramps or at their ends. For a window inside a longer flat top (never
    made by ``design``) the simulator must still use Gadgetron's number, or the reconstruction would
    stretch the image: pin that."""
    ro = EpiReadout(32, 64, 2.5, ramp_up_us=100.0, flat_top_us=200.0, ramp_down_us=100.0)
    delay, read = 0.5 * (400.0 - 160.0), 160.0
    read_area = 0.5 * 100 + 200 + 0.5 * 100 - 0.5 * delay ** 2 / 100 - 0.5 * (400 - delay - read) ** 2 / 100
    t = (np.arange(64) + 1.0) * 2.5 + delay
    expected = (0.5 * 100 + (t - 100) - 0.5 * 300.0) * (32 / read_area)
    np.testing.assert_allclose(ro.kx(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nx", [24, 32, 64, 128, 256])
@pytest.mark.parametrize("ramp_sampling", [False, True])
def test_default_designs_have_whole_microsecond_header_times(nx, ramp_sampling) -> None:
    """The header holds rampUpTime, flatTopTime, rampDownTime and acqDelayTime as integers (µs), and
    EPIReconX recomputes the trajectory from them: the default designs must be exact in whole µs."""
    ro = EpiReadout.design(nx, ramp_sampling=ramp_sampling)
    for value in (ro.ramp_up_us, ro.flat_top_us, ro.ramp_down_us, ro.acq_delay_us):
        assert float(value).is_integer(), ro
    assert ro.dwell_time_us == 2.5 and ro.ramp_up_us == ro.ramp_down_us == 100.0
    assert ro.lobe_us == ro.echo_spacing_us == ro.ramp_up_us + ro.flat_top_us + ro.ramp_down_us
    if ramp_sampling:
        # the same gradient area as the flat-top design (so the same encode_nx at the same amplitude)
        flat = EpiReadout.design(nx)
        assert 0.5 * ro.ramp_up_us + ro.flat_top_us + 0.5 * ro.ramp_down_us == flat.flat_top_us
        assert ro.n_samples > flat.n_samples and ro.n_samples * ro.dwell_time_us <= ro.lobe_us
    else:
        assert (ro.n_samples, ro.flat_top_us, ro.acq_delay_us) == (2 * nx, 2 * nx * 2.5, 100.0)


@pytest.mark.parametrize("args, kwargs, message", [
    ((1, 4, 2.5), {}, "encode_nx"), ((8, True, 2.5), {}, "n_samples"), ((8, 16.0, 2.5), {}, "n_samples"),
    ((8, 16, 0.0), {}, "dwell_time_us"), ((8, 16, math.nan), {}, "dwell_time_us"),
    ((8, 16, 2.5), dict(ramp_up_us=-1.0), "ramp_up_us"),
    ((8, 16, 2.5), dict(flat_top_us=30.0), "longer than the readout lobe"),
])
def test_epi_readout_refuses_bad_fields(args, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EpiReadout(*args, **kwargs)
    assert EpiReadout(8, 16, 2.5).flat_top_us == 40.0  # 0: the window's length
    with pytest.raises(ValueError, match="no flat top"):
        EpiReadout.design(8, ramp_us=100.0, ramp_sampling=True)


# --------------------------------------------------------------------------- encoding
def _brute_force_samples(image: np.ndarray, rows: list[int], reverse: list[bool], k: np.ndarray,
                         ghost: EpiGhost = EpiGhost()) -> np.ndarray:
    """The module docstring's model as an explicit double sum over the pixels (q, p) of each coil:
    s = Σ_q Σ_p m[q, p]·exp(−2πi·kx·(p − nx/2)/nx)·exp(−2πi·ky·(q − ny/2)/ny) / √(nx·ny), with
    ky = row − ny/2; a positive line samples kx = k_n + shift/2 with phase +φ/2, a reverse one
    kx = −k_n − shift/2 with phase −φ/2. Returns (lines, coils, samples)."""
    n_coils, ny, nx = image.shape
    q = np.arange(ny)[:, None] - ny / 2
    p = np.arange(nx)[None, :] - nx / 2
    out = np.zeros((len(rows), n_coils, k.size), dtype=np.complex128)
    for line, (row, rev) in enumerate(zip(rows, reverse)):
        sign = -1.0 if rev else 1.0
        ky = row - ny / 2
        for n, kn in enumerate(k):
            kx = sign * (kn + 0.5 * ghost.shift)
            kernel = np.exp(-2j * np.pi * (kx * p / nx + ky * q / ny)) / math.sqrt(nx * ny)
            for c in range(n_coils):
                out[line, c, n] = np.sum(image[c] * kernel) * np.exp(0.5j * sign * ghost.phase_rad)
    return out


@pytest.fixture(scope="module")
def coil_image() -> np.ndarray:
    rng = np.random.default_rng(2024)
    return rng.standard_normal((3, 8, 12)) + 1j * rng.standard_normal((3, 8, 12))


@pytest.mark.parametrize("ghost", [EpiGhost(), EpiGhost(shift=0.3, phase_rad=0.2),
                                   EpiGhost(shift=-1.25, phase_rad=-2.0)])
@pytest.mark.parametrize("design", [dict(), dict(ramp_us=20.0, ramp_sampling=True)])
def test_encode_lines_matches_a_brute_force_dtft(coil_image, ghost, design) -> None:
    ro = EpiReadout.design(12, **design)
    rows, reverse = [0, 3, 4, 4, 7, 5], [False, True, False, True, False, False]
    got = encode_lines(phase_encode(coil_image), np.array(rows), np.array(reverse), ro, ghost)
    assert got.shape == (6, 3, ro.n_samples) and got.dtype == np.complex64
    expected = _brute_force_samples(coil_image, rows, reverse, ro.kx(), ghost)
    np.testing.assert_allclose(got, expected, rtol=0, atol=COMPLEX64_ATOL * np.abs(expected).max())
    exact = encode_lines(phase_encode(coil_image), np.array(rows), np.array(reverse), ro, ghost, dtype=np.complex128)
    np.testing.assert_allclose(exact, expected, rtol=0, atol=FLOAT64_ATOL)
    # a reverse line is stored in acquisition order: sample n at −k_n, i.e. (no ghost) the positive
    # line's samples mirrored in k — not merely the positive line reversed in time
    if ghost == EpiGhost():
        assert not np.allclose(exact[3], exact[2][:, ::-1])


def test_phase_encode_and_readout_operator_match_the_docstring_convention(coil_image) -> None:
    ny, nx = coil_image.shape[1:]
    hybrid = phase_encode(coil_image)
    q = np.arange(ny) - ny / 2
    for j in range(ny):  # row j holds ky = j − ny/2
        kernel = np.exp(-2j * np.pi * (j - ny / 2) * q / ny) / math.sqrt(ny)
        np.testing.assert_allclose(hybrid[:, j, :], np.einsum("cqp,q->cp", coil_image, kernel), atol=FLOAT64_ATOL)
    k = np.array([-6.0, -0.3, 0.0, 2.5, 5.75])
    op = readout_operator(k, nx)
    p = np.arange(nx) - nx / 2
    for a, kk in enumerate(k):
        np.testing.assert_allclose(op[a], np.exp(-2j * np.pi * kk * p / nx) / math.sqrt(nx), atol=FLOAT64_ATOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_flat_top_oversampled_readout_round_trip(reverse) -> None:
    """Samples of a known row on the 2× oversampled flat-top readout, reconstructed by least squares
    with an independent DTFT matrix at EPIReconX's positions ±(nx/N)(n + 1 − N/2), give the row back."""
    rng = np.random.default_rng(5)
    nx, ny, row = 16, 6, 2
    ro = EpiReadout.design(nx)
    n = ro.n_samples
    hybrid = np.zeros((1, ny, nx), dtype=np.complex128)
    truth = rng.standard_normal(nx) + 1j * rng.standard_normal(nx)
    hybrid[0, row] = truth
    samples = encode_lines(hybrid, np.array([row]), np.array([reverse]), ro)[0, 0]
    k = (nx / n) * (np.arange(n) + 1 - n / 2) * (-1.0 if reverse else 1.0)
    a = np.exp(-2j * np.pi * np.outer(k, np.arange(nx) - nx / 2) / nx) / math.sqrt(nx)
    got, residual, rank, _ = np.linalg.lstsq(a, samples.astype(np.complex128), rcond=None)
    assert rank == nx
    # complex64 samples: relative 1e-4 leaves a wide margin over float32 rounding (≈ 1e-7)
    np.testing.assert_allclose(got, truth, rtol=0, atol=1e-4 * np.abs(truth).max())
    # the model must be exact: the least-squares residual is at the rounding level
    assert float(np.sum(residual)) <= 1e-8 * float(np.sum(np.abs(samples) ** 2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(hybrid=np.zeros((4, 12))), "hybrid"), (dict(hybrid=np.zeros((1, 4, 10))), "encode_nx"),
    (dict(reverse=np.array([True])), "rows and reverse"), (dict(rows=np.zeros((2, 1), int)), "rows and reverse"),
])
def test_encode_lines_refuses_bad_shapes(kwargs, message) -> None:
    args = dict(hybrid=np.zeros((1, 4, 12)), rows=np.array([0, 1]), reverse=np.array([False, True])) | kwargs
    with pytest.raises(ValueError, match=message):
        encode_lines(args["hybrid"], args["rows"], args["reverse"], EpiReadout.design(12))


# --------------------------------------------------------------------------- line patterns
@pytest.mark.parametrize("ny", [32, 30, 64, 8])
@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_undersampled_lines(ny, r) -> None:
    lines = undersampled_lines(ny, r)
    centre = ny // 2
    expected = sorted(set(range(centre, -1, -r)) | set(range(centre, ny, r)))  # every R-th line through the centre
    assert lines.tolist() == expected
    assert centre in lines and lines.min() >= 0 and lines.max() < ny
    assert lines.size == len([e for e in range(ny) if (e - centre) % r == 0])
    assert np.all(np.diff(lines) == r)


def test_undersampled_lines_refuse_no_acceleration() -> None:
    for bad in (0, -2):
        with pytest.raises(ValueError, match="acceleration"):
            undersampled_lines(32, bad)


@pytest.mark.parametrize("ny, n", [(32, 24), (32, 5), (32, 1), (32, 2), (32, 32), (30, 12), (64, 36)])
def test_calibration_lines(ny, n) -> None:
    lines = calibration_lines(ny, n)
    centre = ny // 2
    assert lines.size == n and np.all(np.diff(lines) == 1)  # a contiguous block of n lines
    assert centre in lines and lines.min() >= 0 and lines.max() < ny
    below, above = int(np.sum(lines < centre)), int(np.sum(lines > centre))
    assert below == n // 2 and above == n - 1 - n // 2  # centred; an even block has ky = −n/2 … n/2 − 1


def test_calibration_lines_refuse_bad_counts() -> None:
    for bad in (0, 33, -1):
        with pytest.raises(ValueError, match="n_lines"):
            calibration_lines(32, bad)
