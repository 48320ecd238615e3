"""drone_gadgets.scans.images: simulated ISMRMRD scans — header, schedule round trip, image counters and
geometry, the truth group — and the written files streamed through the gadget."""

from __future__ import annotations

import argparse
import json
from contextlib import closing
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from drone_core.phantoms import Phantom, brain_phantom, nist_phantom, simulate_frames
from drone_core.schedule import Schedule, default_schedule
from drone_gadgets.gadget import drone_mrf
from drone_gadgets.recon.prepare import prepare
from drone_gadgets.recon.header import check_header_schedule, schedule_from_header, sequence_parameters
from drone_gadgets.apps.simulate_scan import add_arguments, run
from drone_gadgets.scans.images import read_scan, write_phantom_scan, write_scan
from drone_gadgets.scans.layout import TRUTH_SERIES, header_xml, truth_path
from drone_gadgets.scans.truth import read_truth
from drone_gadgets.recon.stages import pipeline
from gadgetron_peer import GadgetronPeer, config_xml, image_message

#: Noise-free brain maps from the shipped network (slice profile, B1 = 1), on the median, per tissue:
#: within the accuracy goal of 2 % (T1; T2 asks 3 %, so 2 % is the stricter of the two).
BRAIN_RTOL = 0.02
#: NIST spheres (T2 ≥ 30 ms, the paper's rule): 5 % of the reference value, on the median — every one
#: of the 22 spheres, the short-T1/T2 ones of the T1 array included (the earlier model missed five).
NIST_RTOL = 0.05


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return default_schedule()


@pytest.fixture(scope="module")
def estimator(schedule):
    """The default model, through the gadget's own set-up (settings → model → strict schedule check)."""
    xml = header_xml(schedule, matrix=(128, 128), n_slices=1, fov_mm=(256.0, 256.0), slice_thickness_mm=5.0)
    _, model = prepare(config_xml({"device": "cpu"}), xml)
    return model


@pytest.fixture(scope="module")
def brain_file(tmp_path_factory, schedule) -> tuple[Path, Phantom]:
    phantom = brain_phantom(2)
    path = tmp_path_factory.mktemp("scan") / "brain.h5"
    write_phantom_scan(path, phantom, schedule)
    return path, phantom


def _maps(images: list[ismrmrd.Image]) -> dict[str, np.ndarray]:
    by_map: dict[str, dict[int, np.ndarray]] = {}
    for im in images:
        by_map.setdefault(im.meta["DRONE_Map"], {})[im.slice] = np.asarray(im.data)[0, 0]
    return {name: np.stack([d[s] for s in sorted(d)]) for name, d in by_map.items()}


def _relative_median_errors(maps: dict[str, np.ndarray], phantom: Phantom, label: int) -> dict[str, float]:
    truth = phantom.maps()
    w = phantom.labels == label
    return {name: float(np.median(maps[name][w]) / np.median(truth[key][w]) - 1)
            for name, key in (("T1", "t1"), ("T2", "t2"), ("M0", "m0"))}


# --------------------------------------------------------------------------- header
def test_header_is_valid_and_carries_the_schedule(brain_file, schedule) -> None:
    path, _ = brain_file
    xml, _ = read_scan(path)
    header = ismrmrd.xsd.CreateFromDocument(xml)  # valid against the ISMRMRD schema
    assert header.experimentalConditions.H1resonanceFrequency_Hz == 63866218  # γ/2π · 1.5 T
    enc = header.encoding[0]
    assert enc.trajectory.value == "cartesian"
    for space in (enc.encodedSpace, enc.reconSpace):
        assert (space.matrixSize.x, space.matrixSize.y, space.matrixSize.z) == (128, 128, 1)
        assert (space.fieldOfView_mm.x, space.fieldOfView_mm.y, space.fieldOfView_mm.z) == (256.0, 256.0, 5.0)
    limits = enc.encodingLimits
    assert (limits.repetition.minimum, limits.repetition.maximum) == (0, 24)
    assert (limits.slice.minimum, limits.slice.maximum) == (0, 1)
    assert header.acquisitionSystemInformation.systemFieldStrength_T == 1.5
    # The gadget's reading of sequenceParameters gives the same schedule.
    # The header carries no pulse: the reader is given the estimator's excitation (here the schedule's).
    read = schedule_from_header(sequence_parameters(xml), inversion_efficiency=schedule.inversion_efficiency,
                                excitation=schedule.excitation)
    assert read.digest() == schedule.digest()
    assert read.flip_angle_deg == schedule.flip_angle_deg and read.tr_ms == schedule.tr_ms  # exact
    assert check_header_schedule(xml, schedule, "strict") is not None
    params = {p.name: p.value for p in header.userParameters.userParameterString}
    assert Schedule.from_json(params["DRONE_schedule"]) == schedule
    assert params["DRONE_schedule_digest"] == schedule.digest()


def test_header_round_trip_of_another_schedule(tmp_path) -> None:
    rng = np.random.default_rng(7)
    schedule = Schedule("odd", tuple(rng.uniform(5, 90, 10)), tuple(rng.uniform(30, 200, 10)), 11.25, 7.125, 0.93)
    frames = np.ones((10, 16, 12), dtype=np.float32)
    write_scan(tmp_path / "odd.h5", frames, schedule)
    xml, images = read_scan(tmp_path / "odd.h5")
    read = schedule_from_header(sequence_parameters(xml), inversion_efficiency=0.93)
    assert read.flip_angle_deg == schedule.flip_angle_deg and read.tr_ms == schedule.tr_ms
    assert (read.te_ms, read.ti_ms) == (11.25, 7.125) and read.digest() == schedule.digest()
    assert len(images) == 10 and images[0].data.shape == (1, 1, 16, 12)  # (y, x) = (16, 12)
    ismrmrd.xsd.CreateFromDocument(xml)


# --------------------------------------------------------------------------- images
def test_frame_images_counters_geometry_and_data(brain_file, schedule) -> None:
    path, phantom = brain_file
    _, images = read_scan(path)
    n = schedule.n_frames
    assert len(images) == 2 * n
    frames = simulate_frames(phantom, schedule)
    for k, im in enumerate(images):
        h = im.getHead()
        s, i = divmod(k, n)  # slice-major
        assert (h.slice, h.repetition, h.contrast, h.phase, h.set, h.average) == (s, i, 0, 0, 0, 0)
        assert h.image_series_index == 1 and h.image_index == k + 1
        assert h.data_type == 5 and h.image_type == 1 and h.channels == 1
        assert tuple(h.matrix_size) == (128, 128, 1)
        assert tuple(h.field_of_view) == (256.0, 256.0, 5.0)
        assert tuple(h.position) == (0.0, 0.0, phantom.slice_positions_mm[s])
        assert tuple(h.read_dir) == (1.0, 0.0, 0.0) and tuple(h.phase_dir) == (0.0, 1.0, 0.0)
        assert tuple(h.slice_dir) == (0.0, 0.0, 1.0)
        assert im.meta["DRONE_Frame"] == str(i)
        data = np.asarray(im.data)
        assert data.dtype == np.float32 and data.shape == (1, 1, 128, 128)
        np.testing.assert_array_equal(data[0, 0], frames[i, s])


def test_complex_frames_and_another_counter(tmp_path, schedule) -> None:
    phantom = nist_phantom("T1", (40, 48))
    info = write_phantom_scan(tmp_path / "c.h5", phantom, schedule, magnitude=False, frame_counter="contrast",
                              noise_level=0.01, seed=2)
    assert info.n_images == schedule.n_frames and info.matrix == (40, 48)
    xml, images = read_scan(tmp_path / "c.h5")
    limits = ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodingLimits
    assert limits.contrast.maximum == schedule.n_frames - 1 and limits.repetition is None
    expected = simulate_frames(phantom, schedule, 0.01, seed=2, magnitude=False)
    for i, im in enumerate(images):
        h = im.getHead()
        assert (h.contrast, h.repetition, h.image_type, h.data_type) == (i, 0, 5, 7)  # COMPLEX, CXFLOAT
        np.testing.assert_array_equal(np.asarray(im.data)[0, 0], expected[i, 0])


def test_truth_group(brain_file, schedule) -> None:
    path, phantom = brain_file
    truth = read_truth(path)
    maps = phantom.maps()
    assert sorted(truth) == ["labels", "m0", "t1", "t2"]
    for key in ("t1", "t2", "m0"):
        np.testing.assert_array_equal(truth[key], maps[key])
    np.testing.assert_array_equal(truth["labels"], phantom.labels)
    # the scan file holds the scan alone (one group: clients need not be told it); the truth has a file of its own
    with h5py.File(path, "r") as f:
        assert list(f) == ["dataset"]
    with closing(ismrmrd.Dataset(str(truth_path(path)), "dataset", create_if_needed=False)) as ds:
        assert sorted(ds.list()) == ["labels", "m0", "t1", "t2", "xml"]
        for key, (series, label, units) in TRUTH_SERIES.items():
            if key == "b1":
                continue  # only for a scan with a B1 map (test_truth_b1)
            for s in range(2):
                im = ds.read_image(key, s)
                h = im.getHead()
                assert (h.image_series_index, h.image_index, h.slice) == (series, s + 1, s)
                assert tuple(h.position) == (0.0, 0.0, phantom.slice_positions_mm[s])
                assert im.meta["DRONE_Map"] == label and im.meta["Units"] == units
        table = json.loads(ds.read_image("labels", 0).meta["DRONE_Tissues"])
        assert {int(k): tuple(v) for k, v in table.items()} == {k: tuple(t) for k, t in phantom.tissues.items()}


def test_write_scan_refusals(tmp_path, schedule) -> None:
    frames = np.ones((schedule.n_frames, 1, 8, 8), dtype=np.float32)
    write_scan(tmp_path / "a.h5", frames, schedule)
    with pytest.raises(FileExistsError, match="exists"):
        write_scan(tmp_path / "a.h5", frames, schedule)
    write_scan(tmp_path / "a.h5", 2 * frames, schedule, overwrite=True)  # a fresh file, not appended to
    assert len(read_scan(tmp_path / "a.h5")[1]) == schedule.n_frames
    with pytest.raises(ValueError, match="expected 25 frames"):
        write_scan(tmp_path / "b.h5", frames[:10], schedule)
    with pytest.raises(ValueError, match="unknown map"):
        write_scan(tmp_path / "b.h5", frames, schedule, truth={"pd": frames[0]})
    with pytest.raises(ValueError, match=r"truth\['t1'\]"):
        write_scan(tmp_path / "b.h5", frames, schedule, truth={"t1": np.ones((1, 8, 9))})
    with pytest.raises(ValueError, match="frame_counter"):
        write_scan(tmp_path / "b.h5", frames, schedule, frame_counter="slice")
    with pytest.raises(ValueError, match="non-finite"):
        write_scan(tmp_path / "b.h5", frames * np.nan, schedule)
    with pytest.raises(LookupError, match="no group"):
        read_scan(tmp_path / "a.h5", group="other")


# --------------------------------------------------------------------------- through the gadget
def test_brain_file_streams_through_the_gadget_stages(brain_file, estimator) -> None:
    path, phantom = brain_file
    xml, images = read_scan(path)
    out = list(pipeline(images, estimator))
    assert len(out) == 6 and all(isinstance(im, ismrmrd.Image) for im in out)
    maps = _maps(out)
    for label, tissue in phantom.tissues.items():
        errors = _relative_median_errors(maps, phantom, label)
        assert all(abs(e) <= BRAIN_RTOL for e in errors.values()), (tissue.name, errors)
    assert np.all(maps["T1"][phantom.labels == 0] == 0)  # air is background
    # The maps keep the slices' geometry.
    for im in out:
        assert tuple(im.getHead().position) == (0.0, 0.0, phantom.slice_positions_mm[im.slice])


def _nist_cases() -> list:
    cases = []
    for array in ("T1", "T2"):
        p = nist_phantom(array)
        for k in range(1, 15):
            if p.tissues[k].t2_ms < 30.0:
                continue  # the paper's exclusion
            cases.append(pytest.param(array, k, id=f"{array}-sphere{k}"))
    return cases


@pytest.fixture(scope="module")
def nist_maps(tmp_path_factory, schedule, estimator) -> dict[str, tuple[Phantom, dict[str, np.ndarray]]]:
    out = {}
    for array in ("T1", "T2"):
        phantom = nist_phantom(array)
        path = tmp_path_factory.mktemp("nist") / f"nist_{array}.h5"
        write_phantom_scan(path, phantom, schedule)
        _, images = read_scan(path)
        out[array] = (phantom, _maps(list(pipeline(images, estimator))))
    return out


@pytest.mark.parametrize(("array", "sphere"), _nist_cases())
def test_nist_spheres_through_the_gadget_stages(nist_maps, array: str, sphere: int) -> None:
    phantom, maps = nist_maps[array]
    errors = _relative_median_errors(maps, phantom, sphere)
    assert abs(errors["T1"]) <= NIST_RTOL and abs(errors["T2"]) <= NIST_RTOL, errors


def test_file_streams_through_the_handler_over_the_protocol(tmp_path, schedule, estimator) -> None:
    """The file's header and images, sent as Gadgetron would, through drone_mrf (in-process peer):
    the strict schedule check passes and the maps equal the stages' maps."""
    phantom = nist_phantom("T2", (48, 40))
    write_phantom_scan(tmp_path / "n.h5", phantom, schedule, noise_level=0.005, seed=1)
    xml, images = read_scan(tmp_path / "n.h5")
    peer = GadgetronPeer.in_process(drone_mrf)
    reply = peer.run(config_xml({"device": "cpu", "schedule_check": "strict"}), xml.encode(),
                     [image_message(im) for im in images])
    assert reply.failure is None and reply.exception is None and reply.errors == [], reply.errors
    assert reply.closed and len(reply.images) == 3
    streamed = _maps(reply.images)
    direct = _maps(list(pipeline(images, estimator)))
    for name in ("T1", "T2", "M0"):
        np.testing.assert_allclose(streamed[name], direct[name], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- command line
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="drone simulate-scan")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_run_writes_a_noisy_nist_scan(tmp_path, schedule, capsys) -> None:
    out = tmp_path / "cli.h5"
    argv = [str(out), "--phantom", "nist-t2", "--noise", "0.01", "--seed", "3", "--matrix", "64", "80"]
    assert run(_parse(argv)) == 0
    assert "wrote" in capsys.readouterr().err
    xml, images = read_scan(out)
    assert len(images) == schedule.n_frames and images[0].data.shape == (1, 1, 64, 80)
    expected = simulate_frames(nist_phantom("T2", (64, 80)), schedule, 0.01, seed=3)
    np.testing.assert_array_equal(np.asarray(images[4].data)[0, 0], expected[4, 0])
    assert "noise 0.01" in xml
    assert sorted(read_truth(out)) == ["labels", "m0", "t1", "t2"]
    with pytest.raises(FileExistsError):
        run(_parse([str(out), "--phantom", "nist-t2"]))
    assert run(_parse([str(out), "--phantom", "brain", "--slices", "3", "--no-truth", "--force", "--complex"])) == 0
    _, images = read_scan(out)
    assert len(images) == 3 * schedule.n_frames and np.asarray(images[0].data).dtype == np.complex64
    with pytest.raises(LookupError):
        read_truth(out)
    with pytest.raises(ValueError, match="--slices"):
        run(_parse([str(tmp_path / "x.h5"), "--phantom", "nist-t1", "--slices", "2"]))


def test_cli_schedule_option(tmp_path) -> None:
    schedule = default_schedule().replace(name="short", flip_angle_deg=[20.0] * 8, tr_ms=[60.0] * 8)
    schedule.save(tmp_path / "s.json")
    out = tmp_path / "s.h5"
    assert run(_parse([str(out), "--schedule", str(tmp_path / "s.json"), "--matrix", "32", "32"])) == 0
    xml, images = read_scan(out)
    assert len(images) == 8
    assert schedule_from_header(sequence_parameters(xml), excitation=schedule.excitation).digest() == schedule.digest()


# --------------------------------------------------------------------------- B1: the map, the truth, the physics
#: The B1 map is stored as float32 percent: relative B1 read back as pixel / 100 differs by float32 rounding.
B1_PERCENT_RTOL = 1e-6


@pytest.fixture(scope="module")
def b1_file(tmp_path_factory, schedule) -> tuple[Path, Phantom, np.ndarray]:
    """A 2-slice, non-square brain under the 3 T-like field (noise-free), as ``--b1 3t`` writes it."""
    from drone_core.b1_field import head_b1_field

    phantom = brain_phantom(2, (48, 56))
    field = head_b1_field(phantom)
    path = tmp_path_factory.mktemp("b1scan") / "brain_b1.h5"
    info = write_phantom_scan(path, phantom, schedule, b1=field, b1_description="3 T-like field")
    assert info.b1_images == 2 and info.truth == ("t1", "t2", "m0", "labels", "b1")
    return path, phantom, field


def test_b1_map_series_values_geometry_and_meta(b1_file) -> None:
    from drone_gadgets.scans.b1 import read_b1_map
    from drone_gadgets.scans.layout import B1_SERIES_INDEX, B1_VAR

    path, phantom, field = b1_file
    _, frames = read_scan(path)
    _, b1_images = read_scan(path, var=B1_VAR)
    assert B1_VAR == "image_5" and B1_SERIES_INDEX == 5 and len(b1_images) == 2
    for s, im in enumerate(b1_images):
        h, f = im.getHead(), frames[s * 25].getHead()  # slice s's first frame
        assert (h.image_series_index, h.image_index, h.slice) == (5, s + 1, s)
        assert (h.data_type, h.image_type, h.channels) == (5, 1, 1)  # FLOAT, MAGNITUDE
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view", "matrix_size"):
            assert tuple(getattr(h, name)) == tuple(getattr(f, name)), name
        assert im.meta["DRONE_Map"] == "B1" and im.meta["Units"] == "percent"
        data = np.asarray(im.data)
        assert data.dtype == np.float32 and data.shape == (1, 1, 48, 56)
        np.testing.assert_array_equal(data[0, 0], (field[s] * 100.0).astype(np.float32))
    np.testing.assert_allclose(read_b1_map(path), field, rtol=B1_PERCENT_RTOL)
    xml, _ = read_scan(path)
    assert "B1 3 T-like field" in xml and "series 5, percent" in xml
    with pytest.raises(LookupError, match="no B1 map"):
        read_b1_map(_no_b1_scan(path.parent))


def _no_b1_scan(folder: Path) -> Path:
    """A scan written without a B1 map."""
    path = folder / "plain.h5"
    if not path.exists():
        write_scan(path, np.ones((25, 1, 8, 8), dtype=np.float32), default_schedule())
    return path


def test_truth_b1(b1_file) -> None:
    path, phantom, field = b1_file
    truth = read_truth(path)
    assert sorted(truth) == ["b1", "labels", "m0", "t1", "t2"]
    np.testing.assert_array_equal(truth["b1"], field.astype(np.float32))  # relative, not percent
    assert TRUTH_SERIES["b1"] == (104, "B1", "relative")
    with closing(ismrmrd.Dataset(str(truth_path(path)), "dataset", create_if_needed=False)) as ds:
        for s in range(2):
            im = ds.read_image("b1", s)
            h = im.getHead()
            assert (h.image_series_index, h.image_index, h.slice) == (104, s + 1, s)
            assert tuple(h.position) == (0.0, 0.0, phantom.slice_positions_mm[s])
            assert im.meta["DRONE_Map"] == "B1" and im.meta["Units"] == "relative"


def test_write_scan_refuses_a_bad_b1_map(tmp_path, schedule) -> None:
    frames = np.ones((schedule.n_frames, 2, 8, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=r"b1_map: expected relative B1 of shape \(2, 8, 6\)"):
        write_scan(tmp_path / "a.h5", frames, schedule, b1_map=np.ones((8, 6)))
    with pytest.raises(ValueError, match="b1_map: expected finite relative B1 > 0"):
        write_scan(tmp_path / "a.h5", frames, schedule, b1_map=np.zeros((2, 8, 6)))
    assert not (tmp_path / "a.h5").exists()
    info = write_scan(tmp_path / "a.h5", frames, schedule, b1_map=0.9)  # a number: uniform
    _, images = read_scan(tmp_path / "a.h5", var="image_5")
    assert info.b1_images == 2 and all(np.all(np.asarray(im.data) == np.float32(90.0)) for im in images)


def test_cli_b1_3t_frames_equal_the_phantom_simulation_with_that_field(tmp_path, schedule, capsys) -> None:
    """``--b1 3t``: the frames are the phantom's simulation (slice profile included) under head_b1_field
    (in steps of 0.1 %, as a B1 map stores it)."""
    from drone_core.b1_field import B1_MAP_STEP, head_b1_field
    from drone_gadgets.scans.b1 import read_b1_map

    out = tmp_path / "b1.h5"
    assert run(_parse([str(out), "--b1", "3t", "--matrix", "40", "36", "--noise", "0.01", "--seed", "5"])) == 0
    assert "3 T-like field (centre 1.2, edge 0.8, steps of 0.001)" in capsys.readouterr().err
    phantom = brain_phantom(1, (40, 36))
    field = head_b1_field(phantom, step=B1_MAP_STEP)
    assert np.abs(field - head_b1_field(phantom)).max() <= B1_MAP_STEP / 2 + 1e-12
    assert schedule.excitation is not None  # the default schedule's slice profile is in the simulation
    expected = simulate_frames(phantom, schedule, 0.01, seed=5, b1=field)
    _, images = read_scan(out)
    for i in (0, 7, 24):
        np.testing.assert_array_equal(np.asarray(images[i].data)[0, 0], expected[i, 0])
    # the field matters: B1 = 1 gives other frames
    assert not np.allclose(simulate_frames(phantom, schedule, 0.01, seed=5)[7, 0], expected[7, 0], rtol=1e-3)
    np.testing.assert_allclose(read_b1_map(out), field, rtol=B1_PERCENT_RTOL)
    # --b1-centre/--b1-edge
    assert run(_parse([str(out), "--b1", "3t", "--b1-centre", "1.1", "--b1-edge", "0.9", "--matrix", "40", "36",
                       "--force"])) == 0
    np.testing.assert_allclose(read_truth(out)["b1"], head_b1_field(phantom, centre=1.1, edge=0.9, step=B1_MAP_STEP),
                               rtol=B1_PERCENT_RTOL)


def test_cli_b1_none_number_and_files(tmp_path, schedule) -> None:
    out = tmp_path / "x.h5"
    # default none: no B1 map, no truth B1 (files as before)
    assert run(_parse([str(out), "--matrix", "24", "20"])) == 0
    with closing(ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)) as ds:
        assert "image_5" not in ds.list()
    assert "b1" not in read_truth(out)
    # a number: uniform B1
    assert run(_parse([str(out), "--matrix", "24", "20", "--b1", "0.85", "--force"])) == 0
    np.testing.assert_allclose(read_truth(out)["b1"], 0.85, rtol=B1_PERCENT_RTOL)
    # a .npy of relative B1 with the phantom's shape ((y, x) for one slice works too)
    rng = np.random.default_rng(3)
    field = rng.uniform(0.7, 1.3, (1, 24, 20))
    np.save(tmp_path / "b1.npy", field)
    np.save(tmp_path / "b1_2d.npy", field[0])
    for name in ("b1.npy", "b1_2d.npy"):
        assert run(_parse([str(out), "--matrix", "24", "20", "--b1", str(tmp_path / name), "--force"])) == 0
        np.testing.assert_allclose(read_truth(out)["b1"], field, rtol=B1_PERCENT_RTOL)
    expected = simulate_frames(brain_phantom(1, (24, 20)), schedule, b1=field)
    np.testing.assert_array_equal(np.asarray(read_scan(out)[1][3].data)[0, 0], expected[3, 0])
    # NIfTI (x, y, z), as drone replay --nifti writes maps
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(np.transpose(field, (2, 1, 0)).astype(np.float32), np.eye(4)),
                 str(tmp_path / "b1.nii.gz"))
    assert run(_parse([str(out), "--matrix", "24", "20", "--b1", str(tmp_path / "b1.nii.gz"), "--force"])) == 0
    np.testing.assert_allclose(read_truth(out)["b1"], field, rtol=B1_PERCENT_RTOL)
    # refusals, each naming the option
    np.save(tmp_path / "percent.npy", 100 * field)
    np.save(tmp_path / "wrong.npy", field[:, :20, :24])
    for argv, match in ((["--b1", str(tmp_path / "percent.npy")], "divide a map in percent by 100"),
                        (["--b1", str(tmp_path / "wrong.npy")], r"expected the phantom's shape \(1, 24, 20\)"),
                        (["--b1", str(tmp_path / "absent.npy")], "--b1: no B1 map file"),
                        (["--b1", "-0.5"], "--b1: expected none, 3t"),
                        (["--b1", "none", "--b1-edge", "0.7"], "--b1-centre/--b1-edge: only for --b1 3t"),
                        (["--b1", "3t", "--b1-centre", "0"], "--b1-centre: expected a relative B1")):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            run(_parse([str(tmp_path / "r.h5"), "--matrix", "24", "20", *argv]))
    assert not (tmp_path / "r.h5").exists()


#: Replay of the 3 T-like scan with the shipped (B1-input) model. Noise-free, one 64 × 64 slice.
#: With the B1 map the maps must be better than without it: per-tissue RMSE of T1 and T2 must drop by at least
#: this factor (measured with the 64-64 model: ratios 0.10–0.25 in WM and GM, 0.006–0.016 in CSF). The |median
#: bias| of T2 in GM and CSF must drop too, unless it is below MEDIAN_BIAS_FLOOR either way: the field is above 1
#: in the middle and below at the edges, and the errors of either side can cancel in a median (with the 96-96
#: model GM's median T2 is within 0.06 % without the map, while its RMSE drops with the map: the check above).
B1_IMPROVEMENT = 0.8
#: A median T2 bias within what the network itself is allowed at the true B1 (its noise-free T2 error at GM's
#: B1 ≈ 1 is +1.0 %, worst 1.4 % over B1 0.7–1.3; docs/MODEL.md) needs no B1 map to be cut further: 1.5 %
#: (the 64-64 model, 0.5 %; with the 96-96 model GM's median with the map measured 0.77 %).
MEDIAN_BIAS_FLOOR = 0.015


def test_replay_with_the_b1_map_recovers_t1_t2_better_than_without(tmp_path, schedule) -> None:
    from drone_gadgets.files import h5io
    from drone_gadgets.apps.inputs import open_input
    from drone_gadgets.apps.replay import replay
    from drone_gadgets.recon.settings import settings_from_properties

    scan = tmp_path / "scan.h5"
    assert run(_parse([str(scan), "--b1", "3t", "--matrix", "64", "64"])) == 0
    # open_input: b1=stream sends the B1 map var first; otherwise it is not sent
    src = open_input(scan, tmp_path / "o.h5", settings=settings_from_properties({"b1": "stream"}))
    assert src.variables == ["image_5", "image_1"] and src.b1_variables == ["image_5"] and src.n_b1 == 1
    src = open_input(scan, tmp_path / "o.h5", settings=settings_from_properties({"b1": "none"}))
    assert src.variables == ["image_1"] and src.skipped == ["image_5"]
    truth = read_truth(scan)
    errors = {}
    for mode in ("stream", "none"):
        result = replay(scan, tmp_path / f"maps_{mode}.h5", settings={"b1": mode, "device": "cpu"}, progress=False)
        assert result.b1_images == (1 if mode == "stream" else 0) and result.slices == 1
        maps = _maps(h5io.read_images(tmp_path / f"maps_{mode}.h5", "dataset"))
        errors[mode] = {}
        for label, tissue in ((3, "WM"), (2, "GM"), (1, "CSF")):
            w = truth["labels"] == label
            for name, key in (("T1", "t1"), ("T2", "t2")):
                est, ref = maps[name][w], truth[key][w]
                errors[mode][tissue, name] = (float(np.sqrt(np.mean((est - ref) ** 2))),
                                              abs(float(np.median(est / ref)) - 1.0))
    with_map, without = errors["stream"], errors["none"]
    for tissue in ("WM", "GM"):
        for name in ("T1", "T2"):
            assert with_map[tissue, name][0] < B1_IMPROVEMENT * without[tissue, name][0], (tissue, name, errors)
    for tissue in ("GM", "CSF"):
        assert with_map[tissue, "T2"][1] < max(B1_IMPROVEMENT * without[tissue, "T2"][1], MEDIAN_BIAS_FLOOR), (
            tissue, errors)
        assert with_map[tissue, "T2"][0] < B1_IMPROVEMENT * without[tissue, "T2"][0], (tissue, errors)
