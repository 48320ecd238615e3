"""Single-shot EPI readouts: the trapezoidal readout gradient, where it samples k-space, and the
samples a multi-coil object gives there.

Conventions (those of Gadgetron's EPI reconstruction, ``EPIReconXGadget``, so that what is simulated
here is what it inverts):

* k is in cycles per field of view, in units of the encoded matrix: a readout covering
  ``encode_nx`` points spans k ∈ [−encode_nx/2, encode_nx/2].
* The readout gradient is a trapezoid (ramp up, flat top, ramp down, µs); sample n is taken at the
  *end* of its dwell interval, t_n = acq_delay + (n + 1)·dwell, with the acquisition window centred
  on the lobe (a balanced readout: acq_delay = (ramp_up + flat_top + ramp_down − n·dwell)/2). The
  k-space position is the gradient's area up to t_n, less half the lobe's area, scaled as the
  reconstruction scales it: the lobe's area less the parts of the ramps outside the window ("read
  area") spans ``encode_nx`` — the sampled area for the readouts :meth:`EpiReadout.design` makes.
  Without ramp sampling (ramps 0) this is a uniform readout with step ``encode_nx / n_samples`` (0.5
  for 2× readout oversampling).
* Lines of alternate polarity traverse k from +k to −k: a *reverse* line's sample n lies at −k_n.
  The samples are stored in acquisition (time) order; the reconstruction reverses them.
* Image pixel p of an N-pixel row lies at (p − N/2)/N of the field of view; a sample at k of an
  object m is (1/√N)·Σ_p m_p·exp(−2πi·k·(p − N/2)/N) (the sign convention of a forward FFT, its
  inverse being the reconstruction's). Along the phase-encode direction the same holds with integer
  k (line ``ky`` = kspace_encode_step_1 − ny/2).

The Nyquist ghost of a real EPI — echoes of alternate polarity displaced against each other by
gradient delays and eddy currents — is modelled as a readout shift of ±``ghost_shift`` samples
(k-space units) and a phase of ±``ghost_phase_rad``/2 on positive/reverse lines, the same on the
phase-correction navigators (lines without phase encoding, at ky = 0), from which the reconstruction
(``EPICorrGadget``) estimates and removes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EpiReadout",
    "EpiGhost",
    "readout_operator",
    "phase_encode",
    "encode_lines",
    "undersampled_lines",
    "calibration_lines",
    "calibration_line_count",
]


@dataclass(frozen=True)
class EpiReadout:
    """One readout lobe of an EPI train.

    Attributes:
        encode_nx: points of the encoded readout matrix (the k extent, in samples at the FOV's Nyquist rate).
        n_samples: ADC samples per lobe (``numSamples``); ``2·encode_nx`` is 2× readout oversampling.
        dwell_time_us: ADC dwell time, µs.
        ramp_up_us, flat_top_us, ramp_down_us: the trapezoid, µs (``flat_top_us`` 0: ``n_samples·dwell``).
            The sampling window is centred on the lobe; it lies on the flat top unless it is longer
            (ramp sampling).
    """

    encode_nx: int
    n_samples: int
    dwell_time_us: float
    ramp_up_us: float = 0.0
    flat_top_us: float = 0.0
    ramp_down_us: float = 0.0

    def __post_init__(self) -> None:
        for name in ("encode_nx", "n_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise ValueError(f"{name}: expected an integer ≥ 2, got {value!r}")
        for name in ("dwell_time_us", "ramp_up_us", "flat_top_us", "ramp_down_us"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite time ≥ 0 µs, got {value!r}")
        if self.dwell_time_us <= 0:
            raise ValueError(f"dwell_time_us: expected > 0 µs, got {self.dwell_time_us!r}")
        if self.flat_top_us == 0:
            object.__setattr__(self, "flat_top_us", float(self.n_samples * self.dwell_time_us))
        if self.lobe_us < self.n_samples * self.dwell_time_us - 1e-9:
            raise ValueError(f"the sampling window ({self.n_samples} × {self.dwell_time_us:g} µs) is longer than the "
                             f"readout lobe ({self.lobe_us:g} µs)")

    @classmethod
    def design(cls, encode_nx: int, *, oversampling: int = 2, dwell_time_us: float = 2.5,
               ramp_us: float = 100.0, ramp_sampling: bool = False) -> "EpiReadout":
        """A readout for ``encode_nx`` points.

        Without ramp sampling: ``oversampling·encode_nx`` samples on a flat top of that duration, between
        ramps of ``ramp_us``. With ramp sampling: the same gradient area, sampled also on the ramps —
        the flat top shrinks by ``ramp_us`` and the window (an even number of samples) spans the whole lobe.
        """
        n_flat = int(oversampling) * int(encode_nx)
        if not ramp_sampling:
            return cls(int(encode_nx), n_flat, float(dwell_time_us), ramp_up_us=float(ramp_us),
                       flat_top_us=n_flat * float(dwell_time_us), ramp_down_us=float(ramp_us))
        # the ramps add area ramp_us (two half-ramps); keep the total area of the flat-top design
        flat = n_flat * float(dwell_time_us) - float(ramp_us)
        if flat <= 0:
            raise ValueError(f"ramp_us: {ramp_us:g} µs ramps leave no flat top for {n_flat} samples of "
                             f"{dwell_time_us:g} µs")
        lobe = flat + 2 * float(ramp_us)
        n = 2 * int(math.floor(lobe / (2 * float(dwell_time_us))))
        return cls(int(encode_nx), n, float(dwell_time_us), ramp_up_us=float(ramp_us), flat_top_us=flat,
                   ramp_down_us=float(ramp_us))

    @property
    def ramp_sampling(self) -> bool:
        """Whether samples lie on the ramps."""
        return self.acq_delay_us < self.ramp_up_us - 1e-9

    @property
    def lobe_us(self) -> float:
        """Duration of the lobe (ramp up + flat top + ramp down), µs."""
        return self.ramp_up_us + self.flat_top_us + self.ramp_down_us

    @property
    def echo_spacing_us(self) -> float:
        """Time from one line's centre to the next (the lobe; the phase blips lie in the ramps), µs."""
        return self.lobe_us

    @property
    def acq_delay_us(self) -> float:
        """Time from the start of the lobe to the start of the window (balanced readout), µs."""
        return 0.5 * (self.lobe_us - self.n_samples * self.dwell_time_us)

    def kx(self) -> np.ndarray:
        """k positions of the samples of a positive line, in acquisition order: float64 ``(n_samples,)``."""
        up, flat, down = self.ramp_up_us, self.flat_top_us, self.ramp_down_us
        t = (np.arange(self.n_samples) + 1.0) * self.dwell_time_us + self.acq_delay_us
        area = np.empty_like(t)
        on_up = t <= up
        on_flat = (t > up) & (t <= up + flat)
        on_down = ~(on_up | on_flat)
        area[on_up] = 0.5 * t[on_up] ** 2 / up if up > 0 else 0.0
        area[on_flat] = 0.5 * up + (t[on_flat] - up)
        if on_down.any():
            v = self.lobe_us - t[on_down]
            area[on_down] = 0.5 * up + flat + 0.5 * down - 0.5 * v ** 2 / down
        total = 0.5 * up + flat + 0.5 * down
        start, end = self.acq_delay_us, self.acq_delay_us + self.n_samples * self.dwell_time_us
        sampled = total
        if up > 0:
            sampled -= 0.5 * start ** 2 / up
        if down > 0:
            sampled -= 0.5 * (self.lobe_us - end) ** 2 / down
        return (area - 0.5 * total) * (self.encode_nx / sampled)

    def k_per_us(self) -> float:
        """k traversed per µs on the flat top (cycles/FOV/µs): converts a gradient delay to a k shift."""
        t = self.kx()
        return float(np.max(np.abs(np.diff(t)))) / self.dwell_time_us


@dataclass(frozen=True)
class EpiGhost:
    """The odd/even echo inconsistency of an EPI train (module docstring).

    Attributes:
        shift: readout shift between positive and reverse lines, k-space samples (a gradient delay of
            ``shift / readout.k_per_us()`` µs); each polarity is displaced by half of it.
        phase_rad: phase difference between positive and reverse lines, radians.
    """

    shift: float = 0.0
    phase_rad: float = 0.0


def readout_operator(k: np.ndarray, nx: int) -> np.ndarray:
    """The samples at ``k`` of an ``nx``-pixel row: complex128 ``(len(k), nx)`` (module docstring)."""
    p = np.arange(int(nx)) - int(nx) / 2
    return np.exp(-2j * np.pi * np.outer(np.asarray(k, dtype=np.float64), p) / int(nx)) / math.sqrt(int(nx))


def phase_encode(images: np.ndarray) -> np.ndarray:
    """Along the phase-encode direction: ``(..., ny, nx)`` images → ``(..., ny, nx)`` hybrid space,
    row ``j`` holding ky = j − ny/2 (a centred, orthonormal forward FFT along axis −2)."""
    arr = np.asarray(images)
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(arr, axes=-2), axis=-2, norm="ortho"), axes=-2)


def encode_lines(hybrid: np.ndarray, rows: np.ndarray, reverse: np.ndarray, readout: EpiReadout,
                 ghost: EpiGhost = EpiGhost(), *, dtype: type = np.complex64) -> np.ndarray:
    """The ADC samples of EPI lines.

    Args:
        hybrid: ``(n_coils, ny, nx)`` complex, from :func:`phase_encode` (row j: ky = j − ny/2).
        rows: ``(n_lines,)`` rows of ``hybrid`` the lines sample (a navigator samples row ny/2, ky = 0).
        reverse: ``(n_lines,)`` bool, True for lines of negative readout polarity.
        readout: the readout lobe; ``readout.encode_nx`` must equal nx.
        ghost: the odd/even inconsistency.
        dtype: of the result.

    Returns:
        ``(n_lines, n_coils, n_samples)`` samples in acquisition order (reverse lines from +k to −k).
    """
    h = np.asarray(hybrid)
    if h.ndim != 3:
        raise ValueError(f"hybrid: expected (n_coils, ny, nx), got shape {h.shape}")
    if h.shape[2] != readout.encode_nx:
        raise ValueError(f"hybrid: {h.shape[2]} readout pixels, but readout.encode_nx is {readout.encode_nx}")
    rows = np.asarray(rows, dtype=np.intp)
    reverse = np.asarray(reverse, dtype=bool)
    if rows.shape != reverse.shape or rows.ndim != 1:
        raise ValueError(f"rows and reverse: expected two (n_lines,) arrays, got {rows.shape} and {reverse.shape}")
    k = readout.kx()
    nx = h.shape[2]
    out = np.empty((rows.size, h.shape[0], readout.n_samples), dtype=dtype)
    for polarity in (False, True):
        sel = np.flatnonzero(reverse == polarity)
        if sel.size == 0:
            continue
        sign = -1.0 if polarity else 1.0
        shift = 0.5 * ghost.shift * sign
        op = readout_operator(sign * k + shift, nx) * np.exp(0.5j * sign * ghost.phase_rad)
        lines = h[:, rows[sel], :]                       # (coils, lines, nx)
        out[sel] = np.einsum("cln,sn->lcs", lines, op, optimize=True).astype(dtype)
    return out


def undersampled_lines(ny: int, acceleration: int) -> np.ndarray:
    """Phase-encode lines (kspace_encode_step_1, 0 … ny−1) of an accelerated single-shot EPI: every
    ``acceleration``-th line, the centre line ny/2 among them; ascending (acquisition order)."""
    r = int(acceleration)
    if r < 1:
        raise ValueError(f"acceleration: expected an integer ≥ 1, got {acceleration!r}")
    centre = int(ny) // 2
    return np.arange(centre % r, int(ny), r)


def calibration_lines(ny: int, n_lines: int) -> np.ndarray:
    """The ``n_lines`` fully sampled lines around the centre (auto-calibration, ACS), ascending."""
    n = int(n_lines)
    if not 1 <= n <= int(ny):
        raise ValueError(f"n_lines: expected 1 … {ny} calibration lines, got {n_lines!r}")
    start = int(ny) // 2 - n // 2
    return np.arange(start, start + n)


def calibration_line_count(acceleration: int, requested: int | None = None) -> int:
    """ACS lines of an accelerated acquisition: ``requested``, or 12·R by default; none at R = 1."""
    if int(acceleration) == 1:
        return 0
    return int(requested) if requested is not None else 12 * int(acceleration)
