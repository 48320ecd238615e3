"""The gadget as a chain of generator stages: images → frames → trajectories → [B1] → maps → images.

Each stage takes an iterable and yields; what a stage does not handle it yields unchanged, in
order, so messages that are not frames (acquisitions, waveforms …) pass through the whole chain
untouched. The stages work on plain lists as well as on a Gadgetron connection::

    out = list(pipeline(messages, estimator, settings))   # messages: a list of ismrmrd.Image …

0. :func:`b1_images` (``b1=stream`` only) — every ``ismrmrd.Image`` of series
   ``settings.b1_series_index`` is a B1 map, not a frame: it becomes a
   :class:`~drone_gadgets.recon.b1maps.B1Map` (slice from header ``slice``, pixels × ``b1_scale``).
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
2b. :func:`with_b1` (``b1=stream`` or ``b1=file:``) — gives each trajectory its B1 map resampled
   onto the frames' grid (:func:`drone_gadgets.recon.b1maps.b1_on_frames`). With ``stream``, B1 maps and
   complete trajectories may come in either order: whichever comes first waits for the other. A
   second B1 map for a slice is refused (:class:`DuplicateB1Error`), a B1 map that does not overlap
   its slice's frames too (:class:`B1GeometryError`, at the message completing the pair); at the end
   of the input, slices still waiting for their B1 map raise :class:`B1MissingError` (no maps are
   made with a made-up B1).
3. :func:`maps` — :func:`drone_core.reconstruct.reconstruct` on each trajectory (with its B1 map,
   if any) → :class:`MapSet`.
4. :func:`images` — each map becomes a float32 ``ismrmrd.Image`` with the geometry and counters of
   the slice's first frame (frame 0), its own ``image_series_index``, ``image_index = slice + 1``
   and meta attributes for the scanner (:func:`map_meta`).

Errors are raised from the stage that detects them, at the message that causes them: whatever was
yielded before is whole (complete slices, all their maps), nothing after it is produced.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping

import ismrmrd
import numpy as np

from drone_core._version import __version__

from drone_core.masking import DEFAULT_MASK_FLOOR, DEFAULT_MASK_SNR, DEFAULT_MASK_THRESHOLD
from drone_core.reconstruct import SliceMaps, reconstruct
from .b1maps import B1File, B1Map, b1_map_from_image, b1_on_frames, open_b1_source
from .conversion import header_counter, image_array_frames, image_magnitude, is_image_array, make_image
from .errors import (B1MissingError, DuplicateB1Error, DuplicateFrameError, FrameError, FrameSizeError,
                     IncompleteFingerprintError, NonFiniteFrameError, PendingLimitError)
from .settings import DEFAULT_MAPS, FRAME_COUNTER_FIELDS, UNCERTAINTY_MAPS, GadgetSettings, settings_to_properties

__all__ = [
    "Frame",
    "Trajectory",
    "MapSet",
    "MAP_INFO",
    "b1_images",
    "frames",
    "trajectories",
    "with_b1",
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
        b1: ``(z, y, x)`` float32 relative B1 on the frames' grid (NaN: unknown), or None (B1 = 1,
            or estimated).
    """

    slice: int
    frames: np.ndarray
    header: ismrmrd.ImageHeader
    b1: np.ndarray | None = None


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
    scale: float = 1.0  # pixel value = map value × scale


#: Per map: label, units, description and display window (centre, width) — T1 0…3000 ms,
#: T2 0…300 ms; M0's window is taken from its data (0 … 99th percentile inside the mask). The
#: estimated B1 map (``b1=estimate``) is written in percent of nominal (relative B1 × 100, window
#: 50…150 %), the units scanners use for B1 maps (and ``b1_scale``'s default). The sd maps' windows come
#: from their data like M0's; the goodness of fit shows 0…4 (1 = explained by noise alone).
MAP_INFO: Mapping[str, _MapInfo] = {
    "t1": _MapInfo("T1", "ms", "T1 map (ms)", (1500, 3000)),
    "t2": _MapInfo("T2", "ms", "T2 map (ms)", (150, 300)),
    "m0": _MapInfo("M0", "a.u.", "M0 map (arbitrary units, scale of the input images)", None),
    "b1": _MapInfo("B1", "percent", "B1 map (relative transmit field, percent of nominal)", (100, 100), 100.0),
    "t1_sd": _MapInfo("T1SD", "ms", "T1 standard deviation map (ms, predicted at each voxel's estimate and SNR)",
                      None),
    "t2_sd": _MapInfo("T2SD", "ms", "T2 standard deviation map (ms, predicted at each voxel's estimate and SNR)",
                      None),
    "fit": _MapInfo("FIT", "noise sd", "goodness-of-fit map (residual between the fingerprint and the atom at its "
                    "estimate, in units of the noise; about 1 where the signal model explains the voxel)", (2, 4)),
}


def _counter_text(counter: str, index: int, slice_: int) -> str:
    return f"frame {counter}={index} of slice {slice_}"


def b1_images(items: Iterable[Any], *, series_index: int, scale: float) -> Iterator[Any]:
    """Stage 0 (``b1=stream``): ``ismrmrd.Image`` of series ``series_index`` →
    :class:`~drone_gadgets.recon.b1maps.B1Map`.

    Args:
        items: messages.
        series_index: ``image_series_index`` of the B1 map images (property ``b1_series_index``).
        scale: relative B1 = pixel × ``scale`` (property ``b1_scale``).

    Raises:
        B1Error: a B1 map image with several channels, no positive pixel or an implausible median.
    """
    for item in items:
        if isinstance(item, ismrmrd.Image) and int(item.image_series_index) == series_index:
            b1 = b1_map_from_image(item, scale=scale)
            log.info("%s arrived (%s)", b1.origin, "×".join(str(n) for n in b1.data.shape[::-1]))
            yield b1
        else:
            yield item


def _is_b1_map_image(image: ismrmrd.Image) -> bool:
    """True for an image that says it is a B1 map (meta ``DRONE_Map`` = ``B1``, as ``drone simulate-scan`` writes)."""
    text = getattr(image, "attribute_string", "") or ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if "DRONE_Map" not in text:
        return False
    try:
        return str(image.meta.get("DRONE_Map", "")).upper() == "B1"
    except Exception:  # noqa: BLE001 - meta that does not parse is no B1 map's: the frame checks deal with it
        return False


def frames(items: Iterable[Any], *, counter: str = "repetition", skip_b1_maps: bool = False) -> Iterator[Any]:
    """Stage 1: images and image arrays → :class:`Frame` (others pass through).

    Args:
        items: messages: ``ismrmrd.Image``, Gadgetron ``ImageArray``, :class:`Frame` (kept) or
            anything else (passed through).
        counter: the ImageHeader field numbering the frames (one of ``FRAME_COUNTER_FIELDS``).
        skip_b1_maps: drop images whose meta says they are B1 maps (``DRONE_Map`` = ``B1``) instead of
            taking them for frames, with one warning (the pipeline does so unless ``b1=stream``: a client
            such as python-ismrmrd-server's ``client.py`` sends every image var of a file, the B1 map's too).

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

    skipped = 0
    for item in items:
        if isinstance(item, ismrmrd.Image):
            if skip_b1_maps and _is_b1_map_image(item):
                if not skipped:
                    log.warning("a B1 map image (meta DRONE_Map B1, series %d, slice %d) arrived with property b1 "
                                "other than stream: not a frame, not used (set b1=stream to use it)",
                                int(item.image_series_index), int(item.getHead().slice))
                skipped += 1
                continue
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
    """A slice being received: its frames are copied into the fingerprint's stack as they arrive, so the
    stack is ready — nothing left to copy — when the last one comes."""

    shape: tuple[int, ...]
    stack: np.ndarray  # (N, z, y, x) float32
    received: set[int] = field(default_factory=set)
    first_header: Any = None  # the header of frame 0, once it arrived


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
            exceed this many bytes (bounds the memory a stream can make this stage hold; a slice holds
            its whole N-frame stack from its first frame, the frames being copied in as they arrive);
            None: no bound.

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
        slot = partial.get(item.slice)
        if slot is None:
            stack_bytes = n_frames * item.data.nbytes
            if max_pending_bytes is not None and pending_bytes + stack_bytes > max_pending_bytes:
                raise PendingLimitError(f"{what} would make the frames held for {len(partial) + 1} incomplete "
                                        f"slice(s) {pending_bytes + stack_bytes} bytes (a stack of {n_frames} frames "
                                        f"per slice), over the limit of {max_pending_bytes} bytes; send the frames "
                                        "of a few slices at a time")
            slot = partial[item.slice] = _Partial(item.data.shape, np.empty((n_frames, *item.data.shape),
                                                                            dtype=np.float32))
            pending_bytes += stack_bytes
        if item.index in slot.received:
            raise DuplicateFrameError(f"duplicate frame: {what} arrived twice")
        if item.data.shape != slot.shape:
            raise FrameSizeError(f"{what} is {_xyz(item.data.shape)} but the earlier frames of slice {item.slice} "
                                 f"are {_xyz(slot.shape)}")
        slot.stack[item.index] = item.data
        slot.received.add(item.index)
        if item.index == 0:
            slot.first_header = item.header
        if len(slot.received) == n_frames:
            pending_bytes -= slot.stack.nbytes
            del partial[item.slice]
            done.add(item.slice)
            yield Trajectory(item.slice, slot.stack, slot.first_header)
    if partial:
        parts = []
        for s in sorted(partial):
            missing = [i for i in range(n_frames) if i not in partial[s].received]
            parts.append(f"slice {s} has {len(partial[s].received)} of {n_frames} frames (missing {counter} "
                         f"{_ranges(missing)})")
        raise IncompleteFingerprintError("the stream ended with incomplete fingerprints, no maps made for them: "
                                         + "; ".join(parts))


def with_b1(items: Iterable[Any], *, source: B1File | None = None, series_index: int = 5,
            max_pending_bytes: int | None = None) -> Iterator[Any]:
    """Stage 2b: each :class:`Trajectory` gets its slice's B1 map on the frames' grid (others pass through).

    With ``source`` None (``b1=stream``) the B1 maps come in the input as
    :class:`~drone_gadgets.recon.b1maps.B1Map` items (from :func:`b1_images`), before or after the slice's
    frames: a complete trajectory waits for its B1 map and a B1 map for its trajectory. With a
    :class:`~drone_gadgets.recon.b1maps.B1File` (``b1=file:``) each trajectory takes its map from the file.

    Args:
        items: output of :func:`trajectories` (with :class:`B1Map` items for ``b1=stream``).
        source: the B1 file, or None for B1 maps in the stream.
        series_index: the B1 maps' series (for messages).
        max_pending_bytes: refuse a trajectory or B1 map that would make what waits for its partner
            exceed this many bytes; None: no bound.

    Raises:
        DuplicateB1Error: a second B1 map for a slice; B1GeometryError: a B1 map that does not
        overlap its slice's frames; B1MissingError: slices still waiting for a B1 map at the end of
        the input (or missing from the file); PendingLimitError: over ``max_pending_bytes``.
    """
    waiting: dict[int, Trajectory] = {}  # complete slices waiting for their B1 map
    unused: dict[int, B1Map] = {}  # B1 maps waiting for their slice's frames
    arrived: set[int] = set()
    done: set[int] = set()
    pending = 0

    def combine(trajectory: Trajectory, b1: B1Map) -> Trajectory:
        values = b1_on_frames(b1, trajectory.header, trajectory.frames.shape[1:], trajectory.slice)
        done.add(trajectory.slice)
        return replace(trajectory, b1=values)

    def check_limit(extra: int, what: str) -> None:
        if max_pending_bytes is not None and pending + extra > max_pending_bytes:
            raise PendingLimitError(f"{what} would make the data waiting for B1 maps ({len(waiting)} slice(s)) or "
                                    f"for frames ({len(unused)} B1 map(s)) {pending + extra} bytes, over the limit "
                                    f"of {max_pending_bytes} bytes; send each slice's B1 map with its frames")

    for item in items:
        if isinstance(item, Trajectory):
            if source is not None:
                yield replace(item, b1=source.for_slice(item.slice, item.header, item.frames.shape[1:]))
                continue
            if item.slice in unused:
                b1 = unused.pop(item.slice)
                pending -= b1.data.nbytes
                yield combine(item, b1)
            else:
                check_limit(item.frames.nbytes, f"slice {item.slice}, complete and waiting for its B1 map,")
                log.info("slice %d: fingerprint complete, waiting for its B1 map (series %d)", item.slice,
                         series_index)
                waiting[item.slice] = item
                pending += item.frames.nbytes
        elif isinstance(item, B1Map):
            if item.slice in arrived:
                after = " after its maps were sent" if item.slice in done else ""
                raise DuplicateB1Error(f"duplicate B1 map: a second B1 map image (series {series_index}) arrived for "
                                       f"slice {item.slice}{after}; each slice takes one")
            arrived.add(item.slice)
            if item.slice in waiting:
                trajectory = waiting.pop(item.slice)
                pending -= trajectory.frames.nbytes
                yield combine(trajectory, item)
            else:
                check_limit(item.data.nbytes, f"{item.origin}, waiting for the frames of its slice,")
                unused[item.slice] = item
                pending += item.data.nbytes
        else:
            yield item
    if unused:
        log.warning("B1 map(s) of slice(s) %s were not used: no complete fingerprint of those slices arrived",
                    _ranges(list(unused)))
    if waiting:
        raise B1MissingError(f"the stream ended before the B1 map (image series {series_index}, property "
                             f"'b1_series_index') of slice(s) {_ranges(list(waiting))} arrived: their fingerprints are "
                             f"complete but no maps were made for them (property b1=stream computes a slice only "
                             f"with its B1 map); B1 maps arrived for slice(s) {_ranges(sorted(arrived)) or 'none'}")


def maps(items: Iterable[Any], estimator: Any, *, mask_threshold: float | None = None,
         mask_snr: float = DEFAULT_MASK_SNR, mask_floor: float = DEFAULT_MASK_FLOOR, despeckle: bool | None = None,
         maps_to_emit: tuple[str, ...] = DEFAULT_MAPS) -> Iterator[Any]:
    """Stage 3: :class:`Trajectory` → :class:`MapSet` (others pass through).

    Args:
        items: output of :func:`trajectories` (or :func:`with_b1`).
        estimator: a ``DroneModel`` or ``Matcher`` (see :func:`drone_core.reconstruct.reconstruct`).
        mask_threshold, mask_snr, mask_floor, despeckle: the background mask (None: noise-aware; a fraction of the
            99th-percentile fingerprint norm), as :func:`~drone_core.reconstruct.reconstruct` takes them.
        maps_to_emit: the maps the next stage emits (the optional ones are computed only when listed).
    """
    uncertainty = any(name in maps_to_emit for name in UNCERTAINTY_MAPS)
    fit = "fit" in maps_to_emit
    for item in items:
        if isinstance(item, Trajectory):
            result = reconstruct(item.frames, estimator, mask_threshold=mask_threshold, mask_snr=mask_snr,
                                 mask_floor=mask_floor, despeckle=despeckle, b1=item.b1, uncertainty=uncertainty,
                                 goodness_of_fit=fit)
            noise = result.noise
            if noise is not None and noise.sigma is not None:
                noise_text = f"noise σ {noise.sigma:.4g} (from {noise.n_background} background voxels)"
            else:
                noise_text = "noise σ unknown"
                log.warning("slice %d: no noise-only background found (%s): the mask is %s of the 99th-percentile "
                            "fingerprint norm", item.slice, noise.reason if noise is not None else "not estimated",
                            mask_threshold if mask_threshold is not None else DEFAULT_MASK_THRESHOLD)
            if uncertainty or fit:
                if result.tissue_sigma is not None:
                    noise_text += f", {result.tissue_sigma:.4g} inside the tissue (for the sd and fit maps)"
                else:
                    log.warning("slice %d: the noise inside the tissue could not be measured (too few bright voxels): "
                                "the t1_sd/t2_sd/fit maps are 0", item.slice)
            rule = (f"RMS ≥ {mask_snr:g} σ and norm ≥ {mask_floor:g} × p99" if result.mask_rule == "noise"
                    else f"norm ≥ {mask_threshold if mask_threshold is not None else DEFAULT_MASK_THRESHOLD:g} "
                         f"× p99")
            if item.b1 is None:
                log.info("slice %d: maps of %d foreground voxels of %d; %s; mask %s", item.slice,
                         int(result.mask.sum()), result.mask.size, noise_text, rule)
            else:
                log.info("slice %d: maps of %d foreground voxels of %d with B1 %.3g…%.3g; %d foreground voxel(s) "
                         "without an estimate (B1 unknown or outside the estimator's range); %s; mask %s", item.slice,
                         int(result.mask.sum()), result.mask.size, *_finite_span(item.b1), result.n_unestimated,
                         noise_text, rule)
            yield MapSet(item.slice, result, item.header)
        else:
            yield item


def _finite_span(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))


def settings_meta(settings: GadgetSettings) -> str:
    """The ``DRONE_Settings`` meta value: every property the gadget ran with, as compact JSON
    ``{"model": "default", …, "maps": "t1,t2,m0", …}`` (:func:`~drone_gadgets.recon.settings.settings_to_properties`).
    A client reads it to check that the settings it asked for were applied (``drone send --set``)."""
    return json.dumps(settings_to_properties(settings), separators=(",", ":"))


def map_meta(name: str, data: np.ndarray, mask: np.ndarray, *, source: str = "",
             settings: GadgetSettings | None = None, noise_sigma: float | None = None,
             mask_rule: str = "", tissue_sigma: float | None = None) -> dict[str, str | list[str]]:
    """Meta attributes of one map image (MRD standard names and Gadgetron's ``GADGETRON_*`` ones).

    ``DataRole`` is ``Quantitative`` (pixel values are parametric: not to be rescaled downstream),
    with the units, an image comment, a series description, a display window and provenance.

    Args:
        name: ``"t1"``, ``"t2"``, ``"m0"`` or ``"b1"``.
        data: the map (for M0's window).
        mask: its foreground mask.
        source: free text naming the estimator, stored as ``DRONE_Estimator``.
        settings: the gadget's settings, stored as ``DRONE_Settings`` (:func:`settings_meta`) when given.
        noise_sigma: the slice's estimated noise σ per real channel (frames' units), stored as
            ``DRONE_NoiseSigma`` (``unknown`` when None).
        mask_rule: how the mask was drawn (``noise`` or ``fraction``), stored as ``DRONE_MaskRule`` when given.
        tissue_sigma: the noise σ inside the tissue that the t1_sd/t2_sd/fit maps use, stored as
            ``DRONE_NoiseSigmaTissue`` when known.
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
        "DRONE_NoiseSigma": "unknown" if noise_sigma is None else f"{noise_sigma:.6g}",
        **({"DRONE_MaskRule": mask_rule} if mask_rule else {}),
        **({"DRONE_NoiseSigmaTissue": f"{tissue_sigma:.6g}"} if tissue_sigma is not None else {}),
        **({"DRONE_Settings": settings_meta(settings)} if settings is not None else {}),
    }


def images(items: Iterable[Any], *, maps_to_emit: tuple[str, ...] = DEFAULT_MAPS,
           series_index: Mapping[str, int] | None = None, source: str = "",
           settings: GadgetSettings | None = None) -> Iterator[Any]:
    """Stage 4: :class:`MapSet` → one float32 ``ismrmrd.Image`` per map (others pass through).

    Args:
        items: output of :func:`maps`.
        maps_to_emit: which maps, in order (subset of :data:`~drone_gadgets.recon.settings.MAP_NAMES`, and ``"b1"``
            when the estimator estimates B1; the optional maps must have been computed by :func:`maps`).
        series_index: ``image_series_index`` per map name (default 100, 101, 102; ``b1`` 104; ``t1_sd``,
            ``t2_sd``, ``fit`` 105, 106, 107).
        source: estimator description stored in the meta (``DRONE_Estimator``).
        settings: the gadget's settings, stored in the meta (``DRONE_Settings``) when given.
    """
    series = dict(series_index) if series_index is not None else GadgetSettings().series_index
    series.setdefault("b1", GadgetSettings().b1_map_series_index)
    for item in items:
        if not isinstance(item, MapSet):
            yield item
            continue
        arrays = item.maps.as_dict()
        missing = [name for name in maps_to_emit if name not in arrays]
        if missing:
            raise ValueError(f"maps_to_emit: {', '.join(missing)} not among the maps of slice {item.slice} "
                             f"({', '.join(arrays)}); a B1 map needs an estimator that estimates B1, the "
                             f"t1_sd/t2_sd/fit maps must be asked of the maps stage")
        out = []
        for name in maps_to_emit:
            data = arrays[name] * np.float32(MAP_INFO[name].scale) if MAP_INFO[name].scale != 1.0 else arrays[name]
            out.append(make_image(data, item.header, image_series_index=series[name], image_index=item.slice + 1,
                                  meta=map_meta(name, data, item.maps.mask, source=source,
                                                settings=settings, noise_sigma=item.maps.noise_sigma,
                                                mask_rule=item.maps.mask_rule,
                                                tissue_sigma=item.maps.tissue_sigma)))
        yield from out


def pipeline(items: Iterable[Any], estimator: Any, settings: GadgetSettings | None = None, *,
             max_pending_bytes: int | None = None) -> Iterator[Any]:
    """The stages chained: messages in, map images (and passed-through messages) out.

    The B1 stages are in the chain when ``settings.b1`` asks for them (``stream``: :func:`b1_images`
    and :func:`with_b1`; ``file:``: :func:`with_b1` with the file, loaded here, so a bad file fails
    before the first message is read).

    Args:
        items: messages (``ismrmrd.Image``, ``ImageArray``, others).
        estimator: a ``DroneModel`` or ``Matcher``; its ``n_frames`` is the fingerprint length.
        settings: the gadget's settings (defaults when None).
        max_pending_bytes: bound on the frames held for incomplete slices (see :func:`trajectories`),
            and separately on what waits for B1 maps (see :func:`with_b1`).

    Raises:
        SettingsError: a ``b1`` mode the estimator cannot serve, a B1 file that cannot be used.
    """
    from .b1maps import check_b1_support
    from .estimators import check_map_support, describe_estimator

    settings = settings or GadgetSettings()
    check_b1_support(settings, estimator)
    check_map_support(settings, estimator)
    n_frames = int(estimator.n_frames)
    mode = settings.b1_mode
    stream: Iterable[Any] = items
    if mode == "stream":
        stream = b1_images(stream, series_index=settings.b1_series_index, scale=settings.b1_scale)
    stream = frames(stream, counter=settings.frame_counter, skip_b1_maps=mode != "stream")
    stream = trajectories(stream, n_frames=n_frames, counter=settings.frame_counter,
                          max_pending_bytes=max_pending_bytes)
    if mode in ("stream", "file"):
        stream = with_b1(stream, source=open_b1_source(settings), series_index=settings.b1_series_index,
                         max_pending_bytes=max_pending_bytes)
    stream = maps(stream, estimator, mask_threshold=settings.mask_threshold, mask_snr=settings.mask_snr,
                  mask_floor=settings.mask_floor, despeckle=settings.despeckle, maps_to_emit=settings.output_maps)
    return images(stream, maps_to_emit=settings.output_maps, series_index=settings.series_index,
                  source=describe_estimator(estimator), settings=settings)
