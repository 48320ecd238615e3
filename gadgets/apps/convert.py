"""``drone convert RAW.dat OUT.h5 --seq SEQ``: a scanner's raw data of a Pulseq acquisition as ISMRMRD raw data.

:func:`drone_gadgets.scans.convert.convert` does the work (module docstring there: what comes from the
sequence, how the readouts are flagged, the reference scan for sequences without navigators); this module is
the command. The output goes to Gadgetron's EPI chain (``drone send OUT.h5 maps.h5 --config-file
xml_configs/drone_grappa_epi.xml`` for an MRF scan, or ``gadgetron_ismrmrd_client -f OUT.h5 …``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``drone convert``."""
    parser.add_argument("raw", type=Path, metavar="RAW.dat", help="Siemens twix raw data of a Pulseq acquisition")
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="the ISMRMRD raw file to write")
    parser.add_argument("--seq", type=Path, required=True, metavar="SEQ", help="the Pulseq file that ran")
    parser.add_argument("--reference", type=Path, metavar="NOPE.dat",
                        help="the same sequence played without phase encoding: its first three readouts become the "
                             "odd/even correction's navigators (for a sequence without navigators)")
    parser.add_argument("--group", default="dataset", help="the output group (default %(default)s)")
    parser.add_argument("--field-strength", type=float, default=3.0, metavar="T",
                        help="B0 for the header, tesla (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success. Input errors raise ValueError/OSError (the CLI prints them)."""
    from ..scans.convert import convert

    info = convert(args.raw, args.out, args.seq, reference_path=args.reference, group=args.group,
                   field_strength_t=args.field_strength, overwrite=args.force)
    print(f"wrote {info.path}: {info.n_acquisitions} acquisitions ({info.n_navigators} navigators from "
          f"{info.navigators_from}, {info.n_reference} ACS, {info.n_noise} noise), {info.n_coils} coils, matrix "
          f"{info.matrix[0]}×{info.matrix[1]} over {info.fov_mm[0]:g}×{info.fov_mm[1]:g} mm", file=sys.stderr)
    if info.n_navigators == 0:
        print("drone convert: warning: no navigators (the sequence has none and no --reference was given): "
              "Gadgetron's EPICorrGadget returns nothing without them", file=sys.stderr)
    return 0
