"""drone_core.sequence: the EPI-MRF sequence as a Pulseq file, read back as a scanner would play it.

The timing is measured from the written file's events (``readback``), and the k-space of every readout
from pypulseq's own gradient integration (``Sequence.calculate_kspace``), not from the numbers the
writer designed with.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pp = pytest.importorskip("pypulseq", reason="pypulseq is not installed (the 'scanner' extra)")

from drone_core.excitation import Excitation  # noqa: E402
from drone_core.schedule import Schedule, default_schedule  # noqa: E402
from drone_core.sequence.epi_mrf import EpiMrfProtocol, TimingError, build_sequence, write_sequence  # noqa: E402
from drone_core.sequence.gradient_system import PRESETS, gradient_system  # noqa: E402
from drone_core.sequence.readback import read_sequence  # noqa: E402

#: The goals of the scanner issue: flip angles from the RF events, TE and TRs from the event times.
FLIP_TOL_DEG = 0.1
TIME_TOL_MS = 0.010
#: TI is a sum of whole rasters from the inversion's centre: exact but for float rounding.
TI_TOL_MS = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="pypulseq")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The default schedule at the paper's protocol (128 × 128, 256 mm: 2 mm; 5 mm slices; R = 2) and the
    default (conservative) gradient system, written and read back."""
    path = tmp_path_factory.mktemp("seq") / "mrf.seq"
    schedule = default_schedule()
    timing = write_sequence(path, schedule, EpiMrfProtocol())
    seq = pp.Sequence()
    seq.read(str(path))
    return schedule, timing, seq, read_sequence(seq), path


def test_the_paper_protocol_fits_the_default_system(written) -> None:
    schedule, timing, seq, _, _ = written
    ok, report = seq.check_timing()
    assert ok, report[:3]
    assert timing.min_te_ms <= schedule.te_ms
    assert min(timing.min_tr_ms) <= min(schedule.tr_ms)
    assert timing.min_ti_ms <= schedule.ti_ms
    assert PRESETS["conservative"].max_grad_mt_per_m <= 40 and PRESETS["conservative"].max_slew_t_per_m_per_s <= 150


def test_flip_angles_te_trs_and_ti_as_played(written) -> None:
    """Measured from the file's RF and ADC events: every flip angle within 0.1°, TE and every TR within 10 µs,
    TI exact (the schedule's TRs are not on the 10 µs raster: they are rounded to it)."""
    schedule, _, _, readback, _ = written
    (frames,) = readback.frames()
    assert len(frames.flip_deg) == schedule.n_frames
    assert np.max(np.abs(np.array(frames.flip_deg) - schedule.flip_angle_deg)) < FLIP_TOL_DEG
    assert np.max(np.abs(np.array(frames.te_ms) - schedule.te_ms)) < TIME_TOL_MS
    assert np.max(np.abs(np.array(frames.tr_ms) - schedule.tr_ms)) < TIME_TOL_MS
    assert frames.ti_ms == pytest.approx(schedule.ti_ms, abs=TI_TOL_MS)


def test_the_excitation_is_the_schedules_pulse(written) -> None:
    """The RF waveform played is the schedule's declared pulse (Hann sinc, its time-bandwidth product): the
    same envelope as drone_core.excitation's, sample for sample."""
    schedule, _, seq, readback, _ = written
    block = seq.get_block(readback.shots[0].excitation.block)
    signal = np.real(block.rf.signal * np.exp(-1j * np.angle(block.rf.signal[len(block.rf.signal) // 2])))
    expected = schedule.excitation.waveform(signal.size)
    assert np.max(np.abs(signal / signal.sum() - expected)) < 1e-9 * signal.size
    assert schedule.excitation == Excitation("sinc", 4.0, "hann")


def test_gradient_moments_per_tr(written) -> None:
    """Between consecutive excitation centres the x and y moments are rewound and the z moment is one and the
    same constant — the FISP-like model's one dephasing order per TR — of at least the spoiler's."""
    _, timing, seq, readback, _ = written
    moments = [g.antiderivative() for g in seq.get_gradients()]
    times = [s.excitation.time_s for s in readback.shots if not s.label("REF")]
    per_tr = np.array([[float(m(b) - m(a)) for m in moments] for a, b in zip(times[:-1], times[1:])])
    r = timing.readout
    lobe = r.amplitude_hz_per_m * (r.flat_top_us + r.ramp_up_us) * 1e-6  # a readout lobe's moment, 1/m
    assert np.max(np.abs(per_tr[:, :2])) < 1e-5 * lobe  # in-plane: rewound
    spoiler = 8.0 / 5e-3
    assert per_tr[:, 2].min() >= spoiler
    assert np.ptp(per_tr[:, 2]) < 1e-6 * spoiler


def test_every_adc_is_labelled(written) -> None:
    """Noise lines first, then per frame 3 navigators (centre line, +, −, +) and the GRAPPA lines (every 2nd,
    the centre among them, ascending, odd echoes reversed); the ACS reference after the frames."""
    schedule, timing, _, readback, _ = written
    noise = [r for r in readback.readouts if r.labels.get("NOISE")]
    assert len(noise) == 32 and noise[-1].start_s < readback.pulses[0].time_s
    imaging = [s for s in readback.shots if not s.label("REF")]
    assert [s.label("REP") for s in imaging] == list(range(schedule.n_frames))
    for shot in imaging:
        navs = [r for r in shot.readouts if r.labels["NAV"]]
        lines = [r for r in shot.readouts if not r.labels["NAV"]]
        assert [r.labels["REV"] for r in navs] == [0, 1, 0] and {r.labels["LIN"] for r in navs} == {64}
        assert [r.labels["LIN"] for r in lines] == list(range(0, 128, 2))
        assert [r.labels["REV"] for r in lines] == [j % 2 for j in range(64)]
        assert all(set(r.labels) >= {"LIN", "SLC", "REP", "NAV", "REV", "REF"} for r in shot.readouts)
    (acs,) = [s for s in readback.shots if s.label("REF")]
    assert acs.excitation.time_s > imaging[-1].excitation.time_s
    assert [r.labels["LIN"] for r in acs.readouts if not r.labels["NAV"]] == list(range(52, 76))
    assert timing.lines == tuple(range(0, 128, 2)) and timing.centre_echo == 32


def test_kspace_from_pypulseqs_own_integration(written) -> None:
    """pypulseq's k-space of the samples (its integration of the gradients): each imaging line sits at its
    ky = (line − ny/2)/FOV, and the centre line crosses kx = 0 at the middle of its ADC window."""
    _, timing, seq, readback, _ = written
    k_adc = seq.calculate_kspace()[0]
    n = timing.readout.n_samples
    start = 0
    dk = 1.0 / 0.256
    for r in readback.readouts:
        k = k_adc[:, start:start + n]
        start += r.n_samples
        if r.labels.get("NOISE") or r.labels.get("REF") or r.labels.get("NAV"):
            continue
        assert np.allclose(k[1], (r.labels["LIN"] - 64) * dk, atol=1e-3 * dk)  # amplitudes stored to 6 digits
        if r.labels["LIN"] == 64:
            middle = 0.5 * (k[0, n // 2 - 1] + k[0, n // 2])
            assert abs(middle) < 1e-3 * dk
            assert np.ptp(k[0]) == pytest.approx(128 * dk, rel=0.05)  # the readout spans the matrix


def test_definitions_carry_the_header(written) -> None:
    schedule, _, _, readback, _ = written
    d = readback.definitions
    assert Schedule.from_dict(json.loads(d["DRONE_schedule"])).digest() == schedule.digest() == d[
        "DRONE_schedule_digest"]
    assert np.allclose(d["FOV"], [0.256, 0.256, 0.005]) and list(np.ravel(d["MatrixSize"])) == [128, 128, 1]
    assert d["Name"] == "drone_epi_mrf"


def test_a_schedule_the_system_cannot_run_is_refused_with_its_minimum() -> None:
    schedule = default_schedule()
    data = schedule.to_dict()
    with pytest.raises(TimingError, match=r"TE 15 ms is shorter than this readout allows: at least 22\.\d+ ms"):
        build_sequence(Schedule.from_dict({**data, "te_ms": 15.0}))
    short = {**data, "tr_ms": [30.0] + list(data["tr_ms"][1:])}
    with pytest.raises(TimingError, match=r"TR too short for 1 frame\(s\) \(frame 0: 30 ms\).*at least 43\.\d+ ms"):
        build_sequence(Schedule.from_dict(short))
    with pytest.raises(TimingError, match=r"TI 5 ms is shorter than the inversion allows: at least 10\.\d+ ms"):
        build_sequence(Schedule.from_dict({**data, "ti_ms": 5.0}))
    slow = EpiMrfProtocol(system=gradient_system(max_slew_t_per_m_per_s=80.0))
    with pytest.raises(TimingError, match="custom"):
        build_sequence(schedule, slow)


def test_several_slices_one_after_another(tmp_path) -> None:
    """Two slices: each its own slice-selective inversion (a slab of 3 thicknesses), the same TI and TRs; slices
    closer than the slab are refused."""
    schedule = Schedule.from_dict({**default_schedule().to_dict(), "flip_angle_deg": [30.0] * 4,
                                   "tr_ms": [50.0] * 4})
    seq, timing = build_sequence(schedule, EpiMrfProtocol(matrix=(32, 32), n_slices=2, noise_lines=0))
    readback = read_sequence(seq)
    inversions = [p for p in readback.pulses if p.use == "inversion"]
    assert len(inversions) == 2
    assert all(seq.get_block(p.block).gz is not None for p in inversions)
    first, second = readback.frames()
    assert first.ti_ms == pytest.approx(second.ti_ms, abs=TI_TOL_MS) == pytest.approx(schedule.ti_ms, abs=TI_TOL_MS)
    assert np.allclose(first.tr_ms, second.tr_ms, atol=1e-9)
    offsets = {round(seq.get_block(s.excitation.block).rf.freq_offset) for s in readback.shots}
    assert len(offsets) == 2
    with pytest.raises(ValueError, match="slice_spacing_mm: 10 mm is less than the inversion slab"):
        EpiMrfProtocol(n_slices=2, slice_spacing_mm=10.0)


def test_bad_protocols_are_refused() -> None:
    with pytest.raises(ValueError, match="n_navigators: expected an odd number"):
        EpiMrfProtocol(n_navigators=2)
    with pytest.raises(ValueError, match=r"matrix \(y\): expected an even number"):
        EpiMrfProtocol(matrix=(127, 128))
    with pytest.raises(ValueError, match="system: expected one of"):
        gradient_system("a-scanner")
    with pytest.raises(ValueError, match="beyond any whole-body scanner"):
        gradient_system(max_grad_mt_per_m=4000.0)


def test_drone_sequence_command(tmp_path, capsys) -> None:
    from drone_cli.main import main

    out = tmp_path / "mrf.seq"
    assert main(["sequence", str(out), "--matrix", "64", "64", "--noise-lines", "0"]) == 0
    text = capsys.readouterr().err
    assert "TE 23.00 ms (minimum" in text and out.stat().st_size > 0
    assert main(["sequence", str(out)]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert main(["sequence", str(out), "--force", "--max-slew", "60"]) == 2
    assert "TE 23 ms is shorter than this readout allows" in capsys.readouterr().err


def test_the_hard_inversion_is_a_180_degree_rotation() -> None:
    """`inversion="hard"` (for simulators that play RF as one rotation): a 180° block pulse, TI still exact;
    refused with several slices (it is not selective)."""
    schedule = Schedule.from_dict({**default_schedule().to_dict(), "flip_angle_deg": [30.0] * 3, "tr_ms": [50.0] * 3})
    seq, _ = build_sequence(schedule, EpiMrfProtocol(matrix=(16, 16), acceleration=1, noise_lines=0,
                                                     inversion="hard"))
    readback = read_sequence(seq)
    inversion = readback.pulses[0]
    assert inversion.use == "inversion" and inversion.flip_deg == pytest.approx(180.0, abs=FLIP_TOL_DEG)
    assert readback.frames()[0].ti_ms == pytest.approx(schedule.ti_ms, abs=TI_TOL_MS)
    with pytest.raises(ValueError, match="inversion: 'hard' is non-selective"):
        EpiMrfProtocol(n_slices=2, inversion="hard")
