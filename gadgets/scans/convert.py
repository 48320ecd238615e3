"""Scanner raw data to ISMRMRD: a Siemens twix file of a Pulseq acquisition, with the ``.seq`` that ran.

``drone convert RAW.dat OUT.h5 --seq SEQ [--reference NOPE.dat]`` (:func:`convert`): every ADC of the
sequence (pypulseq's reader) is matched, in order, with a readout of the raw file (twixtools); what each
readout is comes from the sequence, not from guesses:

* **its line** from the phase-encode moment at the readout (pypulseq's own k-space of the samples:
  ``kspace_encode_step_1 = ky·FOV + ny/2``), or the label ``LIN`` when the sequence carries one;
* **reverse lines** from the sign of the readout gradient;
* **navigators, ACS reference, noise** from the labels ``NAV``, ``REF``, ``NOISE`` (sequences of
  ``drone sequence`` carry them); **slice** and **frame** from ``SLC`` and ``REP``;
* **the readout** (ramp-up, flat top, ramp-down, ADC delay, samples, dwell) from the readout gradient and the
  ADC, into the header's ``ConventionalEPI`` trajectory description, as Gadgetron's ``EPIReconXGadget`` reads it;
* **the field of view** from the sequence's ``[DEFINITIONS] FOV``; the matrix from the k-space extent;
* **the schedule** (``sequenceParameters``, ``userParameters``) from ``[DEFINITIONS] DRONE_schedule`` when the
  sequence is one of ``drone sequence``'s.

A sequence without navigators (most tutorial EPIs) gets its odd/even correction from a **reference scan**
of the same sequence played without phase encoding (``--reference``): its first three readouts (+, −, +)
become each train's phase-correction navigators, which ``EPICorrGadget`` fits the odd/even phase from.

The encoding follows siemens_to_ismrmrd's EPI map: ``encodedSpace`` = ``reconSpace`` (Nx, the readout FOV),
the oversampling in ``numSamples``.
"""

from __future__ import annotations

import json
import os
import warnings
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from drone_core.schedule import Schedule

from ..recon.header import ISMRMRD_NAMESPACE
from .layout import (GYROMAGNETIC_RATIO_HZ_PER_T, EpiTrajectory, element, epi_encoding, header_text, prepare_outputs,
                     schedule_sections)

__all__ = ["PulseqReadout", "ConvertInfo", "pulseq_readouts", "read_twix_readouts", "converted_header_xml",
           "convert", "sequence_schedule", "write_converted"]

_FLAGS = {"FIRST_IN_SLICE": 7, "LAST_IN_SLICE": 8, "LAST_IN_REPETITION": 14, "LAST_IN_MEASUREMENT": 25,
          "NOISE_MEASUREMENT": 19, "PARALLEL_CALIBRATION": 20, "REVERSE": 22, "PHASECORR_DATA": 24}


def _flag(name: str) -> int:
    return 1 << (_FLAGS[name] - 1)


@dataclass(frozen=True)
class PulseqReadout:
    """One ADC of a Pulseq sequence, as the converter needs it.

    Attributes:
        line: ``kspace_encode_step_1``; ky_cycles: its phase-encode moment × FOV (cycles per FOV).
        reverse: the readout gradient is negative.
        navigator, reference, noise: labels ``NAV``, ``REF``, ``NOISE``.
        slice, frame: labels ``SLC``, ``REP`` (0 without).
        n_samples, dwell_us: the ADC.
        ramp_up_us, flat_top_us, ramp_down_us, acq_delay_us: the readout trapezoid and the ADC's start in it.
        time_s: the ADC's start.
    """

    line: int
    ky_cycles: float
    reverse: bool
    navigator: bool
    reference: bool
    noise: bool
    slice: int
    frame: int
    n_samples: int
    dwell_us: float
    ramp_up_us: float
    flat_top_us: float
    ramp_down_us: float
    acq_delay_us: float
    time_s: float


@dataclass(frozen=True)
class ConvertInfo:
    """What :func:`convert` wrote: the file, its readouts (imaging, navigators, ACS, noise), the matrix and FOV."""

    path: Path
    n_acquisitions: int
    n_navigators: int
    n_reference: int
    n_noise: int
    matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]
    n_coils: int
    navigators_from: str


def pulseq_readouts(seq_path: str | os.PathLike[str]) -> tuple[list[PulseqReadout], dict[str, Any]]:
    """Every ADC of the sequence, in order, with its line, polarity, labels and readout; and its definitions.

    Raises:
        FileNotFoundError: no such file; ValueError: a sequence without ADCs or without ``FOV``.
    """
    import pypulseq as pp

    from drone_core.sequence.readback import read_sequence

    path = Path(seq_path)
    if not path.is_file():
        raise FileNotFoundError(f"--seq: no Pulseq file {str(path)!r}")
    seq = pp.Sequence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq.read(str(path))
        k_adc = seq.calculate_kspace()[0]
    definitions = dict(seq.definitions)
    if "FOV" not in definitions:
        raise ValueError(f"--seq: {str(path)!r} has no [DEFINITIONS] FOV; the converter needs the field of view")
    fov = np.ravel(definitions["FOV"]).astype(float)
    readback = read_sequence(seq)
    if not readback.readouts:
        raise ValueError(f"--seq: {str(path)!r} has no ADC events")
    out = []
    start = 0
    for r in readback.readouts:
        k = k_adc[:, start:start + r.n_samples]
        start += r.n_samples
        block = seq.get_block(r.block)
        gx = block.gx
        labels = r.labels
        if labels.get("NOISE", 0) and gx is None:  # a noise readout: no gradients
            gx = SimpleNamespace(amplitude=0.0, rise_time=0.0, flat_time=0.0, fall_time=0.0, delay=0.0)
        elif gx is None or gx.type != "trap":
            raise ValueError(f"--seq: the ADC of block {r.block} has no trapezoidal readout gradient; the converter "
                             f"handles trapezoidal (EPI or Cartesian) readouts")
        ky = float(np.mean(k[1])) * fov[1]
        line = int(labels["LIN"]) if "LIN" in labels else None
        out.append(PulseqReadout(
            line=line if line is not None else -1, ky_cycles=ky, reverse=bool(gx.amplitude < 0),
            navigator=bool(labels.get("NAV", 0)), reference=bool(labels.get("REF", 0)),
            noise=bool(labels.get("NOISE", 0)), slice=int(labels.get("SLC", 0)), frame=int(labels.get("REP", 0)),
            n_samples=r.n_samples, dwell_us=r.dwell_s * 1e6, ramp_up_us=float(gx.rise_time) * 1e6,
            flat_top_us=float(gx.flat_time) * 1e6, ramp_down_us=float(gx.fall_time) * 1e6,
            acq_delay_us=(float(block.adc.delay) - float(gx.delay)) * 1e6,
            time_s=r.start_s))
    imaging = [r for r in out if not (r.noise or r.navigator)]
    if any(r.line < 0 for r in out):  # no LIN labels: lines from the phase-encode moment
        ky_min = min(r.ky_cycles for r in imaging)
        centre = -int(round(ky_min))
        out = [r if r.line >= 0 else replace(r, line=int(round(r.ky_cycles)) + centre) for r in out]
    return out, definitions


def read_twix_readouts(raw_path: str | os.PathLike[str]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The imaging readouts of a Siemens twix file (the last measurement), in acquisition order: each
    ``(coils, samples)`` complex64; and its header (twixtools' ``hdr``).

    Raises:
        FileNotFoundError: no such file; ImportError: twixtools is not installed.
    """
    path = Path(raw_path)
    if not path.is_file():
        raise FileNotFoundError(f"no raw data file {str(path)!r}")
    try:
        import twixtools
    except ImportError:
        raise ImportError("drone convert needs twixtools: pip install 'drone-gadgetron[scanner]'") from None
    measurements = twixtools.read_twix(str(path), verbose=False)
    last = measurements[-1]
    data = [np.asarray(m.data, dtype=np.complex64) for m in last["mdb"] if m.is_image_scan()]
    return data, last.get("hdr", {})


def converted_header_xml(readouts: list[PulseqReadout], definitions: dict[str, Any], *, n_coils: int,
                         n_navigators: int, field_strength_t: float, description: str) -> tuple[str, int, int]:
    """The ISMRMRD header of a converted acquisition; returns ``(xml, nx, ny)``.

    The matrix is ``[DEFINITIONS] MatrixSize`` when the sequence has it, else the lines spanned (square
    pixels); encodedSpace = reconSpace (siemens_to_ismrmrd's EPI convention). A sequence of ``drone sequence``
    carries its schedule (``[DEFINITIONS] DRONE_schedule`` and its digest): it goes into ``sequenceParameters``
    and ``userParameters`` as in the project's own scans, so the gadget checks the scan against its estimator.

    Raises:
        ValueError: the sequence's schedule does not match its recorded digest.
    """
    fov = np.ravel(definitions["FOV"]).astype(float) * 1e3  # mm (x, y, z)
    imaging = [r for r in readouts if not (r.noise or r.navigator)]
    first = imaging[0]
    if "MatrixSize" in definitions:  # sequences of `drone sequence` say it
        nx, ny = (int(v) for v in np.ravel(definitions["MatrixSize"])[:2])
    else:  # the lines spanned; square pixels
        ny = max(r.line for r in imaging) + 1
        ny += ny % 2
        nx = int(round(ny * fov[0] / fov[1]))
        nx += nx % 2
    frames = max(r.frame for r in readouts) + 1
    slices = max(r.slice for r in readouts) + 1
    ET.register_namespace("", ISMRMRD_NAMESPACE)
    root = ET.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")
    sub = element
    sub(sub(root, "subjectInformation"), "patientID", "PULSEQ")
    sub(sub(root, "studyInformation"), "studyID", "1")
    mi = sub(root, "measurementInformation")
    sub(mi, "measurementID", "66001_PULSEQ_1_1")
    sub(mi, "patientPosition", "HFS")
    sub(mi, "protocolName", str(definitions.get("Name", "pulseq")))
    sub(mi, "seriesDescription", description)
    asi = sub(root, "acquisitionSystemInformation")
    sub(asi, "systemVendor", "SIEMENS")
    sub(asi, "systemFieldStrength_T", float(field_strength_t))
    sub(asi, "receiverChannels", int(n_coils))
    sub(asi, "deviceID", "66001")
    sub(sub(root, "experimentalConditions"), "H1resonanceFrequency_Hz",
        int(round(GYROMAGNETIC_RATIO_HZ_PER_T * field_strength_t)))
    train = [r for r in imaging if r.frame == first.frame and r.slice == first.slice and not r.reference]
    acceleration = int(np.ravel(definitions.get("AccelerationFactorPE", [1]))[0])
    epi_encoding(root, matrix=(ny, nx), fov_mm=(float(fov[0]), float(fov[1]), float(fov[2])), n_slices=slices,
                 n_frames=frames, acceleration=acceleration,
                 trajectory=EpiTrajectory(first.ramp_up_us, first.flat_top_us, first.ramp_down_us, first.acq_delay_us,
                                          first.n_samples, first.dwell_us, len(train), n_navigators,
                                          comment="converted from a Pulseq acquisition: the .seq's readout"))
    schedule = sequence_schedule(definitions)
    if schedule is not None:
        schedule_sections(root, schedule, description)
    return header_text(root), nx, ny


def sequence_schedule(definitions: dict[str, Any]) -> Schedule | None:
    """The schedule a sequence of ``drone sequence`` declares in its ``[DEFINITIONS]``, or None (another sequence).

    Raises:
        ValueError: the schedule is unreadable or does not match ``DRONE_schedule_digest``.
    """
    text = definitions.get("DRONE_schedule")
    if text is None:
        return None
    try:
        schedule = Schedule.from_dict(json.loads(str(text)))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the sequence's [DEFINITIONS] DRONE_schedule: not a readable schedule ({exc})") from None
    recorded = str(definitions.get("DRONE_schedule_digest", ""))
    if recorded and schedule.digest() != recorded:
        raise ValueError(f"the sequence's [DEFINITIONS] DRONE_schedule: digest {schedule.digest()} but the sequence "
                         f"records {recorded} (the file was edited)")
    return schedule


def convert(raw_path: str | os.PathLike[str], out_path: str | os.PathLike[str], seq_path: str | os.PathLike[str], *,
            reference_path: str | os.PathLike[str] | None = None, group: str = "dataset",
            field_strength_t: float = 3.0, overwrite: bool = False) -> ConvertInfo:
    """Convert a twix file and its ``.seq`` to an ISMRMRD raw ``.h5`` (module docstring).

    Raises:
        FileNotFoundError, FileExistsError: the inputs, the output.
        ValueError: the raw file's readouts do not match the sequence's ADCs (count or samples).
    """
    out = Path(out_path)
    if not overwrite:
        prepare_outputs(out, overwrite=False)
    readouts, definitions = pulseq_readouts(seq_path)
    data, _ = read_twix_readouts(raw_path)
    navigators: list[tuple[np.ndarray, bool]] = []
    source = "the sequence's navigators"
    if not any(r.navigator for r in readouts):
        if reference_path is not None:
            ref_data, _ = read_twix_readouts(reference_path)
            if len(ref_data) < 3 or (data and ref_data[0].shape != data[0].shape):
                raise ValueError(f"--reference: expected readouts like the scan's ({data[0].shape if data else None}), "
                                 f"got {len(ref_data)} of {ref_data[0].shape if ref_data else None}")
            imaging = [r for r in readouts if not r.noise]
            navigators = [(ref_data[j], imaging[j].reverse) for j in range(3)]
            source = f"the reference scan {Path(reference_path).name} (its first 3 readouts)"
        else:
            source = "none (no navigators and no --reference: EPICorrGadget cannot correct the odd/even echoes)"
    return write_converted(out, readouts, definitions, data, navigators=navigators, navigators_from=source,
                           description=f"converted from {Path(raw_path).name} with {Path(seq_path).name}",
                           group=group, field_strength_t=field_strength_t)


def write_converted(out_path: str | os.PathLike[str], readouts: list[PulseqReadout], definitions: dict[str, Any],
                    data: list[np.ndarray], *, navigators: list[tuple[np.ndarray, bool]] | None = None,
                    navigators_from: str = "the sequence's navigators", description: str = "",
                    group: str = "dataset", field_strength_t: float = 3.0) -> ConvertInfo:
    """Write the readouts of a Pulseq acquisition (``data``: one ``(coils, samples)`` array per ADC of
    ``readouts``, in acquisition order — a scanner's, or a simulator's) as an ISMRMRD raw file, replacing it.

    Args:
        navigators: ``[(samples, reverse), …]`` written before every train, for a sequence without navigators.

    Raises:
        ValueError: the readouts do not match the ADCs (count or samples).
    """
    import ismrmrd

    out = Path(out_path)
    navigators = list(navigators or [])
    if len(data) != len(readouts):
        raise ValueError(f"the raw file has {len(data)} readouts and the sequence {len(readouts)} ADCs: not the "
                         f"sequence that ran (--seq)")
    for k, (d, r) in enumerate(zip(data, readouts)):
        if d.ndim != 2 or d.shape[1] != r.n_samples:
            raise ValueError(f"readout {k}: {d.shape} in the raw data, (coils, {r.n_samples}) in the sequence's ADC")
    n_coils = int(data[0].shape[0])
    has_navigators = any(r.navigator for r in readouts)
    n_nav = 3 if (has_navigators or navigators) else 0
    xml, nx, ny = converted_header_xml(readouts, definitions, n_coils=n_coils, n_navigators=n_nav,
                                      field_strength_t=field_strength_t, description=description)
    centre = ny // 2
    order = ([k for k, r in enumerate(readouts) if r.noise] + [k for k, r in enumerate(readouts) if r.reference]
             + [k for k, r in enumerate(readouts) if not (r.noise or r.reference)])  # ACS first, as Gadgetron wants
    prepare_outputs(out, overwrite=True)
    counts = {"nav": 0, "ref": 0, "noise": 0}
    with closing(ismrmrd.Dataset(str(out), group, create_if_needed=True)) as ds:
        ds.write_xml_header(xml.encode("utf-8"))
        scan = 0
        imaging_order = [k for k in order if not (readouts[k].noise or readouts[k].navigator or readouts[k].reference)]
        last_of_train = {(readouts[k].slice, readouts[k].frame): k for k in imaging_order}
        seen: set[tuple[int, int]] = set()

        def append(samples: np.ndarray, r: PulseqReadout, flags: int, line: int) -> None:
            nonlocal scan
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(samples, dtype=np.complex64))
            acq.version = 1
            acq.flags = flags
            acq.scan_counter = scan
            acq.center_sample = r.n_samples // 2
            acq.sample_time_us = r.dwell_us
            acq.available_channels = n_coils
            acq.idx.kspace_encode_step_1 = line
            acq.idx.slice = r.slice
            acq.idx.repetition = r.frame
            acq.read_dir[0], acq.phase_dir[1], acq.slice_dir[2] = 1.0, 1.0, 1.0
            acq.acquisition_time_stamp = int(round(r.time_s * 1e3 / 2.5))
            ds.append_acquisition(acq)
            scan += 1

        for k in order:
            r = readouts[k]
            flags = 0
            if r.noise:
                flags |= _flag("NOISE_MEASUREMENT")
                counts["noise"] += 1
            elif r.reference and not r.navigator:  # the ACS shot's navigators are navigators only (as Gadgetron's
                flags |= _flag("PARALLEL_CALIBRATION")  # EPI chain expects; a calibration flag hides them from EPICorr)
                counts["ref"] += 1
            if r.navigator:
                flags |= _flag("PHASECORR_DATA")
                counts["nav"] += 1
            if r.reverse:
                flags |= _flag("REVERSE")
            key = (r.slice, r.frame)
            imaging = not (r.noise or r.navigator or r.reference)
            if imaging and key not in seen:
                seen.add(key)
                for nav_data, nav_reverse in navigators:  # the reference scan's navigators, before each train
                    nav_flags = _flag("PHASECORR_DATA") | (_flag("REVERSE") if nav_reverse else 0)
                    append(nav_data, r, nav_flags, centre)
                    counts["nav"] += 1
                flags |= _flag("FIRST_IN_SLICE")
            if imaging and last_of_train[key] == k:
                flags |= _flag("LAST_IN_SLICE") | _flag("LAST_IN_REPETITION")
                if k == imaging_order[-1]:
                    flags |= _flag("LAST_IN_MEASUREMENT")
            append(data[k], r, flags, centre if r.navigator else r.line)
    fov = tuple(float(v) * 1e3 for v in np.ravel(definitions["FOV"]))
    return ConvertInfo(out, scan, counts["nav"], counts["ref"], counts["noise"], (ny, nx),
                       (fov[0], fov[1], fov[2]), n_coils, navigators_from)
