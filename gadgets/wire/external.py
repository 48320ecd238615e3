"""Gadgetron's external-node protocol, handled robustly around gadgetron-python 1.4.1.

Wire format (all little endian): every message starts with a ``uint16`` id. Gadgetron sends
CONFIG (2: ``uint32`` length + the ``<configuration>`` XML) and HEADER (3: ``uint32`` length +
the ISMRMRD XML header), then data messages (IMAGE 1022, IMAGE_ARRAY 1024, ACQUISITION 1008,
WAVEFORM 1026 …) and CLOSE (4). The Python side sends data back, then CLOSE; an ERROR
(8: ``uint64`` length + UTF-8 text) before its CLOSE makes Gadgetron fail the chain with that
text ("Errors received: …").

What this module fixes in gadgetron-python 1.4.1 (``gadgetron.external``):

* Its socket reader loops forever at 100 % CPU once the peer has closed (``recv`` returns
  ``b""`` and the loop asks again). :class:`RobustSocket` raises :class:`PeerGoneError` instead,
  so the process ends within moments of Gadgetron's death.
* An exception in the handler is never reported: the client's ``__exit__`` sends CLOSE and
  Gadgetron sees a clean end. :func:`serve` sends ERROR with the exception's text, then CLOSE.
* An unknown message id ends its iteration silently as if CLOSE had come; here it is an error.
* Messages are written piecewise, so a failure half-way (e.g. numpy 2 refusing the
  ``np.array(…, copy=False)`` in its ImageArray writer for data that is not complex64) leaves a
  corrupt stream. :func:`send` serialises each message completely in memory first, and the
  ImageArray writer registered by :func:`adopt` converts the data to complex64 beforehand.
* ``Connection.add_writer`` registers writers that always fail (a one-argument wrapper called
  with two arguments); :func:`adopt` inserts its writer directly.
* ismrmrd reads ``DATATYPE_INT`` images as int64 although the wire has int32, which shifts the
  rest of the stream; :func:`read_image` reads int32 (and returns float64 data for them).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable, Iterable, Iterator

import ismrmrd
import numpy as np

from ..recon.conversion import IMAGE_HEADER_SIZE
from ..recon.errors import GadgetFailed, PeerGoneError, ProtocolError, StalledError, StreamError

__all__ = [
    "MAX_ATTRIBUTE_BYTES",
    "MessageId",
    "WIRE_DTYPES",
    "RobustSocket",
    "adopt",
    "messages",
    "read_image",
    "send",
    "send_error",
    "run_session",
    "serve",
    "DRAIN_SECONDS",
]

log = logging.getLogger(__name__)

_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")

#: After an ERROR, how long the input is still read (and discarded) so that Gadgetron receives
#: the ERROR before the connection closes; ends earlier when Gadgetron closes its side.
DRAIN_SECONDS = 3.0
#: Bounds on sizes read from the stream (a corrupt length must not allocate terabytes).
MAX_ATTRIBUTE_BYTES = 1 << 28
_MAX_IMAGE_BYTES = 1 << 34


class MessageId:
    """Message ids of the Gadgetron/MRD stream protocol."""

    CONFIG = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ERROR = 8
    ACQUISITION = 1008
    IMAGE = 1022
    RECON_DATA = 1023
    IMAGE_ARRAY = 1024
    WAVEFORM = 1026
    BUCKET = 1050


#: ISMRMRD ``data_type`` → the pixels' dtype on the wire (little endian).
WIRE_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<u2"),  # USHORT
    2: np.dtype("<i2"),  # SHORT
    3: np.dtype("<u4"),  # UINT
    4: np.dtype("<i4"),  # INT (int32 on the wire; ismrmrd-python wrongly uses int64)
    5: np.dtype("<f4"),  # FLOAT
    6: np.dtype("<f8"),  # DOUBLE
    7: np.dtype("<c8"),  # CXFLOAT
    8: np.dtype("<c16"),  # CXDOUBLE
}


class RobustSocket:
    """Drop-in replacement for gadgetron-python's ``Connection.SocketWrapper``.

    ``read``/``write`` raise :class:`PeerGoneError` when the peer has closed or reset;
    :meth:`close` is idempotent, sends CLOSE once and never raises.

    Args:
        sock: the connected socket. TCP keep-alive is enabled so that a vanished remote host is
            noticed too.
        peer: who is at the other end, for messages ("Gadgetron", "the client").
        idle_timeout_s: a read that receives nothing for this long raises :class:`StalledError`;
            None (the default, for Gadgetron, which may be silent between repetitions for a
            long time): wait for ever.
        deadline: a ``time.monotonic()`` value after which reads raise :class:`StalledError`
            (bounds a connection that trickles bytes); None: no deadline.
    """

    def __init__(self, sock: socket.socket, *, peer: str = "Gadgetron", idle_timeout_s: float | None = None,
                 deadline: float | None = None) -> None:
        self.socket = sock
        self.peer = peer
        self.idle_timeout_s = idle_timeout_s
        self.deadline = deadline
        self._close_sent = False
        self._closed = False
        sock.settimeout(idle_timeout_s)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, name):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        except OSError:  # not a TCP socket (e.g. a socketpair in tests)
            pass

    def _timeout(self) -> float | None:
        if self.deadline is None:
            return self.idle_timeout_s
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StalledError(f"the connection to {self.peer} outlived its time limit; closing it")
        return left if self.idle_timeout_s is None else min(left, self.idle_timeout_s)

    def read(self, nbytes: int) -> bytes:
        """Exactly ``nbytes`` bytes.

        Raises:
            PeerGoneError: end of stream or a reset.
            StalledError: nothing received for ``idle_timeout_s``, or the deadline passed.
        """
        if nbytes <= 0:
            return b""
        buf = bytearray()
        while len(buf) < nbytes:
            try:
                self.socket.settimeout(self._timeout())
                chunk = self.socket.recv(min(nbytes - len(buf), 1 << 20))
            except TimeoutError:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise StalledError(f"the connection to {self.peer} outlived its time limit; closing it") from None
                raise StalledError(f"no data from {self.peer} for {self.idle_timeout_s:g} s ({len(buf)} of "
                                   f"{nbytes} bytes of a read received); closing the connection") from None
            except OSError as exc:
                raise PeerGoneError(f"the connection to {self.peer} failed while reading ({exc})") from None
            if not chunk:
                raise PeerGoneError(f"{self.peer} closed the connection in the middle of the stream "
                                    f"({len(buf)} of {nbytes} bytes of a read received)")
            buf += chunk
        return bytes(buf)

    def write(self, data: Any) -> None:
        """Send all of ``data`` (bytes-like or a ctypes object). Raises PeerGoneError on failure."""
        try:
            self.socket.sendall(data)
        except OSError as exc:
            raise PeerGoneError(f"the connection to {self.peer} failed while writing ({exc})") from None

    def send_close(self) -> None:
        """Send CLOSE (once)."""
        if not self._close_sent:
            self._close_sent = True
            self.write(_U16.pack(MessageId.CLOSE))

    def close(self, *, drain_seconds: float = 0.0) -> None:
        """Send CLOSE if not sent, end the write side, optionally drain the input, close.

        Args:
            drain_seconds: read and discard the input for at most this long (until Gadgetron
                closes its side), so that unread input does not make the kernel reset the
                connection before Gadgetron has read what was sent.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.socket.settimeout(2.0)  # never block on a peer that stopped reading
            self.send_close()
        except (PeerGoneError, OSError):
            pass
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if drain_seconds > 0:
            deadline = time.monotonic() + drain_seconds
            try:
                while (left := deadline - time.monotonic()) > 0:
                    self.socket.settimeout(left)
                    if not self.socket.recv(1 << 16):
                        break
            except OSError:  # timeout or reset: stop draining
                pass
        try:
            self.socket.close()
        except OSError:
            pass


def _read_u16(source: Any) -> int:
    return _U16.unpack(source.read(2))[0]


def read_image(source: Any, *, max_attribute_bytes: int = MAX_ATTRIBUTE_BYTES,
               max_image_bytes: int = _MAX_IMAGE_BYTES) -> ismrmrd.Image:
    """Read an IMAGE message body (after its id) from ``source`` (anything with ``read(n)``).

    Unlike ``ismrmrd.Image.deserialize_from`` this reads ``DATATYPE_INT`` pixels as int32 (the
    ISMRMRD definition; such images are returned with float64 data, which holds int32 exactly),
    refuses an unknown data type or absurd sizes with a :class:`ProtocolError`, and tolerates
    malformed meta XML (dropped with a warning; the frames' meta is not used).

    Sizes are checked before anything is allocated: meta attributes over ``max_attribute_bytes``
    or pixels over ``max_image_bytes`` raise :class:`ProtocolError`.
    """
    header = ismrmrd.ImageHeader.from_buffer_copy(source.read(IMAGE_HEADER_SIZE))
    (attr_len,) = _U64.unpack(source.read(8))
    if attr_len > max_attribute_bytes:
        raise ProtocolError(f"image meta attributes of {attr_len} bytes declared (limit {max_attribute_bytes}): "
                            f"refused")
    attributes = source.read(attr_len).rstrip(b"\x00").decode("utf-8", errors="replace")
    dtype = WIRE_DTYPES.get(int(header.data_type))
    if dtype is None:
        raise ProtocolError(f"image with unknown data_type {header.data_type}; expected one of "
                            f"{sorted(WIRE_DTYPES)} (ISMRMRD data types)")
    x, y, z = (int(v) for v in header.matrix_size)
    channels = int(header.channels)
    count = channels * x * y * z
    if count * dtype.itemsize > max_image_bytes:
        raise ProtocolError(f"image of {channels}×{z}×{y}×{x} {dtype} pixels ({count * dtype.itemsize} bytes) "
                            f"declared, over the limit of {max_image_bytes} bytes: refused")
    data = np.frombuffer(source.read(count * dtype.itemsize), dtype=dtype).reshape(channels, z, y, x)
    if int(header.data_type) == 4:
        data = data.astype(np.float64)
    data = np.array(data, dtype=data.dtype.newbyteorder("="), order="C")  # writable, native order
    image = ismrmrd.Image(head=header, data=data)
    if attributes:
        try:
            image.attribute_string = attributes
        except (ET.ParseError, AssertionError) as exc:
            log.warning("ignoring malformed image meta attributes (%s)", exc)
    return image


def messages(connection: Any) -> Iterator[Any]:
    """The data messages of a gadgetron ``Connection`` until CLOSE (not included).

    Uses the connection's readers (and :func:`read_image` for images) on its socket, which
    should be a :class:`RobustSocket` (see :func:`adopt`).

    Raises:
        ProtocolError: a message id that no reader knows (the stream cannot be resynchronised).
        PeerGoneError: Gadgetron closed the connection before CLOSE.
    """
    readers: dict[int, Callable[[Any], Any]] = {
        mid: reader for mid, reader in connection.readers.items() if mid != MessageId.CLOSE}
    readers[MessageId.IMAGE] = read_image
    source = connection.socket
    while True:
        mid = _read_u16(source)
        if mid == MessageId.CLOSE:
            return
        reader = readers.get(mid)
        if reader is None:
            raise ProtocolError(f"message id {mid} from Gadgetron is not one this gadget can read (known: "
                                f"{', '.join(str(m) for m in sorted(readers))}, and CLOSE {MessageId.CLOSE})")
        yield reader(source)


class _Buffer:
    """A write target that collects a message's bytes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: Any) -> None:
        self.chunks.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


def send(connection: Any, item: Any) -> None:
    """Send ``item`` with the connection's writers, serialised completely before any byte is sent.

    Raises:
        ProtocolError: no writer accepts the item (gadgetron-python cannot send it, e.g. an
            AcquisitionBucket, which therefore cannot pass through).
    """
    buffer = _Buffer()
    for accepts, writer in connection.writers:
        if accepts(item):
            writer(buffer, item)
            break
    else:
        raise ProtocolError(f"cannot send a {type(item).__module__}.{type(item).__name__} back to Gadgetron: "
                            f"gadgetron-python has no writer for it")
    connection.socket.write(buffer.getvalue())


def send_error(sock: RobustSocket, text: str) -> None:
    """Send an ERROR message (``uint16`` 8, ``uint64`` length, UTF-8 text)."""
    payload = text.encode("utf-8", errors="replace")
    sock.write(_U16.pack(MessageId.ERROR) + _U64.pack(len(payload)) + payload)


def _write_image_array_safely(destination: Any, array: Any) -> None:
    from gadgetron.types import ImageArray
    from gadgetron.types.image_array import write_image_array

    data = np.asarray(array.data, dtype=np.complex64)  # the 1.4.1 writer corrupts the stream otherwise
    headers = np.asarray(array.headers, dtype=object)
    write_image_array(destination, ImageArray(data=data, headers=headers, meta=list(array.meta or []),
                                              waveform=array.waveform, acq_headers=array.acq_headers))


def adopt(connection: Any) -> RobustSocket:
    """Make a gadgetron-python ``Connection`` robust, in place; return its new socket.

    Replaces its socket wrapper by a :class:`RobustSocket` (the connection's ``__exit__`` then
    closes it idempotently) and registers a safe ImageArray writer.
    """
    current = connection.socket
    if isinstance(current, RobustSocket):
        return current
    robust = RobustSocket(current.socket)
    connection.socket = robust
    try:
        from gadgetron.types import ImageArray
    except ImportError:  # pragma: no cover - gadgetron is a dependency of this package
        return robust
    # Not connection.add_writer(): in 1.4.1 it wraps the writer in a one-argument lambda that
    # send() calls with two (destination, item), so any writer added that way raises TypeError.
    connection.writers.insert(0, (lambda item: isinstance(item, ImageArray), _write_image_array_safely))
    return robust


def run_session(sock: RobustSocket, outputs: Callable[[], Iterable[Any]], write: Callable[[Any], None],
                report: Callable[[str], None], *, name: str = "drone_mrf",
                drain_seconds: float = DRAIN_SECONDS, drain: Callable[[], bool] | None = None) -> int:
    """Send every output of a session, then CLOSE; on a failure report it, then CLOSE.

    The one error policy of the gadget (towards Gadgetron) and of the server (towards its clients).

    Args:
        sock: the connection.
        outputs: called once, inside the error handling, for the iterable of messages to send
            (its set-up, e.g. settings and model, fails into the same reporting).
        write: sends one message.
        report: sends a failure's text (an ERROR message for Gadgetron, an ``ERROR`` TEXT for an
            MRD client).
        name: prefix of failure texts.
        drain_seconds: after a failure, how long the input is read and discarded so that the peer
            receives the report before the connection closes.
        drain: after a failure has been reported, called before CLOSE is sent: reads and discards the
            peer's input up to its own CLOSE (an MRD client that sends all its data before it reads
            then never writes into a closed connection); True when it got there, False when it could
            not (the input is then drained for ``drain_seconds`` after CLOSE, as without it).

    Returns:
        the number of messages sent.

    Raises:
        GadgetFailed: after reporting a failure (a :class:`StreamError` is reported with its
            message; any other exception as an internal error naming its type, with its traceback
            in the log), or when the peer has gone (nothing can be reported then).
    """
    sent = 0
    try:
        for item in outputs():
            write(item)
            sent += 1
    except PeerGoneError as exc:
        log.error("%s: %s; stopping", name, exc)
        sock.close()
        raise GadgetFailed(f"{name}: {exc}") from None
    except Exception as exc:  # every failure must reach the peer
        if isinstance(exc, StreamError):
            text = f"{name}: {exc}"
            log.error("%s", text)
        else:
            text = f"{name}: internal error: {type(exc).__name__}: {exc}"
            log.exception("%s", text)
        try:
            sock.socket.settimeout(5.0)
            report(text)
        except (PeerGoneError, OSError) as send_exc:
            log.error("%s: could not send the error report (%s)", name, send_exc)
        drained = drain() if drain is not None else False
        sock.close(drain_seconds=0.0 if drained else drain_seconds)
        raise GadgetFailed(text) from None
    sock.close()
    log.info("%s: done, %d message(s) sent", name, sent)
    return sent


def serve(connection: Any, run: Callable[[Iterator[Any]], Iterable[Any]], *, name: str = "drone_mrf") -> int:
    """Run a gadget over a connection: messages in, ``run(messages)`` out, errors reported.

    ``run`` receives the iterator of incoming data messages and returns an iterable of messages
    to send back; any setup it does (settings, model) happens inside the error handling.

    On success: sends every output, then CLOSE, and returns the number of messages sent. On any
    exception: sends ERROR with ``"<name>: <message>"`` (internal errors also name their type;
    their traceback goes to the log), then CLOSE, drains the input for up to
    :data:`DRAIN_SECONDS`, and raises :class:`GadgetFailed`. If Gadgetron has gone, logs that and
    raises :class:`GadgetFailed` at once. (The policy is :func:`run_session`'s.)
    """
    sock = adopt(connection)
    return run_session(sock, lambda: run(messages(connection)), lambda item: send(connection, item),
                       lambda text: send_error(sock, text), name=name)
