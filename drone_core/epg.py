"""Extended Phase Graph simulation of the normative DRONE signal model (``DESIGN.md``).

Per tissue (T1, T2 in ms; B1 relative; M0 = 1):

1. at t = 0 an instantaneous inversion, Mz → (1 − 2η)·Mz;
2. free relaxation for TI;
3. for each frame i: an instantaneous rotation by B1·α_i about x (with a slice profile: at each position z the
   pulse's own rotation there, its Cayley–Klein (α(z), β(z)), ``rotation="spinor"``); relaxation for TE; the
   transverse magnetisation F0 is sampled (frame i); relaxation for TR_i − TE; one order of
   gradient dephasing (FISP-like unbalanced spoiler, no RF spoiling);
4. relaxation: transverse × exp(−t/T2), longitudinal towards M0 with exp(−t/T1).

Implementation notes
--------------------
*Real arithmetic.* With every RF rotation about x and no off-resonance, all transverse EPG
states stay purely imaginary and all longitudinal states real (Weigel's RF matrix maps
``(iu, −iv, z)`` to the same form). We therefore carry ``u_k = Im F⁺_k``, ``v_k = −Im F⁻_k`` and
``z_k = Z_k`` as real tensors, which is 2–4× cheaper than complex EPG, and return the complex
``F⁺_0 = i·u_0``. The RF mixing in these variables is, with ``a = u + v``, ``d = u − v``::

    u' = (cos α / 2)·a − sin α·z + d/2
    v' = (cos α / 2)·a − sin α·z − d/2
    z' = (sin α / 2)·a + cos α·z

*Relaxation.* The sample is F0 after TE; because the two relaxation intervals of a frame compose
exactly, the states are relaxed once per TR (E1, E2 of TR_i) and the sample is scaled by
exp(−TE/T2).

*Truncation (exact).* One dephasing order per TR means a state of order k needs k further TRs to
reach F0; at frame j only orders ``k ≤ min(j, N − 1 − j)`` can be populated *and* still be heard,
so higher orders are dropped without changing any sample. This halves the work against a full
``N``-order graph.

*Layout.* States are ``(n_orders, n_atoms)`` so each elementwise op runs over contiguous rows of
atoms; atoms are processed in chunks to bound memory (``chunk_size``).

Everything is plain differentiable PyTorch: gradients flow to T1, T2, B1 and to the schedule
(flip angles, TRs, TE, TI, η) through :func:`simulate_sequence`; ``torch.func.jacfwd`` works too.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from .excitation import DEFAULT_N_POSITIONS, DEFAULT_ROTATION, ROTATIONS, ProfileTable, profile_table
from .schedule import Schedule

__all__ = ["simulate", "simulate_sequence", "ArrayLike", "DEFAULT_CHUNK_SIZE"]

ArrayLike = Union[np.ndarray, torch.Tensor, float, "list[float]"]

#: Default number of atoms simulated at once; bounds peak memory to about
#: ``chunk_size × (3 · n_frames/2 + 2 · n_frames) × 4 bytes`` (float32) per chunk.
DEFAULT_CHUNK_SIZE = 32768


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_tensor(x: ArrayLike, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name}: expected a real tensor, got dtype {x.dtype}")
        return x.to(dtype=dtype, device=device)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected numbers, got {type(x).__name__}") from exc
    return torch.as_tensor(arr, dtype=dtype, device=device)


def _as_1d(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim > 1:
        raise ValueError(f"{name}: expected a scalar or a 1-D array (n,), got shape {tuple(x.shape)}")
    return x.reshape(-1)


def simulate_sequence(
    flip_angle_deg: torch.Tensor,
    tr_ms: torch.Tensor,
    te_ms: torch.Tensor | float,
    ti_ms: torch.Tensor | float,
    inversion_efficiency: torch.Tensor | float,
    t1_ms: torch.Tensor,
    t2_ms: torch.Tensor,
    b1: torch.Tensor | float = 1.0,
    profile: ProfileTable | None = None,
    rotation: str = DEFAULT_ROTATION,
) -> torch.Tensor:
    """EPG signal of every tissue for a schedule given as tensors (the differentiable core).

    Args:
        flip_angle_deg: nominal flip angles, degrees, ``(n_frames,)``.
        tr_ms: repetition times, ms, ``(n_frames,)``.
        te_ms: echo time, ms (scalar).
        ti_ms: inversion time, ms (scalar).
        inversion_efficiency: η (scalar), Mz → (1 − 2η)·Mz.
        t1_ms: ``(n,)`` longitudinal relaxation times, ms.
        t2_ms: ``(n,)`` transverse relaxation times, ms.
        b1: relative transmit field, scalar or ``(n,)``.
        profile: the slice profile (:func:`drone_core.excitation.profile_table`), or None for an
            ideal slice. With a profile the signal is the slice integral ``Σ_j w_j · s(θ(z_j; B1·α))``.
        rotation: with a profile, ``"spinor"`` (the normative model: the pulse's full rotation at each position,
            :meth:`ProfileTable.rotations`; the slice integral keeps the part of F0 that survives the sum over
            ±z, ``Im F0``) or ``"x"`` (θ(z) about x, the model before it).

    Returns:
        complex tensor ``(n, n_frames)``: F0 at TE of every frame, for M0 = 1, in the dtype's
        complex counterpart, on the inputs' device.
    """
    dtype, device = t1_ms.dtype, t1_ms.device
    b1 = torch.as_tensor(b1, dtype=dtype, device=device)
    if b1.ndim == 0:
        alpha_deg = (flip_angle_deg * b1)[:, None]  # (N, 1): same rotation for every atom
    else:
        alpha_deg = flip_angle_deg[:, None] * b1[None, :]  # (N, n)

    r1 = 1.0 / t1_ms  # (n,)
    r2 = 1.0 / t2_ms
    e1 = torch.exp(-tr_ms[:, None] * r1[None, :])  # (N, n)
    e2 = torch.exp(-tr_ms[:, None] * r2[None, :])
    e2_te = torch.exp(-torch.as_tensor(te_ms, dtype=dtype, device=device) * r2)  # (n,)
    e1_ti = torch.exp(-torch.as_tensor(ti_ms, dtype=dtype, device=device) * r1)
    eta = torch.as_tensor(inversion_efficiency, dtype=dtype, device=device)
    z0 = (1.0 - 2.0 * eta) * e1_ti + (1.0 - e1_ti)  # (n,)
    n = t1_ms.shape[0]
    if profile is None:
        f0 = _epg_frames(torch.deg2rad(alpha_deg), e1, e2, z0)  # (n, N)
    else:
        # Every (atom, position) pair is one EPG row, atom-major: row = atom·p + position.
        p = profile.n_positions

        def per_position(x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(-1).expand(*x.shape, p).reshape(*x.shape[:-1], x.shape[-1] * p)

        def rows_of(x: torch.Tensor) -> torch.Tensor:  # (N, n or 1, p) → (N, n·p)
            return x.expand(x.shape[0], n, p).reshape(x.shape[0], n * p)

        if rotation == "spinor":
            ca, cb = profile.rotations(alpha_deg)
            rows = _epg_frames_spinor(rows_of(ca), rows_of(cb), per_position(e1), per_position(e2),
                                      per_position(z0))
        else:
            theta = rows_of(profile.flip_angles(alpha_deg))
            rows = _epg_frames(torch.deg2rad(theta), per_position(e1), per_position(e2), per_position(z0))
        weights = torch.as_tensor(profile.weights, dtype=dtype, device=device)
        f0 = torch.einsum("apf,p->af", rows.reshape(n, p, -1), weights)
    f0 = f0 * e2_te[:, None]  # (n, N) = Im F0
    return torch.complex(torch.zeros_like(f0), f0)


def _epg_frames(alpha: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """The EPG recursion: ``Im F0`` before the TE decay, ``(rows, N)``.

    Args:
        alpha: ``(N, rows)`` or ``(N, 1)`` rotations about x, rad.
        e1, e2: ``(N, rows)`` relaxation factors over each TR.
        z0: ``(rows,)`` longitudinal magnetisation before the first pulse.
    """
    dtype, device = z0.dtype, z0.device
    n_frames = alpha.shape[0]
    cos_a, sin_a = torch.cos(alpha), torch.sin(alpha)
    half_cos, half_sin = 0.5 * cos_a, 0.5 * sin_a
    recovery = 1.0 - e1
    n = z0.shape[0]
    zeros_row = torch.zeros((1, n), dtype=dtype, device=device)
    u = zeros_row
    v = zeros_row
    z = z0[None, :]
    samples = []
    for i in range(n_frames):
        # RF rotation about x (real form of Weigel's operator).
        a = u + v
        d = 0.5 * (u - v)
        p = half_cos[i] * a - sin_a[i] * z
        z = half_sin[i] * a + cos_a[i] * z
        u = p + d
        v = p - d
        samples.append(u[0])
        if i == n_frames - 1:
            break
        # Relaxation over the whole TR (TE part applied to the sample only).
        u = u * e2[i]
        v = v * e2[i]
        z = z * e1[i]
        z = torch.cat([z[:1] + recovery[i], z[1:]], dim=0)
        # One order of dephasing, keeping the orders that can still reach F0.
        keep = min(i + 1, n_frames - 2 - i) + 1  # orders 0..K_{i+1}
        have = u.shape[0]
        head = v[1:2] if have > 1 else zeros_row
        u = torch.cat([head, u], dim=0)[:keep]
        v = v[1:keep + 1]
        v, z = _pad_orders(v, keep, zeros_row), _pad_orders(z[:keep], keep, zeros_row)
    return torch.stack(samples, dim=1)


def _pad_orders(states: torch.Tensor, keep: int, zeros_row: torch.Tensor) -> torch.Tensor:
    """``states`` ``(orders, rows)`` padded with zero orders to ``keep`` (after a dephasing shift)."""
    if states.shape[0] >= keep:
        return states
    return torch.cat([states, zeros_row.expand(keep - states.shape[0], zeros_row.shape[1])], dim=0)


def _epg_frames_spinor(ca: torch.Tensor, cb: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor,
                       z0: torch.Tensor) -> torch.Tensor:
    """The EPG recursion with general rotations: ``Im F0`` before the TE decay, ``(rows, N)``.

    Args:
        ca, cb: ``(N, rows)`` complex Cayley–Klein parameters of each frame's pulse at each row; the states
            F+, F−, Z transform as M+, M+*, Mz under them (Pauly et al., IEEE TMI 1991):
            ``F+' = α*²F+ − β²F− + 2α*βZ``, ``F−' = −β*²F+ + α²F− + 2αβ*Z``, ``Z' = −α*β*F+ − αβF− + (|α|² − |β|²)Z``.
        e1, e2: ``(N, rows)`` relaxation factors over each TR.
        z0: ``(rows,)`` longitudinal magnetisation before the first pulse.

    For rotations about x (α real, β imaginary) it equals :func:`_epg_frames`. The imaginary part is what the
    slice integral keeps: for a symmetric pulse the rows at ±z have F0 of opposite real parts.
    """
    n_frames, n = ca.shape
    cdtype = ca.dtype
    zeros_row = torch.zeros((1, n), dtype=cdtype, device=ca.device)
    fp = zeros_row
    fm = zeros_row
    z = z0[None, :].to(cdtype)
    recovery = (1.0 - e1).to(cdtype)
    e1c, e2c = e1.to(cdtype), e2.to(cdtype)
    samples = []
    for i in range(n_frames):
        a, b = ca[i], cb[i]
        ac, bc = a.conj(), b.conj()
        fp, fm, z = (ac * ac * fp - b * b * fm + 2.0 * ac * b * z,
                     -bc * bc * fp + a * a * fm + 2.0 * a * bc * z,
                     -ac * bc * fp - a * b * fm + (a * ac - b * bc) * z)
        samples.append(fp[0].imag)
        if i == n_frames - 1:
            break
        fp, fm, z = fp * e2c[i], fm * e2c[i], z * e1c[i]
        z = torch.cat([z[:1] + recovery[i], z[1:]], dim=0)
        # One order of dephasing (F+ up, F− down, F+0 from F−1), keeping the orders that can reach F0.
        keep = min(i + 1, n_frames - 2 - i) + 1
        head = fm[1:2].conj() if fm.shape[0] > 1 else zeros_row
        fp = torch.cat([head, fp], dim=0)[:keep]
        fm = torch.cat([fp[:1].conj(), fm[2:keep + 1]], dim=0)
        fm, z = _pad_orders(fm, keep, zeros_row), _pad_orders(z[:keep], keep, zeros_row)
    return torch.stack(samples, dim=1)


def simulate(
    schedule: Schedule,
    t1_ms: ArrayLike,
    t2_ms: ArrayLike,
    b1: ArrayLike = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    n_positions: int = DEFAULT_N_POSITIONS,
    rotation: str = DEFAULT_ROTATION,
) -> np.ndarray | torch.Tensor:
    """Simulate the signal of tissues under ``schedule`` with the normative model (M0 = 1).

    When the schedule declares an ``excitation``, the signal is the slice integral over its
    flip-angle profile (``n_positions`` positions per half slice, :mod:`drone_core.excitation`),
    which costs about ``n_positions`` times the ideal-profile simulation.

    Args:
        schedule: the acquisition schedule.
        t1_ms: ``(n,)`` or scalar T1, ms, > 0.
        t2_ms: ``(n,)`` or scalar T2, ms, > 0 (T2 > T1 is allowed physically but unusual).
        b1: relative B1, scalar or ``(n,)``, ≥ 0.
        dtype: ``torch.float32`` or ``torch.float64``; default float32 for numpy input, the
            input's dtype for tensor input.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``; default the input tensor's device (CPU for
            numpy input).
        chunk_size: atoms simulated at once (bounds memory; divided by ``n_positions`` with a profile).
        n_positions: slice positions of the profile integral (ignored without an excitation).
        rotation: ``"spinor"`` (the normative model): the pulse's full rotation at each position, which a Bloch
            simulation of the real waveform follows within 0.2 %; or ``"x"``: θ(z) about x, the model before
            it, 0.7–3.5 % off (docs/SCANNER.md §6). Ignored without an excitation (an ideal slice is a rotation
            about x).

    Returns:
        ``(n, n_frames)`` complex signal: a numpy array (complex64/complex128) when ``t1_ms`` is not
        a tensor, else a tensor that carries gradients to T1, T2 and B1.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {list(ROTATIONS)}, got {rotation!r}")
    as_numpy = not isinstance(t1_ms, torch.Tensor)
    if dtype is None:
        dtype = t1_ms.dtype if isinstance(t1_ms, torch.Tensor) and t1_ms.is_floating_point() else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    if device is None:
        device = t1_ms.device if isinstance(t1_ms, torch.Tensor) else torch.device("cpu")
    device = _resolve_device(device)

    t1 = _as_1d(_as_tensor(t1_ms, "t1_ms", dtype, device), "t1_ms")
    t2 = _as_1d(_as_tensor(t2_ms, "t2_ms", dtype, device), "t2_ms")
    if t1.shape != t2.shape:
        if t1.numel() == 1:
            t1 = t1.expand_as(t2)
        elif t2.numel() == 1:
            t2 = t2.expand_as(t1)
        else:
            raise ValueError(f"t2_ms: expected shape {tuple(t1.shape)} like t1_ms, got {tuple(t2.shape)}")
    b1_t = _as_1d(_as_tensor(b1, "b1", dtype, device), "b1")
    if b1_t.numel() not in (1, t1.numel()):
        raise ValueError(f"b1: expected a scalar or {t1.numel()} values like t1_ms, got {b1_t.numel()}")
    with torch.no_grad():
        for name, values in (("t1_ms", t1), ("t2_ms", t2)):
            bad = ~torch.isfinite(values) | (values <= 0)
            if bool(bad.any()):
                raise ValueError(f"{name}: expected finite values > 0 ms, got {values[bad][0].item()} "
                                 f"({int(bad.sum())} bad of {values.numel()})")
        bad = ~torch.isfinite(b1_t) | (b1_t < 0)
        if bool(bad.any()):
            raise ValueError(f"b1: expected finite values ≥ 0, got {b1_t[bad][0].item()}")
    b1_arg: torch.Tensor | float = b1_t[0] if b1_t.numel() == 1 else b1_t

    fa = torch.as_tensor(schedule.flip_angle_deg, dtype=dtype, device=device)
    tr = torch.as_tensor(schedule.tr_ms, dtype=dtype, device=device)
    profile = None
    if schedule.excitation is not None:
        profile = profile_table(schedule.excitation, int(n_positions))
        chunk_size = max(1, chunk_size // profile.n_positions)
    n = t1.numel()
    parts = []
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        b1_chunk = b1_arg if not isinstance(b1_arg, torch.Tensor) or b1_arg.ndim == 0 else b1_arg[sl]
        parts.append(simulate_sequence(fa, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency,
                                       t1[sl], t2[sl], b1_chunk, profile, rotation))
    if n == 0:
        out = torch.zeros((0, schedule.n_frames), dtype=torch.complex128 if dtype == torch.float64
                          else torch.complex64, device=device)
    else:
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if as_numpy:
        return out.detach().cpu().numpy()
    return out
