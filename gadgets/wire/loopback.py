"""Gadgetron's side of an external Python node, over loopback: run a gadget exactly as Gadgetron does.

For an ``<external>`` node Gadgetron listens on a free port, starts
``python3 -m gadgetron <port> <module> <target>`` (the gadgetron-python client), accepts its
connection and sends (all little endian, each message a ``uint16`` id then its body):

* CONFIG (2): ``uint32`` length + the node's ``<configuration>`` element, saved by pugixml as its
  own document (``<?xml version="1.0"?>`` declaration, tab-indented ``<property name=… value=… />``);
* HEADER (3): ``uint32`` length + the ISMRMRD XML header;
* the data: here IMAGE (1022): the 198-byte ``ImageHeader``, ``uint64`` length + the meta XML, the
  pixels (``x`` fastest, ``(channels, z, y, x)``), as Gadgetron's ``ImageWriter`` writes them;
* CLOSE (4) at the end of the input.

The Python side answers with data messages (here the map IMAGEs), optionally ERROR (8: ``uint64``
length + UTF-8 text, which makes Gadgetron fail the chain with that text) and CLOSE.

:class:`Loopback` is one such connection: it spawns the process (``sys.executable -m gadgetron``;
stdout captured — it is Gadgetron's output stream, so anything printed there is an error — and
stderr forwarded line by line to the logger ``drone_gadgets.wire.loopback.process``), reads the replies
on a background thread (so neither side can block the other on a full socket buffer) and bounds
every wait: no progress for ``stall_timeout_s`` seconds fails the run instead of hanging it.
:func:`run_gadget` does a whole run and turns the outcome into images or a clear exception
(:class:`GadgetError` carries the gadget's ERROR text). The process is always ended.

Messages are serialised here from the wire format, independently of gadgetron-python's writers
and of :mod:`drone_gadgets.wire.external`'s reader, so a run checks the gadget against the protocol.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping
from xml.sax.saxutils import escape

import ismrmrd
import numpy as np

from ..recon.header import check_header
from .external import MAX_ATTRIBUTE_BYTES, WIRE_DTYPES, read_image

__all__ = [
    "CONFIG", "HEADER", "CLOSE", "ERROR", "IMAGE", "IMAGE_ARRAY", "WAVEFORM", "ACQUISITION",
    "ACCEPT_TIMEOUT_S", "STALL_TIMEOUT_S", "EXIT_TIMEOUT_S",
    "GadgetError",
    "GadgetRun",
    "Loopback",
    "LoopbackError",
    "Reply",
    "close_message",
    "config_xml",
    "config_message",
    "header_message",
    "image_message",
    "raw_image_message",
    "run_gadget",
    "string_message",
]

log = logging.getLogger(__name__)
process_log = logging.getLogger(__name__ + ".process")

CONFIG, HEADER, CLOSE, ERROR = 2, 3, 4, 8
ACQUISITION, IMAGE, IMAGE_ARRAY, WAVEFORM = 1008, 1022, 1024, 1026

#: Seconds to wait for the process to connect (interpreter start-up and gadgetron-python import).
ACCEPT_TIMEOUT_S = 120.0
#: Seconds without any progress (a byte sent or a message received) after which a run fails.
STALL_TIMEOUT_S = 300.0
#: Seconds to wait for the process to exit once the connection has ended.
EXIT_TIMEOUT_S = 30.0
#: Poll interval of the socket and pipe loops (bounds how late a stop is noticed).
_POLL_S = 0.2
#: At most this much of the process's stderr is kept (the end of it).
_MAX_LOG_BYTES = 8 << 20

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_IMAGE_HEADER_SIZE = ctypes.sizeof(ismrmrd.ImageHeader)
_ACQ_HEADER_SIZE = ctypes.sizeof(ismrmrd.AcquisitionHeader)
_WAVEFORM_HEADER_SIZE = ctypes.sizeof(ismrmrd.WaveformHeader)


# =========================================================================== errors
class LoopbackError(RuntimeError):
    """The run failed outside the gadget's own error reporting: the process did not start or
    connect, ended without CLOSE, stalled, exited with a failure status or printed to stdout.

    Attributes:
        stderr: the process's log (stderr), possibly empty.
        returncode: its exit status, or None if unknown.
    """

    def __init__(self, message: str, *, stderr: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


class GadgetError(LoopbackError):
    """The gadget reported a failure with an ERROR message (as Gadgetron would show it).

    Attributes:
        gadget_message: the ERROR text, e.g. ``"drone_mrf: schedule mismatch: …"``.
    """

    def __init__(self, gadget_message: str, *, stderr: str = "", returncode: int | None = None) -> None:
        super().__init__(f"the gadget reported an error: {gadget_message}", stderr=stderr, returncode=returncode)
        self.gadget_message = gadget_message


def _tail(text: str, lines: int = 15) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (nothing)"


# =========================================================================== messages
def config_xml(properties: Mapping[str, str] | None = None) -> bytes:
    """The CONFIG payload Gadgetron sends for an ``<external>`` node with these properties.

    Gadgetron copies the node's ``<configuration>`` element into a document of its own and saves
    it with pugixml's defaults: an XML declaration, tab indentation and ``<property name="…"
    value="…" />`` (attribute values escaped).
    """
    items = dict(properties or {})
    if not items:
        return b'<?xml version="1.0"?>\n<configuration />\n'
    lines = ['<?xml version="1.0"?>', "<configuration>"]
    entities = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}
    for name, value in items.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"properties: expected str names and values, got {name!r}: {value!r}")
        lines.append(f'\t<property name="{escape(name, entities)}" value="{escape(value, entities)}" />')
    lines.append("</configuration>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def string_message(mid: int, payload: bytes) -> bytes:
    """A message with a ``uint32``-length string body (CONFIG, HEADER)."""
    return _U16.pack(mid) + _U32.pack(len(payload)) + payload


def config_message(config: bytes | str | Mapping[str, str] | None) -> bytes:
    """CONFIG (2) from the XML text or from ``{property: value}``."""
    if config is None or isinstance(config, Mapping):
        payload = config_xml(config)
    else:
        payload = config.encode("utf-8") if isinstance(config, str) else bytes(config)
    return string_message(CONFIG, payload)


def header_message(header: bytes | str) -> bytes:
    """HEADER (3) with the ISMRMRD XML header."""
    payload = header.encode("utf-8") if isinstance(header, str) else bytes(header)
    return string_message(HEADER, payload.rstrip(b"\x00"))


def close_message() -> bytes:
    """CLOSE (4)."""
    return _U16.pack(CLOSE)


def raw_image_message(header: ismrmrd.ImageHeader, data: np.ndarray, attributes: bytes = b"") -> bytes:
    """IMAGE (1022): header, ``uint64`` attribute length, attributes, pixels (x fastest).

    ``header.data_type``, ``channels`` and ``matrix_size`` must describe ``data``
    ``(channels, z, y, x)``; the pixels are written in the header's wire type (so ``DATATYPE_INT``
    images are written as int32, which ismrmrd-python's own serialiser gets wrong).
    """
    dtype = WIRE_DTYPES.get(int(header.data_type))
    if dtype is None:
        raise ValueError(f"header.data_type: expected one of {sorted(WIRE_DTYPES)}, got {header.data_type}")
    pixels = np.ascontiguousarray(data, dtype=dtype)
    expected = (int(header.channels), int(header.matrix_size[2]), int(header.matrix_size[1]),
                int(header.matrix_size[0]))
    if pixels.size != int(np.prod(expected)):
        raise ValueError(f"data: {pixels.shape} does not match the header's (channels, z, y, x) = {expected}")
    return _U16.pack(IMAGE) + bytes(header) + _U64.pack(len(attributes)) + attributes + pixels.tobytes()


def image_message(image: ismrmrd.Image) -> bytes:
    """IMAGE (1022) of an ``ismrmrd.Image``, as Gadgetron's ``ImageWriter`` writes it."""
    head = image.getHead()
    attributes = image.attribute_string.encode("utf-8")
    head.attribute_string_len = len(attributes)
    return raw_image_message(head, np.asarray(image.data), attributes)


# =========================================================================== replies
@dataclass
class Reply:
    """What the Python side sent back, in order, and how the connection ended.

    Attributes:
        messages: ``(message id, body)`` in arrival order; bodies: ``ismrmrd.Image`` for IMAGE,
            ``str`` for ERROR, the raw body ``bytes`` for WAVEFORM/ACQUISITION, None for CLOSE.
        closed: a CLOSE message arrived.
        eof: the connection ended.
        failure: why reading stopped early (an unreadable message, a stall), or None.
        returncode, stdout, stderr: of the process (None/"" when the handler ran in a thread).
        exception: what the handler raised, when it ran in a thread.
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


class _EndOfStream(Exception):
    pass


class _Stopped(Exception):
    pass


# =========================================================================== process pipes
class _Drain:
    """Reads a pipe to its end on a thread; optionally hands each line to ``on_line``."""

    def __init__(self, pipe: Any, on_line: Callable[[str], None] | None = None) -> None:
        self._pipe = pipe
        self._on_line = on_line
        self._chunks = bytearray()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loopback-pipe")
        self._thread.start()

    def _run(self) -> None:
        for line in iter(self._pipe.readline, b""):
            self._chunks += line
            if len(self._chunks) > _MAX_LOG_BYTES:
                del self._chunks[: len(self._chunks) - _MAX_LOG_BYTES]
            if self._on_line is not None:
                try:
                    self._on_line(line.decode("utf-8", errors="replace").rstrip("\n"))
                except Exception:  # a logging handler failing must not stop draining
                    pass
        self._pipe.close()

    def text(self, timeout: float | None = None) -> str:
        """What was read so far (after waiting up to ``timeout`` s for the end of the pipe)."""
        if timeout:
            self._thread.join(timeout)
        return bytes(self._chunks).decode("utf-8", errors="replace")


_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}


def _forward(line: str) -> None:
    """A line of the process's stderr → ``drone_gadgets.wire.loopback.process`` at its own level.

    gadgetron-python formats its log as ``<date> <time>.<ms> <LEVEL> [ext. <pid> <module>.<target>] …``.
    """
    parts = line.split(" ", 3)
    level = _LEVELS.get(parts[2], logging.INFO) if len(parts) > 2 else logging.INFO
    if line.strip():
        process_log.log(level, "%s", line)


# =========================================================================== the connection
class Loopback:
    """Gadgetron's end of one external-node connection.

    Create it with :meth:`spawn` (a real ``python -m gadgetron`` process over loopback TCP) or
    :meth:`in_thread` (the handler in a thread of this process over a socket pair: same bytes, no
    interpreter start-up); then :meth:`handshake`, :meth:`send` messages, :meth:`send_close` and
    :meth:`finish`. :meth:`stop` (also on leaving a ``with`` block) always ends the process.

    Attributes:
        reply: the :class:`Reply`, filled by the reader thread as messages arrive.
        process: the ``subprocess.Popen`` (None in thread mode).
        send_failed: the Python side stopped reading (it closed, failed or answered CLOSE) before
            everything was sent; further sends are skipped, as Gadgetron's would fail.
    """

    def __init__(self, sock: socket.socket, *, process: subprocess.Popen[bytes] | None = None,
                 pipes: tuple[_Drain, _Drain] | None = None, thread: threading.Thread | None = None,
                 thread_result: "queue.Queue[BaseException | None] | None" = None,
                 stall_timeout_s: float = STALL_TIMEOUT_S,
                 on_message: Callable[[int, Any], None] | None = None) -> None:
        self.sock = sock
        self.process = process
        self._pipes = pipes
        self._thread = thread
        self._thread_result = thread_result
        self.stall_timeout_s = float(stall_timeout_s)
        self._on_message = on_message
        self.reply = Reply()
        self.send_failed = False
        self._stop = threading.Event()
        self._done = threading.Event()
        self._last_progress = time.monotonic()
        sock.settimeout(_POLL_S)
        self._reader = threading.Thread(target=self._read_replies, daemon=True, name="loopback-reader")
        self._reader.start()

    # ------------------------------------------------------------------ start
    @classmethod
    def spawn(cls, module: str = "drone_gadgets.gadget", target: str = "drone_mrf", *,
              env: Mapping[str, str] | None = None, python: str | None = None,
              cwd: str | os.PathLike[str] | None = None, log_level: str = "INFO",
              accept_timeout_s: float = ACCEPT_TIMEOUT_S, stall_timeout_s: float = STALL_TIMEOUT_S,
              forward_log: bool = True, on_message: Callable[[int, Any], None] | None = None) -> "Loopback":
        """Listen on 127.0.0.1 (a free port), start ``<python> -m gadgetron <port> <module> <target>``, accept.

        Args:
            module, target: the handler, as in ``<execute name=module target=target type="python"/>``.
            env: variables added to this process's environment for the child.
            python: the interpreter (default ``sys.executable``).
            cwd: the child's working directory (default: this process's).
            log_level: ``GADGETRON_EXTERNAL_LOG_LEVEL`` for the child, unless ``env`` sets it.
            accept_timeout_s: how long the child may take to connect.
            stall_timeout_s: see :class:`Loopback`.
            forward_log: forward the child's stderr lines to ``drone_gadgets.wire.loopback.process``.
            on_message: called on the reader thread with ``(message id, body)`` of every reply.

        Raises:
            LoopbackError: the process exited or did not connect in time (its stderr included).
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.settimeout(_POLL_S)
            port = listener.getsockname()[1]
            environment = dict(os.environ)
            environment.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", log_level)
            environment.update(env or {})
            command = [python or sys.executable, "-m", "gadgetron", str(port), module, target]
            log.debug("starting %s", " ".join(command))
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=environment,
                                       cwd=None if cwd is None else str(cwd))
            pipes = (_Drain(process.stdout), _Drain(process.stderr, _forward if forward_log else None))
            deadline = time.monotonic() + accept_timeout_s
            while True:
                try:
                    conn, _ = listener.accept()
                    break
                except socket.timeout:
                    pass
                status = process.poll()
                if status is not None or time.monotonic() > deadline:
                    if status is None:
                        process.kill()
                    process.wait(EXIT_TIMEOUT_S)
                    stderr = pipes[1].text(EXIT_TIMEOUT_S)
                    why = (f"exited with status {process.returncode} before connecting" if status is not None
                           else f"did not connect within {accept_timeout_s:g} s (killed)")
                    raise LoopbackError(f"the gadget process `{' '.join(command[1:])}` {why}; its log ends with:\n"
                                        f"{_tail(stderr)}", stderr=stderr, returncode=process.returncode)
        finally:
            listener.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(conn, process=process, pipes=pipes, stall_timeout_s=stall_timeout_s, on_message=on_message)

    @classmethod
    def in_thread(cls, handler: Callable[[Any], None], *, stall_timeout_s: float = STALL_TIMEOUT_S,
                  on_message: Callable[[int, Any], None] | None = None) -> "Loopback":
        """Run ``handler(connection)`` in a thread over a socket pair, as ``python -m gadgetron`` would
        (a gadgetron-python ``Connection`` that reads CONFIG and HEADER first, closed at the end)."""
        ours, theirs = socket.socketpair()
        result: "queue.Queue[BaseException | None]" = queue.Queue()

        def main() -> None:
            from gadgetron.external.connection import Connection

            try:
                with Connection(theirs) as connection:
                    handler(connection)
            except BaseException as exc:  # handed to finish() through the queue
                result.put(exc)
            else:
                result.put(None)

        thread = threading.Thread(target=main, daemon=True, name="loopback-handler")
        thread.start()
        return cls(ours, thread=thread, thread_result=result, stall_timeout_s=stall_timeout_s, on_message=on_message)

    def __enter__(self) -> "Loopback":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading (background thread)
    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._stop.is_set():
                raise _Stopped()
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                continue
            except OSError as exc:
                raise _EndOfStream(f"socket error: {exc}") from None
            if not chunk:
                raise _EndOfStream(f"connection ended ({len(buf)} of {n} bytes of a read)" if buf else "")
            buf += chunk
            self._last_progress = time.monotonic()
        return bytes(buf)

    def _read_one(self) -> tuple[int, Any] | None:
        try:
            head = self._recv_exact(2)
        except _EndOfStream as exc:
            self.reply.eof = True
            if str(exc):
                self.reply.failure = self.reply.failure or str(exc)
            return None
        (mid,) = _U16.unpack(head)
        src = self._recv_exact
        if mid == CLOSE:
            return CLOSE, None
        if mid == ERROR:
            (n,) = _U64.unpack(src(8))
            if n > MAX_ATTRIBUTE_BYTES:
                raise ValueError(f"ERROR message of {n} bytes")
            return ERROR, src(n).decode("utf-8", errors="replace")
        if mid == IMAGE:
            return IMAGE, read_image(SimpleNamespace(read=src))  # the gadget's own decoder
        if mid == WAVEFORM:
            hb = src(_WAVEFORM_HEADER_SIZE)
            h = ismrmrd.WaveformHeader.from_buffer_copy(hb)
            return WAVEFORM, hb + src(int(h.channels) * int(h.number_of_samples) * 4)
        if mid == ACQUISITION:
            hb = src(_ACQ_HEADER_SIZE)
            h = ismrmrd.AcquisitionHeader.from_buffer_copy(hb)
            n = int(h.number_of_samples) * (int(h.active_channels) * 8 + int(h.trajectory_dimensions) * 4)
            return ACQUISITION, hb + src(n)
        raise ValueError(f"unexpected message id {mid} from the Python process")

    def _read_replies(self) -> None:
        try:
            while True:
                item = self._read_one()
                if item is None:
                    return
                self.reply.messages.append(item)
                if self._on_message is not None:
                    self._on_message(*item)
                if item[0] == CLOSE:
                    self.reply.closed = True
                    # Like Gadgetron, whose channel ends once the external side has closed.
                    try:
                        self.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
        except _Stopped:
            self.reply.failure = self.reply.failure or "stopped before the end of the reply"
        except _EndOfStream as exc:
            self.reply.eof = True
            self.reply.failure = self.reply.failure or f"connection ended inside a message: {exc}"
        except Exception as exc:  # unreadable message: the stream cannot be followed further
            self.reply.failure = self.reply.failure or f"{type(exc).__name__}: {exc}"
        finally:
            self._done.set()

    # ------------------------------------------------------------------ sending
    def _stalled(self) -> bool:
        return time.monotonic() - self._last_progress > self.stall_timeout_s

    def send(self, *messages: bytes) -> bool:
        """Send raw messages; False (and ``send_failed`` set) once the Python side stopped reading.

        Raises:
            LoopbackError: nothing could be sent or received for ``stall_timeout_s`` seconds.
        """
        for message in messages:
            view = memoryview(message)
            while view.nbytes:
                if self.send_failed or self._done.is_set():
                    self.send_failed = True
                    return False
                try:
                    sent = self.sock.send(view)
                except socket.timeout:
                    if self._stalled():
                        raise LoopbackError(f"the gadget accepted no input and sent nothing for "
                                            f"{self.stall_timeout_s:g} s", stderr=self.output()[1]) from None
                    continue
                except OSError:
                    self.send_failed = True
                    return False
                view = view[sent:]
                self._last_progress = time.monotonic()
        return True

    def handshake(self, config: bytes | str | Mapping[str, str] | None, header: bytes | str) -> bool:
        """CONFIG then HEADER (``config``: the XML or ``{property: value}``)."""
        return self.send(config_message(config), header_message(header))

    def send_image(self, image: ismrmrd.Image) -> bool:
        """IMAGE of an ``ismrmrd.Image``."""
        return self.send(image_message(image))

    def send_close(self) -> bool:
        """CLOSE: the end of the input."""
        return self.send(close_message())

    def close(self) -> None:
        """Alias of :meth:`send_close` (the test helper's name)."""
        self.send_close()

    def kill_connection(self) -> None:
        """Gadgetron dies: its socket closes without CLOSE."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ------------------------------------------------------------------ results
    def wait_reply(self, timeout: float | None = None) -> Reply:
        """Wait until the Python side sent CLOSE or the connection ended.

        Args:
            timeout: at most this long in total; None: until no progress for ``stall_timeout_s``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(_POLL_S):
            if deadline is not None and time.monotonic() > deadline:
                self.reply.failure = self.reply.failure or f"no CLOSE and no end of connection within {timeout:g} s"
                break
            if deadline is None and self._stalled():
                self.reply.failure = self.reply.failure or (f"no CLOSE and nothing received for "
                                                            f"{self.stall_timeout_s:g} s")
                break
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

    def finish(self, timeout: float | None = None) -> Reply:
        """Wait for the reply and the end of the process; collect exit status and output.

        Args:
            timeout: for the reply, see :meth:`wait_reply`; the process then gets
                :data:`EXIT_TIMEOUT_S` to exit before it is killed.
        """
        reply = self.wait_reply(timeout)
        exited = self.wait_exit(EXIT_TIMEOUT_S)
        self._stop.set()
        self._reader.join(EXIT_TIMEOUT_S)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.process is not None:
            if not exited:
                self.process.kill()
                self.process.wait(EXIT_TIMEOUT_S)
                reply.failure = ((reply.failure or "")
                                 + f" (the process did not exit within {EXIT_TIMEOUT_S:g} s; killed)")
            reply.returncode = self.process.returncode
            reply.stdout, reply.stderr = self.output()
        elif exited and self._thread_result is not None:
            reply.exception = self._thread_result.get_nowait()
        return reply

    def stop(self) -> None:
        """End everything now (idempotent): the reader, the socket and the process (killed if alive)."""
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
                log.error("the gadget process %d did not end after SIGKILL", self.process.pid)
        self._reader.join(EXIT_TIMEOUT_S)

    def output(self) -> tuple[str, str]:
        """``(stdout, stderr)`` of the process so far (complete once it has ended); ``("", "")`` in thread mode."""
        if self._pipes is None:
            return "", ""
        ended = self.process is not None and self.process.poll() is not None
        timeout = EXIT_TIMEOUT_S if ended else None
        return self._pipes[0].text(timeout), self._pipes[1].text(timeout)


# =========================================================================== a whole run
@dataclass
class GadgetRun:
    """The outcome of a successful :func:`run_gadget`.

    Attributes:
        images: the images the gadget sent back, in arrival order.
        sent: number of data messages sent to it.
        seconds: from the start of the process to its exit.
        stream_seconds: from the first data message sent until the reply is complete and the process
            has exited (it includes the handler's imports and model load, which overlap the sending).
        stderr: the process's log.
        reply: everything received.
    """

    images: list[ismrmrd.Image]
    sent: int
    seconds: float
    stream_seconds: float
    stderr: str
    reply: Reply


def run_gadget(header: bytes | str, items: Iterable[ismrmrd.Image | bytes],
               config: bytes | str | Mapping[str, str] | None = None, *, module: str = "drone_gadgets.gadget",
               target: str = "drone_mrf", env: Mapping[str, str] | None = None,
               on_sent: Callable[[int], None] | None = None, on_message: Callable[[int, Any], None] | None = None,
               accept_timeout_s: float = ACCEPT_TIMEOUT_S, stall_timeout_s: float = STALL_TIMEOUT_S,
               started: Callable[[Loopback], None] | None = None) -> GadgetRun:
    """Run a gadget over loopback as Gadgetron would: spawn, CONFIG, HEADER, the items, CLOSE, replies.

    Args:
        header: the ISMRMRD XML header.
        items: ``ismrmrd.Image`` (sent as IMAGE) or ready-made raw messages (bytes); consumed lazily,
            so they may be read from a file while the gadget starts.
        config: the ``<configuration>`` XML or ``{property: value}`` (see :func:`config_xml`).
        module, target: the handler.
        env: extra environment variables for the process.
        on_sent: called with the running count after each item sent.
        on_message: called on the reader thread with ``(message id, body)`` of every reply.
        accept_timeout_s, stall_timeout_s: see :meth:`Loopback.spawn`.
        started: called with the :class:`Loopback` once connected (e.g. to keep a handle).

    Returns:
        the images sent back, on success (CLOSE, exit status 0, no ERROR, nothing on stdout).

    Raises:
        ValueError: the header does not parse.
        GadgetError: the gadget sent ERROR (its text in ``gadget_message``).
        LoopbackError: any other failure (the process's log in ``stderr``).
    """
    check_header(header)
    t0 = time.perf_counter()
    loop = Loopback.spawn(module, target, env=env, accept_timeout_s=accept_timeout_s,
                          stall_timeout_s=stall_timeout_s, on_message=on_message)
    sent = 0
    t_stream = None
    try:
        if started is not None:
            started(loop)
        loop.handshake(config, header)
        for item in items:
            message = bytes(item) if isinstance(item, (bytes, bytearray, memoryview)) else image_message(item)
            if t_stream is None:
                t_stream = time.perf_counter()
            if not loop.send(message):
                break
            sent += 1
            if on_sent is not None:
                on_sent(sent)
        loop.send_close()
        reply = loop.finish()
        t_end = time.perf_counter()
    finally:
        loop.stop()
    stderr = reply.stderr
    if reply.errors:
        raise GadgetError(reply.errors[0], stderr=stderr, returncode=reply.returncode)
    if not reply.closed or reply.failure:
        why = reply.failure or "the connection ended without CLOSE"
        raise LoopbackError(f"the gadget process failed: {why} (exit status {reply.returncode}); its log ends with:\n"
                            f"{_tail(stderr)}", stderr=stderr, returncode=reply.returncode)
    if reply.returncode != 0:
        raise LoopbackError(f"the gadget process exited with status {reply.returncode} after CLOSE; its log ends "
                            f"with:\n{_tail(stderr)}", stderr=stderr, returncode=reply.returncode)
    if reply.stdout:
        raise LoopbackError(f"the gadget process wrote to stdout, which is Gadgetron's output stream (it would "
                            f"corrupt Gadgetron's output): {reply.stdout[:500]!r}", stderr=stderr,
                            returncode=reply.returncode)
    if loop.send_failed and sent == 0 and t_stream is not None:  # pragma: no cover - CLOSE before any input
        log.warning("the gadget closed the connection before reading its input")
    return GadgetRun(reply.images, sent, t_end - t0, t_end - (t_stream or t_end), stderr, reply)
