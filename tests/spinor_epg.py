"""The slice-profile EPG with the pulse's full rotation at every position: the fix of the model's known error.

The normative model (``DESIGN.md`` step 5) applies θ(z) = 2·asin|β(z)| about x at each position. The pulse
really applies a general rotation — its Cayley–Klein spinor (α(z), β(z)), here after the slice-select
rephaser's z rotation — whose axis turns with z by phases that depend on the flip angle. This reference
carries that rotation (:func:`drone_core.excitation.spinor_parameters`) into the EPG (complex states F+, F−, Z;
Pauly et al., IEEE TMI 1991, for the transition of M under (α, β)) and integrates over both sides of the
slice: it checks the product's table, its half-slice integral and its recursion, not the pulse simulation,
which the waveform's Bloch column checks. It is a test reference, written
for clarity, not speed; ``tests/test_slice_profile_waveform.py`` checks it against the waveform's Bloch
simulation.
"""

from __future__ import annotations

import numpy as np

from drone_core.excitation import spinor_parameters

__all__ = ["epg_spinor", "spinor_profile_signal"]


def epg_spinor(a: np.ndarray, b: np.ndarray, tr_ms, te_ms: float, ti_ms: float, eta: float, t1_ms: float,
               t2_ms: float) -> np.ndarray:
    """F0 at TE, ``(p, N)`` complex, for rotations ``(α, β)`` of shape ``(N, p)`` (frame, position); the model's
    inversion, relaxation and one dephasing order per TR; M0 = 1."""
    n_frames, p = a.shape
    k = n_frames + 1
    fp = np.zeros((k, p), dtype=np.complex128)
    fm = np.zeros_like(fp)
    z = np.zeros_like(fp)
    e1_ti = np.exp(-ti_ms / t1_ms)
    z[0] = (1 - 2 * eta) * e1_ti + (1 - e1_ti)
    out = np.zeros((p, n_frames), dtype=np.complex128)
    for i in range(n_frames):
        ai, bi = a[i], b[i]
        ac, bc = np.conj(ai), np.conj(bi)
        fp, fm, z = (ac * ac * fp - bi * bi * fm + 2 * ac * bi * z,
                     -bc * bc * fp + ai * ai * fm + 2 * ai * bc * z,
                     -ac * bc * fp - ai * bi * fm + (ai * ac - bi * bc) * z)
        out[:, i] = fp[0] * np.exp(-te_ms / t2_ms)
        e1, e2 = np.exp(-tr_ms[i] / t1_ms), np.exp(-tr_ms[i] / t2_ms)
        fp, fm, z = fp * e2, fm * e2, z * e1
        z[0] = z[0] + (1 - e1)
        fp = np.concatenate([np.conj(fm[1:2]), fp[:-1]])
        fm = np.concatenate([fm[1:], np.zeros((1, p))])
        fm[0] = np.conj(fp[0])
    return out


def spinor_profile_signal(schedule, t1_ms, t2_ms, *, n_positions: int = 192, n_samples: int = 256) -> np.ndarray:
    """The slice-integrated signal ``(n, N)`` of the spinor model over ``[−z_max, z_max]`` (slice thicknesses)."""
    exc = schedule.excitation
    z = ((np.arange(n_positions) + 0.5) / n_positions * 2 - 1) * exc.z_max
    a, b = spinor_parameters(exc.waveform(n_samples), np.asarray(schedule.flip_angle_deg), z * exc.fwhm_cycles())
    tr = np.asarray(schedule.tr_ms, dtype=np.float64)
    return np.stack([epg_spinor(a, b, tr, schedule.te_ms, schedule.ti_ms, schedule.inversion_efficiency, t1, t2)
                     .sum(axis=0) * (2 * exc.z_max / n_positions) for t1, t2 in zip(t1_ms, t2_ms)])
