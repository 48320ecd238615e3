"""A Bloch simulation of a z column through the events of a Pulseq sequence: the slice profile from first principles.

Written from the Bloch equation, not from :mod:`drone_core.excitation` or the EPG: isochromats on a fine
grid of positions ``z`` across (and beyond) the slice see the sequence's own RF waveform (complex, Hz,
on its 1 µs raster) and its own z gradient (slice select, rephaser, spoiler, crusher; Hz/m) — the
events a scanner would play — with T1 and T2 relaxation all the time, during the pulses too. The
in-plane gradients do not act on a z column; the signal of a frame is the sum over the column of
``Mx + i·My`` at the centre of the centre line's readout, where the in-plane moments are zero. The
voxel's dephasing is the spoiler's phase across z itself (no isochromat spread within a position).

Rotation convention: a step of length dt rotates M about ``ω = 2π·(Re B1, Im B1, Gz·z)`` (rad/s) by
``|ω|·dt`` (right-handed, as ``tests/bloch_reference.py``); magnitudes do not depend on the sense.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["centre_line_samples", "gradient_at", "mrf_column", "simulate_column"]


def gradient_at(grad: Any, t: np.ndarray) -> np.ndarray:
    """The amplitude (Hz/m) of a pypulseq gradient event at times ``t`` (s, from the block's start)."""
    if grad is None:
        return np.zeros_like(t)
    if grad.type == "trap":
        corners = np.cumsum([grad.delay, grad.rise_time, grad.flat_time, grad.fall_time])
        times = np.concatenate([[0.0], corners])
        values = [0.0, 0.0, grad.amplitude, grad.amplitude, 0.0]
        return np.interp(t, times, values, left=0.0, right=0.0)
    return np.interp(t, grad.delay + np.asarray(grad.tt), np.asarray(grad.waveform), left=0.0, right=0.0)


def _rotate(mx, my, mz, wx, wy, wz, dt):
    """Rotate (mx, my, mz) about (wx, wy, wz) (rad/s; broadcastable) by |w|·dt (Rodrigues)."""
    norm = np.sqrt(wx * wx + wy * wy + wz * wz)
    angle = norm * dt
    safe = np.where(norm > 0, norm, 1.0)
    kx, ky, kz = wx / safe, wy / safe, wz / safe
    c, s = np.cos(angle), np.sin(angle)
    dot = kx * mx + ky * my + kz * mz
    cx, cy, cz = ky * mz - kz * my, kz * mx - kx * mz, kx * my - ky * mx
    return (mx * c + cx * s + kx * dot * (1 - c),
            my * c + cy * s + ky * dot * (1 - c),
            mz * c + cz * s + kz * dot * (1 - c))


def simulate_column(seq: Any, sample_blocks: dict[int, float], z_m: np.ndarray, t1_ms: np.ndarray,
                    t2_ms: np.ndarray, *, b1: float = 1.0, dt_s: float = 1e-6,
                    relax_during_rf: bool = True, rotation: Any = None) -> np.ndarray:
    """Signals ``(n_tissues, n_samples)``: ``Σ_z (Mx + i·My)`` at each sample, divided by the number of positions.

    Args:
        seq: a pypulseq ``Sequence``.
        sample_blocks: ``{block index: time in that block (s)}`` where to sample, in block order.
        z_m: ``(n_z,)`` positions along the slice axis, m (uniform: the sum is the z integral).
        t1_ms, t2_ms: ``(n_tissues,)``.
        b1: relative transmit field: scales the excitations' waveforms (not an inversion's: the model's
            inversion is B1-insensitive, as the adiabatic pulse a scanner plays).
        dt_s: the time step inside blocks with RF.
        relax_during_rf: False: the pulses are played without relaxation, and the block's relaxation is applied
            after it instead (isolates the effect of relaxation during the pulse).
        rotation: None, or ``f(flip_deg) -> (n_z,) degrees``: each RF pulse is then replaced by an instantaneous
            rotation about x by ``f`` of its nominal flip at its centre (the slice-profile model's assumption),
            the block's z moment before and after the centre applied as phases (isolates everything but the
            pulse's own dynamics: the spoiler's discrete phases across z, the relaxation around it).
    """
    t1 = np.asarray(t1_ms, dtype=np.float64)[:, None] * 1e-3
    t2 = np.asarray(t2_ms, dtype=np.float64)[:, None] * 1e-3
    z = np.asarray(z_m, dtype=np.float64)[None, :]
    shape = (t1.shape[0], z.shape[1])
    mx, my, mz = np.zeros(shape), np.zeros(shape), np.ones(shape)
    out: list[np.ndarray] = []

    def relax(mx, my, mz, t):
        e2, e1 = np.exp(-t / t2), np.exp(-t / t1)
        return mx * e2, my * e2, 1.0 - (1.0 - mz) * e1

    def precess(mx, my, phase):
        c, s = np.cos(phase), np.sin(phase)
        return mx * c - my * s, mx * s + my * c

    for index in sorted(seq.block_events):
        block = seq.get_block(index)
        duration = float(block.block_duration)
        if block.rf is not None and rotation is not None:
            from drone_core.sequence.readback import pulse_centre_s, pulse_flip_deg

            rf = block.rf
            flip = pulse_flip_deg(rf) * (1.0 if getattr(rf, "use", "") == "inversion" else b1)
            centre = pulse_centre_s(rf)
            t = np.linspace(0.0, duration, 8001)
            g = gradient_at(block.gz, t)
            cum = np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(t))])
            before = float(np.interp(centre, t, cum))
            mx, my = precess(mx, my, 2 * np.pi * before * z)
            mx, my, mz = relax(mx, my, mz, centre)
            theta = np.radians(np.asarray(rotation(flip), dtype=np.float64))[None, :]
            mx, my, mz = _rotate(mx, my, mz, 1.0, 0.0, 0.0, theta)
            mx, my = precess(mx, my, 2 * np.pi * (cum[-1] - before) * z)
            mx, my, mz = relax(mx, my, mz, duration - centre)
        elif block.rf is not None:
            rf = block.rf
            n = int(round(duration / dt_s))
            t = (np.arange(n) + 0.5) * dt_s
            rf_t = rf.delay + np.asarray(rf.t)
            scale = 1.0 if getattr(rf, "use", "") == "inversion" else b1
            signal = np.asarray(rf.signal) * np.exp(1j * rf.phase_offset) * scale
            inside = (t >= rf_t[0] - 0.5 * dt_s) & (t <= rf_t[-1] + 0.5 * dt_s)
            b1_t = np.where(inside, np.interp(t, rf_t, signal.real) + 1j * np.interp(t, rf_t, signal.imag), 0.0)
            gz = gradient_at(block.gz, t)
            for k in range(n):
                mx, my, mz = _rotate(mx, my, mz, 2 * np.pi * b1_t[k].real, 2 * np.pi * b1_t[k].imag,
                                     2 * np.pi * (gz[k] * z + rf.freq_offset), dt_s)
                if relax_during_rf:
                    mx, my, mz = relax(mx, my, mz, dt_s)
            if not relax_during_rf:
                mx, my, mz = relax(mx, my, mz, duration)
        else:
            moment = 0.0
            if block.gz is not None:
                t = np.linspace(0.0, duration, 4001)
                g = gradient_at(block.gz, t)
                moment = float(np.sum(0.5 * (g[1:] + g[:-1]) * np.diff(t)))
            if index in sample_blocks:
                ts = sample_blocks[index]
                sx, sy, _ = relax(mx, my, mz, ts)
                out.append((sx + 1j * sy).mean(axis=1))
            mx, my = precess(mx, my, 2 * np.pi * moment * z)
            mx, my, mz = relax(mx, my, mz, duration)
    return np.stack(out, axis=1)


def centre_line_samples(seq: Any, readback: Any, centre_line: int) -> dict[int, float]:
    """``{block: time in the block (s)}`` of the imaging frames' centre-line readout centres (the TE samples)."""
    starts, t = {}, 0.0
    for index in sorted(seq.block_events):
        starts[index] = t
        t += float(seq.block_durations[index])
    return {int(r.block): r.centre_s - starts[int(r.block)] for r in readback.readouts
            if r.labels.get("LIN") == centre_line and not r.labels.get("NAV") and not r.labels.get("REF")}


def mrf_column(schedule: Any, n_z: int, *, thickness_m: float = 5e-3, half_width: float = 2.5
               ) -> tuple[Any, dict[int, float], np.ndarray]:
    """The sequence of ``schedule`` as `drone sequence` writes it for a column simulation (16 × 16, R = 1, the
    hard inversion, no noise scan), its TE samples and ``n_z`` uniform positions over ±``half_width`` slice
    thicknesses: ``(sequence, samples, z_m)``."""
    import warnings

    from drone_core.sequence.epi_mrf import EpiMrfProtocol, build_sequence
    from drone_core.sequence.readback import read_sequence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq, _ = build_sequence(schedule, EpiMrfProtocol(matrix=(16, 16), acceleration=1, noise_lines=0,
                                                         slice_thickness_mm=thickness_m * 1e3, inversion="hard"))
    samples = centre_line_samples(seq, read_sequence(seq), 8)
    z = ((np.arange(n_z) + 0.5) / n_z * 2 - 1) * half_width * thickness_m
    return seq, samples, z
