"""Simulated raw EPI-MRF k-space as an ISMRMRD ``.h5`` file — what a scanner sends Gadgetron's GRAPPA EPI chain.

:func:`write_raw_scan` simulates a :class:`drone_core.phantoms.Phantom` under a schedule (the same
normative signal model, slice profile and B1 as :func:`drone_gadgets.scans.images.write_phantom_scan`), then
acquires every frame of every slice as a multi-coil, GRAPPA-accelerated single-shot EPI
(:mod:`drone_core.encoding`): ``drone simulate-scan OUT.h5 --raw``. The frames come back from
``gadgetron_ismrmrd_client -f OUT.h5 -C xml_configs/drone_grappa_epi.xml`` (or the chain's name); our
gadget turns them into maps that line up with the truth stored beside the acquisitions.

What is in ``/<group>/data`` (acquisitions, in stream order)
-----------------------------------------------------------
1. **Noise scan** (unless ``noise_scan=False``): ``noise_lines`` acquisitions flagged
   ``ACQ_IS_NOISE_MEASUREMENT`` — receiver noise only, with the channels' covariance Ψ
   (:func:`drone_core.encoding.coils.noise_covariance`) and the imaging dwell time — for
   ``NoiseAdjustGadget``, which prewhitens the data with it. (That gadget stores the covariance in
   Gadgetron's storage server: a Gadgetron started with ``--disable_storage true`` fails on a noise
   scan; write the file with ``noise_scan=False`` / ``--no-noise-scan`` for such a server.)
2. For each frame (``repetition`` = frame index, the outer loop), for each slice (``slice``):

   * in repetition 0 only, before the slice's frame: the **auto-calibration (ACS) reference** — a
     separate, fully sampled EPI of the ``calibration_lines`` central lines, flagged
     ``ACQ_IS_PARALLEL_CALIBRATION`` (``calibrationMode`` ``separate``), proton-density weighted
     (M0 at the frames' peak level), with its own navigators. Gadgetron computes the GRAPPA kernel
     and the coil maps from it once and uses them for every frame;
   * ``n_navigators`` (3) **phase-correction navigators**: readouts without phase encoding,
     polarity +, −, +, flagged ``ACQ_IS_PHASECORR_DATA`` (``EPICorrGadget`` needs them: without
     them it returns nothing);
   * the **imaging echo train**: every ``acceleration``-th phase-encode line (the centre line among
     them), ascending, of alternating readout polarity — odd echoes flagged ``ACQ_IS_REVERSE`` and
     stored in acquisition order — ``idx.kspace_encode_step_1`` the line number (centre ny/2),
     ``idx.segment`` the polarity; ``ACQ_FIRST_IN_SLICE``/``ACQ_LAST_IN_SLICE`` on the first and last
     line, ``ACQ_LAST_IN_REPETITION`` on the repetition's last line and ``ACQ_LAST_IN_MEASUREMENT`` on
     the very last.

   Every acquisition has ``n_coils`` channels (``active_channels`` = ``available_channels``, all
   in ``channel_mask``), ``number_of_samples`` = the readout's ADC samples (2× oversampled),
   ``sample_time_us`` = the dwell time, the slice's geometry (``position`` (0, 0, z), ``read_dir``
   (1, 0, 0), ``phase_dir`` (0, 1, 0), ``slice_dir`` (0, 0, 1); as :mod:`drone_gadgets.scans.images`), and an
   ``acquisition_time_stamp`` (2.5 ms ticks) from the schedule's TRs.

The signal (:mod:`drone_core.encoding.epi`): each coil sees the frame times its sensitivity
(a ring of ``n_coils`` line-current elements, root-sum-of-squares 1); samples lie on the trapezoidal
readout's k-space trajectory (flat top only, or with ``ramp_sampling``); reverse lines and the
navigators carry an odd/even echo inconsistency (``ghost_shift``, ``ghost_phase_rad``) that
``EPICorrGadget`` must remove. Not modelled: T2* decay and off-resonance along the echo train,
gradient non-linearity, physiological noise.

Noise: complex Gaussian with covariance ∝ Ψ, one σ for the whole scan, defined so that a fully
sampled acquisition reconstructed and combined without loss would have the noise of
``drone simulate-scan --noise`` at the same level (σ per pixel = ``noise_level`` × the brightest
noise-free voxel): σ per k-space sample is that σ × √(samples per readout ÷ readout pixels) (the
oversampled readout's wider bandwidth). What GRAPPA then costs (√R and its g-factor) is what the
maps show.

The header (ISMRMRD XML) holds what the chain reads: ``subjectInformation``/``studyInformation``/
``measurementInformation`` (IDs for Gadgetron's storage of the noise covariance),
``acquisitionSystemInformation`` (``receiverChannels`` and the coil labels,
``relativeReceiverNoiseBandwidth``), the encoding (encoded = recon space: matrix ``nx × ny``, FOV;
``encodingLimits`` of ``kspace_encoding_step_1``/``_2``, ``slice``, ``repetition``, ``segment``;
trajectory ``epi`` with the ``ConventionalEPI`` ``trajectoryDescription`` — ``numSamples``,
``dwellTime`` (µs), ``rampUpTime``/``flatTopTime``/``rampDownTime``/``acqDelayTime`` (µs),
``numberOfNavigators``, ``etl``; ``parallelImaging`` with the acceleration and ``calibrationMode``),
and the schedule (``sequenceParameters`` and ``userParameters`` exactly as in
:mod:`drone_gadgets.scans.images`, which our gadget checks).

``/<group>/image_5`` holds the B1 map when the scan has one (for the gadget's ``b1=file:OUT.h5``: the
raw chain cannot carry images); the true maps are in ``<stem>_truth.h5``, as for :mod:`drone_gadgets.scans.images`.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drone_core.encoding.coils import coil_sensitivities, correlated_noise, noise_covariance
from drone_core.encoding.epi import (EpiGhost, EpiReadout, calibration_line_count, calibration_lines, encode_lines,
                                     phase_encode, undersampled_lines)
from drone_core.schedule import Schedule

from ..recon.header import ISMRMRD_NAMESPACE
from .b1 import b1_array, b1_map_images
from .layout import (B1_SERIES_INDEX, B1_VAR, GYROMAGNETIC_RATIO_HZ_PER_T, EpiTrajectory, element, epi_encoding,
                     header_text, prepare_outputs, schedule_sections, slice_geometry)
from .truth import truth_arrays, write_truth

if TYPE_CHECKING:  # pragma: no cover
    from drone_core.phantoms import Phantom

__all__ = ["RawProtocol", "RawScanInfo", "raw_header_xml", "write_raw_scan", "ACQ_FLAGS"]

#: ISMRMRD acquisition flags (bit numbers, ``ismrmrd.ACQ_*``) used here.
ACQ_FLAGS: dict[str, int] = {
    "FIRST_IN_SLICE": 7, "LAST_IN_SLICE": 8, "LAST_IN_REPETITION": 14, "NOISE_MEASUREMENT": 19,
    "PARALLEL_CALIBRATION": 20, "REVERSE": 22, "PHASECORR_DATA": 24, "LAST_IN_MEASUREMENT": 25,
}
#: ``relativeReceiverNoiseBandwidth`` in the header (Gadgetron's default, a Siemens receiver's).
RECEIVER_NOISE_BANDWIDTH = 0.793
#: ``acquisition_time_stamp`` tick, ms (Siemens: 2.5 ms).
TIME_STAMP_TICK_MS = 2.5
#: Acquisitions written to the file at once (bounds memory, amortises the HDF5 resize).
_BATCH = 4096


def _flag(name: str) -> int:
    return 1 << (ACQ_FLAGS[name] - 1)


@dataclass(frozen=True)
class RawProtocol:
    """How the raw scan is acquired.

    Attributes:
        n_coils: receive channels (≥ 1; 8 or more for GRAPPA to work well).
        acceleration: GRAPPA factor R along the phase-encode direction (1, 2, 3 …).
        calibration_lines: ACS lines (None: 12·R, e.g. 24 for R = 2; none at R = 1).
        n_navigators: phase-correction navigators per echo train (3: +, −, +).
        oversampling: readout oversampling factor (samples per pixel on the flat top).
        dwell_time_us: ADC dwell time, µs.
        ramp_us: ramp time of the readout trapezoid, µs (an integer: the header holds whole µs).
        ramp_sampling: also sample on the ramps (non-uniform k-space samples, regridded by Gadgetron).
        ghost_shift: odd/even readout shift, k-space samples (:class:`drone_core.encoding.epi.EpiGhost`).
        ghost_phase_rad: odd/even phase, radians.
        noise_scan: write the noise-measurement acquisitions.
        noise_lines: their number.
        neighbour_correlation: receive-noise correlation of adjacent channels.
        coil_seed: seed of the channels' noise gains.
    """

    n_coils: int = 8
    acceleration: int = 2
    calibration_lines: int | None = None
    n_navigators: int = 3
    oversampling: int = 2
    dwell_time_us: float = 2.5
    ramp_us: int = 100
    ramp_sampling: bool = False
    ghost_shift: float = 0.2
    ghost_phase_rad: float = 0.1
    noise_scan: bool = True
    noise_lines: int = 64
    neighbour_correlation: float = 0.2
    coil_seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("n_coils", 1), ("acceleration", 1), ("n_navigators", 3), ("oversampling", 1),
                              ("ramp_us", 0), ("noise_lines", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
        if self.n_navigators % 2 == 0:
            raise ValueError(f"n_navigators: expected an odd number (polarities +, −, +, …), got {self.n_navigators}")
        if self.calibration_lines is not None and (isinstance(self.calibration_lines, bool)
                                                   or not isinstance(self.calibration_lines, (int, np.integer))
                                                   or self.calibration_lines < 2):
            raise ValueError(f"calibration_lines: expected None or an integer ≥ 2, got {self.calibration_lines!r}")
        for name in ("dwell_time_us", "ghost_shift", "ghost_phase_rad"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if self.dwell_time_us <= 0:
            raise ValueError(f"dwell_time_us: expected > 0 µs, got {self.dwell_time_us!r}")

    @property
    def n_calibration(self) -> int:
        """ACS lines acquired (0 at R = 1; default 12·R)."""
        return calibration_line_count(self.acceleration, self.calibration_lines)

    def readout(self, nx: int) -> EpiReadout:
        """The readout lobe for ``nx`` pixels."""
        return EpiReadout.design(nx, oversampling=self.oversampling, dwell_time_us=self.dwell_time_us,
                                 ramp_us=float(self.ramp_us), ramp_sampling=self.ramp_sampling)


@dataclass(frozen=True)
class RawScanInfo:
    """What :func:`write_raw_scan` wrote.

    Attributes:
        path, group: the file and the group of the acquisitions (the truth in that group of ``<stem>_truth.h5``).
        n_frames, n_slices, matrix: N, z and ``(ny, nx)`` of the frames Gadgetron reconstructs.
        n_acquisitions: all acquisitions; ``n_noise``, ``n_navigators``, ``n_calibration``: of them,
            the noise scan, the navigators and the ACS lines.
        n_samples: ADC samples per readout.
        noise_sigma: σ per real channel of a k-space sample (a channel of Ψ = 1).
        truth: the truth variables written.
        schedule_digest: the header's schedule.
        b1_images: B1 map images in ``/<group>/image_5`` (0 without a B1 map).
        protocol: the acquisition protocol.
    """

    path: Path
    group: str
    n_frames: int
    n_slices: int
    matrix: tuple[int, int]
    n_acquisitions: int
    n_noise: int
    n_navigators: int
    n_calibration: int
    n_samples: int
    noise_sigma: float
    truth: tuple[str, ...]
    schedule_digest: str
    b1_images: int
    protocol: RawProtocol = field(default_factory=RawProtocol)


# --------------------------------------------------------------------------- header
def raw_header_xml(schedule: Schedule, protocol: RawProtocol, *, matrix: tuple[int, int], n_slices: int,
                   fov_mm: tuple[float, float], slice_thickness_mm: float, field_strength_t: float = 1.5,
                   description: str = "", measurement_id: str = "66001_DRONEPHANTOM_1_1") -> str:
    """The ISMRMRD header of a raw scan (module docstring), valid against ``ismrmrd.xsd``.

    Args:
        schedule, protocol: the acquisition.
        matrix: ``(ny, nx)`` reconstructed matrix.
        n_slices: z.
        fov_mm: ``(fov_y, fov_x)`` mm.
        slice_thickness_mm: mm.
        field_strength_t: B0, tesla.
        description: ``seriesDescription`` and ``DRONE_description``.
        measurement_id: ``measurementID``, Siemens style ``<device>_<patient>_<study>_<measurement>``
            (Gadgetron takes the device, patient and study IDs from it).
    """
    sub = element
    ny, nx = (int(v) for v in matrix)
    readout = protocol.readout(nx)
    device, patient, study, _ = (measurement_id.split("_") + ["", "", "", ""])[:4]
    ET.register_namespace("", ISMRMRD_NAMESPACE)
    root = ET.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")
    sub(sub(root, "subjectInformation"), "patientID", patient or "DRONEPHANTOM")
    sub(sub(root, "studyInformation"), "studyID", study or "1")
    mi = sub(root, "measurementInformation")
    sub(mi, "measurementID", measurement_id)
    sub(mi, "patientPosition", "HFS")
    sub(mi, "protocolName", "DRONE simulated EPI-MRF (raw)")
    sub(mi, "sequenceName", "MRF EPI (simulated raw k-space, EPG signal model)")
    sub(mi, "seriesDescription", description or f"DRONE simulated raw EPI-MRF, schedule {schedule.name}")
    asi = sub(root, "acquisitionSystemInformation")
    sub(asi, "systemVendor", "DRONE simulation")
    sub(asi, "systemModel", "drone_gadgets.scans.raw")
    sub(asi, "systemFieldStrength_T", float(field_strength_t))
    sub(asi, "relativeReceiverNoiseBandwidth", RECEIVER_NOISE_BANDWIDTH)
    sub(asi, "receiverChannels", int(protocol.n_coils))
    for c in range(protocol.n_coils):
        label = sub(asi, "coilLabel")
        sub(label, "coilNumber", c)
        sub(label, "coilName", f"H{c + 1}")
    sub(asi, "deviceID", device or "66001")
    ec = sub(root, "experimentalConditions")
    sub(ec, "H1resonanceFrequency_Hz", int(round(GYROMAGNETIC_RATIO_HZ_PER_T * field_strength_t)))
    n_lines = len(undersampled_lines(ny, protocol.acceleration))
    comment = (("ramp-sampled" if readout.ramp_sampling else "flat-top sampled")
               + f" trapezoidal EPI readout, {readout.n_samples} samples of {readout.dwell_time_us:g} us")
    epi_encoding(root, matrix=(ny, nx), fov_mm=(float(fov_mm[1]), float(fov_mm[0]), float(slice_thickness_mm)),
                 n_slices=n_slices, n_frames=schedule.n_frames, acceleration=int(protocol.acceleration),
                 trajectory=EpiTrajectory(readout.ramp_up_us, readout.flat_top_us, readout.ramp_down_us,
                                          readout.acq_delay_us, readout.n_samples, float(readout.dwell_time_us),
                                          n_lines, protocol.n_navigators, float(readout.echo_spacing_us), comment))
    schedule_sections(root, schedule, description or "simulated raw EPI-MRF k-space")
    return header_text(root)


# --------------------------------------------------------------------------- acquisitions
class _AcquisitionWriter:
    """Appends acquisitions to ``/<group>/data`` in batches (the layout ``ismrmrd.Dataset`` writes)."""

    def __init__(self, path: Path, group: str, n_channels: int, n_samples: int, dwell_us: float) -> None:
        import h5py
        import ismrmrd.hdf5 as mrd_h5

        self._file = h5py.File(path, "a")
        self._dtype = mrd_h5.acquisition_dtype
        self._head_dtype = mrd_h5.acquisition_header_dtype
        self._data = self._file.require_group(group).create_dataset("data", (0,), maxshape=(None,),
                                                                    dtype=self._dtype, chunks=(256,))
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_channels, self.n_samples, self.dwell_us = int(n_channels), int(n_samples), float(dwell_us)
        self._channel_mask = np.zeros(16, dtype=np.uint64)  # every channel active
        for c in range(self.n_channels):
            self._channel_mask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
        self.count = 0
        self._queued = 0

    def add(self, samples: np.ndarray, *, e1: np.ndarray, flags: np.ndarray, slice_: int, repetition: int,
            segment: np.ndarray, position_mm: float, time_stamp: int) -> None:
        """Queue ``(n_lines, n_channels, n_samples)`` samples with their per-line counters and flags."""
        if self._queued >= _BATCH:  # flush before queuing, so that mark_last always finds the last one queued
            self.flush()
        n = samples.shape[0]
        head = np.zeros(n, dtype=self._head_dtype)
        head["version"] = 1
        head["flags"] = flags
        head["measurement_uid"] = 1
        head["scan_counter"] = np.arange(self.count + self._queued, self.count + self._queued + n) + 1
        head["acquisition_time_stamp"] = time_stamp
        head["number_of_samples"] = self.n_samples
        head["available_channels"] = self.n_channels
        head["active_channels"] = self.n_channels
        head["channel_mask"] = self._channel_mask
        head["center_sample"] = self.n_samples // 2
        head["sample_time_us"] = self.dwell_us
        head["position"] = (0.0, 0.0, position_mm)
        head["read_dir"] = (1.0, 0.0, 0.0)
        head["phase_dir"] = (0.0, 1.0, 0.0)
        head["slice_dir"] = (0.0, 0.0, 1.0)
        head["idx"]["kspace_encode_step_1"] = e1
        head["idx"]["slice"] = slice_
        head["idx"]["repetition"] = repetition
        head["idx"]["segment"] = segment
        self._pending.append((head, np.ascontiguousarray(samples, dtype=np.complex64)))
        self._queued += n

    def mark_last(self, flag: int) -> None:
        """Set ``flag`` on the last queued acquisition."""
        self._pending[-1][0]["flags"][-1] |= np.uint64(flag)

    def flush(self) -> None:
        if not self._pending:
            return
        rows = np.empty(self._queued, dtype=self._dtype)
        i = 0
        empty = np.zeros(0, dtype=np.float32)
        for head, samples in self._pending:
            for j in range(head.size):
                rows[i]["head"] = head[j]
                rows[i]["traj"] = empty
                rows[i]["data"] = samples[j].view(np.float32).ravel()
                i += 1
        self._data.resize(self.count + self._queued, axis=0)
        self._data[self.count:self.count + self._queued] = rows
        self.count += self._queued
        self._pending, self._queued = [], 0

    def close(self) -> None:
        self.flush()
        self._file.close()


def write_raw_scan(path: str | os.PathLike[str], phantom: "Phantom", schedule: Schedule, *,
                   protocol: RawProtocol = RawProtocol(), noise_level: float = 0.0, seed: int | None = 0,
                   b1: Any = None, with_truth: bool = True, group: str = "dataset", b1_description: str = "",
                   field_strength_t: float = 1.5, overwrite: bool = False) -> RawScanInfo:
    """Simulate ``phantom`` and write its raw EPI-MRF acquisitions (module docstring).

    Args:
        path: the file; refused if it exists unless ``overwrite``.
        phantom: the object (its matrix is the reconstructed matrix; ny and nx even).
        schedule: the MRF schedule (frames = repetitions).
        protocol: coils, acceleration, readout, ghost, noise scan.
        noise_level: fraction (0.005 = 0.5 %) of the brightest noise-free voxel (module docstring).
        seed: of the noise; None: unseeded.
        b1: None, a number or a relative B1 map of ``phantom.shape`` (as in
            :func:`~drone_gadgets.scans.images.write_phantom_scan`).
        with_truth: write the truth file ``<stem>_truth.h5``.
        group: the dataset group.
        b1_description: how the B1 field was made, for the description.
        field_strength_t: B0 for the header, tesla.
        overwrite: replace an existing file.
    """
    import ismrmrd

    from drone_core.phantoms import image_noise_sigma, simulate_frames

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    if not isinstance(protocol, RawProtocol):
        raise TypeError(f"protocol: expected a RawProtocol, got {type(protocol).__name__}")
    if not isinstance(group, str) or not group or "/" in group:
        raise ValueError(f"group: expected a non-empty name without '/', got {group!r}")
    n_slices = phantom.n_slices
    ny, nx = phantom.matrix
    if ny % 2 or nx % 2:
        raise ValueError(f"phantom: the raw scan needs an even matrix, got {phantom.matrix}")
    if protocol.n_calibration > ny:
        raise ValueError(f"protocol.calibration_lines: {protocol.n_calibration} ACS lines exceed the {ny} lines")
    path = Path(path)
    if not overwrite:
        prepare_outputs(path, overwrite=False)  # refuse an existing scan or truth file early, before any work
    shape3 = (n_slices, ny, nx)
    b1_map = b1_array(b1, shape3, "b1")
    frames = simulate_frames(phantom, schedule, 0.0, b1=None if b1_map is None else b1_map.reshape(phantom.shape),
                             magnitude=False).reshape((schedule.n_frames,) + shape3)
    sigma_image = image_noise_sigma(frames, noise_level)
    readout = protocol.readout(nx)
    sigma = sigma_image * math.sqrt(readout.n_samples / nx)
    rng = np.random.default_rng(seed)
    psi = noise_covariance(protocol.n_coils, neighbour_correlation=protocol.neighbour_correlation,
                           seed=protocol.coil_seed)
    sens = coil_sensitivities(protocol.n_coils, (ny, nx), phantom.fov_mm).astype(np.complex64)
    ghost = EpiGhost(protocol.ghost_shift, protocol.ghost_phase_rad)
    positions = list(phantom.slice_positions_mm)
    thickness = float(phantom.slice_thickness_mm)
    noise_text = (f"{noise_level:.3g} (σ = fraction of the brightest voxel in a lossless image), seed {seed}"
                  if noise_level else "none")
    description = (f"{phantom.name}; schedule {schedule.name!r}; raw EPI, {protocol.n_coils} coils, R = "
                   f"{protocol.acceleration}; noise {noise_text}")
    if b1_map is not None:
        description += f"; B1 {b1_description or 'map'} (B1 map: series {B1_SERIES_INDEX}, percent)"
    xml = raw_header_xml(schedule, protocol, matrix=(ny, nx), n_slices=n_slices, fov_mm=phantom.fov_mm,
                         slice_thickness_mm=thickness, field_strength_t=field_strength_t, description=description)
    prepare_outputs(path, overwrite=True)
    with closing(ismrmrd.Dataset(str(path), group, create_if_needed=True)) as ds:
        ds.write_xml_header(xml.encode("utf-8"))

    nav_rows = np.full(protocol.n_navigators, ny // 2)
    nav_reverse = np.arange(protocol.n_navigators) % 2 == 1
    lines = undersampled_lines(ny, protocol.acceleration)
    line_reverse = np.arange(lines.size) % 2 == 1
    acs = calibration_lines(ny, protocol.n_calibration) if protocol.n_calibration else np.zeros(0, np.intp)
    acs_reverse = np.arange(acs.size) % 2 == 1
    m0 = np.asarray(phantom.maps()["m0"], dtype=np.float64).reshape(shape3)
    peak = float(np.abs(frames).max()) if frames.size else 0.0
    reference = m0 * (peak / m0.max()) if m0.max() > 0 else m0
    rev, nav, cal = _flag("REVERSE"), _flag("PHASECORR_DATA"), _flag("PARALLEL_CALIBRATION")

    nav_flags = np.where(nav_reverse, nav | rev, nav).astype(np.uint64)

    def coil_hybrid(image: np.ndarray) -> np.ndarray:
        """The coils' view of one image, phase-encoded once for all its lines (navigators included)."""
        return phase_encode(sens * image[None].astype(np.complex64))

    def acquire(hybrid: np.ndarray, rows: np.ndarray, reverse: np.ndarray) -> np.ndarray:
        data = encode_lines(hybrid, rows, reverse, readout, ghost)
        if sigma > 0:
            data = data + correlated_noise(rng, psi, (rows.size, readout.n_samples), sigma).transpose(1, 0, 2)
        return data

    writer = _AcquisitionWriter(path, group, protocol.n_coils, readout.n_samples, readout.dwell_time_us)
    n_noise = n_nav = n_cal = 0
    try:
        if protocol.noise_scan:
            noise = correlated_noise(rng, psi, (protocol.noise_lines, readout.n_samples),
                                     sigma if sigma > 0 else 1.0).transpose(1, 0, 2)
            writer.add(noise, e1=np.zeros(protocol.noise_lines, np.intp),
                       flags=np.full(protocol.noise_lines, _flag("NOISE_MEASUREMENT"), np.uint64), slice_=0,
                       repetition=0, segment=np.zeros(protocol.noise_lines, np.intp), position_mm=positions[0],
                       time_stamp=0)
            n_noise = protocol.noise_lines
        t_ms = 1000.0
        for r in range(schedule.n_frames):
            for s in range(n_slices):
                stamp = int(round(t_ms / TIME_STAMP_TICK_MS))
                if r == 0 and acs.size:
                    ref_hybrid = coil_hybrid(reference[s])
                    writer.add(acquire(ref_hybrid, nav_rows, nav_reverse), e1=nav_rows, flags=nav_flags, slice_=s,
                               repetition=0, segment=nav_reverse.astype(np.intp), position_mm=positions[s],
                               time_stamp=stamp)
                    writer.add(acquire(ref_hybrid, acs, acs_reverse), e1=acs,
                               flags=np.where(acs_reverse, cal | rev, cal).astype(np.uint64), slice_=s,
                               repetition=0, segment=acs_reverse.astype(np.intp), position_mm=positions[s],
                               time_stamp=stamp)
                    n_nav += nav_rows.size
                    n_cal += acs.size
                frame_hybrid = coil_hybrid(frames[r, s])
                writer.add(acquire(frame_hybrid, nav_rows, nav_reverse), e1=nav_rows, flags=nav_flags, slice_=s,
                           repetition=r, segment=nav_reverse.astype(np.intp), position_mm=positions[s],
                           time_stamp=stamp)
                n_nav += nav_rows.size
                flags = np.where(line_reverse, rev, 0).astype(np.uint64)
                flags[0] |= np.uint64(_flag("FIRST_IN_SLICE"))
                flags[-1] |= np.uint64(_flag("LAST_IN_SLICE"))
                if s == n_slices - 1:
                    flags[-1] |= np.uint64(_flag("LAST_IN_REPETITION"))
                writer.add(acquire(frame_hybrid, lines, line_reverse), e1=lines, flags=flags, slice_=s, repetition=r,
                           segment=line_reverse.astype(np.intp), position_mm=positions[s], time_stamp=stamp)
            t_ms += float(schedule.tr_ms[r])
        writer.mark_last(_flag("LAST_IN_MEASUREMENT"))
    finally:
        writer.close()

    def geometry(s: int) -> "ismrmrd.ImageHeader":
        return slice_geometry(slice_=s, position_mm=positions[s], matrix=(ny, nx), fov_mm=phantom.fov_mm,
                                     slice_thickness_mm=thickness)

    if b1_map is not None:
        with closing(ismrmrd.Dataset(str(path), group, create_if_needed=True)) as ds:
            for image in b1_map_images(b1_map, geometry):
                ds.append_image(B1_VAR, image)
    truth: dict[str, np.ndarray] = {}
    if with_truth:
        maps: dict[str, Any] = dict(phantom.maps())
        maps["labels"] = phantom.labels
        if b1_map is not None:
            maps["b1"] = b1_map
        truth = truth_arrays(maps, shape3)
        write_truth(path, group, xml.encode("utf-8"), truth, geometry,
                         {k: tuple(t) for k, t in phantom.tissues.items()})
    return RawScanInfo(path, group, schedule.n_frames, n_slices, (ny, nx), writer.count, n_noise, n_nav, n_cal,
                       readout.n_samples, sigma, tuple(truth), schedule.digest(),
                       0 if b1_map is None else n_slices, protocol)
