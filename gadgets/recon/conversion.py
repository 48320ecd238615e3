"""ISMRMRD messages ↔ numpy arrays, written to behave the same on ismrmrd 1.14 and 1.15 and on
numpy 1.26 and 2.

Layouts
-------
* ``ismrmrd.Image.data`` is ``(channels, z, y, x)`` with ``x`` = ``matrix_size[0]`` (readout).
  A frame here is its magnitude as ``(z, y, x)`` float32 (one channel: coil-combined images).
* A Gadgetron ``ImageArray`` (``gadgetron.types.ImageArray``) holds ``data`` of shape
  ``(RO, E1, E2, CHA, N, S, LOC)`` (complex64, read column-major) and ``headers`` of shape
  ``(N, S, LOC)``; its frame ``(n, s, loc)`` is ``data[..., n, s, loc]`` transposed to
  ``(CHA, E2, E1, RO)`` = ``(channels, z, y, x)``.

Version differences this module avoids
--------------------------------------
* ``Image.from_array``'s ``transpose`` default flipped from True (1.14) to False (1.15); images
  are built here with the ``Image(head=…, data=…)`` constructor from a 4-D ``(1, z, y, x)`` array,
  whose meaning is the same in both.
* ``Image.matrix_size`` is a method in 1.14 (returning the transposed data shape, with a
  warning) and a property in 1.15; it is never used here (``getHead().matrix_size`` or the data
  shape are).
* With numpy 2, ``np.array(..., copy=False)`` (used inside ``ismrmrd.Image.__init__`` and
  gadgetron's ImageArray writer) raises when a copy is needed; arrays are passed here already
  in the exact dtype, shape and C order, so no copy is ever needed.
* ismrmrd maps ``DATATYPE_INT`` (int32 on the wire) to ``np.dtype('int')`` (int64): such images
  are read by :func:`drone_gadgets.wire.external.read_image` instead, which reads int32.
"""

from __future__ import annotations

import ctypes
from typing import Any, Iterator, Mapping, Sequence

import ismrmrd
import numpy as np

from .errors import FrameError

__all__ = [
    "copy_header",
    "header_counter",
    "image_magnitude",
    "is_image_array",
    "image_array_frames",
    "make_image",
    "IMAGE_HEADER_SIZE",
]

#: Bytes of an ``ImageHeader`` on the wire.
IMAGE_HEADER_SIZE = ctypes.sizeof(ismrmrd.ImageHeader)
_IMTYPE_MAGNITUDE = 1
_IMTYPE_COMPLEX = 5
_DATATYPE_FLOAT = 5
_DATATYPE_CXFLOAT = 7


def copy_header(header: ismrmrd.ImageHeader) -> ismrmrd.ImageHeader:
    """An independent copy of an ``ImageHeader`` (a ctypes structure)."""
    return ismrmrd.ImageHeader.from_buffer_copy(header)


def header_counter(header: ismrmrd.ImageHeader, field: str) -> int:
    """The integer value of counter ``field`` (e.g. ``"repetition"``) of an ``ImageHeader``."""
    return int(getattr(header, field))


def _magnitude(data: np.ndarray, what: str) -> np.ndarray:
    """``(channels, z, y, x)`` array of any supported dtype → ``(z, y, x)`` float32 magnitudes."""
    if data.ndim != 4:
        raise FrameError(f"{what}: expected image data of shape (channels, z, y, x), got {data.shape}")
    if data.shape[0] != 1:
        raise FrameError(f"{what}: has {data.shape[0]} channels; the gadget needs coil-combined images "
                         f"(1 channel), e.g. after Gadgetron's coil combination")
    if data.dtype.kind not in "uifc":
        raise FrameError(f"{what}: unsupported data type {data.dtype}")
    if 0 in data.shape:
        raise FrameError(f"{what}: empty image (shape {data.shape})")
    plane = data[0]
    if plane.dtype.kind == "c":
        mag = np.abs(plane.astype(np.complex128, copy=False))
    else:
        mag = np.abs(plane.astype(np.float64, copy=False))
    return np.ascontiguousarray(mag, dtype=np.float32)


def image_magnitude(image: ismrmrd.Image) -> np.ndarray:
    """The magnitude of a one-channel ``ismrmrd.Image`` as ``(z, y, x)`` float32.

    Float, unsigned/signed integer and complex images are accepted (``|value|`` is taken).

    Raises:
        FrameError: more than one channel, an empty or non-numeric image.
    """
    return _magnitude(np.asarray(image.data), "image")


def is_image_array(item: Any) -> bool:
    """True for a Gadgetron ``ImageArray`` (``gadgetron.types.ImageArray``)."""
    try:
        from gadgetron.types import ImageArray
    except ImportError:  # pragma: no cover - gadgetron is a dependency of this package
        return False
    return isinstance(item, ImageArray)


def image_array_frames(array: Any) -> Iterator[tuple[ismrmrd.ImageHeader, np.ndarray]]:
    """The frames of a Gadgetron ``ImageArray``: ``(header, (z, y, x) float32 magnitude)`` each.

    Frames come in column-major order of ``(N, S, LOC)`` (N fastest), like the headers.

    Raises:
        FrameError: data not 1…7-D, headers that do not match ``(N, S, LOC)``, several channels.
    """
    data = np.asarray(array.data)
    if not 1 <= data.ndim <= 7:
        raise FrameError(f"ImageArray: expected data of shape (RO, E1, E2, CHA, N, S, LOC), got {data.shape}")
    shape7: tuple[int, ...] = tuple(int(d) for d in data.shape) + (1,) * (7 - data.ndim)
    data = data.reshape(shape7)
    n_n, n_s, n_loc = shape7[4], shape7[5], shape7[6]
    nsl = (n_n, n_s, n_loc)
    headers = np.asarray(array.headers, dtype=object)
    if headers.size != int(np.prod(nsl)):
        raise FrameError(f"ImageArray: {headers.size} headers for data of shape {data.shape} "
                         f"(expected N·S·LOC = {int(np.prod(nsl))})")
    headers = headers.reshape(nsl, order="F") if headers.shape != nsl else headers
    for loc in range(n_loc):
        for s in range(n_s):
            for n in range(n_n):
                block = np.transpose(data[:, :, :, :, n, s, loc], (3, 2, 1, 0))  # (CHA, E2, E1, RO)
                yield copy_header(headers[n, s, loc]), _magnitude(block, f"ImageArray frame (n={n}, s={s}, loc={loc})")


def make_image(data: np.ndarray, header: ismrmrd.ImageHeader, *, image_series_index: int, image_index: int,
               meta: Mapping[str, str | Sequence[str]]) -> ismrmrd.Image:
    """A float32 magnitude (or complex64 complex) ``ismrmrd.Image`` with the geometry and counters of ``header``.

    Args:
        data: ``(z, y, x)`` or ``(y, x)`` real values (converted to float32) or complex values
            (converted to complex64; the image is then of type COMPLEX).
        header: the header to copy (position, directions, field of view, counters, time stamps …);
            not modified.
        image_series_index, image_index: set on the copy.
        meta: meta attributes (strings or lists of strings).

    Returns:
        an image with ``data_type`` FLOAT (CXFLOAT), one channel, ``image_type`` MAGNITUDE (COMPLEX)
        and ``matrix_size`` = ``(x, y, z)`` of ``data``.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype.kind not in "uifc":
        raise TypeError(f"data: expected a real or complex (z, y, x) or (y, x) array, got {arr.dtype} {arr.shape}")
    is_complex = arr.dtype.kind == "c"
    # exact dtype/layout: no copy inside ismrmrd
    arr4 = np.ascontiguousarray(arr[None], dtype=np.complex64 if is_complex else np.float32)
    head = copy_header(header)
    head.data_type = _DATATYPE_CXFLOAT if is_complex else _DATATYPE_FLOAT
    head.channels = 1
    z, y, x = (int(n) for n in arr.shape)
    head.matrix_size[0], head.matrix_size[1], head.matrix_size[2] = x, y, z
    head.image_type = _IMTYPE_COMPLEX if is_complex else _IMTYPE_MAGNITUDE
    head.image_series_index = int(image_series_index)
    head.image_index = int(image_index)
    image = ismrmrd.Image(head=head, data=arr4)
    m = ismrmrd.Meta()
    for key, value in meta.items():
        m[str(key)] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    image.meta = m
    return image
