"""Conventional MRF dictionary matching: the DRONE paper's baseline estimator.

Method
------
Every voxel's fingerprint ``s`` (``n_frames`` samples) is compared with every atom ``a`` of a
simulated dictionary by the cosine of their **magnitudes**::

    score(s, a) = ⟨|s|, |a|⟩ / (‖s‖ · ‖a‖)          ∈ [0, 1]

and the voxel takes the (T1, T2[, B1]) of the atom with the largest score. M0 is then the
least-squares scale of that atom onto the measured magnitudes (:func:`drone_core.m0.fit_m0`)::

    M0 = ⟨|s|, |a|⟩ / ‖a‖²  =  score · ‖s‖ / ‖a‖

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

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from .dictionary import Dictionary
from .m0 import fit_m0
from .schedule import Schedule

__all__ = ["Matcher", "MatchResult", "match", "DEFAULT_CPU_CHUNKS", "DEFAULT_CUDA_CHUNKS", "SUB_BLOCK",
           "MIN_CPU_GEMM_WIDTH"]

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


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Per-voxel result of dictionary matching.

    Iterating yields ``(t1_ms, t2_ms, m0)``, so ``t1, t2, m0 = match(signals, dictionary)`` works.

    Attributes:
        t1_ms: ``(n,)`` float64, T1 of the selected atom, ms (NaN for an all-zero signal).
        t2_ms: ``(n,)`` float64, T2 of the selected atom, ms (NaN for an all-zero signal).
        m0: ``(n,)`` float64, least-squares scale ``⟨|s|, |a|⟩ / ‖a‖²`` in the units of the signal
            (0 for an all-zero signal).
        score: ``(n,)`` float64 cosine similarity of the signal and atom magnitudes, in [0, 1]
            (0 for an all-zero signal), computed exactly in float64 for the selected atom.
        index: ``(n,)`` int64 index of the selected atom in the dictionary (-1 for an all-zero signal).
        b1: ``(n,)`` float64 relative B1 of the selected atom, or None when the dictionary has no B1
            axis (NaN for an all-zero signal).
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
        schedule: the dictionary's schedule (None when built from arrays).
        rank: dimension of the search space (``svd_rank`` or ``n_frames``).
        svd_energy: fraction of ``‖Â‖_F²`` kept by the rank-``k`` projection (1.0 without SVD).
        chunk_size, atom_chunk, sub_block: the effective block sizes.
        device, dtype: where and in which precision the search runs.

    Calling the matcher is the same as :meth:`match`; a matcher holds no per-call state, so one
    instance can serve several threads.

    Memory: the normalised (or compressed) atoms twice on the device (``2 · 4 · n_atoms · width``
    bytes in float32, two layouts; width = rank, or :data:`MIN_CPU_GEMM_WIDTH` on a CPU if larger),
    the magnitudes on the host (``4 · n_atoms · n_frames``), plus
    the per-block working set given in the module docstring.
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

        # Host magnitudes (float32) for the exact float64 score/M0 of the selected atoms.
        self._mag = np.ascontiguousarray(np.abs(raw), dtype=np.float32)
        norms = np.sqrt(np.einsum("af,af->a", self._mag, self._mag, dtype=np.float64))
        self._norm_sq = norms**2

        default_chunk, default_atom_chunk = DEFAULT_CUDA_CHUNKS if self.device.type == "cuda" else DEFAULT_CPU_CHUNKS
        self.chunk_size = _positive_int(default_chunk if chunk_size is None else chunk_size, "chunk_size")
        requested = _positive_int(default_atom_chunk if atom_chunk is None else atom_chunk, "atom_chunk")
        if requested >= SUB_BLOCK:
            # No point in a block wider than the dictionary (rounded up to whole sub-blocks).
            requested = min(requested, -(-n_atoms // SUB_BLOCK) * SUB_BLOCK)
        else:
            requested = min(requested, n_atoms)
        if requested >= SUB_BLOCK:
            self.sub_block = SUB_BLOCK
            self.atom_chunk = (requested // SUB_BLOCK) * SUB_BLOCK
        else:
            self.sub_block = requested
            self.atom_chunk = requested

        # Normalised magnitudes, float64 on the host while building (n_atoms × n_frames, small). Host
        # linear algebra goes through torch (one thread pool for the whole matcher; numpy's own BLAS
        # threads would compete with torch's on a small machine).
        safe = torch.from_numpy(np.where(norms > 0, norms, 1.0))
        unit = torch.from_numpy(self._mag).to(torch.float64) / safe[:, None]  # zero atoms stay zero

        if svd_rank is None:
            self.rank = n_frames
            self.svd_energy = 1.0
            self._basis: torch.Tensor | None = None
            search = unit
        else:
            if isinstance(svd_rank, bool) or not isinstance(svd_rank, (int, np.integer)) \
                    or not 1 <= svd_rank <= n_frames:
                raise ValueError(f"svd_rank: expected None or an int in 1 … {n_frames} (n_frames), got {svd_rank!r}")
            k = int(svd_rank)
            gram = unit.T @ unit  # (N, N) = V S² Vᵀ: its eigh is cheaper than an SVD of (n_atoms, N)
            evals, evecs = torch.linalg.eigh(gram)  # ascending
            evals, evecs = evals.flip(0).clamp(min=0.0), evecs.flip(1)
            basis = evecs[:, :k].contiguous()  # V_k (N, k)
            self.rank = k
            total = float(evals.sum())
            self.svd_energy = float(evals[:k].sum()) / total if total > 0 else 1.0
            self._basis = basis
            projected = unit @ basis  # U_k S_k (n_atoms, k)
            # Re-normalise the projected atoms: the score is then the cosine of the *projected* signal
            # and atom, so a noise-free atom always matches itself (score 1) instead of losing to a
            # neighbour whose projection happens to be longer.
            p_norm = projected.norm(dim=1, keepdim=True)
            search = projected / torch.where(p_norm > 0, p_norm, torch.ones_like(p_norm))

        # Pad to a whole number of GEMM blocks with copies of the last atom: a copy scores exactly like
        # the last atom, so it never changes a maximum, and its index is clamped back to n_atoms − 1.
        n_pad = -(-n_atoms // self.atom_chunk) * self.atom_chunk
        if n_pad > n_atoms:
            search = torch.cat([search, search[-1:].expand(n_pad - n_atoms, -1)], dim=0)
        self._n_pad = n_pad
        # Zero columns added to both GEMM operands change no inner product; on a CPU they move MKL's
        # sgemm off its slow path for fewer than 16 inner terms (see MIN_CPU_GEMM_WIDTH).
        self._width = max(self.rank, MIN_CPU_GEMM_WIDTH) if self.device.type == "cpu" else self.rank
        if self._width > self.rank:
            search = torch.cat([search, search.new_zeros((n_pad, self._width - self.rank))], dim=1)
        atoms_t = search.T.to(dtype).contiguous()  # (width, n_pad)
        self._atoms_t = atoms_t.to(self.device)  # GEMM operand, blocks are column slices
        # (n_sub, width, sub): the atoms of each sub-block, for the second (exact) level of the search.
        n_sub = n_pad // self.sub_block
        self._atoms_sub = (atoms_t.reshape(self._width, n_sub, self.sub_block).permute(1, 0, 2)
                           .contiguous().to(self.device))

    def __repr__(self) -> str:
        svd = "" if self._basis is None else f", svd_rank={self.rank} (energy {self.svd_energy:.6f})"
        return (f"Matcher({self.n_atoms} atoms × {self.n_frames} frames{svd}, device={self.device}, "
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

    @torch.no_grad()
    def _search(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``(m,)`` int64 of the best atom for ``m`` normalised (projected) signals ``(m, width)``."""
        m = x.shape[0]
        ac, sub = self.atom_chunk, self.sub_block
        subs_per_block = ac // sub
        n_blocks = self._n_pad // ac
        block = torch.empty((m, ac), dtype=self.dtype, device=self.device)
        block_subs = block.view(m, subs_per_block, sub)
        sub_max = torch.empty((m, n_blocks * subs_per_block), dtype=self.dtype, device=self.device)
        for j in range(n_blocks):
            torch.mm(x, self._atoms_t[:, j * ac:(j + 1) * ac], out=block)
            torch.amax(block_subs, dim=2, out=sub_max[:, j * subs_per_block:(j + 1) * subs_per_block])
        best_sub = torch.argmax(sub_max, dim=1)  # (m,) first maximal sub-block
        candidates = torch.index_select(self._atoms_sub, 0, best_sub)  # (m, width, sub)
        scores = torch.bmm(x.unsqueeze(1), candidates).squeeze(1)  # (m, sub)
        index = best_sub * sub + torch.argmax(scores, dim=1)
        return index.clamp_(max=self.n_atoms - 1)

    def match(self, signals: np.ndarray | torch.Tensor) -> MatchResult:
        """Match every voxel's fingerprint.

        Args:
            signals: ``(n_voxels, n_frames)`` magnitudes (real, ≥ 0, any scale) or complex values
                (their magnitudes are used); numpy array or torch tensor on any device.

        Returns:
            a :class:`MatchResult` (numpy arrays on the host).

        Raises:
            ValueError: wrong ndim or frame count, non-finite values, negative real values.
            TypeError: not an array of numbers.
        """
        mag = self._check_signals(signals)
        n = mag.shape[0]
        norm = np.sqrt(np.einsum("nf,nf->n", mag, mag))
        nonzero = norm > 0
        unit = torch.from_numpy(mag) / torch.from_numpy(np.where(nonzero, norm, 1.0))[:, None]
        if self._basis is not None:
            unit = unit @ self._basis  # (n, k) projection, float64 on the host
        index_dev = torch.empty((n,), dtype=torch.int64, device=self.device)
        for start in range(0, n, self.chunk_size):
            stop = min(start + self.chunk_size, n)
            if self._width == self.rank:
                x = unit[start:stop].to(self.dtype)
            else:  # zero columns matching the atoms' padding (CPU, rank < MIN_CPU_GEMM_WIDTH)
                x = torch.zeros((stop - start, self._width), dtype=self.dtype)
                x[:, :self.rank] = unit[start:stop]
            x = x.to(self.device)
            index_dev[start:stop] = self._search(x)
        index = index_dev.cpu().numpy()

        # Exact float64 score and M0 of the selected atoms.
        atom_mag = self._mag[index].astype(np.float64)  # (n, N)
        m0 = np.asarray(fit_m0(mag, atom_mag))
        inner = np.einsum("nf,nf->n", mag, atom_mag)
        denom = norm * np.sqrt(self._norm_sq[index])
        score = np.zeros(n, dtype=np.float64)
        np.divide(inner, denom, out=score, where=denom > 0)
        np.clip(score, 0.0, 1.0, out=score)

        t1 = self.t1_ms[index]
        t2 = self.t2_ms[index]
        b1 = None if self.b1 is None else self.b1[index]
        if not nonzero.all():
            zero = ~nonzero
            index[zero] = -1
            t1[zero] = np.nan
            t2[zero] = np.nan
            m0[zero] = 0.0
            score[zero] = 0.0
            if b1 is not None:
                b1[zero] = np.nan
        return MatchResult(t1_ms=t1, t2_ms=t2, m0=m0, score=score, index=index.astype(np.int64, copy=False), b1=b1)

    __call__ = match


def match(signals: np.ndarray | torch.Tensor, dictionary: Dictionary | Matcher, **kwargs: Any) -> MatchResult:
    """Match ``signals`` against ``dictionary`` (convenience wrapper around :class:`Matcher`).

    Args:
        signals: ``(n_voxels, n_frames)`` magnitudes (any scale) or complex values.
        dictionary: a :class:`~drone_core.dictionary.Dictionary` (a :class:`Matcher` is built for this
            call with ``**kwargs``) or an existing :class:`Matcher` (then no kwargs).
        **kwargs: ``device``, ``dtype``, ``svd_rank``, ``chunk_size``, ``atom_chunk``.

    Returns:
        a :class:`MatchResult`; ``t1_ms, t2_ms, m0 = match(signals, dictionary)`` unpacks it.
    """
    if isinstance(dictionary, Matcher):
        if kwargs:
            raise TypeError(f"match: options {sorted(kwargs)} apply when building a Matcher; "
                            "the given Matcher already has its own")
        return dictionary.match(signals)
    if not isinstance(dictionary, Dictionary):
        raise TypeError(f"dictionary: expected drone_core.dictionary.Dictionary or Matcher, "
                        f"got {type(dictionary).__name__}")
    return Matcher(dictionary, **kwargs).match(signals)
