"""The DRONE network and the model file around it.

:class:`DroneMLP` is the paper's fully connected network — ``n_frames → 300 tanh → 300 tanh → 2
sigmoid`` by default, depth, width and activation configurable. Its two sigmoid outputs are the
normalised targets ``(T − T_lo)/(T_hi − T_lo)`` of T1 and T2 over the training ranges.

:class:`DroneModel` is a network plus everything needed to use it correctly: the schedule it
was trained for, the parameter ranges, the input normalisation, the architecture, training facts
and the package version. Files are safetensors (never pickle) whose metadata key ``drone_model``
holds that JSON, including a SHA-256 of the weights so a tampered file is refused.

Input normalisation (:func:`normalise_fingerprints`): magnitudes (complex input is reduced to
``|s|``), divided by their L2 norm over the frames, times ``√n_frames`` (so every frame has unit
RMS on average — better conditioned for tanh than unit norm). Voxels with zero or non-finite
signal give NaN estimates.

M0 (:meth:`DroneModel.estimate`): with the model's :attr:`~DroneModel.m0_table` (stored in the file
beside the weights; the shipped model has one), ‖|s|‖ / ‖|a|‖ with the atom's norm ‖|a|‖ at the
estimate interpolated from the table (:mod:`drone_core.atom_norms`: no simulation per voxel, ~100×
cheaper, within 0.1–0.3 % of the least-squares scale); without one, the least-squares scale that maps
the magnitude atom at the estimate (simulated per voxel with M0 = 1 by :func:`drone_core.epg.simulate`)
onto the measured magnitudes (:func:`drone_core.m0.fit_m0`).

Uncertainty (:meth:`DroneModel.estimate_std`): with the model's :attr:`~DroneModel.uncertainty_table`
(also stored in the file; the shipped model has one), the standard deviation of the network's T1 and
T2 at a voxel's estimate and SNR, measured once by Monte Carlo (:mod:`drone_core.uncertainty`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .epg import simulate
from .excitation import DEFAULT_ROTATION, ROTATIONS
from .hardware import cpu_flags
from .atom_norms import DEFAULT_SHAPE as DEFAULT_TABLE_SHAPE
from .atom_norms import TENSOR_KEY as M0_TABLE_KEY
from .atom_norms import AtomNormTable, ratio_of_norms
from .m0 import fit_m0
from .schedule import Schedule
from .uncertainty import TENSOR_KEY as UNCERTAINTY_TABLE_KEY
from .uncertainty import UncertaintyTable

__all__ = [
    "DroneMLP",
    "DroneModel",
    "B1Use",
    "Estimate",
    "normalise_fingerprints",
    "default_model",
    "DEFAULT_MODEL_NAME",
    "ACTIVATIONS",
    "cpu_has_fast_bf16",
    "resolve_precision",
]

#: File name of the shipped model under ``drone_core/weights``.
DEFAULT_MODEL_NAME = "drone_epi_mrf_25.safetensors"
FILE_KIND = "drone-model"
FORMAT_VERSION = 1
_META_KEY = "drone_model"

#: Slice positions of the atom simulated for the M0 fit (:meth:`DroneModel.estimate`) when the
#: schedule has a slice profile: half the default's, for half the cost; the atom's norm is then
#: within 0.25 % of the converged one (docs/SIGNAL_MODEL.md), which bounds M0's error.
M0_N_POSITIONS = 12
#: How T1/T2 map to the sigmoid outputs (see :class:`DroneModel`).
TARGET_TRANSFORMS = ("linear", "log")
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
Precision = Literal["auto", "fp32", "bf16"]
#: Pre-activation of the extra unit that carries each hidden layer's bias input (:meth:`DroneModel._layers`):
#: 1 gives 0.76 (tanh), 1 (ReLU), 0.73 (SiLU), 0.84 (GELU) — well away from 0 for every activation.
_BIAS_PRE_ACTIVATION = 1.0


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


#: On a CPU, ``"auto"`` picks bf16 only for networks at least this wide: below, the bf16 conversions and
#: tanh cost more than the smaller GEMMs save (128 × 128 slice, 2 threads: 256 wide bf16 22 ms / fp32
#: 27 ms; 96 wide bf16 8.0 ms / fp32 4.7 ms; docs/MODEL.md, "Architecture study").
CPU_BF16_MIN_WIDTH = 192


def resolve_precision(precision: str, device: torch.device, width: int | None = None) -> str:
    """``"auto"`` → ``"bf16"`` where bfloat16 is native (CUDA with bf16; CPUs with AVX512-BF16/AMX for a
    network whose widest hidden layer, ``width``, is at least :data:`CPU_BF16_MIN_WIDTH`), else ``"fp32"``;
    ``"fp32"``/``"bf16"`` are returned unchanged."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    wide = width is None or width >= CPU_BF16_MIN_WIDTH
    return "bf16" if cpu_has_fast_bf16() and wide else "fp32"


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DroneMLP(nn.Module):
    """Fully connected network ``n_frames → hidden… → 2`` with sigmoid outputs in [0, 1].

    Args:
        n_frames: input length N (frames per fingerprint).
        hidden: widths of the hidden layers (paper: ``(300, 300)``).
        activation: hidden activation, one of :data:`ACTIVATIONS` (paper: ``"tanh"``).
        n_outputs: number of estimated parameters (2: T1, T2; 3: T1, T2, B1).
        n_extra_inputs: inputs after the fingerprint (1: the voxel's B1).
    """

    def __init__(self, n_frames: int = 25, hidden: Sequence[int] = (300, 300), activation: str = "tanh",
                 n_outputs: int = 2, n_extra_inputs: int = 0) -> None:
        super().__init__()
        if n_frames < 1:
            raise ValueError(f"n_frames: expected ≥ 1, got {n_frames}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden: expected one or more positive widths, got {list(hidden)}")
        self.n_frames = int(n_frames)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.n_outputs = int(n_outputs)
        self.n_extra_inputs = int(n_extra_inputs)
        if self.n_extra_inputs < 0:
            raise ValueError(f"n_extra_inputs: expected ≥ 0, got {n_extra_inputs}")
        layers: list[nn.Module] = []
        width = self.n_frames + self.n_extra_inputs
        for h in self.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers += [nn.Linear(width, self.n_outputs), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, n_frames + n_extra_inputs)`` fingerprints (and B1 feature) → ``(n, n_outputs)`` in [0, 1]."""
        return self.layers(x)

    def architecture(self) -> dict[str, Any]:
        """JSON-ready description (stored in model files)."""
        arch: dict[str, Any] = {"type": "mlp", "n_frames": self.n_frames, "hidden": list(self.hidden),
                                "activation": self.activation, "n_outputs": self.n_outputs, "output": "sigmoid"}
        if self.n_extra_inputs:
            arch["n_extra_inputs"] = self.n_extra_inputs
        return arch

    @classmethod
    def from_architecture(cls, arch: dict[str, Any]) -> "DroneMLP":
        if arch.get("type") != "mlp" or arch.get("output") != "sigmoid":
            raise ValueError(f"architecture: expected an mlp with sigmoid output, got {arch}")
        return cls(int(arch["n_frames"]), tuple(arch["hidden"]), str(arch["activation"]), int(arch["n_outputs"]),
                   int(arch.get("n_extra_inputs", 0)))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def normalise_fingerprints(signals: np.ndarray | torch.Tensor, n_frames: int | None = None, *,
                           device: str | torch.device | None = None,
                           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input from measured fingerprints.

    Args:
        signals: ``(n, n_frames)`` magnitudes of any scale, or complex (the magnitude is taken).
        n_frames: expected frame count (checked when given).
        device, dtype: of the returned tensors.

    Returns:
        ``(x, valid)``: ``x`` ``(n, n_frames)`` = ``|s|/‖s‖₂·√n_frames`` (zeros where invalid) and
        ``valid`` ``(n,)`` bool, False where the signal is all zero or not finite.
    """
    x, valid, _ = _normalised(signals, n_frames, device=device, dtype=dtype)
    return x, valid


def _normalised(signals: np.ndarray | torch.Tensor, n_frames: int | None = None, *,
                device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`normalise_fingerprints` and the ``(n,)`` norms ‖|s|‖₂ it divided by (NaN/inf/0 where invalid).

    ``width``: the returned ``x`` has this many columns (≥ n_frames), the fingerprint in the first
    ones and the rest left for the caller to fill (uninitialised).
    """
    if isinstance(signals, torch.Tensor):
        t = signals.detach()
    else:
        arr = np.asarray(signals)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"signals: expected a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(arr if all(v >= 0 for v in arr.strides) else np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise ValueError(f"signals: expected shape (n, n_frames), got {tuple(t.shape)}")
    if n_frames is not None and t.shape[1] != n_frames:
        raise ValueError(f"signals: expected {n_frames} frames (the model's schedule), got {t.shape[1]} "
                         f"(shape {tuple(t.shape)})")
    dev = t.device if device is None else _resolve_device(device)
    mag = t.to(dev).abs() if t.is_complex() else t.to(device=dev, dtype=dtype)
    mag = mag.to(dtype)
    # One reduction decides validity: the norm is NaN/inf when any sample is (or overflows float32).
    norm = torch.linalg.vector_norm(mag, dim=1)
    valid = torch.isfinite(norm) & (norm > 0)
    scale = torch.where(valid, math.sqrt(mag.shape[1]) / norm, torch.zeros_like(norm))
    x = torch.empty((mag.shape[0], mag.shape[1] if width is None else width), dtype=dtype, device=dev)
    # |s|·scale: the norm of a real signal is its magnitude's, so the sign is dropped on the output in place.
    head = torch.mul(mag, scale[:, None], out=x[:, :mag.shape[1]]).abs_()
    if not bool(valid.all()):
        # Invalid rows have scale 0: finite samples became 0, but inf·0 and NaN are NaN → 0.
        head[~valid] = 0.0
    return x, valid, norm


@dataclass(frozen=True)
class B1Use:
    """How a model uses the relative transmit field B1.

    Attributes:
        input: the network takes the voxel's B1 (from a B1 map) as an input after the fingerprint,
            as the feature ``(b1 − centre)/half_width`` of ``range``.
        output: the network estimates B1 from the fingerprint (a third sigmoid output over ``range``).
        range: ``(low, high)`` B1 values the model was trained over; inputs outside get no estimate.
    """

    input: bool = False
    output: bool = False
    range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
            raise ValueError(f"b1 range: expected 0 < low ≤ high, got ({lo}, {hi})")
        if (self.input or self.output) and not lo < hi:
            raise ValueError(f"b1 range: a model that takes or estimates B1 needs low < high, got ({lo}, {hi})")
        object.__setattr__(self, "range", (lo, hi))

    def feature(self, b1: torch.Tensor) -> torch.Tensor:
        """The network's B1 input: ``(b1 − centre)/half_width`` of the range, ``(n,)`` → ``(n, 1)``."""
        lo, hi = self.range
        return ((b1 - 0.5 * (lo + hi)) / (0.5 * (hi - lo))).unsqueeze(1)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "range": list(self.range)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "B1Use":
        if not data:
            return cls()
        return cls(bool(data.get("input", False)), bool(data.get("output", False)),
                   tuple(data.get("range", (1.0, 1.0))))  # type: ignore[arg-type]


class _Prediction(NamedTuple):
    """What :meth:`DroneModel._predict_tensors` computes, ``(n,)`` tensors on the model's device."""

    t1_ms: torch.Tensor  # NaN where not valid
    t2_ms: torch.Tensor
    b1_estimate: torch.Tensor | None  # the network's B1 (a B1-estimating model), else None
    valid: torch.Tensor  # bool: a finite, non-zero signal (and, with a B1 input, a B1 in range)
    norm: torch.Tensor  # ‖|s|‖₂ of each input fingerprint
    b1: torch.Tensor | None  # the B1 each estimate is for: the estimate, the B1 input, or None (1)


class Estimate(NamedTuple):
    """Per-voxel estimates: ``(n,)`` float32 arrays; NaN/0 where the signal was invalid."""

    t1_ms: np.ndarray
    t2_ms: np.ndarray
    m0: np.ndarray


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float32).contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class DroneModel:
    """A trained DRONE network with its schedule, ranges and provenance.

    Attributes:
        network: the :class:`DroneMLP`.
        schedule: the schedule it was trained for; signals of another schedule are refused.
        t1_range_ms, t2_range_ms: ``(low, high)`` of the sigmoid output mapping, ms.
        target_transform: ``"linear"`` (the paper: y = (T − low)/(high − low)) or ``"log"``
            (y = (ln T − ln low)/(ln high − ln low): equal relative precision over the range).
        training: facts about training (epochs, noise, data, time, hardware, metrics …).
        version: package version that wrote the model.
        b1: how the model uses B1 (:class:`B1Use`): as an input, as an output, or not at all
            (trained at B1 = 1).
        m0_table: the norms of the schedule's atoms over the model's ranges
            (:class:`~drone_core.atom_norms.AtomNormTable`), for M0 without a per-voxel simulation
            (:meth:`estimate`); None: M0 by simulating each voxel's atom (:meth:`with_m0_table` adds one).
        uncertainty_table: the sd of this network's estimates over (B1, T1, T2, SNR)
            (:class:`~drone_core.uncertainty.UncertaintyTable`), for :meth:`estimate_std`; None: none
            (:meth:`with_uncertainty_table` measures one).
        rotation: the slice-profile model its atoms were simulated with (:data:`drone_core.excitation.ROTATIONS`):
            ``"spinor"`` (the pulse's full rotation: the normative model) or ``"x"`` (θ(z) about x: the model of
            files written before it; a file without the entry is one of those). Every atom the model simulates for
            itself (the M0 fit, the M0 and uncertainty tables) uses it.
    """

    network: DroneMLP
    schedule: Schedule
    t1_range_ms: tuple[float, float]
    t2_range_ms: tuple[float, float]
    training: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    target_transform: str = "linear"
    b1: B1Use = field(default_factory=B1Use)
    m0_table: AtomNormTable | None = None
    uncertainty_table: UncertaintyTable | None = None
    rotation: str = DEFAULT_ROTATION

    def __post_init__(self) -> None:
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {list(ROTATIONS)}, got {self.rotation!r}")
        if not isinstance(self.b1, B1Use):
            raise TypeError(f"b1: expected a B1Use, got {type(self.b1).__name__}")
        if self.network.n_extra_inputs != int(self.b1.input):
            raise ValueError(f"network: {self.network.n_extra_inputs} extra input(s) but b1.input is {self.b1.input}")
        if self.network.n_outputs != 2 + int(self.b1.output):
            raise ValueError(f"network: {self.network.n_outputs} outputs but b1.output is {self.b1.output} "
                             f"(expected {2 + int(self.b1.output)})")
        if self.network.n_frames != self.schedule.n_frames:
            raise ValueError(f"network: expects {self.network.n_frames} frames but the schedule has "
                             f"{self.schedule.n_frames}")
        for name, (lo, hi) in (("t1_range_ms", self.t1_range_ms), ("t2_range_ms", self.t2_range_ms)):
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
                raise ValueError(f"{name}: expected 0 ≤ low < high, got ({lo}, {hi})")
        if self.target_transform not in TARGET_TRANSFORMS:
            raise ValueError(f"target_transform: expected one of {TARGET_TRANSFORMS}, got {self.target_transform!r}")
        if self.target_transform == "log" and min(self.t1_range_ms[0], self.t2_range_ms[0]) <= 0:
            raise ValueError("t1_range_ms, t2_range_ms: a log target transform needs ranges with low > 0, got "
                             f"{self.t1_range_ms}, {self.t2_range_ms}")
        self.t1_range_ms = (float(self.t1_range_ms[0]), float(self.t1_range_ms[1]))
        self.t2_range_ms = (float(self.t2_range_ms[0]), float(self.t2_range_ms[1]))
        if self.m0_table is not None and self.m0_table.schedule_digest != self.schedule.digest():
            raise ValueError(f"m0_table: made for schedule digest {self.m0_table.schedule_digest}, the model's is "
                             f"{self.schedule.digest()}")
        table = self.uncertainty_table
        if table is not None and (table.schedule_digest != self.schedule.digest()
                                  or table.network_digest != self.network_digest()):
            raise ValueError("uncertainty_table: measured for other weights or another schedule (its digests "
                             f"{table.network_digest[:12]}…/{table.schedule_digest} against the model's "
                             f"{self.network_digest()[:12]}…/{self.schedule.digest()}); measure it again with "
                             "with_uncertainty_table()")
        self._fast: dict[tuple[str, str], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # ------------------------------------------------------------------ basics
    @property
    def n_frames(self) -> int:
        return self.schedule.n_frames

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> "DroneModel":
        """Move the network (in place) and return self. ``"auto"`` picks CUDA when present."""
        self.network.to(_resolve_device(device))
        self._fast.clear()
        return self

    def targets_to_unit(self, t1_ms: torch.Tensor, t2_ms: torch.Tensor, b1: torch.Tensor | None = None) -> torch.Tensor:
        """``(n,), (n,)`` ms [and ``(n,)`` B1 for a B1-estimating model] → ``(n, n_outputs)``
        normalised targets in [0, 1] (training side)."""
        if self.target_transform == "log":
            (lo1, hi1), (lo2, hi2) = (tuple(math.log(v) for v in r) for r in (self.t1_range_ms, self.t2_range_ms))
            t1_ms, t2_ms = torch.log(t1_ms), torch.log(t2_ms)
        else:
            (lo1, hi1), (lo2, hi2) = self.t1_range_ms, self.t2_range_ms
        cols = [(t1_ms - lo1) / (hi1 - lo1), (t2_ms - lo2) / (hi2 - lo2)]
        if self.b1.output:
            if b1 is None:
                raise ValueError("b1: a B1-estimating model needs the atoms' B1 as a target")
            lo, hi = self.b1.range
            cols.append((b1 - lo) / (hi - lo))
        return torch.stack(cols, dim=1)

    def unit_to_b1(self, y: torch.Tensor) -> torch.Tensor:
        """The B1 output column of ``y`` ``(n, 3)`` → relative B1 ``(n,)`` (B1-estimating models)."""
        lo, hi = self.b1.range
        return lo + (hi - lo) * y[:, 2]

    def unit_to_ms(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, 2)`` network output in [0, 1] → T1, T2 in ms."""
        if self.target_transform == "log":
            (lo1, hi1), (lo2, hi2) = (tuple(math.log(v) for v in r) for r in (self.t1_range_ms, self.t2_range_ms))
            return torch.exp(lo1 + (hi1 - lo1) * y[:, 0]), torch.exp(lo2 + (hi2 - lo2) * y[:, 1])
        (lo1, hi1), (lo2, hi2) = self.t1_range_ms, self.t2_range_ms
        return lo1 + (hi1 - lo1) * y[:, 0], lo2 + (hi2 - lo2) * y[:, 1]

    def check_schedule(self, schedule: Schedule, source: str = "the data") -> None:
        """Raise ValueError unless ``schedule`` has this model's physics (digest), naming both."""
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: expected drone_core.schedule.Schedule, got {type(schedule).__name__}")
        if not schedule.same_physics(self.schedule):
            raise ValueError(
                f"schedule mismatch: {source} was acquired with schedule {schedule.name!r} "
                f"({schedule.n_frames} frames, digest {schedule.digest()}) but the model was trained for "
                f"{self.schedule.name!r} ({self.schedule.n_frames} frames, digest {self.schedule.digest()})")

    # ------------------------------------------------------------------ inference
    def _layers(self, precision: Precision) -> list[torch.Tensor]:
        """The network's layers with their biases folded in, for :meth:`_forward_fast` (kept per device and
        precision).

        Layer i becomes one matrix ``(in_i + 1, out_i + 1)`` (the last: ``(in + 1, n_outputs)``): its input
        carries a constant column (1 for the network's input; for a hidden layer the activation of
        :data:`_BIAS_PRE_ACTIVATION`, produced by the extra output column of the layer before), the matrix's
        last row is the bias divided by that constant, and its last column feeds the next constant. Each
        layer is then a single GEMM: no separate pass over the activations to add the bias.
        """
        key = (str(self.device), precision)
        if key not in self._fast:
            linears = [m for m in self.network.layers if isinstance(m, nn.Linear)]
            hidden_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            c = torch.tensor(_BIAS_PRE_ACTIVATION, dtype=hidden_dtype)
            constant = float(_activate(c.clone(), self.network.activation).float())  # a hidden layer's extra input
            mats, carried = [], 1.0  # the constant column of the current layer's input
            for i, m in enumerate(linears):
                w = m.weight.detach().float().t()  # (in, out)
                rows = torch.cat([w, (m.bias.detach().float() / carried)[None, :]], dim=0)  # (in + 1, out)
                last = i == len(linears) - 1
                if not last:
                    feed = torch.zeros((rows.shape[0], 1), dtype=rows.dtype, device=rows.device)
                    feed[-1, 0] = _BIAS_PRE_ACTIVATION / carried
                    rows = torch.cat([rows, feed], dim=1)
                    carried = constant
                dt = torch.float32 if i == 0 or last else hidden_dtype
                mats.append(rows.to(dt).contiguous())
            self._fast[key] = mats
        return self._fast[key]

    def _forward_fast(self, x: torch.Tensor, precision: Precision) -> torch.Tensor:
        """The network's forward pass, one GEMM and one in-place activation per layer (inference only).

        Args:
            x: ``(n, n_inputs + 1)`` float32: the network's inputs and a last column of ones (the bias,
                :meth:`_layers`).
            precision: ``"fp32"`` or ``"bf16"``: the first and the output layer run in fp32 (the inputs carry
                the signal's precision, the outputs the estimates') and the hidden layers in bfloat16
                (8-bit mantissa; AVX512-BF16/AMX or tensor cores make it ~3× faster).

        Returns:
            ``(n, n_outputs)`` float32 in [0, 1].
        """
        layers = self._layers(precision)
        act = self.network.activation
        h = torch.mm(x, layers[0])
        if precision == "bf16":
            h = h.to(torch.bfloat16)
        for w in layers[1:-1]:
            h = torch.mm(_activate(h, act), w)
        # The output layer in fp32: a bf16 pre-sigmoid value would quantise T1/T2 in steps of
        # ~0.7 % (measured on the shipped model), a third of the accuracy budget.
        h = torch.mm(_activate(h, act).float(), layers[-1])
        return torch.sigmoid_(h)

    @torch.inference_mode()
    def predict(self, signals: np.ndarray | torch.Tensor, b1: Any = None, *, batch_size: int = 65536,
                precision: Precision = "auto") -> tuple[np.ndarray, np.ndarray]:
        """T1 and T2 of every fingerprint.

        Args:
            signals: ``(n, n_frames)`` magnitudes of any scale (complex → magnitude), numpy or torch.
            b1: the voxels' relative B1 (from a B1 map), ``(n,)``, or None for B1 = 1. Only a model
                with ``b1.input`` takes it (others refuse it); voxels outside the model's B1 range
                get NaN.
            batch_size: voxels per forward pass (bounds memory).
            precision: ``"auto"`` (bf16 where it is native, see :func:`resolve_precision`), ``"fp32"``
                or ``"bf16"``. bf16 is ~3× faster on CPUs with AVX512-BF16/AMX; its accuracy cost on the
                paper dictionary is ≤ 0.1 ms RMSE (``docs/BENCHMARKS.md``).

        Returns:
            ``(t1_ms, t2_ms)`` float32 numpy arrays ``(n,)``; NaN where the signal is zero/not finite.
        """
        pred = self._predict_tensors(signals, b1, batch_size=batch_size, precision=precision)
        return pred.t1_ms.cpu().numpy(), pred.t2_ms.cpu().numpy()

    @torch.inference_mode()
    def predict_b1(self, signals: np.ndarray | torch.Tensor, *, batch_size: int = 65536,
                   precision: Precision = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T1, T2 and B1 of every fingerprint, for a model that estimates B1 (``b1.output``).

        Returns:
            ``(t1_ms, t2_ms, b1)`` float32 ``(n,)``; NaN where the signal is zero/not finite.
        """
        if not self.b1.output:
            raise ValueError("this model does not estimate B1 (b1.output is False); give a B1 map instead")
        pred = self._predict_tensors(signals, None, batch_size=batch_size, precision=precision)
        assert pred.b1_estimate is not None
        return pred.t1_ms.cpu().numpy(), pred.t2_ms.cpu().numpy(), pred.b1_estimate.cpu().numpy()

    def _b1_input(self, b1: Any, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The network's B1 feature ``(n, 1)``, the in-range mask ``(n,)`` and the voxels' B1 values ``(n,)``
        float32 (all None for models without input)."""
        if not self.b1.input:
            if b1 is not None:
                raise ValueError("b1: this model takes no B1 input (it was trained at B1 = 1); use a model trained "
                                 "with a B1 input, or pass b1=None")
            return None, None, None
        if b1 is None:
            values = torch.ones(n, dtype=torch.float32, device=self.device)
        else:
            arr = b1.detach() if isinstance(b1, torch.Tensor) else torch.as_tensor(np.asarray(b1, dtype=np.float32))
            values = arr.to(device=self.device, dtype=torch.float32).reshape(-1)
            if values.numel() == 1 and n != 1:
                values = values.expand(n)
            if values.shape != (n,):
                raise ValueError(f"b1: expected None, a number or shape ({n},) like the signals, got shape "
                                 f"{tuple(arr.shape)}")
        lo, hi = self.b1.range
        tol = 1e-6 * hi
        in_range = torch.isfinite(values) & (values >= lo - tol) & (values <= hi + tol)
        feature = self.b1.feature(torch.where(in_range, values, torch.ones_like(values)))
        return feature, in_range, values

    def _predict_tensors(self, signals: np.ndarray | torch.Tensor, b1: Any = None, *, batch_size: int,
                         precision: Precision) -> _Prediction:
        precision = resolve_precision(precision, self.device,  # type: ignore[assignment]
                                      max(self.network.architecture()["hidden"], default=0))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        n_in = self.n_frames + self.network.n_extra_inputs
        # The network's input row: the normalised fingerprint, the B1 feature, and 1 (the bias, _forward_fast).
        x, valid, norm = _normalised(signals, self.n_frames, device=self.device, width=n_in + 1)
        feature, in_range, b1_values = self._b1_input(b1, x.shape[0])
        if feature is not None and in_range is not None:
            x[:, self.n_frames:n_in] = feature
            valid = valid & in_range
        x[:, n_in] = 1.0
        self.network.eval()
        outs = [self._forward_fast(x[i:i + batch_size], precision) for i in range(0, x.shape[0], batch_size)]
        y = torch.cat(outs) if outs else torch.zeros((0, self.network.n_outputs), device=self.device)
        t1, t2 = self.unit_to_ms(y)
        nan = torch.full_like(t1, float("nan"))
        b1_est = torch.where(valid, self.unit_to_b1(y), nan) if self.b1.output else None
        return _Prediction(torch.where(valid, t1, nan), torch.where(valid, t2, nan), b1_est, valid, norm,
                           b1_est if b1_est is not None else b1_values)

    def estimate(self, signals: np.ndarray | torch.Tensor, b1: Any = None, *, batch_size: int = 65536,
                 precision: Precision = "auto") -> Estimate:
        """T1, T2 and M0 of every fingerprint (M0 in the signal's units, see the module docstring).

        Args:
            signals: ``(n, n_frames)`` magnitudes.
            b1: ``(n,)`` relative B1 of the voxels, or None (see :meth:`predict`); a B1-estimating
                model uses its own estimate for M0.
        """
        return self._estimate(signals, b1, batch_size=batch_size, precision=precision)[0]

    def estimate_b1(self, signals: np.ndarray | torch.Tensor, *, batch_size: int = 65536,
                    precision: Precision = "auto") -> tuple[Estimate, np.ndarray]:
        """T1, T2, M0 and the estimated B1 of every fingerprint, one forward pass (``b1.output`` models).

        Returns:
            ``(Estimate, b1)``, ``b1`` float32 ``(n,)`` (NaN where the signal is zero/not finite).
        """
        if not self.b1.output:
            raise ValueError("this model does not estimate B1 (b1.output is False); give a B1 map instead")
        est, b1 = self._estimate(signals, None, batch_size=batch_size, precision=precision)
        assert b1 is not None
        return est, b1

    def _estimate(self, signals: np.ndarray | torch.Tensor, b1: Any, *, batch_size: int,
                  precision: Precision) -> tuple[Estimate, np.ndarray | None]:
        with torch.inference_mode():
            pred = self._predict_tensors(signals, b1, batch_size=batch_size, precision=precision)
            t1, t2, valid = pred.t1_ms, pred.t2_ms, pred.valid
            if self.m0_table is not None:  # M0 = ‖|s|‖/‖|a|‖ from the table (drone_core.atom_norms), on the device
                atom = self.m0_table.norm(torch.nan_to_num(t1, nan=1.0), torch.nan_to_num(t2, nan=1.0),
                                          None if pred.b1 is None else torch.nan_to_num(pred.b1, nan=1.0))
                m0_t = torch.where(valid, ratio_of_norms(pred.norm, atom), torch.zeros_like(atom))
        t1_np, t2_np = t1.cpu().numpy(), t2.cpu().numpy()
        if self.m0_table is not None:
            m0 = m0_t.cpu().numpy()
        else:  # M0 by the least-squares scale of each voxel's simulated atom
            b1_np = np.ones(t1_np.shape) if pred.b1 is None else pred.b1.cpu().numpy().astype(np.float64)
            m0 = self._fitted_m0(signals, t1_np, t2_np, b1_np, valid.cpu().numpy())
        b1_out = None if pred.b1_estimate is None else pred.b1_estimate.cpu().numpy().astype(np.float32)
        return Estimate(t1_np, t2_np, m0), b1_out

    def _fitted_m0(self, signals: np.ndarray | torch.Tensor, t1_np: np.ndarray, t2_np: np.ndarray,
                   b1_np: np.ndarray, valid_np: np.ndarray) -> np.ndarray:
        """``(n,)`` float32 M0: :func:`fit_m0` against the atom simulated at each valid voxel's estimate."""
        mags = np.abs(signals.detach().cpu().numpy() if isinstance(signals, torch.Tensor) else np.asarray(signals))
        m0 = np.zeros(t1_np.shape, dtype=np.float32)
        if valid_np.any():
            atoms = np.abs(simulate(self.schedule, t1_np[valid_np].astype(np.float64),
                                    np.clip(t2_np[valid_np], 1e-3, None).astype(np.float64),
                                    b1_np[valid_np], n_positions=M0_N_POSITIONS, rotation=self.rotation))
            m0[valid_np] = fit_m0(np.where(np.isfinite(mags[valid_np]), mags[valid_np], 0).astype(np.float32),
                                  atoms.astype(np.float32))
        return m0

    def with_m0_table(self, shape: tuple[int, int, int] = DEFAULT_TABLE_SHAPE, *,
                      n_positions: int = 24) -> "DroneModel":
        """Build :attr:`m0_table` over the model's T1/T2 (and B1) ranges (seconds: ~10⁵ atoms) and return self."""
        lo1, lo2 = max(self.t1_range_ms[0], 0.1), max(self.t2_range_ms[0], 0.1)
        self.m0_table = AtomNormTable.build(self.schedule, (lo1, self.t1_range_ms[1]), (lo2, self.t2_range_ms[1]),
                                            self.b1.range if (self.b1.input or self.b1.output) else None, shape=shape,
                                            n_positions=n_positions, rotation=self.rotation)
        return self

    def network_digest(self) -> str:
        """SHA-256 of the network's weights alone (what an :class:`UncertaintyTable` is tied to)."""
        return _weights_digest(self.network.state_dict())

    def with_uncertainty_table(self, **options: Any) -> "DroneModel":
        """Measure :attr:`uncertainty_table` (:meth:`UncertaintyTable.build` with ``options``; seconds); return self."""
        self.uncertainty_table = UncertaintyTable.build(self, network_digest=self.network_digest(), **options)
        return self

    def estimate_std(self, t1_ms: Any, t2_ms: Any, m0: Any, sigma: float, b1: Any = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted standard deviation (ms) of each voxel's T1 and T2 estimate (:mod:`drone_core.uncertainty`).

        Args:
            t1_ms, t2_ms, m0: ``(n,)`` the voxels' estimates (:meth:`estimate`), M0 in the signal's units.
            sigma: the noise σ per real channel, in the signal's units (> 0).
            b1: ``(n,)`` the B1 the estimates are for (the B1 map, or the estimated B1), or None (1).

        Returns:
            ``(sd_t1_ms, sd_t2_ms)`` float32 ``(n,)``; NaN where an estimate is not finite or M0 ≤ 0.

        Raises:
            ValueError: the model has no uncertainty table, or ``sigma`` is not > 0.
        """
        if self.uncertainty_table is None:
            raise ValueError("this model has no uncertainty table (DroneModel.with_uncertainty_table() measures one; "
                             "`drone train` stores one in the models it writes)")
        if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: expected a noise level > 0, got {sigma!r}")
        m0_np = np.asarray(m0, dtype=np.float32)
        snr = np.where(m0_np > 0, m0_np / np.float32(sigma), np.float32("nan"))
        sd1, sd2 = self.uncertainty_table.std(np.asarray(t1_ms), np.asarray(t2_ms), snr,
                                              None if b1 is None else np.asarray(b1, dtype=np.float32))
        return sd1.numpy(), sd2.numpy()

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        """The JSON stored in the file (without the weights digest)."""
        return {
            "kind": FILE_KIND,
            "format_version": FORMAT_VERSION,
            "drone_version": self.version,
            "schedule": self.schedule.to_dict(),
            "schedule_digest": self.schedule.digest(),
            "t1_range_ms": list(self.t1_range_ms),
            "t2_range_ms": list(self.t2_range_ms),
            "input": {"magnitude": True, "norm": "l2", "scale": "sqrt(n_frames)"},
            "target": {"transform": self.target_transform,
                       "order": ["t1_ms", "t2_ms"] + (["b1"] if self.b1.output else [])},
            "b1": self.b1.to_dict(),
            "architecture": self.network.architecture(),
            "training": self.training,
            "signal_model": {"slice_rotation": self.rotation},
            **({"m0_table": self.m0_table.to_metadata()} if self.m0_table is not None else {}),
            **({"uncertainty_table": self.uncertainty_table.to_metadata()}
               if self.uncertainty_table is not None else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write a safetensors file with the JSON metadata (see the module docstring)."""
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.network.state_dict().items()}
        if self.m0_table is not None:
            state[M0_TABLE_KEY] = torch.from_numpy(self.m0_table.log_norm.copy())
        if self.uncertainty_table is not None:
            state[UNCERTAINTY_TABLE_KEY] = torch.from_numpy(self.uncertainty_table.log_sd.copy())
        meta = self.metadata()
        meta["weights_sha256"] = _weights_digest(state)
        save_file(state, str(path), metadata={_META_KEY: json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path | Any, device: str | torch.device = "cpu") -> "DroneModel":
        """Read a model file; refuses anything that is not an intact DRONE model, with the reason.

        Args:
            path: file path (or an ``importlib.resources`` traversable).
            device: where to put the network (``"auto"`` → CUDA when present).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load as load_bytes

        p = Path(str(path))
        try:
            data = path.read_bytes() if hasattr(path, "read_bytes") else p.read_bytes()
        except OSError as exc:
            raise ValueError(f"model path {str(p)!r}: cannot read ({exc.strerror})") from exc
        try:
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + header_len])
            state = load_bytes(data)
        except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: not a safetensors model file ({exc})") from exc
        raw = (header.get("__metadata__") or {}).get(_META_KEY)
        if raw is None:
            raise ValueError(f"{p}: no {_META_KEY!r} metadata — not a DRONE model file")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: corrupt model metadata ({exc})") from exc
        if meta.get("kind") != FILE_KIND:
            raise ValueError(f"{p}: expected kind {FILE_KIND!r}, got {meta.get('kind')!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{p}: model format version {meta.get('format_version')!r}; this package reads "
                             f"version {FORMAT_VERSION}")
        digest = _weights_digest(state)
        if digest != meta.get("weights_sha256"):
            raise ValueError(f"{p}: weights do not match their recorded SHA-256 (file tampered or corrupt)")
        schedule = Schedule.from_dict(meta["schedule"])
        if schedule.digest() != meta.get("schedule_digest"):
            raise ValueError(f"{p}: schedule does not match its recorded digest (file tampered or corrupt)")
        table = None
        if M0_TABLE_KEY in state or "m0_table" in meta:
            if M0_TABLE_KEY not in state or "m0_table" not in meta:
                raise ValueError(f"{p}: the M0 table's values and its description must both be there")
            try:
                table = AtomNormTable.from_file_parts(meta["m0_table"], state.pop(M0_TABLE_KEY))
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from None
        uncertainty = None
        if UNCERTAINTY_TABLE_KEY in state or "uncertainty_table" in meta:
            if UNCERTAINTY_TABLE_KEY not in state or "uncertainty_table" not in meta:
                raise ValueError(f"{p}: the uncertainty table's values and its description must both be there")
            try:
                uncertainty = UncertaintyTable.from_file_parts(meta["uncertainty_table"],
                                                               state.pop(UNCERTAINTY_TABLE_KEY))
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from None
        network = DroneMLP.from_architecture(meta["architecture"])
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{p}: weights do not fit the recorded architecture ({exc})") from exc
        model = cls(network, schedule, tuple(meta["t1_range_ms"]), tuple(meta["t2_range_ms"]),
                    meta.get("training", {}), meta.get("drone_version", "unknown"),
                    meta.get("target", {}).get("transform", "linear"), B1Use.from_dict(meta.get("b1")), table,
                    uncertainty, (meta.get("signal_model") or {}).get("slice_rotation", "x"))
        return model.to(device)


def _activate(h: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return h.tanh_()
    if activation == "relu":
        return h.relu_()
    if activation == "gelu":
        return torch.nn.functional.gelu(h)
    return torch.nn.functional.silu(h, inplace=True)


def default_model(device: str | torch.device = "cpu") -> DroneModel:
    """The shipped model for the default schedule and the paper grid (``drone_core/weights``)."""
    ref = resources.files("drone_core.weights").joinpath(DEFAULT_MODEL_NAME)
    if not ref.is_file():
        raise FileNotFoundError(f"the shipped model {DEFAULT_MODEL_NAME} is missing from drone_core/weights")
    return DroneModel.load(ref, device=device)
