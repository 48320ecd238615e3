"""Proton density M0: the least-squares scale between a measured fingerprint and its atom.

Both estimators (the network and dictionary matching) find (T1, T2) from the L2-normalised
magnitude fingerprint; M0 is then the scale that maps the simulated atom at the estimate
(simulated with M0 = 1) back onto the measured magnitudes::

    M0 = ⟨|s|, |a|⟩ / ‖a‖²        (per voxel, over the N frames)

so M0 is in the units of the measured signal (receiver gain, coil sensitivity and all).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit_m0"]


def fit_m0(signal_magnitudes: np.ndarray | torch.Tensor,
           atom_magnitudes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Least-squares M0 per voxel.

    Args:
        signal_magnitudes: ``(n, n_frames)`` measured magnitudes (any scale).
        atom_magnitudes: ``(n, n_frames)`` magnitudes of the atom at each voxel's estimate, simulated
            with M0 = 1.

    Returns:
        ``(n,)`` M0 in the units of the signal (numpy or torch, like ``signal_magnitudes``); 0
        where the atom is all zero.
    """
    if signal_magnitudes.shape != atom_magnitudes.shape or signal_magnitudes.ndim != 2:
        raise ValueError(f"atom_magnitudes: expected shape {tuple(signal_magnitudes.shape)} (n, n_frames) like "
                         f"signal_magnitudes, got {tuple(atom_magnitudes.shape)}")
    if isinstance(signal_magnitudes, torch.Tensor):
        a = torch.as_tensor(atom_magnitudes, dtype=signal_magnitudes.dtype, device=signal_magnitudes.device)
        num = (signal_magnitudes * a).sum(dim=1)
        den = (a * a).sum(dim=1)
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    s_np = np.asarray(signal_magnitudes)
    a_np = np.asarray(atom_magnitudes, dtype=s_np.dtype if np.issubdtype(s_np.dtype, np.floating) else np.float64)
    num = np.einsum("nf,nf->n", s_np, a_np)
    den = np.einsum("nf,nf->n", a_np, a_np)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
