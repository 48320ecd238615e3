"""A scan's settings and estimator, checked before the first frame: what every host of the gadget runs first.

:func:`prepare` parses the settings (:mod:`drone_gadgets.recon.settings`), builds the estimator
(:mod:`drone_gadgets.recon.estimators`), checks the property ``b1`` against what the estimator does
with B1 (:func:`drone_gadgets.recon.b1maps.check_b1_support`) and the header's schedule against the
estimator's (:mod:`drone_gadgets.recon.header`). The Gadgetron handler
(:func:`drone_gadgets.gadget.drone_mrf`) and ``drone serve`` (:mod:`drone_gadgets.apps.server`) both
call it, then stream the messages through :func:`drone_gadgets.recon.stages.pipeline`.
"""

from __future__ import annotations

from typing import Any, Callable

from .b1maps import check_b1_support
from .estimators import build_estimator, estimator_kind, estimator_schedule
from .header import check_header_schedule
from .settings import GadgetSettings, parse_settings

__all__ = ["prepare"]


def prepare(config: bytes | str | GadgetSettings | None, header: bytes | str, *,
            build: Callable[[GadgetSettings], Any] = build_estimator) -> tuple[GadgetSettings, Any]:
    """Settings and estimator for a scan, with the header's schedule and the ``b1`` mode checked.

    Args:
        config: the ``<configuration>`` XML of the chain's ``<external>`` element, or settings.
        header: the ISMRMRD header XML.
        build: makes the estimator of the settings (the server passes its cache).

    Returns:
        ``(settings, estimator)``.

    Raises:
        SettingsError, ScheduleMismatchError: with messages naming the property or both schedules
            (a ``b1`` mode the estimator cannot serve names ``b1`` and the estimator).
    """
    settings = config if isinstance(config, GadgetSettings) else parse_settings(config)
    estimator = build(settings)
    check_b1_support(settings, estimator)
    check_header_schedule(header, estimator_schedule(estimator), settings.schedule_check,
                          what=estimator_kind(estimator))
    return settings, estimator
