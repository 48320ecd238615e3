"""Benchmark: one 128×128 slice (16,384 fingerprints × 25 frames) through the shipped DRONE model,
each speed trick with its accuracy cost, next to full-dictionary matching of the same slice.

Run (quiet machine)::

    .venv/bin/python benchmarks/bench_predict.py [--repeats 30] [--threads N] [--json OUT]

Reports, per variant, median and min seconds per slice (after warm-up) and the RMSE of T1/T2 on the
paper dictionary noise-free and at 0.5 % noise (`drone_core.noise`) — the accuracy cost of the trick.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable

import numpy as np
import torch

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.matching import Matcher
from drone_core.metrics import rmse
from drone_core.model import default_model
from drone_core.noise import add_noise
from drone_core.schedule import default_schedule
from timing import runs


def _time(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, float]:
    times = runs(fn, repeats, warmup)
    return statistics.median(times), min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--matching-repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    schedule = default_schedule()
    model = default_model()
    d = Dictionary.generate(schedule, *paper_grid())
    rng = np.random.default_rng(0)
    pick = rng.choice(len(d), 128 * 128, replace=False)
    slice_sig = add_noise(torch.from_numpy(d.atoms[pick]), 0.005, generator=torch.Generator().manual_seed(0))
    clean = np.abs(d.atoms)
    noisy = add_noise(torch.from_numpy(d.atoms), 0.005, generator=torch.Generator().manual_seed(1))

    results: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "bf16"):
        med, mn = _time(lambda: model.predict(slice_sig, precision=precision), args.repeats)
        c1, c2 = model.predict(clean, precision=precision)
        n1, n2 = model.predict(noisy, precision=precision)
        results[f"predict {precision}"] = {
            "median_s": med, "min_s": mn,
            "rmse_t1_clean": rmse(d.t1_ms, c1), "rmse_t2_clean": rmse(d.t2_ms, c2),
            "rmse_t1_0p5": rmse(d.t1_ms, n1), "rmse_t2_0p5": rmse(d.t2_ms, n2)}

    x = slice_sig.numpy()
    with torch.inference_mode():
        med, mn = _time(lambda: model.network(torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True) * 5.0)),
                        args.repeats)
    results["nn.Sequential fp32 (no fused path)"] = {"median_s": med, "min_s": mn}

    matcher = Matcher(d)
    med, mn = _time(lambda: matcher.match(x), args.matching_repeats, warmup=1)
    res = matcher.match(noisy.numpy())
    results["full dictionary matching (79,900 atoms)"] = {
        "median_s": med, "min_s": mn, "rmse_t1_0p5": rmse(d.t1_ms, res.t1_ms), "rmse_t2_0p5": rmse(d.t2_ms, res.t2_ms)}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; slice 128×128×25, median of {args.repeats}")
    print("| variant | median ms | min ms | RMSE T1/T2 noise-free (ms) | RMSE T1/T2 at 0.5 % (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        clean_s = f"{r['rmse_t1_clean']:.1f} / {r['rmse_t2_clean']:.1f}" if "rmse_t1_clean" in r else "—"
        noisy_s = f"{r['rmse_t1_0p5']:.1f} / {r['rmse_t2_0p5']:.1f}" if "rmse_t1_0p5" in r else "—"
        print(f"| {name} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} | {clean_s} | {noisy_s} |")
    ratio = results["full dictionary matching (79,900 atoms)"]["median_s"] / results["predict bf16"]["median_s"]
    ratio32 = results["full dictionary matching (79,900 atoms)"]["median_s"] / results["predict fp32"]["median_s"]
    print(f"matching / NN: {ratio:.0f}× (bf16), {ratio32:.0f}× (fp32)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": torch.get_num_threads(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
