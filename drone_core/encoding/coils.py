"""Receive coil arrays: smooth complex coil sensitivities and the noise covariance of the channels.

Model (2-D, in the slice plane): each element of an ``n_coils`` array is a straight conductor parallel
to the slice normal on a circle around the object (a ring of line currents, the field model of a
"birdcage-like" head array). A line current at ``(x_c, y_c)`` makes the azimuthal field
B ∝ (−sin φ, cos φ)/r around it (Biot–Savart), so its receive sensitivity
B₁⁻ ∝ B_x − i·B_y = −i·e^{−iφ}/r, with r the distance to the conductor and φ the angle seen from it.
The sensitivities are then divided by their root-sum-of-squares, so that a fully sampled, optimally
combined image equals the object (as a prescan normalisation makes it on a scanner): what a coil sees
is smooth in magnitude (1/r) and in phase (e^{−iφ}), and no two coils are alike.

The noise of the channels is complex Gaussian with covariance Ψ (per real and imaginary part
σ²·Ψ/…): unit diagonal scaled by per-channel gains, and a correlation that falls off with the
distance between elements along the ring — the mutual inductance of neighbours. Gadgetron's
``NoiseAdjustGadget`` estimates Ψ from the noise scan and prewhitens the data with it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["coil_sensitivities", "noise_covariance", "correlated_noise"]


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def coil_sensitivities(n_coils: int, matrix: tuple[int, int], fov_mm: tuple[float, float], *,
                       ring_radius_mm: float | None = None, normalise: bool = True) -> np.ndarray:
    """Sensitivities of a ring of ``n_coils`` line-current receive elements.

    Args:
        n_coils: elements, ≥ 1, evenly spaced on the ring (the first at the patient's left, 0°).
        matrix: ``(ny, nx)`` pixels of the field of view.
        fov_mm: ``(fov_y, fov_x)`` mm.
        ring_radius_mm: radius of the ring; default 0.75 × the larger FOV (just outside a head on the
            usual 256 mm field of view; must lie outside the field of view's inscribed circle).
        normalise: divide by the root-sum-of-squares over the coils (module docstring).

    Returns:
        complex128 ``(n_coils, ny, nx)``; pixel ``(j, i)`` is centred at
        ``((i − nx/2 + 0.5)·dx, (j − ny/2 + 0.5)·dy)`` mm. With ``normalise``, Σ|S|² = 1 at every pixel.
    """
    n = _check_positive_int("n_coils", n_coils)
    ny, nx = (_check_positive_int("matrix", v) for v in matrix)
    fy, fx = (float(v) for v in fov_mm)
    if not (math.isfinite(fy) and math.isfinite(fx) and fy > 0 and fx > 0):
        raise ValueError(f"fov_mm: expected two positive numbers (y, x) in mm, got {fov_mm!r}")
    radius = 0.75 * max(fy, fx) if ring_radius_mm is None else float(ring_radius_mm)
    if not (math.isfinite(radius) and radius > 0.5 * max(fy, fx)):
        raise ValueError(f"ring_radius_mm: expected a radius outside the field of view's inscribed circle (> "
                         f"{0.5 * max(fy, fx):.4g} mm), got {ring_radius_mm!r}")
    y = (np.arange(ny) - ny / 2 + 0.5) * (fy / ny)
    x = (np.arange(nx) - nx / 2 + 0.5) * (fx / nx)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    angles = 2 * np.pi * np.arange(n) / n
    dx = xx[None] - radius * np.cos(angles)[:, None, None]
    dy = yy[None] - radius * np.sin(angles)[:, None, None]
    r = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx)
    sens = -1j * np.exp(-1j * phi) * (radius / r)
    if normalise:
        sens = sens / np.sqrt(np.sum(np.abs(sens) ** 2, axis=0))
    return sens


def noise_covariance(n_coils: int, *, neighbour_correlation: float = 0.2, gain_spread: float = 0.15,
                     seed: int | None = 0) -> np.ndarray:
    """A plausible receive-noise covariance of a ring array, unit mean diagonal.

    Args:
        n_coils: channels.
        neighbour_correlation: correlation coefficient of adjacent elements; it falls off as
            ρ^d with the distance d (in elements, around the ring). In [0, 0.5).
        gain_spread: relative spread of the channels' noise amplitudes (uniform in ±gain_spread).
        seed: for the gains.

    Returns:
        complex128 Hermitian positive-definite ``(n_coils, n_coils)`` Ψ with mean diagonal 1.
    """
    n = _check_positive_int("n_coils", n_coils)
    rho = float(neighbour_correlation)
    if not 0 <= rho < 0.5:
        raise ValueError(f"neighbour_correlation: expected a value in [0, 0.5), got {neighbour_correlation!r}")
    spread = float(gain_spread)
    if not 0 <= spread < 1:
        raise ValueError(f"gain_spread: expected a value in [0, 1), got {gain_spread!r}")
    idx = np.arange(n)
    d = np.abs(idx[:, None] - idx[None, :])
    d = np.minimum(d, n - d)
    corr = rho ** d.astype(float)
    # a small phase on the correlations (the coupling is not purely resistive)
    phase = np.exp(1j * 0.3 * np.sign(idx[:, None] - idx[None, :]) * (d > 0))
    corr = corr * phase
    gains = 1 + spread * np.random.default_rng(seed).uniform(-1, 1, n)
    psi = gains[:, None] * corr * gains[None, :]
    psi = 0.5 * (psi + psi.conj().T)
    return psi / np.mean(np.real(np.diag(psi)))


def correlated_noise(rng: np.random.Generator, covariance: np.ndarray, shape: tuple[int, ...],
                     sigma: float) -> np.ndarray:
    """Complex Gaussian noise, channels first: ``(n_coils,) + shape``, E[n nᴴ] = 2σ²·Ψ.

    Args:
        rng: the random generator.
        covariance: Ψ ``(n_coils, n_coils)``, Hermitian positive definite.
        shape: the shape of each channel's samples.
        sigma: standard deviation per real channel for a channel of Ψ = 1.
    """
    psi = np.asarray(covariance)
    n = psi.shape[0]
    chol = np.linalg.cholesky(psi)
    white = rng.standard_normal((2, n) + tuple(shape))
    z = (white[0] + 1j * white[1]).reshape(n, -1)
    return (sigma * (chol @ z)).reshape((n,) + tuple(shape))
