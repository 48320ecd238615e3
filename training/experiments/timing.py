"""Speed (the paper's Results): the network against full and SVD-compressed matching per 128 × 128 slice.

A 128 × 128 × 25 slice of the brain phantom (1 % noise); each estimator is timed through
:func:`drone_core.reconstruct.reconstruct` (the gadget's path: estimate, M0) on all 16,384 voxels
(``mask_threshold=0``: the noisy background is estimated too, as in the paper) after a warm-up,
median of repeated runs: the shipped network, matching against the paper dictionary (79,900
atoms) and matching with SVD compression to rank 10 (:class:`drone_core.matching.Matcher`).
CPU always; CUDA as well when present. Paper: ~10 ms for the network, ~3 s for matching (~300×).
For benchmark-grade numbers (quiet machine, more repeats) see ``benchmarks/`` and docs/BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.matching import Matcher
from drone_core.model import default_model
from drone_core.phantoms import brain_phantom, simulate_frames
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule

from .common import Context

__all__ = ["run", "SVD_RANK"]

SVD_RANK = 10


def _median_seconds(fn: Any, repeats: int, sync: bool) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    frames = simulate_frames(brain_phantom(1, (128, 128)), schedule, 0.01, seed=ctx.seed)[:, 0]
    dictionary = Dictionary.generate(schedule, *paper_grid())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ctx.device != "cpu" else [])
    results: dict[str, Any] = {}
    for device in devices:
        estimators = {"network": default_model(device=device), "matching": Matcher(dictionary, device=device),
                      f"matching_svd{SVD_RANK}": Matcher(dictionary, device=device, svd_rank=SVD_RANK)}
        sync = device == "cuda"
        row = {}
        for name, estimator in estimators.items():
            repeats = (3 if ctx.quick else 20) if name == "network" else (1 if ctx.quick else 5)
            row[name] = _median_seconds(lambda e=estimator: reconstruct(frames, e, mask_threshold=0.0), repeats,
                                        sync) * 1e3
            ctx.log(f"{device}: {name} {row[name]:.1f} ms per slice")
        row["speed_up_vs_matching"] = row["matching"] / row["network"]
        row[f"speed_up_vs_matching_svd{SVD_RANK}"] = row[f"matching_svd{SVD_RANK}"] / row["network"]
        results[device] = row
    _plot(ctx, results)
    return {"slice": [25, 128, 128], "dictionary_atoms": len(dictionary), "svd_rank": SVD_RANK,
            "threads": torch.get_num_threads(), "ms_per_slice": results}


def _plot(ctx: Context, results: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    labels, values = [], []
    for device, row in results.items():
        for name in ("network", "matching", f"matching_svd{SVD_RANK}"):
            labels.append(f"{name}\n({device})")
            values.append(row[name])
    bars = ax.barh(labels, values, color=["C0", "C1", "C3"] * len(results))
    ax.set_xscale("log")
    ax.set_xlabel("ms per 128 × 128 × 25 slice (median)")
    for bar, v in zip(bars, values):
        ax.text(v, bar.get_y() + bar.get_height() / 2, f" {v:.0f} ms", va="center", fontsize=8)
    ax.set_title("Reconstruction time per slice")
    fig.tight_layout()
    ctx.save_figure(fig, "timing")
