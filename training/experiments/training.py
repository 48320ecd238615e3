"""Figs. 2 and 3: the training curve, and the training atoms reconstructed by the trained network.

Full: the shipped model's recipe on the paper dictionary (79,900 atoms of the default schedule;
300 epochs, batch 512, Adam 1e-3 with a one-cycle schedule, noise U(0, 2 %) — the command in the
README), so the network this trains is the shipped one (same seed, same machine: the same
weights). Quick: 30 epochs on every 10th atom. Reported: the cost per epoch (training and
validation) and RMSE, bias and R² of T1 and T2 over all noise-free atoms (paper: RMSE 9.3/8.8 ms,
bias 10/2.2 ms, R² 0.99).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.schedule import default_schedule

from ..train import TrainConfig, evaluate, plot_loss_curve, plot_scatter, train
from .common import Context

__all__ = ["run", "SHIPPED_RECIPE"]

#: The shipped model's training settings (README, docs/MODEL.md).
SHIPPED_RECIPE = TrainConfig(epochs=300, batch_size=512, lr=1e-3, lr_schedule="onecycle", noise_level=0.02,
                             noise_mode="uniform")


def run(ctx: Context) -> dict[str, Any]:
    full = Dictionary.generate(default_schedule(), *paper_grid())
    if ctx.quick:
        atoms = full.subsample(10)
        config = replace(SHIPPED_RECIPE, epochs=30, batch_size=256, lr=3e-3, val_size=1024, seed=ctx.seed,
                         device=ctx.device, t1_range_ms=(float(full.t1_ms.min()), float(full.t1_ms.max())),
                         t2_range_ms=(float(full.t2_ms.min()), float(full.t2_ms.max())))
    else:
        atoms = full
        config = replace(SHIPPED_RECIPE, seed=ctx.seed, device=ctx.device)
    result = train(atoms, config, progress=False, log=True)
    metrics = evaluate(result.model, full)
    curve = ctx.out / "training_curve.png"
    plot_loss_curve(result, curve)
    scatter = ctx.out / "training_scatter.png"
    plot_scatter(result.model, full, metrics, scatter)
    ctx.figures += [curve, scatter]
    return {"training_atoms": len(atoms), "evaluated_atoms": len(full), "epochs": result.epochs_run,
            "train_seconds": result.seconds, "train_loss": result.train_loss, "val_loss": result.val_loss,
            "t1_ms": metrics["t1_ms"], "t2_ms": metrics["t2_ms"],
            "config": {k: getattr(config, k) for k in ("epochs", "batch_size", "lr", "lr_schedule", "noise_level",
                                                       "noise_mode", "seed")}}
