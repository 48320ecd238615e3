"""MRF dictionaries: parameter grids, chunked EPG generation, sub-sampling, save/load.

A dictionary holds the simulated signal of every atom (a (T1, T2[, B1]) combination) under one
schedule, at M0 = 1. Atoms are the complex F0 samples of :func:`drone_core.epg.simulate`
(``complex64``, ``(n_atoms, n_frames)``); matching and the network use their magnitudes.

Order convention: grids list atoms with T1 ascending in the outer loop, T2 ascending inside
(and B1 innermost when present). Sub-sampling by a fold factor is defined on that order
(:meth:`Dictionary.subsample`).

Files are safetensors (no pickle): tensors ``atoms`` (float32 ``(n, N, 2)``: real, imaginary),
``t1_ms``, ``t2_ms`` and optionally ``b1``; metadata ``schedule`` (the schedule JSON),
``drone_version`` and ``kind`` = ``"drone-dictionary"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch

from ._version import __version__
from .epg import DEFAULT_CHUNK_SIZE, simulate
from .schedule import Schedule

__all__ = ["Dictionary", "paper_grid", "grid", "subsample_indices", "FILE_KIND"]

FILE_KIND = "drone-dictionary"


def paper_grid() -> tuple[np.ndarray, np.ndarray]:
    """The DRONE paper's grid: T1 = 1:10:5000 ms, T2 = 1:10:2000 ms, T1 > T2 strictly.

    Returns:
        ``(t1_ms, t2_ms)``, float64 arrays of 79,900 pairs, T1 ascending then T2 ascending.
    """
    return grid((1.0, 5000.0), (1.0, 2000.0), t1_step_ms=10.0, t2_step_ms=10.0)[:2]


def _axis(lo_hi: tuple[float, float], step: float | None, n: int | None, spacing: str, name: str) -> np.ndarray:
    lo, hi = (float(v) for v in lo_hi)
    if not (0.0 < lo <= hi and np.isfinite(hi)):
        raise ValueError(f"{name}: expected 0 < low ≤ high, got ({lo}, {hi})")
    if spacing == "linear":
        if (step is None) == (n is None):
            raise ValueError(f"{name}: give exactly one of a step or a count for linear spacing")
        if step is not None:
            if step <= 0:
                raise ValueError(f"{name} step: expected > 0, got {step}")
            # MATLAB-style lo:step:hi, robust to floating point (hi included when hit exactly).
            count = int(np.floor((hi - lo) / step + 1e-9)) + 1
            return lo + step * np.arange(count, dtype=np.float64)
        assert n is not None
        if n < 1:
            raise ValueError(f"{name} count: expected ≥ 1, got {n}")
        return np.linspace(lo, hi, n)
    if spacing == "log":
        if n is None or n < 1:
            raise ValueError(f"{name}: log spacing needs a count ≥ 1, got {n}")
        return np.geomspace(lo, hi, n)
    raise ValueError(f"spacing: expected 'linear' or 'log', got {spacing!r}")


def grid(
    t1_range_ms: tuple[float, float],
    t2_range_ms: tuple[float, float],
    *,
    t1_step_ms: float | None = None,
    t2_step_ms: float | None = None,
    n_t1: int | None = None,
    n_t2: int | None = None,
    spacing: Literal["linear", "log"] = "linear",
    b1: Iterable[float] | None = None,
    t1_greater_than_t2: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A (T1, T2[, B1]) grid in the dictionary order.

    Args:
        t1_range_ms, t2_range_ms: inclusive ``(low, high)`` ranges, ms.
        t1_step_ms, t2_step_ms: linear steps (``low:step:high``); or give ``n_t1``/``n_t2``.
        n_t1, n_t2: number of values (linear or log spacing).
        spacing: ``"linear"`` or ``"log"`` (log needs counts).
        b1: optional relative B1 values; the grid is then the product with this axis (innermost).
        t1_greater_than_t2: keep only pairs with T1 > T2 strictly (physical tissue).

    Returns:
        ``(t1_ms, t2_ms, b1)`` float64 ``(n_atoms,)`` arrays; ``b1`` is None without a B1 axis.
    """
    t1_axis = _axis(t1_range_ms, t1_step_ms, n_t1, spacing, "t1_range_ms")
    t2_axis = _axis(t2_range_ms, t2_step_ms, n_t2, spacing, "t2_range_ms")
    t1, t2 = np.meshgrid(t1_axis, t2_axis, indexing="ij")
    keep = t1 > t2 if t1_greater_than_t2 else np.ones_like(t1, dtype=bool)
    t1, t2 = t1[keep], t2[keep]
    if b1 is None:
        return t1, t2, None
    b1_axis = np.asarray(list(b1), dtype=np.float64)
    if b1_axis.ndim != 1 or b1_axis.size == 0 or np.any(b1_axis < 0) or not np.all(np.isfinite(b1_axis)):
        raise ValueError(f"b1: expected a non-empty list of finite values ≥ 0, got {b1_axis}")
    nb = b1_axis.size
    return np.repeat(t1, nb), np.repeat(t2, nb), np.tile(b1_axis, t1.size)


def subsample_indices(
    n_atoms: int,
    fold: int,
    *,
    method: Literal["stride", "random"] = "stride",
    offset: int = 0,
    seed: int | None = None,
) -> np.ndarray:
    """Indices of the atoms kept when sub-sampling a dictionary of ``n_atoms`` by ``fold``.

    * ``"stride"``: atoms ``offset, offset + fold, offset + 2·fold, …`` in the dictionary order
      (T1 ascending, then T2): deterministic, spread over the whole grid; ``0 ≤ offset < fold``
      selects one of the ``fold`` disjoint sub-dictionaries.
    * ``"random"``: ``ceil(n_atoms / fold)`` atoms drawn without replacement with
      ``numpy.random.default_rng(seed)``, returned sorted.

    Returns:
        int64 ascending indices.
    """
    if not isinstance(fold, (int, np.integer)) or fold < 1:
        raise ValueError(f"fold: expected an int ≥ 1, got {fold!r}")
    if method == "stride":
        if not 0 <= offset < fold:
            raise ValueError(f"offset: expected 0 ≤ offset < fold = {fold}, got {offset}")
        return np.arange(offset, n_atoms, fold, dtype=np.int64)
    if method == "random":
        count = -(-n_atoms // fold)
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n_atoms, size=count, replace=False)).astype(np.int64)
    raise ValueError(f"method: expected 'stride' or 'random', got {method!r}")


@dataclass(frozen=True, eq=False)
class Dictionary:
    """Simulated atoms of one schedule.

    Attributes:
        atoms: ``(n_atoms, n_frames)`` complex64 F0 signals at M0 = 1.
        t1_ms: ``(n_atoms,)`` float64.
        t2_ms: ``(n_atoms,)`` float64.
        schedule: the schedule the atoms were simulated with.
        b1: ``(n_atoms,)`` float64 relative B1, or None (B1 = 1 for all).
    """

    atoms: np.ndarray
    t1_ms: np.ndarray
    t2_ms: np.ndarray
    schedule: Schedule
    b1: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.t1_ms.shape[0]
        if self.atoms.ndim != 2 or self.atoms.shape != (n, self.schedule.n_frames):
            raise ValueError(f"atoms: expected shape ({n}, {self.schedule.n_frames}) (n_atoms, n_frames), "
                             f"got {self.atoms.shape}")
        if self.t2_ms.shape != (n,):
            raise ValueError(f"t2_ms: expected shape ({n},), got {self.t2_ms.shape}")
        if self.b1 is not None and self.b1.shape != (n,):
            raise ValueError(f"b1: expected shape ({n},), got {self.b1.shape}")

    def __len__(self) -> int:
        return self.t1_ms.shape[0]

    @property
    def n_frames(self) -> int:
        return self.atoms.shape[1]

    def magnitudes(self) -> np.ndarray:
        """``(n_atoms, n_frames)`` float32 |atoms|."""
        return np.abs(self.atoms)

    def b1_values(self) -> np.ndarray | None:
        """The dictionary's B1 planes: ``(n_planes,)`` float64 sorted distinct B1 values, or None without a B1 axis."""
        return None if self.b1 is None else np.unique(self.b1)

    # ------------------------------------------------------------------ generation
    @classmethod
    def generate(
        cls,
        schedule: Schedule,
        t1_ms: np.ndarray,
        t2_ms: np.ndarray,
        b1: np.ndarray | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> "Dictionary":
        """Simulate every atom with the EPG, ``chunk_size`` atoms at a time (float32).

        Peak memory is the complex64 output (8·n_atoms·n_frames bytes) plus one chunk's EPG
        working set, whatever the dictionary size.

        Args:
            schedule: acquisition schedule.
            t1_ms, t2_ms: ``(n_atoms,)`` ms.
            b1: ``(n_atoms,)`` relative B1, or None for B1 = 1.
            chunk_size: atoms per EPG call.
            device: where the EPG runs (``"cpu"``, ``"cuda"``, ``"auto"``).
            progress: show a tqdm bar on stderr.
        """
        t1 = np.ascontiguousarray(t1_ms, dtype=np.float64).reshape(-1)
        t2 = np.ascontiguousarray(t2_ms, dtype=np.float64).reshape(-1)
        if t1.shape != t2.shape:
            raise ValueError(f"t2_ms: expected shape {t1.shape} like t1_ms, got {t2.shape}")
        b = None if b1 is None else np.ascontiguousarray(b1, dtype=np.float64).reshape(-1)
        if b is not None and b.shape != t1.shape:
            raise ValueError(f"b1: expected shape {t1.shape} like t1_ms, got {b.shape}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        n = t1.size
        out = np.empty((n, schedule.n_frames), dtype=np.complex64)
        starts = range(0, n, chunk_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="EPG", unit="chunk", leave=False)
        for start in starts:
            sl = slice(start, min(start + chunk_size, n))
            chunk = simulate(schedule, t1[sl], t2[sl], 1.0 if b is None else b[sl], dtype=torch.float32,
                             device=device, chunk_size=chunk_size)
            out[sl] = chunk
        return cls(out, t1, t2, schedule, b)

    # ------------------------------------------------------------------ selection
    def select(self, indices: np.ndarray) -> "Dictionary":
        """A dictionary of the atoms at ``indices`` (copies)."""
        idx = np.asarray(indices)
        return Dictionary(self.atoms[idx], self.t1_ms[idx], self.t2_ms[idx], self.schedule,
                          None if self.b1 is None else self.b1[idx])

    def select_b1(self, b1: float) -> "Dictionary":
        """The atoms of one B1 plane (those whose B1 equals ``b1`` exactly), in dictionary order, with their B1.

        Raises:
            ValueError: the dictionary has no B1 axis, or ``b1`` is not one of :meth:`b1_values`.
        """
        if self.b1 is None:
            raise ValueError("b1: this dictionary has no B1 axis (Dictionary.b1 is None)")
        value = float(b1)
        keep = np.flatnonzero(self.b1 == value)
        if keep.size == 0:
            planes = self.b1_values()
            assert planes is not None
            raise ValueError(f"b1: expected one of the dictionary's B1 planes {planes.tolist()}, got {value!r}")
        return self.select(keep)

    def subsample(self, fold: int, *, method: Literal["stride", "random"] = "stride", offset: int = 0,
                  seed: int | None = None) -> "Dictionary":
        """Keep one atom in ``fold`` (see :func:`subsample_indices` for exactly which)."""
        return self.select(subsample_indices(len(self), fold, method=method, offset=offset, seed=seed))

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """Write a safetensors file (see the module docstring for its layout)."""
        from safetensors.numpy import save_file

        atoms = np.ascontiguousarray(self.atoms, dtype=np.complex64)
        tensors: dict[str, np.ndarray] = {
            "atoms": atoms.view(np.float32).reshape(len(self), self.n_frames, 2),
            "t1_ms": np.ascontiguousarray(self.t1_ms, dtype=np.float64),
            "t2_ms": np.ascontiguousarray(self.t2_ms, dtype=np.float64),
        }
        if self.b1 is not None:
            tensors["b1"] = np.ascontiguousarray(self.b1, dtype=np.float64)
        meta = {"kind": FILE_KIND, "schedule": self.schedule.to_json(), "drone_version": __version__}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Dictionary":
        """Read a file written by :meth:`save`; the schedule inside is validated."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"dictionary path {str(path)!r}: no such file")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("kind") != FILE_KIND:
                    raise ValueError(f"{path}: expected a {FILE_KIND!r} file, metadata kind is {meta.get('kind')!r}")
                data = {k: f.get_tensor(k) for k in f.keys()}
        except ValueError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{path}: not a readable safetensors dictionary ({exc})") from exc
        for key in ("atoms", "t1_ms", "t2_ms"):
            if key not in data:
                raise ValueError(f"{path}: missing tensor {key!r}")
        schedule = Schedule.from_json(meta["schedule"])
        raw = data["atoms"]
        if raw.ndim != 3 or raw.shape[2] != 2:
            raise ValueError(f"{path}: tensor 'atoms' expected shape (n, N, 2), got {raw.shape}")
        atoms = np.ascontiguousarray(raw, dtype=np.float32).view(np.complex64)[..., 0]
        return cls(atoms, data["t1_ms"], data["t2_ms"], schedule, data.get("b1"))

    def describe(self) -> str:
        """One line: size, frames, parameter ranges, schedule name and digest."""
        parts = [f"{len(self)} atoms × {self.n_frames} frames",
                 f"T1 {self.t1_ms.min():g}–{self.t1_ms.max():g} ms",
                 f"T2 {self.t2_ms.min():g}–{self.t2_ms.max():g} ms"]
        if self.b1 is not None:
            parts.append(f"B1 {self.b1.min():g}–{self.b1.max():g}")
        parts.append(f"schedule {self.schedule.name!r} ({self.schedule.digest()})")
        return ", ".join(parts)
