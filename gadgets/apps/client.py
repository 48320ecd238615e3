"""``drone send IN.h5 OUT.h5``: send a file's frames to a reconstruction server, write the maps it returns.

The client side of the MRD streaming protocol (:mod:`drone_gadgets.wire.mrd`), for ``drone serve``
and any server that speaks it (Gadgetron's own server with an images chain, python-ismrmrd-server):
it connects, sends CONFIG_FILE (``--config NAME``) or CONFIG_TEXT (``--config-file PATH``), the
file's ISMRMRD header, the images and CLOSE, and reads the replies at the same time on a second
thread (so neither side can block the other on full socket buffers). The replies are read with
ismrmrd's ``ProtocolDeserializer``. Images come back into ``OUT.h5`` the way ``drone replay`` and
Gadgetron's client store them (``/<group>/image_<series>``); PNG and NIfTI outputs as in ``drone
replay``, whose input and output code this shares.

B1 maps: with the property ``b1=stream`` (``--set b1=stream``, or in the ``--config-file`` chain)
the file's B1 map vars (series ``b1_series_index``) are sent first, then the frames; otherwise vars
of B1 map images (meta ``DRONE_Map`` = ``B1``) are not sent (as in ``drone replay``). The client
cannot see the properties of a chain the server has by name (``--config NAME``): if that chain sets
``b1=stream``, say so here too (``--set b1=stream``).

Properties (``--set NAME=VALUE``) are never silently dropped:

* with ``--config-file PATH`` the client writes them into the chain's text itself, in the
  ``<configuration>`` of the ``<external>`` node that runs the gadget
  (:func:`drone_gadgets.wire.chains.apply_properties`), so they work with any server, Gadgetron included;
* with ``--config NAME`` (a chain the client cannot see) they are sent as a TEXT of JSON parameters
  after the header (python-ismrmrd-server's convention, which ``drone serve`` applies). Gadgetron only
  logs that TEXT, so the client checks the settings each map image reports (meta ``DRONE_Settings``)
  and fails (:class:`SettingsNotApplied`) when they are not the ones asked for.

Raw data: a file whose group holds acquisitions (``/<group>/data``, e.g. ``drone simulate-scan --raw``
or a scanner's raw data converted to ISMRMRD) and no image frames is sent as ACQUISITION messages
(:class:`~drone_gadgets.apps.inputs.RawInput`), for a chain that reconstructs them first —
``xml_configs/drone_grappa_epi.xml``:
``drone send raw.h5 maps.h5 --config-file xml_configs/drone_grappa_epi.xml``. Unlike Gadgetron's own
``gadgetron_ismrmrd_client`` (which exits 0 whatever the chain did), a failure of the chain ends the
run with the server's message and a non-zero exit.

Failures: a TEXT reporting an error (``ERROR …``, or Gadgetron's ``[<location>] ERROR: …``,
:func:`drone_gadgets.wire.mrd.is_error_text`) fails the run with the server's message
(:class:`ServerError`); so does a CLOSE without any image for the frames sent, or a connection that
ends without CLOSE (:class:`SendError`). Nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..recon.errors import SettingsError
from ..recon.settings import PROPERTIES, GadgetSettings, parse_property_args, settings_from_properties
from .inputs import RawInput, open_input, open_raw_input
from .outputs import write_outputs
from .replay import ReplayResult, progress_bar

__all__ = ["ServerError", "SendError", "SettingsNotApplied", "send", "add_arguments",
           "run", "main", "DEFAULT_CONFIG"]

log = logging.getLogger(__name__)

#: The chain named by default: ``drone serve`` knows it built in; Gadgetron finds it by this file name
#: in its ``share/gadgetron/config`` (Gadgetron needs the ``.xml``).
DEFAULT_CONFIG = "drone_images.xml"
_BY_NAME = {p.name: p for p in PROPERTIES}


class SendError(RuntimeError):
    """The exchange with the server failed (no connection, a timeout, no CLOSE …)."""


class ServerError(SendError):
    """The server reported a failure (a TEXT starting with ``ERROR``).

    Attributes:
        server_message: the server's text without the ``ERROR`` prefix.
    """

    def __init__(self, server_message: str) -> None:
        super().__init__(f"the server reported an error: {server_message}")
        self.server_message = server_message


class SettingsNotApplied(SendError):
    """``--set`` properties sent as JSON parameters that the server did not apply (Gadgetron ignores them)."""


class _Receiver(threading.Thread):
    """Reads the server's replies until CLOSE: images kept, ERROR texts kept, other texts logged."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(name="drone-send-receiver", daemon=True)
        self.sock = sock
        self.images: list[Any] = []
        self.errors: list[str] = []
        self.texts: list[str] = []
        self.closed = False
        self.failure: BaseException | None = None
        self.last_activity = time.monotonic()

    def run(self) -> None:
        import ismrmrd

        from ..wire.mrd import error_message, is_error_text, serialization

        stream = self.sock.makefile("rb")
        try:
            for item in serialization().ProtocolDeserializer(stream).deserialize():
                self.last_activity = time.monotonic()
                if isinstance(item, ismrmrd.Image):
                    self.images.append(item)
                elif isinstance(item, str):
                    text = item.rstrip("\x00")
                    if is_error_text(text):
                        self.errors.append(error_message(text) + _hint(text))
                        log.debug("server error text: %r", text)
                    else:
                        self.texts.append(text)
                        log.info("server: %s", text)
                else:
                    log.warning("server sent a %s; ignored", type(item).__name__)
            self.closed = True
        except BaseException as exc:  # noqa: BLE001 - reported by send()
            self.failure = exc
        finally:
            stream.close()


def _hint(text: str) -> str:
    """What a Gadgetron error about its external node (or its noise storage) means for the user (empty for a
    gadget's own report)."""
    lowered = text.lower()
    if "/noiseadjust]" in lowered and ("store" in lowered or "unknown error" in lowered):
        return (" (NoiseAdjustGadget keeps the noise scan's covariance in Gadgetron's storage server, and this "
                "server could not store it: started with --disable_storage true? Send it data without a noise "
                "scan, e.g. drone simulate-scan --raw --no-noise-scan, or run it with its storage server)")
    if "errors received" in lowered or "/external]" not in lowered:
        return ""
    if "failed to connect" in lowered:
        return " (nothing listens on the <connect> port of the chain's <external> node: start the Python side first)"
    return (" (the chain's external Python process ended or stopped answering before it reported anything; "
            "the server's log has its output)")


def _meta_value(image: Any, name: str) -> str | None:
    meta = getattr(image, "meta", None)
    if meta is None:
        return None
    try:
        value = meta.get(name)
    except Exception:  # noqa: BLE001 - a meta that does not parse has no such value
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else str(value)


def check_settings_applied(images: Sequence[Any], requested: Mapping[str, str], config: str) -> None:
    """Fail unless every map image reports (meta ``DRONE_Settings``) the ``requested`` property values.

    Values are compared as the gadget reads them (``0.10`` = ``0.1``; ``maps`` as a set in emission order).

    Raises:
        SettingsNotApplied: an image without the meta, or with another value for a requested property.
    """
    import json

    asked = ", ".join(f"--set {k}={v}" for k, v in requested.items())
    advice = (f"the server ignored {asked} (it ran chain {config!r} with its own properties; Gadgetron does not "
              f"apply properties sent as JSON parameters): use --config-file PATH with the chain's file, into which "
              f"drone send writes the properties itself; nothing was written")
    maps = [im for im in images if _meta_value(im, "DRONE_Map") is not None]
    reported = [_meta_value(im, "DRONE_Settings") for im in maps]
    if not maps or any(r is None for r in reported):
        raise SettingsNotApplied(f"{advice} [the map images do not report their settings (meta DRONE_Settings)]")
    differ: dict[str, set[str]] = {}
    for text in reported:
        try:
            ran = json.loads(text or "")
        except json.JSONDecodeError:
            ran = {}
        for name, value in requested.items():
            prop = _BY_NAME[name]
            got = ran.get(name) if isinstance(ran, dict) else None
            try:
                same = got is not None and prop.parse(name, str(got)) == prop.parse(name, value)
            except SettingsError:
                same = False
            if not same:
                differ.setdefault(name, set()).add(str(got))
    if differ:
        ran_with = "; ".join(f"{k}={' or '.join(sorted(v))}" for k, v in differ.items())
        raise SettingsNotApplied(advice.replace("(it ran chain", f"(its maps ran with {ran_with}: chain", 1))


def _stream_settings(properties: Mapping[str, str], config_text: str | None) -> GadgetSettings:
    """The settings the server will (probably) run with, as far as the client can know: a chain text's
    properties under the ``--set`` ones (a chain the server has by name is not visible here)."""
    merged = dict(properties)
    if config_text is not None:
        from ..wire.chains import chain_from_text

        try:
            merged = {**chain_from_text(config_text).properties, **properties}
            return settings_from_properties(merged)
        except SettingsError as exc:  # the server will say what is wrong with it
            log.debug("the chain text does not parse here (%s); using the --set properties", exc)
    return settings_from_properties(dict(properties))


def send(in_path: str | Path, out_path: str | Path, *, host: str = "localhost", port: int = 9002,
         config: str | None = DEFAULT_CONFIG, config_text: str | None = None,
         settings: Mapping[str, str] | None = None, group: str | None = None,
         variables: Sequence[str] | None = None, out_group: str | None = None, png_dir: Any = None,
         nifti_dir: Any = None, progress: bool = True, connect_timeout_s: float = 10.0,
         timeout_s: float = 600.0) -> ReplayResult:
    """Send the images of ``in_path`` to a server; write the maps it returns to ``out_path``.

    Args:
        in_path, out_path, group, variables, out_group, png_dir, nifti_dir, progress: as in
            :func:`drone_gadgets.apps.replay.replay`.
        host, port: the server.
        config: the chain's name (CONFIG_FILE); ignored when ``config_text`` is given.
        config_text: a chain's text (CONFIG_TEXT).
        settings: gadget properties: written into ``config_text`` when given (module docstring); else sent
            as a TEXT of JSON parameters after the header and checked in the returned maps.
        connect_timeout_s: for the connection.
        timeout_s: fail when the server sends nothing for this long after the input was sent.

    Returns:
        a :class:`~drone_gadgets.apps.replay.ReplayResult` (``gadget_seconds``: the connection's lifetime;
        ``gadget_log``: the server's TEXT messages).

    Raises:
        ServerError: the server reported an error; SettingsNotApplied: the server did not apply
        ``settings`` sent as JSON parameters; SendError: the exchange failed otherwise (also: no image
        came back for the frames sent); ChainError: ``settings`` cannot be written into ``config_text``;
        the input errors of :func:`drone_gadgets.apps.inputs.open_input`.
    """
    import json

    from ..wire.chains import apply_properties
    from ..wire.mrd import ConfigFile, ConfigText, Header, Text, encode

    t0 = time.perf_counter()
    properties = {str(k): str(v) for k, v in (settings or {}).items()}
    parsed = settings_from_properties(properties)  # the properties must at least be known ones
    if config_text is not None and properties:
        config_text = apply_properties(config_text, properties)
        log.info("properties %s written into the chain text", ", ".join(f"{k}={v}" for k, v in properties.items()))
    as_json = bool(properties) and config_text is None
    source: Any = None if variables is not None else open_raw_input(in_path, out_path, group, png_dir=png_dir,
                                                                    nifti_dir=nifti_dir)
    if source is None:
        source = open_input(in_path, out_path, group=group, variables=variables, png_dir=png_dir,
                            nifti_dir=nifti_dir, settings=_stream_settings(properties, config_text))
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout_s)
    except OSError as exc:
        raise SendError(f"cannot connect to {host}:{port} ({exc}); is `drone serve` running there?") from None
    sock.settimeout(None)
    receiver = _Receiver(sock)
    receiver.start()
    bar = progress_bar(source.n_frames, progress, desc="send")
    sent = 0
    t_connect = time.perf_counter()
    stream_start = t_connect
    try:
        config_message = ConfigText(config_text) if config_text is not None else ConfigFile(config or DEFAULT_CONFIG)
        preamble: list[Any] = [config_message, Header(source.header)]
        if as_json:
            preamble.append(Text(json.dumps({"parameters": properties})))
        sock.sendall(b"".join(encode(m) for m in preamble))
        stream_start = time.perf_counter()
        for image in source.images():
            if receiver.errors or receiver.failure is not None or not receiver.is_alive():
                break  # the server has given up on this stream: stop sending, read its reason
            sock.sendall(encode(image))
            sent += 1
            bar.update(1)
        if receiver.is_alive():
            sock.sendall(encode(None))  # CLOSE, also after a refusal: a server that reads on to it then closes
    except OSError as exc:  # the server closed on us: its ERROR, if any, explains why
        log.debug("sending stopped: %s", exc)
    finally:
        bar.close()
    while receiver.is_alive():
        receiver.join(timeout=0.2)
        if time.monotonic() - receiver.last_activity > timeout_s:
            sock.close()
            raise SendError(f"no reply from the server for {timeout_s:g} s")
    sock.close()
    seconds = time.perf_counter() - t_connect
    if receiver.errors:
        raise ServerError("; ".join(receiver.errors))
    if receiver.failure is not None or not receiver.closed:
        raise SendError(f"the server closed the connection without CLOSE after {len(receiver.images)} image(s) "
                        f"({receiver.failure!r})")
    if sent < source.n_frames:
        raise SendError(f"the connection ended after {sent} of {source.n_frames} frames were sent")
    if sent and not receiver.images:
        said = f"; it said: {' | '.join(t.strip() for t in receiver.texts)[:500]}" if receiver.texts else ""
        raise SendError(f"the server closed the stream without returning any image for the {sent} frames sent{said}; "
                        f"nothing was written (its log may say why)")
    if as_json:
        check_settings_applied(receiver.images, properties, config or DEFAULT_CONFIG)
    out = write_outputs(receiver.images, out_path, header=source.header, settings=parsed,
                        out_group=out_group or source.group, png_dir=png_dir, nifti_dir=nifti_dir)
    result = ReplayResult(source.path, Path(out_path), source.group, out.group, sent, len(receiver.images),
                          out.slices, out.series, time.perf_counter() - t0, seconds, time.perf_counter() - stream_start,
                          out.png_files, out.nifti_files, "\n".join(receiver.texts), source.n_b1,
                          isinstance(source, RawInput))
    return result


# =========================================================================== command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``drone send``'s arguments to ``parser``."""
    parser.add_argument("input", type=Path, metavar="IN.h5",
                        help="ISMRMRD file with the MRF frames as images, or raw acquisitions (sent as such, for a "
                             "chain that reconstructs them, e.g. --config-file xml_configs/drone_grappa_epi.xml)")
    parser.add_argument("output", type=Path, metavar="OUT.h5", help="ISMRMRD file to write the maps to (replaced)")
    parser.add_argument("--host", default="localhost", help="server address (default localhost)")
    parser.add_argument("--port", type=int, default=9002, help="server port (default 9002)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", default=DEFAULT_CONFIG, metavar="NAME",
                       help=f"chain name sent as CONFIG_FILE (default {DEFAULT_CONFIG}; Gadgetron needs the .xml)")
    which.add_argument("--config-file", type=Path, metavar="PATH",
                       help="send this chain file's text as CONFIG_TEXT instead (--set values are written into it)")
    parser.add_argument("--group", help="input group (default: the only group holding frames)")
    parser.add_argument("--var", action="append", dest="variables", metavar="NAME",
                        help="image var of the group to send (repeatable; default: all)")
    parser.add_argument("--out-group", help="output group (default: the input group)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="properties",
                        help="a gadget property (repeatable), e.g. --set maps=t1,t2: written into the --config-file "
                             "chain; with --config NAME sent as JSON parameters, and the run fails unless the maps "
                             "report it applied (Gadgetron ignores them); --set b1=stream sends the file's B1 map var "
                             "(series b1_series_index) first")
    parser.add_argument("--png", type=Path, metavar="DIR", help="write one PNG of the maps per slice into DIR")
    parser.add_argument("--nifti", type=Path, metavar="DIR", help="write one NIfTI file per map into DIR")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="fail when the server is silent for S seconds (default 600)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    """Run ``drone send``; 0 on success, 1 when the server or the exchange failed, 2 on bad input."""
    try:
        config_text = args.config_file.read_text(encoding="utf-8") if args.config_file else None
        result = send(args.input, args.output, host=args.host, port=args.port, config=args.config,
                      config_text=config_text, settings=parse_property_args(args.properties), group=args.group,
                      variables=args.variables, out_group=args.out_group, png_dir=args.png, nifti_dir=args.nifti,
                      progress=not args.quiet, timeout_s=args.timeout)
    except ServerError as exc:
        print(f"drone send: {exc.server_message}", file=sys.stderr)
        return 1
    except SendError as exc:
        print(f"drone send: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"drone send: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result.summary().replace("replayed", "sent", 1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drone_gadgets.apps.client IN.h5 OUT.h5 …`` (the same as ``drone send``)."""
    parser = argparse.ArgumentParser(prog="drone send", description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"drone send: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
