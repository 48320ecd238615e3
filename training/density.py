"""Training-dictionary density vs reconstruction error (the DRONE paper's Fig. 5).

For each sub-sampling factor ("fold") the paper dictionary is sub-sampled, a network is trained
on the sparse atoms, and both the network and dictionary matching *against the same sparse
atoms* reconstruct the full dictionary corrupted by 0.5 % noise (:mod:`drone_core.noise`). Every
network gets the same number of optimiser steps, whatever its training-set size, so sparse
dictionaries are not also under-trained.

Repetition r uses stride sub-sampling with offset ``r mod fold`` (a different sparse
dictionary where the fold allows), network seed r and the same test noise draw.

    python -m drone_training.density --folds 2 10 30 60 --json density.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.matching import Matcher
from drone_core.metrics import rmse
from drone_core.noise import add_noise
from drone_core.schedule import default_schedule

from .train import TrainConfig, train

__all__ = ["density_experiment", "main"]


def density_experiment(
    full: Dictionary,
    folds: Sequence[int] = (2, 10, 30, 60),
    *,
    repetitions: int = 1,
    test_noise: float = 0.005,
    steps: int = 23_400,
    config: TrainConfig = TrainConfig(batch_size=512, lr_schedule="onecycle", noise_mode="uniform"),
    test_seed: int = 12345,
    method: str = "stride",
    log: bool = True,
) -> list[dict[str, Any]]:
    """Rows ``{fold, repetition, n_train, nn_t1_rmse, nn_t2_rmse, dm_t1_rmse, dm_t2_rmse, seconds}``
    (RMSE in ms over all atoms of ``full``, at ``test_noise``).

    ``method``: ``"stride"`` (repetition r keeps atoms r mod fold, r mod fold + fold, … of the
    dictionary order) or ``"random"`` (repetition r keeps a uniform random subset, seed
    ``1000·fold + r``). Stride sub-sampling of the T1-major grid can alias with its rows (at some
    factors whole regions of the (T1, T2) plane lose their atoms); random sub-sampling cannot.
    """
    noisy = torch.as_tensor(add_noise(torch.from_numpy(full.atoms), test_noise,
                                      generator=torch.Generator().manual_seed(test_seed)))
    noisy_np = noisy.numpy()
    t1_range = (float(full.t1_ms.min()), float(full.t1_ms.max()))
    t2_range = (float(full.t2_ms.min()), float(full.t2_ms.max()))
    rows = []
    for fold in folds:
        for rep in range(repetitions):
            if method == "random":
                sparse = full.subsample(fold, method="random", seed=1000 * fold + rep)
            else:
                sparse = full.subsample(fold, offset=rep % fold)
            epochs = max(1, round(steps * config.batch_size / len(sparse)))
            cfg = replace(config, epochs=epochs, seed=rep, t1_range_ms=t1_range, t2_range_ms=t2_range)
            t0 = time.perf_counter()
            model = train(sparse, cfg, progress=False, log=False).model
            seconds = time.perf_counter() - t0
            nn_t1, nn_t2 = model.predict(noisy)
            dm = Matcher(sparse).match(noisy_np)
            row = {"fold": fold, "repetition": rep, "method": method, "n_train": len(sparse), "epochs": epochs,
                   "nn_t1_rmse": rmse(full.t1_ms, nn_t1), "nn_t2_rmse": rmse(full.t2_ms, nn_t2),
                   "dm_t1_rmse": rmse(full.t1_ms, dm.t1_ms), "dm_t2_rmse": rmse(full.t2_ms, dm.t2_ms),
                   "seconds": seconds}
            rows.append(row)
            if log:
                print(f"fold {fold} rep {rep}: {len(sparse)} atoms, {epochs} epochs, {seconds:.0f} s — RMSE T1/T2 "
                      f"NN {row['nn_t1_rmse']:.1f}/{row['nn_t2_rmse']:.1f} ms, matching "
                      f"{row['dm_t1_rmse']:.1f}/{row['dm_t2_rmse']:.1f} ms", file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drone_training.density", description=__doc__.split("\n")[0])
    p.add_argument("--folds", type=int, nargs="+", default=[2, 10, 30, 60])
    p.add_argument("--repetitions", type=int, default=1)
    p.add_argument("--steps", type=int, default=23_400, help="optimiser steps per network")
    p.add_argument("--test-noise", type=float, default=0.005)
    p.add_argument("--noise", type=float, default=0.02, help="training noise level")
    p.add_argument("--noise-mode", choices=("fixed", "uniform"), default="uniform")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    full = Dictionary.generate(default_schedule(), *paper_grid())
    cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, lr_schedule="onecycle", noise_level=args.noise,
                      noise_mode=args.noise_mode)
    rows = density_experiment(full, args.folds, repetitions=args.repetitions, test_noise=args.test_noise,
                              steps=args.steps, config=cfg)
    out = {"config": asdict(cfg), "steps": args.steps, "test_noise": args.test_noise, "rows": rows}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
