"""Schedule design: the descent lowers the CRB cost, respects every constraint, is seeded-deterministic;
the shipped default schedule beats random schedules of the same constraints by a wide margin."""

from __future__ import annotations

import numpy as np
import pytest

from drone_core.crb import crb_cost
from drone_core.schedule import default_schedule
from drone_training.schedule_design import DesignConstraints, design_schedule, random_schedules

SMALL = DesignConstraints(n_frames=8, budget_ms=1200.0)


def _within(c: DesignConstraints, s) -> None:
    fa, tr = s.arrays()
    assert s.n_frames == c.n_frames
    assert np.all(fa >= c.fa_min_deg) and np.all(fa <= c.fa_max_deg)
    assert np.all(tr >= c.tr_min_ms - 1e-9) and np.all(tr <= c.tr_max_ms + 1e-9)
    assert s.duration_ms <= c.budget_ms + 1e-6
    assert s.te_ms == c.te_ms and s.ti_ms == c.ti_ms


def test_random_schedules_obey_constraints_and_budget_projection() -> None:
    tight = DesignConstraints(n_frames=10, budget_ms=1000.0)  # forces the projection (E[ΣTR] ≈ 1475 ms)
    for s in random_schedules(tight, 20, seed=3):
        _within(tight, s)


def test_design_lowers_cost_and_is_deterministic() -> None:
    a = design_schedule(SMALL, restarts=2, steps=40, seed=5, log=False)
    b = design_schedule(SMALL, restarts=2, steps=40, seed=5, log=False)
    _within(SMALL, a.schedule)
    starts = [crb_cost(s) for s in random_schedules(SMALL, 2, seed=5)]
    # Each restart must improve on its own start; 40 Adam steps at lr 0.05 typically halve it.
    assert all(end < start for end, start in zip(a.restart_costs, starts))
    assert a.cost == min(a.restart_costs)
    assert a.schedule.digest() == b.schedule.digest()


def test_default_schedule_beats_random_ones() -> None:
    c = DesignConstraints()
    costs = np.array([crb_cost(s) for s in random_schedules(c, 30, seed=1234)])
    shipped = crb_cost(default_schedule())
    _within(c, default_schedule())
    # docs/SCHEDULE.md: designed 57.3 vs best-of-100 random 195.5; 2× margin leaves room for re-designs.
    assert shipped < 0.5 * costs.min()


def test_constraints_reject_impossible_budget() -> None:
    with pytest.raises(ValueError, match="budget_ms"):
        DesignConstraints(n_frames=25, budget_ms=1000.0)
    with pytest.raises(ValueError, match="tr_min_ms"):
        DesignConstraints(tr_min_ms=20.0)
