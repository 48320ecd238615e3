"""Simulated MRF scans as ISMRMRD ``.h5`` files — what our gadget receives from Gadgetron, on disk.

:func:`write_scan` writes image frames ``(N, z, y, x)`` (magnitudes or complex) with a complete
ISMRMRD header whose ``sequenceParameters`` hold the schedule; :func:`write_phantom_scan`
simulates a :class:`drone_core.phantoms.Phantom` first — with the schedule's slice profile and,
optionally, an inhomogeneous transmit field B1 (e.g. the 3 T-like :func:`drone_core.b1_field.head_b1_field`),
which it then writes as the scan's B1 map (:mod:`drone_gadgets.scans.b1`) — and adds its true maps
(:mod:`drone_gadgets.scans.truth`). The command ``drone simulate-scan``
(:mod:`drone_gadgets.apps.simulate_scan`) does the latter from the shell.

The file's layout (vars, series, header, geometry) is described in :mod:`drone_gadgets.scans.layout`.

ismrmrd and the drone_core simulation are imported inside the functions.
"""

from __future__ import annotations

import math
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from drone_core.schedule import Schedule

from .b1 import b1_array, b1_map_images
from .layout import (B1_SERIES_INDEX, B1_VAR, FRAME_SERIES_INDEX, FRAMES_VAR, header_xml, open_for_reading,
                     prepare_outputs, slice_geometry)
from .truth import truth_arrays, write_truth

if TYPE_CHECKING:  # pragma: no cover
    import ismrmrd

    from drone_core.phantoms import Phantom

__all__ = ["ScanInfo", "write_scan", "write_phantom_scan", "read_scan"]


@dataclass(frozen=True)
class ScanInfo:
    """What :func:`write_scan` wrote.

    Attributes:
        path: the file.
        group: the dataset group of the frames; the truth (if any) is in the same group of the truth file
            (:func:`~drone_gadgets.scans.layout.truth_path`).
        n_frames, n_slices: N and z.
        matrix: ``(y, x)``.
        n_images: frame images written (N·z).
        truth: the truth variables written (empty when none).
        schedule_digest: :meth:`Schedule.digest` of the schedule in the header.
        b1_images: B1 map images written to ``/<group>/image_5`` (z, or 0 without a B1 map).
    """

    path: Path
    group: str
    n_frames: int
    n_slices: int
    matrix: tuple[int, int]
    n_images: int
    truth: tuple[str, ...]
    schedule_digest: str
    b1_images: int = 0


def _as_frames(frames: Any, n_frames: int) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(f"frames: expected shape (N, z, y, x) or (N, y, x), got {arr.shape}")
    if arr.shape[0] != n_frames:
        raise ValueError(f"frames: expected {n_frames} frames (the schedule's N), got {arr.shape[0]}")
    if arr.dtype.kind not in "fciu":
        raise TypeError(f"frames: expected real or complex numbers, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"frames: {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def write_scan(path: str | os.PathLike[str], frames: Any, schedule: Schedule, *,
               truth: Mapping[str, Any] | None = None, fov_mm: Sequence[float] = (256.0, 256.0),
               slice_thickness_mm: float = 5.0, group: str = "dataset", frame_counter: str = "repetition",
               slice_positions_mm: Sequence[float] | None = None, field_strength_t: float = 1.5,
               tissues: Mapping[int, Sequence[Any]] | None = None, description: str = "",
               b1_map: Any = None, overwrite: bool = False) -> ScanInfo:
    """Write MRF frames (and optionally their B1 map and the true maps) as an ISMRMRD ``.h5`` file.

    Args:
        path: the file; refused if it or its truth file (``<stem>_truth.h5``) exists unless ``overwrite``
            (which replaces both).
        frames: ``(N, z, y, x)`` or ``(N, y, x)``; real (written as float32 magnitude images) or
            complex (complex64 images), N = ``schedule.n_frames``.
        schedule: the acquisition's schedule (into the header's ``sequenceParameters``).
        truth: None, or maps ``{"t1", "t2", "m0", "labels"}`` (any of them), each ``(z, y, x)``.
        fov_mm: ``(y, x)`` field of view, mm.
        slice_thickness_mm: mm.
        group: the dataset group (``/<group>/…``); the truth goes to ``/<group>/…`` of ``<stem>_truth.h5``.
        frame_counter: the ImageHeader counter carrying the frame index (``repetition``, ``contrast``,
            ``phase``, ``set`` or ``average``; the gadget's ``frame_counter`` setting must match).
        slice_positions_mm: slice centres along ``slice_dir`` (default contiguous, centred on 0).
        field_strength_t: B0 for the header, tesla.
        tissues: label → ``(name, t1_ms, t2_ms, m0)``, stored with the label map (meta ``DRONE_Tissues``).
        description: free text for the header.
        b1_map: None, or the relative B1 ``(z, y, x)`` (or ``(y, x)`` for one slice, or a number) the
            frames were acquired with: written as ``/<group>/image_5`` (series 5, percent; module
            docstring). Give it in ``truth`` as ``"b1"`` too for the truth group.
        overwrite: replace an existing file.

    Returns:
        a :class:`ScanInfo`.
    """
    import ismrmrd

    from ..recon.conversion import make_image

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    arr = _as_frames(frames, schedule.n_frames)
    n_frames, n_slices, ny, nx = (int(n) for n in arr.shape)
    truth_maps = truth_arrays(truth, (n_slices, ny, nx))
    b1 = b1_array(b1_map, (n_slices, ny, nx))
    fov = tuple(float(v) for v in fov_mm)
    if len(fov) != 2 or not all(math.isfinite(v) and v > 0 for v in fov):
        raise ValueError(f"fov_mm: expected two positive numbers (y, x), got {fov_mm!r}")
    if not (isinstance(slice_thickness_mm, (int, float)) and math.isfinite(slice_thickness_mm)
            and slice_thickness_mm > 0):
        raise ValueError(f"slice_thickness_mm: expected > 0 mm, got {slice_thickness_mm!r}")
    if slice_positions_mm is None:
        positions = [(s - (n_slices - 1) / 2.0) * float(slice_thickness_mm) for s in range(n_slices)]
    else:
        positions = [float(v) for v in slice_positions_mm]
        if len(positions) != n_slices or not all(math.isfinite(v) for v in positions):
            raise ValueError(f"slice_positions_mm: expected {n_slices} finite values, got {slice_positions_mm!r}")
    if not isinstance(group, str) or not group or "/" in group:
        raise ValueError(f"group: expected a non-empty name without '/', got {group!r}")
    path = Path(path)
    if not overwrite:
        prepare_outputs(path, overwrite=False)  # refuse an existing scan or truth file early, before any work
    xml = header_xml(schedule, matrix=(ny, nx), n_slices=n_slices, fov_mm=(fov[0], fov[1]),
                     slice_thickness_mm=float(slice_thickness_mm), frame_counter=frame_counter,
                     field_strength_t=field_strength_t, description=description).encode("utf-8")
    if arr.dtype.kind != "c":
        arr = arr.astype(np.float32, copy=False)

    def geometry(s: int) -> "ismrmrd.ImageHeader":
        return slice_geometry(slice_=s, position_mm=positions[s], matrix=(ny, nx), fov_mm=(fov[0], fov[1]),
                                slice_thickness_mm=float(slice_thickness_mm))

    prepare_outputs(path, overwrite=True)
    with closing(ismrmrd.Dataset(str(path), group, create_if_needed=True)) as ds:
        ds.write_xml_header(xml)
        index = 0
        for s in range(n_slices):
            base = geometry(s)
            for i in range(n_frames):
                head = ismrmrd.ImageHeader.from_buffer_copy(base)
                setattr(head, frame_counter, i)
                index += 1
                frame_meta = {"DRONE_Frame": str(i), "DataRole": "Image",
                              "ImageComments": f"DRONE simulated MRF frame {i} of {n_frames}, slice {s}"}
                image = make_image(arr[i, s], head, image_series_index=FRAME_SERIES_INDEX, image_index=index,
                                   meta=frame_meta)
                ds.append_image(FRAMES_VAR, image)
        if b1 is not None:
            for image in b1_map_images(b1, geometry):
                ds.append_image(B1_VAR, image)
    write_truth(path, group, xml, truth_maps, geometry, tissues)
    return ScanInfo(path, group, n_frames, n_slices, (ny, nx), n_frames * n_slices, tuple(truth_maps),
                    schedule.digest(), 0 if b1 is None else n_slices)


def write_phantom_scan(path: str | os.PathLike[str], phantom: "Phantom", schedule: Schedule, *,
                       noise_level: float = 0.0, seed: int | None = None, b1: Any = None, magnitude: bool = True,
                       with_truth: bool = True, group: str = "dataset", frame_counter: str = "repetition",
                       b1_description: str = "", overwrite: bool = False) -> ScanInfo:
    """Simulate ``phantom`` (:func:`drone_core.phantoms.simulate_frames`, with the schedule's slice
    profile when it declares an excitation) and :func:`write_scan` it with its geometry, its true maps
    and label map (unless ``with_truth`` is False) and its tissue table.

    Args:
        b1: None (B1 = 1, no B1 map written), or the relative transmit field: a number or an array of
            ``phantom.shape`` (e.g. :func:`drone_core.b1_field.head_b1_field`). The frames are
            simulated with it, and it is written as the scan's B1 map (``/<group>/image_5``, percent)
            and as the true B1 (``b1`` in the truth file, relative).
        b1_description: how the field was made, for the header's description.
        (others): as :func:`write_scan` and :func:`~drone_core.phantoms.simulate_frames`.
    """
    from drone_core.phantoms import simulate_frames

    shape3 = (phantom.n_slices,) + phantom.matrix
    b1_map = b1_array(b1, shape3, "b1")
    b1_sim = None if b1_map is None else b1_map.reshape(phantom.shape)
    frames = simulate_frames(phantom, schedule, noise_level, seed=seed, b1=b1_sim, magnitude=magnitude)
    truth = None
    if with_truth:
        truth = dict(phantom.maps())
        truth["labels"] = phantom.labels
        if b1_map is not None:
            truth["b1"] = b1_map
    noise = f"{noise_level:.3g} (σ = fraction of the brightest voxel's peak), seed {seed}" if noise_level else "none"
    description = f"{phantom.name}; schedule {schedule.name!r}; noise {noise}"
    if b1_map is not None:
        tissue = np.broadcast_to(np.asarray(phantom.labels).reshape(shape3) != 0, shape3)
        values = b1_map[tissue] if tissue.any() else b1_map.ravel()
        what = b1_description or ("uniform" if np.ptp(b1_map) == 0 else "map")
        description += (f"; B1 {what}, {values.min():.3g}-{values.max():.3g} over the tissue "
                        f"(B1 map: series {B1_SERIES_INDEX}, percent)")
    return write_scan(path, frames, schedule, truth=truth, fov_mm=phantom.fov_mm,
                      slice_thickness_mm=phantom.slice_thickness_mm, group=group, frame_counter=frame_counter,
                      slice_positions_mm=phantom.slice_positions_mm,
                      tissues={k: tuple(t) for k, t in phantom.tissues.items()}, description=description,
                      b1_map=b1_map, overwrite=overwrite)


def read_scan(path: str | os.PathLike[str], group: str = "dataset",
              var: str = FRAMES_VAR) -> tuple[str, list["ismrmrd.Image"]]:
    """``(header XML, images of /<group>/<var> in file order)``."""
    with closing(open_for_reading(path, group)) as ds:
        xml = ds.read_xml_header()
        xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        images = [ds.read_image(var, i) for i in range(ds.number_of_images(var))]
    return xml, images
