"""A Pulseq file read back as the scanner will play it: RF pulses, ADCs and their labels, TE, TRs and TI.

:func:`read_sequence` walks the blocks of a ``.seq`` file (pypulseq's reader) and returns every RF
pulse (its centre time and flip angle, from the waveform itself: 2π·|∫ B1(t) dt|) and every ADC (its
window and the Pulseq labels in force), grouped into **shots** — an excitation and the readouts up to
the next RF pulse. :meth:`SequenceReadback.frames` gives each slice's MRF timing as played: the flip
angles, TE (excitation centre → the centre of the centre line's readout), every TR (excitation centre
→ next excitation centre) and TI (inversion centre → first excitation centre). Nothing here is taken
from the file's ``[DEFINITIONS]``: the timing is measured from the events, so it checks what
:mod:`drone_core.sequence.epi_mrf` wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RfPulse", "Readout", "Shot", "SliceTiming", "SequenceReadback", "read_sequence", "pulse_flip_deg",
           "pulse_centre_s"]


@dataclass(frozen=True)
class RfPulse:
    """One RF pulse: ``time_s`` its centre, ``flip_deg`` its on-resonance flip angle (for an adiabatic
    inversion, the integral of its amplitude, not a rotation), ``use`` Pulseq's RF use, ``block`` its block."""

    time_s: float
    flip_deg: float
    use: str
    block: int


@dataclass(frozen=True)
class Readout:
    """One ADC: its window's start and centre (s), samples, dwell (s), the labels in force, its block."""

    start_s: float
    centre_s: float
    n_samples: int
    dwell_s: float
    labels: dict[str, int]
    block: int


@dataclass
class Shot:
    """An excitation and the readouts that follow it up to the next RF pulse."""

    excitation: RfPulse
    readouts: list[Readout] = field(default_factory=list)

    def label(self, name: str) -> int:
        """The value of label ``name`` on the shot's first readout (0 without readouts)."""
        return int(self.readouts[0].labels.get(name, 0)) if self.readouts else 0


@dataclass(frozen=True)
class SliceTiming:
    """One slice's MRF frames as played (ms, degrees)."""

    slice: int
    flip_deg: tuple[float, ...]
    te_ms: tuple[float, ...]
    tr_ms: tuple[float, ...]
    ti_ms: float | None


@dataclass
class SequenceReadback:
    """Everything :func:`read_sequence` found."""

    pulses: list[RfPulse]
    readouts: list[Readout]
    shots: list[Shot]
    definitions: dict[str, Any]
    duration_s: float

    def frames(self, centre_line: int | None = None) -> list[SliceTiming]:
        """The imaging shots (label ``REF`` 0) per slice (label ``SLC``), in frame order (label ``REP``).

        Args:
            centre_line: the line whose readout centre defines TE (default: ``kSpaceCenterLine`` of the
                definitions, else the middle of the lines read).
        """
        if centre_line is None:
            value = self.definitions.get("kSpaceCenterLine")
            centre_line = int(np.ravel(value)[0]) if value is not None else None
        slices: dict[int, list[Shot]] = {}
        for shot in self.shots:
            if shot.readouts and not shot.label("REF") and not shot.label("NOISE"):
                slices.setdefault(shot.label("SLC"), []).append(shot)
        out = []
        for s, shots in sorted(slices.items()):
            shots.sort(key=lambda sh: sh.label("REP"))
            te = []
            for shot in shots:
                lines = [r for r in shot.readouts if not r.labels.get("NAV")]
                line = centre_line if centre_line is not None else sorted(r.labels.get("LIN", 0) for r in lines)[
                    len(lines) // 2]
                centre = [r for r in lines if r.labels.get("LIN") == line]
                if len(centre) != 1:
                    raise ValueError(f"slice {s}, frame {shot.label('REP')}: {len(centre)} readouts of line {line}")
                te.append((centre[0].centre_s - shot.excitation.time_s) * 1e3)
            times = [sh.excitation.time_s for sh in shots]
            after = [p.time_s for p in self.pulses if p.time_s > times[-1] + 1e-9]
            ends = times[1:] + ([after[0]] if after else [])
            tr = tuple((b - a) * 1e3 for a, b in zip(times, ends))
            inversions = [p for p in self.pulses if p.use == "inversion" and p.time_s < times[0]]
            ti = (times[0] - inversions[-1].time_s) * 1e3 if inversions else None
            out.append(SliceTiming(s, tuple(sh.excitation.flip_deg for sh in shots), tuple(te), tr, ti))
        return out


def pulse_flip_deg(rf: Any) -> float:
    """A pypulseq RF event's on-resonance flip angle, 2π·|∫ B1(t) dt|, in degrees.

    A waveform sampled on the RF raster holds one value per raster step (at its middle); a shape given by corner
    points (a block pulse: ``t = [0, T]``) is piecewise linear."""
    t = np.asarray(rf.t, dtype=np.float64)
    signal = np.asarray(rf.signal)
    steps = np.diff(t)
    if t.size > 2 and np.allclose(steps, steps[0]) and t[0] > 0:  # uniform, mid-step samples
        area = np.sum(signal) * steps[0]
    else:
        area = np.sum(0.5 * (signal[1:] + signal[:-1]) * steps)
    return float(math.degrees(2 * math.pi * abs(area)))


def pulse_centre_s(rf: Any) -> float:
    """An RF event's centre, s, from its block's start (its delay included): Pulseq's ``center`` for excitations, the
    middle of the waveform for inversions (symmetric adiabatic pulses)."""
    t = np.asarray(rf.t, dtype=np.float64)
    if getattr(rf, "use", "") != "inversion" and getattr(rf, "center", None) is not None:
        return float(rf.delay + rf.center)
    shape_duration = getattr(rf, "shape_dur", None)
    if shape_duration is not None:
        return float(rf.delay + 0.5 * shape_duration)
    dt = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    return float(rf.delay + 0.5 * (t[-1] + 0.5 * dt + t[0] - 0.5 * dt))


def read_sequence(source: str | Path | Any) -> SequenceReadback:
    """Read a ``.seq`` file (or take a pypulseq ``Sequence``) and measure its events (module docstring).

    Raises:
        FileNotFoundError: no such file.
    """
    import pypulseq as pp

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"source: no Pulseq file {str(path)!r}")
        seq = pp.Sequence()
        seq.read(str(path))
    else:
        seq = source
    pulses: list[RfPulse] = []
    readouts: list[Readout] = []
    shots: list[Shot] = []
    labels: dict[str, int] = {}
    t = 0.0
    for index in sorted(seq.block_events):
        block = seq.get_block(index)
        for event in (getattr(block, "label", None) or {}).values():
            if event.type == "labelset":
                labels[event.label] = int(event.value)
            else:
                labels[event.label] = labels.get(event.label, 0) + int(event.value)
        if block.rf is not None:
            pulse = RfPulse(t + pulse_centre_s(block.rf), pulse_flip_deg(block.rf), str(getattr(block.rf, "use", "")),
                            index)
            pulses.append(pulse)
            if pulse.use != "inversion":
                shots.append(Shot(pulse))
        if block.adc is not None:
            adc = block.adc
            start = t + float(adc.delay)
            readout = Readout(start, start + 0.5 * int(adc.num_samples) * float(adc.dwell), int(adc.num_samples),
                              float(adc.dwell), dict(labels), index)
            readouts.append(readout)
            if shots and not labels.get("NOISE") and (not pulses or pulses[-1].use != "inversion"):
                shots[-1].readouts.append(readout)
        t += float(block.block_duration)
    return SequenceReadback(pulses, readouts, shots, dict(seq.definitions), t)
