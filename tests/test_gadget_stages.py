"""drone_gadgets.recon.stages on plain lists: frames in any order, slices interleaved, ImageArray input,
pass-through, and each refusal — with what was produced before an error always whole."""

from __future__ import annotations

from typing import Any, Iterable

import ismrmrd
import numpy as np
import pytest
from gadgetron.types import ImageArray

from drone_core.model import default_model
from drone_gadgets.recon.errors import (DuplicateFrameError, FrameError, FrameSizeError, IncompleteFingerprintError,
                                        NonFiniteFrameError)
from drone_gadgets.recon.settings import GadgetSettings
from drone_gadgets.recon.stages import Frame, MapSet, Trajectory, frames, maps, pipeline, trajectories
from gadgetron_peer import frame_header, image_of, phantom, phantom_frames

#: See test_gadget_units.NETWORK_RTOL: the shipped network's noise-free error here is ≤ 1.7 %.
NETWORK_RTOL = 0.03


@pytest.fixture(scope="module")
def model():
    return default_model(device="cpu")


@pytest.fixture(scope="module")
def slices(model) -> list[dict[str, np.ndarray]]:
    """Two slices with different tissue layouts: truth maps and complex frames (N, y, x)."""
    out = []
    for shift in (0, 1):
        t1, t2, m0, labels = phantom(shift)
        out.append({"t1": t1, "t2": t2, "m0": m0, "labels": labels,
                    "frames": phantom_frames(model.schedule, t1, t2, m0)})
    return out


def _images(slices: list[dict[str, np.ndarray]], order: list[tuple[int, int]]) -> list[ismrmrd.Image]:
    return [image_of(np.abs(slices[s]["frames"][r]).astype(np.float32), frame_header(s, r)) for s, r in order]


def _collect(stream: Iterable[Any]) -> tuple[list[Any], BaseException | None]:
    out: list[Any] = []
    try:
        for item in stream:
            out.append(item)
    except Exception as exc:  # noqa: BLE001 - returned to the test
        return out, exc
    return out, None


def _check_maps(images: list[ismrmrd.Image], truth: dict[str, np.ndarray], slice_: int) -> None:
    fg = truth["labels"] >= 0
    got = {im.meta["DRONE_Map"]: im for im in images if im.slice == slice_}
    assert sorted(got) == ["M0", "T1", "T2"]
    for name, key in (("T1", "t1"), ("T2", "t2"), ("M0", "m0")):
        data = got[name].data[0, 0]
        assert np.all(data[~fg] == 0)
        np.testing.assert_allclose(data[fg], truth[key][fg], rtol=NETWORK_RTOL)


def test_pipeline_interleaved_out_of_order_with_pass_through(model, slices) -> None:
    rng = np.random.default_rng(3)
    order = [(s, r) for s in (0, 1) for r in range(25)]
    order = [order[i] for i in rng.permutation(len(order))]
    items: list[Any] = _images(slices, order)
    marker_a, marker_b = object(), "something else"
    items.insert(7, marker_a)
    items.insert(30, marker_b)
    out = list(pipeline(items, model))
    passed = [x for x in out if not isinstance(x, ismrmrd.Image)]
    assert passed == [marker_a, marker_b]  # untouched, in order
    images = [x for x in out if isinstance(x, ismrmrd.Image)]
    assert len(images) == 6
    # Each slice's maps come out right after its last frame arrived.
    last = {s: max(i for i, (ss, _) in enumerate(order) if ss == s) for s in (0, 1)}
    first_done = min(last, key=last.get)
    assert [im.slice for im in images[:3]] == [first_done] * 3
    for s in (0, 1):
        _check_maps(images, slices[s], s)
        for im in (x for x in images if x.slice == s):
            # Geometry and counters of frame 0 of that slice.
            ref = frame_header(s, 0)
            assert tuple(im.getHead().position) == tuple(ref.position)
            assert im.acquisition_time_stamp == ref.acquisition_time_stamp and im.repetition == 0
            assert im.image_index == s + 1


def test_pipeline_image_array_input(model, slices) -> None:
    """Gadgetron ImageArrays (complex, RO × E1 × … × N × S × LOC) carrying both slices per message."""
    arrays = []
    for r in range(25):
        y, x = slices[0]["t1"].shape
        data = np.zeros((x, y, 1, 1, 1, 1, 2), dtype=np.complex64)
        headers = np.empty((1, 1, 2), dtype=object)
        for loc in (0, 1):
            data[:, :, 0, 0, 0, 0, loc] = slices[loc]["frames"][r].T  # (y, x) → (RO = x, E1 = y)
            headers[0, 0, loc] = frame_header(loc, r)
        arrays.append(ImageArray(data=data, headers=headers, meta=["", ""]))
    images = list(pipeline(arrays[::-1], model))
    assert len(images) == 6
    for s in (0, 1):
        _check_maps(images, slices[s], s)


def test_pipeline_settings_counter_maps_series(model, slices) -> None:
    settings = GadgetSettings(frame_counter="contrast", maps=("m0", "t2"), t2_series_index=9, m0_series_index=8)
    items = [image_of(np.abs(slices[0]["frames"][r]), frame_header(0, r, counter_field="contrast"))
             for r in range(24, -1, -1)]
    out = list(pipeline(items, model, settings))
    assert [(im.meta["DRONE_Map"], im.image_series_index) for im in out] == [("T2", 9), ("M0", 8)]


def test_stage_types(model, slices) -> None:
    items = _images(slices, [(0, r) for r in range(25)])
    fr = list(frames(items))
    assert all(isinstance(f, Frame) for f in fr) and fr[3].index == 3 and fr[3].data.shape == (1, 12, 10)
    tr = list(trajectories(fr, n_frames=25))
    assert len(tr) == 1 and isinstance(tr[0], Trajectory) and tr[0].frames.shape == (25, 1, 12, 10)
    ms = list(maps(tr, model, mask_threshold=0.05))
    assert isinstance(ms[0], MapSet) and ms[0].maps.t1.shape == (1, 12, 10)


# --------------------------------------------------------------------------- refusals
def test_duplicate_frame(slices, model) -> None:
    order = [(0, r) for r in range(25)] + [(1, 0), (1, 1), (1, 1)]
    out, exc = _collect(pipeline(_images(slices, order), model))
    assert isinstance(exc, DuplicateFrameError) and "repetition=1 of slice 1 arrived twice" in str(exc)
    assert len(out) == 3 and {im.slice for im in out} == {0}  # slice 0 complete and whole, nothing of slice 1


def test_frame_of_a_completed_slice_is_a_duplicate(slices, model) -> None:
    out, exc = _collect(pipeline(_images(slices, [(0, r) for r in range(25)] + [(0, 4)]), model))
    assert isinstance(exc, DuplicateFrameError) and "already sent" in str(exc) and len(out) == 3


def test_frame_of_another_size(slices, model) -> None:
    items = _images(slices, [(0, 0), (0, 1)])
    items.append(image_of(np.ones((10, 12), np.float32), frame_header(0, 2, shape=(10, 12))))
    _, exc = _collect(pipeline(items, model))
    assert isinstance(exc, FrameSizeError)
    assert "repetition=2 of slice 0 is 12×10×1 (x×y×z)" in str(exc) and "are 10×12×1" in str(exc)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels(slices, model, bad: float) -> None:
    items = _images(slices, [(0, 0), (0, 1)])
    data = np.ones((12, 10), np.float32)
    data[3, 4] = bad
    items.append(image_of(data, frame_header(0, 2)))
    _, exc = _collect(pipeline(items, model))
    assert isinstance(exc, NonFiniteFrameError) and "repetition=2 of slice 0 has 1 non-finite" in str(exc)


def test_counter_out_of_range(slices, model) -> None:
    _, exc = _collect(pipeline(_images(slices, [(0, 0)]) + [image_of(np.ones((12, 10)), frame_header(0, 25))], model))
    assert isinstance(exc, FrameError) and "must be in 0…24" in str(exc)


def test_incomplete_at_end(slices, model) -> None:
    order = [(1, r) for r in range(25)] + [(0, r) for r in range(25) if r not in (3, 4, 5, 17)] + [(2, 0)]
    order = order + []
    items = _images(slices + [slices[0]], order)
    out, exc = _collect(pipeline(items, model))
    assert isinstance(exc, IncompleteFingerprintError)
    text = str(exc)
    assert "slice 0 has 21 of 25 frames (missing repetition 3–5, 17)" in text
    assert "slice 2 has 1 of 25 frames (missing repetition 1–24)" in text
    assert len(out) == 3 and {im.slice for im in out} == {1}


def test_multichannel_image_refused(model) -> None:
    image = ismrmrd.Image(head=frame_header(0, 0), data=np.ones((2, 1, 12, 10), np.float32))
    _, exc = _collect(pipeline([image], model))
    assert isinstance(exc, FrameError) and "2 channels" in str(exc) and "repetition=0 of slice 0" in str(exc)
