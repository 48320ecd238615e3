"""Fig. 4: the numerical brain phantom reconstructed by the network and by dictionary matching.

One 128 × 128 slice of the MNI152-derived WM/GM/CSF phantom with BrainWeb's 1.5 T values (the
paper used the BrainWeb phantom), frames of the normative signal model (default schedule), then
complex Gaussian noise with σ = level × the brightest noise-free magnitude (:mod:`drone_core.noise`;
"peak SNR" = 1/level). Both estimators go through :func:`drone_core.reconstruct.reconstruct` (the
gadget's path): the shipped network, and matching against the paper dictionary (79,900 atoms,
the network's training set). RMSE over the brain's voxels, noise-free and at each level (paper,
noise-free: 3.5 ms T1, 7.8 ms T2). Figures: true, estimated and |error| maps noise-free (the
paper's Fig. 4) and RMSE against SNR.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.matching import Matcher
from drone_core.metrics import rmse
from drone_core.model import default_model
from drone_core.phantoms import brain_phantom, simulate_frames
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule

from .common import Context

__all__ = ["run", "FULL_LEVELS", "QUICK_LEVELS"]

FULL_LEVELS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.05)
QUICK_LEVELS = (0.0, 0.01)


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    phantom = brain_phantom(1, (64, 64) if ctx.quick else (128, 128), values="brainweb")
    truth = phantom.maps()
    brain = phantom.labels[0] > 0
    model = default_model(device=ctx.device)
    matcher = Matcher(Dictionary.generate(schedule, *paper_grid()), device=ctx.device)
    rows = []
    shown: dict[str, Any] = {}
    for i, level in enumerate(QUICK_LEVELS if ctx.quick else FULL_LEVELS):
        frames = simulate_frames(phantom, schedule, level, seed=ctx.seed + i)[:, 0]
        row: dict[str, Any] = {"noise_level": level, "peak_snr": (1.0 / level) if level else None}
        for name, estimator in (("network", model), ("matching", matcher)):
            maps = reconstruct(frames, estimator, mask_threshold=0.0)
            row[name] = {"t1_rmse": rmse(truth["t1"][0][brain], maps.t1[brain]),
                         "t2_rmse": rmse(truth["t2"][0][brain], maps.t2[brain])}
            if level == 0.0:
                shown[name] = maps
        rows.append(row)
        ctx.log(f"brain, noise {level:.2%}: RMSE T1/T2 network {row['network']['t1_rmse']:.1f}/"
                f"{row['network']['t2_rmse']:.1f} ms, matching {row['matching']['t1_rmse']:.1f}/"
                f"{row['matching']['t2_rmse']:.1f} ms")
    _plot_maps(ctx, truth, shown["network"], brain, rows[0])
    _plot_snr(ctx, rows)
    return {"phantom": phantom.name, "matrix": list(brain.shape), "brain_voxels": int(brain.sum()),
            "tissues": {t.name: [t.t1_ms, t.t2_ms, t.m0] for t in phantom.tissues.values()},
            "dictionary_atoms": matcher.n_atoms, "rows": rows}


def _plot_maps(ctx: Context, truth: dict[str, np.ndarray], maps: Any, brain: np.ndarray, row: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for r, (key, label, vmax, emax) in enumerate((("t1", "T1", 3000, 25), ("t2", "T2", 400, 10))):
        true = np.where(brain, truth[key][0], 0)
        est = np.where(brain, getattr(maps, key), 0)
        for c, (image, title, top, cmap) in enumerate(((true, f"true {label}", vmax, "viridis"),
                                                        (est, f"DRONE {label}", vmax, "viridis"),
                                                        (np.abs(true - est), f"|error| {label}", emax, "magma"))):
            ax = axes[r, c]
            im = ax.imshow(image, vmin=0, vmax=top, cmap=cmap)
            ax.set_title(title + (f" (RMSE {row['network'][key + '_rmse']:.1f} ms)" if c == 2 else ""), fontsize=9)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046, label="ms")
    fig.suptitle("Fig. 4: brain phantom (BrainWeb values), noise-free, the shipped network")
    fig.tight_layout()
    ctx.save_figure(fig, "brain_maps")


def _plot_snr(ctx: Context, rows: list[dict[str, Any]]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    noisy = [r for r in rows if r["noise_level"] > 0]
    if not noisy:
        return
    snr = [r["peak_snr"] for r in noisy]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "t1_rmse", "T1"), (axes[1], "t2_rmse", "T2")):
        for name, marker in (("network", "o-"), ("matching", "s--")):
            ax.loglog(snr, [r[name][key] for r in noisy], marker, label=name)
        ax.set_xticks(snr)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peak SNR (1 / noise level)")
        ax.set_ylabel(f"{label} RMSE over the brain (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Brain phantom: RMSE against SNR")
    fig.tight_layout()
    ctx.save_figure(fig, "brain_snr")
