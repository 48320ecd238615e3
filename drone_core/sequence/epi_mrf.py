"""The EPI-MRF sequence as a Pulseq file: the acquisition the signal model describes, for a real scanner.

:func:`build_sequence` writes, with pypulseq, the sequence of ``DESIGN.md``'s signal model for a
schedule (:class:`drone_core.schedule.Schedule`) and an :class:`EpiMrfProtocol`:

1. once, a **noise scan**: ``noise_lines`` ADC readouts without RF (label ``NOISE``);
2. per slice, one after another (see "Several slices" below):

   * an **adiabatic inversion** (hyperbolic secant; B1-insensitive above its threshold, so the model's
     single inversion efficiency holds over a 3 T head's B1 range), then a crusher, then **TI** from the
     inversion pulse's centre to the first excitation's centre;
   * per frame *i*: the **slice-selective excitation** the schedule's ``excitation`` declares — the
     same apodized sinc (pypulseq's ``make_sinc_pulse``: the same window and time-bandwidth product) —
     of flip angle α_i, RF phase 0 (no RF spoiling); the slice-select rephaser with the readout
     prephaser; a delay that makes **TE** (excitation centre → the centre of k-space) exact; the
     ``n_navigators`` phase-correction navigators (readouts without phase encoding, polarity +, −, +);
     the **single-shot EPI** train of every ``acceleration``-th line (the centre line ny/2 among them,
     ascending, odd echoes reversed), its phase blips split across the lobes' ramps; then the readout
     and phase-encode **rewinders** (every in-plane moment back to 0) with **one constant spoiler**
     moment along z (``spoiler_cycles`` cycles across the slice thickness), and a delay that makes the
     frame's **TR** (excitation centre → next excitation centre) exact. That is the FISP-like EPG model:
     one dephasing order per TR, the same in every TR;
   * after the last frame's TR, the **ACS reference** of the slice: a separate excitation and a fully
     sampled EPI of the ``calibration_lines`` central lines with its own navigators (label ``REF``),
     for GRAPPA's kernel (Gadgetron's ``calibrationMode`` ``separate``). It comes after the frames so
     that it does not disturb the magnetisation the model starts from; a converter puts it first.

Every ADC carries Pulseq labels (``LIN`` line, ``SLC`` slice, ``REP`` frame, ``NAV``, ``REV``, ``REF``,
``NOISE``), so raw data is flagged without guessing; ``[DEFINITIONS]`` carry what an ISMRMRD header
needs (field of view, matrix, the readout's trapezoid and ADC, the schedule and its digest).

Readout: a ramp-sampled trapezoid at the gradient limit, the ADC window centred on the lobe and
clear of the blips; the dwell time gives ``oversampling`` samples per pixel on the flat top. Timing
(TE, TR, TI) is exact to the 10 µs block raster; a schedule the system cannot run is refused with the
minimum it needs (:class:`TimingError`).

Several slices
--------------
One after another: each slice its own inversion, frames and ACS. The estimator knows one schedule,
so every slice must see the same TI and TRs — interleaving the frames of several slices after one
inversion would give each slice another TI. With several slices the inversion is slice-selective
(a slab ``inversion_slab`` × the slice thickness, so the excitation's transition bands are inverted
too), and slices are spaced by at least that slab (``slice_spacing_mm``), so that no slice is touched
before its own inversion: each starts from equilibrium, as the model does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoding.epi import calibration_line_count, calibration_lines, undersampled_lines
from ..schedule import Schedule
from .gradient_system import GradientSystem, gradient_system

if TYPE_CHECKING:  # pragma: no cover
    import pypulseq as pp

__all__ = ["EpiMrfProtocol", "ReadoutDesign", "SequenceTiming", "TimingError", "build_sequence", "write_sequence",
           "SEQUENCE_NAME", "LABELS"]

#: ``[DEFINITIONS] Name`` of the sequences written here.
SEQUENCE_NAME = "drone_epi_mrf"
#: The Pulseq labels every ADC carries.
LABELS = ("LIN", "SLC", "REP", "NAV", "REV", "REF", "NOISE")
_APODIZATION = {"hann": 0.5, "hamming": 0.46, "none": 0.0}
#: Duration of the hard (block) 180° inversion, s.
_HARD_INVERSION_S = 1e-3


class TimingError(ValueError):
    """The schedule asks for a TE, TR or TI shorter than the sequence needs; the message names the minimum."""


@dataclass(frozen=True)
class EpiMrfProtocol:
    """How the slices are imaged (everything but the schedule).

    Attributes:
        matrix: ``(ny, nx)`` reconstructed matrix.
        fov_mm: ``(fov_y, fov_x)``, mm.
        slice_thickness_mm: the excitation's nominal slice thickness, mm.
        n_slices: slices, imaged one after another.
        slice_spacing_mm: centre-to-centre distance of the slices, mm (None: the inversion slab).
        acceleration: GRAPPA factor R (every R-th line).
        calibration_lines: ACS lines (None: 12·R; none at R = 1).
        n_navigators: phase-correction navigators per train (odd: +, −, +).
        oversampling: readout samples per pixel on the flat top.
        rf_duration_ms: the excitation pulse's duration, ms.
        inversion: ``"adiabatic"`` (a hyperbolic secant: B1-insensitive, the default) or ``"hard"`` (a 1 ms 180°
            block pulse, non-selective: exactly the model's instantaneous inversion for a simulator that plays
            each RF pulse as one rotation, such as MRzero; its efficiency falls with B1 as −cos(π·B1)).
        inversion_duration_ms: the adiabatic inversion's duration, ms.
        inversion_slab: slab of a slice-selective inversion, in slice thicknesses (several slices).
        spoiler_cycles: the constant z moment per TR, cycles of phase across the slice thickness.
        noise_lines: readouts of the noise scan (0: none).
        acs_flip_deg: flip angle of the ACS reference's excitation, degrees.
        system: the gradient system.
    """

    matrix: tuple[int, int] = (128, 128)
    fov_mm: tuple[float, float] = (256.0, 256.0)
    slice_thickness_mm: float = 5.0
    n_slices: int = 1
    slice_spacing_mm: float | None = None
    acceleration: int = 2
    calibration_lines: int | None = None
    n_navigators: int = 3
    oversampling: int = 2
    rf_duration_ms: float = 2.0
    inversion: str = "adiabatic"
    inversion_duration_ms: float = 10.0
    inversion_slab: float = 3.0
    spoiler_cycles: float = 8.0
    noise_lines: int = 32
    acs_flip_deg: float = 90.0
    system: GradientSystem = field(default_factory=gradient_system)

    def __post_init__(self) -> None:
        def integer(name: str, value: Any, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")

        def positive(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")

        if len(self.matrix) != 2:
            raise ValueError(f"matrix: expected (ny, nx), got {self.matrix!r}")
        for axis, n in zip("yx", self.matrix):
            integer(f"matrix ({axis})", n, 8)
            if n % 2:
                raise ValueError(f"matrix ({axis}): expected an even number of pixels, got {n}")
        if len(self.fov_mm) != 2:
            raise ValueError(f"fov_mm: expected (fov_y, fov_x), got {self.fov_mm!r}")
        for axis, v in zip("yx", self.fov_mm):
            positive(f"fov_mm ({axis})", v)
        for name in ("slice_thickness_mm", "rf_duration_ms", "inversion_duration_ms", "inversion_slab",
                     "spoiler_cycles", "acs_flip_deg"):
            positive(name, getattr(self, name))
        integer("n_slices", self.n_slices, 1)
        integer("acceleration", self.acceleration, 1)
        integer("n_navigators", self.n_navigators, 1)
        integer("oversampling", self.oversampling, 1)
        integer("noise_lines", self.noise_lines, 0)
        if self.n_navigators % 2 == 0:
            raise ValueError(f"n_navigators: expected an odd number (polarities +, −, +, …), got {self.n_navigators}")
        if self.calibration_lines is not None:
            integer("calibration_lines", self.calibration_lines, 2)
            if self.calibration_lines > self.matrix[0]:
                raise ValueError(f"calibration_lines: expected at most ny = {self.matrix[0]}, got "
                                 f"{self.calibration_lines}")
        if self.inversion not in ("adiabatic", "hard"):
            raise ValueError(f"inversion: expected 'adiabatic' or 'hard', got {self.inversion!r}")
        if self.inversion == "hard" and self.n_slices > 1:
            raise ValueError("inversion: 'hard' is non-selective; several slices need the slice-selective adiabatic "
                             "inversion")
        if self.inversion_slab < 1:
            raise ValueError(f"inversion_slab: expected ≥ 1 slice thickness, got {self.inversion_slab!r}")
        if self.acs_flip_deg > 180:
            raise ValueError(f"acs_flip_deg: expected ≤ 180°, got {self.acs_flip_deg!r}")
        if self.slice_spacing_mm is not None:
            positive("slice_spacing_mm", self.slice_spacing_mm)
            if self.n_slices > 1 and self.slice_spacing_mm < self.slab_mm - 1e-9:
                raise ValueError(f"slice_spacing_mm: {self.slice_spacing_mm:g} mm is less than the inversion slab "
                                 f"({self.slab_mm:g} mm = inversion_slab × slice thickness): a slice's inversion "
                                 f"would reach its neighbour before that one's own inversion")
        if not isinstance(self.system, GradientSystem):
            raise TypeError(f"system: expected a GradientSystem, got {type(self.system).__name__}")

    @property
    def n_calibration(self) -> int:
        """ACS lines acquired (0 at R = 1; default 12·R)."""
        return calibration_line_count(self.acceleration, self.calibration_lines)

    @property
    def slab_mm(self) -> float:
        """Thickness of the slice-selective inversion slab, mm."""
        return float(self.inversion_slab) * float(self.slice_thickness_mm)

    def slice_positions_mm(self) -> list[float]:
        """Slice centres along the slice direction, mm, centred on 0, in acquisition order."""
        spacing = self.slab_mm if self.slice_spacing_mm is None else float(self.slice_spacing_mm)
        return [(s - (self.n_slices - 1) / 2.0) * spacing for s in range(self.n_slices)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["system"] = asdict(self.system)
        return out


@dataclass(frozen=True)
class ReadoutDesign:
    """One EPI readout lobe as designed (times in µs; the ADC is centred on the lobe).

    Attributes:
        ramp_up_us, flat_top_us, ramp_down_us: the trapezoid.
        amplitude_hz_per_m: its flat-top amplitude (γ·G).
        n_samples, dwell_time_us: the ADC.
        adc_delay_us: from the lobe's start to the ADC window's start (pypulseq samples at the middle
            of each dwell: sample n at ``adc_delay_us + (n + ½)·dwell_time_us``).
        blip_us: duration of a phase blip (half of it at each end of a lobe).
        echo_spacing_us: lobe to lobe (= the lobe's duration).
    """

    ramp_up_us: float
    flat_top_us: float
    ramp_down_us: float
    amplitude_hz_per_m: float
    n_samples: int
    dwell_time_us: float
    adc_delay_us: float
    blip_us: float

    @property
    def echo_spacing_us(self) -> float:
        return self.ramp_up_us + self.flat_top_us + self.ramp_down_us


@dataclass(frozen=True)
class SequenceTiming:
    """The sequence's timing, as written (ms unless named otherwise).

    Attributes:
        te_ms, ti_ms: as realised (exact to the block raster).
        tr_ms: ``(N,)`` frame TRs as realised.
        min_te_ms, min_ti_ms: the shortest the readout allows.
        min_tr_ms: ``(N,)`` the shortest TR each frame allows at this TE.
        readout: the readout lobe.
        lines: the phase-encode lines of the train (kspace_encode_step_1), ascending.
        centre_echo: the index in the train of the centre line.
        duration_s: the whole sequence.
    """

    te_ms: float
    ti_ms: float
    tr_ms: tuple[float, ...]
    min_te_ms: float
    min_ti_ms: float
    min_tr_ms: tuple[float, ...]
    readout: ReadoutDesign
    lines: tuple[int, ...]
    centre_echo: int
    duration_s: float


# =========================================================================== helpers
def _ceil(t: float, raster: float) -> float:
    """``t`` rounded up to ``raster`` (both s), robust to float noise."""
    return math.ceil(t / raster - 1e-9) * raster


def _round(t: float, raster: float) -> float:
    return round(t / raster) * raster


def _labels(pp: Any, **values: int | bool) -> list[Any]:
    return [pp.make_label(type="SET", label=name, value=value) for name, value in values.items()]


class _Builder:
    """Builds the blocks of one sequence (times in s, gradients in Hz/m)."""

    def __init__(self, schedule: Schedule, protocol: EpiMrfProtocol) -> None:
        import pypulseq as pp

        self.pp = pp
        self.schedule = schedule
        self.protocol = protocol
        self.system = protocol.system.opts()
        self.raster = self.system.block_duration_raster
        ny, nx = protocol.matrix
        self.ny, self.nx = int(ny), int(nx)
        self.fov_y, self.fov_x = (v * 1e-3 for v in protocol.fov_mm)
        self.thickness = protocol.slice_thickness_mm * 1e-3
        self.dky, self.dkx = 1.0 / self.fov_y, 1.0 / self.fov_x
        self.readout = self._design_readout()
        self.lines = undersampled_lines(self.ny, protocol.acceleration)
        self.centre_echo = int(np.nonzero(self.lines == self.ny // 2)[0][0])
        self.acs = calibration_lines(self.ny, protocol.n_calibration) if protocol.n_calibration else None

    # ---------------------------------------------------------------- the readout
    def _design_readout(self) -> ReadoutDesign:
        s, p = self.system, self.protocol
        g_max, slew = s.max_grad, s.max_slew
        gr, ar = s.grad_raster_time, s.adc_raster_time
        # slew-limited: a triangle of the lobe's area peaks at √(area·slew); a higher amplitude only lengthens
        # the ramps
        g_top = min(g_max, math.sqrt(self.nx * self.dkx * slew))
        dwell = _ceil(1.0 / (p.oversampling * self.fov_x * g_top), ar)  # oversampling samples per pixel
        g = 1.0 / (p.oversampling * self.fov_x * dwell)
        ramp = _ceil(g / slew, gr)
        blip = self._blip_rise(p.acceleration * self.dky)
        if blip > ramp:
            ramp = blip
        # the sampled area (window clear of the blips, `blip` at each end) must be nx·Δk
        flat = max(0.0, _ceil(self.nx * self.dkx / g - ramp + blip ** 2 / ramp, gr))
        for _ in range(1000):
            if round((2 * ramp + flat) / gr) % 2:  # an even lobe in rasters: TE lands on the raster
                flat += gr
            lobe = 2 * ramp + flat
            # an even sample count whose window centres on the lobe with its start on the RF raster (Pulseq's
            # timing check wants ADC delays there): n·dwell a multiple of 2 RF rasters
            n = 2 * int(math.floor((lobe - 2 * blip) / (2 * dwell) + 1e-9))
            while n > 2 and abs(n * dwell / (2 * s.rf_raster_time)
                                - round(n * dwell / (2 * s.rf_raster_time))) > 1e-6:
                n -= 2
            delay = _round(0.5 * (lobe - n * dwell), s.rf_raster_time)
            sampled = (flat + ramp) - (delay ** 2 / ramp if delay < ramp else 2 * delay - ramp)
            amplitude = self.nx * self.dkx / sampled
            # the rounding of the window may ask a little more amplitude than designed: keep within the limits
            if amplitude > g_max * (1 - 1e-6):
                flat += gr
            elif amplitude / ramp > slew * (1 - 1e-6):
                ramp += gr
            else:
                break
        else:  # pragma: no cover - the loop lengthens the lobe until it fits
            raise TimingError("no readout lobe fits the gradient system")
        return ReadoutDesign(ramp * 1e6, flat * 1e6, ramp * 1e6, amplitude, n, round(dwell * 1e6, 4),
                             round(delay * 1e6, 4), 2 * blip * 1e6)

    def _blip_rise(self, area: float) -> float:
        """Rise time (s) of a triangular blip of ``area`` (1/m) at the slew limit."""
        s = self.system
        return _ceil(math.sqrt(area / s.max_slew), s.grad_raster_time)

    def _lobe(self, sign: int) -> Any:
        r = self.readout
        return self.pp.make_trapezoid("x", amplitude=sign * r.amplitude_hz_per_m, rise_time=r.ramp_up_us * 1e-6,
                                      flat_time=r.flat_top_us * 1e-6, fall_time=r.ramp_down_us * 1e-6,
                                      system=self.system)

    def _adc(self) -> Any:
        r = self.readout
        return self.pp.make_adc(num_samples=r.n_samples, dwell=r.dwell_time_us * 1e-6, delay=r.adc_delay_us * 1e-6,
                                system=self.system)

    @property
    def lobe_s(self) -> float:
        return self.readout.echo_spacing_us * 1e-6

    @property
    def lobe_area(self) -> float:
        r = self.readout
        return r.amplitude_hz_per_m * (r.flat_top_us + 0.5 * (r.ramp_up_us + r.ramp_down_us)) * 1e-6

    def _blips(self, area: float, first: bool, last: bool) -> Any | None:
        """The y gradient of one line's lobe: the falling half of the blip before it (unless ``first``) at
        its start and the rising half of the blip after it (unless ``last``) at its end; None for neither.
        The blips are triangles of ``area`` (1/m) at the slew limit, split at their peaks across lobes."""
        if first and last:
            return None
        rise = self._blip_rise(abs(area))
        peak = area / rise
        lobe = self.lobe_s
        times, amplitudes = [0.0], [0.0 if first else peak]
        if not first:
            times.append(rise)
            amplitudes.append(0.0)
        if not last:
            times += [lobe - rise, lobe]
            amplitudes += [0.0, peak]
        return self.pp.make_extended_trapezoid("y", times=np.array(times), amplitudes=np.array(amplitudes),
                                               system=self.system)

    # ---------------------------------------------------------------- pieces of a frame
    def excitation(self, flip_deg: float, position_m: float) -> tuple[Any, Any, Any]:
        """``(rf, gz, gz_rephaser)`` of the schedule's pulse at ``flip_deg``, for the slice at ``position_m``."""
        exc = self.schedule.excitation
        apodization = _APODIZATION[exc.apodization] if exc is not None else 0.5
        tbw = exc.time_bandwidth if exc is not None else 4.0
        rf, gz, gzr = self.pp.make_sinc_pulse(
            flip_angle=math.radians(flip_deg), duration=self.protocol.rf_duration_ms * 1e-3,
            slice_thickness=self.thickness, apodization=apodization, time_bw_product=tbw, system=self.system,
            return_gz=True, use="excitation", delay=self.system.rf_dead_time)
        rf.freq_offset = gz.amplitude * position_m
        rf.phase_offset = -2 * math.pi * rf.freq_offset * self.pp.calc_rf_center(rf)[0]
        return rf, gz, gzr

    def train_blocks(self, lines: np.ndarray, labels: dict[str, int | bool]) -> list[tuple[Any, ...]]:
        """The blocks of one shot after its excitation block: rephasers, navigators, prephasers, the echo
        train and the rewinders (without the spoiler, which :meth:`rewinders` adds)."""
        pp = self.pp
        blocks: list[tuple[Any, ...]] = []
        nav_sign = 1
        for k in range(self.protocol.n_navigators):
            blocks.append((self._lobe(nav_sign), self._adc(),
                           *_labels(pp, LIN=self.ny // 2, NAV=True, REV=nav_sign < 0, **labels)))
            nav_sign = -nav_sign
        # after the navigators kx is at +A/2 (an odd count); the train starts at −A/2 with a positive line
        step = int(lines[1] - lines[0]) if len(lines) > 1 else 1
        for j, line in enumerate(lines):
            sign = 1 if j % 2 == 0 else -1
            events: list[Any] = [self._lobe(sign), self._adc()]
            gy = self._blips(step * self.dky, first=j == 0, last=j == len(lines) - 1)
            if gy is not None:
                events.append(gy)
            blocks.append((*events, *_labels(pp, LIN=int(line), NAV=False, REV=sign < 0, **labels)))
        return blocks

    def prephasers(self, gz_rephaser: Any, first_line: int) -> tuple[Any, Any]:
        """``(block after the excitation: slice rephaser + readout prephaser for the navigators,
        block after the navigators: readout back to −A/2 + phase prephaser to ``first_line``)``."""
        pp = self.pp
        gx_nav = pp.make_trapezoid("x", area=-0.5 * self.lobe_area, system=self.system)
        gx_train = pp.make_trapezoid("x", area=-self.lobe_area, system=self.system)
        gy_pre = pp.make_trapezoid("y", area=(first_line - self.ny // 2) * self.dky, system=self.system)
        return (gz_rephaser, gx_nav), (gx_train, gy_pre)

    def rewinders(self, last_line: int, last_sign: int) -> tuple[Any, ...]:
        """Readout and phase-encode rewinders with the constant z spoiler."""
        pp = self.pp
        events: list[Any] = [pp.make_trapezoid("x", area=-last_sign * 0.5 * self.lobe_area, system=self.system),
                             pp.make_trapezoid("z", area=self.protocol.spoiler_cycles / self.thickness,
                                               system=self.system)]
        if last_line != self.ny // 2:
            events.append(pp.make_trapezoid("y", area=-(last_line - self.ny // 2) * self.dky, system=self.system))
        return tuple(events)

    def duration(self, *events: Any) -> float:
        return _ceil(self.pp.calc_duration(*events), self.raster)



# =========================================================================== the sequence
def build_sequence(schedule: Schedule, protocol: EpiMrfProtocol | None = None) -> tuple["pp.Sequence",
                                                                                        SequenceTiming]:
    """The EPI-MRF sequence of ``schedule`` under ``protocol`` (module docstring).

    Returns:
        ``(pypulseq Sequence, its timing)``; the sequence passes pypulseq's timing check.

    Raises:
        TimingError: TE, a TR or TI is shorter than the sequence needs (the message gives the minimum).
        ValueError, TypeError: a bad schedule or protocol.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
    protocol = EpiMrfProtocol() if protocol is None else protocol
    if not isinstance(protocol, EpiMrfProtocol):
        raise TypeError(f"protocol: expected EpiMrfProtocol, got {type(protocol).__name__}")
    b = _Builder(schedule, protocol)
    pp, raster = b.pp, b.raster
    lines = b.lines
    positions = [v * 1e-3 for v in protocol.slice_positions_mm()]

    # ---- the frame's fixed parts (the same for every frame and slice)
    rf0, gz0, gzr0 = b.excitation(float(schedule.flip_angle_deg[0]), 0.0)
    exc_block = b.duration(rf0, gz0)
    exc_centre = rf0.delay + pp.calc_rf_center(rf0)[0]
    pre_nav, pre_train = b.prephasers(gzr0, int(lines[0]))
    last_sign = 1 if (len(lines) - 1) % 2 == 0 else -1
    rewind = b.rewinders(int(lines[-1]), last_sign)
    d_pre_nav, d_pre_train, d_rewind = b.duration(*pre_nav), b.duration(*pre_train), b.duration(*rewind)
    lobe = b.lobe_s
    n_nav = protocol.n_navigators
    te_min = (exc_block - exc_centre) + d_pre_nav + n_nav * lobe + d_pre_train + b.centre_echo * lobe + 0.5 * lobe
    te = _round(schedule.te_ms * 1e-3, raster / 2)
    if te < te_min - 1e-9:
        raise TimingError(f"TE {schedule.te_ms:g} ms is shorter than this readout allows: at least "
                          f"{te_min * 1e3:.2f} ms ({protocol.matrix[0]}×{protocol.matrix[1]}, "
                          f"R = {protocol.acceleration}, {n_nav} navigators, echo spacing {lobe * 1e6:.0f} µs, "
                          f"system {protocol.system.describe()})")
    te_fill = _round(te - te_min, raster)
    frame_fixed = exc_block + d_pre_nav + te_fill + (n_nav + len(lines)) * lobe + d_pre_train + d_rewind
    tr = [_round(v * 1e-3, raster) for v in schedule.tr_ms]
    short = [(i, v) for i, v in enumerate(tr) if v < frame_fixed - 1e-9]
    if short:
        listing = ", ".join(f"frame {i}: {v * 1e3:g} ms" for i, v in short[:5])
        raise TimingError(f"TR too short for {len(short)} frame(s) ({listing}{' …' if len(short) > 5 else ''}): "
                          f"at TE {schedule.te_ms:g} ms a frame needs at least {frame_fixed * 1e3:.2f} ms")

    # ---- the inversion
    inv_kwargs: dict[str, Any] = dict(duration=protocol.inversion_duration_ms * 1e-3, system=b.system,
                                      delay=b.system.rf_dead_time)
    selective = protocol.n_slices > 1
    if selective:
        inv, gz_inv, _ = pp.make_adiabatic_pulse("hypsec", slice_thickness=protocol.slab_mm * 1e-3, return_gz=True,
                                                 **inv_kwargs)
        inv_events: tuple[Any, ...] = (inv, gz_inv)
    elif protocol.inversion == "hard":
        inv = pp.make_block_pulse(math.pi, duration=_HARD_INVERSION_S, system=b.system, use="inversion",
                                  delay=b.system.rf_dead_time)
        inv_events = (inv,)
    else:
        inv = pp.make_adiabatic_pulse("hypsec", **inv_kwargs)
        inv_events = (inv,)
    inv_block = b.duration(*inv_events)
    duration = _HARD_INVERSION_S if protocol.inversion == "hard" else protocol.inversion_duration_ms * 1e-3
    inv_centre = inv.delay + 0.5 * duration  # the symmetric pulse's centre
    crusher = (pp.make_trapezoid("z", area=4 * protocol.spoiler_cycles / b.thickness, system=b.system),
               pp.make_trapezoid("x", area=4 * protocol.spoiler_cycles / b.thickness, system=b.system))
    d_crusher = b.duration(*crusher)
    ti_min = (inv_block - inv_centre) + d_crusher + exc_centre
    ti = _round(schedule.ti_ms * 1e-3, raster / 2)
    if ti < ti_min - 1e-9:
        raise TimingError(f"TI {schedule.ti_ms:g} ms is shorter than the inversion allows: at least "
                          f"{ti_min * 1e3:.2f} ms (a {duration * 1e3:g} ms {protocol.inversion} pulse and its crusher)")
    ti_fill = _round(ti - ti_min, raster)

    # ---- write it
    seq = pp.Sequence(system=b.system)
    if protocol.noise_lines:
        for k in range(protocol.noise_lines):
            seq.add_block(b._adc(), pp.make_delay(lobe),
                          *_labels(pp, LIN=k, SLC=0, REP=0, NAV=False, REV=False, REF=False, NOISE=True))
        seq.add_block(pp.make_delay(raster), *_labels(pp, NOISE=False))
    for s, z in enumerate(positions):
        if selective:
            inv.freq_offset = gz_inv.amplitude * z
        seq.add_block(*inv_events)
        seq.add_block(*crusher)
        if ti_fill > 0:
            seq.add_block(pp.make_delay(ti_fill))
        for i, flip in enumerate(schedule.flip_angle_deg):
            rf, gz, _ = b.excitation(float(flip), z)
            seq.add_block(rf, gz)
            seq.add_block(*pre_nav)
            if te_fill > 0:
                seq.add_block(pp.make_delay(te_fill))
            frame_labels = dict(SLC=s, REP=i, REF=False, NOISE=False)
            navs = b.train_blocks(lines, frame_labels)
            for block in navs[:n_nav]:
                seq.add_block(*block)
            seq.add_block(*pre_train)
            for block in navs[n_nav:]:
                seq.add_block(*block)
            seq.add_block(*rewind)
            fill = tr[i] - frame_fixed
            if fill > raster / 2:
                seq.add_block(pp.make_delay(_round(fill, raster)))
        if b.acs is not None:
            _add_acs(seq, b, z, s)
    ok, report = seq.check_timing()
    if not ok:  # pragma: no cover - a design error, not a user error
        raise RuntimeError(f"the sequence fails pypulseq's timing check: {report[:3]}")
    r = b.readout
    timing = SequenceTiming(te_ms=(te_min + te_fill) * 1e3, ti_ms=(ti_min + ti_fill) * 1e3,
                            tr_ms=tuple(v * 1e3 for v in tr), min_te_ms=te_min * 1e3, min_ti_ms=ti_min * 1e3,
                            min_tr_ms=tuple([frame_fixed * 1e3] * schedule.n_frames), readout=r,
                            lines=tuple(int(v) for v in lines), centre_echo=b.centre_echo,
                            duration_s=float(sum(seq.block_durations.values())))
    _definitions(seq, schedule, protocol, timing)
    return seq, timing


def _add_acs(seq: Any, b: _Builder, z: float, s: int) -> None:
    """The slice's ACS reference: excitation, navigators and the calibration lines, then rewinders and spoiler."""
    pp = b.pp
    lines = b.acs
    assert lines is not None  # only called with ACS lines
    rf, gz, gzr = b.excitation(b.protocol.acs_flip_deg, z)
    seq.add_block(rf, gz)
    pre_nav, pre_train = b.prephasers(gzr, int(lines[0]))
    seq.add_block(*pre_nav)
    labels = dict(SLC=s, REP=0, REF=True, NOISE=False)
    blocks = b.train_blocks(lines, labels)
    n_nav = b.protocol.n_navigators
    for block in blocks[:n_nav]:
        seq.add_block(*block)
    seq.add_block(*pre_train)
    for block in blocks[n_nav:]:
        seq.add_block(*block)
    last_sign = 1 if (len(lines) - 1) % 2 == 0 else -1
    seq.add_block(*b.rewinders(int(lines[-1]), last_sign), *_labels(pp, REF=False))


def _definitions(seq: Any, schedule: Schedule, protocol: EpiMrfProtocol, timing: SequenceTiming) -> None:
    """``[DEFINITIONS]``: what an ISMRMRD header needs, and the schedule."""
    ny, nx = protocol.matrix
    r = timing.readout
    seq.set_definition("Name", SEQUENCE_NAME)
    seq.set_definition("FOV", [protocol.fov_mm[1] * 1e-3, protocol.fov_mm[0] * 1e-3,
                               protocol.slice_thickness_mm * 1e-3])
    seq.set_definition("MatrixSize", [int(nx), int(ny), 1])
    seq.set_definition("SliceThickness", protocol.slice_thickness_mm * 1e-3)
    seq.set_definition("SlicePositions", [v * 1e-3 for v in protocol.slice_positions_mm()])
    seq.set_definition("ReadoutOversamplingFactor", int(protocol.oversampling))
    seq.set_definition("AccelerationFactorPE", int(protocol.acceleration))
    seq.set_definition("CalibrationLines", int(protocol.n_calibration))
    seq.set_definition("Navigators", int(protocol.n_navigators))
    seq.set_definition("kSpaceCenterLine", int(ny) // 2)
    seq.set_definition("TE", timing.te_ms * 1e-3)
    seq.set_definition("TI", timing.ti_ms * 1e-3)
    seq.set_definition("TR", [v * 1e-3 for v in timing.tr_ms])
    seq.set_definition("FlipAngle", [float(v) for v in schedule.flip_angle_deg])
    seq.set_definition("Frames", int(schedule.n_frames))
    seq.set_definition("Slices", int(protocol.n_slices))
    seq.set_definition("MultiSlice", "sequential")
    seq.set_definition("RampUpTime", r.ramp_up_us * 1e-6)
    seq.set_definition("FlatTopTime", r.flat_top_us * 1e-6)
    seq.set_definition("RampDownTime", r.ramp_down_us * 1e-6)
    seq.set_definition("ReadoutAmplitude", r.amplitude_hz_per_m)
    seq.set_definition("NumSamples", int(r.n_samples))
    seq.set_definition("DwellTime", r.dwell_time_us * 1e-6)
    seq.set_definition("AdcDelay", r.adc_delay_us * 1e-6)
    seq.set_definition("EchoSpacing", r.echo_spacing_us * 1e-6)
    seq.set_definition("GradientSystem", protocol.system.describe().replace(" ", "_"))
    seq.set_definition("DRONE_schedule", json.dumps(schedule.to_dict(), separators=(",", ":")))
    seq.set_definition("DRONE_schedule_digest", schedule.digest())


def write_sequence(path: str | Path, schedule: Schedule, protocol: EpiMrfProtocol | None = None) -> SequenceTiming:
    """Build the sequence and write it as a Pulseq file (with its signature).

    Raises:
        FileNotFoundError: the folder does not exist; and the errors of :func:`build_sequence`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: the folder {str(path.parent)!r} does not exist")
    seq, timing = build_sequence(schedule, protocol)
    seq.write(str(path), check_timing=False)
    return timing
