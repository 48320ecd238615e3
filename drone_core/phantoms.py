"""Numerical phantoms: label maps with tissue tables, true T1/T2/M0 maps, and their MRF frames.

A :class:`Phantom` is a label map ``(z, y, x)`` (or ``(y, x)``) of non-negative integers and a
table ``label → Tissue(name, t1_ms, t2_ms, m0)``; label 0 is air (no signal) and is never in
the table. Optionally each voxel's T1 and T2 are offset from its tissue's values (a seeded
per-voxel *spread*). :meth:`Phantom.maps` gives the true maps; :func:`simulate_frames` the
frames of an MRF acquisition with the normative signal model (:func:`drone_core.epg.simulate`).

Constructors
------------
* :func:`brain_phantom` — WM/GM/CSF axial slices from the MNI152 templates
  (``drone_core/phantom_data/brain_mni152_128.npz``, made by ``tools/make_brain_phantom.py``;
  2 × 2 mm pixels on a 256 mm field of view, 5 mm slices: the DRONE paper's protocol), with the
  paper's Table 1 values (``values="paper"``) or BrainWeb's 1.5 T values (``"brainweb"``).
* :func:`nist_phantom` — the T1 or T2 array of the ISMRM/NIST system phantom (Stupic et al.,
  MRM 2021; 1.5 T, 20 °C, phantom version 1): 14 spheres on a ring in a water-like disc.

Noise (:func:`simulate_frames`)
-------------------------------
The project's "p % noise" (:mod:`drone_core.noise`) is complex Gaussian noise, σ per real
channel, relative to a fingerprint's peak magnitude. An image has one noise level for all its
voxels, so here **σ = p/100 × the largest noise-free magnitude of any voxel in any frame** (the
brightest tissue's peak, M0 included), one σ for the whole image; air gets noise too, and the
magnitude is taken after adding it (Rician, as on a scanner). For an image of one tissue this is
exactly ``add_noise(atoms, p/100)`` of that tissue's fingerprint; darker tissues get a lower SNR
than p % of their own peak — as in a real scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from .epg import simulate
from .schedule import Schedule

__all__ = [
    "Tissue",
    "Phantom",
    "brain_phantom",
    "nist_phantom",
    "simulate_frames",
    "image_noise_sigma",
    "BRAIN_LABELS",
    "BRAIN_PAPER",
    "BRAIN_PAPER_SD",
    "BRAIN_BRAINWEB",
    "NIST_T1_ARRAY",
    "NIST_T2_ARRAY",
    "NIST_BACKGROUND",
    "NIST_LAYOUT",
    "SPREAD_TRUNCATION_SD",
    "BRAIN_DATA_FILE",
]


class Tissue(NamedTuple):
    """One row of a phantom's table (unpacks as ``(name, t1_ms, t2_ms, m0)``).

    Attributes:
        name: label for reports, e.g. ``"WM"`` or ``"sphere 3"``.
        t1_ms, t2_ms: relaxation times, ms (> 0).
        m0: proton density (relative; ≥ 0).
    """

    name: str
    t1_ms: float
    t2_ms: float
    m0: float


# --------------------------------------------------------------------------- reference values
#: Brain label numbers of the shipped label map (BrainWeb's order).
BRAIN_LABELS: dict[str, int] = {"CSF": 1, "GM": 2, "WM": 3}

#: The DRONE paper's Table 1 (in vivo, 1.5 T, ROI means) with BrainWeb's proton densities as M0.
BRAIN_PAPER: dict[int, Tissue] = {
    1: Tissue("CSF", 3799.0, 870.0, 1.0),
    2: Tissue("GM", 1110.0, 96.0, 0.86),
    3: Tissue("WM", 663.0, 83.0, 0.77),
}
#: The paper's Table 1 ROI standard deviations, name → (sd T1 ms, sd T2 ms).
BRAIN_PAPER_SD: dict[str, tuple[float, float]] = {"CSF": (422.0, 191.0), "GM": (59.0, 13.0), "WM": (30.0, 7.9)}
#: BrainWeb's 1.5 T simulator values (T1 / T2 / proton density).
BRAIN_BRAINWEB: dict[int, Tissue] = {
    1: Tissue("CSF", 2569.0, 329.0, 1.0),
    2: Tissue("GM", 833.0, 83.0, 0.86),
    3: Tissue("WM", 500.0, 70.0, 0.77),
}

#: ISMRM/NIST system phantom, version 1 (serial ≤ 0041), 1.5 T, 20 °C (Stupic et al. MRM 2021,
#: supporting information): sphere k → (T1 ms, T2 ms). T1 array: NiCl2.
NIST_T1_ARRAY: dict[int, tuple[float, float]] = {
    1: (2033.0, 1669.0), 2: (1489.0, 1244.0), 3: (1012.0, 859.3), 4: (730.8, 628.5), 5: (514.1, 446.3),
    6: (367.9, 321.2), 7: (260.1, 227.7), 8: (184.6, 161.9), 9: (132.7, 117.1), 10: (92.7, 81.9),
    11: (65.4, 57.7), 12: (46.32, 41.0), 13: (32.45, 28.7), 14: (22.859, 20.2),
}
#: The T2 array (MnCl2), same source and conditions.
NIST_T2_ARRAY: dict[int, tuple[float, float]] = {
    1: (2736.0, 939.4), 2: (2183.0, 594.3), 3: (1870.0, 416.5), 4: (1539.0, 267.0), 5: (1237.0, 184.9),
    6: (1030.0, 140.6), 7: (752.2, 91.76), 8: (550.2, 64.84), 9: (413.4, 45.28), 10: (292.9, 30.62),
    11: (194.9, 19.76), 12: (160.2, 15.99), 13: (106.4, 10.47), 14: (83.33, 8.15),
}
#: The disc around the spheres: an assumption, not a reference value — of the order of free water
#: at room temperature (T1 ≈ 3 s, T2 ≈ 2 s), M0 = 1 like the (aqueous) spheres.
NIST_BACKGROUND = Tissue("background fluid (water-like, assumed)", 3000.0, 2000.0, 1.0)
#: Layout of :func:`nist_phantom` in mm (schematic: the plate's real sphere size and spacing are not
#: reproduced). Sphere 1 at 12 o'clock, numbers increasing clockwise on the displayed image.
NIST_LAYOUT: dict[str, float] = {"fov_mm": 256.0, "disc_radius_mm": 100.0, "ring_radius_mm": 70.0,
                                 "sphere_radius_mm": 10.0}
#: Label of the background disc in :func:`nist_phantom` (spheres are 1…14, air 0).
NIST_BACKGROUND_LABEL = 15
#: The DRONE paper left out the phantom compartments with T2 below this (ms).
NIST_EXCLUDE_T2_BELOW_MS = 30.0
#: … and, for its second T2 error figure, also those with T2 above this (ms).
NIST_LONG_T2_ABOVE_MS = 1200.0

#: Spread draws beyond this many standard deviations are drawn again (truncated Gaussian): keeps CSF
#: T1 ≤ 4854 ms, inside the paper dictionary's 5000 ms, and every T1, T2 > 0 with T1 > T2.
SPREAD_TRUNCATION_SD = 2.5

#: File name of the shipped brain label map under ``drone_core/phantom_data``.
BRAIN_DATA_FILE = "brain_mni152_128.npz"


# --------------------------------------------------------------------------- the phantom
@dataclass(frozen=True, eq=False)
class Phantom:
    """A label map with a tissue table (validated on construction).

    Attributes:
        labels: ``(z, y, x)`` or ``(y, x)`` non-negative integers; 0 is air (no signal).
        tissues: label → :class:`Tissue` (or a ``(name, t1_ms, t2_ms, m0)`` tuple) for every non-zero
            label in the map; label 0 must not be in it.
        name: what the phantom is.
        fov_mm: field of view ``(y, x)`` in mm (the whole matrix).
        slice_thickness_mm: slice thickness, mm.
        slice_positions_mm: position of each slice centre along the slice direction, mm, ``(z,)``
            (default: contiguous slices centred on 0).
        t1_offset_ms, t2_offset_ms: per-voxel spread added to the tissue's T1/T2, arrays of the
            labels' shape (0 in air), or None.
        metadata: anything else (reference, layout, excluded labels …).
    """

    labels: np.ndarray
    tissues: Mapping[int, Tissue]
    name: str = "phantom"
    fov_mm: tuple[float, float] = (256.0, 256.0)
    slice_thickness_mm: float = 5.0
    slice_positions_mm: tuple[float, ...] | None = None
    t1_offset_ms: np.ndarray | None = None
    t2_offset_ms: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim not in (2, 3) or labels.dtype.kind not in "ui" or 0 in labels.shape:
            raise ValueError(f"labels: expected a non-empty (z, y, x) or (y, x) integer array, got "
                             f"{labels.dtype} {labels.shape}")
        if labels.size and int(labels.min()) < 0:
            raise ValueError(f"labels: expected labels ≥ 0 (0 = air), got {int(labels.min())}")
        labels = np.ascontiguousarray(labels)
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.tissues, Mapping):
            raise TypeError(f"tissues: expected a mapping label → Tissue, got {type(self.tissues).__name__}")
        table: dict[int, Tissue] = {}
        for key, value in self.tissues.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or int(key) < 1:
                raise ValueError(f"tissues: expected labels ≥ 1 as keys (0 is air), got {key!r}")
            try:
                tissue = Tissue(*value)
            except TypeError:
                raise TypeError(f"tissues[{key}]: expected (name, t1_ms, t2_ms, m0), got {value!r}") from None
            v_t1, v_t2, v_m0 = float(tissue.t1_ms), float(tissue.t2_ms), float(tissue.m0)
            if not (math.isfinite(v_t1) and v_t1 > 0 and math.isfinite(v_t2) and v_t2 > 0):
                raise ValueError(f"tissues[{key}] ({tissue.name}): expected T1, T2 > 0 ms, got {v_t1}, {v_t2}")
            if not (math.isfinite(v_m0) and v_m0 >= 0):
                raise ValueError(f"tissues[{key}] ({tissue.name}): expected M0 ≥ 0, got {v_m0}")
            table[int(key)] = Tissue(str(tissue.name), v_t1, v_t2, v_m0)
        present = {int(v) for v in np.unique(labels)} - {0}
        missing = sorted(present - set(table))
        if missing:
            raise ValueError(f"tissues: labels {missing} are in the label map but not in the table "
                             f"(table has {sorted(table)})")
        object.__setattr__(self, "tissues", table)
        fov = tuple(float(v) for v in self.fov_mm)
        if len(fov) != 2 or not all(math.isfinite(v) and v > 0 for v in fov):
            raise ValueError(f"fov_mm: expected two positive numbers (y, x) in mm, got {self.fov_mm!r}")
        object.__setattr__(self, "fov_mm", fov)
        thickness = float(self.slice_thickness_mm)
        if not (math.isfinite(thickness) and thickness > 0):
            raise ValueError(f"slice_thickness_mm: expected > 0 mm, got {self.slice_thickness_mm!r}")
        object.__setattr__(self, "slice_thickness_mm", thickness)
        n_z = self.n_slices
        if self.slice_positions_mm is None:
            positions = tuple((s - (n_z - 1) / 2.0) * thickness for s in range(n_z))
        else:
            positions = tuple(float(v) for v in self.slice_positions_mm)
            if len(positions) != n_z or not all(math.isfinite(v) for v in positions):
                raise ValueError(f"slice_positions_mm: expected {n_z} finite values (one per slice), got "
                                 f"{self.slice_positions_mm!r}")
        object.__setattr__(self, "slice_positions_mm", positions)
        for name in ("t1_offset_ms", "t2_offset_ms"):
            offset = getattr(self, name)
            if offset is None:
                continue
            arr = np.asarray(offset, dtype=np.float64)
            if arr.shape != labels.shape or not np.isfinite(arr).all():
                raise ValueError(f"{name}: expected finite values of shape {labels.shape} like labels, got "
                                 f"{arr.shape}")
            arr = np.where(labels == 0, 0.0, arr)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        t1, t2, _ = self._values()
        tissue_voxels = labels != 0
        if tissue_voxels.any() and (t1[tissue_voxels].min() <= 0 or t2[tissue_voxels].min() <= 0):
            raise ValueError("t1_offset_ms/t2_offset_ms: the spread makes some T1 or T2 ≤ 0 ms")
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the label map."""
        return tuple(int(n) for n in self.labels.shape)

    @property
    def n_slices(self) -> int:
        """Number of slices z (1 for a 2-D label map)."""
        return int(self.labels.shape[0]) if self.labels.ndim == 3 else 1

    @property
    def matrix(self) -> tuple[int, int]:
        """In-plane matrix ``(y, x)``."""
        return int(self.labels.shape[-2]), int(self.labels.shape[-1])

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """Pixel size ``(y, x)``, mm."""
        return self.fov_mm[0] / self.matrix[0], self.fov_mm[1] / self.matrix[1]

    @property
    def has_spread(self) -> bool:
        """True when some voxel's T1 or T2 differs from its tissue's."""
        return any(o is not None and bool(np.any(o != 0)) for o in (self.t1_offset_ms, self.t2_offset_ms))

    def tissue_mask(self, label_or_name: int | str) -> np.ndarray:
        """Boolean mask of a tissue, by label or by name."""
        if isinstance(label_or_name, str):
            found = [k for k, t in self.tissues.items() if t.name == label_or_name]
            if not found:
                raise ValueError(f"label_or_name: no tissue named {label_or_name!r}; have "
                                 f"{[t.name for t in self.tissues.values()]}")
            return np.isin(self.labels, found)
        if int(label_or_name) not in self.tissues:
            raise ValueError(f"label_or_name: label {label_or_name} not in the table {sorted(self.tissues)}")
        return self.labels == int(label_or_name)

    # ------------------------------------------------------------------ maps
    def _lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        top = max([0, *self.tissues])
        lut = np.zeros((3, top + 1), dtype=np.float64)
        for k, t in self.tissues.items():
            lut[:, k] = (t.t1_ms, t.t2_ms, t.m0)
        return lut[0], lut[1], lut[2]

    def _values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float64 T1, T2, M0 per voxel (0 in air)."""
        lut_t1, lut_t2, lut_m0 = self._lookup()
        t1, t2, m0 = lut_t1[self.labels], lut_t2[self.labels], lut_m0[self.labels]
        if self.t1_offset_ms is not None:
            t1 = t1 + self.t1_offset_ms
        if self.t2_offset_ms is not None:
            t2 = t2 + self.t2_offset_ms
        return t1, t2, m0

    def maps(self) -> dict[str, np.ndarray]:
        """The true maps ``{"t1": T1 ms, "t2": T2 ms, "m0": M0}``, float32, the labels' shape, 0 in air."""
        t1, t2, m0 = self._values()
        return {"t1": t1.astype(np.float32), "t2": t2.astype(np.float32), "m0": m0.astype(np.float32)}

    def describe(self) -> str:
        """One line: name, shape and tissues."""
        tissues = ", ".join(f"{k}: {t.name} {t.t1_ms:g}/{t.t2_ms:g} ms M0 {t.m0:g}" for k, t in self.tissues.items())
        spread = "; with per-voxel spread" if self.has_spread else ""
        return f"{self.name} {self.shape} (FOV {self.fov_mm[0]:g}×{self.fov_mm[1]:g} mm){spread}; {tissues}"


# --------------------------------------------------------------------------- helpers
def _matrix(matrix: Sequence[int], name: str = "matrix") -> tuple[int, int]:
    try:
        values = tuple(matrix)
    except TypeError:
        raise TypeError(f"{name}: expected two ints (y, x), got {matrix!r}") from None
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 8
                                   for v in values):
        raise ValueError(f"{name}: expected two ints (y, x), each ≥ 8, got {matrix!r}")
    return int(values[0]), int(values[1])


def _resample_nearest(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a ``(y, x)`` label plane onto ``shape`` over the same FOV
    (pixel centres mapped to pixel centres)."""
    ny, nx = plane.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * ny / shape[0]).astype(int), ny - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * nx / shape[1]).astype(int), nx - 1)
    return plane[np.ix_(rows, cols)]


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], limit: float) -> np.ndarray:
    """Standard normal draws, those beyond ±limit drawn again."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > limit
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > limit
    return z


def _load_brain_data() -> dict[str, np.ndarray]:
    ref = resources.files("drone_core.phantom_data").joinpath(BRAIN_DATA_FILE)
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------------------- constructors
def brain_phantom(n_slices: int = 1, matrix: Sequence[int] = (128, 128), values: Literal["paper", "brainweb"] = "paper",
                  *, spread: bool = False, seed: int = 0) -> Phantom:
    """WM/GM/CSF brain slices (labels 1 CSF, 2 GM, 3 WM; 0 outside the brain).

    The anatomy is the shipped MNI152-derived label map (seven 5 mm axial slices at MNI z = 0, 5, …,
    30 mm, 128 × 128 pixels of 2 mm on a 256 mm FOV; ``drone_core/phantom_data/README.md``).

    Args:
        n_slices: how many consecutive slices, 1…7, centred on MNI z = 15 mm (the bodies of the
            lateral ventricles): 1 → z = 15; 3 → 10, 15, 20; 7 → all (an even count takes one more
            above than below).
        matrix: in-plane ``(y, x)``; other than (128, 128) the labels are resampled by nearest
            neighbour over the same 256 mm FOV (pixels then need not be square).
        values: ``"paper"`` — the DRONE paper's Table 1 (WM 663/83, GM 1110/96, CSF 3799/870 ms);
            ``"brainweb"`` — BrainWeb's 1.5 T values (WM 500/70, GM 833/83, CSF 2569/329 ms).
            M0 is BrainWeb's proton density in both: WM 0.77, GM 0.86, CSF 1.0.
        spread: add per-voxel Gaussian T1/T2 variation with the paper's ROI standard deviations
            (Table 1), relative to the mean (so for ``values="paper"`` exactly the Table's sd),
            truncated at ±:data:`SPREAD_TRUNCATION_SD` sd; M0 has no spread.
        seed: seed of the spread (same seed, same phantom).

    Returns:
        a :class:`Phantom` of shape ``(n_slices, y, x)``.
    """
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)):
        raise TypeError(f"n_slices: expected an int, got {type(n_slices).__name__}")
    if values not in ("paper", "brainweb"):
        raise ValueError(f"values: expected 'paper' or 'brainweb', got {values!r}")
    shape = _matrix(matrix)
    data = _load_brain_data()
    stack = data["labels"]
    z_mm = [float(v) for v in data["slice_z_mm"]]
    n_stored = stack.shape[0]
    if not 1 <= int(n_slices) <= n_stored:
        raise ValueError(f"n_slices: expected 1…{n_stored} (the shipped slices), got {n_slices}")
    centre = int(np.argmin(np.abs(np.asarray(z_mm) - 15.0)))
    start = min(max(centre - (int(n_slices) - 1) // 2, 0), n_stored - int(n_slices))
    picked = range(start, start + int(n_slices))
    labels = stack[start:start + int(n_slices)].astype(np.uint8)
    if shape != labels.shape[1:]:
        labels = np.stack([_resample_nearest(plane, shape) for plane in labels])
    table = dict(BRAIN_PAPER if values == "paper" else BRAIN_BRAINWEB)
    fov = tuple(float(v) for v in data["fov_mm"])
    t1_offset = t2_offset = None
    if spread:
        rng = np.random.default_rng(seed)
        t1_offset = np.zeros(labels.shape)
        t2_offset = np.zeros(labels.shape)
        for label, tissue in sorted(table.items()):
            sd_t1, sd_t2 = BRAIN_PAPER_SD[tissue.name]
            ref = BRAIN_PAPER[label]
            where = labels == label
            n = int(where.sum())
            t1_offset[where] = tissue.t1_ms * sd_t1 / ref.t1_ms * _truncated_normal(rng, (n,), SPREAD_TRUNCATION_SD)
            t2_offset[where] = tissue.t2_ms * sd_t2 / ref.t2_ms * _truncated_normal(rng, (n,), SPREAD_TRUNCATION_SD)
    return Phantom(
        labels=labels, tissues=table, name=f"MNI152 brain ({values} values)", fov_mm=(fov[0], fov[1]),
        slice_thickness_mm=float(data["slice_thickness_mm"]), slice_positions_mm=tuple(z_mm[i] for i in picked),
        t1_offset_ms=t1_offset, t2_offset_ms=t2_offset,
        metadata={"values": values, "spread": bool(spread), "seed": int(seed) if spread else None,
                  "slice_z_mm": [z_mm[i] for i in picked], "labels": dict(BRAIN_LABELS),
                  "provenance": str(data["provenance"]),
                  "reference": ("DRONE paper Table 1 (1.5 T in vivo ROI means) with BrainWeb proton densities"
                                if values == "paper" else "BrainWeb 1.5 T simulator values")},
    )


def nist_phantom(array: Literal["T1", "T2"] = "T1", matrix: Sequence[int] = (128, 128), *,
                 background: Tissue | None = NIST_BACKGROUND) -> Phantom:
    """One plane through the T1 or T2 array of the ISMRM/NIST system phantom.

    Layout (schematic, :data:`NIST_LAYOUT`): a 256 mm square FOV; a background disc of radius
    100 mm (the phantom is a 200 mm sphere) centred in it; the 14 spheres as discs of radius
    10 mm (their central plane; no partial volume) with centres on a ring of radius 70 mm,
    sphere 1 at 12 o'clock (top of the displayed image, row 0 at the top) and numbers increasing
    clockwise. A voxel belongs to a disc when its centre does. Labels: 0 air, k = sphere k (1…14),
    15 the background disc.

    Args:
        array: ``"T1"`` (NiCl2) or ``"T2"`` (MnCl2) array; values at 1.5 T, 20 °C
            (:data:`NIST_T1_ARRAY`, :data:`NIST_T2_ARRAY`), M0 = 1. The default is the T1 array: the
            one the DRONE paper's description fits (exactly two compartments with T2 < 30 ms, and
            compartments with T2 > 1200 ms; the T2 array has four and none).
        matrix: ``(y, x)``; the FOV stays 256 × 256 mm (non-square matrices give non-square pixels).
        background: the disc's tissue (default :data:`NIST_BACKGROUND`, an assumed water-like fluid);
            None leaves air around the spheres.

    Returns:
        a :class:`Phantom` of shape ``(1, y, x)``. ``metadata["excluded_labels"]``: the spheres the
        DRONE paper left out of its comparison (T2 < 30 ms); nothing is excluded from the phantom.
        ``metadata["long_t2_labels"]``: spheres with T2 > 1200 ms, which the paper also left out of
        its second T2 figure (bias 21 ms, RMSE 31 ms).
    """
    if array not in ("T1", "T2"):
        raise ValueError(f"array: expected 'T1' or 'T2', got {array!r}")
    shape = _matrix(matrix)
    values = NIST_T1_ARRAY if array == "T1" else NIST_T2_ARRAY
    fov = NIST_LAYOUT["fov_mm"]
    ny, nx = shape
    dy, dx = fov / ny, fov / nx
    y_mm = (np.arange(ny) + 0.5 - ny / 2.0) * dy  # row centres, + = down (posterior)
    x_mm = (np.arange(nx) + 0.5 - nx / 2.0) * dx  # column centres, + = right on the display
    yy, xx = np.meshgrid(y_mm, x_mm, indexing="ij")
    labels = np.zeros(shape, dtype=np.uint8)
    if background is not None:
        labels[xx ** 2 + yy ** 2 <= NIST_LAYOUT["disc_radius_mm"] ** 2] = NIST_BACKGROUND_LABEL
    ring, radius = NIST_LAYOUT["ring_radius_mm"], NIST_LAYOUT["sphere_radius_mm"]
    centres: dict[int, tuple[float, float]] = {}
    for k in values:
        angle = 2.0 * math.pi * (k - 1) / len(values)
        cx, cy = ring * math.sin(angle), -ring * math.cos(angle)  # clockwise from 12 o'clock
        centres[k] = (cy, cx)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
        if not inside.any():
            raise ValueError(f"matrix: {shape} is too coarse: sphere {k} covers no voxel centre")
        labels[inside] = k
    table: dict[int, Tissue] = {k: Tissue(f"sphere {k}", t1, t2, 1.0) for k, (t1, t2) in values.items()}
    if background is not None:
        table[NIST_BACKGROUND_LABEL] = Tissue(*background)
    excluded = [k for k, (_, t2) in values.items() if t2 < NIST_EXCLUDE_T2_BELOW_MS]
    long_t2 = [k for k, (_, t2) in values.items() if t2 > NIST_LONG_T2_ABOVE_MS]
    return Phantom(
        labels=labels[None], tissues=table, name=f"ISMRM/NIST system phantom, {array} array", fov_mm=(fov, fov),
        slice_thickness_mm=5.0, slice_positions_mm=(0.0,),
        metadata={"array": array, "sphere_labels": list(values), "background_label":
                  NIST_BACKGROUND_LABEL if background is not None else None,
                  "excluded_labels": excluded,
                  "excluded_reason": f"the DRONE paper left out the compartments with T2 < "
                                     f"{NIST_EXCLUDE_T2_BELOW_MS:g} ms",
                  "long_t2_labels": long_t2,
                  "sphere_centres_mm": centres, "layout": dict(NIST_LAYOUT),
                  "reference": "Stupic et al., MRM 2021;86:1194, supporting information: phantom version 1 "
                               "(serial ≤ 0041), 1.5 T, 20 °C"},
    )


# --------------------------------------------------------------------------- frames
def image_noise_sigma(clean_frames: np.ndarray, noise_level: float) -> float:
    """σ per real channel for ``noise_level`` (a fraction) of an image series: ``noise_level`` ×
    the largest noise-free magnitude of any voxel in any frame (see the module docstring)."""
    if not (isinstance(noise_level, (int, float, np.floating)) and math.isfinite(noise_level) and noise_level >= 0):
        raise ValueError(f"noise_level: expected a fraction ≥ 0 (0.01 = 1 %), got {noise_level!r}")
    arr = np.asarray(clean_frames)
    return float(noise_level) * (float(np.abs(arr).max()) if arr.size else 0.0)


def simulate_frames(phantom: Phantom, schedule: Schedule, noise_level: float = 0.0, seed: int | None = None,
                    b1: float | np.ndarray | None = None, *, magnitude: bool = True) -> np.ndarray:
    """The MRF frames of a phantom under ``schedule`` (normative signal model, M0 from the table).

    Signals are simulated once per distinct (T1, T2, B1) — a handful for a phantom without spread,
    one per voxel with it — by :func:`drone_core.epg.simulate` in float64, then scaled by each
    voxel's M0. Air is 0 before noise.

    Args:
        phantom: the phantom.
        schedule: the acquisition schedule (N frames).
        noise_level: fraction (0.01 = 1 %): complex Gaussian noise with one σ per real channel for the
            whole image, σ = noise_level × the brightest noise-free magnitude (module docstring).
        seed: seed of the noise (``numpy.random.default_rng``); None: unseeded.
        b1: relative transmit field: None (1), a number, or an array of the labels' shape.
        magnitude: True → float32 magnitudes ``|signal + noise|``; False → complex64 signal + noise.

    Returns:
        ``(N,) + phantom.shape`` frames, e.g. ``(N, z, y, x)``.
    """
    if not isinstance(phantom, Phantom):
        raise TypeError(f"phantom: expected drone_core.phantoms.Phantom, got {type(phantom).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    image_noise_sigma(np.zeros(0), noise_level)  # validates noise_level
    shape = phantom.shape
    if b1 is None:
        b1_map = np.ones(shape)
    else:
        b1_arr = np.asarray(b1, dtype=np.float64)
        if b1_arr.ndim == 0:
            b1_map = np.full(shape, float(b1_arr))
        elif b1_arr.shape == shape:
            b1_map = b1_arr
        else:
            raise ValueError(f"b1: expected None, a number or an array of shape {shape} like the labels, got "
                             f"shape {b1_arr.shape}")
        if not np.isfinite(b1_map).all() or (b1_map < 0).any():
            raise ValueError("b1: expected finite values ≥ 0")
    t1, t2, m0 = phantom._values()
    tissue = phantom.labels != 0
    out = np.zeros((schedule.n_frames,) + shape, dtype=np.complex128)
    if tissue.any():
        params = np.stack([t1[tissue], t2[tissue], b1_map[tissue]], axis=1)
        unique, inverse = np.unique(params, axis=0, return_inverse=True)
        atoms = np.asarray(simulate(schedule, unique[:, 0], unique[:, 1], unique[:, 2], dtype=torch.float64))
        out[:, tissue] = (atoms[np.ravel(inverse)] * m0[tissue][:, None]).T
    if noise_level > 0:
        sigma = image_noise_sigma(out, noise_level)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((2,) + out.shape)
        out = out + sigma * (noise[0] + 1j * noise[1])
    if magnitude:
        return np.abs(out).astype(np.float32)
    return out.astype(np.complex64)
