"""The slice-selective excitation pulse and the flip-angle profile it gives across the slice.

A 2D MRF acquisition excites a slice with a band-limited pulse (here an apodized sinc) under a
slice-select gradient. Isochromats across the slice see different flip angles; the measured
fingerprint is their sum. This module computes that profile from a simulation of the pulse
itself — not the small-tip Fourier transform, which is wrong at the large flip angles of MRF.

Model (normative, ``DESIGN.md`` step 5)
----------------------------------------
* The pulse ``ω1(t)`` is sampled at :data:`DEFAULT_PULSE_SAMPLES` points over its duration ``T``
  (time in units of ``T``) and scaled so that its area is the nominal flip angle α: on resonance
  (z = 0, the slice centre) it rotates by exactly α about x.
* Under the slice-select gradient an isochromat at position ``z`` has the off-resonance
  ``Δω(z) = 2π·f(z)``, ``f = z · FWHM_f`` cycles per ``T``, where ``FWHM_f`` is the full width at half
  maximum of the small-tip profile: ``z`` is measured in **nominal slice thicknesses**.
* The pulse is a product of hard-pulse rotations (one per sample) about
  ``(ω1, 0, Δω)``, composed as Cayley–Klein parameters (Pauly et al., IEEE TMI 1991):
  ``α_j = a_j α_{j−1} − b_j* β_{j−1}``, ``β_j = b_j α_{j−1} + a_j* β_{j−1}``. The flip angle at
  ``z`` is ``θ(z) = 2·asin|β(z)|``. Rephasing is ideal: the EPG applies θ(z) about x.
* B1 scales the pulse: the flip at ``z`` under a relative transmit field ``b1`` is
  ``θ(z; b1·α)`` — the profile of the pulse played at ``b1`` times its amplitude. (At small tips
  this equals ``b1·θ(z; α)``; at 90° it does not, by up to a few degrees in the transition band.)

Fast evaluation
---------------
:meth:`ProfileTable.flip_angles` interpolates linearly in the rotation at the slice centre over a
table of spinor simulations every :data:`TABLE_STEP_DEG` degrees from 0 to :data:`TABLE_MAX_DEG`
(cached per excitation). It is differentiable with respect to the angle (PyTorch), so schedules
can be designed with the profile.

The slice integral ``∫ s(z) dz`` (z in slice thicknesses; an ideal rectangular slice gives the
ideal signal) is a midpoint rule over ``n_positions`` points on ``[0, z_max]`` (the profile of
a symmetric pulse is symmetric), weights ``2·z_max/n_positions``. ``z_max = 0.5 + 4/TBW`` covers
the transition band and the first side lobes. :data:`DEFAULT_N_POSITIONS` and the error it leaves
are measured in ``docs/SIGNAL_MODEL.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: parsing a schedule (a header check) needs none
    import torch

from .validation import check_fields, finite_number

__all__ = [
    "Excitation",
    "ProfileTable",
    "APODIZATIONS",
    "SHAPES",
    "DEFAULT_N_POSITIONS",
    "DEFAULT_PULSE_SAMPLES",
    "TABLE_STEP_DEG",
    "TABLE_MAX_DEG",
    "spinor_flip_angles",
    "spinor_parameters",
    "DEFAULT_ROTATION",
    "ROTATIONS",
    "profile_table",
]

#: How the EPG applies the pulse at each slice position: ``"spinor"`` (the normative model: the pulse's full
#: rotation, its axis turning across the slice; docs/SIGNAL_MODEL.md, docs/SCANNER.md §6) or ``"x"`` (θ(z) about
#: x, the model before it: 0.7–3.5 % from a Bloch simulation of the waveform, kept for comparison and old models).
ROTATIONS: tuple[str, ...] = ("x", "spinor")
#: The normative slice-profile rotation.
DEFAULT_ROTATION = "spinor"
#: Pulse shapes this package can simulate.
SHAPES: tuple[str, ...] = ("sinc",)
#: Apodization windows of the sinc.
APODIZATIONS: tuple[str, ...] = ("hann", "hamming", "none")
#: Hard-pulse steps of the spinor simulation (the profile changes by < 1e-4 degrees from 256 to
#: 1024 samples at 90°; ``tests/test_excitation.py``).
DEFAULT_PULSE_SAMPLES = 256
#: Slice positions of the midpoint rule on ``[0, z_max]`` (see ``docs/SIGNAL_MODEL.md``).
DEFAULT_N_POSITIONS = 24
#: Angle step (degrees) of the profile table that :class:`ProfileTable` interpolates.
TABLE_STEP_DEG = 0.25
#: Largest rotation at the slice centre the table holds (flip angle × B1), degrees. Beyond 180° the
#: tip angle 2·asin|β| no longer tells the sense of the rotation, so larger products are refused.
TABLE_MAX_DEG = 180.0


def _number(value: Any, name: str) -> float:
    return finite_number(value, f"excitation field {name!r}")


@dataclass(frozen=True)
class Excitation:
    """A slice-selective excitation pulse (the schedule JSON's ``"excitation"`` object).

    Attributes:
        shape: ``"sinc"``.
        time_bandwidth: time-bandwidth product TBW of the sinc (zero crossings over the pulse),
            in [1, 32]; 4 is typical for MRF.
        apodization: ``"hann"``, ``"hamming"`` or ``"none"``.
    """

    shape: str = "sinc"
    time_bandwidth: float = 4.0
    apodization: str = "hann"

    def __post_init__(self) -> None:
        if not isinstance(self.shape, str) or self.shape not in SHAPES:
            raise ValueError(f"excitation field 'shape': expected one of {list(SHAPES)}, got {self.shape!r}")
        tbw = _number(self.time_bandwidth, "time_bandwidth")
        if not 1.0 <= tbw <= 32.0:
            raise ValueError(f"excitation field 'time_bandwidth': expected 1 ≤ TBW ≤ 32, got {tbw}")
        if not isinstance(self.apodization, str) or self.apodization not in APODIZATIONS:
            raise ValueError(f"excitation field 'apodization': expected one of {list(APODIZATIONS)}, "
                             f"got {self.apodization!r}")
        object.__setattr__(self, "time_bandwidth", tbw)

    # ------------------------------------------------------------------ file format
    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "time_bandwidth": self.time_bandwidth, "apodization": self.apodization}

    @classmethod
    def from_dict(cls, data: Any) -> "Excitation":
        """From the JSON object; missing or unknown fields are named in the error."""
        check_fields(data, "schedule field 'excitation'", ("shape", "time_bandwidth", "apodization"))
        return cls(data["shape"], data["time_bandwidth"], data["apodization"])

    def describe(self) -> str:
        window = "" if self.apodization == "none" else f"{self.apodization}-apodized "
        return f"{window}{self.shape}, time-bandwidth {self.time_bandwidth:g}"

    # ------------------------------------------------------------------ the pulse
    def waveform(self, n_samples: int = DEFAULT_PULSE_SAMPLES) -> np.ndarray:
        """The pulse envelope at the midpoints of ``n_samples`` equal steps over its duration.

        Returns:
            ``(n_samples,)`` float64, normalised to unit sum (each step's share of the flip angle).
        """
        if not isinstance(n_samples, int) or n_samples < 8:
            raise ValueError(f"n_samples: expected an int ≥ 8, got {n_samples!r}")
        t = (np.arange(n_samples) + 0.5) / n_samples - 0.5  # in units of the duration, centred
        w = np.sinc(self.time_bandwidth * t)
        if self.apodization == "hann":
            w = w * (0.5 + 0.5 * np.cos(2.0 * np.pi * t))
        elif self.apodization == "hamming":
            w = w * (0.54 + 0.46 * np.cos(2.0 * np.pi * t))
        return w / w.sum()

    @property
    def z_max(self) -> float:
        """Half-width (slice thicknesses) of the integration range: ``0.5 + 4/TBW``."""
        return 0.5 + 4.0 / self.time_bandwidth

    def fwhm_cycles(self) -> float:
        """Full width at half maximum of the small-tip profile, cycles per pulse duration (cached)."""
        return _fwhm_cycles(self)

    def positions(self, n_positions: int = DEFAULT_N_POSITIONS) -> tuple[np.ndarray, np.ndarray]:
        """Midpoint-rule nodes and weights of the slice integral over ``z ≥ 0`` (symmetric profile).

        Returns:
            ``(z, weights)``, ``(n_positions,)`` float64; ``z`` in slice thicknesses, the weights sum
            to ``2·z_max`` (both halves of the slice).
        """
        if not isinstance(n_positions, (int, np.integer)) or n_positions < 1:
            raise ValueError(f"n_positions: expected a positive int, got {n_positions!r}")
        step = self.z_max / int(n_positions)
        z = (np.arange(int(n_positions)) + 0.5) * step
        return z, np.full(int(n_positions), 2.0 * step)

    def flip_angles(self, flip_angle_deg: Any, z: Any, *, n_samples: int = DEFAULT_PULSE_SAMPLES) -> np.ndarray:
        """Exact flip angle θ(z) of the pulse scaled to ``flip_angle_deg`` at the centre (spinor).

        Args:
            flip_angle_deg: ``(m,)`` rotations at z = 0, degrees.
            z: ``(p,)`` positions, slice thicknesses.

        Returns:
            ``(m, p)`` float64 flip angles, degrees.
        """
        f = np.asarray(z, dtype=np.float64).reshape(-1) * self.fwhm_cycles()
        return spinor_flip_angles(self.waveform(n_samples), np.asarray(flip_angle_deg, dtype=np.float64), f)

    def small_tip_profile(self, z: Any, *, n_samples: int = DEFAULT_PULSE_SAMPLES) -> np.ndarray:
        """The small-tip (Fourier) profile ``|FT of the pulse|`` at ``z``, 1 at the centre, ``(p,)``."""
        w = self.waveform(n_samples)
        t = (np.arange(n_samples) + 0.5) / n_samples - 0.5
        f = np.asarray(z, dtype=np.float64).reshape(-1) * self.fwhm_cycles()
        return np.abs(np.exp(-2j * np.pi * f[:, None] * t[None, :]) @ w)


def spinor_parameters(waveform: np.ndarray, flip_angle_deg: np.ndarray, f_cycles: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Cayley–Klein parameters ``(α, β)`` of a pulse followed by its ideal rephaser (hard-pulse steps).

    The rephaser is a z rotation undoing the precession of the pulse's second half (π·f at ``f`` cycles per
    pulse duration), as the slice-select rephasing gradient does; it leaves ``|β|`` (the flip angle) unchanged
    and turns the rotation's axis back towards x, but only in its linear part across the slice.

    Args:
        waveform: ``(n_t,)`` envelope, unit sum (step ``j`` rotates by ``waveform[j]·α`` on resonance).
        flip_angle_deg: ``(m,)`` rotations at zero off-resonance, degrees.
        f_cycles: ``(p,)`` off-resonance, cycles per pulse duration.

    Returns:
        ``(α, β)``, each ``(m, p)`` complex128: M+ → α*²·M+ − β²·M+* + 2α*β·Mz (Pauly et al., IEEE TMI 1991).
    """
    w = np.asarray(waveform, dtype=np.float64).reshape(-1)
    n_t = w.size
    alpha = np.deg2rad(np.asarray(flip_angle_deg, dtype=np.float64).reshape(-1))[:, None]  # (m, 1)
    f = np.asarray(f_cycles, dtype=np.float64).reshape(-1)
    dphi_z = (2.0 * np.pi * f / n_t)[None, :]  # (1, p)
    a = np.ones((alpha.size, dphi_z.size), dtype=np.complex128)
    b = np.zeros_like(a)
    for j in range(n_t):
        gx = alpha * w[j]  # rotation about x of this step, rad
        phi = np.sqrt(gx * gx + dphi_z * dphi_z)  # (m, p)
        s = np.sin(0.5 * phi)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(phi > 0, s / np.where(phi > 0, phi, 1.0), 0.5)
        aj = np.cos(0.5 * phi) - 1j * dphi_z * scale
        bj = -1j * gx * scale
        a, b = aj * a - np.conj(bj) * b, bj * a + np.conj(aj) * b
    rephase = np.exp(0.5j * np.pi * f)[None, :]  # the z rotation by −π·f
    return a * rephase, b / rephase


def spinor_flip_angles(waveform: np.ndarray, flip_angle_deg: np.ndarray, f_cycles: np.ndarray) -> np.ndarray:
    """Flip angles of a pulse from its Cayley–Klein parameters (hard-pulse steps).

    Args:
        waveform: ``(n_t,)`` envelope, unit sum (step ``j`` rotates by ``waveform[j]·α`` on resonance).
        flip_angle_deg: ``(m,)`` rotations at zero off-resonance, degrees.
        f_cycles: ``(p,)`` off-resonance, cycles per pulse duration.

    Returns:
        ``(m, p)`` flip angles ``2·asin|β|``, degrees.
    """
    _, b = spinor_parameters(waveform, flip_angle_deg, f_cycles)
    return np.rad2deg(2.0 * np.arcsin(np.clip(np.abs(b), 0.0, 1.0)))


@functools.lru_cache(maxsize=32)
def _fwhm_cycles(excitation: Excitation) -> float:
    w = excitation.waveform(DEFAULT_PULSE_SAMPLES)
    t = (np.arange(w.size) + 0.5) / w.size - 0.5
    f = np.linspace(0.0, 2.0 * excitation.time_bandwidth, 8001)
    prof = np.abs(np.exp(-2j * np.pi * f[:, None] * t[None, :]) @ w)
    prof = prof / prof[0]
    k = int(np.argmax(prof < 0.5))  # first sample below half maximum
    if k == 0:
        raise ValueError(f"excitation {excitation.describe()}: no half maximum found")
    # Linear interpolation between the samples around the crossing.
    f0, f1, p0, p1 = f[k - 1], f[k], prof[k - 1], prof[k]
    return float(2.0 * (f0 + (p0 - 0.5) * (f1 - f0) / (p0 - p1)))


@dataclass(frozen=True, eq=False)
class ProfileTable:
    """θ(z; α) tabulated over α for the slice positions of an excitation (see the module docstring).

    Attributes:
        excitation: the pulse.
        z: ``(p,)`` positions, slice thicknesses; ``weights``: ``(p,)`` their quadrature weights.
        table_deg: ``(n_angles, p)`` flip angles at the table's centre rotations
            ``0, TABLE_STEP_DEG, …, TABLE_MAX_DEG`` (degrees).
        table_alpha, table_beta: ``(n_angles, p)`` complex Cayley–Klein parameters of the pulse at the same
            rotations and positions (:func:`spinor_parameters`); a table given none holds the rotations about x by
            ``table_deg`` (α = cos θ/2, β = −i·sin θ/2).
    """

    excitation: Excitation
    z: np.ndarray
    weights: np.ndarray
    table_deg: np.ndarray
    table_alpha: np.ndarray | None = None
    table_beta: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.table_alpha is None) != (self.table_beta is None):
            raise ValueError("table_alpha, table_beta: give both or neither")
        if self.table_alpha is None:
            half = 0.5 * np.deg2rad(np.asarray(self.table_deg, dtype=np.float64))
            object.__setattr__(self, "table_alpha", np.cos(half).astype(np.complex128))
            object.__setattr__(self, "table_beta", -1j * np.sin(half))

    @property
    def n_positions(self) -> int:
        return int(self.z.size)

    def rotations(self, alpha_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pulse's Cayley–Klein ``(α, β)`` at every position for centre rotations ``alpha_deg`` of any shape
        ``S`` → each ``S + (p,)`` complex; linear interpolation of the table in the angle (differentiable).

        Raises:
            ValueError: a rotation outside ``[0, TABLE_MAX_DEG]``.
        """
        import torch

        assert self.table_alpha is not None and self.table_beta is not None  # __post_init__ fills them
        idx, frac = self._position(alpha_deg)
        out = []
        for table in (self.table_alpha, self.table_beta):
            parts = [torch.as_tensor(np.ascontiguousarray(part), dtype=alpha_deg.dtype, device=alpha_deg.device)
                     for part in (table.real, table.imag)]
            re, im = (t[idx] * (1.0 - frac) + t[idx + 1] * frac for t in parts)
            out.append(torch.complex(re, im))
        return out[0], out[1]

    def _position(self, alpha_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        with torch.no_grad():
            if alpha_deg.numel() and (float(alpha_deg.min()) < 0.0 or float(alpha_deg.max()) > TABLE_MAX_DEG):
                raise ValueError(f"flip angle × B1: expected 0 … {TABLE_MAX_DEG:g} degrees for the slice profile, "
                                 f"got {float(alpha_deg.min()):g} … {float(alpha_deg.max()):g}")
        pos = alpha_deg / TABLE_STEP_DEG
        idx = torch.clamp(pos.detach().floor().long(), 0, self.table_deg.shape[0] - 2)
        return idx, (pos - idx.to(pos.dtype)).unsqueeze(-1)

    def flip_angles(self, alpha_deg: torch.Tensor) -> torch.Tensor:
        """θ at every position for centre rotations ``alpha_deg`` of any shape ``S`` → ``S + (p,)``.

        Linear interpolation in α (differentiable); the table's error against the spinor
        simulation is < 1e-3 degrees (``tests/test_excitation.py``).

        Raises:
            ValueError: a rotation outside ``[0, TABLE_MAX_DEG]`` (B1 × flip angle too large).
        """
        import torch

        idx, frac = self._position(alpha_deg)
        table = torch.as_tensor(self.table_deg, dtype=alpha_deg.dtype, device=alpha_deg.device)
        return table[idx] * (1.0 - frac) + table[idx + 1] * frac


@functools.lru_cache(maxsize=16)
def profile_table(excitation: Excitation, n_positions: int = DEFAULT_N_POSITIONS) -> ProfileTable:
    """The (cached) :class:`ProfileTable` of ``excitation`` at ``n_positions`` slice positions."""
    z, weights = excitation.positions(n_positions)
    angles = np.arange(0.0, TABLE_MAX_DEG + 0.5 * TABLE_STEP_DEG, TABLE_STEP_DEG)
    alpha, beta = spinor_parameters(excitation.waveform(DEFAULT_PULSE_SAMPLES), angles, z * excitation.fwhm_cycles())
    table = np.rad2deg(2.0 * np.arcsin(np.clip(np.abs(beta), 0.0, 1.0)))
    return ProfileTable(excitation, z, weights, table, alpha, beta)
