"""The acquisition's schedule from the ISMRMRD header, and its check against the estimator's.

The ISMRMRD header (XML, HEADER message) may carry ``<sequenceParameters>`` with lists
``flipAngle_deg`` (degrees), ``TR``, ``TE`` and ``TI`` (ms). For an MRF acquisition the flip
angles and TRs are per frame; this module turns them into a :class:`drone_core.schedule.Schedule`
(TE and TI from the first value of their lists; a single TR or flip angle stands for every frame)
and compares it with the estimator's schedule by :meth:`Schedule.same_physics` (4 decimals). The
header has no inversion efficiency and no excitation pulse, so the estimator's are assumed.

The XML is read with the standard library, not with ``ismrmrd.xsd``, so it works the same whatever
ismrmrd version parsed (or failed to parse) the header. Its root element is checked
(:func:`header_root`): ismrmrd-python's generated parser reads any document into an
``ismrmrdHeader`` without looking at the root (1.14's, whose fields all have defaults, even
``<notAnIsmrmrdHeader/>``), so a document that is not an ISMRMRD header would otherwise pass for
one without a schedule. Below the root, elements are matched by local name.

:func:`check_header` is the check a header passes before any gadget sees it: an ``ismrmrdHeader``
root that ``ismrmrd.xsd`` parses, as gadgetron-python requires (the loopback and ``drone serve``
apply it to what they are given).
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from drone_core.excitation import Excitation
from drone_core.schedule import Schedule

from .errors import ScheduleMismatchError
from .settings import xml_local_name

__all__ = ["ISMRMRD_NAMESPACE", "SequenceParameters", "header_root", "sequence_parameters", "schedule_from_header",
           "check_header_schedule", "check_header"]

log = logging.getLogger(__name__)

#: Name given to a schedule read from an ISMRMRD header.
HEADER_SCHEDULE_NAME = "ISMRMRD header"
#: The ISMRMRD header's XML namespace.
ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
#: The root elements accepted: ``ismrmrdHeader`` in the ISMRMRD namespace, or in none (as the C++
#: ISMRMRD library, which ignores namespaces, reads it).
HEADER_ROOTS = (f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader", "ismrmrdHeader")


@dataclass(frozen=True)
class SequenceParameters:
    """The lists of ``<sequenceParameters>`` (empty tuples where the header has none).

    Attributes:
        flip_angle_deg: ``flipAngle_deg`` values, degrees.
        tr_ms, te_ms, ti_ms: ``TR``, ``TE``, ``TI`` values, ms.
    """

    flip_angle_deg: tuple[float, ...]
    tr_ms: tuple[float, ...]
    te_ms: tuple[float, ...]
    ti_ms: tuple[float, ...]

    def missing(self) -> list[str]:
        """ISMRMRD names of the lists that are absent."""
        names = (("flipAngle_deg", self.flip_angle_deg), ("TR", self.tr_ms), ("TE", self.te_ms), ("TI", self.ti_ms))
        return [name for name, values in names if not values]


def header_root(header_xml: bytes | str) -> ET.Element:
    """The root element of an ISMRMRD header's XML, checked to be ``ismrmrdHeader`` (:data:`HEADER_ROOTS`).

    Raises:
        ValueError: the text is not XML, or its root element is another one (the message names it,
            and what was expected).
    """
    text = header_xml.decode("utf-8", errors="replace") if isinstance(header_xml, (bytes, bytearray)) else header_xml
    text = text.strip().rstrip("\x00").strip()
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"the ISMRMRD header is not valid XML ({exc})") from None
    if root.tag not in HEADER_ROOTS:
        tag = str(root.tag)
        namespace, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
        name = f"<{local}> in namespace {namespace!r}" if namespace else f"<{local}>"
        raise ValueError(f"not an ISMRMRD header: its root element is {name}, expected <ismrmrdHeader> in namespace "
                         f"{ISMRMRD_NAMESPACE!r} (or in none)")
    return root


def sequence_parameters(header_xml: bytes | str) -> SequenceParameters | None:
    """Read ``<sequenceParameters>`` from the ISMRMRD header XML; None when it has none.

    Raises:
        ValueError: the header is not XML, is not an ISMRMRD header (:func:`header_root`), or a value
            is not a finite number.
    """
    root = header_root(header_xml)
    node = next((e for e in root.iter() if xml_local_name(e.tag) == "sequenceParameters"), None)
    if node is None:
        return None
    lists: dict[str, list[float]] = {"flipAngle_deg": [], "TR": [], "TE": [], "TI": []}
    for child in node:
        name = xml_local_name(child.tag)
        if name in lists:
            try:
                value = float((child.text or "").strip())
            except ValueError:
                raise ValueError(f"ISMRMRD header sequenceParameters/{name}: not a number: {child.text!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"ISMRMRD header sequenceParameters/{name}: not finite: {child.text!r}")
            lists[name].append(value)
    return SequenceParameters(tuple(lists["flipAngle_deg"]), tuple(lists["TR"]), tuple(lists["TE"]), tuple(lists["TI"]))


def schedule_from_header(params: SequenceParameters, *, inversion_efficiency: float = 1.0,
                         excitation: Excitation | None = None) -> Schedule:
    """A schedule from header parameters (all four lists needed).

    ``flipAngle_deg`` and ``TR`` give the frames; if one of them has a single value it applies to
    every frame of the other. TE and TI are the first values of their lists. The header has no
    inversion efficiency or excitation pulse: they are given (the estimator's).

    Raises:
        ValueError: a list is missing, the flip-angle and TR counts differ, or the values do not
            form a valid schedule (the reason is named).
    """
    missing = params.missing()
    if missing:
        raise ValueError(f"the ISMRMRD header's sequenceParameters lack {', '.join(missing)}")
    fa, tr = list(params.flip_angle_deg), list(params.tr_ms)
    if len(fa) != len(tr):
        if len(tr) == 1:
            tr = tr * len(fa)
        elif len(fa) == 1:
            fa = fa * len(tr)
        else:
            raise ValueError(f"the ISMRMRD header's sequenceParameters have {len(fa)} flipAngle_deg values but "
                             f"{len(tr)} TR values")
    try:
        return Schedule(HEADER_SCHEDULE_NAME, tuple(fa), tuple(tr), params.te_ms[0], params.ti_ms[0],
                        inversion_efficiency, excitation)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the ISMRMRD header's sequenceParameters are not a valid schedule: {exc}") from None


def _describe(schedule: Schedule, what: str = "") -> str:
    owner = f" of {what}" if what else ""
    return f"{schedule.name!r}{owner} ({schedule.n_frames} frames, digest {schedule.digest()})"


def _first_difference(a: Schedule, b: Schedule) -> str:
    """Where ``a`` (header) and ``b`` (estimator) first differ, in ISMRMRD terms."""
    if a.n_frames != b.n_frames:
        return f"{a.n_frames} frames in the header vs {b.n_frames} in the estimator's schedule"

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= 1e-4 * max(1.0, abs(x), abs(y))

    for name, unit, xs, ys in (("flipAngle_deg", "°", a.flip_angle_deg, b.flip_angle_deg),
                               ("TR", " ms", a.tr_ms, b.tr_ms)):
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if not close(x, y):
                return f"{name}[{i}] = {x:g}{unit} in the header vs {y:g}{unit}"
    for name, x, y in (("TE", a.te_ms, b.te_ms), ("TI", a.ti_ms, b.ti_ms)):
        if not close(x, y):
            return f"{name} = {x:g} ms in the header vs {y:g} ms"
    return "values differ in the 4th decimal"


def check_header_schedule(header_xml: bytes | str, schedule: Schedule, mode: str = "strict",
                          *, what: str = "the estimator") -> Schedule | None:
    """Compare the header's schedule with ``schedule``; return the header's schedule (or None).

    Args:
        header_xml: the ISMRMRD header XML.
        schedule: the estimator's schedule (its inversion efficiency and excitation are assumed for
            the header).
        mode: ``"strict"`` raises on a mismatch or on incomplete parameters; ``"warn"`` logs a
            warning instead; ``"off"`` does nothing and returns None.
        what: how the estimator is named in messages (e.g. ``"the DRONE network"``).

    A header without ``<sequenceParameters>`` logs a warning and returns None in every mode but
    ``"off"``.

    Raises:
        ScheduleMismatchError: ``mode="strict"`` and the schedules differ (the message names both
            and the first difference) or the header's parameters are incomplete or invalid.
    """
    if mode == "off":
        return None
    if mode not in ("strict", "warn"):
        raise ValueError(f"mode: expected 'strict', 'warn' or 'off', got {mode!r}")
    try:
        params = sequence_parameters(header_xml)
    except ValueError as exc:
        _refuse(f"cannot check the schedule: {exc}", mode)
        return None
    if params is None:
        log.warning("the ISMRMRD header has no sequenceParameters: cannot check that the acquisition used the "
                    "schedule %s; proceeding", _describe(schedule, what))
        return None
    try:
        acquired = schedule_from_header(params, inversion_efficiency=schedule.inversion_efficiency,
                                        excitation=schedule.excitation)
    except ValueError as exc:
        _refuse(f"cannot check the acquisition's schedule against schedule {_describe(schedule, what)}: {exc}", mode)
        return None
    if not acquired.same_physics(schedule):
        _refuse(f"schedule mismatch: the acquisition's schedule {_describe(acquired)} (from the ISMRMRD header's "
                f"sequenceParameters) is not the schedule {_describe(schedule, what)}: "
                f"{_first_difference(acquired, schedule)}", mode)
        return None
    return acquired


def _refuse(message: str, mode: str) -> None:
    if mode == "strict":
        raise ScheduleMismatchError(message + " (property schedule_check=warn or off accepts it)")
    log.warning("%s; proceeding (schedule_check=warn)", message)


def check_header(header: bytes | str) -> None:
    """Raise ValueError unless ``header`` is an ISMRMRD header: XML whose root element is
    ``ismrmrdHeader`` (:func:`header_root`, checked here: ismrmrd's parser does
    not look at the root) that ``ismrmrd.xsd`` parses (gadgetron-python parses it so before the
    handler runs, and a failure there only shows as a traceback)."""
    import ismrmrd

    text = header.decode("utf-8", errors="replace") if isinstance(header, bytes) else header
    try:
        header_root(header)
    except ValueError as exc:
        raise ValueError(f"{exc}; the header begins {text[:200]!r}") from None
    try:
        ismrmrd.xsd.CreateFromDocument(header)
    except Exception as exc:  # the xsd parser raises parser-specific types
        raise ValueError(f"the ISMRMRD header does not parse ({type(exc).__name__}: {exc}); it begins "
                         f"{text[:200]!r}") from None
