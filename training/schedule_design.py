"""Design an MRF schedule by minimising the Cramér–Rao cost (Zhao et al., IEEE TMI 2019).

Cost: Σ_tissues CRB(T1)/T1² + CRB(T2)/T2² over WM, GM and CSF of the DRONE paper's Table 1, at
M0 = σ = 1 with M0 a nuisance parameter (:func:`drone_core.crb.crb_cost_tensors`).

Constraints (:class:`DesignConstraints`): N frames, fixed TE and TI, flip angles in
[fa_min, fa_max] degrees, TRs in [tr_min, tr_max] ms, total duration TI + ΣTR ≤ budget.
Flip angles and TRs are sigmoid-bounded; the duration budget is a quadratic penalty during the
descent and an exact projection at the end (:meth:`DesignConstraints.project`), which shrinks every
TR's excess over ``tr_min`` by one common factor. Random baselines are drawn from the same box and
projected the same way, so designed and random schedules obey identical constraints.

Rerun::

    python -m drone_training.schedule_design --out drone_core/schedules/epi_mrf_25.json

(about a minute or two on a 2-core CPU with the defaults; prints the report written to
``docs/SCHEDULE.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from drone_core.crb import BRAIN_TISSUES_1P5T, crb, crb_cost, crb_cost_tensors
from drone_core.schedule import Schedule

__all__ = ["DesignConstraints", "DesignResult", "random_schedules", "design_schedule", "main"]

#: Designed flip angles (degrees) and TRs (ms) are written with this many decimals.
_DECIMALS = 3
_ROUNDING_MS = 10.0**-_DECIMALS


@dataclass(frozen=True)
class DesignConstraints:
    """The box a schedule must lie in.

    Attributes:
        n_frames: number of frames.
        te_ms: echo time (fixed), ms.
        ti_ms: inversion time (fixed), ms.
        fa_min_deg, fa_max_deg: flip angle bounds, degrees.
        tr_min_ms: shortest TR, ms. Default 45 ms = TE 23 ms + 22 ms for the second half of a
            single-shot EPI readout (≈ 128 echoes × 0.35 ms / 2) and the spoiler gradient.
        tr_max_ms: longest TR, ms.
        budget_ms: upper bound on TI + ΣTR, ms.
        inversion_efficiency: η of the preparation.
    """

    n_frames: int = 25
    te_ms: float = 23.0
    ti_ms: float = 19.0
    fa_min_deg: float = 5.0
    fa_max_deg: float = 90.0
    tr_min_ms: float = 45.0
    tr_max_ms: float = 250.0
    budget_ms: float = 3500.0
    inversion_efficiency: float = 1.0

    def __post_init__(self) -> None:
        if self.tr_min_ms <= self.te_ms:
            raise ValueError(f"tr_min_ms: expected > te_ms = {self.te_ms}, got {self.tr_min_ms}")
        if self.ti_ms + self.n_frames * self.tr_min_ms > self.budget_ms:
            raise ValueError(f"budget_ms: {self.budget_ms} ms cannot hold {self.n_frames} TRs of at least "
                             f"{self.tr_min_ms} ms after TI {self.ti_ms} ms")
        if not 0 < self.fa_min_deg < self.fa_max_deg <= 180:
            raise ValueError(f"fa_min_deg, fa_max_deg: expected 0 < min < max ≤ 180, got "
                             f"{self.fa_min_deg}, {self.fa_max_deg}")

    def project(self, tr_ms: np.ndarray) -> np.ndarray:
        """Scale every TR's excess over ``tr_min_ms`` by one factor so TI + ΣTR ≤ budget.

        The budget is kept with a margin of 0.5 µs per frame so that rounding the TRs to 1 µs
        (:meth:`schedule`) cannot push the total over it.
        """
        tr = np.clip(np.asarray(tr_ms, dtype=np.float64), self.tr_min_ms, self.tr_max_ms)
        room = self.budget_ms - self.ti_ms - self.n_frames * (self.tr_min_ms + _ROUNDING_MS / 2)
        excess = tr - self.tr_min_ms
        if excess.sum() > room:
            tr = self.tr_min_ms + excess * (room / excess.sum()) * (1 - 1e-9)
        return tr

    def schedule(self, flip_angle_deg: np.ndarray, tr_ms: np.ndarray, name: str) -> Schedule:
        """A validated :class:`Schedule` from arrays (TRs projected onto the budget)."""
        fa = np.clip(np.asarray(flip_angle_deg, dtype=np.float64), self.fa_min_deg, self.fa_max_deg)
        return Schedule(name, tuple(round(float(a), _DECIMALS) for a in fa),
                        tuple(round(float(t), _DECIMALS) for t in self.project(tr_ms)),
                        self.te_ms, self.ti_ms, self.inversion_efficiency)


@dataclass
class DesignResult:
    """What :func:`design_schedule` found."""

    schedule: Schedule
    cost: float
    restart_costs: list[float]
    seconds: float


def _tissue_tensors(tissues: dict[str, tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t1 = torch.tensor([v[0] for v in tissues.values()], dtype=torch.float64)
    t2 = torch.tensor([v[1] for v in tissues.values()], dtype=torch.float64)
    return t1, t2


def random_schedules(c: DesignConstraints, count: int, seed: int) -> list[Schedule]:
    """``count`` schedules with FA ~ U(fa_min, fa_max), TR ~ U(tr_min, tr_max), projected on the budget."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        fa = rng.uniform(c.fa_min_deg, c.fa_max_deg, c.n_frames)
        tr = rng.uniform(c.tr_min_ms, c.tr_max_ms, c.n_frames)
        out.append(c.schedule(fa, tr, f"random-{seed}-{i}"))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _descend(c: DesignConstraints, fa0: np.ndarray, tr0: np.ndarray, steps: int, lr: float,
             t1: torch.Tensor, t2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Adam on sigmoid-bounded flip angles and TRs from one start."""
    fa_span = c.fa_max_deg - c.fa_min_deg
    tr_span = c.tr_max_ms - c.tr_min_ms
    a = torch.tensor(_logit((fa0 - c.fa_min_deg) / fa_span), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(_logit((tr0 - c.tr_min_ms) / tr_span), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    best = (math.inf, fa0, tr0)
    for _ in range(steps):
        fa = c.fa_min_deg + fa_span * torch.sigmoid(a)
        tr = c.tr_min_ms + tr_span * torch.sigmoid(b)
        cost = crb_cost_tensors(fa, tr, c.te_ms, c.ti_ms, c.inversion_efficiency, t1, t2)
        over = torch.relu(c.ti_ms + tr.sum() - c.budget_ms) / 100.0
        loss = torch.log(cost) + 10.0 * over**2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if over.item() == 0.0 and cost.item() < best[0]:
            best = (cost.item(), fa.detach().numpy().copy(), tr.detach().numpy().copy())
    with torch.no_grad():
        fa_end = (c.fa_min_deg + fa_span * torch.sigmoid(a)).numpy()
        tr_end = (c.tr_min_ms + tr_span * torch.sigmoid(b)).numpy()
    final = crb_cost(c.schedule(fa_end, tr_end, "tmp"))
    if final <= best[0]:
        return fa_end, tr_end
    return best[1], best[2]


def design_schedule(
    c: DesignConstraints = DesignConstraints(),
    *,
    restarts: int = 12,
    steps: int = 400,
    lr: float = 0.05,
    seed: int = 0,
    tissues: dict[str, tuple[float, float]] | None = None,
    name: str = "epi_mrf_25",
    log: bool = True,
) -> DesignResult:
    """Minimise the CRB cost by Adam from ``restarts`` random starts (seeded); keep the best.

    Each start is a random schedule from :func:`random_schedules`' box; cost is evaluated after
    the exact budget projection.
    """
    tissues = BRAIN_TISSUES_1P5T if tissues is None else tissues
    t1, t2 = _tissue_tensors(tissues)
    starts = random_schedules(c, restarts, seed)
    t0 = time.perf_counter()
    best: tuple[float, Schedule | None] = (math.inf, None)
    costs = []
    for k, start in enumerate(starts):
        fa, tr = _descend(c, np.array(start.flip_angle_deg), np.array(start.tr_ms), steps, lr, t1, t2)
        sch = c.schedule(fa, tr, name)
        cost = crb_cost(sch, tissues)
        costs.append(cost)
        if log:
            print(f"restart {k + 1}/{restarts}: start cost {crb_cost(start, tissues):.1f} → {cost:.1f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if cost < best[0]:
            best = (cost, sch)
    assert best[1] is not None
    return DesignResult(best[1], best[0], costs, time.perf_counter() - t0)


def report(result: DesignResult, c: DesignConstraints, n_random: int, seed: int) -> dict:
    """CRB of the designed schedule next to ``n_random`` random ones (numbers for docs/SCHEDULE.md)."""
    tissues = BRAIN_TISSUES_1P5T
    rand = random_schedules(c, n_random, seed + 1000)
    rand_costs = np.array([crb_cost(s) for s in rand])
    best_random = rand[int(np.argmin(rand_costs))]

    def rel(s: Schedule) -> dict[str, dict[str, float]]:
        r = crb(s, [v[0] for v in tissues.values()], [v[1] for v in tissues.values()])
        return {name: {"t1": float(r.relative_std[i, 1]), "t2": float(r.relative_std[i, 2])}
                for i, name in enumerate(tissues)}

    rand_rel = [rel(s) for s in rand]
    median_rel = {name: {p: float(np.median([r[name][p] for r in rand_rel])) for p in ("t1", "t2")}
                  for name in tissues}

    return {
        "constraints": asdict(c),
        "designed": {"cost": result.cost, "relative_sqrt_crb": rel(result.schedule),
                     "duration_ms": result.schedule.duration_ms, "restart_costs": result.restart_costs,
                     "seconds": result.seconds},
        "random": {"count": n_random, "seed": seed + 1000, "median_cost": float(np.median(rand_costs)),
                   "best_cost": float(rand_costs.min()), "worst_cost": float(rand_costs.max()),
                   "best_relative_sqrt_crb": rel(best_random),
                   "median_relative_sqrt_crb": median_rel},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drone_training.schedule_design", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="write the designed schedule JSON here")
    p.add_argument("--report", type=Path, help="write the JSON report (CRB vs random schedules) here")
    p.add_argument("--restarts", type=int, default=12)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=100, help="random schedules to compare against")
    p.add_argument("--n-frames", type=int, default=25)
    p.add_argument("--budget-ms", type=float, default=3500.0)
    p.add_argument("--tr-min-ms", type=float, default=45.0)
    p.add_argument("--tr-max-ms", type=float, default=250.0)
    p.add_argument("--name", default="epi_mrf_25")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    c = DesignConstraints(n_frames=args.n_frames, budget_ms=args.budget_ms, tr_min_ms=args.tr_min_ms,
                          tr_max_ms=args.tr_max_ms)
    result = design_schedule(c, restarts=args.restarts, steps=args.steps, lr=args.lr, seed=args.seed, name=args.name)
    rep = report(result, c, args.random, args.seed)
    text = json.dumps(rep, indent=2)
    print(text)
    if args.out:
        result.schedule.save(args.out)
        print(f"schedule written to {args.out}", file=sys.stderr)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
