"""The Gadgetron handler ``drone_mrf``: magnitude frames in, T1/T2/M0 map images out.

A chain runs it with::

    <external>
        <execute name="drone_gadgets.gadget" target="drone_mrf" type="python"/>
        <configuration>
            <property name="estimator" value="network"/>
        </configuration>
    </external>

Gadgetron starts ``python3 -m gadgetron <port> drone_gadgets.gadget drone_mrf``; the client
connects back, reads CONFIG and HEADER, imports this module and calls :func:`drone_mrf` with the
connection. The handler then

1. parses the settings from the ``<configuration>`` (:mod:`drone_gadgets.recon.settings`),
2. loads the estimator (:mod:`drone_gadgets.recon.estimators`),
3. checks the header's ``sequenceParameters`` against the estimator's schedule
   (:mod:`drone_gadgets.recon.header`) and the property ``b1`` against what the estimator does with B1
   (:func:`drone_gadgets.recon.b1maps.check_b1_support`) — steps 1–3 are
   :func:`drone_gadgets.recon.prepare.prepare`, which ``drone serve`` runs too,
4. streams the messages through :func:`drone_gadgets.recon.stages.pipeline` and sends every output back
   as soon as it is made (:mod:`drone_gadgets.wire.external`).

This module is the stable entry point of every chain; the gadget's workings are in
:mod:`drone_gadgets.recon`, the protocol in :mod:`drone_gadgets.wire`.

Any failure — a bad setting, a schedule mismatch, a duplicate or malformed frame, slices still
incomplete at CLOSE, a B1 map that is missing, duplicated or off its slice, an internal error — is
sent to Gadgetron as an ERROR message naming the problem, followed by CLOSE, so the chain fails
visibly; the handler then raises :class:`~drone_gadgets.recon.errors.GadgetFailed` (exit status 1). If
Gadgetron goes away, the process ends promptly. Logs go to stderr (via :mod:`logging`); anything a library prints to
``sys.stdout`` during the handler is redirected to stderr, since the process's stdout is
Gadgetron's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from typing import Any, Iterable, Iterator

from .recon.errors import GadgetFailed
from .recon.estimators import describe_estimator
from .recon.prepare import prepare
from .recon.stages import pipeline
from .wire.external import serve

__all__ = ["drone_mrf", "GadgetFailed"]

log = logging.getLogger(__name__)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _raw_config(connection: Any) -> bytes | str | None:
    raw = getattr(getattr(connection, "raw_bytes", None), "config", None)
    if raw is not None:
        return raw
    config = getattr(connection, "config", None)
    return ET.tostring(config) if isinstance(config, ET.Element) else None


def _raw_header(connection: Any) -> bytes | str:
    raw = getattr(getattr(connection, "raw_bytes", None), "header", None)
    if raw is not None:
        return raw
    import ismrmrd

    return ismrmrd.xsd.ToXML(connection.header)


def drone_mrf(connection: Any) -> None:
    """Gadgetron external-node handler (target ``drone_mrf`` of module ``drone_gadgets.gadget``).

    Args:
        connection: a ``gadgetron.external.Connection`` whose CONFIG and HEADER have been read.

    Raises:
        GadgetFailed: after reporting a failure to Gadgetron (ERROR, then CLOSE).
    """
    log.info("drone_mrf: numpy %s, ismrmrd %s, gadgetron-python %s, drone %s", _version("numpy"),
             _version("ismrmrd"), _version("gadgetron"), _version("drone-gadgetron"))

    def run(inputs: Iterator[Any]) -> Iterable[Any]:
        settings, estimator = prepare(_raw_config(connection), _raw_header(connection))
        log.info("drone_mrf: %s; frames numbered by %r; maps %s; B1 %s", describe_estimator(estimator),
                 settings.frame_counter, ", ".join(settings.output_maps), settings.b1)
        return pipeline(inputs, estimator, settings)

    with contextlib.redirect_stdout(sys.stderr):
        serve(connection, run, name="drone_mrf")
