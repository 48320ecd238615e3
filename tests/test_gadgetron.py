"""The images chain against a real Gadgetron server, and ``drone send``'s reading of Gadgetron's replies.

The tests marked ``gadgetron`` use the session's server (``tests/gadgetron_server.py``: the executable
named by ``DRONE_GADGETRON``, ``gadgetron`` on PATH, or ``../shared/gadgetron/install.sh``; they skip
without one). The input is ``drone simulate-scan`` of a small brain phantom (2 slices of 32 × 32, 25
frames, 1 % noise); bad inputs are made from it here (a repeated frame, a frame of another size, a
schedule that differs from the model's, a missing last frame, a bad property in the chain text).
Every run goes through ``drone send``'s command line (in this process: exit status and stderr);
each failure must end it with exit 1, the gadget's (or Gadgetron's) message and no output file,
within :data:`FAILURE_WALL_S`, and the server must serve a good scan afterwards.

Time: each scan costs Gadgetron's start of a Python process (torch import ≈ 2 s); "nothing listening
on the ``<connect>`` port" costs Gadgetron's ≈ 18 s of retries (its fixed policy). In all about a
minute on a 2-core machine.

The tests without the marker check the parsing of Gadgetron's error texts, the writing of ``--set``
properties into a chain text and the check of the settings the maps report; they need no server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest

from drone_cli.main import main as drone
from drone_gadgets.files import h5io
from drone_gadgets.wire.chains import ChainError, apply_properties, chain_from_text
from drone_gadgets.apps.client import SettingsNotApplied, check_settings_applied
from drone_gadgets.wire.mrd import error_message, error_text, is_error_text
from drone_gadgets.recon.settings import GadgetSettings, settings_from_properties
from drone_gadgets.recon.stages import settings_meta
from gadgetron_server import REPO, GadgetronServer

CHAINS = REPO / "xml_configs"
#: A failing scan must end within this (the Python process start, ≈ 2–3 s, dominates; a loaded machine).
FAILURE_WALL_S = 30.0
#: Gadgetron retries a refused <connect> for ≈ 18 s (every 2 s), then gives up.
CONNECT_RETRY_WALL_S = (12.0, 40.0)
#: After kill -9 of the gadget's process, the client must end within this.
KILL_WALL_S = 15.0
#: Maps through Gadgetron vs ``drone replay`` of the same file: the same gadget code on the same CPU
#: kernels in a fresh Python process each time, so bit-identical (no tolerance).
MAP_ATOL = 0.0
MAP_SERIES = ("image_100", "image_101", "image_102")
#: Gadgetron's texts when the gadget's process dies (seen with 4.7.2: the first after the handshake,
#: the second when it dies while Gadgetron still waits for it to connect).
KILLED_TEXTS = ("Received illegal message id from external peer", "Operation canceled")

GADGETRON_DUPLICATE = ("[Connection Main Thread/Stream/external] ERROR: Errors received: \n"
                       "drone_mrf: duplicate frame: frame repetition=10 of slice 0 arrived twice\n")
GADGETRON_KILLED = "[Connection Main Thread/Stream/external] ERROR: Received illegal message id from external peer: 0"
GADGETRON_CONNECT = ("[Connection Main Thread/Stream/external] ERROR: Failed to connect to service 18000 on host "
                     "localhost: Connection refused")


# =========================================================================== without a server
def test_error_texts_of_both_conventions_are_errors_and_lose_their_framing() -> None:
    assert is_error_text(GADGETRON_DUPLICATE) and is_error_text(GADGETRON_KILLED) and is_error_text(GADGETRON_CONNECT)
    assert error_message(GADGETRON_DUPLICATE) == ("drone_mrf: duplicate frame: frame repetition=10 of slice 0 "
                                                  "arrived twice")
    assert error_message(GADGETRON_KILLED) == ("Gadgetron (Connection Main Thread/Stream/external): Received illegal "
                                               "message id from external peer: 0")
    ours = error_text("drone_mrf: bad")
    assert is_error_text(ours) and error_message(ours) == "drone_mrf: bad"
    assert error_message(GADGETRON_DUPLICATE + "\x00") == error_message(GADGETRON_DUPLICATE)
    for text in ("drone_mrf: slice 0 done", "[x] INFO: fine", "[unclosed ERROR: x", '{"parameters": {}}'):
        assert not is_error_text(text), text


def test_set_properties_are_written_into_the_chain_node_that_runs_the_gadget() -> None:
    for name in ("drone_images.xml", "drone_images_connect.xml", "drone_grappa_epi.xml"):
        text = (CHAINS / name).read_text(encoding="utf-8")
        out = apply_properties(text, {"maps": "t1", "mask_threshold": "0.1", "b1_scale": "1"})
        assert "<!--" in out, "comments are kept"
        node_props = _external_properties(out)
        assert node_props["maps"] == "t1" and node_props["mask_threshold"] == "0.1" and node_props["b1_scale"] == "1"
        assert {k: v for k, v in node_props.items() if k not in ("maps", "mask_threshold", "b1_scale")} == {
            k: v for k, v in _external_properties(text).items() if k not in ("maps", "mask_threshold", "b1_scale")}
    assert chain_from_text(apply_properties((CHAINS / "drone_images.xml").read_text(), {"maps": "t2"})
                           ).properties["maps"] == "t2"
    # child-element spelling, a new property, JSON
    bare = "<configuration><property><name>maps</name><value>t2</value></property></configuration>"
    out = apply_properties(bare, {"maps": "t1", "device": "cpu"})
    assert chain_from_text(out).properties == {"maps": "t1", "device": "cpu"}
    assert json.loads(apply_properties('{"parameters": {"b1": "stream"}}', {"maps": "t1"})) == {
        "parameters": {"b1": "stream", "maps": "t1"}}
    two = (CHAINS / "drone_images.xml").read_text().replace("<stream>", "<stream>" + re.search(
        r"<external>.*?</external>", (CHAINS / "drone_images.xml").read_text(), re.S).group(0), 1)
    with pytest.raises(ChainError, match="expected one <external> node executing drone_gadgets.gadget:drone_mrf"):
        apply_properties(two, {"maps": "t1"})
    assert apply_properties("anything", {}) == "anything"


def test_settings_check_compares_parsed_values() -> None:
    settings = settings_from_properties({"maps": "t1", "mask_threshold": "0.1"})
    image = ismrmrd.Image(head=ismrmrd.ImageHeader(), data=np.zeros((1, 1, 2, 2), np.float32))
    image.meta = {"DRONE_Map": "T1", "DRONE_Settings": settings_meta(settings)}
    check_settings_applied([image], {"maps": "t1", "mask_threshold": "0.100"}, "drone_images.xml")
    with pytest.raises(SettingsNotApplied, match=r"the server ignored --set maps=t2 \(its maps ran with maps=t1: "
                                                 r"chain 'drone_images.xml'.*use --config-file"):
        check_settings_applied([image], {"maps": "t2"}, "drone_images.xml")
    bare = ismrmrd.Image(head=ismrmrd.ImageHeader(), data=np.zeros((1, 1, 2, 2), np.float32))
    bare.meta = {"DRONE_Map": "T1"}
    with pytest.raises(SettingsNotApplied, match="do not report their settings"):
        check_settings_applied([bare], {"maps": "t1"}, "x.xml")
    assert json.loads(settings_meta(GadgetSettings()))["maps"] == "t1,t2,m0"


class _FakeServer:
    """Reads a client's whole stream (to its CLOSE), then sends ``replies`` (encoded messages) and CLOSE."""

    def __init__(self, replies: list[Any]) -> None:
        import socket

        self.replies = replies
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.received: list[Any] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from drone_gadgets.wire.mrd import MessageReader, encode

        conn, _ = self.listener.accept()
        with conn:
            def read(n: int) -> bytes:
                data = b""
                while len(data) < n:
                    chunk = conn.recv(n - len(data))
                    if not chunk:
                        raise ConnectionError("the client closed")
                    data += chunk
                return data

            reader = MessageReader(read)
            while (message := reader.read()) is not None:
                self.received.append(message)
            conn.sendall(b"".join(encode(m) for m in self.replies) + encode(None))

    def __enter__(self) -> "_FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture(scope="module")
def tiny_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from drone_core.schedule import default_schedule
    from drone_gadgets.scans.images import write_scan

    path = tmp_path_factory.mktemp("tiny") / "scan.h5"
    write_scan(path, np.ones((25, 1, 4, 4), np.float32), default_schedule())
    return path


def _send_to(port: int, scan: Path, out: Path, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = drone(["send", str(scan), str(out), "--port", str(port), "--quiet", *args])
    return rc, err.getvalue()


@pytest.mark.parametrize("text, line", [
    (GADGETRON_DUPLICATE, "drone send: drone_mrf: duplicate frame: frame repetition=10 of slice 0 arrived twice"),
    ("[Connection Main Thread/Stream/external] ERROR: Operation canceled [system:125 at /usr/include/boost/asio/"
     "detail/reactive_socket_accept_op.hpp:132 in function 'do_complete']",
     "drone send: Gadgetron (Connection Main Thread/Stream/external): Operation canceled [system:125"),
    ("[Connection Main Thread/Connection Input Thread] ERROR: Error reading from file/stream",
     "drone send: Gadgetron (Connection Main Thread/Connection Input Thread): Error reading from file/stream"),
])
def test_send_fails_on_gadgetrons_error_texts(tiny_scan: Path, tmp_path: Path, text: str, line: str) -> None:
    from drone_gadgets.wire.mrd import Text

    with _FakeServer([Text(text)]) as server:
        rc, err = _send_to(server.port, tiny_scan, tmp_path / "maps.h5")
    assert rc == 1 and err.strip().splitlines()[-1].startswith(line), err
    assert not (tmp_path / "maps.h5").exists()


def test_send_fails_on_a_close_without_images_and_on_json_settings_not_reported(tiny_scan: Path,
                                                                                 tmp_path: Path) -> None:
    from drone_gadgets.wire.mrd import ConfigFile, ConfigText, Text

    with _FakeServer([Text("a log line")]) as server:
        rc, err = _send_to(server.port, tiny_scan, tmp_path / "maps.h5")
    assert rc == 1 and "without returning any image for the 25 frames sent; it said: a log line" in err, err
    assert isinstance(server.received[0], ConfigFile) and server.received[0].name == "drone_images.xml"
    assert not (tmp_path / "maps.h5").exists()
    # --set with a chain name: sent as JSON parameters, then checked in the maps (here without DRONE_Settings)
    t1 = ismrmrd.Image(head=ismrmrd.ImageHeader(), data=np.zeros((1, 1, 4, 4), np.float32))
    t1.image_series_index = 100
    t1.meta = {"DRONE_Map": "T1"}
    with _FakeServer([t1]) as server:
        rc, err = _send_to(server.port, tiny_scan, tmp_path / "maps.h5", "--set", "maps=t1")
    assert rc == 1 and "the server ignored --set maps=t1" in err and "do not report their settings" in err, err
    assert any(isinstance(m, Text) and json.loads(m.text) == {"parameters": {"maps": "t1"}} for m in server.received)
    assert not (tmp_path / "maps.h5").exists()
    # --set with --config-file: written into the chain text, no JSON parameters
    t1.meta = {"DRONE_Map": "T1", "DRONE_Settings": settings_meta(settings_from_properties({"maps": "t1"}))}
    with _FakeServer([t1]) as server:
        rc, err = _send_to(server.port, tiny_scan, tmp_path / "maps.h5", "--set", "maps=t1", "--config-file",
                           str(CHAINS / "drone_images.xml"))
    assert rc == 0, err
    texts = [m for m in server.received if isinstance(m, ConfigText)]
    assert len(texts) == 1 and chain_from_text(texts[0].text).properties["maps"] == "t1"
    assert not any(isinstance(m, Text) for m in server.received)


def _external_properties(chain_text: str) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    from drone_gadgets.recon.settings import parse_properties

    root = ET.fromstring(chain_text)
    node = next(n for n in root.find("stream") if n.tag == "external")
    return parse_properties(node.find("configuration"))


# =========================================================================== inputs
@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The good scan and the bad ones made from it (module docstring), and a chain with a bad property."""
    folder = tmp_path_factory.mktemp("gadgetron_scans")
    good = folder / "scan.h5"
    assert drone(["simulate-scan", str(good), "--matrix", "32", "32", "--slices", "2", "--noise", "0.01"]) == 0
    images = h5io.read_images(good, "dataset")
    header = h5io.read_xml_header(good, "dataset")
    assert header is not None and len(images) == 50
    small = ismrmrd.Image(head=images[12].getHead(),
                          data=np.ascontiguousarray(np.asarray(images[12].data)[..., :16, :16]))
    first_flip = re.search(rb"<flipAngle_deg>([^<]+)</flipAngle_deg>", header)
    assert first_flip is not None
    other_schedule = header.replace(first_flip.group(0), b"<flipAngle_deg>%.3f</flipAngle_deg>" % (
        float(first_flip.group(1)) + 5.0), 1)
    out = {"good": good}
    for name, parts, head in (("duplicate", [images[:11] + [images[10]] + images[11:]], header),
                              ("size_change", [images[:12], [small], images[13:]], header),
                              ("schedule_mismatch", [images], other_schedule),
                              ("incomplete", [images[:-1]], header)):
        out[name] = folder / f"{name}.h5"
        _write_parts(out[name], parts, head)
    bad_chain = folder / "bad_property.xml"
    bad_chain.write_text((CHAINS / "drone_images.xml").read_text().replace(
        '<property name="mask_threshold" value="auto"/>', '<property name="mask_threshold" value="1.5"/>'))
    assert "1.5" in bad_chain.read_text()
    out["bad_property_chain"] = bad_chain
    return out


def _write_parts(path: Path, parts: list[list[ismrmrd.Image]], header: bytes) -> None:
    """Images into vars image_1, image_2, … (sent in that order); a var holds images of one size."""
    with contextlib.closing(ismrmrd.Dataset(str(path), "dataset", True)) as ds:
        ds.write_xml_header(header)
        for i, part in enumerate(parts):
            for image in part:
                ds.append_image(f"image_{i + 1}", image)


@pytest.fixture(scope="module")
def replayed(scans: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``drone replay`` of the good scan: the reference maps."""
    out = tmp_path_factory.mktemp("replayed") / "maps.h5"
    assert drone(["replay", str(scans["good"]), str(out), "--quiet"]) == 0
    return out


# =========================================================================== helpers
def _send(server: GadgetronServer, scan: Path, out: Path, *args: str) -> tuple[int, str, float]:
    """``drone send SCAN OUT --port <server> ARGS --quiet``: (exit status, stderr, seconds)."""
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        rc = drone(["send", str(scan), str(out), "--port", str(server.port), "--quiet", *args])
    return rc, err.getvalue(), time.perf_counter() - t0


def _maps(path: Path) -> dict[tuple[str, int], ismrmrd.Image]:
    return {(f"image_{int(im.image_series_index)}", int(im.getHead().slice)): im
            for im in h5io.read_images(path, "dataset")}


def _assert_same_maps(got_path: Path, ref_path: Path, series: tuple[str, ...] = MAP_SERIES, *,
                      settings: dict[str, str] | None = None) -> None:
    """Pixels bit-identical (:data:`MAP_ATOL`), headers equal but for the meta's length (Gadgetron re-writes
    the meta XML, keys sorted), the same meta; ``settings``: properties that differ from the reference's
    (in meta ``DRONE_Settings``)."""
    got, ref = _maps(got_path), _maps(ref_path)
    assert sorted(got) == sorted(k for k in ref if k[0] in series)
    for key, image in got.items():
        a, b = np.asarray(image.data), np.asarray(ref[key].data)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape, key
        assert np.max(np.abs(a - b)) <= MAP_ATOL, f"{key}: differs by up to {np.max(np.abs(a - b))}"
        head_a, head_b = image.getHead(), ref[key].getHead()
        head_a.attribute_string_len = head_b.attribute_string_len = 0
        assert bytes(head_a) == bytes(head_b), key
        meta, ref_meta = dict(image.meta), dict(ref[key].meta)
        ran, ref_ran = json.loads(meta.pop("DRONE_Settings")), json.loads(ref_meta.pop("DRONE_Settings"))
        assert meta == ref_meta, key
        assert ran == {**ref_ran, **(settings or {})}, key


def _assert_failed(rc: int, err: str, seconds: float, out: Path, fragment: str) -> str:
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert rc == 1 and fragment in line, (rc, err)
    assert line.startswith("drone send: "), err
    assert not out.exists(), "a failed run wrote an output file"
    assert seconds < FAILURE_WALL_S, f"the failure took {seconds:.1f} s"
    return line


def _assert_serves(server: GadgetronServer, scans: dict[str, Path], replayed: Path, out: Path) -> None:
    assert server.alive, server.log_tail()
    rc, err, _ = _send(server, scans["good"], out, "--config-file", str(CHAINS / "drone_images.xml"))
    assert rc == 0, err
    _assert_same_maps(out, replayed)


# =========================================================================== the images chain
@pytest.mark.gadgetron
def test_images_chain_by_text_and_by_name_gives_replays_maps(gadgetron_server: GadgetronServer, scans, replayed,
                                                             tmp_path: Path) -> None:
    rc, err, seconds = _send(gadgetron_server, scans["good"], tmp_path / "text.h5",
                             "--config-file", str(CHAINS / "drone_images.xml"))
    assert rc == 0, err
    _assert_same_maps(tmp_path / "text.h5", replayed)
    # by name: the chain file in the server's config folder (Gadgetron needs the .xml: drone send's default)
    rc, err, _ = _send(gadgetron_server, scans["good"], tmp_path / "name.h5")
    assert rc == 0, err
    _assert_same_maps(tmp_path / "name.h5", replayed)
    settings = json.loads(_maps(tmp_path / "name.h5")[("image_100", 0)].meta["DRONE_Settings"])
    assert settings["maps"] == "t1,t2,m0" and settings["schedule_check"] == "strict"
    sys.stderr.write(f"\ndrone send through Gadgetron (CONFIG_TEXT): {seconds:.2f} s\n")


@pytest.mark.gadgetron
def test_set_is_written_into_a_chain_file_and_refused_when_a_named_chain_ignores_it(
        gadgetron_server: GadgetronServer, scans, replayed, tmp_path: Path) -> None:
    rc, err, _ = _send(gadgetron_server, scans["good"], tmp_path / "t1.h5",
                       "--config-file", str(CHAINS / "drone_images.xml"), "--set", "maps=t1")
    assert rc == 0, err
    _assert_same_maps(tmp_path / "t1.h5", replayed, series=("image_100",), settings={"maps": "t1"})
    # by name, Gadgetron only logs the JSON parameters: the maps say so, and nothing is written
    log_at = gadgetron_server.log_size()
    rc, err, seconds = _send(gadgetron_server, scans["good"], tmp_path / "ignored.h5", "--set", "maps=t1")
    line = _assert_failed(rc, err, seconds, tmp_path / "ignored.h5", "the server ignored --set maps=t1")
    assert "(its maps ran with maps=t1,t2,m0" in line and "use --config-file" in line
    assert '"parameters": {"maps": "t1"}' in gadgetron_server.log_since(log_at)
    # a value the named chain has anyway is verified, not refused
    rc, err, _ = _send(gadgetron_server, scans["good"], tmp_path / "same.h5", "--set", "maps=t1,t2,m0")
    assert rc == 0, err
    _assert_same_maps(tmp_path / "same.h5", replayed)


FAILURES = [
    ("duplicate", "drone send: drone_mrf: duplicate frame: frame repetition=10 of slice 0 arrived twice"),
    ("size_change", "drone send: drone_mrf: frame repetition=12 of slice 0 is 16×16×1 (x×y×z) but the earlier "
                    "frames of slice 0 are 32×32×1 (x×y×z)"),
    ("schedule_mismatch", "drone send: drone_mrf: schedule mismatch"),
    ("incomplete", "drone send: drone_mrf: the stream ended with incomplete fingerprints, no maps made for them: "
                   "slice 1 has 24 of 25 frames (missing repetition 24)"),
    ("bad_property", "drone send: drone_mrf: property 'mask_threshold': expected 'auto' (the noise-aware mask) or a "
                     "number in [0, 1); got '1.5'"),
]


@pytest.mark.gadgetron
def test_each_failure_ends_the_client_with_the_gadgets_message_and_the_server_goes_on(
        gadgetron_server: GadgetronServer, scans, replayed, tmp_path: Path) -> None:
    lines = {}
    for case, expected in FAILURES:
        out = tmp_path / f"{case}.h5"
        if case == "bad_property":
            rc, err, seconds = _send(gadgetron_server, scans["good"], out, "--config-file",
                                     str(scans["bad_property_chain"]))
        else:
            rc, err, seconds = _send(gadgetron_server, scans[case], out, "--config-file",
                                     str(CHAINS / "drone_images.xml"))
        lines[case] = (_assert_failed(rc, err, seconds, out, expected.removeprefix("drone send: ")), seconds)
        assert lines[case][0].startswith(expected), lines[case]
    assert "epi_mrf_25" in lines["schedule_mismatch"][0] and "flip" in lines["schedule_mismatch"][0].lower()
    _assert_serves(gadgetron_server, scans, replayed, tmp_path / "after.h5")
    sys.stderr.write("\n" + "\n".join(f"{case}: {s:.2f} s: {line}" for case, (line, s) in lines.items()) + "\n")


@pytest.mark.gadgetron
def test_killing_the_gadgets_process_mid_scan_fails_the_client_at_once(
        gadgetron_server: GadgetronServer, scans, replayed, tmp_path: Path, monkeypatch) -> None:
    """The client sends 5 frames, then waits; the test kills the gadget's process (-9), then lets it go on."""
    from drone_gadgets.apps.inputs import InputScan

    go = threading.Event()
    stream = InputScan.images

    def slow_images(self: Any) -> Any:
        for i, image in enumerate(stream(self)):
            if i == 5:
                go.wait(60)
            yield image

    monkeypatch.setattr(InputScan, "images", slow_images)
    result: dict[str, Any] = {}
    out = tmp_path / "killed.h5"
    thread = threading.Thread(target=lambda: result.update(zip(("rc", "err", "s"), _send(
        gadgetron_server, scans["good"], out, "--config-file", str(CHAINS / "drone_images.xml")))), daemon=True)
    log_at = gadgetron_server.log_size()
    thread.start()
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and not (children and "drone_mrf: numpy" in gadgetron_server.log_since(log_at)):
        children = gadgetron_server.python_children()
        time.sleep(0.1)
    assert len(children) == 1, (children, gadgetron_server.log_since(log_at))
    os.kill(children[0], signal.SIGKILL)
    t_kill = time.perf_counter()
    go.set()
    thread.join(KILL_WALL_S + 30)
    after_kill = time.perf_counter() - t_kill
    assert not thread.is_alive(), "the client did not end after the gadget's process was killed"
    line = _assert_failed(result["rc"], result["err"], result["s"], out, "Gadgetron (")
    assert any(text in line for text in KILLED_TEXTS) and "external Python process ended" in line, line
    assert after_kill < KILL_WALL_S, f"the client ended {after_kill:.1f} s after the kill"
    _assert_serves(gadgetron_server, scans, replayed, tmp_path / "after.h5")
    sys.stderr.write(f"\nkilled: client ended {after_kill:.2f} s after kill -9: {line}\n")


# =========================================================================== the <connect> twin
@pytest.mark.gadgetron
def test_connect_twin_gives_replays_maps_and_a_clear_error_when_nothing_listens(
        gadgetron_server: GadgetronServer, scans, replayed, tmp_path: Path) -> None:
    from gadgetron_server import with_connect_listener

    run = with_connect_listener("drone_images_connect.xml", tmp_path, lambda chain: _send(
        gadgetron_server, scans["good"], tmp_path / "maps.h5", "--config-file", str(chain)), timeout_s=60)
    # the command the file documents (its log, INFO, goes to the process's stderr: "your terminal")
    assert "logging.basicConfig(level=logging.INFO)" in run.command
    rc, err, _ = run.result
    chain, listener_err = run.chain, run.stderr
    port = int(chain.read_text().split('port="', 1)[1].split('"', 1)[0])
    assert rc == 0, (err, listener_err)
    assert run.returncode == 0 and run.stdout == "", listener_err
    assert "drone_mrf: done, 6 message(s) sent" in listener_err
    _assert_same_maps(tmp_path / "maps.h5", replayed)
    # nothing listening: Gadgetron retries ≈ 18 s, then reports it
    rc, err, seconds = _send(gadgetron_server, scans["good"], tmp_path / "none.h5", "--config-file", str(chain))
    line = err.strip().splitlines()[-1]
    assert rc == 1 and f"Failed to connect to service {port} on host localhost: Connection refused" in line, err
    assert "nothing listens on the <connect> port" in line and not (tmp_path / "none.h5").exists()
    assert CONNECT_RETRY_WALL_S[0] < seconds < CONNECT_RETRY_WALL_S[1], seconds
    _assert_serves(gadgetron_server, scans, replayed, tmp_path / "after.h5")
    sys.stderr.write(f"\nnothing listening: {seconds:.1f} s: {line}\n")
