"""Cramér–Rao bound of (M0, T1, T2[, B1]) for an MRF schedule, from the EPG Jacobian.

For a measured complex signal ``s(θ) = M0 · f(T1, T2, B1)`` of N frames with i.i.d. Gaussian
noise of standard deviation σ per real channel, ``J = ∂s/∂θ`` (N × P), Fisher information
``F = Re(Jᴴ J)/σ²`` and ``CRB = F⁻¹``: no unbiased estimator of θ_i has a variance below
``CRB_ii``. M0 is always one of the parameters (a nuisance), otherwise the T1/T2 bounds are too
optimistic. With ``include_b1`` B1 is a fourth unknown (no B1 map: the fingerprint must carry it);
without it B1 is known (a B1 map).

The signal is the one :func:`drone_core.epg.simulate` gives: when the schedule declares an
``excitation``, the slice integral over the pulse's flip-angle profile
(:func:`drone_core.excitation.profile_table`, ``DESIGN.md`` step 5), else the ideal slice. B1
scales the pulse, so ``∂s/∂B1`` runs through the profile table.

The Jacobian is exact for the model as implemented: forward-mode automatic differentiation through
:func:`drone_core.epg.simulate_sequence`, itself differentiable, so the bound can be optimised over
the schedule (:mod:`drone_training.schedule_design`). With a profile, θ(z; B1·α) is a linear
interpolation of a spinor-simulated table (steps of 0.25°): its derivative in B1 is the slope of the
table cell, and the schedule gradient of a cost that contains ``∂s/∂B1`` does not see the table's
curvature (piecewise-linear: zero second derivative). Both are the exact derivatives of the
interpolated model that the simulation itself uses.

Reference: Zhao et al., "Optimal experiment design for magnetic resonance fingerprinting:
Cramér–Rao bound meets spin dynamics", IEEE TMI 2019.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .epg import simulate_sequence
from .excitation import DEFAULT_N_POSITIONS, TABLE_MAX_DEG, ProfileTable, profile_table
from .schedule import Schedule

__all__ = ["CrbResult", "signal_jacobian", "fisher_information", "crb", "crb_cost", "crb_cost_tensors",
           "schedule_profile", "BRAIN_TISSUES_1P5T"]

#: The paper's in vivo 1.5 T values (Table 1 of the DRONE paper): name → (T1 ms, T2 ms).
BRAIN_TISSUES_1P5T: dict[str, tuple[float, float]] = {
    "WM": (663.0, 83.0),
    "GM": (1110.0, 96.0),
    "CSF": (3799.0, 870.0),
}


class CrbResult(NamedTuple):
    """Bounds for n tissues.

    Attributes:
        params: parameter names in matrix order, e.g. ``("m0", "t1_ms", "t2_ms")`` or
            ``("m0", "t1_ms", "t2_ms", "b1")``.
        covariance: ``(n, P, P)`` the bound matrix F⁻¹ in the parameters' units (ms², …).
        std: ``(n, P)`` √diag(F⁻¹): the smallest achievable standard deviation per parameter.
        relative_std: ``(n, P)`` ``std / |θ|``·(M0/σ) — the unit-free "√CRB·M0/(σ·T)" figure
            (the σ and M0 of the call are divided out, so it is the value at M0/σ = 1; for B1 it is
            √CRB(B1)/B1 per unit σ/M0).
    """

    params: tuple[str, ...]
    covariance: np.ndarray
    std: np.ndarray
    relative_std: np.ndarray


def schedule_profile(schedule: Schedule, n_positions: int = DEFAULT_N_POSITIONS) -> ProfileTable | None:
    """The slice profile the signal model uses for ``schedule`` (None: no excitation, ideal slice).

    Args:
        schedule: the acquisition schedule.
        n_positions: slice positions of the profile integral (as :func:`drone_core.epg.simulate`).
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    if schedule.excitation is None:
        return None
    return profile_table(schedule.excitation, int(n_positions))


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
    profile: ProfileTable | None = None,
) -> torch.Tensor:
    """Jacobian ``∂s/∂θ`` of ``s = M0·f(T1, T2, B1)``, θ = (M0, T1, T2[, B1]).

    Args:
        flip_angle_deg, tr_ms: ``(n_frames,)`` schedule tensors (may require grad).
        te_ms, ti_ms, inversion_efficiency: scalars.
        t1_ms, t2_ms, b1: ``(n,)`` tissue tensors (ms, ms, relative).
        m0: proton density (scalar or ``(n,)``).
        include_b1: add B1 as a fourth parameter.
        profile: slice profile (:func:`schedule_profile`), or None for an ideal slice.

    Returns:
        complex tensor ``(n, n_frames, P)``, P = 3 or 4; differentiable with respect to the schedule.
    """
    n = t1_ms.shape[0]
    if t2_ms.shape != t1_ms.shape or b1.shape != t1_ms.shape:
        raise ValueError(f"t2_ms, b1: expected shape {tuple(t1_ms.shape)} like t1_ms, got "
                         f"{tuple(t2_ms.shape)}, {tuple(b1.shape)}")
    n_deriv = 3 if include_b1 else 2

    def f(t1: torch.Tensor, t2: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return simulate_sequence(flip_angle_deg, tr_ms, te_ms, ti_ms, inversion_efficiency, t1, t2, b, profile)

    # One forward-mode pass for every derivative: tissues are independent, so the tissue batch is
    # repeated once per parameter, block k carrying the tangent of parameter k (5× cheaper than one
    # jvp per parameter, the EPG being dominated by per-frame overhead at these sizes).
    eye = torch.eye(3, dtype=t1_ms.dtype, device=t1_ms.device)[:n_deriv]  # (n_deriv, 3)
    tangents = tuple(eye[:, j, None].expand(n_deriv, n).reshape(-1) for j in range(3))
    primals = tuple(x.repeat(n_deriv) for x in (t1_ms, t2_ms, b1))
    out, d = torch.func.jvp(f, primals, tangents)
    base = out[:n]
    m0_t = torch.as_tensor(m0, dtype=t1_ms.dtype, device=t1_ms.device)
    m0_col = m0_t[:, None] if m0_t.ndim == 1 else m0_t
    columns = [base] + [m0_col * d[k * n:(k + 1) * n] for k in range(n_deriv)]
    return torch.stack(columns, dim=-1)


def fisher_information(jacobian: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``F = Re(Jᴴ J)/σ²`` for a ``(n, n_frames, P)`` Jacobian → ``(n, P, P)``."""
    return torch.einsum("nfp,nfq->npq", jacobian.conj(), jacobian).real / sigma**2


def _schedule_tensors(schedule: Schedule, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fa, tr = schedule.arrays()
    return torch.as_tensor(fa, dtype=dtype), torch.as_tensor(tr, dtype=dtype)


def _check_profile_range(schedule: Schedule, b1: np.ndarray, name: str) -> None:
    """The profile table holds centre rotations up to TABLE_MAX_DEG: say which B1 is too large."""
    if schedule.excitation is None or b1.size == 0:
        return
    top = max(schedule.flip_angle_deg) * float(np.max(b1))
    if top > TABLE_MAX_DEG or float(np.min(b1)) < 0:
        raise ValueError(f"{name}: expected 0 ≤ B1 with B1 × max flip angle ≤ {TABLE_MAX_DEG:g}° for the slice "
                         f"profile, got B1 {float(np.min(b1)):g} … {float(np.max(b1)):g} × "
                         f"{max(schedule.flip_angle_deg):g}°")


def crb(
    schedule: Schedule,
    t1_ms: np.ndarray | list[float] | float,
    t2_ms: np.ndarray | list[float] | float,
    *,
    m0: float = 1.0,
    sigma: float = 1.0,
    b1: float | np.ndarray = 1.0,
    include_b1: bool = False,
    n_positions: int = DEFAULT_N_POSITIONS,
) -> CrbResult:
    """Cramér–Rao bound of (M0, T1, T2[, B1]) for tissues under ``schedule`` (float64).

    The signal model is :func:`drone_core.epg.simulate`'s: with the schedule's slice profile when it
    declares an ``excitation`` (use ``schedule.ideal()`` for the ideal slice).

    Args:
        schedule: the acquisition schedule.
        t1_ms, t2_ms: ``(n,)`` tissue relaxation times, ms.
        m0: proton density of the signal model (same units as σ).
        sigma: noise standard deviation per real channel.
        b1: relative B1 of the tissues, scalar or ``(n,)``.
        include_b1: estimate B1 too (a fourth parameter: no B1 map); bounds on T1/T2 can only grow.
        n_positions: slice positions of the profile integral (ignored without an excitation).

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
    b1_np = np.asarray(b1, dtype=np.float64)
    try:
        b1_np = np.broadcast_to(b1_np, t1.shape).copy()
    except ValueError as exc:
        raise ValueError(f"b1: expected a scalar or shape {tuple(t1.shape)} like t1_ms, got {b1_np.shape}") from exc
    _check_profile_range(schedule, b1_np, "b1")
    b = torch.as_tensor(b1_np, dtype=dt)
    profile = schedule_profile(schedule, n_positions)
    fa, tr = _schedule_tensors(schedule, dt)
    with torch.no_grad():
        jac = signal_jacobian(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency,
                              t1, t2, b, m0=m0, include_b1=include_b1, profile=profile)
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
    with np.errstate(divide="ignore", invalid="ignore"):
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
    b1: torch.Tensor | None = None,
    *,
    include_b1: bool = False,
    b1_weight: float = 0.0,
    profile: ProfileTable | None = None,
) -> torch.Tensor:
    """Differentiable design cost Σ_rows CRB(T1)/T1² + CRB(T2)/T2² [+ w·CRB(B1)/B1²] at M0 = σ = 1.

    Args:
        flip_angle_deg, tr_ms: ``(n_frames,)`` schedule tensors (usually requiring grad).
        te_ms, ti_ms, inversion_efficiency: fixed scalars.
        t1_ms, t2_ms: ``(n_rows,)`` tissues (repeat them to cover several B1 values).
        b1: ``(n_rows,)`` relative B1 of each row; None = 1.
        include_b1: B1 is a fourth unknown (the T1/T2 bounds include its confounding).
        b1_weight: weight w ≥ 0 of the relative B1 bound (needs ``include_b1``).
        profile: slice profile (:func:`schedule_profile`) or None for the ideal slice.

    Returns:
        scalar tensor (the sum over rows).
    """
    if not (isinstance(b1_weight, (int, float)) and math.isfinite(b1_weight) and b1_weight >= 0):
        raise ValueError(f"b1_weight: expected a finite number ≥ 0, got {b1_weight!r}")
    if b1_weight > 0 and not include_b1:
        raise ValueError(f"b1_weight: expected 0 when include_b1 is False (B1 known), got {b1_weight}")
    b1 = torch.ones_like(t1_ms) if b1 is None else b1
    jac = signal_jacobian(flip_angle_deg, tr_ms, te_ms, ti_ms, inversion_efficiency, t1_ms, t2_ms, b1,
                          include_b1=include_b1, profile=profile)
    cov = torch.linalg.inv(fisher_information(jac))
    cost = cov[:, 1, 1] / t1_ms**2 + cov[:, 2, 2] / t2_ms**2
    if include_b1 and b1_weight > 0:
        cost = cost + b1_weight * cov[:, 3, 3] / b1**2
    return cost.sum()


def crb_cost(
    schedule: Schedule,
    tissues: dict[str, tuple[float, float]] | None = None,
    *,
    b1_values: Sequence[float] = (1.0,),
    include_b1: bool = False,
    b1_weight: float = 0.0,
    n_positions: int = DEFAULT_N_POSITIONS,
) -> float:
    """Design cost of a schedule, M0 = σ = 1, with the schedule's slice profile (if it declares one).

    ``mean over b1_values of Σ_tissues CRB(T1)/T1² + CRB(T2)/T2² [+ b1_weight·CRB(B1)/B1²]``; the
    defaults (B1 = 1 known, no B1 term) give the classic Σ_tissues CRB(T1)/T1² + CRB(T2)/T2².

    Args:
        schedule: the acquisition schedule.
        tissues: name → (T1 ms, T2 ms); default WM/GM/CSF of the paper's Table 1
            (:data:`BRAIN_TISSUES_1P5T`).
        b1_values: ``(n_b1,)`` relative B1 values the cost is averaged over.
        include_b1: B1 is a fourth unknown.
        b1_weight: weight of CRB(B1)/B1² (needs ``include_b1``).
        n_positions: slice positions of the profile integral.
    """
    tissues = BRAIN_TISSUES_1P5T if tissues is None else tissues
    b1_arr = np.atleast_1d(np.asarray(b1_values, dtype=np.float64))
    if b1_arr.ndim != 1 or b1_arr.size == 0 or not np.all(np.isfinite(b1_arr)) or np.any(b1_arr <= 0):
        raise ValueError(f"b1_values: expected a non-empty list of finite values > 0, got {list(b1_arr)}")
    _check_profile_range(schedule, b1_arr, "b1_values")
    n_b1 = b1_arr.size
    t1 = torch.tensor([v[0] for v in tissues.values()], dtype=torch.float64).repeat(n_b1)
    t2 = torch.tensor([v[1] for v in tissues.values()], dtype=torch.float64).repeat(n_b1)
    b1 = torch.as_tensor(np.repeat(b1_arr, len(tissues)), dtype=torch.float64)
    fa, tr = _schedule_tensors(schedule, torch.float64)
    with torch.no_grad():
        total = crb_cost_tensors(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency, t1, t2, b1,
                                 include_b1=include_b1, b1_weight=b1_weight,
                                 profile=schedule_profile(schedule, n_positions))
    return float(total) / n_b1
