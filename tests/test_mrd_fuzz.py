"""Fuzzing the MRD message reader (hypothesis), alone and through a running server.

Properties:

* whatever the bytes, :class:`~drone_gadgets.wire.mrd.MessageReader` either returns messages or raises
  :class:`ProtocolError` (a refusal) or :class:`PeerGoneError` (the end of the bytes) — never another
  exception — and never asks its source for more bytes at once than the largest limit allows
  (so nothing a stream declares is allocated before it is checked);
* valid streams round-trip exactly (ismrmrd's ProtocolSerializer writes them, our reader reads);
* a server fed mutated streams answers each with maps or an ERROR and CLOSE (or closes), within a
  bounded time, and still serves a good client afterwards.

The number of cases each property ran is printed by ``pytest tests/test_mrd_fuzz.py
--hypothesis-show-statistics``.
"""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drone_core.schedule import default_schedule
from drone_gadgets.recon.errors import PeerGoneError, ProtocolError
from drone_gadgets.wire.mrd import (CONFIG_FILE_BYTES, ConfigFile, ConfigText, Header, Limits, MessageReader, Text,
                                    encode)
from drone_gadgets.apps.server import EstimatorCache, ReconServer, ServerOptions
from mrd_peer import RawClient, exchange, scan_messages

SCHEDULE = default_schedule()
LIMITS = Limits(max_text_bytes=1 << 16, max_attribute_bytes=1 << 12, max_image_bytes=1 << 20,
                max_acquisition_bytes=1 << 18, max_waveform_bytes=1 << 18, idle_timeout_s=1.0)
#: The largest single read the reader may make: the largest limit or a fixed-size part.
MAX_READ = max(LIMITS.max_text_bytes, LIMITS.max_attribute_bytes, LIMITS.max_image_bytes,
               LIMITS.max_acquisition_bytes, LIMITS.max_waveform_bytes, CONFIG_FILE_BYTES)
#: Messages decoded from one input at most (a stream of CLOSE-free tiny messages ends here).
MAX_MESSAGES = 10_000
IDS = [1, 2, 3, 4, 5, 1008, 1022, 1026]


class _Bytes:
    """``read(n)`` over bytes: exactly n bytes or PeerGoneError; records the largest request."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.largest = 0

    def read(self, n: int) -> bytes:
        self.largest = max(self.largest, n)
        assert n <= MAX_READ, f"a read of {n} bytes was requested (limit {MAX_READ})"
        if self.pos + n > len(self.data):
            raise PeerGoneError("end of the bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def _drain(data: bytes) -> list:
    source = _Bytes(data)
    reader = MessageReader(source.read, LIMITS)
    out = []
    try:
        for _ in range(MAX_MESSAGES):
            message = reader.read()
            if message is None:
                break
            out.append(message)
    except (ProtocolError, PeerGoneError):
        pass
    return out


def _image(rng_seed: int, shape: tuple[int, int], dtype: str) -> ismrmrd.Image:
    rng = np.random.default_rng(rng_seed)
    data = (rng.standard_normal(shape) * 100).astype(dtype)
    image = ismrmrd.Image.from_array(data)
    image.attribute_string = ismrmrd.Meta({"seed": str(rng_seed)}).serialize()
    return image


messages = st.one_of(
    st.builds(ConfigFile, st.text(max_size=40).filter(lambda s: "\x00" not in s and s == s.strip())),
    # trailing NULs of text bodies are dropped on reading (clients count a C string's terminator)
    st.builds(ConfigText, st.text(max_size=200).filter(lambda s: not s.endswith("\x00"))),
    st.builds(Text, st.text(max_size=200).filter(lambda s: not s.endswith("\x00"))),
    st.builds(Header, st.binary(max_size=200).map(lambda b: b.rstrip(b"\x00"))),
    st.builds(_image, st.integers(0, 1000), st.tuples(st.integers(1, 16), st.integers(1, 16)),
              st.sampled_from(["float32", "uint16", "complex64", "float64", "int16"])),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_are_refused_or_read_never_crash(data: bytes) -> None:
    _drain(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(IDS), st.binary(max_size=512))
def test_every_message_id_with_random_bodies(mid: int, body: bytes) -> None:
    _drain(mid.to_bytes(2, "little") + body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=6))
def test_valid_streams_round_trip(items: list) -> None:
    data = b"".join(encode(m) for m in items) + encode(None)
    got = _drain(data)
    assert len(got) == len(items)
    for sent, back in zip(items, got):
        if isinstance(sent, ismrmrd.Image):
            assert isinstance(back, ismrmrd.Image)
            np.testing.assert_array_equal(np.asarray(back.data), np.asarray(sent.data))
            assert back.getHead().matrix_size[:] == sent.getHead().matrix_size[:]
            assert ismrmrd.Meta.deserialize(back.attribute_string)["seed"] == \
                ismrmrd.Meta.deserialize(sent.attribute_string)["seed"]
        else:
            assert back == sent


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=4), st.data())
def test_mutated_valid_streams_never_crash(items: list, data: st.DataObject) -> None:
    stream = bytearray(b"".join(encode(m) for m in items) + encode(None))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        stream[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    _drain(bytes(stream[:cut]))


# --------------------------------------------------------------------------- through a server
@pytest.fixture(scope="module")
def server():
    srv = ReconServer(ServerOptions(port=0, workers=2, queue=4, properties={"device": "cpu"}, limits=LIMITS,
                                    shutdown_grace_s=0.0), estimators=EstimatorCache())
    srv.start()
    yield srv
    srv.shutdown(grace_s=0.0)


GOOD = scan_messages(SCHEDULE, 1)


@pytest.mark.filterwarnings("ignore:Failed to convert value")  # xsdata, on mutated header numbers
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.data())
def test_server_survives_mutated_streams(server: ReconServer, data: st.DataObject) -> None:
    stream = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        stream[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    client = RawClient(server.address, timeout_s=15)
    client.send(bytes(stream[:cut]))
    reply = client.finish(timeout_s=15, close_write=True)
    assert reply.closed or reply.failure, reply  # CLOSE, or the connection closed on us
    assert all(t.startswith("ERROR") for t in reply.texts)
    assert len(reply.images) <= 3


def test_server_serves_after_the_fuzzing(server: ReconServer) -> None:
    reply = exchange(server.address, GOOD)
    assert reply.closed and not reply.errors and len(reply.images) == 3
