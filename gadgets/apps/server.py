"""``drone serve``: a standing reconstruction server for ISMRMRD stream clients.

Sites without Gadgetron (and FIRE-style external reconstruction) send their frames to a server in
the MRD streaming protocol (:mod:`drone_gadgets.wire.mrd`): CONFIG_FILE or CONFIG_TEXT, HEADER,
optionally TEXT, the images, CLOSE. This server answers each connection with the T1/T2/M0 map
images and CLOSE, running the ``drone_mrf`` gadget's own stages
(:func:`drone_gadgets.recon.stages.pipeline`, after :func:`drone_gadgets.recon.prepare.prepare`) — the same code
as inside Gadgetron, not a copy.

Per connection (one worker thread each, at most ``workers`` at once, ``queue`` more waiting, any
further one refused at once with an ERROR saying the server is busy):

1. messages before HEADER: CONFIG_FILE (a chain name) or CONFIG_TEXT (a chain's text) select the
   gadget's settings (:mod:`drone_gadgets.wire.chains`; none: ``drone_images``, the defaults); a TEXT
   holding a JSON object adds parameters (python-ismrmrd-server's "additional config");
2. HEADER: the ISMRMRD header, checked against the estimator's schedule as in Gadgetron;
3. data until CLOSE: images become maps as soon as a slice's fingerprint is complete;
   acquisitions and waveforms pass through unchanged, as in the gadget; TEXT is logged.

Failures are isolated: whatever goes wrong with one connection (bad settings, a schedule mismatch,
garbage bytes, an unknown message id, a size over :class:`~drone_gadgets.wire.mrd.Limits`, a client
silent for ``idle_timeout_s``, a client that disconnects) ends that connection — with a TEXT
``ERROR drone_mrf: <reason>`` and CLOSE where the client can still hear it — and the server goes on
serving the others. Memory per connection is bounded by the limits (one message plus the frames of
incomplete slices, ``max_pending_bytes``: a slice's whole N-frame stack counts from its first frame);
estimators are shared between connections (built once per setting, :class:`EstimatorCache`).

Refusals reach clients that send everything before they read (python-ismrmrd-server's
``client.py`` sends CONFIG, the header and every image, then waits; its receiver shuts the socket
when CLOSE arrives): the ERROR TEXT is sent at once, then the server reads and discards the rest of
the client's stream up to its CLOSE (ending after ``_DRAIN_IDLE_S`` without a byte or
``_DRAIN_MAX_S`` in all), and only then sends CLOSE. So the client is never written into a closed
connection (no broken pipe) and reads the reason. This holds for a busy server's refusals too (on a
thread of their own, up to ``_MAX_DRAINING_REFUSALS`` at once). Where the stream cannot be read on
(garbage, a size over the limits), CLOSE follows at once.

Parameters a client sends that the gadget does not know (python-ismrmrd-server's own
``invertcontrast.json`` sends ``options`` and ``sendOriginal``) are ignored with a warning that names
them, in the server's log and as a ``WARNING drone_mrf: …`` TEXT to the client; a bad value of a
property the gadget does know is still refused.

Properties that name files or hardware on the server (``model``, ``dictionary``, ``device``, and
``b1`` when it is ``file:<path>``) are the operator's: ``drone serve --model …`` sets them, and a
client's configuration may not change them (it may repeat their defaults, as the shipped chain files
do) unless the server runs with ``--trust-client-config``. A client may choose ``b1`` = ``none``,
``stream`` or ``estimate`` and ``b1_series_index``/``b1_scale`` (B1 maps it sends itself).

SIGTERM or SIGINT: the server stops accepting, lets connections in progress finish for
``shutdown_grace_s`` seconds, then ends the rest with ``ERROR … the server is shutting down`` and
CLOSE, and exits; it never hangs on a client.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..recon.errors import GadgetFailed, PeerGoneError, ProtocolError, SettingsError, StreamError
from ..recon.settings import PROPERTIES, GadgetSettings, parse_property_args, settings_from_properties
from ..wire.chains import DEFAULT_CHAIN, Chain, ChainCatalog, chain_from_text
from ..wire.external import RobustSocket, run_session
from ..wire.mrd import (ConfigFile, ConfigText, Header, Limits, MessageReader, Text, encode, error_text,
                        parameters_from_json)

__all__ = [
    "ServerOptions",
    "ReconServer",
    "EstimatorCache",
    "ServerStats",
    "SERVER_LOCKED",
    "DEFAULT_PORT",
    "add_arguments",
    "run",
    "main",
]

log = logging.getLogger(__name__)

#: The port python-ismrmrd-server and FIRE use.
DEFAULT_PORT = 9002
#: Properties naming files or hardware of the server: set by its operator, not by clients.
SERVER_LOCKED: tuple[str, ...] = ("model", "dictionary", "device")
_DEFAULTS = {p.name: p.default for p in PROPERTIES}
_NAME = "drone_mrf"
#: After an error report, how long the server reads and discards a client's input (so that the
#: client, possibly still sending, receives the report before the connection closes) when it cannot
#: read on to the client's CLOSE (garbage, a size over the limits, a silent client).
_DRAIN_S = 1.0
#: Reading on to a refused client's CLOSE ends after this long without a byte …
_DRAIN_IDLE_S = 5.0
#: … or after this long in all.
_DRAIN_MAX_S = 120.0
#: Refusals of a busy server that read on to the client's CLOSE on their own threads at once; beyond
#: that a refusal is sent and the connection closed at once.
_MAX_DRAINING_REFUSALS = 8
_POLL_S = 0.2


@dataclass(frozen=True)
class ServerOptions:
    """How a :class:`ReconServer` runs.

    Attributes:
        host, port: where it listens (port 0: any free port; see :attr:`ReconServer.address`).
        workers: connections reconstructed at once (one thread each).
        queue: connections accepted and waiting for a worker; any beyond are refused as busy.
        properties: the server's gadget properties (``{"model": "/models/x.safetensors", …}``):
            defaults for every connection; those in :data:`SERVER_LOCKED` are fixed.
        config_dirs: folders of chain XML files clients may name (CONFIG_FILE).
        limits: per-connection bounds (sizes, memory, timeouts).
        shutdown_grace_s: on shutdown, how long connections in progress may still finish.
        trust_client_config: let clients set :data:`SERVER_LOCKED` properties too.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 2
    queue: int = 8
    properties: Mapping[str, str] = field(default_factory=dict)
    config_dirs: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    shutdown_grace_s: float = 30.0
    trust_client_config: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers: expected a positive int, got {self.workers!r}")
        if not isinstance(self.queue, int) or self.queue < 0:
            raise ValueError(f"queue: expected an int >= 0, got {self.queue!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0…65535, got {self.port!r}")
        if not self.shutdown_grace_s >= 0:
            raise ValueError(f"shutdown_grace_s: expected >= 0, got {self.shutdown_grace_s!r}")
        settings_from_properties(dict(self.properties))  # unknown names or bad values fail here


@dataclass
class ServerStats:
    """Counters of a server's connections (for logs, tests and the soak benchmark)."""

    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    refused_busy: int = 0
    images_in: int = 0
    messages_out: int = 0


class EstimatorCache:
    """Estimators shared between connections, one per (estimator, model, dictionary, device, frames).

    Built on first use (a connection waiting for the same estimator waits for that build instead of
    making a second); at most ``size`` are kept (least recently used dropped). Estimators are only
    read during reconstruction, so threads can share them.
    """

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"size: expected a positive int, got {size!r}")
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}
        self.builds = 0

    @staticmethod
    def key(settings: GadgetSettings) -> tuple[Any, ...]:
        return (settings.estimator, settings.model, settings.dictionary, settings.device,
                settings.frames_per_fingerprint)

    def get(self, settings: GadgetSettings) -> Any:
        """The estimator of ``settings`` (see :func:`drone_gadgets.recon.estimators.build_estimator`)."""
        from ..recon.estimators import build_estimator

        key = self.key(settings)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            estimator = build_estimator(settings)
            with self._lock:
                self.builds += 1
                self._items[key] = estimator
                self._building.pop(key, None)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return estimator


class _ShutdownError(StreamError):
    """The server is shutting down and ended this connection."""


class _Session:
    """One client connection: its socket, its state, and how it is ended early."""

    def __init__(self, server: "ReconServer", sock: socket.socket, address: Any, number: int) -> None:
        self.server = server
        self.number = number
        self.peer = f"the client {address[0]}:{address[1]}" if isinstance(address, tuple) else "the client"
        limits = server.options.limits
        self.sock = RobustSocket(sock, peer=self.peer, idle_timeout_s=limits.idle_timeout_s,
                                 deadline=time.monotonic() + limits.max_connection_s)
        self.abort_reason: str | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.reader: MessageReader | None = None
        self.reader_intact = True  # False once a read failed: the stream cannot be parsed on
        self.client_closed = False  # the client's CLOSE has been read

    def abort(self, reason: str) -> None:
        """End the session early: its next (or current) read fails, and it reports ``reason``."""
        with self.lock:
            if self.abort_reason is not None or self.done.is_set():
                return
            self.abort_reason = reason
        with contextlib.suppress(OSError):
            self.sock.socket.shutdown(socket.SHUT_RD)  # wakes a blocked recv

    def report(self, text: str) -> None:
        self.sock.write(encode(Text(error_text(text))))

    # ------------------------------------------------------------------- the protocol
    def messages(self, reader: MessageReader) -> Iterator[Any]:
        """Every message until CLOSE; a shutdown turns the read failure it causes into an error."""
        while True:
            if self.abort_reason is not None:
                raise _ShutdownError(self.abort_reason)
            try:
                message = reader.read()
            except PeerGoneError:
                self.reader_intact = False
                if self.abort_reason is not None:
                    raise _ShutdownError(self.abort_reason) from None
                if reader.messages == 0:  # connected and closed without a byte (a port probe)
                    log.info("[%d] %s closed without sending anything", self.number, self.peer)
                    return
                raise
            except BaseException:
                self.reader_intact = False
                raise
            if message is None:
                self.client_closed = True
                return
            yield message

    def drain_to_close(self) -> bool:
        """After a refusal: read and discard the client's messages up to its CLOSE (module docstring).

        Returns:
            True when the client's CLOSE was read (now or before), False when the stream could not be
            read on to it (broken, silent, too long, the server shutting down).
        """
        if self.client_closed:
            return True
        if self.reader is None or not self.reader_intact or self.abort_reason is not None:
            return False
        self.sock.idle_timeout_s = min(self.sock.idle_timeout_s or _DRAIN_IDLE_S, _DRAIN_IDLE_S)
        end = time.monotonic() + _DRAIN_MAX_S
        self.sock.deadline = end if self.sock.deadline is None else min(self.sock.deadline, end)
        discarded = 0
        try:
            while self.reader.read() is not None:
                discarded += 1
        except (StreamError, OSError) as exc:
            log.info("[%d] %s: stopped reading the refused stream after %d message(s): %s", self.number, self.peer,
                     discarded, exc)
            return False
        self.client_closed = True
        log.info("[%d] %s: read the refused stream on to its CLOSE (%d message(s) discarded)", self.number,
                 self.peer, discarded)
        return True

    def outputs(self) -> Iterator[Any]:
        """Read the preamble, prepare the estimator, then run the gadget's stages on the data."""
        from ..recon.prepare import prepare
        from ..recon.stages import pipeline

        reader = self.reader = MessageReader(self.sock.read, self.server.options.limits)
        messages = self.messages(reader)
        chain: Chain | None = None
        extra: dict[str, str] = {}
        header: bytes | None = None
        for message in messages:
            if isinstance(message, ConfigFile):
                chain = self._once(chain, self.server.catalog.get(message.name), "CONFIG_FILE")
            elif isinstance(message, ConfigText):
                chain = self._once(chain, chain_from_text(message.text), "CONFIG_TEXT")
            elif isinstance(message, Text):
                extra.update(self._parameters(message))
            elif isinstance(message, Header):
                header = message.xml
                break
            else:
                raise ProtocolError(f"a {type(message).__name__} arrived before the ISMRMRD header; a client sends "
                                    f"CONFIG_FILE or CONFIG_TEXT, HEADER, then the data")
        if header is None:
            log.info("[%d] the client closed without sending a header; nothing to do", self.number)
            return
        first: list[Any] = []
        for message in messages:  # TEXTs between the header and the data: JSON parameters or logging
            if isinstance(message, Text):
                extra.update(self._parameters(message))
                continue
            first.append(message)
            break
        if chain is None:
            chain = self.server.catalog.get(DEFAULT_CHAIN)
        properties = self.server.effective_properties(chain, extra, warn=self._warn_client)
        settings = settings_from_properties(properties)
        _check_header(header, settings)
        settings, estimator = prepare(settings, header, build=self.server.estimators.get)
        log.info("[%d] %s: chain %r (%s), maps %s", self.number, self.peer, chain.name, chain.source,
                 ", ".join(settings.maps))
        yield from pipeline(self._data(itertools.chain(first, messages)), estimator, settings,
                            max_pending_bytes=self.server.options.limits.max_pending_bytes)

    def _warn_client(self, text: str) -> None:
        """Log a warning and tell the client (a TEXT ``WARNING drone_mrf: …``, before any map)."""
        log.warning("[%d] %s: %s", self.number, self.peer, text)
        self.sock.write(encode(Text(f"WARNING {_NAME}: {text}")))

    def _parameters(self, message: Text) -> dict[str, str]:
        """A TEXT before the data: JSON parameters (returned), or free text (logged)."""
        params = parameters_from_json(message.text)
        if params is None:
            log.info("[%d] client text: %s", self.number, message.text[:500])
            return {}
        return params

    @staticmethod
    def _once(current: Chain | None, new: Chain, what: str) -> Chain:
        if current is not None:
            raise ProtocolError(f"a second configuration ({what}) arrived; a client sends one CONFIG_FILE or "
                                f"CONFIG_TEXT")
        return new

    def _data(self, messages: Iterator[Any]) -> Iterator[Any]:
        import ismrmrd

        for message in messages:
            if isinstance(message, Text):
                log.info("[%d] client text: %s", self.number, message.text[:500])
                continue
            if isinstance(message, (ConfigFile, ConfigText, Header)):
                raise ProtocolError(f"a {type(message).__name__} arrived after the data had begun; a client sends "
                                    f"its configuration and header first")
            if isinstance(message, ismrmrd.Image):
                self.server._count("images_in")
            yield message

    def run(self) -> None:
        """Serve the connection to its end (never raises)."""
        start = time.perf_counter()
        ok = False
        try:
            if self.server.stopping:
                self.abort("the server is shutting down; nothing was reconstructed")
            sent = run_session(self.sock, self.outputs, self._counted_write, self.report, name=_NAME,
                               drain_seconds=_DRAIN_S, drain=self.drain_to_close)
            ok = True
            log.info("[%d] %s: done, %d message(s) sent in %.2f s", self.number, self.peer, sent,
                     time.perf_counter() - start)
        except GadgetFailed as exc:
            log.warning("[%d] %s: connection ended: %s", self.number, self.peer, exc)
        except Exception:  # pragma: no cover - run_session reports everything; belt and braces
            log.exception("[%d] %s: unexpected failure", self.number, self.peer)
        finally:
            self.done.set()
            self.sock.close()
            self.server._finished(self, ok)

    def _counted_write(self, item: Any) -> None:
        self.sock.write(encode(item))
        self.server._count("messages_out")


class ReconServer:
    """A standing MRD server running the ``drone_mrf`` stages; see the module docstring.

    The socket is bound when the server is made (so a port 0 server knows its :attr:`address`);
    :meth:`serve_forever` accepts until :meth:`shutdown`. The default estimator is built at once, so
    a bad ``model`` fails here and not at the first scan.

    Example::

        with ReconServer(ServerOptions(port=0)) as server:
            server.start()                  # background thread
            host, port = server.address
            ...
        # leaving the block shuts it down

    Raises:
        SettingsError: bad server properties (e.g. a model that does not load).
        OSError: the address cannot be bound.
    """

    def __init__(self, options: ServerOptions | None = None, *, estimators: EstimatorCache | None = None) -> None:
        self.options = options or ServerOptions()
        self.catalog = ChainCatalog(self.options.config_dirs)
        self.estimators = estimators or EstimatorCache()
        self.stats = ServerStats()
        self._server_props = {str(k): str(v) for k, v in self.options.properties.items()}
        defaults = settings_from_properties(dict(self._server_props))
        from ..recon.b1maps import check_b1_support, open_b1_source

        check_b1_support(defaults, self.estimators.get(defaults))  # fail fast, warm the cache
        open_b1_source(defaults)  # a bad B1 file fails at start too, not at the first scan
        self._listener = socket.create_server((self.options.host, self.options.port), backlog=64,
                                              reuse_port=False)
        self._listener.settimeout(_POLL_S)
        self._pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="drone-serve")
        self._slots = threading.BoundedSemaphore(self.options.workers + self.options.queue)
        self._draining = threading.BoundedSemaphore(_MAX_DRAINING_REFUSALS)
        self._sessions: set[_Session] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._numbers = itertools.count(1)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------- properties
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def active(self) -> int:
        """Connections accepted and not finished (working or queued)."""
        with self._lock:
            return len(self._sessions)

    def effective_properties(self, chain: Chain, extra: Mapping[str, str], *,
                             warn: Any = None) -> dict[str, str]:
        """The properties a connection runs with: the chain's, the client's extra parameters, then the
        server's (which win for :data:`SERVER_LOCKED` names).

        Parameters the client sent (its JSON parameters, or the chain text it sent as CONFIG_TEXT) that
        the gadget does not know are left out, and ``warn(text)`` is called with a message naming them
        (a chain of the server's own catalog is not filtered: an unknown name there is its operator's
        typo, refused like the gadget inside Gadgetron refuses it).

        Raises:
            SettingsError: a client setting a locked property to something else than its default or
                the server's value (unless ``trust_client_config``).
        """
        from_client = dict(extra)
        if chain.source.startswith("CONFIG_TEXT"):
            from_client = {**chain.properties, **from_client}
        unknown = sorted(name for name in from_client if name not in _DEFAULTS)
        if unknown:
            text = (f"ignored the parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                    f"not propert{'ies' if len(unknown) > 1 else 'y'} of the {_NAME} gadget (it knows "
                    f"{', '.join(_DEFAULTS)})")
            if warn is not None:
                warn(text)
            else:
                log.warning("%s", text)
        client = {name: value for name, value in {**chain.properties, **extra}.items() if name not in unknown}
        merged = {**self._server_props, **client}
        if not self.options.trust_client_config and "b1" in client:
            server_b1 = self._server_props.get("b1", _DEFAULTS["b1"])
            if client["b1"].strip().lower().startswith("file:") and client["b1"].strip() != server_b1.strip():
                raise SettingsError(f"property 'b1': a B1 map file names a file on the server, chosen by its operator "
                                    f"(drone serve --set b1=file:…; here {server_b1!r}); a client may set b1 to none, "
                                    f"stream or estimate, not {client['b1']!r}")
        if not self.options.trust_client_config:
            for name in SERVER_LOCKED:
                if name not in client:
                    continue
                server_value = self._server_props.get(name, _DEFAULTS[name])
                if client[name] not in (server_value, _DEFAULTS[name]):
                    raise SettingsError(f"property {name!r} is chosen by the server's operator (drone serve "
                                        f"--{name} / --set {name}=…; here {server_value!r}); a client may not set "
                                        f"it to {client[name]!r}")
                merged[name] = server_value
        return merged

    # ------------------------------------------------------------------- running
    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` (or :meth:`request_shutdown`) is called."""
        host, port = self.address
        log.info("drone serve: listening on %s:%d (%d worker(s), queue %d); chains: %s", host, port,
                 self.options.workers, self.options.queue, ", ".join(self.catalog.names))
        try:
            while not self._stopping.is_set():
                try:
                    conn, addr = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                self._admit(conn, addr)
        finally:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._stopped.set()

    def _admit(self, conn: socket.socket, addr: Any) -> None:
        number = next(self._numbers)
        self._count("accepted")
        if not self._slots.acquire(blocking=False):
            self._count("refused_busy")
            log.warning("[%d] %s:%s refused: the server is busy", number, *addr[:2])
            text = (f"{_NAME}: the server is busy ({self.options.workers} worker(s) and a queue of "
                    f"{self.options.queue} in use); try again later")
            if self._draining.acquire(blocking=False):
                threading.Thread(target=self._refuse_after_close, args=(conn, addr, number, text), daemon=True,
                                 name=f"drone-serve-refuse-{number}").start()
            else:
                _refuse(conn, text)
            return
        session = _Session(self, conn, addr, number)
        with self._lock:
            self._sessions.add(session)
        log.info("[%d] connection from %s:%s", number, *addr[:2])
        self._pool.submit(session.run)

    def _refuse_after_close(self, conn: socket.socket, addr: Any, number: int, text: str) -> None:
        """A busy refusal on its own thread: ERROR at once, the client's stream read on to its CLOSE, CLOSE."""
        try:
            session = _Session(self, conn, addr, number)
            session.reader = MessageReader(session.sock.read, self.options.limits)
            try:
                session.report(text)
            except (PeerGoneError, OSError):
                session.sock.close()
                return
            drained = session.drain_to_close()
            session.sock.close(drain_seconds=0.0 if drained else _DRAIN_S)
        finally:
            self._draining.release()

    def _finished(self, session: _Session, ok: bool) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.discard(session)
                self._slots.release()
            if ok:
                self.stats.succeeded += 1
            else:
                self.stats.failed += 1

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def start(self) -> threading.Thread:
        """Run :meth:`serve_forever` on a background thread (returned)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="drone-serve-accept", daemon=True)
            self._thread.start()
        return self._thread

    def request_shutdown(self) -> None:
        """Stop accepting (safe from a signal handler); :meth:`shutdown` does the rest."""
        self._stopping.set()

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting, let connections finish for ``grace_s`` (default the option), end the rest
        with an ERROR, and wait for the workers (bounded; never hangs on a client)."""
        grace = self.options.shutdown_grace_s if grace_s is None else grace_s
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            remaining = list(self._sessions)
        for session in remaining:
            log.warning("[%d] ending %s: the server is shutting down", session.number, session.peer)
            session.abort(f"the server is shutting down; the reconstruction was stopped after {grace:g} s of grace")
        end = time.monotonic() + 10.0
        while self.active and time.monotonic() < end:
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=False)
        log.info("drone serve: stopped (%s)", self.stats)

    def __enter__(self) -> "ReconServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(grace_s=0.0 if exc[0] is not None else None)


def _check_header(xml: bytes, settings: GadgetSettings) -> None:
    """Refuse a header that is not ISMRMRD XML (Gadgetron and gadgetron-python parse it first too),
    unless ``schedule_check`` is off (clients such as python-ismrmrd-server's send a placeholder
    text for files without a header)."""
    from ..recon.header import check_header

    try:
        check_header(xml)
    except ValueError as exc:
        if settings.schedule_check != "off":
            raise ProtocolError(f"{exc}; without it the acquisition's schedule cannot be checked (set the property "
                                f"schedule_check=off to reconstruct anyway)") from None
        log.warning("%s; going on (schedule_check=off)", exc)


def _refuse(conn: socket.socket, text: str) -> None:
    """Tell a connection that cannot be served why (ERROR TEXT, CLOSE), without waiting on it."""
    try:
        conn.settimeout(1.0)
        conn.sendall(encode(Text(error_text(text))) + encode(None))
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


# =========================================================================== command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``drone serve``'s arguments to ``parser``."""
    lim = Limits()
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--workers", type=int, default=2, help="connections reconstructed at once (default 2)")
    parser.add_argument("--queue", type=int, default=8,
                        help="connections waiting for a worker; more are refused as busy (default 8)")
    parser.add_argument("--model", help="DRONE model file (.safetensors) instead of the shipped one")
    parser.add_argument("--estimator", choices=("network", "dictionary"), help="network (DRONE) or dictionary matching")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:<index> (default auto)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="properties",
                        help="a gadget property for every connection (repeatable), as in the chain's <configuration>")
    parser.add_argument("--config-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="folder of chain XML files that clients may name (repeatable)")
    parser.add_argument("--idle-timeout", type=float, default=lim.idle_timeout_s, metavar="S",
                        help=f"close a connection silent for S seconds (default {lim.idle_timeout_s:g})")
    parser.add_argument("--max-connection-time", type=float, default=lim.max_connection_s, metavar="S",
                        help=f"close a connection open for S seconds (default {lim.max_connection_s:g})")
    parser.add_argument("--max-image-mb", type=float, default=lim.max_image_bytes / 2**20, metavar="MB",
                        help=f"largest image accepted (default {lim.max_image_bytes / 2**20:g} MiB)")
    parser.add_argument("--max-pending-mb", type=float, default=lim.max_pending_bytes / 2**20, metavar="MB",
                        help="frames a connection may hold for incomplete slices, a whole stack of N frames "
                             "per slice from its first frame (default "
                             f"{lim.max_pending_bytes / 2**20:g} MiB)")
    parser.add_argument("--shutdown-grace", type=float, default=30.0, metavar="S",
                        help="on SIGTERM, seconds connections in progress may still finish (default 30)")
    parser.add_argument("--trust-client-config", action="store_true",
                        help="let clients set model, dictionary and device (files and hardware of this machine)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log level (logs go to stderr; default INFO)")


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """:class:`ServerOptions` from parsed ``drone serve`` arguments."""
    properties = parse_property_args(args.properties, {"model": args.model, "estimator": args.estimator,
                                                       "device": args.device})
    limits = replace(Limits(), idle_timeout_s=args.idle_timeout, max_connection_s=args.max_connection_time,
                     max_image_bytes=int(args.max_image_mb * 2**20), max_pending_bytes=int(args.max_pending_mb * 2**20))
    return ServerOptions(host=args.host, port=args.port, workers=args.workers, queue=args.queue,
                         properties=properties, config_dirs=tuple(args.config_dir), limits=limits,
                         shutdown_grace_s=args.shutdown_grace, trust_client_config=args.trust_client_config)


def run(args: argparse.Namespace) -> int:
    """Run ``drone serve`` until SIGTERM/SIGINT; 0 after a clean shutdown, 2 when it cannot start."""
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = options_from_args(args)
        server = ReconServer(options)
    except (ValueError, OSError, ImportError) as exc:
        print(f"drone serve: error: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: Any) -> None:
        log.info("drone serve: %s received, shutting down", signal.Signals(signum).name)
        server.request_shutdown()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        host, port = server.address
        print(f"drone serve: listening on {host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
        server.serve_forever()
    finally:
        server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drone_gadgets.apps.server …`` (the same as ``drone serve``)."""
    parser = argparse.ArgumentParser(prog="drone serve", description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
