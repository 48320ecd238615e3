"""Benchmark: every compute path on one device — meant for a GPU (``--device cuda``), runs on a CPU too.

Run from the repository root::

    .venv/bin/python benchmarks/bench_device.py --device cuda [--repeats 20] [--json OUT]
    .venv/bin/python benchmarks/bench_device.py --device cpu --quick     # the same paths, small, as a check

What is timed on ``--device`` (median of ``--repeats`` after warm-up; every call returns numpy arrays, so the
device is synchronised inside each timed call):

* ``dictionary`` — :meth:`drone_core.dictionary.Dictionary.generate` of the paper grid (79,900 atoms), ideal
  slice and with the default schedule's slice profile (24 positions);
* ``predict`` — the shipped model, a 128 × 128 slice (16,384 fingerprints), ``precision="fp32"`` and ``"auto"``;
* ``reconstruct`` — :func:`drone_core.reconstruct.reconstruct` of the slice, every voxel, M0 and a B1 map;
* ``matching`` — :class:`drone_core.matching.Matcher` over the paper dictionary, the same slice;
* ``training`` — the shipped recipe (:mod:`drone_training.train`, the training atoms simulated on the device
  first, timed separately) for ``--epochs`` epochs.

``--quick``: every 16th atom of the paper grid, 1,024 voxels, a 20,000-atom training set, 2 epochs, 3 repeats —
checks that every path runs on the device (``tests/test_device_paths.py``); its figures are not the benchmark.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from timing import runs


def timed(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(runs(fn, repeats, warmup=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args()
    from drone_core.dictionary import Dictionary, paper_grid
    from drone_core.hardware import cpu_model, keep_freed_memory
    from drone_core.matching import Matcher
    from drone_core.model import default_model
    from drone_core.noise import add_noise
    from drone_core.reconstruct import reconstruct
    from drone_core.schedule import default_schedule
    from drone_training.train import TrainConfig, train, training_dictionary

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_device: --device cuda but torch.cuda.is_available() is False (no GPU here)", file=sys.stderr)
        return 2
    keep_freed_memory()
    repeats = 3 if args.quick else args.repeats
    side = 32 if args.quick else 128
    schedule = default_schedule()
    t1, t2 = paper_grid()
    if args.quick:  # every 16th atom of the paper grid
        t1, t2 = t1[::16], t2[::16]
    out: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                           "cpu": cpu_model(), "threads": torch.get_num_threads(), "quick": args.quick}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    times: dict[str, float] = {}
    times["dictionary, ideal slice (s)"] = timed(
        lambda: Dictionary.generate(schedule.ideal(), t1, t2, device=device), repeats)
    times["dictionary, slice profile (s)"] = timed(lambda: Dictionary.generate(schedule, t1, t2, device=device),
                                                   max(1, repeats // 4))
    paper = Dictionary.generate(schedule, t1, t2, device=device)

    rng = np.random.default_rng(0)
    pick = rng.choice(len(paper), side * side)
    b1 = rng.uniform(0.8, 1.2, side * side)
    from drone_core.epg import simulate

    clean = np.asarray(simulate(schedule, paper.t1_ms[pick], paper.t2_ms[pick], b1, device=device))
    noisy = add_noise(clean, 0.005, generator=np.random.default_rng(1))
    frames = (np.asarray(noisy).T.reshape(schedule.n_frames, side, side) * 1000.0).astype(np.float32)
    b1_map = b1.reshape(side, side)
    model = default_model(device=device)
    signals = np.ascontiguousarray(frames.reshape(schedule.n_frames, -1).T)
    for precision in ("fp32", "auto"):
        times[f"predict, {precision} (ms)"] = 1e3 * timed(
            lambda: model.predict(signals, b1, precision=precision), repeats)  # type: ignore[arg-type]
    times["reconstruct, every voxel, M0, B1 map (ms)"] = 1e3 * timed(
        lambda: reconstruct(frames, model, mask_threshold=0.0, b1=b1_map), repeats)
    matcher = Matcher(paper, device=device)
    times["matching, paper grid (ms)"] = 1e3 * timed(lambda: matcher.match(signals), max(1, repeats // 4))
    times["matching ÷ reconstruct"] = (times["matching, paper grid (ms)"]
                                       / times["reconstruct, every voxel, M0, B1 map (ms)"])
    maps = reconstruct(frames, model, mask_threshold=0.0, b1=b1_map)
    out["reconstruct_median_error_pct"] = [float(np.median(np.abs(maps.t1.ravel() / paper.t1_ms[pick] - 1)) * 100),
                                           float(np.median(np.abs(maps.t2.ravel() / paper.t2_ms[pick] - 1)) * 100)]

    start = time.perf_counter()
    if args.quick:
        sub = rng.choice(t1.size, 2500, replace=t1.size < 2500)
        atoms = Dictionary.generate(schedule, np.repeat(t1[sub], 8), np.repeat(t2[sub], 8),
                                    rng.uniform(0.5, 1.5, 8 * sub.size), device=device)
    else:
        atoms = training_dictionary(schedule, b1_draws=8, b1_range=(0.5, 1.5), extra_atoms=40000,
                                    extra_t1_range_ms=(10.0, 1000.0), extra_t2_range_ms=(5.0, 600.0), seed=0,
                                    device=device)
    times["training atoms (s)"] = time.perf_counter() - start
    hidden = tuple(model.network.architecture()["hidden"])
    config = TrainConfig(epochs=2 if args.quick else args.epochs, batch_size=1024, lr=2e-3, lr_schedule="onecycle",
                         noise_level=0.0075, noise_mode="uniform", hidden=hidden, b1_input=True, b1_range=(0.5, 1.5),
                         relative_knee_ms=(500.0, 200.0), t1_range_ms=(1.0, 5000.0), t2_range_ms=(1.0, 2000.0),
                         device=str(device), seed=0)
    result = train(atoms, config, progress=False, log=False)
    times[f"training, {config.epochs} epochs (s)"] = result.seconds
    out["training_atoms"] = len(atoms)
    out["training_val_loss"] = result.val_loss[-1]
    out["times"] = times
    for key, value in times.items():
        print(f"{key:48s} {value:10.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
