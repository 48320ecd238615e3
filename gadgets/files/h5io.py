"""ISMRMRD ``.h5`` files: images in, images out, in the standard layout.

Layout (what Gadgetron's client, the ISMRMRD C++ library and ``ismrmrd.Dataset`` write)::

    /<group>/xml                    the ISMRMRD XML header (1-element string dataset; optional)
    /<group>/<var>/header           (n,) compound ImageHeader records
    /<group>/<var>/attributes       (n,) variable-length meta XML strings
    /<group>/<var>/data             (n, channels, z, y, x) pixels; complex as {real, imag} pairs

Gadgetron's ``gadgetron_ismrmrd_client`` (and python-ismrmrd-server's client) store the images
they receive as ``/<group>/image_<image_series_index>``; the C++ ``ismrmrd_recon_cartesian_2d``
tool writes ``/dataset/cpp``. Any group and var name is read here.

Reading is done with h5py directly, not ``ismrmrd.Dataset.read_image``, so that it behaves the
same on ismrmrd 1.14 and 1.15 and on numpy 1.26 and 2: header records are copied field by field
by name (files whose compound type differs in order or padding are read too), complex data
stored as ``{real, imag}`` is converted explicitly, images are built with the
``Image(head=…, data=…)`` constructor from exact-dtype C-ordered 4-D arrays (no copy needed inside
ismrmrd, see :mod:`drone_gadgets.recon.conversion`), and malformed meta attributes are dropped with a
warning instead of failing the read. ``DATATYPE_INT`` images are returned with ``int64`` data
(ismrmrd-python's dtype for that type; the wire and the file hold int32).

Writing uses ``ismrmrd.Dataset.append_image`` under ``image_<image_series_index>`` plus
``write_xml_header``, into a temporary file that replaces the target only when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import ismrmrd
import numpy as np

__all__ = [
    "IMAGE_HEADER_DTYPE",
    "ImageVar",
    "list_groups",
    "list_image_vars",
    "image_groups",
    "read_xml_header",
    "iter_images",
    "read_images",
    "count_images",
    "write_images",
    "image_var_name",
    "minimal_header_xml",
    "H5FormatError",
    "acquisition_groups",
    "iter_acquisitions",
]

log = logging.getLogger(__name__)

#: The ISMRMRD ImageHeader as an HDF5/numpy compound type (packed, 198 bytes), as the ISMRMRD
#: libraries write it.
IMAGE_HEADER_DTYPE = np.dtype([
    ("version", "<u2"), ("data_type", "<u2"), ("flags", "<u8"), ("measurement_uid", "<u4"),
    ("matrix_size", "<u2", (3,)), ("field_of_view", "<f4", (3,)), ("channels", "<u2"),
    ("position", "<f4", (3,)), ("read_dir", "<f4", (3,)), ("phase_dir", "<f4", (3,)),
    ("slice_dir", "<f4", (3,)), ("patient_table_position", "<f4", (3,)),
    ("average", "<u2"), ("slice", "<u2"), ("contrast", "<u2"), ("phase", "<u2"), ("repetition", "<u2"),
    ("set", "<u2"), ("acquisition_time_stamp", "<u4"), ("physiology_time_stamp", "<u4", (3,)),
    ("image_type", "<u2"), ("image_index", "<u2"), ("image_series_index", "<u2"),
    ("user_int", "<i4", (8,)), ("user_float", "<f4", (8,)), ("attribute_string_len", "<u4"),
])
if IMAGE_HEADER_DTYPE.itemsize != ctypes.sizeof(ismrmrd.ImageHeader):  # pragma: no cover - library change
    raise ImportError(f"ismrmrd.ImageHeader is {ctypes.sizeof(ismrmrd.ImageHeader)} bytes, the ISMRMRD file "
                      f"layout {IMAGE_HEADER_DTYPE.itemsize}: unsupported ismrmrd version {ismrmrd.__name__}")

#: ISMRMRD data_type → numpy dtype of the pixels as stored (complex as numpy complex).
_DATA_TYPES: dict[int, np.dtype] = {
    1: np.dtype("<u2"), 2: np.dtype("<i2"), 3: np.dtype("<u4"), 4: np.dtype("<i4"),
    5: np.dtype("<f4"), 6: np.dtype("<f8"), 7: np.dtype("<c8"), 8: np.dtype("<c16"),
}
_DATA_TYPE_OF = {dt.newbyteorder("="): t for t, dt in _DATA_TYPES.items()}
_DATATYPE_INT = 4
#: Images read per HDF5 request (bounds memory for long files: 64 × 128 × 128 × 8 B = 8 MiB).
READ_CHUNK = 64
_IMAGE_MEMBERS = ("header", "attributes", "data")


class H5FormatError(ValueError):
    """A file, group or var is missing or not in the ISMRMRD image layout."""


@dataclass(frozen=True)
class ImageVar:
    """One image variable ``/<group>/<name>`` of a file.

    Attributes:
        group: the group (top-level, e.g. ``"dataset"``).
        name: the var (e.g. ``"image_0"``).
        count: number of images.
        shape: ``(channels, z, y, x)`` of every image.
        dtype: numpy dtype of the pixels (complex for ``{real, imag}`` pairs).
    """

    group: str
    name: str
    count: int
    shape: tuple[int, int, int, int]
    dtype: np.dtype

    @property
    def path(self) -> str:
        return f"/{self.group}/{self.name}"


# --------------------------------------------------------------------------- helpers
def _open(path: str | os.PathLike[str]) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ISMRMRD file {str(p)!r} does not exist")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise H5FormatError(f"{str(p)!r} is not an HDF5 file ({exc})") from None


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    """Numpy dtype of the pixels of an HDF5 data set (``{real, imag}`` compounds → complex)."""
    if dtype.names is not None and dtype.fields is not None:
        names = tuple(dtype.names)
        if len(names) == 2 and names[0] in ("real", "r") and names[1] in ("imag", "i"):
            base = dtype.fields[names[0]][0]
            if base.kind == "f" and base.itemsize in (4, 8):
                return np.dtype(np.complex64 if base.itemsize == 4 else np.complex128)
        raise H5FormatError(f"unsupported compound pixel type {dtype}")
    if dtype.kind == "c" or (dtype.kind in "uif" and dtype.newbyteorder("=") in _DATA_TYPE_OF):
        return dtype.newbyteorder("=")
    raise H5FormatError(f"unsupported pixel type {dtype}")


def _to_pixels(raw: np.ndarray) -> np.ndarray:
    """Raw records read from HDF5 → a native numpy array (complex for ``{real, imag}``)."""
    if raw.dtype.names is not None:
        real, imag = raw.dtype.names
        out = np.empty(raw.shape, dtype=_storage_dtype(raw.dtype))
        out.real = raw[real]
        out.imag = raw[imag]
        return out
    return raw.astype(raw.dtype.newbyteorder("="), copy=False)


def _is_image_var(node: Any) -> bool:
    return isinstance(node, h5py.Group) and all(isinstance(node.get(m), h5py.Dataset) for m in _IMAGE_MEMBERS)


def _describe_var(group: str, name: str, node: h5py.Group) -> ImageVar:
    data = node["data"]
    header = node["header"]
    if data.ndim != 5:
        raise H5FormatError(f"/{group}/{name}/data has shape {data.shape}; the ISMRMRD layout is "
                            f"(n, channels, z, y, x)")
    if header.ndim != 1 or header.shape[0] != data.shape[0] or node["attributes"].shape[:1] != header.shape:
        raise H5FormatError(f"/{group}/{name}: {header.shape} headers, {node['attributes'].shape} attributes and "
                            f"{data.shape[0]} images differ in count")
    if header.dtype.names is None or "data_type" not in header.dtype.names:
        raise H5FormatError(f"/{group}/{name}/header is {header.dtype}, not ISMRMRD ImageHeader records")
    shape = tuple(int(d) for d in data.shape[1:])
    return ImageVar(group, name, int(data.shape[0]), shape, _storage_dtype(data.dtype))  # type: ignore[arg-type]


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- listing
def list_groups(path: str | os.PathLike[str]) -> list[str]:
    """The top-level groups of an HDF5 file, in natural order."""
    with _open(path) as f:
        return sorted((k for k, v in f.items() if isinstance(v, h5py.Group)), key=_natural_key)


def list_image_vars(path: str | os.PathLike[str], group: str) -> list[ImageVar]:
    """The image vars (``header``/``attributes``/``data`` triples) of ``/<group>``, in natural order.

    Raises:
        H5FormatError: no such group, or a var whose members are inconsistent.
    """
    with _open(path) as f:
        node = f.get(group)
        if not isinstance(node, h5py.Group):
            raise H5FormatError(f"{str(path)!r} has no group {group!r}; its groups: "
                                f"{', '.join(sorted(k for k, v in f.items() if isinstance(v, h5py.Group))) or 'none'}")
        names = sorted((k for k, v in node.items() if _is_image_var(v)), key=_natural_key)
        return [_describe_var(group, k, node[k]) for k in names]


def image_groups(path: str | os.PathLike[str]) -> dict[str, list[ImageVar]]:
    """``{group: [image vars]}`` for every top-level group holding at least one image var."""
    out: dict[str, list[ImageVar]] = {}
    for g in list_groups(path):
        found = list_image_vars(path, g)
        if found:
            out[g] = found
    return out


def count_images(path: str | os.PathLike[str], group: str, variables: Sequence[str] | None = None) -> int:
    """Number of images in the selected vars of ``/<group>``."""
    return sum(v.count for v in _select(path, group, variables))


def read_xml_header(path: str | os.PathLike[str], group: str) -> bytes | None:
    """The ISMRMRD XML header ``/<group>/xml`` as bytes (trailing NULs removed), or None."""
    with _open(path) as f:
        node = f.get(group)
        if not isinstance(node, h5py.Group):
            raise H5FormatError(f"{str(path)!r} has no group {group!r}")
        ds = node.get("xml")
        if not isinstance(ds, h5py.Dataset):
            return None
        value = ds[()] if ds.shape == () else (ds[0] if ds.size else b"")
        if isinstance(value, np.ndarray):  # fixed-length char arrays
            value = value.tobytes()
        if isinstance(value, np.bytes_):
            value = bytes(value)
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise H5FormatError(f"/{group}/xml holds {type(value).__name__}, not a string")
        value = value.rstrip(b"\x00")
        return value or None


# --------------------------------------------------------------------------- acquisitions (raw data)
def acquisition_groups(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{group: number of acquisitions}`` of the groups holding raw data (``/<group>/data``, the
    acquisition records ``ismrmrd.Dataset.append_acquisition`` writes: ``head``, ``traj``, ``data``)."""
    out: dict[str, int] = {}
    with _open(path) as f:
        for name in sorted(f, key=_natural_key):
            node = f[name]
            data = node.get("data") if isinstance(node, h5py.Group) else None
            if isinstance(data, h5py.Dataset) and data.dtype.names and {"head", "data"} <= set(data.dtype.names):
                out[name] = int(data.shape[0])
    return out


def iter_acquisitions(path: str | os.PathLike[str], group: str, *, chunk: int = 1024) -> Iterator[ismrmrd.Acquisition]:
    """The acquisitions of ``/<group>/data`` in file order, read ``chunk`` records at a time
    (``ismrmrd.Dataset.read_acquisition`` reads one record per HDF5 access: ~6 ms each).

    Raises:
        H5FormatError: no acquisitions in the group, or a record whose data does not fit its header.
    """
    with _open(path) as f:
        node = f.get(group)
        data = node.get("data") if isinstance(node, h5py.Group) else None
        if not isinstance(data, h5py.Dataset) or not data.dtype.names or "head" not in data.dtype.names:
            raise H5FormatError(f"/{group} of {str(path)!r} holds no acquisitions (/{group}/data)")
        for start in range(0, data.shape[0], chunk):
            for i, record in enumerate(data[start:start + chunk]):
                acq = ismrmrd.Acquisition(record["head"])
                samples = np.asarray(record["data"], dtype=np.float32).view(np.complex64)
                shape = (int(acq.active_channels), int(acq.number_of_samples))
                if samples.size != shape[0] * shape[1]:
                    raise H5FormatError(f"/{group}/data[{start + i}]: {samples.size} samples, but its header says "
                                        f"{shape[0]} channels × {shape[1]} samples")
                acq.data[:] = samples.reshape(shape)
                if acq.traj.size:
                    acq.traj[:] = np.asarray(record["traj"], dtype=np.float32).reshape(acq.traj.shape)
                yield acq


# --------------------------------------------------------------------------- reading
def _select(path: str | os.PathLike[str], group: str, variables: Sequence[str] | None) -> list[ImageVar]:
    found = list_image_vars(path, group)
    if variables is None:
        return found
    by_name = {v.name: v for v in found}
    missing = [v for v in variables if v not in by_name]
    if missing:
        raise H5FormatError(f"/{group} has no image var {', '.join(map(repr, missing))}; it has "
                            f"{', '.join(by_name) or 'none'}")
    return [by_name[v] for v in variables]


def _header_of(record: np.ndarray) -> ismrmrd.ImageHeader:
    """An ``ImageHeader`` from one compound record (copied by field name)."""
    if record.dtype == IMAGE_HEADER_DTYPE:
        return ismrmrd.ImageHeader.from_buffer_copy(record.tobytes())
    packed = np.zeros((), dtype=IMAGE_HEADER_DTYPE)
    for name in IMAGE_HEADER_DTYPE.names or ():
        if name in (record.dtype.names or ()):
            packed[name] = record[name]
    return ismrmrd.ImageHeader.from_buffer_copy(packed.tobytes())


def _attributes_text(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).rstrip("\x00").strip() if value is not None else ""


def _make_image(header: ismrmrd.ImageHeader, pixels: np.ndarray, attributes: str, where: str) -> ismrmrd.Image:
    data = np.ascontiguousarray(pixels)
    data_type = _DATA_TYPE_OF.get(data.dtype.newbyteorder("="))
    if data_type is None:  # pragma: no cover - _storage_dtype refused it already
        raise H5FormatError(f"{where}: unsupported pixel type {data.dtype}")
    if data_type == _DATATYPE_INT:
        data = data.astype(np.dtype("int"))  # ismrmrd-python's dtype for DATATYPE_INT
    elif data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    if int(header.data_type) != data_type:
        log.debug("%s: header data_type %d but the pixels are %s; using %d", where, header.data_type, data.dtype,
                  data_type)
    header.data_type = data_type
    header.channels = data.shape[0]
    header.matrix_size[0], header.matrix_size[1], header.matrix_size[2] = data.shape[3], data.shape[2], data.shape[1]
    image = ismrmrd.Image(head=header, data=data)
    if attributes:
        try:
            image.attribute_string = attributes
        except (ET.ParseError, AssertionError, TypeError) as exc:
            log.warning("%s: ignoring malformed meta attributes (%s)", where, exc)
    return image


def iter_images(path: str | os.PathLike[str], group: str, variables: Sequence[str] | None = None, *,
                chunk: int = READ_CHUNK) -> Iterator[ismrmrd.Image]:
    """The images of ``/<group>`` (all its image vars in natural order, or ``variables``), lazily.

    Each image is an ``ismrmrd.Image`` whose header is the stored one (``data_type``,
    ``channels`` and ``matrix_size`` made consistent with the pixels), data
    ``(channels, z, y, x)`` and meta from the stored attributes.

    Raises:
        FileNotFoundError, H5FormatError: a missing file, group or var, or not the ISMRMRD layout.
    """
    if chunk < 1:
        raise ValueError(f"chunk: expected a positive int, got {chunk!r}")
    selected = _select(path, group, variables)
    with _open(path) as f:
        for var in selected:
            node = f[group][var.name]
            for start in range(0, var.count, chunk):
                stop = min(start + chunk, var.count)
                headers = node["header"][start:stop]
                attributes = node["attributes"][start:stop]
                pixels = _to_pixels(node["data"][start:stop])
                for i in range(stop - start):
                    where = f"{var.path}[{start + i}]"
                    yield _make_image(_header_of(headers[i]), pixels[i], _attributes_text(attributes[i]), where)


def read_images(path: str | os.PathLike[str], group: str, variables: Sequence[str] | None = None,
                ) -> list[ismrmrd.Image]:
    """All images of ``/<group>`` (see :func:`iter_images`) as a list."""
    return list(iter_images(path, group, variables))


# --------------------------------------------------------------------------- writing
def image_var_name(image: ismrmrd.Image) -> str:
    """``image_<image_series_index>``: the var Gadgetron's client stores an image under."""
    return f"image_{int(image.image_series_index)}"


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it on success and is removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # h5py creates it
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_images(path: str | os.PathLike[str], images: Iterable[ismrmrd.Image], *, group: str = "dataset",
                 xml_header: bytes | str | None = None) -> dict[str, int]:
    """Write images as Gadgetron's client does: ``/<group>/image_<image_series_index>``.

    The file is written completely under a temporary name beside ``path`` and then renamed, so
    ``path`` is either the previous file or the complete new one, never half-written. An existing
    file is replaced.

    Args:
        path: the output ``.h5``.
        images: ``ismrmrd.Image`` in order (each var keeps its images' order).
        group: the group to write.
        xml_header: stored as ``/<group>/xml`` when given.

    Returns:
        ``{var name: number of images}``.
    """
    counts: dict[str, int] = {}
    target = Path(path)
    with _replacing(target) as tmp:
        dataset = ismrmrd.Dataset(str(tmp), group, True)
        try:
            if xml_header is not None:
                text = xml_header.encode("utf-8") if isinstance(xml_header, str) else bytes(xml_header)
                dataset.write_xml_header(text)
            for image in images:
                name = image_var_name(image)
                dataset.append_image(name, image)
                counts[name] = counts.get(name, 0) + 1
        finally:
            dataset.close()
        if not counts and xml_header is None:  # nothing written: still a valid file with the group
            with h5py.File(tmp, "a") as f:
                f.require_group(group)
    return counts


def minimal_header_xml(image: ismrmrd.Image, *, n_slices: int = 1) -> bytes:
    """A minimal valid ISMRMRD header for images that came without one (no sequenceParameters).

    Matrix and field of view are the image's; encoded and recon space are equal.
    """
    head = image.getHead()
    x, y, z = (int(v) for v in head.matrix_size)
    fx, fy, fz = (float(v) for v in head.field_of_view)
    fx, fy, fz = (fx or float(x)), (fy or float(y)), (fz or 1.0)
    space = (f"<matrixSize><x>{x}</x><y>{y}</y><z>{z}</z></matrixSize>"
             f"<fieldOfView_mm><x>{fx!r}</x><y>{fy!r}</y><z>{fz!r}</z></fieldOfView_mm>")
    return ('<?xml version="1.0"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
            "</experimentalConditions><encoding>"
            f"<encodedSpace>{space}</encodedSpace><reconSpace>{space}</reconSpace>"
            f"<encodingLimits><slice><minimum>0</minimum><maximum>{max(n_slices - 1, 0)}</maximum>"
            "<center>0</center></slice></encodingLimits><trajectory>cartesian</trajectory></encoding>"
            "</ismrmrdHeader>").encode()
