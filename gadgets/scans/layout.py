"""The layout of a simulated scan's ISMRMRD ``.h5`` file: its groups, vars and series, its header, its geometry.

What :mod:`drone_gadgets.scans.images` (image frames) and :mod:`drone_gadgets.scans.raw` (raw EPI
k-space) share: the names and series of the vars, the ISMRMRD header's common sections
(:func:`schedule_sections`: the schedule in ``sequenceParameters`` and ``userParameters``), each
slice's geometry (:func:`slice_geometry`) and a reader (:func:`open_for_reading`). The B1 map and the
true maps have their own modules (:mod:`drone_gadgets.scans.b1`, :mod:`drone_gadgets.scans.truth`).

File layout (``ismrmrd.Dataset``'s standard ``/<group>/<var>/{header,attributes,data}``)
---------------------------------------------------------------------------------------
``/<group>/xml``
    The ISMRMRD header (valid against ``ismrmrd.xsd``): ``experimentalConditions``
    (H1 resonance frequency of the field strength, 1.5 T by default), one ``encoding`` (encoded and
    recon space: matrix ``x × y × 1``, field of view ``x × y × slice thickness`` mm; trajectory
    ``cartesian``; ``encodingLimits`` with ``slice`` 0…z−1 and the frame counter — ``repetition``
    by default — 0…N−1), ``sequenceParameters`` (``TR`` and ``flipAngle_deg``: N values each,
    ``TE`` and ``TI``: one each, so that :mod:`drone_gadgets.recon.header` reads back the same schedule,
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
    before the frames; with any other ``b1`` it is not sent (:mod:`drone_gadgets.apps.inputs`).
``<stem>_truth.h5``: ``/<group>/xml`` and ``/<group>/{t1,t2,m0,labels,b1}``
    Only when truth maps are given, in a file of their own beside the scan (``scan.h5`` →
    ``scan_truth.h5``), so that the scan file holds the scan alone, as a scanner's would, and clients
    need not be told its group (files written before 2026-12-07 hold the truth in the scan file's
    ``/<group>_truth``, which :func:`~drone_gadgets.scans.truth.read_truth` still reads): the same
    header, and one float32 image per slice and map
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

ismrmrd is imported inside the functions, so that building the command line parser costs nothing.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from drone_core.schedule import Schedule

from ..recon.header import ISMRMRD_NAMESPACE
from ..recon.settings import FRAME_COUNTER_FIELDS

if TYPE_CHECKING:  # pragma: no cover
    import ismrmrd

__all__ = [
    "FRAMES_VAR",
    "FRAME_SERIES_INDEX",
    "TRUTH_SUFFIX",
    "TRUTH_SERIES",
    "B1_VAR",
    "B1_SERIES_INDEX",
    "B1_PERCENT",
    "GYROMAGNETIC_RATIO_HZ_PER_T",
    "element",
    "xyz_element",
    "header_xml",
    "schedule_sections",
    "header_text",
    "slice_geometry",
    "open_for_reading",
    "truth_path",
    "prepare_outputs",
    "EpiTrajectory",
    "epi_encoding",
]

#: Variable (image group) holding the frames: ``/<group>/image_1``.
FRAMES_VAR = "image_1"
#: ``image_series_index`` of the frames.
FRAME_SERIES_INDEX = 1
#: Suffix of the file (and, in files written before 2026-12-07, of the group) holding the true maps.
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
#: ¹H gyromagnetic ratio γ/2π, Hz/T (CODATA 2018: 42.577 478 518 MHz/T).
GYROMAGNETIC_RATIO_HZ_PER_T = 42.577478518e6


def element(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    """A child ``tag`` (ISMRMRD namespace) of ``parent``, with ``text`` (floats by ``repr``, exact) if given."""
    node = ET.SubElement(parent, f"{{{ISMRMRD_NAMESPACE}}}{tag}")
    if text is not None:
        node.text = text if isinstance(text, str) else repr(float(text)) if isinstance(text, float) else str(text)
    return node


def xyz_element(parent: ET.Element, tag: str, values: Sequence[Any]) -> None:
    """A child ``tag`` of ``parent`` holding ``x``, ``y``, ``z`` elements with ``values``."""
    node = element(parent, tag)
    for axis, value in zip("xyz", values, strict=True):
        element(node, axis, value)


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
    ET.register_namespace("", ISMRMRD_NAMESPACE)
    root = ET.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")
    mi = element(root, "measurementInformation")
    element(mi, "patientPosition", "HFS")
    element(mi, "protocolName", "DRONE simulated MRF")
    element(mi, "sequenceName", "MRF EPI (simulated, EPG signal model)")
    element(mi, "seriesDescription", description or f"DRONE simulated MRF, schedule {schedule.name}")
    asi = element(root, "acquisitionSystemInformation")
    element(asi, "systemVendor", "DRONE simulation")
    element(asi, "systemModel", "drone_gadgets.scans")
    element(asi, "systemFieldStrength_T", float(field_strength_t))
    element(asi, "receiverChannels", 1)
    ec = element(root, "experimentalConditions")
    element(ec, "H1resonanceFrequency_Hz", int(round(GYROMAGNETIC_RATIO_HZ_PER_T * field_strength_t)))
    enc = element(root, "encoding")
    ny, nx = matrix
    for space in ("encodedSpace", "reconSpace"):
        node = element(enc, space)
        xyz_element(node, "matrixSize", (int(nx), int(ny), 1))
        xyz_element(node, "fieldOfView_mm", (float(fov_mm[1]), float(fov_mm[0]), float(slice_thickness_mm)))
    limits = element(enc, "encodingLimits")
    ranges = {"slice": n_slices, frame_counter: schedule.n_frames}
    for name in ("average", "slice", "contrast", "phase", "repetition", "set"):  # the XSD's order
        if name in ranges:
            node = element(limits, name)
            element(node, "minimum", 0)
            element(node, "maximum", ranges[name] - 1)
            element(node, "center", 0)
    element(enc, "trajectory", "cartesian")
    schedule_sections(root, schedule, description or "simulated MRF frames")
    return header_text(root)


def schedule_sections(root: ET.Element, schedule: Schedule, description: str) -> None:
    """Append ``sequenceParameters`` (the schedule's TR, TE, TI and flip angles) and ``userParameters``
    (``DRONE_schedule``, ``DRONE_schedule_digest``, ``DRONE_description``) to a header ``root``."""
    seq = element(root, "sequenceParameters")
    for value in schedule.tr_ms:
        element(seq, "TR", float(value))
    element(seq, "TE", float(schedule.te_ms))
    element(seq, "TI", float(schedule.ti_ms))
    for value in schedule.flip_angle_deg:
        element(seq, "flipAngle_deg", float(value))
    element(seq, "sequence_type", "MRF")
    up = element(root, "userParameters")
    for name, text in (("DRONE_schedule", json.dumps(schedule.to_dict(), separators=(",", ":"))),
                       ("DRONE_schedule_digest", schedule.digest()),
                       ("DRONE_description", description)):
        node = element(up, "userParameterString")
        element(node, "name", name)
        element(node, "value", text)


def header_text(root: ET.Element) -> str:
    """The XML document of a header ``root`` (indented, with its declaration)."""
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def slice_geometry(*, slice_: int, position_mm: float, matrix: tuple[int, int], fov_mm: tuple[float, float],
                     slice_thickness_mm: float) -> "ismrmrd.ImageHeader":
    """An ImageHeader with the geometry of slice ``slice_`` (module docstring): axial, centred at
    ``(0, 0, position_mm)``; ``matrix`` ``(y, x)``, ``fov_mm`` ``(y, x)``."""
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


def open_for_reading(path: str | os.PathLike[str], group: str) -> "ismrmrd.Dataset":
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


def truth_path(path: str | os.PathLike[str]) -> Path:
    """The file of a scan's true maps: ``scan.h5`` → ``scan_truth.h5``."""
    p = Path(path)
    return p.with_name(p.stem + TRUTH_SUFFIX + p.suffix)


def prepare_outputs(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Check that a scan may be written to ``path`` and clear the way: refused when the scan or its truth file
    exists, unless ``overwrite`` (then both are removed: a fresh scan never sits beside an old truth).

    Raises:
        FileExistsError: ``path`` or its truth file exists and ``overwrite`` is False.
    """
    p = Path(path)
    truth = truth_path(p)
    for existing in (p, truth):
        if existing.exists() and not overwrite:
            raise FileExistsError(f"path: {str(existing)!r} exists (overwrite=True / --force replaces it)")
    for existing in (p, truth):
        if existing.exists():
            existing.unlink()  # a fresh file (ismrmrd 1.14's Dataset can only append or create)
    return p


@dataclass(frozen=True)
class EpiTrajectory:
    """An EPI readout as the header's ``ConventionalEPI`` trajectory description holds it (times in µs).

    Attributes:
        ramp_up_us, flat_top_us, ramp_down_us: the readout trapezoid; acq_delay_us: the ADC's start in it.
        n_samples, dwell_us: the ADC; echo_spacing_us: lobe to lobe (0: not written).
        etl: lines per train; n_navigators: phase-correction navigators per train.
        comment: free text.
    """

    ramp_up_us: float
    flat_top_us: float
    ramp_down_us: float
    acq_delay_us: float
    n_samples: int
    dwell_us: float
    etl: int
    n_navigators: int
    echo_spacing_us: float = 0.0
    comment: str = ""


def epi_encoding(root: ET.Element, *, matrix: tuple[int, int], fov_mm: tuple[float, float, float], n_slices: int,
                 n_frames: int, trajectory: EpiTrajectory, acceleration: int) -> None:
    """Append an EPI ``encoding`` to a header ``root``: encodedSpace = reconSpace (``matrix`` ``(ny, nx)``,
    ``fov_mm`` ``(x, y, z)``; siemens_to_ismrmrd's EPI convention), the encoding limits (centre line ny/2,
    frames as repetitions), the ``ConventionalEPI`` trajectory description ``EPIReconXGadget`` reads and the
    parallel imaging (``separate`` calibration when accelerated)."""
    ny, nx = (int(v) for v in matrix)
    enc = element(root, "encoding")
    for space in ("encodedSpace", "reconSpace"):
        node = element(enc, space)
        xyz_element(node, "matrixSize", (nx, ny, 1))
        xyz_element(node, "fieldOfView_mm", tuple(float(v) for v in fov_mm))
    limits = element(enc, "encodingLimits")
    for name, (lo, hi, centre) in (("kspace_encoding_step_1", (0, ny - 1, ny // 2)),
                                   ("kspace_encoding_step_2", (0, 0, 0)),
                                   ("average", (0, 0, 0)), ("slice", (0, n_slices - 1, 0)),
                                   ("contrast", (0, 0, 0)), ("phase", (0, 0, 0)),
                                   ("repetition", (0, n_frames - 1, 0)), ("set", (0, 0, 0)),
                                   ("segment", (0, 1, 0))):
        node = element(limits, name)
        element(node, "minimum", lo)
        element(node, "maximum", hi)
        element(node, "center", centre)
    element(enc, "trajectory", "epi")
    td = element(enc, "trajectoryDescription")
    element(td, "identifier", "ConventionalEPI")
    t = trajectory
    for name, value in (("etl", t.etl), ("numberOfNavigators", t.n_navigators), ("rampUpTime", t.ramp_up_us),
                        ("rampDownTime", t.ramp_down_us), ("flatTopTime", t.flat_top_us),
                        ("acqDelayTime", t.acq_delay_us), ("numSamples", t.n_samples)):
        node = element(td, "userParameterLong")
        element(node, "name", name)
        element(node, "value", int(round(value)))
    doubles = [("dwellTime", float(t.dwell_us))] + ([("echoSpacing_us", float(t.echo_spacing_us))]
                                                   if t.echo_spacing_us else [])
    for name, value in doubles:
        node = element(td, "userParameterDouble")
        element(node, "name", name)
        element(node, "value", value)
    if t.comment:
        element(td, "comment", t.comment)
    pi = element(enc, "parallelImaging")
    af = element(pi, "accelerationFactor")
    element(af, "kspace_encoding_step_1", int(acceleration))
    element(af, "kspace_encoding_step_2", 1)
    element(pi, "calibrationMode", "separate" if acceleration > 1 else "other")
    element(enc, "echoTrainLength", int(t.etl))
