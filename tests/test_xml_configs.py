"""The Gadgetron chain files in ``xml_configs/``: structure, Gadgetron's GRAPPA EPI chain, our node.

Gadgetron cannot run here, so the files are checked the way Gadgetron 4.x reads them
(``core/Config.cpp`` of the server, format version 2): ``<configuration>`` with ``<version>2``,
``<readers>``, ``<writers>`` and a ``<stream>`` whose children are parsed by element name; an
``<external>`` node's ``<configuration>`` element is copied verbatim into its own document and
sent to the Python process as that document's text. That text is fed here to
:func:`drone_gadgets.recon.settings.parse_settings` and, once, to the real ``drone_mrf`` handler.
"""

from __future__ import annotations

import ast
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from drone_gadgets.recon.settings import GadgetSettings, PROPERTIES, parse_settings

XML_DIR = Path(__file__).resolve().parents[1] / "xml_configs"

GRAPPA = "drone_grappa_epi.xml"
GRAPPA_CONNECT = "drone_grappa_epi_connect.xml"
IMAGES = "drone_images.xml"
IMAGES_CONNECT = "drone_images_connect.xml"
ALL_FILES = (GRAPPA, GRAPPA_CONNECT, IMAGES, IMAGES_CONNECT)
#: plain file → its ``<connect>`` debugging twin
TWINS = {GRAPPA: GRAPPA_CONNECT, IMAGES: IMAGES_CONNECT}
CONNECT_PORT = "18000"

MODULE, TARGET = "drone_gadgets.gadget", "drone_mrf"

#: Element names Gadgetron 4.x's version-2 parser accepts inside ``<stream>`` (any other name throws).
STREAM_NODE_NAMES = {"gadget", "external", "parallel", "distributed", "parallelprocess", "puredistributed"}

CORE_READERS, CORE_WRITERS = "gadgetron_core_readers", "gadgetron_core_writers"
EXPECTED_READERS = {
    GRAPPA: [(CORE_READERS, "AcquisitionReader"), (CORE_READERS, "WaveformReader")],
    IMAGES: [(CORE_READERS, "ImageReader")],
}
EXPECTED_WRITERS = [(CORE_WRITERS, "ImageWriter")]

MRICORE, EPI = "gadgetron_mricore", "gadgetron_epi"
#: Gadgetron's Generic_Cartesian_Grappa_EPI.xml up to ComplexToFloatGadget, in order:
#: (classname, dll, properties that must have exactly these values).
GRAPPA_EPI_CHAIN: list[tuple[str, str, dict[str, str]]] = [
    ("NoiseAdjustGadget", MRICORE, {}),
    ("EPIReconXGadget", EPI, {}),
    ("EPICorrGadget", EPI, {}),
    ("FFTXGadget", EPI, {}),
    ("OneEncodingGadget", EPI, {}),
    ("AcquisitionAccumulateTriggerGadget", MRICORE,
     {"trigger_dimension": "repetition", "sorting_dimension": "average"}),
    ("BucketToBufferGadget", MRICORE,
     {"N_dimension": "repetition", "S_dimension": "average", "split_slices": "false", "ignore_segment": "true"}),
    ("GenericReconCartesianReferencePrepGadget", MRICORE,
     {"average_all_ref_N": "true", "average_all_ref_S": "true", "prepare_ref_always": "false"}),
    ("GenericReconEigenChannelGadget", MRICORE,
     {"average_all_ref_N": "true", "average_all_ref_S": "true", "upstream_coil_compression": "true",
      "upstream_coil_compression_thres": "-1", "upstream_coil_compression_num_modesKept": "0"}),
    ("GenericReconCartesianGrappaGadget", MRICORE,
     {"image_series": "0", "coil_map_algorithm": "Inati", "downstream_coil_compression": "true",
      "downstream_coil_compression_thres": "0.002", "send_out_gfactor": "false"}),
    ("GenericReconPartialFourierHandlingFilterGadget", MRICORE,
     {"skip_processing_meta_field": "Skip_processing_after_recon", "partial_fourier_filter_RO_width": "0.15",
      "partial_fourier_filter_E1_width": "0.15", "partial_fourier_filter_E2_width": "0.15",
      "partial_fourier_filter_densityComp": "false"}),
    ("GenericReconKSpaceFilteringGadget", MRICORE,
     {"skip_processing_meta_field": "Skip_processing_after_recon", "filterRO": "Gaussian", "filterE1": "Gaussian",
      "filterE2": "Gaussian"}),
    ("GenericReconFieldOfViewAdjustmentGadget", MRICORE, {}),
    # auto_scaling_only_once: one scale for all repetitions, so the frames of a fingerprint stay comparable.
    ("GenericReconImageArrayScalingGadget", MRICORE,
     {"use_constant_scalingFactor": "false", "auto_scaling_only_once": "true"}),
    ("ImageArraySplitGadget", MRICORE, {}),
    ("ComplexToFloatGadget", MRICORE, {}),
]
IMAGE_FINISH = ("ImageFinishGadget", MRICORE)


# --------------------------------------------------------------------------- helpers
def _root(filename: str) -> ET.Element:
    return ET.parse(XML_DIR / filename).getroot()


def _stream(filename: str) -> list[ET.Element]:
    stream = _root(filename).find("stream")
    assert stream is not None, f"{filename}: no <stream>"
    return list(stream)


def _external_index(nodes: list[ET.Element]) -> int:
    indices = [i for i, n in enumerate(nodes) if n.tag == "external"]
    assert len(indices) == 1, f"expected one <external> node, found {len(indices)}"
    return indices[0]


def _external(filename: str) -> ET.Element:
    nodes = _stream(filename)
    return nodes[_external_index(nodes)]


def _gadget_properties(gadget: ET.Element) -> dict[str, str]:
    """Properties as Gadgetron reads them: ``<property><name/><value/></property>`` or attributes,
    exactly one of the two forms (Gadgetron refuses a property that has both)."""
    out: dict[str, str] = {}
    for prop in gadget.findall("property"):
        child_form = prop.find("name") is not None and prop.find("value") is not None
        attr_form = prop.get("name") is not None and prop.get("value") is not None
        assert child_form != attr_form, f"property neither or both forms: {ET.tostring(prop)!r}"
        name = prop.findtext("name") if child_form else prop.get("name")
        value = (prop.findtext("value") or "") if child_form else prop.get("value")
        assert name and name not in out, f"property name missing or repeated: {name!r}"
        out[name] = value
    return out


def _gadget_key(gadget: ET.Element) -> tuple[str, str]:
    return (gadget.findtext("classname", "").strip(), gadget.findtext("dll", "").strip())


def _wire_config(filename: str) -> bytes:
    """The external node's configuration as Gadgetron sends it: the ``<configuration>`` element
    copied into its own document and saved (pugixml writes an XML declaration first)."""
    config = _external(filename).find("configuration")
    assert config is not None, f"{filename}: <external> has no <configuration>"
    return b'<?xml version="1.0"?>\n' + ET.tostring(config, encoding="utf-8", xml_declaration=False)


def _config_properties(filename: str) -> list[tuple[str, str]]:
    config = _external(filename).find("configuration")
    assert config is not None
    return [(p.get("name"), p.get("value")) for p in config.iter("property")]


# --------------------------------------------------------------------------- every file
def test_the_folder_holds_exactly_the_tested_files() -> None:
    assert sorted(p.name for p in XML_DIR.glob("*.xml")) == sorted(ALL_FILES)


@pytest.mark.parametrize("filename", ALL_FILES)
def test_format_version_2(filename: str) -> None:
    root = _root(filename)
    assert root.tag == "configuration"
    assert root.findtext("version", "").strip() == "2"
    assert [c.tag for c in root] == ["version", "readers", "writers", "stream"]
    assert {n.tag for n in _stream(filename)} <= STREAM_NODE_NAMES


@pytest.mark.parametrize("filename", ALL_FILES)
def test_readers_and_writers(filename: str) -> None:
    root = _root(filename)
    plain = next(p for p, t in TWINS.items() if filename in (p, t))
    readers = [(r.findtext("dll"), r.findtext("classname")) for r in root.find("readers").findall("reader")]
    writers = [(w.findtext("dll"), w.findtext("classname")) for w in root.find("writers").findall("writer")]
    assert readers == EXPECTED_READERS[plain]
    assert writers == EXPECTED_WRITERS


@pytest.mark.parametrize("filename", ALL_FILES)
def test_gadgets_are_well_formed(filename: str) -> None:
    for node in _stream(filename):
        if node.tag != "gadget":
            continue
        classname, dll = _gadget_key(node)
        assert classname and dll, f"gadget without dll/classname: {ET.tostring(node)!r}"
        assert dll.startswith("gadgetron_"), f"{classname}: Gadgetron 4.x library names start gadgetron_, got {dll}"
        for value in _gadget_properties(node).values():
            # Gadgetron reads a gadget property value containing '@' as a reference to another property.
            assert "@" not in value


@pytest.mark.parametrize("filename", ALL_FILES)
def test_image_finish_right_after_the_external_node_and_no_ushort_conversion(filename: str) -> None:
    nodes = _stream(filename)
    i = _external_index(nodes)
    assert i == len(nodes) - 2, "ImageFinishGadget must be the only node after the external"
    assert nodes[i + 1].tag == "gadget" and _gadget_key(nodes[i + 1]) == IMAGE_FINISH
    classnames = [_gadget_key(n)[0] for n in nodes if n.tag == "gadget"]
    # The maps (ms) must not be rounded to unsigned shorts; Gadgetron's chain ends with this gadget.
    assert "FloatToUShortGadget" not in classnames
    assert not any("FloatTo" in c for c in classnames[classnames.index("ImageFinishGadget"):])


# --------------------------------------------------------------------------- the GRAPPA EPI chain
@pytest.mark.parametrize("filename", [GRAPPA, GRAPPA_CONNECT])
def test_grappa_epi_chain_is_gadgetrons_in_order(filename: str) -> None:
    nodes = _stream(filename)
    i = _external_index(nodes)
    before = nodes[:i]
    assert all(n.tag == "gadget" for n in before)
    assert [_gadget_key(n) for n in before] == [(c, d) for c, d, _ in GRAPPA_EPI_CHAIN]
    for node, (classname, _, expected) in zip(before, GRAPPA_EPI_CHAIN):
        props = _gadget_properties(node)
        for name, value in expected.items():
            assert props.get(name) == value, f"{classname}.{name}: expected {value!r}, got {props.get(name)!r}"


@pytest.mark.parametrize("filename", [GRAPPA, GRAPPA_CONNECT])
def test_complex_to_float_right_before_the_external_node(filename: str) -> None:
    nodes = _stream(filename)
    i = _external_index(nodes)
    assert _gadget_key(nodes[i - 1]) == ("ComplexToFloatGadget", MRICORE)


@pytest.mark.parametrize("filename", [IMAGES, IMAGES_CONNECT])
def test_images_chain_is_only_our_node_and_image_finish(filename: str) -> None:
    assert [n.tag for n in _stream(filename)] == ["external", "gadget"]


# --------------------------------------------------------------------------- our external node
@pytest.mark.parametrize("filename", [GRAPPA, IMAGES])
def test_external_executes_our_module_and_target(filename: str) -> None:
    external = _external(filename)
    actions = [c for c in external if c.tag in ("execute", "connect")]
    assert len(actions) == 1 and actions[0].tag == "execute"
    assert actions[0].attrib == {"name": MODULE, "target": TARGET, "type": "python"}


@pytest.mark.parametrize("filename", [GRAPPA_CONNECT, IMAGES_CONNECT])
def test_connect_twin_connects_to_the_documented_port(filename: str) -> None:
    external = _external(filename)
    actions = [c for c in external if c.tag in ("execute", "connect")]
    assert len(actions) == 1 and actions[0].tag == "connect"
    assert actions[0].attrib == {"port": CONNECT_PORT}  # no address: Gadgetron uses localhost


def test_the_executed_module_has_the_handler() -> None:
    module = importlib.import_module(MODULE)
    assert callable(getattr(module, TARGET))


@pytest.mark.parametrize("filename", ALL_FILES)
def test_configuration_has_every_setting_at_its_documented_default(filename: str) -> None:
    properties = _config_properties(filename)
    assert properties == [(p.name, p.default) for p in PROPERTIES]


@pytest.mark.parametrize("filename", ALL_FILES)
def test_configuration_as_sent_by_gadgetron_parses_to_the_defaults(filename: str) -> None:
    wire = _wire_config(filename)
    assert parse_settings(wire) == GadgetSettings()
    assert parse_settings(wire.decode()) == GadgetSettings()


@pytest.mark.parametrize("plain, twin", sorted(TWINS.items()))
def test_connect_twin_is_the_plain_file_but_for_the_action(plain: str, twin: str) -> None:
    def shape(filename: str) -> list[Any]:
        out: list[Any] = []
        for node in _stream(filename):
            if node.tag == "gadget":
                out.append((_gadget_key(node), node.findtext("name"), _gadget_properties(node)))
            else:
                out.append(node.tag)
        return out

    assert shape(plain) == shape(twin)
    assert _config_properties(plain) == _config_properties(twin)
    assert _wire_config(plain) == _wire_config(twin)
    for section in ("readers", "writers"):
        assert ET.tostring(_root(plain).find(section)).split() == ET.tostring(_root(twin).find(section)).split()


# --------------------------------------------------------------------------- the documentation in the files
def test_grappa_file_says_where_to_install_and_how_to_run() -> None:
    text = (XML_DIR / GRAPPA).read_text()
    assert "share/gadgetron/config" in text
    assert "gadgetron_ismrmrd_client -f raw.h5 -c drone_grappa_epi.xml" in text


@pytest.mark.parametrize("filename", [GRAPPA_CONNECT, IMAGES_CONNECT])
def test_connect_twin_documents_a_working_listen_command(filename: str) -> None:
    text = (XML_DIR / filename).read_text()
    match = re.search(r'python -c "([^"]+)"', text)
    assert match, f"{filename}: no python -c command in the comment"
    code = match.group(1)
    ast.parse(code)
    assert f"listen({CONNECT_PORT}, g.{TARGET})" in code and f"import gadgetron.external, {MODULE} as g" in code
    import gadgetron.external

    assert callable(gadgetron.external.listen)


def test_readme_lists_every_file() -> None:
    readme = (XML_DIR / "README.md").read_text()
    for filename in ALL_FILES:
        assert f"`{filename}`" in readme


# --------------------------------------------------------------------------- one run with the real handler
def test_the_files_configuration_drives_the_real_handler() -> None:
    """The GRAPPA chain's configuration, as Gadgetron sends it, through ``drone_mrf`` (in-process peer):
    25 float frames of one slice in, the three maps out with the configured series indices."""
    from drone_gadgets.gadget import drone_mrf
    from gadgetron_peer import (
        GadgetronPeer,
        frame_header,
        header_xml,
        image_message,
        image_of,
        phantom,
        phantom_frames,
    )

    from drone_core.schedule import default_schedule

    schedule = default_schedule()
    header = header_xml(flip_angle_deg=schedule.flip_angle_deg, tr_ms=schedule.tr_ms, te_ms=[schedule.te_ms],
                        ti_ms=[schedule.ti_ms], n_slices=1)
    t1, t2, m0, _ = phantom()
    frames = np.abs(phantom_frames(schedule, t1, t2, m0 * 1000.0)).astype(np.float32)
    messages = [image_message(image_of(frames[r], frame_header(0, r))) for r in range(schedule.n_frames)]

    reply = GadgetronPeer.in_process(drone_mrf).run(_wire_config(GRAPPA), header, messages)

    assert reply.errors == []
    defaults = GadgetSettings()
    assert sorted(im.image_series_index for im in reply.images) == sorted(defaults.series_index[m]
                                                                          for m in defaults.maps)
    assert all(im.data.dtype == np.float32 for im in reply.images)
