"""The paper's density claim in small form: a network trained on a sub-sampled dictionary beats
dictionary matching against the same sub-sampled dictionary, on the full dictionary with 0.5 %
noise (DRONE paper, Fig. 5). The full-size measurement (paper grid, folds 2–60) is
``python -m drone_training.density``; its figures are in docs/MODEL.md.

Small form: a 70 × 70 log grid (3,920 atoms with T1 > T2) of the default schedule and a 64-64
network trained for 3,000 steps. At fold 2 that small network is not yet better than matching
against a still-dense dictionary, so the small form checks folds 10, 30 and 60.
"""

from __future__ import annotations

import pytest
import torch

from drone_core.dictionary import Dictionary, grid
from drone_core.schedule import default_schedule
from drone_training.density import density_experiment
from drone_training.train import TrainConfig


@pytest.fixture(scope="module")
def full() -> Dictionary:
    t1, t2, _ = grid((100, 4000), (10, 1500), n_t1=70, n_t2=70, spacing="log")
    return Dictionary.generate(default_schedule(), t1, t2)


def test_network_beats_matching_on_sparse_dictionaries(full: Dictionary) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    cfg = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", noise_level=0.02, noise_mode="uniform",
                      device="cpu", hidden=(64, 64), val_size=256)
    rows = density_experiment(full, (10, 30, 60), steps=3000, config=cfg, log=False)
    for r in rows:
        assert r["nn_t1_rmse"] < r["dm_t1_rmse"] and r["nn_t2_rmse"] < r["dm_t2_rmse"], r
    # Matching degrades as the dictionary thins; the network much less (paper: "relatively constant").
    assert rows[-1]["dm_t1_rmse"] > 2 * rows[0]["dm_t1_rmse"]
    assert rows[-1]["nn_t1_rmse"] < 1.5 * rows[0]["nn_t1_rmse"]
