"""Cramér–Rao bound of (M0, T1, T2[, B1]) for an MRF schedule, from the EPG Jacobian.

For a measured complex signal ``s(θ) = M0 · f(T1, T2, B1)`` of N frames with i.i.d. Gaussian
noise of standard deviation σ per real channel, ``J = ∂s/∂θ`` (N × P), Fisher information
``F = Re(Jᴴ J)/σ²`` and ``CRB = F⁻¹``: no unbiased estimator of θ_i has a variance below
``CRB_ii``. M0 is always one of the parameters (a nuisance), otherwise the T1/T2 bounds are too
optimistic. The Jacobian is exact: forward-mode automatic differentiation through
:func:`drone_core.epg.simulate_sequence`, itself differentiable, so the bound can be optimised over
the schedule (:mod:`drone_training.schedule_design`).

Reference: Zhao et al., "Optimal experiment design for magnetic resonance fingerprinting:
Cramér–Rao bound meets spin dynamics", IEEE TMI 2019.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .epg import simulate_sequence
from .schedule import Schedule

__all__ = ["CrbResult", "signal_jacobian", "fisher_information", "crb", "crb_cost", "crb_cost_tensors",
           "BRAIN_TISSUES_1P5T"]

#: The paper's in vivo 1.5 T values (Table 1 of the DRONE paper): name → (T1 ms, T2 ms).
BRAIN_TISSUES_1P5T: dict[str, tuple[float, float]] = {
    "WM": (663.0, 83.0),
    "GM": (1110.0, 96.0),
    "CSF": (3799.0, 870.0),
}


class CrbResult(NamedTuple):
    """Bounds for n tissues.

    Attributes:
        params: parameter names in matrix order, e.g. ``("m0", "t1_ms", "t2_ms")``.
        covariance: ``(n, P, P)`` the bound matrix F⁻¹ in the parameters' units (ms², …).
        std: ``(n, P)`` √diag(F⁻¹): the smallest achievable standard deviation per parameter.
        relative_std: ``(n, P)`` ``std / |θ|``·(M0/σ) — the unit-free "√CRB·M0/(σ·T)" figure
            (the σ and M0 of the call are divided out, so it is the value at M0/σ = 1).
    """

    params: tuple[str, ...]
    covariance: np.ndarray
    std: np.ndarray
    relative_std: np.ndarray


def signal_jacobian(
    flip_angle_deg: torch.Tensor,
    tr_ms: torch.Tensor,
    te_ms: torch.Tensor | float,
    ti_ms: torch.Tensor | float,
    inversion_efficiency: torch.Tensor | float,
    t1_ms: torch.Tensor,
    t2_ms: torch.Tensor,
    b1: torch.Tensor,
    m0: torch.Tensor | float = 1.0,
    include_b1: bool = False,
) -> torch.Tensor:
    """Jacobian ``∂s/∂θ`` of ``s = M0·f(T1, T2, B1)``, θ = (M0, T1, T2[, B1]).

    Args:
        flip_angle_deg, tr_ms: ``(n_frames,)`` schedule tensors (may require grad).
        te_ms, ti_ms, inversion_efficiency: scalars.
        t1_ms, t2_ms, b1: ``(n,)`` tissue tensors (ms, ms, relative).
        m0: proton density (scalar or ``(n,)``).
        include_b1: add B1 as a fourth parameter.

    Returns:
        complex tensor ``(n, n_frames, P)``; differentiable with respect to the schedule.
    """

    def f(t1: torch.Tensor, t2: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return simulate_sequence(flip_angle_deg, tr_ms, te_ms, ti_ms, inversion_efficiency, t1, t2, b)

    base = f(t1_ms, t2_ms, b1)
    ones = torch.ones_like(t1_ms)
    zeros = torch.zeros_like(t1_ms)
    tangents = [(ones, zeros, zeros), (zeros, ones, zeros)]
    if include_b1:
        tangents.append((zeros, zeros, ones))
    m0_t = torch.as_tensor(m0, dtype=t1_ms.dtype, device=t1_ms.device)
    m0_col = m0_t[:, None] if m0_t.ndim == 1 else m0_t
    columns = [base]
    for tangent in tangents:
        # Tissues are independent, so a tangent of ones gives every tissue's own derivative.
        d = torch.func.jvp(f, (t1_ms, t2_ms, b1), tangent)[1]
        columns.append(m0_col * d)
    return torch.stack(columns, dim=-1)


def fisher_information(jacobian: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``F = Re(Jᴴ J)/σ²`` for a ``(n, n_frames, P)`` Jacobian → ``(n, P, P)``."""
    return torch.einsum("nfp,nfq->npq", jacobian.conj(), jacobian).real / sigma**2


def _schedule_tensors(schedule: Schedule, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fa, tr = schedule.arrays()
    return torch.as_tensor(fa, dtype=dtype), torch.as_tensor(tr, dtype=dtype)


def crb(
    schedule: Schedule,
    t1_ms: np.ndarray | list[float] | float,
    t2_ms: np.ndarray | list[float] | float,
    *,
    m0: float = 1.0,
    sigma: float = 1.0,
    b1: float | np.ndarray = 1.0,
    include_b1: bool = False,
) -> CrbResult:
    """Cramér–Rao bound of (M0, T1, T2[, B1]) for tissues under ``schedule`` (float64).

    Args:
        schedule: the acquisition schedule.
        t1_ms, t2_ms: ``(n,)`` tissue relaxation times, ms.
        m0: proton density of the signal model (same units as σ).
        sigma: noise standard deviation per real channel.
        b1: relative B1 of the tissues.
        include_b1: estimate B1 too (adds a parameter; bounds on T1/T2 grow).

    Returns:
        :class:`CrbResult` with ``(n, P, P)`` covariance bounds; ``inf`` for tissues whose Fisher
        matrix is singular (a parameter that the signal does not determine).
    """
    if sigma <= 0:
        raise ValueError(f"sigma: expected > 0, got {sigma}")
    if m0 <= 0:
        raise ValueError(f"m0: expected > 0, got {m0}")
    dt = torch.float64
    t1 = torch.as_tensor(np.atleast_1d(np.asarray(t1_ms, dtype=np.float64)), dtype=dt)
    t2 = torch.as_tensor(np.atleast_1d(np.asarray(t2_ms, dtype=np.float64)), dtype=dt)
    if t1.shape != t2.shape:
        raise ValueError(f"t2_ms: expected shape {tuple(t1.shape)} like t1_ms, got {tuple(t2.shape)}")
    b = torch.as_tensor(np.broadcast_to(np.asarray(b1, dtype=np.float64), t1.shape).copy(), dtype=dt)
    fa, tr = _schedule_tensors(schedule, dt)
    with torch.no_grad():
        jac = signal_jacobian(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency,
                              t1, t2, b, m0=m0, include_b1=include_b1)
        cov, info = torch.linalg.inv_ex(fisher_information(jac, sigma))
    cov_np = cov.numpy()
    # A singular Fisher matrix (e.g. T2 ≪ TE: no signal left to carry T2) means a parameter is not
    # identifiable: its bound is infinite.
    cov_np[info.numpy() != 0] = np.inf
    std = np.sqrt(np.clip(np.diagonal(cov_np, axis1=1, axis2=2), 0.0, None))
    values = [np.full(t1.shape, m0), t1.numpy(), t2.numpy()]
    params: tuple[str, ...] = ("m0", "t1_ms", "t2_ms")
    if include_b1:
        values.append(b.numpy())
        params = params + ("b1",)
    theta = np.stack(values, axis=1)
    rel = std / np.abs(theta) * (m0 / sigma)
    return CrbResult(params, cov_np, std, rel)


def crb_cost_tensors(
    flip_angle_deg: torch.Tensor,
    tr_ms: torch.Tensor,
    te_ms: float,
    ti_ms: float,
    inversion_efficiency: float,
    t1_ms: torch.Tensor,
    t2_ms: torch.Tensor,
) -> torch.Tensor:
    """Differentiable design cost Σ_tissues CRB(T1)/T1² + CRB(T2)/T2² at M0 = σ = 1, B1 = 1.

    Args:
        flip_angle_deg, tr_ms: ``(n_frames,)`` schedule tensors (usually requiring grad).
        te_ms, ti_ms, inversion_efficiency: fixed scalars.
        t1_ms, t2_ms: ``(n_tissues,)``.

    Returns:
        scalar tensor.
    """
    b1 = torch.ones_like(t1_ms)
    jac = signal_jacobian(flip_angle_deg, tr_ms, te_ms, ti_ms, inversion_efficiency, t1_ms, t2_ms, b1)
    cov = torch.linalg.inv(fisher_information(jac))
    return (cov[:, 1, 1] / t1_ms**2 + cov[:, 2, 2] / t2_ms**2).sum()


def crb_cost(schedule: Schedule, tissues: dict[str, tuple[float, float]] | None = None) -> float:
    """Σ_tissues CRB(T1)/T1² + CRB(T2)/T2² (M0 = σ = 1) of a schedule; default tissues WM/GM/CSF
    of the paper's Table 1 (:data:`BRAIN_TISSUES_1P5T`)."""
    tissues = BRAIN_TISSUES_1P5T if tissues is None else tissues
    t1 = torch.tensor([v[0] for v in tissues.values()], dtype=torch.float64)
    t2 = torch.tensor([v[1] for v in tissues.values()], dtype=torch.float64)
    fa, tr = _schedule_tensors(schedule, torch.float64)
    with torch.no_grad():
        return float(crb_cost_tensors(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency,
                                      t1, t2))
