"""Gadgetron's side of the external-node protocol, for tests (a real Gadgetron cannot run here).

:class:`GadgetronPeer` does what Gadgetron does for an ``<external>`` Python node: it listens on
127.0.0.1 on a free port, starts ``python -m gadgetron <port> <module> <target>`` (the real
gadgetron-python client, in a separate process), accepts its connection, sends CONFIG, HEADER,
data messages and CLOSE, and reads back what the process sends (images, pass-through messages,
ERROR, CLOSE) on a background thread. :meth:`GadgetronPeer.in_process` runs the handler in a thread
of this process over a socket pair instead (same protocol, no interpreter start-up).

Messages are serialised here independently of gadgetron-python's writers (from the wire format:
``uint16`` id, then the body), so the tests check the client against the protocol, not against
itself. Every wait has a generous timeout, so a hung peer fails a test instead of hanging it.
"""

from __future__ import annotations

import ctypes
import io
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import ismrmrd
import numpy as np

__all__ = [
    "GadgetronPeer",
    "Reply",
    "config_xml",
    "header_xml",
    "image_message",
    "image_array_message",
    "waveform_message",
    "acquisition_message",
    "raw_image_message",
    "TISSUES",
    "PHANTOM_SHAPE",
    "phantom",
    "phantom_frames",
    "frame_header",
    "image_of",
    "CONFIG", "HEADER", "CLOSE", "ERROR", "IMAGE", "IMAGE_ARRAY", "WAVEFORM", "ACQUISITION",
]

CONFIG, HEADER, CLOSE, ERROR = 2, 3, 4, 8
ACQUISITION, IMAGE, IMAGE_ARRAY, WAVEFORM = 1008, 1022, 1024, 1026

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_IMAGE_HEADER_SIZE = ctypes.sizeof(ismrmrd.ImageHeader)
_ACQ_HEADER_SIZE = ctypes.sizeof(ismrmrd.AcquisitionHeader)
_WAVEFORM_HEADER_SIZE = ctypes.sizeof(ismrmrd.WaveformHeader)
_DTYPES = {1: "<u2", 2: "<i2", 3: "<u4", 4: "<i4", 5: "<f4", 6: "<f8", 7: "<c8", 8: "<c16"}
_REPO = Path(__file__).resolve().parents[1]

#: Generous limits for a slow, shared machine (they bound hangs; nothing is timed).
ACCEPT_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 180.0
EXIT_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- documents
def config_xml(properties: dict[str, str] | None = None, *, element_style: bool = False) -> bytes:
    """The ``<configuration>`` of an ``<external>`` node with ``<property name value>`` items."""
    items = []
    for name, value in (properties or {}).items():
        if element_style:
            items.append(f"<property><name>{name}</name><value>{value}</value></property>")
        else:
            items.append(f'<property name="{name}" value="{value}"/>')
    return ("<configuration>" + "".join(items) + "</configuration>").encode()


def header_xml(*, matrix: tuple[int, int] = (10, 12), n_slices: int = 1, flip_angle_deg: Sequence[float] = (),
               tr_ms: Sequence[float] = (), te_ms: Sequence[float] = (), ti_ms: Sequence[float] = (),
               sequence_parameters: bool = True) -> bytes:
    """A valid ISMRMRD header (it must parse with ``ismrmrd.xsd``), optionally with
    ``<sequenceParameters>`` lists. ``matrix`` is ``(x, y)``."""
    x, y = matrix
    space = (f"<matrixSize><x>{x}</x><y>{y}</y><z>1</z></matrixSize>"
             f"<fieldOfView_mm><x>{2.0 * x}</x><y>{2.0 * y}</y><z>5</z></fieldOfView_mm>")
    seq = ""
    if sequence_parameters:
        seq = ("<sequenceParameters>" + "".join(f"<TR>{v!r}</TR>" for v in tr_ms)
               + "".join(f"<TE>{v!r}</TE>" for v in te_ms) + "".join(f"<TI>{v!r}</TI>" for v in ti_ms)
               + "".join(f"<flipAngle_deg>{v!r}</flipAngle_deg>" for v in flip_angle_deg) + "</sequenceParameters>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
            "</experimentalConditions><encoding>"
            f"<encodedSpace>{space}</encodedSpace><reconSpace>{space}</reconSpace>"
            f"<encodingLimits><slice><minimum>0</minimum><maximum>{max(n_slices - 1, 0)}</maximum>"
            "<center>0</center></slice></encodingLimits><trajectory>epi</trajectory></encoding>"
            f"{seq}</ismrmrdHeader>").encode()


def _string_message(mid: int, payload: bytes) -> bytes:
    return _U16.pack(mid) + _U32.pack(len(payload)) + payload


# --------------------------------------------------------------------------- data messages
def raw_image_message(header: ismrmrd.ImageHeader, data: np.ndarray, attributes: bytes = b"") -> bytes:
    """IMAGE (1022): header, ``uint64`` attribute length, attributes, pixels (x fastest).

    ``header.data_type``, ``channels`` and ``matrix_size`` must describe ``data``
    ``(channels, z, y, x)``; written as given (so int32 images can be sent, which ismrmrd-python
    cannot serialise correctly).
    """
    return (_U16.pack(IMAGE) + bytes(header) + _U64.pack(len(attributes)) + attributes
            + np.ascontiguousarray(data).tobytes())


def image_message(image: ismrmrd.Image) -> bytes:
    """IMAGE (1022) of an ``ismrmrd.Image``."""
    head = image.getHead()
    attributes = image.attribute_string.encode()
    head.attribute_string_len = len(attributes)
    return raw_image_message(head, np.asarray(image.data), attributes)


def image_array_message(data: np.ndarray, headers: np.ndarray, meta: Sequence[str] | None = None) -> bytes:
    """IMAGE_ARRAY (1024) as Gadgetron writes an ``IsmrmrdImageArray``.

    Args:
        data: ``(RO, E1, E2, CHA, N, S, LOC)`` complex64 (written column-major, RO fastest).
        headers: ``(N, S, LOC)`` object array of ``ImageHeader`` (written column-major).
        meta: N·S·LOC meta XML strings (default empty).
    """
    data = np.asarray(data, dtype=np.complex64)
    assert data.ndim == 7, data.shape
    out = io.BytesIO()
    out.write(_U16.pack(IMAGE_ARRAY))
    out.write(_U64.pack(data.ndim) + b"".join(_U64.pack(d) for d in data.shape))
    out.write(data.tobytes(order="F"))
    out.write(_U64.pack(headers.ndim) + b"".join(_U64.pack(d) for d in headers.shape))
    for h in headers.ravel(order="F"):
        out.write(bytes(h))
    meta = list(meta) if meta is not None else [""] * headers.size
    out.write(_U64.pack(len(meta)))
    for m in meta:
        b = m.encode("ascii")
        out.write(_U64.pack(len(b)) + b)
    out.write(b"\x00")  # no waveforms
    out.write(b"\x00")  # no acquisition headers
    return out.getvalue()


def waveform_message(waveform: ismrmrd.Waveform) -> bytes:
    """WAVEFORM (1026)."""
    return _U16.pack(WAVEFORM) + waveform.to_bytes()


def acquisition_message(acquisition: ismrmrd.Acquisition) -> bytes:
    """ACQUISITION (1008)."""
    return _U16.pack(ACQUISITION) + acquisition.to_bytes()


# --------------------------------------------------------------------------- a phantom
#: (T1 ms, T2 ms, M0) of the three tissue blocks; values where the shipped network is accurate
#: noise-free (see test_gadget_stream.py for the tolerances).
TISSUES: tuple[tuple[float, float, float], ...] = ((1000.0, 80.0, 2.0), (1500.0, 150.0, 3.0), (2000.0, 200.0, 1.5))
#: (y, x) of the phantom: non-square on purpose.
PHANTOM_SHAPE = (12, 10)


def phantom(shift: int = 0, shape: tuple[int, int] = PHANTOM_SHAPE,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Truth maps ``(t1_ms, t2_ms, m0, labels)`` of shape ``(y, x)``: three tissue blocks on a zero
    background (a one-voxel border and more); ``shift`` rotates which tissue sits in which block,
    so that slices differ. ``labels`` is -1 in the background, else the tissue index."""
    y, x = shape
    labels = np.full(shape, -1, dtype=np.int64)
    labels[1:y // 3 + 1, 1:x - 1] = 0
    labels[y // 3 + 1:y - 1, 1:x // 2] = 1
    labels[y // 3 + 1:y - 1, x // 2:x - 1] = 2
    fg = labels >= 0
    labels[fg] = (labels[fg] + shift) % len(TISSUES)
    table = np.asarray(TISSUES)
    t1 = np.where(fg, table[labels.clip(0), 0], 0.0)
    t2 = np.where(fg, table[labels.clip(0), 1], 0.0)
    m0 = np.where(fg, table[labels.clip(0), 2], 0.0)
    return t1, t2, m0, labels


def phantom_frames(schedule: Any, t1: np.ndarray, t2: np.ndarray, m0: np.ndarray) -> np.ndarray:
    """``(N, y, x)`` complex64 frames of the normative signal model (``drone_core.epg.simulate``)."""
    from drone_core.epg import simulate

    fg = m0 > 0
    out = np.zeros((schedule.n_frames,) + t1.shape, dtype=np.complex64)
    pairs, inverse = np.unique(np.stack([t1[fg], t2[fg]], axis=1), axis=0, return_inverse=True)
    signals = np.asarray(simulate(schedule, pairs[:, 0], pairs[:, 1]))  # (n_pairs, N)
    out[:, fg] = (signals[np.ravel(inverse)] * m0[fg][:, None]).T
    return out


def frame_header(slice_: int, counter: int, *, counter_field: str = "repetition",
                 shape: tuple[int, ...] = PHANTOM_SHAPE, data_type: int = 5) -> ismrmrd.ImageHeader:
    """An ``ImageHeader`` as Gadgetron's reconstruction makes it: geometry per slice, counters."""
    h = ismrmrd.ImageHeader()
    h.version = 1
    h.data_type = data_type
    h.channels = 1
    y, x = shape[-2:]
    z = shape[0] if len(shape) == 3 else 1
    h.matrix_size[0], h.matrix_size[1], h.matrix_size[2] = x, y, z
    h.field_of_view[0], h.field_of_view[1], h.field_of_view[2] = 2.0 * x, 2.0 * y, 5.0
    h.position[0], h.position[1], h.position[2] = 1.5, -2.5, 5.0 * slice_ - 3.0
    h.read_dir[0], h.read_dir[1], h.read_dir[2] = 0.0, 1.0, 0.0
    h.phase_dir[0], h.phase_dir[1], h.phase_dir[2] = -1.0, 0.0, 0.0
    h.slice_dir[0], h.slice_dir[1], h.slice_dir[2] = 0.0, 0.0, 1.0
    h.patient_table_position[2] = -120.0
    h.measurement_uid = 4242
    h.slice = slice_
    setattr(h, counter_field, counter)
    h.acquisition_time_stamp = 100000 + 1000 * counter + slice_
    h.image_type = 1
    h.image_series_index = 1
    h.image_index = counter + 1
    h.user_int[0] = 7
    return h


def image_of(data: np.ndarray, header: ismrmrd.ImageHeader) -> ismrmrd.Image:
    """An ``ismrmrd.Image`` with ``data`` ``(y, x)`` or ``(z, y, x)`` (any ismrmrd dtype) and ``header``."""
    arr = np.asarray(data)
    arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
    return ismrmrd.Image(head=header, data=np.ascontiguousarray(arr))


# --------------------------------------------------------------------------- replies
@dataclass
class Reply:
    """What the Python process sent back, in order, and how it ended.

    Attributes:
        messages: ``(message id, body)`` in arrival order; bodies: ``ismrmrd.Image`` for IMAGE,
            ``str`` for ERROR, the raw body ``bytes`` for WAVEFORM/ACQUISITION.
        closed: a CLOSE message arrived.
        eof: the connection ended (after CLOSE or not).
        failure: why reading stopped early (unreadable message, timeout), or None.
        returncode, stdout, stderr: of the process (None/"" in process mode).
    """

    messages: list[tuple[int, Any]] = field(default_factory=list)
    closed: bool = False
    eof: bool = False
    failure: str | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    exception: BaseException | None = None

    @property
    def images(self) -> list[ismrmrd.Image]:
        return [body for mid, body in self.messages if mid == IMAGE]

    @property
    def errors(self) -> list[str]:
        return [body for mid, body in self.messages if mid == ERROR]

    def ids(self) -> list[int]:
        return [mid for mid, _ in self.messages]


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"connection ended ({len(buf)} of {n} bytes)")
            buf += chunk
        return bytes(buf)


def _read_reply(sock: socket.socket, reply: Reply) -> None:
    src = _Reader(sock)
    try:
        while True:
            try:
                head = sock.recv(2, socket.MSG_WAITALL)
            except OSError as exc:
                reply.eof = True
                reply.failure = reply.failure or f"socket error: {exc}"
                return
            if len(head) < 2:
                reply.eof = True
                return
            (mid,) = _U16.unpack(head)
            if mid == CLOSE:
                reply.closed = True
                reply.messages.append((CLOSE, None))
                # Like Gadgetron, whose channel ends once the external side has closed.
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if mid == ERROR:
                (n,) = _U64.unpack(src.read(8))
                reply.messages.append((ERROR, src.read(n).decode("utf-8")))
            elif mid == IMAGE:
                hb = src.read(_IMAGE_HEADER_SIZE)
                header = ismrmrd.ImageHeader.from_buffer_copy(hb)
                (n_attr,) = _U64.unpack(src.read(8))
                attributes = src.read(n_attr).rstrip(b"\x00").decode("utf-8")
                dtype = np.dtype(_DTYPES[header.data_type])
                x, y, z = header.matrix_size
                data = np.frombuffer(src.read(header.channels * x * y * z * dtype.itemsize), dtype=dtype)
                image = ismrmrd.Image(head=header, data=np.array(data.reshape(header.channels, z, y, x)))
                if attributes:
                    image.attribute_string = attributes
                reply.messages.append((IMAGE, image))
            elif mid == WAVEFORM:
                hb = src.read(_WAVEFORM_HEADER_SIZE)
                h = ismrmrd.WaveformHeader.from_buffer_copy(hb)
                reply.messages.append((WAVEFORM, hb + src.read(h.channels * h.number_of_samples * 4)))
            elif mid == ACQUISITION:
                hb = src.read(_ACQ_HEADER_SIZE)
                h = ismrmrd.AcquisitionHeader.from_buffer_copy(hb)
                n = h.number_of_samples * (h.active_channels * 8 + h.trajectory_dimensions * 4)
                reply.messages.append((ACQUISITION, hb + src.read(n)))
            else:
                reply.failure = f"unexpected message id {mid} from the Python process"
                return
    except EOFError as exc:
        reply.eof = True
        reply.failure = reply.failure or f"connection ended inside a message: {exc}"


# --------------------------------------------------------------------------- the peer
class _Drain:
    """Reads a pipe to its end on a thread (so a chatty process never blocks on a full pipe)."""

    def __init__(self, pipe: Any) -> None:
        self.data = bytearray()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in iter(lambda: self._pipe.read1(1 << 16), b""):
            self.data += chunk

    def text(self, timeout: float = EXIT_TIMEOUT_S) -> str:
        self._thread.join(timeout)
        return bytes(self.data).decode("utf-8", errors="replace")


class GadgetronPeer:
    """Gadgetron's end of one external-node connection.

    Use :meth:`spawn` (real ``python -m gadgetron`` process) or :meth:`in_process`; then
    :meth:`handshake`, :meth:`send` messages, :meth:`close` (CLOSE) and :meth:`finish`.
    """

    def __init__(self, sock: socket.socket, process: subprocess.Popen | None = None,
                 thread: threading.Thread | None = None,
                 thread_result: queue.Queue[BaseException | None] | None = None,
                 pipes: tuple[_Drain, _Drain] | None = None) -> None:
        self.sock = sock
        self.process = process
        self._pipes = pipes
        self._thread = thread
        self._thread_result = thread_result
        self.reply = Reply()
        self.send_failed = False
        self._reader = threading.Thread(target=_read_reply, args=(sock, self.reply), daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ start
    @classmethod
    def spawn(cls, module: str = "drone_gadgets.gadget", target: str = "drone_mrf", *,
              env: dict[str, str] | None = None) -> "GadgetronPeer":
        """Listen on 127.0.0.1, start ``sys.executable -m gadgetron <port> <module> <target>``, accept."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(ACCEPT_TIMEOUT_S)
        port = listener.getsockname()[1]
        environment = dict(os.environ)
        environment.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", "INFO")
        environment.update(env or {})
        process = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), module, target],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=environment, cwd=str(_REPO))
        pipes = (_Drain(process.stdout), _Drain(process.stderr))
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            process.kill()
            process.wait(EXIT_TIMEOUT_S)
            raise RuntimeError(f"the Python process did not connect within {ACCEPT_TIMEOUT_S} s; stderr:\n"
                               f"{pipes[1].text()}") from None
        finally:
            listener.close()
        conn.settimeout(None)
        return cls(conn, process=process, pipes=pipes)

    @classmethod
    def in_process(cls, handler: Callable[[Any], None]) -> "GadgetronPeer":
        """Run ``handler(connection)`` in a thread, over a socket pair, like ``python -m gadgetron`` does."""
        ours, theirs = socket.socketpair()
        result: "queue.Queue[BaseException | None]" = queue.Queue()

        def main() -> None:
            from gadgetron.external.connection import Connection

            try:
                with Connection(theirs) as connection:
                    handler(connection)
            except BaseException as exc:  # reported to the test through finish()
                result.put(exc)
            else:
                result.put(None)

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        return cls(ours, thread=thread, thread_result=result)

    # ------------------------------------------------------------------ send
    def send(self, *messages: bytes) -> None:
        """Send raw messages (from the ``*_message`` helpers).

        Once the Python side has closed (after an ERROR, say) sending fails like it would for
        Gadgetron; that is recorded in ``send_failed``, not raised.
        """
        for m in messages:
            if self.send_failed:
                return
            try:
                self.sock.sendall(m)
            except OSError:
                self.send_failed = True

    def handshake(self, config: bytes, header: bytes) -> None:
        """CONFIG then HEADER."""
        self.send(_string_message(CONFIG, config), _string_message(HEADER, header))

    def close(self) -> None:
        """Send CLOSE (end of the input)."""
        self.send(_U16.pack(CLOSE))

    def run(self, config: bytes, header: bytes, messages: Sequence[bytes], *, close: bool = True) -> Reply:
        """Handshake, send ``messages``, CLOSE (unless ``close`` is False), and :meth:`finish`."""
        try:
            self.handshake(config, header)
            self.send(*messages)
            if close:
                self.close()
            return self.finish()
        except BaseException:
            self.stop()
            raise

    def kill_connection(self) -> None:
        """Gadgetron dies: its socket closes without CLOSE."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ------------------------------------------------------------------ results
    def wait_reply(self, timeout: float = REPLY_TIMEOUT_S) -> Reply:
        """Wait until the process sent CLOSE or the connection ended."""
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.reply.failure = f"no CLOSE and no end of connection within {timeout} s"
        return self.reply

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> bool:
        """Wait for the process (or thread) to end; True if it did within ``timeout``."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self, timeout: float = REPLY_TIMEOUT_S) -> Reply:
        """Wait for the reply and the end of the process; collect exit status and output."""
        reply = self.wait_reply(timeout)
        exited = self.wait_exit(EXIT_TIMEOUT_S)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.process is not None:
            if not exited:
                self.process.kill()
                self.process.wait(EXIT_TIMEOUT_S)
            reply.returncode = self.process.returncode
            reply.stdout, reply.stderr = self.output()
            if not exited:
                reply.failure = (reply.failure or "") + f" (process did not exit within {EXIT_TIMEOUT_S} s; killed)"
        elif exited and self._thread_result is not None:
            reply.exception = self._thread_result.get_nowait()
        return reply

    def stop(self) -> None:
        """Best-effort cleanup for a failed test."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(EXIT_TIMEOUT_S)

    def output(self) -> tuple[str, str]:
        """``(stdout, stderr)`` of the process once it has ended (``("", "")`` in process mode)."""
        if self._pipes is None:
            return "", ""
        return self._pipes[0].text(), self._pipes[1].text()
