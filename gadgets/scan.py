"""Simulated MRF scans as ISMRMRD ``.h5`` files — what our gadget receives from Gadgetron, on disk.

:func:`write_scan` writes image frames ``(N, z, y, x)`` (magnitudes or complex) with a complete
ISMRMRD header whose ``sequenceParameters`` hold the schedule; :func:`write_phantom_scan`
simulates a :class:`drone_core.phantoms.Phantom` first — with the schedule's slice profile and,
optionally, an inhomogeneous transmit field B1 (e.g. the 3 T-like :func:`drone_core.b1_field.head_b1_field`),
which it then writes as the scan's B1 map — and adds its true maps. The command ``drone simulate-scan``
(:func:`add_arguments`, :func:`run`) does the latter from the shell.

File layout (``ismrmrd.Dataset``'s standard ``/<group>/<var>/{header,attributes,data}``)
---------------------------------------------------------------------------------------
``/<group>/xml``
    The ISMRMRD header (valid against ``ismrmrd.xsd``): ``experimentalConditions``
    (H1 resonance frequency of the field strength, 1.5 T by default), one ``encoding`` (encoded and
    recon space: matrix ``x × y × 1``, field of view ``x × y × slice thickness`` mm; trajectory
    ``cartesian``; ``encodingLimits`` with ``slice`` 0…z−1 and the frame counter — ``repetition``
    by default — 0…N−1), ``sequenceParameters`` (``TR`` and ``flipAngle_deg``: N values each,
    ``TE`` and ``TI``: one each, so that :mod:`drone_gadgets.header` reads back the same schedule,
    digest and all), ``measurementInformation``/``acquisitionSystemInformation`` naming the
    simulation, and ``userParameters``: strings ``DRONE_schedule`` (the schedule JSON, inversion
    efficiency included, which the standard lists cannot carry), ``DRONE_schedule_digest`` and
    ``DRONE_description``.
``/<group>/image_1``
    The frames: one image per (slice, frame), slice-major (slice 0's N frames, then slice 1's …),
    each ``(1, 1, y, x)`` — float32 MAGNITUDE images for real input, complex64 COMPLEX images for
    complex input — with ``image_series_index`` 1, ``image_index`` = running number from 1,
    ``slice`` = z and the frame counter = frame index, and the geometry of its slice (below).
``/<group>/image_5``
    Only when the scan has a B1 map (``drone simulate-scan --b1 3t|NUMBER|FILE``): the transmit
    field the frames were simulated with, as a site's separate B1 scan would give it — one float32
    MAGNITUDE image ``(1, 1, y, x)`` per slice with the slice's geometry, ``image_series_index`` 5
    (the gadget's default ``b1_series_index``), ``image_index`` = z + 1, ``slice`` = z, pixel =
    relative B1 × 100 (percent of the nominal flip angle: the gadget's default ``b1_scale`` 0.01),
    meta ``DRONE_Map`` = ``B1``, ``Units`` = ``percent``. ``drone replay --b1 stream`` sends it
    before the frames; with any other ``b1`` it is not sent (:mod:`drone_gadgets.replay`).
``/<group>_truth/xml`` and ``/<group>_truth/{t1,t2,m0,labels,b1}``
    Only when truth maps are given: the same header, and one float32 image per slice and map
    (``slice`` = z, ``image_index`` = z + 1) with the slice's geometry; ``image_series_index`` 100,
    101, 102 for T1 (ms), T2 (ms) and M0 — the series our gadget gives its maps by default — 103
    for the label map and 104 for the true relative B1 (unitless, 1 = nominal; only for a scan with
    a B1 map). Meta ``DRONE_Map`` (``T1``, ``T2``, ``M0``, ``LABELS``, ``B1``) and ``Units`` (``ms``,
    ``ms``, ``a.u.``, ``label``, ``relative``); the labels image carries the tissue table as JSON in
    ``DRONE_Tissues``.

Geometry (ISMRMRD/DICOM patient coordinates, LPS, mm): axial slices, ``read_dir`` (1, 0, 0) —
columns run to the patient's left —, ``phase_dir`` (0, 1, 0) — rows run posterior —,
``slice_dir`` (0, 0, 1); ``position`` (0, 0, slice position) is the centre of the slice;
``field_of_view`` (FOV x, FOV y, slice thickness). Phantom arrays ``(y, x)`` are displayed with
row 0 at the top, so this is the radiological view.

ismrmrd and the drone_core simulation are imported inside the functions, so that building the
command line parser costs nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from drone_core.schedule import Schedule

from .settings import FRAME_COUNTER_FIELDS

if TYPE_CHECKING:  # pragma: no cover
    import ismrmrd

    from drone_core.phantoms import Phantom

__all__ = [
    "ScanInfo",
    "header_xml",
    "write_scan",
    "write_phantom_scan",
    "read_scan",
    "read_truth",
    "read_b1_map",
    "add_arguments",
    "run",
    "client_commands",
    "FRAMES_VAR",
    "TRUTH_SUFFIX",
    "TRUTH_SERIES",
    "FRAME_SERIES_INDEX",
    "B1_VAR",
    "B1_SERIES_INDEX",
    "B1_PERCENT",
    "load_b1_map",
    "phantom_b1",
    "GYROMAGNETIC_RATIO_HZ_PER_T",
]

#: The ISMRMRD namespace of the header.
ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"
#: Variable (image group) holding the frames: ``/<group>/image_1``.
FRAMES_VAR = "image_1"
#: ``image_series_index`` of the frames.
FRAME_SERIES_INDEX = 1
#: Suffix of the group holding the true maps.
TRUTH_SUFFIX = "_truth"
#: Truth variable → (``image_series_index``, ``DRONE_Map``, units).
TRUTH_SERIES: dict[str, tuple[int, str, str]] = {
    "t1": (100, "T1", "ms"),
    "t2": (101, "T2", "ms"),
    "m0": (102, "M0", "a.u."),
    "labels": (103, "LABELS", "label"),
    "b1": (104, "B1", "relative"),
}
#: Variable holding the scan's B1 map: ``/<group>/image_5``.
B1_VAR = "image_5"
#: ``image_series_index`` of the B1 map images (the gadget's default ``b1_series_index``).
B1_SERIES_INDEX = 5
#: B1 map pixel value per unit of relative B1 (percent of nominal; the gadget's ``b1_scale`` is its inverse).
B1_PERCENT = 100.0
#: A B1 file whose median (positive values) lies outside this is refused: relative B1 is ≈ 0.5–1.5;
#: a map in percent has a median ≈ 100 (the gadget's own plausibility range, drone_gadgets.b1maps).
_B1_FILE_MEDIAN = (0.1, 10.0)
#: ¹H gyromagnetic ratio γ/2π, Hz/T (CODATA 2018: 42.577 478 518 MHz/T).
GYROMAGNETIC_RATIO_HZ_PER_T = 42.577478518e6


@dataclass(frozen=True)
class ScanInfo:
    """What :func:`write_scan` wrote.

    Attributes:
        path: the file.
        group: the dataset group of the frames; the truth (if any) is in ``group + "_truth"``.
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


# --------------------------------------------------------------------------- the header
def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    node = ET.SubElement(parent, f"{{{ISMRMRD_NS}}}{tag}")
    if text is not None:
        node.text = text if isinstance(text, str) else repr(float(text)) if isinstance(text, float) else str(text)
    return node


def _xyz(parent: ET.Element, tag: str, values: Sequence[Any]) -> None:
    node = _sub(parent, tag)
    for axis, value in zip("xyz", values, strict=True):
        _sub(node, axis, value)


def header_xml(schedule: Schedule, *, matrix: tuple[int, int], n_slices: int, fov_mm: tuple[float, float],
               slice_thickness_mm: float, frame_counter: str = "repetition", field_strength_t: float = 1.5,
               description: str = "") -> str:
    """The ISMRMRD header XML of a scan (see the module docstring for what it holds).

    Args:
        schedule: written to ``sequenceParameters`` (and in full to ``userParameters``).
        matrix: ``(y, x)``.
        n_slices: z.
        fov_mm: ``(y, x)`` field of view, mm.
        slice_thickness_mm: mm.
        frame_counter: the ImageHeader counter numbering the frames (its encoding limit is 0…N−1).
        field_strength_t: B0, tesla (H1 resonance frequency = γ/2π · B0).
        description: free text stored as ``DRONE_description`` and ``seriesDescription``.
    """
    if frame_counter not in FRAME_COUNTER_FIELDS:
        raise ValueError(f"frame_counter: expected one of {FRAME_COUNTER_FIELDS}, got {frame_counter!r}")
    if not (isinstance(field_strength_t, (int, float)) and math.isfinite(field_strength_t) and field_strength_t > 0):
        raise ValueError(f"field_strength_t: expected > 0 T, got {field_strength_t!r}")
    ET.register_namespace("", ISMRMRD_NS)
    root = ET.Element(f"{{{ISMRMRD_NS}}}ismrmrdHeader")
    mi = _sub(root, "measurementInformation")
    _sub(mi, "patientPosition", "HFS")
    _sub(mi, "protocolName", "DRONE simulated MRF")
    _sub(mi, "sequenceName", "MRF EPI (simulated, EPG signal model)")
    _sub(mi, "seriesDescription", description or f"DRONE simulated MRF, schedule {schedule.name}")
    asi = _sub(root, "acquisitionSystemInformation")
    _sub(asi, "systemVendor", "DRONE simulation")
    _sub(asi, "systemModel", "drone_gadgets.scan")
    _sub(asi, "systemFieldStrength_T", float(field_strength_t))
    _sub(asi, "receiverChannels", 1)
    ec = _sub(root, "experimentalConditions")
    _sub(ec, "H1resonanceFrequency_Hz", int(round(GYROMAGNETIC_RATIO_HZ_PER_T * field_strength_t)))
    enc = _sub(root, "encoding")
    ny, nx = matrix
    for space in ("encodedSpace", "reconSpace"):
        node = _sub(enc, space)
        _xyz(node, "matrixSize", (int(nx), int(ny), 1))
        _xyz(node, "fieldOfView_mm", (float(fov_mm[1]), float(fov_mm[0]), float(slice_thickness_mm)))
    limits = _sub(enc, "encodingLimits")
    ranges = {"slice": n_slices, frame_counter: schedule.n_frames}
    for name in ("average", "slice", "contrast", "phase", "repetition", "set"):  # the XSD's order
        if name in ranges:
            node = _sub(limits, name)
            _sub(node, "minimum", 0)
            _sub(node, "maximum", ranges[name] - 1)
            _sub(node, "center", 0)
    _sub(enc, "trajectory", "cartesian")
    schedule_sections(root, schedule, description or "simulated MRF frames")
    return header_text(root)


def schedule_sections(root: ET.Element, schedule: Schedule, description: str) -> None:
    """Append ``sequenceParameters`` (the schedule's TR, TE, TI and flip angles) and ``userParameters``
    (``DRONE_schedule``, ``DRONE_schedule_digest``, ``DRONE_description``) to a header ``root``."""
    seq = _sub(root, "sequenceParameters")
    for value in schedule.tr_ms:
        _sub(seq, "TR", float(value))
    _sub(seq, "TE", float(schedule.te_ms))
    _sub(seq, "TI", float(schedule.ti_ms))
    for value in schedule.flip_angle_deg:
        _sub(seq, "flipAngle_deg", float(value))
    _sub(seq, "sequence_type", "MRF")
    up = _sub(root, "userParameters")
    for name, text in (("DRONE_schedule", json.dumps(schedule.to_dict(), separators=(",", ":"))),
                       ("DRONE_schedule_digest", schedule.digest()),
                       ("DRONE_description", description)):
        node = _sub(up, "userParameterString")
        _sub(node, "name", name)
        _sub(node, "value", text)


def header_text(root: ET.Element) -> str:
    """The XML document of a header ``root`` (indented, with its declaration)."""
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- images
def _geometry_header(*, slice_: int, position_mm: float, matrix: tuple[int, int], fov_mm: tuple[float, float],
                     slice_thickness_mm: float) -> "ismrmrd.ImageHeader":
    import ismrmrd

    h = ismrmrd.ImageHeader()
    h.version = 1
    h.channels = 1
    ny, nx = matrix
    h.matrix_size[0], h.matrix_size[1], h.matrix_size[2] = nx, ny, 1
    h.field_of_view[0], h.field_of_view[1], h.field_of_view[2] = fov_mm[1], fov_mm[0], slice_thickness_mm
    h.position[0], h.position[1], h.position[2] = 0.0, 0.0, position_mm
    h.read_dir[0], h.read_dir[1], h.read_dir[2] = 1.0, 0.0, 0.0
    h.phase_dir[0], h.phase_dir[1], h.phase_dir[2] = 0.0, 1.0, 0.0
    h.slice_dir[0], h.slice_dir[1], h.slice_dir[2] = 0.0, 0.0, 1.0
    h.slice = slice_
    return h


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


def _truth_arrays(truth: Mapping[str, Any] | None, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    if truth is None:
        return {}
    if not isinstance(truth, Mapping):
        raise TypeError(f"truth: expected a dict of maps or None, got {type(truth).__name__}")
    out = {}
    for key, value in truth.items():
        if key not in TRUTH_SERIES:
            raise ValueError(f"truth: unknown map {key!r}; expected keys among {list(TRUTH_SERIES)}")
        arr = np.asarray(value)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape != shape or arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
            raise ValueError(f"truth[{key!r}]: expected finite real values of shape {shape} (z, y, x) like the "
                             f"frames, got {arr.dtype} {arr.shape}")
        out[key] = arr.astype(np.float32)
    return out


def _b1_array(b1_map: Any, shape: tuple[int, int, int], name: str = "b1_map") -> np.ndarray | None:
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


def write_scan(path: str | os.PathLike[str], frames: Any, schedule: Schedule, *,
               truth: Mapping[str, Any] | None = None, fov_mm: Sequence[float] = (256.0, 256.0),
               slice_thickness_mm: float = 5.0, group: str = "dataset", frame_counter: str = "repetition",
               slice_positions_mm: Sequence[float] | None = None, field_strength_t: float = 1.5,
               tissues: Mapping[int, Sequence[Any]] | None = None, description: str = "",
               b1_map: Any = None, overwrite: bool = False) -> ScanInfo:
    """Write MRF frames (and optionally their B1 map and the true maps) as an ISMRMRD ``.h5`` file.

    Args:
        path: the file; refused if it exists unless ``overwrite`` (which replaces the whole file).
        frames: ``(N, z, y, x)`` or ``(N, y, x)``; real (written as float32 magnitude images) or
            complex (complex64 images), N = ``schedule.n_frames``.
        schedule: the acquisition's schedule (into the header's ``sequenceParameters``).
        truth: None, or maps ``{"t1", "t2", "m0", "labels"}`` (any of them), each ``(z, y, x)``.
        fov_mm: ``(y, x)`` field of view, mm.
        slice_thickness_mm: mm.
        group: the dataset group (``/<group>/…``); the truth goes to ``/<group>_truth/…``.
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

    from .conversion import make_image

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    arr = _as_frames(frames, schedule.n_frames)
    n_frames, n_slices, ny, nx = (int(n) for n in arr.shape)
    truth_maps = _truth_arrays(truth, (n_slices, ny, nx))
    b1 = _b1_array(b1_map, (n_slices, ny, nx))
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
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {str(path)!r} exists (overwrite=True / --force replaces it)")
    xml = header_xml(schedule, matrix=(ny, nx), n_slices=n_slices, fov_mm=(fov[0], fov[1]),
                     slice_thickness_mm=float(slice_thickness_mm), frame_counter=frame_counter,
                     field_strength_t=field_strength_t, description=description).encode("utf-8")
    if arr.dtype.kind != "c":
        arr = arr.astype(np.float32, copy=False)

    def geometry(s: int) -> "ismrmrd.ImageHeader":
        return _geometry_header(slice_=s, position_mm=positions[s], matrix=(ny, nx), fov_mm=(fov[0], fov[1]),
                                slice_thickness_mm=float(slice_thickness_mm))

    if path.exists():
        path.unlink()  # overwrite: a fresh file (ismrmrd 1.14's Dataset can only append or create)
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


def b1_map_images(b1: np.ndarray, geometry: Any) -> list["ismrmrd.Image"]:
    """The scan's B1 map as images (``/<group>/image_5``: one per slice, series 5, percent; module docstring).

    Args:
        b1: relative B1 ``(z, y, x)``.
        geometry: ``slice → ismrmrd.ImageHeader`` with the slice's geometry.
    """
    from .conversion import make_image

    images = []
    for s in range(b1.shape[0]):
        meta = {"DRONE_Map": "B1", "Units": "percent", "DataRole": "Quantitative",
                "ImageComments": f"DRONE simulated B1 map (relative B1 x {B1_PERCENT:g}), slice {s}"}
        images.append(make_image((b1[s] * B1_PERCENT).astype(np.float32), geometry(s),
                                 image_series_index=B1_SERIES_INDEX, image_index=s + 1, meta=meta))
    return images


def write_truth(path: str | os.PathLike[str], group: str, xml: bytes | str, truth_maps: Mapping[str, np.ndarray],
                geometry: Any, tissues: Mapping[int, Sequence[Any]] | None = None) -> None:
    """Write the true maps to ``/<group>_truth`` of ``path`` (module docstring: series, meta, layout).

    Args:
        path, group: the file and the scan's group.
        xml: the scan's header, stored with the truth too.
        truth_maps: from :func:`_truth_arrays`: ``{"t1", "t2", "m0", "labels", "b1"}`` (any), each ``(z, y, x)``.
        geometry: ``slice → ismrmrd.ImageHeader`` with the slice's geometry.
        tissues: label → ``(name, t1_ms, t2_ms, m0)``, into the label map's meta ``DRONE_Tissues``.
    """
    if not truth_maps:
        return
    import ismrmrd

    from .conversion import make_image

    table = {} if tissues is None else {str(int(k)): list(v) for k, v in tissues.items()}
    with closing(ismrmrd.Dataset(str(path), group + TRUTH_SUFFIX, create_if_needed=True)) as ds:
        ds.write_xml_header(xml)
        for key, data in truth_maps.items():
            series, label, units = TRUTH_SERIES[key]
            for s in range(data.shape[0]):
                meta: dict[str, str] = {"DRONE_Map": label, "Units": units, "DataRole": "Quantitative",
                                        "ImageComments": f"DRONE simulation truth: {label}"}
                if key == "labels" and table:
                    meta["DRONE_Tissues"] = json.dumps(table)
                ds.append_image(key, make_image(data[s], geometry(s), image_series_index=series,
                                                image_index=s + 1, meta=meta))


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
            and as the true B1 (``/<group>_truth/b1``, relative).
        b1_description: how the field was made, for the header's description.
        (others): as :func:`write_scan` and :func:`~drone_core.phantoms.simulate_frames`.
    """
    from drone_core.phantoms import simulate_frames

    shape3 = (phantom.n_slices,) + phantom.matrix
    b1_map = _b1_array(b1, shape3, "b1")
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


# --------------------------------------------------------------------------- reading back
def _open_for_reading(path: str | os.PathLike[str], group: str) -> "ismrmrd.Dataset":
    """``ismrmrd.Dataset`` read-only where the installed version can (1.15's ``mode="r"``), else
    read/write without creating (1.14). Use it as ``with closing(...)``: 1.14.0's ``Dataset`` is no
    context manager."""
    import inspect

    import ismrmrd

    from ismrmrd.hdf5 import fileinfo

    if not Path(path).is_file():
        raise FileNotFoundError(f"path: no file {str(path)!r}")
    groups = fileinfo(str(path))
    if group not in groups:
        raise LookupError(f"group: {str(path)!r} has no group {group!r} (it has {groups})")
    if "mode" in inspect.signature(ismrmrd.Dataset).parameters:
        return ismrmrd.Dataset(str(path), group, mode="r")
    return ismrmrd.Dataset(str(path), group, create_if_needed=False)  # pragma: no cover - ismrmrd 1.14


def read_scan(path: str | os.PathLike[str], group: str = "dataset",
              var: str = FRAMES_VAR) -> tuple[str, list["ismrmrd.Image"]]:
    """``(header XML, images of /<group>/<var> in file order)``."""
    with closing(_open_for_reading(path, group)) as ds:
        xml = ds.read_xml_header()
        xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        images = [ds.read_image(var, i) for i in range(ds.number_of_images(var))]
    return xml, images


def read_truth(path: str | os.PathLike[str], group: str = "dataset") -> dict[str, np.ndarray]:
    """The true maps written by :func:`write_scan`: ``{name: (z, y, x) float32}`` (by slice counter):
    ``t1``, ``t2`` (ms), ``m0``, ``labels`` and, for a scan with a B1 map, ``b1`` (relative B1)."""
    out: dict[str, np.ndarray] = {}
    with closing(_open_for_reading(path, group + TRUTH_SUFFIX)) as ds:
        for key in TRUTH_SERIES:
            if key not in ds.list():
                continue
            images = [ds.read_image(key, i) for i in range(ds.number_of_images(key))]
            images.sort(key=lambda im: int(im.getHead().slice))
            out[key] = np.stack([np.asarray(im.data)[0, 0] for im in images]).astype(np.float32)
    return out


def read_b1_map(path: str | os.PathLike[str], group: str = "dataset") -> np.ndarray:
    """The scan's B1 map (``/<group>/image_5``) as relative B1: ``(z, y, x)`` float32, pixel / 100 (by slice).

    Raises:
        LookupError: the group has no B1 map.
    """
    with closing(_open_for_reading(path, group)) as ds:
        if B1_VAR not in ds.list():
            raise LookupError(f"group: /{group} of {str(path)!r} has no B1 map ({B1_VAR}); simulate with --b1")
        images = [ds.read_image(B1_VAR, i) for i in range(ds.number_of_images(B1_VAR))]
    images.sort(key=lambda im: int(im.getHead().slice))
    return (np.stack([np.asarray(im.data)[0, 0] for im in images]) / B1_PERCENT).astype(np.float32)


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``drone simulate-scan``."""
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="the ISMRMRD file to write")
    parser.add_argument("--phantom", choices=("brain", "nist-t1", "nist-t2"), default="brain",
                        help="brain: MNI152 WM/GM/CSF slices; nist-t1/nist-t2: the T1/T2 array of the ISMRM/NIST "
                             "system phantom (default %(default)s)")
    parser.add_argument("--slices", type=int, default=1, help="brain slices, 1-7 around the ventricles (NIST: 1)")
    parser.add_argument("--values", choices=("paper", "brainweb"), default="paper",
                        help="brain T1/T2: the DRONE paper's Table 1 or BrainWeb's 1.5 T values (default %(default)s)")
    parser.add_argument("--spread", action="store_true",
                        help="brain: per-voxel Gaussian T1/T2 spread with the paper's ROI sd (seeded by --seed)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="complex Gaussian noise σ as a fraction of the brightest voxel's peak magnitude, one σ "
                             "for the whole image (0.01 = 1 %%; default %(default)s: noise-free)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the spread (default %(default)s)")
    parser.add_argument("--schedule", type=Path, metavar="JSON", help="schedule JSON (default: the package's)")
    parser.add_argument("--matrix", type=int, nargs=2, default=(128, 128), metavar=("ROWS", "COLS"),
                        help="in-plane matrix y x over a 256 mm FOV (default 128 128)")
    parser.add_argument("--b1", default="none", metavar="none|3t|NUMBER|FILE",
                        help="transmit field of the simulation, written as the scan's B1 map (/<group>/image_5, "
                             "series 5, percent) and its truth: none (B1 = 1, no B1 map; default), 3t (a smooth "
                             "centre-bright 3 T-like field: --b1-centre in the middle of the head, --b1-edge at its "
                             "outline), a number (uniform relative B1) or a .npy/NIfTI file of relative B1 with the "
                             "phantom's shape ((z, y, x); NIfTI (x, y, z))")
    parser.add_argument("--b1-centre", type=float, default=None,
                        help="--b1 3t: relative B1 in the middle of the head (default 1.2)")
    parser.add_argument("--b1-edge", type=float, default=None,
                        help="--b1 3t: relative B1 at the outline of the head (default 0.8)")
    parser.add_argument("--complex", action="store_true", help="write complex frames instead of magnitudes")
    parser.add_argument("--no-truth", action="store_true", help="leave out the /<group>_truth maps")
    parser.add_argument("--group", default="dataset", help="dataset group in the file (default %(default)s)")
    parser.add_argument("--frame-counter", choices=FRAME_COUNTER_FIELDS, default="repetition",
                        help="image header counter holding the frame index (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    raw = parser.add_argument_group("raw k-space (--raw)", "what a scanner sends Gadgetron's GRAPPA EPI chain "
                                    "(xml_configs/drone_grappa_epi.xml); see drone_gadgets.rawscan")
    raw.add_argument("--raw", action="store_true",
                     help="write raw multi-coil EPI acquisitions (noise scan, ACS reference, navigators, GRAPPA-"
                          "undersampled echo trains) instead of image frames; --noise is then the noise of a "
                          "lossless fully sampled image, so GRAPPA's noise cost shows in the maps")
    raw.add_argument("--coils", type=int, default=8, help="receive channels (default %(default)s)")
    raw.add_argument("--acceleration", type=int, default=2, help="GRAPPA factor R (default %(default)s)")
    raw.add_argument("--acs-lines", type=int, default=None, help="auto-calibration lines (default 12·R)")
    raw.add_argument("--ramp-sampling", action="store_true", help="sample on the readout ramps too")
    raw.add_argument("--ghost-shift", type=float, default=0.2,
                     help="odd/even echo readout shift, k-space samples (default %(default)s)")
    raw.add_argument("--ghost-phase", type=float, default=0.1,
                     help="odd/even echo phase, radians (default %(default)s)")
    raw.add_argument("--no-noise-scan", action="store_true",
                     help="leave out the noise scan (a Gadgetron run with --disable_storage fails on one: its "
                          "NoiseAdjustGadget stores the noise covariance in the storage server)")


def _run_raw(args: argparse.Namespace, phantom: "Phantom", schedule: Schedule, b1: Any, b1_text: str) -> int:
    from .rawscan import RawProtocol, write_raw_scan

    if args.complex or args.frame_counter != "repetition":
        raise ValueError("--raw: the raw scan numbers its frames by repetition and has no image frames; "
                         "drop --complex/--frame-counter")
    protocol = RawProtocol(n_coils=args.coils, acceleration=args.acceleration, calibration_lines=args.acs_lines,
                           ramp_sampling=args.ramp_sampling, ghost_shift=args.ghost_shift,
                           ghost_phase_rad=args.ghost_phase, noise_scan=not args.no_noise_scan)
    info = write_raw_scan(args.out, phantom, schedule, protocol=protocol, noise_level=args.noise, seed=args.seed,
                          b1=b1, with_truth=not args.no_truth, group=args.group, b1_description=b1_text,
                          overwrite=args.force)
    truth = f"; truth {', '.join(info.truth)} in /{info.group}{TRUTH_SUFFIX}" if info.truth else ""
    b1_note = f"; B1 {b1_text} ({info.b1_images} B1 map images in /{info.group}/{B1_VAR})" if info.b1_images else ""
    print(f"wrote {info.path}: {phantom.describe()}; {info.n_acquisitions} raw EPI acquisitions in /{info.group} "
          f"({info.n_frames} frames × {info.n_slices} slices, {info.matrix[0]}×{info.matrix[1]}, {protocol.n_coils} "
          f"coils, R = {protocol.acceleration}, {info.n_calibration} ACS lines, {info.n_navigators} navigators, "
          f"{info.n_noise} noise lines, {info.n_samples} samples per readout), schedule {schedule.name!r} (digest "
          f"{info.schedule_digest}), noise {args.noise:g}{b1_note}{truth}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """``drone simulate-scan``: simulate the phantom, write the file, print a summary to stderr."""
    from drone_core.phantoms import brain_phantom, nist_phantom
    from drone_core.schedule import default_schedule

    schedule = default_schedule() if args.schedule is None else Schedule.load(args.schedule)
    if args.phantom == "brain":
        phantom = brain_phantom(args.slices, tuple(args.matrix), args.values, spread=args.spread, seed=args.seed)
    else:
        if args.slices != 1:
            raise ValueError(f"--slices: the NIST phantom has one plane; got {args.slices}")
        if args.spread:
            raise ValueError("--spread: only for --phantom brain")
        phantom = nist_phantom("T1" if args.phantom == "nist-t1" else "T2", tuple(args.matrix))
    if args.noise < 0 or not math.isfinite(args.noise):
        raise ValueError(f"--noise: expected a fraction ≥ 0, got {args.noise}")
    b1, b1_text = phantom_b1(args.b1, phantom, centre=args.b1_centre, edge=args.b1_edge)
    if args.raw:
        return _run_raw(args, phantom, schedule, b1, b1_text)
    info = write_phantom_scan(args.out, phantom, schedule, noise_level=args.noise, seed=args.seed, b1=b1,
                              magnitude=not args.complex, with_truth=not args.no_truth, group=args.group,
                              frame_counter=args.frame_counter, b1_description=b1_text, overwrite=args.force)
    truth = f"; truth {', '.join(info.truth)} in /{info.group}{TRUTH_SUFFIX}" if info.truth else ""
    b1_note = "B1 1 (no B1 map)"
    if b1 is not None:
        tissue = np.asarray(phantom.labels) != 0
        values = b1[tissue] if tissue.any() else b1
        b1_note = (f"B1 {b1_text}, {values.min():.3g}-{values.max():.3g} over the tissue ({info.b1_images} B1 map "
                   f"images in /{info.group}/{B1_VAR}, series {B1_SERIES_INDEX}, percent)")
    print(f"wrote {info.path}: {phantom.describe()}; {info.n_images} frame images ({info.n_frames} frames × "
          f"{info.n_slices} slices, {info.matrix[0]}×{info.matrix[1]}) in /{info.group}/{FRAMES_VAR}, schedule "
          f"{schedule.name!r} (digest {info.schedule_digest}), noise {args.noise:g}; {b1_note}{truth}",
          file=sys.stderr)
    print(client_commands(info.path, info.group, b1_maps=info.b1_images > 0), file=sys.stderr)
    return 0


def client_commands(path: str | os.PathLike[str], group: str, *, b1_maps: bool = False,
                    port: int = 9002) -> str:
    """How to reconstruct a file written here: ``drone replay``, and with ``drone serve`` running, ``drone send``
    and python-ismrmrd-server's ``client.py`` (which needs ``-g``: the file holds two groups, the scan and
    its truth).

    Args:
        path: the file.
        group: the scan's group.
        b1_maps: the file holds B1 maps (then: how to use them).
        port: the server's port (``drone serve``'s default, python-ismrmrd-server's too).
    """
    name = shlex.quote(str(path))
    stem = Path(path).stem
    out = shlex.quote(str(Path(path).with_name(f"{stem}_maps.h5")))
    lines = [f"reconstruct it: drone replay {name} {out}" + (" --b1 stream" if b1_maps else ""),
             f"  or, with `drone serve` running: drone send {name} {out}" + (" --set b1=stream" if b1_maps else ""),
             f"  or with python-ismrmrd-server's client: python client.py -p {port} -c drone_images "
             f"-g {shlex.quote(group)} -o {out} {name}"]
    if b1_maps:
        lines.append("  (client.py sends the B1 maps after the frames; to use them, put a drone_images.json holding "
                     '{"parameters": {"b1": "stream"}} in the folder you run client.py from; without it they are '
                     'ignored)')
    return "\n".join(lines)
