"""The EPG core against MRzeroCore, a simulator no one here wrote, on the sequence `drone sequence` writes.

MRzeroCore (phase-distribution graphs; Endres et al., MRM 2024) imports the Pulseq file itself and
plays every RF block as one instantaneous rotation at its centre, so it is compared with the ideal-slice
model (``schedule.ideal()``) on a sequence with the hard 180° inversion (an adiabatic pulse is no
instantaneous rotation). One voxel at the isocentre, tiny in-plane and long along z (the spoiler's
dephased states then give no signal, as in the EPG's F0), no T2', no diffusion. The signal of a frame
is the centre line's readout at k = 0 (the mean of the two samples either side of it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

mr0 = pytest.importorskip("MRzeroCore", reason="MRzeroCore is not installed (the 'test' extra)")
pytest.importorskip("pypulseq", reason="pypulseq is not installed (the 'scanner' extra)")

from drone_core.crb import BRAIN_TISSUES_1P5T  # noqa: E402
from drone_core.epg import simulate  # noqa: E402
from drone_core.schedule import default_schedule  # noqa: E402
from drone_core.sequence.epi_mrf import EpiMrfProtocol, write_sequence  # noqa: E402
from drone_core.sequence.readback import read_sequence  # noqa: E402

#: Max |difference| of L2-normalised fingerprints. Measured with MRzero's graph at 2,000 states: WM 4.3e-4,
#: GM 7.9e-4 (WM 3.4e-4 at 5,000 and 30,000 states: converged); far below what moves a map (the 2 % / 3 %
#: accuracy goals need ~1e-2). CSF (T1 3799, T2 870 ms) is not asserted: from frame 10 on it is 6–8 % off and
#: does not converge with more states (2,000: 6.3 %, 30,000: 7.9 %), as MRzero's long-T2 pruning was
#: reported to need ~30,000 states; see docs/SCANNER.md.
MRZERO_TOL = 1e-3
MAX_STATES = 2000


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    path = tmp_path_factory.mktemp("mrzero") / "mrf.seq"
    schedule = default_schedule()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_sequence(path, schedule, EpiMrfProtocol(matrix=(16, 16), acceleration=1, noise_lines=0,
                                                      inversion="hard"))
    return schedule, path, read_sequence(path)


@pytest.mark.parametrize("tissue", ["WM", "GM"])
def test_epg_matches_mrzero_on_the_written_sequence(sequence, tissue) -> None:
    schedule, path, readback = sequence
    t1_ms, t2_ms = BRAIN_TISSUES_1P5T[tissue]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = mr0.Sequence.import_file(str(path))
        data = mr0.CustomVoxelPhantom(pos=[[0.0, 0.0, 0.0]], PD=1.0, T1=t1_ms * 1e-3, T2=t2_ms * 1e-3, T2dash=1e6,
                                      D=0.0, B0=0.0, B1=1.0, voxel_size=[1e-3, 1e-3, 0.1],
                                      voxel_shape="gauss").build()
        graph = mr0.compute_graph(seq, data, max_state_count=MAX_STATES, min_state_mag=1e-9)
        signal = mr0.execute_graph(graph, seq, data, min_emitted_signal=1e-9, min_latent_signal=1e-9,
                                   print_progress=False).numpy().reshape(-1)
    centre = int(np.ravel(readback.definitions["kSpaceCenterLine"])[0])
    frames, start = [], 0
    for r in readback.readouts:
        if r.labels.get("LIN") == centre and not r.labels.get("NAV") and not r.labels.get("REF"):
            frames.append(0.5 * (signal[start + r.n_samples // 2 - 1] + signal[start + r.n_samples // 2]))
        start += r.n_samples
    assert start == signal.size and len(frames) == schedule.n_frames
    got = np.abs(np.array(frames))
    want = np.abs(simulate(schedule.ideal(), [t1_ms], [t2_ms]))[0]
    difference = np.abs(got / np.linalg.norm(got) - want / np.linalg.norm(want))
    assert difference.max() < MRZERO_TOL, (tissue, difference.max())
    assert np.linalg.norm(got) / np.linalg.norm(want) == pytest.approx(1.0, abs=2e-3)  # M0 = 1 in both
