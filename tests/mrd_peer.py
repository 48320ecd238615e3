"""Test helpers for ``drone serve``: a raw MRD client and a small phantom scan as messages.

:class:`RawClient` writes bytes as given (so malformed streams can be sent) and reads the server's
replies with ismrmrd's own ``ProtocolDeserializer`` — a reader independent of the server's
:class:`~drone_gadgets.wire.mrd.MessageReader` — where the installed ismrmrd has one (≥ 1.14.2); with
ismrmrd 1.14.0/1.14.1 (the Gadgetron images' environment, ``make test-compat``) it is
:class:`~drone_gadgets.wire.mrd.StreamDeserializer`, built on that reader (:data:`INDEPENDENT_READER`).
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ismrmrd
import numpy as np

from drone_gadgets.wire.mrd import ConfigFile, Header, StreamDeserializer, Text, encode, serialization
from gadgetron_peer import frame_header, header_xml, image_of, phantom, phantom_frames

__all__ = ["Reply", "RawClient", "FireClient", "scan_messages", "scan_message_list", "schedule_header", "exchange",
           "U16", "U32", "U64"]

U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
#: ismrmrd's ``ProtocolDeserializer``, or :class:`StreamDeserializer` where ismrmrd has none.
ProtocolDeserializer = serialization().ProtocolDeserializer
#: Whether replies are read by a reader independent of the server's (ismrmrd's own).
INDEPENDENT_READER = ProtocolDeserializer is not StreamDeserializer
#: Pixel scale of the phantom frames (M0 values × this).
SCALE = 1000.0


@dataclass
class Reply:
    """What the server sent: images, TEXT messages, whether CLOSE came, and when the reply ended."""

    images: list[ismrmrd.Image] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed: bool = False
    failure: str = ""
    seconds: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [t for t in self.texts if t.startswith("ERROR")]


def _read_reply(stream: Any, reply: Reply, start: float) -> None:
    """Read the server's messages into ``reply`` until CLOSE (``closed``) or the stream's end (``failure``)."""
    try:
        for item in ProtocolDeserializer(stream).deserialize():
            if isinstance(item, ismrmrd.Image):
                reply.images.append(item)
            elif isinstance(item, str):
                reply.texts.append(item.rstrip("\x00"))
        reply.closed = True
    except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
        reply.failure = f"{type(exc).__name__}: {exc}"
    finally:
        reply.seconds = time.perf_counter() - start


class RawClient:
    """A client socket that sends raw bytes and reads replies on a thread (so neither side blocks)."""

    def __init__(self, address: tuple[str, int], *, timeout_s: float = 30.0) -> None:
        self.sock = socket.create_connection(address, timeout=5.0)
        self.sock.settimeout(timeout_s)
        self.reply = Reply()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            _read_reply(stream, self.reply, self._start)
        finally:
            stream.close()

    def send(self, data: bytes) -> bool:
        """Send ``data``; False when the server has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def finish(self, timeout_s: float = 30.0, *, close_write: bool = False) -> Reply:
        """Wait for the server's reply to end (CLOSE or the connection's end); then close."""
        if close_write:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        self.sock.close()
        if alive:
            self._thread.join(5.0)
            raise TimeoutError(f"the server did not end its reply within {timeout_s} s")
        return self.reply


def schedule_header(schedule: Any, n_slices: int = 2) -> bytes:
    """An ISMRMRD header with the schedule's ``sequenceParameters``."""
    return header_xml(n_slices=n_slices, flip_angle_deg=list(schedule.flip_angle_deg), tr_ms=list(schedule.tr_ms),
                      te_ms=[schedule.te_ms], ti_ms=[schedule.ti_ms])


def scan_images(schedule: Any, n_slices: int = 2) -> tuple[list[ismrmrd.Image], list[dict[str, np.ndarray]]]:
    """Float magnitude frames of the phantom (slices interleaved, repetition = frame) and per-slice truth."""
    truth = []
    per_slice = []
    for s in range(n_slices):
        t1, t2, m0, labels = phantom(s)
        frames = np.abs(phantom_frames(schedule, t1, t2, m0 * SCALE)).astype(np.float32)
        per_slice.append(frames)
        truth.append({"t1": t1, "t2": t2, "m0": m0 * SCALE, "labels": labels})
    images = [image_of(per_slice[s][i], frame_header(s, i)) for i in range(schedule.n_frames) for s in range(n_slices)]
    return images, truth


def scan_messages(schedule: Any, n_slices: int = 2, *, config: Any = None) -> bytes:
    """A whole client stream: CONFIG_FILE drone_images (or ``config``), HEADER, frames, CLOSE."""
    images, _ = scan_images(schedule, n_slices)
    parts = [encode(config if config is not None else ConfigFile("drone_images")),
             encode(Header(schedule_header(schedule, n_slices)))]
    parts += [encode(im) for im in images]
    parts.append(encode(None))
    return b"".join(parts)


def scan_message_list(schedule: Any, n_slices: int = 2, *, config: Any = None, header: bytes | None = None,
                      parameters: dict[str, str] | None = None) -> list[bytes]:
    """The stream python-ismrmrd-server's ``client.py`` sends, one encoded message per item: CONFIG_FILE
    ``drone_images`` (or ``config``), HEADER, [a TEXT of JSON ``{"version", "parameters"}``], frames, CLOSE."""
    images, _ = scan_images(schedule, n_slices)
    parts = [encode(config if config is not None else ConfigFile("drone_images")),
             encode(Header(header if header is not None else schedule_header(schedule, n_slices)))]
    if parameters is not None:
        import json

        parts.append(encode(Text(json.dumps({"version": "1.1.0", "parameters": parameters}))))
    return parts + [encode(im) for im in images] + [encode(None)]


class FireClient:
    """What python-ismrmrd-server's ``client.py`` does, step for step, with its timing.

    Its receiver (a process there, a thread here) reads the replies from the start and, when CLOSE
    arrives, shuts the socket down both ways (``sock.shutdown(SHUT_RDWR)``). Its sender sends CONFIG
    and the header without any error handling (a failure there is the ``BrokenPipeError`` a user
    sees as a crash), then the images and CLOSE each in a ``try`` (a failure is logged "Failed to send
    image … aborting!"), never waiting for a reply. ``pause_s`` between messages stands for the time
    it spends reading the file (opening it between CONFIG and the header).

    Attributes after :meth:`run`: ``reply`` (:class:`Reply`), ``crash`` (the exception an unguarded
    send raised, or None) and ``send_failures`` (exceptions of the guarded sends).
    """

    def __init__(self, address: tuple[str, int], *, pause_s: float = 0.002) -> None:
        self.address = address
        self.pause_s = pause_s
        self.reply = Reply()
        self.crash: BaseException | None = None
        self.send_failures: list[BaseException] = []

    def _receive(self, sock: socket.socket, start: float) -> None:
        stream = sock.makefile("rb")
        try:
            _read_reply(stream, self.reply, start)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # client.py's receiver, on CLOSE or failure
            except OSError:
                pass

    def run(self, messages: Sequence[bytes], *, timeout_s: float = 60.0) -> "FireClient":
        sock = socket.create_connection(self.address, timeout=timeout_s)
        start = time.perf_counter()
        receiver = threading.Thread(target=self._receive, args=(sock, start), daemon=True)
        receiver.start()
        try:
            sock.sendall(messages[0])  # CONFIG: unguarded in client.py
            time.sleep(self.pause_s * 10)  # it opens the input file between CONFIG and the header
            sock.sendall(messages[1])  # the header: unguarded too
        except OSError as exc:
            self.crash = exc
        if self.crash is None:
            for data in messages[2:]:
                time.sleep(self.pause_s)
                try:
                    sock.sendall(data)
                except OSError as exc:
                    self.send_failures.append(exc)
                    if data is not messages[-1]:
                        break  # "Failed to send image … aborting!", then it still tries CLOSE
        receiver.join(timeout_s)
        sock.close()
        if receiver.is_alive():
            raise TimeoutError(f"the server did not end its reply within {timeout_s} s")
        return self


def exchange(address: tuple[str, int], data: bytes, *, timeout_s: float = 30.0) -> Reply:
    """Send ``data`` whole, then wait for the reply."""
    client = RawClient(address, timeout_s=timeout_s)
    client.send(data)
    return client.finish(timeout_s)


def maps_of(images: Sequence[ismrmrd.Image]) -> dict[tuple[int, int], np.ndarray]:
    """``{(slice, series): (y, x) map}`` of received images."""
    return {(int(im.getHead().slice), int(im.getHead().image_series_index)): np.asarray(im.data)[0, 0]
            for im in images}


def deserialize(data: bytes) -> list[Any]:
    """Every message of ``data`` by ismrmrd's ProtocolDeserializer (until CLOSE)."""
    return list(ProtocolDeserializer(io.BytesIO(data)).deserialize())
