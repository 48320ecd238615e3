"""Real-scanner physics: what the slice profile and B1 do to the maps, and what the correction buys.

Noise-free fingerprints of WM, GM and CSF (the paper's Table 1 values) are simulated with the
default schedule's excitation (Hann sinc, TBW 4) at B1 0.7 … 1.3, and estimated three ways:

* **uncorrected** — what a reconstruction that assumes an ideal slice and B1 = 1 gets: the
  maximum-likelihood (T1, T2) under that model, by matching against a fine log-spaced local
  dictionary of the ideal-profile, B1 = 1 signal (0.6 % / 1 % steps in T1 / T2, so grid error is
  small next to the bias);
* **profile, B1 ignored** — the shipped network without a B1 map (B1 assumed 1);
* **corrected** — the shipped network with each voxel's B1 given (a B1 map), and dictionary
  matching restricted to the voxel's B1 (the paper grid × B1 planes every 0.05).

Also measured: the ISMRM/NIST spheres with T2 ≥ 30 ms (both arrays, noise-free, B1 = 1), and the
paper grid at B1 = 1 (noise-free, and 0.5 % noise next to its Cramér–Rao bound with and without
the slice profile). Quick: fewer B1 values, coarser grids, a sub-sampled paper grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drone_core.dictionary import Dictionary, grid, paper_grid
from drone_core.epg import simulate
from drone_core.matching import Matcher
from drone_core.metrics import summary
from drone_core.model import default_model
from drone_core.noise import add_noise
from drone_core.phantoms import BRAIN_PAPER, NIST_EXCLUDE_T2_BELOW_MS, NIST_T1_ARRAY, NIST_T2_ARRAY
from drone_core.schedule import Schedule, default_schedule

from .common import Context

__all__ = ["run", "B1_VALUES", "GOALS"]

#: The B1 values of the tissue table (a 3 T head spans about 0.7–1.3).
B1_VALUES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
#: The accuracy goals (percent): WM/GM/CSF with B1 given, and the NIST spheres.
GOALS = {"tissue_t1_pct": 2.0, "tissue_t2_pct": 3.0, "nist_pct": 5.0}


def _local_matcher(schedule: Schedule, t1: float, t2: float, n: int, device: str) -> Matcher:
    """A fine log-spaced dictionary around (t1, t2): T1 × [0.3, 3], T2 × [0.05, 3] (wide enough that the
    uncorrected estimates never sit on its edge; 0.6 % / 1 % steps with n = 400)."""
    a, b, _ = grid((0.3 * t1, 3.0 * t1), (0.05 * t2, 3.0 * t2), n_t1=n, n_t2=n, spacing="log",
                   t1_greater_than_t2=True)
    return Matcher(Dictionary.generate(schedule, a, b), device=device)


def _pct(est: np.ndarray, true: float) -> list[float]:
    return [float(v) for v in (np.asarray(est, dtype=np.float64) / true - 1.0) * 100.0]


def _paper_crb(schedule: Schedule, t1: np.ndarray, t2: np.ndarray, level: float) -> dict[str, float]:
    """√(mean CRB) of T1, T2 over atoms (M0 a nuisance), σ = level × the atom's peak; finite differences."""
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(simulate(schedule, a, b, dtype=torch.float64))

    base = f(t1, t2)
    h1, h2 = t1 * 1e-4, t2 * 1e-4
    d1 = (f(t1 + h1, t2) - f(t1 - h1, t2)) / (2 * h1)[:, None]
    d2 = (f(t1, t2 + h2) - f(t1, t2 - h2)) / (2 * h2)[:, None]
    jac = np.stack([base, d1, d2], axis=-1)
    sigma = level * base.max(axis=1)
    fisher = np.einsum("nfi,nfj->nij", jac, jac) / sigma[:, None, None] ** 2
    cov = np.linalg.inv(fisher)
    return {"t1_ms": float(np.sqrt(cov[:, 1, 1].mean())), "t2_ms": float(np.sqrt(cov[:, 2, 2].mean()))}


def run(ctx: Context) -> dict[str, Any]:
    schedule = default_schedule()
    ideal = schedule.ideal()
    model = default_model(device=ctx.device)
    b1_values = (0.7, 1.0, 1.3) if ctx.quick else B1_VALUES
    n_local = 120 if ctx.quick else 400
    tissues = {t.name: (t.t1_ms, t.t2_ms) for t in BRAIN_PAPER.values() if t.name in ("WM", "GM", "CSF")}

    # ---------------------------------------------------------------- tissues over B1
    b1_planes = np.round(np.arange(0.5, 1.5001, 0.1 if ctx.quick else 0.05), 4)
    t1g, t2g = paper_grid()
    if ctx.quick:
        keep = np.arange(0, t1g.size, 7)
        t1g, t2g = t1g[keep], t2g[keep]
    b1_matcher = Matcher(Dictionary.generate(schedule, np.repeat(t1g, b1_planes.size), np.repeat(t2g, b1_planes.size),
                                             np.tile(b1_planes, t1g.size)), device=ctx.device)
    rows: dict[str, Any] = {}
    b1 = np.asarray(b1_values, dtype=np.float64)
    for name, (t1, t2) in tissues.items():
        signals = np.abs(simulate(schedule, np.full(b1.size, t1), np.full(b1.size, t2), b1, dtype=torch.float64))
        uncorrected = _local_matcher(ideal, t1, t2, n_local, ctx.device).match(signals)
        p_t1, p_t2 = model.predict(signals)
        c_t1, c_t2 = model.predict(signals, b1)
        m = b1_matcher.match(signals, b1=b1)
        rows[name] = {
            "t1_ms": t1, "t2_ms": t2, "b1": b1.tolist(),
            "uncorrected": {"t1_pct": _pct(uncorrected.t1_ms, t1), "t2_pct": _pct(uncorrected.t2_ms, t2)},
            "profile_b1_ignored": {"t1_pct": _pct(p_t1, t1), "t2_pct": _pct(p_t2, t2)},
            "network_b1_given": {"t1_pct": _pct(c_t1, t1), "t2_pct": _pct(c_t2, t2)},
            "matching_b1_given": {"t1_pct": _pct(m.t1_ms, t1), "t2_pct": _pct(m.t2_ms, t2)},
        }
        ctx.log(f"{name}: worst |error| T1/T2 — uncorrected {max(map(abs, rows[name]['uncorrected']['t1_pct'])):.1f}"
                f"/{max(map(abs, rows[name]['uncorrected']['t2_pct'])):.1f} %, network with B1 "
                f"{max(map(abs, rows[name]['network_b1_given']['t1_pct'])):.2f}"
                f"/{max(map(abs, rows[name]['network_b1_given']['t2_pct'])):.2f} %")
    worst = {est: {p: max(abs(v) for r in rows.values() for v in r[est][p]) for p in ("t1_pct", "t2_pct")}
             for est in ("uncorrected", "profile_b1_ignored", "network_b1_given", "matching_b1_given")}

    # ---------------------------------------------------------------- NIST spheres
    spheres = []
    for array, table in (("T1", NIST_T1_ARRAY), ("T2", NIST_T2_ARRAY)):
        for k, (t1, t2) in table.items():
            if t2 < NIST_EXCLUDE_T2_BELOW_MS:
                continue
            s = np.abs(simulate(schedule, [t1], [t2], dtype=torch.float64))
            e1, e2 = model.predict(s, [1.0])
            spheres.append({"array": array, "sphere": k, "t1_ms": t1, "t2_ms": t2,
                            "t1_pct": _pct(e1, t1)[0], "t2_pct": _pct(e2, t2)[0]})
    nist_worst = max(max(abs(s["t1_pct"]), abs(s["t2_pct"])) for s in spheres)

    # ---------------------------------------------------------------- the paper grid at B1 = 1
    t1p, t2p = paper_grid()
    if ctx.quick:
        keep = np.arange(0, t1p.size, 10)
        t1p, t2p = t1p[keep], t2p[keep]
    atoms = torch.as_tensor(simulate(schedule, t1p, t2p))
    ones = np.ones(t1p.size)
    est_nf = model.predict(atoms.abs(), ones)
    noisy = add_noise(atoms, 0.005, generator=torch.Generator().manual_seed(ctx.seed + 1))
    est_05 = model.predict(noisy, ones)
    rng = np.random.default_rng(ctx.seed)
    sel = (t2p >= 11)
    pick = rng.choice(np.flatnonzero(sel), size=300 if ctx.quick else 3000, replace=False)
    paper = {
        "noise_free": {"t1_ms": summary(t1p, est_nf[0]), "t2_ms": summary(t2p, est_nf[1])},
        "noise_0.5%": {"t1_ms": summary(t1p, est_05[0]), "t2_ms": summary(t2p, est_05[1])},
        "crb_0.5%_profile": _paper_crb(schedule, t1p[pick], t2p[pick], 0.005),
        "crb_0.5%_ideal": _paper_crb(ideal, t1p[pick], t2p[pick], 0.005),
    }
    ctx.log(f"paper grid: noise-free RMSE {paper['noise_free']['t1_ms']['rmse']:.1f} / "
            f"{paper['noise_free']['t2_ms']['rmse']:.1f} ms; 0.5 %: {paper['noise_0.5%']['t1_ms']['rmse']:.1f} / "
            f"{paper['noise_0.5%']['t2_ms']['rmse']:.1f} ms (√CRB {paper['crb_0.5%_profile']['t1_ms']:.1f} / "
            f"{paper['crb_0.5%_profile']['t2_ms']:.1f}, ideal slice {paper['crb_0.5%_ideal']['t1_ms']:.1f} / "
            f"{paper['crb_0.5%_ideal']['t2_ms']:.1f})")
    _plot(ctx, rows)
    return {"excitation": schedule.excitation.to_dict() if schedule.excitation else None,
            "model": {"b1": model.b1.to_dict(), "architecture": model.network.architecture()},
            "goals_pct": GOALS, "tissues": rows, "worst_pct": worst, "nist": spheres, "nist_worst_pct": nist_worst,
            "paper_grid": paper, "b1_planes": b1_planes.tolist()}


def _plot(ctx: Context, rows: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    styles = (("uncorrected", "ideal slice, B1 = 1 assumed", "C3", "--"),
              ("profile_b1_ignored", "network, no B1 map", "C1", ":"),
              ("network_b1_given", "network + B1 map", "C0", "-"),
              ("matching_b1_given", "matching + B1 map", "C2", "-."))
    for col, (name, row) in enumerate(rows.items()):
        for r, p in enumerate(("t1_pct", "t2_pct")):
            ax = axes[r, col]
            for key, label, colour, ls in styles:
                ax.plot(row["b1"], row[key][p], ls, color=colour, marker="o", ms=3, label=label)
            goal = GOALS["tissue_t1_pct"] if p == "t1_pct" else GOALS["tissue_t2_pct"]
            ax.axhspan(-goal, goal, color="0.85", zorder=0)
            ax.axhline(0, color="k", lw=0.6)
            label, true = ("T1", row["t1_ms"]) if p == "t1_pct" else ("T2", row["t2_ms"])
            ax.set_title(f"{name} {label} ({true:g} ms)")
            ax.set_ylabel("error (%)")
            ax.grid(alpha=0.3)
            if r == 1:
                ax.set_xlabel("B1 (relative)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Slice profile (Hann sinc, TBW 4) and B1, noise-free; grey: the accuracy goal")
    fig.tight_layout()
    ctx.save_figure(fig, "physics")
