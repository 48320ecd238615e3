"""What every paper experiment shares: where it writes, how it saves figures and numbers.

An experiment is a function ``run(ctx: Context) -> dict`` that writes its PNG figures with
:meth:`Context.save_figure` and returns its numbers (JSON-able); :func:`run_experiment` times it
and writes ``<out>/<name>.json`` with the numbers, the command that reproduces them, the machine
and the versions.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from drone_core.hardware import cpu_model

__all__ = ["Context", "Experiment", "run_experiment", "to_jsonable", "linear_fit", "PAPER"]

#: The paper's numbers each experiment is compared with (``drone-paper.txt``; ms unless noted).
PAPER: dict[str, Any] = {
    "training": {"t1_rmse": 9.3, "t2_rmse": 8.8, "t1_bias": 10.0, "t2_bias": 2.2, "r2": 0.99},
    "brain": {"t1_rmse": 3.5, "t2_rmse": 7.8},
    "density": {"nn_fit_r2_t1": 0.94, "nn_fit_r2_t2": 0.89, "nn_vs_matching_t1": "5-7x smaller",
                "nn_vs_matching_t2": "2x smaller"},
    "nist": {"r2": 0.99, "t1_bias": 5.5, "t1_rmse": 72.0, "t2_rmse": 88.0, "t2_rmse_without_4": 31.0,
             "t2_bias_without_4": 21.0},
    "table1": {"WM": (663, 30, 83, 7.9), "GM": (1110, 59, 96, 13), "CSF": (3799, 422, 870, 191)},
    "timing": {"nn_ms": 10.0, "matching_ms": 3000.0, "speed_up": 300.0},
}


@dataclass
class Context:
    """Where and how an experiment runs.

    Attributes:
        out: folder for its figures and JSON.
        quick: the small, seeded variant (for the test suite).
        seed: seeds every random draw.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` for networks and matching.
        figures: the PNG files written so far.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    figures: list[Path] = field(default_factory=list)

    def save_figure(self, fig: Any, name: str, *, dpi: int = 90) -> Path:
        """Save a matplotlib figure as ``<out>/<name>.png`` (small: committed to docs) and close it."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        self.figures.append(path)
        return path

    def log(self, text: str) -> None:
        """Progress for people, on stderr."""
        print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, the paper item it reproduces, and its function."""

    name: str
    paper: str
    description: str
    run: Callable[[Context], dict[str, Any]]


def to_jsonable(value: Any) -> Any:
    """numpy scalars and arrays, tuples and Paths → plain JSON types (floats rounded to 6 digits)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return round(v, 6) if np.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def linear_fit(x: Any, y: Any) -> dict[str, float]:
    """Least-squares line ``y = slope·x + intercept`` and its R²."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("drone-gadgetron", "torch", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "?"
    return out


def run_experiment(experiment: Experiment, ctx: Context) -> dict[str, Any]:
    """Run ``experiment``; write and return ``{"experiment", "numbers", "seconds", …}`` as ``<name>.json``."""
    import matplotlib

    matplotlib.use("Agg")
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    numbers = experiment.run(ctx)
    seconds = time.perf_counter() - t0
    command = f"drone experiments {experiment.name}{' --quick' if ctx.quick else ''} --out {ctx.out}"
    if ctx.seed:
        command += f" --seed {ctx.seed}"
    record = {
        "experiment": experiment.name,
        "paper": experiment.paper,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "device": ctx.device,
        "command": command,
        "seconds": seconds,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "platform": platform.platform()},
        "versions": _versions(),
        "figures": [p.name for p in ctx.figures],
        "paper_numbers": PAPER.get(experiment.name, {}),
        "numbers": numbers,
    }
    record = to_jsonable(record)
    (ctx.out / f"{experiment.name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
