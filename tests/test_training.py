"""drone_training.train: determinism, learning, outputs, the CLI, and DDP (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drone_core.dictionary import Dictionary, grid
from drone_core.model import DroneModel
from drone_core.schedule import Schedule
from drone_training.train import TrainConfig, evaluate, train, write_outputs

#: DDP (2 processes × half batch, gradients averaged) vs one process on the same permutation and
#: no noise: identical math up to float32 summation order across ~10 Adam steps.
DDP_WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def small_dictionary() -> Dictionary:
    rng = np.random.default_rng(21)
    s = Schedule("train-test", rng.uniform(5, 90, 10).tolist(), rng.uniform(45, 250, 10).tolist(), 23.0, 19.0, 1.0)
    t1, t2, _ = grid((50, 3000), (10, 800), n_t1=16, n_t2=16, spacing="log")  # 256 atoms, T1 > T2 kept
    return Dictionary.generate(s, t1, t2)


def _state(model: DroneModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def test_seeded_training_is_deterministic(small_dictionary: Dictionary) -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, noise_level=0.02, seed=3, device="cpu", hidden=(16, 16))
    a = train(small_dictionary, cfg, progress=False, log=False)
    b = train(small_dictionary, cfg, progress=False, log=False)
    c = train(small_dictionary, TrainConfig(**{**cfg.__dict__, "seed": 4}), progress=False, log=False)
    for k, v in _state(a.model).items():
        assert torch.equal(v, _state(b.model)[k])
    assert a.train_loss == b.train_loss
    assert any(not torch.equal(v, _state(c.model)[k]) for k, v in _state(a.model).items())


def test_training_learns(small_dictionary: Dictionary) -> None:
    cfg = TrainConfig(epochs=40, batch_size=32, lr=5e-3, noise_level=0.0, seed=0, device="cpu",
                      hidden=(32, 32), lr_schedule="onecycle")
    r = train(small_dictionary, cfg, progress=False, log=False)
    assert r.train_loss[-1] < 0.2 * r.train_loss[0]
    m = evaluate(r.model, small_dictionary)
    # A 32-32 net after 40 short epochs: well inside the ranges, far better than predicting the mean.
    spread = np.std(small_dictionary.t1_ms)
    assert m["t1_ms"]["rmse"] < 0.5 * spread
    assert m["t1_ms"]["r2"] > 0.75 and m["t2_ms"]["r2"] > 0.75


def test_early_stopping_restores_best(small_dictionary: Dictionary) -> None:
    cfg = TrainConfig(epochs=200, batch_size=64, lr=5e-2, noise_level=0.05, seed=1, device="cpu", hidden=(8,),
                      patience=3)
    r = train(small_dictionary, cfg, progress=False, log=False)
    assert r.stopped_early and r.epochs_run < 200
    assert r.model.training["best_val_loss"] == min(r.val_loss)


def test_outputs_written(small_dictionary: Dictionary, tmp_path: Path) -> None:
    r = train(small_dictionary, TrainConfig(epochs=2, batch_size=64, device="cpu", hidden=(8,)), progress=False,
              log=False)
    summary = write_outputs(r, small_dictionary, tmp_path, uncertainty_shape=(1, 6, 6, 4))
    for name in ("model.safetensors", "loss_curve.png", "scatter.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["metrics"]["noise_free"]["t1_ms"]["rmse"] == summary["metrics"]["noise_free"]["t1_ms"]["rmse"]
    assert {"rmse", "bias", "r2"} <= set(on_disk["metrics"]["noise_free"]["t2_ms"])
    assert on_disk["training"]["hardware"]["device"] == "cpu"
    loaded = DroneModel.load(tmp_path / "model.safetensors")
    assert loaded.training["epochs_run"] == 2
    assert loaded.uncertainty_table is not None and loaded.uncertainty_table.log_sd.shape == (2, 1, 6, 6, 4)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")  # type: ignore[arg-type]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_ddp_two_cpu_processes_match_single_process(small_dictionary: Dictionary, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: with no noise, averaging two half-batch gradients is the
    full-batch gradient, so the trained weights equal a one-process run."""
    dict_path = tmp_path / "d.safetensors"
    small_dictionary.save(dict_path)
    common = ["--dictionary", str(dict_path), "--epochs", "3", "--batch-size", "64", "--noise", "0",
              "--hidden", "16", "--device", "cpu", "--quiet", "--seed", "5"]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "drone_training.train", "--out", str(tmp_path / "ddp"), *common], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _run([sys.executable, "-m", "drone_training.train", "--out", str(tmp_path / "one"), *common], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    s_ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert s_ddp["world_size"] == 2
    a = DroneModel.load(tmp_path / "ddp" / "model.safetensors").network.state_dict()
    b = DroneModel.load(tmp_path / "one" / "model.safetensors").network.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=DDP_WEIGHT_ATOL, rtol=0)


def test_cli_train_writes_outputs(small_dictionary: Dictionary, tmp_path: Path) -> None:
    from drone_cli.main import main

    dict_path = tmp_path / "d.safetensors"
    small_dictionary.save(dict_path)
    rc = main(["train", "--dictionary", str(dict_path), "--out", str(tmp_path / "run"), "--epochs", "2",
               "--hidden", "8", "--device", "cpu", "--quiet", "--fold", "2", "--no-uncertainty-table"])
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["training"]["n_atoms"] == -(-len(small_dictionary) // 2)  # ceil: stride 2 keeps 0, 2, 4, …
    assert summary["metrics"]["noise_free"]["t1_ms"]["n"] == len(small_dictionary)  # evaluated on all atoms


# ---------------------------------------------------------------------- B1 and the training atoms
@pytest.fixture(scope="module")
def b1_dictionary(small_dictionary: Dictionary) -> Dictionary:
    rng = np.random.default_rng(22)
    t1 = np.repeat(small_dictionary.t1_ms, 6)
    t2 = np.repeat(small_dictionary.t2_ms, 6)
    b1 = rng.uniform(0.6, 1.4, t1.size)
    return Dictionary.generate(small_dictionary.schedule, t1, t2, b1)


def test_b1_input_training_uses_the_b1(b1_dictionary: Dictionary) -> None:
    """A B1-input network relies on its B1 input: the true B1 gives far smaller errors than a wrong one."""
    cfg = TrainConfig(epochs=60, batch_size=64, lr=5e-3, noise_level=0.0, seed=0, device="cpu", hidden=(32, 32),
                      lr_schedule="onecycle", b1_input=True)
    model = train(b1_dictionary, cfg, progress=False, log=False).model
    assert model.b1.input and model.b1.range == pytest.approx((b1_dictionary.b1.min(), b1_dictionary.b1.max()))
    mags = np.abs(b1_dictionary.atoms)
    assert b1_dictionary.b1 is not None
    right = model.predict(mags, b1_dictionary.b1, precision="fp32")
    lo, hi = model.b1.range
    wrong = model.predict(mags, np.clip(2.0 - b1_dictionary.b1, lo, hi), precision="fp32")  # mirrored: 0.6 ↔ 1.4

    def rmse(est: np.ndarray, true: np.ndarray) -> float:
        return float(np.sqrt(np.mean((est - true) ** 2)))

    # Seeded: measured 0.44 (T1) and 0.42 (T2) of the wrong-B1 RMSE.
    assert rmse(right[0], b1_dictionary.t1_ms) < 0.6 * rmse(wrong[0], b1_dictionary.t1_ms)
    assert rmse(right[1], b1_dictionary.t2_ms) < 0.6 * rmse(wrong[1], b1_dictionary.t2_ms)


def test_b1_output_training(b1_dictionary: Dictionary) -> None:
    cfg = TrainConfig(epochs=40, batch_size=64, lr=5e-3, noise_level=0.0, seed=0, device="cpu", hidden=(32, 32),
                      lr_schedule="onecycle", b1_output=True)
    model = train(b1_dictionary, cfg, progress=False, log=False).model
    metrics = evaluate(model, b1_dictionary)
    assert model.b1.output and "b1" in metrics
    assert metrics["b1"]["r2"] > 0.8  # the 10-frame schedule encodes B1 (seeded)


def test_b1_training_needs_a_b1_axis(small_dictionary: Dictionary) -> None:
    with pytest.raises(ValueError, match="needs a dictionary with a B1 axis"):
        train(small_dictionary, TrainConfig(epochs=1, b1_input=True, device="cpu"), progress=False, log=False)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(b1_input=True, b1_output=True)


def test_relative_weighting_changes_training(small_dictionary: Dictionary) -> None:
    cfg = dict(epochs=3, batch_size=32, noise_level=0.0, seed=0, device="cpu", hidden=(16,))
    plain = train(small_dictionary, TrainConfig(**cfg), progress=False, log=False)
    weighted = train(small_dictionary, TrainConfig(**cfg, relative_knee_ms=(500.0, 200.0)), progress=False, log=False)
    assert plain.train_loss != weighted.train_loss
    with pytest.raises(ValueError, match="linear targets"):
        TrainConfig(relative_knee_ms=(500.0, 200.0), target_transform="log")


def test_training_dictionary_recipe() -> None:
    from drone_core.dictionary import paper_grid
    from drone_training.train import training_dictionary

    rng = np.random.default_rng(0)
    s = Schedule("recipe", rng.uniform(5, 90, 6).tolist(), rng.uniform(45, 250, 6).tolist(), 23.0, 19.0)
    d = training_dictionary(s, b1_draws=2, extra_atoms=500, extra_t1_range_ms=(10, 1000), extra_t2_range_ms=(5, 600))
    n_paper = paper_grid()[0].size
    assert len(d) == 2 * (n_paper + 500)
    assert d.b1 is not None and 0.5 <= d.b1.min() and d.b1.max() <= 1.5
    extra_t1 = np.unique(d.t1_ms[2 * n_paper:])
    assert extra_t1.min() >= 10 and extra_t1.max() <= 1000 and np.all(d.t1_ms > d.t2_ms)


def test_projection_is_folded_into_an_ordinary_network(small_dictionary: Dictionary) -> None:
    """Training on the fingerprint's projection onto the atoms' first k singular vectors: the saved network
    takes the whole fingerprint and gives what the projected network gives (float32 rounding), and it learns."""
    from drone_core.model import normalise_fingerprints
    from drone_training.train import ProjectedMLP, svd_basis

    basis = svd_basis(small_dictionary.atoms, 4)
    assert basis.shape == (10, 4)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-5, rtol=0)
    cfg = TrainConfig(epochs=40, batch_size=32, lr=5e-3, noise_level=0.0, seed=0, device="cpu", hidden=(32, 32),
                      lr_schedule="onecycle", projection_rank=4)
    r = train(small_dictionary, cfg, progress=False, log=False)
    assert r.model.network.n_frames == 10 and r.model.network.layers[0].in_features == 10
    m = evaluate(r.model, small_dictionary)
    assert m["t1_ms"]["r2"] > 0.75 and m["t2_ms"]["r2"] > 0.75
    from drone_core.model import DroneMLP

    projected = ProjectedMLP(basis, DroneMLP(4, (8,), "tanh"))
    x, _ = normalise_fingerprints(np.abs(small_dictionary.atoms))
    with torch.no_grad():
        torch.testing.assert_close(projected.fold()(x), projected(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="projection_rank"):
        svd_basis(small_dictionary.atoms, 11)
    with pytest.raises(ValueError, match="projection_rank"):
        TrainConfig(projection_rank=0)
