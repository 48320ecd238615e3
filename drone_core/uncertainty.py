"""How far to trust a voxel: the standard deviation of a network's T1 and T2 estimates, tabulated once.

A voxel's estimate scatters with the noise. For one tissue, at one SNR, that scatter is a property
of the estimator and of the signal model alone, so it can be measured once, by Monte Carlo, and
looked up per voxel afterwards:

1. on a grid of (B1, ln T1, ln T2) the atom ``a`` (complex, M0 = 1, the schedule's slice profile) is
   simulated; at each of a range of SNR = M0/σ the same ``n_draws`` complex Gaussian noise draws
   ``z_k`` (σ per real channel: :mod:`drone_core.noise`'s law) give the magnitudes ``|a + z_k/SNR|``;
2. the network estimates T1 and T2 of every draw (with the node's B1 as input when it takes one),
   and the standard deviations over the draws are kept as ``ln sd`` (ms);
3. a voxel's predicted sd is that table, multilinear in (B1, ln T1, ln T2, ln SNR), at its own
   estimate, B1 and ``SNR = M0 / σ`` (M0 from the estimate, σ from the slice's background,
   :mod:`drone_core.masking`).

Why not the Cramér–Rao bound alone: it is the floor for an *unbiased* estimator, and the network
is neither efficient nor unbiased away from its training noise. Measured on the brain phantom
(shipped network, ``docs/MODEL.md``): the map's sd over white matter is 1.31× the bound for T2 at
1 % noise and 1.88× at 3 %, while this table's prediction is within a few percent at both. Common
random numbers (the same ``z_k`` at every node) make the table smooth from node to node.

Above the table's highest SNR the sd is scaled as 1/SNR (the small-noise, linear regime); below its
lowest it is held at the edge value. Grid nodes with T2 ≥ T1 (outside the dictionary the networks
are trained on) take the values of the node with the largest valid T2 of their T1 row.
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

__all__ = ["UncertaintyTable", "DEFAULT_SHAPE", "DEFAULT_SNR_RANGE", "DEFAULT_DRAWS", "TENSOR_KEY"]

#: Grid points (B1, T1, T2, SNR) of a table (B1 collapses to one plane for a model without B1); nine
#: B1 planes (every 0.125 over 0.5–1.5) put B1 = 1 on a node and follow the sd's curvature in B1 (five planes
#: left GM's T2 sd at B1 0.85 15 % high against a Monte Carlo of the network, nine 7 %); 16 SNR nodes (factor
#: 1.58) keep the SNR interpolation within ≈ 4 %.
DEFAULT_SHAPE = (9, 40, 40, 16)
#: SNR = M0/σ range of the table (M0 of the atom convention, σ per real channel): 5 … 5000 spans
#: brain tissue from 10 % to 0.01 % noise of the brightest tissue.
DEFAULT_SNR_RANGE = (5.0, 5000.0)
#: Noise draws per node: 1024 keep a node's sd within ≈ 2–3 % of a 8,000-draw Monte Carlo (256: 5–10 %,
#: the draws' fourth moments matter through the network's non-linearity).
DEFAULT_DRAWS = 1024
#: Key of the table's tensor in a model file.
TENSOR_KEY = "uncertainty_table.log_sd"


@dataclass(frozen=True, eq=False)
class UncertaintyTable:
    """ln sd (ms) of an estimator's T1 and T2 on a (B1, ln T1, ln T2, ln SNR) grid.

    Attributes:
        log_sd: float32 ``(2, n_b1, n_t1, n_t2, n_snr)``: [0] T1, [1] T2.
        t1_range_ms, t2_range_ms: the grid's ends (uniform in ln T).
        b1_range: the B1 axis's ends (``(1.0, 1.0)`` with one plane).
        snr_range: the SNR axis's ends (uniform in ln SNR).
        n_draws: noise draws per node.
        n_positions: slice positions of the profile integral the atoms were simulated with.
        schedule_digest: the schedule's digest.
        network_digest: SHA-256 of the weights the table was measured with (a model refuses a table
            of other weights).
    """

    log_sd: np.ndarray
    t1_range_ms: tuple[float, float]
    t2_range_ms: tuple[float, float]
    b1_range: tuple[float, float]
    snr_range: tuple[float, float]
    n_draws: int
    n_positions: int
    schedule_digest: str
    network_digest: str

    def __post_init__(self) -> None:
        arr = np.ascontiguousarray(self.log_sd, dtype=np.float32)
        if arr.ndim != 5 or arr.shape[0] != 2 or arr.shape[1] < 1 or min(arr.shape[2:]) < 2 \
                or not np.isfinite(arr).all():
            raise ValueError(f"log_sd: expected finite (2, n_b1 ≥ 1, n_t1 ≥ 2, n_t2 ≥ 2, n_snr ≥ 2) values, got "
                             f"{arr.shape}")
        for name in ("t1_range_ms", "t2_range_ms", "snr_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (0 < lo < hi and math.isfinite(hi)):
                raise ValueError(f"{name}: expected 0 < low < high, got {getattr(self, name)!r}")
        lo, hi = (float(v) for v in self.b1_range)
        if not (0 < lo <= hi and (lo < hi) == (arr.shape[1] > 1)):
            raise ValueError(f"b1_range: expected 0 < low < high for {arr.shape[1]} planes (low = high for one), "
                             f"got {self.b1_range!r}")
        object.__setattr__(self, "log_sd", arr)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: Any, *, network_digest: str, shape: tuple[int, int, int, int] = DEFAULT_SHAPE,
              snr_range: tuple[float, float] = DEFAULT_SNR_RANGE, n_draws: int = DEFAULT_DRAWS, seed: int = 0,
              n_positions: int = 24, nodes_per_call: int = 16) -> "UncertaintyTable":
        """Measure the table for ``model`` (module docstring; ~10⁷ network evaluations: seconds).

        Args:
            model: a :class:`drone_core.model.DroneModel` (its ``schedule``, ranges, ``b1`` use and
                ``predict``).
            network_digest: the digest of the model's weights, recorded in the table.
            shape: grid points ``(n_b1, n_t1, n_t2, n_snr)``; ``n_b1`` is 1 for a model without B1 (or
                ``n_b1`` = 1: one plane at B1 = 1).
            snr_range: ``(low, high)`` SNR = M0/σ.
            n_draws: noise draws per node (≥ 8).
            seed: seed of the draws.
            n_positions: slice positions of the profile integral.
            nodes_per_call: (T1, T2) nodes per network call (bounds memory: ×n_snr×n_draws fingerprints).
        """
        from .epg import simulate

        if int(n_draws) < 8:
            raise ValueError(f"n_draws: expected ≥ 8, got {n_draws}")
        nb, n1, n2, ns = (int(v) for v in shape)
        uses_b1 = bool(model.b1.input or model.b1.output) and nb > 1
        b1_lo, b1_hi = (float(model.b1.range[0]), float(model.b1.range[1])) if uses_b1 else (1.0, 1.0)
        nb = nb if uses_b1 else 1
        t1_range = (max(float(model.t1_range_ms[0]), 0.1), float(model.t1_range_ms[1]))
        t2_range = (max(float(model.t2_range_ms[0]), 0.1), float(model.t2_range_ms[1]))
        b1_axis = _axis(b1_lo, b1_hi, nb)
        t1_axis = np.exp(_axis(math.log(t1_range[0]), math.log(t1_range[1]), n1))
        t2_axis = np.exp(_axis(math.log(t2_range[0]), math.log(t2_range[1]), n2))
        snr = np.exp(_axis(math.log(snr_range[0]), math.log(snr_range[1]), ns)).astype(np.float32)
        rng = np.random.default_rng(seed)
        n_frames = model.schedule.n_frames
        # Each real channel of each frame standardised over the draws (mean 0, variance 1 exactly): the
        # draws' own sampling error of the variance would otherwise bias every node alike.
        parts = rng.standard_normal((2, int(n_draws), n_frames))
        parts = (parts - parts.mean(axis=1, keepdims=True)) / parts.std(axis=1, keepdims=True)
        z = (parts[0] + 1j * parts[1]).astype(np.complex64)
        out = np.full((2, nb, n1, n2, ns), np.nan, dtype=np.float64)
        ii, jj = np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij")
        valid = t2_axis[jj] < t1_axis[ii]
        vi, vj = ii[valid], jj[valid]
        for ib, b1 in enumerate(b1_axis):
            atoms = np.asarray(simulate(model.schedule, t1_axis[vi], t2_axis[vj], np.full(vi.size, b1),
                                       n_positions=n_positions, dtype=torch.float64,
                                       rotation=getattr(model, "rotation", DEFAULT_ROTATION))).astype(np.complex64)
            for start in range(0, vi.size, int(nodes_per_call)):
                a = atoms[start:start + int(nodes_per_call)]  # (c, N)
                noisy = np.abs(a[:, None, None, :] + z[None, None] / snr[None, :, None, None])  # (c, ns, K, N)
                flat = noisy.reshape(-1, n_frames)
                b1_in = np.full(flat.shape[0], b1, dtype=np.float32) if model.b1.input else None
                t1_est, t2_est = model.predict(flat, b1_in)
                for q, est in enumerate((t1_est, t2_est)):
                    sd = np.nanstd(est.reshape(a.shape[0], ns, -1).astype(np.float64), axis=2)
                    out[q, ib, vi[start:start + a.shape[0]], vj[start:start + a.shape[0]]] = sd
        log_sd = np.log(np.maximum(out, 1e-6))
        log_sd[~np.isfinite(out)] = np.nan
        return cls(_fill_invalid(log_sd, valid), t1_range, t2_range, (b1_lo, b1_hi),
                   (float(snr_range[0]), float(snr_range[1])), int(n_draws), int(n_positions),
                   model.schedule.digest(), str(network_digest))

    # ------------------------------------------------------------------ lookup
    def std(self, t1_ms: Any, t2_ms: Any, snr: Any, b1: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted sd of T1 and T2 (ms) at each voxel's estimate.

        Args:
            t1_ms, t2_ms: ``(n,)`` estimates (tensors or arrays; the result is on their device).
            snr: ``(n,)`` M0/σ of each voxel (M0 of the atom convention, σ per real channel).
            b1: ``(n,)`` relative B1, a number, or None (1).

        Returns:
            ``(sd_t1_ms, sd_t2_ms)`` float32 ``(n,)``; NaN where an input is not finite or SNR ≤ 0.
        """
        t1 = torch.as_tensor(t1_ms, dtype=torch.float32)
        dev = t1.device
        t2 = torch.as_tensor(t2_ms, dtype=torch.float32, device=dev)
        s = torch.as_tensor(snr, dtype=torch.float32, device=dev).expand_as(t1)
        b = torch.ones_like(t1) if b1 is None else torch.as_tensor(b1, dtype=torch.float32, device=dev).expand_as(t1)
        ok = torch.isfinite(t1) & torch.isfinite(t2) & torch.isfinite(s) & (s > 0) & torch.isfinite(b)
        one = torch.ones_like(t1)
        t1, t2 = torch.where(ok, t1, one).clamp(min=1e-6), torch.where(ok, t2, one).clamp(min=1e-6)
        ln_s = torch.where(ok, s, one).clamp(min=1e-6).log()
        b = torch.where(ok, b, one)
        ln_hi = math.log(self.snr_range[1])
        beyond = (ln_s - ln_hi).clamp(min=0)  # sd ∝ 1/SNR above the table
        axes = [(b, self.b1_range), (t1.log(), tuple(map(math.log, self.t1_range_ms))),
                (t2.log(), tuple(map(math.log, self.t2_range_ms))),
                (ln_s, (math.log(self.snr_range[0]), ln_hi))]
        flat = self._flat(dev)
        plane = flat.numel() // 2
        values = _multilinear(flat, self.log_sd.shape[1:], axes, offsets=(0, plane))
        nan = torch.full_like(t1, float("nan"))
        return tuple(torch.where(ok, (v - beyond).exp_(), nan) for v in values)  # type: ignore[return-value]

    def _flat(self, device: torch.device) -> torch.Tensor:
        return flat_on_device(self, self.log_sd, device)

    # ------------------------------------------------------------------ files
    def to_metadata(self) -> dict[str, Any]:
        """What a model file's JSON records of the table (its values are the tensor :data:`TENSOR_KEY`)."""
        return {"quantity": "ln standard deviation (ms) of the T1 and T2 estimates, Monte Carlo",
                "axes": ["t1_or_t2", "b1", "ln_t1_ms", "ln_t2_ms", "ln_snr"], "shape": list(self.log_sd.shape),
                "t1_range_ms": list(self.t1_range_ms), "t2_range_ms": list(self.t2_range_ms),
                "b1_range": list(self.b1_range), "snr_range": list(self.snr_range), "n_draws": self.n_draws,
                "n_positions": self.n_positions, "schedule_digest": self.schedule_digest,
                "network_digest": self.network_digest}

    @classmethod
    def from_file_parts(cls, meta: Mapping[str, Any], tensor: torch.Tensor | np.ndarray) -> "UncertaintyTable":
        """The table from a model file's JSON entry and its tensor.

        Raises:
            ValueError: missing fields, or a tensor of another shape than recorded.
        """
        try:
            arr = recorded_array(meta, tensor, "uncertainty table")
            return cls(arr, tuple(meta["t1_range_ms"]), tuple(meta["t2_range_ms"]), tuple(meta["b1_range"]),
                       tuple(meta["snr_range"]), int(meta["n_draws"]), int(meta["n_positions"]),
                       str(meta["schedule_digest"]), str(meta["network_digest"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"uncertainty table metadata: missing or bad field ({exc})") from None


def _fill_invalid(log_sd: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Nodes outside ``valid`` (T2 ≥ T1) or without a finite value take the last finite value of their T1 row
    (along T2), rows with none the nearest row's; ``(2, nb, n1, n2, ns)``."""
    out = log_sd.copy()
    out[:, :, ~valid] = np.nan
    n1, n2 = valid.shape
    for i in range(n1):
        row = out[:, :, i]  # (2, nb, n2, ns)
        finite = np.isfinite(row).all(axis=(0, 1, 3))
        if finite.any():
            last = int(np.flatnonzero(finite)[-1])
            for j in range(n2):
                if not finite[j]:
                    src = max((k for k in np.flatnonzero(finite) if k <= j), default=last)
                    row[:, :, j] = row[:, :, src]
    rows = np.flatnonzero(np.isfinite(out).all(axis=(0, 1, 3, 4)))
    if rows.size == 0:
        raise ValueError("no grid node gave a finite sd: the estimator failed on every draw")
    for i in range(n1):
        if i not in rows:
            out[:, :, i] = out[:, :, rows[np.argmin(np.abs(rows - i))]]
    return out.astype(np.float32)


def _multilinear(flat: torch.Tensor, shape: tuple[int, ...], axes: list[tuple[torch.Tensor, tuple[float, float]]],
                 offsets: tuple[int, ...] = (0,)) -> list[torch.Tensor]:
    """Multilinear interpolation on a uniform grid, clamped at its edges.

    Args:
        flat: the grid values, flattened (C order), possibly several grids one after the other.
        shape: one grid's shape (one entry per axis).
        axes: per axis, the ``(n,)`` coordinates and the axis's ``(low, high)`` ends.
        offsets: where each grid starts in ``flat`` (one output per offset).
    """
    strides = [int(np.prod(shape[k + 1:])) for k in range(len(shape))]
    base = None
    parts: list[tuple[int, torch.Tensor]] = []  # (stride, fraction) of each axis with more than one node
    for (coord, (lo, hi)), n, stride in zip(axes, shape, strides):
        if n == 1:
            continue
        u = (coord - lo).mul_((n - 1) / (hi - lo)).clamp_(0, n - 1)
        i = u.floor().clamp_(max=n - 2)
        index = (i * stride).long()
        base = index if base is None else base + index
        parts.append((stride, u - i))
    assert base is not None
    results = [torch.zeros_like(axes[0][0]) for _ in offsets]
    for corner in range(1 << len(parts)):
        weight = torch.ones_like(axes[0][0])
        index = base
        for k, (stride, frac) in enumerate(parts):
            if corner >> k & 1:
                weight = weight * frac
                index = index + stride
            else:
                weight = weight * (1 - frac)
        for r, off in zip(results, offsets):
            r.add_(weight * flat.take(index + off))
    return results
