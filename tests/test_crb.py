"""Tests of drone_core.crb: Fisher information, Jacobian, the bound itself (Monte Carlo), the cost.

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
                            signal_jacobian)
from drone_core.epg import simulate
from drone_core.schedule import Schedule

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
