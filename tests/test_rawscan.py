"""drone_gadgets.scans.raw (``drone simulate-scan --raw``): the ISMRMRD header Gadgetron's GRAPPA EPI chain
reads, the acquisition stream (noise scan, ACS, navigators, echo trains, flags), the samples against an
independent model, a reconstruction done here (Gadgetron's header-driven trajectory, least squares per
line, inverse FFT along y, coil combination) that gives back the simulated frames and the documented
noise level, the truth and B1 groups, refusals and the command line.

Files are read with h5py (the acquisitions' headers as one structured array) and ismrmrd (the XML
header, and a few acquisitions to check the layout)."""

from __future__ import annotations

import math
from contextlib import closing
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from cli.main import main
from drone_core.encoding import coil_sensitivities, noise_covariance
from drone_core.phantoms import brain_phantom, simulate_frames
from drone_core.schedule import Schedule, default_schedule
from drone_gadgets.scans import raw as rawscan
from drone_gadgets.recon.header import check_header_schedule, schedule_from_header, sequence_parameters
from drone_gadgets.scans.layout import truth_path
from drone_gadgets.scans.raw import RawProtocol, write_raw_scan
from drone_gadgets.scans.b1 import read_b1_map
from drone_gadgets.scans.images import read_scan
from drone_gadgets.scans.truth import read_truth

#: ISMRMRD acquisition flag bit numbers (ismrmrd.h; mask = 1 << (bit − 1)), written out here, not taken
#: from the code under test.
FIRST_IN_SLICE, LAST_IN_SLICE, LAST_IN_REPETITION = 7, 8, 14
NOISE, CALIBRATION, CALIBRATION_AND_IMAGING, REVERSE, NAVIGATION, PHASECORR, LAST_IN_MEASUREMENT = (
    19, 20, 21, 22, 23, 24, 25)
#: The samples are complex64 and the coil sensitivities are cast to complex64 before the FFT: relative
#: errors of a few 1e-7; 1e-4 of the largest value leaves a wide margin and still catches any model error
#: (a wrong k position, polarity or ghost sign changes samples by O(1) of their size).
DATA_RTOL = 1e-4
#: Standard errors allowed for a seeded statistical estimate.
N_SE = 5.0
NY = NX = 32


def _bit(bit: int) -> np.uint64:
    return np.uint64(1) << np.uint64(bit - 1)


def _has(flags: np.ndarray, bit: int) -> np.ndarray:
    return (np.asarray(flags, dtype=np.uint64) & _bit(bit)) != 0


class RawFile:
    """A raw scan as read back: the parsed header, the acquisition headers and their samples."""

    def __init__(self, path: Path, group: str = "dataset") -> None:
        with h5py.File(path, "r") as f:
            xml = f[group]["xml"][0]
            d = f[group]["data"]
            self.heads = d.fields("head")[:]
            raw = d.fields("data")[:]
        self.xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        self.header = ismrmrd.xsd.CreateFromDocument(self.xml)
        self.data = np.stack([r.view(np.complex64).reshape(int(h["active_channels"]), int(h["number_of_samples"]))
                              for r, h in zip(raw, self.heads)])
        self.flags = self.heads["flags"]
        self.idx = self.heads["idx"]

    def has(self, bit: int) -> np.ndarray:
        return _has(self.flags, bit)

    @property
    def imaging(self) -> np.ndarray:
        return ~(self.has(NOISE) | self.has(PHASECORR) | self.has(CALIBRATION))

    def trajectory_params(self) -> dict[str, float]:
        td = self.header.encoding[0].trajectoryDescription
        params = {p.name: float(p.value) for p in td.userParameterLong}
        params.update({p.name: float(p.value) for p in td.userParameterDouble})
        return params


def gadgetron_trajectory(raw: RawFile, dtype: type = np.float64) -> np.ndarray:
    """The positive-line k positions EPIReconXObjectTrapezoid::computeTrajectory (Gadgetron 4.7.2) derives
    from the header: balanced window, sample n at the end of its dwell, readArea as Gadgetron computes it,
    scale encodeNx / readArea, k = 0 halfway through the lobe's area. In ``dtype`` (Gadgetron: float32)."""
    p = {k: dtype(v) for k, v in raw.trajectory_params().items()}
    f = dtype
    up, down, flat, dwell = p["rampUpTime"], p["rampDownTime"], p["flatTopTime"], p["dwellTime"]
    n = int(p["numSamples"])
    if flat == 0:
        flat = dwell * f(n)
    nx = f(raw.header.encoding[0].encodedSpace.matrixSize.x)
    tot_time = up + flat + down
    read_time = dwell * f(n)
    delay = f(0.5) * (tot_time - read_time)
    tot_area = f(0.5) * up + flat + f(0.5) * down
    read_area = tot_area
    if up > 0:
        read_area -= f(0.5) * delay * delay / up
    if down > 0:
        read_area -= f(0.5) * (tot_time - (delay + read_time)) * (tot_time - (delay + read_time)) / down
    k = np.empty(n, dtype=dtype)
    for i in range(n):
        t = f(i + 1.0) * dwell + delay
        if t <= up:
            k[i] = f(0.5) / up * t * t
        elif t <= up + flat:
            k[i] = f(0.5) * up + (t - up)
        else:
            v = up + flat + down - t
            k[i] = f(0.5) * up + flat + f(0.5) * down - f(0.5) / down * v * v
    return (nx / read_area) * (k - f(0.5) * tot_area)


def dtft(k: np.ndarray, nx: int) -> np.ndarray:
    """(len(k), nx): sample at k of pixel p, exp(−2πi·k·(p − nx/2)/nx)/√nx (the module's convention)."""
    return np.exp(-2j * np.pi * np.outer(k, np.arange(nx) - nx / 2) / nx) / math.sqrt(nx)


def line_model(image: np.ndarray, sens: np.ndarray, row: int, reverse: bool, k: np.ndarray,
               shift: float = 0.0, phase: float = 0.0) -> np.ndarray:
    """(coils, samples) of one EPI line of ``image`` (ny, nx), by explicit DTFTs: along y the line's
    ky = row − ny/2, along x the positive (+k_n + shift/2, phase +φ/2) or reverse (−k_n − shift/2, −φ/2)
    positions."""
    ny, nx = image.shape
    coil_images = sens * image[None]
    ky_kernel = np.exp(-2j * np.pi * (row - ny / 2) * (np.arange(ny) - ny / 2) / ny) / math.sqrt(ny)
    hybrid_row = np.einsum("cqp,q->cp", coil_images, ky_kernel)
    sign = -1.0 if reverse else 1.0
    return hybrid_row @ dtft(sign * (k + 0.5 * shift), nx).T * np.exp(0.5j * sign * phase)


def reconstruct(raw: RawFile, sens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames from the imaging lines of a fully sampled raw scan, by our own reconstruction:
    least squares per line on the header's trajectory (reverse lines at −k, in acquisition order),
    centred orthonormal inverse FFT along y, coil combination Σ conj(S_c)·image_c (RSS of S is 1).
    Returns ((reps, slices, ny, nx) combined images, diag((AᴴA)⁻¹) of the readout's least squares)."""
    k = gadgetron_trajectory(raw)
    pinv = {False: np.linalg.pinv(dtft(k, NX)), True: np.linalg.pinv(dtft(-k, NX))}
    sel = np.flatnonzero(raw.imaging)
    n_rep = int(raw.idx["repetition"][sel].max()) + 1
    n_slc = int(raw.idx["slice"][sel].max()) + 1
    hybrid = np.zeros((n_rep, n_slc, sens.shape[0], NY, NX), dtype=np.complex128)
    filled = np.zeros((n_rep, n_slc, NY), dtype=int)
    for i in sel:
        r, s, e1 = (int(raw.idx[name][i]) for name in ("repetition", "slice", "kspace_encode_step_1"))
        hybrid[r, s, :, e1, :] = raw.data[i].astype(np.complex128) @ pinv[bool(raw.has(REVERSE)[i])].T
        filled[r, s, e1] += 1
    assert np.all(filled == 1), "not every line exactly once"
    images = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(hybrid, axes=-2), axis=-2, norm="ortho"), axes=-2)
    combined = np.sum(np.conj(sens)[None, None] * images, axis=2)
    return combined, np.real(np.diag(pinv[False] @ pinv[False].conj().T))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return default_schedule()


@pytest.fixture(scope="module")
def grappa_scan(tmp_path_factory, schedule):
    """2 slices, 4 coils, R = 2 (24 ACS lines), the default ghost, a noise scan; noise-free images (so
    the samples can be compared with the model exactly)."""
    phantom = brain_phantom(2, (NY, NX))
    protocol = RawProtocol(n_coils=4, acceleration=2)
    path = tmp_path_factory.mktemp("raw") / "grappa.h5"
    info = write_raw_scan(path, phantom, schedule, protocol=protocol, seed=1)
    return path, phantom, protocol, info, RawFile(path)


@pytest.fixture(scope="module")
def full_scans(tmp_path_factory, schedule):
    """R = 1, no ghost, 3 coils, one slice: a noise-free and a noisy scan (same seed and protocol)."""
    phantom = brain_phantom(1, (NY, NX))
    protocol = RawProtocol(n_coils=3, acceleration=1, ghost_shift=0.0, ghost_phase_rad=0.0)
    root = tmp_path_factory.mktemp("full")
    clean = write_raw_scan(root / "clean.h5", phantom, schedule, protocol=protocol, noise_level=0.0, seed=11)
    noisy = write_raw_scan(root / "noisy.h5", phantom, schedule, protocol=protocol, noise_level=0.02, seed=11)
    frames = simulate_frames(phantom, schedule, magnitude=False).reshape(schedule.n_frames, 1, NY, NX)
    return phantom, protocol, frames, (clean, RawFile(clean.path)), (noisy, RawFile(noisy.path))


# --------------------------------------------------------------------------- the header
def test_header_is_what_the_grappa_epi_chain_reads(grappa_scan, schedule) -> None:
    _, phantom, protocol, info, raw = grappa_scan
    h = raw.header  # parsed by ismrmrd.xsd (1.15 in .venv, 1.14 in .venv-compat): valid against the schema
    asi = h.acquisitionSystemInformation
    assert asi.receiverChannels == 4
    assert [c.coilNumber for c in asi.coilLabel] == [0, 1, 2, 3]
    assert len({c.coilName for c in asi.coilLabel}) == 4 and all(c.coilName for c in asi.coilLabel)
    assert asi.relativeReceiverNoiseBandwidth == pytest.approx(0.793)
    assert h.subjectInformation.patientID and h.studyInformation.studyID  # Gadgetron's storage keys
    # no Noise dependency: Gadgetron would look it up in its (absent) storage at chain construction
    assert not list(getattr(h.measurementInformation, "measurementDependency", None) or [])
    assert len(h.encoding) == 1
    enc = h.encoding[0]
    for space in (enc.encodedSpace, enc.reconSpace):  # the Siemens EPI convention: no 2× in x
        assert (space.matrixSize.x, space.matrixSize.y, space.matrixSize.z) == (NX, NY, 1)
        assert (space.fieldOfView_mm.x, space.fieldOfView_mm.y, space.fieldOfView_mm.z) == (256.0, 256.0, 5.0)
    assert enc.trajectory.value == "epi"
    td = enc.trajectoryDescription
    assert td.identifier == "ConventionalEPI"
    longs = {p.name: p.value for p in td.userParameterLong}
    doubles = {p.name: p.value for p in td.userParameterDouble}
    assert np.all(raw.heads["number_of_samples"] == longs["numSamples"]) and longs["numSamples"] == 2 * NX
    assert longs["numberOfNavigators"] == 3
    assert longs["etl"] == NY // 2
    assert (longs["rampUpTime"], longs["rampDownTime"], longs["flatTopTime"]) == (100, 100, 2 * NX * 2.5)
    assert doubles["dwellTime"] == 2.5 and np.all(raw.heads["sample_time_us"] == np.float32(2.5))
    pi = enc.parallelImaging
    assert (pi.accelerationFactor.kspace_encoding_step_1, pi.accelerationFactor.kspace_encoding_step_2) == (2, 1)
    assert pi.calibrationMode.value == "separate"
    lim = enc.encodingLimits
    for name, expected in (("kspace_encoding_step_1", (0, NY - 1, NY // 2)), ("kspace_encoding_step_2", (0, 0, 0)),
                           ("slice", (0, 1, 0)), ("repetition", (0, schedule.n_frames - 1, 0)),
                           ("average", (0, 0, 0))):
        node = getattr(lim, name)
        assert (node.minimum, node.maximum, node.center) == expected, name
    # the schedule, through the gadget's header reader (the header has no pulse: the estimator's is given)
    read = schedule_from_header(sequence_parameters(raw.xml), inversion_efficiency=schedule.inversion_efficiency,
                                excitation=schedule.excitation)
    assert read.digest() == schedule.digest() == info.schedule_digest
    assert read.flip_angle_deg == schedule.flip_angle_deg and read.tr_ms == schedule.tr_ms
    assert check_header_schedule(raw.xml, schedule, "strict") is not None
    strings = {p.name: p.value for p in h.userParameters.userParameterString}
    assert Schedule.from_json(strings["DRONE_schedule"]) == schedule
    assert strings["DRONE_schedule_digest"] == schedule.digest()
    # the header through ismrmrd's own reader too
    with closing(ismrmrd.Dataset(str(info.path), "dataset", create_if_needed=False)) as ds:
        text = ds.read_xml_header()
    assert (text.decode() if isinstance(text, bytes) else text) == raw.xml


def test_header_trajectory_has_an_exact_zero_in_gadgetrons_float32(grappa_scan, tmp_path, schedule) -> None:
    """EPIReconX looks for a sample with traj == 0.0 exactly (in float): flat-top and ramp-sampled."""
    k32 = gadgetron_trajectory(grappa_scan[4], np.float32)
    assert k32[NX - 1] == 0.0
    ramp = write_raw_scan(tmp_path / "ramp.h5", brain_phantom(1, (NY, NX)), schedule,
                          protocol=RawProtocol(n_coils=2, ramp_sampling=True, noise_scan=False))
    raw = RawFile(ramp.path)
    params = raw.trajectory_params()
    assert params["flatTopTime"] < 2 * NX * 2.5 and params["numSamples"] > 2 * NX  # samples on the ramps
    assert np.all(raw.heads["number_of_samples"] == params["numSamples"])
    k = gadgetron_trajectory(raw, np.float32)
    assert k[int(params["numSamples"]) // 2 - 1] == 0.0
    assert np.all(np.diff(k) > 0) and abs(float(k[-1] - k[0]) - NX) < 1.0  # spans ≈ encode_nx, monotonic


def test_header_of_an_unaccelerated_scan(full_scans) -> None:
    _, _, _, (_, raw), _ = full_scans
    enc = raw.header.encoding[0]
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 1
    assert {p.name: p.value for p in enc.trajectoryDescription.userParameterLong}["etl"] == NY
    assert raw.header.acquisitionSystemInformation.receiverChannels == 3


# --------------------------------------------------------------------------- the acquisition stream
def test_acquisition_stream_order_and_flags(grappa_scan, schedule) -> None:
    _, phantom, protocol, info, raw = grappa_scan
    n = len(raw.heads)
    assert n == info.n_acquisitions
    noise = raw.has(NOISE)
    n_noise = protocol.noise_lines
    assert noise[:n_noise].all() and not noise[n_noise:].any() and info.n_noise == n_noise  # noise first, only there
    assert not raw.has(CALIBRATION_AND_IMAGING).any() and not raw.has(NAVIGATION).any()
    last = raw.has(LAST_IN_MEASUREMENT)
    assert last[-1] and last.sum() == 1
    reps = raw.idx["repetition"][n_noise:].astype(int)
    assert np.all(np.diff(reps) >= 0) and sorted(set(reps)) == list(range(schedule.n_frames))  # contiguous, ascending
    centre = NY // 2
    acs_expected = list(range(centre - 12, centre + 12))  # 12·R = 24 lines around the centre
    lines_expected = list(range(0, NY, 2))  # every 2nd line, the centre (16) among them
    calibration = raw.has(CALIBRATION)
    assert set(raw.idx["repetition"][calibration]) == {0}
    n_trains = 0
    for r in range(schedule.n_frames):
        block = np.flatnonzero(raw.idx["repetition"] == r)
        block = block[block >= n_noise]
        assert np.all(np.diff(block) == 1)
        assert np.all(np.diff(raw.idx["slice"][block].astype(int)) >= 0)  # slice inner
        for s in range(2):
            sb = block[raw.idx["slice"][block] == s]
            assert sb.size and np.all(np.diff(sb) == 1)
            # split into echo trains: navigators, then the lines they correct
            nav = raw.has(PHASECORR)[sb]
            starts = np.flatnonzero(nav & ~np.concatenate([[False], nav[:-1]]))
            trains = np.split(sb, starts[1:])
            assert starts[0] == 0 and len(trains) == (2 if r == 0 else 1)
            for t, train in enumerate(trains):
                n_trains += 1
                navs, lines = train[:3], train[3:]
                assert raw.has(PHASECORR)[navs].all() and not raw.has(PHASECORR)[lines].any()
                assert raw.has(REVERSE)[navs].tolist() == [False, True, False]
                assert np.all(raw.idx["kspace_encode_step_1"][navs] == centre)
                assert np.all(raw.flags[navs] & ~(_bit(PHASECORR) | _bit(REVERSE)) == 0)
                is_acs = r == 0 and t == 0
                assert np.all(raw.has(CALIBRATION)[lines] == is_acs)
                e1 = raw.idx["kspace_encode_step_1"][lines].tolist()
                assert e1 == (acs_expected if is_acs else lines_expected)
                reverse = raw.has(REVERSE)[lines]
                assert reverse.tolist() == [i % 2 == 1 for i in range(len(lines))]  # alternating, forward first
                assert np.all(raw.idx["segment"][lines] == reverse)
                if not is_acs:
                    allowed = (_bit(REVERSE) | _bit(FIRST_IN_SLICE) | _bit(LAST_IN_SLICE) | _bit(LAST_IN_REPETITION)
                               | _bit(LAST_IN_MEASUREMENT))
                    assert np.all(raw.flags[lines] & ~allowed == 0)
                    assert raw.has(FIRST_IN_SLICE)[lines].tolist() == [True] + [False] * (len(lines) - 1)
                    assert raw.has(LAST_IN_SLICE)[lines].tolist() == [False] * (len(lines) - 1) + [True]
                    assert raw.has(LAST_IN_REPETITION)[lines].tolist() == (
                        [False] * (len(lines) - 1) + [s == 1])
    assert n_trains == 2 * schedule.n_frames + 2
    assert info.n_calibration == 2 * 24 and calibration.sum() == 2 * 24
    assert info.n_navigators == 3 * n_trains and raw.has(PHASECORR).sum() == 3 * n_trains
    assert not raw.has(FIRST_IN_SLICE)[raw.has(CALIBRATION) | raw.has(PHASECORR) | noise].any()


def test_acquisition_headers(grappa_scan, schedule) -> None:
    _, phantom, protocol, info, raw = grappa_scan
    h = raw.heads
    assert np.all(h["active_channels"] == 4) and np.all(h["available_channels"] == 4)
    assert np.all(h["channel_mask"][:, 0] == 0b1111) and np.all(h["channel_mask"][:, 1:] == 0)
    assert np.all(h["number_of_samples"] == 2 * NX) and np.all(h["sample_time_us"] == np.float32(2.5))
    assert raw.data.shape == (len(h), 4, 2 * NX)
    for name in ("discard_pre", "discard_post", "encoding_space_ref", "trajectory_dimensions"):
        assert np.all(h[name] == 0), name
    for name in ("kspace_encode_step_2", "average", "contrast", "phase", "set"):
        assert np.all(raw.idx[name] == 0), name
    assert np.all(np.diff(h["scan_counter"].astype(int)) == 1)
    sel = ~raw.has(NOISE)
    z = np.asarray(phantom.slice_positions_mm, dtype=np.float32)[raw.idx["slice"][sel]]
    np.testing.assert_array_equal(h["position"][sel], np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1))
    assert np.all(h["read_dir"] == np.float32([1, 0, 0])) and np.all(h["phase_dir"] == np.float32([0, 1, 0]))
    assert np.all(h["slice_dir"] == np.float32([0, 0, 1]))
    # time stamps (2.5 ms ticks) advance by the schedule's TRs, frame to frame
    stamps = np.array([h["acquisition_time_stamp"][sel & (raw.idx["repetition"] == r)].min()
                       for r in range(schedule.n_frames)], dtype=float)
    elapsed = np.concatenate([[0.0], np.cumsum(schedule.tr_ms)[:-1]])
    assert np.all(np.abs((stamps - stamps[0]) * 2.5 - elapsed) <= 2.5)  # rounding to a tick
    assert np.all(np.diff(h["acquisition_time_stamp"].astype(int)) >= 0)
    # ismrmrd's reader sees the same acquisitions
    with closing(ismrmrd.Dataset(str(info.path), "dataset", create_if_needed=False)) as ds:
        assert ds.number_of_acquisitions() == len(h)
        for i in (0, protocol.noise_lines, len(h) // 2, len(h) - 1):
            acq = ds.read_acquisition(i)
            assert (acq.flags, acq.idx.kspace_encode_step_1, acq.idx.repetition, acq.idx.slice) == (
                h["flags"][i], raw.idx["kspace_encode_step_1"][i], raw.idx["repetition"][i], raw.idx["slice"][i])
            np.testing.assert_array_equal(acq.data, raw.data[i])


def test_samples_match_the_model(grappa_scan, schedule) -> None:
    """Navigators, ACS and imaging lines of a noise-free scan against line_model (explicit DTFTs on
    the header's trajectory, the docstring's ghost, the known sensitivities): frame r for the
    navigators and lines of repetition r, the M0 reference scaled to the frames' peak for the ACS."""
    _, phantom, protocol, _, raw = grappa_scan
    sens = coil_sensitivities(4, (NY, NX), phantom.fov_mm)
    frames = simulate_frames(phantom, schedule, magnitude=False).reshape(schedule.n_frames, 2, NY, NX)
    m0 = phantom.maps()["m0"].reshape(2, NY, NX)
    reference = m0 * (np.abs(frames).max() / m0.max())
    k = gadgetron_trajectory(raw)
    scale = np.abs(raw.data[~raw.has(NOISE)]).max()
    checked = 0
    for i in np.flatnonzero(~raw.has(NOISE)):
        r, s = int(raw.idx["repetition"][i]), int(raw.idx["slice"][i])
        if r not in (0, 9, schedule.n_frames - 1):
            continue
        is_acs_train = r == 0 and (raw.has(CALIBRATION)[i] or (raw.has(PHASECORR)[i] and raw.has(CALIBRATION)[i + 3]))
        image = reference[s] if is_acs_train else frames[r, s]
        expected = line_model(image, sens, int(raw.idx["kspace_encode_step_1"][i]), bool(raw.has(REVERSE)[i]), k,
                              protocol.ghost_shift, protocol.ghost_phase_rad)
        np.testing.assert_allclose(raw.data[i], expected, rtol=0, atol=DATA_RTOL * scale, err_msg=f"acquisition {i}")
        checked += 1
    assert checked == 2 * (3 + 24) + 3 * 2 * (3 + 16)
    # the ghost is there: without it the model misses by far more than the tolerance
    candidates = np.flatnonzero(raw.has(REVERSE) & raw.imaging & (raw.idx["repetition"] == 0)
                                & (raw.idx["slice"] == 0))
    i = int(candidates[np.argmax(np.abs(raw.data[candidates]).max(axis=(1, 2)))])  # the strongest reverse line
    plain = line_model(frames[0, 0], sens, int(raw.idx["kspace_encode_step_1"][i]), True, k)
    assert np.abs(raw.data[i] - plain).max() > 100 * DATA_RTOL * np.abs(raw.data[i]).max()


# --------------------------------------------------------------------------- reconstruction and noise
def test_fully_sampled_scan_reconstructs_to_the_frames(full_scans) -> None:
    phantom, protocol, frames, (clean, raw), _ = full_scans
    assert clean.n_calibration == 0 and not raw.has(CALIBRATION).any()
    sens = coil_sensitivities(3, (NY, NX), phantom.fov_mm)
    images, _ = reconstruct(raw, sens)
    assert images.shape == frames.shape
    # complex64 data: 1e-4 of the brightest voxel (module constant DATA_RTOL)
    np.testing.assert_allclose(images, frames, rtol=0, atol=DATA_RTOL * np.abs(frames).max())


def test_ramp_sampled_scan_reconstructs_to_the_frames(tmp_path, schedule) -> None:
    phantom = brain_phantom(1, (NY, NX))
    protocol = RawProtocol(n_coils=3, acceleration=1, ghost_shift=0.0, ghost_phase_rad=0.0, ramp_sampling=True,
                           noise_scan=False)
    info = write_raw_scan(tmp_path / "ramp.h5", phantom, schedule, protocol=protocol)
    raw = RawFile(info.path)
    assert info.n_noise == 0 and not raw.has(NOISE).any()
    frames = simulate_frames(phantom, schedule, magnitude=False).reshape(schedule.n_frames, 1, NY, NX)
    images, _ = reconstruct(raw, coil_sensitivities(3, (NY, NX), phantom.fov_mm))
    np.testing.assert_allclose(images, frames, rtol=0, atol=DATA_RTOL * np.abs(frames).max())


def test_noise_has_the_documented_level(full_scans) -> None:
    """Module docstring: σ per pixel of a lossless reconstruction = noise_level × the brightest noise-free
    voxel, σ per k-space sample = that × √(samples per readout / readout pixels), covariance ∝ Ψ.

    With our reconstruction the combined noise of pixel (y, x) has, per real channel, the variance
    σ_k² · diag((AᴴA)⁻¹)_x · Sᴴ(y, x)·Ψ·S(y, x) (least squares along x; the orthonormal FFT along y
    keeps it; the coil combination weighs Ψ with S). For the uniform 2× readout AᴴA = (N/nx)·I, so the
    pixels' noise is independent and the normalised residual's variance has a standard error √(2/M) for
    M real values."""
    phantom, protocol, frames, _, (noisy, raw) = full_scans
    n_samples = 2 * NX
    sigma_image = 0.02 * np.abs(frames).max()
    sigma_k = sigma_image * math.sqrt(n_samples / NX)
    assert noisy.noise_sigma == pytest.approx(sigma_k, rel=1e-6)
    sens = coil_sensitivities(3, (NY, NX), phantom.fov_mm)
    psi = noise_covariance(3, neighbour_correlation=protocol.neighbour_correlation, seed=protocol.coil_seed)
    images, ls_diag = reconstruct(raw, sens)
    np.testing.assert_allclose(ls_diag, NX / n_samples, rtol=1e-10)  # uniform readout: (AᴴA)⁻¹ = (nx/N)·I
    s_psi_s = np.real(np.einsum("cyx,cd,dyx->yx", np.conj(sens), psi, sens))
    expected_var = sigma_k ** 2 * ls_diag[None, :] * s_psi_s  # per real channel, (ny, nx)
    obj = phantom.labels[0] != 0
    residual = (images - frames)[:, :, obj]  # (frames, 1, pixels)
    z = residual / np.sqrt(expected_var[obj])
    values = np.concatenate([z.real.ravel(), z.imag.ravel()])
    m = values.size
    assert m > 10_000
    assert abs(np.mean(values ** 2) - 1.0) <= N_SE * math.sqrt(2.0 / m), np.mean(values ** 2)
    assert abs(np.mean(values)) <= N_SE / math.sqrt(m)
    # the derivation matters: the coil combination weighs the noise by SᴴΨS (0.7 … 0.9 here), so assuming
    # σ_k²·(nx/N) = (noise_level × peak)² for every pixel would fail the same test
    assert abs(np.mean(s_psi_s[obj]) - 1.0) > 2 * N_SE * math.sqrt(2.0 / m)
    # and as the docstring's σ: the residual sd per real channel is noise_level × peak × √mean(SᴴΨS)
    # (standard error of a sd from m values: √(1/(2m)) of it)
    sd = float(np.sqrt(np.mean(np.abs(residual) ** 2) / 2))
    assert sd == pytest.approx(sigma_image * math.sqrt(np.mean(s_psi_s[obj])), rel=N_SE * math.sqrt(0.5 / m))


def test_noise_scan_has_the_imaging_noise_covariance(full_scans) -> None:
    phantom, protocol, frames, _, (noisy, raw) = full_scans
    noise = raw.has(NOISE)
    assert noise.sum() == protocol.noise_lines == noisy.n_noise
    assert np.all(raw.flags[noise] == _bit(NOISE))
    assert np.all(raw.heads["sample_time_us"][noise] == np.float32(2.5))
    samples = raw.data[noise].astype(np.complex128).transpose(1, 0, 2).reshape(3, -1)
    m = samples.shape[1]
    psi = noise_covariance(3, neighbour_correlation=protocol.neighbour_correlation, seed=protocol.coil_seed)
    expected = 2 * noisy.noise_sigma ** 2 * psi
    sample = samples @ samples.conj().T / m
    # circular complex Gaussian: Var(a·b̄) = E|a|²·E|b|² per sample
    se = np.sqrt(np.outer(np.real(np.diag(expected)), np.real(np.diag(expected))) / m)
    assert np.all(np.abs(sample - expected) <= N_SE * se), np.abs(sample - expected) / se


# --------------------------------------------------------------------------- batching
@pytest.mark.parametrize("batch", [1, 19, 37, 100])
def test_batched_writing_gives_the_same_file(tmp_path, schedule, monkeypatch, batch) -> None:
    """The acquisitions are written in batches of _BATCH: any batch size, including one that ends on the
    very last acquisition, must give the same file (LAST_IN_MEASUREMENT on the last acquisition)."""
    phantom = brain_phantom(1, (NY, NX))
    protocol = RawProtocol(n_coils=2, noise_lines=5)
    reference = RawFile(write_raw_scan(tmp_path / "one.h5", phantom, schedule, protocol=protocol,
                                       noise_level=0.01, seed=2).path)
    monkeypatch.setattr(rawscan, "_BATCH", batch)
    info = write_raw_scan(tmp_path / "batched.h5", phantom, schedule, protocol=protocol, noise_level=0.01, seed=2)
    raw = RawFile(info.path)
    assert info.n_acquisitions == len(raw.heads) == len(reference.heads)
    np.testing.assert_array_equal(raw.heads, reference.heads)
    np.testing.assert_array_equal(raw.data, reference.data)
    assert raw.has(LAST_IN_MEASUREMENT).tolist() == [False] * (len(raw.heads) - 1) + [True]


# --------------------------------------------------------------------------- truth, B1
def test_truth_and_b1_map(tmp_path, schedule) -> None:
    phantom = brain_phantom(1, (NY, NX))
    b1 = np.tile(np.linspace(0.8, 1.2, NX), (NY, 1))
    protocol = RawProtocol(n_coils=2, noise_scan=False)
    info = write_raw_scan(tmp_path / "b1.h5", phantom, schedule, protocol=protocol, b1=b1, b1_description="test")
    assert info.b1_images == 1 and sorted(info.truth) == ["b1", "labels", "m0", "t1", "t2"]
    np.testing.assert_allclose(read_b1_map(info.path)[0], b1, rtol=1e-6)
    _, images = read_scan(info.path, var="image_5")
    assert len(images) == 1
    head = images[0].getHead()
    assert (head.image_series_index, head.image_index, head.slice) == (5, 1, 0)
    assert images[0].meta["DRONE_Map"] == "B1" and images[0].meta["Units"] == "percent"
    np.testing.assert_allclose(np.asarray(images[0].data)[0, 0], 100 * b1, rtol=1e-6)
    truth = read_truth(info.path)
    maps = phantom.maps()
    for key in ("t1", "t2", "m0"):
        np.testing.assert_array_equal(truth[key], np.asarray(maps[key], dtype=np.float32).reshape(1, NY, NX))
    np.testing.assert_array_equal(truth["labels"], phantom.labels)
    np.testing.assert_allclose(truth["b1"][0], b1, rtol=1e-6)
    with h5py.File(info.path, "r") as f, h5py.File(truth_path(info.path), "r") as t:
        assert list(f) == ["dataset"] and t["dataset"]["xml"][0] == f["dataset"]["xml"][0]
    # the frames were simulated with this B1: a navigator of frame 3 is that frame's ky = 0 line
    raw = RawFile(info.path)
    sens = coil_sensitivities(2, (NY, NX), phantom.fov_mm)
    k = gadgetron_trajectory(raw)
    i = int(np.flatnonzero(raw.has(PHASECORR) & (raw.idx["repetition"] == 3))[0])
    for b1_sim, matches in ((b1, True), (None, False)):
        b1_arg = None if b1_sim is None else b1_sim[None]
        frame = simulate_frames(phantom, schedule, b1=b1_arg, magnitude=False)[3].reshape(NY, NX)
        expected = line_model(frame, sens, NY // 2, False, k, protocol.ghost_shift, protocol.ghost_phase_rad)
        close = np.allclose(raw.data[i], expected, rtol=0, atol=DATA_RTOL * np.abs(expected).max())
        assert close == matches


def test_without_truth_and_in_another_group(tmp_path, schedule) -> None:
    info = write_raw_scan(tmp_path / "g.h5", brain_phantom(1, (NY, NX)), schedule,
                          protocol=RawProtocol(n_coils=1, acceleration=1, noise_scan=False), with_truth=False,
                          group="scan7")
    assert info.truth == () and info.b1_images == 0 and info.group == "scan7"
    with h5py.File(info.path, "r") as f:
        assert sorted(f) == ["scan7"] and sorted(f["scan7"]) == ["data", "xml"]
    assert len(RawFile(info.path, "scan7").heads) == info.n_acquisitions == schedule.n_frames * (3 + NY)


# --------------------------------------------------------------------------- refusals
def test_write_raw_scan_refusals(tmp_path, schedule) -> None:
    phantom = brain_phantom(1, (NY, NX))
    small = RawProtocol(n_coils=1, noise_scan=False)
    with pytest.raises(ValueError, match="even matrix"):
        write_raw_scan(tmp_path / "odd.h5", brain_phantom(1, (31, 32)), schedule, protocol=small)
    with pytest.raises(ValueError, match="even matrix"):
        write_raw_scan(tmp_path / "odd.h5", brain_phantom(1, (32, 33)), schedule, protocol=small)
    assert not (tmp_path / "odd.h5").exists()
    first = write_raw_scan(tmp_path / "a.h5", phantom, schedule, protocol=small)
    with pytest.raises(FileExistsError, match="exists"):
        write_raw_scan(tmp_path / "a.h5", phantom, schedule, protocol=small)
    again = write_raw_scan(tmp_path / "a.h5", phantom, schedule, protocol=RawProtocol(n_coils=2, noise_scan=False),
                           overwrite=True)
    raw = RawFile(again.path)  # a fresh file, not appended to
    assert len(raw.heads) == again.n_acquisitions == first.n_acquisitions and raw.data.shape[1] == 2
    with pytest.raises(ValueError, match="calibration_lines"):
        write_raw_scan(tmp_path / "b.h5", phantom, schedule, protocol=RawProtocol(calibration_lines=NY + 2))
    with pytest.raises(TypeError, match="schedule"):
        write_raw_scan(tmp_path / "b.h5", phantom, schedule.to_dict(), protocol=small)
    with pytest.raises(TypeError, match="protocol"):
        write_raw_scan(tmp_path / "b.h5", phantom, schedule, protocol={"n_coils": 2})
    with pytest.raises(ValueError, match="group"):
        write_raw_scan(tmp_path / "b.h5", phantom, schedule, protocol=small, group="a/b")
    with pytest.raises(ValueError, match="noise_level"):
        write_raw_scan(tmp_path / "b.h5", phantom, schedule, protocol=small, noise_level=-0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_coils=0), "n_coils"), (dict(n_coils=2.0), "n_coils"), (dict(acceleration=0), "acceleration"),
    (dict(acceleration=True), "acceleration"), (dict(n_navigators=2), "n_navigators"),
    (dict(n_navigators=4), "odd number"), (dict(oversampling=0), "oversampling"), (dict(ramp_us=-1), "ramp_us"),
    (dict(ramp_us=100.5), "ramp_us"), (dict(noise_lines=0), "noise_lines"), (dict(calibration_lines=1), "calibration"),
    (dict(calibration_lines=True), "calibration"), (dict(dwell_time_us=0.0), "dwell_time_us"),
    (dict(ghost_shift=math.nan), "ghost_shift"), (dict(ghost_phase_rad=math.inf), "ghost_phase_rad"),
])
def test_raw_protocol_refuses_bad_fields(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RawProtocol(**kwargs)


def test_raw_protocol_calibration_defaults() -> None:
    assert RawProtocol(acceleration=1).n_calibration == 0
    assert RawProtocol(acceleration=2).n_calibration == 24 and RawProtocol(acceleration=3).n_calibration == 36
    assert RawProtocol(acceleration=2, calibration_lines=10).n_calibration == 10


# --------------------------------------------------------------------------- command line
def test_cli_raw_scan_equals_the_api(tmp_path, schedule, capsys) -> None:
    out = tmp_path / "cli.h5"
    argv = ["simulate-scan", str(out), "--raw", "--matrix", str(NY), str(NX), "--coils", "3", "--acceleration", "3",
            "--acs-lines", "9", "--ramp-sampling", "--ghost-shift", "0.3", "--ghost-phase", "0.05",
            "--no-noise-scan", "--noise", "0.01", "--seed", "4"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "raw EPI acquisitions" in err and "R = 3" in err and "9 ACS lines" in err and "0 noise lines" in err
    protocol = RawProtocol(n_coils=3, acceleration=3, calibration_lines=9, ramp_sampling=True, ghost_shift=0.3,
                           ghost_phase_rad=0.05, noise_scan=False)
    api = write_raw_scan(tmp_path / "api.h5", brain_phantom(1, (NY, NX)), schedule, protocol=protocol,
                         noise_level=0.01, seed=4)
    cli, ref = RawFile(out), RawFile(api.path)
    assert cli.xml == ref.xml
    np.testing.assert_array_equal(cli.heads, ref.heads)
    np.testing.assert_array_equal(cli.data, ref.data)
    assert cli.header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_1 == 3
    assert cli.has(CALIBRATION).sum() == 9 and not cli.has(NOISE).any()
    # an existing file needs --force
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


@pytest.mark.parametrize("extra", [["--complex"], ["--frame-counter", "contrast"]])
def test_cli_raw_refuses_image_frame_options(tmp_path, capsys, extra) -> None:
    out = tmp_path / "x.h5"
    assert main(["simulate-scan", str(out), "--raw", "--matrix", "16", "16", "--coils", "2"] + extra) == 2
    err = capsys.readouterr().err
    assert "--raw" in err and "--complex" in err and "error" in err
    assert not out.exists()
