"""Tests of drone_core.crb: Fisher information, Jacobian, the bound itself (Monte Carlo), the cost; with the
slice profile and B1 as a fourth unknown.

The Monte-Carlo test is the one that checks the *meaning* of the numbers: an (asymptotically)
efficient estimator — nonlinear least squares, i.e. maximum likelihood under white Gaussian noise —
fitted to many noisy signals at high SNR must show a sample variance equal to the CRB.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from drone_core.crb import (BRAIN_TISSUES_1P5T, crb, crb_cost, crb_cost_tensors, fisher_information,
                            schedule_profile, signal_jacobian)
from drone_core.epg import simulate
from drone_core.excitation import TABLE_MAX_DEG, TABLE_STEP_DEG, Excitation, ProfileTable
from drone_core.schedule import Schedule, default_schedule

# ---------------------------------------------------------------------------- seeds and tolerances
SCHEDULE_SEED = 1234
NOISE_SEED = 98765
JACOBIAN_SEED = 42

#: Monte-Carlo tissue (GM of the paper's Table 1) and its proton density.
MC_T1_MS, MC_T2_MS, MC_M0 = 1110.0, 96.0, 1.0
#: σ is chosen so that the *larger* of √CRB(T1)/T1, √CRB(T2)/T2 is 2 %: small enough that the
#: least-squares estimator is effectively unbiased and efficient (its bias and excess variance are
#: O(relative std²) ≈ 0.04 %), large enough that float64 fit tolerances are irrelevant. (T2 is the
#: worse-determined parameter: ≈ 10× T1's relative bound for random schedules, so 2 % on T2 also
#: bounds T1 well below 1 %.)
MC_TARGET_RELATIVE_STD = 0.02
#: Relative step of the fit's forward-difference Jacobian (≈ √eps_float64): the Jacobian only steers
#: Gauss–Newton; its O(1e-8) error moves the converged estimate by far less than 1e-4 of √CRB.
FIT_FD_REL_STEP = 1.5e-8
#: Number of noisy draws: default run (~7 s) and the slow run.
MC_DRAWS_FAST = 600
MC_DRAWS_SLOW = 4000
#: The sample variance s² of K i.i.d. Gaussian estimates with variance v satisfies
#: (K − 1)s²/v ~ χ²(K − 1), so s²/v has mean 1 and standard deviation √(2/(K − 1)). We accept
#: |s²/CRB − 1| ≤ VARIANCE_NSIGMA·√(2/(K − 1)); 4 standard deviations ⇒ a false alarm ≈ 6e-5 per
#: comparison (the draws are seeded, so the outcome is in any case reproducible).
VARIANCE_NSIGMA = 4.0
#: Unbiasedness: |mean − truth| ≤ BIAS_NSIGMA·√(CRB/K) (the sample mean's own standard deviation).
BIAS_NSIGMA = 4.0

#: fisher_information vs a hand/numpy computation: same float64 sums in another order.
FISHER_RTOL = 1e-12
#: Central finite differences with step h = FD_REL_STEP·θ: truncation error ∝ h² ≈ 1e-8
#: relative, round-off ≈ 1e-16/1e-4 = 1e-12; so 1e-6 relative to the column's largest entry.
FD_REL_STEP = 1e-4
FD_RTOL = 1e-6
#: CRB matrix from a finite-difference Jacobian: F⁻¹ amplifies the 1e-8-ish Jacobian error by the
#: condition number of F (up to ~1e4 here), so 1e-3 relative.
FD_CRB_RTOL = 1e-3
#: Two float64 paths through the same formulas (crb vs crb_cost, scaling identities): a few ulps
#: times the conditioning of a 3×3 inverse.
SAME_MATH_RTOL = 1e-9
#: Adding a parameter can only grow the bound (Schur complement); allow float64 noise only.
NESTING_RTOL = 1e-10
#: Gradient of the design cost w.r.t. flip angles vs central differences with step 1e-3°:
#: truncation ≈ (1e-3 · π/180)² relative to the curvature scale, far below 1e-6 of |∇|∞.
GRAD_FD_STEP_DEG = 1e-3
GRAD_RTOL = 1e-6

TE_MS, TI_MS = 23.0, 19.0
N_FRAMES = 25


def _random_schedule(seed: int = SCHEDULE_SEED) -> Schedule:
    """25 frames, TE 23, TI 19, FA 5–90°, TR 45–250 ms (the design space of DESIGN.md)."""
    rng = np.random.default_rng(seed)
    return Schedule(f"random-{seed}", list(rng.uniform(5.0, 90.0, N_FRAMES)),
                    list(rng.uniform(45.0, 250.0, N_FRAMES)), TE_MS, TI_MS, 1.0)


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return _random_schedule()


def _t(x, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def _tissues() -> tuple[np.ndarray, np.ndarray]:
    t1 = np.array([v[0] for v in BRAIN_TISSUES_1P5T.values()])
    t2 = np.array([v[1] for v in BRAIN_TISSUES_1P5T.values()])
    return t1, t2


# ---------------------------------------------------------------------------- (a) Monte Carlo
def _monte_carlo(schedule: Schedule, n_draws: int) -> None:
    truth = np.array([MC_M0, MC_T1_MS, MC_T2_MS])
    unit = crb(schedule, [MC_T1_MS], [MC_T2_MS], m0=MC_M0, sigma=1.0)
    sigma = MC_TARGET_RELATIVE_STD / float(unit.relative_std[0, 1:].max()) * MC_M0
    bound = crb(schedule, [MC_T1_MS], [MC_T2_MS], m0=MC_M0, sigma=sigma)
    rel = bound.std[0] / truth
    assert max(rel[1], rel[2]) == pytest.approx(MC_TARGET_RELATIVE_STD, rel=1e-9)

    def model(p: np.ndarray) -> np.ndarray:
        return p[0] * simulate(schedule, np.array([p[1]]), np.array([p[2]]), dtype=torch.float64)[0]

    def jacobian(p: np.ndarray, *_: object) -> np.ndarray:
        # Forward differences in T1 and T2 from one batched simulate call (3 tissues); exact in M0.
        h1, h2 = FIT_FD_REL_STEP * p[1], FIT_FD_REL_STEP * p[2]
        f = simulate(schedule, np.array([p[1], p[1] + h1, p[1]]), np.array([p[2], p[2], p[2] + h2]),
                     dtype=torch.float64)
        jac = np.stack([f[0], p[0] * (f[1] - f[0]) / h1, p[0] * (f[2] - f[0]) / h2], axis=1)
        return np.concatenate([jac.real, jac.imag])

    clean = model(truth)
    rng = np.random.default_rng(NOISE_SEED)
    estimates = np.empty((n_draws, 3))
    for k in range(n_draws):
        noisy = clean + sigma * (rng.standard_normal(N_FRAMES) + 1j * rng.standard_normal(N_FRAMES))

        def residual(p: np.ndarray, y: np.ndarray = noisy) -> np.ndarray:
            d = model(p) - y
            return np.concatenate([d.real, d.imag])

        # Start at the truth (we test the estimator's spread, not its basin of attraction);
        # x_scale puts M0 (~1) and T1/T2 (~100–1000 ms) on the same footing.
        fit = least_squares(residual, truth, jac=jacobian, x_scale=truth, method="lm")
        assert fit.status > 0, fit.message
        estimates[k] = fit.x

    variance = estimates.var(axis=0, ddof=1)
    tol = VARIANCE_NSIGMA * math.sqrt(2.0 / (n_draws - 1))
    ratio = variance / np.diag(bound.covariance[0])
    for i, name in enumerate(bound.params):
        assert abs(ratio[i] - 1.0) <= tol, f"{name}: sample variance / CRB = {ratio[i]:.3f}, tolerance ±{tol:.3f}"
        bias = estimates[:, i].mean() - truth[i]
        assert abs(bias) <= BIAS_NSIGMA * bound.std[0, i] / math.sqrt(n_draws), f"{name}: bias {bias:.3g}"


def test_crb_matches_monte_carlo_least_squares(schedule: Schedule) -> None:
    _monte_carlo(schedule, MC_DRAWS_FAST)


@pytest.mark.slow
def test_crb_matches_monte_carlo_least_squares_many_draws(schedule: Schedule) -> None:
    _monte_carlo(schedule, MC_DRAWS_SLOW)


# ---------------------------------------------------------------------------- (b) Fisher information
def test_fisher_information_hand_examples() -> None:
    # One parameter: |1 + 2i|² + |3 − i|² = 5 + 10 = 15.
    jac = torch.tensor([[[1 + 2j], [3 - 1j]]], dtype=torch.complex128)
    np.testing.assert_allclose(fisher_information(jac, sigma=0.5).numpy(), [[[15.0 / 0.25]]], rtol=FISHER_RTOL)
    # Two parameters: a = (1+i, 2i), b = (1, 1−i): |a|² = 6, |b|² = 3,
    # aᴴb = (1−i)·1 + (−2i)(1−i) = 1 − i − 2i − 2 = −1 − 3i, so Re = −1 (the −3i is dropped).
    jac = torch.tensor([[[1 + 1j, 1 + 0j], [2j, 1 - 1j]]], dtype=torch.complex128)
    np.testing.assert_allclose(fisher_information(jac, sigma=2.0).numpy(),
                               [[[6.0 / 4, -1.0 / 4], [-1.0 / 4, 3.0 / 4]]], rtol=FISHER_RTOL)


def test_fisher_information_random_jacobian() -> None:
    rng = np.random.default_rng(JACOBIAN_SEED)
    n, n_frames, p, sigma = 3, 11, 4, 0.37
    j = rng.standard_normal((n, n_frames, p)) + 1j * rng.standard_normal((n, n_frames, p))
    expected = np.empty((n, p, p))
    for t in range(n):
        for a in range(p):
            for b in range(p):
                expected[t, a, b] = sum((np.conj(j[t, f, a]) * j[t, f, b]).real for f in range(n_frames)) / sigma**2
    got = fisher_information(torch.as_tensor(j), sigma=sigma).numpy()
    assert got.shape == (n, p, p)
    np.testing.assert_allclose(got, expected, rtol=FISHER_RTOL)
    np.testing.assert_allclose(got, np.swapaxes(got, 1, 2), rtol=FISHER_RTOL)  # symmetric


# ---------------------------------------------------------------------------- (c) Jacobian = finite differences
def test_signal_jacobian_matches_central_differences(schedule: Schedule) -> None:
    t1, t2 = _tissues()
    b1 = np.array([0.9, 1.0, 1.1])
    m0 = 2.5
    fa, tr = (torch.as_tensor(a) for a in schedule.arrays())
    jac = signal_jacobian(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency,
                          _t(t1), _t(t2), _t(b1), m0=m0, include_b1=True).numpy()
    assert jac.shape == (3, N_FRAMES, 4) and jac.dtype == np.complex128

    def sim(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return simulate(schedule, a, b, c, dtype=torch.float64)

    fd = np.empty_like(jac)
    fd[..., 0] = sim(t1, t2, b1)  # ∂(M0 f)/∂M0 = f
    for col, theta in ((1, t1), (2, t2), (3, b1)):
        h = FD_REL_STEP * theta
        plus = [t1, t2, b1]
        minus = [t1, t2, b1]
        plus[col - 1] = theta + h
        minus[col - 1] = theta - h
        fd[..., col] = m0 * (sim(*plus) - sim(*minus)) / (2.0 * h[:, None])
    for col in range(4):
        scale = np.abs(fd[..., col]).max(axis=1, keepdims=True)
        err = np.abs(jac[..., col] - fd[..., col]) / scale
        assert err.max() <= FD_RTOL, f"column {col}: max relative error {err.max():.2e}"


def test_crb_uses_that_jacobian(schedule: Schedule) -> None:
    t1, t2 = _tissues()
    sigma, m0 = 0.05, 1.7
    result = crb(schedule, t1, t2, m0=m0, sigma=sigma)
    f = simulate(schedule, t1, t2, dtype=torch.float64)
    cols = [f]
    for theta_index in (0, 1):
        theta = (t1, t2)[theta_index]
        h = FD_REL_STEP * theta
        args_p = [t1.copy(), t2.copy()]
        args_m = [t1.copy(), t2.copy()]
        args_p[theta_index] = theta + h
        args_m[theta_index] = theta - h
        cols.append(m0 * (simulate(schedule, *args_p, dtype=torch.float64)
                          - simulate(schedule, *args_m, dtype=torch.float64)) / (2 * h[:, None]))
    j = np.stack(cols, axis=-1)
    fisher = np.einsum("nfp,nfq->npq", j.conj(), j).real / sigma**2
    np.testing.assert_allclose(result.covariance, np.linalg.inv(fisher), rtol=FD_CRB_RTOL)


# ---------------------------------------------------------------------------- (d) cost, scaling, nesting
def test_crb_result_layout(schedule: Schedule) -> None:
    t1, t2 = _tissues()
    r = crb(schedule, t1, t2)
    assert r.params == ("m0", "t1_ms", "t2_ms")
    assert r.covariance.shape == (3, 3, 3) and r.std.shape == (3, 3) and r.relative_std.shape == (3, 3)
    np.testing.assert_allclose(r.covariance, np.swapaxes(r.covariance, 1, 2), rtol=SAME_MATH_RTOL)
    assert np.all(np.linalg.eigvalsh(r.covariance) > 0)  # positive definite
    np.testing.assert_allclose(r.std, np.sqrt(np.diagonal(r.covariance, axis1=1, axis2=2)), rtol=SAME_MATH_RTOL)
    rb = crb(schedule, t1, t2, include_b1=True)
    assert rb.params == ("m0", "t1_ms", "t2_ms", "b1") and rb.covariance.shape == (3, 4, 4)
    scalar = crb(schedule, 1110.0, 96.0)
    assert scalar.covariance.shape == (1, 3, 3)


def test_crb_cost_is_sum_of_crb(schedule: Schedule) -> None:
    t1, t2 = _tissues()
    r = crb(schedule, t1, t2, m0=1.0, sigma=1.0)
    expected = float(np.sum(r.covariance[:, 1, 1] / t1**2 + r.covariance[:, 2, 2] / t2**2))
    assert crb_cost(schedule) == pytest.approx(expected, rel=SAME_MATH_RTOL)
    assert crb_cost(schedule, BRAIN_TISSUES_1P5T) == pytest.approx(expected, rel=SAME_MATH_RTOL)
    # A custom tissue set: one tissue.
    one = crb(schedule, [t1[0]], [t2[0]])
    only_wm = float(one.covariance[0, 1, 1] / t1[0] ** 2 + one.covariance[0, 2, 2] / t2[0] ** 2)
    assert crb_cost(schedule, {"WM": (t1[0], t2[0])}) == pytest.approx(only_wm, rel=SAME_MATH_RTOL)


@pytest.mark.parametrize("sigma,m0", [(0.3, 2.0), (4.0, 0.5), (0.01, 0.01)])
def test_crb_scaling_with_sigma_and_m0(schedule: Schedule, sigma: float, m0: float) -> None:
    t1, t2 = _tissues()
    ref = crb(schedule, t1, t2, m0=1.0, sigma=1.0)
    r = crb(schedule, t1, t2, m0=m0, sigma=sigma)
    # std(M0) ∝ σ; std(T1), std(T2) ∝ σ/M0.
    np.testing.assert_allclose(r.std[:, 0], ref.std[:, 0] * sigma, rtol=SAME_MATH_RTOL)
    np.testing.assert_allclose(r.std[:, 1:], ref.std[:, 1:] * sigma / m0, rtol=SAME_MATH_RTOL)
    # The unit-free figure √CRB·M0/(σ·θ) does not depend on σ or M0 …
    np.testing.assert_allclose(r.relative_std, ref.relative_std, rtol=SAME_MATH_RTOL)
    # … and is what its docstring says.
    theta = np.stack([np.full(3, m0), t1, t2], axis=1)
    np.testing.assert_allclose(r.relative_std, r.std / theta * m0 / sigma, rtol=SAME_MATH_RTOL)


def test_crb_same_snr_same_relative_bounds(schedule: Schedule) -> None:
    t1, t2 = _tissues()
    a = crb(schedule, t1, t2, m0=3.0, sigma=0.06)
    b = crb(schedule, t1, t2, m0=0.5, sigma=0.01)  # same M0/σ = 50
    np.testing.assert_allclose(a.std[:, 1:], b.std[:, 1:], rtol=SAME_MATH_RTOL)
    np.testing.assert_allclose(a.std[:, 0] / 3.0, b.std[:, 0] / 0.5, rtol=SAME_MATH_RTOL)


@pytest.mark.parametrize("b1", [0.8, 1.0, 1.2])
def test_including_b1_never_lowers_t1_t2_bounds(schedule: Schedule, b1: float) -> None:
    t1, t2 = _tissues()
    without = crb(schedule, t1, t2, b1=b1)
    with_b1 = crb(schedule, t1, t2, b1=b1, include_b1=True)
    for i in (0, 1, 2):
        assert np.all(with_b1.covariance[:, i, i] >= without.covariance[:, i, i] * (1 - NESTING_RTOL))
    # The (M0, T1, T2) block of F is the same: F_with[:3, :3] = F_without.
    f_with = np.linalg.inv(with_b1.covariance)[:, :3, :3]
    np.testing.assert_allclose(f_with, np.linalg.inv(without.covariance), rtol=1e-6)


@pytest.mark.parametrize("kwargs,name", [(dict(sigma=0.0), "sigma"), (dict(sigma=-1.0), "sigma"),
                                         (dict(m0=0.0), "m0"), (dict(t2_ms=[80.0, 90.0]), "t2_ms")])
def test_crb_bad_arguments(schedule: Schedule, kwargs: dict, name: str) -> None:
    args = dict(t1_ms=[600.0, 900.0, 1200.0], t2_ms=[60.0, 70.0, 80.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        crb(schedule, **args)


# ---------------------------------------------------------------------------- (e) differentiable cost
def test_crb_cost_tensors_gradient_matches_finite_differences(schedule: Schedule) -> None:
    t1, t2 = (_t(a) for a in _tissues())
    fa0, tr = (torch.as_tensor(a) for a in schedule.arrays())
    args = (schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency, t1, t2)

    fa = fa0.clone().requires_grad_(True)
    cost = crb_cost_tensors(fa, tr, *args)
    assert cost.ndim == 0 and cost.dtype == torch.float64
    assert float(cost.detach()) == pytest.approx(crb_cost(schedule), rel=SAME_MATH_RTOL)
    (grad,) = torch.autograd.grad(cost, fa)
    assert torch.all(torch.isfinite(grad))
    scale = float(grad.abs().max())
    assert scale > 0

    def cost_at(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(crb_cost_tensors(x, tr, *args))

    h = GRAD_FD_STEP_DEG
    for i in (0, 12, N_FRAMES - 1):
        e = torch.zeros(N_FRAMES, dtype=torch.float64)
        e[i] = h
        fd = (cost_at(fa0 + e) - cost_at(fa0 - e)) / (2 * h)
        assert abs(float(grad[i]) - fd) <= GRAD_RTOL * scale, f"frame {i}: autograd {float(grad[i])}, FD {fd}"
    # A random direction checks every component at once.
    direction = torch.as_tensor(np.random.default_rng(JACOBIAN_SEED).standard_normal(N_FRAMES))
    fd_dir = (cost_at(fa0 + h * direction) - cost_at(fa0 - h * direction)) / (2 * h)
    assert abs(float(grad @ direction) - fd_dir) <= GRAD_RTOL * scale * float(direction.abs().sum())


def test_unidentifiable_tissue_gets_infinite_bound() -> None:
    # T2 = 0.01 ms: exp(−TE/T2) underflows to 0, the signal and its Jacobian vanish, F is singular.
    r = crb(_random_schedule(), [1000.0, 1000.0], [0.01, 80.0])
    assert np.isinf(r.std[0]).all()
    assert np.isfinite(r.std[1]).all()


# ---------------------------------------------------------------------------- (f) slice profile, B1 unknown
#: Excitation of the profile tests: the default schedule's pulse (Hann sinc, TBW 4).
PROFILE_EXCITATION = Excitation("sinc", 4.0, "hann")
#: Slice positions in the fast profile tests: fewer than the default 24 (cost ∝ positions); the
#: bound's formulas do not depend on the count.
PROFILE_N_POSITIONS = 8
#: A flat table θ(z) = α with weights summing to 1 is the ideal slice up to the interpolation of the rotation:
#: the normative (spinor) EPG interpolates cos θ/2 and sin θ/2 linearly between nodes 0.25° apart, an error of at
#: most (0.25°/2)²/8 = 5.9e-7 per pulse (rad²), which adds up over 25 frames to the measured 1.4e-6 of the largest
#: signal (the rotation about x interpolates θ itself, exact for a flat table: a few ulps).
FLAT_PROFILE_RTOL = 1e-5
#: The B1 column differentiates that interpolation: the slope of a linear interpolant of cos θ/2 is off by up to
#: h/2·max|f''| = 0.25°/2 · 1/4 (rad) against a slope of up to 1/2: 1.1e-3; measured 1.1e-3 of the largest value.
FLAT_PROFILE_B1_RTOL = 2e-3
#: Central differences through the profile table: θ is piecewise linear in B1·α (0.25° cells), so
#: the step must be small enough that no cell boundary falls inside ±h for most frames
#: (h·α ≈ 1e-4°: ≲ 1 % chance per frame set); truncation ∝ h² ≈ 1e-12, round-off 1e-16/1e-6 = 1e-10.
PROFILE_FD_REL_STEP = 1e-6
PROFILE_FD_RTOL = 1e-6

#: Monte Carlo with B1 as a fourth unknown, default schedule with its slice profile (the case of
#: "no B1 map"): WM at B1 0.8, i.e. off the nominal field. σ such that the largest relative bound
#: of T1, T2, B1 is 2 % (see MC_TARGET_RELATIVE_STD).
MC4_T1_MS, MC4_T2_MS, MC4_B1 = 663.0, 83.0, 0.8
#: Draws: default run (~15–30 s on 2 cores: each Gauss–Newton iteration simulates 4 × draws
#: fingerprints over 24 slice positions) and the slow run.
MC4_DRAWS_FAST = 400
MC4_DRAWS_SLOW = 4000
#: Gauss–Newton stops for a draw when every parameter moved by less than this fraction of its √CRB
#: (the spread being measured), at most MC4_MAX_ITERATIONS times. A draw whose least-squares minimum
#: sits on a cell boundary of the piecewise-linear profile table alternates around it instead; it
#: is accepted when its last step is below MC4_KINK_FRACTION of √CRB (an error of ≤ 1 % of the
#: spread, which changes the sample variance by far less than its Monte-Carlo tolerance).
MC4_STEP_FRACTION = 1e-4
MC4_KINK_FRACTION = 1e-2
MC4_MAX_ITERATIONS = 12


def _profile_schedule() -> Schedule:
    return _random_schedule().replace(excitation=PROFILE_EXCITATION)


def test_crb_without_excitation_is_exactly_the_ideal_crb() -> None:
    with_pulse = _profile_schedule()
    ideal = with_pulse.ideal()
    assert ideal.excitation is None and schedule_profile(ideal) is None
    t1, t2 = _tissues()
    for include_b1 in (False, True):
        r = crb(ideal, t1, t2, b1=[0.8, 1.0, 1.2], include_b1=include_b1)
        fa, tr = (torch.as_tensor(a) for a in ideal.arrays())
        jac = signal_jacobian(fa, tr, ideal.te_ms, ideal.ti_ms, ideal.inversion_efficiency, _t(t1), _t(t2),
                              _t([0.8, 1.0, 1.2]), include_b1=include_b1, profile=None)
        np.testing.assert_array_equal(r.covariance, torch.linalg.inv(fisher_information(jac)).numpy())
        # The pulse changes the bound (the profile is used when the schedule declares it).
        rp = crb(with_pulse, t1, t2, b1=[0.8, 1.0, 1.2], include_b1=include_b1, n_positions=PROFILE_N_POSITIONS)
        assert np.all(np.abs(rp.std[:, 1:] / r.std[:, 1:] - 1.0) > 1e-3)
    assert crb_cost(ideal) == crb_cost(ideal, b1_values=[1.0], n_positions=PROFILE_N_POSITIONS)


def test_flat_profile_table_gives_the_ideal_jacobian(schedule: Schedule) -> None:
    # θ(z) = α at every position, weights summing to 1: the slice integral is the ideal signal.
    angles = np.arange(0.0, TABLE_MAX_DEG + 0.5 * TABLE_STEP_DEG, TABLE_STEP_DEG)
    n_pos = 5
    flat = ProfileTable(PROFILE_EXCITATION, np.linspace(0.0, 1.0, n_pos), np.full(n_pos, 1.0 / n_pos),
                        np.repeat(angles[:, None], n_pos, axis=1))
    t1, t2 = _tissues()
    fa, tr = (torch.as_tensor(a) for a in schedule.arrays())
    args = (fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency, _t(t1), _t(t2),
            _t([0.75, 1.0, 1.25]))
    ideal = signal_jacobian(*args, include_b1=True).numpy()
    got = signal_jacobian(*args, include_b1=True, profile=flat).numpy()
    for col in range(4):
        scale = np.abs(ideal[..., col]).max(axis=1, keepdims=True)
        tol = FLAT_PROFILE_B1_RTOL if col == 3 else FLAT_PROFILE_RTOL
        assert np.abs(got[..., col] - ideal[..., col]).max() <= tol * scale.max(), f"column {col}"


def test_profile_jacobian_matches_central_differences() -> None:
    s = _profile_schedule()
    t1, t2 = _tissues()
    b1 = np.array([0.7, 1.0, 1.3])
    m0 = 1.3
    profile = schedule_profile(s, PROFILE_N_POSITIONS)
    assert profile is not None and profile.n_positions == PROFILE_N_POSITIONS
    fa, tr = (torch.as_tensor(a) for a in s.arrays())
    jac = signal_jacobian(fa, tr, s.te_ms, s.ti_ms, s.inversion_efficiency, _t(t1), _t(t2), _t(b1), m0=m0,
                          include_b1=True, profile=profile).numpy()

    def sim(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return simulate(s, a, b, c, dtype=torch.float64, n_positions=PROFILE_N_POSITIONS)

    fd = np.empty_like(jac)
    fd[..., 0] = sim(t1, t2, b1)
    for col, theta in ((1, t1), (2, t2), (3, b1)):
        h = PROFILE_FD_REL_STEP * theta
        plus, minus = [t1, t2, b1], [t1, t2, b1]
        plus[col - 1] = theta + h
        minus[col - 1] = theta - h
        fd[..., col] = m0 * (sim(*plus) - sim(*minus)) / (2.0 * h[:, None])
    for col in range(4):
        scale = np.abs(fd[..., col]).max(axis=1, keepdims=True)
        err = np.abs(jac[..., col] - fd[..., col]) / scale
        assert err.max() <= PROFILE_FD_RTOL, f"column {col}: max relative error {err.max():.2e}"


@pytest.mark.parametrize("b1", [0.7, 1.3])
def test_profile_b1_unknown_nests(b1: float) -> None:
    s = _profile_schedule()
    t1, t2 = _tissues()
    known = crb(s, t1, t2, b1=b1, n_positions=PROFILE_N_POSITIONS)
    unknown = crb(s, t1, t2, b1=b1, include_b1=True, n_positions=PROFILE_N_POSITIONS)
    assert unknown.params[-1] == "b1"
    for i in (0, 1, 2):
        assert np.all(unknown.covariance[:, i, i] >= known.covariance[:, i, i] * (1 - NESTING_RTOL))
    np.testing.assert_allclose(unknown.relative_std[:, 3], unknown.std[:, 3] / b1, rtol=SAME_MATH_RTOL)


def test_crb_cost_with_b1_terms_is_mean_over_b1_of_crb() -> None:
    s = _profile_schedule()
    t1, t2 = _tissues()
    b1_values, weight = (0.8, 1.0, 1.2), 2.5
    expected = 0.0
    for b in b1_values:
        r = crb(s, t1, t2, b1=b, include_b1=True, n_positions=PROFILE_N_POSITIONS)
        expected += float(np.sum(r.covariance[:, 1, 1] / t1**2 + r.covariance[:, 2, 2] / t2**2
                                 + weight * r.covariance[:, 3, 3] / b**2)) / len(b1_values)
    got = crb_cost(s, b1_values=b1_values, include_b1=True, b1_weight=weight, n_positions=PROFILE_N_POSITIONS)
    assert got == pytest.approx(expected, rel=SAME_MATH_RTOL)


@pytest.mark.parametrize("kwargs,name", [(dict(b1_weight=1.0), "b1_weight"),
                                         (dict(include_b1=True, b1_weight=-1.0), "b1_weight"),
                                         (dict(b1_values=[]), "b1_values"),
                                         (dict(b1_values=[2.5]), "b1_values")])
def test_crb_cost_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        crb_cost(_profile_schedule(), n_positions=PROFILE_N_POSITIONS, **kwargs)


def test_crb_refuses_b1_beyond_the_profile_table() -> None:
    with pytest.raises(ValueError, match="b1"):
        crb(_profile_schedule(), [663.0], [83.0], b1=2.5, n_positions=PROFILE_N_POSITIONS)


def _monte_carlo_b1(n_draws: int) -> None:
    """Batched Gauss–Newton least squares of (M0, T1, T2, B1) on noisy default-schedule fingerprints."""
    s = default_schedule()
    assert s.excitation is not None  # the case this checks: the signal with its slice profile
    truth = np.array([MC_M0, MC4_T1_MS, MC4_T2_MS, MC4_B1])
    unit = crb(s, [MC4_T1_MS], [MC4_T2_MS], b1=MC4_B1, include_b1=True)
    sigma = MC_TARGET_RELATIVE_STD / float(unit.relative_std[0, 1:].max()) * MC_M0
    bound = crb(s, [MC4_T1_MS], [MC4_T2_MS], b1=MC4_B1, include_b1=True, m0=MC_M0, sigma=sigma)
    assert bound.params == ("m0", "t1_ms", "t2_ms", "b1")

    clean = MC_M0 * simulate(s, [MC4_T1_MS], [MC4_T2_MS], [MC4_B1], dtype=torch.float64)[0]
    rng = np.random.default_rng(NOISE_SEED)
    noisy = clean[None] + sigma * (rng.standard_normal((n_draws, N_FRAMES))
                                   + 1j * rng.standard_normal((n_draws, N_FRAMES)))
    est = np.tile(truth, (n_draws, 1))  # start at the truth: we test the spread, not the basin
    active = np.arange(n_draws)
    last_step = np.zeros_like(est)
    for _ in range(MC4_MAX_ITERATIONS):
        q = est[active]
        k = len(active)
        # One simulate call: each draw at its estimate and at forward steps in T1, T2, B1
        # (finite differences, independent of the forward-mode Jacobian under test).
        probes = np.concatenate([q] + [q + np.eye(4)[j] * FIT_FD_REL_STEP * q[:, j:j + 1] for j in (1, 2, 3)])
        f = simulate(s, probes[:, 1], probes[:, 2], probes[:, 3], dtype=torch.float64).reshape(4, k, N_FRAMES)
        jac = np.stack([f[0]] + [q[:, :1] * (f[j] - f[0]) / (FIT_FD_REL_STEP * q[:, j:j + 1]) for j in (1, 2, 3)],
                       axis=-1)
        resid = noisy[active] - q[:, :1] * f[0]
        jr = np.concatenate([jac.real, jac.imag], axis=1)
        rr = np.concatenate([resid.real, resid.imag], axis=1)
        step = np.linalg.solve(np.einsum("kfp,kfq->kpq", jr, jr), np.einsum("kfp,kf->kp", jr, rr)[..., None])[..., 0]
        est[active] = q + step
        last_step[active] = step
        done = np.all(np.abs(step) <= MC4_STEP_FRACTION * bound.std[0], axis=1)
        active = active[~done]
        if active.size == 0:
            break
    stuck = np.abs(last_step[active]) / bound.std[0]
    assert stuck.size == 0 or stuck.max() <= MC4_KINK_FRACTION, f"{active.size} draws did not converge"

    variance = est.var(axis=0, ddof=1)
    tol = VARIANCE_NSIGMA * math.sqrt(2.0 / (n_draws - 1))
    ratio = variance / np.diag(bound.covariance[0])
    for i, name in enumerate(bound.params):
        assert abs(ratio[i] - 1.0) <= tol, f"{name}: sample variance / CRB = {ratio[i]:.3f}, tolerance ±{tol:.3f}"
        bias = est[:, i].mean() - truth[i]
        assert abs(bias) <= BIAS_NSIGMA * bound.std[0, i] / math.sqrt(n_draws), f"{name}: bias {bias:.3g}"


def test_crb_with_b1_unknown_matches_monte_carlo_least_squares() -> None:
    _monte_carlo_b1(MC4_DRAWS_FAST)


@pytest.mark.slow
def test_crb_with_b1_unknown_matches_monte_carlo_least_squares_many_draws() -> None:
    _monte_carlo_b1(MC4_DRAWS_SLOW)
