"""Gadgetron's side of the external-node protocol, for tests (a real Gadgetron cannot run here).

A thin wrapper around :mod:`drone_gadgets.wire.loopback` (the package module that ``drone replay``
uses): :class:`GadgetronPeer` is a :class:`~drone_gadgets.wire.loopback.Loopback` that listens on
127.0.0.1 on a free port, starts ``python -m gadgetron <port> <module> <target>`` (the real
gadgetron-python client, in a separate process) in the repository, accepts its connection, sends
CONFIG, HEADER, data messages and CLOSE, and reads back what the process sends (images,
pass-through messages, ERROR, CLOSE) on a background thread. :meth:`GadgetronPeer.in_process` runs
the handler in a thread of this process over a socket pair instead (same protocol, no interpreter
start-up).

Messages are serialised from the wire format (``uint16`` id, then the body), independently of
gadgetron-python's writers, so the tests check the client against the protocol, not against
itself. Here are also the test documents (config, header), the other message kinds Gadgetron may
send (ImageArray, waveform, acquisition) and a small phantom. Every wait has a generous timeout,
so a hung peer fails a test instead of hanging it.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any, Callable, Sequence

import ismrmrd
import numpy as np

from drone_gadgets.wire import loopback
from drone_gadgets.wire.loopback import (ACQUISITION, CLOSE, CONFIG, ERROR, HEADER, IMAGE, IMAGE_ARRAY, Reply, WAVEFORM,
                                         image_message)

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

_U16, _U64 = struct.Struct("<H"), struct.Struct("<Q")
_REPO = Path(__file__).resolve().parents[1]

#: Generous limits for a slow, shared machine (they bound hangs; nothing is timed).
ACCEPT_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 180.0
EXIT_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- documents
def config_xml(properties: dict[str, str] | None = None, *, element_style: bool = False) -> bytes:
    """The ``<configuration>`` of an ``<external>`` node as Gadgetron sends it (pugixml's output,
    :func:`drone_gadgets.wire.loopback.config_xml`); ``element_style`` writes the old
    ``<property><name>…</name><value>…</value></property>`` form instead."""
    if not element_style:
        return loopback.config_xml(properties)
    items = [f"<property><name>{name}</name><value>{value}</value></property>"
             for name, value in (properties or {}).items()]
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


# --------------------------------------------------------------------------- data messages
def raw_image_message(header: ismrmrd.ImageHeader, data: np.ndarray, attributes: bytes = b"") -> bytes:
    """IMAGE (1022): header, ``uint64`` attribute length, attributes, pixels (x fastest), written as
    given, unchecked (so malformed messages can be sent too; :func:`drone_gadgets.wire.loopback.raw_image_message`
    checks and converts)."""
    return (_U16.pack(IMAGE) + bytes(header) + _U64.pack(len(attributes)) + attributes
            + np.ascontiguousarray(data).tobytes())


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


# --------------------------------------------------------------------------- the peer
class GadgetronPeer(loopback.Loopback):
    """Gadgetron's end of one external-node connection (see :class:`drone_gadgets.wire.loopback.Loopback`).

    Use :meth:`spawn` (real ``python -m gadgetron`` process, started in the repository) or
    :meth:`in_process`; then :meth:`handshake`, :meth:`send` messages, :meth:`close` (CLOSE) and
    :meth:`finish`. Sends after the Python side stopped reading are recorded in ``send_failed``.
    """

    @classmethod
    def spawn(cls, module: str = "drone_gadgets.gadget", target: str = "drone_mrf", *,  # type: ignore[override]
              env: dict[str, str] | None = None) -> "GadgetronPeer":
        """Listen on 127.0.0.1, start ``sys.executable -m gadgetron <port> <module> <target>``, accept."""
        try:
            return super().spawn(module, target, env=env, cwd=_REPO, accept_timeout_s=ACCEPT_TIMEOUT_S,
                                 stall_timeout_s=REPLY_TIMEOUT_S, forward_log=False)  # type: ignore[return-value]
        except loopback.LoopbackError as exc:
            raise RuntimeError(str(exc)) from None

    @classmethod
    def in_process(cls, handler: Callable[[Any], None]) -> "GadgetronPeer":
        """Run ``handler(connection)`` in a thread, over a socket pair, like ``python -m gadgetron`` does."""
        return cls.in_thread(handler, stall_timeout_s=REPLY_TIMEOUT_S)  # type: ignore[return-value]

    def send(self, *messages: bytes) -> bool:  # type: ignore[override]
        """Send raw messages (from the ``*_message`` helpers); never raises for a closed peer."""
        try:
            return super().send(*messages)
        except loopback.LoopbackError:
            self.send_failed = True
            return False

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

    def wait_reply(self, timeout: float | None = REPLY_TIMEOUT_S) -> Reply:
        """Wait until the process sent CLOSE or the connection ended (at most ``timeout`` s)."""
        return super().wait_reply(timeout)

    def finish(self, timeout: float | None = REPLY_TIMEOUT_S) -> Reply:
        """Wait for the reply and the end of the process; collect exit status and output."""
        return super().finish(timeout)
