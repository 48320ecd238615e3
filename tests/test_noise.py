"""The training loop's noise (``noisy_magnitudes``: real and imaginary parts apart) follows the same law as
``add_noise``, the project's one noise definition: checked by the moments of |s + n|², which the
definition fixes exactly (E|s + n|² = |s|² + 2σ² per frame, σ = level · peak, or σ drawn per fingerprint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drone_core.noise import add_noise, noisy_magnitudes

#: Draws per test: the sample mean of |s + n|² has a relative sd of ≈ 2σ/|s|/√n; 5 sd is the tolerance.
N_DRAWS = 200_000


def _fingerprint() -> torch.Tensor:
    phase = torch.linspace(0.0, 3.0, 25)
    return (torch.linspace(0.2, 1.0, 25) * torch.exp(1j * phase)).to(torch.complex64)  # peak magnitude 1


@pytest.mark.parametrize("mode, mean_sigma_sq", [("fixed", 1.0), ("uniform", 1.0 / 3.0), ("quadratic", 1.0 / 5.0)])
def test_noisy_magnitudes_follow_add_noise_law(mode: str, mean_sigma_sq: float) -> None:
    level = 0.05
    atom = _fingerprint()
    atoms = atom.expand(N_DRAWS, -1).contiguous()
    ours = noisy_magnitudes(atoms.real.contiguous(), atoms.imag.contiguous(), torch.ones(N_DRAWS), level, mode=mode,
                            generator=torch.Generator().manual_seed(0)).double()
    theirs = add_noise(atoms, level, mode=mode, generator=torch.Generator().manual_seed(1)).double()
    expected = atom.abs().double() ** 2 + 2 * level ** 2 * mean_sigma_sq  # (25,) E|s + n|² per frame
    for got in (ours, theirs):
        mean = (got ** 2).mean(dim=0)
        sd = (got ** 2).std(dim=0) / N_DRAWS ** 0.5
        assert torch.all((mean - expected).abs() <= 5 * sd), (mode, (mean - expected) / sd)
    assert not torch.equal(ours, theirs)


def test_noisy_magnitudes_noise_free_and_refusals() -> None:
    atoms = _fingerprint().expand(4, -1).contiguous()
    re, im = atoms.real.contiguous(), atoms.imag.contiguous()
    assert torch.equal(noisy_magnitudes(re, im, torch.ones(4), 0.0), torch.hypot(re, im))
    with pytest.raises(ValueError, match="real, imag, peak"):
        noisy_magnitudes(re, im[:3], torch.ones(4), 0.01)
    with pytest.raises(ValueError, match="real, imag, peak"):
        noisy_magnitudes(re, im, torch.ones(3), 0.01)
    with pytest.raises(ValueError, match="mode"):
        noisy_magnitudes(re, im, torch.ones(4), 0.01, mode="pink")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        noisy_magnitudes(re, im, torch.ones(4), -0.01)


def test_noisy_magnitudes_seeded() -> None:
    atoms = _fingerprint().expand(8, -1).contiguous()
    re, im = atoms.real.contiguous(), atoms.imag.contiguous()
    a = noisy_magnitudes(re, im, torch.ones(8), 0.02, mode="uniform", generator=torch.Generator().manual_seed(5))
    b = noisy_magnitudes(re, im, torch.ones(8), 0.02, mode="uniform", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and np.isfinite(a.numpy()).all()
