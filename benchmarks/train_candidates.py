"""Architecture study, step 1: train candidate networks on the shipped model's training atoms.

Run from the repository root::

    .venv/bin/python benchmarks/train_candidates.py --work runs/study 64x2,tanh 96x2,tanh,s1 48x3,relu,e30 ...

Each candidate is ``WIDTHxDEPTH[,ACTIVATION][,eEPOCHS][,sSEED][,lrLR][,bBATCH][,pRANK]`` (defaults: tanh, 60
epochs, seed 0, lr 3e-3, batch 1024, no input projection; ``pK``: the SVD projection of
``drone train --projection-rank K``); everything else is the shipped recipe (docs/MODEL.md: slice
profile, B1 input 0.5–1.5 with 8 draws per (T1, T2) pair, 40,000 extra short-T atoms, one-cycle,
U(0, 0.75 %) noise, relative knees 500/200 ms, ranges 1–5000 / 1–2000 ms). The training atoms are
simulated once and kept in ``WORK/train_atoms.safetensors``; every model goes to
``WORK/NAME/model.safetensors`` with its M0 table (an existing one is kept: the study resumes).
Training times are in ``WORK/NAME/train.json``. Step 2 evaluates the models in one run:
``benchmarks/bench_architecture.py WORK/*/model.safetensors --plot docs/figures/architecture_pareto.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: The shipped recipe's training atoms (docs/MODEL.md, "The shipped model").
ATOMS = {"b1_draws": 8, "b1_range": (0.5, 1.5), "extra_atoms": 40000, "extra_t1_range_ms": (10.0, 1000.0),
         "extra_t2_range_ms": (5.0, 600.0), "seed": 0}


def parse_candidate(spec: str) -> dict[str, Any]:
    """``"64x2,relu,e30,s1,lr2e-3,b2048,p10"`` → the candidate's settings (see the module docstring)."""
    parts = spec.split(",")
    try:
        width, depth = (int(v) for v in parts[0].split("x"))
    except ValueError:
        raise SystemExit(f"candidate {spec!r}: expected WIDTHxDEPTH first, e.g. 64x2") from None
    out: dict[str, Any] = {"hidden": (width,) * depth, "activation": "tanh", "epochs": 60, "seed": 0, "lr": 3e-3,
                           "batch_size": 1024}
    for part in parts[1:]:
        if part in ("tanh", "relu", "gelu", "silu"):
            out["activation"] = part
        elif part.startswith("lr"):
            out["lr"] = float(part[2:])
        elif part[:1] in "esbp" and part[1:].isdigit():
            out[{"e": "epochs", "s": "seed", "b": "batch_size", "p": "projection_rank"}[part[0]]] = int(part[1:])
        else:
            raise SystemExit(f"candidate {spec!r}: unknown part {part!r}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("candidates", nargs="+")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    from drone_core.dictionary import Dictionary
    from drone_core.schedule import default_schedule
    from drone_training.train import TrainConfig, train, training_dictionary

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    atoms_path = args.work / "train_atoms.safetensors"
    if atoms_path.is_file():
        atoms = Dictionary.load(atoms_path)
    else:
        t0 = time.perf_counter()
        atoms = training_dictionary(default_schedule(), **ATOMS)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        atoms.save(atoms_path)
        (args.work / "train_atoms.json").write_text(json.dumps({"seconds": seconds, "n_atoms": len(atoms),
                                                                "threads": args.threads}))
        print(f"simulated {len(atoms)} training atoms in {seconds:.1f} s", file=sys.stderr)
    for spec in args.candidates:
        settings = parse_candidate(spec)
        out = args.work / spec.replace(",", "_")
        if (out / "model.safetensors").is_file():
            print(f"{spec}: kept {out / 'model.safetensors'}", file=sys.stderr)
            continue
        config = TrainConfig(lr_schedule="onecycle", noise_level=0.0075, noise_mode="uniform", device="cpu",
                             threads=args.threads, b1_input=True, b1_range=(0.5, 1.5), relative_knee_ms=(500.0, 200.0),
                             t1_range_ms=(1.0, 5000.0), t2_range_ms=(1.0, 2000.0), **settings)
        result = train(atoms, config, progress=False, log=False)
        out.mkdir(parents=True, exist_ok=True)
        result.model.with_m0_table().save(out / "model.safetensors")
        (out / "train.json").write_text(json.dumps({"spec": spec, "seconds": result.seconds,
                                                    "final_val_loss": result.val_loss[-1], "threads": args.threads}))
        print(f"{spec}: {result.seconds:.0f} s, val loss {result.val_loss[-1]:.3e}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
