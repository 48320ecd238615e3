"""B1 maps through the stream: settings, the B1 stages on plain lists, resampling by geometry, the real
gadget (process and in-process handler), ``drone replay`` / ``drone serve`` / ``drone send`` with a B1 series.

The estimators are tiny networks trained here (module fixture, a few seconds): one with a B1 input
(range 0.5–1.5), one trained at B1 = 1, one that estimates B1. Their accuracy does not matter: the
gadget's maps are compared with :func:`drone_core.reconstruct.reconstruct` run here on the same
frames with the same B1 map (same weights). The schedule is the default one without its slice
profile (ideal excitation; the B1 plumbing is the same, and the training atoms simulate in 0.1 s
instead of seconds).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import ismrmrd
import numpy as np
import pytest

from drone_core.dictionary import Dictionary
from drone_core.epg import simulate
from drone_core.model import DroneModel
from drone_core.reconstruct import reconstruct
from drone_core.schedule import default_schedule
from drone_gadgets.recon.b1maps import B1Map, b1_map_from_image, b1_on_frames, image_grid, load_b1_file
from drone_gadgets.recon.errors import (B1Error, B1GeometryError, B1MissingError, DuplicateB1Error, GadgetFailed,
                                        PendingLimitError, SettingsError)
from drone_gadgets.gadget import drone_mrf
from drone_gadgets.recon.settings import GadgetSettings, parse_settings, settings_from_properties
from drone_gadgets.recon.stages import Trajectory, pipeline, with_b1
from gadgetron_peer import CLOSE, ERROR, IMAGE, GadgetronPeer, Reply, config_xml, frame_header, header_xml, \
    image_message, image_of, phantom

SCHEDULE = dataclasses.replace(default_schedule(), excitation=None)
#: Pixel scale of the frames (M0 of the tissues × this).
SCALE = 1000.0
#: The gadget's maps against reconstruct() run here: same weights, same inputs, same float32 CPU
#: kernels; 1e-5 allows a different summation order (another thread count in the spawned process).
SAME_RTOL = 1e-5
#: Linear interpolation reproduces a linear field exactly up to float32 storage of the B1 map (≈ 1e-7).
LINEAR_ATOL = 1e-5


# =========================================================================== estimators
def _train(b1_input: bool = False, b1_output: bool = False) -> DroneModel:
    from drone_training.train import TrainConfig, train

    rng = np.random.default_rng(11)
    n = 3000
    t1 = rng.uniform(200.0, 3000.0, n)
    t2 = rng.uniform(20.0, 400.0, n)
    keep = t1 > t2
    b1 = rng.uniform(0.5, 1.5, n)[keep] if (b1_input or b1_output) else None
    dictionary = Dictionary.generate(SCHEDULE, t1[keep], t2[keep], b1)
    config = TrainConfig(epochs=8, hidden=(32, 32), device="cpu", val_size=256, b1_input=b1_input,
                         b1_output=b1_output, b1_range=(0.5, 1.5) if (b1_input or b1_output) else None)
    return train(dictionary, config, progress=False, log=False).model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``{"b1": path, "plain": path, "estimate": path}`` of tiny models saved here."""
    folder = tmp_path_factory.mktemp("b1_models")
    out = {}
    for name, kw in (("b1", {"b1_input": True}), ("plain", {}), ("estimate", {"b1_output": True})):
        out[name] = folder / f"{name}.safetensors"
        _train(**kw).save(out[name])
    return out


@pytest.fixture(scope="module")
def model(models) -> DroneModel:
    return DroneModel.load(models["b1"], device="cpu")


@pytest.fixture(scope="module")
def header() -> bytes:
    return header_xml(flip_angle_deg=SCHEDULE.flip_angle_deg, tr_ms=SCHEDULE.tr_ms, te_ms=[SCHEDULE.te_ms],
                      ti_ms=[SCHEDULE.ti_ms], n_slices=3)


def _props(models, **extra: str) -> dict[str, str]:
    return {"device": "cpu", "model": str(models["b1"]), "b1": "stream", **extra}


# =========================================================================== scans
def _field(shape: tuple[int, int], slice_: int) -> np.ndarray:
    """A smooth relative-B1 field ``(y, x)`` in 0.7…1.3, different per slice."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return (1.0 + 0.25 * x - 0.05 * y + 0.03 * (slice_ - 1)).astype(np.float64)


def _slice(slice_: int, shape: tuple[int, int] = (12, 10)) -> dict[str, np.ndarray]:
    """Truth, the B1 field and the ``(N, y, x)`` float32 magnitude frames of the signal model with that B1."""
    t1, t2, m0, labels = phantom(slice_ % 3, shape)
    b1 = _field(shape, slice_)
    fg = labels >= 0
    frames = np.zeros((SCHEDULE.n_frames,) + shape, dtype=np.float32)
    signals = np.asarray(simulate(SCHEDULE, t1[fg], t2[fg], b1[fg]))
    frames[:, fg] = (np.abs(signals) * (m0[fg] * SCALE)[:, None]).T
    return {"t1": t1, "t2": t2, "m0": m0 * SCALE, "labels": labels, "b1": b1, "frames": frames}


@pytest.fixture(scope="module")
def scan() -> list[dict[str, np.ndarray]]:
    return [_slice(s) for s in range(3)]


def _percent(b1: np.ndarray) -> np.ndarray:
    """A B1 map as scanners store it: percent of nominal, float32."""
    return np.asarray(b1 * 100.0, dtype=np.float32)


def _relative(percent: np.ndarray, scale: float = 0.01) -> np.ndarray:
    """What the gadget makes of a percent map (pixel × b1_scale, as float32)."""
    return (percent.astype(np.float64) * scale).astype(np.float32)


def _b1_header(slice_: int, shape: tuple[int, int] = (12, 10), *, fov: tuple[float, float] | None = None,
               series: int = 5) -> ismrmrd.ImageHeader:
    """The header of a B1 map image: the frames' geometry (frame_header), series 5, optionally another FOV."""
    h = frame_header(slice_, 0, shape=shape)
    if fov is not None:
        h.field_of_view[0], h.field_of_view[1] = fov
    h.image_series_index = series
    return h


def _b1_image(percent: np.ndarray, header: ismrmrd.ImageHeader) -> ismrmrd.Image:
    image = image_of(percent, header)
    meta = ismrmrd.Meta()
    meta["DRONE_Map"] = "B1"
    meta["Units"] = "percent"
    image.meta = meta
    return image


def _frame_images(scan, slice_: int) -> list[ismrmrd.Image]:
    return [image_of(scan[slice_]["frames"][r], frame_header(slice_, r)) for r in range(SCHEDULE.n_frames)]


def _expected(scan, model, slice_: int, b1: np.ndarray | None, *, estimator: Any = None) -> dict[str, np.ndarray]:
    """``{"T1": (y, x), …}`` of reconstruct() run here (as the gadget emits them)."""
    est = estimator if estimator is not None else model
    maps = reconstruct(scan[slice_]["frames"][:, None], est, mask_threshold=0.05,
                       b1=None if b1 is None else b1[None])
    out = {"T1": maps.t1[0], "T2": maps.t2[0], "M0": maps.m0[0]}
    if maps.b1 is not None:
        out["B1"] = maps.b1[0] * np.float32(100.0)
    return out


def _by_slice(images: Iterable[ismrmrd.Image]) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for im in images:
        if isinstance(im, ismrmrd.Image):
            out.setdefault(int(im.slice), {})[im.meta["DRONE_Map"]] = np.asarray(im.data)[0, 0]
    return out


def _assert_maps(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=SAME_RTOL, atol=1e-3, err_msg=name)


def _collect(stream: Iterable[Any]) -> tuple[list[Any], BaseException | None]:
    out: list[Any] = []
    try:
        for item in stream:
            out.append(item)
    except Exception as exc:  # noqa: BLE001 - returned to the test
        return out, exc
    return out, None


class _Counted:
    """An input iterator that records how many items were consumed when each output appeared."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.taken += 1
            yield item


# =========================================================================== settings
def test_b1_settings_parse_and_validate() -> None:
    s = GadgetSettings()
    assert (s.b1, s.b1_series_index, s.b1_scale, s.b1_map_series_index) == ("none", 5, 0.01, 104)
    assert s.output_maps == ("t1", "t2", "m0") and "b1" not in s.series_index
    s = parse_settings(config_xml({"b1": " Stream ", "b1_series_index": "7", "b1_scale": "1"}))
    assert (s.b1_mode, s.b1_series_index, s.b1_scale, s.b1_file) == ("stream", 7, 1.0, None)
    s = settings_from_properties({"b1": "file: /data/B1 Map.nii.gz"})
    assert s.b1 == "file:/data/B1 Map.nii.gz" and s.b1_mode == "file" and s.b1_file == "/data/B1 Map.nii.gz"
    s = settings_from_properties({"b1": "estimate"})
    assert s.output_maps == ("t1", "t2", "m0", "b1") and s.series_index["b1"] == 104
    for props, fragment in [({"b1": "yes"}, "property 'b1': expected one of none, stream, estimate or file:<path>"),
                            ({"b1": "file:"}, "property 'b1': 'file:' needs the path"),
                            ({"b1_scale": "0"}, "property 'b1_scale': expected a positive number; got '0'"),
                            ({"b1_scale": "nan"}, "property 'b1_scale'"),
                            ({"b1_series_index": "-1"}, "property 'b1_series_index'"),
                            ({"b1": "estimate", "b1_map_series_index": "101"},
                             "property 'b1_map_series_index': 101 is also 't2_series_index'")]:
        with pytest.raises(SettingsError, match=re.escape(fragment)):
            settings_from_properties(props)
    # b1_map_series_index only matters with b1=estimate
    assert settings_from_properties({"b1_map_series_index": "101"}).output_maps == ("t1", "t2", "m0")


def test_b1_mode_needs_a_fitting_estimator(models, model) -> None:
    plain = DroneModel.load(models["plain"], device="cpu")
    for mode in ("stream", "file:/tmp/b1.nii"):
        with pytest.raises(SettingsError, match=r"property 'b1': '(stream|file:/tmp/b1\.nii)' gives each voxel's B1 "
                                                r"to the estimator, but the DRONE network .* was trained at B1 = 1"):
            list(pipeline([], plain, settings_from_properties({"b1": mode})))
    with pytest.raises(SettingsError, match=r"property 'b1': 'estimate' needs an estimator that estimates B1, but "
                                            r"the DRONE network .* takes a B1 map \(B1 0\.5–1\.5\)"):
        list(pipeline([], model, settings_from_properties({"b1": "estimate"})))


# =========================================================================== stages on plain lists
def test_stages_b1_before_after_and_interleaved(scan, model) -> None:
    settings = settings_from_properties({"b1": "stream"})
    b1 = {s: _b1_image(_percent(scan[s]["b1"]), _b1_header(s)) for s in range(3)}
    expected = {s: _expected(scan, model, s, _relative(_percent(scan[s]["b1"]))) for s in range(3)}

    # before the frames
    out = list(pipeline([b1[0]] + _frame_images(scan, 0), model, settings))
    _assert_maps(_by_slice(out)[0], expected[0])
    # after the frames: nothing comes out before the B1 map has been read
    items = _Counted(_frame_images(scan, 0) + [b1[0]])
    first_out = None
    got = []
    for item in pipeline(items, model, settings):
        first_out = items.taken if first_out is None else first_out
        got.append(item)
    assert first_out == SCHEDULE.n_frames + 1
    _assert_maps(_by_slice(got)[0], expected[0])
    # three slices interleaved, frames in a random order, B1 maps before, among and after the frames
    rng = np.random.default_rng(3)
    frames = [im for s in range(3) for im in _frame_images(scan, s)]
    frames = [frames[i] for i in rng.permutation(len(frames))]
    messages = [b1[1]] + frames[:30] + [b1[2]] + frames[30:] + [b1[0]]
    by_slice = _by_slice(pipeline(messages, model, settings))
    assert sorted(by_slice) == [0, 1, 2]
    for s in range(3):
        _assert_maps(by_slice[s], expected[s])
    # the B1 map changes the maps (it is used, not ignored)
    at_one = _expected(scan, model, 0, np.ones_like(scan[0]["b1"], dtype=np.float32))
    assert not np.allclose(at_one["T1"], expected[0]["T1"])


def test_stages_b1_failures_keep_what_was_sent(scan, model) -> None:
    settings = settings_from_properties({"b1": "stream"})
    b1 = {s: _b1_image(_percent(scan[s]["b1"]), _b1_header(s)) for s in range(3)}
    # missing: slice 1 complete but its B1 map never comes; slice 0 was sent whole before the error
    out, exc = _collect(pipeline([b1[0]] + _frame_images(scan, 0) + _frame_images(scan, 1), model, settings))
    assert isinstance(exc, B1MissingError)
    assert "the stream ended before the B1 map (image series 5, property 'b1_series_index') of slice(s) 1 " \
           "arrived" in str(exc) and "B1 maps arrived for slice(s) 0" in str(exc)
    assert sorted(_by_slice(out)) == [0] and len(out) == 3
    # duplicate, before the maps and after them
    out, exc = _collect(pipeline([b1[0], b1[0]] + _frame_images(scan, 0), model, settings))
    assert isinstance(exc, DuplicateB1Error) and "a second B1 map image (series 5) arrived for slice 0" in str(exc)
    assert out == []
    out, exc = _collect(pipeline([b1[0]] + _frame_images(scan, 0) + [b1[0]], model, settings))
    assert isinstance(exc, DuplicateB1Error) and "after its maps were sent" in str(exc) and len(out) == 3
    # a mis-scaled map (percent read as relative) is refused, naming b1_scale
    out, exc = _collect(pipeline([b1[0]] + _frame_images(scan, 0), model,
                                 settings_from_properties({"b1": "stream", "b1_scale": "1"})))
    assert isinstance(exc, B1Error) and "median relative B1 is" in str(exc) and "'b1_scale' 1" in str(exc)
    # what waits for B1 maps is bounded
    out, exc = _collect(pipeline(_frame_images(scan, 0) + _frame_images(scan, 1), model, settings,
                                 max_pending_bytes=scan[0]["frames"].nbytes + 100))
    assert isinstance(exc, PendingLimitError) and "waiting for its B1 map" in str(exc)


def test_stages_b1_series_images_are_frames_without_b1_stream(scan, model) -> None:
    """b1=none: nothing changes, images of series 5 are frames as before."""
    # frame 3 carries series 5 and repetition 0: with b1=none it is a frame, a duplicate of repetition 0
    images = [image_of(scan[0]["frames"][r], _b1_header(0) if r == 3 else frame_header(0, r)) for r in range(25)]
    out, exc = _collect(pipeline(images, model, GadgetSettings()))
    assert exc is not None and "duplicate frame" in str(exc)


# =========================================================================== resampling
def _centres(h: ismrmrd.ImageHeader, shape: tuple[int, int, int]) -> np.ndarray:
    """World positions (LPS, mm) of the voxel centres of a (z, y, x) image: the documented convention,
    position + (i − (x−1)/2)·Δx·read + (j − (y−1)/2)·Δy·phase + (k − (z−1)/2)·Δz·slice."""
    nz, ny, nx = shape
    fov = np.array(h.field_of_view[:], dtype=np.float64)
    r, q, n = (np.array(v[:], dtype=np.float64) for v in (h.read_dir, h.phase_dir, h.slice_dir))
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    return (np.array(h.position[:])[None, None, None]
            + ((i - (nx - 1) / 2) * fov[0] / nx)[..., None] * r + ((j - (ny - 1) / 2) * fov[1] / ny)[..., None] * q
            + ((k - (nz - 1) / 2) * fov[2] / nz)[..., None] * n)


def _linear(world: np.ndarray) -> np.ndarray:
    """A linear B1 field over patient coordinates (mm): 0.55…1.45 over ±128 mm."""
    return 1.0 + 0.002 * world[..., 0] - 0.0015 * world[..., 1] + 0.004 * world[..., 2]


def _square_header(n: int, *, fov: float = 256.0, read=(0.0, 1.0, 0.0), phase=(-1.0, 0.0, 0.0),
                   normal=(0.0, 0.0, 1.0), position=(1.5, -2.5, 2.0), thickness: float = 5.0) -> ismrmrd.ImageHeader:
    h = frame_header(0, 0, shape=(n, n))
    h.field_of_view[0], h.field_of_view[1], h.field_of_view[2] = fov, fov, thickness
    for name, value in (("read_dir", read), ("phase_dir", phase), ("slice_dir", normal), ("position", position)):
        target = getattr(h, name)
        target[0], target[1], target[2] = value
    return h


def test_resampling_64_onto_128_reproduces_a_linear_field() -> None:
    frames_h = _square_header(128)
    b1_h = _square_header(64)
    b1 = B1Map(0, _linear(_centres(b1_h, (1, 64, 64))).astype(np.float32), image_grid(b1_h, (1, 64, 64)), "test map")
    got = b1_on_frames(b1, frames_h, (1, 128, 128), 0)
    truth = _linear(_centres(frames_h, (1, 128, 128)))
    assert got.shape == (1, 128, 128) and np.isfinite(got).all()
    # interior (inside the B1 map's outer voxel centres): linear interpolation is exact
    np.testing.assert_allclose(got[0, 1:-1, 1:-1], truth[0, 1:-1, 1:-1], atol=LINEAR_ATOL)
    # the outer ring lies within half a B1 voxel beyond them: the edge value, off by at most slope × 1 mm
    slope = 0.002 + 0.0015
    assert np.max(np.abs(got - truth)) <= slope * 1.0 + LINEAR_ATOL


def test_resampling_by_geometry_rotated_shifted_and_refused() -> None:
    frames_h = _square_header(128)
    truth = _linear(_centres(frames_h, (1, 128, 128)))[0]
    # a B1 map acquired with read and phase swapped (the slice normal reversed), 48×48 over 240 mm, shifted
    # 40 mm along the frames' read direction: values still follow the field; voxels beyond it are NaN
    b1_h = _square_header(48, fov=240.0, read=(-1.0, 0.0, 0.0), phase=(0.0, 1.0, 0.0), normal=(0.0, 0.0, -1.0),
                          position=(1.5, 37.5, 3.0))
    b1 = B1Map(0, _linear(_centres(b1_h, (1, 48, 48))).astype(np.float32), image_grid(b1_h, (1, 48, 48)), "map")
    got = b1_on_frames(b1, frames_h, (1, 128, 128), 0)[0]
    world = _centres(frames_h, (1, 128, 128))[0]
    # inside the rotated map's outer voxel centres (±(120 − 2.5) mm about its position; read is world y here)
    dy, dx = world[..., 1] - 37.5, world[..., 0] - 1.5
    interior = (np.abs(dy) <= 117.5 - 1e-6) & (np.abs(dx) <= 117.5 - 1e-6)
    outside = (np.abs(dy) > 120.0 + 1e-6) | (np.abs(dx) > 120.0 + 1e-6)
    # a 2-D map holds one value through its thickness: the field in its plane (z = 3 mm), 1 mm from the frames'
    in_plane = _linear(world + np.array([0.0, 0.0, 1.0]))
    assert not np.allclose(in_plane, truth)
    np.testing.assert_allclose(got[interior], in_plane[interior], atol=LINEAR_ATOL)
    assert np.isnan(got[outside]).all() and outside.sum() > 0
    assert np.isfinite(got[~outside]).all()
    # 2 mm off along the slice normal, within half the 5 mm thickness: used
    near = _square_header(64, position=(1.5, -2.5, 4.0))
    ok = B1Map(0, np.ones((1, 64, 64), np.float32), image_grid(near, (1, 64, 64)), "the B1 map image of slice 0")
    assert np.isfinite(b1_on_frames(ok, frames_h, (1, 128, 128), 0)).all()
    # 4 mm off: another slice
    far = _square_header(64, position=(1.5, -2.5, 6.0))
    bad = B1Map(0, np.ones((1, 64, 64), np.float32), image_grid(far, (1, 64, 64)), "the B1 map image of slice 0")
    with pytest.raises(B1GeometryError, match=r"the B1 map image of slice 0 does not overlap the frames of slice 0: .*"
                                              r"4\.0 mm from the B1 map's centre along its slice \(slice_dir\) axis, "
                                              r"beyond half its extent \(2\.5 mm\)"):
        b1_on_frames(bad, frames_h, (1, 128, 128), 0)
    # in the same plane but beside the frames' field of view
    aside = _square_header(64, position=(1.5, 400.0, 2.0))
    beside = B1Map(0, np.ones((1, 64, 64), np.float32), image_grid(aside, (1, 64, 64)), "the B1 map image of slice 0")
    with pytest.raises(B1GeometryError, match=r"along its read \(read_dir\) axis"):
        b1_on_frames(beside, frames_h, (1, 128, 128), 0)


def test_resampling_without_geometry_assumes_the_same_field_of_view() -> None:
    frames_h = ismrmrd.ImageHeader()  # no directions, no field of view
    b1 = B1Map(0, np.arange(4, dtype=np.float32).reshape(1, 1, 4), None, "map")
    got = b1_on_frames(b1, frames_h, (1, 1, 8), 0)
    # voxel centres aligned over the same extent: u = (i + ½)·4/8 − ½, clamped at the ends
    np.testing.assert_allclose(got[0, 0], np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3), atol=1e-6)


def test_b1_map_images_are_checked() -> None:
    image = _b1_image(np.full((12, 10), 100.0, np.float32), _b1_header(2))
    b1 = b1_map_from_image(image, scale=0.01)
    assert b1.slice == 2 and b1.data.shape == (1, 12, 10) and np.allclose(b1.data, 1.0)
    with pytest.raises(B1Error, match="the B1 map image of slice 2 .* has 2 channels"):
        b1_map_from_image(ismrmrd.Image(head=_b1_header(2), data=np.ones((2, 1, 12, 10), np.float32)), scale=0.01)
    with pytest.raises(B1Error, match="has no positive finite pixel"):
        b1_map_from_image(image_of(np.zeros((12, 10), np.float32), _b1_header(2)), scale=0.01)


# =========================================================================== files
def test_b1_from_nifti_and_h5_files(scan, model, tmp_path) -> None:
    import nibabel

    from drone_gadgets.files import h5io
    from drone_gadgets.files.nifti import nifti_affine

    # ISMRMRD .h5: the B1 images of series 5, by slice (another var holds other images)
    path = tmp_path / "b1.h5"
    images = [_b1_image(_percent(scan[s]["b1"]), _b1_header(s)) for s in (0, 1)]
    images.append(image_of(np.ones((12, 10), np.float32), frame_header(0, 0)))
    h5io.write_images(path, images, group="b1scan")
    settings = settings_from_properties({"b1": f"file:{path}"})
    by_slice = _by_slice(pipeline(_frame_images(scan, 1) + _frame_images(scan, 0), model, settings))
    for s in (0, 1):
        _assert_maps(by_slice[s], _expected(scan, model, s, _relative(_percent(scan[s]["b1"]))))
    out, exc = _collect(pipeline(_frame_images(scan, 2), model, settings))
    assert isinstance(exc, B1MissingError) and f"the file {str(path)!r} has no B1 map for slice 2" in str(exc)
    with pytest.raises(SettingsError, match="has no images of series 9"):
        load_b1_file(path, series_index=9, scale=0.01)
    # NIfTI: one volume over the three slices, with the affine of the frames' geometry (RAS+)
    headers = [frame_header(s, 0) for s in range(3)]
    volume = np.stack([_percent(scan[s]["b1"]).T for s in range(3)], axis=-1)  # (x, y, slices)
    affine, _ = nifti_affine(headers)
    # nifti_affine puts voxel i at position + (i − x/2)·Δx; the B1 module uses voxel centres about the
    # position, (i − (x−1)/2)·Δx: shift by half a voxel along read and phase to describe the same voxels
    affine[:3, 3] += affine[:3, 0] * 0.5 + affine[:3, 1] * 0.5
    nifti = tmp_path / "b1.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, affine), str(nifti))
    settings = settings_from_properties({"b1": f"file:{nifti}"})
    by_slice = _by_slice(pipeline(_frame_images(scan, 2) + _frame_images(scan, 0), model, settings))
    for s in (0, 2):
        expected_b1 = _relative(_percent(scan[s]["b1"]))
        _assert_maps(by_slice[s], _expected(scan, model, s, expected_b1))
    (tmp_path / "b1.txt").write_text("not a B1 map")
    for bad, fragment in [(tmp_path / "none.nii", "does not exist"), (tmp_path / "b1.txt", "neither a NIfTI file")]:
        with pytest.raises(SettingsError, match=f"property 'b1': .*{fragment}"):
            list(pipeline([], model, settings_from_properties({"b1": f"file:{bad}"})))


# =========================================================================== the real gadget
def _in_process(config: bytes, header: bytes, messages: list[bytes]) -> Reply:
    return GadgetronPeer.in_process(drone_mrf).run(config, header, messages)


def _assert_error_then_close(reply: Reply, fragment: str) -> str:
    assert reply.failure is None, reply.failure
    ids = reply.ids()
    assert ids[-2:] == [ERROR, CLOSE] and ids.count(ERROR) == 1, ids
    text = reply.errors[0]
    assert text.startswith("drone_mrf: ") and fragment in text, text
    return text


def test_spawned_gadget_with_a_b1_series(scan, model, models, header) -> None:
    """The real ``python -m gadgetron`` process: 3 slices, B1 maps before, among and after the frames."""
    b1 = [_b1_image(_percent(scan[s]["b1"]), _b1_header(s)) for s in range(3)]
    frames = [im for r in range(25) for im in (_frame_images(scan, 0)[r], _frame_images(scan, 1)[r],
                                                _frame_images(scan, 2)[r])]
    messages = [image_message(im) for im in [b1[0]] + frames[:40] + [b1[2]] + frames[40:] + [b1[1]]]
    reply = GadgetronPeer.spawn().run(config_xml(_props(models)), header, messages)
    assert reply.failure is None and reply.errors == [] and reply.returncode == 0, (reply.errors, reply.stderr)
    assert reply.ids() == [IMAGE] * 9 + [CLOSE]
    by_slice = _by_slice(reply.images)
    for s in range(3):
        _assert_maps(by_slice[s], _expected(scan, model, s, _relative(_percent(scan[s]["b1"]))))
    assert {im.image_series_index for im in reply.images} == {100, 101, 102}


def test_gadget_dictionary_matching_with_a_b1_map(scan, models, header, tmp_path) -> None:
    """estimator=dictionary with a B1 axis: each voxel is matched in its B1 plane (drone_core.matching)."""
    from drone_core.matching import Matcher

    t1, t2, b1 = np.meshgrid(np.arange(900.0, 2101.0, 100.0), np.arange(50.0, 251.0, 25.0),
                             np.round(np.arange(0.6, 1.41, 0.1), 2), indexing="ij")
    path = tmp_path / "dictionary_b1.safetensors"
    Dictionary.generate(SCHEDULE, t1.ravel(), t2.ravel(), b1.ravel()).save(path)
    matcher = Matcher(Dictionary.load(path), device="cpu")
    messages = [image_message(im) for im in [_b1_image(_percent(scan[0]["b1"]), _b1_header(0))]
                + _frame_images(scan, 0)]
    reply = _in_process(config_xml(_props(models, estimator="dictionary", dictionary=str(path))), header, messages)
    assert reply.errors == [] and reply.exception is None, (reply.errors, reply.exception)
    _assert_maps(_by_slice(reply.images)[0], _expected(scan, None, 0, _relative(_percent(scan[0]["b1"])),
                                                       estimator=matcher))


def test_gadget_b1_missing_for_a_slice(scan, model, models, header) -> None:
    b1 = _b1_image(_percent(scan[0]["b1"]), _b1_header(0))
    messages = [image_message(im) for im in _frame_images(scan, 1) + [b1] + _frame_images(scan, 0)]
    reply = _in_process(config_xml(_props(models)), header, messages)
    text = _assert_error_then_close(reply, "the stream ended before the B1 map (image series 5")
    assert "of slice(s) 1 arrived" in text
    # slice 0 (complete with its B1 map) went out whole before the error; nothing of slice 1
    assert reply.ids() == [IMAGE] * 3 + [ERROR, CLOSE]
    _assert_maps(_by_slice(reply.images)[0], _expected(scan, model, 0, _relative(_percent(scan[0]["b1"]))))
    assert isinstance(reply.exception, GadgetFailed)


def test_gadget_b1_map_of_another_size_is_resampled(model, models, header) -> None:
    """A 12×10 B1 map over the field of view of 24×20 frames: resampled (not an error); the field is linear
    in x and y, so the resampled values are the field at the frames' voxels (inside the map's outer centres)."""
    big = _slice(0, (24, 20))
    frames_h = [frame_header(0, r, shape=(24, 20)) for r in range(25)]
    b1_h = _b1_header(0, (12, 10), fov=(40.0, 48.0))  # the frames' FOV (2 mm voxels × 20 × 24)
    b1_world = _centres(b1_h, (1, 12, 10))
    field = (lambda w: 1.0 + 0.01 * w[..., 0] - 0.008 * w[..., 1])  # noqa: E731 - 0.6…1.4 over the FOV
    b1 = _b1_image(_percent(field(b1_world)[0]), b1_h)
    messages = [image_message(b1)] + [image_message(image_of(big["frames"][r], frames_h[r])) for r in range(25)]
    reply = _in_process(config_xml(_props(models)), header, messages)
    assert reply.errors == [] and reply.exception is None, (reply.errors, reply.exception)
    resampled = b1_on_frames(b1_map_from_image(b1, scale=0.01), frames_h[0], (1, 24, 20), 0)[0]
    truth = field(_centres(frames_h[0], (1, 24, 20)))[0]
    np.testing.assert_allclose(resampled[1:-1, 1:-1], truth[1:-1, 1:-1], atol=1e-4)  # percent stored as float32
    maps = reconstruct(big["frames"][:, None], model, mask_threshold=0.05, b1=resampled[None])
    _assert_maps(_by_slice(reply.images)[0], {"T1": maps.t1[0], "T2": maps.t2[0], "M0": maps.m0[0]})


def test_gadget_b1_geometry_that_does_not_overlap(scan, models, header) -> None:
    h = _b1_header(1)
    h.position[2] += 4.0  # 4 mm off the frames' slice; the slice is 5 mm thick
    messages = [image_message(im) for im in [_b1_image(_percent(scan[1]["b1"]), h)] + _frame_images(scan, 1)]
    reply = _in_process(config_xml(_props(models)), header, messages)
    text = _assert_error_then_close(reply, "the B1 map image of slice 1 (series 5) does not overlap the frames of "
                                           "slice 1")
    assert "4.0 mm from the B1 map's centre along its slice (slice_dir) axis" in text
    assert reply.images == []


def test_gadget_b1_stream_with_a_model_without_b1_input(scan, models, header) -> None:
    messages = [image_message(im) for im in _frame_images(scan, 0)]
    reply = _in_process(config_xml(_props(models, model=str(models["plain"]))), header, messages)
    _assert_error_then_close(reply, "property 'b1': 'stream' gives each voxel's B1 to the estimator, but the DRONE "
                                    "network")
    assert "was trained at B1 = 1" in reply.errors[0] and reply.images == []


def test_gadget_duplicate_b1_map(scan, models, header) -> None:
    b1 = _b1_image(_percent(scan[0]["b1"]), _b1_header(0))
    messages = [image_message(im) for im in [b1] + _frame_images(scan, 0)[:5] + [b1] + _frame_images(scan, 0)[5:]]
    reply = _in_process(config_xml(_props(models)), header, messages)
    _assert_error_then_close(reply, "duplicate B1 map: a second B1 map image (series 5) arrived for slice 0")
    assert reply.images == []


def test_gadget_b1_estimate_emits_the_b1_map(scan, models, header) -> None:
    estimator = DroneModel.load(models["estimate"], device="cpu")
    messages = [image_message(im) for im in _frame_images(scan, 0)]
    reply = _in_process(config_xml({"device": "cpu", "model": str(models["estimate"]), "b1": "estimate"}), header,
                        messages)
    assert reply.errors == [] and reply.exception is None, (reply.errors, reply.exception)
    assert [im.image_series_index for im in reply.images] == [100, 101, 102, 104]
    b1_image = reply.images[-1]
    assert b1_image.meta["Units"] == "percent" and b1_image.meta["DRONE_Map"] == "B1"
    _assert_maps(_by_slice(reply.images)[0], _expected(scan, None, 0, None, estimator=estimator))
    from drone_gadgets.apps.outputs import maps_by_slice

    assert sorted(maps_by_slice(reply.images)[0]) == ["b1", "m0", "t1", "t2"]  # replay writes maps_b1.nii.gz too
    # a model that does not estimate B1
    reply = _in_process(config_xml(_props(models, b1="estimate")), header, messages)
    _assert_error_then_close(reply, "property 'b1': 'estimate' needs an estimator that estimates B1")


# =========================================================================== replay, serve, send
def _write_scan_with_b1(path: Path, header: bytes, scan, slices=(0, 1)) -> None:
    """As ``drone simulate-scan`` writes it: frames in ``/dataset/image_1``, the B1 map in ``image_5``
    (series 5, percent, meta DRONE_Map = B1, Units = percent)."""
    dataset = ismrmrd.Dataset(str(path), "dataset", True)
    try:
        dataset.write_xml_header(header)
        for r in range(25):
            for s in slices:
                dataset.append_image("image_1", image_of(scan[s]["frames"][r], frame_header(s, r)))
        for s in slices:
            dataset.append_image("image_5", _b1_image(_percent(scan[s]["b1"]), _b1_header(s)))
    finally:
        dataset.close()


def test_replay_of_a_file_with_a_b1_series(scan, model, models, header, tmp_path) -> None:
    from drone_gadgets.apps.inputs import open_input
    from drone_gadgets.apps.replay import replay

    src = tmp_path / "scan.h5"
    _write_scan_with_b1(src, header, scan)
    # b1=stream: the B1 var is sent first, then the frames
    source = open_input(src, tmp_path / "x.h5", settings=settings_from_properties({"b1": "stream"}))
    assert source.variables == ["image_5", "image_1"] and source.b1_variables == ["image_5"]
    assert source.n_frames == 52
    result = replay(src, tmp_path / "maps.h5", settings=_props(models), progress=False)
    assert result.frames == 52 and result.b1_images == 2 and result.slices == 2
    assert "replayed 50 frames and 2 B1 map images" in result.summary()
    from drone_gadgets.files import h5io

    by_slice = _by_slice(h5io.read_images(tmp_path / "maps.h5", "dataset"))
    for s in (0, 1):
        _assert_maps(by_slice[s], _expected(scan, model, s, _relative(_percent(scan[s]["b1"]))))
    # any other b1: the B1 var is not sent (its images are not frames); B1 = 1
    source = open_input(src, tmp_path / "x.h5")
    assert source.variables == ["image_1"] and source.skipped == ["image_5"] and source.n_frames == 50
    result = replay(src, tmp_path / "maps1.h5", settings=_props(models, b1="none"), progress=False)
    assert result.frames == 50
    by_slice = _by_slice(h5io.read_images(tmp_path / "maps1.h5", "dataset"))
    _assert_maps(by_slice[0], _expected(scan, model, 0, None))
    # the command line: --b1 stream
    from drone_gadgets.apps.replay import main

    assert main([str(src), str(tmp_path / "maps2.h5"), "--b1", "stream", "--model", str(models["b1"]),
                 "--set", "device=cpu", "--quiet"]) == 0
    by_slice = _by_slice(h5io.read_images(tmp_path / "maps2.h5", "dataset"))
    _assert_maps(by_slice[1], _expected(scan, model, 1, _relative(_percent(scan[1]["b1"]))))


def test_serve_and_send_with_a_b1_series(scan, model, models, header, tmp_path) -> None:
    from drone_gadgets.apps.client import ServerError, send
    from drone_gadgets.wire.mrd import ConfigText, Header, encode
    from drone_gadgets.apps.server import ReconServer, ServerOptions
    from mrd_peer import exchange

    src = tmp_path / "scan.h5"
    _write_scan_with_b1(src, header, scan)
    options = ServerOptions(port=0, properties={"device": "cpu", "model": str(models["b1"])}, shutdown_grace_s=0.5)
    with ReconServer(options) as server:
        server.start()
        host, port = server.address
        result = send(src, tmp_path / "maps.h5", host=host, port=port, settings={"b1": "stream"}, progress=False)
        assert result.frames == 52 and result.slices == 2
        from drone_gadgets.files import h5io

        by_slice = _by_slice(h5io.read_images(tmp_path / "maps.h5", "dataset"))
        for s in (0, 1):
            _assert_maps(by_slice[s], _expected(scan, model, s, _relative(_percent(scan[s]["b1"]))))
        # the B1 mode from a chain text sent as CONFIG_TEXT
        chain = json.dumps({"parameters": {"b1": "stream", "b1_scale": "0.01"}})
        result = send(src, tmp_path / "maps2.h5", host=host, port=port, config_text=chain, progress=False)
        assert result.frames == 52
        # a client may not name a file on the server
        with pytest.raises(ServerError, match=r"property 'b1': a B1 map file names a file on the server"):
            send(src, tmp_path / "maps3.h5", host=host, port=port, settings={"b1": "file:/etc/passwd"},
                 progress=False)
        # b1=stream and no B1 map: a clear error, nothing written
        data = encode(ConfigText(chain)) + encode(Header(header)) + b"".join(
            encode(im) for im in _frame_images(scan, 0)) + encode(None)
        reply = exchange(server.address, data)
        assert reply.closed and "the stream ended before the B1 map" in reply.errors[0]
    assert not (tmp_path / "maps3.h5").exists()


def test_with_b1_passes_other_messages_through() -> None:
    header = frame_header(0, 0)
    traj = Trajectory(0, np.ones((25, 1, 12, 10), np.float32), header)
    b1 = B1Map(0, np.full((1, 12, 10), 1.1, np.float32), image_grid(header, (1, 12, 10)), "m")
    out = list(with_b1(["a", traj, "b", b1, "c"]))
    assert out[:2] == ["a", "b"] and out[3] == "c"
    assert isinstance(out[2], Trajectory) and np.allclose(out[2].b1, 1.1)
