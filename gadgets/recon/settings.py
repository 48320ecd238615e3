"""The gadget's settings: typed, documented, parsed from the ``<configuration>`` of a chain.

A chain passes settings to the Python gadget only through the ``<configuration>`` block of its
``<external>`` element (command-line ``--parameter`` values of Gadgetron do not reach Python)::

    <external>
        <execute name="drone_gadgets.gadget" target="drone_mrf" type="python"/>
        <configuration>
            <property name="estimator" value="network"/>
            <property name="mask_threshold" value="0.05"/>
        </configuration>
    </external>

Both property spellings are read: attributes (``<property name="…" value="…"/>``) and child
elements (``<property><name>…</name><value>…</value></property>``, the old gadget style). An
unknown name, a repeated name or an invalid value is refused with a :class:`SettingsError` that
names the property, the expected and the given value — a typo never silently falls back to a
default. :data:`PROPERTIES` lists every setting with its default and meaning;
:func:`settings_table` renders it as Markdown for the documentation.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

from .errors import SettingsError

__all__ = [
    "GadgetSettings",
    "Property",
    "PROPERTIES",
    "MAP_NAMES",
    "DEFAULT_MAPS",
    "UNCERTAINTY_MAPS",
    "B1_MODES",
    "FRAME_COUNTER_FIELDS",
    "parse_properties",
    "parse_property_args",
    "parse_settings",
    "settings_from_properties",
    "settings_to_properties",
    "settings_table",
    "xml_child",
    "xml_local_name",
]

#: The maps the gadget can emit, in emission order.
MAP_NAMES: tuple[str, ...] = ("t1", "t2", "m0", "t1_sd", "t2_sd", "fit")
#: The maps emitted unless the ``maps`` property says otherwise.
DEFAULT_MAPS: tuple[str, ...] = ("t1", "t2", "m0")
#: Maps that need the slice's noise level and a model that can give them (uncertainty, goodness of fit).
UNCERTAINTY_MAPS: tuple[str, ...] = ("t1_sd", "t2_sd")
#: ImageHeader counters that may number the frames of a fingerprint (``slice`` tells slices apart).
FRAME_COUNTER_FIELDS: tuple[str, ...] = ("repetition", "contrast", "phase", "set", "average")
#: Values of the ``b1`` property besides ``file:<path>``.
B1_MODES: tuple[str, ...] = ("none", "stream", "estimate")
_ESTIMATORS = ("network", "dictionary")
_SCHEDULE_CHECKS = ("strict", "warn", "off")


@dataclass(frozen=True)
class GadgetSettings:
    """Settings of the ``drone_mrf`` gadget (see :data:`PROPERTIES` for each one's meaning).

    Attributes:
        model: ``"default"`` (the shipped model) or the path of a DRONE model file.
        estimator: ``"network"`` (DRONE) or ``"dictionary"`` (dictionary matching).
        dictionary: path of a dictionary file for ``estimator="dictionary"``; ``""`` generates
            the paper grid for the model's schedule.
        frame_counter: ImageHeader field holding each frame's 0-based index in the fingerprint.
        frames_per_fingerprint: expected frame count N, or None to take it from the estimator.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
        mask_threshold: None (property ``auto``): the noise-aware mask — a voxel is foreground when
            its fingerprint RMS over the frames is ≥ ``mask_snr`` × the noise σ estimated from the
            slice's background; a fraction: voxels whose fingerprint L2 norm is below it × the slice's
            99th-percentile norm are background (maps 0; 0 keeps every non-zero voxel).
        mask_snr: the noise-aware mask's threshold, in units of σ (air: √2 ≈ 1.41).
        mask_floor: the noise-aware mask's floor: a voxel's fingerprint norm must also reach this
            fraction of the slice's 99th-percentile norm (EPI ghosts, ringing).
        mask_despeckle: ``"auto"`` (drop isolated foreground voxels with the noise-aware mask only),
            ``"true"`` or ``"false"``.
        series_index: ``image_series_index`` of each emitted map, by map name.
        maps: names of the maps to emit, a subset of :data:`MAP_NAMES` in emission order.
        schedule_check: ``"strict"``, ``"warn"`` or ``"off"``: what a schedule mismatch between
            the ISMRMRD header and the estimator does.
        b1: where each voxel's relative transmit field B1 comes from: ``"none"`` (B1 = 1),
            ``"stream"`` (B1 map images in the stream, series ``b1_series_index``),
            ``"file:<path>"`` (a NIfTI or ISMRMRD ``.h5`` file) or ``"estimate"`` (the estimator
            estimates it; the B1 map is then emitted too, series ``b1_map_series_index``).
        b1_series_index: ``image_series_index`` of the B1 map images (in the stream, or in a
            ``.h5`` file).
        b1_scale: relative B1 = pixel value × this (0.01: maps in percent of the nominal flip
            angle; 1/nominal flip angle for flip-angle maps).
        b1_map_series_index: ``image_series_index`` of the emitted B1 maps (``b1=estimate``).
    """

    model: str = "default"
    estimator: str = "network"
    dictionary: str = ""
    frame_counter: str = "repetition"
    frames_per_fingerprint: int | None = None
    device: str = "auto"
    mask_threshold: float | None = None
    mask_snr: float = 2.0
    mask_floor: float = 0.05
    mask_despeckle: str = "auto"
    t1_series_index: int = 100
    t2_series_index: int = 101
    m0_series_index: int = 102
    t1_sd_series_index: int = 105
    t2_sd_series_index: int = 106
    fit_series_index: int = 107
    maps: tuple[str, ...] = DEFAULT_MAPS
    schedule_check: str = "strict"
    b1: str = "none"
    b1_series_index: int = 5
    b1_scale: float = 0.01
    b1_map_series_index: int = 104

    @property
    def series_index(self) -> dict[str, int]:
        """``{"t1": …, "t2": …, "m0": …, "t1_sd": …, "t2_sd": …, "fit": …}`` image series indices (and
        ``"b1"`` with ``b1=estimate``)."""
        out = {name: getattr(self, f"{name}_series_index") for name in MAP_NAMES}
        if self.b1 == "estimate":
            out["b1"] = self.b1_map_series_index
        return out

    @property
    def output_maps(self) -> tuple[str, ...]:
        """The maps emitted per slice, in order: :attr:`maps`, then ``"b1"`` with ``b1=estimate``."""
        return self.maps + (("b1",) if self.b1 == "estimate" else ())

    @property
    def despeckle(self) -> bool | None:
        """``mask_despeckle`` as :func:`drone_core.reconstruct.reconstruct` takes it (None: auto)."""
        return None if self.mask_despeckle == "auto" else self.mask_despeckle == "true"

    @property
    def b1_mode(self) -> str:
        """``"none"``, ``"stream"``, ``"estimate"`` or ``"file"``."""
        return "file" if self.b1.startswith("file:") else self.b1

    @property
    def b1_file(self) -> str | None:
        """The path of ``b1=file:<path>``, else None."""
        return self.b1[len("file:"):] if self.b1.startswith("file:") else None

    def __post_init__(self) -> None:
        # Direct construction is validated like parsed text (each value through its property's parser).
        for prop in PROPERTIES:
            text = _property_text(prop, getattr(self, prop.attribute))
            if prop.attribute not in ("model", "dictionary"):
                object.__setattr__(self, prop.attribute, prop.parse(prop.name, text))
        used = [(name, self.series_index[name]) for name in self.output_maps]
        seen: dict[int, str] = {}
        for name, index in used:
            prop = "b1_map_series_index" if name == "b1" else f"{name}_series_index"
            if index in seen:
                raise SettingsError(
                    f"property '{prop}': {index} is also '{seen[index]}'; the maps need "
                    f"distinct series indices (outputs are stored as image_<image_series_index>)")
            seen[index] = prop


def _property_text(prop: "Property", value: Any) -> str:
    """The ``<property>`` text of a setting's value (what its parser reads back to the same value)."""
    if prop.attribute == "maps":
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"property 'maps': expected a tuple of map names, got {value!r}")
        return ",".join(value)
    if prop.attribute in ("frames_per_fingerprint", "mask_threshold"):
        return "auto" if value is None else str(value)
    return str(value)


def settings_to_properties(settings: GadgetSettings) -> dict[str, str]:
    """Every property of ``settings`` as ``{name: text}``, in :data:`PROPERTIES` order; the inverse of
    :func:`settings_from_properties` (``settings_from_properties(settings_to_properties(s)) == s``)."""
    return {p.name: _property_text(p, getattr(settings, p.attribute)) for p in PROPERTIES}


@dataclass(frozen=True)
class Property:
    """One ``<property>`` of the configuration: its name, default text and meaning."""

    name: str
    default: str
    meaning: str
    parse: Callable[[str, str], Any]
    attribute: str


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise SettingsError(f"property {name!r}: expected one of {', '.join(options)}; got {text!r}")
        return value

    return parse


def _text(name: str, text: str) -> str:
    return text.strip()


def _model(name: str, text: str) -> str:
    value = text.strip()
    if not value:
        raise SettingsError(f"property {name!r}: expected 'default' or the path of a model file; got ''")
    return "default" if value.lower() == "default" else value


def _frames(name: str, text: str) -> int | None:
    value = text.strip().lower()
    if value in ("", "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise SettingsError(f"property {name!r}: expected 'auto' or a positive integer; got {text!r}") from None
    if n < 1:
        raise SettingsError(f"property {name!r}: expected 'auto' or a positive integer; got {text!r}")
    return n


def _device(name: str, text: str) -> str:
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise SettingsError(f"property {name!r}: expected auto, cpu, cuda or cuda:<index>; got {text!r}")


def _fraction(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingsError(f"property {name!r}: expected a number in [0, 1); got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise SettingsError(f"property {name!r}: expected a number in [0, 1); got {text!r}")
    return value


def _threshold(name: str, text: str) -> float | None:
    if text.strip().lower() in ("", "auto"):
        return None
    try:
        return _fraction(name, text)
    except SettingsError:
        raise SettingsError(f"property {name!r}: expected 'auto' (the noise-aware mask) or a number in [0, 1); "
                            f"got {text!r}") from None


def _series(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise SettingsError(f"property {name!r}: expected an integer in 0…65535; got {text!r}") from None
    if not 0 <= value <= 65535:
        raise SettingsError(f"property {name!r}: expected an integer in 0…65535 (uint16); got {text!r}")
    return value


def _b1(name: str, text: str) -> str:
    value = text.strip()
    low = value.lower()
    if low in B1_MODES:
        return low
    if low.startswith("file:"):
        path = value[len("file:"):].strip()
        if not path:
            raise SettingsError(f"property {name!r}: 'file:' needs the path of a B1 map file (file:<path>); "
                                f"got {text!r}")
        return "file:" + path
    raise SettingsError(f"property {name!r}: expected one of {', '.join(B1_MODES)} or file:<path>; got {text!r}")


def _positive(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingsError(f"property {name!r}: expected a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise SettingsError(f"property {name!r}: expected a positive number; got {text!r}")
    return value


def _maps(name: str, text: str) -> tuple[str, ...]:
    items = [t for t in text.replace(",", " ").lower().split() if t]
    if not items:
        raise SettingsError(f"property {name!r}: expected one or more of {', '.join(MAP_NAMES)}; got {text!r}")
    unknown = [t for t in items if t not in MAP_NAMES]
    if unknown:
        raise SettingsError(f"property {name!r}: unknown map(s) {', '.join(unknown)}; expected a comma-separated "
                            f"subset of {', '.join(MAP_NAMES)}; got {text!r}")
    if len(set(items)) != len(items):
        raise SettingsError(f"property {name!r}: a map is listed twice in {text!r}")
    return tuple(m for m in MAP_NAMES if m in items)


#: Every setting, in documentation order.
PROPERTIES: tuple[Property, ...] = (
    Property("model", "default",
             "DRONE model: `default` (the shipped model, `drone_core/weights`) or the path of a model file "
             "(`.safetensors`). Its schedule is the one the acquisition must have; with `estimator=dictionary` "
             "and no `dictionary` it is the schedule the dictionary is simulated for.",
             _model, "model"),
    Property("estimator", "network",
             "`network` (the DRONE network) or `dictionary` (conventional dictionary matching).",
             _choice(_ESTIMATORS), "estimator"),
    Property("dictionary", "",
             "With `estimator=dictionary`: path of a dictionary file (`Dictionary.save`); empty simulates the "
             "paper grid (79,900 atoms) for the model's schedule at start-up (seconds on a CPU).",
             _text, "dictionary"),
    Property("frame_counter", "repetition",
             f"ImageHeader counter giving each frame's 0-based position in the fingerprint: one of "
             f"{', '.join(FRAME_COUNTER_FIELDS)}. Frames may arrive in any order; `slice` separates slices.",
             _choice(FRAME_COUNTER_FIELDS), "frame_counter"),
    Property("frames_per_fingerprint", "auto",
             "Frames N per fingerprint: `auto` takes the estimator's; a number is checked against it.",
             _frames, "frames_per_fingerprint"),
    Property("device", "auto",
             "Where the estimator runs: `auto` (CUDA when available), `cpu`, `cuda` or `cuda:<index>`.",
             _device, "device"),
    Property("mask_threshold", "auto",
             "Background mask. `auto`: noise-aware — the noise σ is estimated from each slice's background (the "
             "darkest population of fingerprint norms, χ²-distributed in air) and a voxel is foreground when its "
             "fingerprint RMS over the frames is at least `mask_snr` × σ (a slice without a noise-only background, "
             "e.g. noise-free data, falls back to 0.05 of the next rule, with a warning). A number in [0, 1): voxels "
             "whose fingerprint L2 norm is below this fraction of the slice's 99th-percentile norm are background; 0 "
             "masks only all-zero voxels. Background voxels get 0 in every map.",
             _threshold, "mask_threshold"),
    Property("mask_snr", "2.0",
             "With `mask_threshold=auto`: the foreground threshold in units of the noise σ (fingerprint RMS over the "
             "frames; air has √2 ≈ 1.41 with a spread of ≈ 0.1 for 25 frames).",
             _positive, "mask_snr"),
    Property("mask_floor", "0.05",
             "With `mask_threshold=auto`: a voxel's fingerprint L2 norm must also reach this fraction of the slice's "
             "99th-percentile norm. EPI N/2 ghosts and the reconstruction's ringing are signal, at a few percent of "
             "the tissue's, and above the noise when the noise is low; 0 lets the noise alone decide. In [0, 1).",
             _fraction, "mask_floor"),
    Property("mask_despeckle", "auto",
             "Drop isolated foreground voxels (none of their 8 in-plane neighbours foreground): `auto` (with "
             "`mask_threshold=auto` only), `true` or `false`.",
             _choice(("auto", "true", "false")), "mask_despeckle"),
    Property("t1_series_index", "100", "`image_series_index` of the T1 maps.", _series, "t1_series_index"),
    Property("t2_series_index", "101", "`image_series_index` of the T2 maps.", _series, "t2_series_index"),
    Property("m0_series_index", "102", "`image_series_index` of the M0 maps.", _series, "m0_series_index"),
    Property("t1_sd_series_index", "105", "`image_series_index` of the T1 standard-deviation maps.", _series,
             "t1_sd_series_index"),
    Property("t2_sd_series_index", "106", "`image_series_index` of the T2 standard-deviation maps.", _series,
             "t2_sd_series_index"),
    Property("fit_series_index", "107", "`image_series_index` of the goodness-of-fit maps.", _series,
             "fit_series_index"),
    Property("maps", "t1,t2,m0",
             "Maps to emit, a comma-separated subset of `t1`, `t2`, `m0`, `t1_sd`, `t2_sd`, `fit` (emitted in that "
             "order per slice; with `b1=estimate` the B1 map follows them). `t1_sd`/`t2_sd`: each voxel's predicted "
             "standard deviation of T1/T2 (ms) at its estimate and SNR (a network model with an uncertainty table, "
             "as the shipped one). `fit`: the residual between the fingerprint and the atom at its estimate in "
             "units of the noise (≈ 1 where the signal model explains the voxel; partial volume, flow and "
             "artefacts raise it). All three need the slice's noise level (0 where it is unknown).",
             _maps, "maps"),
    Property("schedule_check", "strict",
             "Compare the ISMRMRD header's `sequenceParameters` (`flipAngle_deg`, `TR`, `TE`, `TI`) with the "
             "estimator's schedule: `strict` refuses a mismatch (or incomplete parameters), `warn` logs it and "
             "goes on, `off` skips the check. A header without `sequenceParameters` logs a warning and goes on.",
             _choice(_SCHEDULE_CHECKS), "schedule_check"),
    Property("b1", "none",
             "Relative transmit field B1 of each voxel: `none` (B1 = 1), `stream` (B1 map images arrive in the "
             "same stream, told apart from the frames by `image_series_index` = `b1_series_index`, one per slice by "
             "header `slice`), `file:<path>` (a NIfTI file, or an ISMRMRD `.h5` file whose images of series "
             "`b1_series_index` are the B1 maps, by `slice`) or `estimate` (the estimator estimates B1; its B1 "
             "map is emitted too, series `b1_map_series_index`). `stream` and `file:` need an estimator that takes "
             "B1 (a model trained with a B1 input, a dictionary with a B1 axis), `estimate` one that estimates it. "
             "B1 maps are resampled onto the frames' grid by their geometry; a slice is computed only with its B1 "
             "map (docs/GADGET.md, \"B1 maps\").",
             _b1, "b1"),
    Property("b1_series_index", "5",
             "`image_series_index` of the B1 map images (`b1=stream`, or in the `.h5` file of `b1=file:`).",
             _series, "b1_series_index"),
    Property("b1_scale", "0.01",
             "Relative B1 = B1 map pixel value × `b1_scale`: 0.01 for maps in percent of the nominal flip angle "
             "(scanners' usual B1 maps), 1 for relative maps, 1/nominal flip angle for flip-angle maps.",
             _positive, "b1_scale"),
    Property("b1_map_series_index", "104",
             "`image_series_index` of the emitted B1 maps (only with `b1=estimate`; percent of nominal).",
             _series, "b1_map_series_index"),
)
_BY_NAME = {p.name: p for p in PROPERTIES}


def settings_from_properties(properties: dict[str, str]) -> GadgetSettings:
    """Settings from ``{name: text}``; unknown names and bad values raise :class:`SettingsError`."""
    unknown = sorted(set(properties) - set(_BY_NAME))
    if unknown:
        raise SettingsError(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                            f"the drone_mrf gadget knows {', '.join(_BY_NAME)}")
    values: dict[str, Any] = {}
    for name, text in properties.items():
        prop = _BY_NAME[name]
        values[prop.attribute] = prop.parse(name, text)
    return replace(GadgetSettings(), **values) if values else GadgetSettings()


def parse_properties(config: bytes | str | ET.Element | None) -> dict[str, str]:
    """The ``{name: value}`` of the ``<property>`` elements of a ``<configuration>`` XML.

    Both spellings are read: ``<property name="…" value="…"/>`` (what Gadgetron sends) and
    ``<property><name>…</name><value>…</value></property>``. Names are not checked here.

    Args:
        config: the XML text, bytes or a parsed element; ``None``, empty or whitespace: ``{}``.

    Raises:
        SettingsError: not XML, a property without a name or value, a repeated property.
    """
    if config is None:
        return {}
    if isinstance(config, ET.Element):
        root = config
    else:
        text = config.decode("utf-8", errors="replace") if isinstance(config, (bytes, bytearray)) else str(config)
        text = text.strip().rstrip("\x00").strip()
        if not text:
            return {}
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise SettingsError(f"the gadget configuration is not valid XML ({exc}): {text[:200]!r}") from None
    properties: dict[str, str] = {}
    for element in root.iter():
        if xml_local_name(element.tag) != "property":
            continue
        name = element.get("name")
        value = element.get("value")
        if name is None:
            child = xml_child(element, "name")
            name = child.text if child is not None else None
        if value is None:
            child = xml_child(element, "value")
            value = (child.text or "") if child is not None else None
        if not name or not name.strip():
            raise SettingsError(f"a <property> of the gadget configuration has no name: {ET.tostring(element)!r}")
        name = name.strip()
        if value is None:
            raise SettingsError(f"property {name!r} has no value")
        if name in properties:
            raise SettingsError(f"property {name!r} is given twice ({properties[name]!r} and {value!r})")
        properties[name] = value
    return properties


def parse_settings(config: bytes | str | None) -> GadgetSettings:
    """Parse the ``<configuration>`` XML that Gadgetron sends (CONFIG message) into settings.

    Args:
        config: the XML text or bytes; ``None``, empty or whitespace gives the defaults.

    Raises:
        SettingsError: not XML, a property without a name, a repeated or unknown property, or
            an invalid value.
    """
    return settings_from_properties(parse_properties(config))


def xml_local_name(tag: Any) -> str:
    """An element's tag without its namespace (``"{ns}property"`` → ``"property"``; comments → ``""``)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def xml_child(element: ET.Element, name: str) -> ET.Element | None:
    """The first child of ``element`` whose local name is ``name``, or None."""
    for child in element:
        if xml_local_name(child.tag) == name:
            return child
    return None


def settings_table() -> str:
    """The settings as a Markdown table (name, default, meaning), for the documentation."""
    rows = ["| property | default | meaning |", "|---|---|---|"]
    for p in PROPERTIES:
        default = f"`{p.default}`" if p.default else "(empty)"
        rows.append(f"| `{p.name}` | {default} | {p.meaning} |")
    return "\n".join(rows)


def parse_property_args(items: Sequence[str] | None, named: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Gadget properties from ``--set NAME=VALUE`` items and named options (``{"model": args.model}``).

    Raises:
        ValueError: an item without ``=``, a property given twice, or a named option that
            disagrees with ``--set``.
    """
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set: expected NAME=VALUE, got {item!r}")
        name = name.strip()
        if name in out:
            raise ValueError(f"--set: property {name!r} given twice")
        out[name] = value
    for option, given in (named or {}).items():
        if given is not None:
            if option in out and out[option] != given:
                raise ValueError(f"--{option} {given!r} and --set {option}={out[option]!r} disagree")
            out[option] = given
    return out


def _check_defaults_match() -> None:
    """The documented default texts parse to the dataclass defaults (guards drift between the two)."""
    defaults = GadgetSettings()
    for p in PROPERTIES:
        parsed = p.parse(p.name, p.default)
        if parsed != getattr(defaults, p.attribute):  # pragma: no cover - programming error
            raise AssertionError(f"default of {p.name!r} differs: {parsed!r} vs {getattr(defaults, p.attribute)!r}")
    assert {p.attribute for p in PROPERTIES} == {f.name for f in fields(GadgetSettings)}


_check_defaults_match()
