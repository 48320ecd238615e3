"""Benchmark: the full ``reconstruct`` of a 128×128×25 slice (every voxel, M0 included) through the shipped
model, against dictionary matching of the same slice — in one run, so the ratios hold on a noisy machine.

Run from the repository root::

    .venv/bin/python benchmarks/bench_reconstruct.py [--repeats 20] [--threads N] [--b1-voxels 2048]
        [--system-allocator] [--json OUT]

What is timed (median of ``--repeats`` after warm-up; float32, CPU, ``torch.set_num_threads(--threads)``):

* ``reconstruct, M0 table`` — :func:`drone_core.reconstruct.reconstruct` with ``mask_threshold=0`` (every
  voxel) and a B1 map, the shipped model with its M0 table (:mod:`drone_core.atom_norms`);
* ``reconstruct, M0 per-voxel fit`` — the same model without the table (M0 by simulating each voxel's atom);
* ``predict`` — the network alone (no M0);
* ``matching, paper grid`` — :class:`drone_core.matching.Matcher` over the 79,900-atom paper dictionary
  (with the slice profile, B1 = 1), all 16,384 voxels;
* ``matching, paper grid × B1`` — over the paper grid × B1 0.70:0.05:1.30 (1,038,700 atoms) searched
  whole (B1 estimated too), timed on ``--b1-voxels`` voxels and scaled to the slice (the search is linear in
  the voxels).

The slice: paper-grid atoms drawn at random, each at a random B1 in 0.8–1.2, 0.5 % noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch
from timing import runs


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    return statistics.median(runs(fn, repeats, warmup))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--b1-voxels", type=int, default=2048)
    p.add_argument("--system-allocator", action="store_true",
                   help="leave glibc's malloc as it is (by default the process keeps freed blocks for reuse, as the "
                        "gadget's does: drone_core.hardware.keep_freed_memory)")
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from drone_core.hardware import keep_freed_memory

    kept = False if args.system_allocator else keep_freed_memory()

    from drone_core.dictionary import Dictionary, paper_grid
    from drone_core.epg import simulate
    from drone_core.matching import Matcher
    from drone_core.model import DroneModel, default_model
    from drone_core.reconstruct import reconstruct
    from drone_core.schedule import default_schedule

    schedule = default_schedule()
    model = default_model()
    no_table = DroneModel(model.network, model.schedule, model.t1_range_ms, model.t2_range_ms, model.training,
                          model.version, model.target_transform, model.b1, None)
    t1g, t2g = paper_grid()
    rng = np.random.default_rng(0)
    pick = rng.choice(t1g.size, 128 * 128, replace=False)
    b1 = rng.uniform(0.8, 1.2, pick.size)
    cplx = np.asarray(simulate(schedule, t1g[pick], t2g[pick], b1))
    noisy = cplx + 0.005 * np.abs(cplx).max(axis=1, keepdims=True) * (rng.standard_normal(cplx.shape)
                                                                       + 1j * rng.standard_normal(cplx.shape))
    signals = np.abs(noisy).astype(np.float32)
    frames = np.ascontiguousarray(signals.T.reshape(schedule.n_frames, 128, 128))
    b1_map = b1.reshape(128, 128)
    out: dict[str, object] = {"threads": torch.get_num_threads(), "load_before": os.getloadavg(),
                              "keep_freed_memory": kept, "model": model.network.architecture()}
    times: dict[str, float] = {}
    times["reconstruct, M0 table"] = timed(lambda: reconstruct(frames, model, mask_threshold=0, b1=b1_map),
                                           args.repeats)
    times["reconstruct, M0 per-voxel fit"] = timed(lambda: reconstruct(frames, no_table, mask_threshold=0, b1=b1_map),
                                                   max(3, args.repeats // 5), warmup=1)
    times["predict"] = timed(lambda: model.predict(signals, b1), args.repeats)
    d = Dictionary.generate(schedule, t1g, t2g)
    matcher = Matcher(d)
    times["matching, paper grid"] = timed(lambda: matcher.match(signals), 3, warmup=1)
    b1_axis = np.round(np.arange(0.70, 1.30 + 1e-9, 0.05), 2)
    tt1, bb = np.meshgrid(t1g, b1_axis)
    tt2, _ = np.meshgrid(t2g, b1_axis)
    t0 = time.perf_counter()
    big = Dictionary.generate(schedule, tt1.ravel(), tt2.ravel(), bb.ravel())
    out["b1_dictionary_seconds"] = time.perf_counter() - t0
    out["b1_dictionary_atoms"] = len(big)
    big_matcher = Matcher(big)
    part = signals[: args.b1_voxels]
    part_s = timed(lambda: big_matcher.match(part), 1, warmup=1)
    times["matching, paper grid × B1"] = part_s * signals.shape[0] / part.shape[0]
    base = times["reconstruct, M0 table"]
    out["seconds"] = times
    out["ratio_to_reconstruct_with_table"] = {k: v / base for k, v in times.items()}
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
