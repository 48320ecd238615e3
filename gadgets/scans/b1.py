"""The B1 map of a simulated scan: the transmit field it was simulated with, as a site's B1 scan would give it.

``drone simulate-scan --b1 none|3t|NUMBER|FILE`` (:func:`phantom_b1`, :func:`load_b1_map`) chooses the
field; :func:`b1_map_images` turns it into the scan's B1 map images (``/<group>/image_5``: series 5,
percent of nominal, :mod:`drone_gadgets.scans.layout`), which :func:`read_b1_map` reads back as
relative B1.
"""

from __future__ import annotations

import math
import os
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .layout import B1_PERCENT, B1_SERIES_INDEX, B1_VAR, open_for_reading

if TYPE_CHECKING:  # pragma: no cover
    import ismrmrd

    from drone_core.phantoms import Phantom

__all__ = ["b1_array", "b1_map_images", "load_b1_map", "phantom_b1", "read_b1_map"]

#: A B1 file whose median (positive values) lies outside this is refused: relative B1 is ≈ 0.5–1.5;
#: a map in percent has a median ≈ 100 (the gadget's own plausibility range, drone_gadgets.recon.b1maps).
_B1_FILE_MEDIAN = (0.1, 10.0)


def b1_array(b1_map: Any, shape: tuple[int, int, int], name: str = "b1_map") -> np.ndarray | None:
    """``b1_map`` as float64 ``(z, y, x)`` relative B1 (finite, > 0), or None."""
    if b1_map is None:
        return None
    arr = np.asarray(b1_map)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real relative B1 values, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.shape != shape:
        raise ValueError(f"{name}: expected relative B1 of shape {shape} (z, y, x) like the frames, or a number, got "
                         f"shape {np.shape(b1_map)}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"{name}: expected finite relative B1 > 0 everywhere, got values in "
                         f"[{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}] ({int((~np.isfinite(arr)).sum())} non-finite)")
    return arr


def b1_map_images(b1: np.ndarray, geometry: Any) -> list["ismrmrd.Image"]:
    """The scan's B1 map as images (``/<group>/image_5``: one per slice, series 5, percent; module docstring).

    Args:
        b1: relative B1 ``(z, y, x)``.
        geometry: ``slice → ismrmrd.ImageHeader`` with the slice's geometry.
    """
    from ..recon.conversion import make_image

    images = []
    for s in range(b1.shape[0]):
        meta = {"DRONE_Map": "B1", "Units": "percent", "DataRole": "Quantitative",
                "ImageComments": f"DRONE simulated B1 map (relative B1 x {B1_PERCENT:g}), slice {s}"}
        images.append(make_image((b1[s] * B1_PERCENT).astype(np.float32), geometry(s),
                                 image_series_index=B1_SERIES_INDEX, image_index=s + 1, meta=meta))
    return images


def load_b1_map(path: str | os.PathLike[str], shape: tuple[int, ...]) -> np.ndarray:
    """A relative B1 map from a file, for ``drone simulate-scan --b1 FILE``.

    Args:
        path: ``.npy`` — an array of ``shape`` (``(z, y, x)``; ``(y, x)`` for one slice); or NIfTI
            (``.nii``, ``.nii.gz``, needs nibabel) — ``(x, y, z)`` (or ``(x, y)``) as this project
            writes NIfTI (``drone replay --nifti``): it is transposed to ``(z, y, x)``; its affine is not
            used (the voxels are taken to be the phantom's).
        shape: the phantom's shape, ``(z, y, x)`` or ``(y, x)``.

    Returns:
        float64 relative B1 of ``shape`` (unitless, 1 = nominal), finite and > 0.

    Raises:
        FileNotFoundError: no such file; ValueError: another suffix, shape, non-finite or non-positive
        values, or a median outside 0.1–10 (a map in percent, or of flip angles, is not relative B1).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--b1: no B1 map file {str(p)!r} (expected none, 3t, a number, or a .npy/.nii file)")
    name = p.name.lower()
    if name.endswith(".npy"):
        data = np.load(p, allow_pickle=False)
    elif name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel
        except ImportError:
            raise ImportError("--b1: a NIfTI B1 map needs nibabel (pip install nibabel)") from None
        data = np.asarray(nibabel.load(str(p)).dataobj)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        data = data.T  # (x, y, z) → (z, y, x)
    else:
        raise ValueError(f"--b1: {str(p)!r} is neither .npy nor NIfTI (.nii, .nii.gz)")
    shape = tuple(int(n) for n in shape)
    arr = np.asarray(data)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"--b1: {str(p)!r} holds {arr.dtype} values; expected real relative B1")
    arr = arr.astype(np.float64)
    if arr.shape != shape and not (len(shape) == 3 and shape[0] == 1 and arr.shape == shape[1:]):
        raise ValueError(f"--b1: {str(p)!r} holds an array of shape {arr.shape}; expected the phantom's shape "
                         f"{shape} ((z, y, x); NIfTI (x, y, z))")
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"--b1: {str(p)!r}: expected finite relative B1 > 0 everywhere, got values in "
                         f"[{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}]")
    median = float(np.median(arr))
    lo, hi = _B1_FILE_MEDIAN
    if not lo <= median <= hi:
        raise ValueError(f"--b1: {str(p)!r} has a median of {median:.4g}; expected relative B1 (about 1, between "
                         f"{lo:g} and {hi:g}) — divide a map in percent by 100")
    return arr


def phantom_b1(spec: str | None, phantom: "Phantom", *, centre: float | None = None,
               edge: float | None = None) -> tuple[np.ndarray | None, str]:
    """The B1 field of ``drone simulate-scan --b1 SPEC``: ``(relative B1 of phantom.shape or None, description)``.

    Args:
        spec: ``"none"`` (or None): B1 = 1, no B1 map; ``"3t"``: :func:`drone_core.b1_field.head_b1_field`
            (centre-bright, ``centre`` in the middle of the head, ``edge`` at its outline, in steps of
            :data:`~drone_core.b1_field.B1_MAP_STEP`, 0.1 %); a number:
            a uniform B1; otherwise the path of a ``.npy``/NIfTI relative B1 map (:func:`load_b1_map`).
        phantom: the phantom (its shape and head outline).
        centre, edge: for ``"3t"`` only (default 1.2 and 0.8).

    Raises:
        ValueError: ``centre``/``edge`` with another ``spec``; a bad number or file (naming ``--b1``).
    """
    from drone_core.b1_field import B1_3T_CENTRE, B1_3T_EDGE, B1_MAP_STEP, head_b1_field

    text = "none" if spec is None else str(spec).strip()
    if text.lower() != "3t" and (centre is not None or edge is not None):
        raise ValueError(f"--b1-centre/--b1-edge: only for --b1 3t, got --b1 {text!r}")
    if text.lower() == "none":
        return None, "none"
    if text.lower() == "3t":
        c = B1_3T_CENTRE if centre is None else centre
        e = B1_3T_EDGE if edge is None else edge
        for flag, value in (("--b1-centre", c), ("--b1-edge", e)):
            if not (math.isfinite(value) and 0 < value <= 3):
                raise ValueError(f"{flag}: expected a relative B1 in (0, 3], got {value!r}")
        field = head_b1_field(phantom, centre=c, edge=e, step=B1_MAP_STEP)
        return field, f"3 T-like field (centre {c:g}, edge {e:g}, steps of {B1_MAP_STEP:g})"
    try:
        value = float(text)
    except ValueError:
        return load_b1_map(text, phantom.shape), f"map from {text}"
    if not (math.isfinite(value) and 0 < value <= 3):
        raise ValueError(f"--b1: expected none, 3t, a relative B1 in (0, 3] or a file, got {text!r}")
    return np.full(phantom.shape, value), f"uniform {value:g}"


def read_b1_map(path: str | os.PathLike[str], group: str = "dataset") -> np.ndarray:
    """The scan's B1 map (``/<group>/image_5``) as relative B1: ``(z, y, x)`` float32, pixel / 100 (by slice).

    Raises:
        LookupError: the group has no B1 map.
    """
    with closing(open_for_reading(path, group)) as ds:
        if B1_VAR not in ds.list():
            raise LookupError(f"group: /{group} of {str(path)!r} has no B1 map ({B1_VAR}); simulate with --b1")
        images = [ds.read_image(B1_VAR, i) for i in range(ds.number_of_images(B1_VAR))]
    images.sort(key=lambda im: int(im.getHead().slice))
    return (np.stack([np.asarray(im.data)[0, 0] for im in images]) / B1_PERCENT).astype(np.float32)
