"""Beyond the paper: how close the network and matching come to the Cramér–Rao bound, over SNR.

For WM, GM and CSF (the paper's Table 1 values) and each noise level: ``draws`` noisy fingerprints
(normative signal model, default schedule, complex Gaussian noise with σ = level × the
fingerprint's peak magnitude, :mod:`drone_core.noise`), estimated by the shipped network and by
matching against the paper dictionary. Reported: each estimator's mean, sd and RMSE of T1 and T2,
and √CRB at that σ (:func:`drone_core.crb.crb`, M0 estimated too). An unbiased estimator cannot
have sd below √CRB; a biased one can, so the RMSE is shown beside it. Figure: sd / √CRB against SNR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drone_core.crb import BRAIN_TISSUES_1P5T, crb
from drone_core.dictionary import Dictionary, paper_grid
from drone_core.epg import simulate
from drone_core.matching import Matcher
from drone_core.model import default_model
from drone_core.noise import add_noise
from drone_core.schedule import default_schedule

from .common import Context

__all__ = ["run", "FULL_LEVELS", "QUICK_LEVELS"]

FULL_LEVELS = (0.0025, 0.005, 0.01, 0.02, 0.05)
QUICK_LEVELS = (0.01, 0.05)


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    model = default_model(device=ctx.device)
    matcher = Matcher(Dictionary.generate(schedule, *paper_grid()), device=ctx.device)
    draws = 200 if ctx.quick else 2000
    names = list(BRAIN_TISSUES_1P5T)
    t1 = np.array([BRAIN_TISSUES_1P5T[n][0] for n in names])
    t2 = np.array([BRAIN_TISSUES_1P5T[n][1] for n in names])
    clean = simulate(schedule, np.repeat(t1, draws), np.repeat(t2, draws), dtype=torch.float64)
    peak = np.abs(np.asarray(clean)).max(axis=1)
    rows = []
    for i, level in enumerate(QUICK_LEVELS if ctx.quick else FULL_LEVELS):
        noisy = add_noise(clean, level, generator=np.random.default_rng(ctx.seed + i))
        nn_t1, nn_t2 = model.predict(noisy)
        dm = matcher.match(noisy)
        for k, name in enumerate(names):
            sl = slice(k * draws, (k + 1) * draws)
            sigma = float(level * peak[sl].mean())
            bound = crb(schedule, t1[k], t2[k], sigma=sigma).std[0]
            row: dict[str, Any] = {"tissue": name, "noise_level": level, "peak_snr": 1.0 / level, "t1": t1[k],
                                   "t2": t2[k], "sqrt_crb": {"t1": float(bound[1]), "t2": float(bound[2])}}
            for est, (e1, e2) in (("network", (nn_t1[sl], nn_t2[sl])), ("matching", (dm.t1_ms[sl], dm.t2_ms[sl]))):
                row[est] = {p: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)),
                                "rmse": float(np.sqrt(np.mean((v - truth) ** 2)))}
                            for p, v, truth in (("t1", e1, t1[k]), ("t2", e2, t2[k]))}
            rows.append(row)
        ctx.log(f"noise {level:.2%}: " + "; ".join(
            f"{r['tissue']} T1 sd NN {r['network']['t1']['sd']:.1f} DM {r['matching']['t1']['sd']:.1f} √CRB "
            f"{r['sqrt_crb']['t1']:.1f}" for r in rows[-len(names):]))
    _plot(ctx, rows, names)
    return {"draws_per_tissue": draws, "rows": rows}


def _plot(ctx: Context, rows: list[dict[str, Any]], names: list[str]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, (p, label) in enumerate((("t1", "T1"), ("t2", "T2"))):
        for row_index, (stat, what) in enumerate((("sd", "sd"), ("rmse", "RMSE"))):
            ax = axes[row_index, col]
            for k, name in enumerate(names):
                sel = [r for r in rows if r["tissue"] == name]
                snr = [r["peak_snr"] for r in sel]
                for est, style in (("network", "-o"), ("matching", "--s")):
                    ax.plot(snr, [r[est][p][stat] / r["sqrt_crb"][p] for r in sel], style, color=f"C{k}", ms=4,
                            label=f"{name} {est}")
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(snr)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_ylabel(f"{what} of {label} / √CRB")
            ax.grid(True, which="both", alpha=0.3)
            if row_index == 1:
                ax.set_xlabel("peak SNR (1 / noise level)")
            if row_index == 0 and col == 0:
                ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Distance to the Cramér–Rao bound (1 = an efficient unbiased estimator)")
    fig.tight_layout()
    ctx.save_figure(fig, "crb")
