"""Fig. 5: training-dictionary density vs reconstruction error, the network against matching.

For each sub-sampling factor the paper dictionary is sub-sampled (a uniform random subset per
repetition, :data:`METHOD`), a
network is trained on the sparse atoms and both it and dictionary matching against the *same*
sparse atoms reconstruct the full dictionary with 0.5 % noise (:func:`drone_training.density.density_experiment`;
every network gets the same number of optimiser steps). Reported per factor: mean ± sd over the
repetitions of the T1 and T2 RMSE of each estimator, and the least-squares line through the
network's mean RMSE against the factor with its R² (paper: 0.94 for T1, 0.89 for T2).

Full: the paper grid (79,900 atoms), factors 2, 5, 10, 20, 40, 60, 10 repetitions each, the
paper network (25-300-300-2) for 7,800 steps each (50 epochs of the full dictionary; the shipped
model had 46,800). Quick: a 70 × 70 log grid (3,920 atoms), a 64-64 network, 3,000 steps, factors
10, 30, 60, 2 repetitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drone_core.dictionary import Dictionary, grid, paper_grid
from drone_core.schedule import default_schedule

from ..density import density_experiment
from ..train import TrainConfig
from .common import Context, linear_fit

__all__ = ["run", "FULL_FACTORS", "QUICK_FACTORS", "METHOD"]

#: How each repetition's sparse dictionary is drawn: a uniform random subset (seed 1000·factor +
#: repetition). Stride sub-sampling of the T1-major grid aliases with its rows: at factor 40 it
#: left regions of the (T1, T2) plane without atoms and both estimators' T1 RMSE tripled (network
#: 98.9 ± 23.5 ms, matching 319.3 ± 12.1 ms against 33.3 / 124.4 ms at factor 60).
METHOD = "random"

FULL_FACTORS = (2, 5, 10, 20, 40, 60)
QUICK_FACTORS = (10, 30, 60)


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    factors: tuple[int, ...]
    if ctx.quick:
        t1, t2, _ = grid((100, 4000), (10, 1500), n_t1=70, n_t2=70, spacing="log")
        full = Dictionary.generate(schedule, t1, t2)
        factors, repetitions, steps = QUICK_FACTORS, 2, 3000
        config = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", noise_level=0.02, noise_mode="uniform",
                             device=ctx.device, hidden=(64, 64), val_size=256)
    else:
        full = Dictionary.generate(schedule, *paper_grid())
        factors, repetitions, steps = FULL_FACTORS, 10, 7800
        config = TrainConfig(batch_size=512, lr=1e-3, lr_schedule="onecycle", noise_level=0.02, noise_mode="uniform",
                             device=ctx.device)
    torch.manual_seed(ctx.seed)
    rows = density_experiment(full, factors, repetitions=repetitions, steps=steps, config=config, method=METHOD,
                              log=True)
    per_factor = []
    for f in factors:
        sel = [r for r in rows if r["fold"] == f]
        entry: dict[str, Any] = {"factor": f, "n_train": sel[0]["n_train"], "repetitions": len(sel)}
        for key in ("nn_t1_rmse", "nn_t2_rmse", "dm_t1_rmse", "dm_t2_rmse"):
            values = np.array([r[key] for r in sel])
            entry[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        per_factor.append(entry)
    fits = {m: linear_fit(factors, [e[f"nn_{m}_rmse"]["mean"] for e in per_factor]) for m in ("t1", "t2")}
    nn_wins = all(e[f"nn_{m}_rmse"]["mean"] < e[f"dm_{m}_rmse"]["mean"] for e in per_factor for m in ("t1", "t2"))
    _plot(ctx, per_factor, fits)
    return {"dictionary_atoms": len(full), "factors": list(factors), "repetitions": repetitions, "steps": steps,
            "subsampling": METHOD,
            "test_noise": 0.005, "network": list(config.hidden), "per_factor": per_factor, "nn_linear_fit": fits,
            "nn_beats_matching_at_every_factor": nn_wins,
            "training_seconds_total": float(sum(r["seconds"] for r in rows)), "rows": rows}


def _plot(ctx: Context, per_factor: list[dict[str, Any]], fits: dict[str, dict[str, float]]) -> None:
    import matplotlib.pyplot as plt

    x = np.array([e["factor"] for e in per_factor])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, m, label in ((axes[0], "t1", "T1"), (axes[1], "t2", "T2")):
        for key, name, marker in ((f"nn_{m}_rmse", "DRONE network", "o"), (f"dm_{m}_rmse", "dictionary matching", "s")):
            mean = np.array([e[key]["mean"] for e in per_factor])
            sd = np.array([e[key]["sd"] for e in per_factor])
            ax.errorbar(x, mean, yerr=sd, marker=marker, capsize=3, label=name, linestyle="none")
        fit = fits[m]
        ax.plot(x, fit["slope"] * x + fit["intercept"], "C0--", lw=0.8,
                label=f"linear fit of the network, R² {fit['r2']:.2f}")
        ax.set_xlabel("dictionary sub-sampling factor")
        ax.set_ylabel(f"{label} RMSE (ms), 0.5 % noise")
        ax.set_title(f"{label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 5: training-dictionary density (mean ± sd over repetitions)")
    fig.tight_layout()
    ctx.save_figure(fig, "density")
