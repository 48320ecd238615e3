"""NIfTI files of map stacks: one ``(x, y, slices)`` volume per map, with the scanner geometry.

:func:`nifti_affine` turns the ISMRMRD geometry of a stack of 2-D map images (LPS, mm; ``position``
the centre of the field of view) into a NIfTI affine (RAS+, mm); :func:`save_nifti` writes one
``.nii.gz`` file per map (``drone replay --nifti DIR``, ``drone send --nifti DIR``). Needs nibabel
(the ``replay`` extra).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # ismrmrd is needed only by the callers that have the images
    import ismrmrd

__all__ = ["nifti_affine", "save_nifti", "require_nibabel"]

log = logging.getLogger(__name__)


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 0.5 else None


def nifti_affine(headers: Sequence[ismrmrd.ImageHeader]) -> tuple[np.ndarray, list[str]]:
    """The NIfTI (RAS+, mm) affine of a stack of 2-D map images, one per slice, in the given order.

    ISMRMRD positions and directions are in the scanner's patient coordinate system (LPS, as DICOM);
    ``position`` is the centre of the field of view, and voxel ``(i, j)`` lies at
    ``position + (i − x/2)·Δx·read_dir + (j − y/2)·Δy·phase_dir`` (the convention of Gadgetron's
    DICOM writer), Δ = field of view / matrix. The slice axis is the step between consecutive
    positions when they are evenly spaced, else ``slice_dir`` × the slice thickness (with a note).
    Directions that are not unit vectors (files without geometry) fall back to the identity.

    Returns:
        ``(4×4 affine, notes)``: the notes say where the geometry was approximated.
    """
    if not headers:
        raise ValueError("headers: expected at least one image header")
    notes: list[str] = []
    h0 = headers[0]
    read = _unit(np.array(h0.read_dir[:], dtype=np.float64))
    phase = _unit(np.array(h0.phase_dir[:], dtype=np.float64))
    normal = _unit(np.array(h0.slice_dir[:], dtype=np.float64))
    if read is None or phase is None:
        notes.append("the images carry no read/phase directions: identity orientation assumed")
        read, phase, normal = np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]
    if normal is None:
        normal = np.cross(read, phase)
    nx, ny, nz = (max(int(v), 1) for v in h0.matrix_size)
    fov = np.array(h0.field_of_view[:], dtype=np.float64)
    dx = fov[0] / nx if fov[0] > 0 else 1.0
    dy = fov[1] / ny if fov[1] > 0 else 1.0
    thickness = fov[2] / nz if fov[2] > 0 else 1.0
    positions = np.array([h.position[:] for h in headers], dtype=np.float64)
    step = normal * thickness
    if len(headers) > 1:
        steps = np.diff(positions, axis=0)
        mean = steps.mean(axis=0)
        if np.linalg.norm(mean) > 1e-6 and np.all(np.linalg.norm(steps - mean, axis=1) <= 1e-3 * np.linalg.norm(mean)
                                                   + 1e-3):
            step = mean
        else:
            notes.append("the slices are not evenly spaced along one line: the slice axis is slice_dir × the "
                         "slice thickness, and positions are approximate")
    lps = np.eye(4)
    lps[:3, 0] = dx * read
    lps[:3, 1] = dy * phase
    lps[:3, 2] = step
    lps[:3, 3] = positions[0] - (nx / 2) * dx * read - (ny / 2) * dy * phase
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, notes


def require_nibabel() -> Any:
    """The nibabel module; ImportError naming what to install when it is missing."""
    try:
        import nibabel
    except ImportError:
        raise ImportError("NIfTI output needs nibabel: pip install 'drone-gadgetron[replay]' (or pip install "
                          "nibabel)") from None
    return nibabel


def save_nifti(slices: Mapping[int, Mapping[str, tuple[np.ndarray, ismrmrd.ImageHeader]]],
               out_dir: str | os.PathLike[str], *, prefix: str = "maps", names: Sequence[str] | None = None,
               ) -> list[Path]:
    """One NIfTI-1 file per map, ``<out_dir>/<prefix>_<t1|t2|m0|b1>.nii.gz``: ``(x, y, slices)`` float32.

    Slices are ordered along the slice direction (by the projection of their positions on
    ``slice_dir``); the affine is :func:`nifti_affine`'s (scanner coordinates, RAS+, mm;
    ``qform``/``sform`` code 1). T1 and T2 are in ms, M0 in the input's units, B1 (when
    estimated) in percent of nominal.

    Args:
        slices: ``{slice: {map name: ((z, y, x) or (y, x) data, its ImageHeader)}}``.
        out_dir: the folder (created if missing).
        prefix: the files' name prefix.
        names: the maps to write, in this order (default: every map of ``slices``, in order of first appearance).

    Raises:
        ImportError: nibabel is not installed (names what to install).
        ValueError: no maps, 3-D maps, or slices whose matrices differ.
    """
    nib = require_nibabel()
    if not slices:
        raise ValueError("slices: no maps to write")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    first = next(iter(slices.values()))
    h0 = next(iter(first.values()))[1]
    normal = _unit(np.array(h0.slice_dir[:], dtype=np.float64))
    order = sorted(slices, key=lambda s: (float(np.dot(next(iter(slices[s].values()))[1].position[:], normal))
                                          if normal is not None else 0.0, s))
    headers = [next(iter(slices[s].values()))[1] for s in order]
    affine, notes = nifti_affine(headers)
    order_names = list(names) if names is not None else list(dict.fromkeys(n for s in order for n in slices[s]))
    for note in notes:
        log.warning("NIfTI geometry: %s", note)
    written = []
    for name in order_names:
        present = [s for s in order if name in slices[s]]
        if not present:
            continue
        if len(present) != len(order):
            raise ValueError(f"map {name!r} is missing for slice(s) {sorted(set(order) - set(present))}")
        planes = []
        for s in order:
            data = np.asarray(slices[s][name][0], dtype=np.float32)
            if data.ndim == 3 and data.shape[0] != 1:
                raise ValueError(f"map {name!r} of slice {s} is 3-D ({data.shape}); NIfTI output expects 2-D maps")
            planes.append(data.reshape(data.shape[-2:]).T)  # (y, x) → (x, y): i along the readout
        shapes = {p.shape for p in planes}
        if len(shapes) != 1:
            raise ValueError(f"map {name!r}: the slices have different matrices {sorted(shapes)}")
        volume = np.stack(planes, axis=-1)
        image = nib.Nifti1Image(volume, affine)
        image.header.set_xyzt_units("mm", "sec")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        unit = {"t1": "ms", "t2": "ms", "b1": "%"}.get(name, "a.u.")
        image.header["descrip"] = f"DRONE {name.upper()} ({unit})".encode()[:79]
        path = folder / f"{prefix}_{name}.nii.gz"
        nib.save(image, str(path))
        written.append(path)
    return written
