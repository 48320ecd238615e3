"""``drone sequence OUT.seq``: the EPI-MRF sequence of a schedule as a Pulseq file, for a scanner.

Writes :func:`drone_core.sequence.epi_mrf.write_sequence`'s sequence and prints its timing (the
shortest TE, TR and TI this protocol allows at the chosen gradient system, and what was written) to
stderr. A schedule the system cannot run is refused with the minimum it needs (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``drone sequence``."""
    from drone_core.sequence.gradient_system import DEFAULT_SYSTEM, PRESETS

    parser.add_argument("out", type=Path, metavar="OUT.seq", help="the Pulseq file to write")
    parser.add_argument("--schedule", type=Path, metavar="JSON", help="schedule JSON (default: the package's)")
    parser.add_argument("--matrix", type=int, nargs=2, default=(128, 128), metavar=("ROWS", "COLS"),
                        help="reconstructed matrix ny nx (default 128 128)")
    parser.add_argument("--fov", type=float, nargs=2, default=(256.0, 256.0), metavar=("Y_MM", "X_MM"),
                        help="field of view, mm (default 256 256)")
    parser.add_argument("--slice-thickness", type=float, default=5.0, metavar="MM", help="mm (default 5)")
    parser.add_argument("--slices", type=int, default=1, help="slices, imaged one after another (default 1)")
    parser.add_argument("--slice-spacing", type=float, default=None, metavar="MM",
                        help="centre-to-centre slice distance, mm (default: the inversion slab, 3 × thickness)")
    parser.add_argument("--acceleration", type=int, default=2, help="GRAPPA factor R (default 2)")
    parser.add_argument("--acs-lines", type=int, default=None, help="ACS reference lines (default 12·R)")
    parser.add_argument("--navigators", type=int, default=3, help="phase-correction navigators per train (odd)")
    parser.add_argument("--oversampling", type=int, default=2, help="readout samples per pixel (default 2)")
    parser.add_argument("--rf-duration", type=float, default=2.0, metavar="MS", help="excitation pulse, ms")
    parser.add_argument("--inversion", choices=("adiabatic", "hard"), default="adiabatic",
                        help="adiabatic (hyperbolic secant, B1-insensitive; default) or hard (a 1 ms 180° block "
                             "pulse, non-selective, one slice: for simulators that play RF as one rotation)")
    parser.add_argument("--spoiler-cycles", type=float, default=8.0,
                        help="z spoiler moment per TR, cycles across the slice thickness (default 8)")
    parser.add_argument("--noise-lines", type=int, default=32, help="noise-scan readouts (0: none)")
    parser.add_argument("--system", choices=sorted(PRESETS), default=DEFAULT_SYSTEM,
                        help=f"gradient system preset (default {DEFAULT_SYSTEM}: 40 mT/m, 150 T/m/s)")
    parser.add_argument("--max-grad", type=float, default=None, metavar="MT_PER_M",
                        help="gradient amplitude limit, mT/m (overrides the preset's)")
    parser.add_argument("--max-slew", type=float, default=None, metavar="T_PER_M_PER_S",
                        help="slew-rate limit, T/m/s (overrides the preset's; derate for PNS)")
    parser.add_argument("--force", action="store_true", help="replace OUT.seq if it exists")


def run(args: argparse.Namespace) -> int:
    """Write the sequence; 0 on success, 2 on a refused schedule or protocol (the reason on stderr)."""
    from drone_core.schedule import Schedule, default_schedule
    from drone_core.sequence.epi_mrf import EpiMrfProtocol, TimingError, write_sequence
    from drone_core.sequence.gradient_system import gradient_system

    if args.out.exists() and not args.force:
        raise FileExistsError(f"{str(args.out)!r} exists (--force replaces it)")
    schedule = default_schedule() if args.schedule is None else Schedule.load(args.schedule)
    system = gradient_system(args.system, max_grad_mt_per_m=args.max_grad, max_slew_t_per_m_per_s=args.max_slew)
    protocol = EpiMrfProtocol(matrix=tuple(args.matrix), fov_mm=tuple(args.fov),
                              slice_thickness_mm=args.slice_thickness, n_slices=args.slices,
                              slice_spacing_mm=args.slice_spacing, acceleration=args.acceleration,
                              calibration_lines=args.acs_lines, n_navigators=args.navigators,
                              oversampling=args.oversampling, rf_duration_ms=args.rf_duration, inversion=args.inversion,
                              spoiler_cycles=args.spoiler_cycles, noise_lines=args.noise_lines, system=system)
    try:
        import pypulseq  # noqa: F401
    except ImportError as exc:
        print(f"drone sequence needs pypulseq: pip install 'drone-gadgetron[scanner]' ({exc})", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pypulseq's notes on raster rounding
            timing = write_sequence(args.out, schedule, protocol)
    except TimingError as exc:
        print(f"drone sequence: {exc}", file=sys.stderr)
        return 2
    r = timing.readout
    bandwidth = 1e6 / (r.dwell_time_us * r.n_samples)
    print(f"wrote {args.out}: schedule {schedule.name!r} ({schedule.digest()}), {schedule.n_frames} frames × "
          f"{protocol.n_slices} slice(s), {protocol.matrix[0]}×{protocol.matrix[1]} over "
          f"{protocol.fov_mm[0]:g}×{protocol.fov_mm[1]:g} mm, {protocol.slice_thickness_mm:g} mm slices, "
          f"R = {protocol.acceleration} ({len(timing.lines)} lines, {protocol.n_calibration} ACS lines), "
          f"system {system.describe()}\n"
          f"  TE {timing.te_ms:.2f} ms (minimum {timing.min_te_ms:.2f}), TI {timing.ti_ms:.2f} ms (minimum "
          f"{timing.min_ti_ms:.2f}), TR {min(timing.tr_ms):.2f}-{max(timing.tr_ms):.2f} ms (minimum "
          f"{timing.min_tr_ms[0]:.2f} at this TE)\n"
          f"  readout: echo spacing {r.echo_spacing_us:.0f} µs (ramps {r.ramp_up_us:.0f} µs, flat top "
          f"{r.flat_top_us:.0f} µs), {r.n_samples} samples of {r.dwell_time_us:g} µs ({bandwidth:.0f} Hz per pixel); "
          f"{timing.duration_s:.2f} s in all", file=sys.stderr)
    return 0
