"""Train a DRONE network on EPG-simulated fingerprints.

The paper's recipe is the default: fresh complex Gaussian noise on the training atoms every epoch
(2 % of each atom's peak magnitude, :mod:`drone_core.noise`), magnitudes L2-normalised per
fingerprint, Adam at lr 1e-3, MSE on the targets normalised to [0, 1] over the training ranges,
1000 epochs. Options: batch size, learning-rate schedule (constant, one-cycle, cosine), early
stopping on a fixed validation draw, noise per fingerprint drawn from U(0, level), seeded
determinism, ``device="auto"``.

Data parallel: launched under ``torchrun`` (``WORLD_SIZE`` > 1) every process takes its share of
each epoch's permutation, gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on
CUDA) and rank 0 writes the outputs::

    torchrun --nproc_per_node 2 -m drone_training.train --out runs/ddp --epochs 50

Outputs (:func:`write_outputs`): ``model.safetensors``, ``loss_curve.png`` (the paper's Fig. 2),
``scatter.png`` (true vs estimated, Fig. 3) and ``summary.json`` (RMSE, bias, R² per parameter on
the noise-free training atoms, time, hardware, configuration).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from drone_core import __version__
from drone_core.dictionary import Dictionary, paper_grid
from drone_core.hardware import cpu_model
from drone_core.metrics import summary as metric_summary
from drone_core.atom_norms import DEFAULT_SHAPE as DEFAULT_TABLE_SHAPE
from drone_core.model import B1Use, DroneMLP, DroneModel, normalise_fingerprints
from drone_core.noise import NoiseMode, add_noise, noisy_magnitudes
from drone_core.schedule import Schedule, default_schedule
from drone_core.uncertainty import DEFAULT_SHAPE as UNCERTAINTY_SHAPE

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "write_outputs", "plot_loss_curve", "plot_scatter",
           "add_train_arguments", "config_from_args", "main", "ProjectedMLP", "svd_basis"]

LrSchedule = Literal["constant", "onecycle", "cosine"]
#: Training samples whose gather, noise and normalisation are done in one go (a block of steps).
BLOCK_SAMPLES = 65536


@dataclass
class TrainConfig:
    """Training settings (paper defaults unless noted).

    Attributes:
        epochs: passes over the training atoms (paper 1000).
        batch_size: fingerprints per optimiser step, over all processes together.
        lr: Adam learning rate (paper 1e-3); the peak rate for ``onecycle``.
        lr_schedule: ``"constant"`` (paper), ``"onecycle"`` or ``"cosine"`` (per step).
        noise_level: noise as a fraction of each atom's peak magnitude (paper 0.02).
        noise_mode: ``"fixed"`` (paper), ``"uniform"`` (level ~ U(0, noise_level) per atom) or
            ``"quadratic"`` (noise_level·u², u ~ U(0, 1): more weight at high SNR).
        patience: stop when the validation loss has not improved for this many epochs (None: never).
        val_size: atoms in the fixed validation draw (same atoms, one frozen noise draw).
        seed: seeds weights, permutations and noise; same seed → same model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        hidden, activation: network shape (paper (300, 300), tanh).
        t1_range_ms, t2_range_ms: output ranges; None → the training data's min and max.
        threads: CPU threads per process (None: torch's default; 1 per process under DDP on CPU).
        target_transform: ``"linear"`` (paper) or ``"log"`` targets (:class:`DroneModel`).
        b1_input: the network takes each atom's B1 as an input (the dictionary needs a B1 axis).
        b1_output: the network estimates B1 too (a third output; the dictionary needs a B1 axis).
        b1_range: the B1 range of the model; None → the dictionary's min and max.
        relative_knee_ms: ``(T1, T2)`` knees of a relative-precision weighting of the MSE, or None
            (plain MSE, the paper). Each target's squared error is weighted by
            ``1 + (knee / max(T, relative_floor_ms))²``: absolute precision above the knee, relative
            precision below it (short T1/T2, such as NIST spheres 10–12, would otherwise count for
            nothing in an MSE over a 0–5000 ms range), while the outputs stay linear in ms.
        relative_floor_ms: ``(T1, T2)`` floors of that weighting (below them the fingerprint
            carries too little T2 information for relative precision to be asked for).
        projection_rank: train the network on the fingerprint projected onto the first k right
            singular vectors of the training atoms (a fixed linear first stage, :class:`ProjectedMLP`);
            the saved network has the projection folded into its first layer, so it takes the
            fingerprint as any other and costs the same. None: no projection.
    """

    epochs: int = 1000
    batch_size: int = 512
    lr: float = 1e-3
    lr_schedule: LrSchedule = "constant"
    noise_level: float = 0.02
    noise_mode: NoiseMode = "fixed"
    patience: int | None = None
    val_size: int = 8192
    seed: int = 0
    device: str = "auto"
    hidden: tuple[int, ...] = (300, 300)
    activation: str = "tanh"
    t1_range_ms: tuple[float, float] | None = None
    t2_range_ms: tuple[float, float] | None = None
    threads: int | None = None
    target_transform: str = "linear"
    b1_input: bool = False
    b1_output: bool = False
    b1_range: tuple[float, float] | None = None
    relative_knee_ms: tuple[float, float] | None = None
    relative_floor_ms: tuple[float, float] = (20.0, 20.0)
    projection_rank: int | None = None

    def __post_init__(self) -> None:
        if self.projection_rank is not None and self.projection_rank < 1:
            raise ValueError(f"projection_rank: expected ≥ 1 or None, got {self.projection_rank}")
        if self.relative_knee_ms is not None and self.target_transform != "linear":
            raise ValueError("relative_knee_ms: the relative weighting is for linear targets (log targets are "
                             "relative already)")
        if self.b1_input and self.b1_output:
            raise ValueError("b1_input, b1_output: a model either takes B1 from a map or estimates it, not both")
        if self.epochs < 1:
            raise ValueError(f"epochs: expected ≥ 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "onecycle", "cosine"):
            raise ValueError(f"lr_schedule: expected constant, onecycle or cosine, got {self.lr_schedule!r}")
        if not self.noise_level >= 0:
            raise ValueError(f"noise_level: expected ≥ 0, got {self.noise_level}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience: expected ≥ 1 or None, got {self.patience}")


@dataclass
class TrainResult:
    """A trained model and its history (per epoch)."""

    model: DroneModel
    train_loss: list[float]
    val_loss: list[float]
    lr: list[float]
    seconds: float
    epochs_run: int
    stopped_early: bool
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def svd_basis(atoms: np.ndarray, rank: int, *, max_rows: int = 100_000, seed: int = 0) -> torch.Tensor:
    """``(n_frames, rank)`` float32: the first ``rank`` right singular vectors of the atoms' normalised
    magnitudes (:func:`drone_core.model.normalise_fingerprints`), from at most ``max_rows`` of them (seeded)."""
    mags = np.abs(np.asarray(atoms))
    if not 1 <= rank <= mags.shape[1]:
        raise ValueError(f"projection_rank: expected 1 … {mags.shape[1]} (the frame count), got {rank}")
    if mags.shape[0] > max_rows:
        mags = mags[np.random.default_rng(seed).choice(mags.shape[0], max_rows, replace=False)]
    x, valid = normalise_fingerprints(mags.astype(np.float32))
    _, _, vh = torch.linalg.svd(x[valid].double(), full_matrices=False)
    return vh[:rank].T.float().contiguous()


class ProjectedMLP(nn.Module):
    """A :class:`DroneMLP` of the fingerprint's projection onto a fixed basis (the training-side form of
    :attr:`TrainConfig.projection_rank`).

    Args:
        basis: ``(n_frames, k)`` orthonormal columns (:func:`svd_basis`), fixed (a buffer).
        mlp: a ``DroneMLP`` with ``n_frames = k`` (and the same extra inputs as the model).
    """

    def __init__(self, basis: torch.Tensor, mlp: DroneMLP) -> None:
        super().__init__()
        if basis.ndim != 2 or basis.shape[1] != mlp.n_frames:
            raise ValueError(f"basis: expected (n_frames, {mlp.n_frames}), got {tuple(basis.shape)}")
        self.register_buffer("basis", basis)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.basis.shape[0]
        return self.mlp(torch.cat([x[:, :n] @ self.basis, x[:, n:]], dim=1))

    def fold(self) -> DroneMLP:
        """The equivalent ``DroneMLP`` of the whole fingerprint: first layer ``[W₁[:, :k]·Bᵀ, W₁[:, k:]]``."""
        m = self.mlp
        out = DroneMLP(self.basis.shape[0], m.hidden, m.activation, m.n_outputs, m.n_extra_inputs)
        with torch.no_grad():
            out.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("layers.0.")},
                                strict=False)
            w = m.layers[0].weight.detach()
            k = self.basis.shape[1]
            out.layers[0].weight.copy_(torch.cat([w[:, :k] @ self.basis.T.to(w), w[:, k:]], dim=1))
            out.layers[0].bias.copy_(m.layers[0].bias.detach())
        return out.to(self.basis.device)


def _dist() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def train(dictionary: Dictionary, config: TrainConfig = TrainConfig(), *, progress: bool = True,
          log: bool = True) -> TrainResult:
    """Train a :class:`DroneModel` on the atoms of ``dictionary``.

    Under ``torch.distributed`` (initialised by the caller, e.g. :func:`main` under torchrun) the
    epoch's permutation is split across processes and gradients averaged; every process returns
    the same model.

    Args:
        dictionary: training atoms (complex, M0 = 1) with their T1/T2.
        config: :class:`TrainConfig`.
        progress: show a tqdm bar (rank 0) with the loss.
        log: one line per 10 % of epochs on stderr (rank 0).
    """
    rank, world = _dist()
    if config.device == "auto":
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{rank % max(torch.cuda.device_count(), 1)}" if cuda else "cpu")
    else:
        device = torch.device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or world) // world))

    torch.manual_seed(config.seed)
    t1 = torch.as_tensor(dictionary.t1_ms, dtype=torch.float32)
    t2 = torch.as_tensor(dictionary.t2_ms, dtype=torch.float32)
    t1_range = config.t1_range_ms or (float(dictionary.t1_ms.min()), float(dictionary.t1_ms.max()))
    t2_range = config.t2_range_ms or (float(dictionary.t2_ms.min()), float(dictionary.t2_ms.max()))
    uses_b1 = config.b1_input or config.b1_output
    if uses_b1 and dictionary.b1 is None:
        raise ValueError("dictionary: a model with a B1 input or output needs a dictionary with a B1 axis "
                         "(Dictionary.generate(..., b1=...))")
    b1_use = B1Use()
    b1_atoms = None
    if uses_b1:
        assert dictionary.b1 is not None
        b1_range = config.b1_range or (float(dictionary.b1.min()), float(dictionary.b1.max()))
        b1_use = B1Use(config.b1_input, config.b1_output, b1_range)
        b1_atoms = torch.as_tensor(dictionary.b1, dtype=torch.float32)
    def mlp(n_inputs: int) -> DroneMLP:
        return DroneMLP(n_inputs, config.hidden, config.activation, n_outputs=2 + int(config.b1_output),
                        n_extra_inputs=int(config.b1_input))

    model = DroneModel(mlp(dictionary.n_frames), dictionary.schedule, t1_range, t2_range,
                       target_transform=config.target_transform, b1=b1_use)
    network: nn.Module = model.network
    if config.projection_rank is not None:
        network = ProjectedMLP(svd_basis(dictionary.atoms, config.projection_rank), mlp(config.projection_rank))
    network.to(device)

    # The atoms as real and imaginary parts (noisy_magnitudes' fast layout) and their clean peaks.
    complex_atoms = torch.as_tensor(dictionary.atoms, dtype=torch.complex64, device=device)
    atoms_re, atoms_im = complex_atoms.real.contiguous(), complex_atoms.imag.contiguous()
    del complex_atoms
    atoms_peak = torch.hypot(atoms_re, atoms_im).amax(dim=1)
    targets = model.targets_to_unit(t1, t2, b1_atoms).to(device)
    b1_feature = b1_use.feature(b1_atoms).to(device) if config.b1_input and b1_atoms is not None else None
    n = atoms_re.shape[0]
    if n < 2:
        raise ValueError(f"dictionary: expected at least 2 atoms to train on, got {n}")

    def inputs(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Network inputs of the atoms ``idx`` with a fresh noise draw (normalised, with the B1 feature)."""
        noisy = noisy_magnitudes(atoms_re.index_select(0, idx), atoms_im.index_select(0, idx),
                                 atoms_peak.index_select(0, idx), config.noise_level, mode=config.noise_mode,
                                 generator=generator)
        x, _ = normalise_fingerprints(noisy, device=device)
        return x if b1_feature is None else torch.cat([x, b1_feature.index_select(0, idx)], dim=1)

    gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + rank)  # noise, per rank
    perm_gen = torch.Generator().manual_seed(config.seed)  # permutations, identical on every rank
    val_gen = torch.Generator(device=device).manual_seed(config.seed + 7919)
    val_idx = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 1))[:config.val_size].to(device)
    val_x = inputs(val_idx, val_gen)
    val_y = targets[val_idx]

    trainable: nn.Module = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    local_batch = max(1, min(config.batch_size // world, math.ceil(n / world)))
    steps_per_epoch = math.ceil(n / (local_batch * world))
    # fused: one kernel updates every parameter (not one small op per tensor and step).
    opt = torch.optim.Adam(trainable.parameters(), lr=config.lr, fused=True)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    total_steps = steps_per_epoch * config.epochs
    if config.lr_schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps)
    elif config.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=config.lr * 1e-3)
    if config.relative_knee_ms is None:
        weights = None
    else:
        knee = torch.tensor(config.relative_knee_ms, dtype=torch.float32)
        floor = torch.tensor(config.relative_floor_ms, dtype=torch.float32)
        true_ms = torch.stack([t1, t2], dim=1)
        weights = 1.0 + (knee / torch.maximum(true_ms, floor)) ** 2  # (n, 2)
        if model.b1.output:
            weights = torch.cat([weights, torch.ones((n, 1))], dim=1)
        weights = (weights / weights.mean(dim=0)).to(device)  # same overall scale as the plain MSE

    def loss_fn(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        sq = (pred - target) ** 2
        return sq.mean() if weight is None else (sq * weight).mean()

    show = progress and rank == 0
    epochs_iter: Any = range(config.epochs)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(epochs_iter, desc="train", unit="epoch", file=sys.stderr, dynamic_ncols=True)
        epochs_iter = bar
    history_train: list[float] = []
    history_val: list[float] = []
    history_lr: list[float] = []
    best_val, best_state, since_best = math.inf, None, 0
    stopped_early = False
    t0 = time.perf_counter()
    for epoch in epochs_iter:
        network.train()
        perm = torch.randperm(n, generator=perm_gen).to(device)
        # Pad to a whole number of global steps so every rank runs the same step count.
        total = steps_per_epoch * local_batch * world
        if total > n:
            perm = perm.repeat(math.ceil(total / n))[:total]
        mine = perm.view(steps_per_epoch, world, local_batch)[:, rank, :]
        running = torch.zeros((), device=device)
        # The data side (gather, noise, normalisation) runs once per block of steps: a few large tensor
        # ops instead of several small ones per step (per-op overhead dominates a 1024-row batch).
        block_steps = max(1, BLOCK_SAMPLES // local_batch)
        for first in range(0, steps_per_epoch, block_steps):
            idx_block = mine[first:first + block_steps].reshape(-1)
            x_block = inputs(idx_block, gen)
            y_block = targets.index_select(0, idx_block)
            w_block = None if weights is None else weights.index_select(0, idx_block)
            for j in range(idx_block.numel() // local_batch):
                rows = slice(j * local_batch, (j + 1) * local_batch)
                loss = loss_fn(trainable(x_block[rows]), y_block[rows], None if w_block is None else w_block[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                running += loss.detach()
        train_loss = running.item() / steps_per_epoch
        if world > 1:
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = t.item() / world
        network.eval()
        with torch.no_grad():
            val_loss = loss_fn(network(val_x), val_y, None if weights is None else weights[val_idx]).item()
        history_train.append(train_loss)
        history_val.append(val_loss)
        history_lr.append(opt.param_groups[0]["lr"])
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.2e}", val=f"{val_loss:.2e}")
        elif log and rank == 0 and (epoch + 1) % max(1, config.epochs // 10) == 0:
            print(f"epoch {epoch + 1}/{config.epochs}: train {train_loss:.3e}, val {val_loss:.3e} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if val_loss < best_val:
            best_val, since_best = val_loss, 0
            if config.patience is not None:
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        else:
            since_best += 1
            if config.patience is not None and since_best >= config.patience:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    if stopped_early and best_state is not None:
        network.load_state_dict(best_state)
    seconds = time.perf_counter() - t0
    if isinstance(network, ProjectedMLP):
        model.network = network.fold().to(device)  # an ordinary network of the fingerprint, same outputs
    model.network.eval()
    model.training = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "n_atoms": n,
        "dictionary": dictionary.describe(),
        "epochs_run": len(history_train),
        "stopped_early": stopped_early,
        "final_train_loss": history_train[-1],
        "best_val_loss": best_val,
        "seconds": seconds,
        "world_size": world,
        "hardware": _hardware(device),
        "drone_version": __version__,
    }
    return TrainResult(model, history_train, history_val, history_lr, seconds, len(history_train), stopped_early,
                       world)


def evaluate(model: DroneModel, dictionary: Dictionary, *, noise_level: float = 0.0, seed: int = 0,
             batch_size: int = 65536) -> dict[str, Any]:
    """RMSE, bias and R² of T1 and T2 over the atoms of ``dictionary`` (ms).

    Args:
        model: the estimator.
        dictionary: test atoms with their true T1/T2.
        noise_level: noise as a fraction of each atom's peak (fixed mode), seeded by ``seed``.
    """
    atoms = torch.as_tensor(dictionary.atoms)
    mags = add_noise(atoms, noise_level, generator=torch.Generator().manual_seed(seed)) if noise_level else atoms.abs()
    out: dict[str, Any] = {"noise_level": noise_level}
    if model.b1.output:
        t1, t2, b1 = model.predict_b1(mags, batch_size=batch_size)
        assert dictionary.b1 is not None
        out["b1"] = metric_summary(dictionary.b1, b1)
    else:
        t1, t2 = model.predict(mags, dictionary.b1 if model.b1.input else None, batch_size=batch_size)
    out["t1_ms"] = metric_summary(dictionary.t1_ms, t1)
    out["t2_ms"] = metric_summary(dictionary.t2_ms, t2)
    return out


def plot_loss_curve(result: TrainResult, path: Path) -> None:
    """The training and validation cost per epoch on a log scale (the paper's Fig. 2), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = np.arange(1, len(result.train_loss) + 1)
    ax.semilogy(epochs, result.train_loss, label="training (fresh noise each epoch)")
    ax.semilogy(epochs, result.val_loss, label="validation (fixed noise draw)", alpha=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of normalised T1, T2")
    ax.set_title("DRONE training cost")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scatter(model: DroneModel, dictionary: Dictionary, metrics: dict[str, Any], path: Path,
                  max_points: int = 20000, seed: int = 0) -> None:
    """Estimated against true T1 and T2 of the noise-free atoms (the paper's Fig. 3), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1, t2 = model.predict(np.abs(dictionary.atoms), dictionary.b1 if model.b1.input else None)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(dictionary), size=min(max_points, len(dictionary)), replace=False)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=100)
    for ax, true, est, name in ((axes[0], dictionary.t1_ms, t1, "t1_ms"), (axes[1], dictionary.t2_ms, t2, "t2_ms")):
        m = metrics[name]
        ax.scatter(true[pick], est[pick], s=1, alpha=0.3)
        lim = (0, float(max(true.max(), np.nanmax(est))))
        ax.plot(lim, lim, "k--", lw=0.8)
        label = "T1" if name == "t1_ms" else "T2"
        ax.set_xlabel(f"true {label} (ms)")
        ax.set_ylabel(f"estimated {label} (ms)")
        ax.set_title(f"{label}: RMSE {m['rmse']:.1f} ms, bias {m['bias']:.1f} ms, R² {m['r2']:.4f}")
        ax.set_aspect("equal")
    fig.suptitle("DRONE on the noise-free training atoms")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(result: TrainResult, dictionary: Dictionary, out_dir: str | Path,
                  extra_eval: Sequence[float] = (0.005,), *,
                  m0_table_shape: tuple[int, int, int] | None = DEFAULT_TABLE_SHAPE,
                  uncertainty_shape: tuple[int, int, int, int] | None = UNCERTAINTY_SHAPE) -> dict[str, Any]:
    """Write ``model.safetensors``, ``loss_curve.png``, ``scatter.png`` and ``summary.json``.

    The summary's metrics are on the noise-free atoms of ``dictionary`` and, for each level in
    ``extra_eval``, on one seeded noisy draw of them. The model file gets the M0 table
    (:meth:`DroneModel.with_m0_table`, ``m0_table_shape``; None: none — M0 then simulates each voxel's atom)
    and the uncertainty table (:meth:`DroneModel.with_uncertainty_table`, ``uncertainty_shape``; None: none —
    the model then gives no t1_sd/t2_sd maps).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = result.model
    if m0_table_shape is not None:
        t0 = time.perf_counter()
        model.with_m0_table(tuple(m0_table_shape))  # type: ignore[arg-type]
        model.training["m0_table"] = {"shape": list(m0_table_shape), "seconds": round(time.perf_counter() - t0, 2)}
    if uncertainty_shape is not None:
        t0 = time.perf_counter()
        model.with_uncertainty_table(shape=tuple(uncertainty_shape))
        model.training["uncertainty_table"] = {"shape": list(uncertainty_shape),
                                               "seconds": round(time.perf_counter() - t0, 2)}
    clean = evaluate(model, dictionary)
    noisy = [evaluate(model, dictionary, noise_level=lvl, seed=1) for lvl in extra_eval]
    model.training["metrics_noise_free"] = {k: clean[k] for k in ("t1_ms", "t2_ms")}
    model.save(out / "model.safetensors")
    plot_loss_curve(result, out / "loss_curve.png")
    plot_scatter(model, dictionary, clean, out / "scatter.png")
    summary = {
        "metrics": {"noise_free": clean, "noisy": noisy},
        "seconds": result.seconds,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "final_train_loss": result.train_loss[-1],
        "final_val_loss": result.val_loss[-1],
        "world_size": result.world_size,
        "schedule": {"name": model.schedule.name, "digest": model.schedule.digest()},
        "training": model.training,
        "n_parameters": model.network.n_parameters(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options, shared by ``drone train`` and ``python -m drone_training.train``."""
    d = TrainConfig()
    p.add_argument("--out", type=Path, required=True, help="output folder (model, plots, summary.json)")
    p.add_argument("--dictionary", type=Path, help="train on this dictionary file (from `drone simulate`)")
    p.add_argument("--schedule", type=Path, help="schedule JSON when simulating (default: the package's)")
    p.add_argument("--fold", type=int, default=1, help="sub-sample the training atoms by this factor")
    p.add_argument("--fold-method", choices=("stride", "random"), default="stride")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=("constant", "onecycle", "cosine"), default=d.lr_schedule)
    p.add_argument("--noise", type=float, default=d.noise_level,
                   help="training noise as a fraction of each atom's peak magnitude (0.02 = 2 %%)")
    p.add_argument("--noise-mode", choices=("fixed", "uniform", "quadratic"), default=d.noise_mode,
                   help="fixed level, U(0, level) or level·U(0,1)² per atom")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden), help="hidden layer widths")
    p.add_argument("--activation", default=d.activation)
    p.add_argument("--threads", type=int, help="CPU threads per process")
    p.add_argument("--no-m0-table", action="store_true",
                   help="leave the M0 table out of the model file (M0 then simulates each voxel's atom; the table "
                        "takes ~10 s to build and ~0.8 MB)")
    p.add_argument("--no-uncertainty-table", action="store_true",
                   help="leave the uncertainty table out of the model file (it then gives no t1_sd/t2_sd maps; the "
                        "table takes ~30 s to measure and ~1 MB)")
    p.add_argument("--target-transform", choices=("linear", "log"), default=d.target_transform,
                   help="map T1/T2 to the outputs linearly (paper) or logarithmically (equal relative precision)")
    p.add_argument("--t1-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="T1 output range, ms (default: the training atoms' min and max)")
    p.add_argument("--t2-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="T2 output range, ms")
    b1 = p.add_argument_group("B1 and the training atoms (when simulating)")
    b1.add_argument("--b1-input", action="store_true",
                    help="the network takes the voxel's B1 (from a B1 map) as an input")
    b1.add_argument("--b1-output", action="store_true", help="the network estimates B1 from the fingerprint")
    b1.add_argument("--b1-range", type=float, nargs=2, default=(0.5, 1.5), metavar=("LOW", "HIGH"),
                    help="B1 range of the training atoms and the model (default 0.5 1.5)")
    b1.add_argument("--b1-draws", type=int, default=0,
                    help="copies of every (T1, T2) pair, each with its own B1 drawn from --b1-range "
                         "(default 0: B1 = 1; needed with --b1-input/--b1-output)")
    b1.add_argument("--extra-atoms", type=int, default=0,
                    help="log-uniform (T1, T2) pairs added to the paper grid (denser short T1/T2)")
    b1.add_argument("--extra-t1-range", type=float, nargs=2, default=(10.0, 5000.0), metavar=("LOW", "HIGH"))
    b1.add_argument("--extra-t2-range", type=float, nargs=2, default=(5.0, 2000.0), metavar=("LOW", "HIGH"))
    p.add_argument("--relative-knee", type=float, nargs=2, metavar=("T1_MS", "T2_MS"),
                   help="weight each squared error by 1 + (knee / max(T, floor))²: relative precision below the knee")
    p.add_argument("--relative-floor", type=float, nargs=2, default=(20.0, 20.0), metavar=("T1_MS", "T2_MS"))
    p.add_argument("--projection-rank", type=int, metavar="K",
                   help="train on the fingerprint's projection onto the atoms' first K singular vectors "
                        "(folded into the first layer of the saved network)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
                       noise_level=args.noise, noise_mode=args.noise_mode, patience=args.patience, seed=args.seed,
                       device=args.device, hidden=tuple(args.hidden), activation=args.activation,
                       threads=args.threads, target_transform=args.target_transform,
                       t1_range_ms=None if args.t1_range is None else tuple(args.t1_range),
                       t2_range_ms=None if args.t2_range is None else tuple(args.t2_range),
                       b1_input=args.b1_input, b1_output=args.b1_output,
                       b1_range=tuple(args.b1_range) if (args.b1_input or args.b1_output) else None,
                       relative_knee_ms=None if args.relative_knee is None else tuple(args.relative_knee),
                       relative_floor_ms=tuple(args.relative_floor), projection_rank=args.projection_rank)


def training_dictionary(schedule: Schedule, *, b1_draws: int = 0, b1_range: tuple[float, float] = (0.5, 1.5),
                        extra_atoms: int = 0, extra_t1_range_ms: tuple[float, float] = (10.0, 5000.0),
                        extra_t2_range_ms: tuple[float, float] = (5.0, 2000.0), seed: int = 0,
                        progress: bool = False, device: str | torch.device = "cpu") -> Dictionary:
    """Training atoms: the paper grid, optional extra atoms, optional random B1 per atom.

    Args:
        schedule: the acquisition schedule (its excitation, if any, is simulated).
        b1_draws: 0 for B1 = 1 (no B1 axis); else every (T1, T2) pair appears ``b1_draws`` times,
            each with its own B1 drawn uniformly from ``b1_range`` (a continuous B1 axis for a
            network; matching needs a grid instead, :func:`drone_core.dictionary.grid`).
        extra_atoms: (T1, T2) pairs added to the paper grid, log-uniform over the extra ranges with
            T1 > T2: the paper grid's 10 ms steps leave short T1/T2 (NIST spheres 10–12) nearly bare.
        seed: seeds the extra atoms and the B1 draws.
        device: where the atoms are simulated (``"cuda"``: on the GPU).

    Returns:
        a :class:`~drone_core.dictionary.Dictionary` with ``b1`` set when ``b1_draws > 0``.
    """
    rng = np.random.default_rng(seed)
    t1, t2 = paper_grid()
    if extra_atoms:
        lo1, hi1 = (math.log(v) for v in extra_t1_range_ms)
        lo2, hi2 = (math.log(v) for v in extra_t2_range_ms)
        x1, x2 = np.empty(0), np.empty(0)
        while x1.size < extra_atoms:
            a = np.exp(rng.uniform(lo1, hi1, 2 * extra_atoms))
            b = np.exp(rng.uniform(lo2, hi2, 2 * extra_atoms))
            keep = a > b
            x1, x2 = np.concatenate([x1, a[keep]]), np.concatenate([x2, b[keep]])
        t1, t2 = np.concatenate([t1, x1[:extra_atoms]]), np.concatenate([t2, x2[:extra_atoms]])
    b1 = None
    if b1_draws:
        t1, t2 = np.repeat(t1, b1_draws), np.repeat(t2, b1_draws)
        b1 = rng.uniform(b1_range[0], b1_range[1], t1.size)
    return Dictionary.generate(schedule, t1, t2, b1, progress=progress, device=device)


def source_dictionary(args: argparse.Namespace) -> Dictionary:
    """The dictionary the arguments name (a file, or the paper grid simulated now), before sub-sampling."""
    if args.dictionary is not None:
        return Dictionary.load(args.dictionary)
    schedule = default_schedule() if args.schedule is None else Schedule.load(args.schedule)
    if (args.b1_input or args.b1_output) and not args.b1_draws:
        raise ValueError("--b1-input/--b1-output: give --b1-draws K (B1 values per (T1, T2) pair) or a --dictionary "
                         "with a B1 axis")
    if args.b1_draws or args.extra_atoms:
        return training_dictionary(schedule, b1_draws=args.b1_draws, b1_range=tuple(args.b1_range),
                                   extra_atoms=args.extra_atoms, extra_t1_range_ms=tuple(args.extra_t1_range),
                                   extra_t2_range_ms=tuple(args.extra_t2_range), seed=args.seed,
                                   progress=not args.quiet, device=args.device)
    return Dictionary.generate(schedule, *paper_grid(), device=args.device)


def run(args: argparse.Namespace) -> int:
    """Train from parsed arguments; initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    initialised = False
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)
        initialised = True
    try:
        config = config_from_args(args)
        full = source_dictionary(args)
        atoms = full.subsample(args.fold, method=args.fold_method, seed=args.seed) if args.fold > 1 else full
        result = train(atoms, config, progress=not args.quiet)
        rank, _ = _dist()
        if rank == 0:
            # Metrics on the whole source dictionary: with --fold > 1 that includes the atoms not trained on.
            # Atoms drawn for training (B1 draws, extra atoms) are evaluated on the paper grid at B1 = 1.
            evaluation = full
            if args.dictionary is None and (args.b1_draws or args.extra_atoms):
                t1p, t2p = paper_grid()
                evaluation = Dictionary.generate(full.schedule, t1p, t2p,
                                                 None if full.b1 is None else np.ones(t1p.size), device=args.device)
            summary = write_outputs(result, evaluation, args.out,
                                    m0_table_shape=None if args.no_m0_table else DEFAULT_TABLE_SHAPE,
                                    uncertainty_shape=None if args.no_uncertainty_table else UNCERTAINTY_SHAPE)
            m = summary["metrics"]["noise_free"]
            print(f"trained {result.epochs_run} epochs in {result.seconds:.0f} s on {world} process(es); "
                  f"noise-free RMSE T1 {m['t1_ms']['rmse']:.1f} ms, T2 {m['t2_ms']['rmse']:.1f} ms; "
                  f"outputs in {args.out}", file=sys.stderr)
    finally:
        if initialised:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drone_training.train", description=__doc__.split("\n")[0])
    add_train_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
