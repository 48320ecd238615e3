"""Tests of :mod:`drone_core.matching`: exact recovery of grid atoms, invariances (scale, complex
input, chunking, SVD rank N), a brute-force numpy reference, B1 dictionaries, the documented
all-zero output and the input checks.

Every tolerance is a named constant with its reason; every random draw comes from
``np.random.default_rng(seed)``; dictionaries and signal batches are non-square.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drone_core.dictionary import Dictionary, grid
from drone_core.matching import Matcher, MatchResult, match
from drone_core.schedule import default_schedule

# --------------------------------------------------------------------------- tolerances
#: M0 of a noise-free atom times a scale vs that scale, relative: the winning atom is the exact one
#: and M0 = ⟨|s|, |a|⟩ / ‖a‖² is computed in float64 from float32 magnitudes; |s| = scale·|a| is
#: rounded once (float32 input ~6e-8 relative), so ~1e-7 is expected; 1e-5 is the brief's figure.
M0_RTOL = 1e-5
#: The score of a noise-free atom against itself is 1 up to that same float32 rounding of the input
#: (observed < 1e-7); 1e-6 is a 10× margin.
SELF_SCORE_ATOL = 1e-6
#: float32 search vs the float64 brute-force maximum cosine: the float64 score of the atom that the
#: float32 GEMM picks can trail the true maximum only by float32 rounding of the cosines (~1e-7 for
#: 25 terms ≤ 1); 1e-6 is a 10× margin, far below the gap between neighbouring atoms of the test
#: grid (≥ 2.6e-6 in 1 − cosine, and much larger between non-neighbours).
FLOAT32_SCORE_ATOL = 1e-6
#: Where the float64 brute-force top two cosines differ by more than this, the float32 search must
#: pick the brute-force atom: float32 cosine rounding (~1e-7) cannot reorder them.
FLOAT32_TIE_GAP = 1e-5
#: float64 search vs the float64 brute-force cosine of the same atom: both are float64 sums of 25
#: products ≤ 1 in a different order, so they differ by a few ulps (~1e-16); 1e-12 is far above that.
EXACT_SCORE_ATOL = 1e-12
#: CUDA float64 vs CPU float64 M0 of the same atoms: the same float64 host computation, so only the
#: (identical) atom choice matters; 1e-12 allows for nothing but rounding.
CUDA_M0_RTOL = 1e-12
#: Fraction of noise-free atoms of the small log grid that rank-6 SVD matching must recover exactly
#: (the brief's figure; observed 100 %: the projected atoms are re-normalised, so an atom matches
#: itself unless two atoms have the same direction in the 6-dim subspace).
LOW_RANK_RECOVERY = 0.99
#: Relative noise level of the "noisy" signals: complex Gaussian, σ = NOISE·max|atom| per atom
#: (the benchmark's 0.5 %), large enough that many voxels pick a neighbour of their atom.
NOISE = 0.005

#: Seeds of everything random in this file.
SCALE_SEED = 20240612
NOISE_SEED = 11
PHASE_SEED = 5

#: The default schedule's small log grid: 30 T1 × 25 T2 (T1 > T2 kept: 672 atoms). T2 ≥ 20 ms
#: because much shorter T2 (≪ TE = 23 ms) only scales the fingerprint, making atoms of different
#: T2 indistinguishable after normalisation (no estimator can recover them).
T1_RANGE_MS, T2_RANGE_MS = (100.0, 3000.0), (20.0, 400.0)
N_T1, N_T2 = 30, 25
B1_VALUES = (0.8, 1.0, 1.15)


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    t1, t2, _ = grid(T1_RANGE_MS, T2_RANGE_MS, n_t1=N_T1, n_t2=N_T2, spacing="log")
    return Dictionary.generate(default_schedule(), t1, t2)


@pytest.fixture(scope="module")
def dictionary_b1() -> Dictionary:
    t1, t2, b1 = grid(T1_RANGE_MS, T2_RANGE_MS, n_t1=12, n_t2=9, spacing="log", b1=B1_VALUES)
    return Dictionary.generate(default_schedule(), t1, t2, b1)


def noisy_signals(dictionary: Dictionary, n: int, seed: int = NOISE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy complex fingerprints of random atoms (σ = NOISE·max|atom|) and the atoms' indices."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(dictionary), n)
    atoms = dictionary.atoms[idx].astype(np.complex128)
    sigma = NOISE * np.abs(atoms).max(axis=1, keepdims=True)
    noise = rng.standard_normal(atoms.shape) + 1j * rng.standard_normal(atoms.shape)
    return atoms + sigma * noise / np.sqrt(2.0), idx


def brute_force(signals: np.ndarray, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 reference: the full ``(n, n_atoms)`` cosine matrix, its argmax and its top-two gap."""
    s = np.abs(signals).astype(np.float64)
    a = np.abs(atoms).astype(np.float64)
    cos = (s / np.linalg.norm(s, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    top2 = np.sort(cos, axis=1)[:, -2:]
    return np.argmax(cos, axis=1), top2[:, 1] - top2[:, 0]


# --------------------------------------------------------------------------- exact recovery
@pytest.mark.parametrize("kind", ["magnitude", "complex", "torch", "torch-complex"])
def test_recovers_noise_free_atoms_with_scale(dictionary: Dictionary, kind: str) -> None:
    rng = np.random.default_rng(SCALE_SEED)
    n = len(dictionary)
    scale = 10.0 ** rng.uniform(-3.0, 3.0, n)  # arbitrary receiver gains
    phase = np.exp(1j * np.random.default_rng(PHASE_SEED).uniform(0, 2 * np.pi, (n, 1)))
    signals: np.ndarray | torch.Tensor
    if kind == "magnitude":
        signals = (np.abs(dictionary.atoms) * scale[:, None]).astype(np.float32)
    elif kind == "complex":
        signals = (dictionary.atoms * scale[:, None] * phase).astype(np.complex64)
    elif kind == "torch":
        signals = torch.from_numpy(np.abs(dictionary.atoms) * scale[:, None])
    else:
        signals = torch.from_numpy(dictionary.atoms * scale[:, None] * phase)
    result = match(signals, dictionary, device="cpu")
    assert isinstance(result, MatchResult)
    np.testing.assert_array_equal(result.index, np.arange(n))
    np.testing.assert_array_equal(result.t1_ms, dictionary.t1_ms)
    np.testing.assert_array_equal(result.t2_ms, dictionary.t2_ms)
    np.testing.assert_allclose(result.m0, scale, rtol=M0_RTOL)
    np.testing.assert_allclose(result.score, 1.0, atol=SELF_SCORE_ATOL)
    assert result.b1 is None
    assert result.index.dtype == np.int64
    assert result.t1_ms.dtype == result.t2_ms.dtype == result.m0.dtype == result.score.dtype == np.float64


def test_unpacks_as_design_interface(dictionary: Dictionary) -> None:
    """DESIGN.md: ``match(signals, dictionary) -> (t1_ms, t2_ms, m0)``."""
    signals = np.abs(dictionary.atoms[:37]) * 2.0
    t1, t2, m0 = match(signals, dictionary, device="cpu")
    np.testing.assert_array_equal(t1, dictionary.t1_ms[:37])
    np.testing.assert_array_equal(t2, dictionary.t2_ms[:37])
    np.testing.assert_allclose(m0, 2.0, rtol=M0_RTOL)


def test_b1_dictionary_returns_b1(dictionary_b1: Dictionary) -> None:
    d = dictionary_b1
    result = Matcher(d, device="cpu").match(d.atoms * 3.0)
    np.testing.assert_array_equal(result.index, np.arange(len(d)))
    assert result.b1 is not None
    np.testing.assert_array_equal(result.b1, d.b1)
    np.testing.assert_array_equal(result.t1_ms, d.t1_ms)
    np.testing.assert_array_equal(result.t2_ms, d.t2_ms)


# --------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunking_gives_identical_results(dictionary: Dictionary, dtype: torch.dtype) -> None:
    # A 203-atom slice of the grid and 61 signals keep the tiny-block loop short (9 × 16 GEMMs): with
    # 2 threads on a busy 2-core machine each tiny MKL call can wait a scheduler time slice.
    sub = dictionary.select(np.arange(101, 304))
    signals, _ = noisy_signals(sub, 61)
    one = Matcher(sub, device="cpu", dtype=dtype, chunk_size=len(signals), atom_chunk=len(sub))
    tiny = Matcher(sub, device="cpu", dtype=dtype, chunk_size=7, atom_chunk=13)
    assert (tiny.chunk_size, tiny.atom_chunk) == (7, 13)
    a, b = one.match(signals), tiny.match(signals)
    for name in ("index", "t1_ms", "t2_ms", "m0", "score"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_atom_chunk_rounds_to_sub_blocks(dictionary: Dictionary) -> None:
    m = Matcher(dictionary, device="cpu", atom_chunk=300)
    assert (m.atom_chunk, m.sub_block) == (256, 128)
    signals, _ = noisy_signals(dictionary, 50)
    ref = Matcher(dictionary, device="cpu").match(signals)
    np.testing.assert_array_equal(m.match(signals).index, ref.index)


def test_svd_full_rank_equals_no_svd(dictionary: Dictionary) -> None:
    signals, _ = noisy_signals(dictionary, 257)
    full = Matcher(dictionary, device="cpu", dtype=torch.float64)
    svd = Matcher(dictionary, device="cpu", dtype=torch.float64, svd_rank=dictionary.n_frames)
    assert svd.svd_energy == pytest.approx(1.0)
    np.testing.assert_array_equal(svd.match(signals).index, full.match(signals).index)
    noise_free = svd.match(np.abs(dictionary.atoms))
    np.testing.assert_array_equal(noise_free.index, np.arange(len(dictionary)))


def test_svd_low_rank_recovers_noise_free_atoms(dictionary: Dictionary) -> None:
    m = Matcher(dictionary, device="cpu", svd_rank=6)
    result = m.match(dictionary.atoms * 0.37)
    recovered = np.mean(result.index == np.arange(len(dictionary)))
    assert recovered >= LOW_RANK_RECOVERY
    # The score and M0 are the exact full-dimensional values of the chosen atom, not the projected ones.
    ok = result.index == np.arange(len(dictionary))
    np.testing.assert_allclose(result.m0[ok], 0.37, rtol=M0_RTOL)
    energies = [Matcher(dictionary, device="cpu", svd_rank=k).svd_energy for k in (1, 3, 6, 12)]
    assert all(0.0 < e <= 1.0 for e in energies) and energies == sorted(energies)


# --------------------------------------------------------------------------- reference
def test_agrees_with_brute_force_reference(dictionary: Dictionary) -> None:
    signals, _ = noisy_signals(dictionary, 403)
    ref_index, gap = brute_force(signals, dictionary.atoms)
    a = np.abs(dictionary.atoms).astype(np.float64)
    s = np.abs(signals)
    a_ref = a[ref_index]
    ref_score = np.einsum("nf,nf->n", s, a_ref) / (np.linalg.norm(s, axis=1) * np.linalg.norm(a_ref, axis=1))

    exact = Matcher(dictionary, device="cpu", dtype=torch.float64, chunk_size=64, atom_chunk=256).match(signals)
    np.testing.assert_array_equal(exact.index, ref_index)
    np.testing.assert_allclose(exact.score, ref_score, rtol=0, atol=EXACT_SCORE_ATOL)

    fast = Matcher(dictionary, device="cpu", dtype=torch.float32, chunk_size=64, atom_chunk=256).match(signals)
    clear = gap > FLOAT32_TIE_GAP
    assert clear.mean() > 0.5  # the comparison below must cover most voxels
    np.testing.assert_array_equal(fast.index[clear], ref_index[clear])
    np.testing.assert_allclose(fast.score, ref_score, rtol=0, atol=FLOAT32_SCORE_ATOL)


def test_from_arrays_matches_dictionary(dictionary: Dictionary) -> None:
    signals, _ = noisy_signals(dictionary, 99)
    via_dict = Matcher(dictionary, device="cpu").match(signals)
    via_arrays = Matcher.from_arrays(np.abs(dictionary.atoms), dictionary.t1_ms, dictionary.t2_ms,
                                     device="cpu").match(signals)
    np.testing.assert_array_equal(via_arrays.index, via_dict.index)
    np.testing.assert_array_equal(via_arrays.m0, via_dict.m0)
    matcher = Matcher(dictionary, device="cpu")
    np.testing.assert_array_equal(match(signals, matcher).index, via_dict.index)


# --------------------------------------------------------------------------- special inputs
def test_zero_signal_documented_output(dictionary: Dictionary) -> None:
    signals = np.abs(dictionary.atoms[:5]).astype(np.float64)
    signals[[1, 3]] = 0.0
    result = Matcher(dictionary, device="cpu").match(signals)
    zero = np.array([False, True, False, True, False])
    np.testing.assert_array_equal(result.index[zero], -1)
    assert np.all(np.isnan(result.t1_ms[zero])) and np.all(np.isnan(result.t2_ms[zero]))
    np.testing.assert_array_equal(result.m0[zero], 0.0)
    np.testing.assert_array_equal(result.score[zero], 0.0)
    np.testing.assert_array_equal(result.index[~zero], np.arange(5)[~zero])


def test_zero_signal_b1_is_nan(dictionary_b1: Dictionary) -> None:
    result = Matcher(dictionary_b1, device="cpu").match(np.zeros((2, dictionary_b1.n_frames)))
    assert result.b1 is not None and np.all(np.isnan(result.b1))


def test_empty_batch(dictionary: Dictionary) -> None:
    result = Matcher(dictionary, device="cpu").match(np.zeros((0, dictionary.n_frames), dtype=np.float32))
    assert len(result) == 0 and result.t1_ms.shape == (0,) and result.index.dtype == np.int64


# --------------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda n: np.ones((4, n + 1)), r"signals: expected n_frames = 25.*got 26"),
        (lambda n: np.ones((4, n - 3)), r"signals: expected n_frames = 25.*got 22"),
        (lambda n: np.ones(n), r"signals: expected a 2-D array"),
        (lambda n: np.ones((2, 3, n)), r"signals: expected a 2-D array"),
        (lambda n: np.where(np.eye(3, n) > 0, np.nan, 1.0), r"signals: expected finite values, got 3"),
        (lambda n: np.full((2, n), np.inf), r"signals: expected finite values"),
        (lambda n: -np.ones((2, n)), r"signals: expected magnitudes ≥ 0"),
    ],
)
def test_bad_signals_raise(dictionary: Dictionary, make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match(make(dictionary.n_frames), dictionary, device="cpu")


def test_non_numeric_signals_raise(dictionary: Dictionary) -> None:
    with pytest.raises(TypeError, match="signals"):
        match(np.array([["a"] * dictionary.n_frames]), dictionary, device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(svd_rank=0), "svd_rank"),
        (dict(svd_rank=26), "svd_rank"),
        (dict(svd_rank=2.5), "svd_rank"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(atom_chunk=-1), "atom_chunk"),
        (dict(dtype=torch.float16), "dtype"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_options_raise(dictionary: Dictionary, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Matcher(dictionary, **kwargs)


def test_bad_arrays_raise(dictionary: Dictionary) -> None:
    mag = np.abs(dictionary.atoms)
    with pytest.raises(ValueError, match=r"t2_ms: expected shape \(672,\)"):
        Matcher.from_arrays(mag, dictionary.t1_ms, dictionary.t2_ms[:-1], device="cpu")
    with pytest.raises(ValueError, match="atoms: expected finite"):
        Matcher.from_arrays(np.full_like(mag, np.nan), dictionary.t1_ms, dictionary.t2_ms, device="cpu")
    with pytest.raises(TypeError, match="dictionary"):
        Matcher(mag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dictionary"):
        match(mag, mag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="options"):
        match(mag, Matcher(dictionary, device="cpu"), svd_rank=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_gpu_raises(dictionary: Dictionary) -> None:
    with pytest.raises(ValueError, match="device"):
        Matcher(dictionary, device="cuda")


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("svd_rank", [None, 6])
def test_cuda_matches_cpu(dictionary: Dictionary, svd_rank: int | None) -> None:
    signals, _ = noisy_signals(dictionary, 1001)
    cpu = Matcher(dictionary, device="cpu", dtype=torch.float64, svd_rank=svd_rank).match(signals)
    gpu_matcher = Matcher(dictionary, device="cuda", dtype=torch.float64, svd_rank=svd_rank, chunk_size=100,
                          atom_chunk=256)
    gpu = gpu_matcher.match(torch.from_numpy(signals).cuda())
    np.testing.assert_array_equal(gpu.index, cpu.index)
    np.testing.assert_allclose(gpu.m0, cpu.m0, rtol=CUDA_M0_RTOL)
    noise_free = Matcher(dictionary, device="cuda").match(np.abs(dictionary.atoms))
    np.testing.assert_array_equal(noise_free.index, np.arange(len(dictionary)))


# --------------------------------------------------------------------------- matching at the voxel's B1
#: The brief's B1 planes, spaced 0.3 apart (half step 0.15), for the B1-restricted tests.
B1_PLANES = (0.7, 1.0, 1.3)
#: Seeds of the B1-restricted tests.
B1_NOISE_SEED = 23
B1_MAP_SEED = 29
#: Noise-free signals simulated *between* the planes (B1 0.85, half-way from 0.7 to 1.0): the fraction
#: whose exact (T1, T2) the linear-in-B1 search must recover. Observed 97.9 % (93 of 95; the two misses
#: are short-T2 neighbours), against 21 % for the nearest plane and 24 % for the whole dictionary; 0.9
#: leaves room for a changed default schedule without letting the nearest plane pass.
LINEAR_OFF_GRID_RECOVERY = 0.9


@pytest.fixture(scope="module")
def dictionary_planes() -> Dictionary:
    t1, t2, b1 = grid(T1_RANGE_MS, T2_RANGE_MS, n_t1=12, n_t2=9, spacing="log", b1=B1_PLANES)
    return Dictionary.generate(default_schedule(), t1, t2, b1)


def plane_brute_force(signals: np.ndarray, b1: np.ndarray, d: Dictionary) -> tuple[np.ndarray, np.ndarray]:
    """float64 reference, independent of the Matcher: for each voxel the argmax of the cosines over the atoms
    of the plane nearest its B1 (found by ``argmin |b1 − plane|``), as global indices, and the top-two gap."""
    assert d.b1 is not None
    planes = np.unique(d.b1)
    index, gap = np.empty(len(signals), dtype=np.int64), np.empty(len(signals))
    for i, (s, b) in enumerate(zip(np.abs(signals), b1)):
        atoms = np.flatnonzero(d.b1 == planes[np.argmin(np.abs(planes - b))])
        a = np.abs(d.atoms[atoms]).astype(np.float64)
        cos = (a @ s) / (np.linalg.norm(a, axis=1) * np.linalg.norm(s))
        top2 = np.sort(cos)[-2:]
        index[i], gap[i] = atoms[np.argmax(cos)], top2[1] - top2[0]
    return index, gap


def b1_near_planes(d: Dictionary, idx: np.ndarray, seed: int = B1_MAP_SEED) -> np.ndarray:
    """Each atom's B1 moved by up to ±0.14 (less than the half step 0.15): its own plane stays the nearest."""
    assert d.b1 is not None
    return d.b1[idx] + np.random.default_rng(seed).uniform(-0.14, 0.14, idx.size)


def test_matcher_lists_b1_planes(dictionary_planes: Dictionary, dictionary: Dictionary) -> None:
    m = Matcher(dictionary_planes, device="cpu")
    assert m.b1_planes is not None
    np.testing.assert_array_equal(m.b1_planes, B1_PLANES)
    np.testing.assert_array_equal(m.b1_planes, dictionary_planes.b1_values())
    assert Matcher(dictionary, device="cpu").b1_planes is None
    assert "3 B1 planes" in repr(m)


@pytest.mark.parametrize("kind", ["numpy", "torch", "float32"])
def test_noise_free_atoms_recovered_at_their_b1(dictionary_planes: Dictionary, kind: str) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    b1: np.ndarray | torch.Tensor = d.b1 if kind == "numpy" else (
        torch.from_numpy(d.b1) if kind == "torch" else d.b1.astype(np.float32))
    result = Matcher(d, device="cpu").match(d.atoms * 4.0, b1=b1)
    np.testing.assert_array_equal(result.index, np.arange(len(d)))
    np.testing.assert_array_equal(result.t1_ms, d.t1_ms)
    np.testing.assert_array_equal(result.t2_ms, d.t2_ms)
    assert result.b1 is not None
    np.testing.assert_array_equal(result.b1, d.b1)
    np.testing.assert_allclose(result.m0, 4.0, rtol=M0_RTOL)
    np.testing.assert_allclose(result.score, 1.0, atol=SELF_SCORE_ATOL)


def test_wrong_b1_does_not_recover_and_none_estimates_it(dictionary_planes: Dictionary) -> None:
    """Atoms at B1 0.7 matched at B1 1.3 get that plane's atoms (most with another T1/T2); matched with
    b1=None over all atoms they come back exactly, B1 included (the own atom is in the dictionary, and the
    fingerprint encodes B1)."""
    d = dictionary_planes
    assert d.b1 is not None
    low = np.flatnonzero(d.b1 == 0.7)
    m = Matcher(d, device="cpu")
    wrong = m.match(d.atoms[low], b1=np.full(low.size, 1.3))
    assert wrong.b1 is not None and np.all(wrong.b1 == 1.3)
    recovered = (wrong.t1_ms == d.t1_ms[low]) & (wrong.t2_ms == d.t2_ms[low])
    assert recovered.mean() < 0.5
    free = m.match(d.atoms[low])
    np.testing.assert_array_equal(free.index, low)
    assert free.b1 is not None and np.all(free.b1 == 0.7)


def test_restricted_equals_plane_brute_force(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    signals, idx = noisy_signals(d, 601, seed=B1_NOISE_SEED)
    b1 = b1_near_planes(d, idx)
    ref_index, gap = plane_brute_force(signals, b1, d)
    exact = Matcher(d, device="cpu", dtype=torch.float64, chunk_size=64, atom_chunk=256).match(signals, b1=b1)
    np.testing.assert_array_equal(exact.index, ref_index)
    assert d.b1 is not None and exact.b1 is not None
    np.testing.assert_array_equal(exact.b1, d.b1[idx])  # the voxel's own plane
    fast = Matcher(d, device="cpu").match(signals, b1=b1)
    clear = gap > FLOAT32_TIE_GAP
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(fast.index[clear], ref_index[clear])
    a = np.abs(d.atoms[ref_index]).astype(np.float64)
    s = np.abs(signals)
    ref_score = np.einsum("nf,nf->n", s, a) / (np.linalg.norm(s, axis=1) * np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(exact.score, ref_score, rtol=0, atol=EXACT_SCORE_ATOL)
    np.testing.assert_allclose(fast.score, ref_score, rtol=0, atol=FLOAT32_SCORE_ATOL)


@pytest.mark.parametrize("svd_rank", [None, 6])
def test_restricted_equals_plane_sub_dictionary_matcher(dictionary_planes: Dictionary, svd_rank: int | None) -> None:
    """Each voxel's result is bit for bit that of a Matcher built from its plane's atoms alone (same options;
    with svd_rank, the plane's own SVD basis)."""
    d = dictionary_planes
    signals, idx = noisy_signals(d, 389, seed=B1_NOISE_SEED + 1)
    b1 = b1_near_planes(d, idx, seed=B1_MAP_SEED + 1)
    whole = Matcher(d, device="cpu", svd_rank=svd_rank).match(signals, b1=b1)
    assert d.b1 is not None
    for value in B1_PLANES:
        rows = np.flatnonzero(d.b1[idx] == value)
        plane_atoms = np.flatnonzero(d.b1 == value)
        sub = Matcher(d.select_b1(value), device="cpu", svd_rank=svd_rank).match(signals[rows])
        np.testing.assert_array_equal(whole.index[rows], plane_atoms[sub.index])
        for name in ("t1_ms", "t2_ms", "m0", "score", "b1"):
            np.testing.assert_array_equal(getattr(whole, name)[rows], getattr(sub, name), err_msg=name)


def test_nearest_plane_rule_and_range(dictionary_planes: Dictionary) -> None:
    """Nearest plane, half-way → the lower one; accepted up to half a step (0.15) beyond the end planes."""
    d = dictionary_planes
    signals = np.repeat(np.abs(d.atoms[:1]), 11, axis=0)
    b1 = np.array([0.85, 0.8500001, 1.15, 0.55, 1.45, 0.55 - 1e-6, 1.45 + 1e-6, np.nan, np.inf, -np.inf, 1.0])
    result = Matcher(d, device="cpu").match(signals, b1=b1)
    assert result.b1 is not None
    np.testing.assert_array_equal(result.b1[:5], [0.7, 1.0, 1.0, 0.7, 1.3])
    np.testing.assert_array_equal(result.b1[10], 1.0)
    refused = np.s_[5:10]
    assert np.all(np.isnan(result.t1_ms[refused])) and np.all(np.isnan(result.t2_ms[refused]))
    assert np.all(np.isnan(result.b1[refused]))
    np.testing.assert_array_equal(result.m0[refused], 0.0)
    np.testing.assert_array_equal(result.score[refused], 0.0)
    np.testing.assert_array_equal(result.index[refused], -1)
    assert np.all(np.isfinite(result.t1_ms[:5])) and np.all(result.index[:5] >= 0)


def test_b1_margin_option(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    signals = np.repeat(np.abs(d.atoms[:1]), 4, axis=0)
    b1 = np.array([0.7, 0.69, 1.31, 9.0])
    m = Matcher(d, device="cpu")
    strict = m.match(signals, b1=b1, b1_margin=0.0)
    np.testing.assert_array_equal(strict.index >= 0, [True, False, False, False])
    loose = m.match(signals, b1=b1, b1_margin=np.inf)
    assert loose.b1 is not None
    np.testing.assert_array_equal(loose.b1, [0.7, 0.7, 1.3, 1.3])


def test_single_plane_accepts_only_its_b1_by_default(dictionary: Dictionary) -> None:
    one = Dictionary(dictionary.atoms, dictionary.t1_ms, dictionary.t2_ms, dictionary.schedule,
                     np.full(len(dictionary), 1.0))
    m = Matcher(one, device="cpu")
    signals = np.abs(dictionary.atoms[:3])
    result = m.match(signals, b1=np.array([1.0, 1.01, 0.99]))
    np.testing.assert_array_equal(result.index, [0, -1, -1])
    np.testing.assert_array_equal(m.match(signals, b1=np.array([1.0, 1.01, 0.99]), b1_margin=0.1).index, [0, 1, 2])


def test_zero_signals_and_scalar_b1(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    atoms = np.flatnonzero(d.b1 == 1.0)[:6]
    signals = np.abs(d.atoms[atoms]).astype(np.float64)
    signals[2] = 0.0
    result = Matcher(d, device="cpu").match(signals, b1=1.0)  # a number: the same B1 for every voxel
    assert result.b1 is not None
    assert result.index[2] == -1 and np.isnan(result.t1_ms[2]) and np.isnan(result.b1[2]) and result.m0[2] == 0.0
    keep = np.array([0, 1, 3, 4, 5])
    np.testing.assert_array_equal(result.b1[keep], 1.0)
    np.testing.assert_array_equal(result.index[keep], atoms[keep])


def test_empty_batch_with_b1(dictionary_planes: Dictionary) -> None:
    m = Matcher(dictionary_planes, device="cpu")
    for interpolation in ("nearest", "linear"):
        result = m.match(np.zeros((0, m.n_frames)), b1=np.zeros(0), b1_interpolation=interpolation)
        assert len(result) == 0 and result.b1 is not None and result.b1.shape == (0,)


def test_module_match_with_b1(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    signals, idx = noisy_signals(d, 77, seed=B1_NOISE_SEED + 2)
    b1 = b1_near_planes(d, idx)
    matcher = Matcher(d, device="cpu")
    ref = matcher.match(signals, b1=b1)
    np.testing.assert_array_equal(match(signals, d, b1=b1, device="cpu").index, ref.index)
    np.testing.assert_array_equal(match(signals, matcher, b1).index, ref.index)
    lin = matcher.match(signals, b1=b1, b1_interpolation="linear")
    np.testing.assert_array_equal(match(signals, matcher, b1=b1, b1_interpolation="linear").index, lin.index)


def test_prepare_builds_once_and_gives_the_same_results(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    signals, idx = noisy_signals(d, 150, seed=B1_NOISE_SEED + 3)
    b1 = b1_near_planes(d, idx)
    lazy = Matcher(d, device="cpu")
    eager = Matcher(d, device="cpu").prepare(full=True, linear=True)
    for kwargs in ({}, {"b1": b1}, {"b1": b1, "b1_interpolation": "linear"}):
        np.testing.assert_array_equal(lazy.match(signals, **kwargs).index, eager.match(signals, **kwargs).index)


def test_search_structures_are_built_on_first_use(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    m = Matcher(d, device="cpu")
    empty = m.search_bytes()
    assert empty["full"] == empty["planes"] == empty["linear"] == 0
    assert empty["host"] == len(d) * d.n_frames * 4  # float32 magnitudes
    assert d.b1 is not None
    m.match(np.abs(d.atoms[:3]), b1=np.full(3, 1.0))  # one plane used: only its search is built
    one = m.search_bytes()
    assert one["full"] == 0 and one["linear"] == 0 and one["planes"] > 0
    m.prepare(full=True, linear=True)
    held = m.search_bytes()
    assert held["planes"] == 3 * one["planes"]  # three planes of the same size
    assert held["full"] > 0 and held["linear"] > 0
    # A dictionary without a B1 axis builds its (only) search at once, as before.
    plane = d.select_b1(1.0)
    no_axis = Matcher(Dictionary(plane.atoms, plane.t1_ms, plane.t2_ms, plane.schedule), device="cpu")
    assert no_axis.search_bytes()["full"] > 0


def test_concurrent_first_use_is_consistent(dictionary_planes: Dictionary) -> None:
    """Threads that trigger the lazy per-plane build at once get the single-threaded result."""
    from concurrent.futures import ThreadPoolExecutor

    d = dictionary_planes
    signals, idx = noisy_signals(d, 120, seed=B1_NOISE_SEED + 4)
    b1 = b1_near_planes(d, idx)
    ref = Matcher(d, device="cpu").match(signals, b1=b1).index
    shared = Matcher(d, device="cpu")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: shared.match(signals, b1=b1).index, range(4)))
    for r in results:
        np.testing.assert_array_equal(r, ref)


# --------------------------------------------------------------------------- linear interpolation in B1
def linear_brute_force(signals: np.ndarray, b1: np.ndarray, d: Dictionary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 reference of the linear-in-B1 search, written from its definition: per voxel, interpolate every
    (T1, T2)'s magnitudes between the bracketing planes at the (clamped) B1 and take the largest cosine.
    Returns the chosen candidate's row in the (T1, T2) list, its interpolated magnitudes ``(n, N)`` and the
    top-two cosine gap."""
    assert d.b1 is not None
    planes = np.unique(d.b1)
    mags = [np.abs(d.atoms[d.b1 == p]).astype(np.float64) for p in planes]
    rows, chosen, gap = np.empty(len(signals), dtype=np.int64), np.empty(signals.shape), np.empty(len(signals))
    for i, (s, b) in enumerate(zip(np.abs(signals), b1)):
        b = min(max(b, planes[0]), planes[-1])
        lo = min(int(np.searchsorted(planes, b, side="right")) - 1, planes.size - 2)
        w = (b - planes[lo]) / (planes[lo + 1] - planes[lo])
        m = (1 - w) * mags[lo] + w * mags[lo + 1]
        cos = (m @ s) / (np.linalg.norm(m, axis=1) * np.linalg.norm(s))
        top2 = np.sort(cos)[-2:]
        rows[i], chosen[i], gap[i] = np.argmax(cos), m[np.argmax(cos)], top2[1] - top2[0]
    return rows, chosen, gap


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_equals_brute_force_of_its_definition(dictionary_planes: Dictionary, dtype: torch.dtype) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    signals, idx = noisy_signals(d, 503, seed=B1_NOISE_SEED + 5)
    b1 = np.random.default_rng(B1_MAP_SEED + 5).uniform(0.56, 1.44, idx.size)  # inside the ±0.15 margins
    rows, chosen, gap = linear_brute_force(signals, b1, d)
    result = Matcher(d, device="cpu", dtype=dtype, chunk_size=64, atom_chunk=256).match(
        signals, b1=b1, b1_interpolation="linear")
    first_plane = np.flatnonzero(d.b1 == B1_PLANES[0])
    check = gap > FLOAT32_TIE_GAP if dtype == torch.float32 else np.ones(idx.size, dtype=bool)
    assert check.mean() > 0.5
    np.testing.assert_array_equal(result.t1_ms[check], d.t1_ms[first_plane][rows[check]])
    np.testing.assert_array_equal(result.t2_ms[check], d.t2_ms[first_plane][rows[check]])
    # B1 of the interpolated atom (clamped); index: that (T1, T2) in the nearest plane.
    assert result.b1 is not None
    np.testing.assert_array_equal(result.b1, np.clip(b1, 0.7, 1.3))
    planes = np.asarray(B1_PLANES)
    nearest = planes[np.argmin(np.abs(b1[:, None] - planes[None, :]), axis=1)]
    np.testing.assert_array_equal(d.b1[result.index], nearest)
    np.testing.assert_array_equal(d.t1_ms[result.index], result.t1_ms)
    # score and M0 of the interpolated atom, exactly.
    s = np.abs(signals)
    ref_score = np.einsum("nf,nf->n", s, chosen) / (np.linalg.norm(s, axis=1) * np.linalg.norm(chosen, axis=1))
    ref_m0 = np.einsum("nf,nf->n", s, chosen) / np.einsum("nf,nf->n", chosen, chosen)
    np.testing.assert_allclose(result.score[check], ref_score[check], rtol=0, atol=EXACT_SCORE_ATOL)
    np.testing.assert_allclose(result.m0[check], ref_m0[check], rtol=EXACT_SCORE_ATOL)


def test_linear_at_the_planes_equals_nearest(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    signals, idx = noisy_signals(d, 300, seed=B1_NOISE_SEED + 6)
    m = Matcher(d, device="cpu", dtype=torch.float64)
    at_planes = d.b1[idx]  # w = 0 or 1 exactly
    lin = m.match(signals, b1=at_planes, b1_interpolation="linear")
    near = m.match(signals, b1=at_planes)
    np.testing.assert_array_equal(lin.index, near.index)
    np.testing.assert_allclose(lin.score, near.score, rtol=0, atol=EXACT_SCORE_ATOL)
    np.testing.assert_allclose(lin.m0, near.m0, rtol=EXACT_SCORE_ATOL)


def test_linear_recovers_signals_between_planes(dictionary_planes: Dictionary) -> None:
    """Noise-free signals simulated at B1 0.85 (half-way between planes 0.7 and 1.0): the interpolated
    dictionary finds their (T1, T2), the nearest plane and the whole dictionary mostly do not."""
    from drone_core.epg import simulate

    t1, t2, _ = grid(T1_RANGE_MS, T2_RANGE_MS, n_t1=12, n_t2=9, spacing="log")
    signals = simulate(default_schedule(), t1, t2, 0.85)
    b1 = np.full(t1.size, 0.85)
    m = Matcher(dictionary_planes, device="cpu")

    def recovered(r: MatchResult) -> float:
        return float(np.mean((r.t1_ms == t1) & (r.t2_ms == t2)))

    linear = recovered(m.match(signals, b1=b1, b1_interpolation="linear"))
    assert linear >= LINEAR_OFF_GRID_RECOVERY
    assert recovered(m.match(signals, b1=b1)) < LINEAR_OFF_GRID_RECOVERY
    assert recovered(m.match(signals)) < LINEAR_OFF_GRID_RECOVERY


def test_linear_single_plane_is_nearest(dictionary: Dictionary) -> None:
    one = Dictionary(dictionary.atoms, dictionary.t1_ms, dictionary.t2_ms, dictionary.schedule,
                     np.full(len(dictionary), 1.0))
    signals, _ = noisy_signals(dictionary, 40)
    m = Matcher(one, device="cpu")
    b1 = np.ones(40)
    np.testing.assert_array_equal(m.match(signals, b1=b1, b1_interpolation="linear").index,
                                  m.match(signals, b1=b1).index)


def test_linear_needs_product_grid_and_full_search(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    signals = np.abs(d.atoms[:3])
    ragged = d.select(np.flatnonzero(~((d.b1 == 1.3) & (d.t1_ms == d.t1_ms.max()))))
    with pytest.raises(ValueError, match="b1_interpolation: 'linear' needs a product grid"):
        Matcher(ragged, device="cpu").match(signals, b1=np.ones(3), b1_interpolation="linear")
    Matcher(ragged, device="cpu").match(signals, b1=np.ones(3))  # nearest works on any B1 axis
    with pytest.raises(ValueError, match="svd_rank=6"):
        Matcher(d, device="cpu", svd_rank=6).match(signals, b1=np.ones(3), b1_interpolation="linear")


# --------------------------------------------------------------------------- B1 input checks
def test_b1_without_b1_axis_raises(dictionary: Dictionary) -> None:
    signals = np.abs(dictionary.atoms[:4])
    with pytest.raises(ValueError, match=r"b1: this dictionary has no B1 axis"):
        Matcher(dictionary, device="cpu").match(signals, b1=np.ones(4))
    with pytest.raises(ValueError, match=r"b1: this dictionary has no B1 axis"):
        match(signals, dictionary, b1=np.ones(4), device="cpu")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(b1=np.ones(3)), ValueError, r"b1: expected None, a number or shape \(5,\).*got shape \(3,\)"),
        (dict(b1=np.ones((5, 1))), ValueError, r"b1: expected None, a number or shape \(5,\).*got shape \(5, 1\)"),
        (dict(b1=np.ones(5, dtype=complex)), TypeError, "b1: expected real"),
        (dict(b1=np.array(["a"] * 5)), TypeError, "b1: expected numbers"),
        (dict(b1=np.ones(5), b1_interpolation="cubic"), ValueError, r"b1_interpolation: expected one of"),
        (dict(b1=np.ones(5), b1_margin=-0.1), ValueError, r"b1_margin: expected None or a number ≥ 0"),
        (dict(b1=np.ones(5), b1_margin=float("nan")), ValueError, "b1_margin"),
        (dict(b1=np.ones(5), b1_margin="0.1"), ValueError, "b1_margin"),
    ],
)
def test_bad_b1_arguments_raise(dictionary_planes: Dictionary, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Matcher(dictionary_planes, device="cpu").match(np.abs(dictionary_planes.atoms[:5]), **kwargs)


def test_non_finite_atom_b1_raises(dictionary_planes: Dictionary) -> None:
    d = dictionary_planes
    assert d.b1 is not None
    bad = d.b1.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="b1: expected finite atom B1 values, got 1 non-finite"):
        Matcher.from_arrays(np.abs(d.atoms), d.t1_ms, d.t2_ms, bad, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_cuda_b1_matches_cpu(dictionary_planes: Dictionary, interpolation: str) -> None:
    d = dictionary_planes
    signals, idx = noisy_signals(d, 700, seed=B1_NOISE_SEED + 7)
    b1 = b1_near_planes(d, idx)
    cpu = Matcher(d, device="cpu", dtype=torch.float64).match(signals, b1=b1, b1_interpolation=interpolation)
    gpu = Matcher(d, device="cuda", dtype=torch.float64, chunk_size=100, atom_chunk=128).match(
        torch.from_numpy(signals).cuda(), b1=torch.from_numpy(b1).cuda(), b1_interpolation=interpolation)
    np.testing.assert_array_equal(gpu.index, cpu.index)
    np.testing.assert_allclose(gpu.m0, cpu.m0, rtol=CUDA_M0_RTOL)
