"""Benchmark: how far the maps can be trusted — the noise-aware mask, the uncertainty maps and their cost.

Run from the repository root::

    .venv/bin/python benchmarks/bench_trust.py [--threads 2] [--json OUT]

What is measured (the shipped model, CPU; each scan simulated with its own seed, none of them the ones the
defaults were chosen on):

* **mask** — brain phantom (3 slices, the paper's and BrainWeb's values) at 1 % and 3 % noise, NIST T1 and T2
  arrays at 3 %: the estimated σ against the simulated one, the share of the air given maps, the share of the
  tissue lost, and the same for the fixed-fraction rule (0.05 of the 99th-percentile norm) it replaces;
* **uncertainty** — WM and GM (and CSF), the mean predicted sd over the tissue / the map's sd over it, for T1
  and T2; beside it the Cramér–Rao bound at the tissue's truth / the map's sd (what a CRB-only map would say);
* **cost** — ``reconstruct`` of a 128 × 128 brain slice at 1 % noise: plain, with the sd maps, with the fit map
  (median of 7 after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from drone_core.crb import crb
from drone_core.masking import estimate_noise
from drone_core.model import default_model
from drone_core.phantoms import brain_phantom, image_noise_sigma, nist_phantom, simulate_frames
from drone_core.reconstruct import foreground_mask, reconstruct
from drone_core.schedule import default_schedule


def mask_rows(schedule) -> list[dict]:
    rows = []
    cases = [("brain paper", brain_phantom(3), 0.01, 201), ("brain paper", brain_phantom(3), 0.03, 202),
             ("brain brainweb", brain_phantom(3, values="brainweb"), 0.01, 203),
             ("brain brainweb", brain_phantom(3, values="brainweb"), 0.03, 204),
             ("NIST T1", nist_phantom("T1"), 0.03, 205), ("NIST T2", nist_phantom("T2"), 0.03, 206)]
    for name, phantom, level, seed in cases:
        clean = simulate_frames(phantom, schedule, 0.0, magnitude=False)
        frames = simulate_frames(phantom, schedule, level, seed=seed)
        air = phantom.labels == 0
        new = np.stack([foreground_mask(frames[:, z]) for z in range(frames.shape[1])])
        old = np.stack([foreground_mask(frames[:, z], 0.05) for z in range(frames.shape[1])])
        est = [estimate_noise((frames[:, z].astype(np.float64) ** 2).sum(0), schedule.n_frames).sigma
               for z in range(frames.shape[1])]
        rows.append({"phantom": name, "noise": level, "sigma_true": image_noise_sigma(clean, level),
                     "sigma_estimated": [None if s is None else round(s, 6) for s in est],
                     "air_with_maps": float(new[air].mean()), "tissue_lost": float((~new[~air]).mean()),
                     "air_with_maps_fraction_rule": float(old[air].mean()),
                     "tissue_lost_fraction_rule": float((~old[~air]).mean())})
    return rows


def uncertainty_rows(schedule, model) -> list[dict]:
    rows = []
    for values in ("paper", "brainweb"):
        phantom = brain_phantom(3, values=values)
        clean = simulate_frames(phantom, schedule, 0.0, magnitude=False)
        for level, seed in ((0.01, 211), (0.03, 212)):
            frames = simulate_frames(phantom, schedule, level, seed=seed)
            maps = [reconstruct(frames[:, z], model, uncertainty=True) for z in range(frames.shape[1])]
            st = {k: np.stack([getattr(m, k) for m in maps]) for k in ("t1", "t2", "t1_sd", "t2_sd", "mask")}
            sigma = image_noise_sigma(clean, level)
            for label, tissue in sorted(phantom.tissues.items()):
                where = (phantom.labels == label) & st["mask"]
                bound = crb(schedule, [tissue.t1_ms], [tissue.t2_ms], m0=tissue.m0, sigma=sigma).std[0]
                emp1, emp2 = float(st["t1"][where].std()), float(st["t2"][where].std())
                rows.append({"values": values, "noise": level, "tissue": tissue.name,
                             "t1_predicted_over_empirical": float(st["t1_sd"][where].mean()) / emp1,
                             "t2_predicted_over_empirical": float(st["t2_sd"][where].mean()) / emp2,
                             "t1_crb_over_empirical": float(bound[1]) / emp1,
                             "t2_crb_over_empirical": float(bound[2]) / emp2,
                             "tissue_sigma_over_true": float(np.mean([m.tissue_sigma for m in maps])) / sigma})
    return rows


def cost_rows(schedule, model) -> dict[str, float]:
    frames = simulate_frames(brain_phantom(1), schedule, 0.01, seed=221)[:, 0]
    calls = {"reconstruct": lambda: reconstruct(frames, model),
             "reconstruct + t1_sd/t2_sd": lambda: reconstruct(frames, model, uncertainty=True),
             "reconstruct + fit": lambda: reconstruct(frames, model, goodness_of_fit=True),
             "reconstruct + t1_sd/t2_sd + fit": lambda: reconstruct(frames, model, uncertainty=True,
                                                                  goodness_of_fit=True)}
    out = {}
    for _ in range(2):
        for f in calls.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(7):
        for name, f in calls.items():  # round-robin: a busy machine slows them alike
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        out[name] = statistics.median(ts) * 1000.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    schedule, model = default_schedule(), default_model()
    result = {"mask": mask_rows(schedule), "uncertainty": uncertainty_rows(schedule, model),
              "cost_ms": cost_rows(schedule, model)}
    print("mask: phantom, noise, σ estimated/true, air with maps, tissue lost | fraction rule: air, tissue")
    for r in result["mask"]:
        ratio = ", ".join("unknown" if s is None else f"{s / r['sigma_true']:.4f}" for s in r["sigma_estimated"])
        print(f"  {r['phantom']:15s} {r['noise']:.2f}  {ratio:26s} {r['air_with_maps']:7.3%} {r['tissue_lost']:7.3%} | "
              f"{r['air_with_maps_fraction_rule']:7.2%} {r['tissue_lost_fraction_rule']:7.3%}")
    print("uncertainty: values, noise, tissue, predicted/empirical T1 T2 | CRB/empirical T1 T2 | σ tissue/true")
    for r in result["uncertainty"]:
        print(f"  {r['values']:8s} {r['noise']:.2f} {r['tissue']:4s} {r['t1_predicted_over_empirical']:.3f} "
              f"{r['t2_predicted_over_empirical']:.3f} | {r['t1_crb_over_empirical']:.3f} "
              f"{r['t2_crb_over_empirical']:.3f} | {r['tissue_sigma_over_true']:.4f}")
    print("cost per 128 × 128 slice (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result["cost_ms"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
