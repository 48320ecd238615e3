"""Benchmark: ``drone replay`` of a 20-slice 128×128 MRF scan (25 frames per slice) end to end.

The whole replay path is timed: reading the ISMRMRD ``.h5``, starting the gadget process as
Gadgetron does (``python -m gadgetron <port> drone_gadgets.gadget drone_mrf``: interpreter, torch
import, model load), streaming the 500 frames over loopback TCP, the network on every slice, the
maps back, and writing the output ``.h5``. The goal: the 20 slices of a 3-s multi-slice acquisition
reconstructed in under 3 s.

Run (quiet machine)::

    .venv/bin/python benchmarks/bench_replay.py [--slices 20] [--size 128] [--repeats 3] [--device cpu]
        [--estimator network] [--command] [--json OUT]

``--command`` also times the whole ``drone replay IN OUT`` command as a user runs it (its own interpreter
start and imports included, not only the gadget process's).

The input is simulated with the normative signal model (``drone_core.epg.simulate``, default
schedule) on a phantom of WM/GM/CSF-like disks on a zero background, written with ``ismrmrd.Dataset``
(``/dataset/image_1``, repetition = frame index, slice = slice index, the schedule in the header).
Reports, per run, the total seconds and slices/s, the gadget process's lifetime (start to exit)
and the streaming time (first frame sent to CLOSE received).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ismrmrd
import numpy as np

from drone_core.epg import simulate
from drone_core.schedule import default_schedule
from drone_gadgets.apps.replay import replay

#: (T1 ms, T2 ms, M0) of the phantom's compartments.
TISSUES = ((830.0, 80.0, 0.7), (1330.0, 110.0, 0.85), (3000.0, 1500.0, 1.0))


def phantom(size: int, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t1_ms, t2_ms, m0)`` of shape ``(size, size)``: a CSF-like disk holding a GM ring and a WM core."""
    y, x = np.mgrid[:size, :size]
    r = np.hypot(y - size / 2 + 0.5 + shift, x - size / 2 + 0.5) / (size / 2)
    labels = np.full((size, size), -1)
    labels[r < 0.9] = 2
    labels[r < 0.7] = 1
    labels[r < 0.4] = 0
    table = np.asarray(TISSUES)
    fg = labels >= 0
    return tuple(np.where(fg, table[labels.clip(0), k], 0.0) for k in range(3))  # type: ignore[return-value]


def header_xml(schedule, size: int, n_slices: int) -> bytes:
    space = (f"<matrixSize><x>{size}</x><y>{size}</y><z>1</z></matrixSize>"
             f"<fieldOfView_mm><x>240</x><y>240</y><z>5</z></fieldOfView_mm>")
    seq = ("<sequenceParameters>" + "".join(f"<TR>{v!r}</TR>" for v in schedule.tr_ms)
           + f"<TE>{schedule.te_ms!r}</TE><TI>{schedule.ti_ms!r}</TI>"
           + "".join(f"<flipAngle_deg>{v!r}</flipAngle_deg>" for v in schedule.flip_angle_deg)
           + "</sequenceParameters>")
    return ('<?xml version="1.0"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
            f"</experimentalConditions><encoding><encodedSpace>{space}</encodedSpace><reconSpace>{space}"
            f"</reconSpace><encodingLimits><slice><minimum>0</minimum><maximum>{n_slices - 1}</maximum>"
            f"<center>0</center></slice></encodingLimits><trajectory>epi</trajectory></encoding>{seq}"
            "</ismrmrdHeader>").encode()


def write_scan(path: Path, n_slices: int, size: int) -> None:
    schedule = default_schedule()
    dataset = ismrmrd.Dataset(str(path), "dataset", True)
    try:
        dataset.write_xml_header(header_xml(schedule, size, n_slices))
        for s in range(n_slices):
            t1, t2, m0 = phantom(size, s % 5 - 2)
            fg = m0 > 0
            pairs, inverse = np.unique(np.stack([t1[fg], t2[fg]], axis=1), axis=0, return_inverse=True)
            signals = np.abs(np.asarray(simulate(schedule, pairs[:, 0], pairs[:, 1])))[np.ravel(inverse)]
            frames = np.zeros((schedule.n_frames, size, size), dtype=np.float32)
            frames[:, fg] = (signals * (1000.0 * m0[fg])[:, None]).T
            for r in range(schedule.n_frames):
                h = ismrmrd.ImageHeader()
                h.version, h.data_type, h.channels = 1, ismrmrd.DATATYPE_FLOAT, 1
                h.matrix_size[0], h.matrix_size[1], h.matrix_size[2] = size, size, 1
                h.field_of_view[0], h.field_of_view[1], h.field_of_view[2] = 240.0, 240.0, 5.0
                h.position[2] = 6.0 * s
                h.read_dir[0], h.phase_dir[1], h.slice_dir[2] = 1.0, 1.0, 1.0
                h.slice, h.repetition = s, r
                h.image_type, h.image_series_index, h.image_index = 1, 1, r + 1
                dataset.append_image("image_1", ismrmrd.Image(head=h, data=frames[r][None, None]))
    finally:
        dataset.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="the gadget's device property (cpu, cuda, auto)")
    p.add_argument("--estimator", default="network", choices=("network", "dictionary"))
    p.add_argument("--command", action="store_true",
                   help="also time the whole `drone replay` command (a new interpreter per run)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "scan.h5", Path(tmp) / "maps.h5"
        t = time.perf_counter()
        write_scan(src, args.slices, args.size)
        print(f"input: {args.slices} slices × 25 frames of {args.size}×{args.size} float32 "
              f"({src.stat().st_size / 2**20:.1f} MiB), written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        commands = []
        if args.command:  # the whole `drone replay` command: its own interpreter start too
            drone = Path(sys.executable).with_name("drone")
            for _ in range(args.repeats):
                t = time.perf_counter()
                subprocess.run([str(drone), "replay", str(src), str(dst), "--set", f"device={args.device}",
                                "--set", f"estimator={args.estimator}"], check=True, capture_output=True)
                commands.append(time.perf_counter() - t)
            print(f"`drone replay` command: median {statistics.median(commands):.2f} s, best {min(commands):.2f} s",
                  file=sys.stderr)
        runs = []
        for i in range(args.repeats):
            result = replay(src, dst, settings={"device": args.device, "estimator": args.estimator}, progress=False)
            runs.append({"seconds": result.seconds, "slices_per_second": result.slices_per_second,
                         "gadget_seconds": result.gadget_seconds, "stream_seconds": result.stream_seconds})
            print(f"run {i + 1}: {result.seconds:.2f} s total, {result.slices_per_second:.1f} slices/s (gadget "
                  f"process {result.gadget_seconds:.2f} s, streaming {result.stream_seconds:.2f} s)", file=sys.stderr)
            assert result.slices == args.slices and result.maps == 3 * args.slices, result.summary()
    summary = {
        "slices": args.slices, "size": args.size, "frames": 25, "device": args.device, "estimator": args.estimator,
        "cpu_count": os.cpu_count(), "runs": runs, "command_seconds": commands,
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "best_seconds": min(r["seconds"] for r in runs),
    }
    summary["median_slices_per_second"] = args.slices / summary["median_seconds"]
    goal = ""
    if args.slices == 20:  # the goals: the 20 slices of a 3-s multi-slice acquisition in < 3 s, then ≤ 1.5 s
        med = summary["median_seconds"]
        goal = (f"; goals (20 slices < 3 s; ≤ 1.5 s): {'met' if med < 3 else 'NOT met'}; "
                f"{'met' if med <= 1.5 else 'NOT met'}")
    print(f"median {summary['median_seconds']:.2f} s for {args.slices} slices "
          f"({summary['median_slices_per_second']:.1f} slices/s); best {summary['best_seconds']:.2f} s{goal}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
