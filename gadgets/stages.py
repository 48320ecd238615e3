"""The gadget as a chain of generator stages: images → frames → trajectories → maps → images.

Each stage takes an iterable and yields; what a stage does not handle it yields unchanged, in
order, so messages that are not frames (acquisitions, waveforms …) pass through the whole chain
untouched. The stages work on plain lists as well as on a Gadgetron connection::

    out = list(pipeline(messages, estimator, settings))   # messages: a list of ismrmrd.Image …

1. :func:`frames` — every ``ismrmrd.Image`` (float, integer or complex; magnitude taken) and
   every frame of a Gadgetron ``ImageArray`` becomes a :class:`Frame`: slice (header ``slice``),
   position in the fingerprint (header counter ``settings.frame_counter``, default
   ``repetition``), ``(z, y, x)`` float32 magnitudes and the header. Non-finite pixels are refused.
2. :func:`trajectories` — collects the N frames of each slice, in any order and with slices
   interleaved, and yields a :class:`Trajectory` as soon as a slice is complete. A frame counter
   outside ``0 … N−1``, a duplicate frame, a frame whose matrix differs from the slice's earlier
   frames, or a frame for a slice already complete is refused; at the end of the input, slices
   still missing frames raise :class:`IncompleteFingerprintError` listing what is missing (their
   partial frames are never turned into maps).
3. :func:`maps` — :func:`drone_core.reconstruct.reconstruct` on each trajectory → :class:`MapSet`.
4. :func:`images` — each map becomes a float32 ``ismrmrd.Image`` with the geometry and counters of
   the slice's first frame (frame 0), its own ``image_series_index``, ``image_index = slice + 1``
   and meta attributes for the scanner (:func:`map_meta`).

Errors are raised from the stage that detects them, at the message that causes them: whatever was
yielded before is whole (complete slices, all their maps), nothing after it is produced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import ismrmrd
import numpy as np

from drone_core._version import __version__

from drone_core.reconstruct import SliceMaps, reconstruct
from .conversion import header_counter, image_array_frames, image_magnitude, is_image_array, make_image
from .errors import (DuplicateFrameError, FrameError, FrameSizeError, IncompleteFingerprintError, NonFiniteFrameError,
                     PendingLimitError)
from .settings import FRAME_COUNTER_FIELDS, MAP_NAMES, GadgetSettings

__all__ = [
    "Frame",
    "Trajectory",
    "MapSet",
    "MAP_INFO",
    "frames",
    "trajectories",
    "maps",
    "images",
    "map_meta",
    "pipeline",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Frame:
    """One image of a fingerprint.

    Attributes:
        slice: the header's ``slice``.
        index: 0-based position in the fingerprint (the frame counter's value).
        data: ``(z, y, x)`` float32 magnitudes.
        header: the image's ``ImageHeader`` (a copy).
    """

    slice: int
    index: int
    data: np.ndarray
    header: ismrmrd.ImageHeader


@dataclass(frozen=True, eq=False)
class Trajectory:
    """The complete fingerprint of one slice.

    Attributes:
        slice: the slice.
        frames: ``(N, z, y, x)`` float32 magnitudes, frame ``i`` at index ``i``.
        header: ``ImageHeader`` of frame 0 (geometry and counters of the maps).
    """

    slice: int
    frames: np.ndarray
    header: ismrmrd.ImageHeader


@dataclass(frozen=True, eq=False)
class MapSet:
    """The maps of one slice with the header they inherit.

    Attributes:
        slice: the slice.
        maps: the :class:`~drone_core.reconstruct.SliceMaps`, each ``(z, y, x)``.
        header: ``ImageHeader`` of the slice's frame 0.
    """

    slice: int
    maps: SliceMaps
    header: ismrmrd.ImageHeader


@dataclass(frozen=True)
class _MapInfo:
    label: str
    units: str
    description: str
    window: tuple[int, int] | None  # (centre, width); None: from the data


#: Per map: label, units, description and display window (centre, width) — T1 0…3000 ms,
#: T2 0…300 ms; M0's window is taken from its data (0 … 99th percentile inside the mask).
MAP_INFO: Mapping[str, _MapInfo] = {
    "t1": _MapInfo("T1", "ms", "T1 map (ms)", (1500, 3000)),
    "t2": _MapInfo("T2", "ms", "T2 map (ms)", (150, 300)),
    "m0": _MapInfo("M0", "a.u.", "M0 map (arbitrary units, scale of the input images)", None),
}


def _counter_text(counter: str, index: int, slice_: int) -> str:
    return f"frame {counter}={index} of slice {slice_}"


def frames(items: Iterable[Any], *, counter: str = "repetition") -> Iterator[Any]:
    """Stage 1: images and image arrays → :class:`Frame` (others pass through).

    Args:
        items: messages: ``ismrmrd.Image``, Gadgetron ``ImageArray``, :class:`Frame` (kept) or
            anything else (passed through).
        counter: the ImageHeader field numbering the frames (one of ``FRAME_COUNTER_FIELDS``).

    Raises:
        FrameError: several channels, an unsupported type; NonFiniteFrameError: NaN/inf pixels.
    """
    if counter not in FRAME_COUNTER_FIELDS:
        raise ValueError(f"counter: expected one of {FRAME_COUNTER_FIELDS}, got {counter!r}")

    def make(header: ismrmrd.ImageHeader, data: np.ndarray) -> Frame:
        frame = Frame(int(header.slice), header_counter(header, counter), data, header)
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise NonFiniteFrameError(f"{_counter_text(counter, frame.index, frame.slice)} has {bad} non-finite "
                                      f"pixel(s) (NaN or infinite) of {data.size}")
        return frame

    for item in items:
        if isinstance(item, ismrmrd.Image):
            header = item.getHead()
            try:
                data = image_magnitude(item)
            except FrameError as exc:
                raise type(exc)(f"{_counter_text(counter, header_counter(header, counter), int(header.slice))}: "
                                f"{exc}") from None
            yield make(header, data)  # getHead() is already a copy
        elif is_image_array(item):
            for header, data in image_array_frames(item):
                yield make(header, data)
        else:
            yield item


@dataclass
class _Partial:
    shape: tuple[int, ...]
    frames: dict[int, Frame] = field(default_factory=dict)


def _xyz(shape: tuple[int, ...]) -> str:
    z, y, x = shape
    return f"{x}×{y}×{z} (x×y×z)"


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0–2, 5, 7–8"``."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs)


def trajectories(items: Iterable[Any], *, n_frames: int, counter: str = "repetition",
                 max_pending_bytes: int | None = None) -> Iterator[Any]:
    """Stage 2: :class:`Frame` → :class:`Trajectory` per complete slice (others pass through).

    Args:
        items: output of :func:`frames`.
        n_frames: frames per fingerprint N.
        counter: the frame counter's name (for messages).
        max_pending_bytes: refuse a frame that would make the frames held for incomplete slices
            exceed this many bytes (bounds the memory a stream can make this stage hold); None:
            no bound.

    Raises:
        FrameError: a counter outside ``0 … N−1``; DuplicateFrameError: a frame seen twice, or a
        frame of a slice already complete; FrameSizeError: a matrix different from the slice's
        earlier frames; IncompleteFingerprintError: slices missing frames at the end of the input;
        PendingLimitError: more than ``max_pending_bytes`` held.
    """
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames: expected a positive int, got {n_frames!r}")
    partial: dict[int, _Partial] = {}
    pending_bytes = 0
    done: set[int] = set()
    for item in items:
        if not isinstance(item, Frame):
            yield item
            continue
        what = _counter_text(counter, item.index, item.slice)
        if not 0 <= item.index < n_frames:
            raise FrameError(f"{what}: the frame counter must be in 0…{n_frames - 1} ({n_frames} frames per "
                             f"fingerprint)")
        if item.slice in done:
            raise DuplicateFrameError(f"duplicate frame: {what} arrived after all {n_frames} frames of slice "
                                      f"{item.slice} were received (its maps were already sent)")
        slot = partial.setdefault(item.slice, _Partial(item.data.shape))
        if item.index in slot.frames:
            raise DuplicateFrameError(f"duplicate frame: {what} arrived twice")
        if item.data.shape != slot.shape:
            raise FrameSizeError(f"{what} is {_xyz(item.data.shape)} but the earlier frames of slice {item.slice} "
                                 f"are {_xyz(slot.shape)}")
        if max_pending_bytes is not None and pending_bytes + item.data.nbytes > max_pending_bytes:
            raise PendingLimitError(f"{what} would make the frames held for {len(partial)} incomplete slice(s) "
                                    f"{pending_bytes + item.data.nbytes} bytes, over the limit of "
                                    f"{max_pending_bytes} bytes; send the frames of a few slices at a time")
        slot.frames[item.index] = item
        pending_bytes += item.data.nbytes
        if len(slot.frames) == n_frames:
            stack = np.stack([slot.frames[i].data for i in range(n_frames)])
            pending_bytes -= sum(f.data.nbytes for f in slot.frames.values())
            del partial[item.slice]
            done.add(item.slice)
            yield Trajectory(item.slice, stack, slot.frames[0].header)
    if partial:
        parts = []
        for s in sorted(partial):
            missing = [i for i in range(n_frames) if i not in partial[s].frames]
            parts.append(f"slice {s} has {len(partial[s].frames)} of {n_frames} frames (missing {counter} "
                         f"{_ranges(missing)})")
        raise IncompleteFingerprintError("the stream ended with incomplete fingerprints, no maps made for them: "
                                         + "; ".join(parts))


def maps(items: Iterable[Any], estimator: Any, *, mask_threshold: float) -> Iterator[Any]:
    """Stage 3: :class:`Trajectory` → :class:`MapSet` (others pass through).

    Args:
        items: output of :func:`trajectories`.
        estimator: a ``DroneModel`` or ``Matcher`` (see :func:`drone_core.reconstruct.reconstruct`).
        mask_threshold: background threshold (fraction of the 99th-percentile fingerprint norm).
    """
    for item in items:
        if isinstance(item, Trajectory):
            result = reconstruct(item.frames, estimator, mask_threshold=mask_threshold)
            log.info("slice %d: maps of %d foreground voxels of %d", item.slice, int(result.mask.sum()),
                     result.mask.size)
            yield MapSet(item.slice, result, item.header)
        else:
            yield item


def map_meta(name: str, data: np.ndarray, mask: np.ndarray, *, source: str = "") -> dict[str, str | list[str]]:
    """Meta attributes of one map image (MRD standard names and Gadgetron's ``GADGETRON_*`` ones).

    ``DataRole`` is ``Quantitative`` (pixel values are parametric: not to be rescaled downstream),
    with the units, an image comment, a series description, a display window and provenance.

    Args:
        name: ``"t1"``, ``"t2"`` or ``"m0"``.
        data: the map (for M0's window).
        mask: its foreground mask.
        source: free text naming the estimator, stored as ``DRONE_Estimator``.
    """
    info = MAP_INFO[name]
    if info.window is not None:
        centre, width = info.window
    else:
        values = data[mask] if mask.any() else data.ravel()
        top = float(np.percentile(values, 99)) if values.size else 0.0
        width = max(1, round(top))
        centre = max(1, round(top / 2))
    comment = f"DRONE {info.description}"
    return {
        "DataRole": "Quantitative",
        "GADGETRON_DataRole": "Quantitative",
        "ImageType": f"{info.label}MAP",
        "ImageComments": comment,
        "GADGETRON_ImageComment": comment,
        "SeriesDescriptionAdditional": f"DRONE_{info.label}",
        "GADGETRON_SeqDescription": f"_DRONE_{info.label}",
        "ImageProcessingHistory": "DRONE",
        "GADGETRON_ImageProcessingHistory": "DRONE",
        "WindowCenter": str(centre),
        "WindowWidth": str(width),
        "GADGETRON_WindowCenter": str(centre),
        "GADGETRON_WindowWidth": str(width),
        "Units": info.units,
        "DRONE_Map": info.label,
        "DRONE_Estimator": source,
        "DRONE_Version": __version__,
    }


def images(items: Iterable[Any], *, maps_to_emit: tuple[str, ...] = MAP_NAMES,
           series_index: Mapping[str, int] | None = None, source: str = "") -> Iterator[Any]:
    """Stage 4: :class:`MapSet` → one float32 ``ismrmrd.Image`` per map (others pass through).

    Args:
        items: output of :func:`maps`.
        maps_to_emit: which maps, in order (subset of ``("t1", "t2", "m0")``).
        series_index: ``image_series_index`` per map name (default 100, 101, 102).
        source: estimator description stored in the meta (``DRONE_Estimator``).
    """
    series = dict(series_index) if series_index is not None else GadgetSettings().series_index
    for item in items:
        if not isinstance(item, MapSet):
            yield item
            continue
        arrays = item.maps.as_dict()
        out = [make_image(arrays[name], item.header, image_series_index=series[name], image_index=item.slice + 1,
                          meta=map_meta(name, arrays[name], item.maps.mask, source=source))
               for name in maps_to_emit]
        yield from out


def pipeline(items: Iterable[Any], estimator: Any, settings: GadgetSettings | None = None, *,
             max_pending_bytes: int | None = None) -> Iterator[Any]:
    """The four stages chained: messages in, map images (and passed-through messages) out.

    Args:
        items: messages (``ismrmrd.Image``, ``ImageArray``, others).
        estimator: a ``DroneModel`` or ``Matcher``; its ``n_frames`` is the fingerprint length.
        settings: the gadget's settings (defaults when None).
        max_pending_bytes: bound on the frames held for incomplete slices (see :func:`trajectories`).
    """
    from .estimators import describe_estimator

    settings = settings or GadgetSettings()
    n_frames = int(estimator.n_frames)
    stream: Iterable[Any] = frames(items, counter=settings.frame_counter)
    stream = trajectories(stream, n_frames=n_frames, counter=settings.frame_counter,
                          max_pending_bytes=max_pending_bytes)
    stream = maps(stream, estimator, mask_threshold=settings.mask_threshold)
    return images(stream, maps_to_emit=settings.maps, series_index=settings.series_index,
                  source=describe_estimator(estimator))
