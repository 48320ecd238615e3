"""Tests of drone_core.dictionary: grids, sub-sampling, generation, files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from drone_core.dictionary import FILE_KIND, Dictionary, grid, paper_grid, subsample_indices
from drone_core.epg import simulate
from drone_core.schedule import Schedule

#: The DRONE paper's dictionary size: T1 1:10:5000 × T2 1:10:2000 with T1 > T2 (DESIGN.md).
PAPER_N_ATOMS = 79_900

#: Grid axes are exact in float64 (lo + step·k with integers), so compare with rtol 1e-12:
#: only the last bits of geomspace/linspace may differ from a hand-written formula.
AXIS_RTOL = 1e-12

#: Seeds of everything random in this file.
SCHEDULE_SEED = 20240611
SUBSAMPLE_SEED = 7

#: A deliberately non-square log grid: 9 T1 × 7 T2 values.
N_T1, N_T2 = 9, 7
B1_VALUES = (0.8, 1.0, 1.15)


def _schedule(n_frames: int = 13) -> Schedule:
    rng = np.random.default_rng(SCHEDULE_SEED)
    return Schedule("random-test", list(rng.uniform(5.0, 90.0, n_frames)), list(rng.uniform(45.0, 250.0, n_frames)),
                    23.0, 19.0, 0.93)


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return _schedule()


@pytest.fixture(scope="module")
def small_grid() -> tuple[np.ndarray, np.ndarray]:
    t1, t2, _ = grid((100.0, 3000.0), (20.0, 400.0), n_t1=N_T1, n_t2=N_T2, spacing="log")
    return t1, t2


@pytest.fixture(scope="module")
def small_grid_b1() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t1, t2, b1 = grid((100.0, 3000.0), (20.0, 400.0), n_t1=N_T1, n_t2=N_T2, spacing="log", b1=B1_VALUES)
    assert b1 is not None
    return t1, t2, b1


@pytest.fixture(scope="module")
def dictionary(schedule: Schedule, small_grid_b1) -> Dictionary:
    return Dictionary.generate(schedule, *small_grid_b1)


def _strictly_lexsorted(*keys: np.ndarray) -> bool:
    """True when the rows (keys[0][i], keys[1][i], …) are strictly increasing lexicographically."""
    order = np.lexsort(keys[::-1])
    if not np.array_equal(order, np.arange(keys[0].size)):
        return False
    stacked = np.stack(keys, axis=1)
    return bool(np.all(np.any(np.diff(stacked, axis=0) != 0, axis=1)))


# ---------------------------------------------------------------------------- paper grid
def test_paper_grid() -> None:
    t1, t2 = paper_grid()
    assert t1.shape == t2.shape == (PAPER_N_ATOMS,)
    assert t1.dtype == np.float64 and t2.dtype == np.float64
    assert np.all(t1 > t2)
    # T1 = 1 ms has no T2 below it, so T1 runs 11 … 4991 and T2 runs 1 … 1991.
    np.testing.assert_array_equal(np.unique(t1), np.arange(11.0, 4992.0, 10.0))
    np.testing.assert_array_equal(np.unique(t2), np.arange(1.0, 1992.0, 10.0))
    assert set(np.unique(t1)) <= set(np.arange(1.0, 5000.0, 10.0))
    assert _strictly_lexsorted(t1, t2)


def test_paper_grid_counts_per_t1() -> None:
    t1, t2 = paper_grid()
    # For T1 = 1 + 10k there are exactly k admissible T2 values (1, 11, …, T1 − 10), capped at 200.
    values, counts = np.unique(t1, return_counts=True)
    k = ((values - 1.0) / 10.0).astype(int)
    np.testing.assert_array_equal(counts, np.minimum(k, 200))


# ---------------------------------------------------------------------------- grid()
def test_grid_log_spacing_and_t1_gt_t2() -> None:
    t1, t2, b1 = grid((100.0, 3000.0), (20.0, 400.0), n_t1=N_T1, n_t2=N_T2, spacing="log")
    assert b1 is None
    t1_axis, t2_axis = np.geomspace(100.0, 3000.0, N_T1), np.geomspace(20.0, 400.0, N_T2)
    T1, T2 = np.meshgrid(t1_axis, t2_axis, indexing="ij")
    keep = T1 > T2
    np.testing.assert_allclose(t1, T1[keep], rtol=AXIS_RTOL)
    np.testing.assert_allclose(t2, T2[keep], rtol=AXIS_RTOL)
    assert np.all(t1 > t2)
    assert _strictly_lexsorted(t1, t2)
    # Log spacing: constant ratio between successive axis values.
    u = np.unique(t1)
    np.testing.assert_allclose(u[1:] / u[:-1], (3000.0 / 100.0) ** (1 / (N_T1 - 1)), rtol=AXIS_RTOL)


def test_grid_counts_linear_full_product() -> None:
    t1, t2, _ = grid((10.0, 40.0), (5.0, 50.0), n_t1=4, n_t2=3, t1_greater_than_t2=False)
    assert t1.size == 4 * 3
    np.testing.assert_allclose(t1, np.repeat([10.0, 20.0, 30.0, 40.0], 3), rtol=AXIS_RTOL)
    np.testing.assert_allclose(t2, np.tile([5.0, 27.5, 50.0], 4), rtol=AXIS_RTOL)
    # With the physical constraint, the pairs T1 ≤ T2 go away.
    t1c, t2c, _ = grid((10.0, 40.0), (5.0, 50.0), n_t1=4, n_t2=3)
    assert t1c.size == int(np.sum(t1 > t2)) and np.all(t1c > t2c)


def test_grid_steps_include_high_end_despite_rounding() -> None:
    # 0.1:0.1:0.7 has 7 values although (0.7 − 0.1)/0.1 = 5.999… in floating point.
    _, t2, _ = grid((1.0, 1.0), (0.1, 0.7), t1_step_ms=1.0, t2_step_ms=0.1)
    assert t2.size == 7
    np.testing.assert_allclose(t2, np.arange(1, 8) * 0.1, rtol=AXIS_RTOL)


def test_grid_b1_axis_innermost() -> None:
    t1, t2, _ = grid((100.0, 3000.0), (20.0, 400.0), n_t1=N_T1, n_t2=N_T2, spacing="log")
    t1b, t2b, b1 = grid((100.0, 3000.0), (20.0, 400.0), n_t1=N_T1, n_t2=N_T2, spacing="log", b1=B1_VALUES)
    nb = len(B1_VALUES)
    assert b1 is not None
    assert t1b.size == t2b.size == b1.size == t1.size * nb
    np.testing.assert_array_equal(t1b, np.repeat(t1, nb))
    np.testing.assert_array_equal(t2b, np.repeat(t2, nb))
    np.testing.assert_array_equal(b1, np.tile(B1_VALUES, t1.size))
    assert _strictly_lexsorted(t1b, t2b, b1)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(t1_range_ms=(0.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3), "t1_range_ms"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(50.0, 10.0), n_t1=3, n_t2=3), "t2_range_ms"),
        (dict(t1_range_ms=(10.0, float("inf")), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3), "t1_range_ms"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t2=3), "t1_range_ms"),  # neither
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, t1_step_ms=5.0, n_t2=3),
         "t1_range_ms"),  # both
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, t2_step_ms=0.0), "t2_range_ms step"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=0, n_t2=3), "t1_range_ms count"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), t1_step_ms=5.0, n_t2=3, spacing="log"),
         "t1_range_ms"),  # log needs a count
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3, spacing="cubic"), "spacing"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3, b1=[1.0, -0.1]), "b1"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3, b1=[]), "b1"),
        (dict(t1_range_ms=(10.0, 100.0), t2_range_ms=(1.0, 10.0), n_t1=3, n_t2=3, b1=[float("nan")]), "b1"),
    ],
)
def test_grid_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        grid(**kwargs)


# ---------------------------------------------------------------------------- subsample_indices
def test_subsample_stride_exact() -> None:
    np.testing.assert_array_equal(subsample_indices(10, 3), [0, 3, 6, 9])
    np.testing.assert_array_equal(subsample_indices(10, 3, offset=1), [1, 4, 7])
    np.testing.assert_array_equal(subsample_indices(10, 3, offset=2), [2, 5, 8])
    np.testing.assert_array_equal(subsample_indices(5, 1), np.arange(5))
    np.testing.assert_array_equal(subsample_indices(3, 10), [0])
    assert subsample_indices(10, 3).dtype == np.int64


@pytest.mark.parametrize("n,fold", [(10, 3), (79_900, 10), (17, 17), (5, 8)])
def test_subsample_stride_offsets_partition(n: int, fold: int) -> None:
    parts = [subsample_indices(n, fold, offset=o) for o in range(fold)]
    union = np.concatenate(parts)
    assert union.size == n  # disjoint …
    np.testing.assert_array_equal(np.sort(union), np.arange(n))  # … and covering
    for p in parts:
        assert p.size in (n // fold, -(-n // fold))


@pytest.mark.parametrize("n,fold", [(10, 3), (1000, 7), (79_900, 10), (5, 1), (3, 10)])
def test_subsample_random(n: int, fold: int) -> None:
    a = subsample_indices(n, fold, method="random", seed=SUBSAMPLE_SEED)
    b = subsample_indices(n, fold, method="random", seed=SUBSAMPLE_SEED)
    np.testing.assert_array_equal(a, b)  # seeded: deterministic
    assert a.dtype == np.int64
    assert a.size == math.ceil(n / fold)
    assert np.unique(a).size == a.size
    assert np.all(np.diff(a) > 0)  # sorted, unique
    assert a.min() >= 0 and a.max() < n


def test_subsample_random_depends_on_seed() -> None:
    a = subsample_indices(1000, 7, method="random", seed=SUBSAMPLE_SEED)
    c = subsample_indices(1000, 7, method="random", seed=SUBSAMPLE_SEED + 1)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(fold=0), "fold"), (dict(fold=2.5), "fold"), (dict(fold=3, offset=3), "offset"),
     (dict(fold=3, offset=-1), "offset"), (dict(fold=3, method="every-other"), "method")],
)
def test_subsample_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        subsample_indices(10, **kwargs)


# ---------------------------------------------------------------------------- generation
def test_generate_equals_simulate(schedule: Schedule, small_grid) -> None:
    t1, t2 = small_grid
    d = Dictionary.generate(schedule, t1, t2)
    ref = simulate(schedule, t1, t2, dtype=torch.float32)
    assert d.atoms.dtype == np.complex64 and d.atoms.shape == (t1.size, schedule.n_frames)
    assert t1.size != schedule.n_frames  # non-square
    np.testing.assert_array_equal(d.atoms, ref)
    np.testing.assert_array_equal(d.t1_ms, t1)
    np.testing.assert_array_equal(d.t2_ms, t2)
    assert d.b1 is None
    assert d.schedule == schedule
    assert len(d) == t1.size and d.n_frames == schedule.n_frames


def test_generate_with_b1_equals_simulate(schedule: Schedule, small_grid_b1, dictionary: Dictionary) -> None:
    t1, t2, b1 = small_grid_b1
    ref = simulate(schedule, t1, t2, b1, dtype=torch.float32)
    np.testing.assert_array_equal(dictionary.atoms, ref)
    np.testing.assert_array_equal(dictionary.b1, b1)
    # B1 matters: atoms differing only in B1 are different.
    assert not np.array_equal(dictionary.atoms[0], dictionary.atoms[1])


@pytest.mark.parametrize("with_b1", [False, True])
def test_generate_independent_of_chunk_size(schedule: Schedule, small_grid_b1, with_b1: bool) -> None:
    t1, t2, b1 = small_grid_b1
    b = b1 if with_b1 else None
    small = Dictionary.generate(schedule, t1, t2, b, chunk_size=7)
    large = Dictionary.generate(schedule, t1, t2, b, chunk_size=10_000)
    single = Dictionary.generate(schedule, t1, t2, b, chunk_size=1)
    np.testing.assert_array_equal(small.atoms, large.atoms)
    np.testing.assert_array_equal(single.atoms, large.atoms)


@pytest.mark.parametrize(
    "kwargs,name",
    [(dict(t2_ms=np.ones(3)), "t2_ms"), (dict(b1=np.ones(3)), "b1"), (dict(chunk_size=0), "chunk_size"),
     (dict(chunk_size=2.0), "chunk_size")],
)
def test_generate_bad_arguments(schedule: Schedule, kwargs: dict, name: str) -> None:
    args = dict(t1_ms=np.array([500.0, 800.0]), t2_ms=np.array([50.0, 60.0]), b1=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        Dictionary.generate(schedule, **args)


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize("with_b1", [False, True])
def test_save_load_round_trip(tmp_path: Path, schedule: Schedule, small_grid_b1, with_b1: bool) -> None:
    t1, t2, b1 = small_grid_b1
    d = Dictionary.generate(schedule, t1, t2, b1 if with_b1 else None)
    path = tmp_path / "dict.safetensors"
    d.save(path)
    e = Dictionary.load(path)
    assert e.atoms.dtype == np.complex64
    # Bit-exact: compare the raw float32 bit patterns.
    np.testing.assert_array_equal(e.atoms.view(np.uint32), d.atoms.view(np.uint32))
    np.testing.assert_array_equal(e.t1_ms, d.t1_ms)
    np.testing.assert_array_equal(e.t2_ms, d.t2_ms)
    if with_b1:
        np.testing.assert_array_equal(e.b1, d.b1)
    else:
        assert e.b1 is None
    assert e.schedule == schedule
    assert e.schedule.digest() == schedule.digest()
    assert e.schedule.name == schedule.name


def test_load_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(ValueError, match=r"no such file") as info:
        Dictionary.load(path)
    assert str(path) in str(info.value)


def test_load_foreign_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    plain = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros((2, 3), dtype=np.float32)}, str(plain))
    with pytest.raises(ValueError, match=re.escape(FILE_KIND)):
        Dictionary.load(plain)
    other = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((2, 3), dtype=np.float32)}, str(other), metadata={"kind": "drone-model"})
    with pytest.raises(ValueError, match="drone-model"):
        Dictionary.load(other)


def test_load_not_safetensors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors dictionary"):
        Dictionary.load(junk)


def test_load_missing_tensor(tmp_path: Path, schedule: Schedule) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "partial.safetensors"
    save_file({"t1_ms": np.ones(2), "t2_ms": np.ones(2)}, str(path),
              metadata={"kind": FILE_KIND, "schedule": schedule.to_json()})
    with pytest.raises(ValueError, match="'atoms'"):
        Dictionary.load(path)


# ---------------------------------------------------------------------------- selection
def test_subsample_stride_keeps_right_atoms(dictionary: Dictionary) -> None:
    sub = dictionary.subsample(4, offset=3)
    np.testing.assert_array_equal(sub.atoms, dictionary.atoms[3::4])
    np.testing.assert_array_equal(sub.t1_ms, dictionary.t1_ms[3::4])
    np.testing.assert_array_equal(sub.t2_ms, dictionary.t2_ms[3::4])
    np.testing.assert_array_equal(sub.b1, dictionary.b1[3::4])
    assert sub.schedule == dictionary.schedule


def test_subsample_random_keeps_right_atoms(dictionary: Dictionary) -> None:
    sub = dictionary.subsample(5, method="random", seed=SUBSAMPLE_SEED)
    idx = subsample_indices(len(dictionary), 5, method="random", seed=SUBSAMPLE_SEED)
    np.testing.assert_array_equal(sub.atoms, dictionary.atoms[idx])
    np.testing.assert_array_equal(sub.t1_ms, dictionary.t1_ms[idx])
    np.testing.assert_array_equal(sub.b1, dictionary.b1[idx])


def test_select_any_order(dictionary: Dictionary) -> None:
    idx = np.array([10, 2, 2, len(dictionary) - 1])
    sel = dictionary.select(idx)
    np.testing.assert_array_equal(sel.atoms, dictionary.atoms[idx])
    np.testing.assert_array_equal(sel.t2_ms, dictionary.t2_ms[idx])
    # Copies: writing to the selection leaves the original alone.
    before = dictionary.atoms[10].copy()
    sel.atoms[0] = 0
    np.testing.assert_array_equal(dictionary.atoms[10], before)


def test_select_without_b1(schedule: Schedule, small_grid) -> None:
    d = Dictionary.generate(schedule, *small_grid)
    assert d.select(np.array([0, 1])).b1 is None


def test_b1_values_are_sorted_distinct_planes(dictionary: Dictionary, schedule: Schedule, small_grid) -> None:
    planes = dictionary.b1_values()
    assert planes is not None and planes.dtype == np.float64
    np.testing.assert_array_equal(planes, sorted(B1_VALUES))
    # Order of the atoms does not matter: a reversed dictionary has the same planes.
    reversed_planes = dictionary.select(np.arange(len(dictionary))[::-1]).b1_values()
    assert reversed_planes is not None
    np.testing.assert_array_equal(reversed_planes, planes)
    assert Dictionary.generate(schedule, *small_grid).b1_values() is None


def test_select_b1_keeps_one_plane_in_order(dictionary: Dictionary) -> None:
    assert dictionary.b1 is not None
    for value in B1_VALUES:
        plane = dictionary.select_b1(value)
        keep = np.flatnonzero(dictionary.b1 == value)
        assert len(plane) == keep.size == len(dictionary) // len(B1_VALUES)
        np.testing.assert_array_equal(plane.atoms, dictionary.atoms[keep])
        np.testing.assert_array_equal(plane.t1_ms, dictionary.t1_ms[keep])
        np.testing.assert_array_equal(plane.t2_ms, dictionary.t2_ms[keep])
        assert plane.b1 is not None and np.all(plane.b1 == value)


def test_select_b1_errors(dictionary: Dictionary, schedule: Schedule, small_grid) -> None:
    with pytest.raises(ValueError, match=r"b1: expected one of the dictionary's B1 planes \[0.8, 1.0, 1.15\], got 0.9"):
        dictionary.select_b1(0.9)
    with pytest.raises(ValueError, match="b1: this dictionary has no B1 axis"):
        Dictionary.generate(schedule, *small_grid).select_b1(1.0)


def test_magnitudes_and_describe(dictionary: Dictionary) -> None:
    mag = dictionary.magnitudes()
    assert mag.dtype == np.float32 and mag.shape == dictionary.atoms.shape
    np.testing.assert_array_equal(mag, np.abs(dictionary.atoms))
    text = dictionary.describe()
    assert dictionary.schedule.digest() in text and str(len(dictionary)) in text


# ---------------------------------------------------------------------------- constructor validation
def test_constructor_shape_validation(schedule: Schedule) -> None:
    n, nf = 6, schedule.n_frames
    atoms = np.zeros((n, nf), dtype=np.complex64)
    t = np.linspace(100.0, 600.0, n)
    Dictionary(atoms, t, t / 10, schedule)  # valid
    with pytest.raises(ValueError, match="atoms"):
        Dictionary(np.zeros((n, nf + 1), dtype=np.complex64), t, t / 10, schedule)
    with pytest.raises(ValueError, match="atoms"):
        Dictionary(np.zeros((n + 1, nf), dtype=np.complex64), t, t / 10, schedule)
    with pytest.raises(ValueError, match="atoms"):
        Dictionary(np.zeros(n * nf, dtype=np.complex64), t, t / 10, schedule)
    with pytest.raises(ValueError, match="t2_ms"):
        Dictionary(atoms, t, t[:-1] / 10, schedule)
    with pytest.raises(ValueError, match="b1"):
        Dictionary(atoms, t, t / 10, schedule, np.ones(n + 2))
