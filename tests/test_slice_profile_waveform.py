"""The slice-profile model against a Bloch simulation of the exact RF waveform and z gradient `drone sequence` writes.

``tests/waveform_bloch.py`` plays the sequence's own events (its Hann sinc on the 1 µs raster under the
slice-select gradient, the rephaser, the spoiler, a hard inversion; relaxation throughout) on a column of
isochromats across the slice. Three findings are pinned here (docs/SCANNER.md, "The slice profile"):

1. With the earlier model's rotation — θ(z) about x at the pulse centre — played in that column, the column
   equals that profile EPG (``rotation="x"``): the timing, the spoiler's phases across z and the relaxation
   around the pulse are the model's.
2. With the real waveform the fingerprints differ from that model by ~1 %: the pulse's rotation at z is not
   θ(z) about x — its axis turns with z (the Euler phases of its spinor), by amounts that depend on the flip
   angle. Relaxation during the 2 ms pulse is not the cause (without it the difference is 0.80 / 0.93 / 1.14 %).
3. Carrying the pulse's full rotation into the EPG — the normative model, ``simulate``'s default — closes the
   gap to ≤ 0.2 % (the product's path and the test reference ``tests/spinor_epg.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pypulseq", reason="pypulseq is not installed (the 'scanner' extra)")

from drone_core.crb import BRAIN_TISSUES_1P5T  # noqa: E402
from drone_core.epg import simulate  # noqa: E402
from drone_core.schedule import default_schedule  # noqa: E402
from waveform_bloch import mrf_column, simulate_column  # noqa: E402

#: Positions across ±2.5 slice thicknesses, resolving the spoiler's phases (8 cycles per thickness per TR, up to
#: 25 orders): against 4000 points, 1000 leave CSF 2.2e-3 off (long T2 keeps high orders), 2000 leave 6e-7.
N_Z = 2000
#: The column with the model's rotation vs the profile EPG (measured 2e-4, 2e-4, 5e-4 for WM/GM/CSF): the
#: column's z grid against the model's 24-point profile integral.
MACHINERY_TOL = 1e-3
#: The real waveform vs the earlier profile model (θ(z) about x) at B1 = 1 (measured 0.72 / 0.76 / 1.14 % for
#: WM/GM/CSF; at B1 1.3 2.1 / 2.1 / 3.5 %): that model's error (its rotation axis), pinned so that the fix below
#: is shown to be one.
WAVEFORM_TOL = 0.015


@pytest.fixture(scope="module")
def column():
    schedule = default_schedule()
    seq, samples, z = mrf_column(schedule, N_Z)
    t1 = np.array([BRAIN_TISSUES_1P5T[n][0] for n in ("WM", "GM", "CSF")])
    t2 = np.array([BRAIN_TISSUES_1P5T[n][1] for n in ("WM", "GM", "CSF")])
    model = np.abs(simulate(schedule, t1, t2, rotation="x"))  # the earlier model, θ(z) about x
    return schedule, seq, samples, z, t1, t2, model / np.linalg.norm(model, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def waveform(column) -> np.ndarray:
    """The column's normalised fingerprints with the real waveform (relaxing throughout), ``(3, N)``."""
    _, seq, samples, z, t1, t2, _ = column
    return _normalised(simulate_column(seq, samples, z, t1, t2))


def _normalised(signal: np.ndarray) -> np.ndarray:
    m = np.abs(signal)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_the_column_with_the_models_rotation_is_the_profile_epg(column) -> None:
    schedule, seq, samples, z, t1, t2, model = column
    exc = schedule.excitation
    fwhm_m = 5e-3 * exc.fwhm_cycles() / exc.time_bandwidth  # the model's unit of z, as played

    def rotation(flip_deg: float) -> np.ndarray:
        if flip_deg > 179.0:  # the hard inversion: non-selective
            return np.full(z.shape, flip_deg)
        return exc.flip_angles([flip_deg], np.abs(z) / fwhm_m)[0]

    got = _normalised(simulate_column(seq, samples, z, t1, t2, rotation=rotation))
    assert got.shape == model.shape == (3, schedule.n_frames)
    assert np.max(np.abs(got - model)) < MACHINERY_TOL


def test_the_real_waveform_differs_from_the_earlier_profile_model_by_about_one_percent(column, waveform) -> None:
    schedule, seq, samples, z, t1, t2, model = column
    got = waveform
    difference = np.max(np.abs(got - model), axis=1)
    assert np.all(difference < WAVEFORM_TOL), difference
    ideal = np.abs(simulate(schedule.ideal(), t1, t2))
    ideal /= np.linalg.norm(ideal, axis=1, keepdims=True)
    assert np.all(np.max(np.abs(got - ideal), axis=1) > 10 * difference)  # the profile model is still 10× closer


#: The spinor model (``tests/spinor_epg.py``) vs the real waveform (measured 1.8e-3 / 1.5e-3 / 1.5e-4 for
#: WM/GM/CSF; 4.8e-4 / 3.1e-4 / 1.4e-4 against the column without relaxation during the pulse: what is left
#: is that relaxation). The scanner issue's goal for the fixed model: ≤ 0.2 %.
SPINOR_TOL = 0.002


@pytest.mark.parametrize("b1", [0.7, 1.3])
def test_the_normative_model_follows_the_waveform_at_every_b1(column, b1) -> None:
    """``simulate``'s default (the spinor) at the ends of the head's B1 range (measured 1.8e-3 / 1.5e-3 /
    1.0e-4 at 0.7 and 1.8e-3 / 1.5e-3 / 4.0e-4 at 1.3, WM/GM/CSF; the earlier model: up to 4.0e-3 and 3.5e-2)."""
    schedule, seq, samples, z, t1, t2, _ = column
    got = _normalised(simulate_column(seq, samples, z, t1, t2, b1=b1))
    normative = _normalised(simulate(schedule, t1, t2, b1=b1))
    assert np.all(np.max(np.abs(normative - got), axis=1) < SPINOR_TOL)


def test_the_pulses_full_rotation_closes_the_gap(column, waveform) -> None:
    """Carrying the pulse's spinor (axis and all) into the EPG brings the model to the waveform within 0.2 %:
    the test reference (tests/spinor_epg.py, 192 positions over both sides) and the product's option
    (``simulate``'s default, ``rotation="spinor"``, 24 positions on one side)."""
    from spinor_epg import spinor_profile_signal

    schedule, seq, samples, z, t1, t2, model = column
    got = waveform
    for spinor in (spinor_profile_signal(schedule, t1, t2), simulate(schedule, t1, t2)):
        assert np.all(np.max(np.abs(_normalised(spinor) - got), axis=1) < SPINOR_TOL)
    assert np.max(np.abs(model - got)) > 3 * SPINOR_TOL  # the earlier model does not
