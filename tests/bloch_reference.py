"""Independent isochromat Bloch reference for the normative DRONE signal model (``DESIGN.md``).

This is the slow, exact reference the EPG code (:mod:`drone_core.epg`) is tested against. It is
written from the physics, not from the EPG recursion: each tissue is represented by ``M``
isochromats (magnetisation vectors ``(Mx, My, Mz)``) whose only difference is the phase the
unbalanced spoiler gradient gives them in one TR, spread uniformly over one full turn,
``φ_m = 2π·m/M`` for ``m = 0 … M−1``.

Per tissue (T1, T2 in ms; B1 relative; M0 = 1):

1. at t = 0 an instantaneous inversion ``Mz → (1 − 2η)·Mz``;
2. free relaxation for TI;
3. for each frame i: a right-handed rotation about x by ``B1·α_i``
   (``y' = y cos α − z sin α``, ``z' = y sin α + z cos α``); relaxation for TE; the sample is the
   isochromat mean of ``Mx + i·My``; relaxation for ``TR_i − TE``; then each isochromat is
   rotated about z by its own phase ``φ_m`` (the spoiler gradient);
4. relaxation: ``Mx, My × exp(−t/T2)``, ``Mz → 1 − (1 − Mz)·exp(−t/T1)``.

Why the isochromat mean is exact (not an approximation) with ``M ≥ 2N + 1``: with every
isochromat rotated by the same RF and the same relaxation, the magnetisation after ``j`` spoiler
periods is a trigonometric polynomial of degree ≤ ``j`` in ``φ``; the mean over ``M`` equally
spaced phases of such a polynomial equals its continuous average (the ``k = 0`` Fourier
coefficient, which is the EPG state ``F0``) as long as no non-zero order ``|k| ≤ N`` aliases onto
0, i.e. ``M > N``. ``M ≥ 2N + 1`` (the design document's figure) leaves ample margin.

Everything is numpy float64, vectorised over tissues and isochromats.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bloch_simulate", "default_isochromats"]


def default_isochromats(n_frames: int) -> int:
    """Number of isochromats used by default: ``2·n_frames + 1`` (see the module docstring)."""
    return 2 * int(n_frames) + 1


def _relax(mx, my, mz, t_ms, t1, t2):
    """Free relaxation for ``t_ms`` (no off-resonance): returns the new ``(mx, my, mz)``."""
    e2 = np.exp(-t_ms / t2)[:, None]  # (n, 1)
    e1 = np.exp(-t_ms / t1)[:, None]
    return mx * e2, my * e2, 1.0 - (1.0 - mz) * e1


def bloch_simulate(
    flip_angle_deg,
    tr_ms,
    te_ms: float,
    ti_ms: float,
    inversion_efficiency: float,
    t1_ms,
    t2_ms,
    b1=1.0,
    n_isochromats: int | None = None,
) -> np.ndarray:
    """Isochromat Bloch simulation of the normative model.

    Args:
        flip_angle_deg: ``(n_frames,)`` nominal flip angles, degrees.
        tr_ms: ``(n_frames,)`` repetition times, ms (each > ``te_ms``).
        te_ms: echo time, ms.
        ti_ms: inversion time, ms (≥ 0).
        inversion_efficiency: η, ``Mz → (1 − 2η)·Mz`` at t = 0.
        t1_ms: ``(n,)`` T1, ms.
        t2_ms: ``(n,)`` T2, ms.
        b1: relative B1, scalar or ``(n,)``.
        n_isochromats: number of isochromats ``M``; default ``2·n_frames + 1``.

    Returns:
        complex128 ``(n, n_frames)``: the isochromat mean of ``Mx + i·My`` at TE of every frame.
    """
    alpha = np.deg2rad(np.asarray(flip_angle_deg, dtype=np.float64).reshape(-1))
    tr = np.asarray(tr_ms, dtype=np.float64).reshape(-1)
    if alpha.shape != tr.shape:
        raise ValueError(f"tr_ms: expected {alpha.shape} like flip_angle_deg, got {tr.shape}")
    t1 = np.asarray(t1_ms, dtype=np.float64).reshape(-1)
    t2 = np.asarray(t2_ms, dtype=np.float64).reshape(-1)
    if t1.shape != t2.shape:
        raise ValueError(f"t2_ms: expected {t1.shape} like t1_ms, got {t2.shape}")
    n = t1.size
    b1 = np.broadcast_to(np.asarray(b1, dtype=np.float64).reshape(-1), (n,))
    n_frames = alpha.size
    m_iso = default_isochromats(n_frames) if n_isochromats is None else int(n_isochromats)

    # Spoiler phase of each isochromat: one full turn across the ensemble per TR.
    phi = 2.0 * np.pi * np.arange(m_iso) / m_iso  # (M,)
    cos_phi, sin_phi = np.cos(phi)[None, :], np.sin(phi)[None, :]

    # Equilibrium, then the inversion and the inversion delay.
    mx = np.zeros((n, m_iso))
    my = np.zeros((n, m_iso))
    mz = np.ones((n, m_iso))
    mz = (1.0 - 2.0 * float(inversion_efficiency)) * mz
    mx, my, mz = _relax(mx, my, mz, float(ti_ms), t1, t2)

    out = np.empty((n, n_frames), dtype=np.complex128)
    for i in range(n_frames):
        # RF: right-handed rotation about x by B1·α_i (per tissue).
        a = (b1 * alpha[i])[:, None]  # (n, 1)
        ca, sa = np.cos(a), np.sin(a)
        my, mz = my * ca - mz * sa, my * sa + mz * ca
        # Relax to the echo and sample the ensemble's transverse magnetisation.
        mx, my, mz = _relax(mx, my, mz, float(te_ms), t1, t2)
        out[:, i] = np.mean(mx + 1j * my, axis=1)
        # Relax for the rest of the TR, then the spoiler: rotation about z by φ_m.
        mx, my, mz = _relax(mx, my, mz, float(tr[i] - te_ms), t1, t2)
        mx, my = mx * cos_phi - my * sin_phi, mx * sin_phi + my * cos_phi
    return out
