"""``drone simulate-scan OUT.h5``: a simulated MRF scan as an ISMRMRD file — image frames, or raw EPI k-space.

The phantom (:mod:`drone_core.phantoms`: MNI152 brain slices or the NIST system phantom), the schedule
and the transmit field (``--b1``, :func:`drone_gadgets.scans.b1.phantom_b1`) are chosen here; the file
is written by :func:`drone_gadgets.scans.images.write_phantom_scan` (image frames, what the gadget
receives from Gadgetron) or, with ``--raw``, :func:`drone_gadgets.scans.raw.write_raw_scan` (what a
scanner sends Gadgetron's GRAPPA EPI chain). It prints what it wrote, and how to reconstruct it
(:func:`client_commands`), to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drone_core.schedule import Schedule

from ..recon.settings import FRAME_COUNTER_FIELDS
from ..scans.b1 import phantom_b1
from ..scans.layout import B1_SERIES_INDEX, B1_VAR, FRAMES_VAR, truth_path

if TYPE_CHECKING:  # pragma: no cover
    from drone_core.phantoms import Phantom

__all__ = ["add_arguments", "run", "client_commands"]


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
    parser.add_argument("--no-truth", action="store_true", help="leave out the true maps (OUT_truth.h5 beside OUT.h5)")
    parser.add_argument("--group", default="dataset", help="dataset group in the file (default %(default)s)")
    parser.add_argument("--frame-counter", choices=FRAME_COUNTER_FIELDS, default="repetition",
                        help="image header counter holding the frame index (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    raw = parser.add_argument_group("raw k-space (--raw)", "what a scanner sends Gadgetron's GRAPPA EPI chain "
                                    "(xml_configs/drone_grappa_epi.xml); see drone_gadgets.scans.raw")
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
    from ..scans.raw import RawProtocol, write_raw_scan

    if args.complex or args.frame_counter != "repetition":
        raise ValueError("--raw: the raw scan numbers its frames by repetition and has no image frames; "
                         "drop --complex/--frame-counter")
    protocol = RawProtocol(n_coils=args.coils, acceleration=args.acceleration, calibration_lines=args.acs_lines,
                           ramp_sampling=args.ramp_sampling, ghost_shift=args.ghost_shift,
                           ghost_phase_rad=args.ghost_phase, noise_scan=not args.no_noise_scan)
    info = write_raw_scan(args.out, phantom, schedule, protocol=protocol, noise_level=args.noise, seed=args.seed,
                          b1=b1, with_truth=not args.no_truth, group=args.group, b1_description=b1_text,
                          overwrite=args.force)
    truth = f"; truth {', '.join(info.truth)} in {truth_path(info.path)}" if info.truth else ""
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

    from ..scans.images import write_phantom_scan

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
    truth = f"; truth {', '.join(info.truth)} in {truth_path(info.path)}" if info.truth else ""
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
    and python-ismrmrd-server's ``client.py`` (which takes the file's only group by itself: the truth is in a
    file of its own).

    Args:
        path: the file.
        group: the scan's group (the file's only one; kept for callers that name it).
        b1_maps: the file holds B1 maps (then: how to use them).
        port: the server's port (``drone serve``'s default, python-ismrmrd-server's too).
    """
    name = shlex.quote(str(path))
    stem = Path(path).stem
    out = shlex.quote(str(Path(path).with_name(f"{stem}_maps.h5")))
    lines = [f"reconstruct it: drone replay {name} {out}" + (" --b1 stream" if b1_maps else ""),
             f"  or, with `drone serve` running: drone send {name} {out}" + (" --set b1=stream" if b1_maps else ""),
             f"  or with python-ismrmrd-server's client: python client.py -p {port} -c drone_images "
             f"-o {out} {name}"]
    if b1_maps:
        lines.append("  (client.py sends the B1 maps after the frames; to use them, put a drone_images.json holding "
                     '{"parameters": {"b1": "stream"}} in the folder you run client.py from; without it they are '
                     'ignored)')
    return "\n".join(lines)
