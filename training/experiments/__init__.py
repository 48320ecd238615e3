"""``drone experiments NAME``: the DRONE paper's experiments, reproduced and reported side by side.

Each experiment writes PNG figures and ``<name>.json`` (its numbers, the paper's, the command, the
machine, the time it took) into ``--out``; ``--quick`` runs a small seeded variant (the test suite
runs those and asserts the paper's qualitative claims). ``docs/RESULTS.md`` shows the full runs.

========  ===============  ==============================================================
name      paper            what
========  ===============  ==============================================================
training  Figs. 2 and 3    training curve; the training atoms reconstructed (RMSE, bias, R²)
brain     Fig. 4           brain phantom maps, network vs matching, noise-free and over SNR
density   Fig. 5           dictionary sub-sampling 2…60 × 10 repetitions, linear fit
nist      Fig. 6           ISMRM/NIST phantom arrays through simulate-scan + the gadget
table1    Table 1          ROI mean ± sd of WM, GM, CSF with tissue spread and noise
timing    Results (speed)  network vs full and SVD-compressed matching per 128 × 128 slice
crb       (beyond)         network and matching sd against √CRB for WM, GM, CSF over SNR
physics   (beyond)         slice profile and B1: bias uncorrected vs corrected, NIST, paper grid
========  ===============  ==============================================================
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from .common import Context, Experiment, run_experiment

__all__ = ["EXPERIMENTS", "get", "add_arguments", "run", "main"]

_TABLE = {
    "training": ("Figs. 2-3", "training curve and training-set reconstruction"),
    "brain": ("Fig. 4", "brain phantom: network vs matching, noise-free and over SNR"),
    "density": ("Fig. 5", "training-dictionary density, 10 repetitions, linear fit"),
    "nist": ("Fig. 6", "ISMRM/NIST phantom through simulate-scan and the gadget"),
    "table1": ("Table 1", "ROI mean ± sd for WM, GM, CSF"),
    "timing": ("Results", "network vs full and SVD matching per 128×128 slice"),
    "crb": ("beyond the paper", "sd of network and matching against √CRB over SNR"),
    "physics": ("beyond the paper", "slice profile and B1: uncorrected vs corrected bias, NIST spheres, paper grid"),
}
#: Every experiment's name, in the paper's order.
EXPERIMENTS: tuple[str, ...] = tuple(_TABLE)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (its module is imported now)."""
    if name not in _TABLE:
        raise ValueError(f"experiment {name!r}: expected one of {', '.join(EXPERIMENTS)} or all")
    module = importlib.import_module(f".{name}", __name__)
    paper, description = _TABLE[name]
    return Experiment(name, paper, description, module.run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``drone experiments``."""
    parser.add_argument("name", choices=(*EXPERIMENTS, "all"), metavar="NAME",
                        help="experiment: " + ", ".join(f"{n} ({p})" for n, (p, _) in _TABLE.items()) + ", or all")
    parser.add_argument("--quick", action="store_true", help="the small seeded variant (seconds, for tests)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default results/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")


def run(args: argparse.Namespace) -> int:
    """Run the experiment(s); print a one-line summary per experiment."""
    names = EXPERIMENTS if args.name == "all" else (args.name,)
    for name in names:
        experiment = get(name)
        ctx = Context(out=args.out, quick=args.quick, seed=args.seed, device=args.device)
        record = run_experiment(experiment, ctx)
        print(f"{name} ({experiment.paper}): {record['seconds']:.1f} s → {args.out / (name + '.json')}, "
              f"{len(record['figures'])} figure(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drone experiments", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
