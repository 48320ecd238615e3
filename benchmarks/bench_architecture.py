"""Architecture study helper: a candidate model against the shipped one — accuracy goals and CPU time, one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_architecture.py runs/h64/model.safetensors [more.safetensors ...] \
        [--threads 2] [--json OUT]

For the shipped model and each candidate (float32/bf16 as ``predict`` picks, CPU):

* noise-free paper grid at B1 = 1 (79,900 atoms with the slice profile): RMSE T1/T2 (goal ≤ 9.3 / 8.8 ms);
* 0.5 % noise on the same atoms (``drone_core.noise.add_noise``, seed 1): RMSE T1/T2 (goal: within 3 % of
  the shipped model's, measured here in the same run);
* WM/GM/CSF at B1 0.70:0.05:1.30 given as a map value, noise-free: worst |error| T1/T2 (goal 2 % / 3 %);
* the ISMRM/NIST spheres with T2 ≥ 30 ms (both arrays, B1 = 1, noise-free): worst |error| (goal 5 %);
* a 128 × 128 slice: ``predict`` (``precision="auto"``, and ``"fp32"``) and the full ``reconstruct`` (M0 table,
  every voxel), median of 30 rounds in which the models take turns call by call (``time_round_robin``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import runs

GOALS = {"rmse_t1_ms": 9.3, "rmse_t2_ms": 8.8, "noisy_within": 0.03, "tissue_t1_pct": 2.0, "tissue_t2_pct": 3.0,
         "nist_pct": 5.0}
TISSUES = {"WM": (663.0, 83.0), "GM": (1110.0, 96.0), "CSF": (3799.0, 870.0)}


def evaluate(model: Any, paper: Any, noisy: np.ndarray) -> dict[str, Any]:
    from drone_core.epg import simulate
    from drone_core.metrics import rmse
    from drone_core.phantoms import NIST_EXCLUDE_T2_BELOW_MS, NIST_T1_ARRAY, NIST_T2_ARRAY

    ones = np.ones(len(paper))
    out: dict[str, Any] = {"architecture": model.network.architecture(),
                           "parameters": sum(p.numel() for p in model.network.parameters())}
    t1, t2 = model.predict(np.abs(paper.atoms), ones)
    out["rmse_noise_free_ms"] = [float(rmse(paper.t1_ms, t1)), float(rmse(paper.t2_ms, t2))]
    t1, t2 = model.predict(noisy, ones)
    out["rmse_0.5pct_ms"] = [float(rmse(paper.t1_ms, t1)), float(rmse(paper.t2_ms, t2))]
    b1 = np.round(np.arange(0.70, 1.3001, 0.05), 3)
    worst = [0.0, 0.0]
    for t1_ms, t2_ms in TISSUES.values():
        sig = np.abs(np.asarray(simulate(model.schedule, np.full(b1.size, t1_ms), np.full(b1.size, t2_ms), b1,
                                         dtype=torch.float64)))
        e1, e2 = model.predict(sig, b1)
        worst = [max(worst[0], float(np.abs(e1 / t1_ms - 1).max() * 100)),
                 max(worst[1], float(np.abs(e2 / t2_ms - 1).max() * 100))]
    out["tissue_worst_pct"] = worst
    spheres = [(t1_ms, t2_ms) for table in (NIST_T1_ARRAY, NIST_T2_ARRAY) for t1_ms, t2_ms in table.values()
               if t2_ms >= NIST_EXCLUDE_T2_BELOW_MS]
    st1, st2 = (np.array(v) for v in zip(*spheres))
    sig = np.abs(np.asarray(simulate(model.schedule, st1, st2, dtype=torch.float64)))
    e1, e2 = model.predict(sig, np.ones(st1.size))
    out["nist_worst_pct"] = float(max(np.abs(e1 / st1 - 1).max(), np.abs(e2 / st2 - 1).max()) * 100)
    out["training_seconds"] = model.training.get("seconds")
    return out


def time_round_robin(models: dict[str, Any], noisy: np.ndarray, rounds: int = 30) -> dict[str, dict[str, float]]:
    """Median ms of ``predict`` (auto, fp32) and ``reconstruct`` of a 128 × 128 slice per model, the models taking
    turns call by call for ``rounds`` rounds (a load that comes and goes hits every model alike)."""
    from drone_core.reconstruct import reconstruct

    rng = np.random.default_rng(0)
    pick = rng.choice(noisy.shape[0], 128 * 128, replace=False)
    slice_sig = noisy[pick].astype(np.float32)
    frames = np.ascontiguousarray(slice_sig.T.reshape(-1, 128, 128))
    b1_map, b1 = np.ones((128, 128)), np.ones(pick.size)
    calls = {"predict_ms": lambda m: m.predict(slice_sig, b1),
             "predict_fp32_ms": lambda m: m.predict(slice_sig, b1, precision="fp32"),
             "reconstruct_ms": lambda m: reconstruct(frames, m, mask_threshold=0, b1=b1_map)}
    samples: dict[str, dict[str, list[float]]] = {name: {k: [] for k in calls} for name in models}
    for name, model in models.items():
        for fn in calls.values():
            runs(lambda: fn(model), 0, warmup=3)
    for _ in range(rounds):
        for name, model in models.items():
            for key, fn in calls.items():
                samples[name][key] += runs(lambda: fn(model), 1, warmup=0)
    return {name: {k: statistics.median(v) * 1e3 for k, v in d.items()} for name, d in samples.items()}


def label(name: str, row: dict[str, Any]) -> str:
    """A short label: the architecture (and the candidate folder's name when it says more)."""
    arch = row["architecture"]
    text = f"{arch['hidden'][0]}×{len(arch['hidden'])} {arch['activation']}"
    folder = Path(name).parent.name
    extra = [part for part in folder.split("_")[2:]] if "_" in folder else []
    return " ".join([text, *extra]) if name != "reference" else f"{text} (reference)"


def plot_pareto(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Excess 0.5 % RMSE over the reference (T1, T2) against reconstruct time and training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "reconstruct_ms", "reconstruct, 128 × 128 slice, every voxel (ms)"),
                            (axes[1], "training_seconds", "training, epochs only (s)")):
        points = [(row[key], max(row["rmse_0.5pct_vs_reference_pct"]), row["meets_goals"], label(name, row))
                  for name, row in rows.items() if row.get(key)]
        for x, y, ok, text in points:
            ax.scatter(x, y, marker="o" if ok else "x", color="tab:green" if ok else "tab:red", s=40)
            ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front, best = [], float("inf")
        for x, y, ok, _ in sorted(points):
            if ok and y < best:
                front.append((x, y))
                best = y
        if front:
            ax.step(*zip(*front), where="post", color="tab:green", alpha=0.5, label="Pareto front (goals met)")
            ax.legend(fontsize=8)
        ax.axhline(100 * GOALS["noisy_within"], color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("worse of T1/T2: RMSE at 0.5 % noise over the reference (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Architecture study: o = every accuracy goal met, x = a goal missed; dashed: the 3 % bound")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reference", type=Path,
                   help="the model whose 0.5 %% RMSE the others must stay within 3 %% of (default: the shipped one)")
    p.add_argument("--plot", type=Path, help="write the Pareto plot (accuracy against time) to this PNG")
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from drone_core.dictionary import Dictionary, paper_grid
    from drone_core.hardware import keep_freed_memory
    from drone_core.model import DroneModel, default_model
    from drone_core.noise import add_noise
    from drone_core.schedule import default_schedule

    keep_freed_memory()
    paper = Dictionary.generate(default_schedule(), *paper_grid())
    noisy = add_noise(torch.from_numpy(paper.atoms), 0.005, generator=torch.Generator().manual_seed(1)).numpy()
    reference = default_model() if args.reference is None else DroneModel.load(args.reference)
    models = {"reference": reference}
    for path in args.models:
        model = DroneModel.load(path)
        if model.m0_table is None:
            model.with_m0_table()
        models[str(path)] = model
    rows = {name: evaluate(model, paper, noisy) for name, model in models.items()}
    for name, times in time_round_robin(models, noisy).items():
        rows[name].update(times)
    ref = rows["reference"]["rmse_0.5pct_ms"]
    for row in rows.values():
        noisy_ok = all(r <= (1 + GOALS["noisy_within"]) * s for r, s in zip(row["rmse_0.5pct_ms"], ref))
        row["meets_goals"] = bool(row["rmse_noise_free_ms"][0] <= GOALS["rmse_t1_ms"]
                                  and row["rmse_noise_free_ms"][1] <= GOALS["rmse_t2_ms"] and noisy_ok
                                  and row["tissue_worst_pct"][0] <= GOALS["tissue_t1_pct"]
                                  and row["tissue_worst_pct"][1] <= GOALS["tissue_t2_pct"]
                                  and row["nist_worst_pct"] <= GOALS["nist_pct"])
        row["rmse_0.5pct_vs_reference_pct"] = [100 * (r / s - 1) for r, s in zip(row["rmse_0.5pct_ms"], ref)]
    text = json.dumps({"goals": GOALS, "threads": torch.get_num_threads(), "models": rows}, indent=2)
    print(text)
    if args.plot:
        plot_pareto(rows, args.plot)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
