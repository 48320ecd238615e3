"""The EPG core against MRzeroCore, a simulator no one here wrote, on the sequence `drone sequence` writes.

MRzeroCore (phase-distribution graphs; Endres et al., MRM 2024) imports the Pulseq file itself and
plays every RF block as one instantaneous rotation at its centre, so it is compared with the ideal-slice
model (``schedule.ideal()``) on a sequence with the hard 180° inversion (an adiabatic pulse is no
instantaneous rotation). Voxels at the isocentre, tiny in-plane and long along z (the spoiler's
dephased states then give no signal, as in the EPG's F0), no T2', no diffusion. The signal of a frame
is the centre line's readout at k = 0 (the mean of the two samples either side of it). Several tissues go
through one simulation as "coils": coil j sees voxel j alone (a one-hot sensitivity), so each channel is one
tissue's signal.

Convergence. MRzero's graph merges no pathways here: its states triple with every pulse (1, 2, 6, 18, 54, …
per repetition, counted) and are pruned, weakest first, at ``max_state_count`` — likely because it tells
pathways apart by their time spent transverse (τ) too, which differs with this schedule's varying TRs.
Pathways of short-T2 tissues fade before pruning reaches them: at 10,000 states and a 1e-12 floor WM and GM
are within 3e-5 / 6e-5 of the EPG (2,000 states and 1e-9 left 4.3e-4 / 7.9e-4, which the previous version of
this test tolerated). Long T2 (CSF, 870 ms; NIST spheres with T2 ≳ 140 ms) keeps thousands of strong pathways
alive, and no affordable state count converges it: it is not asserted here (docs/SCANNER.md §5).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

mr0 = pytest.importorskip("MRzeroCore", reason="MRzeroCore is not installed (the 'test' extra)")
pytest.importorskip("pypulseq", reason="pypulseq is not installed (the 'scanner' extra)")

from drone_core.crb import BRAIN_TISSUES_1P5T  # noqa: E402
from drone_core.epg import simulate  # noqa: E402
from drone_core.phantoms import NIST_T1_ARRAY, NIST_T2_ARRAY  # noqa: E402
from drone_core.schedule import default_schedule  # noqa: E402
from drone_core.sequence.epi_mrf import EpiMrfProtocol, write_sequence  # noqa: E402
from drone_core.sequence.readback import read_sequence  # noqa: E402
from mrzero_scan import mrzero_signal  # noqa: E402

#: Max |difference| of L2-normalised fingerprints: the scanner issue's goal. Measured at MAX_STATES / MIN_STATE:
#: WM 2.3e-5, GM 5.7e-5; NIST T1 array spheres 9–14 ≤ 1.6e-5, T2 array spheres 8–14 ≤ 1.6e-5, sphere 7 1.0e-4.
MRZERO_TOL = 1e-4
#: The NIST groups run as one simulation whose graph is pruned for the group's mean tissue: the T2 array's sphere
#: 7 (T1 752, T2 92 ms), the group's longest T1 and T2, keeps pathways the mean drops (measured 1.0e-4; 1.6e-5
#: with a graph of its own, which would double the test's time): 2e-4, still 50× below what moves a map (~1e-2).
NIST_TOL = 2e-4
#: MRzero's pruning (``compute_graph``'s ``max_state_count``, ``min_state_mag``; ``execute_graph``'s thresholds).
MAX_STATES = 10_000
MIN_STATE = 1e-12
#: The spheres asserted: T2 ≤ 120 ms (longer T2 does not converge, module docstring).
NIST_MAX_T2_MS = 120.0


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """An 8 × 8 sequence (the fewest samples that still has an EPI train: MRzero's cost is states × samples)."""
    path = tmp_path_factory.mktemp("mrzero") / "mrf.seq"
    schedule = default_schedule()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_sequence(path, schedule, EpiMrfProtocol(matrix=(8, 8), acceleration=1, noise_lines=0,
                                                      inversion="hard"))
    return schedule, path, read_sequence(path)


def mrzero_fingerprints(sequence, t1_ms: np.ndarray, t2_ms: np.ndarray) -> np.ndarray:
    """MRzero's frames at k = 0 of voxels with these tissues (ms), ``(n, n_frames)`` complex, one channel each."""
    schedule, path, readback = sequence
    n = len(t1_ms)
    data = mr0.CustomVoxelPhantom(pos=[[0.0, 0.0, 0.0]] * n, PD=1.0, T1=(np.asarray(t1_ms) * 1e-3).tolist(),
                                  T2=(np.asarray(t2_ms) * 1e-3).tolist(), T2dash=1e6, D=0.0, B0=0.0, B1=1.0,
                                  voxel_size=[1e-3, 1e-3, 0.1], voxel_shape="gauss").build()
    data.coil_sens = torch.eye(n, dtype=data.coil_sens.dtype)  # channel j hears voxel j alone
    signal = mrzero_signal(path, data, max_states=MAX_STATES, min_state_mag=MIN_STATE, min_signal=MIN_STATE)
    centre = int(np.ravel(readback.definitions["kSpaceCenterLine"])[0])
    frames, start = [], 0
    for r in readback.readouts:
        if r.labels.get("LIN") == centre and not r.labels.get("NAV") and not r.labels.get("REF"):
            frames.append(0.5 * (signal[start + r.n_samples // 2 - 1] + signal[start + r.n_samples // 2]))
        start += r.n_samples
    assert start == signal.shape[0] and len(frames) == schedule.n_frames
    return np.array(frames).T


def _normalised(x: np.ndarray) -> np.ndarray:
    m = np.abs(x)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


@pytest.mark.parametrize("tissue", ["WM", "GM"])
def test_epg_matches_mrzero_on_the_written_sequence(sequence, tissue) -> None:
    schedule = sequence[0]
    t1_ms, t2_ms = BRAIN_TISSUES_1P5T[tissue]
    got = mrzero_fingerprints(sequence, np.array([t1_ms]), np.array([t2_ms]))
    want = simulate(schedule.ideal(), [t1_ms], [t2_ms], dtype=torch.float64)
    assert np.max(np.abs(_normalised(got) - _normalised(want))) < MRZERO_TOL, tissue
    # M0 = 1 in both: the scale agrees too (MRzero's T2 decay over the readout's half sample either side of k = 0
    # and its 1 µs placement of the pulse centre: measured 0.9995).
    assert np.linalg.norm(np.abs(got)) / np.linalg.norm(np.abs(want)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("array", ["T1", "T2"])
def test_epg_matches_mrzero_for_the_nist_spheres(sequence, array) -> None:
    """The ISMRM/NIST system phantom's spheres with T2 ≤ 120 ms, one simulation per array."""
    spheres = {"T1": NIST_T1_ARRAY, "T2": NIST_T2_ARRAY}[array]
    picked = {k: v for k, v in spheres.items() if v[1] <= NIST_MAX_T2_MS}
    assert len(picked) >= 6
    t1 = np.array([v[0] for v in picked.values()])
    t2 = np.array([v[1] for v in picked.values()])
    got = _normalised(mrzero_fingerprints(sequence, t1, t2))
    want = _normalised(simulate(sequence[0].ideal(), t1, t2, dtype=torch.float64))
    difference = dict(zip(picked, np.max(np.abs(got - want), axis=1).round(7)))
    assert max(difference.values()) < NIST_TOL, difference
