"""B1 maps for the gadget: from ISMRMRD images or files, onto the frames' voxel grid, checked.

Real scanners have an inhomogeneous transmit field B1⁺ (relative B1 ≈ 0.7–1.3 at 3 T); a site
measures it in a separate short scan. With the property ``b1`` (:mod:`drone_gadgets.recon.settings`) the
gadget gives each voxel's relative B1 to an estimator that takes it
(:func:`drone_core.reconstruct.accepts_b1`):

* ``b1=stream``: B1 map images arrive in the same stream as the frames, told apart from them by
  ``image_series_index`` = ``b1_series_index``, one per slice (header ``slice``);
  :func:`b1_map_from_image` turns one into a :class:`B1Map`.
* ``b1=file:<path>``: a NIfTI file (one volume for all slices) or an ISMRMRD ``.h5`` file whose
  images of series ``b1_series_index`` are the B1 maps, by ``slice`` (:func:`load_b1_file`).

Pixel values are scaled by ``b1_scale`` (relative B1 = pixel × ``b1_scale``; 0.01 for maps in
percent of nominal). A map whose median relative B1 over its positive pixels is outside
:data:`PLAUSIBLE_MEDIAN` is refused (a wrong ``b1_scale`` would otherwise silently make every
voxel "out of range", i.e. empty maps).

Resampling (:func:`b1_on_frames`): the B1 map is sampled at the centre of every frame voxel by its
geometry — patient coordinates (LPS, mm) from the ImageHeader's ``position`` (the centre of the
field of view), ``read_dir``/``phase_dir``/``slice_dir``, ``field_of_view`` and the data's matrix;
voxel ``(k, j, i)`` of a ``(z, y, x)`` image lies at ``position + (i − (x−1)/2)·Δx·read_dir +
(j − (y−1)/2)·Δy·phase_dir + (k − (z−1)/2)·Δz·slice_dir``, Δ = field of view / matrix. For NIfTI
files the affine (RAS+, mm) is used. Interpolation is linear (``scipy.ndimage.map_coordinates``,
order 1); a frame voxel within half a B1 voxel of the map's outer voxel centres takes the edge
value. Frame voxels outside the B1 map's volume get NaN (no estimate there, never a made-up B1);
when no frame voxel of the slice lies inside it — another slice position, beyond half the B1
map's slice thickness, or no in-plane overlap — :class:`~drone_gadgets.recon.errors.B1GeometryError`
names the slice and the distance. A map of the frames' matrix and geometry is used as it is.
Images without geometry (no unit read/phase directions, or a zero field of view) are taken to
cover the same field of view as the frames (with a warning).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np

from drone_core.reconstruct import accepts_b1, estimates_b1

from .conversion import image_magnitude
from .errors import B1Error, B1GeometryError, B1MissingError, FrameError, SettingsError
from .settings import GadgetSettings

__all__ = [
    "B1Map",
    "B1File",
    "Grid",
    "PLAUSIBLE_MEDIAN",
    "b1_map_from_image",
    "b1_on_frames",
    "check_b1_scale",
    "check_b1_support",
    "image_grid",
    "load_b1_file",
    "open_b1_source",
    "voxel_positions",
]

log = logging.getLogger(__name__)

#: A B1 map whose median relative B1 (over its positive finite pixels) lies outside this range is
#: refused as mis-scaled: real maps are ≈ 0.7–1.3; a percent map read with b1_scale 1 gives ≈ 100.
PLAUSIBLE_MEDIAN: tuple[float, float] = (0.1, 10.0)
#: Tolerance, in B1 voxels, on the edges of the B1 map's volume (rounding of positions).
_EDGE_TOL = 1e-3
#: Index mappings closer than this to the identity are the identity (same matrix and geometry).
_SAME_TOL = 1e-6
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_H5_SUFFIXES = (".h5", ".hdf5", ".mrd", ".ismrmrd")
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


# =========================================================================== grids
@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in patient coordinates (LPS, mm): ``world = matrix @ index + origin``.

    Attributes:
        shape: the data's shape (3 axes; for ISMRMRD images ``(z, y, x)``).
        matrix: ``(3, 3)``; column ``a`` is the step (mm) of one voxel along data axis ``a``.
        origin: ``(3,)`` world position (mm) of voxel ``(0, 0, 0)``.
        axes: names of the data axes, for messages.
    """

    shape: tuple[int, int, int]
    matrix: np.ndarray
    origin: np.ndarray
    axes: tuple[str, str, str]

    def to_index(self, world: np.ndarray) -> np.ndarray:
        """``(..., 3)`` world positions (mm) → ``(..., 3)`` fractional voxel indices (data axis order)."""
        inverse = np.linalg.inv(self.matrix)
        return (np.asarray(world, dtype=np.float64) - self.origin) @ inverse.T

    def spacing(self, axis: int) -> float:
        """Voxel size (mm) along data axis ``axis``."""
        return float(np.linalg.norm(self.matrix[:, axis]))


def _unit(values: Any) -> np.ndarray | None:
    v = np.asarray(values[:], dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if abs(n - 1.0) < 1e-3 else None


def image_grid(header: ismrmrd.ImageHeader, shape: tuple[int, ...]) -> Grid | None:
    """The grid of an ISMRMRD image of data shape ``(z, y, x)``, or None when its header has no geometry.

    Geometry needs unit, orthogonal ``read_dir`` and ``phase_dir`` and a positive ``field_of_view``
    on all three axes; ``slice_dir`` defaults to ``read_dir × phase_dir`` when it is not a unit vector.
    """
    z, y, x = (int(n) for n in shape[-3:])
    read, phase = _unit(header.read_dir), _unit(header.phase_dir)
    if read is None or phase is None or abs(float(read @ phase)) > 1e-3:
        return None
    normal = _unit(header.slice_dir)
    if normal is None:
        normal = np.cross(read, phase)
    fov = np.asarray(header.field_of_view[:], dtype=np.float64)
    if not np.all(np.isfinite(fov)) or np.any(fov <= 0):
        return None
    matrix = np.stack([normal * fov[2] / z, phase * fov[1] / y, read * fov[0] / x], axis=1)
    centre = np.array([(z - 1) / 2.0, (y - 1) / 2.0, (x - 1) / 2.0])
    position = np.asarray(header.position[:], dtype=np.float64)
    return Grid((z, y, x), matrix, position - matrix @ centre, ("slice (slice_dir)", "phase (phase_dir)",
                                                                "read (read_dir)"))


def voxel_positions(grid: Grid) -> np.ndarray:
    """World positions (mm) of every voxel centre of ``grid``: ``grid.shape + (3,)``."""
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in grid.shape), indexing="ij"), axis=-1)
    return index @ grid.matrix.T + grid.origin


# =========================================================================== B1 maps
@dataclass(frozen=True, eq=False)
class B1Map:
    """The B1 map of one slice (or a volume), in relative units.

    Attributes:
        slice: the header's ``slice`` (-1 for a file volume that serves every slice).
        data: ``(z, y, x)`` (ISMRMRD) or ``(i, j, k)`` (NIfTI) float32 relative B1 (NaN where unknown).
        grid: where its voxels lie, or None (no geometry: same field of view as the frames).
        origin: what it is, for messages (e.g. ``"the B1 map image of slice 2 (series 5)"``).
    """

    slice: int
    data: np.ndarray
    grid: Grid | None
    origin: str


def check_b1_scale(relative: np.ndarray, scale: float, what: str) -> None:
    """Refuse a B1 map whose median relative B1 (positive finite pixels) is implausible (wrong ``b1_scale``).

    Raises:
        B1Error: naming ``what``, the median, the pixel median and the property ``b1_scale``.
    """
    values = relative[np.isfinite(relative) & (relative > 0)]
    if not values.size:
        raise B1Error(f"{what} has no positive finite pixel: it holds no B1 values")
    median = float(np.median(values))
    lo, hi = PLAUSIBLE_MEDIAN
    if not lo <= median <= hi:
        raise B1Error(f"{what}: its median relative B1 is {median:.4g} (pixel median {median / scale:.4g} × property "
                      f"'b1_scale' {scale:g}); expected about 1 (between {lo:g} and {hi:g}). Set b1_scale to the "
                      f"map's units: 0.01 for percent of nominal, 1 for relative B1, 1/nominal flip angle for a "
                      f"flip-angle map")


def b1_map_from_image(image: ismrmrd.Image, *, scale: float, origin: str | None = None) -> B1Map:
    """A :class:`B1Map` from one ISMRMRD image: ``(z, y, x)`` magnitudes × ``scale``, its geometry.

    Args:
        image: the B1 map image (one channel; any pixel type, the magnitude is used).
        scale: ``b1_scale`` (relative B1 = pixel × scale).
        origin: for messages (default: ``"the B1 map image of slice <s> (series <n>)"``).

    Raises:
        B1Error: several channels, an unsupported or empty image, an implausible median.
    """
    header = image.getHead()
    slice_ = int(header.slice)
    what = origin or f"the B1 map image of slice {slice_} (series {int(header.image_series_index)})"
    try:
        data = image_magnitude(image)
    except FrameError as exc:
        raise B1Error(f"{what}: {exc}") from None
    relative = (data.astype(np.float64) * scale).astype(np.float32)
    check_b1_scale(relative, scale, what)
    bad = int(relative.size - np.count_nonzero(np.isfinite(relative)))
    if bad:
        log.warning("%s has %d non-finite pixel(s): no estimate where they are used", what, bad)
    return B1Map(slice_, relative, image_grid(header, relative.shape), what)


def _describe_miss(b1: B1Map, frames: Grid, slice_: int) -> str:
    """Why no voxel of the frames' slice lies inside the B1 map: the axes where the slice's centre is outside."""
    assert b1.grid is not None
    centre = frames.origin + frames.matrix @ (np.array(frames.shape, dtype=np.float64) - 1.0) / 2.0
    index = b1.grid.to_index(centre)
    parts = []
    for axis, (value, n) in enumerate(zip(index, b1.grid.shape)):
        middle = (n - 1) / 2.0
        if abs(value - middle) > n / 2.0 + _EDGE_TOL:
            step = b1.grid.spacing(axis)
            parts.append(f"{abs(value - middle) * step:.1f} mm from the B1 map's centre along its "
                         f"{b1.grid.axes[axis]} axis, beyond half its extent ({n * step / 2.0:.1f} mm)")
    where = "; ".join(parts) if parts else "the slice only touches the B1 map's edge"
    return (f"{b1.origin} does not overlap the frames of slice {slice_}: no frame voxel lies inside it (the "
            f"centre of the frames' slice lies {where}); no maps made for slice {slice_}")


def b1_on_frames(b1: B1Map, header: ismrmrd.ImageHeader, shape: tuple[int, ...], slice_: int) -> np.ndarray:
    """The B1 map sampled at the frames' voxel centres: ``(z, y, x)`` float32 relative B1 (NaN outside it).

    Args:
        b1: the slice's B1 map (or the file's volume).
        header: the frames' ``ImageHeader`` (frame 0 of the slice).
        shape: the frames' spatial shape ``(z, y, x)``.
        slice_: the slice, for messages.

    Raises:
        B1GeometryError: no frame voxel lies inside the B1 map's volume.
    """
    shape3 = tuple(int(n) for n in shape[-3:])
    frames = image_grid(header, shape3)
    data = np.asarray(b1.data, dtype=np.float32)
    if b1.grid is None or frames is None:
        if b1.grid is not None or frames is not None or data.shape != shape3:
            log.warning("%s or the frames of slice %d carry no geometry: the B1 map is taken to cover the frames' "
                        "field of view", b1.origin, slice_)
        if data.shape == shape3:
            return data.copy()
        # Same field of view, voxel centres aligned: index u = (i + 1/2)·m/n − 1/2 on each axis.
        coords = np.meshgrid(*((np.arange(n) + 0.5) * m / n - 0.5 for n, m in zip(shape3, data.shape)), indexing="ij")
        index = np.stack(coords, axis=-1)
    else:
        index = b1.grid.to_index(voxel_positions(frames))
        if data.shape == shape3:
            identity = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape3), indexing="ij"), -1)
            if np.max(np.abs(index - identity)) < _SAME_TOL:
                return data.copy()
    limits = np.array(data.shape, dtype=np.float64)
    inside = np.all((index >= -0.5 - _EDGE_TOL) & (index <= limits - 0.5 + _EDGE_TOL), axis=-1)
    if not inside.any():
        raise B1GeometryError(_describe_miss(b1, frames, slice_) if b1.grid is not None and frames is not None
                              else f"{b1.origin} does not overlap the frames of slice {slice_}")
    from scipy.ndimage import map_coordinates

    clipped = np.clip(index, 0.0, limits - 1.0)
    values = map_coordinates(data.astype(np.float64), np.moveaxis(clipped, -1, 0), order=1, mode="nearest")
    out = np.where(inside, values, np.nan).astype(np.float32)
    outside = int(inside.size - np.count_nonzero(inside))
    if outside:
        log.warning("slice %d: %d of %d frame voxel(s) lie outside %s: no estimate there", slice_, outside,
                    inside.size, b1.origin)
    return out


# =========================================================================== files
class B1File:
    """The B1 maps of ``b1=file:<path>``: one NIfTI volume for every slice, or ISMRMRD images by slice.

    Attributes:
        path: the file.
        volume: the NIfTI volume (``slice`` -1), or None.
        slices: ``{slice: B1Map}`` of an ISMRMRD file (empty for NIfTI).
    """

    def __init__(self, path: Path, volume: B1Map | None, slices: dict[int, B1Map]) -> None:
        self.path = path
        self.volume = volume
        self.slices = slices

    def for_slice(self, slice_: int, header: ismrmrd.ImageHeader, shape: tuple[int, ...]) -> np.ndarray:
        """The B1 map of ``slice_`` on the frames' grid (see :func:`b1_on_frames`).

        Raises:
            B1MissingError: an ISMRMRD file without a B1 map for ``slice_``; B1GeometryError: no overlap.
        """
        if self.volume is not None:
            return b1_on_frames(self.volume, header, shape, slice_)
        if slice_ not in self.slices:
            raise B1MissingError(f"property 'b1': the file {str(self.path)!r} has no B1 map for slice {slice_} (it "
                                 f"has slice(s) {', '.join(map(str, sorted(self.slices))) or 'none'}); no maps made "
                                 f"for slice {slice_}")
        return b1_on_frames(self.slices[slice_], header, shape, slice_)


def _load_nifti(path: Path, scale: float) -> B1Map:
    try:
        import nibabel
        from nibabel.filebasedimages import ImageFileError
    except ImportError:
        raise SettingsError("property 'b1': a NIfTI B1 file needs nibabel (pip install nibabel)") from None
    try:
        image = nibabel.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float64)
        affine = np.asarray(image.affine, dtype=np.float64)
    except (OSError, ValueError, ImageFileError) as exc:
        raise SettingsError(f"property 'b1': cannot read the NIfTI file {str(path)!r}: {exc}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise SettingsError(f"property 'b1': the NIfTI file {str(path)!r} holds data of shape {data.shape}; "
                            f"expected one 3-D B1 map (x, y, slices)")
    what = f"the B1 map of {str(path)!r}"
    relative = np.abs(data * scale).astype(np.float32)
    try:
        check_b1_scale(relative, scale, what)
    except B1Error as exc:
        raise SettingsError(f"property 'b1': {exc}") from None
    matrix = _LPS_FROM_RAS @ affine[:3, :3]
    if abs(np.linalg.det(matrix)) < 1e-9:
        raise SettingsError(f"property 'b1': the NIfTI file {str(path)!r} has a singular affine")
    grid = Grid(tuple(int(n) for n in relative.shape), matrix, _LPS_FROM_RAS @ affine[:3, 3],  # type: ignore[arg-type]
                ("i", "j", "k"))
    return B1Map(-1, relative, grid, what)


def _load_h5(path: Path, series_index: int, scale: float) -> dict[int, B1Map]:
    from ..files import h5io

    try:
        groups = h5io.image_groups(path)
    except (OSError, h5io.H5FormatError) as exc:
        raise SettingsError(f"property 'b1': cannot read the ISMRMRD file {str(path)!r}: {exc}") from None
    out: dict[int, B1Map] = {}
    where: dict[int, str] = {}
    for group, variables in groups.items():
        for var in variables:
            for k, image in enumerate(h5io.iter_images(path, group, [var.name])):
                if int(image.image_series_index) != series_index:
                    continue
                slice_ = int(image.slice)
                here = f"/{group}/{var.name}[{k}]"
                if slice_ in out:
                    raise SettingsError(f"property 'b1': the file {str(path)!r} has two B1 maps (series "
                                        f"{series_index}) for slice {slice_}: {where[slice_]} and {here}")
                try:
                    out[slice_] = b1_map_from_image(image, scale=scale,
                                                    origin=f"the B1 map of slice {slice_} in {str(path)!r} ({here})")
                except B1Error as exc:
                    raise SettingsError(f"property 'b1': {exc}") from None
                where[slice_] = here
    if not out:
        raise SettingsError(f"property 'b1': the file {str(path)!r} has no images of series {series_index} "
                            f"(property 'b1_series_index'); its image vars: "
                            + ("; ".join(f"/{g}/{v.name}" for g, vs in groups.items() for v in vs) or "none"))
    return out


def load_b1_file(path: str | os.PathLike[str], *, series_index: int, scale: float) -> B1File:
    """The B1 maps of a file: NIfTI (``.nii``, ``.nii.gz``) or ISMRMRD (``.h5``: images of ``series_index``).

    Raises:
        SettingsError: naming the property ``b1``: a missing, unreadable or unknown kind of file, no
            B1 images in it, two for one slice, an implausible scale.
    """
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"property 'b1': the B1 map file {str(p)!r} does not exist")
    name = p.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return B1File(p, _load_nifti(p, scale), {})
    if name.endswith(_H5_SUFFIXES):
        return B1File(p, None, _load_h5(p, series_index, scale))
    raise SettingsError(f"property 'b1': {str(p)!r} is neither a NIfTI file ({', '.join(_NIFTI_SUFFIXES)}) nor an "
                        f"ISMRMRD file ({', '.join(_H5_SUFFIXES)})")


def open_b1_source(settings: GadgetSettings) -> B1File | None:
    """The :class:`B1File` of ``b1=file:<path>``, loaded; None for the other modes."""
    path = settings.b1_file
    if path is None:
        return None
    source = load_b1_file(path, series_index=settings.b1_series_index, scale=settings.b1_scale)
    log.info("B1 maps from %s (%s)", path, "one volume" if source.volume is not None
             else f"slice(s) {', '.join(map(str, sorted(source.slices)))}")
    return source


# =========================================================================== settings × estimator
def check_b1_support(settings: GadgetSettings, estimator: Any) -> None:
    """Refuse a ``b1`` mode the estimator cannot serve.

    ``stream`` and ``file:`` need an estimator that takes a B1 map
    (:func:`drone_core.reconstruct.accepts_b1`), ``estimate`` one that estimates B1
    (:func:`drone_core.reconstruct.estimates_b1`).

    Raises:
        SettingsError: naming the property ``b1``, its value and the estimator.
    """
    from .estimators import b1_capability, describe_estimator

    mode = settings.b1_mode
    if mode in ("stream", "file") and not accepts_b1(estimator):
        raise SettingsError(f"property 'b1': {settings.b1!r} gives each voxel's B1 to the estimator, but the "
                            f"{describe_estimator(estimator)} {b1_capability(estimator)}; use a model trained with "
                            f"a B1 input (TrainConfig(b1_input=True)) or a dictionary with a B1 axis, or set b1=none")
    if mode == "estimate" and not estimates_b1(estimator):
        raise SettingsError(f"property 'b1': 'estimate' needs an estimator that estimates B1, but the "
                            f"{describe_estimator(estimator)} {b1_capability(estimator)}; use a model trained with "
                            f"a B1 output (TrainConfig(b1_output=True)), or set b1=none, stream or file:<path>")
