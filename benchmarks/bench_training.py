"""Benchmark: seconds per epoch of the shipped model's training recipe (to compare two versions of the loop).

Run from the repository root::

    .venv/bin/python benchmarks/bench_training.py --atoms runs/study/train_atoms.safetensors [--hidden 64 64]
        [--threads 1] [--epochs 3]

``--atoms``: the training atoms (``benchmarks/train_candidates.py`` writes them, or ``drone simulate`` any
dictionary); simulated now with the shipped recipe when the file does not exist (and saved there). The
recipe's settings otherwise (B1 input 0.5–1.5, U(0, 0.75 %) noise, relative knees, one-cycle to 3e-3,
batch 1024). To compare with another version, run the same command with that version's packages first on
``PYTHONPATH`` (a checkout whose ``drone_core``, ``gadgets`` and ``training`` folders are linked as
``drone_core``, ``drone_gadgets`` and ``drone_training``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--atoms", type=Path, required=True)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    import drone_core
    from drone_core.dictionary import Dictionary
    from drone_core.schedule import default_schedule
    from drone_training.train import TrainConfig, train, training_dictionary

    if args.atoms.is_file():
        atoms = Dictionary.load(args.atoms)
    else:
        atoms = training_dictionary(default_schedule(), b1_draws=8, b1_range=(0.5, 1.5), extra_atoms=40000,
                                    extra_t1_range_ms=(10.0, 1000.0), extra_t2_range_ms=(5.0, 600.0), seed=0)
        atoms.save(args.atoms)
    config = TrainConfig(epochs=args.epochs, batch_size=1024, lr=3e-3, lr_schedule="onecycle", noise_level=0.0075,
                         noise_mode="uniform", hidden=tuple(args.hidden), threads=args.threads, b1_input=True,
                         b1_range=(0.5, 1.5), relative_knee_ms=(500.0, 200.0), t1_range_ms=(1.0, 5000.0),
                         t2_range_ms=(1.0, 2000.0), device="cpu")
    result = train(atoms, config, progress=False, log=False)
    print(json.dumps({"drone_core": drone_core.__file__, "hidden": args.hidden, "threads": args.threads,
                      "n_atoms": len(atoms), "seconds_per_epoch": result.seconds / args.epochs,
                      "val_loss": result.val_loss[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
