"""Table 1: ROI mean ± sd of WM, GM and CSF, from a brain phantom with realistic spread and noise.

Three 128 × 128 slices of the MNI152-derived phantom with the paper's Table 1 values and a
per-voxel Gaussian spread of each tissue's Table 1 sd (:func:`drone_core.phantoms.brain_phantom`,
``spread=True``), frames of the normative signal model with 1 % complex noise, reconstructed by
the shipped network and by matching against the paper dictionary. ROIs: every voxel of a tissue
(the phantom has no partial volume). Reported per tissue: the truth's mean ± sd (the spread), each
estimator's, and the paper's in vivo values (WM 663 ± 30 / 83 ± 7.9, GM 1110 ± 59 / 96 ± 13,
CSF 3799 ± 422 / 870 ± 191 ms). Quick: one 64 × 64 slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.matching import Matcher
from drone_core.model import default_model
from drone_core.phantoms import brain_phantom, simulate_frames
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule

from .common import PAPER, Context

__all__ = ["run", "NOISE_LEVEL"]

NOISE_LEVEL = 0.01


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1))}


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    phantom = brain_phantom(1 if ctx.quick else 3, (64, 64) if ctx.quick else (128, 128), values="paper",
                            spread=True, seed=ctx.seed)
    truth = phantom.maps()
    frames = simulate_frames(phantom, schedule, NOISE_LEVEL, seed=ctx.seed)  # (N, z, y, x)
    estimators = {"network": default_model(device=ctx.device),
                  "matching": Matcher(Dictionary.generate(schedule, *paper_grid()), device=ctx.device)}
    slices: dict[str, dict[str, list[np.ndarray]]] = {name: {"t1": [], "t2": []} for name in estimators}
    for z in range(phantom.labels.shape[0]):
        for name, estimator in estimators.items():
            maps = reconstruct(frames[:, z], estimator, mask_threshold=0.0)
            slices[name]["t1"].append(maps.t1)
            slices[name]["t2"].append(maps.t2)
    estimates = {n: {k: np.stack(v) for k, v in e.items()} for n, e in slices.items()}
    rows = {}
    for label, tissue in sorted(phantom.tissues.items()):
        roi = phantom.labels == label
        row: dict[str, Any] = {"voxels": int(roi.sum()), "paper": dict(zip(("t1_mean", "t1_sd", "t2_mean", "t2_sd"),
                                                                           PAPER["table1"][tissue.name]))}
        row["truth"] = {"t1": _stats(truth["t1"][roi]), "t2": _stats(truth["t2"][roi])}
        for name in estimators:
            row[name] = {"t1": _stats(estimates[name]["t1"][roi]), "t2": _stats(estimates[name]["t2"][roi])}
        rows[tissue.name] = row
        ctx.log(f"{tissue.name}: truth T1 {row['truth']['t1']['mean']:.0f} ± {row['truth']['t1']['sd']:.0f}, network "
                f"{row['network']['t1']['mean']:.0f} ± {row['network']['t1']['sd']:.0f}, matching "
                f"{row['matching']['t1']['mean']:.0f} ± {row['matching']['t1']['sd']:.0f}; T2 truth "
                f"{row['truth']['t2']['mean']:.1f} ± {row['truth']['t2']['sd']:.1f}, network "
                f"{row['network']['t2']['mean']:.1f} ± {row['network']['t2']['sd']:.1f}")
    _plot(ctx, rows)
    return {"slices": int(phantom.labels.shape[0]), "matrix": list(phantom.labels.shape[1:]),
            "noise_level": NOISE_LEVEL, "tissues": rows}


def _plot(ctx: Context, rows: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.2
    for ax, p, label in ((axes[0], "t1", "T1"), (axes[1], "t2", "T2")):
        x = np.arange(len(names))
        sources = (("paper", "0.6"), ("truth", "C2"), ("network", "C0"), ("matching", "C1"))
        for i, (source, colour) in enumerate(sources):
            if source == "paper":
                mean = [rows[n]["paper"][f"{p}_mean"] for n in names]
                sd = [rows[n]["paper"][f"{p}_sd"] for n in names]
            else:
                mean = [rows[n][source][p]["mean"] for n in names]
                sd = [rows[n][source][p]["sd"] for n in names]
            ax.bar(x + (i - 1.5) * width, mean, width, yerr=sd, capsize=2, color=colour,
                   label="paper (in vivo)" if source == "paper" else source)
        ax.set_xticks(x, names)
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} ROI mean ± sd (ms)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Table 1: ROI values, phantom with the paper's tissue spread and 1 % noise")
    fig.tight_layout()
    ctx.save_figure(fig, "table1")
