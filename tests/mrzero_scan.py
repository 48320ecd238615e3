"""A raw MRF-EPI scan simulated by MRzeroCore from the ``.seq`` that ``drone sequence`` writes, as ISMRMRD.

The end-to-end check of issue 20 (3c) with a simulator no one here wrote: MRzeroCore (phase-distribution graphs;
Endres et al., MRM 2024) imports the Pulseq file itself and simulates every ADC sample of it — noise-free k-space
of a small digital phantom, several receive coils — and the samples become an ISMRMRD raw file through the
converter's own path (:func:`drone_gadgets.scans.convert.write_converted`: the labels ``LIN``/``NAV``/``REF``/
``REV``/``REP`` → counters and flags, the ``[DEFINITIONS]`` → the header's ``ConventionalEPI`` trajectory), as a
scanner's readouts would.

MRzero plays every RF pulse as one instantaneous rotation at its centre: the slice profile is ideal, so the
sequence uses the hard 180° inversion (``EpiMrfProtocol(inversion="hard")``) and the estimator that matches it
is the ideal-slice model (``schedule.ideal()``).

Units (MRzeroCore 1.x): a :class:`MRzeroCore.VoxelGridPhantom`'s ``affine`` is in **mm** per voxel and the
voxel positions it builds are in **metres**, the unit of the imported sequence's k-space (1/m). Its voxels are
sinc-shaped (band-limited: no signal beyond ± 0.5/voxel in k), so a phantom on the reconstruction grid (voxel =
pixel = FOV / matrix) reconstructs to its own values. Its axes are ``(x, y, z)`` = (readout, phase, slice); the
arrays here are ``(y, x)`` like the images, transposed on the way in. The slice is one voxel of the slice
thickness along z: the spoiler's dephased states (8 cycles across it) give no signal, as the EPG's F0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MrzeroPhantom", "disc_phantom", "coil_sensitivities", "mrzero_protocol", "write_mrzero_sequence",
           "simulate_signal", "mrzero_signal", "split_readouts", "write_mrzero_scan", "adjoint_image", "TISSUE_LABELS",
           "TISSUE_M0"]

#: Label of each tissue in :func:`disc_phantom` (0: air), as in :func:`drone_core.phantoms.brain_phantom`.
TISSUE_LABELS: dict[str, int] = {"CSF": 1, "GM": 2, "WM": 3}
#: Proton density of each tissue (BrainWeb's, as :func:`drone_core.phantoms.brain_phantom`).
TISSUE_M0: dict[str, float] = {"CSF": 1.0, "GM": 0.86, "WM": 0.77}


@dataclass(frozen=True)
class MrzeroPhantom:
    """A single-slice digital phantom for MRzero, on the reconstruction grid.

    Attributes:
        labels: ``(ny, nx)`` int, :data:`TISSUE_LABELS` (0: air).
        t1_ms, t2_ms, m0: ``(ny, nx)`` float64 true maps (0 in air).
        coil_sens: ``(coils, ny, nx)`` complex128 receive sensitivities.
        fov_mm: ``(fov_y, fov_x)``, mm; pixel = FOV / matrix.
        slice_thickness_mm: the voxel's extent along z, mm (the sequence's slice thickness).
    """

    labels: np.ndarray
    t1_ms: np.ndarray
    t2_ms: np.ndarray
    m0: np.ndarray
    coil_sens: np.ndarray
    fov_mm: tuple[float, float]
    slice_thickness_mm: float

    @property
    def matrix(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @property
    def n_coils(self) -> int:
        return int(self.coil_sens.shape[0])

    def truth(self) -> dict[str, np.ndarray]:
        """``{"t1", "t2", "m0", "labels"}``, each ``(1, ny, nx)`` (one slice), as the maps come back."""
        return {"t1": self.t1_ms[None], "t2": self.t2_ms[None], "m0": self.m0[None], "labels": self.labels[None]}

    def voxel_grid(self) -> Any:
        """The :class:`MRzeroCore.VoxelGridPhantom`: ``(x, y, 1)`` arrays in s (T1, T2), an affine in mm per voxel,
        no T2', diffusion or B0, B1 = 1."""
        import MRzeroCore as mr0
        import torch

        ny, nx = self.matrix

        def grid(a: np.ndarray, dtype: Any = torch.float32) -> Any:  # (…, y, x) → (…, x, y, 1)
            return torch.as_tensor(np.ascontiguousarray(np.swapaxes(a, -1, -2)[..., None]), dtype=dtype)

        affine = torch.eye(3, 4)
        affine[0, 0] = self.fov_mm[1] / nx
        affine[1, 1] = self.fov_mm[0] / ny
        affine[2, 2] = self.slice_thickness_mm
        zeros = torch.zeros((nx, ny, 1))
        return mr0.VoxelGridPhantom(PD=grid(self.m0), T1=grid(self.t1_ms * 1e-3), T2=grid(self.t2_ms * 1e-3),
                                    T2dash=torch.full((nx, ny, 1), 1e6), D=zeros, B0=zeros,
                                    B1=torch.ones((1, nx, ny, 1)), coil_sens=grid(self.coil_sens, torch.complex64),
                                    affine=affine)


def coil_sensitivities(matrix: tuple[int, int], n_coils: int) -> np.ndarray:
    """Smooth receive sensitivities of ``n_coils`` coils around the object: a Gaussian fall-off from a centre on a
    ring at 1.2× the half-FOV, and a phase of the coil's angle plus a slow ramp.

    Returns:
        ``(n_coils, ny, nx)`` complex128, magnitude ≤ 1.
    """
    ny, nx = matrix
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    out = []
    for c in range(n_coils):
        angle = 2 * np.pi * c / n_coils
        cx, cy = 1.2 * np.cos(angle), 1.2 * np.sin(angle)
        out.append(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2.0) * np.exp(1j * (angle + 0.5 * x - 0.3 * y)))
    return np.array(out)


def disc_phantom(matrix: tuple[int, int] = (32, 32), n_coils: int = 4, fov_mm: tuple[float, float] = (256.0, 256.0),
                 slice_thickness_mm: float = 5.0) -> MrzeroPhantom:
    """A head-sized disc: WM on the left, GM on the right, a CSF disc inside the WM (each ≥ 2 pixels from the
    others after a 1-pixel erosion); the paper's 1.5 T values (:data:`drone_core.crb.BRAIN_TISSUES_1P5T`) and
    BrainWeb's proton densities (:data:`TISSUE_M0`).

    Args:
        matrix: ``(ny, nx)``, the sequence's matrix (the phantom is on the reconstruction grid).
    """
    from drone_core.crb import BRAIN_TISSUES_1P5T

    ny, nx = matrix
    y, x = np.mgrid[:ny, :nx].astype(float)
    y, x = (y - ny // 2) / ny * 32, (x - nx // 2) / nx * 32  # in pixels of a 32 × 32 grid
    radius = np.hypot(x, y)
    labels = np.zeros(matrix, dtype=np.int64)
    labels[radius < 13] = TISSUE_LABELS["WM"]
    labels[(radius < 13) & (x > 2)] = TISSUE_LABELS["GM"]
    labels[np.hypot(x + 5, y + 2) < 4.5] = TISSUE_LABELS["CSF"]
    t1, t2, m0 = (np.zeros(matrix) for _ in range(3))
    for name, label in TISSUE_LABELS.items():
        where = labels == label
        t1[where], t2[where] = BRAIN_TISSUES_1P5T[name]
        m0[where] = TISSUE_M0[name]
    return MrzeroPhantom(labels, t1, t2, m0, coil_sensitivities(matrix, n_coils), (float(fov_mm[0]), float(fov_mm[1])),
                         float(slice_thickness_mm))


def mrzero_protocol(matrix: tuple[int, int] = (32, 32), calibration_lines: int = 16, **kwargs: Any) -> Any:
    """The :class:`~drone_core.sequence.epi_mrf.EpiMrfProtocol` simulated here: GRAPPA R = 2 with a separate ACS of
    ``calibration_lines`` lines, the hard inversion (MRzero's RF is one rotation), no noise scan (MRzero has no
    noise; a Gadgetron without a storage server fails on one)."""
    from drone_core.sequence.epi_mrf import EpiMrfProtocol

    return EpiMrfProtocol(**{"matrix": matrix, "acceleration": 2, "calibration_lines": calibration_lines,
                             "noise_lines": 0, "inversion": "hard", **kwargs})


def write_mrzero_sequence(path: str | Path, matrix: tuple[int, int] = (32, 32), **kwargs: Any) -> Any:
    """``drone sequence`` of the default schedule with :func:`mrzero_protocol`; returns its SequenceTiming."""
    from drone_core.schedule import default_schedule
    from drone_core.sequence.epi_mrf import write_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_sequence(path, default_schedule(), mrzero_protocol(matrix, **kwargs))


def simulate_signal(seq_path: str | Path, phantom: MrzeroPhantom, *, max_states: int = 200,
                    min_state_mag: float = 1e-4, min_signal: float = 1e-3) -> np.ndarray:
    """MRzero's signal of every ADC sample of the sequence on ``phantom``, in sequence order
    (:func:`mrzero_signal` of its voxel grid).

    Returns:
        ``(samples, coils)`` complex64 (MRzero's scale: M0 = PD per voxel, summed over voxels).
    """
    return mrzero_signal(seq_path, phantom.voxel_grid().build(), max_states=max_states, min_state_mag=min_state_mag,
                         min_signal=min_signal)


def mrzero_signal(seq_path: str | Path, data: Any, *, max_states: int, min_state_mag: float,
                  min_signal: float) -> np.ndarray:
    """MRzero's phase-graph simulation of the ``.seq`` on built ``data`` (an ``MRzeroCore.SimData``).

    Args:
        max_states, min_state_mag: the phase graph's pruning (``compute_graph``).
        min_signal: ``execute_graph``'s ``min_emitted_signal`` and ``min_latent_signal``.

    Returns:
        ``(samples, coils)`` complex64, every ADC sample in sequence order.
    """
    import MRzeroCore as mr0
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = mr0.Sequence.import_file(str(seq_path))
        with torch.no_grad():
            graph = mr0.compute_graph(seq, data, max_state_count=max_states, min_state_mag=min_state_mag)
            signal = mr0.execute_graph(graph, seq, data, min_emitted_signal=min_signal, min_latent_signal=min_signal,
                                       print_progress=False)
    return np.asarray(signal.numpy(), dtype=np.complex64).reshape(-1, int(data.coil_sens.shape[0]))


def split_readouts(signal: np.ndarray, readouts: list[Any]) -> list[np.ndarray]:
    """Split ``(samples, coils)`` into one ``(coils, n_samples)`` complex64 array per ADC of ``readouts``
    (:func:`~drone_gadgets.scans.convert.pulseq_readouts`), the form ``write_converted`` takes.

    Raises:
        ValueError: the sample count differs from the sequence's.
    """
    total = sum(r.n_samples for r in readouts)
    if signal.shape[0] != total:
        raise ValueError(f"signal: {signal.shape[0]} samples, the sequence's ADCs have {total}")
    out, start = [], 0
    for r in readouts:
        out.append(np.ascontiguousarray(signal[start:start + r.n_samples].T, dtype=np.complex64))
        start += r.n_samples
    return out


def write_mrzero_scan(out_path: str | Path, seq_path: str | Path, phantom: MrzeroPhantom, *,
                      noise_level: float = 0.0, seed: int = 0, signal: np.ndarray | None = None,
                      **simulate_kwargs: Any) -> tuple[Any, np.ndarray]:
    """Simulate ``seq_path`` on ``phantom`` (or take ``signal``) and write it as an ISMRMRD raw file through
    :func:`~drone_gadgets.scans.convert.write_converted`.

    Args:
        noise_level: complex Gaussian noise added to every sample, sd per real/imaginary part as a fraction of the
            largest |sample| (0: noise-free).
        seed: the noise's seed.
        signal: an earlier :func:`simulate_signal` of the same sequence and phantom, to skip the simulation.

    Returns:
        ``(ConvertInfo, signal)``: what was written and the noise-free ``(samples, coils)`` signal.
    """
    from drone_gadgets.scans.convert import pulseq_readouts, write_converted

    readouts, definitions = pulseq_readouts(seq_path)
    if signal is None:
        signal = simulate_signal(seq_path, phantom, **simulate_kwargs)
    noisy = signal
    if noise_level > 0:
        rng = np.random.default_rng(seed)
        sigma = noise_level * float(np.abs(signal).max())
        noisy = (signal + sigma * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
                 ).astype(np.complex64)
    info = write_converted(out_path, readouts, definitions, split_readouts(noisy, readouts),
                           description=f"MRzeroCore simulation of {Path(seq_path).name}", field_strength_t=1.5)
    return info, signal


def adjoint_image(seq_path: str | Path, signal: np.ndarray, selected: list[int], matrix: tuple[int, int],
                  fov_mm: tuple[float, float]) -> np.ndarray:
    """A plain-numpy image of some readouts: the adjoint DFT on the sequence's own k-space (pypulseq's), samples
    weighted by their readout spacing and cut at the grid's Nyquist, root-sum-of-squares over coils. An
    undersampled train gives the object and its FOV/R alias; a check that the simulation encodes, not a recon.

    Args:
        signal: ``(samples, coils)``; selected: indices of the readouts (``pulseq_readouts`` order).

    Returns:
        ``(ny, nx)`` float64 magnitude.
    """
    import pypulseq as pp

    from drone_gadgets.scans.convert import pulseq_readouts

    seq = pp.Sequence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq.read(str(seq_path))
        k_adc = np.asarray(seq.calculate_kspace()[0])
    readouts, _ = pulseq_readouts(seq_path)
    starts = np.cumsum([0] + [r.n_samples for r in readouts])
    idx = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in selected])
    kx, ky = k_adc[0, idx], k_adc[1, idx]
    ny, nx = matrix
    fy, fx = fov_mm[0] * 1e-3, fov_mm[1] * 1e-3
    weight = np.abs(np.gradient(kx))
    weight[np.abs(kx) > nx / 2 / fx] = 0.0
    yy, xx = np.meshgrid((np.arange(ny) - ny // 2) * fy / ny, (np.arange(nx) - nx // 2) * fx / nx, indexing="ij")
    encode = np.exp(2j * np.pi * (np.outer(kx, xx.ravel()) + np.outer(ky, yy.ravel())))
    image = (encode.T @ (signal[idx] * weight[:, None])).reshape(ny, nx, -1)
    return np.sqrt((np.abs(image) ** 2).sum(axis=-1))
