"""``drone serve`` / ``drone send``: correct maps for several clients at once, and hostile input.

The server runs in this process on a free port (one module-wide instance with small limits, and
dedicated ones where a test needs other options); the clients are raw sockets whose replies are
read with ismrmrd's ProtocolDeserializer (``mrd_peer.py``), or :func:`drone_gadgets.apps.client.send`.
Reference maps come from :func:`drone_gadgets.recon.stages.pipeline` run here on the same images with a
separately loaded shipped model: the server must give exactly those (it runs the same stages).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from drone_core.model import default_model
from drone_core.schedule import default_schedule
from drone_gadgets.wire.chains import ChainCatalog, ChainError, chain_from_text
from drone_gadgets.apps.client import SendError, ServerError, send
from drone_gadgets.wire.mrd import ConfigFile, ConfigText, Header, Limits, MrdId, Text, encode
from drone_gadgets.apps.server import EstimatorCache, ReconServer, ServerOptions
from drone_gadgets.recon.settings import settings_from_properties
from drone_gadgets.recon.stages import pipeline
from gadgetron_peer import frame_header
from mrd_peer import (U16, U32, U64, FireClient, RawClient, exchange, maps_of, scan_images, scan_message_list,
                      scan_messages, schedule_header)

ROOT = Path(__file__).resolve().parents[1]
XML = ROOT / "xml_configs"
SCHEDULE = default_schedule()
#: Limits small enough to test quickly; the idle timeout is what a stalled client waits for.
LIMITS = Limits(max_text_bytes=1 << 20, max_attribute_bytes=1 << 16, max_image_bytes=4 << 20,
                max_acquisition_bytes=1 << 20, max_waveform_bytes=1 << 20, max_pending_bytes=64 << 20,
                idle_timeout_s=1.5, max_connection_s=120.0)
CPU = {"device": "cpu"}
#: The shipped network's noise-free error on the phantom's tissues is ≤ 1.7 % (test_gadget_stream.py).
MAP_RTOL = 0.03
#: A refusal must come at once: far sooner than reading (or allocating) what was declared.
PROMPT_S = 3.0


@pytest.fixture(scope="module")
def estimators() -> EstimatorCache:
    return EstimatorCache()


@pytest.fixture(scope="module")
def server(estimators: EstimatorCache):
    srv = ReconServer(ServerOptions(port=0, workers=2, queue=6, properties=CPU, limits=LIMITS,
                                    shutdown_grace_s=0.5, config_dirs=(XML,)), estimators=estimators)
    srv.start()
    yield srv
    srv.shutdown(grace_s=0.5)


@pytest.fixture
def make_server(estimators: EstimatorCache):
    """Dedicated servers with other options (shut down at the end of the test)."""
    made: list[ReconServer] = []

    def make(**options) -> ReconServer:
        options = {"port": 0, "properties": CPU, "limits": LIMITS, "shutdown_grace_s": 0.5, **options}
        srv = ReconServer(ServerOptions(**options), estimators=estimators)
        srv.start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown(grace_s=0.0)


@pytest.fixture(scope="module")
def reference() -> dict[int, dict[tuple[int, int], np.ndarray]]:
    """Maps of the gadget's stages run here, per number of slices."""
    model = default_model(device="cpu")
    out = {}
    for n in (1, 2, 3):
        images, _ = scan_images(SCHEDULE, n)
        out[n] = maps_of(list(pipeline(images, model, settings_from_properties(CPU))))
    return out


def _assert_serves(server: ReconServer, reference) -> None:
    """The server still answers a good client correctly."""
    reply = exchange(server.address, scan_messages(SCHEDULE, 1))
    assert reply.closed and not reply.errors, reply
    _assert_maps_equal(maps_of(reply.images), reference[1])


def _assert_maps_equal(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=str(key))


def _error(reply) -> str:
    assert reply.errors, f"expected an ERROR text, got {reply}"
    return reply.errors[0]


# =========================================================================== correct maps
def test_maps_are_the_gadget_stages_maps_and_match_the_truth(server: ReconServer, reference) -> None:
    reply = exchange(server.address, scan_messages(SCHEDULE, 2))
    assert reply.closed and not reply.errors and not reply.failure
    got = maps_of(reply.images)
    _assert_maps_equal(got, reference[2])
    _, truth = scan_images(SCHEDULE, 2)
    for s, t in enumerate(truth):
        fg = t["labels"] >= 0
        np.testing.assert_allclose(got[(s, 100)][fg], t["t1"][fg], rtol=MAP_RTOL)
        np.testing.assert_allclose(got[(s, 101)][fg], t["t2"][fg], rtol=MAP_RTOL)
        assert np.all(got[(s, 100)][~fg] == 0)
    head = reply.images[0].getHead()
    assert head.data_type == ismrmrd.DATATYPE_FLOAT and ismrmrd.Meta.deserialize(
        reply.images[0].attribute_string)["DataRole"] == "Quantitative"


def test_concurrent_clients_each_get_their_own_maps(server: ReconServer, reference) -> None:
    """Eight clients at once (2 workers, the rest queued), with different slice counts and maps."""
    jobs = [(1 + i % 3, ("t1,t2,m0", "t1", "t2,m0")[i % 3]) for i in range(8)]
    replies: dict[int, object] = {}

    def client(i: int) -> None:
        n, maps = jobs[i]
        images, _ = scan_images(SCHEDULE, n)
        data = b"".join([encode(ConfigFile("drone_images")), encode(Header(schedule_header(SCHEDULE, n))),
                         encode(Text(json.dumps({"parameters": {"maps": maps}})))]
                        + [encode(im) for im in images] + [encode(None)])
        replies[i] = exchange(server.address, data, timeout_s=60)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    series = {"t1": 100, "t2": 101, "m0": 102}
    for i, (n, maps) in enumerate(jobs):
        reply = replies[i]
        assert reply.closed and not reply.errors, (i, reply)
        wanted = {series[m] for m in maps.split(",")}
        expected = {k: v for k, v in reference[n].items() if k[1] in wanted}
        _assert_maps_equal(maps_of(reply.images), expected)


def test_drone_send_writes_the_maps(server: ReconServer, reference, tmp_path: Path) -> None:
    from drone_gadgets.files import h5io
    from drone_gadgets.scans.images import write_scan

    images, truth = scan_images(SCHEDULE, 2)
    frames = np.stack([np.stack([np.asarray(im.data)[0, 0] for im in images if im.getHead().repetition == i])
                       for i in range(SCHEDULE.n_frames)])  # (N, slices, y, x)
    scan = tmp_path / "scan.h5"
    write_scan(scan, frames, SCHEDULE)
    host, port = server.address
    result = send(scan, tmp_path / "maps.h5", host=host, port=port, config="drone_images.xml", progress=False,
                  png_dir=tmp_path / "png")
    assert result.slices == 2 and result.maps == 6 and result.frames == 50
    assert result.series == {"image_100": 2, "image_101": 2, "image_102": 2}
    back = h5io.read_images(tmp_path / "maps.h5", "dataset", ["image_100"])
    for im in back:
        s = int(im.getHead().slice)
        fg = truth[s]["labels"] >= 0
        np.testing.assert_allclose(np.asarray(im.data)[0, 0][fg], truth[s]["t1"][fg], rtol=MAP_RTOL)
    assert len(result.png_files) == 2


def test_drone_send_reports_the_servers_error_and_writes_nothing(server: ReconServer, tmp_path: Path) -> None:
    from drone_gadgets.scans.images import write_scan

    write_scan(tmp_path / "scan.h5", np.ones((SCHEDULE.n_frames, 1, 12, 10), np.float32), SCHEDULE)
    host, port = server.address
    with pytest.raises(ServerError, match="cannot run on this server.*GRAPPA"):
        send(tmp_path / "scan.h5", tmp_path / "maps.h5", host=host, port=port, config="drone_grappa_epi",
             progress=False)
    assert not (tmp_path / "maps.h5").exists()
    with pytest.raises(SendError, match="cannot connect"):
        send(tmp_path / "scan.h5", tmp_path / "maps.h5", host=host, port=1, progress=False)


def test_cli_send_against_a_serve_process(tmp_path: Path) -> None:
    """The two console commands together: `drone serve` in its own process, `drone send`, SIGTERM."""
    from drone_gadgets.scans.images import write_scan

    images, _ = scan_images(SCHEDULE, 1)
    frames = np.stack([np.asarray(im.data)[0] for im in images])  # (N, 1, y, x)
    write_scan(tmp_path / "scan.h5", frames, SCHEDULE)
    proc = _start_serve(["--set", "device=cpu", "--shutdown-grace", "1"])
    try:
        port = _wait_port(proc)
        done = subprocess.run([sys.executable, "-m", "drone_cli.main", "send", str(tmp_path / "scan.h5"),
                               str(tmp_path / "maps.h5"), "--port", str(port), "--quiet"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        bad = subprocess.run([sys.executable, "-m", "drone_cli.main", "send", str(tmp_path / "scan.h5"),
                              str(tmp_path / "maps2.h5"), "--port", str(port), "--config", "nonsense", "--quiet"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "unknown chain 'nonsense'" in bad.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (tmp_path / "maps.h5").is_file() and out == ""


# =========================================================================== chains
@pytest.mark.parametrize("name", ["drone_images", "drone_images.xml", "drone"])
def test_known_chain_names(server: ReconServer, reference, name: str) -> None:
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=ConfigFile(name)))
    assert reply.closed and not reply.errors
    _assert_maps_equal(maps_of(reply.images), reference[1])


@pytest.mark.parametrize("name, message", [
    ("nonsense", r"unknown chain 'nonsense'; this server knows drone, drone_images"),
    ("drone_grappa_epi.xml", r"cannot run on this server: it reconstructs raw EPI k-space"),
    ("../../etc/passwd", r"expected the name of a chain \(no folders\)"),
    ("drone_images_connect", r"connect> node"),
])
def test_refused_chain_names(server: ReconServer, name: str, message: str) -> None:
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=ConfigFile(name)))
    assert reply.closed and not reply.images
    assert re.search(message, _error(reply)), reply.errors


def test_config_text_chain_xml_and_json(server: ReconServer, reference) -> None:
    text = (XML / "drone_images.xml").read_text()
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=ConfigText(text)))
    assert reply.closed and not reply.errors
    _assert_maps_equal(maps_of(reply.images), reference[1])
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=ConfigText('{"parameters": {"maps": "t2"}}')))
    assert reply.closed and not reply.errors
    _assert_maps_equal(maps_of(reply.images), {k: v for k, v in reference[1].items() if k[1] == 101})
    grappa = (XML / "drone_grappa_epi.xml").read_text()
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=ConfigText(grappa)))
    assert "NoiseAdjustGadget" in _error(reply) and "GenericReconCartesianGrappaGadget" in _error(reply)


def test_chain_catalog_and_text_units(tmp_path: Path) -> None:
    catalog = ChainCatalog([XML])
    assert catalog.get("drone_images.xml").properties["estimator"] == "network"
    assert catalog.names[:2] == ["drone", "drone_images"]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ChainCatalog([tmp_path / "nope"])
    bare = chain_from_text('<configuration><property name="maps" value="t1"/></configuration>')
    assert bare.properties == {"maps": "t1"}
    with pytest.raises(ChainError, match="neither XML nor a JSON object"):
        chain_from_text("maps=t1")
    two = ('<configuration><version>2</version><stream>'
           + '<external><execute name="drone_gadgets.gadget" target="drone_mrf" type="python"/></external>' * 2
           + '</stream></configuration>')
    with pytest.raises(ChainError, match="has 2 <external> nodes"):
        chain_from_text(two)


def test_server_locked_properties(server: ReconServer, make_server, tmp_path: Path) -> None:
    config = ConfigText(json.dumps({"parameters": {"model": "/etc/passwd"}}))
    reply = exchange(server.address, scan_messages(SCHEDULE, 1, config=config))
    assert re.search(r"property 'model' is chosen by the server's operator.*'/etc/passwd'", _error(reply))
    # repeating the defaults (as the shipped chain files do) is fine: tested with drone_images.xml above
    trusting = make_server(trust_client_config=True)
    reply = exchange(trusting.address, scan_messages(SCHEDULE, 1, config=config))
    assert "cannot load '/etc/passwd'" in _error(reply)


# =========================================================================== hostile input
def _preamble(n_slices: int = 1) -> bytes:
    return encode(ConfigFile("drone_images")) + encode(Header(schedule_header(SCHEDULE, n_slices)))


def _image_header_bytes(*, x: int, y: int, z: int = 1, channels: int = 1, data_type: int = 5) -> bytes:
    h = frame_header(0, 0)
    h.matrix_size[0], h.matrix_size[1], h.matrix_size[2] = x, y, z
    h.channels, h.data_type = channels, data_type
    return bytes(h)


HOSTILE = {
    "garbage": (bytes([0xEF, 0xBE]) + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
                r"unknown message id 48879"),
    "header length 4 GiB": (encode(ConfigFile("drone_images")) + U16.pack(MrdId.HEADER) + U32.pack(0xFFFFFFFF),
                            r"HEADER of 4294967295 bytes declared, over the limit"),
    "config text 3 GiB": (U16.pack(MrdId.CONFIG_TEXT) + U32.pack(3 << 30), r"CONFIG_TEXT of 3221225472 bytes"),
    "image 65535^3": (_preamble() + U16.pack(MrdId.IMAGE) + _image_header_bytes(x=65535, y=65535, z=65535)
                      + U64.pack(0), r"image of 1×65535×65535×65535 .* over the limit"),
    "image attributes 2^63": (_preamble() + U16.pack(MrdId.IMAGE) + _image_header_bytes(x=10, y=12)
                              + U64.pack(1 << 63), r"image meta attributes of 9223372036854775808 bytes"),
    "image data type 99": (_preamble() + U16.pack(MrdId.IMAGE) + _image_header_bytes(x=10, y=12, data_type=99)
                           + U64.pack(0), r"unknown data_type 99"),
    "unknown id after the data began": (_preamble() + U16.pack(0x1234), r"unknown message id 4660"),
    "image before the header": (encode(ConfigFile("drone_images")) + encode(scan_images(SCHEDULE, 1)[0][0]),
                                r"a Image arrived before the ISMRMRD header"),
    "two configurations": (encode(ConfigFile("drone_images")) + encode(ConfigFile("drone_images"))
                           + encode(Header(b"<x/>")), r"a second configuration"),
    "header after the data": (_preamble() + encode(scan_images(SCHEDULE, 1)[0][0]) + encode(Header(b"<x/>")),
                              r"Header arrived after the data had begun"),
    "text not UTF-8": (_preamble() + U16.pack(MrdId.TEXT) + U32.pack(2) + b"\xff\xfe", r"TEXT is not UTF-8"),
    "header not ISMRMRD": (encode(ConfigFile("drone_images")) + encode(Header(b"<nonsense/>")) + encode(None),
                           r"not an ISMRMRD header: its root element is <nonsense>"),
}


def _acquisition_message(samples: int, channels: int) -> bytes:
    h = ismrmrd.AcquisitionHeader()
    h.number_of_samples, h.active_channels, h.available_channels = samples, channels, channels
    return U16.pack(MrdId.ACQUISITION) + bytes(h)


def _waveform_message(samples: int, channels: int) -> bytes:
    h = ismrmrd.WaveformHeader()
    h.number_of_samples, h.channels = samples, channels
    return U16.pack(MrdId.WAVEFORM) + bytes(h)


HOSTILE["acquisition 65535 × 65535"] = (_preamble() + _acquisition_message(65535, 65535),
                                        r"ACQUISITION of 65535 channel\(s\) × 65535 samples .* over the limit")
HOSTILE["waveform 65535 × 65535"] = (_preamble() + _waveform_message(65535, 65535),
                                     r"WAVEFORM of 65535 channel\(s\) × 65535 samples .* over the limit")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_an_error_and_the_server_goes_on(server: ReconServer, reference, case: str) -> None:
    data, message = HOSTILE[case]
    client = RawClient(server.address)
    client.send(data)  # and keep the connection open: the server must not wait for more
    reply = client.finish(timeout_s=20)
    assert reply.closed, reply
    assert not reply.images
    assert re.search(message, _error(reply)), reply.errors
    if "over the limit" in message or "attributes" in message:
        assert reply.seconds < PROMPT_S, f"refusal took {reply.seconds:.2f} s"
    _assert_serves(server, reference)


def test_placeholder_header_is_accepted_only_without_the_schedule_check(server: ReconServer, reference) -> None:
    images, _ = scan_images(SCHEDULE, 1)
    body = [encode(Header(b"Dummy XML header"))] + [encode(im) for im in images] + [encode(None)]
    refused = exchange(server.address, b"".join([encode(ConfigFile("drone_images"))] + body))
    assert "set the property schedule_check=off" in _error(refused)
    config = ConfigText('{"parameters": {"schedule_check": "off"}}')
    reply = exchange(server.address, b"".join([encode(config)] + body))
    assert reply.closed and not reply.errors
    _assert_maps_equal(maps_of(reply.images), reference[1])


def test_port_probe_is_not_a_failure(server: ReconServer) -> None:
    """A connect-and-close (a health check) is an empty session, not a failed connection."""
    import socket

    def settled() -> bool:  # no connection of an earlier test still in flight (its end would count here)
        st = server.stats
        return st.accepted == st.succeeded + st.failed + st.refused_busy

    deadline = time.monotonic() + 20
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert settled(), server.stats
    failed, succeeded = server.stats.failed, server.stats.succeeded
    socket.create_connection(server.address, timeout=5).close()
    deadline = time.monotonic() + 5
    while server.stats.succeeded == succeeded and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stats.succeeded == succeeded + 1 and server.stats.failed == failed


def test_stalled_client_is_timed_out(server: ReconServer, reference) -> None:
    client = RawClient(server.address)
    client.send(_preamble())  # then nothing
    reply = client.finish(timeout_s=20)
    assert re.search(r"no data from the client .* for 1.5 s", _error(reply))
    assert LIMITS.idle_timeout_s <= reply.seconds < LIMITS.idle_timeout_s + PROMPT_S
    _assert_serves(server, reference)


def test_trickling_client_hits_the_connection_deadline(make_server, reference) -> None:
    srv = make_server(limits=Limits(idle_timeout_s=5.0, max_connection_s=1.0))
    client = RawClient(srv.address)
    data = _preamble()
    t0 = time.monotonic()
    for i in range(len(data)):  # a byte every 0.1 s: never idle for long, but never done
        if not client.send(data[i:i + 1]) or client.reply.closed or time.monotonic() - t0 > 8:
            break
        time.sleep(0.1)
    reply = client.finish(timeout_s=10)
    assert "outlived its time limit" in _error(reply)
    assert time.monotonic() - t0 < 4.0


def test_client_disconnecting_mid_stream(server: ReconServer, reference) -> None:
    before = server.stats.failed
    data = scan_messages(SCHEDULE, 2)
    for cut in (len(_preamble(2)) + 100, len(data) // 2):  # inside an image; between images
        client = RawClient(server.address)
        client.send(data[:cut])
        client.sock.close()
        deadline = time.monotonic() + 10
        while server.stats.failed < before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stats.failed >= before + 1
        before = server.stats.failed
    _assert_serves(server, reference)


def test_incomplete_slices_at_close(server: ReconServer) -> None:
    data = scan_messages(SCHEDULE, 1)
    image_bytes = len(encode(scan_images(SCHEDULE, 1)[0][0]))
    reply = exchange(server.address, data[:-2 - 3 * image_bytes] + encode(None))
    assert re.search(r"slice 0 has 22 of 25 frames \(missing repetition 22–24\)", _error(reply))


def test_pending_frames_are_bounded(make_server) -> None:
    frame_bytes = 12 * 10 * 4
    srv = make_server(limits=Limits(max_pending_bytes=frame_bytes * 30, idle_timeout_s=5.0))
    reply = exchange(srv.address, scan_messages(SCHEDULE, 3))  # interleaved: 3 slices pending at once
    assert re.search(r"over the limit of 14400 bytes; send the frames of a few slices at a time", _error(reply))


def test_busy_server_refuses_at_once(make_server, reference) -> None:
    srv = make_server(workers=1, queue=0)
    holder = RawClient(srv.address)
    holder.send(_preamble())  # occupies the only worker until its idle timeout
    time.sleep(0.3)
    reply = exchange(srv.address, scan_messages(SCHEDULE, 1))
    assert "the server is busy (1 worker(s) and a queue of 0 in use)" in _error(reply)
    assert reply.seconds < PROMPT_S
    holder.finish(timeout_s=10)
    assert srv.stats.refused_busy == 1
    deadline = time.monotonic() + 5  # the holder's worker frees its slot after its drain, just after CLOSE
    while srv.active and time.monotonic() < deadline:
        time.sleep(0.02)
    _assert_serves(srv, reference)


def test_shutdown_ends_connections_in_progress_with_an_error(make_server) -> None:
    srv = make_server()
    images, _ = scan_images(SCHEDULE, 1)
    client = RawClient(srv.address)
    client.send(_preamble() + b"".join(encode(im) for im in images[:10]))  # mid-stream, then waits
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.shutdown(grace_s=0.3)
    assert time.monotonic() - t0 < 5.0
    reply = client.finish(timeout_s=10)
    assert "the server is shutting down" in _error(reply) and reply.closed
    with pytest.raises(OSError):
        RawClient(srv.address)


def test_shutdown_lets_connections_in_progress_finish_within_the_grace(make_server, reference) -> None:
    srv = make_server()
    data = scan_messages(SCHEDULE, 1)
    client = RawClient(srv.address)
    client.send(data[:len(data) // 2])
    time.sleep(0.2)
    stopper = threading.Thread(target=srv.shutdown, kwargs={"grace_s": 10.0})
    stopper.start()
    time.sleep(0.5)  # the server no longer accepts, but this connection goes on
    with pytest.raises(OSError):
        RawClient(srv.address)
    client.send(data[len(data) // 2:])
    reply = client.finish(timeout_s=10)
    stopper.join(15)
    assert not stopper.is_alive()
    assert reply.closed and not reply.errors
    _assert_maps_equal(maps_of(reply.images), reference[1])


def test_sigterm_stops_the_process_cleanly_with_a_client_in_flight() -> None:
    proc = _start_serve(["--set", "device=cpu", "--shutdown-grace", "0.5", "--idle-timeout", "60"])
    try:
        port = _wait_port(proc)
        client = RawClient(("127.0.0.1", port))
        client.send(_preamble())
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 10.0
    reply = client.finish(timeout_s=5)
    assert "the server is shutting down" in _error(reply)
    assert "SIGTERM received" in err and out == ""


#: The soak's bound: after the warm-up, resident memory wanders by allocator noise (±13 MiB over 300
#: slices here) but must not grow with the slices: a leak of even 100 KB per slice (a 16th of one
#: slice's frames) would add 29 MiB over these 294 slices. Measured over 2,000 slices: +5.9 MiB
#: (docs/SERVER.md). The slope is reported but not asserted: over 300 slices it is noise (±2.5 MiB
#: per 100 slices between runs). The warm-up is 12 connections: with the M0 fit over the slice profile
#: the server's steady working set is ~550 MiB (from ~320) and after 6 connections it was sometimes not
#: yet reached (+32 MiB over 300 slices once; +12 MiB after a 12-connection warm-up, +5.5 MiB over 600).
SOAK_WARMUP_CONNECTIONS = 12
SOAK_GROWTH_MIB = 24.0
SOAK_PEAK_MIB = 40.0


def test_soak_memory_stays_flat(tmp_path: Path) -> None:
    """300 slices of 128×128×25 through one `drone serve` process (benchmarks/bench_serve_soak.py)."""
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve_soak.py"), "--slices", "300",
                           "--warmup", str(SOAK_WARMUP_CONNECTIONS), "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["slices"] == 300 and result["server_exit_status"] == 0
    assert result["growth_after_warmup_mib"] < SOAK_GROWTH_MIB, result
    assert result["rss_peak_mib"] - result["rss_after_warmup_mib"] < SOAK_PEAK_MIB, result


def test_bad_server_options_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="property 'model': cannot load"):
        ReconServer(ServerOptions(port=0, properties={"model": str(tmp_path / "none.safetensors")}))
    with pytest.raises(ValueError, match="workers: expected a positive int"):
        ServerOptions(workers=0)
    with pytest.raises(Exception, match="unknown property 'colour'"):
        ServerOptions(properties={"colour": "red"})


# =========================================================================== helpers
def _start_serve(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "drone_cli.main", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_port(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """Read stderr until the 'listening on host:port' line; return the port."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"drone serve: listening on [\d.]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"drone serve did not start: {''.join(lines)}")



# =========================================================================== FIRE-style clients
def _other_schedule_header(n_slices: int) -> bytes:
    other = SCHEDULE.to_dict()
    other["flip_angle_deg"] = [a * 1.1 for a in other["flip_angle_deg"]]
    from drone_core.schedule import Schedule

    return schedule_header(Schedule.from_dict(other), n_slices)


#: Every kind of refusal the tests above provoke, as python-ismrmrd-server's client.py would meet it:
#: case → (arguments of scan_message_list, the reason the client must read).
FIRE_REFUSALS = {
    "unknown chain": ({"config": ConfigFile("nonsense")}, r"unknown chain 'nonsense'"),
    "raw-data chain": ({"config": ConfigFile("drone_grappa_epi.xml")}, r"reconstructs raw EPI k-space"),
    "folder in the chain name": ({"config": ConfigFile("../../etc/passwd")}, r"no folders"),
    "bad property value": ({"parameters": {"mask_threshold": "2"}}, r"property 'mask_threshold'"),
    "locked property": ({"parameters": {"model": "/etc/passwd"}}, r"chosen by the server's operator"),
    "B1 file of the server": ({"parameters": {"b1": "file:/etc/passwd"}}, r"names a file on the server"),
    "schedule mismatch": ({"header": _other_schedule_header(3)}, r"[Ss]chedule"),
    "header not ISMRMRD": ({"header": b"<nonsense/>"}, r"not an ISMRMRD header"),
    "unknown map": ({"parameters": {"maps": "t1,t3"}}, r"unknown map\(s\) t3"),
}


@pytest.mark.parametrize("case", sorted(FIRE_REFUSALS))
def test_fire_client_reads_every_refusal_and_never_writes_into_a_closed_connection(server: ReconServer,
                                                                                   case: str) -> None:
    """client.py sends CONFIG, the header, its images and CLOSE without waiting, and its receiver shuts the
    socket when CLOSE comes: the server must read the stream on to the client's CLOSE before it closes (else
    the header or an image hits a closed connection: BrokenPipeError), and the ERROR must arrive."""
    kwargs, reason = FIRE_REFUSALS[case]
    client = FireClient(server.address).run(scan_message_list(SCHEDULE, 3, **kwargs))
    assert client.crash is None, f"an unguarded send failed: {client.crash!r}"
    assert not client.send_failures, f"sends failed: {client.send_failures!r}"
    assert client.reply.closed and not client.reply.images, client.reply
    assert re.search(reason, _error(client.reply)), client.reply.errors


def test_fire_client_reads_a_busy_refusal(make_server, reference) -> None:
    srv = make_server(workers=1, queue=0)
    holder = RawClient(srv.address)
    holder.send(_preamble())  # occupies the only worker until its idle timeout
    time.sleep(0.3)
    client = FireClient(srv.address).run(scan_message_list(SCHEDULE, 3))
    assert client.crash is None and not client.send_failures, (client.crash, client.send_failures)
    assert client.reply.closed and "the server is busy" in _error(client.reply)
    holder.finish(timeout_s=10)


def test_parameters_the_gadget_does_not_know_are_ignored_with_a_warning(server: ReconServer, reference) -> None:
    """python-ismrmrd-server's own invertcontrast.json: {"version": "1.1.0", "parameters": {"options": "",
    "sendOriginal": "False"}} — the scan is reconstructed, and the client is told what was ignored."""
    client = FireClient(server.address).run(
        scan_message_list(SCHEDULE, 1, parameters={"options": "", "sendOriginal": "False", "maps": "t1,t2,m0"}))
    assert client.crash is None and not client.send_failures
    assert client.reply.closed and not client.reply.errors, client.reply
    _assert_maps_equal(maps_of(client.reply.images), reference[1])
    warnings = [t for t in client.reply.texts if t.startswith("WARNING")]
    assert len(warnings) == 1 and "'options', 'sendOriginal'" in warnings[0], client.reply.texts
    # a bad value of a property the gadget uses is still refused, whatever else comes with it
    client = FireClient(server.address).run(
        scan_message_list(SCHEDULE, 1, parameters={"options": "", "mask_snr": "-1"}))
    assert re.search(r"property 'mask_snr': expected a positive number", _error(client.reply))


def test_python_ismrmrd_servers_client_py_with_the_command_simulate_scan_prints(tmp_path: Path) -> None:
    """The real ``client.py`` of python-ismrmrd-server (not shipped here: set DRONE_PYTHON_ISMRMRD_SERVER to a
    checkout of it), run as ``drone simulate-scan`` says, against a ``drone serve`` process, on a scan with a B1
    map (its B1 images come after the frames): exit 0, the maps in the output, no ERROR, no traceback."""
    folder = os.environ.get("DRONE_PYTHON_ISMRMRD_SERVER")
    if not folder or not (Path(folder) / "client.py").is_file():
        pytest.skip("no python-ismrmrd-server checkout (set DRONE_PYTHON_ISMRMRD_SERVER to a folder with client.py)")
    import shlex
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scan = tmp_path / "frames.h5"
    made = subprocess.run([sys.executable, "-m", "drone_cli.main", "simulate-scan", str(scan), "--phantom", "brain",
                           "--slices", "2", "--matrix", "64", "64", "--noise", "0.01", "--b1", "3t"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    line = next(t for t in made.stderr.splitlines() if "python client.py" in t)
    command = shlex.split(line.split("client: ", 1)[1].replace("-p 9002", f"-p {port}"))
    serve = subprocess.Popen([sys.executable, "-m", "drone_cli.main", "serve", "--port", str(port), "--device", "cpu"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        run = subprocess.run([sys.executable, *command[1:]], cwd=folder, capture_output=True, text=True, timeout=120)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert "Received     6 images" in log or "Received 6 images" in log.replace("  ", " "), log[-1500:]
