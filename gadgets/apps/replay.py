"""Replay an ISMRMRD ``.h5`` file through the ``drone_mrf`` gadget, exactly as Gadgetron runs it.

``drone replay IN.h5 OUT.h5`` reads the images (the magnitude frames of an MRF scan) of one group
of ``IN.h5`` (:mod:`drone_gadgets.apps.inputs`), starts the real gadget process the way Gadgetron
starts an ``<external>`` node (``python -m gadgetron <port> drone_gadgets.gadget drone_mrf``,
:mod:`drone_gadgets.wire.loopback`), sends it CONFIG (the settings as the chain's
``<configuration>``), the file's XML header, the images and CLOSE, and writes the T1/T2/M0 map
images it sends back into ``OUT.h5`` the way Gadgetron's client stores them
(``/<group>/image_<image_series_index>``, :mod:`drone_gadgets.apps.outputs`). Optionally it also
writes one PNG per slice and one NIfTI file per map.

B1 maps: a scan may carry its B1 map as its own image var (``drone simulate-scan`` writes
``image_5``: series 5, meta ``DRONE_Map`` = ``B1``). With the property ``b1=stream`` the vars whose
images are all of series ``b1_series_index`` are the B1 maps: they are sent first, then the frames
(so no slice waits for its B1 map). With any other ``b1`` the vars of images marked as B1 maps
(``DRONE_Map`` = ``B1``) are not sent (they are not frames). Given ``variables`` are sent as given.

Nothing is written unless the gadget succeeds: a failure it reports (a schedule mismatch, a
missing frame …) raises :class:`~drone_gadgets.wire.loopback.GadgetError` with the gadget's own
message, and ``OUT.h5`` is left as it was.

Python::

    from drone_gadgets.apps.replay import replay
    result = replay("scan.h5", "maps.h5", settings={"device": "cpu"}, png_dir="png")
    print(result.summary())
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..recon.settings import parse_property_args, settings_from_properties
from .inputs import open_input, stream_module
from .outputs import write_outputs

__all__ = [
    "ReplayResult",
    "replay",
    "progress_bar",
    "add_arguments",
    "run",
    "PROGRESS_MIN_FRAMES",
]

log = logging.getLogger(__name__)

#: The progress bar is shown for inputs of at least this many frames (2 slices of 25).
PROGRESS_MIN_FRAMES = 50
_IMAGE = 1022  # message id of an image


@dataclass
class ReplayResult:
    """What :func:`replay` did.

    Attributes:
        in_path, out_path: the files.
        group: the input group replayed; out_group: the group written.
        frames: images sent to the gadget.
        maps: images received (and written).
        slices: slices with maps.
        series: ``{var name: images}`` written, e.g. ``{"image_100": 20, …}``.
        seconds: wall time of the whole replay (reading, gadget, writing, figures).
        gadget_seconds: from starting the gadget process to its exit (interpreter, imports, model).
        stream_seconds: from the first frame sent to the gadget's CLOSE.
        png_files, nifti_files: extra outputs.
        gadget_log: the gadget process's stderr.
        b1_images: of the images sent, the B1 map images (``b1=stream``).
        raw: ``frames`` counts raw acquisitions (``drone send`` of raw data), not images.
    """

    in_path: Path
    out_path: Path
    group: str
    out_group: str
    frames: int
    maps: int
    slices: int
    series: dict[str, int]
    seconds: float
    gadget_seconds: float
    stream_seconds: float
    png_files: list[Path] = field(default_factory=list)
    nifti_files: list[Path] = field(default_factory=list)
    gadget_log: str = ""
    b1_images: int = 0
    raw: bool = False

    @property
    def slices_per_second(self) -> float:
        """Slices reconstructed per second of :attr:`seconds`."""
        return self.slices / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """A one-paragraph report for people."""
        vars_ = ", ".join(f"{name} ({n})" for name, n in self.series.items()) or "no images"
        sent = (f"{self.frames - self.b1_images} frames and {self.b1_images} B1 map images" if self.b1_images
                else f"{self.frames} raw acquisitions" if self.raw else f"{self.frames} frames")
        lines = [f"replayed {sent} of /{self.group} in {self.in_path}: {self.slices} slice(s) in "
                 f"{self.seconds:.2f} s ({self.slices_per_second:.1f} slices/s; gadget process "
                 f"{self.gadget_seconds:.2f} s, streaming {self.stream_seconds:.2f} s)",
                 f"wrote {self.maps} map images to {self.out_path} /{self.out_group}: {vars_}"]
        if self.png_files:
            lines.append(f"wrote {len(self.png_files)} PNG(s) to {self.png_files[0].parent}")
        if self.nifti_files:
            lines.append(f"wrote {len(self.nifti_files)} NIfTI file(s): {', '.join(str(p) for p in self.nifti_files)}")
        return "\n".join(lines)


def progress_bar(total: int, enabled: bool, desc: str = "replay") -> Any:
    """A tqdm bar on stderr for ``total`` frames (disabled below :data:`PROGRESS_MIN_FRAMES`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=not enabled or total < PROGRESS_MIN_FRAMES, leave=False, mininterval=0.2)


def replay(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, group: str | None = None,
           settings: Mapping[str, str] | None = None, png_dir: str | os.PathLike[str] | None = None,
           nifti_dir: str | os.PathLike[str] | None = None, progress: bool = True,
           variables: Sequence[str] | None = None, out_group: str | None = None,
           env: Mapping[str, str] | None = None, stall_timeout_s: float | None = None) -> ReplayResult:
    """Replay the images of ``in_path`` through the ``drone_mrf`` gadget; write the maps to ``out_path``.

    Args:
        in_path: an ISMRMRD ``.h5`` with the frames as images (any group, standard layout).
        out_path: the ``.h5`` to write (replaced when the replay succeeds, untouched otherwise).
        group: the input group; None: the only group holding images.
        settings: the gadget's properties (``{"estimator": "dictionary", "device": "cpu", …}``,
            see :data:`drone_gadgets.recon.settings.PROPERTIES`), sent as its ``<configuration>``.
        png_dir: write one PNG per slice there (needs matplotlib).
        nifti_dir: write one NIfTI file per map there (needs nibabel).
        progress: show a progress bar on stderr (for inputs of :data:`PROGRESS_MIN_FRAMES` frames or more).
        variables: the image vars of ``group`` to send (default all, in natural order).
        out_group: the output group (default: ``group``).
        env: extra environment variables for the gadget process.
        stall_timeout_s: fail when the gadget makes no progress for this long (default
            :data:`drone_gadgets.wire.loopback.STALL_TIMEOUT_S`).

    Returns:
        a :class:`ReplayResult`.

    Raises:
        FileNotFoundError, H5FormatError: the input file, group or vars.
        SettingsError: an unknown property or invalid value (checked before the gadget starts).
        ImportError: ismrmrd/h5py missing, or PNG/NIfTI output without matplotlib/nibabel.
        ValueError: the file's ISMRMRD header does not parse, or ``out_path`` is ``in_path``.
        GadgetError: the gadget reported an error (its message in ``gadget_message``).
        LoopbackError: the gadget process failed otherwise (its log in ``stderr``).
    """
    t0 = time.perf_counter()
    loopback = stream_module("loopback")
    properties = {str(k): str(v) for k, v in (settings or {}).items()}
    parsed = settings_from_properties(properties)  # fail fast, before any process starts
    source = open_input(in_path, out_path, group=group, variables=variables, png_dir=png_dir, nifti_dir=nifti_dir,
                        settings=parsed)
    loopback.check_header(source.header)

    received = [0]
    lock = threading.Lock()

    def on_message(mid: int, body: Any) -> None:
        if mid == _IMAGE:
            with lock:
                received[0] += 1

    bar = progress_bar(source.n_frames, progress)
    shown = [0]

    def on_sent(count: int) -> None:
        bar.update(1)
        if received[0] != shown[0]:
            shown[0] = received[0]
            bar.set_postfix_str(f"{shown[0]} maps", refresh=False)

    try:
        run_result = loopback.run_gadget(
            source.header, source.images(), properties, env=env, on_sent=on_sent, on_message=on_message,
            stall_timeout_s=loopback.STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s)
    finally:
        bar.close()
    out = write_outputs(run_result.images, out_path, header=source.header, settings=parsed,
                        out_group=out_group or source.group, png_dir=png_dir, nifti_dir=nifti_dir)
    return ReplayResult(source.path, Path(out_path), source.group, out.group, run_result.sent, len(run_result.images),
                        out.slices, out.series, time.perf_counter() - t0, run_result.seconds,
                        run_result.stream_seconds, out.png_files, out.nifti_files, run_result.stderr, source.n_b1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``drone replay``'s arguments to ``parser``."""
    parser.add_argument("input", type=Path, metavar="IN.h5", help="ISMRMRD file with the MRF frames as images")
    parser.add_argument("output", type=Path, metavar="OUT.h5",
                        help="ISMRMRD file to write the maps to (/<group>/image_<series>; replaced)")
    parser.add_argument("--group", help="input group (default: the only group holding frames; groups of DRONE "
                                        "maps only, such as <group>_truth, are set aside)")
    parser.add_argument("--var", action="append", dest="variables", metavar="NAME",
                        help="image var of the group to send (repeatable; default: all)")
    parser.add_argument("--out-group", help="output group (default: the input group)")
    parser.add_argument("--model", help="DRONE model file (.safetensors) instead of the shipped one")
    parser.add_argument("--estimator", choices=("network", "dictionary"), help="network (DRONE) or dictionary matching")
    parser.add_argument("--b1", metavar="MODE",
                        help="the property b1: none, stream (the file's B1 map var, series b1_series_index, is sent "
                             "first), estimate or file:<path> (docs/GADGET.md, B1 maps)")
    parser.add_argument("--png", type=Path, metavar="DIR", help="write one PNG of the maps per slice into DIR")
    parser.add_argument("--nifti", type=Path, metavar="DIR",
                        help="write one NIfTI file per map into DIR (needs nibabel)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="properties",
                        help="a gadget property, as in the chain's <configuration> (repeatable), e.g. --set device=cpu "
                             "--set mask_threshold=0.1")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _properties(args: argparse.Namespace) -> dict[str, str]:
    return parse_property_args(args.properties, {name: getattr(args, name, None)
                                                 for name in ("model", "estimator", "b1")})


def run(args: argparse.Namespace) -> int:
    """Run ``drone replay`` from parsed arguments; 0 on success, 1 when the gadget or its process failed.

    Argument and input errors raise ValueError/OSError (the CLI prints them); gadget failures are
    printed here with the gadget's message.
    """
    try:
        loopback = stream_module("loopback")
    except ImportError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 2
    GadgetError, LoopbackError = loopback.GadgetError, loopback.LoopbackError
    try:
        result = replay(args.input, args.output, group=args.group, settings=_properties(args), png_dir=args.png,
                        nifti_dir=args.nifti, progress=not args.quiet, variables=args.variables,
                        out_group=args.out_group)
    except GadgetError as exc:
        print(f"drone replay: {exc.gadget_message}", file=sys.stderr)
        return 1
    except LoopbackError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"drone replay: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drone_gadgets.apps.replay IN.h5 OUT.h5 …`` (the same as ``drone replay``)."""
    parser = argparse.ArgumentParser(prog="drone replay", description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"drone replay: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
