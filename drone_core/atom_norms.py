"""M0 without a per-voxel simulation: the norm of a schedule's atoms, tabulated once on a (T1, T2, B1) grid.

M0 is the scale between a voxel's measured magnitude fingerprint |s| and the atom a(T1, T2, B1)
(simulated with M0 = 1) at the estimate (:mod:`drone_core.m0`). The least-squares scale
⟨|s|, |a|⟩/‖a‖² needs the whole atom, i.e. an EPG simulation per voxel — over the slice profile
that costs ten times the network's forward pass. When the estimate is right, |s| ≈ M0·|a| and

    M0 = ‖s‖ / ‖a(T1, T2, B1)‖

needs only the scalar ‖a‖ at the estimate. The two differ by the cosine of the angle between |s|
and |a| — 1 − θ²/2, second order in the estimation error and in the noise (for the norm: noise
energy 2Nσ² against M0²‖a‖², ≈ 10⁻⁴ at 0.5 % noise) — see :func:`norm_ratio_m0` and the tests.

:class:`AtomNormTable` holds ln ‖a‖ on a uniform grid in (ln T1, ln T2, B1) and interpolates it
trilinearly (ln ‖a‖ is smooth there: its largest curvature, ∂²/∂(ln T2)² ≈ −TE/T2, sets the grid
step; :data:`DEFAULT_SHAPE` keeps the interpolation error below 0.1 % for T2 ≥ 10 ms, :mod:`tests`).
It is built once per model (:meth:`AtomNormTable.build`, a few seconds: ~10⁵ atoms with the slice
profile) and stored in the model file beside the weights; a lookup is a handful of array
operations per voxel, on the CPU or the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .excitation import DEFAULT_ROTATION
from .grid_tables import flat_on_device, recorded_array
from .grid_tables import uniform_axis as _axis
from .schedule import Schedule

__all__ = ["AtomNormTable", "DEFAULT_SHAPE", "norm_ratio_m0", "ratio_of_norms", "TENSOR_KEY"]

#: Grid points (B1, T1, T2) of a table for a B1-input model (B1 = 1 only: one plane).
DEFAULT_SHAPE = (21, 96, 96)
#: Key of the table's tensor in a model file (beside the network's weights).
TENSOR_KEY = "m0_table.log_norm"


@dataclass(frozen=True, eq=False)
class AtomNormTable:
    """ln ‖|a(T1, T2, B1)|‖ (L2 over the frames, M0 = 1) on a uniform (B1, ln T1, ln T2) grid.

    Attributes:
        log_norm: float32 ``(n_b1, n_t1, n_t2)``.
        t1_range_ms, t2_range_ms: the grid's ends (the grid is uniform in ln T).
        b1_range: the B1 axis's ends (``(1.0, 1.0)`` with one plane).
        n_positions: slice positions of the profile integral the atoms were simulated with.
        schedule_digest: the schedule's :meth:`~drone_core.schedule.Schedule.digest`.
    """

    log_norm: np.ndarray
    t1_range_ms: tuple[float, float]
    t2_range_ms: tuple[float, float]
    b1_range: tuple[float, float]
    n_positions: int
    schedule_digest: str

    def __post_init__(self) -> None:
        arr = np.ascontiguousarray(self.log_norm, dtype=np.float32)
        if arr.ndim != 3 or min(arr.shape[1:]) < 2 or arr.shape[0] < 1 or not np.isfinite(arr).all():
            raise ValueError(f"log_norm: expected finite (n_b1 ≥ 1, n_t1 ≥ 2, n_t2 ≥ 2) values, got {arr.shape}")
        for name in ("t1_range_ms", "t2_range_ms"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (0 < lo < hi and math.isfinite(hi)):
                raise ValueError(f"{name}: expected 0 < low < high ms, got {getattr(self, name)!r}")
        lo, hi = (float(v) for v in self.b1_range)
        if not (0 < lo <= hi and (lo < hi) == (arr.shape[0] > 1)):
            raise ValueError(f"b1_range: expected 0 < low < high for {arr.shape[0]} planes (low = high for one), "
                             f"got {self.b1_range!r}")
        object.__setattr__(self, "log_norm", arr)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, schedule: Schedule, t1_range_ms: tuple[float, float], t2_range_ms: tuple[float, float],
              b1_range: tuple[float, float] | None = None, *, shape: tuple[int, int, int] = DEFAULT_SHAPE,
              n_positions: int = 24, chunk_size: int = 32768, rotation: str = DEFAULT_ROTATION) -> "AtomNormTable":
        """Simulate the grid's atoms (:func:`drone_core.epg.simulate`, the schedule's slice profile) and keep
        ln ‖|a|‖.

        Args:
            schedule: the model's schedule.
            t1_range_ms, t2_range_ms: the model's output ranges (the table covers them; estimates outside
                are clamped to its edge).
            b1_range: None (B1 = 1: one plane; ``shape[0]`` ignored) or the model's B1 range.
            shape: grid points ``(n_b1, n_t1, n_t2)``.
            n_positions: slice positions of the profile integral.
            chunk_size: atoms per EPG call (bounds memory).
            rotation: the slice-profile model (:func:`drone_core.epg.simulate`).
        """
        from .epg import simulate

        n_b1 = 1 if b1_range is None else int(shape[0])
        b1_lo, b1_hi = (1.0, 1.0) if b1_range is None else (float(b1_range[0]), float(b1_range[1]))
        b1 = _axis(b1_lo, b1_hi, n_b1)
        lt1 = _axis(math.log(t1_range_ms[0]), math.log(t1_range_ms[1]), shape[1])
        lt2 = _axis(math.log(t2_range_ms[0]), math.log(t2_range_ms[1]), shape[2])
        bb, aa, cc = np.meshgrid(b1, np.exp(lt1), np.exp(lt2), indexing="ij")
        flat_b1, flat_t1, flat_t2 = bb.ravel(), aa.ravel(), cc.ravel()
        norms = np.empty(flat_b1.size)
        for start in range(0, flat_b1.size, int(chunk_size)):
            sl = slice(start, start + int(chunk_size))
            atoms = simulate(schedule, flat_t1[sl], flat_t2[sl], flat_b1[sl], n_positions=n_positions,
                             dtype=torch.float64, rotation=rotation)
            norms[sl] = np.linalg.norm(np.abs(np.asarray(atoms)), axis=1)
        log_norm = np.log(np.maximum(norms, np.finfo(np.float64).tiny)).reshape(bb.shape)
        return cls(log_norm, (float(t1_range_ms[0]), float(t1_range_ms[1])),
                   (float(t2_range_ms[0]), float(t2_range_ms[1])), (b1_lo, b1_hi), int(n_positions),
                   schedule.digest())

    # ------------------------------------------------------------------ lookup
    def norm(self, t1_ms: Any, t2_ms: Any, b1: Any = None) -> torch.Tensor:
        """‖|a|‖ at each (T1, T2, B1), trilinear in (B1, ln T1, ln T2), clamped to the grid.

        Args:
            t1_ms, t2_ms: ``(n,)`` (tensors or arrays; the result is on their device, float32).
            b1: ``(n,)`` relative B1, a number, or None (1).

        Returns:
            float32 ``(n,)``.
        """
        t1 = torch.as_tensor(t1_ms, dtype=torch.float32)
        t2 = torch.as_tensor(t2_ms, dtype=torch.float32, device=t1.device)
        flat = self._flat(t1.device)
        nb, n1, n2 = self.log_norm.shape

        def position(values: torch.Tensor, lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Lower node index (as float) and the fraction towards the next node, clamped to the grid."""
            if n == 1:
                return torch.zeros_like(values), torch.zeros_like(values)
            u = (values - lo).mul_((n - 1) / (hi - lo)).clamp_(0, n - 1)
            i = u.floor().clamp_(max=n - 2)
            return i, u.sub_(i)

        i1, f1 = position(t1.clamp(min=1e-6).log_(), *map(math.log, self.t1_range_ms), n1)
        i2, f2 = position(t2.clamp(min=1e-6).log_(), *map(math.log, self.t2_range_ms), n2)
        b = torch.ones_like(t1) if b1 is None else torch.as_tensor(b1, dtype=torch.float32,
                                                                    device=t1.device).expand_as(t1)
        ib, fb = position(b, *self.b1_range, nb)
        base = ((ib * n1 + i1) * n2 + i2).long()  # one gather per corner on the flattened table

        def bilinear(corner: torch.Tensor) -> torch.Tensor:
            low = torch.lerp(flat.take(corner), flat.take(corner + 1), f2)
            return torch.lerp(low, torch.lerp(flat.take(corner + n2), flat.take(corner + n2 + 1), f2), f1)

        out = bilinear(base)
        if nb > 1:
            out = torch.lerp(out, bilinear(base + n1 * n2), fb)
        return out.exp_()

    def _flat(self, device: torch.device) -> torch.Tensor:
        """The float32 table, flattened, on ``device`` (kept per device)."""
        return flat_on_device(self, self.log_norm, device)

    # ------------------------------------------------------------------ files
    def to_metadata(self) -> dict[str, Any]:
        """What a model file's JSON records of the table (its values are the tensor :data:`TENSOR_KEY`)."""
        return {"quantity": "ln L2 norm over the frames of the magnitude atom, M0 = 1",
                "axes": ["b1", "ln_t1_ms", "ln_t2_ms"], "shape": list(self.log_norm.shape),
                "t1_range_ms": list(self.t1_range_ms), "t2_range_ms": list(self.t2_range_ms),
                "b1_range": list(self.b1_range), "n_positions": self.n_positions,
                "schedule_digest": self.schedule_digest}

    @classmethod
    def from_file_parts(cls, meta: Mapping[str, Any], tensor: torch.Tensor | np.ndarray) -> "AtomNormTable":
        """The table from a model file's JSON entry and its tensor.

        Raises:
            ValueError: missing fields, or a tensor of another shape than recorded.
        """
        try:
            arr = recorded_array(meta, tensor, "table")
            return cls(arr, tuple(meta["t1_range_ms"]), tuple(meta["t2_range_ms"]), tuple(meta["b1_range"]),
                       int(meta["n_positions"]), str(meta["schedule_digest"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"m0 table metadata: missing or bad field ({exc})") from None


def norm_ratio_m0(signal_magnitudes: np.ndarray | torch.Tensor, atom_norms: np.ndarray | torch.Tensor) -> Any:
    """M0 = ‖|s|‖ / ‖|a|‖ per voxel (module docstring); 0 where the atom's norm is 0.

    Args:
        signal_magnitudes: ``(n, n_frames)`` (numpy or torch; non-finite values count as 0).
        atom_norms: ``(n,)`` ‖|a|‖ at each voxel's estimate (:meth:`AtomNormTable.norm`).
    """
    if isinstance(signal_magnitudes, torch.Tensor):
        s = torch.nan_to_num(signal_magnitudes.abs(), nan=0.0, posinf=0.0, neginf=0.0)
        return ratio_of_norms(torch.linalg.vector_norm(s, dim=1),
                              torch.as_tensor(atom_norms, dtype=s.dtype, device=s.device))
    s_np = np.abs(np.asarray(signal_magnitudes))
    s_np = np.where(np.isfinite(s_np), s_np, 0)
    a_np = np.asarray(atom_norms, dtype=np.float64)
    num = np.linalg.norm(s_np, axis=1)
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, a_np, out=out, where=a_np > 0)
    return out


def ratio_of_norms(signal_norms: torch.Tensor, atom_norms: torch.Tensor) -> torch.Tensor:
    """M0 = ‖|s|‖ / ‖|a|‖ from the two ``(n,)`` norms (tensors, same device); 0 where the atom's norm is 0."""
    ok = atom_norms > 0
    return torch.where(ok, signal_norms / torch.where(ok, atom_norms, torch.ones_like(atom_norms)),
                       torch.zeros_like(atom_norms))
