"""The shipped weights: they load, belong to the default schedule, and meet the paper's
noise-free accuracy on the paper dictionary (RMSE T1 ≤ 9.3 ms, T2 ≤ 8.8 ms, R² ≥ 0.99)."""

from __future__ import annotations

import numpy as np
import pytest

from drone_core.dictionary import Dictionary, paper_grid
from drone_core.metrics import summary
from drone_core.model import default_model
from drone_core.schedule import default_schedule

#: The paper's Fig. 3 figures (noise-free training dictionary).
PAPER_RMSE_T1_MS = 9.3
PAPER_RMSE_T2_MS = 8.8
PAPER_R2 = 0.99


@pytest.fixture(scope="module")
def paper_dictionary() -> Dictionary:
    return Dictionary.generate(default_schedule(), *paper_grid())


def test_default_model_matches_default_schedule() -> None:
    model = default_model()
    assert model.schedule.same_physics(default_schedule())
    assert model.network.architecture()["hidden"] == [300, 300]
    assert model.t1_range_ms == (11.0, 4991.0) and model.t2_range_ms == (1.0, 1991.0)


def test_default_model_meets_paper_accuracy(paper_dictionary: Dictionary) -> None:
    t1, t2 = default_model().predict(np.abs(paper_dictionary.atoms))
    s1, s2 = summary(paper_dictionary.t1_ms, t1), summary(paper_dictionary.t2_ms, t2)
    assert s1["rmse"] <= PAPER_RMSE_T1_MS and s2["rmse"] <= PAPER_RMSE_T2_MS, (s1, s2)
    assert s1["r2"] >= PAPER_R2 and s2["r2"] >= PAPER_R2


def test_default_model_m0_recovers_scale(paper_dictionary: Dictionary) -> None:
    rng = np.random.default_rng(0)
    pick = rng.choice(len(paper_dictionary), 500, replace=False)
    scale = rng.uniform(0.5, 2000.0, 500)
    est = default_model().estimate(np.abs(paper_dictionary.atoms[pick]) * scale[:, None])
    # M0 error follows the T1/T2 estimate error (≈ 1 % for the short-T2 atoms at the grid's edge).
    ratio = est.m0 / scale
    assert np.median(np.abs(ratio - 1)) < 0.005 and np.percentile(np.abs(ratio - 1), 95) < 0.05
