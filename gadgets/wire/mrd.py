"""The MRD (ISMRMRD) streaming protocol between a client and a reconstruction server.

This is the protocol Gadgetron's server speaks to ``gadgetron_ismrmrd_client`` and that the
FIRE-style python-ismrmrd-server speaks to its ``client.py`` (port 9002 by default). Every message
is a ``uint16`` id (little endian) and a body:

====  ============  ================================================================
id    name          body
====  ============  ================================================================
1     CONFIG_FILE   1024 bytes: the chain's name, UTF-8, NUL-padded
2     CONFIG_TEXT   ``uint32`` length + the chain's text (XML or JSON)
3     HEADER        ``uint32`` length + the ISMRMRD XML header
4     CLOSE         nothing: the end of the sender's stream
5     TEXT          ``uint32`` length + UTF-8 text (logging; a length may count a trailing NUL)
1008  ACQUISITION   340-byte header, trajectory (float32), data (complex64)
1022  IMAGE         198-byte header, ``uint64`` meta length + meta XML, pixels
1026  WAVEFORM      40-byte header, data (uint32)
====  ============  ================================================================

The MRD protocol has no error message: a server reports a failure as a TEXT, then CLOSE. Two forms
are in use (:func:`is_error_text`, :func:`error_message`): ``ERROR <message>`` (python-ismrmrd-server's
logging convention; ``drone serve`` sends it, :func:`error_text`) and Gadgetron's
``[<location>] ERROR: <message>``, where a gadget's own report is wrapped as
``[<location>] ERROR: Errors received: \n<message>\n`` (Gadgetron 4.7).

**Reading** untrusted input (the server's side) is :class:`MessageReader`: every declared length
and every size an ACQUISITION, IMAGE or WAVEFORM header implies is checked against
:class:`Limits` *before* anything is allocated or read, and an unknown id is refused.
``ismrmrd.serialization.ProtocolDeserializer`` is not used for this: it allocates an image's or
acquisition's arrays from the sizes in its header before reading the data, bounds no length, and
reads ``DATATYPE_INT`` pixels as int64 (the wire has int32). It reads the server's replies on the
client side (:mod:`drone_gadgets.apps.client`), where the peer is trusted.

**Writing** (:func:`encode`) is done here, byte for byte as ismrmrd's ``ProtocolSerializer``
writes (ismrmrd ≥ 1.15; a test compares them), with ismrmrd's own ``serialize_into`` for images,
acquisitions and waveforms: it needs no ``ismrmrd.serialization``, which ismrmrd-python 1.14.0 and
1.14.1 (1.14.0 is the Gadgetron images') do not have, and 1.14.2 has without CONFIG_FILE and
CONFIG_TEXT. Each message is serialised completely in memory before it is sent, so a failure can
never leave half a message on the wire.
"""

from __future__ import annotations

import ctypes
import io
import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping

import ismrmrd
import numpy as np

from ..recon.errors import ProtocolError
from .external import read_image

__all__ = [
    "MrdId",
    "Limits",
    "ConfigFile",
    "ConfigText",
    "Header",
    "Text",
    "MessageReader",
    "encode",
    "encode_header",
    "encode_config_file",
    "StreamDeserializer",
    "error_text",
    "is_error_text",
    "error_message",
    "parameters_from_json",
    "serialization",
    "CONFIG_FILE_BYTES",
]

#: Size of a CONFIG_FILE body.
CONFIG_FILE_BYTES = 1024

_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")
_ACQ_HEADER_SIZE = ctypes.sizeof(ismrmrd.AcquisitionHeader)
_WAVEFORM_HEADER_SIZE = ctypes.sizeof(ismrmrd.WaveformHeader)
_ERROR_PREFIX = "ERROR "
#: Gadgetron's error TEXT: ``[<location>] ERROR: <message>``; a gadget's ERROR is ``Errors received: \n<text>``.
_GADGETRON_ERROR = "ERROR:"
_GADGETRON_RECEIVED = "Errors received:"


class MrdId(IntEnum):
    """Message ids of the MRD streaming protocol."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may declare or hold (the server refuses anything larger).

    Attributes:
        max_text_bytes: CONFIG_TEXT, HEADER and TEXT bodies.
        max_attribute_bytes: an image's meta XML.
        max_image_bytes: an image's pixels (the default admits a 2048×2048×32 float32 volume).
        max_acquisition_bytes: an acquisition's trajectory plus data.
        max_waveform_bytes: a waveform's data.
        max_pending_bytes: frames held for slices whose fingerprint is not complete yet.
        idle_timeout_s: a connection that sends nothing for this long is closed with an ERROR.
        max_connection_s: a connection open for longer than this is closed with an ERROR.
    """

    max_text_bytes: int = 16 << 20
    max_attribute_bytes: int = 16 << 20
    max_image_bytes: int = 512 << 20
    max_acquisition_bytes: int = 64 << 20
    max_waveform_bytes: int = 64 << 20
    max_pending_bytes: int = 2 << 30
    idle_timeout_s: float = 120.0
    max_connection_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("max_text_bytes", "max_attribute_bytes", "max_image_bytes", "max_acquisition_bytes",
                     "max_waveform_bytes", "max_pending_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}: expected a positive int, got {value!r}")
        for name in ("idle_timeout_s", "max_connection_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Limits.{name}: expected a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class ConfigFile:
    """CONFIG_FILE: the name of a chain the server knows."""

    name: str


@dataclass(frozen=True)
class ConfigText:
    """CONFIG_TEXT: a chain's text (a Gadgetron chain XML, a ``<configuration>`` or JSON)."""

    text: str


@dataclass(frozen=True)
class Header:
    """HEADER: the ISMRMRD XML header, as received (bytes, trailing NULs removed)."""

    xml: bytes


@dataclass(frozen=True)
class Text:
    """TEXT: free text (logging, or JSON parameters before the data)."""

    text: str


# =========================================================================== reading
class MessageReader:
    """Reads MRD messages from an untrusted byte source, refusing absurd sizes before allocating.

    Args:
        read: ``read(n) -> bytes`` returning exactly ``n`` bytes (e.g. :meth:`RobustSocket.read`);
            it raises on the end of the stream.
        limits: the bounds.

    Example::

        reader = MessageReader(sock.read, Limits())
        while (message := reader.read()) is not None:   # None: CLOSE
            ...
    """

    def __init__(self, read: Callable[[int], bytes], limits: Limits | None = None) -> None:
        self._read = read
        self.limits = limits or Limits()
        self.messages = 0

    def read(self) -> Any:
        """The next message: :class:`ConfigFile`, :class:`ConfigText`, :class:`Header`, :class:`Text`,
        ``ismrmrd.Image``, ``ismrmrd.Acquisition``, ``ismrmrd.Waveform``; None for CLOSE.

        Raises:
            ProtocolError: an unknown id, a size over the limits, text that is not UTF-8, or an
                image with an unknown data type.
        """
        (mid,) = _U16.unpack(self._read(2))
        self.messages += 1
        if mid == MrdId.CLOSE:
            return None
        if mid == MrdId.IMAGE:
            return read_image(_Source(self._read), max_attribute_bytes=self.limits.max_attribute_bytes,
                              max_image_bytes=self.limits.max_image_bytes)
        if mid == MrdId.CONFIG_FILE:
            raw = self._read(CONFIG_FILE_BYTES)
            return ConfigFile(_decode(raw.split(b"\x00", 1)[0], "CONFIG_FILE").strip())
        if mid == MrdId.CONFIG_TEXT:
            return ConfigText(_decode(self._string("CONFIG_TEXT"), "CONFIG_TEXT"))
        if mid == MrdId.HEADER:
            return Header(self._string("HEADER"))
        if mid == MrdId.TEXT:
            return Text(_decode(self._string("TEXT"), "TEXT"))
        if mid == MrdId.ACQUISITION:
            return self._acquisition()
        if mid == MrdId.WAVEFORM:
            return self._waveform()
        known = ", ".join(f"{m.value} ({m.name})" for m in MrdId)
        raise ProtocolError(f"unknown message id {mid} (message {self.messages} of the stream); the MRD protocol "
                            f"has {known}")

    def _string(self, what: str) -> bytes:
        (length,) = _U32.unpack(self._read(4))
        if length > self.limits.max_text_bytes:
            raise ProtocolError(f"{what} of {length} bytes declared, over the limit of "
                                f"{self.limits.max_text_bytes} bytes: refused")
        return self._read(length).rstrip(b"\x00")

    def _acquisition(self) -> ismrmrd.Acquisition:
        raw = self._read(_ACQ_HEADER_SIZE)
        head = ismrmrd.AcquisitionHeader.from_buffer_copy(raw)
        samples, channels, dims = int(head.number_of_samples), int(head.active_channels), int(
            head.trajectory_dimensions)
        nbytes = samples * dims * 4 + samples * channels * 8
        if nbytes > self.limits.max_acquisition_bytes:
            raise ProtocolError(f"ACQUISITION of {channels} channel(s) × {samples} samples (trajectory dimensions "
                                f"{dims}: {nbytes} bytes) declared, over the limit of "
                                f"{self.limits.max_acquisition_bytes} bytes: refused")
        return ismrmrd.Acquisition.deserialize_from(_Prefixed(raw, self._read))

    def _waveform(self) -> ismrmrd.Waveform:
        raw = self._read(_WAVEFORM_HEADER_SIZE)
        head = ismrmrd.WaveformHeader.from_buffer_copy(raw)
        nbytes = int(head.channels) * int(head.number_of_samples) * 4
        if nbytes > self.limits.max_waveform_bytes:
            raise ProtocolError(f"WAVEFORM of {head.channels} channel(s) × {head.number_of_samples} samples "
                                f"({nbytes} bytes) declared, over the limit of {self.limits.max_waveform_bytes} "
                                f"bytes: refused")
        return ismrmrd.Waveform.deserialize_from(_Prefixed(raw, self._read))


class _Source:
    """``read(n)`` as an object with a ``read`` method (what :func:`read_image` takes)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read


class _Prefixed:
    """A ``read_exactly`` that first returns bytes already read (the header), then reads on."""

    def __init__(self, first: bytes, read: Callable[[int], bytes]) -> None:
        self._first: bytes | None = first
        self._read = read

    def __call__(self, n: int) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if n != len(first):  # pragma: no cover - ismrmrd reads the header first, whole
                raise ProtocolError(f"internal: expected a read of the {len(first)}-byte header, got {n}")
            return first
        return self._read(n)


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not UTF-8 text ({exc})") from None


# =========================================================================== writing
def serialization() -> Any:
    """What reads a trusted peer's MRD stream (``drone send`` reads the server's replies with its
    ``ProtocolDeserializer(stream).deserialize()``): ``ismrmrd.serialization`` where the installed
    ismrmrd has it (≥ 1.14.2), else a stand-in whose ``ProtocolDeserializer`` is
    :class:`StreamDeserializer` (ismrmrd 1.14.0, the Gadgetron images', and 1.14.1)."""
    try:
        from ismrmrd import serialization as module
    except ImportError:
        return SimpleNamespace(ProtocolDeserializer=StreamDeserializer)
    if not hasattr(module, "ProtocolDeserializer"):  # pragma: no cover - a partial ismrmrd.serialization
        return SimpleNamespace(ProtocolDeserializer=StreamDeserializer)
    return module


class StreamDeserializer:
    """``ismrmrd.serialization.ProtocolDeserializer``'s interface over :class:`MessageReader`.

    Args:
        stream: a binary file (e.g. ``socket.makefile("rb")``).
        limits: the bounds (the defaults of :class:`Limits`).

    :meth:`deserialize` yields ``ismrmrd.Image``, ``ismrmrd.Acquisition``, ``ismrmrd.Waveform``,
    ``str`` for a TEXT, and :class:`ConfigFile`, :class:`ConfigText` or :class:`Header` for those
    messages, until CLOSE. Unlike ismrmrd's, it reads ``DATATYPE_INT`` pixels as int32 (the wire's)
    and refuses sizes over ``limits`` (:class:`ProtocolError`); the stream's end before CLOSE raises
    ``EOFError``, as ismrmrd's does.
    """

    def __init__(self, stream: Any, limits: Limits | None = None) -> None:
        self._stream = stream
        self._limits = limits

    def _read(self, n: int) -> bytes:
        data = self._stream.read(n)
        if data is None or len(data) < n:
            raise EOFError(f"the stream ended in the middle of a message ({len(data or b'')} of {n} bytes)")
        return bytes(data)

    def deserialize(self) -> Iterator[Any]:
        """The messages, in order, until CLOSE (not yielded)."""
        reader = MessageReader(self._read, self._limits)
        while (message := reader.read()) is not None:
            yield message.text if isinstance(message, Text) else message


def encode(item: Any) -> bytes:
    """One message, complete: ``ismrmrd.Image``/``Acquisition``/``Waveform``, :class:`ConfigFile`,
    :class:`ConfigText`, :class:`Text` or ``str`` (TEXT), :class:`Header`, or None (CLOSE).

    Images whose data type is ``DATATYPE_INT`` are sent as ``DATATYPE_DOUBLE`` (exact), since
    ismrmrd-python writes int32 images with int64 pixels.

    Raises:
        TypeError: anything else.
        ValueError: a :class:`ConfigFile` name that does not fit (:func:`encode_config_file`).
    """
    if item is None:
        return _U16.pack(MrdId.CLOSE)
    if isinstance(item, Header):
        return encode_header(item.xml)
    if isinstance(item, ConfigFile):
        return encode_config_file(item.name)
    if isinstance(item, ConfigText):
        return _U16.pack(MrdId.CONFIG_TEXT) + _length_prefixed(item.text.encode("utf-8"), "CONFIG_TEXT")
    if isinstance(item, (Text, str)):
        text = item.text if isinstance(item, Text) else item
        return _U16.pack(MrdId.TEXT) + _length_prefixed(text.encode("utf-8"), "TEXT")
    if isinstance(item, ismrmrd.Image):
        mid, obj = MrdId.IMAGE, (_as_double(item) if int(item.data_type) == ismrmrd.DATATYPE_INT else item)
    elif isinstance(item, ismrmrd.Acquisition):
        mid, obj = MrdId.ACQUISITION, item
    elif isinstance(item, ismrmrd.Waveform):
        mid, obj = MrdId.WAVEFORM, item
    else:
        raise TypeError(f"item: cannot send a {type(item).__module__}.{type(item).__name__} in the MRD protocol")
    buffer = io.BytesIO()
    buffer.write(_U16.pack(mid))
    obj.serialize_into(buffer.write)
    return buffer.getvalue()


def encode_header(xml: bytes | str) -> bytes:
    """HEADER with the XML exactly as given (ProtocolSerializer would parse and re-write it)."""
    payload = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    payload = payload.rstrip(b"\x00")
    return _U16.pack(MrdId.HEADER) + _length_prefixed(payload, "HEADER")


def encode_config_file(name: str) -> bytes:
    """CONFIG_FILE: ``name`` UTF-8, NUL-padded to :data:`CONFIG_FILE_BYTES` (as ismrmrd ≥ 1.15 writes it).

    Raises:
        ValueError: ``name`` holds a NUL (the reader would cut it there) or is :data:`CONFIG_FILE_BYTES`
            bytes or longer encoded (the padding needs at least one NUL).
    """
    raw = name.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError(f"CONFIG_FILE name: expected text without NUL, got {name[:80]!r}")
    if len(raw) >= CONFIG_FILE_BYTES:
        raise ValueError(f"CONFIG_FILE name: expected at most {CONFIG_FILE_BYTES - 1} bytes of UTF-8, got "
                         f"{len(raw)}: {name[:80]!r}...")
    return _U16.pack(MrdId.CONFIG_FILE) + raw.ljust(CONFIG_FILE_BYTES, b"\x00")


def _length_prefixed(payload: bytes, what: str) -> bytes:
    if len(payload) > 0xFFFFFFFF:  # pragma: no cover - 4 GiB of text
        raise ValueError(f"{what}: at most 4 GiB - 1 bytes, got {len(payload)}")
    return _U32.pack(len(payload)) + payload


def _as_double(image: ismrmrd.Image) -> ismrmrd.Image:
    head = image.getHead()
    head.data_type = ismrmrd.DATATYPE_DOUBLE
    out = ismrmrd.Image(head=head, data=np.asarray(image.data, dtype=np.float64))
    out.attribute_string = image.attribute_string
    return out


def error_text(message: str) -> str:
    """The TEXT a server sends for a failure: ``"ERROR <message>"``."""
    return _ERROR_PREFIX + message


def _gadgetron_error(text: str) -> tuple[str, str] | None:
    """``(location, message)`` of Gadgetron's ``[<location>] ERROR: <message>``, else None."""
    stripped = text.strip().rstrip("\x00")
    if not stripped.startswith("["):
        return None
    location, sep, rest = stripped[1:].partition("]")
    rest = rest.lstrip()
    if not sep or "\n" in location or not rest.startswith(_GADGETRON_ERROR):
        return None
    return location.strip(), rest[len(_GADGETRON_ERROR):].strip()


def is_error_text(text: str) -> bool:
    """True for a TEXT reporting a failure: ``ERROR …`` (:func:`error_text`, python-ismrmrd-server's error
    logging) or Gadgetron's ``[<location>] ERROR: …`` (module docstring)."""
    return text.lstrip().startswith(_ERROR_PREFIX.strip()) or _gadgetron_error(text) is not None


def error_message(text: str) -> str:
    """The message of an error TEXT (:func:`is_error_text`), without its framing.

    * ``ERROR drone_mrf: duplicate frame …`` → ``drone_mrf: duplicate frame …``
    * ``[Connection Main Thread/Stream/external] ERROR: Errors received: \ndrone_mrf: duplicate frame …\n``
      (a gadget's report, wrapped by Gadgetron) → ``drone_mrf: duplicate frame …``
    * ``[Connection Main Thread/Stream/external] ERROR: Received illegal message id from external peer: 0``
      (Gadgetron's own) → ``Gadgetron (Connection Main Thread/Stream/external): Received illegal …``

    Any other text is returned stripped.
    """
    found = _gadgetron_error(text)
    if found is not None:
        location, message = found
        if message.startswith(_GADGETRON_RECEIVED):
            inner = message[len(_GADGETRON_RECEIVED):].strip()
            if inner:
                return inner
        return f"Gadgetron ({location}): {message}" if location else f"Gadgetron: {message}"
    stripped = text.strip().rstrip("\x00").strip()
    prefix = _ERROR_PREFIX.strip()
    if stripped.startswith(prefix):
        rest = stripped[len(prefix):].lstrip(" :")
        return rest or stripped
    return stripped


def parameters_from_json(text: str) -> dict[str, str] | None:
    """Gadget properties from a JSON text: ``{"parameters": {name: value}}`` (python-ismrmrd-server's
    additional config) or ``{name: value}``; None when ``text`` is not a JSON object.

    Raises:
        ProtocolError: a JSON object whose parameters are not a flat object of scalars.
    """
    stripped = text.strip().rstrip("\x00")
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    params = data.get("parameters", data)
    if not isinstance(params, Mapping):
        raise ProtocolError(f"JSON configuration: 'parameters' must be an object, got {type(params).__name__}")
    out: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise ProtocolError(f"JSON configuration: parameter {name!r} must be a string or number, "
                                f"got {type(value).__name__}")
        out[str(name)] = str(value)
    return out
