"""Benchmark: the gadget's latency — from a slice's last frame to its maps — with frames paced like a scan.

Run from the repository root::

    .venv/bin/python benchmarks/bench_latency.py [--slices 20] [--size 128] [--pace 1.0] [--json OUT]

The gadget process is started as Gadgetron starts it (``python -m gadgetron <port> drone_gadgets.gadget
drone_mrf``, :class:`drone_gadgets.wire.loopback.Loopback`), given CONFIG and the header, and sent the frames of
a ``--slices``-slice scan (the phantom of ``bench_replay.py``) in the order a multi-slice acquisition makes
them: frame i of every slice within TR_i, slice after slice, each frame sent at its time
``TI + Σ_{j<i} TR_j + s·TR_i/n_slices`` scaled by ``--pace`` (1: the scanner's pace; 0: as fast as the
socket takes them). For each slice: the time from sending its last frame to receiving its first map and its
last map (T1, T2, M0), read on this side of the socket (so the transfer of the frame and of the maps is in).
Reports the distribution over slices and repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
from bench_replay import write_scan

from drone_core.schedule import default_schedule
from drone_gadgets.wire.loopback import IMAGE, Loopback, image_message


def frame_times(schedule, n_slices: int) -> np.ndarray:
    """``(n_frames, n_slices)`` seconds from the scan's start at which each slice's frame i is acquired."""
    tr = np.asarray(schedule.tr_ms) / 1e3
    starts = schedule.ti_ms / 1e3 + np.concatenate([[0.0], np.cumsum(tr)[:-1]])
    return starts[:, None] + tr[:, None] * (np.arange(n_slices)[None, :] + 1) / n_slices


def one_run(images: dict[tuple[int, int], ismrmrd.Image], header: bytes, n_slices: int, pace: float,
            settings: dict[str, str]) -> dict[str, list[float]]:
    schedule = default_schedule()
    when = frame_times(schedule, n_slices) * pace
    first_map: dict[int, float] = {}
    last_map: dict[int, float] = {}
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def on_message(mid: int, item) -> None:
        if mid != IMAGE:
            return
        now = time.perf_counter()
        s = int(item.slice)
        with lock:
            first_map.setdefault(s, now)
            counts[s] = counts.get(s, 0) + 1
            last_map[s] = now

    messages = {key: image_message(img) for key, img in images.items()}
    sent_last: dict[int, float] = {}
    with Loopback.spawn(forward_log=False, on_message=on_message) as lb:
        lb.handshake(settings, header)
        start = time.perf_counter()
        for i in range(schedule.n_frames):
            for s in range(n_slices):
                delay = start + when[i, s] - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                lb.send(messages[(s, i)])
                if i == schedule.n_frames - 1:
                    sent_last[s] = time.perf_counter()
        lb.send_close()
        reply = lb.finish()
    if reply.errors:
        raise RuntimeError(f"the gadget failed: {reply.errors}")
    if sorted(counts) != list(range(n_slices)) or set(counts.values()) != {3}:
        raise RuntimeError(f"expected 3 maps for each of {n_slices} slices, got {counts}")
    return {"first_map_ms": [1e3 * (first_map[s] - sent_last[s]) for s in range(n_slices)],
            "all_maps_ms": [1e3 * (last_map[s] - sent_last[s]) for s in range(n_slices)]}


def describe(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "max": float(arr.max()),
            "min": float(arr.min()), "n": int(arr.size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--pace", type=float, default=1.0, help="1: the scan's own timing; 0: no waiting")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "scan.h5"
        write_scan(src, args.slices, args.size)
        dataset = ismrmrd.Dataset(str(src), "dataset", False)
        header = dataset.read_xml_header()
        images = {}
        for k in range(dataset.number_of_images("image_1")):
            img = dataset.read_image("image_1", k)
            images[(int(img.slice), int(img.repetition))] = img
        dataset.close()
    runs = [one_run(images, header, args.slices, args.pace, {"device": args.device}) for _ in range(args.repeats)]
    first = [v for r in runs for v in r["first_map_ms"]]
    whole = [v for r in runs for v in r["all_maps_ms"]]
    out = {"slices": args.slices, "size": args.size, "pace": args.pace, "repeats": args.repeats,
           "first_map_ms": describe(first), "all_maps_ms": describe(whole), "runs": runs}
    for name in ("first_map_ms", "all_maps_ms"):
        d = out[name]
        print(f"{name:14s} median {d['median']:.1f} ms, p90 {d['p90']:.1f}, max {d['max']:.1f}, min {d['min']:.1f} "
              f"(n = {d['n']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
