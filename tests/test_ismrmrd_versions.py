"""What must behave the same on every ismrmrd-python the package supports (1.14.0 to 1.15).

Gadgetron's images run the gadget with ismrmrd-python 1.14.0 (numpy 1.26, xsdata 24.5); ``make
test-compat`` runs the whole suite in that environment, ``make test`` with ismrmrd 1.15. Between
them:

* ismrmrd's generated header parser does not look at the root element, and 1.14's gives every field
  a default, so ``<notAnIsmrmrdHeader/>`` parses there: the header's root is checked by the package
  itself (:func:`drone_gadgets.recon.header.header_root`), which these tests assert on documents that
  ismrmrd parses in both versions, so they fail without that check whatever ismrmrd is installed;
* ``ismrmrd.serialization`` is absent before 1.14.2 and has no CONFIG_FILE/CONFIG_TEXT before 1.15:
  :func:`drone_gadgets.wire.mrd.encode` writes every message itself (compared here byte for byte with
  ismrmrd's ``ProtocolSerializer`` where it has one), and :class:`~drone_gadgets.wire.mrd.StreamDeserializer`
  stands in for ismrmrd's ``ProtocolDeserializer`` where it has none (compared with it where it has).
"""

from __future__ import annotations

import io
import logging
import re
from importlib import metadata

import ismrmrd
import numpy as np
import pytest

from drone_core.schedule import default_schedule
from drone_gadgets.recon.errors import ScheduleMismatchError
from drone_gadgets.recon.header import ISMRMRD_NAMESPACE, check_header_schedule, header_root, sequence_parameters
from drone_gadgets.recon.header import check_header
from drone_gadgets.wire.mrd import (CONFIG_FILE_BYTES, ConfigFile, ConfigText, Header, StreamDeserializer, Text, encode,
                                    encode_config_file, serialization)
from gadgetron_peer import header_xml

ISMRMRD_VERSION = metadata.version("ismrmrd")
try:
    from ismrmrd import serialization as ismrmrd_serialization
except ImportError:  # ismrmrd-python < 1.14.2
    ismrmrd_serialization = None

requires_ismrmrd_serialization = pytest.mark.skipif(
    ismrmrd_serialization is None,
    reason=f"compares with ismrmrd.serialization, which ismrmrd {ISMRMRD_VERSION} does not have (>= 1.14.2)")
requires_ismrmrd_config_messages = pytest.mark.skipif(
    not hasattr(ismrmrd_serialization, "ConfigFile"),
    reason=f"compares with ismrmrd's CONFIG_FILE/CONFIG_TEXT writer, which ismrmrd {ISMRMRD_VERSION} does not "
           f"have (>= 1.15)")

SCHEDULE = default_schedule()
#: A complete header (with the schedule), in the ISMRMRD namespace.
GOOD = header_xml(flip_angle_deg=list(SCHEDULE.flip_angle_deg), tr_ms=list(SCHEDULE.tr_ms),
                  te_ms=[SCHEDULE.te_ms], ti_ms=[SCHEDULE.ti_ms])


def _renamed_root(xml: bytes, start: bytes, end: bytes) -> bytes:
    """``xml`` with its root's start tag replaced by ``start`` and its end tag by ``end``."""
    out = re.sub(rb"<ismrmrdHeader[^>]*>", start, xml, count=1)
    return out.replace(b"</ismrmrdHeader>", end)


#: Documents that are not ISMRMRD headers, and the root element the message must name.
NOT_HEADERS = {
    # what 1.14 parses (every field has a default); 1.15 refuses it for a missing experimentalConditions
    "empty other root": (b"<notAnIsmrmrdHeader/>", "<notAnIsmrmrdHeader>"),
    # a whole header's content under another root: ismrmrd parses it in every version
    "other root, ISMRMRD content": (
        _renamed_root(GOOD, b'<notAnIsmrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">', b"</notAnIsmrmrdHeader>"),
        "<notAnIsmrmrdHeader> in namespace 'http://www.ismrm.org/ISMRMRD'"),
    "ismrmrdHeader in another namespace": (
        _renamed_root(GOOD, b'<o:ismrmrdHeader xmlns:o="urn:other" xmlns="http://www.ismrm.org/ISMRMRD">',
                      b"</o:ismrmrdHeader>"),
        "<ismrmrdHeader> in namespace 'urn:other'"),
}


def _ismrmrd_parses(xml: bytes) -> bool:
    try:
        ismrmrd.xsd.CreateFromDocument(xml)
    except Exception:  # noqa: BLE001 - the xsd parser raises parser-specific types
        return False
    return True


# =========================================================================== the header's root element
@pytest.mark.parametrize("case", [k for k in NOT_HEADERS if k != "empty other root"])
def test_ismrmrd_itself_parses_these_documents(case: str) -> None:
    """The premise of the root check: ismrmrd's parser takes these for headers, in 1.14 and 1.15 alike."""
    assert _ismrmrd_parses(NOT_HEADERS[case][0])


@pytest.mark.parametrize("case", list(NOT_HEADERS))
def test_check_header_refuses_another_root_element(case: str) -> None:
    xml, named = NOT_HEADERS[case]
    with pytest.raises(ValueError) as info:
        check_header(xml)
    message = str(info.value)
    assert message.startswith(f"not an ISMRMRD header: its root element is {named}, expected <ismrmrdHeader> in "
                              f"namespace '{ISMRMRD_NAMESPACE}' (or in none)"), message
    assert "the header begins" in message


@pytest.mark.parametrize("case", list(NOT_HEADERS))
def test_the_schedule_check_refuses_another_root_element(case: str, caplog: pytest.LogCaptureFixture) -> None:
    """The gadget's path (it gets the header's bytes from gadgetron-python): not a header without a
    schedule, which would only be warned about."""
    xml, named = NOT_HEADERS[case]
    with pytest.raises(ValueError, match=f"its root element is {re.escape(named)}"):
        sequence_parameters(xml)
    with pytest.raises(ScheduleMismatchError, match=r"cannot check the schedule: not an ISMRMRD header: .*"
                                                    r"\(property schedule_check=warn or off accepts it\)"):
        check_header_schedule(xml, SCHEDULE)
    with caplog.at_level(logging.WARNING, logger="drone_gadgets.recon.header"):
        assert check_header_schedule(xml, SCHEDULE, "warn") is None
    assert "not an ISMRMRD header" in caplog.text and "no sequenceParameters" not in caplog.text


def test_real_headers_pass_the_root_check() -> None:
    check_header(GOOD)
    check_header(GOOD.decode())
    assert check_header_schedule(GOOD, SCHEDULE) is not None
    check_header(GOOD.split(b"?>", 1)[1].strip())  # no XML declaration
    assert header_root(GOOD + b"\x00").tag == f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader"  # a C string's terminator
    # no namespace: the C++ ISMRMRD library reads it so; the schedule is read alike
    bare = GOOD.replace(f' xmlns="{ISMRMRD_NAMESPACE}"'.encode(), b"")
    assert header_root(bare).tag == "ismrmrdHeader"
    assert sequence_parameters(bare) == sequence_parameters(GOOD)


def test_header_root_names_what_is_not_xml() -> None:
    with pytest.raises(ValueError, match=r"the ISMRMRD header is not valid XML \(syntax error"):
        header_root(b"not xml at all")
    with pytest.raises(ValueError, match=r"the ISMRMRD header is not valid XML"):
        check_header("")


# =========================================================================== writing
def _image(dtype: str, seed: int = 0) -> ismrmrd.Image:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((3, 5)) * 100
    data = (data + 1j * data[::-1]) if dtype.startswith("complex") else data
    image = ismrmrd.Image.from_array(data.astype(dtype), transpose=False)
    head = image.getHead()
    head.slice, head.repetition, head.image_series_index = 1, 7, 3
    image.setHead(head)
    image.attribute_string = ismrmrd.Meta({"DRONE_Map": "t1", "seed": str(seed)}).serialize()
    return image


def _acquisition() -> ismrmrd.Acquisition:
    data = (np.arange(2 * 8).reshape(2, 8) * (1 + 0.5j)).astype(np.complex64)
    acq = ismrmrd.Acquisition.from_array(data, np.linspace(-1, 1, 8 * 2, dtype=np.float32).reshape(8, 2))
    acq.idx.repetition = 4
    return acq


def _waveform() -> ismrmrd.Waveform:
    return ismrmrd.Waveform.from_array(np.arange(12, dtype=np.uint32).reshape(2, 6), waveform_id=3)


def _serializer_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    ismrmrd_serialization.ProtocolSerializer(buffer).serialize(obj)
    return buffer.getvalue()


@requires_ismrmrd_serialization
@pytest.mark.parametrize("kind", ["float32", "complex64", "uint16", "int16", "float64", "acquisition", "waveform",
                                  "text", "text non-ASCII"])
def test_encode_writes_what_ismrmrds_serializer_writes(kind: str) -> None:
    if kind == "acquisition":
        item: object = _acquisition()
    elif kind == "waveform":
        item = _waveform()
    elif kind.startswith("text"):
        item = "drone_mrf: a log line" if kind == "text" else "T₁ = 800 ms, µ"
    else:
        item = _image(kind)
    assert encode(item) == _serializer_bytes(item)
    if isinstance(item, str):
        assert encode(Text(item)) == _serializer_bytes(item)


@requires_ismrmrd_config_messages
@pytest.mark.parametrize("name", ["drone_images", "drone_images.xml", "", "é" * 200, "x" * (CONFIG_FILE_BYTES - 1)])
def test_config_messages_are_what_ismrmrd_writes(name: str) -> None:
    assert encode(ConfigFile(name)) == _serializer_bytes(ismrmrd_serialization.ConfigFile(name))
    assert encode(ConfigText(name)) == _serializer_bytes(ismrmrd_serialization.ConfigText(name))


def test_config_file_layout_and_bounds() -> None:
    """The layout without ismrmrd to compare with: uint16 id 1, the name NUL-padded to 1024 bytes."""
    message = encode_config_file("drone_images.xml")
    assert len(message) == 2 + CONFIG_FILE_BYTES
    assert message[:2] == (1).to_bytes(2, "little") and message[2:18] == b"drone_images.xml"
    assert set(message[18:]) == {0}
    assert encode(ConfigText("<c/>")) == (2).to_bytes(2, "little") + (4).to_bytes(4, "little") + b"<c/>"
    assert len(encode_config_file("é" * 511)) == 2 + CONFIG_FILE_BYTES  # 1022 bytes of UTF-8
    with pytest.raises(ValueError, match=r"CONFIG_FILE name: expected at most 1023 bytes of UTF-8, got 1024"):
        encode_config_file("é" * 512)
    with pytest.raises(ValueError, match=r"CONFIG_FILE name: expected text without NUL, got 'a\\x00b'"):
        encode(ConfigFile("a\x00b"))
    with pytest.raises(TypeError, match=r"item: cannot send a builtins.int in the MRD protocol"):
        encode(3)


# =========================================================================== reading a trusted peer's stream
def _stream() -> tuple[list[object], bytes]:
    items: list[object] = [ConfigFile("drone_images"), Header(GOOD), Text("hello"), _image("float32"),
                           _image("complex64", 1), _acquisition(), _waveform(), "ERROR drone_mrf: bad"]
    return items, b"".join(encode(m) for m in items) + encode(None) + b"after CLOSE, never read"


def test_stream_deserializer_reads_every_message_kind() -> None:
    items, data = _stream()
    got = list(StreamDeserializer(io.BytesIO(data)).deserialize())
    assert len(got) == len(items)
    assert got[0] == ConfigFile("drone_images") and got[1] == Header(GOOD)
    assert got[2] == "hello" and got[7] == "ERROR drone_mrf: bad"
    for sent, back in ((items[3], got[3]), (items[4], got[4])):
        assert isinstance(back, ismrmrd.Image)
        np.testing.assert_array_equal(np.asarray(back.data), np.asarray(sent.data))
        assert (back.getHead().slice, back.getHead().repetition) == (1, 7)
        assert ismrmrd.Meta.deserialize(back.attribute_string)["seed"] == \
            ismrmrd.Meta.deserialize(sent.attribute_string)["seed"]
    assert isinstance(got[5], ismrmrd.Acquisition) and got[5].idx.repetition == 4
    np.testing.assert_array_equal(got[5].data, items[5].data)
    np.testing.assert_array_equal(got[5].traj, items[5].traj)
    assert isinstance(got[6], ismrmrd.Waveform)
    np.testing.assert_array_equal(got[6].data, items[6].data)


def test_stream_deserializer_end_of_stream_before_close() -> None:
    data = encode("one") + encode(_image("float32"))
    reader = StreamDeserializer(io.BytesIO(data[:-3])).deserialize()
    assert next(reader) == "one"
    with pytest.raises(EOFError, match=r"the stream ended in the middle of a message \(\d+ of \d+ bytes\)"):
        next(reader)


@requires_ismrmrd_serialization
def test_stream_deserializer_reads_what_ismrmrds_reads() -> None:
    """Images and TEXT (what a server replies) as ismrmrd's ``ProtocolDeserializer`` reads them."""
    items = [_image("float32"), "a log line", _image("float64", 2), _image("complex64", 3), "ERROR x"]
    data = b"".join(encode(m) for m in items) + encode(None)
    ours = list(StreamDeserializer(io.BytesIO(data)).deserialize())
    theirs = list(ismrmrd_serialization.ProtocolDeserializer(io.BytesIO(data)).deserialize())
    assert len(ours) == len(theirs) == len(items)
    for a, b in zip(ours, theirs):
        assert type(a) is type(b)
        if isinstance(a, str):
            assert a == b
        else:
            assert bytes(a.getHead()) == bytes(b.getHead()) and a.attribute_string == b.attribute_string
            np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))


def test_serialization_has_a_protocol_deserializer_on_every_version() -> None:
    """``drone send`` reads replies with ``serialization().ProtocolDeserializer``: ismrmrd's where it exists."""
    reader = serialization().ProtocolDeserializer
    if ismrmrd_serialization is not None:
        assert reader is ismrmrd_serialization.ProtocolDeserializer
    else:
        assert reader is StreamDeserializer
    assert list(reader(io.BytesIO(encode("x") + encode(None))).deserialize()) == ["x"]
