"""Design an MRF schedule by minimising the Cramér–Rao cost (Zhao et al., IEEE TMI 2019).

Cost (:class:`DesignObjective`): the mean over B1 values (default only B1 = 1) of
Σ_tissues CRB(T1)/T1² + CRB(T2)/T2² [+ w·CRB(B1)/B1²] over WM, GM and CSF of the DRONE paper's
Table 1, at M0 = σ = 1 with M0 a nuisance parameter (:func:`drone_core.crb.crb_cost_tensors`), for
the signal with the slice profile of the constraints' ``excitation`` (None: the ideal slice). With
``estimate_b1`` B1 is a fourth unknown (no B1 map): the T1/T2 bounds include its confounding and
``w = b1_weight`` weighs the bound on B1 itself — a schedule that encodes B1 in the fingerprint.

Constraints (:class:`DesignConstraints`): N frames, fixed TE and TI, flip angles in
[fa_min, fa_max] degrees, TRs in [tr_min, tr_max] ms, total duration TI + ΣTR ≤ budget.
Flip angles and TRs are sigmoid-bounded; the duration budget is a quadratic penalty during the
descent and an exact projection at the end (:meth:`DesignConstraints.project`), which shrinks every
TR's excess over ``tr_min`` by one common factor. Random baselines are drawn from the same box and
projected the same way, so designed and random schedules obey identical constraints.

Rerun (``docs/SCHEDULE.md`` has the commands and figures)::

    python -m drone_training.schedule_design --ideal --out drone_core/schedules/epi_mrf_25.json
    python -m drone_training.schedule_design --b1-cost 1 --out drone_core/schedules/epi_mrf_25_b1.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from drone_core.crb import BRAIN_TISSUES_1P5T, crb, crb_cost, crb_cost_tensors, schedule_profile
from drone_core.excitation import DEFAULT_N_POSITIONS, TABLE_MAX_DEG, Excitation
from drone_core.schedule import Schedule, default_schedule

__all__ = ["DesignConstraints", "DesignObjective", "DesignResult", "random_schedules", "design_schedule",
           "b1_bounds", "report", "add_arguments", "run", "main", "REPORT_B1_VALUES"]

#: Designed flip angles (degrees) and TRs (ms) are written with this many decimals.
_DECIMALS = 3
_ROUNDING_MS = 10.0**-_DECIMALS
#: B1 values of the B1 report (the range across a head at 3 T, DESIGN.md).
REPORT_B1_VALUES: tuple[float, ...] = (0.7, 1.0, 1.3)


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
        excitation: the slice-selective pulse of the designed schedule (its slice profile is in the
            cost), or None for an ideal slice.
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
    excitation: Excitation | None = None

    def __post_init__(self) -> None:
        if self.tr_min_ms <= self.te_ms:
            raise ValueError(f"tr_min_ms: expected > te_ms = {self.te_ms}, got {self.tr_min_ms}")
        if self.ti_ms + self.n_frames * self.tr_min_ms > self.budget_ms:
            raise ValueError(f"budget_ms: {self.budget_ms} ms cannot hold {self.n_frames} TRs of at least "
                             f"{self.tr_min_ms} ms after TI {self.ti_ms} ms")
        if not 0 < self.fa_min_deg < self.fa_max_deg <= 180:
            raise ValueError(f"fa_min_deg, fa_max_deg: expected 0 < min < max ≤ 180, got "
                             f"{self.fa_min_deg}, {self.fa_max_deg}")
        if self.excitation is not None and not isinstance(self.excitation, Excitation):
            raise TypeError(f"excitation: expected drone_core.excitation.Excitation or None, got "
                            f"{type(self.excitation).__name__}")

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
        """A validated :class:`Schedule` from arrays (TRs projected onto the budget), with ``excitation``."""
        fa = np.clip(np.asarray(flip_angle_deg, dtype=np.float64), self.fa_min_deg, self.fa_max_deg)
        return Schedule(name, tuple(round(float(a), _DECIMALS) for a in fa),
                        tuple(round(float(t), _DECIMALS) for t in self.project(tr_ms)),
                        self.te_ms, self.ti_ms, self.inversion_efficiency, self.excitation)


@dataclass(frozen=True)
class DesignObjective:
    """What the design minimises (see the module docstring).

    Attributes:
        tissues: name → (T1 ms, T2 ms); default WM/GM/CSF of the paper's Table 1.
        b1_values: relative B1 values the cost is averaged over, e.g. ``(0.8, 1.0, 1.2)``.
        estimate_b1: B1 is a fourth unknown (no B1 map).
        b1_weight: weight w ≥ 0 of CRB(B1)/B1² (needs ``estimate_b1``).
        n_positions: slice positions of the profile integral (with an excitation).
    """

    tissues: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(BRAIN_TISSUES_1P5T))
    b1_values: tuple[float, ...] = (1.0,)
    estimate_b1: bool = False
    b1_weight: float = 0.0
    n_positions: int = DEFAULT_N_POSITIONS

    def __post_init__(self) -> None:
        if not self.tissues:
            raise ValueError("tissues: expected at least one tissue, got none")
        values = tuple(float(b) for b in self.b1_values)
        if not values or not all(math.isfinite(b) and b > 0 for b in values):
            raise ValueError(f"b1_values: expected a non-empty list of finite values > 0, got {list(self.b1_values)}")
        object.__setattr__(self, "b1_values", values)
        if not (math.isfinite(self.b1_weight) and self.b1_weight >= 0):
            raise ValueError(f"b1_weight: expected a finite number ≥ 0, got {self.b1_weight}")
        if self.b1_weight > 0 and not self.estimate_b1:
            raise ValueError(f"b1_weight: expected 0 unless estimate_b1 (B1 known: no B1 bound), got {self.b1_weight}")
        if not isinstance(self.n_positions, int) or self.n_positions < 1:
            raise ValueError(f"n_positions: expected a positive int, got {self.n_positions!r}")

    def check(self, c: DesignConstraints) -> None:
        """Refuse B1 values the slice-profile table cannot hold at the largest flip angle."""
        if c.excitation is not None and max(self.b1_values) * c.fa_max_deg > TABLE_MAX_DEG:
            raise ValueError(f"b1_values: expected max B1 × fa_max_deg ≤ {TABLE_MAX_DEG:g}° for the slice profile, "
                             f"got {max(self.b1_values):g} × {c.fa_max_deg:g}°")

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t1_ms, t2_ms, b1)`` float64 ``(n_tissues·n_b1,)``: every tissue at every B1 value."""
        n_b1 = len(self.b1_values)
        t1 = torch.tensor([v[0] for v in self.tissues.values()], dtype=torch.float64).repeat(n_b1)
        t2 = torch.tensor([v[1] for v in self.tissues.values()], dtype=torch.float64).repeat(n_b1)
        b1 = torch.tensor(self.b1_values, dtype=torch.float64).repeat_interleave(len(self.tissues))
        return t1, t2, b1

    def cost(self, schedule: Schedule) -> float:
        """The objective of a schedule (with the schedule's own slice profile)."""
        return crb_cost(schedule, self.tissues, b1_values=self.b1_values, include_b1=self.estimate_b1,
                        b1_weight=self.b1_weight, n_positions=self.n_positions)

    def describe(self) -> str:
        tissues = "/".join(self.tissues)
        b1 = ", ".join(f"{b:g}" for b in self.b1_values)
        text = f"mean over B1 ∈ {{{b1}}} of Σ_{tissues} CRB(T1)/T1² + CRB(T2)/T2²"
        if self.estimate_b1:
            text += f" + {self.b1_weight:g}·CRB(B1)/B1², B1 unknown" if self.b1_weight else ", B1 unknown"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"tissues": {k: list(v) for k, v in self.tissues.items()}, "b1_values": list(self.b1_values),
                "estimate_b1": self.estimate_b1, "b1_weight": self.b1_weight, "n_positions": self.n_positions,
                "description": self.describe()}


@dataclass
class DesignResult:
    """What :func:`design_schedule` found.

    Attributes:
        schedule: the best schedule; cost: its objective; restart_costs: the objective at the end of
        every restart; start_costs: at its start; seconds: wall time.
    """

    schedule: Schedule
    cost: float
    restart_costs: list[float]
    seconds: float
    start_costs: list[float] = field(default_factory=list)


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


def _descend(c: DesignConstraints, objective: DesignObjective, fa0: np.ndarray, tr0: np.ndarray, steps: int,
             lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Adam on sigmoid-bounded flip angles and TRs from one start."""
    fa_span = c.fa_max_deg - c.fa_min_deg
    tr_span = c.tr_max_ms - c.tr_min_ms
    t1, t2, b1 = objective.rows()
    profile = None if c.excitation is None else schedule_profile(c.schedule(fa0, tr0, "start"), objective.n_positions)
    a = torch.tensor(_logit((fa0 - c.fa_min_deg) / fa_span), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(_logit((tr0 - c.tr_min_ms) / tr_span), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.05)
    best = (math.inf, fa0, tr0)
    n_b1 = len(objective.b1_values)
    for _ in range(steps):
        fa = c.fa_min_deg + fa_span * torch.sigmoid(a)
        tr = c.tr_min_ms + tr_span * torch.sigmoid(b)
        cost = crb_cost_tensors(fa, tr, c.te_ms, c.ti_ms, c.inversion_efficiency, t1, t2, b1,
                                include_b1=objective.estimate_b1, b1_weight=objective.b1_weight,
                                profile=profile) / n_b1
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
    final = objective.cost(c.schedule(fa_end, tr_end, "tmp"))
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
    objective: DesignObjective | None = None,
    initial: Schedule | None = None,
    name: str = "epi_mrf_25",
    log: bool = True,
) -> DesignResult:
    """Minimise the CRB objective by Adam from ``restarts`` starts (seeded); keep the best.

    Args:
        c: the constraints (and the excitation whose slice profile the signal has).
        restarts: number of starts: random schedules from :func:`random_schedules`' box, the first
            replaced by ``initial`` when given.
        steps, lr: Adam steps per start and learning rate (cosine decay to 5 %).
        seed: seed of the random starts.
        tissues: shorthand for ``DesignObjective(tissues=...)`` (ignored when ``objective`` is given).
        objective: what to minimise; default Σ CRB(T1)/T1² + CRB(T2)/T2² at B1 = 1 known.
        initial: a schedule to start the first restart from (its frames, TE and TI must match ``c``).
        name: name of the designed schedule.
        log: progress lines on stderr.

    Every cost is evaluated after the exact budget projection.
    """
    if objective is None:
        objective = DesignObjective() if tissues is None else DesignObjective(tissues=dict(tissues))
    objective.check(c)
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts: expected a positive int, got {restarts!r}")
    starts = random_schedules(c, restarts, seed)
    if initial is not None:
        if initial.n_frames != c.n_frames or initial.te_ms != c.te_ms or initial.ti_ms != c.ti_ms:
            raise ValueError(f"initial: expected {c.n_frames} frames, TE {c.te_ms} ms, TI {c.ti_ms} ms like the "
                             f"constraints, got {initial.n_frames} frames, TE {initial.te_ms}, TI {initial.ti_ms}")
        fa, tr = initial.arrays()
        starts[0] = c.schedule(fa, tr, f"start-{initial.name}")
    t0 = time.perf_counter()
    best: tuple[float, Schedule | None] = (math.inf, None)
    costs, start_costs = [], []
    for k, start in enumerate(starts):
        fa, tr = _descend(c, objective, np.array(start.flip_angle_deg), np.array(start.tr_ms), steps, lr)
        sch = c.schedule(fa, tr, name)
        cost = objective.cost(sch)
        costs.append(cost)
        start_costs.append(objective.cost(start))
        if log:
            print(f"restart {k + 1}/{restarts}{' (from ' + initial.name + ')' if k == 0 and initial else ''}: "
                  f"start cost {start_costs[-1]:.1f} → {cost:.1f} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
        if cost < best[0]:
            best = (cost, sch)
    assert best[1] is not None
    return DesignResult(best[1], best[0], costs, time.perf_counter() - t0, start_costs)


def b1_bounds(schedule: Schedule, b1_values: Sequence[float] = REPORT_B1_VALUES,
              tissues: dict[str, tuple[float, float]] | None = None,
              n_positions: int = DEFAULT_N_POSITIONS) -> dict[str, dict[str, dict[str, float]]]:
    """√CRB·M0/(σ·θ) of T1 and T2 with B1 known and unknown, and of B1, per B1 value and tissue.

    Returns:
        ``{f"{b1:g}": {tissue: {"t1_known", "t2_known", "t1", "t2", "b1"}}}``: the unit-free
        relative bounds at M0/σ = 1 (divide by M0/σ; at 1 % noise multiply by 1 %). ``t1``/``t2``
        are with B1 unknown (estimated from the fingerprint), ``b1`` is √CRB(B1)/B1.
    """
    tissues = BRAIN_TISSUES_1P5T if tissues is None else tissues
    t1 = [v[0] for v in tissues.values()]
    t2 = [v[1] for v in tissues.values()]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for b in b1_values:
        known = crb(schedule, t1, t2, b1=b, n_positions=n_positions).relative_std
        unknown = crb(schedule, t1, t2, b1=b, include_b1=True, n_positions=n_positions).relative_std
        out[f"{b:g}"] = {name: {"t1_known": float(known[i, 1]), "t2_known": float(known[i, 2]),
                                "t1": float(unknown[i, 1]), "t2": float(unknown[i, 2]), "b1": float(unknown[i, 3])}
                         for i, name in enumerate(tissues)}
    return out


def report(result: DesignResult, c: DesignConstraints, n_random: int, seed: int,
           objective: DesignObjective | None = None, compare: dict[str, Schedule] | None = None,
           b1_values: Sequence[float] = REPORT_B1_VALUES) -> dict[str, Any]:
    """CRB of the designed schedule next to ``n_random`` random ones and the ``compare`` schedules.

    The relative bounds ``relative_sqrt_crb`` are at B1 = 1 known, with each schedule's own slice
    profile. When the objective estimates B1 or ``compare`` is given, ``b1_bounds`` holds
    :func:`b1_bounds` of the designed and every compared schedule at ``b1_values``, and
    ``compare`` their objective values.
    """
    objective = DesignObjective() if objective is None else objective
    tissues = objective.tissues
    rand = random_schedules(c, n_random, seed + 1000)
    rand_costs = np.array([objective.cost(s) for s in rand]) if rand else np.array([np.nan])
    t1 = [v[0] for v in tissues.values()]
    t2 = [v[1] for v in tissues.values()]

    def rel(s: Schedule) -> dict[str, dict[str, float]]:
        r = crb(s, t1, t2, n_positions=objective.n_positions)
        return {name: {"t1": float(r.relative_std[i, 1]), "t2": float(r.relative_std[i, 2])}
                for i, name in enumerate(tissues)}

    rand_rel = [rel(s) for s in rand]
    out: dict[str, Any] = {
        "constraints": asdict(c),
        "objective": objective.to_dict(),
        "designed": {"name": result.schedule.name, "cost": result.cost, "relative_sqrt_crb": rel(result.schedule),
                     "duration_ms": result.schedule.duration_ms, "restart_costs": result.restart_costs,
                     "start_costs": result.start_costs, "seconds": result.seconds},
    }
    if rand:
        best_random = rand[int(np.argmin(rand_costs))]
        median_rel = {name: {p: float(np.median([r[name][p] for r in rand_rel])) for p in ("t1", "t2")}
                      for name in tissues}
        out["random"] = {"count": n_random, "seed": seed + 1000, "median_cost": float(np.median(rand_costs)),
                         "best_cost": float(rand_costs.min()), "worst_cost": float(rand_costs.max()),
                         "best_relative_sqrt_crb": rel(best_random), "median_relative_sqrt_crb": median_rel}
    compare = compare or {}
    if compare:
        out["compare"] = {name: {"cost": objective.cost(s), "digest": s.digest(),
                                 "excitation": None if s.excitation is None else s.excitation.to_dict(),
                                 "relative_sqrt_crb": rel(s), "duration_ms": s.duration_ms}
                          for name, s in compare.items()}
    if objective.estimate_b1 or compare:
        schedules = {"designed": result.schedule, **compare}
        out["b1_bounds"] = {"b1_values": [float(b) for b in b1_values],
                            "meaning": "sqrt(CRB)*M0/(sigma*theta) at M0/sigma = 1 (divide by M0/sigma); t1/t2 with "
                                       "B1 unknown, *_known with B1 known (a B1 map), b1 = sqrt(CRB(B1))/B1",
                            **{name: b1_bounds(s, b1_values, tissues, objective.n_positions)
                               for name, s in schedules.items()}}
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The design options (shared by ``python -m drone_training.schedule_design`` and ``drone design-schedule``)."""
    p.add_argument("--out", type=Path, help="write the designed schedule JSON here")
    p.add_argument("--report", type=Path, help="write the JSON report (CRB vs random schedules) here")
    p.add_argument("--restarts", type=int, default=12, help="starts of the descent (default 12)")
    p.add_argument("--steps", type=int, default=400, help="Adam steps per start (default 400)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=100, help="random schedules to compare against")
    p.add_argument("--n-frames", type=int, default=25)
    p.add_argument("--budget-ms", type=float, default=3500.0)
    p.add_argument("--tr-min-ms", type=float, default=45.0)
    p.add_argument("--tr-max-ms", type=float, default=250.0)
    p.add_argument("--name", help="name of the designed schedule (default epi_mrf_25, or epi_mrf_25_b1 with "
                                  "--b1-cost)")
    p.add_argument("--schedule", type=Path, help="take the excitation (slice profile) from this schedule JSON "
                                                 "(default: the package's default schedule)")
    p.add_argument("--ideal", action="store_true", help="ideal slice profile (no excitation), as the shipped "
                                                        "epi_mrf_25 frames were designed")
    p.add_argument("--b1-cost", type=float, metavar="WEIGHT",
                   help="B1 unknown (no B1 map): T1/T2 bounds include B1 and WEIGHT·CRB(B1)/B1² is added to the "
                        "cost (0: B1 only a nuisance)")
    p.add_argument("--b1-values", type=float, nargs="+", metavar="B1",
                   help="B1 values the cost is averaged over (default 1; 0.8 1.0 1.2 with --b1-cost)")
    p.add_argument("--init", type=Path, help="start the first restart from this schedule JSON")
    p.add_argument("--compare", type=Path, nargs="*",
                   help="schedules to report next to the design (default with --b1-cost: the package's default)")
    p.add_argument("--n-positions", type=int, default=DEFAULT_N_POSITIONS,
                   help=f"slice positions of the profile integral (default {DEFAULT_N_POSITIONS})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the descent's tensors are tiny, more threads only contend)")


def run(args: argparse.Namespace) -> int:
    """Design, report (stdout JSON, optionally ``--report``), write ``--out``."""
    if args.threads < 1:
        raise ValueError(f"--threads: expected ≥ 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.ideal and args.schedule is not None:
        raise ValueError("--ideal: expected without --schedule (one says no slice profile, the other which one)")
    source = None if args.ideal else (default_schedule() if args.schedule is None else Schedule.load(args.schedule))
    excitation = None if source is None else source.excitation
    c = DesignConstraints(n_frames=args.n_frames, budget_ms=args.budget_ms, tr_min_ms=args.tr_min_ms,
                          tr_max_ms=args.tr_max_ms, excitation=excitation)
    estimate_b1 = args.b1_cost is not None
    b1_values = tuple(args.b1_values) if args.b1_values else ((0.8, 1.0, 1.2) if estimate_b1 else (1.0,))
    objective = DesignObjective(b1_values=b1_values, estimate_b1=estimate_b1,
                                b1_weight=float(args.b1_cost) if estimate_b1 else 0.0, n_positions=args.n_positions)
    name = args.name or ("epi_mrf_25_b1" if estimate_b1 else "epi_mrf_25")
    initial = None if args.init is None else Schedule.load(args.init)
    if args.compare is None:
        compare = {"default": default_schedule()} if estimate_b1 else {}
    else:
        compare = {Path(p).stem: Schedule.load(p) for p in args.compare}
    profile_text = "ideal slice" if excitation is None else excitation.describe()
    print(f"designing {name}: {objective.describe()}; {profile_text}; {args.restarts} restarts × {args.steps} steps, "
          f"seed {args.seed}", file=sys.stderr)
    result = design_schedule(c, restarts=args.restarts, steps=args.steps, lr=args.lr, seed=args.seed,
                             objective=objective, initial=initial, name=name)
    rep = report(result, c, args.random, args.seed, objective, compare)
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    rep["command"] = {k: plain(v) for k, v in vars(args).items() if k not in ("func", "missing", "command")}
    text = json.dumps(rep, indent=2)
    print(text)
    if args.out:
        result.schedule.save(args.out)
        print(f"schedule written to {args.out}", file=sys.stderr)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drone_training.schedule_design", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
