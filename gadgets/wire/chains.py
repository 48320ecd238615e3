"""The chains a standing server can run, chosen by a client's CONFIG_FILE name or CONFIG_TEXT.

The server runs one chain: the ``drone_mrf`` gadget's stages on reconstructed images. What a client
selects is which *settings* it runs with:

* **CONFIG_FILE** ``drone_images`` (also ``drone_images.xml``, ``drone``): the gadget's defaults;
  any other name is looked up among the ``*.xml`` chains of the server's ``--config-dir`` folders
  (by file name, with or without ``.xml``). ``drone_grappa_epi`` is refused with the reason: it
  reconstructs raw EPI k-space with Gadgetron's own GRAPPA gadgets, which only Gadgetron has.
* **CONFIG_TEXT**: a Gadgetron chain (``<configuration>`` with a ``<stream>`` holding exactly one
  ``<external>`` that executes ``drone_gadgets.gadget``/``drone_mrf``; besides it only
  ``ImageFinishGadget``, which does nothing outside Gadgetron), the external node's own
  ``<configuration>`` of ``<property>`` elements, or JSON ``{"parameters": {name: value}}``.

Property names and values are checked later, by :func:`drone_gadgets.recon.settings.settings_from_properties`.

A client that sends a chain's text sets properties in the text itself (:func:`apply_properties`, for
``drone send --config-file PATH --set NAME=VALUE``): that works with any server, Gadgetron included,
which passes the ``<external>`` node's ``<configuration>`` to the gadget and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from ..recon.errors import SettingsError
from ..recon.settings import parse_properties, xml_child, xml_local_name
from .mrd import parameters_from_json

__all__ = ["Chain", "ChainCatalog", "ChainError", "chain_from_text", "apply_properties", "DEFAULT_CHAIN",
           "NEUTRAL_GADGETS"]

log = logging.getLogger(__name__)

#: The chain a client gets when it sends no CONFIG message.
DEFAULT_CHAIN = "drone_images"
#: Gadgets of a chain that the server may leave out: they only hand the images back to the client.
NEUTRAL_GADGETS = frozenset({"ImageFinishGadget"})
_BUILT_IN = {"drone_images", "drone"}
_GADGETRON_ONLY = {"drone_grappa_epi": "it reconstructs raw EPI k-space (acquisitions) with Gadgetron's GRAPPA "
                                       "gadgets, which only Gadgetron runs (docker/gadgetron); send reconstructed "
                                       "frames as images with the chain 'drone_images'"}
_MODULE, _TARGET = "drone_gadgets.gadget", "drone_mrf"


class ChainError(SettingsError):
    """A chain name the server does not know, or a chain text it cannot run."""


@dataclass(frozen=True)
class Chain:
    """A chain the server runs: the gadget's properties, and where they came from.

    Attributes:
        name: the chain's name (file stem, or ``"config text"``).
        properties: ``{property: value}`` for the ``drone_mrf`` gadget (unchecked).
        source: ``"built-in"``, the XML file's path, or ``"CONFIG_TEXT"``.
    """

    name: str
    properties: dict[str, str] = field(default_factory=dict)
    source: str = "built-in"


def _chain_from_xml(root: ET.Element, name: str, source: str) -> Chain:
    if xml_local_name(root.tag) != "configuration":
        raise ChainError(f"chain {name!r}: the root element is <{xml_local_name(root.tag)}>, expected <configuration>")
    stream = xml_child(root, "stream")
    if stream is None:  # the external node's own <configuration> of properties
        return Chain(name, parse_properties(root), source)
    ours: list[ET.Element] = []
    foreign: list[str] = []
    for node in stream:
        kind = xml_local_name(node.tag)
        if kind == "external":
            execute = xml_child(node, "execute")
            if execute is not None and execute.get("name") == _MODULE and execute.get("target") == _TARGET:
                ours.append(node)
            elif execute is not None:
                foreign.append(f"external {execute.get('name')}:{execute.get('target')}")
            else:
                foreign.append("external <connect> node (a debugging chain; use the one that executes the gadget)")
        elif kind == "gadget":
            classname = xml_child(node, "classname")
            cls = (classname.text or "").strip() if classname is not None else "?"
            if cls not in NEUTRAL_GADGETS:
                foreign.append(cls)
        elif isinstance(node.tag, str):
            foreign.append(f"<{kind}>")
    if foreign:
        raise ChainError(f"chain {name!r} needs {', '.join(foreign)}, which this server does not run (it runs the "
                         f"{_MODULE}:{_TARGET} gadget alone); run the chain in Gadgetron, or use 'drone_images'")
    if len(ours) != 1:
        raise ChainError(f"chain {name!r} has {len(ours)} <external> nodes executing {_MODULE}:{_TARGET}; "
                         f"expected exactly one")
    config = xml_child(ours[0], "configuration")
    return Chain(name, parse_properties(config) if config is not None else {}, source)


def chain_from_text(text: str, *, name: str = "config text", source: str = "CONFIG_TEXT") -> Chain:
    """The chain of a CONFIG_TEXT: chain XML, a ``<configuration>`` of properties, or JSON.

    Raises:
        ChainError: not XML or JSON, or a chain the server cannot run (naming what it needs).
        SettingsError: malformed properties.
    """
    params = parameters_from_json(text)
    if params is not None:
        return Chain(name, params, source)
    stripped = text.strip().rstrip("\x00").strip()
    if not stripped:
        return Chain(DEFAULT_CHAIN, {}, source)
    try:
        root = ET.fromstring(stripped)
    except ET.ParseError as exc:
        raise ChainError(f"the configuration text is neither XML nor a JSON object ({exc}); it begins "
                         f"{stripped[:120]!r}") from None
    return _chain_from_xml(root, name, source)


def _parse_keeping_comments(text: str) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        return ET.fromstring(text, parser=parser)
    except ET.ParseError as exc:
        raise ChainError(f"the chain text is neither XML nor a JSON object ({exc}); it begins {text[:120]!r}") from None


def _gadget_configuration(root: ET.Element) -> ET.Element:
    """The ``<configuration>`` element holding the drone_mrf gadget's properties (made if missing).

    That is the root itself for a bare ``<configuration>`` of properties; in a chain, the one of the
    ``<external>`` node executing ``drone_gadgets.gadget``/``drone_mrf``, or of the chain's only
    ``<external>`` node with ``<connect>`` (the debugging twins: a process started by hand runs the gadget).
    """
    if xml_local_name(root.tag) != "configuration":
        raise ChainError(f"the chain's root element is <{xml_local_name(root.tag)}>, expected <configuration>")
    stream = xml_child(root, "stream")
    if stream is None:
        return root
    externals = [node for node in stream if xml_local_name(node.tag) == "external"]
    ours = [n for n in externals if (e := xml_child(n, "execute")) is not None
            and e.get("name") == _MODULE and e.get("target") == _TARGET]
    connects = [n for n in externals if xml_child(n, "connect") is not None]
    if len(ours) == 1:
        node = ours[0]
    elif not ours and len(connects) == 1 and len(externals) == 1:
        node = connects[0]
    else:
        found = (f"{len(ours)} <external> nodes executing it" if ours else
                 f"{len(externals)} <external> node(s), {len(connects)} with <connect>")
        raise ChainError(f"cannot set properties in this chain: expected one <external> node executing "
                         f"{_MODULE}:{_TARGET} (or a single <external> with <connect>), found {found}")
    config = xml_child(node, "configuration")
    if config is None:
        config = ET.SubElement(node, "configuration")
    return config


def _set_property(config: ET.Element, name: str, value: str) -> None:
    """Set ``<property>`` ``name`` of ``config`` to ``value`` in the spelling it has (attribute or child
    elements), or append ``<property name="…" value="…"/>``."""
    for element in config:
        if xml_local_name(element.tag) != "property":
            continue
        name_child = xml_child(element, "name")
        current = element.get("name") if element.get("name") is not None else (
            (name_child.text or "").strip() if name_child is not None else None)
        if current is None or current.strip() != name:
            continue
        value_child = xml_child(element, "value")
        if element.get("value") is None and value_child is not None:
            value_child.text = value
        else:
            element.set("value", value)
        return
    new = ET.SubElement(config, "property", {"name": name, "value": value})
    new.tail = "\n"


def apply_properties(text: str, properties: Mapping[str, str]) -> str:
    """A chain text (CONFIG_TEXT) with the drone_mrf gadget's ``properties`` set in it.

    * Chain XML: each property is rewritten in (or added to) the ``<configuration>`` of the ``<external>``
      node that runs the gadget (:func:`_gadget_configuration`); comments are kept, the XML
      declaration is not (Gadgetron does not need it).
    * A bare ``<configuration>`` of properties: set there.
    * JSON ``{"parameters": {…}}`` or ``{name: value}``: merged into the parameters.

    Names and values are not checked here (the gadget checks them).

    Raises:
        ChainError: not XML or JSON, or no node of the gadget to set them in.
    """
    if not properties:
        return text
    params = parameters_from_json(text)
    if params is not None:
        data = json.loads(text.strip().rstrip("\x00"))
        merged = {**params, **{str(k): str(v) for k, v in properties.items()}}
        return json.dumps({"parameters": merged} if "parameters" in data else merged)
    stripped = text.strip().rstrip("\x00").strip()
    root = _parse_keeping_comments(stripped)
    config = _gadget_configuration(root)
    for name, value in properties.items():
        _set_property(config, str(name), str(value))
    return ET.tostring(root, encoding="unicode")


class ChainCatalog:
    """The chains a server knows by name: the built-in ``drone_images`` and the XML files of folders.

    Args:
        config_dirs: folders whose ``*.xml`` files are chains (Gadgetron's format; files that the
            server cannot run are listed with the reason and refused when asked for).
    """

    def __init__(self, config_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._files: dict[str, Path] = {}
        for folder in config_dirs:
            path = Path(folder)
            if not path.is_dir():
                raise FileNotFoundError(f"config_dirs: {str(path)!r} is not a folder")
            for file in sorted(path.glob("*.xml")):
                self._files.setdefault(file.stem, file)

    @property
    def names(self) -> list[str]:
        """Every name a client may send (built-in first)."""
        return sorted(_BUILT_IN) + sorted(set(self._files) - _BUILT_IN)

    def get(self, name: str) -> Chain:
        """The chain called ``name`` (a file name with or without ``.xml``; no folders).

        Raises:
            ChainError: unknown, a path, or a chain the server cannot run.
        """
        raw = name.strip()
        if not raw or raw in {".", ".."} or "/" in raw or "\\" in raw or "\x00" in raw:
            raise ChainError(f"config name {name!r}: expected the name of a chain (no folders), one of "
                             f"{', '.join(self.names)}")
        stem = raw[:-4] if raw.lower().endswith(".xml") else raw
        if stem in _GADGETRON_ONLY:
            raise ChainError(f"chain {stem!r} cannot run on this server: {_GADGETRON_ONLY[stem]}")
        if stem in self._files:
            file = self._files[stem]
            try:
                root = ET.parse(file).getroot()
            except (ET.ParseError, OSError) as exc:
                raise ChainError(f"chain {stem!r} ({file}) cannot be read: {exc}") from None
            return _chain_from_xml(root, stem, str(file))
        if stem in _BUILT_IN:
            return Chain(DEFAULT_CHAIN, {}, "built-in")
        raise ChainError(f"unknown chain {name!r}; this server knows {', '.join(self.names)}")
