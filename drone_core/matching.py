"""Conventional MRF dictionary matching: the DRONE paper's baseline estimator.

Method
------
Every voxel's fingerprint ``s`` (``n_frames`` samples) is compared with every atom ``a`` of a
simulated dictionary by the cosine of their **magnitudes**::

    score(s, a) = ⟨|s|, |a|⟩ / (‖s‖ · ‖a‖)          ∈ [0, 1]

and the voxel takes the (T1, T2[, B1]) of the atom with the largest score. M0 is then the
least-squares scale of that atom onto the measured magnitudes (:func:`drone_core.m0.fit_m0`)::

    M0 = ⟨|s|, |a|⟩ / ‖a‖²  =  score · ‖s‖ / ‖a‖

Matching with a B1 map
----------------------
A dictionary with a B1 axis (``Dictionary.b1`` not None, e.g. ``grid(..., b1=[...])``) is a set of
**B1 planes**: the atoms sharing one B1 value (:attr:`Matcher.b1_planes`, the sorted distinct values).
``match(signals)`` searches all atoms, so B1 is estimated with T1 and T2. ``match(signals, b1=map)``
searches, for each voxel, only the atoms of one plane or of two neighbouring planes:

* ``b1_interpolation="nearest"`` (default): the plane whose B1 is nearest to the voxel's (a voxel
  exactly half-way between two planes takes the lower one). The result is, atom for atom, that of
  a :class:`Matcher` built from that plane's atoms alone (``Dictionary.select_b1``) with the same
  options — an SVD basis (``svd_rank``) is then the plane's own.
* ``b1_interpolation="linear"``: the voxel is matched against the dictionary **linearly
  interpolated in B1** at its own B1 ``b``: with the bracketing planes ``b_i ≤ b ≤ b_{i+1}`` and
  ``w = (b − b_i)/(b_{i+1} − b_i)``, candidate ``t`` (one (T1, T2) pair of the grid) has the
  magnitudes ``m_t(b) = (1 − w)·|a_t(b_i)| + w·|a_t(b_{i+1})|`` (interpolated signal, M0 = 1) and the
  voxel takes the (T1, T2) of the largest cosine ``⟨|s|, m_t(b)⟩ / (‖s‖‖m_t(b)‖)`` — the exact
  maximum over the interpolated candidates, not an interpolation of two matches. Outside
  ``[b_0, b_last]`` (within the margin below) the end plane is used (no extrapolation). It needs a
  product grid (every plane holds the same (T1, T2) list in the same order) and no ``svd_rank``.
  ``score`` and ``m0`` are those of the interpolated atom, ``b1`` is ``b`` (clamped to the planes'
  range) and ``index`` is the atom of the chosen (T1, T2) in the nearest plane.

Voxels whose B1 is not finite, or lies outside ``[b_0 − margin, b_last + margin]`` (``margin``:
by default half the spacing of the two end planes at each end; 0 for a single plane; or
``b1_margin``), are not matched: NaN T1/T2/B1, M0 = 0, score 0, index −1 — nothing is matched with a
made-up B1.

Planes are exact B1 values: a dictionary whose atoms each carry their own B1 (e.g. drawn at random
for training) has one plane per atom, and matching it at a voxel's B1 is meaningless — build it on a
B1 grid instead.

Efficient, exact evaluation
---------------------------
The atoms are L2-normalised once, on the device, and stored transposed ``(k, n_atoms)``. The
signals are L2-normalised and, ``chunk_size`` voxels at a time, multiplied with ``atom_chunk`` atoms
at a time (a GEMM ``(chunk, k) @ (k, atom_chunk)``), so no ``(n_voxels, n_atoms)`` matrix ever
exists; peak working memory is about ``4 · chunk_size · (atom_chunk + n_atoms / sub + sub · k)``
bytes (float32), where ``sub`` = :data:`SUB_BLOCK` (128) atoms.

A full ``max``/``argmax`` over each GEMM block costs as much as the GEMM itself on a CPU (it is
not vectorised like a plain reduction), so the search is two-level and still exact:

1. for each GEMM block, only the *maximum* (``amax``, a fast vectorised reduction) of every run of
   ``sub`` consecutive atoms is kept: ``(chunk, n_atoms / sub)`` sub-block maxima;
2. each voxel's best sub-block is found by an argmax over those, and the ``sub`` atoms of that
   sub-block alone are scored again (a batched matrix-vector product) to find the winner.

The winner is the same atom as a brute-force argmax over all scores (the first one in dictionary
order in case of exact ties, up to float rounding of near-ties ~1e-7 apart, which are below any
meaningful difference between atoms). Finally the cosine and M0 of the winning atom are
recomputed **exactly in float64** from the stored magnitudes, so ``score`` and ``m0`` do not carry
the float32 rounding of the GEMM (nor the SVD approximation below).

With a B1 map, the voxels are grouped by their plane (or pair of planes) and each group runs the
same search over that plane's atoms only, so a voxel costs one plane's search (``n_atoms /
n_planes`` atoms), not the whole dictionary's. The per-plane search structures are built on first
use (or all at once by :meth:`Matcher.prepare`) and kept; together they hold as much as the
whole-dictionary ones, which are in turn built only when ``b1=None`` is first matched (at once for
a dictionary without a B1 axis). The linear search evaluates, per GEMM block,
``(⟨ŝ(1 − w), m_i⟩ + ⟨ŝw, m_{i+1}⟩)² / ‖m_t(b)‖²`` — two GEMMs for the numerator and one of width 3
(padded to :data:`MIN_CPU_GEMM_WIDTH` on a CPU) for ``‖m_t(b)‖² = (1 − w)²‖m_i‖² + 2w(1 − w)⟨m_i,
m_{i+1}⟩ + w²‖m_{i+1}‖²`` (all terms ≥ 0: no cancellation), then a square and a division: about
2.6–3.4× the nearest-plane search whatever the number of planes (``docs/BENCHMARKS.md``, "B1: slice
profile, B1 dictionaries, network vs matching").

SVD compression (``svd_rank = k``)
----------------------------------
MRF fingerprints are highly redundant: the normalised magnitude atoms ``Â (n_atoms, N)`` are well
approximated by a rank-``k`` truncated SVD ``Â ≈ U_k S_k V_kᵀ`` with ``k`` ≪ ``N`` (McGivney et
al., IEEE TMI 2014). Signals are projected onto ``V_k`` (``N × k``) and matched in the ``k``-dim
space against ``U_k S_k = Â V_k``: the GEMM has ``k`` instead of ``N`` inner terms. The compressed
score ``⟨ŝ V_k, â V_k⟩`` is the cosine of the signal and atom *projected* onto the span of ``V_k``,
so the selected atom can differ from the full search where the discarded components (the
``1 − energy`` fraction, :attr:`Matcher.svd_energy`) would have separated nearby atoms. The
projected atoms are re-normalised, so the compressed score is the cosine of the *projected* signal
and atom, and a noise-free atom still matches itself (all atoms of the test grids at ranks 4–8 of
25; without re-normalisation rank 6 recovered only ~70 %, because a neighbour with a longer
projection wins). The accuracy cost shows under noise: on the paper dictionary at 0.5 % noise the
RMSE of T1/T2 grows by ~10 %/20 % at k = 5 and by ~2 % at k = 10 (``docs/BENCHMARKS.md``,
"Dictionary matching"); k = 3 is clearly worse. The reported ``score`` and ``m0`` are always the
exact full-dimensional values of the selected atom. On a CPU the speed-up is far below ``N / k``:
MKL's sgemm is no faster for k < 16 inner terms than for 16 (so the GEMM runs zero-padded to
:data:`MIN_CPU_GEMM_WIDTH`), and the reductions over each ``(chunk, atom_chunk)`` block cost the same
whatever k. ``svd_rank = N`` is the full search in a rotated basis (same atoms up to rounding).

Conventions
-----------
Signals are ``(n_voxels, n_frames)`` magnitudes of any scale (real, ≥ 0) or complex values (their
magnitudes are used), numpy or torch. An all-zero signal has no direction: it gets ``score = 0``,
``m0 = 0``, ``t1_ms = t2_ms = NaN`` (and ``b1 = NaN``) and ``index = -1``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch

from .dictionary import Dictionary
from .m0 import fit_m0
from .schedule import Schedule

__all__ = ["Matcher", "MatchResult", "match", "DEFAULT_CPU_CHUNKS", "DEFAULT_CUDA_CHUNKS", "SUB_BLOCK",
           "MIN_CPU_GEMM_WIDTH", "B1_INTERPOLATIONS", "B1_RANGE_SLACK"]

#: Default ``(chunk_size, atom_chunk)`` on a CPU: a 1024 × 2048 float32 GEMM block (8 MiB) keeps the
#: per-call overhead negligible; on the 2-core development machine it was the fastest of the shapes
#: tried with 1 thread and within 5 % of the fastest (1536–2048 × 2048) with 2; 256-row or
#: 4096-row blocks were 20–80 % slower (``docs/BENCHMARKS.md``, "Dictionary matching").
DEFAULT_CPU_CHUNKS = (1024, 2048)
#: Default ``(chunk_size, atom_chunk)`` on CUDA: a 4096 × 16384 float32 block (256 MiB).
DEFAULT_CUDA_CHUNKS = (4096, 16384)
#: On a CPU, GEMMs are at least this many inner terms wide (zero-padded): MKL's sgemm (PyTorch's CPU
#: BLAS) takes ~1.8× longer for the ``(1024, k) @ (k, 2048)`` block with any k < 16 than with k = 16
#: (measured on the development machine, single thread), which matters for SVD-compressed matching.
MIN_CPU_GEMM_WIDTH = 16
#: Atoms per sub-block of the two-level search (see the module docstring). ``atom_chunk`` is
#: rounded down to a multiple of it (or the sub-block shrinks to ``atom_chunk`` when smaller).
SUB_BLOCK = 128
#: How ``match(signals, b1=…)`` uses the B1 planes (module docstring, "Matching with a B1 map").
B1_INTERPOLATIONS: tuple[str, ...] = ("nearest", "linear")
#: Absolute slack on the accepted B1 range: the range ends ``b_0 − margin`` and ``b_last + margin`` are
#: computed from grid values that carry ~1e-16 rounding (0.7 + 12 · 0.05 is not exactly 1.3), so a
#: voxel B1 given as exactly ``1.325`` must not fall out by rounding; 1e-9 is far below any B1 step.
B1_RANGE_SLACK = 1e-9
#: Added to both planes' ‖m‖² in the linear search's denominator so that an atom that is zero in a
#: plane scores 0 instead of 0/0 (the candidates' magnitudes are scaled to O(1), see `_LinearPair`);
#: 1e-30 is representable in float32 (min normal 1.2e-38) and far below any real ‖m‖².
_DEN_EPS = 1e-30


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Per-voxel result of dictionary matching.

    Iterating yields ``(t1_ms, t2_ms, m0)``, so ``t1, t2, m0 = match(signals, dictionary)`` works.

    Attributes:
        t1_ms: ``(n,)`` float64, T1 of the selected atom, ms (NaN for an all-zero signal or a voxel
            whose B1 was refused).
        t2_ms: ``(n,)`` float64, T2 of the selected atom, ms (NaN likewise).
        m0: ``(n,)`` float64, least-squares scale ``⟨|s|, |a|⟩ / ‖a‖²`` in the units of the signal
            (0 for an all-zero signal or a refused B1).
        score: ``(n,)`` float64 cosine similarity of the signal and atom magnitudes, in [0, 1]
            (0 likewise), computed exactly in float64 for the selected atom.
        index: ``(n,)`` int64 index of the selected atom in the dictionary (-1 likewise). With
            ``b1_interpolation="linear"``: the atom of the chosen (T1, T2) in the plane nearest the
            voxel's B1.
        b1: ``(n,)`` float64 relative B1 of the selected atom (with ``b1_interpolation="linear"``: of
            the interpolated atom, i.e. the voxel's B1 clamped to the planes' range), or None when the
            dictionary has no B1 axis (NaN likewise).
    """

    t1_ms: np.ndarray
    t2_ms: np.ndarray
    m0: np.ndarray
    score: np.ndarray
    index: np.ndarray
    b1: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.t1_ms
        yield self.t2_ms
        yield self.m0

    def __len__(self) -> int:
        return int(self.index.shape[0])


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but torch.cuda.is_available() is False")
    return dev


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """An array-like as a numpy array (torch tensors are detached and copied to the host)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}") from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, got dtype {arr.dtype}")
    return arr


def _block_sizes(requested: int, n_atoms: int) -> tuple[int, int]:
    """Effective ``(atom_chunk, sub_block)`` for ``n_atoms`` atoms and a requested ``atom_chunk``."""
    if requested >= SUB_BLOCK:
        # No point in a block wider than the dictionary (rounded up to whole sub-blocks).
        requested = min(requested, -(-n_atoms // SUB_BLOCK) * SUB_BLOCK)
    else:
        requested = min(requested, n_atoms)
    if requested >= SUB_BLOCK:
        return (requested // SUB_BLOCK) * SUB_BLOCK, SUB_BLOCK
    return requested, requested


def _pad_rows(x: torch.Tensor, n_pad: int) -> torch.Tensor:
    """``x (n, …)`` padded to ``n_pad`` rows with copies of its last row.

    A copy scores exactly like the last atom, so it never changes a maximum, and its index is
    clamped back to ``n − 1``."""
    n = x.shape[0]
    return x if n_pad == n else torch.cat([x, x[-1:].expand(n_pad - n, *x.shape[1:])], dim=0)


def _pad_cols(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x (n, k)`` with zero columns up to ``width`` (zero columns change no inner product)."""
    k = x.shape[1]
    return x if width == k else torch.cat([x, x.new_zeros((x.shape[0], width - k))], dim=1)


class _SearchIndex:
    """The exact two-level search structures over one set of atoms (the whole dictionary or one B1 plane).

    Args:
        unit: ``(n, n_frames)`` float64 host tensor, the L2-normalised atom magnitudes (zero atoms zero).
        svd_rank: None or the rank of the SVD compression (validated by the caller).
        atom_chunk: the requested atoms per GEMM block.
        device, dtype: where and in which precision the search runs.
    """

    def __init__(self, unit: torch.Tensor, *, svd_rank: int | None, atom_chunk: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        n_atoms, n_frames = unit.shape
        self.n_atoms = int(n_atoms)
        self.device, self.dtype = device, dtype
        self.atom_chunk, self.sub_block = _block_sizes(atom_chunk, self.n_atoms)
        self.basis: torch.Tensor | None = None
        if svd_rank is None:
            self.rank = int(n_frames)
            self.svd_energy = 1.0
            search = unit
        else:
            k = int(svd_rank)
            gram = unit.T @ unit  # (N, N) = V S² Vᵀ: its eigh is cheaper than an SVD of (n_atoms, N)
            evals, evecs = torch.linalg.eigh(gram)  # ascending
            evals, evecs = evals.flip(0).clamp(min=0.0), evecs.flip(1)
            self.basis = evecs[:, :k].contiguous()  # V_k (N, k)
            self.rank = k
            total = float(evals.sum())
            self.svd_energy = float(evals[:k].sum()) / total if total > 0 else 1.0
            projected = unit @ self.basis  # U_k S_k (n_atoms, k)
            # Re-normalise the projected atoms: the score is then the cosine of the *projected* signal
            # and atom, so a noise-free atom always matches itself (score 1) instead of losing to a
            # neighbour whose projection happens to be longer.
            p_norm = projected.norm(dim=1, keepdim=True)
            search = projected / torch.where(p_norm > 0, p_norm, torch.ones_like(p_norm))
        self.n_pad = -(-self.n_atoms // self.atom_chunk) * self.atom_chunk
        search = _pad_rows(search, self.n_pad)
        # Zero columns added to both GEMM operands change no inner product; on a CPU they move MKL's
        # sgemm off its slow path for fewer than 16 inner terms (see MIN_CPU_GEMM_WIDTH).
        self.width = max(self.rank, MIN_CPU_GEMM_WIDTH) if device.type == "cpu" else self.rank
        search = _pad_cols(search, self.width)
        atoms_t = search.T.to(dtype).contiguous()  # (width, n_pad)
        self.atoms_t = atoms_t.to(device)  # GEMM operand, blocks are column slices
        # (n_sub, width, sub): the atoms of each sub-block, for the second (exact) level of the search.
        n_sub = self.n_pad // self.sub_block
        self.atoms_sub = (atoms_t.reshape(self.width, n_sub, self.sub_block).permute(1, 0, 2)
                          .contiguous().to(device))

    def inputs(self, unit: torch.Tensor) -> torch.Tensor:
        """``(m, width)`` search inputs (projected, zero-padded, in the search dtype, on the host)."""
        x = unit if self.basis is None else unit @ self.basis  # (m, k) projection, float64 on the host
        return _pad_cols(x, self.width).to(self.dtype)

    @torch.no_grad()
    def search(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``(m,)`` int64 (into this index's atoms) of the best atom for ``m`` inputs ``(m, width)``."""
        m = x.shape[0]
        ac, sub = self.atom_chunk, self.sub_block
        subs_per_block = ac // sub
        n_blocks = self.n_pad // ac
        block = torch.empty((m, ac), dtype=self.dtype, device=self.device)
        block_subs = block.view(m, subs_per_block, sub)
        sub_max = torch.empty((m, n_blocks * subs_per_block), dtype=self.dtype, device=self.device)
        for j in range(n_blocks):
            torch.mm(x, self.atoms_t[:, j * ac:(j + 1) * ac], out=block)
            torch.amax(block_subs, dim=2, out=sub_max[:, j * subs_per_block:(j + 1) * subs_per_block])
        best_sub = torch.argmax(sub_max, dim=1)  # (m,) first maximal sub-block
        candidates = torch.index_select(self.atoms_sub, 0, best_sub)  # (m, width, sub)
        scores = torch.bmm(x.unsqueeze(1), candidates).squeeze(1)  # (m, sub)
        index = best_sub * sub + torch.argmax(scores, dim=1)
        return index.clamp_(max=self.n_atoms - 1)


class _ScaledPlane:
    """One B1 plane's magnitudes for the linear-B1 search, in the two layouts of :class:`_SearchIndex`.

    Args:
        mag: ``(n, n_frames)`` float64 host tensor, the plane's magnitudes of the grid's ``n`` (T1, T2)
            candidates, each scaled by a positive factor common to all planes (the cosine does not depend
            on it; it keeps the numbers O(1)).
        atom_chunk, device, dtype: as for :class:`_SearchIndex`.
    """

    def __init__(self, mag: torch.Tensor, *, atom_chunk: int, device: torch.device, dtype: torch.dtype) -> None:
        n, n_frames = mag.shape
        self.n_atoms = int(n)
        self.atom_chunk, self.sub_block = _block_sizes(atom_chunk, self.n_atoms)
        self.n_pad = -(-self.n_atoms // self.atom_chunk) * self.atom_chunk
        self.width = max(int(n_frames), MIN_CPU_GEMM_WIDTH) if device.type == "cpu" else int(n_frames)
        self.norm_sq = (mag * mag).sum(1)  # (n,) float64 host
        self.mag = mag
        self.t, self.sub = _layouts(mag, self.n_pad, self.sub_block, self.width, device, dtype)


def _layouts(x: torch.Tensor, n_pad: int, sub_block: int, width: int, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (n, k)`` as a GEMM operand ``(width, n_pad)`` and per sub-block ``(n_sub, k, sub)`` (both on ``device``).

    Rows are padded with copies of the last one (:func:`_pad_rows`); the GEMM operand gets zero columns
    up to ``width``; the sub-block layout keeps the ``k`` real columns (it feeds batched products only)."""
    rows = _pad_rows(x, n_pad)
    t = _pad_cols(rows, width).T.to(dtype).contiguous()
    sub = rows.T.to(dtype).reshape(x.shape[1], n_pad // sub_block, sub_block).permute(1, 0, 2).contiguous()
    return t.to(device), sub.to(device)


class _LinearPair:
    """Search structures for B1-interpolated matching between two neighbouring planes ``lo`` and ``hi``.

    The planes' magnitude layouts are shared with the neighbouring pairs; the pair adds only the
    coefficients of ``‖m_t(b)‖²`` (``(coef_width + 3) · n`` values).

    Args:
        lo, hi: the two planes (:class:`_ScaledPlane`, same candidates and block sizes).
        device, dtype: as for :class:`_SearchIndex`.
    """

    def __init__(self, lo: _ScaledPlane, hi: _ScaledPlane, *, device: torch.device, dtype: torch.dtype) -> None:
        self.lo, self.hi = lo, hi
        self.n_atoms, self.atom_chunk, self.sub_block, self.n_pad = lo.n_atoms, lo.atom_chunk, lo.sub_block, lo.n_pad
        self.width = lo.width
        self.device, self.dtype = device, dtype
        self.coef_width = MIN_CPU_GEMM_WIDTH if device.type == "cpu" else 3
        # ‖m(w)‖² = (1 − w)²·‖m_lo‖² + w(1 − w)·2⟨m_lo, m_hi⟩ + w²·‖m_hi‖², all three terms ≥ 0.
        coef = torch.stack([lo.norm_sq + _DEN_EPS, 2.0 * (lo.mag * hi.mag).sum(1), hi.norm_sq + _DEN_EPS],
                           dim=1)  # (n, 3)
        self.coef_t, self.coef_sub = _layouts(coef, self.n_pad, self.sub_block, self.coef_width, device, dtype)

    def inputs(self, unit: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Host inputs for ``m`` normalised signals ``(m, N)`` at weights ``w (m,)``: ``(1 − w)·ŝ``,
        ``w·ŝ`` (both ``(m, width)``) and ``[(1 − w)², w(1 − w), w²]`` ``(m, coef_width)``."""
        w = w[:, None]
        x_lo = _pad_cols((1.0 - w) * unit, self.width).to(self.dtype)
        x_hi = _pad_cols(w * unit, self.width).to(self.dtype)
        c = _pad_cols(torch.cat([(1.0 - w) ** 2, w * (1.0 - w), w**2], dim=1), self.coef_width).to(self.dtype)
        return x_lo, x_hi, c

    @torch.no_grad()
    def search(self, x_lo: torch.Tensor, x_hi: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Indices ``(m,)`` int64 of the candidate with the largest interpolated cosine (squared)."""
        m = x_lo.shape[0]
        ac, sub = self.atom_chunk, self.sub_block
        subs_per_block = ac // sub
        n_blocks = self.n_pad // ac
        num = torch.empty((m, ac), dtype=self.dtype, device=self.device)
        den = torch.empty((m, ac), dtype=self.dtype, device=self.device)
        num_subs = num.view(m, subs_per_block, sub)
        sub_max = torch.empty((m, n_blocks * subs_per_block), dtype=self.dtype, device=self.device)
        for j in range(n_blocks):
            cols = slice(j * ac, (j + 1) * ac)
            torch.mm(x_lo, self.lo.t[:, cols], out=num)
            num.addmm_(x_hi, self.hi.t[:, cols])
            torch.mm(c, self.coef_t[:, cols], out=den)
            num.mul_(num).div_(den)  # cos² · ‖ŝ‖²: the numerator is ≥ 0, so its square keeps the order
            torch.amax(num_subs, dim=2, out=sub_max[:, j * subs_per_block:(j + 1) * subs_per_block])
        best_sub = torch.argmax(sub_max, dim=1)
        n_frames = self.lo.sub.shape[1]
        numer = (torch.bmm(x_lo[:, None, :n_frames], torch.index_select(self.lo.sub, 0, best_sub))
                 + torch.bmm(x_hi[:, None, :n_frames], torch.index_select(self.hi.sub, 0, best_sub))).squeeze(1)
        denom = torch.bmm(c[:, None, :3], torch.index_select(self.coef_sub, 0, best_sub)).squeeze(1)
        index = best_sub * sub + torch.argmax(numer * numer / denom, dim=1)
        return index.clamp_(max=self.n_atoms - 1)


class Matcher:
    """Dictionary matching against a fixed dictionary; build once, call :meth:`match` many times.

    Args:
        dictionary: the simulated dictionary (its atoms' magnitudes are used). See
            :meth:`from_arrays` to build from plain arrays.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a ``torch.device``:
            where the GEMMs run.
        dtype: ``torch.float32`` (default) or ``torch.float64``: precision of the search. The
            returned ``score`` and ``m0`` are recomputed in float64 whatever this is.
        svd_rank: ``None`` (full search) or ``k`` in ``1 … n_frames``: match in the span of the top
            ``k`` right singular vectors of the normalised magnitude atoms (see the module
            docstring for the accuracy trade-off).
        chunk_size: voxels per GEMM block (default 1024 on CPU, 4096 on CUDA).
        atom_chunk: atoms per GEMM block (default 2048 on CPU, 16384 on CUDA); rounded down to a
            multiple of :data:`SUB_BLOCK` when larger than it.

    Attributes:
        n_atoms, n_frames: dictionary size.
        t1_ms, t2_ms: ``(n_atoms,)`` float64 grid values; ``b1``: ``(n_atoms,)`` or None.
        b1_planes: ``(n_planes,)`` float64 sorted distinct B1 values of the dictionary, or None.
        schedule: the dictionary's schedule (None when built from arrays).
        rank: dimension of the search space (``svd_rank`` or ``n_frames``).
        svd_energy: fraction of ``‖Â‖_F²`` kept by the rank-``k`` projection of the whole dictionary
            (1.0 without SVD).
        chunk_size, atom_chunk, sub_block: the effective block sizes of the whole-dictionary search.
        device, dtype: where and in which precision the search runs.

    Calling the matcher is the same as :meth:`match`; a matcher holds no per-call state (the search
    structures it builds on first use are built once, under a lock), so one instance can serve
    several threads.

    Memory: the normalised (or compressed) atoms twice on the device (``2 · 4 · n_atoms · width``
    bytes in float32, two layouts; width = rank, or :data:`MIN_CPU_GEMM_WIDTH` on a CPU if larger)
    for the whole-dictionary search, about as much again for all B1 planes' searches once used, and
    again for the linear-B1 search once used (plus ``4 · (coef_width + 3)`` bytes per candidate and
    pair of planes), the magnitudes on the host (``4 · n_atoms · n_frames``), plus the per-block
    working set given in the module docstring. :meth:`search_bytes` reports what is held.
    """

    def __init__(
        self,
        dictionary: Dictionary,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        svd_rank: int | None = None,
        chunk_size: int | None = None,
        atom_chunk: int | None = None,
    ) -> None:
        if not isinstance(dictionary, Dictionary):
            raise TypeError(f"dictionary: expected drone_core.dictionary.Dictionary, got {type(dictionary).__name__}"
                            " (use Matcher.from_arrays for plain arrays)")
        self._build(dictionary.atoms, dictionary.t1_ms, dictionary.t2_ms, dictionary.b1, dictionary.schedule,
                    device=device, dtype=dtype, svd_rank=svd_rank, chunk_size=chunk_size, atom_chunk=atom_chunk)

    @classmethod
    def from_arrays(
        cls,
        atoms: np.ndarray | torch.Tensor,
        t1_ms: np.ndarray | torch.Tensor,
        t2_ms: np.ndarray | torch.Tensor,
        b1: np.ndarray | torch.Tensor | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        svd_rank: int | None = None,
        chunk_size: int | None = None,
        atom_chunk: int | None = None,
    ) -> "Matcher":
        """A matcher from plain arrays.

        Args:
            atoms: ``(n_atoms, n_frames)`` complex or real (≥ 0) atom signals at M0 = 1.
            t1_ms, t2_ms: ``(n_atoms,)`` parameter values, ms.
            b1: ``(n_atoms,)`` relative B1, or None.
            device, dtype, svd_rank, chunk_size, atom_chunk: as for :class:`Matcher`.
        """
        self = cls.__new__(cls)
        self._build(atoms, t1_ms, t2_ms, b1, None, device=device, dtype=dtype, svd_rank=svd_rank,
                    chunk_size=chunk_size, atom_chunk=atom_chunk)
        return self

    # ------------------------------------------------------------------ construction
    def _build(self, atoms: Any, t1_ms: Any, t2_ms: Any, b1: Any, schedule: Schedule | None, *,
               device: str | torch.device, dtype: torch.dtype, svd_rank: int | None,
               chunk_size: int | None, atom_chunk: int | None) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.device = _resolve_device(device)
        self.dtype = dtype
        self.schedule = schedule

        raw = _to_numpy(atoms, "atoms")
        if raw.ndim != 2 or raw.shape[0] < 1 or raw.shape[1] < 1:
            raise ValueError(f"atoms: expected a non-empty 2-D array (n_atoms, n_frames), got shape {raw.shape}")
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"atoms: expected finite values, got {int(np.sum(~np.isfinite(raw)))} non-finite")
        if not np.iscomplexobj(raw) and np.any(raw < 0):
            raise ValueError(f"atoms: expected complex values or magnitudes ≥ 0, got min {raw.min()}")
        n_atoms, n_frames = raw.shape
        self.n_atoms, self.n_frames = int(n_atoms), int(n_frames)
        params: dict[str, np.ndarray | None] = {}
        for name, value in (("t1_ms", t1_ms), ("t2_ms", t2_ms), ("b1", b1)):
            if value is None and name == "b1":
                params[name] = None
                continue
            arr = np.ascontiguousarray(_to_numpy(value, name), dtype=np.float64).reshape(-1)
            if arr.shape != (n_atoms,):
                raise ValueError(f"{name}: expected shape ({n_atoms},) (n_atoms,), got {arr.shape}")
            params[name] = arr
        t1_arr, t2_arr = params["t1_ms"], params["t2_ms"]
        assert t1_arr is not None and t2_arr is not None  # required above
        self.t1_ms: np.ndarray = t1_arr
        self.t2_ms: np.ndarray = t2_arr
        self.b1: np.ndarray | None = params["b1"]
        if self.b1 is not None and not np.all(np.isfinite(self.b1)):
            raise ValueError(f"b1: expected finite atom B1 values, got {int(np.sum(~np.isfinite(self.b1)))} non-finite")

        # Host magnitudes (float32) for the exact float64 score/M0 of the selected atoms.
        self._mag = np.ascontiguousarray(np.abs(raw), dtype=np.float32)
        self._norm_sq = np.einsum("af,af->a", self._mag, self._mag, dtype=np.float64)

        default_chunk, default_atom_chunk = DEFAULT_CUDA_CHUNKS if self.device.type == "cuda" else DEFAULT_CPU_CHUNKS
        self.chunk_size = _positive_int(default_chunk if chunk_size is None else chunk_size, "chunk_size")
        self._atom_chunk_request = _positive_int(default_atom_chunk if atom_chunk is None else atom_chunk,
                                                 "atom_chunk")
        self.atom_chunk, self.sub_block = _block_sizes(self._atom_chunk_request, self.n_atoms)
        if svd_rank is not None and (isinstance(svd_rank, bool) or not isinstance(svd_rank, (int, np.integer))
                                     or not 1 <= svd_rank <= n_frames):
            raise ValueError(f"svd_rank: expected None or an int in 1 … {n_frames} (n_frames), got {svd_rank!r}")
        self._svd_rank = None if svd_rank is None else int(svd_rank)
        self.rank = self.n_frames if svd_rank is None else int(svd_rank)

        # B1 planes: atom indices of each distinct B1 value, in dictionary order.
        self.b1_planes: np.ndarray | None = None
        self._plane_atoms: list[np.ndarray] = []
        if self.b1 is not None:
            self.b1_planes, plane_of_atom = np.unique(self.b1, return_inverse=True)
            order = np.argsort(plane_of_atom, kind="stable")
            bounds = np.cumsum(np.bincount(plane_of_atom, minlength=self.b1_planes.size))[:-1]
            self._plane_atoms = [a.astype(np.int64) for a in np.split(order, bounds)]

        self._lock = threading.Lock()
        self._full: _SearchIndex | None = None
        self._planes: dict[int, _SearchIndex] = {}
        self._pairs: dict[int, _LinearPair] = {}
        self._scaled: dict[int, _ScaledPlane] = {}
        self._pair_scale: np.ndarray | None = None  # per (T1, T2) candidate, for the linear search
        self._svd_energy: float | None = None
        if self.b1 is None:
            self._full_index()  # no B1 axis: the whole-dictionary search is the only one, build it now

    def _unit(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """``(m, n_frames)`` float64 host tensor: the L2-normalised magnitudes of the atoms at ``indices``."""
        # Host linear algebra goes through torch (one thread pool for the whole matcher; numpy's own BLAS
        # threads would compete with torch's on a small machine).
        mag = self._mag if indices is None else self._mag[indices]
        norm_sq = self._norm_sq if indices is None else self._norm_sq[indices]
        safe = torch.from_numpy(np.sqrt(np.where(norm_sq > 0, norm_sq, 1.0)))
        return torch.from_numpy(mag).to(torch.float64) / safe[:, None]  # zero atoms stay zero

    def _new_index(self, indices: np.ndarray | None) -> _SearchIndex:
        return _SearchIndex(self._unit(indices), svd_rank=self._svd_rank, atom_chunk=self._atom_chunk_request,
                            device=self.device, dtype=self.dtype)

    def _full_index(self) -> _SearchIndex:
        if self._full is None:
            with self._lock:
                if self._full is None:
                    self._full = self._new_index(None)
        return self._full

    def _plane_index(self, plane: int) -> _SearchIndex:
        if len(self._plane_atoms) == 1:  # one plane: its atoms are the whole dictionary, in the same order
            return self._full_index()
        index = self._planes.get(plane)
        if index is None:
            with self._lock:
                index = self._planes.get(plane)
                if index is None:
                    index = self._new_index(self._plane_atoms[plane])
                    self._planes[plane] = index
        return index

    def _check_product_grid(self) -> None:
        """The linear search needs every plane to hold the same (T1, T2) list in the same order."""
        if self._svd_rank is not None:
            raise ValueError(f"b1_interpolation: 'linear' needs the full search, got a matcher with "
                             f"svd_rank={self._svd_rank}")
        first = self._plane_atoms[0]
        for p, atoms in enumerate(self._plane_atoms[1:], start=1):
            assert self.b1_planes is not None
            if atoms.size != first.size or not (np.array_equal(self.t1_ms[atoms], self.t1_ms[first])
                                                and np.array_equal(self.t2_ms[atoms], self.t2_ms[first])):
                raise ValueError(f"b1_interpolation: 'linear' needs a product grid (every B1 plane with the same "
                                 f"(T1, T2) list in the same order); plane B1 = {self.b1_planes[p]:g} has "
                                 f"{atoms.size} atoms or another (T1, T2) list than plane B1 = "
                                 f"{self.b1_planes[0]:g} ({first.size} atoms)")

    def _scaled_plane(self, plane: int) -> _ScaledPlane:
        """Called with the lock held."""
        scaled = self._scaled.get(plane)
        if scaled is None:
            if self._pair_scale is None:
                # One factor per candidate, common to all planes: 1 / its largest norm over the planes.
                norms = np.sqrt(np.stack([self._norm_sq[a] for a in self._plane_atoms]).max(axis=0))
                self._pair_scale = 1.0 / np.where(norms > 0, norms, 1.0)
            mag = torch.from_numpy(self._mag[self._plane_atoms[plane]]).to(torch.float64)
            scaled = _ScaledPlane(mag * torch.from_numpy(self._pair_scale)[:, None],
                                  atom_chunk=self._atom_chunk_request, device=self.device, dtype=self.dtype)
            self._scaled[plane] = scaled
        return scaled

    def _pair(self, lower: int) -> _LinearPair:
        pair = self._pairs.get(lower)
        if pair is None:
            with self._lock:
                pair = self._pairs.get(lower)
                if pair is None:
                    pair = _LinearPair(self._scaled_plane(lower), self._scaled_plane(lower + 1), device=self.device,
                                       dtype=self.dtype)
                    self._pairs[lower] = pair
        return pair

    def prepare(self, *, planes: bool = True, full: bool = False, linear: bool = False) -> "Matcher":
        """Build search structures now instead of on first use (e.g. before timing, or before serving).

        Args:
            planes: every B1 plane's search (``match(signals, b1=…)``); ignored without a B1 axis.
            full: the whole-dictionary search (``match(signals)``; always built without a B1 axis).
            linear: every pair of neighbouring planes' linear-B1 search (``b1_interpolation="linear"``).

        Returns:
            this matcher.
        """
        if full:
            self._full_index()
        if self.b1_planes is not None:
            if planes:
                for p in range(self.b1_planes.size):
                    self._plane_index(p)
            if linear and self.b1_planes.size > 1:
                self._check_product_grid()
                for p in range(self.b1_planes.size - 1):
                    self._pair(p)
        return self

    def search_bytes(self) -> dict[str, int]:
        """Bytes held by the search structures built so far, by kind (on :attr:`device`), plus the host magnitudes.

        Returns:
            ``{"full": …, "planes": …, "linear": …, "host": …}``: the whole-dictionary search, the B1
            planes' searches, the linear-B1 structures (planes' scaled magnitudes and pairs' coefficients),
            and the host copy of the magnitudes used for the exact float64 score/M0.
        """
        def size(*tensors: torch.Tensor) -> int:
            return sum(t.numel() * t.element_size() for t in tensors)

        full = 0 if self._full is None else size(self._full.atoms_t, self._full.atoms_sub)
        planes = sum(size(p.atoms_t, p.atoms_sub) for p in self._planes.values())
        linear = (sum(size(p.t, p.sub) for p in self._scaled.values())
                  + sum(size(p.coef_t, p.coef_sub) for p in self._pairs.values()))
        return {"full": full, "planes": planes, "linear": linear, "host": int(self._mag.nbytes)}

    @property
    def svd_energy(self) -> float:
        """Fraction of ``‖Â‖_F²`` kept by the rank-``k`` projection of the whole dictionary (1.0 without SVD)."""
        if self._full is not None:
            return self._full.svd_energy
        if self._svd_rank is None:
            return 1.0
        if self._svd_energy is None:
            unit = self._unit()
            evals = torch.linalg.eigvalsh(unit.T @ unit).flip(0).clamp(min=0.0)
            total = float(evals.sum())
            self._svd_energy = float(evals[:self._svd_rank].sum()) / total if total > 0 else 1.0
        return self._svd_energy

    @property
    def _width(self) -> int:
        """Executed GEMM width of the whole-dictionary search (rank, zero-padded on a CPU)."""
        return max(self.rank, MIN_CPU_GEMM_WIDTH) if self.device.type == "cpu" else self.rank

    def __repr__(self) -> str:
        svd = "" if self._svd_rank is None else f", svd_rank={self.rank} (energy {self.svd_energy:.6f})"
        planes = "" if self.b1_planes is None else f", {self.b1_planes.size} B1 planes"
        return (f"Matcher({self.n_atoms} atoms × {self.n_frames} frames{planes}{svd}, device={self.device}, "
                f"dtype={self.dtype}, chunk_size={self.chunk_size}, atom_chunk={self.atom_chunk})")

    # ------------------------------------------------------------------ matching
    def _check_signals(self, signals: Any) -> np.ndarray:
        """Validated ``(n, n_frames)`` float64 magnitudes on the host."""
        arr = _to_numpy(signals, "signals")
        if arr.ndim != 2:
            raise ValueError(f"signals: expected a 2-D array (n_voxels, n_frames) with n_frames = {self.n_frames}, "
                             f"got shape {arr.shape}")
        if arr.shape[1] != self.n_frames:
            raise ValueError(f"signals: expected n_frames = {self.n_frames} (the dictionary's) in shape "
                             f"(n_voxels, n_frames), got {arr.shape[1]} (shape {arr.shape})")
        finite = np.isfinite(arr)
        if not finite.all():
            raise ValueError(f"signals: expected finite values, got {int(arr.size - finite.sum())} non-finite "
                             f"(NaN/inf) of {arr.size}")
        if np.iscomplexobj(arr):
            return np.abs(arr).astype(np.float64, copy=False)
        mag = arr.astype(np.float64, copy=False)
        if mag.size and mag.min() < 0:
            raise ValueError(f"signals: expected magnitudes ≥ 0 (or complex values), got min {mag.min():g}; "
                             "pass the complex data or np.abs(...) of it")
        return mag

    def _check_b1(self, b1: Any, n: int) -> np.ndarray | None:
        """Validated voxel B1 ``(n,)`` float64 (non-finite values kept: they are refused per voxel)."""
        if b1 is None:
            return None
        if self.b1 is None:
            raise ValueError("b1: this dictionary has no B1 axis (Dictionary.b1 is None), so it cannot be matched "
                             "at a voxel's B1; pass b1=None, or build the dictionary on a B1 grid "
                             "(drone_core.dictionary.grid(..., b1=[...]))")
        arr = _to_numpy(b1, "b1")
        if np.iscomplexobj(arr):
            raise TypeError(f"b1: expected real relative B1 values, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if arr.ndim == 0:
            return np.full(n, float(arr))
        if arr.shape != (n,):
            raise ValueError(f"b1: expected None, a number or shape ({n},) (n_voxels,) like the signals, "
                             f"got shape {arr.shape}")
        return arr

    def _voxel_planes(self, b1: np.ndarray, b1_margin: float | None) -> tuple[np.ndarray, np.ndarray]:
        """``(accepted, nearest)``: which voxels' B1 lies in the accepted range, and each voxel's nearest plane."""
        planes = self.b1_planes
        assert planes is not None
        if b1_margin is None:
            margin_lo = 0.5 * (planes[1] - planes[0]) if planes.size > 1 else 0.0
            margin_hi = 0.5 * (planes[-1] - planes[-2]) if planes.size > 1 else 0.0
        else:
            margin_lo = margin_hi = b1_margin
        with np.errstate(invalid="ignore"):
            accepted = (np.isfinite(b1) & (b1 >= planes[0] - margin_lo - B1_RANGE_SLACK)
                        & (b1 <= planes[-1] + margin_hi + B1_RANGE_SLACK))
        midpoints = 0.5 * (planes[:-1] + planes[1:])
        nearest = np.searchsorted(midpoints, np.where(accepted, b1, planes[0]), side="left")  # half-way → lower
        return accepted, nearest

    def _run(self, index: _SearchIndex, unit: torch.Tensor) -> np.ndarray:
        """Local indices ``(m,)`` int64 of the best atoms of ``index`` for ``m`` normalised signals ``(m, N)``."""
        m = unit.shape[0]
        out = torch.empty((m,), dtype=torch.int64, device=self.device)
        for start in range(0, m, self.chunk_size):
            stop = min(start + self.chunk_size, m)
            out[start:stop] = index.search(index.inputs(unit[start:stop]).to(self.device))
        return out.cpu().numpy()

    def _run_linear(self, pair: _LinearPair, unit: torch.Tensor, w: torch.Tensor) -> np.ndarray:
        m = unit.shape[0]
        out = torch.empty((m,), dtype=torch.int64, device=self.device)
        for start in range(0, m, self.chunk_size):
            stop = min(start + self.chunk_size, m)
            x_lo, x_hi, c = pair.inputs(unit[start:stop], w[start:stop])
            out[start:stop] = pair.search(x_lo.to(self.device), x_hi.to(self.device), c.to(self.device))
        return out.cpu().numpy()

    def match(self, signals: np.ndarray | torch.Tensor, b1: Any = None, *,
              b1_interpolation: Literal["nearest", "linear"] = "nearest",
              b1_margin: float | None = None) -> MatchResult:
        """Match every voxel's fingerprint, over the whole dictionary or at each voxel's B1.

        Args:
            signals: ``(n_voxels, n_frames)`` magnitudes (real, ≥ 0, any scale) or complex values
                (their magnitudes are used); numpy array or torch tensor on any device.
            b1: None (search all atoms; with a B1 axis B1 is estimated too), or the voxels' relative
                B1 (from a B1 map), ``(n_voxels,)`` or a number: each voxel is matched against its B1
                plane(s) only (module docstring, "Matching with a B1 map"). Needs a dictionary with a
                B1 axis. Non-finite or out-of-range values give that voxel NaN T1/T2/B1, M0 = 0,
                score 0 and index −1.
            b1_interpolation: ``"nearest"`` (the nearest B1 plane) or ``"linear"`` (the dictionary
                linearly interpolated in B1 at the voxel's B1; product grids, no ``svd_rank``).
                Ignored with ``b1=None``.
            b1_margin: how far (relative B1, ≥ 0) below the lowest and above the highest plane a voxel's
                B1 is still accepted; None → half the spacing of the two end planes at each end (0 for
                a single plane). Ignored with ``b1=None``.

        Returns:
            a :class:`MatchResult` (numpy arrays on the host).

        Raises:
            ValueError: wrong ndim or frame count, non-finite values, negative real values; ``b1`` of
                the wrong shape or given for a dictionary without a B1 axis; a bad ``b1_interpolation``
                or ``b1_margin``; ``"linear"`` on a non-product grid or with ``svd_rank``.
            TypeError: not an array of numbers.
        """
        if b1_interpolation not in B1_INTERPOLATIONS:
            raise ValueError(f"b1_interpolation: expected one of {list(B1_INTERPOLATIONS)}, got {b1_interpolation!r}")
        if b1_margin is not None:
            if isinstance(b1_margin, bool) or not isinstance(b1_margin, (int, float, np.integer, np.floating)) \
                    or not b1_margin >= 0:
                raise ValueError(f"b1_margin: expected None or a number ≥ 0 (relative B1), got {b1_margin!r}")
            b1_margin = float(b1_margin)
        mag = self._check_signals(signals)
        n = mag.shape[0]
        b1_voxel = self._check_b1(b1, n)
        norm = np.sqrt(np.einsum("nf,nf->n", mag, mag))
        nonzero = norm > 0
        unit = torch.from_numpy(mag) / torch.from_numpy(np.where(nonzero, norm, 1.0))[:, None]

        valid = nonzero
        b1_out: np.ndarray | None
        if b1_voxel is None:
            index = self._run(self._full_index(), unit)
            atom_mag = self._mag[index].astype(np.float64)  # (n, N)
            b1_out = None if self.b1 is None else self.b1[index]
        else:
            planes = self.b1_planes
            assert planes is not None
            accepted, nearest = self._voxel_planes(b1_voxel, b1_margin)
            valid = nonzero & accepted
            index = np.zeros(n, dtype=np.int64)
            if b1_interpolation == "nearest" or planes.size == 1:
                for p in np.unique(nearest[valid]):
                    rows = np.flatnonzero(valid & (nearest == p))
                    index[rows] = self._plane_atoms[p][self._run(self._plane_index(int(p)), unit[rows])]
                atom_mag = self._mag[index].astype(np.float64)
                b1_out = planes[nearest].astype(np.float64)
            else:
                self._check_product_grid()
                b_clamped = np.clip(np.where(valid, b1_voxel, planes[0]), planes[0], planes[-1])
                lower = np.clip(np.searchsorted(planes, b_clamped, side="right") - 1, 0, planes.size - 2)
                w = (b_clamped - planes[lower]) / (planes[lower + 1] - planes[lower])  # in [0, 1]
                candidate = np.zeros(n, dtype=np.int64)
                w_t = torch.from_numpy(w)
                for p in np.unique(lower[valid]):
                    rows = np.flatnonzero(valid & (lower == p))
                    candidate[rows] = self._run_linear(self._pair(int(p)), unit[rows], w_t[rows])
                lo_atoms = np.stack(self._plane_atoms)[lower, candidate]
                hi_atoms = np.stack(self._plane_atoms)[lower + 1, candidate]
                index = np.stack(self._plane_atoms)[nearest, candidate]
                atom_mag = ((1.0 - w)[:, None] * self._mag[lo_atoms].astype(np.float64)
                            + w[:, None] * self._mag[hi_atoms].astype(np.float64))
                b1_out = b_clamped

        # Exact float64 score and M0 of the selected atoms.
        m0 = np.asarray(fit_m0(mag, atom_mag))
        inner = np.einsum("nf,nf->n", mag, atom_mag)
        denom = norm * np.sqrt(np.einsum("nf,nf->n", atom_mag, atom_mag))
        score = np.zeros(n, dtype=np.float64)
        np.divide(inner, denom, out=score, where=denom > 0)
        np.clip(score, 0.0, 1.0, out=score)

        t1 = self.t1_ms[index]
        t2 = self.t2_ms[index]
        if not valid.all():
            bad = ~valid
            index[bad] = -1
            t1[bad] = np.nan
            t2[bad] = np.nan
            m0[bad] = 0.0
            score[bad] = 0.0
            if b1_out is not None:
                b1_out[bad] = np.nan
        return MatchResult(t1_ms=t1, t2_ms=t2, m0=m0, score=score, index=index.astype(np.int64, copy=False),
                           b1=b1_out)

    __call__ = match


def match(signals: np.ndarray | torch.Tensor, dictionary: Dictionary | Matcher, b1: Any = None, *,
          b1_interpolation: Literal["nearest", "linear"] = "nearest", b1_margin: float | None = None,
          **kwargs: Any) -> MatchResult:
    """Match ``signals`` against ``dictionary`` (convenience wrapper around :class:`Matcher`).

    Args:
        signals: ``(n_voxels, n_frames)`` magnitudes (any scale) or complex values.
        dictionary: a :class:`~drone_core.dictionary.Dictionary` (a :class:`Matcher` is built for this
            call with ``**kwargs``) or an existing :class:`Matcher` (then no kwargs).
        b1: None or the voxels' relative B1 ``(n_voxels,)`` (see :meth:`Matcher.match`).
        b1_interpolation, b1_margin: as for :meth:`Matcher.match`.
        **kwargs: ``device``, ``dtype``, ``svd_rank``, ``chunk_size``, ``atom_chunk``.

    Returns:
        a :class:`MatchResult`; ``t1_ms, t2_ms, m0 = match(signals, dictionary)`` unpacks it.
    """
    options = dict(b1_interpolation=b1_interpolation, b1_margin=b1_margin)
    if isinstance(dictionary, Matcher):
        if kwargs:
            raise TypeError(f"match: options {sorted(kwargs)} apply when building a Matcher; "
                            "the given Matcher already has its own")
        return dictionary.match(signals, b1, **options)  # type: ignore[arg-type]
    if not isinstance(dictionary, Dictionary):
        raise TypeError(f"dictionary: expected drone_core.dictionary.Dictionary or Matcher, "
                        f"got {type(dictionary).__name__}")
    return Matcher(dictionary, **kwargs).match(signals, b1, **options)  # type: ignore[arg-type]
